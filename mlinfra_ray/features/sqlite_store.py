"""SQLite online store: the embedded default (one file, no service).

One table per view, `(entity TEXT PRIMARY KEY, v BLOB) WITHOUT ROWID`, in WAL mode so Serve
replicas keep reading while a materialization writes. Batched reads are one `IN (...)` query per
chunk of keys; writes are one transaction.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path
from typing import Any

from mlinfra_ray.features.online import OnlineStore, check_view_name

CHUNK = 500  # bound parameters per statement, well under SQLite's limit


class SQLiteStore(OnlineStore):
    def __init__(self, path: str, timeout_s: float = 2.0) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        # One connection shared by the threads of a replica, serialized by a lock.
        self._db = sqlite3.connect(path, timeout=timeout_s, check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        self._tables: set[str] = set()  # created by this connection (one CREATE per view, not per read)
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("CREATE TABLE IF NOT EXISTS _meta (view TEXT PRIMARY KEY, meta TEXT NOT NULL)")

    def _table(self, view: str) -> str:
        name = f"view_{check_view_name(view)}"
        if name not in self._tables:
            self._db.execute(f"CREATE TABLE IF NOT EXISTS {name} (entity TEXT PRIMARY KEY, v BLOB NOT NULL) "
                             "WITHOUT ROWID")
            self._tables.add(name)
        return name

    def write(self, view: str, keys: list[str], blobs: list[bytes]) -> None:
        with self._lock:
            table = self._table(view)
            self._db.execute("BEGIN")
            try:
                self._db.executemany(f"INSERT OR REPLACE INTO {table} (entity, v) VALUES (?, ?)",
                                     zip(keys, blobs, strict=True))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def read(self, view: str, keys: list[str]) -> list[bytes | None]:
        found: dict[str, bytes] = {}
        with self._lock:
            table = self._table(view)
            for i in range(0, len(keys), CHUNK):
                chunk = keys[i:i + CHUNK]
                marks = ",".join("?" * len(chunk))
                found.update(self._db.execute(f"SELECT entity, v FROM {table} WHERE entity IN ({marks})",
                                              chunk).fetchall())
        return [found.get(k) for k in keys]

    def read_one(self, view: str, key: str) -> bytes | None:
        with self._lock:
            row = self._db.execute(f"SELECT v FROM {self._table(view)} WHERE entity = ?", (key,)).fetchone()
        return row[0] if row else None

    def get_meta(self, view: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._db.execute("SELECT meta FROM _meta WHERE view = ?", (view,)).fetchone()
        return json.loads(row[0]) if row else None

    def set_meta(self, view: str, meta: dict[str, Any]) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO _meta (view, meta) VALUES (?, ?)",
                             (view, json.dumps(meta)))

    def clear(self, view: str) -> None:
        with self._lock:
            self._db.execute(f"DELETE FROM {self._table(view)}")  # other connections keep their table
            self._db.execute("DELETE FROM _meta WHERE view = ?", (view,))

    def count(self, view: str) -> int:
        with self._lock:
            return int(self._db.execute(f"SELECT COUNT(*) FROM {self._table(view)}").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()
