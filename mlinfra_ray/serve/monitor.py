"""The DriftMonitor deployment: windows of served records tested off the request path.

One replica by design: drift is a property of *all* traffic, so one window sees every record.
It receives the scored rows as Arrow (contract columns plus any online features) and applies the
bundle's drift transform itself, in a thread, so scoring replicas spend nothing on it.
Each hand-off carries the version that scored the rows; rows of a new version (after a hot swap)
are tested against that version's reference, and the partly filled window of the old version is
discarded (counters stay cumulative, so /drift never goes backwards).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import Any

import numpy as np
import pyarrow as pa
from ray import serve

from mlinfra_ray.serve.loader import Loader, load_served_bundle
from mlinfra_ray.settings import DriftSettings, build

log = logging.getLogger(__name__)


def lower_priority(niceness: int) -> None:
    """Add `niceness` to every thread of this process.

    On Linux the nice value belongs to a thread: `os.nice` changes only the caller's, and threads
    inherit it only from the thread that creates them. A Serve replica receives, deserializes and
    runs requests on threads that exist before `__init__` (measured: the main and gRPC threads
    stayed at 0 while only the init thread and its executor ran at +19)."""
    try:
        threads = [int(t) for t in os.listdir("/proc/self/task")]
    except OSError:  # no /proc (not Linux): the per-process call is all there is
        os.nice(niceness)
        return
    for tid in threads:
        try:
            now = os.getpriority(os.PRIO_PROCESS, tid)
            os.setpriority(os.PRIO_PROCESS, tid, min(19, now + niceness))
        except OSError:  # the thread ended meanwhile
            continue


@serve.deployment(num_replicas=1)
class DriftMonitor:
    def __init__(self, source: dict[str, Any], settings: dict[str, Any],
                 loader: Loader = load_served_bundle) -> None:
        import torch

        from mlinfra_ray.drift import DriftWindow

        torch.set_num_threads(1)  # MMD permutations: one core, leave the rest to serving
        self.source, self.loader = source, loader
        self.settings = build(DriftSettings, settings)
        if self.settings.niceness > 0:  # this actor owns its process: all of it yields
            lower_priority(self.settings.niceness)
        self.window = DriftWindow(self.settings.window_size)
        self._install(*loader(source))
        self.last_check: float | None = None
        self.sampled_out = 0  # records the scoring replicas' sampling left out (drift.max_rows_per_s)
        self.online: dict[str, Any] | None = None
        self._lock = asyncio.Lock()  # one check at a time, so `latest` is the newest window

    def _install(self, bundle: Any, info: dict[str, Any]) -> None:
        from mlinfra_ray.drift import suite_from_bundle

        self.suite = suite_from_bundle(bundle, self.settings)
        self.feature_state = bundle.feature_state
        self.model = {"version": str(info["version"]), "alias": str(info["alias"])}

    async def observe(self, rows: pa.Table, scores: Any, version: str | None = None,
                      sampled_out: int = 0) -> None:
        """Buffer a hand-off of scored rows; check every window it fills. Called fire-and-forget
        by the scoring replicas, with the number of records their sampling left out."""
        from mlinfra_ray.features.transforms import drift_matrix

        self.sampled_out += sampled_out
        if rows.num_rows == 0:
            return
        async with self._lock:  # checks run in a thread: report() stays responsive meanwhile
            if version is not None and version != self.model["version"]:
                await self._switch(version)  # the transform below must be that version's
            matrix = await asyncio.to_thread(drift_matrix, self.feature_state, rows)
            data = np.column_stack([matrix, np.asarray(scores, np.float32)])
            for window in self.window.add(data):
                report = await asyncio.to_thread(self.suite.check, window[:, :-1], window[:, -1])
                self.window.record({**report, "model": self.model})
                self.last_check = time.time()
            if self.suite.online is not None:
                self.online = await asyncio.to_thread(self.suite.online.update, data[:, :-1])

    async def _switch(self, version: str) -> None:
        bundle, info = await asyncio.to_thread(self.loader, {**self.source, "version": version})
        dropped = self.window.clear_buffer()
        self._install(bundle, info)
        log.info("drift reference switched to version %s (%d buffered rows discarded)", version, dropped)

    async def report(self) -> dict[str, Any]:
        return {**self.window.state(), "rows_sampled_out": self.sampled_out, "columns": self.suite.names,
                "model": self.model, "last_check": self.last_check, "online": self.online}
