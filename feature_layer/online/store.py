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
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from feature_layer.clock import clock_from_env, epoch_us_source
from feature_layer.errors import LostWritesError, MaterializationConflictError
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
class RunFence:
    """What every write of one materialization run carries, so the store can refuse stale writers
    and prove at commit that it still holds everything it acknowledged.

    ``token`` is the run's lease fencing token (``StateStore.acquire_lease``), ``scope`` the id of
    the state file that issued it (runs coordinated by another state file fence each other only
    there). ``lease_expires_us`` returns the lease's current expiry (the heartbeat extends it):
    the store refuses a write once the token is older than the view's fence or the lease has
    expired. The run's ledger counts its requests (``requests`` numbers them; the store marks
    each one it applied, in the same atomic step as the data).
    """

    view: str
    scope: str
    token: int
    run_id: str
    lease_expires_us: Callable[[], int]
    ledger_ttl_ms: int = 180_000
    requests: int = 0
    acknowledged: set[int] = field(default_factory=set)

    def next_request(self) -> int:
        self.requests += 1
        return self.requests

    @property
    def fence_name(self) -> str:
        return f"fence:{self.view}:{self.scope}"

    @property
    def ledger_name(self) -> str:
        return f"run:{self.view}:{self.run_id}"

    def lost_lease(self, detail: str) -> MaterializationConflictError:
        return MaterializationConflictError(
            f"This run lost the materialization lease of feature view {self.view!r} (fencing token "
            f"{self.token}): the online store refused its write ({detail}), so it wrote nothing after losing "
            "it and stops without advancing the watermark.",
            fix="rerun once the other run finished; if runs are slow to renew their lease (a stalled or "
            "overloaded host), materialize fewer views per process.",
        )

    def lost_writes(self, store: str, detail: str) -> LostWritesError:
        return LostWritesError(
            f"The online store {store} lost values of feature view {self.view!r} it had acknowledged during "
            f"this run ({detail}): it restarted from an older snapshot, failed over to a lagging replica, "
            "was flushed or evicted keys.",
            fix=f"rerun `feature-layer materialize -s {self.view}`; it re-reads everything since the last "
            "watermark the store still holds (the whole view when the store lost that marker). If keys were "
            "evicted, first raise Redis's maxmemory or set maxmemory-policy noeviction.",
        )


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

    def __init__(
        self, ttl_us: int | None, *, force: bool = False, fence: RunFence | None = None, distinct_keys: bool = False
    ) -> None:
        self.ttl_us = ttl_us
        self.fence = fence
        self.force = force
        """Full refresh: each value replaces whatever is stored (even a newer one), and a value
        already expired deletes its key — the store becomes exactly what the warehouse says."""
        self.distinct_keys = distinct_keys
        """The caller writes each key at most once through this writer (one row per entity, as the
        latest-per-entity query yields), so the store need not track repeats within a request."""
        self.counts = WriteCounts()
        self.suspect = False
        """Set when the writer saw a sign that the store may have lost data (a reconnect, a
        forgotten write script): materialization then checks its run ledger at once."""

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

    can_evict = False
    """Whether the store may drop keys on its own (Redis under maxmemory): materialization then
    checks at commit that every value the run wrote is still there."""

    def eviction_snapshot(self) -> tuple[Any, ...] | None:
        """What the store says about eviction right now, for :meth:`nothing_evicted_between`;
        None when it cannot tell (the check of every written key then runs)."""
        return None

    @staticmethod
    def nothing_evicted_between(before: tuple[Any, ...] | None, after: tuple[Any, ...] | None) -> bool:
        """True only when the store proves it evicted nothing between two snapshots."""
        return False

    @abstractmethod
    def writer(
        self, *, ttl_us: int | None, force: bool = False, fence: RunFence | None = None, distinct_keys: bool = False
    ) -> Writer:
        """A writer for the values of one view (all its batches share ``ttl_us``; ``force`` and
        ``distinct_keys``: see Writer); with ``fence`` every request is fenced and ledgered (see RunFence)."""

    # -- runs: fencing and the ledger (see RunFence) ----------------------------------------
    @abstractmethod
    def claim(self, fence: RunFence) -> None:
        """Raise the view's fence to the run's token and open its ledger; MaterializationConflictError
        when a newer token already claimed the view."""

    @abstractmethod
    def touch(self, fence: RunFence) -> bool:
        """Renew the ledger's expiry (the heartbeat does); False when the ledger is gone."""

    @abstractmethod
    def missing_requests(self, fence: RunFence) -> int:
        """How many acknowledged requests of the run the ledger no longer holds (0 when intact)."""

    @abstractmethod
    def commit(self, fence: RunFence, markers: dict[str, bytes]) -> None:
        """Atomically: check the fence and that the ledger holds every request, then set ``markers``.
        LostWritesError / MaterializationConflictError (nothing set) otherwise."""

    @abstractmethod
    def release(self, fence: RunFence) -> None:
        """Drop the run's ledger (best effort; it also expires on its own)."""

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
    def delete_keys(self, keys: Sequence[bytes], fence: RunFence | None = None) -> int:
        """Delete ``keys`` (fenced and ledgered like a write when ``fence`` is given); return how many existed."""

    def delete_unwritten(self, prefix: bytes, written: np.ndarray, fence: RunFence | None = None) -> int:
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
            deleted += self.delete_keys(stale, fence)
        return deleted

    def count_existing(self, keys: pa.Array) -> int:
        """How many of ``keys`` (binary) exist; stores that may evict override this."""
        raise NotImplementedError

    def missing_keys(self, prefix: bytes, expected: np.ndarray) -> int:
        """How many of the keys whose ``key_hashes`` (after ``prefix``) are in ``expected`` are absent."""
        if not len(expected):
            return 0
        present = [key_hashes(pa.array(keys, pa.binary()), skip=len(prefix)) for keys in self.scan_prefix(prefix)]
        found = np.concatenate(present) if present else np.empty(0, np.uint64)
        return int((~np.isin(expected, found)).sum())

    @abstractmethod
    def get_marker(self, name: str) -> bytes | None:
        """A small bookkeeping value kept in the store itself (None when absent)."""

    def get_markers(self, names: Sequence[str]) -> list[bytes | None]:
        """Several bookkeeping values at once (one round trip where the store can)."""
        return [self.get_marker(name) for name in names]

    @abstractmethod
    def set_marker(self, name: str, value: bytes) -> None:
        """Store a bookkeeping value. Materialization records here which watermark this very
        store holds, so a new, flushed or restarted-without-persistence store is detected
        and re-filled instead of trusting a watermark kept elsewhere."""

    def delete_marker(self, name: str) -> None:  # noqa: B027 - optional: markers are tiny
        """Remove a bookkeeping value."""

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
