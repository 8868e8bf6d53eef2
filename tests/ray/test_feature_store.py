"""The feature store on a real local Ray cluster: views aggregated with Ray Data, incremental
offline writes and materialization, skew check, and the proof that the offline path (Ray Data
point-in-time join + `transform` on Ray Data batches) and the online path (one request through the
serve seam's lookup + `transform`) give bit-identical model inputs, on SQLite and on Redis."""

import dataclasses
import shutil
import uuid

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from mlinfra_ray.compose import compose_settings
from mlinfra_ray.datasets.fraud import generate_transactions
from mlinfra_ray.features.aggregations import FEATURE_TIME, aggregate_events, view_columns
from mlinfra_ray.features.materialize import materialize
from mlinfra_ray.features.online import decode_rows, encode_rows, open_store
from mlinfra_ray.features.skew import skew_check
from mlinfra_ray.features.stage import build_training_set, offline_store
from mlinfra_ray.features.transforms import fit_feature_state, transform
from mlinfra_ray.settings import to_dict
from tests.procs import free_port

pytestmark = pytest.mark.ray
SMALL = ["data.synthetic.rows=3000", "data.synthetic.n_users=150", "data.synthetic.n_merchants=30",
         "data.synthetic.days=20", "features=fraud_store"]


def settings_for(root, *extra):
    return compose_settings([*SMALL, f"paths.root={root}", *extra])


@pytest.fixture(scope="module")
def events():
    return generate_transactions(compose_settings(SMALL).data.synthetic)


def write(store, table, views):
    import ray

    return [store.write_view(ray.data.from_arrow(table), v, "event_time") for v in views]


def stores_materialized_at_two_thirds(s, events):
    """Offline store with every event, online store materialized when two thirds were written:
    the offline store moves on, the online one stays at the cutoff. (store, views, cutoff row)."""
    store, views = offline_store(s), s.features.views
    cut = events.num_rows * 2 // 3
    write(store, events.slice(0, cut), views)
    online = open_store(s.online_store, s.paths.root)
    materialize(store, online, views)
    online.close()
    write(store, events, views)
    return store, views, cut


def test_views_on_ray_data_equal_the_pure_per_entity_computation(ray_cluster, events, tmp_path):
    s = settings_for(tmp_path)
    store = offline_store(s)
    view = s.features.views[0]
    assert write(store, events, [view])[0]["rows"] > 0
    got = store.read_view(view.name).drop_columns(["write_id"]).sort_by([(view.entity, "ascending"),
                                                                         (FEATURE_TIME, "ascending")])
    user = got[view.entity][0].as_py()
    mine = events.filter(pc.equal(events[view.entity], user))
    expected = aggregate_events(mine, view, "event_time")
    assert got.filter(pc.equal(got[view.entity], user)).equals(expected)
    # one row per (entity, distinct event time)
    pairs = events.group_by([view.entity, "event_time"]).aggregate([])
    assert got.num_rows == pairs.num_rows


