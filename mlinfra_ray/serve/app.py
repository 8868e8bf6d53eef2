"""The Ray Serve app, built by one function from config: Ingress → Predictor, DriftMonitor off-path.

    POST /predict ─► Ingress (serve/ingress.py + serve/api.py): guard (auth, 413, metrics),
                     pydantic from the contract (422 names the field)
                       └─► Predictor.predict_records (serve/predictor.py): @serve.batch, one
                           forward pass per batch, online lookups, follows the registry alias
                             └─► DriftMonitor.observe (serve/monitor.py): the scored rows,
                                 fire-and-forget, batched, capped; transforms and tests there
    GET /healthz /readyz /model /drift /metrics /openapi.json /docs

Deployments receive plain dicts (built from typed settings here, checked once at build time) and a
bundle `loader` (default `load_served_bundle`: a local bundle folder if given, else the MLflow
alias), so tests can serve a local bundle without MLflow. `app_builder` is the import path of
serve.yaml (`serve run serve.yaml`); `deploy` is what jobs/serve.py and the demo call.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
import urllib.request
from typing import Any

from ray import serve

from mlinfra_ray.cluster import log_level
from mlinfra_ray.serve.ingress import Ingress
from mlinfra_ray.serve.loader import Loader, load_served_bundle, model_source
from mlinfra_ray.serve.monitor import DriftMonitor
from mlinfra_ray.serve.online import check_kind
from mlinfra_ray.serve.predictor import Predictor
from mlinfra_ray.settings import DriftSettings, RaySettings, ServeSettings, Settings, build, to_dict

log = logging.getLogger(__name__)
__all__ = ["app_builder", "build_app", "deploy", "direct_ingress_url", "serve_forever",
           "shutdown_serve", "wait_ready"]


def build_app(settings: dict[str, Any], bundle_path: str | None = None,
              loader: Loader = load_served_bundle) -> serve.Application:
    """The app from plain settings (`settings.to_dict(Settings)`); typed checks happen here."""
    sv = build(ServeSettings, settings["serve"])
    drift = build(DriftSettings, settings["drift"])
    check_kind(sv.online_store)  # fail here on an unknown kind, not later in a replica
    if not 0 < drift.sample_fraction <= 1:
        raise ValueError(f"drift.sample_fraction={drift.sample_fraction}: must be in (0, 1]")
    if drift.max_rows_per_s is not None and drift.max_rows_per_s <= 0:
        raise ValueError(f"drift.max_rows_per_s={drift.max_rows_per_s}: must be > 0, or null for no cap")
    source = model_source(settings, bundle_path)
    actor = {"num_cpus": sv.cpus_per_replica}  # fractional: fits beside a finished training run
    predictor_config = {"max_batch_size": sv.max_batch_size, "batch_wait_timeout_s": sv.batch_wait_timeout_s,
                        "alias_poll_s": sv.alias_poll_s, "online_store": sv.online_store,
                        "settings": _lookup_settings(settings), "max_pending": drift.max_pending,
                        "drift_sample": drift.sample_fraction, "drift_max_rows_per_s": drift.max_rows_per_s}
    monitor = DriftMonitor.options(
        # each scoring replica keeps up to max_pending hand-offs in flight
        ray_actor_options=actor, max_ongoing_requests=drift.max_pending * _max_replicas(sv) + 8,
    ).bind(source, to_dict(drift), loader) if drift.enabled else None
    predictor = None if sv.colocate_predictor else Predictor.options(
        ray_actor_options=actor, **_replicas(sv),
        # a full batch must fit in the ongoing-request slots, or batches never fill
        max_ongoing_requests=max(sv.max_ongoing_requests, sv.max_batch_size),
        max_queued_requests=sv.max_queued_requests,
        user_config={"alias_poll_s": sv.alias_poll_s, "version": None},
    ).bind(source, predictor_config, loader, monitor)
    config = {"max_records": sv.max_records_per_request,
              "max_body_bytes": sv.max_body_bytes, "auth": to_dict(sv.auth),
              "colocated": (source, predictor_config, loader) if sv.colocate_predictor else None}
    return Ingress.options(
        ray_actor_options=actor, max_ongoing_requests=sv.max_ongoing_requests,
        max_queued_requests=sv.max_queued_requests,
    ).bind(predictor, monitor, config)


def _lookup_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """What an online lookup may need (the online_store group, views, contract, paths)."""
    return {k: settings[k] for k in ("online_store", "features", "contract", "paths") if k in settings}


def _replicas(sv: ServeSettings) -> dict[str, Any]:
    """Fixed replicas, or Serve autoscaling (the two options are exclusive in Serve)."""
    if sv.autoscaling is None:
        return {"num_replicas": sv.predictor_replicas}
    return {"autoscaling_config": to_dict(sv.autoscaling)}


def _max_replicas(sv: ServeSettings) -> int:
    if sv.colocate_predictor:
        return 1
    return sv.predictor_replicas if sv.autoscaling is None else sv.autoscaling.max_replicas


def app_builder(args: dict[str, Any]) -> serve.Application:
    """Import path for Serve config files: `args.overrides` are Hydra overrides (see serve.yaml)."""
    from mlinfra_ray.compose import compose_settings

    settings = compose_settings(list(args.get("overrides", [])))
    return build_app(to_dict(settings))


def deploy(settings: dict[str, Any], bundle_path: str | None = None,
           loader: Loader = load_served_bundle, timeout_s: float = 180.0) -> str:
    """Start Serve's HTTP proxy on serve.host:port, run the app, wait for /readyz; the base URL."""
    sv = build(ServeSettings, settings["serve"])
    # Per-request access logs at INFO drown a demo or CI log; keep them when someone watches a TTY.
    logs = {"log_level": log_level(build(RaySettings, settings["ray"]))}
    serve.start(http_options={"host": sv.host, "port": sv.port, "request_timeout_s": sv.request_timeout_s},
                logging_config=logs)
    serve.run(build_app(settings, bundle_path, loader), name=sv.app_name,
              route_prefix=sv.route_prefix, blocking=False, logging_config=logs)
    base_url = f"http://{sv.host}:{sv.port}{sv.route_prefix.rstrip('/')}"
    wait_ready(base_url, timeout_s)
    if not sv.direct_ingress:
        return base_url
    try:
        direct = direct_ingress_url(sv)
    except RuntimeError:
        serve.delete(sv.app_name)  # not what was asked for: leave nothing half-deployed behind
        raise
    wait_ready(direct, timeout_s)
    log.info("direct ingress at %s (the proxy answers at %s too)", direct, base_url)
    return direct


