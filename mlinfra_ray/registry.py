"""MLflow tracking and model registry: a run per training job, a model version per bundle.

The bundle folder is logged as the run's `bundle` artifact and registered as a version of
`tracking.registered_model`; aliases (`champion` serves, `challenger` waits for the promotion gate)
point at versions. Every alias move is appended to a registered-model tag (`alias_history.<alias>`),
which is what makes a one-command rollback possible. Lineage (data snapshot, git SHA, config hash)
is recorded as run tags and model-version tags; the run also holds the flattened resolved config as
params and one metric row per epoch.

Works the same against the embedded sqlite store and an `mlflow server` (tracking=server).
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from mlinfra_ray.settings import TrackingSettings

log = logging.getLogger(__name__)
HISTORY_TAG = "alias_history.{alias}"


class RegistryError(RuntimeError):
    """An alias or version that does not exist, or a rollback with nothing to roll back to."""


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


def log_run(tracking: TrackingSettings, run_name: str, params: dict[str, Any], metrics: dict[str, float],
            tags: dict[str, str], history: list[dict[str, Any]] | None = None,
            artifacts: dict[str, str] | None = None) -> Any:
    """A finished MLflow run: params, final metrics, per-epoch metrics (step = epoch), artifacts
    ({artifact_path: local dir}). Returns the run."""
    from mlflow.entities import Metric, Param

    client = _client(tracking)
    run = client.create_run(_experiment_id(client, tracking), run_name=run_name, tags=tags)
    run_id, now = run.info.run_id, int(time.time() * 1000)
    param_list = [Param(k, str(v)[:6000]) for k, v in sorted(params.items())]
    metric_list = [Metric(k, float(v), now, 0) for k, v in metrics.items()]
    for row in history or []:
        metric_list += [Metric(f"epoch.{k}", float(v), now, int(row["epoch"]))
                        for k, v in row.items() if k != "epoch" and isinstance(v, int | float)]
    for i in range(0, len(param_list), 100):  # MLflow's per-batch limits
        client.log_batch(run_id, params=param_list[i:i + 100])
    for i in range(0, len(metric_list), 1000):
        client.log_batch(run_id, metrics=metric_list[i:i + 1000])
    for path, local in (artifacts or {}).items():
        client.log_artifacts(run_id, local, artifact_path=path)
    client.set_terminated(run_id)
    return run


def register_bundle(bundle_dir: str | Path, tracking: TrackingSettings, params: dict[str, Any],
                    metrics: dict[str, float], lineage: dict[str, str], alias: str | None = None,
                    history: list[dict[str, Any]] | None = None) -> dict[str, str]:
    """Log a run with the bundle, register it as a new model version and point `alias` at it."""
    from mlflow.exceptions import MlflowException

    client = _client(tracking)
    run = log_run(tracking, lineage.get("run_name", "train"), params, metrics, lineage, history,
                  {"bundle": str(bundle_dir)})
    try:
        client.create_registered_model(tracking.registered_model)
    except MlflowException:
        pass  # already registered: versions accumulate under one name
    version = client.create_model_version(tracking.registered_model,
                                          source=f"{run.info.artifact_uri}/bundle",
                                          run_id=run.info.run_id, tags=lineage)
    if alias:
        set_alias(tracking, alias, str(version.version))
    log.info("registered %s version %s (alias %s)", tracking.registered_model, version.version, alias)
    return {"name": tracking.registered_model, "version": str(version.version), "run_id": run.info.run_id,
            "alias": alias or "", "source": version.source}


def alias_version(tracking: TrackingSettings, alias: str) -> str | None:
    """The version `alias` points at, or None if the alias is not set."""
    from mlflow.exceptions import MlflowException

    try:
        return str(_client(tracking).get_model_version_by_alias(tracking.registered_model, alias).version)
    except MlflowException:
        return None


def alias_history(tracking: TrackingSettings, alias: str) -> list[str]:
    """Versions `alias` has pointed at, oldest first (the current one last)."""
    from mlflow.exceptions import MlflowException

    try:
        model = _client(tracking).get_registered_model(tracking.registered_model)
    except MlflowException:
        return []
    return json.loads(model.tags.get(HISTORY_TAG.format(alias=alias), "[]"))


def set_alias(tracking: TrackingSettings, alias: str, version: str) -> None:
    """Point `alias` at `version` and append it to the alias history."""
    client = _client(tracking)
    client.set_registered_model_alias(tracking.registered_model, alias, version)
    history = [*alias_history(tracking, alias), version][-50:]
    client.set_registered_model_tag(tracking.registered_model, HISTORY_TAG.format(alias=alias),
                                    json.dumps(history))


def rollback_alias(tracking: TrackingSettings, alias: str) -> tuple[str, str]:
    """Move `alias` back to the version it pointed at before the current one: (from, to)."""
    history = alias_history(tracking, alias)
    current = alias_version(tracking, alias)
    if current is None or len(history) < 2 or history[-1] != current:
        raise RegistryError(f"cannot roll back {tracking.registered_model}@{alias}: current "
                            f"{current}, recorded history {history}")
    previous = history[-2]
    client = _client(tracking)
    client.set_registered_model_alias(tracking.registered_model, alias, previous)
    client.set_registered_model_tag(tracking.registered_model, HISTORY_TAG.format(alias=alias),
                                    json.dumps(history[:-1]))
    client.set_model_version_tag(tracking.registered_model, current, f"rolled_back_from.{alias}",
                                 time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    log.info("rolled %s@%s back: v%s -> v%s", tracking.registered_model, alias, current, previous)
    return current, previous


def tag_version(tracking: TrackingSettings, version: str, tags: dict[str, str]) -> None:
    client = _client(tracking)
    for key, value in tags.items():
        client.set_model_version_tag(tracking.registered_model, version, key, str(value)[:5000])


def resolve_alias(tracking: TrackingSettings, alias: str, dst: str | Path | None = None) -> tuple[Path, dict]:
    """Local path of the bundle behind `alias` and its version info (downloaded if remote)."""
    import mlflow

    client = _client(tracking)
    version = client.get_model_version_by_alias(tracking.registered_model, alias)  # MlflowException if unset
    local = mlflow.artifacts.download_artifacts(artifact_uri=version.source,
                                                dst_path=str(dst) if dst else None)
    info = {"name": tracking.registered_model, "version": str(version.version), "alias": alias,
            "run_id": version.run_id or "", "tags": dict(version.tags)}
    return Path(local), info


def download_version(tracking: TrackingSettings, version: str, dst: str | Path | None = None) -> Path:
    """Local path of the bundle registered as `version` (downloaded if the store is remote)."""
    import mlflow

    source = _client(tracking).get_model_version(tracking.registered_model, version).source
    return Path(mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=str(dst) if dst else None))
