"""The per-worker training loop run by every Ray Train worker (DDP when there are several).

Receives plain data only (the config dict). Checkpoints every epoch as data — safetensors weights
plus a JSON file with the epoch and metrics, and the optimizer state saved for `weights_only`
loading — and resumes from `ray.train.get_checkpoint()` so a restarted worker group continues
where it stopped instead of from epoch 1.
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file

from mlinfra_ray.models import build_model
from mlinfra_ray.train.steps import evaluate_loss, train_epoch

WEIGHTS, OPTIMIZER, META = "model.safetensors", "optimizer.pt", "meta.json"


def train_loop_per_worker(config: dict[str, Any]) -> None:
    import ray.train
    import ray.train.torch

    trainer, ctx = config["trainer"], ray.train.get_context()
    _quiet_report_logs(config.get("log_level", "INFO"))
    torch.manual_seed(trainer["seed"] + ctx.get_world_rank())
    model = ray.train.torch.prepare_model(build_model(config["model"], config["n_features"]))
    optimizer = torch.optim.AdamW(model.parameters(), lr=trainer["lr"], weight_decay=trainer["weight_decay"])
    loss_fn = torch.nn.BCEWithLogitsLoss(pos_weight=torch.tensor(config["pos_weight"]))
    state = _restore(ray.train.get_checkpoint(), model, optimizer)
    train_shard = ray.train.get_dataset_shard("train")
    valid_shard = ray.train.get_dataset_shard("valid")
    device = ray.train.torch.get_device()
    batches = {"batch_size": trainer["batch_size"], "dtypes": torch.float32, "device": device}

    for epoch in range(state["epoch"] + 1, trainer["max_epochs"]):
        if config.get("fail_at_epoch") == epoch and not state["resumed"]:
            raise RuntimeError(f"injected failure at epoch {epoch}")  # fault-injection tests
        train_loss = _mean(*train_epoch(model, optimizer, loss_fn, train_shard.iter_torch_batches(**batches),
                                        trainer["grad_clip"]))
        valid_loss = _mean(*evaluate_loss(model, loss_fn, valid_shard.iter_torch_batches(**batches)))
        improved = valid_loss < state["best"] - 1e-6
        state.update(epoch=epoch, best=min(valid_loss, state["best"]),
                     stale=0 if improved else state["stale"] + 1)
        metrics = {"epoch": epoch, "train_loss": train_loss, "valid_loss": valid_loss,
                   "best_valid_loss": state["best"]}
        state["history"] = [*state["history"], metrics]  # travels in every checkpoint
        _report(metrics, model, optimizer, state, ctx.get_world_rank() == 0)
        if state["stale"] >= trainer["patience"]:
            break


def _quiet_report_logs(level: str) -> None:
    """Ray Train logs every report at INFO through a logger named by file path (not `ray.train`),
    which RunConfig(logging_config) does not reach; match its level to the run's."""
    from ray.train.v2._internal.execution import context

    logging.getLogger(context.__file__).setLevel(level)


def _mean(total: float, rows: int) -> float:
    """Row-weighted mean across all workers (identical on every rank, so decisions agree)."""
    t = torch.tensor([total, float(rows)], dtype=torch.float64)
    if dist.is_available() and dist.is_initialized():
        t = t.to("cuda" if dist.get_backend() == "nccl" else "cpu")
        dist.all_reduce(t)
    return float(t[0] / max(t[1], 1.0))


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


def _restore(checkpoint: Any, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    state = {"epoch": -1, "best": float("inf"), "stale": 0, "resumed": False, "history": []}
    if checkpoint is None:
        return state
    with checkpoint.as_directory() as d:
        inner = model.module if hasattr(model, "module") else model
        inner.load_state_dict(load_file(Path(d) / WEIGHTS))
        optimizer.load_state_dict(torch.load(Path(d) / OPTIMIZER, weights_only=True))
        saved = json.loads(Path(d, META).read_text())["state"]
    return {**saved, "resumed": True}
