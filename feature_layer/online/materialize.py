"""Materialization: push each online view's latest values per entity into the online store.

Per view, in order:

1. take the view's lease in the state store, with its fencing token (a second run of the same
   view fails with ``MaterializationConflictError`` instead of interleaving); a heartbeat thread
   renews it, and a run that lost it (expired, taken over) stops and records nothing;
2. claim the view in the online store: raise its fence to the token (every later request of an
   older run is refused by the store itself, forced or not) and open the run's ledger; read the
   watermark (refused when the online store does not hold its marker); a full refresh withdraws
   that marker until it commits;
3. compute ``MAX(created_at)`` (the next watermark) and ``MAX(event_time)`` (the newest event
   materialized) of the rows to read, *before* the main query;
4. stream the latest-per-entity query (``feature_layer.sql.latest``; on DuckDB its two-pass form
   ``feature_layer.sql.newest``, whose memory does not grow with the row) from the warehouse as Arrow
   record batches (on DuckDB a thread fetches the next batch while this one is written),
   encode each batch vectorised and hand it to the store's pipelined writer —
   memory stays bounded by the batch size whatever the table size (a full refresh writes in
   place, forced, and deletes the keys it did not write only at the end);
5. wait for every write to be acknowledged, check that none was evicted (each written key, unless
   the store proves it evicted nothing since before the first write), save statistics (a
   failure there is recorded, never fatal), then commit in the store in one atomic step (the
   fence still ours, the ledger holding every request: nothing acknowledged was lost; then the
   watermark and active-layout markers), and only then advance the watermark (one SQLite
   transaction, only while the lease is held). A failure anywhere leaves the watermark where it
   was, and since writes are idempotent under "older never overwrites newer", a rerun converges
   to exactly the state an uninterrupted run would have left.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from queue import Full, Queue
from typing import Any

import numpy as np
import pyarrow as pa

from feature_layer.errors import InputError, MaterializationConflictError, OnlineStoreError, StateStoreError
from feature_layer.offline.kinds import capabilities_of
from feature_layer.online import layouts
from feature_layer.online.encoding import encode_batch, view_layout
from feature_layer.online.store import OnlineStore, RunFence, WriteCounts, key_hashes
from feature_layer.parts import Parts
from feature_layer.registry.model import FeatureView
from feature_layer.sql.latest import (
    CREATED_ALIAS,
    DEFAULT_LATE_LOOKBACK,
    EVENT_ALIAS,
    Watermark,
    max_created,
)
from feature_layer.sql.newest import materialization_query

log = logging.getLogger(__name__)

STREAM_BATCH_ROWS = 100_000
LEASE_SECONDS = 60.0
LEDGER_TTL_LEASES = 3
"""A run's ledger expires this many lease lengths after the last heartbeat (a killed run's goes)."""
EXISTS_CHECK_KEYS = 2_000_000
EXISTS_CHECK_BYTES = 64 * 2**20
"""Runs writing up to this many keys, taking up to this many bytes, check them with EXISTS at
commit (the keys are kept: ~45 bytes a key; at 1M keys EXISTS takes ~1/10 of a SCAN); larger
ones compare a SCAN of the view against 8-byte hashes."""
EXPIRY_SLACK_SECONDS = 2.0
"""Values whose TTL ends within this long of the eviction check are not required to be there."""
STATISTICS_MAX_AGE = timedelta(hours=24)


@dataclass
class ViewResult:
    """What materializing one view did."""

    view: str
    rows_written: int
    entities: int
    seconds: float
    watermark: datetime | None
    kept_newer: int = 0
    expired: int = 0
    full_refresh: bool = False
    incremental_from: datetime | None = None
    statistics: bool = False
    newest_event_time: datetime | None = None
    """The newest event time read by this run (MAX(event_time) of the rows read)."""
    statistics_error: str | None = None
    """Why the statistics were not updated (logged; never fails the run)."""
    stage_seconds: dict[str, float] = field(default_factory=dict)
    sql_changed: bool = False
    """The view's compiled SQL changed since its values were computed, so this run rewrote them all."""

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for key in ("watermark", "incremental_from", "newest_event_time"):
            if out[key] is not None:
                out[key] = out[key].isoformat()
        return out


