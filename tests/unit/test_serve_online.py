"""The predictor's online-feature seam against a real SQLite online store: view columns attached to
the scoring table, hits and misses counted per view, the store's age read from its metadata."""

from __future__ import annotations

import time

import numpy as np
import pytest

from mlinfra_ray.bundle import load_bundle
from mlinfra_ray.compose import compose_settings
from mlinfra_ray.datasets.bundles import synthetic_bundle
from mlinfra_ray.features.aggregations import feature_time_column, view_columns
from mlinfra_ray.features.online import encode_rows, open_store
from mlinfra_ray.serve.metrics import ServeMetrics
from mlinfra_ray.serve.online import FeatureStoreLookup, NoOnlineLookup, make_online_lookup
from mlinfra_ray.serve.schemas import parse_predict, predict_request_model, records_to_table
from mlinfra_ray.serve.scoring import ServedModel, score_requests
from mlinfra_ray.settings import to_dict

RECORD = {"transaction_id": "tx00000001", "user_id": "u000001", "merchant_id": "m00001",
          "event_time": "2026-01-10T10:00:00Z", "amount": 52.5, "channel": "web",
          "merchant_category": "travel", "country": "US", "distance_from_home_km": 3.0}
EVENT_US = 1768039200 * 1_000_000 - 3_600_000_000  # one hour before the scored event (2026-01-10 10:00Z)


@pytest.fixture()
def lookup(tmp_path):
    settings = compose_settings([f"paths.root={tmp_path}", "online_store=sqlite"])
    store = open_store(settings.online_store, settings.paths.root)
    for view in settings.features.views:
        k = len(view_columns(view))
        key = "u000001" if view.entity == "user_id" else "m00001"
        values = np.arange(k, dtype=float)[None, :] + 1
        store.write(view.name, [key], encode_rows(np.array([EVENT_US]), values))
        store.set_meta(view.name, {"columns": view_columns(view), "materialized_at": time.time() - 120})
    store.close()
    return settings, make_online_lookup("feature_store", to_dict(settings))


def requests(contract, *records):
    return parse_predict(predict_request_model(contract, 10), __import__("json").dumps(list(records)).encode())


def test_feature_store_lookup_attaches_view_columns_and_counts(lookup):
    settings, online = lookup
    assert isinstance(online, FeatureStoreLookup)
    unknown = {**RECORD, "transaction_id": "tx00000002", "user_id": "u999999", "merchant_id": "m99999"}
    table = online.attach(records_to_table(requests(settings.contract, RECORD, unknown), settings.contract))
    for view in settings.features.views:
        values = table.column(view_columns(view)[0]).to_numpy(zero_copy_only=False)
        assert values[0] == 1.0 and np.isnan(values[1])  # found / missing (never a zero)
        assert table.column(feature_time_column(view)).null_count == 1
    stats = online.stats()
    assert {v: (s["hit"], s["miss"]) for v, s in stats.items()} == {"user_amount": (1, 1),
                                                                    "merchant_amount": (1, 1)}
    assert 110 < online.age_s() < 300


def test_scoring_reports_lookup_deltas_once_per_batch_and_metrics_count_them(lookup, tmp_path):
    settings, online = lookup
    bundle = load_bundle(synthetic_bundle(tmp_path / "b", settings, rows=800))
    model = ServedModel.create(bundle, {"version": "1", "alias": "champion"})
    batch = [requests(settings.contract, RECORD), requests(settings.contract, {**RECORD, "user_id": "u424242"})]
    out = score_requests(model, online, batch)
    assert out[0]["online"]["lookups"]["user_amount"] == {"hit": 1, "miss": 1, "invalid": 0, "stale": 0}
    assert out[1]["online"]["lookups"] == {}  # counted once, with the first request of the batch
    metrics = ServeMetrics()
    for o in out:
        metrics.observe_online(o["online"]["lookups"], o["online"]["age_s"])
    text = metrics.render()[0].decode()
    assert 'mlinfra_online_lookups_total{outcome="miss",view="user_amount"} 1.0' in text
    assert "mlinfra_online_lookup_misses_total 1.0" in text  # merchant m00001 was found both times
    plain = score_requests(model, NoOnlineLookup(), batch)  # this feature state uses no views
    assert np.allclose(np.concatenate([o["scores"] for o in out]), np.concatenate([o["scores"] for o in plain]))


