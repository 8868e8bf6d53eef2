"""The Ray Serve app: Ingress (FastAPI) → Predictor (@serve.batch), DriftMonitor off the hot path.

    POST /predict ─► Ingress: validate with the contract's pydantic model (422 names the field)
                       └─► Predictor.predict_records: one Arrow table per batch of requests,
                           Bundle.predict (the offline eval path) + drift rows, split back
                       └─► DriftMonitor.observe  (fire-and-forget task, capped; drops counted)
    GET /healthz /readyz /model /drift /metrics

Deployments receive plain dicts (built from typed settings here, checked once at build time) and a
bundle `loader` (default `load_served_bundle`: a local `bundle_path` if given, else the MLflow
alias), so tests can serve a local bundle and swap the loader without MLflow.
"""

# No `from __future__ import annotations` here: @serve.ingress re-builds the FastAPI routes inside
# the replica from by-value pickled methods whose globals hold only names used in code, so a string
# annotation like "Request" no longer resolves and FastAPI takes `request` for a query parameter.
import asyncio
import inspect
import logging
import time
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError
from ray import serve
from ray.serve.exceptions import BackPressureError
from ray.serve.handle import DeploymentHandle

from mlinfra_ray.cluster import log_level
from mlinfra_ray.serve.metrics import ServeMetrics
from mlinfra_ray.serve.schemas import (
    error_detail,
    parse_predict,
    predict_request_model,
    records_to_table,
)
from mlinfra_ray.settings import (
    ContractSettings,
    DriftSettings,
    RaySettings,
    ServeSettings,
    TrackingSettings,
    build,
)

log = logging.getLogger(__name__)
Loader = Callable[[dict[str, Any]], tuple[Any, dict[str, Any]]]  # source → (Bundle, model info)
api = FastAPI(title="mlinfra fraud scoring")
CALL_TIMEOUT_S = 10.0  # control-plane calls (/readyz, /drift, /metrics) must not hang a probe


