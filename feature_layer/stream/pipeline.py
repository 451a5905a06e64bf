"""One micro-batch: typed events in, latest values of their entities out, with the batch SQL.

The pipeline keeps an embedded DuckDB database in a private temporary folder (a file, so the buffer
below is stored compressed when DuckDB checkpoints and the process holds only what DuckDB caches
within ``memory_limit``: the consumer's memory stays flat while the buffer grows; the per-batch tables
and the views are TEMP, in memory; the file is a cache, rebuilt from the event log at every start and
removed at close) holding

* ``__fl_buf``: a bounded buffer of source rows — the whole history of every entity it holds. At
  start the whole event log is read in one go (``event_log.history(None)``) when it fits in
  ``buffer_rows``; otherwise, and after an eviction, an entity's history is read on its first
  event (``event_log.history(keys)``). Least recently used entities are evicted beyond ``buffer_rows``;
* ``__fl_hist``: per micro-batch, the history of the entities the batch touches (one semi-join of
  the buffer) plus the batch's new events;
* per streamed view, its chain of local views: the compiled SQL of every model between the source
  and the view, rewritten (``plan.rewrite_model``) to read the view's input — ``__fl_hist`` itself
  when the view's join keys are the buffer's and it needs whole histories, else its own
  ``__fl_stream_input_<n>``, filled from ``__fl_hist`` (the view's keys; per entity the rows within the
  lookback of its newest event time, plus the ``preceding_rows`` rows just before that horizon, which
  ``lag(x, n)`` reads). Only each entity's latest output row is written, and its windows and lags are
  complete with that history. The view's own model runs through the newest-row pass
  (``stream.newest``) where it applies: its windows computed as grouped aggregates for each
  entity's rows at its newest event time only, the rows the latest values are picked from.

For each micro-batch (:meth:`StreamPipeline.process`): fill ``__fl_hist``, de-duplicate the events by
event id against it (a redelivered event has the same join keys, so its first copy is there), land
the new ones in the event log (in a thread, finished before ``process`` returns; a failed landing
takes them out of the buffer again), add them to the buffer and to ``__fl_hist``, then per view run
its SQL over its input, keep each entity's latest row (``sql.latest.latest_values``, the
materialization query) and write it with the online store's never-older rule. Nothing is
incremented: every value is recomputed from events, so a redelivered, duplicated or out-of-order
event leads to the same values. A batch costs a handful of statements plus the views' SQL over the
touched entities' histories; batches grow with the load (the consumer reads whatever is waiting,
up to its batch size), so the fixed part is spread over more events as the rate rises.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import sqlglot.expressions as exp

from feature_layer.errors import StreamError
from feature_layer.online import layouts
from feature_layer.online.encoding import encode_batch, view_layout
from feature_layer.online.store import OnlineStore, Writer
from feature_layer.registry.model import Relation
from feature_layer.sql.latest import CREATED_ALIAS, EVENT_ALIAS, latest_values
from feature_layer.stream.landing import FileEventLog
from feature_layer.stream.newest import NotRewritable, newest_rows
from feature_layer.stream.plan import INPUT_TABLE, StreamPlan, local_name, rewrite_model

log = logging.getLogger("feature_layer.stream")

BUFFER = "__fl_buf"
HISTORY = "__fl_hist"
_FAR_END = datetime(9999, 12, 31)


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


@dataclass
class BatchOutcome:
    """What one micro-batch did."""

    events: int = 0
    new: int = 0
    duplicates: int = 0
    late: int = 0
    written: int = 0
    kept_newer: int = 0
    loaded_rows: int = 0
    landed: str | None = None
    seconds: dict[str, float] = field(default_factory=dict)


_N = "__fl_rows"
_SEQ = "__fl_touched"


class _EntityLog:
    """Per entity of the buffer: its rows there and the batch that last touched it, in Arrow.

    Touches are appended as they come (a batch's keys, no per-key Python) and folded into one table
    (``group_by`` the keys: rows summed, last touch the largest) when they outgrow it, and before the
    questions that need it folded: which entities are missing, which are the least recently used."""

    def __init__(self, keys: Sequence[str]) -> None:
        self.keys = list(keys)
        self._folded: pa.Table | None = None
        self._touches: list[pa.Table] = []
        self._pending = 0
        self._seq = 0

    def touch(self, keys: pa.Table, *, counted: bool) -> None:
        """``keys`` (one row per buffered row when ``counted``, else per entity) used now."""
        self._seq += 1
        n = pa.array(np.ones(keys.num_rows, np.int64) if counted else np.zeros(keys.num_rows, np.int64))
        self._append(keys.append_column(_N, n).append_column(_SEQ, pa.array(np.full(keys.num_rows, self._seq))))

    def uncount(self, keys: pa.Table) -> None:
        """One row less per row of ``keys`` (rows taken out again), their last touch unchanged."""
        self._append(keys.append_column(_N, pa.array(np.full(keys.num_rows, -1, np.int64)))
                     .append_column(_SEQ, pa.array(np.zeros(keys.num_rows, np.int64))))

    def _append(self, table: pa.Table) -> None:
        self._touches.append(table)
        self._pending += table.num_rows
        if self._pending > max(100_000, self._folded.num_rows if self._folded is not None else 0):
            self.fold()

    def fold(self) -> pa.Table:
        parts = ([self._folded] if self._folded is not None else []) + self._touches
        if not parts:
            return pa.table({})
        whole = pa.concat_tables(parts, promote_options="permissive") if len(parts) > 1 else parts[0]
        if self._touches:
            agg = whole.group_by(self.keys, use_threads=False).aggregate([(_N, "sum"), (_SEQ, "max")])
            n = pc.max_element_wise(agg.column(f"{_N}_sum"), pa.scalar(0, pa.int64()))
            whole = pa.table({**{k: agg.column(k) for k in self.keys}, _N: n, _SEQ: agg.column(f"{_SEQ}_max")})
        self._folded, self._touches, self._pending = whole, [], 0
        return whole

    def count(self) -> int:
        return self.fold().num_rows

    def missing(self, keys: pa.Table) -> pa.Table:
        """The entities of ``keys`` (one row each) never touched, or evicted since."""
        held = self.fold()
        if not held.num_rows:
            return keys
        return keys.join(held.select(self.keys), self.keys, join_type="left anti", use_threads=False)

    def evict_oldest(self, rows: int) -> tuple[pa.Table, int]:
        """Forget the least recently used entities holding at least ``rows`` rows; their keys and rows."""
        held = self.fold().sort_by([(_SEQ, "ascending")])
        cum = np.cumsum(held.column(_N).to_numpy())
        cut = min(int(np.searchsorted(cum, rows)) + 1, held.num_rows)
        self._folded = held.slice(cut)
        return held.slice(0, cut).select(self.keys), int(cum[cut - 1]) if cut else 0


class StreamPipeline:
    """The computing side of ``feature-layer stream`` for the views of one source."""

    def __init__(
        self,
        plans: Sequence[StreamPlan],
        event_log: FileEventLog,
        online: OnlineStore,
        *,
        buffer_rows: int = 2_000_000,
        dimension_engine: Any = None,
        memory_limit: str = "512MB",
        threads: int = 1,
        newest_rows: bool = True,
    ) -> None:
        if not plans:
            raise StreamError("No feature view to stream.", fix="declare `stream:` on a view, or fix --select.")
        sources = {p.source.unique_id for p in plans}
        if len(sources) != 1:
            raise StreamError(f"One pipeline streams one source; these views read {', '.join(sorted(sources))}.",
                              fix="run one `feature-layer stream --select …` per source.")
        self.plans = list(plans)
        self.log = event_log
        self.online = online
        self.buffer_rows = buffer_rows
        self.schema = event_log.schema()
        self.event_id = plans[0].spec.event_id
        self.event_time = plans[0].event_time
        self._check_columns()
        self.keys = tuple(k for k in plans[0].keys if all(k in p.keys for p in plans))
        if not self.keys:
            raise StreamError(f"The views {', '.join(p.view.name for p in plans)} share no join key, so one history "
                              "buffer cannot serve them.", fix="stream them with separate `--select` runs.")
        self.required = sorted({self.event_id, self.event_time, *(k for p in plans for k in p.keys)})
        # A view reads rows older than the lookback (lag) or none is bounded: no event is routed as late.
        self._routes_late = (all(p.lookback is not None for p in plans) and not any(p.preceding_rows for p in plans))
        self.newest_rows = {p.view.name: _newest_refusal(p) if newest_rows else "turned off (streams.newest_rows)"
                            for p in self.plans}
        """Per view: None when its windows are computed for each entity's newest rows only
        (``stream.newest``), else why not (logged)."""
        self._inputs = {p.view.name: HISTORY if self._reads_history(p) else f"{INPUT_TABLE}_{i}"
                        for i, p in enumerate(self.plans)}
        self._open(memory_limit, threads)
        self._lander = ThreadPoolExecutor(max_workers=1, thread_name_prefix="stream-landing")
        self.entities = _EntityLog(self.keys)
        """Rows per entity in the buffer and when each was last touched (eviction: least recently used)."""
        self.buffered = 0
        self.complete = False
        """The buffer holds the event log's whole history of every entity (read at start, none evicted since)."""
        self.watermark_us: int | None = None
        self._load_dimensions(dimension_engine)
        self._define_views()
        self._latest = {p.view.name: self._latest_sql(i, p) for i, p in enumerate(self.plans)}
        self._layouts = {p.view.name: view_layout(p.view, online.namespace) for p in self.plans}
        self._check_layouts()
        self._load_all()

    # -- set-up ---------------------------------------------------------------------------------
    def _check_columns(self) -> None:
        columns = set(self.schema.names)
        for plan in self.plans:
            needed = {plan.spec.event_id, plan.event_time, *plan.keys}
            if not needed <= columns:
                raise StreamError(
                    f"The source {plan.source.name} ({self.log.pattern}) has no column(s) "
                    f"{', '.join(sorted(needed - columns))}, which {plan.view.name!r} streams by.",
                    fix="name the source's event id in stream.event_id; the view's join keys and event time must be "
                    "source columns of the same name.")

    def _open(self, memory_limit: str, threads: int) -> None:
        import duckdb

        self._spill = tempfile.TemporaryDirectory(prefix="feature-layer-stream-")
        self.con = duckdb.connect(str(Path(self._spill.name) / "buffer.duckdb"))
        self.con.execute(f"SET memory_limit = '{memory_limit}'")
        self.con.execute(f"SET temp_directory = '{self._spill.name}'")
        self.con.execute(f"SET threads = {int(threads)}")
        self.con.register("__fl_empty", self.schema.empty_table())
        self.con.execute(f"CREATE TABLE {BUFFER} AS SELECT * FROM __fl_empty")
        for table in dict.fromkeys([HISTORY, *self._inputs.values()]):
            self.con.execute(f"CREATE TEMP TABLE {table} AS SELECT * FROM __fl_empty")
        self.con.unregister("__fl_empty")

    def _load_dimensions(self, engine: Any) -> None:
        dims = {d.unique_id: d for p in self.plans for d in p.dimensions}
        if dims and engine is None:
            raise StreamError(f"{', '.join(d.name for d in dims.values())} are read as dimension tables, and no "
                              "warehouse connection was given to copy them.", fix="pass dimension_engine.")
        for dim in dims.values():
            from feature_layer.sql.names import quoted_table

            table = engine.fetch_arrow(exp.select("*").from_(quoted_table(dim.relation)))
            self.con.register("__fl_dim", table)
            self.con.execute(f"CREATE TEMP TABLE {_q(local_name(dim))} AS SELECT * FROM __fl_dim")
            self.con.unregister("__fl_dim")

    def _reads_history(self, plan: StreamPlan) -> bool:
        """Does the view read __fl_hist itself (the batch's entities' whole history) rather than its
        own input? When its keys are the buffer's and it needs whole histories; or when the newest-row
        pass computes it (a grouped pass over whole histories costs less than cutting them to the
        horizon first) and no event is routed as late (__fl_hist would hold late events' entities)."""
        if set(plan.keys) != set(self.keys):
            return False
        return plan.lookback is None or (self.newest_rows[plan.view.name] is None and not self._routes_late)

    def _define_views(self) -> None:
        """Each path model as a local view over the view's input; the view's own model through the
        newest-row pass where it applies."""
        import duckdb

        for i, plan in enumerate(self.plans):
            for node in plan.models:
                tree = rewrite_model(plan, node, self._inputs[plan.view.name], f"_{i}")
                create = f"CREATE TEMP VIEW {_q(local_name(node) + f'_{i}')} AS "
                if node is plan.models[-1] and self.newest_rows[plan.view.name] is None:
                    try:  # a safety net: SQL the pass accepted but DuckDB cannot bind runs unchanged
                        self.con.execute(create + newest_rows(tree, plan.keys, plan.view.event_time).sql("duckdb"))
                        continue
                    except duckdb.Error as exc:
                        self.newest_rows[plan.view.name] = f"the rewritten SQL does not bind: {exc}"
                        log.warning("%s: windows computed for every input row (the newest-row pass's SQL does "
                                    "not bind: %s)", plan.view.name, exc)
                self.con.execute(create + tree.sql(dialect="duckdb"))

    def _latest_sql(self, i: int, plan: StreamPlan) -> str:
        name = local_name(plan.models[-1]) + f"_{i}"
        local = replace(plan.view, relation=Relation(database=None, schema="", identifier=name))
        return latest_values(local, end=_FAR_END, dialect="duckdb").sql(dialect="duckdb")

    def _check_layouts(self) -> None:
        """Write with the layout lookups read: refuse a store holding another layout of the view."""
        for plan in self.plans:
            layout = self._layouts[plan.view.name]
            active = layouts.read_marker(self.online, plan.view.name)
            if active is None:
                self.online.set_marker(layouts.marker_name(plan.view.name), layouts.marker_value(layout, None))
            elif active.fingerprint != layout.fingerprint:
                raise StreamError(
                    f"The online store holds {plan.view.name!r} in another layout ({active.fingerprint}) than its "
                    f"declaration needs ({layout.fingerprint}).",
                    fix=f"run `feature-layer materialize -s {plan.view.name}` first, then start the stream again.")

    # -- the buffer -----------------------------------------------------------------------------
    def _count(self, table: pa.Table) -> None:
        """Add ``table``'s rows to the buffer's per-entity counts (its entities most recently used)."""
        self.entities.touch(table.select(list(self.keys)), counted=True)
        self.buffered += table.num_rows

    def _insert(self, table: pa.Table, *targets: str) -> None:
        self.con.register("__fl_rows", table)
        for target in targets:
            self.con.execute(f"INSERT INTO {target} SELECT * FROM __fl_rows")
        self.con.unregister("__fl_rows")

    def _load_all(self) -> None:
        """The whole event log into the buffer in one read, when it fits (see the module docstring).
        An event log without ``row_count()`` is read entity by entity, on first touch."""
        rows = getattr(self.log, "row_count", None)
        if rows is None or rows() > self.buffer_rows:
            return
        t = time.perf_counter()
        history = self.log.history(None).cast(self.schema)
        self._insert(history, BUFFER)
        self._count(history)
        self.complete = True
        log.info("history buffer: the event log's %d rows (%d entities) read in %.1fs", history.num_rows,
                 self.entities.count(), time.perf_counter() - t)

    def _load(self, affected: pa.Table) -> int:
        """Read from the event log the history of the ``affected`` entities the buffer does not hold."""
        missing = None if self.complete else self.entities.missing(affected)
        self.entities.touch(affected, counted=False)  # most recently used, with no rows yet if missing
        if missing is None or not missing.num_rows:  # complete: an entity the buffer lacks has no history yet
            return 0
        history = self.log.history(missing).cast(self.schema)
        if history.num_rows:
            self._insert(history, BUFFER)
            self._count(history)
        return history.num_rows

    def _evict(self) -> None:
        if self.buffered <= self.buffer_rows:
            return
        evict, rows = self.entities.evict_oldest(self.buffered - int(self.buffer_rows * 0.8))
        self.buffered -= rows
        self.con.register("__fl_evict", evict)
        on = " AND ".join(f"{BUFFER}.{_q(k)} = e.{_q(k)}" for k in self.keys)
        self.con.execute(f"DELETE FROM {BUFFER} USING __fl_evict AS e WHERE {on}")
        self.con.unregister("__fl_evict")
        self.complete = False  # evicted entities' history must be read again on their next event
        log.info("evicted %d entities from the history buffer (%d rows kept)", evict.num_rows, self.buffered)

    # -- one micro-batch ------------------------------------------------------------------------
    def process(self, events: pa.Table, entry_ids: Sequence[str]) -> BatchOutcome:
        """De-duplicate, land, buffer and compute ``events`` (typed as the source); see the module doc."""
        out = BatchOutcome(events=events.num_rows)
        if events.num_rows == 0:
            return out
        t = time.perf_counter()
        affected = events.select(list(self.keys)).group_by(list(self.keys)).aggregate([])
        out.loaded_rows = self._load(affected)
        out.seconds["load"] = time.perf_counter() - t
        new = self._history_and_new(events, affected, out.seconds)
        out.new = new.num_rows
        out.duplicates = events.num_rows - new.num_rows
        # Landing (Parquet + fsync: mostly waiting for the disk) runs while the views compute; it is
        # finished before process() returns, so before anything is acknowledged.
        landing = self._lander.submit(self.log.append, new, entry_ids[0], entry_ids[-1])
        try:
            if new.num_rows:
                self._insert(new, BUFFER, HISTORY)
                self._count(new)
            current = self._current(events, out)
            out.seconds["dedup"] = time.perf_counter() - t - out.seconds["load"]
            whole = current.num_rows == events.num_rows  # no late event left out: __fl_hist = current's entities
            self._compute_all(current, whole, out)
        finally:
            try:
                landed = landing.result()
            except BaseException:
                self._forget(new)  # not in the event log: the retry must see these events as new again
                raise
        out.landed = str(landed) if landed else None
        out.seconds["total"] = time.perf_counter() - t
        self._evict()
        return out

    def _history_and_new(self, events: pa.Table, affected: pa.Table, seconds: dict[str, float]) -> pa.Table:
        """Fill __fl_hist with the affected entities' history; return the events it does not hold, once each."""
        on = " AND ".join(f"b.{_q(k)} = a.{_q(k)}" for k in self.keys)
        self.con.register("__fl_affected", affected)
        self.con.execute(f"DELETE FROM {HISTORY}")
        t0 = time.perf_counter()
        self.con.execute(f"INSERT INTO {HISTORY} SELECT b.* FROM {BUFFER} AS b SEMI JOIN __fl_affected AS a ON {on}")
        seconds["history"] = time.perf_counter() - t0
        self.con.unregister("__fl_affected")
        self.con.register("__fl_events", events)
        eid = _q(self.event_id)
        new = self.con.sql(
            f"SELECT * EXCLUDE (__fl_n) FROM (SELECT e.*, row_number() OVER (PARTITION BY e.{eid}) AS __fl_n "
            f"FROM __fl_events AS e ANTI JOIN {HISTORY} AS b ON e.{eid} = b.{eid}) WHERE __fl_n = 1"
        ).to_arrow_table()
        self.con.unregister("__fl_events")
        return new.cast(self.schema)

    def _current(self, events: pa.Table, out: BatchOutcome) -> pa.Table:
        """``events`` less those older than the lookback (landed for the batch path, counted in ``out.late``)."""
        times = pc.cast(pc.cast(events.column(self.event_time), pa.timestamp("us")), pa.int64()).to_numpy(
            zero_copy_only=False)
        current = events
        lookbacks = [p.lookback for p in self.plans]
        # A view reading rows before its horizon (lag) routes nothing: an event older than the horizon can
        # still be the row just before an entity's newest, so it is computed like any other (equal to dbt build).
        if self.watermark_us is not None and self._routes_late:
            horizon = self.watermark_us - int(max(lookbacks).total_seconds() * 1e6)  # type: ignore[arg-type]
            late = times < horizon
            out.late = int(late.sum())
            if out.late:
                log.warning("%d events older than the lookback (%s before the newest event seen) were landed for "
                            "the next `dbt build` + materialize, not streamed", out.late, max(lookbacks))
                current = events.filter(pa.array(~late))
        if len(times):
            newest = int(times.max())
            self.watermark_us = newest if self.watermark_us is None else max(self.watermark_us, newest)
        return current

    def _forget(self, new: pa.Table) -> None:
        """Remove ``new`` events from the buffer (their landing failed)."""
        if not new.num_rows:
            return
        self.con.register("__fl_forget", new.select([self.event_id]))
        eid = _q(self.event_id)
        self.con.execute(f"DELETE FROM {BUFFER} USING __fl_forget AS f WHERE {BUFFER}.{eid} = f.{eid}")
        self.con.unregister("__fl_forget")
        self.entities.uncount(new.select(list(self.keys)))
        self.buffered -= new.num_rows

    def _fill_input(self, plan: StreamPlan, target: str, events: pa.Table, *, whole: bool) -> None:
        """The view's input: __fl_hist's rows of the entities (by the view's keys) of ``events`` within
        its horizon (each entity's newest event time − the lookback), plus its ``preceding_rows`` rows
        just before the horizon (by rank, so ties are kept). ``whole``: ``events`` are the whole batch,
        so when the view's keys are the buffer's, __fl_hist holds exactly their entities (no semi-join)."""
        keys = list(plan.keys)
        if whole and set(keys) == set(self.keys):
            self.con.execute(f"DELETE FROM {target}")
            self.con.execute(f"INSERT INTO {target} {horizon_sql(plan, None)}")
            return
        affected = events.select(keys).group_by(keys).aggregate([])
        self.con.register("__fl_affected", affected)
        on = " AND ".join(f"b.{_q(k)} = a.{_q(k)}" for k in keys)
        self.con.execute(f"DELETE FROM {target}")
        semi = f"FROM {HISTORY} AS b SEMI JOIN __fl_affected AS a ON {on}"
        if plan.lookback is None:
            self.con.execute(f"INSERT INTO {target} SELECT b.* {semi}")
        else:
            self.con.execute(f"INSERT INTO {target} {horizon_sql(plan, semi)}")
        self.con.unregister("__fl_affected")

    def _compute_all(self, events: pa.Table, whole: bool, out: BatchOutcome) -> None:
        """Every view's latest rows of ``events``' entities, written. Each view's writes are sent as soon
        as they are computed and their replies read after the last view: Redis runs one view's write
        script while the next view computes here. Every value is acknowledged by Redis before this returns
        (so before any event is); on a failure every writer is aborted (what was applied stays: values
        are recomputed from events, never incremented, so the redelivered batch writes them again)."""
        writers: list[Writer] = []
        try:
            for plan in self.plans:
                t1 = time.perf_counter()
                writers.append(self._compute(plan, events, whole=whole, seconds=out.seconds))
                out.seconds[plan.view.name] = time.perf_counter() - t1
            t1 = time.perf_counter()
            for writer in writers:
                counts = writer.close()
                out.written += counts.written
                out.kept_newer += counts.kept_newer
            out.seconds["acknowledged"] = time.perf_counter() - t1
        except BaseException:
            for writer in writers:
                writer.abort()
            raise

    def _compute(self, plan: StreamPlan, events: pa.Table, *, whole: bool = False,
                 seconds: dict[str, float] | None = None) -> Writer:
        """Compute ``plan``'s view over its input and send each entity's latest row to the online store;
        the writer, to close (read every reply) or abort. ``seconds`` gets the stages' times
        (``<view>.input``, ``.sql``, ``.write``: encoding and sending)."""
        name = plan.view.name
        writer = self.online.writer(ttl_us=self._layouts[name].ttl_us)
        if events.num_rows == 0:
            return writer
        try:
            t0 = time.perf_counter()
            if self._inputs[name] != HISTORY:
                self._fill_input(plan, self._inputs[name], events, whole=whole)
            t1 = time.perf_counter()
            latest = self.con.sql(self._latest[name]).to_arrow_table()
            t2 = time.perf_counter()
            encoded = encode_batch(self._layouts[name], latest, event_column=EVENT_ALIAS,
                                   created_column=CREATED_ALIAS if plan.view.created_at else None,
                                   now_us=self.online.clock())
            writer.write(encoded)
        except BaseException:
            writer.abort()
            raise
        if seconds is not None:
            seconds.update({f"{name}.input": t1 - t0, f"{name}.sql": t2 - t1,
                            f"{name}.write": time.perf_counter() - t2})
        return writer

    def close(self) -> None:
        self._lander.shutdown(wait=True)
        self.con.close()
        self._spill.cleanup()
        getattr(self.log, "close", lambda: None)()  # a table log's warehouse connection


def _newest_refusal(plan: StreamPlan) -> str | None:
    """Why the newest-row pass does not apply to ``plan``'s view (None: it does)."""
    try:
        newest_rows(rewrite_model(plan, plan.models[-1]), plan.keys, plan.view.event_time)
    except NotRewritable as why:
        log.info("%s: windows computed for every input row (the newest-row pass does not apply: %s)",
                 plan.view.name, why)
        return str(why)
    return None


def horizon_sql(plan: StreamPlan, semi: str | None = None) -> str:
    """A view's input rows (see ``StreamPipeline._fill_input``) among ``semi`` (a FROM clause over
    __fl_hist AS b; None: all of __fl_hist): per entity, the rows within the lookback of its newest event
    time, plus the ``preceding_rows`` rows before that horizon (by rank: ties kept)."""
    if plan.preceding_rows == 1:
        return _horizon_one_sql(plan, semi)
    semi = semi or f"FROM {HISTORY} AS b"
    et = _q(plan.event_time)
    part = ", ".join(_q(k) for k in plan.keys)
    inside = f"{et} >= __fl_newest - to_microseconds({int(plan.lookback.total_seconds() * 1e6)})"  # type: ignore[union-attr]
    newest = f"SELECT b.*, max(b.{et}) OVER (PARTITION BY {', '.join('b.' + _q(k) for k in plan.keys)}) AS __fl_newest {semi}"
    if not plan.preceding_rows:
        return f"SELECT * EXCLUDE (__fl_newest) FROM ({newest}) WHERE {inside}"
    return (f"SELECT * EXCLUDE (__fl_newest) FROM ({newest}) QUALIFY {inside} OR rank() OVER (PARTITION BY "
            f"{part}, {inside} ORDER BY {et} DESC) <= {int(plan.preceding_rows)}")


def _horizon_one_sql(plan: StreamPlan, semi: str | None) -> str:
    """The horizon with one preceding row (``lag(x)``, the common case) by aggregates instead of a
    rank over every row: per entity its newest event time and the latest one before the horizon;
    rows at that time (ties kept, as ``rank() <= 1``) or within the horizon, and rows without an
    event time (they rank first in their own partition there)."""
    et = _q(plan.event_time)
    keys = ", ".join(_q(k) for k in plan.keys)
    skeys = ", ".join("s." + _q(k) for k in plan.keys)
    start = f"__fl_newest - to_microseconds({int(plan.lookback.total_seconds() * 1e6)})"  # type: ignore[union-attr]
    source = HISTORY if semi is None else "__fl_src"
    src = "" if semi is None else f"__fl_src AS MATERIALIZED (SELECT b.* {semi}), "
    return (f"WITH {src}__fl_n AS (SELECT {keys}, max({et}) AS __fl_newest FROM {source} GROUP BY {keys}), "
            f"__fl_p AS (SELECT {skeys}, any_value(n.__fl_newest) AS __fl_newest, max(s.{et}) FILTER "
            f"(WHERE s.{et} < n.{start}) AS __fl_prev FROM {source} AS s JOIN __fl_n AS n USING ({keys}) "
            f"GROUP BY {skeys}) SELECT s.* FROM {source} AS s JOIN __fl_p AS p USING ({keys}) WHERE "
            f"s.{et} >= p.{start} OR s.{et} = p.__fl_prev OR s.{et} IS NULL")


def lag_ms(entry_ids: Sequence[str], now_ms: float) -> np.ndarray:
    """Milliseconds from each entry's XADD (its stream id's time part) to ``now_ms``."""
    ids = pa.array(entry_ids, pa.string())
    added = pc.cast(pc.list_element(pc.split_pattern(ids, "-", max_splits=1), 0), pa.int64()).to_numpy(
        zero_copy_only=False).astype(np.float64)
    return now_ms - added


__all__ = ["BatchOutcome", "StreamPipeline", "horizon_sql", "lag_ms"]
