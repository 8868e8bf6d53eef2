"""Online/offline skew check: do the online values equal the offline store's latest rows?

For a seeded sample of entities per view, the offline latest row (all writes) is compared with
the online row, bit for bit (feature time and every value; NaN equals NaN). A mismatch is one of:
`missing_online` (never materialized or lost), `behind` (online is older: materialization lag),
`ahead` (online is newer: the offline store was rebuilt or truncated), `value` (same time,
different numbers: a bug or a store written by something else).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np

from mlinfra_ray.features.aggregations import FEATURE_TIME, to_micros, view_columns
from mlinfra_ray.features.materialize import latest_per_entity
from mlinfra_ray.features.offline import OfflineStore
from mlinfra_ray.features.online import OnlineStore, decode_rows
from mlinfra_ray.settings import FeatureView

MAX_EXAMPLES = 5


def check_view(offline: OfflineStore, store: OnlineStore, view: FeatureView, sample: int,
               seed: int) -> dict[str, Any]:
    latest = latest_per_entity(offline.read_view(view.name), view.entity)
    rng = np.random.default_rng(seed)
    idx = np.sort(rng.choice(latest.num_rows, size=min(sample, latest.num_rows), replace=False))
    rows = latest.take(idx)
    keys = rows.column(view.entity).to_pylist()
    found, ts, values = decode_rows(store.read(view.name, keys), len(view_columns(view)), view.name)
    off_ts = to_micros(rows.column(FEATURE_TIME))
    off_values = np.column_stack([rows.column(c).to_numpy(zero_copy_only=False) for c in view_columns(view)])
    same = (values == off_values) | (np.isnan(values) & np.isnan(off_values))
    kinds = np.where(~found, "missing_online", np.where(ts < off_ts, "behind", np.where(
        ts > off_ts, "ahead", np.where(same.all(axis=1), "ok", "value"))))
    counts = Counter(kinds.tolist())
    examples = [{"entity": keys[i], "kind": str(kinds[i]), "offline_us": int(off_ts[i]),
                 "online_us": int(ts[i]) if found[i] else None}
                for i in np.flatnonzero(kinds != "ok")[:MAX_EXAMPLES]]
    mismatches = len(keys) - counts.get("ok", 0)
    return {"view": view.name, "sampled": len(keys), "mismatches": mismatches,
            "mismatch_fraction": mismatches / max(len(keys), 1), "by_kind": dict(counts), "examples": examples}


def skew_check(offline: OfflineStore, store: OnlineStore, views: list[FeatureView], sample: int,
               seed: int) -> dict[str, Any]:
    reports = [check_view(offline, store, v, sample, seed) for v in views]
    sampled = sum(r["sampled"] for r in reports)
    mismatches = sum(r["mismatches"] for r in reports)
    return {"views": reports, "sampled": sampled, "mismatches": mismatches,
            "mismatch_fraction": mismatches / max(sampled, 1)}
