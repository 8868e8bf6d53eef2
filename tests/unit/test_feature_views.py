"""Feature views without Ray: window aggregations and point-in-time joins against brute-force
references, the leakage trap, TTL, and the new row-level transforms (buckets, hashing)."""

import json

import numpy as np
import pyarrow as pa
import pyarrow.compute  # noqa: F401 - pa.compute
import pytest

from mlinfra_ray.compose import compose_settings
from mlinfra_ray.datasets.fraud import generate_transactions
from mlinfra_ray.features.aggregations import (
    FEATURE_TIME,
    TS_TYPE,
    aggregate_events,
    feature_time_column,
    parse_duration,
    view_columns,
    view_output_columns,
    window_max,
)
from mlinfra_ray.features.offline import join_views, point_in_time_join
from mlinfra_ray.features.transforms import fit_feature_state, hash_index, transform
from mlinfra_ray.settings import FeatureView

H = 3_600_000_000  # one hour in µs
VIEW = FeatureView(name="u", entity="user_id", column="amount", functions=["count", "sum", "mean", "max"],
                   windows=["1h", "24h"], ttl="2d")


def ts(us):
    return pa.array(us, pa.int64()).cast(TS_TYPE)


def test_parse_duration():
    assert parse_duration("90s") == 90_000_000 and parse_duration("7d") == 7 * 24 * H
    for bad in ("", "1y", "0h", "h", "-1h"):
        with pytest.raises(ValueError, match="bad duration"):
            parse_duration(bad)


def test_window_max_matches_slices():
    rng = np.random.default_rng(1)
    for n in (1, 2, 5, 33, 300):
        x = rng.normal(size=n)
        start = rng.integers(0, n, n)
        end = np.minimum(start + rng.integers(1, n + 1, n), n)
        expected = [x[a:b].max() for a, b in zip(start, end, strict=True)]
        assert np.array_equal(window_max(x, start, end), expected)


def brute_force(events: pa.Table, view: FeatureView) -> dict:
    """Per distinct event time t: the events in (t - w, t], by plain Python loops."""
    rows = sorted(zip(events["event_time"].cast(pa.int64()).to_pylist(), events["amount"].to_pylist(),
                      strict=True))
    out = {}
    for t in sorted({r[0] for r in rows}):
        for w in view.windows:
            inside = [a for (e, a) in rows if t - parse_duration(w) < e <= t]
            seen = [a for a in inside if a is not None]
            out[(t, f"count_{w}")] = float(len(inside))
            out[(t, f"sum_{w}")] = sum(seen) if seen else np.nan
            out[(t, f"mean_{w}")] = sum(seen) / len(seen) if seen else np.nan
            out[(t, f"max_{w}")] = max(seen) if seen else np.nan
    return out


def test_aggregate_events_matches_brute_force():
    rng = np.random.default_rng(3)
    times = np.sort(rng.integers(0, 72 * H, 200))
    times[10:14] = times[10]  # several events at the same instant: one feature row for them
    amounts = [None if rng.random() < 0.1 else float(a) for a in rng.lognormal(3, 1, 200)]
    events = pa.table({"user_id": ["u000001"] * 200, "event_time": ts(times), "amount": amounts})
    got = aggregate_events(events.take(rng.permutation(200)), VIEW, "event_time")  # order must not matter
    assert got.num_rows == len(np.unique(times))
    ref = brute_force(events, VIEW)
    for i, t in enumerate(got[FEATURE_TIME].cast(pa.int64()).to_pylist()):
        for w in VIEW.windows:
            for fn in VIEW.functions:
                np.testing.assert_allclose(got[f"u_{fn}_{w}"][i].as_py(), ref[(t, f"{fn}_{w}")], rtol=1e-9)