@dataclass
class MaterializeResult:
    """Per-view results of one ``materialize`` call."""

    views: list[ViewResult]
    end: datetime
    seconds: float
    skipped: dict[str, list[Any]] = field(default_factory=dict)
    """Views left out of an all-view run because their declaration is invalid (with the issues)."""

    @property
    def rows_written(self) -> int:
        return sum(v.rows_written for v in self.views)

    @property
    def entities(self) -> int:
        return sum(v.entities for v in self.views)

    def __getitem__(self, view: str) -> ViewResult:
        for result in self.views:
            if result.view == view:
                return result
        raise KeyError(view)

    def to_dict(self) -> dict[str, Any]:
        return {"end": self.end.isoformat(), "seconds": self.seconds, "views": [v.to_dict() for v in self.views],
                "skipped": {name: [i.__dict__ for i in issues] for name, issues in self.skipped.items()}}


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def select_views(registry: Any, select: Sequence[str] | str | None) -> list[FeatureView]:
    """The online views to materialize: all of them, or those named in ``select``."""
    if isinstance(select, str):
        select = [select]
    if not select:
        return [v for v in registry.views.values() if v.online]
    chosen: list[FeatureView] = []
    for name in select:
        view = registry.view(name)
        if not view.online:
            raise InputError(
                f"Feature view {name!r} is declared `online: false`, so it is never materialized.",
                fix=f"set `online: true` in the feature_layer meta of {view.file_path or name}, or drop it from --select.",
            )
        if view not in chosen:
            chosen.append(view)
    return chosen


def materialize(
    parts: Parts,
    *,
    select: Sequence[str] | str | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    full_refresh: bool = False,
    progress: bool = False,
    statistics: bool | None = None,
    late_lookback: timedelta = DEFAULT_LATE_LOOKBACK,
) -> MaterializeResult:
    """Materialize the selected online views of ``parts`` up to ``end`` (default: the clock's now).

    Incremental from each view's watermark unless ``full_refresh`` (which first deletes the
    view's keys) or an explicit ``start`` (re-read rows with event time in [start, end]).
    ``statistics``: True always computes feature statistics, False never, None (default) when
    the view is read in full or its statistics are older than a day. ``late_lookback``: how far
    below its created-at watermark an incremental run re-reads, for rows that land in the
    warehouse out of created-at order (``feature_layer.sql.latest``).
    """
    began = time.perf_counter()
    end = _utc(end) or parts.clock.now()
    start = _utc(start)
    if start is not None and start > end:
        raise InputError(f"--start {start.isoformat()} is after --end {end.isoformat()}.", fix="swap them.")
    registry = parts.registry()
    views = select_views(registry, select)
    skipped = {} if select else dict(registry.broken_views)  # a named broken view raised its issues
    engine = parts.engine()
    online = parts.online()
    state = parts.state()
    results: list[ViewResult] = []
    with _Progress(progress) as bar:
        for view in views:
            results.append(
                materialize_view(
                    view,
                    engine=engine,
                    online=online,
                    state=state,
                    start=start,
                    end=end,
                    full_refresh=full_refresh,
                    statistics=statistics,
                    on_rows=bar.tracker(view.name),
                    statistics_engine=parts.new_engine,
                    late_lookback=late_lookback,
                )
            )
    return MaterializeResult(results, end, time.perf_counter() - began, skipped)


