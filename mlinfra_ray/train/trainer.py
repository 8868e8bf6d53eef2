"""The training driver: a TorchTrainer built from settings and a resource plan.

Run names are explicit. Ray Train silently resumes a run whose `RunConfig(name, storage_path)`
already exists, so `fit` generates a fresh name unless `trainer.run_name` is set, and an existing
name is only continued when `trainer.resume=true` says so — and only if the model it would resume
has the same shape (a run marker records it). A worker crash inside a run is handled by Ray Train's
`FailureConfig(max_failures)`: the restarted group resumes from the last checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs
import torch
from ray.train import UserCallback
from safetensors.torch import load_file

from mlinfra_ray.cluster import TrainPlan, log_level
from mlinfra_ray.settings import Settings, to_dict
from mlinfra_ray.train.loop import META, WEIGHTS, monitor_mode, train_loop_per_worker

log = logging.getLogger(__name__)
RUN_MARKER = "mlinfra_run.json"


class ResumeError(RuntimeError):
    """A run name that exists but was not (or cannot be) resumed; the message says what to do."""


class TrainingFailed(RuntimeError):
    """Training stopped after `max_failures` restarts; the last good checkpoint is kept."""


@dataclass
class TrainOutput:
    state_dict: dict[str, torch.Tensor]
    history: list[dict[str, float]]  # one row per epoch
    best: dict[str, float]  # metrics of the checkpoint whose weights are returned
    run_name: str
    checkpoint_path: str


class EpochProgress(UserCallback):
    """One compact line per epoch (printed by the Train controller, forwarded to the driver)."""

    def __init__(self, max_epochs: int, monitor: str) -> None:
        self.max_epochs, self.monitor = max_epochs, monitor

    def after_report(self, run_context: Any, metrics: list[dict[str, Any]], checkpoint: Any) -> None:
        m = metrics[0]
        print(f"epoch {m['epoch'] + 1}/{self.max_epochs}: train_loss={m['train_loss']:.4f} "
              f"valid_loss={m['valid_loss']:.4f} valid_auc_pr={m['valid_auc_pr']:.4f} "
              f"({m['epoch_s']:.1f} s)", flush=True)


def run_name(settings: Settings) -> str:
    if settings.trainer.run_name:
        return settings.trainer.run_name
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    return f"train-{stamp}-{uuid.uuid4().hex[:6]}"


def fit(datasets: dict[str, Any], n_features: int, pos_weight: float, settings: Settings,
        plan: TrainPlan, extra_config: dict[str, Any] | None = None,
        callbacks: list[Any] | None = None) -> TrainOutput:
    """Train with DDP on `plan.num_workers` workers; returns the best epoch's weights (by
    `trainer.monitor`) and the full per-epoch history."""
    from ray.train import CheckpointConfig, FailureConfig, LoggingConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    name, tr = run_name(settings), settings.trainer
    config = {"model": to_dict(settings.model), "trainer": to_dict(tr), "n_features": n_features,
              "pos_weight": pos_weight, "log_level": log_level(settings.ray), **(extra_config or {})}
    guard_run(settings.paths.storage, name, tr.resume, _fingerprint(config))
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config=config,
        scaling_config=ScalingConfig(num_workers=plan.num_workers, use_gpu=bool(plan.gpus_per_worker),
                                     resources_per_worker=plan.resources_per_worker()),
        run_config=RunConfig(
            name=name, storage_path=settings.paths.storage,
            checkpoint_config=CheckpointConfig(num_to_keep=tr.keep_checkpoints,
                                               checkpoint_score_attribute=tr.monitor,
                                               checkpoint_score_order=monitor_mode(tr.monitor)),
            failure_config=FailureConfig(max_failures=tr.max_failures),
            callbacks=[EpochProgress(tr.max_epochs, tr.monitor), *(callbacks or [])],
            logging_config=LoggingConfig(log_level=log_level(settings.ray))),
        datasets=datasets,
    )
    log.info("training run %s: %d workers x %s", name, plan.num_workers, plan.resources_per_worker())
    try:
        result = trainer.fit()
    except Exception as err:
        raise TrainingFailed(
            f"run {name} failed after {tr.max_failures} restart(s); its last checkpoint is kept under "
            f"{settings.paths.storage}/{name} (continue it with trainer.run_name={name} "
            f"trainer.resume=true). Cause: {failure_cause(err)}") from err
    best_ckpt, _ = pick_best(result.best_checkpoints, tr.monitor)
    return load_output(best_ckpt, result.checkpoint, name)


def failure_cause(err: BaseException) -> str:
    """The workers' own exceptions, one line each (Ray's message holds only a rank-0 snippet)."""
    failures = getattr(err, "worker_failures", None)
    if not failures:
        return _last_line(str(err))
    return "; ".join(f"rank {rank}: {_last_line(str(e)) or type(e).__name__}"
                     for rank, e in sorted(failures.items()))


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def pick_best(checkpoints: list[tuple[Any, dict]], monitor: str) -> tuple[Any, dict]:
    """The (checkpoint, metrics) pair with the best `monitor`; NaN scores never win."""
    sign = 1.0 if monitor_mode(monitor) == "min" else -1.0

    def key(item: tuple[Any, dict]) -> tuple[bool, float, int]:
        value = float(item[1].get(monitor, float("nan")))
        return (value != value, sign * value if value == value else 0.0, item[1]["epoch"])

    return min(checkpoints, key=key)


def load_output(best: Any, latest: Any, name: str) -> TrainOutput:
    """Weights of `best`, metrics of `best`, and the full history carried by `latest`."""
    with best.as_directory() as d:
        state_dict = load_file(Path(d) / WEIGHTS)
        meta = json.loads((Path(d) / META).read_text())
    with latest.as_directory() as d:
        history = json.loads((Path(d) / META).read_text())["state"]["history"]
    best_metrics = {k: v for k, v in meta.items() if k != "state"}
    return TrainOutput(state_dict, history, best_metrics, name, best.path)


def guard_run(storage: str, name: str, resume: bool, fingerprint: str) -> None:
    """Refuse to reuse an existing run by accident, or to resume one of a different shape."""
    fs, root = pafs.FileSystem.from_uri(storage)
    marker = f"{root}/{name}/{RUN_MARKER}"
    exists = fs.get_file_info(f"{root}/{name}").type != pafs.FileType.NotFound
    if exists and not resume:
        raise ResumeError(f"run {name!r} already exists under {storage}: pass trainer.resume=true to "
                          "continue it from its last checkpoint, or choose another trainer.run_name")
    if exists and fs.get_file_info(marker).type != pafs.FileType.NotFound:
        with fs.open_input_stream(marker) as fh:
            saved = json.loads(fh.read())["fingerprint"]
        if saved != fingerprint:
            raise ResumeError(f"run {name!r} was trained with another model/feature shape; "
                              "it cannot be resumed with this config")
        log.info("resuming run %s from its last checkpoint", name)
        return
    fs.create_dir(f"{root}/{name}")
    with fs.open_output_stream(marker) as fh:
        fh.write(json.dumps({"fingerprint": fingerprint, "created": datetime.now(UTC).isoformat()}).encode())


def _fingerprint(config: dict[str, Any]) -> str:
    """What must match for a checkpoint to load: the model family/shape and the input width."""
    blob = json.dumps({"model": config["model"], "n_features": config["n_features"]}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]
