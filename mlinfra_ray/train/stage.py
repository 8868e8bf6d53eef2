"""The training stage: clean snapshot → time split → features → DDP training → calibration →
evaluation (holdout, slices, overfitting gap) → model bundle → MLflow version `challenger` →
promotion gate against `champion`.

`finish` is shared with the sweep (mlinfra_ray.tune), so a tuned model goes through exactly the
same evaluation, bundling and gate as a trained one.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from mlinfra_ray.bundle import load_bundle, save_bundle, score
from mlinfra_ray.cluster import plan_training
from mlinfra_ray.drift import reference_part
from mlinfra_ray.evaluate import (
    choose_threshold,
    classification_metrics,
    flat_slices,
    overfit_gap,
    slice_metrics,
)
from mlinfra_ray.features.transforms import transform
from mlinfra_ray.lineage import lineage_tags
from mlinfra_ray.models import build_model
from mlinfra_ray.registry import register_bundle
from mlinfra_ray.settings import Settings, to_dict
from mlinfra_ray.train.calibrate import calibrate
from mlinfra_ray.train.data import TrainingData, featurize, prepare, time_split
from mlinfra_ray.train.trainer import TrainOutput, fit

__all__ = ["TrainStageResult", "featurize", "finish", "run_training", "time_split"]
log = logging.getLogger(__name__)
TRAIN_EVAL_ROWS = 20_000  # a seeded sample of the train window is enough for the overfitting gap


@dataclass
class TrainStageResult:
    bundle_path: str
    run_name: str
    metrics: dict[str, float]  # test window (the holdout)
    valid_metrics: dict[str, float]
    history: list[dict[str, float]]
    registry: dict[str, str]
    train_metrics: dict[str, float] = field(default_factory=dict)
    overfit: dict[str, float] = field(default_factory=dict)
    slices: dict[str, dict[str, float]] = field(default_factory=dict)  # test window, per slice
    gate: dict[str, Any] | None = None  # the promotion decision (None: promotion.auto=false)


def run_training(settings: Settings, cluster: dict[str, float], snapshot_id: str) -> TrainStageResult:
    data = prepare(settings)
    plan = plan_training(settings.scaling, settings.ray, cluster)
    out = fit(data.datasets, data.n_features, data.pos_weight, settings, plan)
    return finish(settings, data, out, snapshot_id)


def finish(settings: Settings, data: TrainingData, out: TrainOutput, snapshot_id: str,
           extra_tags: dict[str, str] | None = None) -> TrainStageResult:
    """Calibrate, evaluate, bundle, register as challenger and (if configured) run the gate."""
    label, ev = settings.contract.label, settings.trainer.evaluation
    model = build_model(to_dict(settings.model), data.n_features)
    model.load_state_dict(out.state_dict)
    model.eval()
    y_valid = _labels(data.valid, label)
    platt = calibrate(model, transform(data.state, data.valid), y_valid) if settings.trainer.calibrate else {}
    valid_scores = score(model, transform(data.state, data.valid))
    threshold = choose_threshold(valid_scores, y_valid)
    valid_metrics = classification_metrics(valid_scores, y_valid, threshold, ev.calibration_bins)
    sample = _sample(data.train, settings.seed)
    train_metrics = classification_metrics(score(model, transform(data.state, sample)), _labels(sample, label),
                                           threshold, ev.calibration_bins)
    overfit = overfit_gap(train_metrics, valid_metrics, out.history)

    # Drift reference: a seeded sample of the train window, with the final model's scores of it
    # (the serving monitor's prediction-score test compares served scores against these).
    drift_part, drift_reference = reference_part(data.state, data.train, settings.drift, settings.seed, model)
    bundle_dir = _fresh_dir(Path(settings.paths.bundles) / out.run_name)
    lineage = {**lineage_tags(settings, snapshot_id), "run_name": out.run_name, **(extra_tags or {})}
    save_bundle(bundle_dir, model.state_dict(), {
        "feature_state": data.state, "contract": asdict(settings.contract),
        "model": to_dict(settings.model), "config": to_dict(settings), "lineage": lineage,
        "metrics": {"threshold": threshold, "valid": valid_metrics, "train": train_metrics,
                    "overfit": overfit, "best_epoch": out.best, "calibration": platt},
        "drift": drift_part}, drift_reference)
    # Evaluate through the saved bundle: the exact load + predict path that serving uses.
    bundle = load_bundle(bundle_dir)
    test_scores, y_test = bundle.predict(data.test), _labels(data.test, label)
    metrics = classification_metrics(test_scores, y_test, threshold, ev.calibration_bins)
    slices = slice_metrics(data.test, test_scores, y_test, threshold, ev)
    log.info("test window: AUC-PR %.3f (baseline %.3f), AUC-ROC %.3f, ECE %.4f; train-valid AUC-PR gap %.3f",
             metrics["auc_pr"], metrics["positive_rate"], metrics["auc_roc"], metrics["calibration_error"],
             overfit["auc_pr_gap"])
    windows = {"test": metrics, "valid": valid_metrics, "train": train_metrics, "overfit": overfit}
    reg = register_bundle(bundle_dir, settings.tracking, _flatten(to_dict(settings)),
                          _run_metrics(windows, slices), lineage,
                          alias=settings.tracking.promotion.challenger_alias, history=out.history)
    gate = _gate(settings, data.test, reg)
    return TrainStageResult(str(bundle_dir), out.run_name, metrics, valid_metrics, out.history, reg,
                            train_metrics, overfit, slices, gate)


def _run_metrics(windows: dict[str, dict[str, float]], slices: dict[str, dict[str, float]]) -> dict[str, float]:
    """`test_auc_pr`, `valid_…`, `train_…`, `overfit_…` and `slice.<name>.<metric>` for MLflow."""
    flat = {f"{window}_{k}": v for window, m in windows.items() for k, v in m.items()}
    return {**flat, **flat_slices(slices)}


def _gate(settings: Settings, holdout: pa.Table, reg: dict[str, str]) -> dict[str, Any] | None:
    from mlinfra_ray.promotion import promote, summary

    if not settings.tracking.promotion.auto:
        return None
    decision = promote(settings, holdout, reg["version"])
    if decision.promoted:
        reg["alias"] = settings.tracking.alias
    return summary(decision)


def _fresh_dir(path: Path) -> Path:
    """A resumed run that already bundled once gets a new folder; bundles are never overwritten."""
    n, candidate = 1, path
    while candidate.exists():
        n, candidate = n + 1, path.with_name(f"{path.name}-{n}")
    return candidate


def _labels(table: pa.Table, label: str) -> np.ndarray:
    return table.column(label).to_numpy(zero_copy_only=False).astype(np.int64)


def _sample(table: pa.Table, seed: int) -> pa.Table:
    if table.num_rows <= TRAIN_EVAL_ROWS:
        return table
    idx = np.sort(np.random.default_rng(seed).choice(table.num_rows, TRAIN_EVAL_ROWS, replace=False))
    return table.take(pa.array(idx))


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, name + "."))
        else:
            flat[name] = value
    return flat