def materialize_view(
    view: FeatureView,
    *,
    engine: Any,
    online: OnlineStore,
    state: Any,
    end: datetime,
    start: datetime | None = None,
    full_refresh: bool = False,
    statistics: bool | None = None,
    on_rows: Callable[[int], None] | None = None,
    batch_rows: int = STREAM_BATCH_ROWS,
    statistics_engine: Callable[[], Any] | None = None,
    late_lookback: timedelta = DEFAULT_LATE_LOOKBACK,
) -> ViewResult:
    """Materialize one view (see the module docstring for the steps and their guarantees).

    ``statistics_engine`` opens a second warehouse connection: statistics are then computed on
    it in a background thread while the values stream into the online store (the writes keep
    the online store busy and the warehouse idle, so the two overlap almost fully).
    """
    began = time.perf_counter()
    stages: dict[str, float] = {}
    layout = view_layout(view, online.namespace)
    lease = state.acquire_lease(view.name, seconds=LEASE_SECONDS)
    heartbeat = _Heartbeat(state, lease, LEASE_SECONDS)
    fence = RunFence(
        view=view.name,
        scope=getattr(state, "id", "state"),
        token=lease.token,
        run_id=uuid.uuid4().hex[:16],
        lease_expires_us=lambda: heartbeat.lease.expires_us,
        ledger_ttl_ms=max(1_000, int(LEDGER_TTL_LEASES * LEASE_SECONDS * 1000)),
    )
    stats_job: _StatisticsJob | None = None
    claimed = finished = False
    try:
        # The claim goes in *before* the watermark marker is checked: it raises the view's fence
        # (from here on, runs holding an older lease cannot write) and opens this run's ledger. A
        # flush before it removes the marker (so this run reads in full), one after it empties
        # the ledger (so this run fails instead of advancing the watermark over lost writes).
        online.claim(fence)
        claimed = True
        heartbeat.watch(lambda: online.touch(fence), fence, online.describe())
        active = layouts.read_marker(online, view.name)
        data_fingerprint = layouts.sql_fingerprint(view, engine.dialect)  # ops1: a SQL edit rewrites every value
        sql_changed = layouts.sql_changed(active, layout, data_fingerprint)
        if sql_changed and not full_refresh:
            log.warning("the SQL of feature view %s changed since its values were computed: full refresh", view.name)
            full_refresh = True
        prior = state.view_state(view.name)
        layout_changed = prior is not None and prior.layout != layout.fingerprint
        legacy = prior.layout if layout_changed and prior is not None else None
        marker = f"watermark:{view.name}:{layout.fingerprint}"
        if prior is not None and not layout_changed and online.get_marker(marker) != _marker_value(prior.watermark):
            # The state says "materialized up to W", but this online store does not hold W
            # (a new store, a flushed one, a Redis restarted without persistence): refill it.
            prior = None
        watermark = None if (full_refresh or layout_changed or prior is None or start is not None) else prior.watermark
        if full_refresh:
            # Forced writes may move keys back in time (an --end in the past, a corrected row):
            # until this run commits, no run may trust the old watermark and read incrementally.
            online.delete_marker(marker)
        retired = layouts.retired_now_deletable(active, layout.fingerprint)
        for old in retired:  # layouts replaced long enough ago that no server still reads them
            online.delete_prefix(layouts.prefix_of(layout, old), fence)

        def start_statistics() -> _StatisticsJob:
            return _StatisticsJob.start(
                engine, statistics_engine, state, view, end, statistics, read_everything=watermark is None
            )

        t = time.perf_counter()
        bounds_sql = max_created(view, end=end, start=start, watermark=watermark, lookback=late_lookback)
        bounds = engine.fetch_arrow(bounds_sql).to_pylist()[0]
        next_created = _as_utc(bounds["max_created"])
        max_event = _as_utc(bounds["max_event"])
        sql = materialization_query(  # bounded memory where the dialect has the two-pass form
            view, end=end, start=start, watermark=watermark, dialect=engine.dialect, lookback=late_lookback
        )
        stages["max_created"] = time.perf_counter() - t

        entities = 0
        counts = WriteCounts()
        query_s = encode_s = 0.0
        # A full refresh overwrites in place (force) and deletes the keys it did not write only
        # at the end, so lookups keep the previous values until each is replaced — even if the
        # run fails half way. 8 bytes per written key remember which keys were written (and, on
        # a store that may evict, 8 more until when each must still be there).
        written = _WrittenKeys(len(layout.key_prefix), layout.ttl_us, track_deadlines=online.can_evict)
        track = full_refresh or online.can_evict
        evictions = online.eviction_snapshot() if online.can_evict else None  # before the first write
        # the query yields one row per entity: each key is written once (the script need not track repeats)
        writer = online.writer(ttl_us=layout.ttl_us, force=full_refresh, fence=fence, distinct_keys=True)
        batches: Iterator[pa.RecordBatch] = iter(())
        try:
            t = time.perf_counter()  # the query's blocking part (the aggregate) runs as the stream opens
            batches = _exact_batches(engine.stream_arrow(sql, batch_size=batch_rows), batch_rows)
            if capabilities_of(engine).threaded_streams:
                batches = _prefetched(batches)
            for batch in batches:
                t1 = time.perf_counter()
                query_s += t1 - t
                if stats_job is None:
                    # The warehouse has finished the aggregate once the first batch arrives; from
                    # here the online store is the busy side, so statistics overlap the writes.
                    stats_job = start_statistics()
                now_us = online.clock()
                encoded = encode_batch(
                    layout,
                    batch,
                    event_column=EVENT_ALIAS,
                    created_column=CREATED_ALIAS if view.created_at else None,
                    now_us=now_us,
                )
                counts.expired += batch.num_rows - len(encoded)
                sent = time.monotonic()
                writer.write(encoded)
                if track:
                    written.add(encoded, sent=sent, now_us=now_us)
                if writer.suspect:  # a reconnect, NOSCRIPT or a missing ledger: fail now if data was lost
                    _check_ledger(online, fence)
                    writer.suspect = False
                entities += batch.num_rows
                if on_rows is not None:
                    on_rows(batch.num_rows)
                heartbeat.check()
                t = time.perf_counter()
                encode_s += t - t1
            t1 = time.perf_counter()
            query_s += t1 - t
            counts.add(writer.close())  # waits for every acknowledgement
            if writer.suspect:
                _check_ledger(online, fence)
            if full_refresh:  # entities gone from the warehouse (or expired): only now removed
                online.delete_unwritten(layout.key_prefix, written.sorted_hashes(), fence)
            stages["write_tail"] = time.perf_counter() - t1
        except BaseException:
            writer.abort()
            close = getattr(batches, "close", None)
            if close is not None:  # now, not when the traceback goes: the warehouse's cursor is freed
                close()
            raise
        stages["query"] = query_s
        stages["encode_write"] = encode_s
        if online.can_evict:
            t = time.perf_counter()
            # Every write is acknowledged: a server that proves it evicted nothing since before
            # the first one needs no check of each key.
            if not online.nothing_evicted_between(evictions, online.eviction_snapshot()):
                _check_nothing_evicted(online, fence, layout.key_prefix, written, marker)
            stages["eviction_check"] = time.perf_counter() - t

        t = time.perf_counter()
        stats_job = stats_job or start_statistics()
        did_stats = stats_job.finish()
        stats_error = None if stats_job.error is None else f"{type(stats_job.error).__name__}: {stats_job.error}"
        stages["statistics_wait"] = time.perf_counter() - t

        new_watermark = _next_watermark(
            prior.watermark if prior and not layout_changed else None,
            end=end,
            start=start,
            created=next_created,
            full=full_refresh,
        )
        # The newest event time online: this run's, or the previous one's when this run did not
        # read everything (an incremental run or a backfill read only some rows).
        known = [max_event] if max_event is not None else []
        if watermark is not None or (start is not None and prior is not None and not layout_changed):
            if prior is not None and prior.newest_event_time is not None:
                known.append(prior.newest_event_time)
        newest_event = max(known) if known else None
        heartbeat.check()
        markers: dict[str, bytes] = {}
        if new_watermark is not None:
            # The view's layout is complete in this store now (read in full, or incrementally on
            # the layout it already had): lookups switch to it when the marker lands.
            markers[marker] = _marker_value(new_watermark)
            markers[layouts.marker_name(view.name)] = layouts.marker_value(
                layout, active, retired, legacy=legacy,
                sql=layouts.recorded_sql(active, layout, data_fingerprint), sql_dialect=engine.dialect)
            state.check_lease(lease)  # another run owns the view now: record nothing
        # Atomically in the store: the fence still ours, the ledger holding every request this
        # run sent (nothing acknowledged was lost), then the markers. A crash between this and
        # the state store leaves the two watermarks unequal: the next run re-reads in full.
        online.commit(fence, markers)
        if new_watermark is not None:
            state.set_watermark(
                view.name,
                new_watermark,
                layout=layout.fingerprint,
                rows_written=counts.written,
                entities=entities,
                lease=lease,
                newest_event_time=newest_event,
            )
        finished = True
    except MaterializationConflictError:
        raise
    except OnlineStoreError as exc:
        if exc.may_have_evicted:  # keys of earlier runs may be gone too: the next run reads in full
            with contextlib.suppress(OnlineStoreError):
                online.delete_marker(f"watermark:{view.name}:{layout.fingerprint}")
        raise type(exc)(
            f"Materializing feature view {view.name!r} failed; its watermark was not advanced. {exc.message}",
            fix=exc.fix,
            may_have_evicted=exc.may_have_evicted,
        ) from exc
    finally:
        if stats_job is not None:
            stats_job.join()
        heartbeat.stop()
        if claimed:
            online.release(fence)
        try:
            state.release_lease(lease)
        except StateStoreError:
            if finished:
                raise
            log.warning("could not release the lease of %s (it expires on its own)", view.name)
    return ViewResult(
        view=view.name,
        rows_written=counts.written,
        entities=entities,
        seconds=time.perf_counter() - began,
        watermark=new_watermark.event_time if new_watermark else (prior.watermark.event_time if prior else None),
        kept_newer=counts.kept_newer,
        expired=counts.expired,
        full_refresh=watermark is None,
        incremental_from=watermark.event_time if watermark else None,
        statistics=did_stats,
        statistics_error=stats_error,
        newest_event_time=max_event,
        stage_seconds=stages,
        sql_changed=sql_changed,
    )


