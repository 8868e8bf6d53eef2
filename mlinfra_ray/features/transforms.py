"""Row-level feature transforms: fit once on the training window, apply anywhere.

Transforms: log1p, clipping, standard scaling, missing-value indicators, quantile buckets, one-hot
vocabularies (small cardinality) and hashed one-hot (high-cardinality IDs), cyclical time parts.
The fitted state is a JSON-ready dict (means, stds, vocabularies, bucket edges) — never a pickle —
saved in the model bundle and, versioned, in the offline store. `transform` is the only code that
turns contract-typed rows into model inputs: Ray Data batches offline and a single request online
go through it, so there is no train/serve skew. With feature views (`features.use_views`), rows
carry each view's raw values and feature time — from the offline point-in-time join or from an
online lookup — and `transform` itself applies the TTL and derives `since_last`
(aggregations.finish_views), so that step cannot differ either.
Every operation is element-wise per row in float64, cast to float32 at the end, so a row's
features do not depend on which batch it arrived in (bit-identical offline and online).
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mlinfra_ray.features.aggregations import feature_time_column, finish_views
from mlinfra_ray.settings import FeatureSettings, FeatureView, NumericFeature, build

STATE_VERSION = 2  # 2 added bucket edges and hashed IDs; version-1 states still transform the same
READABLE_VERSIONS = (1, 2)
OOV = "<other>"  # slot 0 of every vocabulary: unseen, rare and missing values


def fit_feature_state(table: pa.Table, spec: FeatureSettings, event_time: str) -> dict[str, Any]:
    """Fit scaling, bucket edges and vocabularies on `table` (the training window only).

    With `spec.use_views`, the feature views' columns (joined point-in-time offline, looked up
    online) are model inputs too: log-scaled, always with a missing indicator, because a missing
    aggregate (unknown entity, expired value, invalid key) must never read as a zero.
    """
    views = [dataclasses.asdict(v) for v in spec.views] if spec.use_views else []
    table = with_views({"views": views, "event_time": event_time}, table)
    numeric = [_fit_numeric(table, f) for f in [*spec.numeric, *_view_inputs(spec)]]
    categorical = []
    for f in spec.categorical:
        counts = pc.value_counts(table.column(f.name).drop_null()).to_pylist()
        counts.sort(key=lambda d: (-d["counts"], d["values"]))
        vocab = [d["values"] for d in counts[: f.max_vocab - 1]]
        categorical.append({"name": f.name, "vocab": [OOV, *vocab]})
    if any(f.buckets < 2 for f in spec.hashed):
        raise ValueError("features.hashed: buckets must be >= 2 (slot 0 is reserved for missing)")
    hashed = [{"name": f.name, "buckets": f.buckets} for f in spec.hashed]
    state = {"version": STATE_VERSION, "event_time": event_time, "numeric": numeric,
             "categorical": categorical, "hashed": hashed, "time_parts": list(spec.time_parts),
             "views": views}
    state["feature_names"] = feature_names(state)
    return state


def _fit_numeric(table: pa.Table, f: NumericFeature) -> dict[str, Any]:
    x = _numeric(table, f.name, f.log, f.clip)
    seen = x[~np.isnan(x)]
    mean = float(seen.mean()) if len(seen) else 0.0
    std = float(seen.std()) if len(seen) > 1 else 1.0
    out = {"name": f.name, "log": f.log, "clip": f.clip, "mean": mean, "std": std if std > 1e-12 else 1.0,
           "indicator": bool(np.isnan(x).any()) if f.indicator is None else f.indicator}
    if f.buckets > 0:
        # Quantile edges of the training window; duplicates collapse (a spike of equal values).
        qs = np.quantile(seen, np.linspace(0, 1, f.buckets + 1)[1:-1]) if len(seen) else []
        out["edges"] = [float(e) for e in np.unique(qs)]
    return out


def _view_inputs(spec: FeatureSettings) -> list[NumericFeature]:
    if not spec.use_views:
        return []
    from mlinfra_ray.features.aggregations import view_output_columns

    return [NumericFeature(name=c, log=True, indicator=True)
            for v in spec.views for c in view_output_columns(v)]


def feature_names(state: dict[str, Any]) -> list[str]:
    names = []
    for f in state["numeric"]:
        names.append(f["name"])
        if f["indicator"]:
            names.append(f"{f['name']}__missing")
        if "edges" in f:
            names += [f"{f['name']}@bucket{i}" for i in range(len(f["edges"]) + 2)]
    for f in state["categorical"]:
        names += [f"{f['name']}={v}" for v in f["vocab"]]
    for f in state.get("hashed", []):
        names += [f"{f['name']}#{i}" for i in range(f["buckets"])]
    for part in state["time_parts"]:
        names += [f"{part}_sin", f"{part}_cos"]
    return names


def transform(state: dict[str, Any], table: pa.Table) -> np.ndarray:
    """Model inputs, float32 [rows, len(feature_names)]."""
    if state.get("version") not in READABLE_VERSIONS:
        raise ValueError(f"feature state version {state.get('version')} not in {READABLE_VERSIONS}")
    table = with_views(state, table)
    blocks = []
    for f in state["numeric"]:
        x = _numeric(table, f["name"], f["log"], f["clip"])
        missing = np.isnan(x)
        blocks.append(((np.where(missing, f["mean"], x) - f["mean"]) / f["std"])[:, None])
        if f["indicator"]:
            blocks.append(missing.astype(np.float64)[:, None])
        if "edges" in f:
            blocks.append(_one_hot(bucket_index(x, f["edges"]), len(f["edges"]) + 2))
    for f in state["categorical"]:
        idx = category_index(table.column(f["name"]), f["vocab"])
        blocks.append(np.eye(len(f["vocab"]), dtype=np.float64)[idx])
    for f in state.get("hashed", []):
        blocks.append(_one_hot(hash_index(table.column(f["name"]), f["buckets"]), f["buckets"]))
    if state["time_parts"]:
        blocks.append(_time_parts(table.column(state["event_time"]), state["time_parts"]))
    return np.concatenate(blocks, axis=1).astype(np.float32)


def category_index(col: pa.Array | pa.ChunkedArray, vocab: list[str]) -> np.ndarray:
    """Position in `vocab`; unseen and missing values map to slot 0 (OOV)."""
    idx = pc.index_in(pc.cast(col, pa.string()), value_set=pa.array(vocab[1:], pa.string()))
    return (pc.fill_null(idx, -1).to_numpy(zero_copy_only=False) + 1).astype(np.int64)


def with_views(state: dict[str, Any], table: pa.Table) -> pa.Table:
    """Turn raw view columns into model columns (TTL, since_last); a no-op without views.

    Raises when a view's feature-time column is absent: rows that were never joined or looked up
    must fail loudly, not be scored as if every aggregate were missing.
    """
    views = [build(FeatureView, v) for v in state.get("views") or []]
    absent = [feature_time_column(v) for v in views if feature_time_column(v) not in table.column_names]
    if absent:
        raise ValueError(f"rows lack the feature views' columns {absent}: join them offline "
                         "(features.stage.build_training_set) or look them up online (serve.online_store)")
    return finish_views(table, views, state["event_time"]) if views else table


def bucket_index(x: np.ndarray, edges: list[float]) -> np.ndarray:
    """Slot 0: missing; slot i + 1: edges[i-1] <= x < edges[i] (open-ended at both ends)."""
    idx = np.searchsorted(np.asarray(edges, dtype=np.float64), x, side="right") + 1
    return np.where(np.isnan(x), 0, idx).astype(np.int64)


def hash_index(col: pa.Array | pa.ChunkedArray, buckets: int) -> np.ndarray:
    """Slot 0: missing; otherwise 1 + blake2b(value) mod (buckets - 1).

    blake2b, not Python's `hash()`: that is salted per process, so two Ray workers (or a worker
    and a Serve replica) would disagree. Only the distinct values of the batch are hashed.
    """
    encoded = pc.dictionary_encode(pc.cast(col, pa.string()).combine_chunks()
                                   if isinstance(col, pa.ChunkedArray) else pc.cast(col, pa.string()))
    slots = np.array([1 + int.from_bytes(hashlib.blake2b(v.encode(), digest_size=8).digest(), "little")
                      % max(buckets - 1, 1) for v in encoded.dictionary.to_pylist()] + [0], dtype=np.int64)
    codes = pc.fill_null(encoded.indices, len(encoded.dictionary)).to_numpy(zero_copy_only=False)
    return slots[codes]


def _one_hot(idx: np.ndarray, width: int) -> np.ndarray:
    return np.eye(width, dtype=np.float64)[idx]


def _numeric(table: pa.Table, name: str, log: bool, clip: list[float] | None) -> np.ndarray:
    x = pc.cast(table.column(name), pa.float64()).to_numpy(zero_copy_only=False).astype(np.float64)
    if log:
        x = np.log1p(np.maximum(x, 0.0))
    if clip is not None:
        x = np.clip(x, clip[0], clip[1])
    return x


def _time_parts(col: pa.Array | pa.ChunkedArray, parts: list[str]) -> np.ndarray:
    micros = pc.cast(pc.cast(col, pa.timestamp("us", tz="UTC")), pa.int64()).to_numpy(zero_copy_only=False)
    seconds = micros // 1_000_000
    out = []
    for part in parts:
        # hour of day / day of week (1970-01-01 was a Thursday: shift so Monday is 0)
        phase = (seconds % 86400) / 86400 if part == "hour" else ((seconds // 86400 + 3) % 7) / 7
        out += [np.sin(2 * np.pi * phase), np.cos(2 * np.pi * phase)]
    return np.stack(out, axis=1)


def drift_matrix(state: dict[str, Any], table: pa.Table) -> np.ndarray:
    """Inputs for drift detection: numeric columns (after log, missing filled) and category indices.

    Drift is watched on interpretable columns rather than one-hot model inputs, so a report can say
    "amount drifted" instead of "feature 17 drifted".
    """
    table = with_views(state, table)
    cols = []
    for f in state["numeric"]:
        x = _numeric(table, f["name"], f["log"], f["clip"])
        cols.append(np.where(np.isnan(x), f["mean"], x))
    for f in state["categorical"]:
        cols.append(category_index(table.column(f["name"]), f["vocab"]).astype(np.float64))
    return np.stack(cols, axis=1).astype(np.float32)


def drift_columns(state: dict[str, Any]) -> tuple[list[str], dict[int, int]]:
    """Column names of `drift_matrix` and {index: n_categories} for its categorical columns."""
    names = [f["name"] for f in state["numeric"]] + [f["name"] for f in state["categorical"]]
    n_num = len(state["numeric"])
    cats = {n_num + i: len(f["vocab"]) for i, f in enumerate(state["categorical"])}
    return names, cats