def load_served_bundle(source: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """The bundle to serve and its identity: `bundle_path` if set, else `alias` via MLflow."""
    from mlinfra_ray.bundle import load_bundle
    from mlinfra_ray.registry import resolve_alias

    if source.get("bundle_path"):
        path = Path(source["bundle_path"])
        return load_bundle(path), {"name": path.name, "version": path.name, "alias": "local"}
    tracking = build(TrackingSettings, source["tracking"])
    path, info = resolve_alias(tracking, source["alias"])
    return load_bundle(path), info


@serve.deployment
class Predictor:
    """Scores batches of requests with the bundle; also returns the rows drift is watched on."""

    def __init__(self, source: dict[str, Any], batching: dict[str, Any],
                 loader: Loader = load_served_bundle) -> None:
        import torch

        torch.set_num_threads(1)  # replicas share the cores; intra-op threads would oversubscribe
        self.bundle, info = loader(source)
        self.contract = self.bundle.contract
        self.model = {"version": str(info["version"]), "alias": str(info["alias"])}
        parts = self.bundle.parts
        self.info = {**info, **self.model, "threshold": self.bundle.threshold,
                     "lineage": parts["lineage"], "contract": parts["contract"]}
        self.predict_records.set_max_batch_size(batching["max_batch_size"])
        self.predict_records.set_batch_wait_timeout_s(batching["batch_wait_timeout_s"])

    def model_info(self) -> dict[str, Any]:
        return self.info

    @serve.batch(max_batch_size=64, batch_wait_timeout_s=0.01)  # real values set in __init__
    async def predict_records(self, requests: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
        """One table for the whole batch (one forward pass), split back per request."""
        from mlinfra_ray.features.transforms import drift_matrix

        table = records_to_table([r for records in requests for r in records], self.contract)
        scores = self.bundle.predict(table)
        rows = drift_matrix(self.bundle.feature_state, table)
        bounds = np.cumsum([0, *(len(records) for records in requests)])
        threshold = self.bundle.threshold
        return [{"predictions": [{"score": float(s), "is_fraud": bool(s >= threshold)}
                                 for s in scores[a:b]],
                 "model": self.model, "drift_rows": rows[a:b]}
                for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


@serve.deployment(num_replicas=1)  # one window over all traffic: a single replica by design
class DriftMonitor:
    """Tumbling windows of served rows tested against the bundle's reference sample."""

    def __init__(self, source: dict[str, Any], window_size: int,
                 loader: Loader = load_served_bundle) -> None:
        from mlinfra_ray.drift import DriftWindow, detector_from_bundle

        bundle, info = loader(source)
        self.detector, self.columns = detector_from_bundle(bundle)
        self.window = DriftWindow(window_size)
        self.model = {"version": str(info["version"]), "alias": str(info["alias"])}
        self._lock = asyncio.Lock()  # one check at a time, so `latest` is the newest window

    async def observe(self, rows: Any) -> None:
        from mlinfra_ray.drift import check_window

        for window in self.window.add(np.asarray(rows, dtype=np.float32)):
            async with self._lock:  # the test runs in a thread: report() stays responsive
                report = await asyncio.to_thread(check_window, self.detector, window, self.columns)
                self.window.record(report)

    async def report(self) -> dict[str, Any]:
        return {**self.window.state(), "columns": self.columns, "model": self.model}


class DriftHandoff:
    """Fire-and-forget delivery of scored rows to the DriftMonitor.

    `send` returns at once: the request never awaits drift work. Each delivery is an asyncio task
    kept in `pending` (the loop holds tasks only weakly; an unreferenced task can be collected
    mid-flight) and removed when done. Beyond `max_pending` in flight, rows are dropped and
    counted rather than queued without bound behind a slow monitor.
    """

    def __init__(self, monitor: Any, max_pending: int, on_drop: Callable[[int], Any]) -> None:
        self.monitor, self.max_pending, self.on_drop = monitor, max_pending, on_drop
        self.pending: set[asyncio.Task] = set()
        self.dropped = 0  # records never checked for drift

    def send(self, rows: np.ndarray) -> None:
        if len(self.pending) >= self.max_pending:
            self._drop(len(rows))
            return
        task = asyncio.get_running_loop().create_task(self._deliver(rows))
        self.pending.add(task)
        task.add_done_callback(self.pending.discard)

    async def _deliver(self, rows: np.ndarray) -> None:
        try:
            await self.monitor.observe.remote(rows)
        except Exception:  # noqa: BLE001 — drift must never affect serving; count and log it
            self._drop(len(rows))
            log.exception("drift hand-off failed")

    def _drop(self, n: int) -> None:
        self.dropped += n
        self.on_drop(n)


# @serve.ingress cloudpickles the FastAPI app (with the route methods) when the class is decorated:
# every module global the routes use must already exist at that point, i.e. be defined above.
def _json(content: Any, status: int = 200) -> JSONResponse:
    return JSONResponse(content, status_code=status)


@serve.deployment(num_replicas=1)  # one replica: the /metrics registry then counts every request
@serve.ingress(api)
class Ingress:
    async def __init__(self, predictor: DeploymentHandle, monitor: DeploymentHandle,
                     config: dict[str, Any]) -> None:
        self.predictor, self.monitor = predictor, monitor
        self.metrics = ServeMetrics()
        self.handoff = DriftHandoff(monitor, int(config["max_pending"]),
                                    self.metrics.drift_dropped.inc)
        # Validate against the contract the served model was trained with, not the caller's config.
        info = await predictor.model_info.remote()
        contract = build(ContractSettings, info["contract"])
        self.request_model = predict_request_model(contract, int(config["max_records"]))
        self.info = {k: v for k, v in info.items() if k != "contract"}
        self.metrics.set_model(self.info["version"], self.info["alias"])

    @api.post("/predict")
    async def predict(self, request: Request) -> Response:
        return await self._timed("/predict", self._predict(request))

    @api.get("/healthz")
    async def healthz(self) -> Response:
        return await self._timed("/healthz", _json({"status": "ok"}))

    @api.get("/readyz")
    async def readyz(self) -> Response:
        return await self._timed("/readyz", self._ready())

    @api.get("/model")
    async def model(self) -> Response:
        return await self._timed("/model", _json(self.info))

    @api.get("/drift")
    async def drift(self) -> Response:
        return await self._timed("/drift", self._drift())

    @api.get("/metrics")
    async def metrics_text(self) -> Response:
        return await self._timed("/metrics", self._metrics())

    async def _timed(self, endpoint: str, work: Response | Awaitable[Response]) -> Response:
        """Count and time every request, whatever its outcome (500 if the handler raised)."""
        start, status = time.perf_counter(), 500
        try:
            response = await work if inspect.isawaitable(work) else work
            status = response.status_code
            return response
        finally:
            self.metrics.observe_request(endpoint, status, time.perf_counter() - start)

    async def _predict(self, request: Request) -> Response:
        try:
            records = parse_predict(self.request_model, await request.body())
        except ValidationError as err:  # bad JSON included: always a 422, never a 500
            return _json({"detail": error_detail(err)}, 422)
        try:
            out = await self.predictor.predict_records.remote(records)
        except BackPressureError:
            return _json({"detail": "predictor overloaded; retry later"}, 503)
        self.handoff.send(out["drift_rows"])
        self.metrics.observe_scores([p["score"] for p in out["predictions"]])
        return _json({"predictions": out["predictions"], "model": out["model"]})

    async def _ready(self) -> Response:
        try:
            await asyncio.wait_for(self.predictor.model_info.remote(), CALL_TIMEOUT_S)
            await asyncio.wait_for(self.monitor.report.remote(), CALL_TIMEOUT_S)
        except Exception as err:  # noqa: BLE001 — any failure means "not ready", with the reason
            return _json({"ready": False, "reason": repr(err)}, 503)
        return _json({"ready": True, "model": self.info["version"]})

    async def _drift(self) -> Response:
        report = await asyncio.wait_for(self.monitor.report.remote(), CALL_TIMEOUT_S)
        return _json({**report, "pending": len(self.handoff.pending),
                      "dropped": self.handoff.dropped})

    async def _metrics(self) -> Response:
        try:
            self.metrics.drift.update(await asyncio.wait_for(self.monitor.report.remote(),
                                                             CALL_TIMEOUT_S))
        except Exception:  # noqa: BLE001 — a slow monitor must not break the scrape: keep last values
            log.warning("drift report unavailable; exporting the previous values")
        body, content_type = self.metrics.render()
        return Response(body, media_type=content_type)


def build_app(settings: dict[str, Any], bundle_path: str | None = None,
              loader: Loader = load_served_bundle) -> serve.Application:
    """The app from plain settings (`settings.to_dict(Settings)`); typed checks happen here."""
    sv = build(ServeSettings, settings["serve"])
    drift = build(DriftSettings, settings["drift"])
    tracking = build(TrackingSettings, settings["tracking"])
    source = {"bundle_path": bundle_path, "tracking": settings["tracking"], "alias": tracking.alias}
    actor = {"num_cpus": sv.cpus_per_replica}  # fractional: fits beside a finished training run
    predictor = Predictor.options(
        num_replicas=sv.predictor_replicas, ray_actor_options=actor,
        # a full batch must fit in the ongoing-request slots, or batches never fill
        max_ongoing_requests=max(sv.max_ongoing_requests, sv.max_batch_size),
        max_queued_requests=sv.max_queued_requests,
    ).bind(source, {"max_batch_size": sv.max_batch_size,
                    "batch_wait_timeout_s": sv.batch_wait_timeout_s}, loader)
    monitor = DriftMonitor.options(
        ray_actor_options=actor, max_ongoing_requests=drift.max_pending + 8,
    ).bind(source, drift.window_size, loader)
    return Ingress.options(
        ray_actor_options=actor, max_ongoing_requests=sv.max_ongoing_requests,
        max_queued_requests=sv.max_queued_requests,
    ).bind(predictor, monitor, {"max_pending": drift.max_pending,
                                "max_records": sv.max_records_per_request})


def deploy(settings: dict[str, Any], bundle_path: str | None = None,
           loader: Loader = load_served_bundle, timeout_s: float = 180.0) -> str:
    """Start Serve's HTTP proxy on serve.host:port, run the app, wait for /readyz; the base URL."""
    sv = build(ServeSettings, settings["serve"])
    # Per-request access logs at INFO drown a demo or CI log; keep them when someone watches a TTY.
    logs = {"log_level": log_level(build(RaySettings, settings["ray"]))}
    serve.start(http_options={"host": sv.host, "port": sv.port}, logging_config=logs)
    serve.run(build_app(settings, bundle_path, loader), name=sv.app_name,
              route_prefix=sv.route_prefix, blocking=False, logging_config=logs)
    base_url = f"http://{sv.host}:{sv.port}{sv.route_prefix.rstrip('/')}"
    wait_ready(base_url, timeout_s)
    return base_url


def wait_ready(base_url: str, timeout_s: float) -> None:
    deadline, last = time.monotonic() + timeout_s, "no answer"
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{base_url}/readyz", timeout=5) as resp:
                if resp.status == 200:
                    return
        except OSError as err:  # connection refused / 404 / 503 while replicas start
            last = repr(err)
        time.sleep(0.5)
    raise TimeoutError(f"{base_url}/readyz not ready after {timeout_s:.0f} s: {last}")


def shutdown_serve() -> None:
    """Tear down every Serve app and the proxy (the Ray cluster itself stays up)."""
    serve.shutdown()