def _exact_batches(batches: Iterator[pa.RecordBatch], rows: int) -> Iterator[pa.RecordBatch]:
    """``batches`` regrouped into batches of exactly ``rows`` rows (the last one shorter).

    Engines may stream batches of any size up to the one asked for (DuckDB's reader hands out
    what each pipeline produced); the writer, the progress and the heartbeat then see the same
    steps whatever the plan, and memory stays bounded by ``rows``.
    """
    pending: list[pa.RecordBatch] = []
    count = 0
    for batch in batches:
        while batch.num_rows:
            take = min(rows - count, batch.num_rows)
            pending.append(batch.slice(0, take) if take < batch.num_rows else batch)
            batch = batch.slice(take)
            count += take
            if count == rows:
                yield pending[0] if len(pending) == 1 else pa.concat_batches(pending)
                pending, count = [], 0
    if count:
        yield pending[0] if len(pending) == 1 else pa.concat_batches(pending)


_DONE = object()


def _prefetched(batches: Iterator[pa.RecordBatch], depth: int = 1) -> Iterator[pa.RecordBatch]:
    """``batches`` pulled by a thread up to ``depth`` batches ahead, so the warehouse computes
    the next batch while this thread encodes and writes the current one (DuckDB releases the
    GIL while it runs; the online store's replies are awaited outside it too). An error of the
    warehouse is raised here, at the batch it replaces; leaving early stops the thread."""
    queue: Queue[Any] = Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: Any) -> bool:
        while not stop.is_set():
            with contextlib.suppress(Full):
                queue.put(item, timeout=0.1)
                return True
        return False

    def produce() -> None:
        try:
            for batch in batches:
                if not put(batch):
                    return
            put(_DONE)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the consumer
            put(exc)

    thread = threading.Thread(target=produce, name="feature-layer-prefetch", daemon=True)
    thread.start()
    try:
        while (item := queue.get()) is not _DONE:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join()
        close = getattr(batches, "close", None)
        if close is not None:
            close()


