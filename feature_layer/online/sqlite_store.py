"""Embedded online store: the Redis layout in one SQLite file, for zero-setup projects and demos.

Same keys and values as Redis (``encoding.py``), the same "an older value never overwrites a
newer one" rule — here an upsert guarded by ``WHERE (excluded.event, excluded.created) >=
(stored)`` — and the same TTL at read. Expired rows are purged at the end of each write.

The file may be shared by several processes, so runs are fenced as on Redis: each write
transaction first checks the run's fencing token against the view's fence row and its lease
expiry against this host's clock, and counts itself in the run's ledger row.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from feature_layer.errors import MaterializationConflictError, OnlineStoreError
from feature_layer.online.encoding import EncodedBatch
from feature_layer.online.store import OnlineStore, RunFence, WriteCounts, Writer

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
CREATE TABLE IF NOT EXISTS online_fences (
    name TEXT PRIMARY KEY,
    token INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS online_runs (
    name TEXT PRIMARY KEY,
    requests INTEGER NOT NULL,
    expires_us INTEGER NOT NULL
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

    # -- runs: fence and ledger (see RunFence) ------------------------------------------------
    def _name(self, name: str) -> str:
        return f"{self.namespace}:{name}"

    def check_fence(self, db: sqlite3.Connection, fence: RunFence | None) -> None:
        """Inside a write transaction: refuse a run whose token is stale or whose lease expired."""
        if fence is None:
            return
        row = db.execute("SELECT token FROM online_fences WHERE name = ?", (self._name(fence.fence_name),)).fetchone()
        if row is not None and int(row[0]) > fence.token:
            raise fence.lost_lease(f"a newer run claimed the view: token {fence.token} < fence {row[0]}")
        late = time.time_ns() // 1000 - fence.lease_expires_us()
        if late > 0:
            raise fence.lost_lease(f"its lease had expired {late / 1e6:.1f} s earlier")

    def count_request(self, db: sqlite3.Connection, fence: RunFence | None) -> bool:
        """Inside a write transaction: count one request in the run's ledger; False when it is gone."""
        if fence is None:
            return True
        cur = db.execute(
            "UPDATE online_runs SET requests = requests + 1 WHERE name = ?", (self._name(fence.ledger_name),)
        )
        return cur.rowcount == 1

    def _in_transaction(self, action: str, body) -> object:  # noqa: ANN001
        with self._lock:
            db = self._db
            try:
                db.execute("BEGIN IMMEDIATE")
                result = body(db)
                db.execute("COMMIT")
            except BaseException as exc:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                if isinstance(exc, sqlite3.Error):
                    raise self._failed(action, exc) from exc
                raise
            return result

    def _failed(self, action: str, exc: sqlite3.Error) -> OnlineStoreError:
        return OnlineStoreError(
            f"The embedded online store {self.path} could not {action}: {exc}.",
            fix="check free disk space and that no other process holds the file locked, then rerun.",
        )

    def claim(self, fence: RunFence) -> None:
        def body(db: sqlite3.Connection) -> None:
            self.check_fence(db, fence)
            now = time.time_ns() // 1000
            db.execute("DELETE FROM online_runs WHERE expires_us < ?", (now,))
            db.execute(
                "INSERT INTO online_fences (name, token) VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET token = excluded.token",
                (self._name(fence.fence_name), fence.token),
            )
            db.execute(
                "INSERT OR REPLACE INTO online_runs (name, requests, expires_us) VALUES (?, 0, ?)",
                (self._name(fence.ledger_name), now + fence.ledger_ttl_ms * 1000),
            )

        self._in_transaction("start the run", body)

    def touch(self, fence: RunFence) -> bool:
        expires = time.time_ns() // 1000 + fence.ledger_ttl_ms * 1000
        cur = self._in_transaction(
            "renew the run's ledger",
            lambda db: db.execute(
                "UPDATE online_runs SET expires_us = ? WHERE name = ?", (expires, self._name(fence.ledger_name))
            ),
        )
        return cur.rowcount == 1  # type: ignore[attr-defined]

    def missing_requests(self, fence: RunFence) -> int:
        with self._lock:
            row = self._db.execute(
                "SELECT requests FROM online_runs WHERE name = ?", (self._name(fence.ledger_name),)
            ).fetchone()
        if row is None:
            return len(fence.acknowledged) + 1
        return max(0, len(fence.acknowledged) - int(row[0]))

    def commit(self, fence: RunFence, markers: dict[str, bytes]) -> None:
        def body(db: sqlite3.Connection) -> None:
            self.check_fence(db, fence)
            row = db.execute(
                "SELECT requests FROM online_runs WHERE name = ?", (self._name(fence.ledger_name),)
            ).fetchone()
            if row is None or int(row[0]) != fence.requests:
                held = "no ledger" if row is None else f"{row[0]} of {fence.requests} requests"
                raise fence.lost_writes(self.describe(), f"its ledger holds {held}")
            db.executemany(
                "INSERT INTO online_markers (name, value) VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET value = excluded.value",
                [(self._name(name), value) for name, value in markers.items()],
            )

        self._in_transaction("record the run", body)

    def release(self, fence: RunFence) -> None:
        try:
            self._in_transaction(
                "drop the run's ledger",
                lambda db: db.execute("DELETE FROM online_runs WHERE name = ?", (self._name(fence.ledger_name),)),
            )
        except OnlineStoreError:
            pass  # it expires on its own

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

    def writer(
        self, *, ttl_us: int | None, force: bool = False, fence: RunFence | None = None, distinct_keys: bool = False
    ) -> Writer:
        return SqliteWriter(self, ttl_us, force=force, fence=fence, distinct_keys=distinct_keys)

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

    def delete_keys(self, keys: Sequence[bytes], fence: RunFence | None = None) -> int:
        def body(db: sqlite3.Connection) -> int:
            self.check_fence(db, fence)
            deleted = 0
            for start in range(0, len(keys), _MAX_VARS):
                chunk = keys[start : start + _MAX_VARS]
                cur = db.execute(f"DELETE FROM online_values WHERE key IN ({','.join('?' * len(chunk))})", list(chunk))
                deleted += cur.rowcount
            if fence is not None:
                seq = fence.next_request()
                if self.count_request(db, fence):
                    fence.acknowledged.add(seq)
            return deleted

        return int(self._in_transaction("delete old keys", body))  # type: ignore[call-overload]

    def delete_prefix(self, prefix: bytes, fence: RunFence | None = None) -> int:
        upper = prefix[:-1] + bytes([prefix[-1] + 1])

        def body(db: sqlite3.Connection) -> int:
            self.check_fence(db, fence)
            return db.execute("DELETE FROM online_values WHERE key >= ? AND key < ?", (prefix, upper)).rowcount

        return int(self._in_transaction("delete old keys", body))  # type: ignore[call-overload]

    def close(self) -> None:
        with self._lock:
            self._db.close()


class SqliteWriter(Writer):
    def __init__(
        self,
        store: SqliteOnlineStore,
        ttl_us: int | None,
        *,
        force: bool = False,
        fence: RunFence | None = None,
        distinct_keys: bool = False,
    ) -> None:
        super().__init__(ttl_us, force=force, fence=fence, distinct_keys=distinct_keys)
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
                self.store.check_fence(db, self.fence)
                if self.force and not live.all():  # a full refresh: an expired value removes the key
                    dead = [k for k, ok in zip(batch.keys.to_pylist(), live.tolist(), strict=True) if not ok]
                    db.executemany("DELETE FROM online_values WHERE key = ?", [(k,) for k in dead])
                before = db.total_changes
                db.executemany(_FORCE if self.force else _UPSERT, rows)
                changed = db.total_changes - before
                seq = self.fence.next_request() if self.fence else 0
                if not self.store.count_request(db, self.fence):
                    self.suspect = True
                db.execute("COMMIT")
                if self.fence is not None:
                    self.fence.acknowledged.add(seq)
        except MaterializationConflictError:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
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