def direct_ingress_url(sv: ServeSettings) -> str:
    """The ingress replica's own HTTP address (Serve's direct ingress), asked of the controller.

    Serve hands out these ports itself (30000-31000 by default) and exposes them only through the
    controller's target groups (what its HAProxy integration reads); there is no public call yet.
    """
    import ray
    from ray.serve.context import _get_global_client

    controller = _get_global_client()._controller
    groups = ray.get(controller.get_target_groups.remote(sv.app_name), timeout=30)
    ports = [t.port for g in groups if str(g.protocol).endswith("HTTP") for t in g.targets if t.port != sv.port]
    if not ports:
        raise RuntimeError(
            "serve.direct_ingress=true, but Serve routes through its proxy only: Ray was started without "
            "RAY_SERVE_THROUGHPUT_OPTIMIZED=1 (set it in ray.env_vars for a local cluster, as "
            "serve=low_latency does, or export it before `ray start` on a cluster)")
    # The replica binds serve.host (http_options), like the proxy; one ingress replica by design.
    return f"http://{sv.host}:{ports[0]}{sv.route_prefix.rstrip('/')}"


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


def serve_forever(settings: Settings) -> str:
    """jobs/serve.py: deploy; on a cluster of our own, block until SIGINT/SIGTERM, then tear down.

    Joining a running cluster (`ray.address` set, e.g. a submitted job), the app is left running
    (Serve apps outlive the driver that deployed them) and the base URL is returned at once.
    """
    from mlinfra_ray.cluster import connect, shutdown

    connect(settings.ray)
    base_url = deploy(to_dict(settings))
    source = settings.serve.bundle_path or f"{settings.tracking.registered_model}@{settings.tracking.alias}"
    print(f"serving {source} at {base_url} (OpenAPI: {base_url}/docs)", flush=True)
    if settings.ray.address:
        return base_url
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    print("stopping: shutting down Serve and the local Ray cluster", flush=True)
    shutdown_serve()
    shutdown()
    return base_url


def shutdown_serve() -> None:
    """Tear down every Serve app and the proxy (the Ray cluster itself stays up)."""
    serve.shutdown()
