"""Pure torch training and evaluation steps (no Ray): unit-testable on a tiny seeded model."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn


def train_epoch(model: nn.Module, optimizer: torch.optim.Optimizer, loss_fn: nn.Module,
                batches: Iterable[dict[str, torch.Tensor]], grad_clip: float) -> tuple[float, int]:
    """One pass over `batches`; returns (summed loss, rows seen)."""
    model.train()
    total, rows = 0.0, 0
    for batch in batches:
        x, y = batch["x"], batch["y"]  # x: [B, F], y: [B]
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), y)
        loss.backward()
        if grad_clip > 0:
            nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
        total += float(loss.detach()) * len(y)
        rows += len(y)
    return total, rows


def evaluate_loss(model: nn.Module, loss_fn: nn.Module,
                  batches: Iterable[dict[str, torch.Tensor]]) -> tuple[float, int]:
    """Summed loss and rows over `batches`, no gradients."""
    model.eval()
    total, rows = 0.0, 0
    with torch.no_grad():
        for batch in batches:
            total += float(loss_fn(model(batch["x"]), batch["y"])) * len(batch["y"])
            rows += len(batch["y"])
    return total, rows
