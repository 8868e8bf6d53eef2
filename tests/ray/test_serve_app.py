"""The Serve app over real HTTP: same scores as offline, 422s that name the field, exact request
counts on /metrics, and drift flagged for shifted traffic only."""

from __future__ import annotations

import asyncio
import dataclasses
import time

import httpx
import numpy as np
import pyarrow as pa
import pytest
from prometheus_client.parser import text_string_to_metric_families

from mlinfra_ray.bundle import load_bundle
from mlinfra_ray.compose import compose_settings
from mlinfra_ray.datasets.bundles import synthetic_bundle
from mlinfra_ray.datasets.fraud import generate_transactions
from mlinfra_ray.settings import to_dict
from tests.procs import free_port

pytestmark = [pytest.mark.ray]
WINDOW = 200


@pytest.fixture(scope="module")
def data():
    """One user population: 2000 training rows, 200 clean held-out rows, 200 shifted rows."""
    settings = compose_settings(["drift.window_size=200", f"serve.port={free_port()}"])
    syn = dataclasses.replace(settings.data.synthetic, rows=2200, seed=5)
    clean = generate_transactions(syn, drift="none")
    shifted = generate_transactions(dataclasses.replace(syn, rows=WINDOW), drift="shift")
    return settings, clean.slice(0, 2000), clean.slice(2000), shifted


@pytest.fixture(scope="module")
def bundle_dir(data, tmp_path_factory):
    settings, train, _, _ = data
    path = tmp_path_factory.mktemp("bundles") / "fraud-v1"
    return synthetic_bundle(path, settings, train=train, lineage={"data_snapshot": "test"})


@pytest.fixture(scope="module")
def base_url(ray_cluster, data, bundle_dir):
    from mlinfra_ray.serve.app import deploy, shutdown_serve

    start = time.monotonic()
    url = deploy(to_dict(data[0]), bundle_path=str(bundle_dir))
    print(f"deployed in {time.monotonic() - start:.1f} s")
    yield url
    shutdown_serve()


def as_records(table: pa.Table) -> list[dict]:
    rows = table.drop_columns(["is_fraud"]).to_pylist()
    return [{**r, "event_time": r["event_time"].isoformat()} for r in rows]


async def post_all(url: str, bodies: list) -> list[httpx.Response]:
    async with httpx.AsyncClient(timeout=60) as client:  # concurrent: exercises @serve.batch
        return await asyncio.gather(*(client.post(f"{url}/predict", json=b) for b in bodies))


def wait_windows(url: str, n: int, timeout_s: float = 60) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        report = httpx.get(f"{url}/drift").json()
        if report["windows_checked"] >= n:
            return report
        time.sleep(0.2)
    raise AssertionError(f"drift windows never reached {n}: {report}")


def test_serving_end_to_end(base_url, data, bundle_dir):
    _, _, clean, shifted = data
    sent = {200: 0, 422: 0}

    # Clean traffic: 19 requests of 10 records + 10 bare single records = one drift window.
    records = as_records(clean)
    bodies = [{"records": records[i:i + 10]} for i in range(0, 190, 10)] + records[190:]
    responses = asyncio.run(post_all(base_url, bodies))
    sent[200] += len(bodies)
    assert [r.status_code for r in responses] == [200] * len(bodies), responses[0].text
    scores = np.array([p["score"] for r in responses for p in r.json()["predictions"]])
    expected = load_bundle(bundle_dir).predict(clean.drop_columns(["is_fraud"]))
    assert np.allclose(scores, expected, atol=1e-6)  # online == offline, same function
    first = responses[0].json()
    assert first["model"] == {"version": "fraud-v1", "alias": "local"}
    assert first["predictions"][0]["is_fraud"] == (first["predictions"][0]["score"] >= 0.5)

    report = wait_windows(base_url, 1)
    assert report["latest"]["is_drift"] is False and report["latest"]["n"] == WINDOW

    # Bad input: 422 naming the field, never a 500.
    good = records[0]
    bad = {"amount": {**good, "amount": "lots"}, "channel": {**good, "channel": "fax"},
           "user_id": {k: v for k, v in good.items() if k != "user_id"},
           "event_time": {**good, "event_time": "not a time"}}
    for field, body in bad.items():
        r = httpx.post(f"{base_url}/predict", json={"records": [good, body]})
        assert r.status_code == 422, r.text
        assert r.json()["detail"][0]["loc"] == ["body", "records", 1, field]
    r = httpx.post(f"{base_url}/predict", content=b"{oops",
                   headers={"content-type": "application/json"})
    assert r.status_code == 422 and r.json()["detail"][0]["type"] == "json_invalid"
    sent[422] += len(bad) + 1

    # Shifted traffic: the next window drifts.
    shifted_records = as_records(shifted)
    bodies = [{"records": shifted_records[i:i + 20]} for i in range(0, WINDOW, 20)]
    assert all(r.status_code == 200 for r in asyncio.run(post_all(base_url, bodies)))
    sent[200] += len(bodies)
    report = wait_windows(base_url, 2)
    assert report["latest"]["is_drift"] is True and report["windows_drifted"] == 1
    assert report["latest"]["p_vals"]["amount"] < report["latest"]["threshold"]
    assert report["dropped"] == 0

    metrics = scrape(base_url)
    predict_counts = {s.labels["status"]: s.value for s in metrics["mlinfra_requests"]
                      if s.name == "mlinfra_requests_total" and s.labels["endpoint"] == "/predict"}
    assert predict_counts == {"200": sent[200], "422": sent[422]}
    assert value(metrics, "mlinfra_predictions_total") == 2 * WINDOW
    assert value(metrics, "mlinfra_drift_windows_total") == 2
    assert value(metrics, "mlinfra_drift_detected") == 1
    assert value(metrics, "mlinfra_drift_p_value", feature="amount") < 0.05
    assert value(metrics, "mlinfra_model_info", version="fraud-v1", alias="local") == 1
    assert value(metrics, "mlinfra_prediction_score_count") == 2 * WINDOW


