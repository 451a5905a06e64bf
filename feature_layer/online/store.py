"""The online store interface: what materialization writes to and lookups read from.

Two implementations share one contract (and one test suite):

* ``RedisOnlineStore`` — production: one key per (view, entity), values written by a
  server-side Lua script that never lets an older value replace a newer one, reads in one
  ``MGET``.
* ``SqliteOnlineStore`` — the embedded, zero-setup default: the same keys and values in a
  SQLite file, the same never-older rule as an ``ON CONFLICT … WHERE`` upsert.

Both enforce TTL at read time from the event time stored in the value (and expire keys where
the store can), so an expired value is served as missing, never as present. Opening the one a
project configures is ``feature_layer.online.backends.connect_online_store``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from feature_layer.clock import clock_from_env, epoch_us_source
from feature_layer.online.encoding import EncodedBatch

_FNV_OFFSET = np.uint64(0xCBF29CE484222325)
_FNV_PRIME = np.uint64(0x100000001B3)


def key_hashes(keys: pa.Array, skip: int = 0) -> np.ndarray:
    """64-bit FNV-1a of each key of a binary array from byte ``skip`` on (a prefix every key
    shares need not be hashed), vectorised: one numpy pass per byte position."""
    if keys.type != pa.binary():
        keys = keys.cast(pa.binary())
    n = len(keys)
    hashes = np.full(n, _FNV_OFFSET, dtype=np.uint64)
    if n == 0:
        return hashes
    offsets = np.frombuffer(keys.buffers()[1], dtype=np.int32)[keys.offset : keys.offset + n + 1].astype(np.int64)
    data_buffer = keys.buffers()[2]
    data = np.frombuffer(data_buffer, dtype=np.uint8) if data_buffer is not None else np.zeros(1, np.uint8)
    lengths = np.diff(offsets)
    starts = offsets[:-1]
    last = max(len(data) - 1, 0)
    for i in range(skip, int(lengths.max())):
        live = lengths > i
        byte = data[np.minimum(starts + i, last)].astype(np.uint64)
        hashes = np.where(live, (hashes ^ byte) * _FNV_PRIME, hashes)
    return hashes


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

    def __init__(self, ttl_us: int | None, *, force: bool = False) -> None:
        self.ttl_us = ttl_us
        self.force = force
        """Full refresh: each value replaces whatever is stored (even a newer one), and a value
        already expired deletes its key — the store becomes exactly what the warehouse says."""
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
        self.clock: Callable[[], int] = epoch_us_source(clock_from_env())
        """Microseconds since the epoch: decides TTL at read and key expiry at write. Set from
        the ``FeatureStore``'s :class:`~feature_layer.clock.Clock` (``FEATURE_LAYER_NOW`` by
        default); tests and benchmarks pin it to replay a point in time."""

    @abstractmethod
    def writer(self, *, ttl_us: int | None, force: bool = False) -> Writer:
        """A writer for the values of one view (all its batches share ``ttl_us``; ``force``: see Writer)."""

    @abstractmethod
    def read(self, keys: Sequence[bytes]) -> list[bytes | None]:
        """The stored values of ``keys`` (None where absent), in one round trip."""

    @abstractmethod
    def delete_prefix(self, prefix: bytes) -> int:
        """Delete every key starting with ``prefix`` (a view's keys on full refresh); return how many."""

    @abstractmethod
    def scan_prefix(self, prefix: bytes) -> Iterator[list[bytes]]:
        """Every key starting with ``prefix``, in lists of a few thousand."""

    @abstractmethod
    def delete_keys(self, keys: Sequence[bytes]) -> int:
        """Delete ``keys``; return how many existed."""

    def delete_unwritten(self, prefix: bytes, written: np.ndarray) -> int:
        """Delete the keys under ``prefix`` whose ``key_hashes`` are not in sorted ``written``.

        The end of a full refresh: entities gone from the warehouse lose their keys only after
        every new value is in place. Memory is 8 bytes per written key; a 64-bit hash collision
        (odds ~ stale keys x written keys / 2^64) would merely keep one stale key.
        """
        deleted = 0
        for keys in self.scan_prefix(prefix):
            hashes = key_hashes(pa.array(keys, pa.binary()), skip=len(prefix))
            pos = np.minimum(np.searchsorted(written, hashes), max(len(written) - 1, 0))
            found = written[pos] == hashes if len(written) else np.zeros(len(keys), dtype=bool)
            stale = [k for k, ok in zip(keys, found.tolist(), strict=True) if not ok]
            deleted += self.delete_keys(stale)
        return deleted

    @abstractmethod
    def get_marker(self, name: str) -> bytes | None:
        """A small bookkeeping value kept in the store itself (None when absent)."""

    @abstractmethod
    def set_marker(self, name: str, value: bytes) -> None:
        """Store a bookkeeping value. Materialization records here which watermark this very
        store holds, so a new, flushed or restarted-without-persistence store is detected
        and re-filled instead of trusting a watermark kept elsewhere."""

    def delete_marker(self, name: str) -> None:  # noqa: B027 - optional: markers are tiny
        """Remove a bookkeeping value (a run's sentinel once the run is over)."""

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
