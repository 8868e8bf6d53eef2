"""The whole monitoring loop on loopback: `jobs/serve.py` serves a bundle, a real Prometheus scrapes
its /metrics with the repo's alert rules, clean traffic raises nothing, drifted traffic takes the
drift alert from inactive to pending to firing. Only the rule's `for:` is shortened (to seconds)."""

import dataclasses
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

from mlinfra_ray.compose import compose_settings
from mlinfra_ray.datasets.bundles import synthetic_bundle
from mlinfra_ray.datasets.fraud import generate_transactions
from mlinfra_ray.monitoring import ALERT_RULES
from tests.procs import free_port, stop

ROOT = Path(__file__).resolve().parents[2]
WINDOW = 150
PROMETHEUS = os.environ.get("PROMETHEUS") or shutil.which("prometheus") or "prometheus"
# CI (.ci/run) installs prometheus and sets MLINFRA_REQUIRE_PROMETHEUS: there a missing binary fails.
MISSING = shutil.which(PROMETHEUS) is None and not os.environ.get("MLINFRA_REQUIRE_PROMETHEUS")
pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.extended,
              pytest.mark.skipif(MISSING, reason="prometheus missing: apt-get install -y prometheus")]


def wait_http(url: str, timeout_s: float, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"{proc.args[:2]} exited with {proc.returncode}"
        try:
            if httpx.get(url, timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(1)
    raise TimeoutError(url)


@pytest.fixture(scope="module")
def traffic(tmp_path_factory):
    """A bundle fitted on clean rows; one window of later clean rows and two of shifted rows."""
    settings = compose_settings([])
    syn = dataclasses.replace(settings.data.synthetic, rows=2000 + WINDOW, seed=9)
    clean = generate_transactions(syn)
    bundle = synthetic_bundle(tmp_path_factory.mktemp("b") / "fraud-v1", settings, train=clean.slice(0, 2000))
    shifted = generate_transactions(dataclasses.replace(syn, rows=2 * WINDOW), drift="shift")
    as_records = lambda t: [{**r, "event_time": r["event_time"].isoformat()}  # noqa: E731
                            for r in t.drop_columns(["is_fraud"]).to_pylist()]
    return bundle, as_records(clean.slice(2000)), as_records(shifted)


@pytest.fixture(scope="module")
def app(traffic, tmp_path_factory):
    root, port = tmp_path_factory.mktemp("serve"), free_port()
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    proc = subprocess.Popen(
        [sys.executable, "jobs/serve.py", f"paths.root={root}", "ray.num_cpus=2", f"serve.port={port}",
         f"serve.bundle_path={traffic[0]}", f"drift.window_size={WINDOW}", "drift.p_val=0.01"],
        cwd=ROOT, env=env, stdout=open(root / "serve.log", "w"), stderr=subprocess.STDOUT,
        start_new_session=True)
    try:
        wait_http(f"http://127.0.0.1:{port}/readyz", 300, proc)
        yield f"http://127.0.0.1:{port}", port
    finally:
        stop(proc, timeout_s=90, sig=signal.SIGINT)
        print((root / "serve.log").read_text()[-3000:])


@pytest.fixture(scope="module")
def prometheus(app, tmp_path_factory):
    """Prometheus scraping the app every second with alerts.yml (drift `for:` shortened to 3 s)."""
    work, port = tmp_path_factory.mktemp("prom"), free_port()
    rules = yaml.safe_load(ALERT_RULES.read_text())
    for rule in (r for g in rules["groups"] for r in g["rules"] if r["alert"] == "MlinfraDriftSustained"):
        rule["for"] = "3s"
    (work / "alerts.yml").write_text(yaml.safe_dump(rules))
    (work / "prometheus.yml").write_text(yaml.safe_dump({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(work / "alerts.yml")],
        "scrape_configs": [{"job_name": "mlinfra", "static_configs": [{"targets": [f"127.0.0.1:{app[1]}"]}]}]}))
    args = [PROMETHEUS, f"--config.file={work / 'prometheus.yml'}", f"--storage.tsdb.path={work / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}"]
    proc = subprocess.Popen(args, stdout=open(work / "prom.log", "w"), stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        wait_http(f"http://127.0.0.1:{port}/-/ready", 60, proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(proc)


def query(prom: str, promql: str) -> list[dict]:
    return httpx.get(f"{prom}/api/v1/query", params={"query": promql}).json()["data"]["result"]


def drift_alert(prom: str) -> str:
    alerts = httpx.get(f"{prom}/api/v1/alerts").json()["data"]["alerts"]
    return next((a["state"] for a in alerts if a["labels"]["alertname"] == "MlinfraDriftSustained"), "inactive")


def send(url: str, records: list[dict], windows_before: int) -> dict:
    with httpx.Client(base_url=url, timeout=60) as client:
        for i in range(0, len(records), 25):
            assert client.post("/predict", json=records[i:i + 25]).status_code == 200
        deadline, expected = time.monotonic() + 120, windows_before + len(records) // WINDOW
        while (report := client.get("/drift").json())["windows_checked"] < expected:
            assert time.monotonic() < deadline, report
            time.sleep(0.5)
    return report


def test_drifted_traffic_takes_the_drift_alert_to_firing(app, prometheus, traffic):
    url, _ = app
    _, clean, shifted = traffic
    report = send(url, clean, 0)
    assert report["latest"]["is_drift"] is False
    deadline = time.monotonic() + 30  # Prometheus sees the app and the clean window
    while True:
        up, checked = query(prometheus, 'up{job="mlinfra"}'), query(prometheus, "mlinfra_drift_windows_total")
        if up and up[0]["value"][1] == "1" and checked and checked[0]["value"][1] == "1":
            break
        assert time.monotonic() < deadline, (up, checked)
        time.sleep(0.5)
    time.sleep(5)  # longer than `for:`: a clean window must not even go pending
    assert drift_alert(prometheus) == "inactive"

    report = send(url, shifted, 1)
    assert report["latest"]["is_drift"] is True
    seen, deadline = [], time.monotonic() + 60
    while "firing" not in seen:
        state = drift_alert(prometheus)
        if not seen or seen[-1] != state:
            seen.append(state)
        assert time.monotonic() < deadline, seen
        time.sleep(0.25)
    assert seen[-2:] == ["pending", "firing"], seen
    fired = query(prometheus, 'ALERTS{alertname="MlinfraDriftSustained"}')
    assert {r["metric"]["alertstate"] for r in fired} == {"firing"}
