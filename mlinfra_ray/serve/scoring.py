"""Scoring requests with a bundle: the Ray-free core that the Serve predictor batches.

`score_batch` turns a batch of requests (each a list of validated records) into one
contract-typed Arrow table, runs `Bundle.predict` (the offline evaluation path, so no train/serve
skew) once, and splits the scores back per request; the table itself is what the drift monitor
gets (it applies the feature transforms there, off the request path). The bare-FastAPI baseline
of bench/serve.py calls the same function, so a comparison measures serving overhead only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from mlinfra_ray.serve.online import OnlineLookup, stats_delta
from mlinfra_ray.serve.schemas import records_to_table
from mlinfra_ray.settings import ContractSettings


@dataclass(frozen=True)
class ServedModel:
    """One loaded version; replaced as a whole on a hot swap (one attribute assignment)."""

    bundle: Any
    info: dict[str, Any]  # name, version, alias, run_id, created_at, loaded_at
    contract: ContractSettings

    @classmethod
    def create(cls, bundle: Any, info: dict[str, Any]) -> ServedModel:
        return cls(bundle, dict(info), bundle.contract)

    @property
    def ref(self) -> dict[str, str]:
        """What every response says about the model that scored it."""
        return {"version": str(self.info["version"]), "alias": str(self.info["alias"])}

    def describe(self) -> dict[str, Any]:
        """GET /model: identity, decision threshold, lineage and the contract requests follow."""
        parts = self.bundle.parts
        return {**self.info, **self.ref, "threshold": self.bundle.threshold,
                "lineage": parts["lineage"], "contract": parts["contract"]}


@dataclass(frozen=True)
class ScoredBatch:
    """A scored batch: the table that was scored (online features attached), its scores, and the
    per-request responses (`results`)."""

    table: pa.Table
    scores: np.ndarray
    results: list[dict[str, Any]]


def score_batch(model: ServedModel, lookup: OnlineLookup, requests: list[list[dict[str, Any]]]) -> ScoredBatch:
    """One forward pass for all requests; per request: scores, model ref, lookup stats."""
    table = records_to_table([r for records in requests for r in records], model.contract)
    before = lookup.stats()
    table = lookup.attach(table)  # online feature columns, if the feature state uses any
    online = {"lookups": stats_delta(before, lookup.stats()), "age_s": lookup.age_s()}
    scores = model.bundle.predict(table)
    bounds = np.cumsum([0, *(len(records) for records in requests)])
    threshold, ref, created = model.bundle.threshold, model.ref, model.info.get("created_at")
    # The lookups covered the whole batch: their counts travel with the first request only.
    results = [{"scores": scores[a:b], "threshold": threshold, "model": ref, "created_at": created,
                "online": online if a == 0 else {"lookups": {}, "age_s": online["age_s"]}}
               for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    return ScoredBatch(table, scores, results)


def score_requests(model: ServedModel, lookup: OnlineLookup,
                   requests: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    return score_batch(model, lookup, requests).results


class LocalService:
    """The API's `Service` scoring in-process (no Ray): the bench baseline and Ray-free API tests."""

    def __init__(self, bundle: Any, info: dict[str, Any], lookup: OnlineLookup) -> None:
        self.model, self.lookup = ServedModel.create(bundle, info), lookup

    async def predict(self, records: list[dict[str, Any]]) -> dict[str, Any]:
        return score_requests(self.model, self.lookup, [records])[0]

    async def model_info(self) -> dict[str, Any]:
        return self.model.describe()

    async def ready(self) -> None:
        return None

    async def drift(self) -> dict[str, Any] | None:
        return None

    async def refresh_metrics(self) -> None:
        return None
