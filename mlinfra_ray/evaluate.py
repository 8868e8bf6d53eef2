"""Evaluation on a later time window: ranking quality against the positive-rate baseline,
calibration, per-slice metrics and the train-vs-validation gap (the overfitting signal)."""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score

from mlinfra_ray.settings import EvalSettings, SliceSpec


def choose_threshold(scores: np.ndarray, labels: np.ndarray) -> float:
    """The score threshold with the best F1 on the validation window (0.5 if undefined)."""
    if labels.sum() == 0:
        return 0.5
    precision, recall, thresholds = precision_recall_curve(labels, scores)
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
    return float(thresholds[int(np.argmax(f1[:-1]))])


def calibration_error(scores: np.ndarray, labels: np.ndarray, bins: int = 10) -> float:
    """Expected calibration error: row-weighted |mean score - positive rate| over equal-width bins.

    0 means a score of p is right p of the time; serving decisions and the promotion gate rely on
    that. NaN for an empty window.
    """
    if len(scores) == 0:
        return float("nan")
    which = np.minimum((scores * bins).astype(np.int64), bins - 1)
    err = 0.0
    for b in np.unique(which):
        mask = which == b
        err += mask.sum() * abs(float(scores[mask].mean()) - float(labels[mask].mean()))
    return err / len(scores)


def classification_metrics(scores: np.ndarray, labels: np.ndarray, threshold: float,
                           calibration_bins: int = 10) -> dict[str, float]:
    """AUC-PR (average precision), AUC-ROC, precision/recall at `threshold`, calibration.

    A random scorer's AUC-PR equals the positive rate, so `auc_pr_lift` = auc_pr / positive_rate
    says how many times better than chance the ranking is.
    """
    labels = labels.astype(np.int64)
    positive_rate = float(labels.mean()) if len(labels) else 0.0
    predicted = scores >= threshold
    tp = int((predicted & (labels == 1)).sum())
    both = len(np.unique(labels)) == 2
    auc_pr = float(average_precision_score(labels, scores)) if both else float("nan")
    return {
        "rows": float(len(labels)),
        "positive_rate": positive_rate,
        "auc_pr": auc_pr,
        "auc_roc": float(roc_auc_score(labels, scores)) if both else float("nan"),
        "auc_pr_lift": auc_pr / positive_rate if positive_rate else float("nan"),
        "precision_at_threshold": tp / max(int(predicted.sum()), 1),
        "recall_at_threshold": tp / max(int(labels.sum()), 1),
        "threshold": float(threshold),
        "calibration_error": calibration_error(scores, labels, calibration_bins),
        "brier": float(np.mean((scores - labels) ** 2)) if len(labels) else float("nan"),
    }


def slice_keys(table: pa.Table, spec: SliceSpec) -> np.ndarray:
    """The slice name of every row: `channel:web`, `amount:20-100` (20 <= amount < 100),
    `amount:missing` — characters MLflow accepts in metric names."""
    col = table.column(spec.column)
    if spec.bins is None:
        values = pc.fill_null(pc.cast(col, pa.string()), "missing").to_numpy(zero_copy_only=False)
        return np.array([f"{spec.column}:{_safe(v)}" for v in values], dtype=object)
    x = pc.cast(col, pa.float64()).to_numpy(zero_copy_only=False)
    edges = [-math.inf, *spec.bins, math.inf]
    names = [f"{spec.column}:{_num(lo)}-{_num(hi)}" for lo, hi in zip(edges[:-1], edges[1:], strict=True)]
    which = np.searchsorted(np.asarray(spec.bins, dtype=np.float64), np.nan_to_num(x), side="right")
    out = np.array([names[i] for i in which], dtype=object)
    out[np.isnan(x)] = f"{spec.column}:missing"
    return out


def slice_metrics(table: pa.Table, scores: np.ndarray, labels: np.ndarray, threshold: float,
                  evaluation: EvalSettings) -> dict[str, dict[str, float]]:
    """Metrics per slice; slices under `min_slice_rows` keep their counts but no AUCs (too noisy)."""
    out: dict[str, dict[str, float]] = {}
    for spec in evaluation.slices:
        keys = slice_keys(table, spec)
        for key in sorted(set(keys)):
            mask = keys == key
            m = classification_metrics(scores[mask], labels[mask], threshold, evaluation.calibration_bins)
            if mask.sum() < evaluation.min_slice_rows:
                m = {k: (v if k in ("rows", "positive_rate") else float("nan")) for k, v in m.items()}
            out[key] = m
    return out


def overfit_gap(train: dict[str, float], valid: dict[str, float],
                history: list[dict[str, Any]]) -> dict[str, float]:
    """Train minus validation: a large positive AUC gap (or a valid loss rising while the train
    loss falls) means the model memorizes the training window."""
    last = history[-1] if history else {}
    best_epoch = min(history, key=lambda h: h["valid_loss"])["epoch"] if history else -1
    return {"auc_pr_gap": train["auc_pr"] - valid["auc_pr"],
            "auc_roc_gap": train["auc_roc"] - valid["auc_roc"],
            "loss_gap": float(last.get("valid_loss", math.nan)) - float(last.get("train_loss", math.nan)),
            "epochs_after_best_valid_loss": float(len(history) - 1 - best_epoch) if history else math.nan}


SLICE_KEYS = ("rows", "positive_rate", "auc_pr", "auc_roc", "recall_at_threshold")


def flat_slices(slices: dict[str, dict[str, float]], keys: tuple[str, ...] = SLICE_KEYS) -> dict[str, float]:
    """`slice.<name>.<metric>` for MLflow (which wants flat, finite-or-NaN floats)."""
    return {f"slice.{name}.{k}": v for name, m in slices.items() for k, v in m.items() if k in keys}


def _num(x: float) -> str:
    return "inf" if math.isinf(x) and x > 0 else "-inf" if math.isinf(x) else f"{x:g}"


def _safe(value: str) -> str:
    return re.sub(r"[^\w\-. /]", "_", value)
