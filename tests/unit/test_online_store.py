"""Online store backends (SQLite file, real redis-server on loopback) behind one interface, and the
serving reader: batched lookups, key validation, TTL, counters, missing never read as zero."""

import uuid

import numpy as np
import pyarrow as pa
import pytest

from mlinfra_ray.compose import compose_settings
from mlinfra_ray.features.aggregations import TS_TYPE, parse_duration, view_columns
from mlinfra_ray.features.online import (
    OnlineFeatures,
    OnlineStoreError,
    decode_rows,
    encode_rows,
    key_patterns,
    open_store,
)
from mlinfra_ray.settings import OnlineStoreSettings

SETTINGS = compose_settings([])
VIEW = SETTINGS.features.views[0]  # user_amount: per user_id
K = len(view_columns(VIEW))
DAY = 86_400_000_000


@pytest.fixture(params=["sqlite", "redis"])
def store(request, tmp_path):
    if request.param == "sqlite":
        backend = open_store(OnlineStoreSettings(type="sqlite"), tmp_path)
    else:
        url = request.getfixturevalue("redis_url")
        namespace = uuid.uuid4().hex[:8]  # one session server; each test its own key space
        backend = open_store(OnlineStoreSettings(type="redis", url=url, namespace=namespace), tmp_path)
    yield backend
    backend.close()


def users(n, start=0):
    return [f"u{i:06d}" for i in range(start, start + n)]


def fill(store, n=100, ts_us=10 * DAY):
    rng = np.random.default_rng(0)
    values = rng.lognormal(3, 1, (n, K))
    values[3, 2] = np.nan  # a window without values stays NaN, bit for bit
    times = np.full(n, ts_us, np.int64) + np.arange(n)
    store.write(VIEW.name, users(n), encode_rows(times, values))
    return times, values


def test_codec_is_bit_exact():
    values = np.array([[0.1, np.nan, -0.0, 1e308], [np.pi, 5e-324, 2.0, -7.5]])
    found, ts, got = decode_rows(encode_rows(np.array([1, -2], np.int64), values), 4, "v")
    assert found.all() and ts.tolist() == [1, -2] and got.tobytes() == values.tobytes()
    with pytest.raises(OnlineStoreError, match="re-run materialize"):
        decode_rows([b"\0" * 16], 4, "v")


def test_write_read_batched_single_meta_clear(store):
    times, values = fill(store)
    keys = [*users(3), "u999999", *users(2, start=98)]
    found, ts, got = decode_rows(store.read(VIEW.name, keys), K, VIEW.name)
    assert found.tolist() == [True, True, True, False, True, True]
    rows = [0, 1, 2, 98, 99]
    assert got[found].tobytes() == values[rows].tobytes() and ts[found].tolist() == times[rows].tolist()
    assert store.read_one(VIEW.name, "u000003") == store.read(VIEW.name, ["u000003"])[0]
    assert store.read_one(VIEW.name, "u999999") is None and store.read(VIEW.name, []) == []
    assert store.count(VIEW.name) == 100
    store.set_meta(VIEW.name, {"write_id": 3, "columns": view_columns(VIEW)})
    assert store.get_meta(VIEW.name)["write_id"] == 3
    store.clear(VIEW.name)
    assert store.count(VIEW.name) == 0 and store.get_meta(VIEW.name) is None
    assert store.read(VIEW.name, users(3)) == [None] * 3


def test_upsert_replaces_the_row(store):
    fill(store, n=5)
    store.write(VIEW.name, ["u000001"], encode_rows(np.array([99 * DAY]), np.ones((1, K))))
    found, ts, got = decode_rows(store.read(VIEW.name, users(2)), K, VIEW.name)
    assert ts[1] == 99 * DAY and (got[1] == 1).all() and store.count(VIEW.name) == 5


def reader(store):
    return OnlineFeatures(store, [VIEW], key_patterns(SETTINGS.contract))


def test_lookup_counts_hits_misses_and_invalid_keys(store):
    fill(store)
    features = reader(store)
    keys = [*users(10), "u555555", "u 000001", "m00001", None, "U000001"]
    found, _, values = features.lookup(VIEW, keys)
    assert found.tolist() == [True] * 10 + [False] * 5
    assert np.isnan(values[10:]).all()
    assert features.stats()[VIEW.name] == {"hit": 10, "miss": 1, "invalid": 4, "stale": 0}


def test_a_swapped_id_mapping_is_a_spike_of_invalid_keys_and_missing_features(store):
    """Merchant IDs sent where user IDs belong: every lookup is invalid, features are NaN and the
    fitted state's missing indicators fire; nothing is silently scored as a zero aggregate."""
    fill(store)
    features = reader(store)
    swapped = pa.table({"user_id": [f"m{i:05d}" for i in range(20)],
                        "event_time": pa.array(np.full(20, 11 * DAY), pa.int64()).cast(TS_TYPE)})
    out = features.attach(swapped, "event_time")
    assert features.stats()[VIEW.name]["invalid"] == 20
    assert np.isnan(np.column_stack([out[c].to_numpy(zero_copy_only=False) for c in view_columns(VIEW)])).all()
    # a mapping shifted to well-formed but unknown users: a spike of misses instead
    unknown = swapped.set_column(0, "user_id", pa.array(users(20, start=500)))
    features.attach(unknown, "event_time")
    assert features.stats()[VIEW.name] == {"hit": 0, "miss": 20, "invalid": 20, "stale": 0}


def test_values_older_than_the_ttl_are_stale_and_counted(store):
    times, _ = fill(store, n=4, ts_us=10 * DAY)
    ttl = parse_duration(VIEW.ttl)
    event = np.array([times[0] + 1, times[1] + ttl, times[2] + ttl + 1, times[3] - 1])  # last: from the future
    features = reader(store)
    table = pa.table({"user_id": users(4), "event_time": pa.array(event, pa.int64()).cast(TS_TYPE)})
    out = features.attach(table, "event_time")
    assert features.stats()[VIEW.name] == {"hit": 2, "miss": 0, "invalid": 0, "stale": 2}
    from mlinfra_ray.features.aggregations import finish_views

    finished = finish_views(out, [VIEW], "event_time")
    col = finished[view_columns(VIEW)[0]].to_numpy(zero_copy_only=False)
    assert np.isfinite(col[:2]).all() and np.isnan(col[2:]).all()


def test_reader_refuses_a_store_materialized_with_other_columns(tmp_path):
    from mlinfra_ray.features.online import open_online_features

    backend = open_store(OnlineStoreSettings(type="sqlite"), tmp_path)
    backend.set_meta(VIEW.name, {"columns": ["something_else"]})
    backend.close()
    with pytest.raises(OnlineStoreError, match="jobs/materialize.py"):
        open_online_features(OnlineStoreSettings(type="sqlite"), SETTINGS.features, SETTINGS.contract, tmp_path)


def test_unreachable_redis_fails_with_the_url():
    with pytest.raises(OnlineStoreError, match="unreachable"):
        open_store(OnlineStoreSettings(type="redis", url="redis://127.0.0.1:1/0", timeout_s=0.5), "/tmp")
