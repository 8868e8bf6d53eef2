"""Where a replica's bundle comes from: a local folder, or the registry by alias or pinned version.

A *source* is plain data (it travels to replicas): {"bundle_path": str | None, "tracking": dict,
"alias": str, "version": str | None}. `load_served_bundle(source)` returns the verified bundle and
its identity; `alias_version(source)` is the cheap check replicas poll to follow the alias (hot
swap): only a moved alias costs a download. A version is loaded by number, not by alias, so an
alias that moves again mid-download cannot give a replica a bundle other than the one it asked for.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mlinfra_ray.settings import TrackingSettings, build

Loader = Callable[[dict[str, Any]], tuple[Any, dict[str, Any]]]  # source → (Bundle, model info)


def model_source(settings: dict[str, Any], bundle_path: str | None = None) -> dict[str, Any]:
    """The source a deployment loads from: `bundle_path` (argument or serve.bundle_path) or the alias."""
    path = bundle_path or settings["serve"].get("bundle_path")
    return {"bundle_path": str(path) if path else None, "tracking": settings["tracking"],
            "alias": settings["tracking"]["alias"], "version": None}


def load_served_bundle(source: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """The bundle to serve (manifest verified) and its identity, including when it was created."""
    from mlinfra_ray.bundle import MANIFEST, load_bundle

    if source.get("bundle_path"):
        path = Path(source["bundle_path"])
        info = {"name": path.name, "version": path.name, "alias": "local", "run_id": "",
                "created_at": (path / MANIFEST).stat().st_mtime}
        return load_bundle(path), {**info, "loaded_at": time.time()}
    tracking = build(TrackingSettings, source["tracking"])
    version = source.get("version") or alias_version(source)
    if version is None:
        raise LookupError(f"{tracking.registered_model}@{source['alias']} is not set in {tracking.uri}")
    path, info = _download_version(tracking, str(version))
    return load_bundle(path), {**info, "alias": source["alias"], "loaded_at": time.time()}


def alias_version(source: dict[str, Any]) -> str | None:
    """The registry version the alias points at now (None: local bundle, or alias not set)."""
    from mlinfra_ray import registry

    if source.get("bundle_path"):
        return None
    return registry.alias_version(build(TrackingSettings, source["tracking"]), source["alias"])


def _download_version(tracking: TrackingSettings, version: str) -> tuple[Path, dict[str, Any]]:
    from mlflow import MlflowClient

    from mlinfra_ray import registry

    # A fresh folder per load: replicas on one node never write into each other's download.
    dst = tempfile.mkdtemp(prefix=f"mlinfra-{tracking.registered_model}-v{version}-")
    local = registry.download_version(tracking, version, dst)
    mv = MlflowClient(tracking_uri=tracking.uri).get_model_version(tracking.registered_model, version)
    info = {"name": tracking.registered_model, "version": str(mv.version), "run_id": mv.run_id or "",
            "created_at": mv.creation_timestamp / 1000.0}
    return local, info
