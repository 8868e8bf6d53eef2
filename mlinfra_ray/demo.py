"""The serving half of the demo: deploy the champion, send clean then drifted traffic over HTTP,
and check what a user would check — served == offline predictions, drift flagged only on drifted
traffic, and /metrics counting every request."""

from __future__ import annotations

import logging
import re
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import numpy as np
import pyarrow as pa

from mlinfra_ray.bundle import load_bundle
from mlinfra_ray.datasets.fraud import generate_transactions
from mlinfra_ray.ingest import read_clean
from mlinfra_ray.registry import resolve_alias
from mlinfra_ray.settings import Settings, to_dict
from mlinfra_ray.train.stage import time_split

log = logging.getLogger(__name__)


def run_serve_demo(settings: Settings) -> dict[str, Any]:
    from mlinfra_ray.serve.app import deploy, shutdown_serve

    demo, label = settings.serve.demo, settings.contract.label
    clean = time_split(read_clean(settings.paths.lake, settings.contract), settings.contract.event_time,
                       settings.data.split)[2].drop_columns([label])
    base_url = deploy(to_dict(settings))
    log.info("serving %s at %s", settings.tracking.alias, base_url)
    try:
        with httpx.Client(base_url=base_url, timeout=30) as client:
            clean_batches = _batches(clean, demo.clean_requests, demo.records_per_request)
            served = _send(client, clean_batches)
            bundle = load_bundle(resolve_alias(settings.tracking, settings.tracking.alias)[0])
            offline = bundle.predict(pa.concat_tables(clean_batches))
            clean_state = _wait_for_rows(client, sum(b.num_rows for b in clean_batches))
            summary = {
                "requests_sent": len(clean_batches),
                "served_matches_offline": bool(np.allclose(served, offline, rtol=0, atol=1e-6)),
                "max_abs_diff": float(np.max(np.abs(served - offline))),
                "clean_windows": clean_state["windows_checked"],
                "clean_drift": clean_state["windows_drifted"] > 0,
            }
            if settings.data.synthetic is not None:
                summary.update(_drifted_phase(client, settings, clean_state, summary))
            summary["metrics_requests_total"] = _predict_count(client.get("/metrics").text)
    finally:
        shutdown_serve()
    return summary


def _drifted_phase(client: httpx.Client, settings: Settings, before: dict[str, Any],
                   summary: dict[str, Any]) -> dict[str, Any]:
    """Traffic from the generator's `shift` scenario: what a new market looks like."""
    demo = settings.serve.demo
    shifted = generate_transactions(settings.data.synthetic, drift="shift",
                                    seed=settings.data.synthetic.seed + 1000)
    batches = _batches(shifted.drop_columns([settings.contract.label]), demo.drift_requests,
                       demo.records_per_request)
    _send(client, batches)
    state = _wait_for_rows(client, before["rows_seen"] + sum(b.num_rows for b in batches))
    latest = state["latest"] or {"p_vals": {}}
    top = sorted(latest["p_vals"].items(), key=lambda kv: kv[1])[:3]
    return {"requests_sent": summary["requests_sent"] + len(batches),
            "shifted_windows": state["windows_checked"] - before["windows_checked"],
            "shifted_drift": state["windows_drifted"] > before["windows_drifted"],
            "latest_drift": latest, "top_drifted": [name for name, _ in top]}


def _batches(table: pa.Table, requests: int, per_request: int) -> list[pa.Table]:
    if table.num_rows == 0:
        raise ValueError("no rows to send")
    return [table.take(pa.array(np.arange(i * per_request, (i + 1) * per_request) % table.num_rows))
            for i in range(requests)]


def _send(client: httpx.Client, batches: list[pa.Table]) -> np.ndarray:
    """POST every batch (8 in flight, like a small client fleet); scores in request order."""
    def post(batch: pa.Table) -> list[float]:
        records = [{k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in r.items()}
                   for r in batch.to_pylist()]
        resp = client.post("/predict", json={"records": records})
        if resp.status_code != 200:
            raise RuntimeError(f"/predict answered {resp.status_code}: {resp.text[:500]}")
        return [p["score"] for p in resp.json()["predictions"]]

    with ThreadPoolExecutor(max_workers=8) as pool:
        return np.array([s for scores in pool.map(post, batches) for s in scores])


def _wait_for_rows(client: httpx.Client, rows: int, timeout_s: float = 120.0) -> dict[str, Any]:
    """Drift checks run off the request path: wait until the monitor has seen every row."""
    deadline = time.monotonic() + timeout_s
    while True:
        state = client.get("/drift").json()
        # every full window handed over has also been checked (checks finish after rows arrive)
        done = state["rows_seen"] >= rows and state["windows_checked"] >= rows // state["window_size"]
        if done or time.monotonic() > deadline:
            return state
        time.sleep(0.5)


def _predict_count(metrics_text: str) -> int:
    """Sum of mlinfra_requests_total over every /predict status."""
    total = 0.0
    for line in metrics_text.splitlines():
        if line.startswith("mlinfra_requests_total{") and re.search(r'endpoint="/?predict"', line):
            total += float(line.rsplit(" ", 1)[1])
    return int(total)
