"""``feature-layer stream``: a Redis Stream consumer group feeding :class:`StreamPipeline`.

At-least-once, acknowledged only after the values are written:

1. on start, claim every entry still pending in the group (``XAUTOCLAIM``: a consumer killed
   mid-batch left them unacknowledged) and process them first;
2. then read new entries (``XREADGROUP … >``, up to ``batch_size``, blocking ``block_ms``);
3. type them against the source's columns; events that do not fit go to the dead-letter stream
   with the reason (``XADD <dead_letter> entry_id … reason …``) — the consumer never stops on bad input;
4. process the rest (de-duplicate, land in the event log, recompute, write never-older);
5. ``XACK`` the whole read only then. A failure in 4 (the online store down) keeps the read and
   retries it with a backoff; a lost Redis connection is re-opened, a lost group re-created.

While a read is processed (step 4, mostly DuckDB and socket waits), the next one is read and typed
in a thread (steps 2–3, *read-ahead*), so a batch's fixed Python cost overlaps the previous batch's
computing. Read-ahead entries are pending in the group like any other read: a kill -9 leaves them
for the claim of step 1; a lost connection drops the read-ahead (the claim after reconnecting reads
them again); at the end of :meth:`StreamConsumer.run` they are processed before returning.

Because values are recomputed from the event log, processing an entry twice (after a kill -9
between 4 and 5) writes the same values again. Progress, lag (the group's ``lag``), throughput
and event-to-online latency (entry id time → values written) are logged every ``log_seconds``.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from feature_layer.config import StreamConnection
from feature_layer.errors import OnlineStoreError, StreamError
from feature_layer.stream.events import TypedBatch, type_events
from feature_layer.stream.pipeline import StreamPipeline, lag_ms
from feature_layer.stream.status import LeaseLost, StreamLease, publish_status

log = logging.getLogger("feature_layer.stream")

_WINDOW = 10_000
"""Latency samples kept between two progress reports (and in ``StreamCounters.latencies_ms``)."""


@dataclass
class StreamCounters:
    """Totals since start (the ``/metrics`` counters of ``feature-layer stream --metrics-port``)."""

    events: int = 0
    new: int = 0
    duplicates: int = 0
    rejected: int = 0
    late: int = 0
    values_written: int = 0
    batches: int = 0
    retries: int = 0
    reconnects: int = 0
    lag: int = 0
    latencies_ms: list[float] = field(default_factory=list)

    def prometheus(self) -> str:
        lines = []
        for name, value in (("events_total", self.events), ("events_new_total", self.new),
                            ("events_duplicate_total", self.duplicates), ("events_rejected_total", self.rejected),
                            ("events_late_total", self.late), ("values_written_total", self.values_written),
                            ("batches_total", self.batches), ("batch_retries_total", self.retries),
                            ("reconnects_total", self.reconnects), ("lag_events", self.lag)):
            kind = "gauge" if name == "lag_events" else "counter"
            lines += [f"# TYPE feature_layer_stream_{name} {kind}", f"feature_layer_stream_{name} {value}"]
        return "\n".join(lines) + "\n"


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class StreamConsumer:
    """Reads one Redis Stream with a consumer group into one pipeline (see the module docstring)."""

    def __init__(
        self,
        connection: StreamConnection,
        pipeline: StreamPipeline,
        *,
        clock_us: Callable[[], int],
        consumer: str | None = None,
        log_seconds: float = 10.0,
        redis_client: Any = None,
    ) -> None:
        self.connection = connection
        self.pipeline = pipeline
        self.consumer = consumer or connection.consumer or "feature-layer-stream"
        self.clock_us = clock_us
        self.log_seconds = log_seconds
        self.counters = StreamCounters()
        self._client = redis_client
        self._stop = threading.Event()
        self._claimed = False
        self._reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="stream-read-ahead")
        self._ahead: Future[tuple[list[tuple[Any, dict[Any, Any]]], TypedBatch]] | None = None
        self._window: deque[float] = deque(maxlen=_WINDOW)
        self._window_events = 0
        self._window_started = time.monotonic()
        self._published = 0.0
        self._lease = StreamLease(lambda: self.client, connection.stream, connection.group, self.consumer,
                                  lease_ms=int(connection.lease_seconds * 1000))

    # -- Redis ----------------------------------------------------------------------------------
    @property
    def client(self) -> Any:
        if self._client is None:
            import redis

            self._client = redis.Redis.from_url(self.connection.url, socket_timeout=max(5.0, self.connection.block_ms
                                                / 1000 + 2), socket_connect_timeout=2.0)
        return self._client

    def _reset(self) -> None:
        if self._client is not None:
            try:
                self._client.close()
            except Exception:  # noqa: BLE001 - closing a broken connection
                pass
        self._client = None
        self.counters.reconnects += 1

    def ensure_group(self) -> None:
        import redis

        try:
            self.client.xgroup_create(self.connection.stream, self.connection.group, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def _read(self) -> list[tuple[Any, dict[Any, Any]]]:
        c = self.connection
        if not self._claimed:  # entries a killed consumer (this one, earlier) left unacknowledged
            found: list[tuple[Any, dict[Any, Any]]] = []
            start = "0-0"
            while True:
                reply = self.client.xautoclaim(c.stream, c.group, self.consumer, min_idle_time=0, start_id=start,
                                               count=c.batch_size)
                start, entries = reply[0], reply[1]
                found += [(e, f) for e, f in entries if f is not None]
                if len(found) >= c.batch_size or _text(start) == "0-0":
                    break
            if found:
                log.info("claimed %d pending entries of %s (unacknowledged by an earlier consumer)", len(found),
                         c.stream)
                return found
            self._claimed = True
        reply = self.client.xreadgroup(c.group, self.consumer, {c.stream: ">"}, count=c.batch_size, block=c.block_ms)
        return _entries(reply)

    # -- read-ahead -----------------------------------------------------------------------------
    def _read_typed(self) -> tuple[list[tuple[Any, dict[Any, Any]]], TypedBatch]:
        entries = self._read()
        return entries, self._type(entries)

    def _read_ahead(self) -> None:
        """Start reading (and typing) the next entries in a thread; only past the claim of pending entries."""
        if self._ahead is None and self._claimed:
            self._ahead = self._reader.submit(self._read_typed)

    def _next(self) -> tuple[list[tuple[Any, dict[Any, Any]]], TypedBatch | None]:
        """The read-ahead's entries if one was started (topped up, without blocking, with what arrived
        since, up to ``batch_size``: a read-ahead taken early must not shrink the batches), else a read now."""
        if self._ahead is None:
            return self._read(), None
        ahead, self._ahead = self._ahead, None
        entries, typed = ahead.result()
        room = self.connection.batch_size - len(entries)
        c = self.connection
        reply = self.client.xreadgroup(c.group, self.consumer, {c.stream: ">"}, count=room) if room > 0 else None
        more = _entries(reply)
        if not more:
            return entries, typed
        extra = self._type(more)
        return entries + more, TypedBatch(table=pa.concat_tables([typed.table, extra.table]),
                                          entry_ids=typed.entry_ids + extra.entry_ids,
                                          rejected=typed.rejected + extra.rejected)

    def _drop_ahead(self) -> None:
        """Forget the read-ahead (its entries stay pending: the next claim reads them again)."""
        ahead, self._ahead = self._ahead, None
        if ahead is not None:
            try:
                ahead.result()
            except Exception:  # noqa: BLE001 - the connection is being re-opened anyway
                pass

    # -- one batch ------------------------------------------------------------------------------
    def _dead_letter(self, rejected: Sequence[Any]) -> None:
        if not rejected:
            return
        pipe = self.client.pipeline(transaction=False)
        for r in rejected:
            pipe.xadd(self.connection.dead_letter, {"entry_id": r.entry_id, "reason": r.reason,
                                                    "source": self.pipeline.plans[0].source.name,
                                                    "event": json.dumps(r.fields, sort_keys=True)})
        pipe.execute()
        for r in rejected[:3]:
            log.warning("dead-lettered %s: %s", r.entry_id, r.reason)

    def _type(self, entries: list[tuple[Any, dict[Any, Any]]]) -> TypedBatch:
        latest_us = self.clock_us() + int(self.connection.max_future_seconds * 1e6)
        return type_events(entries, self.pipeline.schema, required=self.pipeline.required,
                           event_time=self.pipeline.event_time, latest_us=latest_us)

    def process(self, entries: list[tuple[Any, dict[Any, Any]]], typed: TypedBatch | None = None) -> None:
        """Type (unless ``typed`` already is), dead-letter, compute, write, then acknowledge ``entries``."""
        typed = typed if typed is not None else self._type(entries)
        self._dead_letter(typed.rejected)
        outcome = self.pipeline.process(typed.table, typed.entry_ids)
        ids = [e for e, _ in entries]
        self.client.xack(self.connection.stream, self.connection.group, *ids)
        done_ms = time.time() * 1000
        self.counters.batches += 1
        self.counters.events += len(entries)
        self.counters.new += outcome.new
        self.counters.duplicates += outcome.duplicates
        self.counters.rejected += len(typed.rejected)
        self.counters.late += outcome.late
        self.counters.values_written += outcome.written
        if typed.entry_ids:  # ~200 samples per batch, at most _WINDOW kept: memory stays flat
            sampled = typed.entry_ids[:: max(1, len(typed.entry_ids) // 200)]
            self._window.extend(lag_ms(sampled, done_ms).tolist())
            self.counters.latencies_ms = list(self._window)
        self._window_events += len(entries)

    def _report(self, force: bool = False) -> None:
        elapsed = time.monotonic() - self._window_started
        if not force and elapsed < self.log_seconds:
            return
        try:
            groups = self.client.xinfo_groups(self.connection.stream)
            mine = next((g for g in groups if _text(g.get("name")) == self.connection.group), {})
            self.counters.lag = int(mine.get("lag") or 0)
        except Exception:  # noqa: BLE001 - lag is informative only
            pass
        lat = np.array(self._window) if self._window else np.array([np.nan])
        log.info("stream %s: %d events in %.1fs (%.0f/s), lag %d, event-to-online p50 %.0f ms p99 %.0f ms, "
                 "%d values written, %d rejected, %d duplicates, %d buffered rows", self.connection.stream,
                 self._window_events, elapsed, self._window_events / max(elapsed, 1e-9), self.counters.lag,
                 np.nanpercentile(lat, 50), np.nanpercentile(lat, 99), self.counters.values_written,
                 self.counters.rejected, self.counters.duplicates, self.pipeline.buffered)
        self._window.clear()
        self._window_events = 0
        self._window_started = time.monotonic()

    # -- the loop -------------------------------------------------------------------------------
    def stop(self) -> None:
        self._stop.set()

    def run(self, *, until_idle: float | None = None, max_events: int | None = None) -> StreamCounters:
        """Consume until :meth:`stop` (or, for tests and the demo, ``until_idle`` seconds without
        events, or ``max_events`` consumed). Another consumer of the same stream and group makes
        this one wait for its lease, then refuse (:class:`~feature_layer.stream.status.LeaseLost`)."""
        try:
            self._loop(until_idle, max_events)
            self._finish_ahead()
        finally:
            self._drop_ahead()
            self._lease.release()
        self._report(force=True)
        self._publish(force=True)
        return self.counters

    def _finish_ahead(self) -> None:
        """Process what the read-ahead got before :meth:`run` returns (its entries are delivered to us)."""
        if self._ahead is None:
            return
        entries, typed = self._next()
        if entries:
            self.process(entries, typed)

    def _loop(self, until_idle: float | None, max_events: int | None) -> None:
        import redis

        idle_since = time.monotonic()
        pause = 0.05
        pending: list[tuple[Any, dict[Any, Any]]] | None = None
        typed: TypedBatch | None = None
        failures = 0
        leased = False
        while not self._stop.is_set():
            try:
                if not leased:  # one consumer per stream and group (feature_layer.stream.status)
                    self._lease.acquire()
                    leased = True
                else:
                    self._lease.renew()
                if pending is None:
                    self.ensure_group() if not self._claimed else None
                    pending, typed = self._next()
                if pending:
                    if max_events is None:  # a bounded run reads no further than it processes
                        self._read_ahead()
                    self.process(pending, typed)
                    idle_since = time.monotonic()
                    pending, typed = None, None
                else:
                    pending, typed = None, None
                    if until_idle is not None and time.monotonic() - idle_since >= until_idle:
                        break
                pause = 0.05
                self._report()
                self._publish()
                if max_events is not None and self.counters.events >= max_events:
                    break
            except redis.ResponseError as exc:
                if "NOGROUP" in str(exc):  # Redis restarted without the stream: re-create the group
                    log.warning("consumer group %s of %s is gone (Redis restarted?): re-creating it",
                                self.connection.group, self.connection.stream)
                    self._claimed = False
                    self._drop_ahead()
                    pending, typed = None, None
                    continue
                pause = self._backoff(exc, pause)
            except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
                self._drop_ahead()
                self._reset()
                self._claimed = False
                pause = self._backoff(exc, pause)
            except LeaseLost:
                raise
            except (OnlineStoreError, StreamError) as exc:  # online store down, event log not writable: retry
                self.counters.retries += 1
                pause = self._backoff(exc, pause)
            except Exception as exc:  # noqa: BLE001 - computing failed: retry, then find the event at fault
                self.counters.retries += 1
                failures += 1
                if pending and failures >= 3:
                    self._isolate(pending, exc)
                    pending, typed, failures = None, None, 0
                pause = self._backoff(exc, pause)
            else:
                failures = 0

    def _publish(self, force: bool = False) -> None:
        """The counters to the stream's Redis, about once a second, for the server's ``/metrics``."""
        now = time.monotonic()
        if not force and now - self._published < 1.0:
            return
        self._published = now
        lat = np.array(self._window) if self._window else np.array([np.nan])
        elapsed = max(now - self._window_started, 1e-9)
        c = self.counters
        fields: dict[str, float | int | str] = {
            "consumer": self.consumer, "events": c.events, "new": c.new, "duplicates": c.duplicates,
            "rejected": c.rejected, "late": c.late, "values_written": c.values_written, "batches": c.batches,
            "retries": c.retries, "events_per_second": round(self._window_events / elapsed, 1),
            "updated_ms": int(time.time() * 1000)}
        if self._window:
            fields["latency_p50_ms"] = round(float(np.nanpercentile(lat, 50)), 1)
            fields["latency_p99_ms"] = round(float(np.nanpercentile(lat, 99)), 1)
        try:
            publish_status(self.client, self.connection.stream, self.connection.group, fields)
        except Exception:  # noqa: BLE001 - the status is informative; the stream goes on
            pass

    def _isolate(self, entries: list[tuple[Any, dict[Any, Any]]], exc: Exception) -> None:
        """A read that failed three times (not the online store): process its entries one by one and
        dead-letter those that still fail, with the error, so one poison event cannot stop the stream."""
        from feature_layer.stream.events import Rejected

        log.warning("stream %s: a read of %d entries failed 3 times (%s); processing them one by one",
                    self.connection.stream, len(entries), str(exc).splitlines()[0])
        for entry in entries:
            try:
                self.process([entry])
            except (OnlineStoreError, StreamError):
                raise
            except Exception as one:  # noqa: BLE001 - this event cannot be computed
                fields = {_text(k): _text(v) for k, v in entry[1].items()}
                self._dead_letter([Rejected(_text(entry[0]), fields, f"processing failed: {str(one).splitlines()[0]}")])
                self.client.xack(self.connection.stream, self.connection.group, entry[0])
                self.counters.rejected += 1

    def _backoff(self, exc: Exception, pause: float) -> float:
        log.warning("stream %s: %s; retrying in %.2fs (nothing acknowledged)", self.connection.stream,
                    str(exc).splitlines()[0], pause)
        self._stop.wait(pause)
        return min(pause * 2, 2.0)


def open_consumer(store: Any, select: Sequence[str] | None = None, *, consumer: str | None = None,
                  log_seconds: float = 10.0) -> StreamConsumer:
    """The consumer for the streaming views of ``store`` (a FeatureStore) that ``select`` names.

    Refuses, naming the construct, a selected view whose SQL is not per entity; refuses a source
    with no ``streams:`` connection in feature_layer.yml.
    """
    from feature_layer.config import stream_connections
    from feature_layer.errors import DeclarationError
    from feature_layer.stream.plan import plan_stream
    from feature_layer.stream.table_log import open_event_log

    registry = store.registry
    names = list(select) if select else sorted(n for n, v in registry.views.items() if v.stream is not None)
    if not names:
        raise StreamError("No feature view declares a stream.",
                          fix="add `stream: {source: <source>.<table>, event_id: <column>}` to a view's "
                          "meta.feature_layer block and run `dbt parse`.")
    plans = []
    issues = []
    for name in names:
        if not registry.view(name).online:
            raise StreamError(f"Feature view {name!r} is not online (online: false), so there is nothing to stream to.",
                              fix=f"set `online: true` on {name!r}, or leave it out of --select.")
        plan, found = plan_stream(registry, registry.view(name), registry.dialect)
        issues += found
        if plan is not None:
            plans.append(plan)
    if issues:
        raise DeclarationError(issues, headline=f"{len({i.unique_id for i in issues})} feature view(s) cannot stream:")
    sources = {p.spec.source for p in plans}
    if len(sources) > 1:
        raise StreamError(f"The selected views stream from {', '.join(sorted(sources))}; one process streams one source.",
                          fix="run one `feature-layer stream --select …` per source.")
    source = plans[0].source
    connections = stream_connections(store.settings)
    if source.name not in connections:
        raise StreamError(f"No stream connection for {source.name!r} in feature_layer.yml.",
                          fix=f"add `streams: {{{source.name}: {{url: redis://127.0.0.1:6379/0, stream: <name>}}}}` to "
                          f"{store.settings.project_dir / 'feature_layer.yml'}.")
    connection = connections[source.name]
    event_log = open_event_log(source, store, plans[0].spec.event_id)  # files (a glob) or a warehouse table
    dims = any(p.dimensions for p in plans)
    engine = store.parts.new_engine() if dims and store.parts.new_engine else None
    try:
        pipeline = StreamPipeline(plans, event_log, store.online_store(), buffer_rows=connection.buffer_rows,
                                  dimension_engine=engine, threads=connection.threads,
                                  newest_rows=connection.newest_rows)
    finally:
        if engine is not None:
            engine.close()  # never hold the warehouse: dbt build must be able to write it
    from feature_layer.clock import epoch_us_source

    return StreamConsumer(connection, pipeline, clock_us=epoch_us_source(store.clock), consumer=consumer,
                          log_seconds=log_seconds)



def _entries(reply: Any) -> list[tuple[Any, dict[Any, Any]]]:
    """The (id, fields) entries of an ``XREADGROUP`` reply (deleted entries, fields None, left out)."""
    return [(e, f) for _, entries in reply or [] for e, f in entries if f is not None]


__all__ = ["StreamConsumer", "StreamCounters", "open_consumer"]
