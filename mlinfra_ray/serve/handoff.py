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

    Rows are buffered and shipped in one call per `flush_rows` records or `flush_s` seconds,
    whichever comes first (a remote call per request would cost the ingress and the monitor more
    than the rows themselves); rows of different model versions are never mixed in one delivery.
    Each delivery is an asyncio task kept in `pending` (the loop holds tasks only weakly; an
    unreferenced task can be collected mid-flight) and removed when done. Beyond `max_pending`
    deliveries in flight, rows are dropped and counted rather than queued without bound behind a
    slow monitor.
    """

    def __init__(self, monitor: Any, max_pending: int, on_drop: Callable[[int], Any],
                 flush_rows: int = 64, flush_s: float = 0.05) -> None:
        self.monitor, self.max_pending, self.on_drop = monitor, max_pending, on_drop
        self.flush_rows, self.flush_s = flush_rows, flush_s
        self.pending: set[asyncio.Task] = set()
        self.dropped = 0  # records never checked for drift
        self._rows: list[np.ndarray] = []
        self._scores: list[np.ndarray] = []
        self._version: str | None = None
        self._timer: asyncio.TimerHandle | None = None

    @property
    def buffered(self) -> int:
        return sum(len(r) for r in self._rows)

    def send(self, rows: np.ndarray, scores: Any, version: str | None = None) -> None:
        if self._rows and version != self._version:
            self.flush()  # a hot swap: the old version's rows go out alone
        self._rows.append(np.asarray(rows))
        self._scores.append(np.asarray(scores, dtype=np.float64))
        self._version = version
        if self.buffered >= self.flush_rows:
            self.flush()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.flush_s, self.flush)

    def flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._rows:
            return
        rows, scores = np.concatenate(self._rows), np.concatenate(self._scores)
        self._rows, self._scores = [], []
        if len(self.pending) >= self.max_pending:
            self._drop(len(rows))
            return
        task = asyncio.get_running_loop().create_task(self._deliver(rows, scores, self._version))
        self.pending.add(task)
        task.add_done_callback(self.pending.discard)

    async def _deliver(self, rows: np.ndarray, scores: np.ndarray, version: str | None) -> None:
        try:
            await self.monitor.observe.remote(rows, scores, version)
        except Exception:  # noqa: BLE001 — drift must never affect serving; count and log it
            self._drop(len(rows))
            log.exception("drift hand-off failed")

    def _drop(self, n: int) -> None:
        self.dropped += n
        self.on_drop(n)
