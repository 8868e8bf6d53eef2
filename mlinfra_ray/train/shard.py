"""A worker's view of its dataset shard: streamed from Ray Data, optionally kept on the device.

Streaming through `iter_torch_batches` costs a copy and a host→device transfer per batch every
epoch. When the shard fits, `cache=True` keeps the first pass's rows as two tensors on the
worker's device and later epochs slice them directly (the bench shows what that buys). Shuffling is
seeded by (seed, epoch, rank), so a run — and a run resumed after a crash — is reproducible.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch


class ShardBatches:
    """Batches of {"x": float32 [B, F], "y": float32 [B]} from one worker's dataset shard."""

    def __init__(self, shard: Any, batch_size: int, device: torch.device, *, cache: bool,
                 shuffle: bool, seed: int) -> None:
        self.shard, self.batch_size, self.device = shard, batch_size, device
        self.cache, self.shuffle, self.seed = cache, shuffle, seed
        self._x: torch.Tensor | None = None
        self._y: torch.Tensor | None = None

    @property
    def cached(self) -> bool:
        return self._x is not None

    def epoch(self, epoch: int) -> Iterator[dict[str, torch.Tensor]]:
        if self._x is not None and self._y is not None:
            yield from self._from_cache(epoch)
        else:
            yield from self._stream(epoch)

    def _stream(self, epoch: int) -> Iterator[dict[str, torch.Tensor]]:
        shuffle = {"local_shuffle_buffer_size": 8 * self.batch_size,
                   "local_shuffle_seed": self.seed + epoch} if self.shuffle else {}
        xs, ys = [], []
        for batch in self.shard.iter_torch_batches(batch_size=self.batch_size, dtypes=torch.float32,
                                                   device=self.device, **shuffle):
            if self.cache:
                xs.append(batch["x"])
                ys.append(batch["y"])
            yield batch
        if self.cache and xs:  # only a complete pass is kept
            self._x, self._y = torch.cat(xs), torch.cat(ys)

    def _from_cache(self, epoch: int) -> Iterator[dict[str, torch.Tensor]]:
        assert self._x is not None and self._y is not None
        n = len(self._y)
        if self.shuffle:
            gen = torch.Generator().manual_seed(self.seed + epoch)
            order = torch.randperm(n, generator=gen).to(self.device)
        else:
            order = torch.arange(n, device=self.device)
        for start in range(0, n, self.batch_size):
            idx = order[start:start + self.batch_size]
            yield {"x": self._x[idx], "y": self._y[idx]}
