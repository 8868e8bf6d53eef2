"""The one place that starts or joins Ray, and plans how CPUs are split between Train and Data.

Why planning matters: Ray Train V2 reserves its workers' CPUs with Ray Data's resource manager, so
Data's budget is `cluster CPUs - training CPUs`. Two 1-CPU workers on a 2-CPU machine leave Data
zero CPUs and `map_batches` waits forever. The plan caps training at `CPUs - data_reserved_cpus`
and splits that between the workers (0.5 CPU each on 2 cores), which is logical bookkeeping only:
torch still uses the cores it is given.
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass, field

from mlinfra_ray.settings import RaySettings, ScalingSettings

log = logging.getLogger(__name__)
QUIET_ENV = {"RAY_DATA_DISABLE_PROGRESS_BARS": "1", "RAY_DATA_LOG_LEVEL": "WARNING", "RAY_DEDUP_LOGS": "1"}


class ResourceError(RuntimeError):
    """The cluster cannot fit what the config asks for; the message says what to change."""


@dataclass(frozen=True)
class TrainPlan:
    num_workers: int
    cpus_per_worker: float
    gpus_per_worker: float
    data_cpus: float
    custom: dict[str, float] = field(default_factory=dict)  # node-type resources (cluster.yaml)

    def resources_per_worker(self) -> dict[str, float]:
        res = {"CPU": self.cpus_per_worker}
        if self.gpus_per_worker:
            res["GPU"] = self.gpus_per_worker
        return {**res, **self.custom}


def connect(settings: RaySettings) -> dict[str, float]:
    """Start a local cluster or join `settings.address`; returns the cluster's resources."""
    import ray

    quiet = settings.quiet and not sys.stdout.isatty()
    if quiet:
        os.environ.update({k: os.environ.get(k, v) for k, v in QUIET_ENV.items()})
    if not ray.is_initialized():
        address = settings.address or os.environ.get("RAY_ADDRESS")
        if address:
            log.info("joining Ray cluster at %s", address)
            if settings.env_vars:
                log.warning("ray.env_vars (%s) only reach clusters this process starts: the cluster at %s "
                            "must have been started with them", ", ".join(settings.env_vars), address)
            ray.init(address=address, log_to_driver=True)
        else:
            log.info("starting a local Ray cluster (num_cpus=%s)", settings.num_cpus or "all")
            # Before ray.init: the raylet, the Serve controller and every worker inherit them.
            os.environ.update({k: os.environ.get(k, str(v)) for k, v in settings.env_vars.items()})
            ray.init(num_cpus=settings.num_cpus, include_dashboard=settings.include_dashboard,
                     runtime_env={"env_vars": QUIET_ENV if quiet else {}},
                     logging_config=ray.LoggingConfig(log_level=log_level(settings)))
    if quiet:
        from ray.data import DataContext

        DataContext.get_current().enable_progress_bars = False
        logging.getLogger("ray.data").setLevel(logging.WARNING)
    return dict(ray.cluster_resources())


def cluster_cpus() -> int:
    """CPUs of the connected cluster (at least 1): what per-CPU task sizing divides by."""
    import ray

    return max(1, int(ray.cluster_resources().get("CPU", 1)))


def plan_training(scaling: ScalingSettings, ray_settings: RaySettings,
                  cluster: dict[str, float]) -> TrainPlan:
    """CPUs (and GPUs) per worker such that Ray Data keeps `data_reserved_cpus` free."""
    total = float(cluster.get("CPU", 0))
    workers = max(scaling.num_workers, 1)
    budget = total - ray_settings.data_reserved_cpus
    if budget <= 0:
        raise ResourceError(f"cluster has {total:g} CPUs; ray.data_reserved_cpus="
                            f"{ray_settings.data_reserved_cpus:g} leaves nothing for training")
    cpus = scaling.cpus_per_worker if scaling.cpus_per_worker is not None else min(1.0, budget / workers)
    cpus = _round_down(cpus)
    if cpus <= 0 or cpus * workers > budget + 1e-9:
        raise ResourceError(
            f"{workers} workers x {cpus:g} CPU = {workers * cpus:g} CPUs, but only {budget:g} of "
            f"{total:g} can go to training (ray.data_reserved_cpus={ray_settings.data_reserved_cpus:g})."
            " Lower scaling.num_workers or scaling.cpus_per_worker.")
    gpus = scaling.gpus_per_worker if scaling.use_gpu else 0.0
    if gpus and gpus * workers > float(cluster.get("GPU", 0)) + 1e-9:
        raise ResourceError(f"{workers} workers x {gpus:g} GPU, but the cluster has "
                            f"{cluster.get('GPU', 0):g} GPUs")
    _check_custom(scaling.worker_resources, workers, cluster)
    return TrainPlan(workers if scaling.num_workers > 0 else 0, cpus, gpus, total - cpus * workers,
                     dict(scaling.worker_resources))


def _check_custom(resources: dict[str, float], workers: int, cluster: dict[str, float]) -> None:
    """A custom resource no node offers would leave the trainer waiting forever: fail now."""
    for name, amount in resources.items():
        if amount * workers > float(cluster.get(name, 0)) + 1e-9:
            raise ResourceError(f"{workers} workers x {amount:g} '{name}', but the cluster offers "
                                f"{cluster.get(name, 0):g} (nodes advertise it in cluster.yaml `resources`)")


def _round_down(cpus: float) -> float:
    """Quarter-CPU steps keep Ray's fractional resource bookkeeping exact."""
    return int(cpus * 4 + 1e-9) / 4


def log_level(settings: RaySettings) -> str:
    """Ray's library log level for this run: condensed when nobody watches a TTY."""
    return "WARNING" if settings.quiet and not sys.stdout.isatty() else "INFO"


def shutdown() -> None:
    import ray

    if ray.is_initialized():
        ray.shutdown()