def test_probes_and_model_info(base_url):
    assert httpx.get(f"{base_url}/healthz").json() == {"status": "ok"}
    assert httpx.get(f"{base_url}/readyz").status_code == 200
    info = httpx.get(f"{base_url}/model").json()
    assert info["version"] == "fraud-v1" and info["threshold"] == 0.5
    assert info["lineage"]["data_snapshot"] == "test" and "contract" not in info


def scrape(url: str) -> dict:
    r = httpx.get(f"{url}/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    return {f.name: f.samples for f in text_string_to_metric_families(r.text)}


def value(metrics: dict, sample: str, **labels: str) -> float:
    found = [s.value for samples in metrics.values() for s in samples
             if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items())]
    assert len(found) == 1, (sample, labels, found)
    return found[0]


def test_colocated_predictor_serves_the_same_scores(ray_cluster, base_url, data, bundle_dir):
    """serve.colocate_predictor: the Predictor class inside the ingress replica, same answers."""
    from mlinfra_ray.serve.app import deploy

    settings, _, clean, _ = data
    colocated = dataclasses.replace(settings, serve=dataclasses.replace(
        settings.serve, app_name="colocated", route_prefix="/colocated", colocate_predictor=True))
    url = deploy(to_dict(colocated), bundle_path=str(bundle_dir))
    records = as_records(clean)[:40]
    responses = asyncio.run(post_all(url, [{"records": records[i:i + 4]} for i in range(0, 40, 4)]))
    assert [r.status_code for r in responses] == [200] * 10
    scores = np.array([p["score"] for r in responses for p in r.json()["predictions"]])
    expected = load_bundle(bundle_dir).predict(clean.drop_columns(["is_fraud"]).slice(0, 40))
    assert np.allclose(scores, expected, atol=1e-6)
    assert httpx.get(f"{url}/model").json()["version"] == "fraud-v1"
    assert wait_windows(url, 0)["rows_seen"] >= 0 and httpx.get(f"{url}/readyz").status_code == 200


def test_direct_ingress_on_a_cluster_started_without_it_fails_clearly(ray_cluster, base_url, data, bundle_dir):
    """serve.direct_ingress needs Ray started in Serve's throughput-optimized mode; this session's
    cluster was not, so deploy says what to set and leaves no half-deployed app behind."""
    from ray import serve

    from mlinfra_ray.serve.app import deploy

    settings = data[0]
    direct = dataclasses.replace(settings, serve=dataclasses.replace(
        settings.serve, app_name="direct", route_prefix="/direct", direct_ingress=True))
    with pytest.raises(RuntimeError, match="RAY_SERVE_THROUGHPUT_OPTIMIZED=1"):
        deploy(to_dict(direct), bundle_path=str(bundle_dir))
    assert "direct" not in serve.status().applications
    assert httpx.get(f"{base_url}/readyz").status_code == 200  # the other app is untouched
