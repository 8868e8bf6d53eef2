"""cluster/head_services.sh (what cluster.yaml runs on the head) brings up real MLflow, Redis and
Prometheus — here on 127.0.0.1 with free ports — and stops every process it started.

MLflow proxies artifacts to the shared storage path; Prometheus scrapes the Serve app and the targets
Ray lists in its service-discovery file, and loads the mlinfra alert rules.
"""

import json
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.procs import free_port

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "cluster" / "head_services.sh"
pytestmark = [pytest.mark.e2e, pytest.mark.extended,
              pytest.mark.skipif(not (shutil.which("redis-server") and shutil.which("prometheus")),
                                 reason="needs redis-server and prometheus (apt-get install, see .ci/run)")]


def wait_for(check, timeout_s: float = 180.0):
    deadline, last = time.monotonic() + timeout_s, None
    while time.monotonic() < deadline:
        try:
            result = check()
            if result:
                return result
        except (httpx.HTTPError, OSError, KeyError) as err:
            last = err
        time.sleep(1.0)
    raise TimeoutError(f"not ready after {timeout_s} s: {last!r}")


@pytest.fixture(scope="module")
def services(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("head")
    ports = {name: free_port() for name in ("mlflow", "redis", "prometheus", "serve", "ray_metrics")}
    (tmp / "ray").mkdir()
    # what Ray writes on a head: one target group per node's metrics agent
    (tmp / "ray" / "prom_metrics_service_discovery.json").write_text(
        json.dumps([{"labels": {"job": "ray"}, "targets": [f"127.0.0.1:{ports['ray_metrics']}"]}]))
    env_file = tmp / "cluster.env"
    env_file.write_text("\n".join([
        f"MLINFRA_HOME={tmp}/shared", f"MLINFRA_STATE={tmp}/state", "MLINFRA_HEAD_IP=127.0.0.1",
        f"MLINFRA_MLFLOW_BACKEND=sqlite:///{tmp}/state/mlflow.db",
        f"MLINFRA_MLFLOW_ARTIFACTS={tmp}/shared/mlflow-artifacts", f"RAY_TEMP_DIR={tmp}/ray",
        f"MLINFRA_MLFLOW_PORT={ports['mlflow']}", f"MLINFRA_REDIS_PORT={ports['redis']}",
        f"MLINFRA_PROMETHEUS_PORT={ports['prometheus']}", f"MLINFRA_SERVE_PORT={ports['serve']}", ""]))
    run = {"env": {"MLINFRA_CLUSTER_ENV": str(env_file), "PATH": os.environ["PATH"],
                   "HOME": os.environ.get("HOME", str(tmp))},
           "capture_output": True, "text": True, "timeout": 120}
    started = subprocess.run([str(SCRIPT), "start"], **run)
    try:
        assert started.returncode == 0, started.stderr
        yield {"tmp": tmp, "ports": ports, "status": started.stdout}
    finally:
        stopped = subprocess.run([str(SCRIPT), "stop"], **run)
        assert stopped.returncode == 0, stopped.stderr
        pids = [p.stem for p in (tmp / "state").glob("*.pid")]
        assert not pids, f"pid files left: {pids}"


def test_status_prints_the_urls_jobs_use(services):
    ports = services["ports"]
    assert f"export MLINFRA_MLFLOW_URI=http://127.0.0.1:{ports['mlflow']}" in services["status"]
    assert "mlflow running" in services["status"] and "prometheus running" in services["status"]


def test_redis_answers(services):
    def ping() -> bool:
        with socket.create_connection(("127.0.0.1", services["ports"]["redis"]), timeout=5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")

    assert wait_for(ping)


def test_mlflow_proxies_artifacts_to_the_shared_path(services, tmp_path):
    from mlflow import MlflowClient

    uri = f"http://127.0.0.1:{services['ports']['mlflow']}"
    wait_for(lambda: httpx.get(f"{uri}/health", timeout=5).status_code == 200)
    client = MlflowClient(tracking_uri=uri)
    run = client.create_run(client.create_experiment("head-services-test"))
    client.log_text(run.info.run_id, "bundle bytes", "bundle/weights.txt")
    local = client.download_artifacts(run.info.run_id, "bundle/weights.txt", str(tmp_path))
    assert Path(local).read_text() == "bundle bytes"
    stored = list((services["tmp"] / "shared" / "mlflow-artifacts").rglob("weights.txt"))
    assert len(stored) == 1 and run.info.artifact_uri.startswith("mlflow-artifacts:")


def test_prometheus_scrapes_ray_and_serve_and_loads_the_alerts(services):
    base = f"http://127.0.0.1:{services['ports']['prometheus']}"

    def targets() -> dict[str, set[str]]:
        active = httpx.get(f"{base}/api/v1/targets", timeout=5).json()["data"]["activeTargets"]
        pools: dict[str, set[str]] = {}
        for t in active:
            pools.setdefault(t["scrapePool"], set()).add(t["labels"]["instance"])
        return pools if {"ray", "mlinfra"} <= set(pools) else {}

    pools = wait_for(targets)
    assert pools["ray"] == {f"127.0.0.1:{services['ports']['ray_metrics']}"}
    assert pools["mlinfra"] == {f"127.0.0.1:{services['ports']['serve']}"}
    rules = httpx.get(f"{base}/api/v1/rules", timeout=5).json()["data"]["groups"]
    assert "MlinfraDown" in {r["name"] for g in rules for r in g["rules"]}
