"""Platt scaling folded into the model's last linear layer.

Training with a positive-class weight (or oversampling) shifts every logit by roughly
log(pos_weight), so raw scores overstate fraud risk ~30x on a 3 % base rate. A 1-D logistic fit
`p = sigmoid(a * logit + b)` on the validation window corrects that; because the last layer is
linear, `a*(w·h + c) + b = (a*w)·h + (a*c + b)`, so the correction is written into its weights and
the bundle, batch evaluation and the Serve replica need no extra step. Ranking metrics are
unchanged (a > 0 is monotone); calibration error drops.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression

log = logging.getLogger(__name__)


def fit_platt(logits: np.ndarray, labels: np.ndarray) -> tuple[float, float] | None:
    """(a, b) of the validation-window fit, or None when it cannot be trusted."""
    if len(np.unique(labels)) < 2:
        return None
    lr = LogisticRegression(C=1e4, max_iter=1000).fit(logits.reshape(-1, 1).astype(np.float64), labels)
    a, b = float(lr.coef_[0, 0]), float(lr.intercept_[0])
    if not (np.isfinite(a) and np.isfinite(b)) or a <= 0:  # a <= 0 would flip the ranking
        return None
    return a, b


def logits_of(model: torch.nn.Module, features: np.ndarray) -> np.ndarray:
    model.eval()
    with torch.no_grad():
        return model(torch.from_numpy(features)).double().numpy()


def calibrate(model: torch.nn.Module, features: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Fit Platt scaling on (features, labels) and fold it into `model` in place.

    Returns the parameters (recorded in the bundle's metrics); {} if the model was left as is.
    """
    last = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    fitted = fit_platt(logits_of(model, features), labels) if last else None
    if fitted is None or last[-1].out_features != 1 or last[-1].bias is None:
        log.warning("calibration skipped (one-class window, degenerate fit or no final linear layer)")
        return {}
    a, b = fitted
    with torch.no_grad():
        last[-1].weight.mul_(a)
        last[-1].bias.mul_(a).add_(b)
    return {"platt_a": a, "platt_b": b}
