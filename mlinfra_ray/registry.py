"""MLflow tracking and model registry: a run per training job, a model version per bundle.

The bundle folder is logged as the run's `bundle` artifact and registered as a version of
`tracking.registered_model`; an alias (e.g. `champion`) points at the version to serve. Lineage
(data snapshot, git SHA, config hash) is recorded as run tags and model-version tags.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from mlinfra_ray.settings import TrackingSettings

log = logging.getLogger(__name__)


def _client(tracking: TrackingSettings) -> Any:
    import mlflow
    from mlflow import MlflowClient

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    mlflow.set_tracking_uri(tracking.uri)
    return MlflowClient(tracking_uri=tracking.uri)


def _experiment_id(client: Any, tracking: TrackingSettings) -> str:
    exp = client.get_experiment_by_name(tracking.experiment)
    if exp is not None:
        return exp.experiment_id
    location = Path(tracking.artifact_location).as_uri() if tracking.artifact_location else None
    return client.create_experiment(tracking.experiment, artifact_location=location)


def register_bundle(bundle_dir: str | Path, tracking: TrackingSettings, params: dict[str, Any],
                    metrics: dict[str, float], lineage: dict[str, str],
                    alias: str | None = None) -> dict[str, str]:
    """Log a run with the bundle, register it as a new model version and point `alias` at it."""
    from mlflow.exceptions import MlflowException

    client = _client(tracking)
    exp_id = _experiment_id(client, tracking)
    run = client.create_run(exp_id, run_name=lineage.get("run_name"), tags=lineage)
    run_id = run.info.run_id
    for key, value in sorted(params.items()):
        client.log_param(run_id, key, str(value)[:6000])
    for key, value in metrics.items():
        client.log_metric(run_id, key, float(value))
    client.log_artifacts(run_id, str(bundle_dir), artifact_path="bundle")
    client.set_terminated(run_id)
    try:
        client.create_registered_model(tracking.registered_model)
    except MlflowException:
        pass  # already registered: versions accumulate under one name
    version = client.create_model_version(tracking.registered_model,
                                          source=f"{run.info.artifact_uri}/bundle",
                                          run_id=run_id, tags=lineage)
    if alias:
        client.set_registered_model_alias(tracking.registered_model, alias, version.version)
    log.info("registered %s version %s (alias %s)", tracking.registered_model, version.version, alias)
    return {"name": tracking.registered_model, "version": str(version.version), "run_id": run_id,
            "alias": alias or "", "source": version.source}


def resolve_alias(tracking: TrackingSettings, alias: str, dst: str | Path | None = None) -> tuple[Path, dict]:
    """Local path of the bundle behind `alias` and its version info (downloaded if remote)."""
    import mlflow

    client = _client(tracking)
    version = client.get_model_version_by_alias(tracking.registered_model, alias)
    local = mlflow.artifacts.download_artifacts(artifact_uri=version.source,
                                                dst_path=str(dst) if dst else None)
    info = {"name": tracking.registered_model, "version": str(version.version), "alias": alias,
            "run_id": version.run_id or "", "tags": dict(version.tags)}
    return Path(local), info
