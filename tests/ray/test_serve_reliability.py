"""Reliability of the Serve app over real HTTP: fuzzing from its OpenAPI schema (no 5xx), a predictor
replica killed under load (retrying clients still succeed, the replica comes back), and overload
(bounded queues answer 503 at once, and the service recovers when load drops)."""

from __future__ import annotations

import asyncio
import collections
import threading
import time

import httpx
import pytest

from mlinfra_ray.compose import compose_settings
from mlinfra_ray.datasets.bundles import synthetic_bundle
from mlinfra_ray.settings import to_dict
from tests.procs import free_port

pytestmark = [pytest.mark.ray, pytest.mark.slow]
RECORD = {"transaction_id": "tx00000001", "user_id": "u000001", "merchant_id": "m00001",
          "event_time": "2026-01-02T10:00:00Z", "amount": 52.5, "channel": "web",
          "merchant_category": "travel", "country": "US", "distance_from_home_km": 3.0}


@pytest.fixture(scope="module")
def apps(ray_cluster, tmp_path_factory):
    """Two apps on one proxy: `main` (2 predictor replicas) and `tight` (queues of 1, no drift)."""
    from mlinfra_ray.serve.app import deploy, shutdown_serve

    port = free_port()
    bundle = synthetic_bundle(tmp_path_factory.mktemp("b") / "fraud-v1", compose_settings([]), rows=1500)
    common = [f"serve.port={port}", f"serve.bundle_path={bundle}"]
    main = compose_settings([*common, "serve.app_name=main", "serve.route_prefix=/main",
                             "serve.predictor_replicas=2", "drift.window_size=200"])
    tight = compose_settings([*common, "serve.app_name=tight", "serve.route_prefix=/tight",
                              "serve.max_ongoing_requests=1", "serve.max_queued_requests=1",
                              "serve.max_batch_size=1", "drift.enabled=false"])
    urls = {"main": deploy(to_dict(main)), "tight": deploy(to_dict(tight))}
    yield urls
    shutdown_serve()


def test_fuzzing_the_openapi_schema_never_gives_a_5xx(apps):
    import schemathesis
    from hypothesis import HealthCheck, Phase, given, settings

    url = apps["main"]
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
    statuses: collections.Counter = collections.Counter()
    session = __import__("requests").Session()

    def run(strategy, n: int) -> None:
        @settings(max_examples=n, deadline=None, database=None, derandomize=True, phases=[Phase.generate],
                  suppress_health_check=list(HealthCheck))
        @given(case=strategy)
        def check(case) -> None:
            resp = case.call(base_url=url, session=session, timeout=60)
            statuses[resp.status_code] += 1
            assert resp.status_code < 500, (resp.status_code, resp.text[:300], case.body)
            if resp.status_code == 200 and case.path == "/predict":
                assert all(0 <= p["score"] <= 1 for p in resp.json()["predictions"])

        check()

    predict = schema["/predict"]["POST"]
    run(predict.as_strategy(schemathesis.GenerationMode.POSITIVE), 450)
    run(predict.as_strategy(schemathesis.GenerationMode.NEGATIVE), 450)
    run(schema.as_strategy(), 150)  # every operation, GETs included
    total = sum(statuses.values())
    print(f"fuzzing: {total} requests, statuses {dict(statuses)}")
    assert total >= 1000 and not [s for s in statuses if s >= 500]
    assert statuses[200] >= 300 and statuses[422] >= 300  # both valid and invalid bodies were exercised


def predictor_states(app: str) -> dict[str, int]:
    from ray import serve

    return dict(serve.status().applications[app].deployments["Predictor"].replica_states)


async def retrying_post(client: httpx.AsyncClient, url: str, attempts: int = 6) -> int:
    """What a well-behaved caller does: retry 503s and dropped connections with backoff."""
    status = 0
    for attempt in range(attempts):
        try:
            status = (await client.post(url, json=RECORD)).status_code
        except httpx.TransportError:
            status = -1
        if status == 200:
            return status
        await asyncio.sleep(0.1 * 2 ** attempt)
    return status


def predictor_replicas(app: str) -> set[str]:
    """Names of the app's live Predictor replica actors (via this driver's GCS connection)."""
    import ray

    return {a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
            if a["namespace"] == "serve" and a["name"].startswith(f"SERVE_REPLICA::{app}#Predictor#")}


def test_killing_a_predictor_replica_under_load(apps):
    import ray

    url = apps["main"]
    assert predictor_states("main") == {"RUNNING": 2}
    victims = sorted(predictor_replicas("main"))
    assert len(victims) == 2, victims

    async def load() -> list[int]:
        async with httpx.AsyncClient(timeout=60) as client:
            async def worker(n: int) -> list[int]:
                return [await retrying_post(client, f"{url}/predict") for _ in range(n)]

            async def killer() -> None:
                await asyncio.sleep(1.0)  # mid-load
                ray.kill(ray.get_actor(victims[0], namespace="serve"), no_restart=True)
                killed_at.append(time.monotonic())

            *results, _ = await asyncio.gather(*(worker(60) for _ in range(4)), killer())
            return [s for r in results for s in r]

    killed_at: list[float] = []
    statuses = asyncio.run(load())
    assert killed_at and time.monotonic() - killed_at[0] > 0.5  # the load went on after the kill
    ok = sum(s == 200 for s in statuses) / len(statuses)
    print(f"replica kill: {len(statuses)} requests, success {ok:.1%}, others {collections.Counter(statuses)}")
    assert ok >= 0.99
    deadline = time.monotonic() + 120

    def restored() -> bool:  # the controller has noticed the death and started a replacement
        alive = predictor_replicas("main")
        return len(alive) == 2 and victims[0] not in alive and predictor_states("main") == {"RUNNING": 2}

    while not restored():
        assert time.monotonic() < deadline, (predictor_replicas("main"), predictor_states("main"))
        time.sleep(1)


def test_overload_answers_503_fast_and_recovers(apps):
    url = apps["tight"]
    body = {"records": [RECORD] * 1000}  # slow enough per request that a burst overflows the queues
    results: list[tuple[int, float]] = []
    lock = threading.Lock()

    def post() -> None:
        start = time.perf_counter()
        with httpx.Client(timeout=120) as client:
            status = client.post(f"{url}/predict", json=body).status_code
        with lock:
            results.append((status, time.perf_counter() - start))

    threads = [threading.Thread(target=post) for _ in range(24)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=180)
    counts = collections.Counter(s for s, _ in results)
    rejected = sorted(d for s, d in results if s == 503)
    served = sorted(d for s, d in results if s == 200)
    print(f"overload: {dict(counts)}; 503 median {rejected[len(rejected) // 2]:.3f} s, "
          f"200 max {served[-1]:.3f} s")
    assert set(counts) == {200, 503} and counts[503] >= 10 and counts[200] >= 1
    assert rejected[len(rejected) // 2] < 1.0  # refused at once, not after waiting in a queue
    assert rejected[len(rejected) // 2] < served[-1]
    time.sleep(1.0)  # load gone: every request is served again
    with httpx.Client(timeout=60) as client:
        assert [client.post(f"{url}/predict", json=body).status_code for _ in range(5)] == [200] * 5