def test_an_entity_s_rows_do_not_depend_on_the_other_entities_of_its_block():
    """Blocks hold many entities; incremental writes and full recomputes group them differently."""
    events = generate_transactions(compose_settings(["data.synthetic.rows=2000",
                                                     "data.synthetic.n_users=40"]).data.synthetic)
    view = FeatureView(name="u", entity="user_id", column="amount", functions=["count", "sum", "mean", "max"],
                       windows=["1h", "24h", "7d"])
    together = aggregate_events(events, view, "event_time")
    assert together.num_rows == events.group_by(["user_id", "event_time"]).aggregate([]).num_rows
    for user in events["user_id"].unique().to_pylist()[:5]:
        alone = aggregate_events(events.filter(pa.compute.equal(events["user_id"], user)), view, "event_time")
        mine = together.filter(pa.compute.equal(together["user_id"], user))
        assert mine.num_rows == alone.num_rows > 0
        for name in alone.column_names:
            a, b = mine[name].to_numpy(zero_copy_only=False), alone[name].to_numpy(zero_copy_only=False)
            assert a.tobytes() == b.tobytes() if a.dtype.kind == "f" else list(a) == list(b), name


def features_table(entity, feature_us, values):
    cols = {"user_id": entity, FEATURE_TIME: ts(feature_us)}
    cols.update({c: pa.array(np.full(len(entity), np.nan) if values is None else values, pa.float64())
                 for c in view_columns(VIEW)})
    return pa.table(cols)


@pytest.mark.parametrize("inclusive", [True, False])
def test_point_in_time_join_matches_brute_force(inclusive):
    rng = np.random.default_rng(5)
    users = [f"u{i:06d}" for i in range(30)]
    # (entity, feature time) is the offline key: unique pairs; users 25..29 have no features
    pairs = sorted({(int(u), int(t) * 1000) for u, t in zip(rng.integers(0, 25, 400), rng.integers(0, 100, 400),
                                                             strict=True)})
    order = rng.permutation(len(pairs))  # stored order must not matter
    feats = features_table([users[pairs[k][0]] for k in order], [pairs[k][1] for k in order],
                           rng.normal(size=len(pairs)))
    l_ent = [users[i] for i in rng.integers(0, 30, 300)]
    l_us = rng.integers(0, 100, 300) * 1000
    labels = pa.table({"user_id": l_ent, "event_time": ts(l_us)})
    got = point_in_time_join(labels, feats, VIEW, "event_time", inclusive)
    col = view_columns(VIEW)[1]
    f_times = feats[FEATURE_TIME].cast(pa.int64()).to_pylist()
    for i in range(300):
        ok = [j for j in range(feats.num_rows) if feats["user_id"][j].as_py() == l_ent[i]
              and (f_times[j] <= l_us[i] if inclusive else f_times[j] < l_us[i])]
        joined = got[feature_time_column(VIEW)][i].as_py()
        if not ok:
            assert joined is None and np.isnan(got[col][i].as_py())
        else:
            best = max(ok, key=lambda j: f_times[j])
            assert got[feature_time_column(VIEW)].cast(pa.int64())[i].as_py() == f_times[best]
            assert got[col][i].as_py() == feats[col][best].as_py()


def test_leakage_trap_features_written_after_the_label_never_join():
    """Each label has a harmless value in the past and a 'leaky' value (the label itself, 1e6)
    written 1 µs, 1 s and 1 h after it; any implementation that peeks ahead fails here."""
    t0 = 50 * H
    labels = pa.table({"user_id": ["u000001", "u000002", "u000003"], "event_time": ts([t0, t0, t0]),
                       "is_fraud": [1, 1, 1]})
    ent, us, val = [], [], []
    for user, after in (("u000001", 1), ("u000002", 1_000_000), ("u000003", H)):
        ent += [user, user]
        us += [t0 - H, t0 + after]
        val += [1.0, 1e6]
    feats = features_table(ent, us, None).set_column(2, view_columns(VIEW)[0], pa.array(val))
    for inclusive in (True, False):
        out = join_views(labels, {"u": feats}, [VIEW], "event_time", inclusive)
        assert out[view_columns(VIEW)[0]].to_pylist() == [1.0, 1.0, 1.0]
        assert out["u_since_last_s"].to_pylist() == [3600.0] * 3
    # at exactly the label time: joins when inclusive, not when strictly before
    feats = features_table(["u000001"], [t0], [7.0] * 1)
    exact = join_views(labels.slice(0, 1), {"u": feats}, [VIEW], "event_time", inclusive=True)
    strict = join_views(labels.slice(0, 1), {"u": feats}, [VIEW], "event_time", inclusive=False)
    assert exact[view_columns(VIEW)[0]][0].as_py() == 7.0 and np.isnan(strict[view_columns(VIEW)[0]][0].as_py())


