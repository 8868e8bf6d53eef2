"""A real model bundle from synthetic data, without a training run.

Feature state fitted on generated transactions, the configured model family with seeded initial
weights, the drift reference sample and reference scores, the sha256 manifest: everything a
trained bundle has, in about a second. Serving tests, the Serve benchmark and anyone trying the
Serve app use it where the model's *quality* does not matter but its shape and cost do.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pyarrow as pa
import torch

from mlinfra_ray.bundle import save_bundle
from mlinfra_ray.datasets.fraud import generate_transactions
from mlinfra_ray.drift import reference_part
from mlinfra_ray.features.transforms import fit_feature_state
from mlinfra_ray.models import build_model
from mlinfra_ray.settings import Settings, to_dict


def synthetic_bundle(path: str | Path, settings: Settings, rows: int = 2000, seed: int = 5,
                     threshold: float = 0.5, lineage: dict[str, str] | None = None,
                     train: pa.Table | None = None) -> Path:
    """Write a bundle to `path` (which must not exist) and return it.

    `train`: the rows to fit on (e.g. the first part of a table whose rest a test serves as
    clean traffic); by default `rows` generated transactions with `seed`.
    """
    if train is None:
        if settings.data.synthetic is None:
            raise ValueError("synthetic_bundle needs data.synthetic (the generator's settings)")
        train = generate_transactions(dataclasses.replace(settings.data.synthetic, rows=rows, seed=seed))
    state = fit_feature_state(train, settings.features, settings.contract.event_time)
    torch.manual_seed(seed)
    model = build_model(to_dict(settings.model), len(state["feature_names"])).eval()
    drift, reference = reference_part(state, train, settings.drift, seed, model)
    parts: dict[str, Any] = {
        "feature_state": state, "contract": to_dict(settings.contract), "model": to_dict(settings.model),
        "config": to_dict(settings), "metrics": {"threshold": threshold}, "drift": drift,
        "lineage": {"data_snapshot": f"synthetic-{train.num_rows}-{seed}", "git_sha": "n/a", **(lineage or {})}}
    return save_bundle(path, model.state_dict(), parts, reference)
