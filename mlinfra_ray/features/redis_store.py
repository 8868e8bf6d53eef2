"""Redis online store: shared by every node of a cluster.

Keys are `<namespace>:<view>:<entity>` → the packed row (see online.encode_rows); the view's meta
is JSON under `<namespace>:_meta:<view>`. Batched reads are one MGET; writes are pipelined MSETs.
No Redis EXPIRE: staleness is judged against each request's event time (the view's TTL), the
same rule as the offline point-in-time join, and counted rather than silently evicted.
"""

from __future__ import annotations

import json
from typing import Any

from mlinfra_ray.features.online import OnlineStore, OnlineStoreError, check_view_name

CHUNK = 1000  # keys per MSET / UNLINK


class RedisStore(OnlineStore):
    def __init__(self, url: str, namespace: str = "mlinfra", timeout_s: float = 2.0) -> None:
        import redis

        self.namespace = namespace
        self._r = redis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
        try:
            self._r.ping()
        except redis.RedisError as err:
            raise OnlineStoreError(f"redis online store at {url} unreachable: {err}") from err

    def _key(self, view: str, entity: str) -> str:
        return f"{self.namespace}:{view}:{entity}"

    def write(self, view: str, keys: list[str], blobs: list[bytes]) -> None:
        check_view_name(view)
        pipe = self._r.pipeline(transaction=False)
        for i in range(0, len(keys), CHUNK):
            chunk = zip(keys[i:i + CHUNK], blobs[i:i + CHUNK], strict=True)
            pipe.mset({self._key(view, k): b for k, b in chunk})
        pipe.execute()

    def read(self, view: str, keys: list[str]) -> list[bytes | None]:
        return self._r.mget([self._key(view, k) for k in keys]) if keys else []

    def read_one(self, view: str, key: str) -> bytes | None:
        return self._r.get(self._key(view, key))

    def get_meta(self, view: str) -> dict[str, Any] | None:
        raw = self._r.get(f"{self.namespace}:_meta:{view}")
        return json.loads(raw) if raw else None

    def set_meta(self, view: str, meta: dict[str, Any]) -> None:
        self._r.set(f"{self.namespace}:_meta:{view}", json.dumps(meta))

    def _keys(self, view: str) -> Any:
        return self._r.scan_iter(match=f"{self.namespace}:{check_view_name(view)}:*", count=CHUNK)

    def clear(self, view: str) -> None:
        batch = []
        for key in self._keys(view):
            batch.append(key)
            if len(batch) >= CHUNK:
                self._r.unlink(*batch)
                batch = []
        if batch:
            self._r.unlink(*batch)
        self._r.delete(f"{self.namespace}:_meta:{view}")

    def count(self, view: str) -> int:
        return sum(1 for _ in self._keys(view))

    def close(self) -> None:
        self._r.close()
