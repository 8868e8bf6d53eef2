"""The HTTP API without Ray: the FastAPI app the ingress serves, on an in-process scorer.

Everything here runs through `serve.api.build_api` exactly as a Serve replica builds it (guard,
routes, OpenAPI); only the `Service` differs (`LocalService` scores in-process).
"""

from __future__ import annotations

import asyncio
import json

import httpx
import numpy as np
import pyarrow as pa
import pytest
from prometheus_client.parser import text_string_to_metric_families

from mlinfra_ray.bundle import load_bundle
from mlinfra_ray.compose import compose_settings
from mlinfra_ray.datasets.bundles import synthetic_bundle
from mlinfra_ray.serve.api import ApiConfig, build_api
from mlinfra_ray.serve.guard import AuthConfigError, load_api_key
from mlinfra_ray.serve.handoff import DriftHandoff
from mlinfra_ray.serve.metrics import ServeMetrics
from mlinfra_ray.serve.online import NoOnlineLookup
from mlinfra_ray.serve.schemas import parse_predict, predict_request_model, records_to_table
from mlinfra_ray.serve.scoring import LocalService
from mlinfra_ray.settings import AuthSettings

KEY = "k3y-0123456789abcdef"
GOOD = {"transaction_id": "tx00000001", "user_id": "u000001", "merchant_id": "m00001",
        "event_time": "2026-01-02T10:00:00+02:00", "amount": 12.5, "channel": " WEB ",
        "merchant_category": "travel", "country": "us", "distance_from_home_km": 3.0,
        "device_age_days": None}


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    path = tmp_path_factory.mktemp("bundles") / "fraud-v7"
    return load_bundle(synthetic_bundle(path, compose_settings([]), rows=1500, seed=3))


def make_app(bundle, **config):
    metrics = ServeMetrics()
    service = LocalService(bundle, {"version": "7", "alias": "champion"}, NoOnlineLookup())
    return build_api(service, bundle.contract, metrics, ApiConfig(**config)), metrics


def call(app, *requests):
    """Send (method, path, kwargs) requests to the ASGI app in order; the responses."""
    async def run():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
            return [await c.request(m, p, **kw) for m, p, kw in requests]
    return asyncio.run(run())


def test_predict_accepts_one_record_a_list_or_records_and_matches_offline(bundle):
    app, _ = make_app(bundle)
    other = {**GOOD, "transaction_id": "tx00000002", "amount": 990.0, "channel": "pos"}
    one, many, wrapped = call(app, ("POST", "/predict", {"json": GOOD}),
                              ("POST", "/predict", {"json": [GOOD, other]}),
                              ("POST", "/predict", {"json": {"records": [GOOD, other]}}))
    assert one.status_code == many.status_code == wrapped.status_code == 200, one.text
    assert many.json() == wrapped.json()
    preds = many.json()["predictions"]
    assert [p["transaction_id"] for p in preds] == ["tx00000001", "tx00000002"]
    records = parse_predict(predict_request_model(bundle.contract, 10), json.dumps([GOOD, other]).encode())
    table = records_to_table(records, bundle.contract)  # the offline path: Bundle.predict on a table
    assert np.allclose([p["score"] for p in preds], bundle.predict(table), atol=1e-7)
    assert all(p["is_fraud"] == (p["score"] >= bundle.threshold) for p in preds)
    assert one.json()["model"] == {"version": "7", "alias": "champion"}


