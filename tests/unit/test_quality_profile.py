"""The quality report's per-column numbers against plain Python on the same values: distinct
counts (text by sample-chosen method, numbers and times from one sort), top values, ranges."""

from collections import Counter
from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa

from mlinfra_ray.quality import SAMPLE, profile_columns


def test_profile_matches_plain_python():
    rng = np.random.default_rng(7)
    n = 3 * SAMPLE  # past the sample, so both ways of counting text are taken
    keys = [f"k{i}" for i in rng.integers(0, n // 2, n)]  # key-like: many distinct, some repeated
    cats = [None if i % 97 == 0 else c for i, c in enumerate(rng.choice(["web", "pos", "app", "ÄÖ"], n))]
    amounts = rng.integers(0, 500, n) / 4.0  # repeated values; one null below
    start = datetime(2026, 1, 1, tzinfo=UTC)
    times = [start + timedelta(minutes=int(m)) for m in rng.integers(0, 10_000, n)]
    table = pa.table({"key": keys, "cat": cats, "amount": pa.array([None, *amounts[1:]]),
                      "flag": pa.array(rng.integers(0, 2, n)),
                      "at": pa.array(times, pa.timestamp("us", tz="UTC")),
                      "empty": pa.nulls(n, pa.string()), "_line": pa.array(np.arange(n))})
    prof = profile_columns(table)

    assert "_line" not in prof
    assert prof["key"]["distinct"] == len(set(keys)) and "top" not in prof["key"]
    present = [c for c in cats if c is not None]
    assert prof["cat"]["distinct"] == 4 and prof["cat"]["null_pct"] == round(100 * (n - len(present)) / n, 3)
    assert prof["cat"]["top"] == dict(Counter(present).most_common())
    assert prof["amount"]["distinct"] == len(set(amounts[1:].tolist()))
    assert (prof["amount"]["min"], prof["amount"]["max"]) == (amounts[1:].min(), amounts[1:].max())
    assert prof["amount"]["mean"] == float(np.mean(amounts[1:]))
    assert sum(prof["amount"]["histogram"]) <= n - 1  # the p0.5–p99.5 range leaves out the tails
    assert prof["flag"]["distinct"] == 2
    assert prof["at"]["distinct"] == len(set(times)) and sum(prof["at"]["histogram"]) == n
    assert prof["at"]["min"] == str(min(times)) and prof["at"]["max"] == str(max(times))
    assert prof["empty"] == {"type": "string", "null_pct": 100.0, "distinct": 0, "top": {}}


def test_profile_of_an_empty_table():
    prof = profile_columns(pa.table({"a": pa.array([], pa.float64()), "b": pa.array([], pa.string())}))
    assert prof["a"]["distinct"] == 0
    assert prof["b"] == {"type": "string", "null_pct": 0.0, "distinct": 0, "top": {}}
