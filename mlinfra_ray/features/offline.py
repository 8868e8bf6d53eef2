"""The offline store: versioned feature states and feature-view tables in Parquet, and
point-in-time correct training sets.

Layout under the store root (a local or shared filesystem path):

    states/v000001.json                      fitted FeatureState + where it came from (JSON only)
    views/<view>/_view.json                  definition, generation, high-water mark, writes
    views/<view>/write=000001/*.parquet      rows keyed by (entity, feature_time)

Writes are append-only and monotonic: a write holds only rows newer than the view's high-water
mark, so for every entity a later write is newer than an earlier one. That is what lets
materialization be incremental (only writes not yet applied) without per-key comparisons. A
changed view definition starts a new generation (the old rows are removed and recomputed) and
the online store notices and reloads. A write is committed when `_view.json` lists it (replaced
atomically after its files are complete): readers never see a half-written or crashed write. One
writer per store at a time.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import uuid
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from mlinfra_ray.features.aggregations import (
    FEATURE_TIME,
    TS_TYPE,
    compute_view,
    feature_time_column,
    finish_views,
    to_micros,
    view_columns,
)
from mlinfra_ray.settings import FeatureView

log = logging.getLogger(__name__)
META = "_view.json"
ROWS_PER_FILE = 256_000  # and per row group


class OfflineStoreError(RuntimeError):
    """Missing or inconsistent offline data; the message says which job to run."""


class OfflineStore:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def view_dir(self, name: str) -> Path:
        return self.root / "views" / name

    def meta(self, name: str) -> dict[str, Any] | None:
        path = self.view_dir(name) / META
        return json.loads(path.read_text()) if path.exists() else None

    def write_ids(self, name: str) -> list[int]:
        """Committed writes: those in the view's meta. A folder a crashed write left is ignored."""
        meta = self.meta(name)
        return sorted(w["id"] for w in meta["writes"]) if meta else []

    def _next_write_id(self, name: str) -> int:
        d = self.view_dir(name)
        on_disk = [int(p.name.split("=", 1)[1]) for p in d.glob("write=*")] if d.exists() else []
        return max([*on_disk, *self.write_ids(name)], default=0) + 1

    def write_view(self, events: Any, view: FeatureView, event_time: str) -> dict[str, Any]:
        """Aggregate a Ray Dataset of events and append the rows newer than the high-water mark."""
        meta = self.meta(view.name)
        if meta is None or meta["definition"] != definition(view):
            if meta is not None:
                log.warning("view %s: definition changed; recomputing it as a new generation", view.name)
            shutil.rmtree(self.view_dir(view.name), ignore_errors=True)
            meta = {"view": view.name, "definition": definition(view), "generation": uuid.uuid4().hex,
                    "columns": view_columns(view), "high_water_us": None, "writes": []}
        rows = compute_view(events, view, event_time)
        if meta["high_water_us"] is not None:
            rows = rows.map_batches(_newer_than, batch_format="pyarrow",
                                    fn_kwargs={"us": meta["high_water_us"]})
        write_id = self._next_write_id(view.name)
        out = self.view_dir(view.name) / f"write={write_id:06d}"
        # map_groups emits one block per entity; without a floor every entity became its own
        # row group (hundreds per file) and reads got 10x slower.
        rows.write_parquet(str(out), min_rows_per_file=ROWS_PER_FILE)
        files = sorted(out.glob("*.parquet")) if out.exists() else []
        times = pa.concat_tables([pq.read_table(f, columns=[FEATURE_TIME]) for f in files]) if files else None
        if times is None or times.num_rows == 0:
            shutil.rmtree(out, ignore_errors=True)
            self._save_meta(view.name, meta)
            return {"view": view.name, "write_id": None, "rows": 0, "generation": meta["generation"]}
        high = int(to_micros(times.column(FEATURE_TIME)).max())
        meta["writes"].append({"id": write_id, "rows": times.num_rows, "max_us": high,
                               "at": datetime.now(UTC).isoformat()})
        meta["high_water_us"] = high
        self._save_meta(view.name, meta)
        return {"view": view.name, "write_id": write_id, "rows": times.num_rows,
                "generation": meta["generation"]}

    def read_view(self, name: str, after_write: int = 0) -> pa.Table:
        """Rows of the writes after `after_write` (0: all), with a `write_id` column."""
        tables = []
        for wid in (w for w in self.write_ids(name) if w > after_write):
            files = sorted(str(f) for f in (self.view_dir(name) / f"write={wid:06d}").glob("*.parquet"))
            t = pa.concat_tables([pq.read_table(f) for f in files]) if files else None
            if t is not None and t.num_rows:
                tables.append(t.append_column("write_id", pa.array(np.full(t.num_rows, wid, np.int64))))
        if not tables:
            raise OfflineStoreError(f"offline store {self.root}: no rows for view {name!r} after write "
                                    f"{after_write}; run jobs/features.py first")
        return pa.concat_tables(tables, promote_options="default")

    def _save_meta(self, name: str, meta: dict[str, Any]) -> None:
        path = self.view_dir(name) / META
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(meta, indent=2))
        os.replace(tmp, path)  # readers never see a half-written file

    def save_state(self, state: dict[str, Any], info: dict[str, Any]) -> dict[str, Any]:
        """Store a fitted FeatureState as the next version, unless it equals the latest one."""
        digest = hashlib.sha256(json.dumps(state, sort_keys=True).encode()).hexdigest()
        latest = self.state_versions()[-1:] or [0]
        if latest[0] and self.load_state(latest[0])["sha256"] == digest:
            return {"version": latest[0], "sha256": digest, "new": False}
        version = latest[0] + 1
        path = self.root / "states" / f"v{version:06d}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        record = {"version": version, "sha256": digest, "created": datetime.now(UTC).isoformat(),
                  **info, "state": state}
        path.write_text(json.dumps(record, indent=2, sort_keys=True))
        return {"version": version, "sha256": digest, "new": True, "path": str(path)}

    def state_versions(self) -> list[int]:
        d = self.root / "states"
        return sorted(int(p.stem[1:]) for p in d.glob("v*.json")) if d.exists() else []

    def load_state(self, version: int | None = None) -> dict[str, Any]:
        """A stored state record ({"version", "sha256", ..., "state"}); the latest by default."""
        versions = self.state_versions()
        if not versions:
            raise OfflineStoreError(f"no feature state under {self.root}/states; run jobs/features.py")
        v = versions[-1] if version is None else version
        record = json.loads((self.root / "states" / f"v{v:06d}.json").read_text())
        if hashlib.sha256(json.dumps(record["state"], sort_keys=True).encode()).hexdigest() != record["sha256"]:
            raise OfflineStoreError(f"feature state v{v}: sha256 mismatch (edited or truncated)")
        return record


