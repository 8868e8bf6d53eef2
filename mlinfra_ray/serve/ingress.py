"""The Ingress deployment: the FastAPI app of `serve.api`, backed by deployment handles.

The app is built late (`@serve.ingress()` + `__serve_build_asgi_app__`, run in the replica after
`__init__`): request models need the contract of the model actually served, which the predictor
reports. Building it in the replica also avoids pickling FastAPI routes by value.

One replica by design: its process-local registry then counts every request exactly (see
serve/metrics.py). It only validates and forwards; scoring scales in the Predictor. With
`serve.colocate_predictor`, the Predictor class runs inside this replica instead (same code, same
@serve.batch and alias following), called through `LocalHandle`: one process hop less per request,
at the price of scoring in this one replica.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from types import SimpleNamespace
from typing import Any

from ray import serve
from ray.exceptions import RayActorError
from ray.serve.exceptions import BackPressureError
from ray.serve.handle import DeploymentHandle

from mlinfra_ray.serve.api import ApiConfig, Unavailable, build_api
from mlinfra_ray.serve.guard import load_api_key
from mlinfra_ray.serve.metrics import ServeMetrics
from mlinfra_ray.settings import AuthSettings, ContractSettings, build

log = logging.getLogger(__name__)
CALL_TIMEOUT_S = 10.0  # control-plane calls (/readyz, /drift, /metrics) must not hang a probe


class HandleService:
    """`serve.api.Service` over the Predictor and DriftMonitor handles."""

    def __init__(self, predictor: DeploymentHandle, monitor: DeploymentHandle | None,
                 metrics: ServeMetrics) -> None:
        self.predictor, self.monitor, self.metrics = predictor, monitor, metrics
        # The scoring replicas hand rows to the monitor; their responses report the hand-off.
        self.dropped = 0
        self.handoff: dict[str, int] = {"pending": 0, "buffered": 0}  # as the last response said

    async def predict(self, records: list[dict[str, Any]]) -> dict[str, Any]:
        # No per-call timeout task on the hot path: the proxy's request_timeout_s (serve.start in
        # app.deploy) bounds every request end to end.
        try:
            out = await self.predictor.predict_records.remote(records)
        except BackPressureError as err:  # the predictor's bounded queue is full
            raise Unavailable("predictor overloaded; retry later") from err
        except RayActorError as err:  # the replica died mid-request; Serve replaces it
            raise Unavailable("predictor replica lost; retry") from err
        handoff = out.get("drift")  # on the first response of each scored batch
        if handoff is not None:
            if handoff["new_drops"]:
                self.dropped += handoff["new_drops"]
                self.metrics.drift_dropped.inc(handoff["new_drops"])
            self.handoff = handoff
        return out

    async def model_info(self) -> dict[str, Any]:
        return await asyncio.wait_for(self.predictor.model_info.remote(), CALL_TIMEOUT_S)

    async def ready(self) -> None:
        await self.model_info()
        if self.monitor is not None:
            await asyncio.wait_for(self.monitor.report.remote(), CALL_TIMEOUT_S)

    async def drift(self) -> dict[str, Any] | None:
        if self.monitor is None:
            return None
        report = await asyncio.wait_for(self.monitor.report.remote(), CALL_TIMEOUT_S)
        return {**report, "pending": self.handoff["pending"], "dropped": self.dropped,
                "handoff_buffered": self.handoff["buffered"]}

    async def refresh_metrics(self) -> None:
        if self.monitor is None:
            return
        try:
            self.metrics.drift.update(await asyncio.wait_for(self.monitor.report.remote(), CALL_TIMEOUT_S))
        except Exception:  # noqa: BLE001 — a slow monitor must not break the scrape: keep last values
            log.warning("drift report unavailable; exporting the previous values")


class LocalHandle:
    """An object in this process called like a DeploymentHandle: `handle.method.remote(...)`."""

    def __init__(self, instance: Any) -> None:
        self._instance = instance

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._instance, name)

        async def call(*args: Any, **kwargs: Any) -> Any:
            out = method(*args, **kwargs)
            return await out if inspect.isawaitable(out) else out

        return SimpleNamespace(remote=call)


async def colocated_predictor(source: dict[str, Any], config: dict[str, Any], loader: Any,
                              monitor: DeploymentHandle | None) -> LocalHandle:
    """The Predictor deployment's class, built in this replica (its __init__ is async)."""
    from mlinfra_ray.serve.predictor import Predictor

    cls = Predictor.func_or_class
    instance = cls.__new__(cls)
    await instance.__init__(source, config, loader, monitor)
    return LocalHandle(instance)


@serve.deployment(num_replicas=1)
@serve.ingress()
class Ingress:
    async def __init__(self, predictor: DeploymentHandle | None, monitor: DeploymentHandle | None,
                       config: dict[str, Any]) -> None:
        if predictor is None:  # serve.colocate_predictor
            predictor = await colocated_predictor(*config["colocated"], monitor)
        self.metrics = ServeMetrics()
        self.service = HandleService(predictor, monitor, self.metrics)
        # Validate against the contract the served model was trained with, not the caller's config.
        info = await predictor.model_info.remote()
        self.contract = build(ContractSettings, info["contract"])
        self.metrics.set_model(str(info["version"]), str(info["alias"]), info.get("created_at"))
        auth = build(AuthSettings, config["auth"])
        self.config = ApiConfig(max_records=int(config["max_records"]),
                                max_body_bytes=int(config["max_body_bytes"]),
                                api_key=load_api_key(auth), public_paths=list(auth.public_paths))

    def __serve_build_asgi_app__(self) -> Any:
        return build_api(self.service, self.contract, self.metrics, self.config)