def test_invalid_input_is_422_naming_the_field_and_counted(bundle):
    app, metrics = make_app(bundle, max_records=3)
    bad_amount, bad_enum, bad_json, too_many = call(
        app, ("POST", "/predict", {"json": [GOOD, {**GOOD, "amount": "lots"}]}),
        ("POST", "/predict", {"json": {**GOOD, "channel": "fax"}}),
        ("POST", "/predict", {"content": b"{oops", "headers": {"content-type": "application/json"}}),
        ("POST", "/predict", {"json": [GOOD] * 4}))
    assert bad_amount.status_code == 422
    assert bad_amount.json()["detail"] == [{"type": "float_type", "loc": ["body", "records", 1, "amount"],
                                            "msg": "Input should be a valid number"}]
    assert bad_enum.json()["detail"][0]["loc"] == ["body", "records", 0, "channel"]
    assert bad_json.status_code == 422 and bad_json.json()["detail"][0]["type"] == "json_invalid"
    assert too_many.status_code == 422 and too_many.json()["detail"][0]["loc"] == ["body", "records"]
    assert "lots" not in bad_amount.text  # offending values are not echoed
    invalid = samples(metrics, "mlinfra_invalid_fields_total")
    assert invalid == {(("field", "amount"),): 1, (("field", "channel"),): 1, (("field", "body"),): 2}


def test_body_over_the_limit_is_413_with_or_without_content_length(bundle):
    app, metrics = make_app(bundle, max_body_bytes=2000)

    async def chunks():  # no Content-Length: the guard must count the streamed bytes
        for _ in range(10):  # ~2.8 kB in 10 chunks
            yield json.dumps(GOOD).encode()

    small, declared, streamed = call(app, ("POST", "/predict", {"json": GOOD}),
                                     ("POST", "/predict", {"json": [GOOD] * 20}),
                                     ("POST", "/predict", {"content": chunks()}))
    assert small.status_code == 200
    assert declared.status_code == 413 and streamed.status_code == 413
    assert "2000 bytes" in declared.json()["detail"]
    statuses = samples(metrics, "mlinfra_requests_total")
    assert statuses[(("endpoint", "/predict"), ("status", "413"))] == 2


def test_api_key_protects_everything_but_public_paths(bundle):
    app, metrics = make_app(bundle, api_key=KEY)
    none, wrong, header, bearer, health, scrape, model = call(
        app, ("POST", "/predict", {"json": GOOD}),
        ("POST", "/predict", {"json": GOOD, "headers": {"x-api-key": KEY + "x"}}),
        ("POST", "/predict", {"json": GOOD, "headers": {"x-api-key": KEY}}),
        ("POST", "/predict", {"json": GOOD, "headers": {"authorization": f"Bearer {KEY}"}}),
        ("GET", "/healthz", {}), ("GET", "/metrics", {}), ("GET", "/model", {}))
    assert none.status_code == wrong.status_code == model.status_code == 401
    assert none.headers["www-authenticate"] == "Bearer"
    assert header.status_code == bearer.status_code == health.status_code == scrape.status_code == 200
    assert samples(metrics, "mlinfra_requests_total")[(("endpoint", "/predict"), ("status", "401"))] == 2


def test_api_key_comes_from_a_file_or_the_environment_never_config(tmp_path, monkeypatch):
    assert load_api_key(AuthSettings(enabled=False)) is None
    key_file = tmp_path / "key"
    key_file.write_text(KEY + "\n")
    assert load_api_key(AuthSettings(enabled=True, api_key_file=str(key_file))) == KEY
    monkeypatch.setenv("MY_KEY", KEY)
    assert load_api_key(AuthSettings(enabled=True, api_key_env="MY_KEY")) == KEY
    monkeypatch.setenv("MY_KEY", "short")
    with pytest.raises(AuthConfigError, match="MY_KEY"):  # fail closed: no weak or missing key
        load_api_key(AuthSettings(enabled=True, api_key_env="MY_KEY"))


