"""Embedded online store: the Redis layout in one SQLite file, for zero-setup projects and demos.

Same keys and values as Redis (``encoding.py``), the same "an older value never overwrites a
newer one" rule — here an upsert guarded by ``WHERE (excluded.event, excluded.created) >=
(stored)`` — and the same TTL at read. Expired rows are purged at the end of each write.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from feature_layer.errors import OnlineStoreError
from feature_layer.online.encoding import EncodedBatch
from feature_layer.online.store import OnlineStore, WriteCounts, Writer

_SCHEMA = """
CREATE TABLE IF NOT EXISTS online_values (
    key BLOB PRIMARY KEY,
    value BLOB NOT NULL,
    event_us INTEGER NOT NULL,
    created_us INTEGER NOT NULL,
    expires_us INTEGER
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS online_markers (
    name TEXT PRIMARY KEY,
    value BLOB NOT NULL
) WITHOUT ROWID;
"""
_UPSERT = """
INSERT INTO online_values (key, value, event_us, created_us, expires_us) VALUES (?, ?, ?, ?, ?)
ON CONFLICT(key) DO UPDATE SET value = excluded.value, event_us = excluded.event_us,
    created_us = excluded.created_us, expires_us = excluded.expires_us
WHERE excluded.event_us > online_values.event_us
   OR (excluded.event_us = online_values.event_us AND excluded.created_us >= online_values.created_us)
"""
_FORCE = """
INSERT INTO online_values (key, value, event_us, created_us, expires_us) VALUES (?, ?, ?, ?, ?)
ON CONFLICT(key) DO UPDATE SET value = excluded.value, event_us = excluded.event_us,
    created_us = excluded.created_us, expires_us = excluded.expires_us
"""
_MAX_VARS = 30000


class SqliteOnlineStore(OnlineStore):
    kind = "sqlite"

    def __init__(self, path: str | Path, namespace: str) -> None:
        super().__init__(namespace)
        self.path = Path(path)
        self._lock = threading.RLock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise OnlineStoreError(
                f"Cannot open the embedded online store at {self.path}: {exc}.",
                fix="check that the folder is writable, or set online_store.path in feature_layer.yml.",
            ) from exc

    def describe(self) -> str:
        return f"sqlite:///{self.path}"

    def get_marker(self, name: str) -> bytes | None:
        with self._lock:
            row = self._db.execute(
                "SELECT value FROM online_markers WHERE name = ?", (f"{self.namespace}:{name}",)
            ).fetchone()
        return bytes(row[0]) if row else None

    def set_marker(self, name: str, value: bytes) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO online_markers (name, value) VALUES (?, ?) "
                "ON CONFLICT(name) DO UPDATE SET value = excluded.value",
                (f"{self.namespace}:{name}", value),
            )

    def delete_marker(self, name: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM online_markers WHERE name = ?", (f"{self.namespace}:{name}",))

    def ping(self) -> None:
        with self._lock:
            self._db.execute("SELECT 1").fetchone()

    def read(self, keys: Sequence[bytes]) -> list[bytes | None]:
        found: dict[bytes, bytes] = {}
        now = self.clock()
        with self._lock:
            for start in range(0, len(keys), _MAX_VARS):
                chunk = keys[start : start + _MAX_VARS]
                marks = ",".join("?" * len(chunk))
                rows = self._db.execute(
                    f"SELECT key, value FROM online_values WHERE key IN ({marks}) AND (expires_us IS NULL OR expires_us >= ?)",
                    [*chunk, now],
                ).fetchall()
                found.update(rows)
        return [found.get(k) for k in keys]

    def writer(self, *, ttl_us: int | None, force: bool = False) -> Writer:
        return SqliteWriter(self, ttl_us, force=force)

    def scan_prefix(self, prefix: bytes, *, count: int = 5000) -> Iterator[list[bytes]]:
        upper = prefix[:-1] + bytes([prefix[-1] + 1])
        op, lower = ">=", prefix
        while True:
            with self._lock:
                rows = self._db.execute(
                    f"SELECT key FROM online_values WHERE key {op} ? AND key < ? ORDER BY key LIMIT ?",
                    (lower, upper, count),
                ).fetchall()
            if not rows:
                return
            keys = [bytes(r[0]) for r in rows]
            yield keys
            op, lower = ">", keys[-1]

    def delete_keys(self, keys: Sequence[bytes]) -> int:
        deleted = 0
        with self._lock:
            for start in range(0, len(keys), _MAX_VARS):
                chunk = keys[start : start + _MAX_VARS]
                cur = self._db.execute(
                    f"DELETE FROM online_values WHERE key IN ({','.join('?' * len(chunk))})", list(chunk)
                )
                deleted += cur.rowcount
        return deleted

    def delete_prefix(self, prefix: bytes) -> int:
        upper = prefix[:-1] + bytes([prefix[-1] + 1])
        with self._lock:
            cur = self._db.execute("DELETE FROM online_values WHERE key >= ? AND key < ?", (prefix, upper))
            return cur.rowcount

    def close(self) -> None:
        with self._lock:
            self._db.close()


class SqliteWriter(Writer):
    def __init__(self, store: SqliteOnlineStore, ttl_us: int | None, *, force: bool = False) -> None:
        super().__init__(ttl_us, force=force)
        self.store = store

    def write(self, batch: EncodedBatch) -> None:
        n = len(batch)
        if n == 0:
            return
        now = self.store.clock()
        ev = batch.event_us
        if self.ttl_us:
            expires = ev + self.ttl_us
            live = expires >= now
            self.counts.expired += int((~live).sum())
        else:
            expires = np.full(n, None, dtype=object)
            live = np.ones(n, dtype=bool)
        rows = [
            (k, v, int(e), int(c), None if x is None else int(x))
            for k, v, e, c, x, ok in zip(
                batch.keys.to_pylist(),
                batch.values.to_pylist(),
                ev.tolist(),
                batch.created_us.tolist(),
                expires.tolist(),
                live.tolist(),
                strict=False,
            )
            if ok
        ]
        db = self.store._db
        try:
            with self.store._lock:
                db.execute("BEGIN IMMEDIATE")
                if self.force and not live.all():  # a full refresh: an expired value removes the key
                    dead = [k for k, ok in zip(batch.keys.to_pylist(), live.tolist(), strict=True) if not ok]
                    db.executemany("DELETE FROM online_values WHERE key = ?", [(k,) for k in dead])
                before = db.total_changes
                db.executemany(_FORCE if self.force else _UPSERT, rows)
                changed = db.total_changes - before
                db.execute("COMMIT")
        except sqlite3.Error as exc:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise OnlineStoreError(
                f"Writing to the embedded online store {self.store.path} failed: {exc}.",
                fix="check free disk space and that no other process holds the file locked, then rerun.",
            ) from exc
        self.counts.written += changed
        self.counts.kept_newer += len(rows) - changed

    def close(self) -> WriteCounts:
        with self.store._lock:
            self.store._db.execute(
                "DELETE FROM online_values WHERE expires_us IS NOT NULL AND expires_us < ?", (self.store.clock(),)
            )
        return self.counts