def test_ttl_makes_old_values_missing():
    ttl = parse_duration(VIEW.ttl)
    labels = pa.table({"user_id": ["u000001"] * 3, "event_time": ts([ttl, ttl + 1, 10 * ttl])})
    out = join_views(labels, {"u": features_table(["u000001"], [0], [5.0])}, [VIEW], "event_time")
    assert out[view_columns(VIEW)[0]].to_pylist()[0] == 5.0  # exactly ttl old: still valid
    assert np.isnan(out[view_columns(VIEW)[0]].to_pylist()[1:]).all()
    assert np.isnan(out["u_since_last_s"].to_pylist()[1:]).all()
    assert set(view_output_columns(VIEW)) <= set(out.column_names)
    assert feature_time_column(VIEW) not in out.column_names


@pytest.fixture(scope="module")
def table():
    return generate_transactions(compose_settings(["data.synthetic.rows=3000"]).data.synthetic)


def test_buckets_and_hashing_are_fitted_as_json_and_batch_invariant(table):
    spec = compose_settings(["features=fraud_store", "features.use_views=false"]).features
    state = fit_feature_state(table.slice(0, 2000), spec, "event_time")
    dev = next(f for f in state["numeric"] if f["name"] == "device_age_days")
    assert 1 <= len(dev["edges"]) <= 7 and dev["edges"] == sorted(dev["edges"])
    again = json.loads(json.dumps(state))
    full = transform(again, table)
    for i in (0, 5, 2999):
        assert transform(state, table.slice(i, 1)).tobytes() == full[i:i + 1].tobytes()
    names = state["feature_names"]
    hashed = [j for j, n in enumerate(names) if n.startswith("merchant_id#")]
    assert len(hashed) == 32 and (full[:, hashed].sum(axis=1) == 1).all()
    buckets = [j for j, n in enumerate(names) if n.startswith("device_age_days@bucket")]
    assert (full[:, buckets].sum(axis=1) == 1).all()


def test_hash_is_stable_and_missing_has_its_own_slot():
    a = hash_index(pa.array(["m00001", None, "m00002", "m00001"]), 16)
    assert a[0] == a[3] and a[1] == 0 and a.min() >= 0 and a.max() < 16
    # pinned: blake2b, not Python's per-process salted hash(), so workers and replicas agree
    assert hash_index(pa.array(["m00001"]), 1024)[0] == hash_index(pa.array(["x", "m00001"]), 1024)[1]
    assert hash_index(pa.array(["m00001"]), 1024)[0] == 1 + int.from_bytes(
        __import__("hashlib").blake2b(b"m00001", digest_size=8).digest(), "little") % 1023


def test_indicator_can_be_forced_and_version_1_states_still_transform(table):
    spec = compose_settings(["features.numeric=[{name: amount, log: true, indicator: true}]"]).features
    state = fit_feature_state(table, spec, "event_time")
    assert "amount__missing" in state["feature_names"]
    v1 = {k: v for k, v in state.items() if k not in ("hashed", "views")} | {"version": 1}
    assert transform(v1, table).tobytes() == transform(state, table).tobytes()


def test_a_state_with_views_refuses_rows_that_were_never_joined(table):
    spec = compose_settings(["features.use_views=true"]).features
    labels = table.slice(0, 50)
    tables = {v.name: pa.table({v.entity: pa.array([], pa.string()), FEATURE_TIME: ts([]),
                                **{c: pa.array([], pa.float64()) for c in view_columns(v)}})
              for v in spec.views}
    joined = join_views(labels, tables, spec.views, "event_time", finish=False)
    state = fit_feature_state(joined, spec, "event_time")
    x = transform(state, joined)
    names = state["feature_names"]
    assert (x[:, names.index("user_amount_sum_24h__missing")] == 1).all()  # missing, not zero
    with pytest.raises(ValueError, match="lack the feature views"):
        transform(state, labels)
