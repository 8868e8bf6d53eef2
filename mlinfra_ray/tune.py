"""Hyperparameter sweeps: a Ray Tune search over the training driver.

Shape (Ray 2.60, Train V2 — see RAY_NOTES): each trial is a Tune *function* (the driver) that
builds its own TorchTrainer with `TuneReportCallback`, so every epoch's rank-0 metrics reach Tune
(ASHA stops weak trials on them). The search space is YAML (`conf/tune`: uniform, loguniform, int,
choice, grid over dotted config keys); the searcher is Optuna's TPE (Bayesian) or random.

Resources are planned in `mlinfra_ray.tune_plan` (one trial at a time on 2 cores). Each trial's
Train run is named `<sweep>-<trial id>`: unique per sweep, stable across `Tuner.restore`, so a
restored trial continues its Train run from its last checkpoint. A failed trial is reported, never
fatal; an interrupted sweep (Tune returns normally after SIGINT) raises instead of registering.
"""

from __future__ import annotations

import logging
import math
import uuid
from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa

from mlinfra_ray.cluster import TrainPlan, log_level
from mlinfra_ray.settings import Settings, build, to_dict
from mlinfra_ray.train.data import prepare
from mlinfra_ray.train.stage import TrainStageResult, finish
from mlinfra_ray.train.trainer import TrainOutput, fit, load_output, pick_best
from mlinfra_ray.tune_plan import SweepPlan, apply_params, check_sweep, plan_sweep, search_space

__all__ = ["SweepResult", "apply_params", "check_sweep", "describe", "plan_sweep", "run_sweep", "search_space",
           "trial_settings"]

log = logging.getLogger(__name__)


@dataclass
class SweepResult:
    name: str
    path: str
    trials: list[dict[str, Any]]  # id, status, params, best metric, epochs, error
    failed: list[dict[str, Any]]
    best_trial: str
    best_params: dict[str, Any]
    stage: TrainStageResult  # the best trial's bundle, registry version and gate decision


def sweep_name(settings: Settings) -> str:
    if settings.tune.name:
        return settings.tune.name
    return f"tune-{datetime.now(UTC).strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"


def trial_settings(base: dict[str, Any], params: dict[str, Any], run_name: str) -> Settings:
    """The settings one trial trains with: sampled params, its own resumable run name, and the
    sweep metric as the checkpoint/early-stopping monitor (so the best checkpoint is kept)."""
    data = apply_params(base, params)
    data["trainer"].update(run_name=run_name, resume=True, monitor=data["tune"]["metric"])
    return build(Settings, data)


def sweep_trial(params: dict[str, Any], *, base: dict[str, Any], sweep: str, datasets: dict[str, Any],
           n_features: int, pos_weight: float, plan: TrainPlan) -> None:
    """The Tune function trainable: one TorchTrainer run reporting every epoch to Tune."""
    from ray import tune
    from ray.tune.integration.ray_train import TuneReportCallback

    settings = trial_settings(base, params, f"{sweep}-{tune.get_context().get_trial_id()}")
    fit(datasets, n_features, pos_weight, settings, plan, callbacks=[TuneReportCallback()])


def run_sweep(settings: Settings, cluster: dict[str, float], snapshot_id: str,
              table: pa.Table | None = None) -> SweepResult:
    """Sweep (or restore an interrupted sweep), then bundle + register + gate the best trial.
    `table`: contract-typed rows to use instead of the lake's clean snapshot."""
    from ray import tune

    check_sweep(settings)
    name, data = sweep_name(settings), prepare(settings, table)
    plan = plan_sweep(settings, cluster)
    trainable = tune.with_resources(
        tune.with_parameters(sweep_trial, base=to_dict(settings), sweep=name, datasets=data.datasets,
                             n_features=data.n_features, pos_weight=data.pos_weight, plan=plan.train),
        {"CPU": plan.driver_cpus})
    path = f"{settings.paths.storage}/{name}"
    log.info("sweep %s: %d samples, %d concurrent, workers %s", name, settings.tune.num_samples,
             plan.max_concurrent, plan.train.resources_per_worker())
    print(f"sweep {name} (restore with tune.name={name} tune.resume=true)", flush=True)
    finished_before: set[str] = set()
    if settings.tune.resume:
        if not tune.Tuner.can_restore(path):
            raise FileNotFoundError(f"no sweep to restore at {path}")
        finished_before = _finished_trials(path)
        tuner = tune.Tuner.restore(path, trainable=trainable, resume_unfinished=True, resume_errored=False)
    else:
        tuner = _tuner(settings, trainable, name, plan)
    grid = tuner.fit()
    check_complete(grid, settings, name, finished_before)
    trials = [_trial_row(r, settings) for r in grid]
    failed = [t for t in trials if t["status"] == "ERROR"]
    for t in failed:
        log.warning("trial %s failed: %s", t["trial_id"], t["error"])
    ok = [r for r in grid if r.error is None and r.metrics_dataframe is not None]
    if not ok:
        raise RuntimeError(f"sweep {name}: all {len(trials)} trials failed; first error: "
                           f"{failed[0]['error'] if failed else 'none reported'}")
    best = grid.get_best_result(settings.tune.metric, settings.tune.mode, scope="all", filter_nan_and_inf=True)
    best_settings = trial_settings(to_dict(settings), best.config, f"{name}-{_trial_id(best)}")
    stage = finish(best_settings, data, best_output(best, best_settings), snapshot_id,
                   {"sweep": name, "trial_id": _trial_id(best)})
    return SweepResult(name, path, trials, failed, _trial_id(best), dict(best.config), stage)


