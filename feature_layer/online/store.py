"""The online store interface: what materialization writes to and lookups read from.

Two implementations share one contract (and one test suite):

* ``RedisOnlineStore`` — production: one key per (view, entity), values written by a
  server-side Lua script that never lets an older value replace a newer one, reads in one
  ``MGET``.
* ``SqliteOnlineStore`` — the embedded, zero-setup default: the same keys and values in a
  SQLite file, the same never-older rule as an ``ON CONFLICT … WHERE`` upsert.

Both enforce TTL at read time from the event time stored in the value (and expire keys where
the store can), so an expired value is served as missing, never as present.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from feature_layer.config import OnlineStoreSettings
from feature_layer.errors import ConfigError
from feature_layer.online.encoding import EncodedBatch


def wall_clock_us() -> int:
    return time.time_ns() // 1000


@dataclass
class WriteCounts:
    """What one writer did: values written, values refused because a newer one was stored, values expired."""

    written: int = 0
    kept_newer: int = 0
    expired: int = 0

    def add(self, other: WriteCounts | Sequence[int]) -> None:
        w, k, e = (other.written, other.kept_newer, other.expired) if isinstance(other, WriteCounts) else other
        self.written += int(w)
        self.kept_newer += int(k)
        self.expired += int(e)


class Writer(ABC):
    """Writes encoded batches of one view; ``close`` waits until every write is acknowledged."""

    def __init__(self, ttl_us: int | None) -> None:
        self.ttl_us = ttl_us
        self.counts = WriteCounts()
        self.suspect = False
        """Set when the writer saw a sign that the store may have lost data (a reconnect, a
        forgotten write script): materialization then checks its run sentinel at once."""

    @abstractmethod
    def write(self, batch: EncodedBatch) -> None:
        """Send a batch (it may still be in flight when this returns)."""

    @abstractmethod
    def close(self) -> WriteCounts:
        """Wait for every write; raise OnlineStoreError if any failed."""

    def __enter__(self) -> Writer:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def abort(self) -> None:  # noqa: B027 - optional hook
        """Give up in-flight writes after an error (they are idempotent, a rerun redoes them)."""


class OnlineStore(ABC):
    """Key/value storage for the latest feature values of each (view, entity)."""

    kind: str = ""

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace
        self.clock: Callable[[], int] = wall_clock_us
        """Microseconds since the epoch: decides TTL at read and key expiry at write (tests and
        benchmarks replace it to replay a point in time)."""

    @abstractmethod
    def writer(self, *, ttl_us: int | None) -> Writer:
        """A writer for the values of one view (all its batches share ``ttl_us``)."""

    @abstractmethod
    def read(self, keys: Sequence[bytes]) -> list[bytes | None]:
        """The stored values of ``keys`` (None where absent), in one round trip."""

    @abstractmethod
    def delete_prefix(self, prefix: bytes) -> int:
        """Delete every key starting with ``prefix`` (a view's keys on full refresh); return how many."""

    @abstractmethod
    def get_marker(self, name: str) -> bytes | None:
        """A small bookkeeping value kept in the store itself (None when absent)."""

    @abstractmethod
    def set_marker(self, name: str, value: bytes) -> None:
        """Store a bookkeeping value. Materialization records here which watermark this very
        store holds, so a new, flushed or restarted-without-persistence store is detected
        and re-filled instead of trusting a watermark kept elsewhere."""

    def instance_id(self) -> str | None:
        """An id of the running server process (Redis ``run_id``), or None where there is none.

        It changes when the server restarts or fails over, which may lose acknowledged writes."""
        return None

    @abstractmethod
    def ping(self) -> None:
        """Raise OnlineStoreError when the store is unreachable."""

    @abstractmethod
    def describe(self) -> str:
        """Where the store is, for messages (no secrets)."""

    @abstractmethod
    def close(self) -> None:
        """Release connections."""

    def __enter__(self) -> OnlineStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def connect_online_store(settings: OnlineStoreSettings, namespace: str) -> OnlineStore:
    """Open the online store ``settings`` describe, for the project ``namespace``."""
    if settings.type == "redis":
        from feature_layer.online.redis_store import RedisOnlineStore

        return RedisOnlineStore.from_settings(settings, namespace)
    if settings.type == "sqlite":
        from feature_layer.online.sqlite_store import SqliteOnlineStore

        if settings.path is None:
            raise ConfigError("The sqlite online store has no path.", fix="set online_store.path in feature_layer.yml.")
        return SqliteOnlineStore(settings.path, namespace)
    raise ConfigError(f"Online store type {settings.type!r} is not supported.", fix="use `redis` or `sqlite`.")
