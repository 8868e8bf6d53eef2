"""Pure torch training and evaluation steps (no Ray): unit-testable on a tiny seeded model."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable

import torch
from torch import nn


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for `trainer.precision` on `device` (None: plain fp32).

    `auto` means bf16 on CUDA (no loss scaling needed, unlike fp16) and fp32 on CPU, where bf16
    matmuls are only fast on CPUs with AMX/AVX512-BF16.
    """
    if precision == "bf16" or (precision == "auto" and device.type == "cuda"):
        return torch.bfloat16
    return None


def _autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def train_epoch(model: nn.Module, optimizer: torch.optim.Optimizer, loss_fn: nn.Module,
                batches: Iterable[dict[str, torch.Tensor]], grad_clip: float,
                amp: torch.dtype | None = None) -> tuple[float, int]:
    """One pass over `batches`; returns (summed loss, rows seen).

    Under autocast the forward runs in `amp`; the loss is computed in fp32 (logits are upcast),
    so BCE stays stable, and the parameters and optimizer state stay fp32.
    """
    model.train()
    total = torch.zeros((), dtype=torch.float64)
    rows = 0
    for batch in batches:
        x, y = batch["x"], batch["y"]  # x: [B, F], y: [B]
        optimizer.zero_grad(set_to_none=True)
        with _autocast(x.device, amp):
            logits = model(x)
        loss = loss_fn(logits.float(), y)
        loss.backward()
        if grad_clip > 0:
            nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
        # Accumulate on the device: a float() per step would sync the GPU every batch.
        total = total.to(loss.device) + loss.detach().double() * len(y)
        rows += len(y)
    return float(total), rows


def evaluate_loss(model: nn.Module, loss_fn: nn.Module, batches: Iterable[dict[str, torch.Tensor]],
                  amp: torch.dtype | None = None) -> tuple[float, int]:
    """Summed loss and rows over `batches`, no gradients."""
    total, rows, _, _ = evaluate(model, loss_fn, batches, amp)
    return total, rows


def evaluate(model: nn.Module, loss_fn: nn.Module, batches: Iterable[dict[str, torch.Tensor]],
             amp: torch.dtype | None = None) -> tuple[float, int, torch.Tensor, torch.Tensor]:
    """Summed loss, rows, and the logits [N] and labels [N] (on CPU) for ranking metrics."""
    model.eval()
    total, rows = 0.0, 0
    logits_out, labels_out = [], []
    with torch.no_grad():
        for batch in batches:
            with _autocast(batch["x"].device, amp):
                logits = model(batch["x"])
            logits = logits.float()
            total += float(loss_fn(logits, batch["y"])) * len(batch["y"])
            rows += len(batch["y"])
            logits_out.append(logits.cpu())
            labels_out.append(batch["y"].cpu())
    empty = torch.zeros(0)
    return (total, rows, torch.cat(logits_out) if logits_out else empty,
            torch.cat(labels_out) if labels_out else empty)