def _tuner(settings: Settings, trainable: Any, name: str, plan: SweepPlan) -> Any:
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
    from ray.tune.search.basic_variant import BasicVariantGenerator

    t = settings.tune
    if t.searcher == "optuna":
        from ray.tune.search.optuna import OptunaSearch

        searcher: Any = OptunaSearch(seed=settings.seed)
    else:  # a SearchGenerator: it takes the concurrency cap itself (TuneConfig's would be ignored)
        searcher = BasicVariantGenerator(random_state=settings.seed, max_concurrent=plan.max_concurrent)
    scheduler = (ASHAScheduler(time_attr="training_iteration", max_t=settings.trainer.max_epochs,
                               grace_period=t.asha.grace_period, reduction_factor=t.asha.reduction_factor)
                 if t.scheduler == "asha" else FIFOScheduler())
    cap = plan.max_concurrent if t.searcher == "optuna" else None
    return tune.Tuner(
        trainable, param_space=search_space(t.space),
        tune_config=tune.TuneConfig(metric=t.metric, mode=t.mode, num_samples=t.num_samples,
                                    search_alg=searcher, scheduler=scheduler, max_concurrent_trials=cap,
                                    trial_dirname_creator=lambda trial: trial.trial_id),
        run_config=tune.RunConfig(name=name, storage_path=settings.paths.storage,
                                  failure_config=tune.FailureConfig(max_failures=t.max_trial_failures),
                                  verbose=1 if log_level(settings.ray) == "WARNING" else 2))


def best_output(result: Any, settings: Settings) -> TrainOutput:
    """The best epoch's weights of a trial, from the Train checkpoints its epochs reported."""
    from ray.train import Checkpoint

    df = result.metrics_dataframe
    rows = df[df["checkpoint_path"].notna()].to_dict("records")
    best_ckpt, _ = pick_best([(Checkpoint(r["checkpoint_path"]), r) for r in rows], settings.trainer.monitor)
    latest = Checkpoint(rows[-1]["checkpoint_path"])
    return load_output(best_ckpt, latest, settings.trainer.run_name or "")


def _trial_row(result: Any, settings: Settings) -> dict[str, Any]:
    df, metric = result.metrics_dataframe, settings.tune.metric
    values = [] if df is None or metric not in df else [v for v in df[metric] if not math.isnan(v)]
    best = (min if settings.tune.mode == "min" else max)(values) if values else None
    return {"trial_id": _trial_id(result), "status": "ERROR" if result.error else "TERMINATED",
            "params": dict(result.config or {}), f"best_{metric}": best,
            "epochs": 0 if df is None else len(df),
            "error": None if result.error is None else str(result.error)[-600:]}  # the cause is last


class SweepInterrupted(RuntimeError):
    """Tune stopped before every trial finished (Ctrl-C, SIGINT from a job runner); restorable."""


def _finished_trials(path: str) -> set[str]:
    """Trials an interrupted sweep had already finished, from its saved state. Their restored results
    cannot be trusted to say `done`: Tune marks a returning trial done in memory only, after its state
    may have been written (the restore test failed in CI that way)."""
    from ray.tune import ExperimentAnalysis

    return {t.trial_id for t in ExperimentAnalysis(path).trials if t.status in ("TERMINATED", "ERROR")}


def check_complete(grid: Any, settings: Settings, name: str, finished_before: Collection[str] = ()) -> None:
    """Tune returns normally after a SIGINT, marking the trials it cut off TERMINATED; only a trial that
    reached its end in this run carries `done` (set in memory), so an interrupted sweep is caught here
    and must not register a winner."""
    expected = settings.tune.num_samples * math.prod(
        len(p.values or []) for p in settings.tune.space.values() if p.type == "grid")
    unfinished = [r for r in grid if r.error is None and _trial_id(r) not in finished_before
                  and not (r.metrics or {}).get("done")]
    if unfinished or len(grid) < expected:
        raise SweepInterrupted(f"sweep {name} stopped with {len(grid) - len(unfinished)} of {expected} trials "
                               f"finished; restore it with tune.name={name} tune.resume=true")


def _trial_id(result: Any) -> str:
    return Path(result.path).name  # trial_dirname_creator names trial folders by trial id


def describe(result: SweepResult) -> str:
    """A few human-readable lines about a finished sweep."""
    stage, gate, m = result.stage, result.stage.gate or {}, result.stage.metrics
    lines = [f"sweep {result.name}: {len(result.trials)} trials, {len(result.failed)} failed "
             f"({', '.join(t['trial_id'] for t in result.failed) or 'none'})",
             f"best trial {result.best_trial}: {result.best_params}",
             f"test window: AUC-PR {m['auc_pr']:.3f} (baseline {m['positive_rate']:.3f}), "
             f"AUC-ROC {m['auc_roc']:.3f}, calibration error {m['calibration_error']:.4f}",
             f"registered {stage.registry['name']} v{stage.registry['version']} as '{stage.registry['alias']}'"
             + (f"; gate: {gate.get('decision')} ({gate.get('reason')})" if gate else "")]
    return "\n".join(lines)