def _check_ledger(online: OnlineStore, fence: RunFence) -> None:
    """Fail the run when the store no longer holds requests it acknowledged (see RunFence)."""
    missing = online.missing_requests(fence)
    if missing:
        raise fence.lost_writes(
            online.describe(), f"{missing} of its {len(fence.acknowledged) + 1} acknowledged requests are gone"
        )


def _check_nothing_evicted(
    online: OnlineStore, fence: RunFence, prefix: bytes, written: _WrittenKeys, marker: str
) -> None:
    """Every value this run wrote must still be there, unless its TTL ran out since: a store that
    evicts (Redis under maxmemory with an evicting policy) drops keys without telling anyone.
    Up to ``EXISTS_CHECK_KEYS`` keys (``EXISTS_CHECK_BYTES`` bytes) are checked with EXISTS;
    beyond, one SCAN of the view."""
    at = time.monotonic() + EXPIRY_SLACK_SECONDS
    if written.keys is not None:
        must_keys = written.alive_keys(at)
        expected = len(must_keys)
        missing = expected - online.count_existing(must_keys)
    else:
        must = written.still_alive(at)
        expected = len(must)
        missing = online.missing_keys(prefix, must)
    if not missing:
        return
    error = fence.lost_writes(
        online.describe(), f"{missing:,} of the {expected:,} values it wrote are no longer there: evicted"
    )
    error.may_have_evicted = True  # older keys may be gone too: the next run reads in full
    raise error


