"""Feature-store stages wired to settings: what jobs/features.py, jobs/materialize.py,
jobs/skew_check.py and the training stage call.

    features     clean snapshot → fit FeatureState (training window) → versioned JSON
                 clean snapshot → Ray Data: views aggregated per entity → offline Parquet (append)
    materialize  offline store → online store (only writes not yet applied)
    skew check   sample of entities: online row == offline latest row?
    training set labelled events + point-in-time join of every view (Ray Data map_batches)
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pyarrow as pa

from mlinfra_ray.features.offline import OfflineStore, definition, join_views
from mlinfra_ray.features.online import open_store
from mlinfra_ray.features.transforms import fit_feature_state
from mlinfra_ray.settings import FeatureSettings, FeatureView, Settings

log = logging.getLogger(__name__)
ROW = "__row"  # keeps the input order through Ray Data, which may reorder blocks


def offline_store(settings: Settings) -> OfflineStore:
    return OfflineStore(settings.features.offline_path or str(Path(settings.paths.root) / "feature_store"))


def check_views(features: FeatureSettings, entity_keys: list[str]) -> None:
    """Fail at start-up, naming the key, instead of deep inside a Ray task."""
    from mlinfra_ray.features.aggregations import parse_duration
    from mlinfra_ray.features.online import check_view_name

    names = [v.name for v in features.views]
    if len(set(names)) != len(names):
        raise ValueError(f"features.views: duplicate view names {names}")
    for i, v in enumerate(features.views):
        check_view_name(v.name)
        if v.entity not in entity_keys:
            raise ValueError(f"features.views[{i}].entity: {v.entity!r} is not a contract entity key "
                             f"{entity_keys}")
        for d in [*v.windows, v.ttl]:
            parse_duration(d)


def run_features(settings: Settings) -> dict[str, Any]:
    """Fit and version the FeatureState; append every view's new rows to the offline store."""
    import ray

    from mlinfra_ray.cluster import connect
    from mlinfra_ray.pipeline import load_manifest
    from mlinfra_ray.train.stage import time_split

    connect(settings.ray)
    contract = settings.contract
    check_views(settings.features, contract.entity_keys)
    snapshot = load_manifest(settings.paths.lake)["snapshot_id"]
    store = offline_store(settings)
    writes = []
    if settings.features.views:
        events = ray.data.read_parquet(str(Path(settings.paths.lake) / "clean"))
        writes = [store.write_view(events, v, contract.event_time) for v in settings.features.views]
    train, _, _ = time_split(training_table(settings), contract.event_time, settings.data.split)
    state = fit_feature_state(train, settings.features, contract.event_time)
    version = store.save_state(state, {"snapshot_id": snapshot, "train_rows": train.num_rows})
    log.info("feature state v%d (%s); view writes: %s", version["version"], "new" if version["new"] else
             "unchanged", writes)
    return {"store": str(store.root), "snapshot_id": snapshot, "state": version, "writes": writes}


def run_materialize(settings: Settings) -> list[dict[str, Any]]:
    from mlinfra_ray.features.materialize import materialize

    check_views(settings.features, settings.contract.entity_keys)
    online = open_store(settings.online_store, settings.paths.root)
    try:
        return materialize(offline_store(settings), online, settings.features.views)
    finally:
        online.close()


def run_skew_check(settings: Settings) -> dict[str, Any]:
    from mlinfra_ray.features.skew import skew_check

    online = open_store(settings.online_store, settings.paths.root)
    try:
        cfg = settings.features.skew_check
        return skew_check(offline_store(settings), online, settings.features.views, cfg.sample_entities,
                          cfg.seed)
    finally:
        online.close()


def training_table(settings: Settings) -> pa.Table:
    """The clean snapshot plus the views' point-in-time columns: what the training stage splits,
    fits and gates on (the seam in mlinfra_ray.train.data).

    With `features.use_views` every view must be in the offline store. Without it, the views the
    offline store holds (same definition) are joined anyway: the model ignores them, but a
    champion trained with views can still be scored on the same holdout by the promotion gate.
    """
    from mlinfra_ray.ingest import read_clean

    table = read_clean(settings.paths.lake, settings.contract)
    views = settings.features.views
    if not settings.features.use_views:
        store = offline_store(settings)
        views = [v for v in views if (store.meta(v.name) or {}).get("definition") == definition(v)
                 and store.write_ids(v.name)]
    return build_training_set(table, settings, views=views) if views else table


def build_training_set(labels: pa.Table, settings: Settings, inclusive: bool = False,
                       views: list[FeatureView] | None = None) -> pa.Table:
    """`labels` plus every view's raw columns and feature time, joined point-in-time with Ray Data
    (same row order); `transform` applies the TTL and derives `since_last`.

    `inclusive=False` for the fraud use case: a transaction is scored before it is recorded, so
    its features are the entity's state strictly before it — exactly what the online store holds
    when the request arrives. (`inclusive=True`: features at or before the label time.)
    """
    import ray

    from mlinfra_ray.cluster import connect

    connect(settings.ray)  # a no-op inside the stages; jobs/promote.py reaches here without Ray
    views = settings.features.views if views is None else views
    store = offline_store(settings)
    refs = {v.name: ray.put(store.read_view(v.name)) for v in views}
    labels = labels.append_column(ROW, pa.array(range(labels.num_rows), pa.int64()))
    ds = ray.data.from_arrow(labels).map_batches(
        _join_batch, batch_format="pyarrow", batch_size=8192,
        fn_kwargs={"refs": refs, "views": views, "event_time": settings.contract.event_time,
                   "inclusive": inclusive})
    out = pa.concat_tables(ray.get(ds.to_arrow_refs()))
    return out.sort_by(ROW).drop_columns([ROW])


def _join_batch(batch: pa.Table, refs: dict[str, Any], views: list[FeatureView], event_time: str,
                inclusive: bool) -> pa.Table:
    import ray

    tables = {name: ray.get(ref) for name, ref in refs.items()}
    return join_views(batch, tables, views, event_time, inclusive, finish=False)
