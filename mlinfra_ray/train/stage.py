"""The training stage: clean snapshot → time split → features → DDP training → evaluation →
model bundle → MLflow model version with an alias."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from mlinfra_ray.bundle import load_bundle, save_bundle, score
from mlinfra_ray.cluster import plan_training
from mlinfra_ray.evaluate import choose_threshold, classification_metrics
from mlinfra_ray.features.transforms import (
    drift_columns,
    drift_matrix,
    fit_feature_state,
    transform,
)
from mlinfra_ray.ingest import read_clean
from mlinfra_ray.lineage import lineage_tags
from mlinfra_ray.models import build_model
from mlinfra_ray.registry import register_bundle
from mlinfra_ray.settings import Settings, SplitSettings, to_dict
from mlinfra_ray.train.trainer import fit

log = logging.getLogger(__name__)


@dataclass
class TrainStageResult:
    bundle_path: str
    run_name: str
    metrics: dict[str, float]  # test window
    valid_metrics: dict[str, float]
    history: list[dict[str, float]]
    registry: dict[str, str]


def time_split(table: pa.Table, event_time: str, split: SplitSettings) -> tuple[pa.Table, ...]:
    """Train on the earliest rows, validate on the next, test on the latest window."""
    table = table.sort_by(event_time)
    n = table.num_rows
    a, b = int(n * split.train), int(n * (split.train + split.valid))
    return table.slice(0, a), table.slice(a, b - a), table.slice(b)


def featurize(table: pa.Table, state: dict[str, Any], label: str) -> Any:
    """A materialized Ray Dataset of {"x": float32 [F], "y": float32} rows.

    Materializing before the trainer starts means Ray Data never competes with the train workers
    for CPUs (the other half of the 2-CPU deadlock fix, see mlinfra_ray.cluster).
    """
    import ray

    ds = ray.data.from_arrow(table)
    return ds.map_batches(_featurize_batch, batch_format="pyarrow",
                          fn_kwargs={"state": state, "label": label}).materialize()


def _featurize_batch(batch: pa.Table, state: dict[str, Any], label: str) -> dict[str, np.ndarray]:
    return {"x": transform(state, batch),
            "y": batch.column(label).to_numpy(zero_copy_only=False).astype(np.float32)}


def run_training(settings: Settings, cluster: dict[str, float], snapshot_id: str) -> TrainStageResult:
    contract, label = settings.contract, settings.contract.label
    train_t, valid_t, test_t = time_split(read_clean(settings.paths.lake, contract),
                                          contract.event_time, settings.data.split)
    log.info("train/valid/test rows: %d / %d / %d", train_t.num_rows, valid_t.num_rows, test_t.num_rows)
    state = fit_feature_state(train_t, settings.features, contract.event_time)
    y_train = train_t.column(label).to_numpy()
    pos_weight = settings.trainer.pos_weight or float((y_train == 0).sum() / max((y_train == 1).sum(), 1))
    datasets = {"train": featurize(train_t, state, label), "valid": featurize(valid_t, state, label)}
    plan = plan_training(settings.scaling, settings.ray, cluster)
    out = fit(datasets, len(state["feature_names"]), pos_weight, settings, plan)

    model = build_model(to_dict(settings.model), len(state["feature_names"]))
    model.load_state_dict(out.state_dict)
    model.eval()
    valid_scores = score(model, transform(state, valid_t))
    threshold = choose_threshold(valid_scores, valid_t.column(label).to_numpy())
    valid_metrics = classification_metrics(valid_scores, valid_t.column(label).to_numpy(), threshold)

    bundle_dir = Path(settings.paths.bundles) / out.run_name
    lineage = {**lineage_tags(settings, snapshot_id), "run_name": out.run_name}
    save_bundle(bundle_dir, out.state_dict, {
        "feature_state": state, "contract": asdict(contract),
        "model": to_dict(settings.model), "config": to_dict(settings), "lineage": lineage,
        "metrics": {"threshold": threshold, "valid": valid_metrics, "best_epoch": out.best},
        "drift": _drift_part(state, settings)}, _reference_sample(state, train_t, settings))
    # Evaluate through the saved bundle: the exact load + predict path that serving uses.
    bundle = load_bundle(bundle_dir)
    metrics = classification_metrics(bundle.predict(test_t), test_t.column(label).to_numpy(), threshold)
    log.info("test window: AUC-PR %.3f (baseline %.3f), AUC-ROC %.3f", metrics["auc_pr"],
             metrics["positive_rate"], metrics["auc_roc"])
    registry = register_bundle(bundle_dir, settings.tracking, _flatten(to_dict(settings)),
                               {**{f"test_{k}": v for k, v in metrics.items()},
                                **{f"valid_{k}": v for k, v in valid_metrics.items()}},
                               lineage, alias=settings.tracking.alias)
    return TrainStageResult(str(bundle_dir), out.run_name, metrics, valid_metrics, out.history, registry)


def _drift_part(state: dict[str, Any], settings: Settings) -> dict[str, Any]:
    names, categories = drift_columns(state)
    return {"columns": names, "categories": {str(k): v for k, v in categories.items()},
            "p_val": settings.drift.p_val, "window_size": settings.drift.window_size}


def _reference_sample(state: dict[str, Any], train: pa.Table, settings: Settings) -> np.ndarray:
    """A seeded random sample of the training window: what 'no drift' looks like."""
    rng = np.random.default_rng(settings.seed)
    n = min(settings.drift.reference_size, train.num_rows)
    idx = np.sort(rng.choice(train.num_rows, size=n, replace=False))
    return drift_matrix(state, train.take(pa.array(idx)))


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, name + "."))
        else:
            flat[name] = value
    return flat
