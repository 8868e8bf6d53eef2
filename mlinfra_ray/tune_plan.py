"""Sweep planning without Ray: the YAML search space as Tune domains, dotted overrides, the
sweep's own consistency checks, and how many trials fit at once.

Resources: a trial needs its driver's CPUs plus its workers'; `plan_sweep` caps concurrency so
that all running trials fit beside the CPUs kept for Ray Data — on 2 cores, one trial at a time,
instead of trials waiting forever for workers that cannot be placed.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from typing import Any

from mlinfra_ray.cluster import ResourceError, TrainPlan, plan_training
from mlinfra_ray.settings import ParamSpec, Settings, SettingsError
from mlinfra_ray.train.loop import monitor_mode


@dataclass(frozen=True)
class SweepPlan:
    max_concurrent: int
    driver_cpus: float
    train: TrainPlan  # what each trial's TorchTrainer gets


def plan_sweep(settings: Settings, cluster: dict[str, float]) -> SweepPlan:
    """Concurrent trials and per-trial worker CPUs so every running trial fits at once."""
    tune, base = settings.tune, plan_training(settings.scaling, settings.ray, cluster)
    budget = float(cluster.get("CPU", 0)) - settings.ray.data_reserved_cpus
    workers = max(base.num_workers, 1)
    per_trial = tune.driver_cpus + workers * base.cpus_per_worker
    want = tune.max_concurrent or max(1, int(budget // per_trial))
    cpus = min(base.cpus_per_worker, _quarter((budget / want - tune.driver_cpus) / workers))
    if cpus <= 0:
        raise ResourceError(f"{budget:g} CPUs for training cannot hold {want} trial(s) of a "
                            f"{tune.driver_cpus:g}-CPU driver + {workers} workers; lower "
                            "tune.max_concurrent or scaling.num_workers")
    fits = int((budget + 1e-9) // (tune.driver_cpus + workers * cpus))
    if base.gpus_per_worker:
        fits = min(fits, int(float(cluster.get("GPU", 0)) // (workers * base.gpus_per_worker)))
    concurrent = max(1, min(want, fits, tune.num_samples))
    return SweepPlan(concurrent, tune.driver_cpus, dataclasses.replace(base, cpus_per_worker=cpus))


def search_space(space: dict[str, ParamSpec]) -> dict[str, Any]:
    """YAML specs → Ray Tune domains (int bounds are inclusive)."""
    from ray import tune

    def domain(key: str, p: ParamSpec) -> Any:
        if p.type in ("choice", "grid"):
            if not p.values:
                raise SettingsError(f"tune.space.{key}: {p.type} needs `values`")
            return tune.choice(p.values) if p.type == "choice" else tune.grid_search(p.values)
        if p.low is None or p.high is None or p.low > p.high:
            raise SettingsError(f"tune.space.{key}: {p.type} needs low <= high")
        if p.type == "int":
            return tune.randint(int(p.low), int(p.high) + 1)
        return tune.loguniform(p.low, p.high) if p.type == "loguniform" else tune.uniform(p.low, p.high)

    return {key: domain(key, p) for key, p in space.items()}


def apply_params(base: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    """`base` with dotted keys set (`trainer.lr`, `model.hidden.0` indexes a list); unknown keys
    fail instead of being ignored."""
    out = copy.deepcopy(base)
    for dotted, value in params.items():
        node: Any = out
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        if isinstance(node, list):
            node[int(leaf)] = value
        elif leaf in node:
            node[leaf] = value
        else:
            raise SettingsError(f"tune.space: {dotted!r} is not a config key")
    return out


def check_sweep(settings: Settings) -> None:
    t = settings.tune
    if t.metric not in ("valid_loss", "valid_auc_pr") or monitor_mode(t.metric) != t.mode:
        raise SettingsError(f"tune.metric/mode: {t.metric}/{t.mode} must be valid_loss/min or valid_auc_pr/max "
                            "(the trainer checkpoints and early-stops on the same metric)")
    if t.searcher == "optuna" and any(p.type == "grid" for p in t.space.values()):
        raise SettingsError("tune.space: grid entries need tune.searcher=random (Optuna samples, no grids)")


def _quarter(cpus: float) -> float:
    """Quarter-CPU steps keep Ray's fractional resource bookkeeping exact."""
    return max(int(cpus * 4 + 1e-9) / 4, 0.0)
