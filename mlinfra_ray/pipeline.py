"""Stages wired together: what `jobs/*.py` call. Each stage reads the previous stage's outputs
from `paths`, so any stage can be re-run alone (or submitted as its own Ray job)."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from mlinfra_ray.cluster import connect
from mlinfra_ray.datasets.fraud import generate_transactions, write_raw
from mlinfra_ray.ingest import IngestResult, ingest
from mlinfra_ray.settings import Settings
from mlinfra_ray.train.stage import TrainStageResult, run_training

log = logging.getLogger(__name__)


def run_generate(settings: Settings) -> dict[str, int]:
    """Write the synthetic raw files (only for datasets that declare a generator)."""
    if settings.data.synthetic is None:
        log.info("data.synthetic is null: using the raw files already under %s", settings.paths.raw)
        return {}
    counts = write_raw(generate_transactions(settings.data.synthetic), settings.paths.raw,
                       settings.data.synthetic)
    log.info("generated %d raw rows under %s", counts["rows_written"], settings.paths.raw)
    return counts


def run_ingest(settings: Settings) -> IngestResult:
    connect(settings.ray)
    return ingest(settings.paths.raw, settings.paths.lake, settings.contract)


def run_train(settings: Settings) -> TrainStageResult:
    cluster = connect(settings.ray)
    return run_training(settings, cluster, load_manifest(settings.paths.lake)["snapshot_id"])


def load_manifest(lake: str) -> dict[str, Any]:
    path = Path(lake) / "manifest.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: run the ingest stage first (jobs/ingest.py)")
    return json.loads(path.read_text())


def run_pipeline(settings: Settings, serve_demo: bool = True) -> dict[str, Any]:
    """generate → ingest → train/evaluate/register → serve + traffic + drift check → shut down."""
    started = time.monotonic()
    generated = run_generate(settings)
    ingested = run_ingest(settings)
    features = _run_feature_store(settings) if settings.features.use_views else None
    trained = run_train(settings)
    summary: dict[str, Any] = {"generated": generated, "ingest": _ingest_summary(ingested),
                               "train": {"run_name": trained.run_name, "test": trained.metrics,
                                         "epochs": len(trained.history), "registry": trained.registry,
                                         "bundle": trained.bundle_path}}
    if features is not None:
        summary["features"] = features
    if serve_demo:
        from mlinfra_ray.demo import run_serve_demo

        summary["serve"] = run_serve_demo(settings)
    summary["seconds"] = round(time.monotonic() - started, 1)
    summary["path"] = str(Path(settings.paths.root) / "summary.json")
    Path(summary["path"]).write_text(json.dumps(summary, indent=2, default=str))
    return summary


def _run_feature_store(settings: Settings) -> dict[str, Any]:
    """features.use_views: views → offline store (training joins them point-in-time) → online store."""
    from mlinfra_ray.features.stage import run_features, run_materialize

    return {"offline": run_features(settings), "materialize": run_materialize(settings)}


def _ingest_summary(result: IngestResult) -> dict[str, Any]:
    data = asdict(result)
    data.pop("files")
    return data