class _WrittenKeys:
    """The keys a run wrote, as 64-bit hashes of their entity part (and, optionally, the monotonic
    time until which each must exist: its send time plus the PX its TTL gives it). The first
    ``EXISTS_CHECK_KEYS`` keys (``EXISTS_CHECK_BYTES`` bytes) themselves are kept too, for a
    cheaper check than a SCAN."""

    def __init__(self, skip: int, ttl_us: int | None, *, track_deadlines: bool) -> None:
        self.skip, self.ttl_us, self.track_deadlines = skip, ttl_us, track_deadlines
        self.hashes: list[np.ndarray] = []
        self.deadlines: list[np.ndarray] = []
        self._keys: list[pa.Array] | None = [] if track_deadlines else None
        self._count = 0
        self._key_bytes = 0

    def add(self, encoded: Any, *, sent: float, now_us: int) -> None:
        self.hashes.append(key_hashes(encoded.keys, skip=self.skip))
        self._count += len(encoded)
        if self._keys is not None:
            self._key_bytes += encoded.keys.nbytes
            small = self._count <= EXISTS_CHECK_KEYS and self._key_bytes <= EXISTS_CHECK_BYTES
            self._keys = self._keys + [encoded.keys] if small else None
        if self.track_deadlines:
            if self.ttl_us is None:
                self.deadlines.append(np.full(len(encoded), np.inf))
            else:
                left = (np.asarray(encoded.event_us, dtype=np.int64) + (self.ttl_us - now_us)) / 1e6
                self.deadlines.append(sent + left)

    @property
    def keys(self) -> list[pa.Array] | None:
        return self._keys

    def sorted_hashes(self) -> np.ndarray:
        return np.sort(np.concatenate(self.hashes)) if self.hashes else np.empty(0, np.uint64)

    def _alive(self, at: float) -> np.ndarray:
        return np.concatenate(self.deadlines) > at if self.deadlines else np.zeros(0, bool)

    def still_alive(self, at: float) -> np.ndarray:
        """Hashes of the keys whose expiry is later than monotonic time ``at``."""
        if not self.hashes:
            return np.empty(0, np.uint64)
        return np.concatenate(self.hashes)[self._alive(at)]

    def alive_keys(self, at: float) -> pa.Array:
        """The kept keys whose expiry is later than monotonic time ``at``."""
        if not self._keys:
            return pa.array([], pa.binary())
        return pa.concat_arrays([k.cast(pa.binary()) for k in self._keys]).filter(pa.array(self._alive(at)))


class _Heartbeat:
    """Renews a lease from a thread every third of its length, so a long warehouse query (or a
    slow write) keeps it, and with it the expiry of the run's ledger in the online store (so the
    ledger of a killed run disappears on its own); ``check`` raises once the lease was lost or
    the ledger vanished."""

    def __init__(self, state: Any, lease: Any, seconds: float) -> None:
        self.state, self.lease, self.seconds = state, lease, seconds
        self.error: BaseException | None = None
        self._touch: Callable[[], bool] | None = None
        self._ledger_gone: Callable[[], BaseException] | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="feature-layer-lease", daemon=True)
        self._thread.start()

    def watch(self, touch: Callable[[], bool], fence: RunFence, where: str) -> None:
        """Also renew the run's ledger each beat (``touch`` returns False once it is gone)."""
        self._ledger_gone = lambda: fence.lost_writes(where, "its ledger key is gone")
        self._touch = touch

    def _run(self) -> None:
        while not self._stop.wait(self.seconds / 3):
            try:
                self.lease = self.state.renew_lease(self.lease, seconds=self.seconds)
                if self._touch is not None and not self._touch() and self._ledger_gone is not None:
                    self.error = self._ledger_gone()
                    return
            except MaterializationConflictError as exc:
                self.error = exc
                return
            except Exception:  # noqa: BLE001, S112 - a transient store error: try again next beat
                continue

    def check(self) -> None:
        if self.error is not None:
            raise self.error

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def _as_utc(value: Any) -> datetime | None:
    """A timestamp (or date) from the warehouse as an aware UTC datetime; None otherwise."""
    if isinstance(value, datetime):
        return _utc(value)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=UTC)
    return None


def _marker_value(watermark: Watermark) -> bytes:
    created = watermark.created_at.isoformat() if watermark.created_at else ""
    return f"{watermark.event_time.isoformat()}|{created}".encode()


