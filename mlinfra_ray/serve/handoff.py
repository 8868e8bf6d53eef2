"""Fire-and-forget delivery of scored rows from the ingress to the DriftMonitor."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


class DriftHandoff:
    """`send` returns at once: the request never awaits drift work.

    Each delivery is an asyncio task kept in `pending` (the loop holds tasks only weakly; an
    unreferenced task can be collected mid-flight) and removed when done. Beyond `max_pending` in
    flight, rows are dropped and counted rather than queued without bound behind a slow monitor.
    """

    def __init__(self, monitor: Any, max_pending: int, on_drop: Callable[[int], Any]) -> None:
        self.monitor, self.max_pending, self.on_drop = monitor, max_pending, on_drop
        self.pending: set[asyncio.Task] = set()
        self.dropped = 0  # records never checked for drift

    def send(self, rows: np.ndarray, scores: Any = None, version: str | None = None) -> None:
        if len(self.pending) >= self.max_pending:
            self._drop(len(rows))
            return
        task = asyncio.get_running_loop().create_task(self._deliver(rows, scores, version))
        self.pending.add(task)
        task.add_done_callback(self.pending.discard)

    async def _deliver(self, rows: np.ndarray, scores: Any, version: str | None) -> None:
        try:
            await self.monitor.observe.remote(rows, scores, version)
        except Exception:  # noqa: BLE001 — drift must never affect serving; count and log it
            self._drop(len(rows))
            log.exception("drift hand-off failed")

    def _drop(self, n: int) -> None:
        self.dropped += n
        self.on_drop(n)