def test_auto_picks_the_lookup_the_model_needs_and_none_with_views_is_refused():
    from mlinfra_ray.serve.online import resolve_kind

    with_views = {"views": [{"name": "user_amount"}], "numeric": []}
    assert resolve_kind("auto", with_views) == "feature_store"
    assert resolve_kind("auto", {"numeric": []}) == "none"
    assert resolve_kind("feature_store", {"numeric": []}) == "feature_store"  # explicit wins
    with pytest.raises(ValueError, match=r"feature views \['user_amount'\].*serve.online_store=auto"):
        resolve_kind("none", with_views)
    with pytest.raises(ValueError, match="known: "):
        resolve_kind("nosql", with_views)


def test_a_hot_swap_brings_the_lookup_the_new_model_needs(lookup):
    """Predictor._lookup_for, as its swap calls it: views in → store lookups; views out → none."""
    from types import SimpleNamespace

    from mlinfra_ray.serve.predictor import Predictor

    settings, _ = lookup
    predictor = Predictor.func_or_class.__new__(Predictor.func_or_class)
    predictor.lookup_config, predictor.lookup_kind = ("auto", to_dict(settings)), None
    plain = SimpleNamespace(bundle=SimpleNamespace(feature_state={"numeric": []}))
    on_views = SimpleNamespace(bundle=SimpleNamespace(feature_state={"views": [{"name": "user_amount"}]}))
    predictor.lookup_kind, predictor.lookup = predictor._lookup_for(plain)
    assert predictor.lookup_kind == "none" and isinstance(predictor.lookup, NoOnlineLookup)
    kind, store_lookup = predictor._lookup_for(on_views)
    assert kind == "feature_store" and isinstance(store_lookup, FeatureStoreLookup)
    predictor.lookup_kind, predictor.lookup = kind, store_lookup
    assert predictor._lookup_for(on_views)[1] is store_lookup  # same kind: the open lookup is kept
    assert isinstance(predictor._lookup_for(plain)[1], NoOnlineLookup)


class _Monitor:
    """Records what the predictor's hand-off delivers; `stuck` never answers (drops pile up)."""

    def __init__(self, stuck: bool = False) -> None:
        self.got, self.stuck, self.observe = [], stuck, self

    def remote(self, rows, scores, version, sampled_out=0):
        import asyncio

        self.got.append((rows, scores, version))
        future = asyncio.get_running_loop().create_future()
        if not self.stuck:
            future.set_result(None)
        return future


@pytest.mark.parametrize("stuck", [False, True])
def test_the_predictor_hands_scored_rows_to_the_monitor_and_reports_drops(lookup, tmp_path, stuck):
    """The colocated predictor as the ingress builds it: rows + scores go to the monitor, batched;
    with a stuck monitor past max_pending, drops come back in the next response."""
    import asyncio

    from mlinfra_ray.serve.ingress import colocated_predictor
    from mlinfra_ray.serve.predictor import Predictor

    settings, _ = lookup
    path = synthetic_bundle(tmp_path / "b", settings, rows=800)
    config = {"max_batch_size": 8, "batch_wait_timeout_s": 0.0, "alias_poll_s": 0.0, "online_store": "none",
              "settings": {}, "max_pending": 0 if stuck else 4, "drift_sample": 1.0}
    monitor = _Monitor(stuck)

    def loader(source):
        return load_bundle(source["bundle_path"]), {"version": "3", "alias": "local"}

    async def run():
        predictor = (await colocated_predictor({"bundle_path": str(path)}, config, loader, monitor))._instance
        batch = Predictor.func_or_class.predict_records.__wrapped__  # one batch, without Serve's queue
        ids = [f"tx{i:08d}" for i in range(5)]
        outs = await batch(predictor, [requests(settings.contract, {**RECORD, "transaction_id": t})
                                       for t in ids])
        predictor.handoff.flush()
        for _ in range(3):  # the delivery task runs, then its done-callback
            await asyncio.sleep(0)
        last = (await batch(predictor, [requests(settings.contract, RECORD)]))[0]
        return ids, outs, last

    ids, outs, last = asyncio.run(run())
    assert outs[0]["drift"]["new_drops"] == 0 and all("drift" not in o for o in outs[1:])  # first only
    if stuck:  # the flush found max_pending (0) deliveries in flight: 5 rows dropped, reported once
        assert monitor.got == [] and last["drift"]["new_drops"] == 5 and last["drift"]["dropped"] == 5
    else:
        (rows, scores, version), = monitor.got
        assert rows.column("transaction_id").to_pylist() == ids and version == "3"
        assert np.allclose(scores, np.concatenate([o["scores"] for o in outs]))
        assert last["drift"] == {"pending": 0, "buffered": 1, "dropped": 0, "new_drops": 0}