def _next_watermark(
    prior: Watermark | None, *, end: datetime, start: datetime | None, created: datetime | None, full: bool
) -> Watermark | None:
    """The watermark after a successful run, or None to keep the old one.

    The watermark claims "every row with event time <= W (and created-at <= C) was read". It
    only moves when this run makes that true: a backfill window that starts after the old
    watermark, or ends before it, leaves it alone.
    """
    if prior is None and start is not None:
        return None  # only [start, end] was read: nothing can be claimed about earlier rows
    if prior is None or full:
        return Watermark(end, created)
    if start is not None and start > prior.event_time:
        return None
    if end < prior.event_time:
        return None
    if start is not None:
        # Rows with event time before ``start`` were not read, whatever their created-at: the
        # created-at watermark cannot move (the event-time one can: (old end, end] was read).
        return Watermark(end, prior.created_at)
    if created is None or (prior.created_at is not None and prior.created_at > created):
        created = prior.created_at
    return Watermark(end, created)


def _want_statistics(state: Any, view: FeatureView, wanted: bool | None, *, read_everything: bool) -> bool:
    if not view.features or wanted is False:
        return False
    if wanted is None and not read_everything:
        previous = state.get_statistics(view.features[0].ref)
        computed = previous.get("computed_at") if previous else None
        if computed and datetime.now(UTC) - datetime.fromisoformat(computed) < STATISTICS_MAX_AGE:
            return False
    return True


class _StatisticsJob:
    """Feature statistics for one view: in a background thread on a second connection, or inline."""

    def __init__(self, state: Any, compute: Callable[[], dict[str, dict[str, Any]]] | None, threaded: bool) -> None:
        self.state = state
        self.compute = compute
        self.result: dict[str, dict[str, Any]] | None = None
        self.error: BaseException | None = None
        self.thread: threading.Thread | None = None
        if compute is not None and threaded:
            self.thread = threading.Thread(target=self._run, name="feature-layer-statistics", daemon=True)
            self.thread.start()

    @classmethod
    def start(
        cls,
        engine: Any,
        factory: Callable[[], Any] | None,
        state: Any,
        view: FeatureView,
        end: datetime,
        wanted: bool | None,
        *,
        read_everything: bool,
    ) -> _StatisticsJob:
        if not _want_statistics(state, view, wanted, read_everything=read_everything):
            return cls(state, None, False)
        from feature_layer.online import statistics as stats

        if factory is None:
            return cls(state, lambda: stats.compute(engine, view, end=end), False)

        def on_own_connection() -> dict[str, dict[str, Any]]:
            own = factory()
            try:
                return stats.compute(own, view, end=end)
            finally:
                own.close()

        return cls(state, on_own_connection, True)

    def _run(self) -> None:
        try:
            self.result = self.compute()  # type: ignore[misc]
        except BaseException as exc:  # noqa: BLE001 - reported by finish()
            self.error = exc

    def finish(self) -> bool:
        """Wait for the statistics and save them; False when none were due or they failed.

        Statistics are informational: a failure (a warehouse error, a type the aggregates
        reject) is logged and kept in ``error``, never raised — the values are already online
        and the watermark must still advance.
        """
        if self.compute is None:
            return False
        try:
            if self.thread is not None:
                self.thread.join()
                if self.error is not None:
                    raise self.error
            else:
                self.result = self.compute()
            self.state.save_many_statistics(self.result or {})
        except Exception as exc:  # noqa: BLE001 - recorded and logged, see above
            self.error = exc
            log.warning("Feature statistics were not updated: %s: %s", type(exc).__name__, exc)
            return False
        return True

    def join(self) -> None:
        """Wait for the background thread (it holds a warehouse connection) — after a failed run too."""
        if self.thread is not None:
            self.thread.join()


class _Progress:
    """A rich progress display (rows, rows/s per view), or nothing when disabled."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._progress: Any = None

    def __enter__(self) -> _Progress:
        if self.enabled:
            from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

            self._progress = Progress(
                SpinnerColumn(),
                TextColumn("[bold]{task.description}"),
                TextColumn("{task.completed:>12,.0f} rows"),
                TextColumn("{task.fields[rate]:>10} rows/s"),
                TimeElapsedColumn(),
                transient=False,
            )
            self._progress.__enter__()
        return self

    def tracker(self, name: str) -> Callable[[int], None] | None:
        if self._progress is None:
            return None
        progress = self._progress
        task = progress.add_task(name, total=None, rate="-")
        began = time.perf_counter()
        done = [0]

        def advance(rows: int) -> None:
            done[0] += rows
            elapsed = max(time.perf_counter() - began, 1e-9)
            progress.update(task, advance=rows, rate=f"{done[0] / elapsed:,.0f}")

        return advance

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.__exit__(*exc)