def definition(view: FeatureView) -> str:
    """What the stored rows depend on (not ttl / since_last: those apply when values are used)."""
    d = {k: v for k, v in asdict(view).items() if k not in ("ttl", "since_last")}
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


def _newer_than(batch: pa.Table, us: int) -> pa.Table:
    return batch.filter(pc.greater(pc.cast(batch.column(FEATURE_TIME), pa.int64()), us))


def point_in_time_join(labels: pa.Table, features: pa.Table, view: FeatureView, event_time: str,
                       inclusive: bool = True) -> pa.Table:
    """For each label row, the entity's latest feature row at or before its event time.

    `inclusive=False` takes only rows strictly before it. Adds the view's columns (NaN where
    nothing joins) and its feature-time column (null there); `finish_views` then applies the TTL.
    Vectorized: rows are ranked on one (entity code, time rank) int64 key and binary-searched.
    """
    keys_f, keys_l = (pc.cast(t.column(view.entity), pa.string()) for t in (features, labels))
    uniq = pc.unique(pa.chunked_array([*keys_f.chunks, *keys_l.chunks], pa.string()))
    code_f, code_l = _codes(keys_f, uniq), _codes(keys_l, uniq)
    ts_f, ts_l = to_micros(features.column(FEATURE_TIME)), to_micros(labels.column(event_time))
    order = np.lexsort((ts_f, code_f))
    code_f, ts_f = code_f[order], ts_f[order]
    times = np.unique(np.concatenate([ts_f, ts_l]))
    width = len(times) + 1
    assert (len(uniq) + 1) * width < 2**62, "join key would overflow int64"
    key_f = code_f * width + np.searchsorted(times, ts_f)
    key_l = code_l * width + np.searchsorted(times, ts_l)
    pos = np.searchsorted(key_f, key_l, side="right" if inclusive else "left") - 1
    safe = np.clip(pos, 0, None)
    ok = (pos >= 0) & (code_l >= 0) & (code_f[safe] == code_l) if len(code_f) else np.zeros(len(pos), bool)
    rows = order[safe] if len(order) else safe
    out = labels
    for name in view_columns(view):
        x = features.column(name).to_numpy(zero_copy_only=False)[rows] if len(order) else np.zeros(len(rows))
        out = out.append_column(name, pa.array(np.where(ok, x, np.nan), pa.float64()))
    joined = pa.array(np.where(ok, ts_f[safe] if len(ts_f) else 0, 0), pa.int64(), mask=~ok).cast(TS_TYPE)
    return out.append_column(feature_time_column(view), joined)


def _codes(col: pa.ChunkedArray | pa.Array, uniq: pa.Array) -> np.ndarray:
    idx = pc.index_in(col, value_set=uniq)
    return pc.fill_null(idx, -1).to_numpy(zero_copy_only=False).astype(np.int64)


def join_views(labels: pa.Table, tables: dict[str, pa.Table], views: list[FeatureView], event_time: str,
               inclusive: bool = True, finish: bool = True) -> pa.Table:
    """All views joined point-in-time; `finish`: TTL applied and `since_last` derived (model-ready).

    Training sets keep the raw columns (`finish=False`): `transform` finishes them, exactly as it
    finishes the raw columns of an online lookup.
    """
    for view in views:
        labels = point_in_time_join(labels, tables[view.name], view, event_time, inclusive)
    return finish_views(labels, views, event_time) if finish else labels
