"""Row-level feature transforms: fit once on the training window, apply anywhere.

The fitted state is a JSON-ready dict (means, stds, vocabularies) — never a pickle — saved in the
model bundle. `transform` is the only code that turns contract-typed rows into model inputs: Ray
Data batches offline and a single request online go through it, so there is no train/serve skew.
Every operation is element-wise per row in float64, cast to float32 at the end, so a row's
features do not depend on which batch it arrived in (bit-identical offline and online).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mlinfra_ray.settings import FeatureSettings

STATE_VERSION = 1
OOV = "<other>"  # slot 0 of every vocabulary: unseen, rare and missing values


def fit_feature_state(table: pa.Table, spec: FeatureSettings, event_time: str) -> dict[str, Any]:
    """Fit scaling and vocabularies on `table` (the training window only)."""
    numeric = []
    for f in spec.numeric:
        x = _numeric(table, f.name, f.log, f.clip)
        seen = x[~np.isnan(x)]
        mean = float(seen.mean()) if len(seen) else 0.0
        std = float(seen.std()) if len(seen) > 1 else 1.0
        numeric.append({"name": f.name, "log": f.log, "clip": f.clip, "mean": mean,
                        "std": std if std > 1e-12 else 1.0, "indicator": bool(np.isnan(x).any())})
    categorical = []
    for f in spec.categorical:
        counts = pc.value_counts(table.column(f.name).drop_null()).to_pylist()
        counts.sort(key=lambda d: (-d["counts"], d["values"]))
        vocab = [d["values"] for d in counts[: f.max_vocab - 1]]
        categorical.append({"name": f.name, "vocab": [OOV, *vocab]})
    state = {"version": STATE_VERSION, "event_time": event_time, "numeric": numeric,
             "categorical": categorical, "time_parts": list(spec.time_parts)}
    state["feature_names"] = feature_names(state)
    return state


def feature_names(state: dict[str, Any]) -> list[str]:
    names = []
    for f in state["numeric"]:
        names.append(f["name"])
        if f["indicator"]:
            names.append(f"{f['name']}__missing")
    for f in state["categorical"]:
        names += [f"{f['name']}={v}" for v in f["vocab"]]
    for part in state["time_parts"]:
        names += [f"{part}_sin", f"{part}_cos"]
    return names


def transform(state: dict[str, Any], table: pa.Table) -> np.ndarray:
    """Model inputs, float32 [rows, len(feature_names)]."""
    if state.get("version") != STATE_VERSION:
        raise ValueError(f"feature state version {state.get('version')} != {STATE_VERSION}")
    blocks = []
    for f in state["numeric"]:
        x = _numeric(table, f["name"], f["log"], f["clip"])
        missing = np.isnan(x)
        blocks.append(((np.where(missing, f["mean"], x) - f["mean"]) / f["std"])[:, None])
        if f["indicator"]:
            blocks.append(missing.astype(np.float64)[:, None])
    for f in state["categorical"]:
        idx = category_index(table.column(f["name"]), f["vocab"])
        blocks.append(np.eye(len(f["vocab"]), dtype=np.float64)[idx])
    if state["time_parts"]:
        blocks.append(_time_parts(table.column(state["event_time"]), state["time_parts"]))
    return np.concatenate(blocks, axis=1).astype(np.float32)


def category_index(col: pa.Array | pa.ChunkedArray, vocab: list[str]) -> np.ndarray:
    """Position in `vocab`; unseen and missing values map to slot 0 (OOV)."""
    idx = pc.index_in(pc.cast(col, pa.string()), value_set=pa.array(vocab[1:], pa.string()))
    return (pc.fill_null(idx, -1).to_numpy(zero_copy_only=False) + 1).astype(np.int64)


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
