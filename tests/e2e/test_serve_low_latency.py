"""`jobs/serve.py serve=low_latency` as a user runs it: Ray started in Serve's throughput-optimized
mode, clients answered by the ingress replica's own HTTP server (no proxy hop), and the same app
— scores, metrics, drift — behind both that address and the proxy."""

from __future__ import annotations

import dataclasses
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from mlinfra_ray.bundle import load_bundle
from mlinfra_ray.compose import compose_settings
from mlinfra_ray.datasets.bundles import synthetic_bundle
from mlinfra_ray.datasets.fraud import generate_transactions
from tests.procs import free_port, stop

ROOT = Path(__file__).resolve().parents[2]
WINDOW = 100
pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """(direct URL, proxy URL, bundle, held-out rows) of a running `jobs/serve.py serve=low_latency`."""
    settings = compose_settings([])
    syn = dataclasses.replace(settings.data.synthetic, rows=2000 + WINDOW, seed=21)
    table = generate_transactions(syn)
    root = tmp_path_factory.mktemp("lowlat")
    bundle = synthetic_bundle(root / "fraud-v1", settings, train=table.slice(0, 2000))
    port, log = free_port(), root / "serve.log"
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_SERVE_THROUGHPUT_OPTIMIZED")}
    proc = subprocess.Popen(
        [sys.executable, "jobs/serve.py", "serve=low_latency", f"paths.root={root}", "ray.num_cpus=2",
         "ray.include_dashboard=false", f"serve.port={port}", f"serve.bundle_path={bundle}",
         f"drift.window_size={WINDOW}",
         # no load balancer to deregister from on this machine: don't hold shutdown for 30 s
         "+ray.env_vars.RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S='1'"],
        cwd=ROOT, env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True)
    try:
        direct = wait_for_url(log, proc, timeout_s=300)
        yield direct, f"http://127.0.0.1:{port}", bundle, table.slice(2000)
    finally:
        stop(proc, timeout_s=90, sig=signal.SIGINT)
        print(log.read_text()[-3000:])
    assert proc.returncode == 0, f"jobs/serve.py exited with {proc.returncode} on SIGINT"


def wait_for_url(log: Path, proc: subprocess.Popen, timeout_s: float) -> str:
    """The URL jobs/serve.py prints once /readyz answers ("serving <bundle> at <url> ...")."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"jobs/serve.py exited with {proc.returncode}:\n{log.read_text()[-3000:]}"
        if found := re.search(r"serving \S+ at (http://\S+) ", log.read_text()):
            return found.group(1)
        time.sleep(1)
    raise TimeoutError(f"jobs/serve.py printed no URL in {timeout_s:.0f} s:\n{log.read_text()[-3000:]}")


def records(table) -> list[dict]:
    rows = table.drop_columns(["is_fraud"]).to_pylist()
    return [{**r, "event_time": r["event_time"].isoformat()} for r in rows]


def test_direct_ingress_and_proxy_serve_the_same_app(served):
    direct, proxy, bundle, held_out = served
    assert int(direct.rsplit(":", 1)[1]) != int(proxy.rsplit(":", 1)[1])  # not the proxy's port
    rows = records(held_out)
    half = len(rows) // 2
    with httpx.Client(timeout=60) as client:
        via_direct = [client.post(f"{direct}/predict", json=rows[i:i + 10]) for i in range(0, half, 10)]
        via_proxy = [client.post(f"{proxy}/predict", json=rows[i:i + 10]) for i in range(half, len(rows), 10)]
        assert [r.status_code for r in via_direct + via_proxy] == [200] * len(via_direct + via_proxy)
        scores = np.array([p["score"] for r in via_direct + via_proxy for p in r.json()["predictions"]])
        expected = load_bundle(bundle).predict(held_out.drop_columns(["is_fraud"]))
        assert np.allclose(scores, expected, atol=1e-6)  # one app, the offline path, either way in

        # One ingress replica answers both doors: its counters saw every request.
        metrics = client.get(f"{direct}/metrics").text
        total = sum(float(m.group(1)) for m in re.finditer(
            r'^mlinfra_requests_total\{[^}]*endpoint="/predict"[^}]*status="200"[^}]*\} (\S+)$', metrics, re.M))
        assert total == len(via_direct) + len(via_proxy), metrics[:2000]

        # Drift checks run in this mode too: the held-out rows fill one window.
        deadline = time.monotonic() + 60
        while (report := client.get(f"{direct}/drift").json())["windows_checked"] < 1:
            assert time.monotonic() < deadline, report
            time.sleep(0.5)
        assert report["rows_seen"] + report["rows_sampled_out"] == len(rows)
        assert client.get(f"{direct}/model").json()["version"] == "fraud-v1"
