"""Evaluation on a later time window: ranking quality against the positive-rate baseline."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score


def choose_threshold(scores: np.ndarray, labels: np.ndarray) -> float:
    """The score threshold with the best F1 on the validation window (0.5 if undefined)."""
    if labels.sum() == 0:
        return 0.5
    precision, recall, thresholds = precision_recall_curve(labels, scores)
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
    return float(thresholds[int(np.argmax(f1[:-1]))])


def classification_metrics(scores: np.ndarray, labels: np.ndarray, threshold: float) -> dict[str, float]:
    """AUC-PR (average precision), AUC-ROC, and precision/recall at `threshold`.

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
    }