def test_openapi_documents_contract_types_ranges_enums_and_both_body_forms(bundle):
    app, _ = make_app(bundle)
    (resp,) = call(app, ("GET", "/openapi.json", {}))
    doc = resp.json()
    body = doc["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    record_ref = "#/components/schemas/FraudTransactionsRecord"
    assert {"$ref": record_ref} in body["anyOf"]
    assert {"type": "array", "items": {"$ref": record_ref}} in body["anyOf"]
    record = doc["components"]["schemas"]["FraudTransactionsRecord"]
    assert set(record["required"]) >= {"amount", "channel", "event_time", "user_id"}
    amount = record["properties"]["amount"]
    assert amount["minimum"] == 0.01 and amount["maximum"] == 100000
    assert record["properties"]["channel"]["enum"] == ["web", "pos", "app"]
    answer = doc["paths"]["/predict"]["post"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert answer == {"$ref": "#/components/schemas/PredictResponse"}
    prediction = doc["components"]["schemas"]["FraudTransactionsPrediction"]["properties"]
    assert set(prediction) == {"transaction_id", "score", "is_fraud"} and prediction["score"]["maximum"] == 1


def test_metrics_count_requests_scores_missing_features_and_unknown_paths(bundle):
    app, metrics = make_app(bundle)
    call(app, ("POST", "/predict", {"json": [GOOD, {**GOOD, "distance_from_home_km": None}]}),
         ("GET", "/nope", {}), ("GET", "/healthz", {}), ("GET", "/drift", {}))
    (resp,) = call(app, ("GET", "/metrics", {}))
    assert resp.headers["content-type"].startswith("text/plain")
    statuses = samples(metrics, "mlinfra_requests_total")
    assert statuses[(("endpoint", "/predict"), ("status", "200"))] == 1
    assert statuses[(("endpoint", "other"), ("status", "404"))] == 1  # bounded label values
    assert statuses[(("endpoint", "/drift"), ("status", "404"))] == 1  # drift disabled here
    assert samples(metrics, "mlinfra_predictions_total") == {(): 2}
    assert samples(metrics, "mlinfra_prediction_score_count") == {(): 2}
    assert samples(metrics, "mlinfra_missing_features_total") == {
        (("feature", "device_age_days"),): 2, (("feature", "distance_from_home_km"),): 1}
    assert samples(metrics, "mlinfra_model_info") == {(("alias", "champion"), ("version", "7")): 1}


def samples(metrics: ServeMetrics, name: str) -> dict[tuple, float]:
    body, _ = metrics.render()
    return {tuple(sorted(s.labels.items())): s.value
            for family in text_string_to_metric_families(body.decode()) for s in family.samples
            if s.name == name}


def rows(n: int) -> pa.Table:
    return pa.table({"amount": np.zeros(n), "channel": ["web"] * n})


class _StuckMonitor:
    """A monitor whose observe() never finishes: hand-offs pile up as pending tasks."""

    def __init__(self) -> None:
        self.calls = 0
        self.observe = self

    def remote(self, rows, *rest):
        self.calls += 1
        return asyncio.get_running_loop().create_future()  # never resolved


def test_drift_handoff_is_fire_and_forget_and_capped():
    counted = []
    handoff = DriftHandoff(_StuckMonitor(), max_pending=3, on_drop=counted.append, flush_rows=1)

    async def run() -> None:
        for _ in range(5):  # returns at once each time although the monitor never answers
            handoff.send(rows(4), np.zeros(4), "1")
        await asyncio.sleep(0)  # let the tasks start their (stuck) calls
        assert handoff.monitor.calls == 3 and len(handoff.pending) == 3
        assert handoff.dropped == 8 and counted == [4, 4]  # two hand-offs over the cap
        tasks = list(handoff.pending)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.sleep(0)  # done-callbacks run on the next loop turn
        assert not handoff.pending and handoff.dropped == 8  # cancelled: not counted as dropped

    asyncio.run(asyncio.wait_for(run(), 5))


class _Monitor:
    """Records what reaches observe(): (rows, scores, version) per delivery."""

    def __init__(self) -> None:
        self.got: list[tuple] = []
        self.observe = self

    async def _done(self) -> None:
        return None

    def remote(self, rows, scores, version, sampled_out=0):
        self.got.append((rows.num_rows, len(scores), version))
        self.sampled_out = getattr(self, "sampled_out", 0) + sampled_out
        return self._done()


def test_drift_handoff_ships_buffered_rows_by_size_time_and_version():
    monitor = _Monitor()
    handoff = DriftHandoff(monitor, max_pending=8, on_drop=lambda n: None, flush_rows=10, flush_s=0.05)

    async def run() -> None:
        for _ in range(3):  # 4 + 4 + 4 rows: the third send crosses 10 rows and flushes
            handoff.send(rows(4), np.zeros(4), "1")
        await asyncio.sleep(0)
        assert monitor.got == [(12, 12, "1")] and handoff.buffered == 0
        handoff.send(rows(2), np.zeros(2), "1")
        handoff.send(rows(3), np.zeros(3), "2")  # new version: "1" rows go alone
        await asyncio.sleep(0)
        assert monitor.got[1:] == [(2, 2, "1")] and handoff.buffered == 3
        await asyncio.sleep(0.1)  # the timer ships the rest
        assert monitor.got[2:] == [(3, 3, "2")] and handoff.buffered == 0 and not handoff.pending

    asyncio.run(asyncio.wait_for(run(), 5))


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def delivered_per_s(handoff: DriftHandoff, clock: _Clock, rows_per_s: int, seconds: int) -> float:
    """Send `rows_per_s` records/s in batches of 8 (flushing on size, or after `flush_s` as the
    loop's timer would); records per second that reached the monitor."""
    monitor, before, last = handoff.monitor, sum(n for n, _, _ in handoff.monitor.got), clock.now
    steps = rows_per_s // 8
    for _ in range(seconds * steps):
        clock.now += 1.0 / steps
        if not handoff.buffered:
            last = clock.now
        handoff.send(rows(8), np.zeros(8), "1")
        if handoff.buffered and clock.now - last >= handoff.flush_s:
            handoff.flush()
    handoff.flush()  # the rest, as the timer would shortly after
    await asyncio.sleep(0)  # the deliveries' tasks call the monitor
    return (sum(n for n, _, _ in monitor.got) - before) / seconds


@pytest.mark.parametrize("rate, fraction, cap, expected_per_s", [
    (400, 1.0, 1000, 400),  # under the cap: every record
    (8000, 1.0, 1000, 1000),  # 8x the cap: an eighth of them
    (8000, 0.5, 1000, 500),  # the fraction applies on top of the cap
    (8000, 1.0, None, 8000),  # no cap
    (400, 0.25, None, 100),
])
def test_drift_handoff_samples_and_caps_the_records_the_monitor_checks(rate, fraction, cap, expected_per_s):
    clock, monitor = _Clock(), _Monitor()
    handoff = DriftHandoff(monitor, max_pending=10**6, on_drop=lambda n: None, fraction=fraction,
                           max_rows_per_s=cap, rng=np.random.default_rng(7), clock=clock)

    async def run() -> float:
        await delivered_per_s(handoff, clock, rate, 60)  # the rate estimate settles (tau 10 s)
        return await delivered_per_s(handoff, clock, rate, 20)

    assert asyncio.run(run()) == pytest.approx(expected_per_s, rel=0.1)
    # every record offered is accounted for: delivered, or reported to the monitor as left out
    assert sum(n for n, _, _ in monitor.got) + monitor.sampled_out == 80 * rate


def test_drift_handoff_checks_bursts_whole_and_follows_the_load_down():
    clock = _Clock()
    handoff = DriftHandoff(_Monitor(), max_pending=10**6, on_drop=lambda n: None, max_rows_per_s=1000,
                           rng=np.random.default_rng(7), clock=clock)

    async def run() -> None:
        clock.now += 60  # a quiet server, then a 2-s burst (a test, a demo): all of it checked
        assert await delivered_per_s(handoff, clock, 4000, 2) == 4000
        assert await delivered_per_s(handoff, clock, 8000, 60) < 2000  # sustained: sampled
        assert await delivered_per_s(handoff, clock, 8000, 10) == pytest.approx(1000, rel=0.1)
        clock.now += 60  # idle, then light traffic: every record again
        assert await delivered_per_s(handoff, clock, 400, 4) == 400

    asyncio.run(run())


def test_records_table_keeps_contract_types(bundle):
    table = records_to_table([{**GOOD, "event_time": None}], bundle.contract)
    assert table.schema.field("amount").type == pa.float64() and "is_fraud" not in table.column_names
