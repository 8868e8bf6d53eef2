"""The training driver: a TorchTrainer built from settings and a resource plan.

Run names are explicit: Ray Train silently resumes a run whose `RunConfig(name, storage_path)`
already exists, so a fresh name is generated unless `trainer.run_name` asks to resume one.
"""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from ray.train import UserCallback
from safetensors.torch import load_file

from mlinfra_ray.cluster import TrainPlan, log_level
from mlinfra_ray.settings import Settings, to_dict
from mlinfra_ray.train.loop import META, WEIGHTS, train_loop_per_worker

log = logging.getLogger(__name__)


@dataclass
class TrainOutput:
    state_dict: dict[str, torch.Tensor]
    history: list[dict[str, float]]  # one row per epoch
    best: dict[str, float]  # metrics of the checkpoint whose weights are returned
    run_name: str
    checkpoint_path: str


class EpochProgress(UserCallback):
    """One compact line per epoch (printed by the Train controller, forwarded to the driver)."""

    def __init__(self, max_epochs: int) -> None:
        self.max_epochs = max_epochs

    def after_report(self, run_context: Any, metrics: list[dict[str, Any]], checkpoint: Any) -> None:
        m = metrics[0]
        print(f"epoch {m['epoch'] + 1}/{self.max_epochs}: train_loss={m['train_loss']:.4f} "
              f"valid_loss={m['valid_loss']:.4f}", flush=True)


def run_name(settings: Settings) -> str:
    if settings.trainer.run_name:
        return settings.trainer.run_name
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    return f"train-{stamp}-{uuid.uuid4().hex[:6]}"


def fit(datasets: dict[str, Any], n_features: int, pos_weight: float, settings: Settings,
        plan: TrainPlan, extra_config: dict[str, Any] | None = None) -> TrainOutput:
    """Train with DDP on `plan.num_workers` workers; returns the best epoch's weights."""
    from ray.train import CheckpointConfig, FailureConfig, LoggingConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    name = run_name(settings)
    config = {"model": to_dict(settings.model), "trainer": to_dict(settings.trainer),
              "n_features": n_features, "pos_weight": pos_weight, "log_level": log_level(settings.ray),
              **(extra_config or {})}
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config=config,
        scaling_config=ScalingConfig(num_workers=plan.num_workers, use_gpu=bool(plan.gpus_per_worker),
                                     resources_per_worker=plan.resources_per_worker()),
        run_config=RunConfig(
            name=name, storage_path=settings.paths.storage,
            checkpoint_config=CheckpointConfig(num_to_keep=2, checkpoint_score_attribute="valid_loss",
                                               checkpoint_score_order="min"),
            failure_config=FailureConfig(max_failures=settings.trainer.max_failures),
            callbacks=[EpochProgress(settings.trainer.max_epochs)],
            logging_config=LoggingConfig(log_level=log_level(settings.ray))),
        datasets=datasets,
    )
    log.info("training run %s: %d workers x %s", name, plan.num_workers, plan.resources_per_worker())
    result = trainer.fit()
    if result.error is not None:
        raise result.error
    best_ckpt, best_metrics = min(result.best_checkpoints, key=lambda cm: cm[1]["valid_loss"])
    with best_ckpt.as_directory() as d:
        state_dict = load_file(Path(d) / WEIGHTS)
    with result.checkpoint.as_directory() as d:  # the latest checkpoint carries the full history
        history = json.loads((Path(d) / META).read_text())["state"]["history"]
    return TrainOutput(state_dict, history, dict(best_metrics), name, best_ckpt.path)
