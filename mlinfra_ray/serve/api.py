"""The HTTP API: one FastAPI app factory shared by the Serve ingress and the bare-uvicorn baseline.

    POST /predict   one record or {"records": [...]}; body typed from the data contract
    GET  /healthz   process up          GET /readyz   model loaded (and drift monitor reachable)
    GET  /model     version, alias, lineage, threshold
    GET  /drift     latest drift report GET /metrics  Prometheus text
    GET  /openapi.json, /docs

The app is built per replica from the contract of the model being served, so request and response
models are real pydantic types in the route signatures: OpenAPI documents them and FastAPI
validates them (422 names the field; the offending value is not echoed). What scoring means is
a `Service`: the Serve ingress calls deployments through handles, the baseline scores in-process.
"""

# No `from __future__ import annotations`: the route annotations are models created at runtime
# (locals of build_api) and FastAPI must see the classes, not strings it cannot resolve.
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response
from starlette.requests import Request

from mlinfra_ray.serve.guard import Guard
from mlinfra_ray.serve.metrics import ServeMetrics
from mlinfra_ray.serve.schemas import (
    predict_request_model,
    request_model,
    response_id_field,
    response_model,
)
from mlinfra_ray.settings import ContractSettings

ENDPOINTS = ("/predict", "/healthz", "/readyz", "/model", "/drift", "/metrics", "/openapi.json", "/docs")


class Unavailable(RuntimeError):
    """Scoring cannot happen now (overload, replica lost, timeout): the client should retry (503)."""


class Service(Protocol):
    async def predict(self, records: list[dict[str, Any]]) -> dict[str, Any]: ...
    async def model_info(self) -> dict[str, Any]: ...
    async def ready(self) -> None: ...
    async def drift(self) -> dict[str, Any] | None: ...
    async def refresh_metrics(self) -> None: ...


@dataclass(frozen=True)
class ApiConfig:
    max_records: int = 1000
    max_body_bytes: int = 1_048_576
    api_key: str | None = None
    public_paths: list[str] = field(default_factory=lambda: ["/healthz", "/readyz", "/metrics"])
    title: str = "mlinfra scoring"


def build_api(service: Service, contract: ContractSettings, metrics: ServeMetrics,
              config: ApiConfig) -> Guard:
    """The ASGI app: FastAPI routes wrapped by the guard (auth, body limit, request metrics)."""
    app = FastAPI(title=config.title, version="1")
    fields = {c.name for c in contract.columns}

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        detail = [{"type": e["type"], "loc": list(e["loc"]), "msg": e["msg"]} for e in exc.errors()]
        metrics.observe_invalid(_field_names(detail, fields))
        return JSONResponse({"detail": detail}, status_code=422)

    _add_predict(app, service, contract, metrics, config.max_records)
    _add_probes(app, service, metrics)
    _document_single_record(app, request_model(contract).__name__)
    return Guard(app, metrics, config.max_body_bytes, config.api_key, config.public_paths, ENDPOINTS)


def _add_predict(app: FastAPI, service: Service, contract: ContractSettings, metrics: ServeMetrics,
                 max_records: int) -> None:
    body_model = predict_request_model(contract, max_records)
    nullable = [c.name for c in contract.columns if c.nullable and c.name != contract.label]
    id_key, label = response_id_field(contract), contract.label

    @app.post("/predict", response_model=response_model(contract),
              responses={503: {"description": "overloaded or a replica lost; retry"}})
    async def predict(body: body_model) -> Response:  # type: ignore[valid-type]
        records = [r.model_dump() for r in body.records]
        metrics.observe_missing(records, nullable)
        try:
            out = await service.predict(records)
        except Unavailable as err:
            return JSONResponse({"detail": str(err)}, status_code=503, headers={"retry-after": "1"})
        threshold, scores = out["threshold"], [float(s) for s in out["scores"]]
        predictions = [{label: s >= threshold, "score": s} for s in scores]
        if id_key:
            for p, r in zip(predictions, records, strict=True):
                p[id_key] = r.get(id_key)
        metrics.observe_scores(scores)
        metrics.observe_online(out["online"]["lookups"], out["online"]["age_s"])
        metrics.set_model(out["model"]["version"], out["model"]["alias"], out.get("created_at"))
        return JSONResponse({"predictions": predictions, "model": out["model"]})


def _add_probes(app: FastAPI, service: Service, metrics: ServeMetrics) -> None:
    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        try:
            await service.ready()
        except Exception as err:  # noqa: BLE001 — any failure means "not ready", with the reason
            return JSONResponse({"ready": False, "reason": repr(err)}, status_code=503)
        return JSONResponse({"ready": True})

    @app.get("/model")
    async def model() -> dict[str, Any]:
        return {k: v for k, v in (await service.model_info()).items() if k != "contract"}

    @app.get("/drift")
    async def drift() -> JSONResponse:
        report = await service.drift()
        if report is None:
            return JSONResponse({"detail": "drift monitoring is disabled"}, status_code=404)
        return JSONResponse(report)

    @app.get("/metrics")
    async def metrics_text() -> Response:
        await service.refresh_metrics()
        body, content_type = metrics.render()
        return Response(body, media_type=content_type)


def _document_single_record(app: FastAPI, record_name: str) -> None:
    """OpenAPI: /predict also takes one bare record or an array (the request model wraps them)."""
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, routes=app.routes)
            body = schema["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]
            one = {"$ref": f"#/components/schemas/{record_name}"}
            body["schema"] = {"anyOf": [body["schema"], one, {"type": "array", "items": one}]}
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _field_names(detail: list[dict[str, Any]], fields: Iterable[str]) -> list[str]:
    """The contract field each error is about ("body" when it is about the body as a whole)."""
    known = set(fields)
    return [next((p for p in reversed(e["loc"]) if isinstance(p, str) and p in known), "body")
            for e in detail]
