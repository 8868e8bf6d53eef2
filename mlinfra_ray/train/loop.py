"""The per-worker training loop run by every Ray Train worker (DDP when there are several).

Receives plain data only (the config dict). Checkpoints every epoch as data — safetensors weights,
the optimizer state saved for `weights_only` loading, and a JSON file with the epoch, metrics and
loop state (best score, patience counter, per-epoch history) — and resumes from
`ray.train.get_checkpoint()`, so a restarted worker group (or a resubmitted run with the same name)
continues at the next epoch instead of epoch 1 (ray#46814), and the history keeps one row per epoch.
"""

from __future__ import annotations

import json
import logging
import math
import random
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file
from sklearn.metrics import average_precision_score

from mlinfra_ray.models import build_model
from mlinfra_ray.train.shard import ShardBatches
from mlinfra_ray.train.steps import autocast_dtype, evaluate, train_epoch

WEIGHTS, OPTIMIZER, META = "model.safetensors", "optimizer.pt", "meta.json"


class InjectedFailure(RuntimeError):
    """Raised by `trainer.fail_at_epoch` (fault-injection tests)."""


def monitor_mode(monitor: str) -> str:
    return "min" if monitor.endswith("loss") else "max"


def train_loop_per_worker(config: dict[str, Any]) -> None:
    import ray.train
    import ray.train.torch

    trainer, ctx = config["trainer"], ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    _quiet_report_logs(config.get("log_level", "INFO"))
    _seed_everything(trainer["seed"] + rank)
    device = ray.train.torch.get_device()
    model = ray.train.torch.prepare_model(build_model(config["model"], config["n_features"]))
    optimizer = torch.optim.AdamW(model.parameters(), lr=trainer["lr"], weight_decay=trainer["weight_decay"])
    loss_fn = torch.nn.BCEWithLogitsLoss(pos_weight=torch.tensor(config["pos_weight"], device=device))
    state = _restore(ray.train.get_checkpoint(), model, optimizer, trainer["monitor"])
    amp = autocast_dtype(trainer["precision"], device)
    seed = trainer["seed"] * 1009 + 7919 * rank
    train = ShardBatches(ray.train.get_dataset_shard("train"), trainer["batch_size"], device,
                         cache=trainer["cache_shard"], shuffle=trainer["shuffle"], seed=seed)
    valid = ShardBatches(ray.train.get_dataset_shard("valid"), trainer["batch_size"], device,
                         cache=trainer["cache_shard"], shuffle=False, seed=seed)

    for epoch in range(state["epoch"] + 1, trainer["max_epochs"]):
        _maybe_fail(trainer.get("fail_at_epoch"), epoch, state, rank, world)
        started, streamed = time.perf_counter(), not train.cached
        total, rows = train_epoch(model, optimizer, loss_fn, train.epoch(epoch), trainer["grad_clip"], amp)
        train_s = time.perf_counter() - started
        train_loss, train_rows = _reduce(total, rows)
        metrics = {"epoch": epoch, "train_loss": train_loss, **_validate(model, loss_fn, valid, epoch, amp),
                   "train_s": train_s, "epoch_s": time.perf_counter() - started,
                   "train_rows": train_rows, "streamed": float(streamed)}
        state = _advance(state, metrics, trainer["monitor"])
        metrics["best_" + trainer["monitor"]] = float("nan") if state["best"] is None else state["best"]
        state["history"] = [*state["history"], metrics]  # travels in every checkpoint
        _report(metrics, model, optimizer, state, rank == 0)
        if state["stale"] >= trainer["patience"]:
            break


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _maybe_fail(fail_at: int | None, epoch: int, state: dict, rank: int, world: int) -> None:
    """One worker (the last rank) crashes at `fail_at`; a resumed group does not crash again."""
    if fail_at == epoch and not state["resumed"] and rank == world - 1:
        raise InjectedFailure(f"injected failure at epoch {epoch} on rank {rank}")


def _validate(model: torch.nn.Module, loss_fn: torch.nn.Module, valid: ShardBatches, epoch: int,
              amp: torch.dtype | None) -> dict[str, float]:
    total, rows, logits, labels = evaluate(model, loss_fn, valid.epoch(epoch), amp)
    scores, labels = _gather(torch.sigmoid(logits).numpy(), labels.numpy())
    both = len(np.unique(labels)) == 2
    return {"valid_loss": _reduce(total, rows)[0],
            "valid_auc_pr": float(average_precision_score(labels, scores)) if both else float("nan")}


def _advance(state: dict, metrics: dict, monitor: str) -> dict:
    """Best score and patience counter after this epoch (identical on every rank)."""
    value, best = metrics[monitor], state["best"]
    sign = 1.0 if monitor_mode(monitor) == "min" else -1.0
    improved = not math.isnan(value) and (best is None or sign * (value - best) < -1e-6)
    return {**state, "epoch": metrics["epoch"], "best": value if improved else best,
            "stale": 0 if improved else state["stale"] + 1}


def _quiet_report_logs(level: str) -> None:
    """Ray Train logs every report at INFO through a logger named by file path (not `ray.train`),
    which RunConfig(logging_config) does not reach; match its level to the run's."""
    from ray.train.v2._internal.execution import context

    logging.getLogger(context.__file__).setLevel(level)


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def _reduce(total: float, rows: int) -> tuple[float, float]:
    """Row-weighted mean and row count over all workers (identical on every rank, so decisions
    agree)."""
    t = torch.tensor([total, float(rows)], dtype=torch.float64)
    if _distributed():
        t = t.to("cuda" if dist.get_backend() == "nccl" else "cpu")
        dist.all_reduce(t)
    return float(t[0] / max(t[1], 1.0)), float(t[1])


def _gather(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every worker's validation scores, on every worker (AUC-PR is not a mean of shard AUCs)."""
    if not _distributed():
        return scores, labels
    parts: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(parts, (scores, labels))
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def _report(metrics: dict, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
            state: dict, is_rank0: bool) -> None:
    import ray.train

    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = None
        if is_rank0:  # one copy of the weights; every rank still reports its metrics
            inner = model.module if hasattr(model, "module") else model
            save_file({k: v.detach().cpu().contiguous() for k, v in inner.state_dict().items()},
                      Path(tmp) / WEIGHTS)
            torch.save(optimizer.state_dict(), Path(tmp) / OPTIMIZER)
            Path(tmp, META).write_text(json.dumps({**metrics, "state": state}))
            checkpoint = ray.train.Checkpoint.from_directory(tmp)
        ray.train.report(metrics, checkpoint=checkpoint)


def _restore(checkpoint: Any, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
             monitor: str) -> dict:
    state = {"epoch": -1, "best": None, "stale": 0, "resumed": False, "restarts": 0, "history": [],
             "monitor": monitor}
    if checkpoint is None:
        return state
    with checkpoint.as_directory() as d:
        inner = model.module if hasattr(model, "module") else model
        inner.load_state_dict(load_file(Path(d) / WEIGHTS))
        optimizer.load_state_dict(torch.load(Path(d) / OPTIMIZER, weights_only=True))
        saved = json.loads(Path(d, META).read_text())["state"]
    if saved.get("monitor") != monitor:  # a different early-stopping metric: its best is not ours
        saved = {**saved, "best": None, "stale": 0, "monitor": monitor}
    return {**saved, "resumed": True, "restarts": saved.get("restarts", 0) + 1}
