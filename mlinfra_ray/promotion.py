"""The promotion gate: `challenger` becomes `champion` only if it wins on the same holdout.

Both bundles are loaded through the verifying loader (a tampered bundle is refused, never judged)
and score the latest window of the current clean snapshot. The challenger must pass sanity checks
(finite probabilities, calibration error under a bound, better than the positive-rate baseline)
and beat the champion's `promotion.metric` by `promotion.min_improvement`; with no champion yet,
the checks alone decide. Every decision and its numbers are recorded: as an MLflow run
(`mlinfra.kind=promotion_gate`, with `decision.json`) and as tags on the challenger's version.
`rollback` moves the champion alias back to the version it pointed at before.
"""

from __future__ import annotations

import json
import logging
import math
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from mlinfra_ray import registry
from mlinfra_ray.bundle import Bundle, load_bundle
from mlinfra_ray.evaluate import classification_metrics
from mlinfra_ray.settings import PromotionSettings, Settings

log = logging.getLogger(__name__)


class PromotionError(RuntimeError):
    """Nothing to judge (no challenger) or a bundle that cannot be judged."""


@dataclass
class GateDecision:
    promoted: bool
    reason: str
    metric: str
    margin: float  # the improvement required
    challenger: dict[str, float]  # holdout metrics
    champion: dict[str, float] | None
    checks: dict[str, bool]
    holdout_rows: int
    challenger_version: str = ""
    champion_version: str | None = None

    @property
    def improvement(self) -> float | None:
        return None if self.champion is None else self.challenger[self.metric] - self.champion[self.metric]


def judge(challenger: Bundle, champion: Bundle | None, holdout: pa.Table,
          promotion: PromotionSettings, calibration_bins: int = 10) -> GateDecision:
    """Score both bundles on `holdout` and decide (pure: no registry access)."""
    label = challenger.contract.label
    labels = holdout.column(label).to_numpy(zero_copy_only=False).astype(np.int64)
    scores = challenger.predict(holdout)
    finite = bool(np.isfinite(scores).all() and ((scores >= 0) & (scores <= 1)).all())
    ours = classification_metrics(np.nan_to_num(scores), labels, challenger.threshold, calibration_bins)
    theirs = None
    if champion is not None:
        theirs = classification_metrics(champion.predict(holdout), labels, champion.threshold, calibration_bins)
    checks = {"finite_outputs": finite,
              "calibration_error": ours["calibration_error"] <= promotion.max_calibration_error,
              "beats_positive_rate": ours["auc_pr"] > ours["positive_rate"]}
    metric, margin = promotion.metric, promotion.min_improvement
    decision = GateDecision(False, "", metric, margin, ours, theirs, checks, holdout.num_rows)
    failed = [k for k, ok in checks.items() if not ok]
    if failed:
        decision.reason = f"sanity checks failed: {failed}"
    elif theirs is None:
        decision.promoted, decision.reason = True, "no champion yet; sanity checks passed"
    elif math.isfinite(ours[metric]) and ours[metric] >= theirs[metric] + margin:
        decision.promoted = True
        decision.reason = f"{metric} {ours[metric]:.4f} >= champion {theirs[metric]:.4f} + {margin:g}"
    else:
        decision.reason = f"{metric} {ours[metric]:.4f} < champion {theirs[metric]:.4f} + {margin:g}"
    return decision


def promote(settings: Settings, holdout: pa.Table, challenger_version: str | None = None) -> GateDecision:
    """Run the gate for `challenger_version` (default: the challenger alias), move the champion
    alias if it passes, and record the decision."""
    tracking, promotion = settings.tracking, settings.tracking.promotion
    version = challenger_version or registry.alias_version(tracking, promotion.challenger_alias)
    if version is None:
        raise PromotionError(f"{tracking.registered_model}@{promotion.challenger_alias} is not set: "
                             "train or tune first (jobs/train.py, jobs/tune.py)")
    champion_version = registry.alias_version(tracking, tracking.alias)
    with tempfile.TemporaryDirectory() as tmp:
        challenger = load_bundle(registry.download_version(tracking, version, Path(tmp) / "challenger"))
        champion = None
        if champion_version is not None and champion_version != version:
            path = registry.download_version(tracking, champion_version, Path(tmp) / "champion")
            champion = load_bundle(path)
        decision = judge(challenger, champion, holdout, promotion,
                         settings.trainer.evaluation.calibration_bins)
    decision.challenger_version, decision.champion_version = version, champion_version
    if champion_version == version:  # nothing to decide; its original decision stays recorded
        decision.promoted, decision.reason = False, f"v{version} already is {tracking.alias}"
        return decision
    if decision.promoted:
        registry.set_alias(tracking, tracking.alias, version)
    record(settings, decision)
    log.info("gate v%s vs %s: %s (%s)", version, champion_version,
             "PROMOTED" if decision.promoted else "kept champion", decision.reason)
    return decision


def record(settings: Settings, decision: GateDecision) -> None:
    """The decision as an MLflow run (metrics + decision.json) and tags on the challenger version."""
    data = {**asdict(decision), "improvement": decision.improvement}
    metrics = {f"challenger.{k}": v for k, v in decision.challenger.items()}
    metrics.update({f"champion.{k}": v for k, v in (decision.champion or {}).items()})
    metrics["promoted"] = float(decision.promoted)
    tags = {"mlinfra.kind": "promotion_gate", "challenger_version": decision.challenger_version,
            "champion_version": decision.champion_version or "", "decision": _word(decision)}
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "decision.json").write_text(json.dumps(data, indent=2, default=str))
        run = registry.log_run(settings.tracking, f"gate-v{decision.challenger_version}",
                               {"metric": decision.metric, "min_improvement": decision.margin}, metrics,
                               tags, artifacts={"gate": tmp})
    registry.tag_version(settings.tracking, decision.challenger_version, {
        "gate.decision": _word(decision), "gate.reason": decision.reason, "gate.run_id": run.info.run_id,
        "gate.champion_version": decision.champion_version or "none",
        f"gate.{decision.metric}": f"{decision.challenger[decision.metric]:.6f}"})


def rollback(settings: Settings) -> tuple[str, str]:
    """Point the champion alias back at its previous version; recorded as an MLflow run."""
    current, previous = registry.rollback_alias(settings.tracking, settings.tracking.alias)
    registry.log_run(settings.tracking, f"rollback-v{current}-to-v{previous}", {}, {},
                     {"mlinfra.kind": "rollback", "from_version": current, "to_version": previous,
                      "alias": settings.tracking.alias})
    return current, previous


def summary(decision: GateDecision) -> dict[str, Any]:
    """A compact, JSON-ready view for job output."""
    m = decision.metric
    return {"decision": _word(decision), "reason": decision.reason,
            "challenger_version": decision.challenger_version, "champion_version": decision.champion_version,
            f"challenger_{m}": decision.challenger[m],
            f"champion_{m}": None if decision.champion is None else decision.champion[m],
            "challenger_calibration_error": decision.challenger["calibration_error"],
            "checks": decision.checks, "holdout_rows": decision.holdout_rows}


def _word(decision: GateDecision) -> str:
    if decision.champion_version == decision.challenger_version:
        return "unchanged"  # judged against itself: nothing to decide
    return "promoted" if decision.promoted else "rejected"
