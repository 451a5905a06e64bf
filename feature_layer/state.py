"""The durable state dbt does not know: materialization watermarks, leases and statistics.

One SQLite file (WAL mode, every write its own transaction, so a crash never leaves half a
watermark). Several processes may open it: materializations of the same view coordinate
through a lease row taken with ``BEGIN IMMEDIATE``; a lease whose holder died expires (or is
reclaimed at once when the holder was a dead process on this host).

Each lease carries a *fencing token*: a per-view counter that only grows (``fences`` table),
so a run that lost its lease holds a smaller token than the run that took it over, and the
online store refuses its writes (``docs/online_store.md``, Fencing). The tokens are scoped by
the state file's own random ``id``: runs coordinated by another state file never fence ours.

SQLite errors (a full disk above all: ``database or disk is full``) become ``StateStoreError``
naming the file and the fix; SQLite has already rolled the transaction back by then, so no
second error (``cannot rollback - no transaction is active``) hides the first.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from feature_layer.errors import MaterializationConflictError, StateStoreError
from feature_layer.sql.latest import Watermark

_SCHEMA = """
CREATE TABLE IF NOT EXISTS watermarks (
    view TEXT PRIMARY KEY,
    layout TEXT NOT NULL,
    event_time_us INTEGER NOT NULL,
    created_us INTEGER,
    wall_time_us INTEGER NOT NULL,
    rows_written INTEGER NOT NULL DEFAULT 0,
    entities INTEGER NOT NULL DEFAULT 0,
    newest_event_us INTEGER
);
CREATE TABLE IF NOT EXISTS leases (
    view TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    acquired_us INTEGER NOT NULL,
    expires_us INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS fences (
    view TEXT PRIMARY KEY,
    token INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS statistics (
    feature_ref TEXT PRIMARY KEY,
    stats TEXT NOT NULL,
    computed_us INTEGER NOT NULL
);
"""


def _now_us() -> int:
    return time.time_ns() // 1000


def _dt(us: int | None) -> datetime | None:
    if us is None:
        return None
    return datetime.fromtimestamp(us // 1_000_000, tz=UTC).replace(microsecond=us % 1_000_000)


def _us(value: datetime) -> int:
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    delta = value - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds


@dataclass(frozen=True)
class ViewState:
    """The last successful materialization of one view."""

    view: str
    layout: str
    watermark: Watermark
    wall_time: datetime
    rows_written: int
    entities: int
    newest_event_time: datetime | None = None
    """The newest event time materialized (MAX(event_time) of the rows read), None if unknown."""


@dataclass(frozen=True)
class Lease:
    view: str
    owner: str
    expires_us: int
    token: int = 0
    """The fencing token: larger than every earlier lease of the view in this state file."""


def pid_alive(pid: int) -> bool:
    """Whether a process with this id runs on this machine (a lease holder's liveness)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class StateStore:
    """Watermarks, materialization leases and feature statistics in one SQLite file."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        try:
            self._db = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
            self._migrate()
            self.id = self._store_id()
            # Every table's pages in the main file from the start: on a full disk a checkpoint then
            # only rewrites existing pages, which is what lets ``release_lease`` still succeed.
            self._db.execute("PRAGMA wal_checkpoint(PASSIVE)")
        except sqlite3.Error as exc:
            raise StateStoreError(
                f"Cannot open the state store at {self.path}: {exc}.",
                fix="check that the folder is writable and the disk not full, or set `state_path` in "
                "feature_layer.yml.",
            ) from exc

    def _store_id(self) -> str:
        """This state file's random id (created once): the scope of its fencing tokens."""
        self._db.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('id', ?)", (uuid.uuid4().hex[:12],))
        return str(self._db.execute("SELECT value FROM meta WHERE key = 'id'").fetchone()[0])

    def _failed(self, action: str, exc: sqlite3.Error) -> StateStoreError:
        full = isinstance(exc, sqlite3.OperationalError) and "full" in str(exc).lower()
        if full:
            return StateStoreError(
                f"The state store at {self.path} could not {action}: the disk is full ({exc}).",
                fix=f"free space on the disk holding {self.path.parent} (or move `state_path` in feature_layer.yml), "
                "then rerun; nothing was recorded, so the rerun redoes the same work.",
            )
        return StateStoreError(
            f"The state store at {self.path} could not {action}: {exc}.",
            fix="check that the file is writable and not on a failing disk, then rerun.",
        )

    def _migrate(self) -> None:
        """Add columns that state files written by earlier versions lack."""
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(watermarks)")}
        if "newest_event_us" not in columns:
            try:
                self._db.execute("ALTER TABLE watermarks ADD COLUMN newest_event_us INTEGER")
            except sqlite3.OperationalError as exc:  # another process added it first
                if "duplicate column" not in str(exc):
                    raise

    # -- helpers ---------------------------------------------------------------------------
    def _rollback(self) -> None:
        """Roll back if a transaction is still open (SQLite ends it itself on SQLITE_FULL and the like)."""
        if self._db.in_transaction:
            try:
                self._db.execute("ROLLBACK")
            except sqlite3.Error:
                pass

    def _transaction(self, action: str, body: Any) -> Any:
        """Run ``body(db)`` in one ``BEGIN IMMEDIATE`` transaction; SQLite errors as StateStoreError."""
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                result = body(self._db)
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                self._rollback()
                raise self._failed(action, exc) from exc
            except BaseException:
                self._rollback()
                raise
            return result

    def _write(self, sql: str, params: tuple[Any, ...] = (), action: str = "record the change") -> None:
        self._transaction(action, lambda db: db.execute(sql, params))

    def _write_owned(self, lease: Lease | None, sql: str, params: tuple[Any, ...] = (), action: str = "") -> None:
        """``_write``, but only while ``lease`` (when given) is held by its owner — atomically."""

        def body(db: sqlite3.Connection) -> None:
            if lease is not None:
                row = db.execute("SELECT owner FROM leases WHERE view = ?", (lease.view,)).fetchone()
                if row is None or row[0] != lease.owner:
                    raise self._lost(lease)
            db.execute(sql, params)

        self._transaction(action or "record the change", body)

    def _one(self, sql: str, params: tuple[Any, ...] = ()) -> tuple[Any, ...] | None:
        with self._lock:
            try:
                return self._db.execute(sql, params).fetchone()
            except sqlite3.Error as exc:
                raise self._failed("be read", exc) from exc

    # -- watermarks --------------------------------------------------------------------------
    def view_state(self, view: str) -> ViewState | None:
        row = self._one(
            "SELECT layout, event_time_us, created_us, wall_time_us, rows_written, entities, newest_event_us"
            " FROM watermarks WHERE view = ?",
            (view,),
        )
        if row is None:
            return None
        layout, ev, cr, wall, rows, entities, newest = row
        return ViewState(view, layout, Watermark(_dt(ev), _dt(cr)), _dt(wall), rows, entities, _dt(newest))  # type: ignore[arg-type]

    def watermark(self, view: str, layout: str | None = None) -> Watermark | None:
        """The view's watermark, or None when never materialized (or materialized with another layout)."""
        state = self.view_state(view)
        if state is None or (layout is not None and state.layout != layout):
            return None
        return state.watermark

    def set_watermark(
        self,
        view: str,
        watermark: Watermark,
        *,
        layout: str,
        rows_written: int = 0,
        entities: int = 0,
        lease: Lease | None = None,
        newest_event_time: datetime | None = None,
    ) -> None:
        """Record a finished run atomically (call only after every write reached the online store).

        With ``lease``, in the same transaction: MaterializationConflictError (nothing recorded)
        unless the run still holds it.
        """
        self._write_owned(
            lease,
            "INSERT INTO watermarks (view, layout, event_time_us, created_us, wall_time_us, rows_written, entities,"
            " newest_event_us) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(view) DO UPDATE SET layout = excluded.layout,"
            " event_time_us = excluded.event_time_us, created_us = excluded.created_us,"
            " wall_time_us = excluded.wall_time_us, rows_written = excluded.rows_written,"
            " entities = excluded.entities, newest_event_us = excluded.newest_event_us",
            (
                view,
                layout,
                _us(watermark.event_time),
                _us(watermark.created_at) if watermark.created_at else None,
                _now_us(),
                rows_written,
                entities,
                _us(newest_event_time) if newest_event_time else None,
            ),
            action=f"record the watermark of feature view {view!r}",
        )

    def clear_watermark(self, view: str) -> None:
        self._write("DELETE FROM watermarks WHERE view = ?", (view,), action=f"clear the watermark of {view!r}")

    def last_materialized(self, view: str) -> tuple[datetime, datetime] | None:
        """(event-time watermark, wall-clock time of the run) of the view's last successful run."""
        state = self.view_state(view)
        if state is None:
            return None
        return state.watermark.event_time, state.wall_time

    def newest_event_time(self, view: str) -> datetime | None:
        """The newest event time online for ``view``: MAX(event_time) of the rows materialized.

        The data's freshness, unlike the watermark (the ``end`` a run was given, usually the
        time it ran): a view whose source stopped updating keeps an old newest event time
        while its watermark keeps moving. None when never materialized (or not yet recorded).
        """
        state = self.view_state(view)
        return None if state is None else state.newest_event_time

    # -- leases ------------------------------------------------------------------------------
    def acquire_lease(self, view: str, *, seconds: float = 60.0, owner: str | None = None) -> Lease:
        """Take the view's materialization lease (with the next fencing token), or raise
        MaterializationConflictError."""
        owner = owner or uuid.uuid4().hex
        host, pid, now = socket.gethostname(), os.getpid(), _now_us()
        expires = now + int(seconds * 1_000_000)

        def body(db: sqlite3.Connection) -> int:
            row = db.execute(
                "SELECT owner, host, pid, acquired_us, expires_us FROM leases WHERE view = ?", (view,)
            ).fetchone()
            if row is not None and row[0] != owner:
                other_owner, other_host, other_pid, acquired, other_expires = row
                dead = other_host == host and other_pid != pid and not pid_alive(other_pid)
                if other_expires > now and not dead:
                    raise MaterializationConflictError(
                        f"Feature view {view!r} is already being materialized (by pid {other_pid} on "
                        f"{other_host}, since {_dt(acquired):%Y-%m-%d %H:%M:%S} UTC); two runs of one view "
                        "must not interleave.",
                        fix=f"wait for that run to finish and retry; if it crashed, its lease expires at "
                        f"{_dt(other_expires):%H:%M:%S} UTC.",
                    )
            db.execute(
                "INSERT INTO leases (view, owner, host, pid, acquired_us, expires_us) VALUES (?, ?, ?, ?, ?, ?)"
                " ON CONFLICT(view) DO UPDATE SET owner = excluded.owner, host = excluded.host,"
                " pid = excluded.pid, acquired_us = excluded.acquired_us, expires_us = excluded.expires_us",
                (view, owner, host, pid, now, expires),
            )
            db.execute(
                "INSERT INTO fences (view, token) VALUES (?, 1) ON CONFLICT(view) DO UPDATE SET token = token + 1",
                (view,),
            )
            return int(db.execute("SELECT token FROM fences WHERE view = ?", (view,)).fetchone()[0])

        token = self._transaction(f"take the lease of feature view {view!r}", body)
        return Lease(view, owner, expires, token)

    def renew_lease(self, lease: Lease, *, seconds: float = 60.0) -> Lease:
        """Extend ``lease``; MaterializationConflictError when it is no longer ours.

        A lease that expired and was taken by another run cannot be renewed: the caller must
        stop before it records anything (its writes are refused by the fence, its watermark
        would not be recorded).
        """
        expires = _now_us() + int(seconds * 1_000_000)
        cur = self._transaction(
            f"renew the lease of feature view {lease.view!r}",
            lambda db: db.execute(
                "UPDATE leases SET expires_us = ? WHERE view = ? AND owner = ?", (expires, lease.view, lease.owner)
            ),
        )
        if cur.rowcount != 1:
            raise self._lost(lease)
        return Lease(lease.view, lease.owner, expires, lease.token)

    def _lost(self, lease: Lease) -> MaterializationConflictError:
        row = self._one("SELECT host, pid FROM leases WHERE view = ?", (lease.view,))
        by = f" (now held by pid {row[1]} on {row[0]})" if row else ""
        return MaterializationConflictError(
            f"This run lost the materialization lease of feature view {lease.view!r}{by}: it was not renewed "
            "in time and expired, so another run may be materializing the view; this run stops without "
            "advancing the watermark.",
            fix="rerun once the other run finished; if runs are slow to renew (an overloaded host), "
            "materialize fewer views per process.",
        )

    def check_lease(self, lease: Lease) -> None:
        """Raise MaterializationConflictError unless ``lease`` is still held by its owner."""
        row = self._one("SELECT owner FROM leases WHERE view = ?", (lease.view,))
        if row is None or row[0] != lease.owner:
            raise self._lost(lease)

    def release_lease(self, lease: Lease) -> None:
        """Give the lease up. On a full disk, a checkpoint that restarts the WAL lets the one-row
        delete reuse the WAL's existing space, so a run that failed for want of space leaves no
        lease behind."""
        sql, params = "DELETE FROM leases WHERE view = ? AND owner = ?", (lease.view, lease.owner)
        action = f"release the lease of feature view {lease.view!r}"
        try:
            self._write(sql, params, action=action)
        except StateStoreError:
            with self._lock:
                try:
                    self._db.execute("PRAGMA wal_checkpoint(RESTART)")
                except sqlite3.Error:
                    pass
            self._write(sql, params, action=action)

    # -- statistics --------------------------------------------------------------------------
    def save_statistics(self, feature_ref: str, stats: dict[str, Any]) -> None:
        self._write(
            "INSERT INTO statistics (feature_ref, stats, computed_us) VALUES (?, ?, ?)"
            " ON CONFLICT(feature_ref) DO UPDATE SET stats = excluded.stats, computed_us = excluded.computed_us",
            (feature_ref, json.dumps(stats, default=str), _now_us()),
            action="save feature statistics",
        )

    def save_many_statistics(self, stats: dict[str, dict[str, Any]]) -> None:
        """Save several features' statistics in one transaction."""
        now = _now_us()
        rows = [(ref, json.dumps(s, default=str), now) for ref, s in stats.items()]
        self._transaction(
            "save feature statistics",
            lambda db: db.executemany(
                "INSERT INTO statistics (feature_ref, stats, computed_us) VALUES (?, ?, ?)"
                " ON CONFLICT(feature_ref) DO UPDATE SET stats = excluded.stats, computed_us = excluded.computed_us",
                rows,
            ),
        )

    def get_statistics(self, feature_ref: str) -> dict[str, Any] | None:
        row = self._one("SELECT stats FROM statistics WHERE feature_ref = ?", (feature_ref,))
        return None if row is None else json.loads(row[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> StateStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
