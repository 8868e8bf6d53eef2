"""The Predictor deployment: batched scoring with the bundle behind the registry alias.

Hot swap without dropping requests: each replica polls the alias every `alias_poll_s` (a cheap
registry read). When it moved, the new version is downloaded, verified and loaded in a thread
while the old one keeps serving; then `self.model` is replaced in one assignment. A batch reads
`self.model` once, so it is scored by one version from start to end, and no request waits for a
load. `reconfigure` (Serve's user_config hook) changes the poll interval or pins a version — the
push path for `serve deploy` with a new user_config, e.g. a rollback to a known version.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from ray import serve

from mlinfra_ray.serve.handoff import DriftHandoff
from mlinfra_ray.serve.loader import Loader, alias_version, load_served_bundle
from mlinfra_ray.serve.online import OnlineLookup, make_online_lookup, resolve_kind
from mlinfra_ray.serve.scoring import ServedModel, score_batch

log = logging.getLogger(__name__)


@serve.deployment
class Predictor:
    """Scores batches of requests and hands the scored rows to the DriftMonitor (fire-and-forget,
    from here: no drift data travels back through the ingress)."""

    async def __init__(self, source: dict[str, Any], config: dict[str, Any],
                       loader: Loader = load_served_bundle, monitor: Any = None) -> None:
        import torch

        torch.set_num_threads(1)  # replicas share the cores; intra-op threads would oversubscribe
        self.source, self.loader = source, loader
        self.model = ServedModel.create(*loader(source))
        self.lookup_config = (config["online_store"], config["settings"])
        self.lookup_kind: str | None = None
        self.lookup_kind, self.lookup = self._lookup_for(self.model)
        self.new_drops = 0  # rows the hand-off dropped since the last response reported them
        self.handoff = None if monitor is None else DriftHandoff(
            monitor, int(config["max_pending"]), self._count_drop, fraction=float(config["drift_sample"]),
            max_rows_per_s=config.get("drift_max_rows_per_s"))  # which records the monitor sees
        self.poll_s, self.pinned = float(config["alias_poll_s"]), None
        self.swaps = 0
        self._swap_lock = asyncio.Lock()
        self._watcher: asyncio.Task | None = None
        self.predict_records.set_max_batch_size(config["max_batch_size"])
        self.predict_records.set_batch_wait_timeout_s(config["batch_wait_timeout_s"])
        self._ensure_watcher()

    async def reconfigure(self, user_config: dict[str, Any]) -> None:
        """user_config: {"alias_poll_s": float, "version": str | None} (a version pins the model)."""
        self.poll_s = float(user_config.get("alias_poll_s", self.poll_s))
        self.pinned = user_config.get("version")
        if self.pinned is not None:
            await self._switch_to(str(self.pinned))
        self._ensure_watcher()

    def _ensure_watcher(self) -> None:
        """Poll the alias in the background (on the replica's loop) unless serving a local bundle."""
        idle = self._watcher is None or self._watcher.done()
        if idle and self.poll_s > 0 and not self.source.get("bundle_path"):
            self._watcher = asyncio.get_running_loop().create_task(self._follow_alias())

    async def _follow_alias(self) -> None:
        while self.poll_s > 0:
            await asyncio.sleep(self.poll_s)
            if self.pinned is None:
                try:
                    await self.refresh()
                except Exception:  # noqa: BLE001 — a registry hiccup must not stop serving or polling
                    log.exception("alias poll failed; still serving version %s", self.model.ref["version"])

    async def refresh(self) -> dict[str, Any]:
        """Re-resolve the alias now and switch if it moved; returns the served model's ref."""
        version = await asyncio.to_thread(alias_version, self.source)
        if version is not None and version != self.model.ref["version"]:
            await self._switch_to(version)
        return self.model.ref

    async def _switch_to(self, version: str) -> None:
        async with self._swap_lock:  # one download at a time; a second poll finds it done
            if version == self.model.ref["version"]:
                return
            bundle, info = await asyncio.to_thread(self.loader, {**self.source, "version": version})
            model = ServedModel.create(bundle, info)
            kind, lookup = await asyncio.to_thread(self._lookup_for, model)  # views in or out
            old, self.model, self.lookup_kind, self.lookup = self.model.ref["version"], model, kind, lookup
            self.swaps += 1
            log.info("model version %s -> %s", old, version)

    def _lookup_for(self, model: ServedModel) -> tuple[str, OnlineLookup]:
        """The online lookup `model` needs; the current one is kept when the kind is unchanged."""
        configured, settings = self.lookup_config
        kind = resolve_kind(configured, model.bundle.feature_state)
        if self.lookup_kind == kind:
            return kind, self.lookup
        return kind, make_online_lookup(kind, settings)

    def model_info(self) -> dict[str, Any]:
        return {**self.model.describe(), "swaps": self.swaps}

    def _count_drop(self, n: int) -> None:
        self.new_drops += n

    @serve.batch(max_batch_size=64, batch_wait_timeout_s=0.01)  # real values set in __init__
    async def predict_records(self, requests: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
        """One table for the whole batch (one forward pass), split back per request. The first
        response carries the hand-off's state and new drops (the ingress owns the metrics)."""
        model = self.model  # one version for the whole batch, even if a swap lands meanwhile
        batch = score_batch(model, self.lookup, requests)
        if self.handoff is not None:
            self.handoff.send(batch.table, batch.scores, model.ref["version"])
            batch.results[0]["drift"] = {**self.handoff.state(), "new_drops": self.new_drops}
            self.new_drops = 0
        return batch.results
