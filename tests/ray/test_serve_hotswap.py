"""Hot swap: the app deployed from serve.yaml follows the registry alias under load, and a pinned
version in user_config rolls it back — without a single failed request either way."""

from __future__ import annotations

import threading
import time

import httpx
import pytest
import yaml

from mlinfra_ray.compose import compose_settings
from mlinfra_ray.datasets.bundles import synthetic_bundle
from mlinfra_ray.registry import register_bundle, set_alias
from tests.procs import free_port

pytestmark = [pytest.mark.ray, pytest.mark.slow]
ROOT = __import__("pathlib").Path(__file__).resolve().parents[2]
RECORD = {"transaction_id": "tx00000001", "user_id": "u000001", "merchant_id": "m00001",
          "event_time": "2026-01-02T10:00:00Z", "amount": 52.5, "channel": "web",
          "merchant_category": "travel", "country": "US", "distance_from_home_km": 3.0}


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    """An MLflow registry (sqlite) with version 1 as `champion` and version 2 registered beside it."""
    root = tmp_path_factory.mktemp("hotswap")
    settings = compose_settings([f"paths.root={root}"])
    for seed in (1, 2):
        bundle = synthetic_bundle(root / f"bundle{seed}", settings, rows=1500, seed=seed)
        register_bundle(bundle, settings.tracking, {}, {}, {"run_name": f"synthetic-{seed}"},
                        alias="champion" if seed == 1 else None)
    return root, settings


def serve_config(root, port: int, user_config: dict) -> dict:
    """serve.yaml with this test's registry, port and Predictor user_config."""
    cfg = yaml.safe_load((ROOT / "serve.yaml").read_text())
    cfg["http_options"] = {"host": "127.0.0.1", "port": port}
    app = cfg["applications"][0]
    app["args"]["overrides"] = [f"paths.root={root}", "drift.window_size=50", "serve.alias_poll_s=1"]
    app["deployments"] = [{"name": "Predictor", "user_config": user_config}]
    return cfg


@pytest.fixture(scope="module")
def base_url(ray_cluster, registry):
    from ray.serve._private.api import serve_start
    from ray.serve.schema import ServeDeploySchema

    from mlinfra_ray.serve.app import shutdown_serve, wait_ready

    root, _ = registry
    port = free_port()
    # What `serve run serve.yaml` / `serve deploy serve.yaml` do: hand the config to the controller,
    # which builds the app from import_path + args in a Ray task.
    client = serve_start(http_options={"host": "127.0.0.1", "port": port})
    config = serve_config(root, port, {"alias_poll_s": 1.0, "version": None})
    client.deploy_apps(ServeDeploySchema.model_validate(config))
    url = f"http://127.0.0.1:{port}"
    wait_ready(url, 240)
    yield url, client, port
    shutdown_serve()


class Load:
    """Two clients posting back to back; every response's status and model version. `results`
    holds both clients' responses as they were recorded; `per_client` each client's own, in
    order. Only the latter orders what the server did: a client sends its next request after the
    last answer, while the two clients' appends to a shared list can land in either order."""

    def __init__(self, url: str) -> None:
        self.url, self.stop, self.results = url, threading.Event(), []
        self.per_client: list[list[tuple[int, str | None]]] = [[], []]
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(2)]

    def _run(self, i: int) -> None:
        with httpx.Client(base_url=self.url, timeout=30) as client:
            while not self.stop.is_set():
                r = client.post("/predict", json=RECORD)
                version = r.json()["model"]["version"] if r.status_code == 200 else None
                with self.lock:
                    self.results.append((r.status_code, version))
                    self.per_client[i].append((r.status_code, version))

    def __enter__(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=60)

    def wait_for(self, version: str, count: int, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self.lock:
                if sum(1 for _, v in self.results if v == version) >= count:
                    return
            time.sleep(0.2)
        raise AssertionError(f"version {version} never served {count} times: {self.results[-5:]}")


def test_alias_move_switches_versions_without_dropping_requests(base_url, registry):
    url, _, _ = base_url
    _, settings = registry
    with Load(url) as load:
        load.wait_for("1", 20, 60)
        set_alias(settings.tracking, "champion", "2")
        load.wait_for("2", 30, 90)
    statuses = [s for s, _ in load.results]
    assert statuses == [200] * len(statuses), sorted(set(statuses))
    for seen in load.per_client:  # one replica: for each client, a clean cut from 1 to 2
        versions = [v for _, v in seen]
        cut = versions.index("2") if "2" in versions else len(versions)
        assert set(versions[:cut]) <= {"1"} and set(versions[cut:]) <= {"2"}, versions
    info = httpx.get(f"{url}/model").json()
    assert info["version"] == "2" and info["alias"] == "champion" and info["swaps"] == 1
    metrics = httpx.get(f"{url}/metrics").text
    assert 'mlinfra_model_info{alias="champion",version="2"} 1.0' in metrics
    assert 'version="1"' not in metrics.split("mlinfra_model_info")[1].split("# HELP")[0]
    deadline = time.monotonic() + 60  # the drift monitor follows the version of the rows it gets
    while httpx.get(f"{url}/drift").json()["model"]["version"] != "2":
        assert time.monotonic() < deadline, "drift monitor still on version 1"
        time.sleep(0.5)


def test_pinned_version_in_user_config_rolls_back_in_place(base_url, registry):
    from ray.serve.schema import ServeDeploySchema

    url, client, port = base_url
    root, _ = registry
    before = httpx.get(f"{url}/model").json()
    assert before["version"] == "2"
    with Load(url) as load:
        load.wait_for("2", 10, 60)
        # Only user_config changes: Serve calls Predictor.reconfigure on the running replica.
        client.deploy_apps(ServeDeploySchema.model_validate(
            serve_config(root, port, {"alias_poll_s": 1.0, "version": "1"})))
        load.wait_for("1", 30, 120)
    statuses = [s for s, _ in load.results]
    assert statuses == [200] * len(statuses), sorted(set(statuses))
    after = httpx.get(f"{url}/model").json()
    assert after["version"] == "1" and after["swaps"] == before["swaps"] + 1  # same replica, not restarted
    time.sleep(2.5)  # pinned: the poller no longer follows the alias (still on version 2)
    assert httpx.post(f"{url}/predict", json=RECORD).json()["model"]["version"] == "1"