def test_incremental_writes_and_materialization_and_skew_check(ray_cluster, events, tmp_path):
    s = settings_for(tmp_path)
    store, online = offline_store(s), open_store(s.online_store, s.paths.root)
    views = s.features.views
    half = events.slice(0, events.num_rows // 2)
    first = write(store, half, views)
    assert [w["write_id"] for w in first] == [1, 1]
    assert [m["full"] for m in materialize(store, online, views)] == [True, True]
    again = write(store, half, views)  # nothing new: no write, no rows
    assert [w["rows"] for w in again] == [0, 0] and store.write_ids(views[0].name) == [1]
    # a write that crashed before its commit leaves a folder nobody reads
    crashed = store.view_dir(views[0].name) / "write=000007"
    shutil.copytree(store.view_dir(views[0].name) / "write=000001", crashed)
    assert store.read_view(views[0].name).num_rows == first[0]["rows"]
    second = write(store, events, views)
    assert [w["write_id"] for w in second] == [8, 2] and all(w["rows"] > 0 for w in second)
    # the two writes hold exactly what one full computation holds: no gap, no duplicate
    full = offline_store(settings_for(tmp_path / "full"))
    write(full, events, views)
    for v in views:
        order = [(v.entity, "ascending"), (FEATURE_TIME, "ascending")]
        assert store.read_view(v.name).drop_columns(["write_id"]).sort_by(order).equals(
            full.read_view(v.name).drop_columns(["write_id"]).sort_by(order))
    inc = materialize(store, online, views)
    assert [m["full"] for m in inc] == [False, False] and [m["after_write"] for m in inc] == [1, 1]
    assert [m["rows_read"] for m in inc] == [w["rows"] for w in second]  # only the new write was read
    report = skew_check(store, online, views, sample=500, seed=1)
    assert report["mismatches"] == 0 and report["sampled"] == sum(online.count(v.name) for v in views)

    # drift the online store three ways; the skew check names each
    view, k = views[0], len(view_columns(views[0]))
    keys = store.read_view(view.name)[view.entity].unique().to_pylist()[:3]
    found, ts, values = decode_rows(online.read(view.name, keys), k, view.name)
    online.clear(view.name)  # a lost view: everything is missing_online until re-materialized
    report = skew_check(store, online, [view], sample=500, seed=1)
    assert report["views"][0]["by_kind"] == {"missing_online": report["sampled"]}
    assert materialize(store, online, [view])[0]["full"] is True
    assert skew_check(store, online, [view], sample=500, seed=1)["mismatches"] == 0
    # same time, other numbers → value; an older row → behind (materialization lag)
    online.write(view.name, keys[:2], encode_rows(np.array([ts[0], ts[1] - 1]), values[:2] + 1.0))
    kinds = skew_check(store, online, [view], sample=500, seed=1)["views"][0]["by_kind"]
    assert kinds.get("value") == 1 and kinds.get("behind") == 1

    # a changed definition is a new generation: offline recomputed, online reloaded whole
    wider = dataclasses.replace(view, windows=[*view.windows, "30d"])
    assert write(store, events, [wider])[0]["write_id"] == 1
    redone = materialize(store, online, [wider])[0]
    assert redone["full"] and online.get_meta(view.name)["columns"] == view_columns(wider)
    online.close()


@pytest.fixture(params=["sqlite", "redis"])
def serving_settings(request, tmp_path):
    extra = []
    if request.param == "redis":
        extra = ["online_store=redis", f"online_store.url={request.getfixturevalue('redis_url')}",
                 f"online_store.namespace=t{uuid.uuid4().hex[:8]}"]  # all-digit hex would parse as an int
    return settings_for(tmp_path, *extra)


def test_offline_ray_batches_and_online_requests_are_bit_identical(ray_cluster, events, serving_settings):
    """Offline: Ray Data point-in-time join of the full offline store + `transform` in Ray Data
    map_batches. Online: each request alone through the serve seam's lookup (materialized up to
    a cutoff) + `transform`. For requests whose entities saw no events between the cutoff and the
    request, both must be the same bytes."""
    import ray

    from mlinfra_ray.serve.online import make_online_lookup
    from mlinfra_ray.serve.schemas import records_to_table

    s = serving_settings
    store, views, cut = stores_materialized_at_two_thirds(s, events)
    requests = first_events_after(events, cut, [v.entity for v in views])
    assert requests.num_rows >= 5

    training = build_training_set(events, s)
    state = fit_feature_state(training.slice(0, cut), s.features, "event_time")
    offline_x = ray.data.from_arrow(training).map_batches(
        lambda b: {"id": b["transaction_id"].to_numpy(zero_copy_only=False), "x": transform(state, b)},
        batch_format="pyarrow", batch_size=512).take_all()
    offline = {r["id"]: np.asarray(r["x"]) for r in offline_x}
    assert len(offline) == events.num_rows

    lookup = make_online_lookup("feature_store", to_dict(s))
    for record in requests.drop_columns(["is_fraud"]).to_pylist():
        table = lookup.attach(records_to_table([record], s.contract))  # one request, as served
        online_x = transform(state, table)[0]
        assert online_x.tobytes() == offline[record["transaction_id"]].tobytes(), record["transaction_id"]
    # the views really contributed: most requests found history for their user
    since = state["feature_names"].index("user_amount_since_last_s__missing")
    served = np.stack([offline[t] for t in requests["transaction_id"].to_pylist()])
    assert (served[:, since] == 0).mean() > 0.5
    stats = lookup.stats()
    assert sum(c["hit"] + c["miss"] for c in stats.values()) == 2 * requests.num_rows
    assert stats["user_amount"]["hit"] == int((served[:, since] == 0).sum())


def first_events_after(events: pa.Table, cut: int, entities: list[str]) -> pa.Table:
    """Transactions after row `cut` that are the first, after it, of every one of their entities."""
    later = events.slice(cut)
    first = np.ones(later.num_rows, bool)
    for e in entities:
        keys = later[e].to_numpy(zero_copy_only=False)
        _, idx = np.unique(keys, return_index=True)
        mask = np.zeros(later.num_rows, bool)
        mask[idx] = True
        first &= mask
    times = later["event_time"].cast(pa.int64()).to_numpy()
    first &= times > events["event_time"].cast(pa.int64())[cut - 1].as_py()  # strictly after the cutoff
    return later.filter(pa.array(first))


def test_served_over_http_with_online_features_equals_the_offline_path(ray_cluster, events, tmp_path):
    """Serve app (serve.online_store=auto: the bundle uses views, so SQLite lookups) over real
    HTTP: each request's score equals the bundle's score of the same transaction on the offline
    point-in-time training set, and /metrics counts the lookups by view and outcome."""
    import httpx

    from mlinfra_ray.bundle import load_bundle
    from mlinfra_ray.datasets.bundles import synthetic_bundle
    from mlinfra_ray.serve.app import deploy, shutdown_serve

    s = settings_for(tmp_path, f"serve.port={free_port()}", "drift.enabled=false")
    assert s.serve.online_store == "auto"
    store, views, cut = stores_materialized_at_two_thirds(s, events)
    training = build_training_set(events, s)
    bundle = synthetic_bundle(tmp_path / "bundle", s, train=training.slice(0, cut))
    requests = first_events_after(events, cut, [v.entity for v in views])
    scores = load_bundle(bundle).predict(training)  # the offline path: point-in-time rows
    offline = dict(zip(training["transaction_id"].to_pylist(), scores, strict=True))
    url = deploy(to_dict(s), bundle_path=str(bundle))
    try:
        records = [{**r, "event_time": r["event_time"].isoformat()}
                   for r in requests.drop_columns(["is_fraud"]).to_pylist()]
        with httpx.Client(base_url=url, timeout=60) as client:
            for record in records:
                resp = client.post("/predict", json=record)
                assert resp.status_code == 200, resp.text
                served = resp.json()["predictions"][0]["score"]
                assert abs(served - offline[record["transaction_id"]]) <= 1e-6, record["transaction_id"]
            metrics = client.get("/metrics").text
    finally:
        shutdown_serve()
    hits = sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
               if line.startswith("mlinfra_online_lookups_total{") and 'outcome="hit"' in line)
    assert 0 < hits <= 2 * len(records)


