"""The online-feature seam of the predictor: one small interface, chosen by `serve.online_store`.

Before scoring a batch, the predictor calls `lookup.attach(table)`: the request table comes back
with the online feature columns the fitted feature state expects (entity aggregations), looked up
by the contract's entity keys. `stats()` gives cumulative outcome counts per view (hit, miss,
invalid, stale), which the ingress exports as mlinfra_online_lookups_total{view,outcome}; `age_s()`
says how long ago the store was last materialized (mlinfra_online_features_age_seconds, watched by
the stale-features alert).

Kinds: `none` (no lookups, the table is scored as sent), `feature_store` (the `online_store` config
group — SQLite embedded or Redis — through `features.online`) and `auto` (the default): whichever
the served model needs — `feature_store` when its fitted feature state uses views, else `none`.
A model with views served with `none` is refused at start-up (every request would fail). Another
backend plugs in with `register_online_lookup(kind, factory)`; the predictor does not change.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Protocol

import pyarrow as pa


class OnlineLookup(Protocol):
    def attach(self, table: pa.Table) -> pa.Table: ...
    def stats(self) -> dict[str, dict[str, int]]: ...
    def age_s(self) -> float | None: ...


class NoOnlineLookup:
    """No online features: every record is scored on what the request carries."""

    def attach(self, table: pa.Table) -> pa.Table:
        return table

    def stats(self) -> dict[str, dict[str, int]]:
        return {}

    def age_s(self) -> float | None:
        return None


class FeatureStoreLookup:
    """`features.online.OnlineFeatures` (SQLite or Redis) behind the seam."""

    def __init__(self, settings: dict[str, Any]) -> None:
        from mlinfra_ray.features.online import open_online_features
        from mlinfra_ray.settings import ContractSettings, FeatureSettings, OnlineStoreSettings, build

        contract = build(ContractSettings, settings["contract"])
        self.features = open_online_features(build(OnlineStoreSettings, settings["online_store"]),
                                             build(FeatureSettings, settings["features"]), contract,
                                             settings["paths"]["root"])
        self.event_time = contract.event_time
        self._age: tuple[float, float | None] = (0.0, None)  # (checked at, value): meta read <= 1/s

    def attach(self, table: pa.Table) -> pa.Table:
        return self.features.attach(table, self.event_time)

    def stats(self) -> dict[str, dict[str, int]]:
        return self.features.stats()

    def age_s(self) -> float | None:
        now = time.time()
        if now - self._age[0] >= 1.0:
            metas = [self.features.store.get_meta(v.name) for v in self.features.views]
            stamps = [m["materialized_at"] for m in metas if m and "materialized_at" in m]
            self._age = (now, now - min(stamps) if stamps and len(stamps) == len(metas) else None)
        return self._age[1]


LookupFactory = Callable[[dict[str, Any]], OnlineLookup]  # plain settings (to_dict) → lookup
_FACTORIES: dict[str, LookupFactory] = {"none": lambda settings: NoOnlineLookup(),
                                        "feature_store": FeatureStoreLookup}


def register_online_lookup(kind: str, factory: LookupFactory) -> None:
    _FACTORIES[kind] = factory


def check_kind(kind: str) -> None:
    if kind != "auto" and kind not in _FACTORIES:
        raise ValueError(f"serve.online_store={kind!r} is not a known lookup "
                         f"(known: {sorted([*_FACTORIES, 'auto'])})")


def resolve_kind(kind: str, feature_state: dict[str, Any]) -> str:
    """The lookup a model needs: `auto` follows its feature views; `none` with views is refused."""
    check_kind(kind)
    views = [v["name"] for v in feature_state.get("views") or []]
    if kind == "auto":
        return "feature_store" if views else "none"
    if kind == "none" and views:
        raise ValueError(f"the served model's inputs include feature views {views}, looked up in the online "
                         "store at request time: serve it with serve.online_store=auto or feature_store")
    return kind


def make_online_lookup(kind: str, settings: dict[str, Any]) -> OnlineLookup:
    check_kind(kind)
    return _FACTORIES[kind](settings)


Stats = dict[str, dict[str, int]]  # {view: {outcome: count}}


def stats_delta(before: Stats, after: Stats) -> Stats:
    """Per view and outcome, what one batch added (counts are cumulative per replica)."""
    return {view: {k: n - before.get(view, {}).get(k, 0) for k, n in counts.items()}
            for view, counts in after.items()}
