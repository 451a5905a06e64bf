"""One micro-batch: typed events in, latest values of their entities out, with the batch SQL.

The pipeline keeps an embedded DuckDB (in memory) holding

* ``__fl_buf``: a bounded buffer of source rows — the whole history of every entity the stream
  touched lately (read from the source on first touch, then kept up to date with the events),
  least recently used entities evicted beyond ``buffer_rows``;
* one local view per model between the source and each streamed view: the model's compiled
  SQL, rewritten (``plan.rewrite_model``) to read ``__fl_stream_input`` instead of the source.

For each micro-batch (:meth:`StreamPipeline.process`): de-duplicate the events by event id (against
the buffer, which holds every landed event of the entities it holds), land the new ones in the
event log (in a thread, finished before ``process`` returns; a failed landing takes them out of the
buffer again), add them to the buffer, then per view fill ``__fl_stream_input`` with the history
(within the lookback) of the entities the events touch, run the view's SQL over it, keep each
entity's latest row (``sql.latest.latest_values``, the materialization query) and write it with
the online store's never-older rule. Nothing is incremented: every value is recomputed from
events, so a redelivered, duplicated or out-of-order event leads to the same values.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

import numpy as np
import pyarrow as pa
import sqlglot.expressions as exp

from feature_layer.errors import StreamError
from feature_layer.online import layouts
from feature_layer.online.encoding import encode_batch, view_layout
from feature_layer.online.store import OnlineStore
from feature_layer.registry.model import Relation
from feature_layer.sql.latest import CREATED_ALIAS, EVENT_ALIAS, latest_values
from feature_layer.stream.landing import FileEventLog
from feature_layer.stream.plan import INPUT_TABLE, StreamPlan, local_name, rewrite_model

log = logging.getLogger("feature_layer.stream")

BUFFER = "__fl_buf"
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
        memory_limit: str = "1GB",
    ) -> None:
        import duckdb

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
        columns = set(self.schema.names)
        for plan in plans:
            needed = {plan.spec.event_id, plan.event_time, *plan.keys}
            if not needed <= columns:
                raise StreamError(
                    f"The source {plan.source.name} ({event_log.pattern}) has no column(s) "
                    f"{', '.join(sorted(needed - columns))}, which {plan.view.name!r} streams by.",
                    fix="name the source's event id in stream.event_id; the view's join keys and event time must be "
                    "source columns of the same name.")
        self.keys = tuple(k for k in plans[0].keys if all(k in p.keys for p in plans))
        if not self.keys:
            raise StreamError(f"The views {', '.join(p.view.name for p in plans)} share no join key, so one history "
                              "buffer cannot serve them.", fix="stream them with separate `--select` runs.")
        self.required = sorted({self.event_id, self.event_time, *(k for p in plans for k in p.keys)})
        self.con = duckdb.connect(":memory:")
        self.con.execute(f"SET memory_limit = '{memory_limit}'")
        self.con.execute("SET threads = 1")
        self.con.register("__fl_empty", self.schema.empty_table())
        self.con.execute(f"CREATE TABLE {BUFFER} AS SELECT * FROM __fl_empty")
        self.con.execute(f"CREATE TABLE {INPUT_TABLE} AS SELECT * FROM __fl_empty")
        self.con.unregister("__fl_empty")
        self._lander = ThreadPoolExecutor(max_workers=1, thread_name_prefix="stream-landing")
        self.loaded: OrderedDict[tuple[Any, ...], int] = OrderedDict()
        self.buffered = 0
        self.watermark_us: int | None = None
        self._load_dimensions(dimension_engine)
        self._define_views()
        self._latest = {p.view.name: self._latest_sql(p) for p in plans}
        self._layouts = {p.view.name: view_layout(p.view, online.namespace) for p in plans}
        self._check_layouts()

    # -- set-up ---------------------------------------------------------------------------------
    def _load_dimensions(self, engine: Any) -> None:
        dims = {d.unique_id: d for p in self.plans for d in p.dimensions}
        if dims and engine is None:
            raise StreamError(f"{', '.join(d.name for d in dims.values())} are read as dimension tables, and no "
                              "warehouse connection was given to copy them.", fix="pass dimension_engine.")
        for dim in dims.values():
            from feature_layer.sql.names import quoted_table

            table = engine.fetch_arrow(exp.select("*").from_(quoted_table(dim.relation)))
            self.con.register("__fl_dim", table)
            self.con.execute(f"CREATE TABLE {_q(local_name(dim))} AS SELECT * FROM __fl_dim")
            self.con.unregister("__fl_dim")

    def _define_views(self) -> None:
        done: set[str] = set()
        for plan in self.plans:
            for node in plan.models:
                if node.unique_id in done:
                    continue
                sql = rewrite_model(plan, node).sql(dialect="duckdb")
                self.con.execute(f"CREATE VIEW {_q(local_name(node))} AS {sql}")
                done.add(node.unique_id)

    def _latest_sql(self, plan: StreamPlan) -> str:
        local = replace(plan.view, relation=Relation(database=None, schema="", identifier=local_name(plan.models[-1])))
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
    def _key_tuples(self, table: pa.Table, keys: Sequence[str]) -> list[tuple[Any, ...]]:
        return list(zip(*[table.column(k).to_pylist() for k in keys], strict=True))

    def _load(self, table: pa.Table) -> int:
        """Read from the source the history of the entities in ``table`` the buffer does not hold."""
        wanted = dict.fromkeys(self._key_tuples(table, self.keys))
        missing = [k for k in wanted if k not in self.loaded]
        for key in wanted:
            if key in self.loaded:
                self.loaded.move_to_end(key)
        if not missing:
            return 0
        keys = pa.table({k: pa.array([m[i] for m in missing], table.schema.field(k).type)
                         for i, k in enumerate(self.keys)})
        self.con.register("__fl_history", self.log.history(keys))
        self.con.execute(f"INSERT INTO {BUFFER} SELECT * FROM __fl_history")
        self.con.unregister("__fl_history")
        self.con.register("__fl_missing", keys)
        on = " AND ".join(f"s.{_q(k)} = m.{_q(k)}" for k in self.keys)
        counts = self.con.execute(
            f"SELECT {', '.join('b.' + _q(k) for k in self.keys)}, count(*) FROM {BUFFER} AS b "
            f"SEMI JOIN __fl_missing AS m ON {on.replace('s.', 'b.')} GROUP BY ALL").fetchall()
        self.con.unregister("__fl_missing")
        loaded = 0
        for key in missing:
            self.loaded[key] = 0
        for *key, n in counts:
            self.loaded[tuple(key)] = int(n)
            loaded += int(n)
        self.buffered += loaded
        return loaded

    def _evict(self) -> None:
        if self.buffered <= self.buffer_rows:
            return
        evict: list[tuple[Any, ...]] = []
        target = int(self.buffer_rows * 0.8)
        while self.buffered > target and self.loaded:
            key, n = self.loaded.popitem(last=False)
            evict.append(key)
            self.buffered -= n
        cols = {k: [e[i] for e in evict] for i, k in enumerate(self.keys)}
        self.con.register("__fl_evict", pa.table(cols))
        on = " AND ".join(f"{BUFFER}.{_q(k)} = e.{_q(k)}" for k in self.keys)
        self.con.execute(f"DELETE FROM {BUFFER} USING __fl_evict AS e WHERE {on}")
        self.con.unregister("__fl_evict")
        log.info("evicted %d entities from the history buffer (%d rows kept)", len(evict), self.buffered)

    # -- one micro-batch ------------------------------------------------------------------------
    def process(self, events: pa.Table, entry_ids: Sequence[str]) -> BatchOutcome:
        """De-duplicate, land, buffer and compute ``events`` (typed as the source); see the module doc."""
        out = BatchOutcome(events=events.num_rows)
        if events.num_rows == 0:
            return out
        t = time.perf_counter()
        out.loaded_rows = self._load(events)
        out.seconds["load"] = time.perf_counter() - t
        t = time.perf_counter()
        self.con.register("__fl_events", events)
        eid = _q(self.event_id)
        new = self.con.sql(
            f"SELECT * EXCLUDE (__fl_n) FROM (SELECT e.*, row_number() OVER (PARTITION BY e.{eid}) AS __fl_n "
            f"FROM __fl_events AS e ANTI JOIN {BUFFER} AS b ON e.{eid} = b.{eid}) WHERE __fl_n = 1"
        ).to_arrow_table()
        self.con.unregister("__fl_events")
        new = new.cast(self.schema)
        out.new = new.num_rows
        out.duplicates = events.num_rows - new.num_rows
        # Landing (Parquet + fsync: mostly waiting for the disk) runs while the views compute; it is
        # finished before process() returns, so before anything is acknowledged.
        landing = self._lander.submit(self.log.append, new, entry_ids[0], entry_ids[-1])
        if new.num_rows:
            self.con.register("__fl_new", new)
            self.con.execute(f"INSERT INTO {BUFFER} SELECT * FROM __fl_new")
            self.con.unregister("__fl_new")
            for key in self._key_tuples(new, self.keys):
                self.loaded[key] = self.loaded.get(key, 0) + 1
            self.buffered += new.num_rows
        times = events.column(self.event_time).cast(pa.timestamp("us")).cast(pa.int64()).to_numpy(zero_copy_only=False)
        current = events
        lookbacks = [p.lookback for p in self.plans]
        if self.watermark_us is not None and all(lb is not None for lb in lookbacks):
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
        try:
            for plan in self.plans:
                t1 = time.perf_counter()
                written, kept = self._compute(plan, current)
                out.written += written
                out.kept_newer += kept
                out.seconds[plan.view.name] = time.perf_counter() - t1
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

    def _forget(self, new: pa.Table) -> None:
        """Remove ``new`` events from the buffer (their landing failed)."""
        if not new.num_rows:
            return
        self.con.register("__fl_forget", new.select([self.event_id]))
        eid = _q(self.event_id)
        self.con.execute(f"DELETE FROM {BUFFER} USING __fl_forget AS f WHERE {BUFFER}.{eid} = f.{eid}")
        self.con.unregister("__fl_forget")
        for key in self._key_tuples(new, self.keys):
            if key in self.loaded:
                self.loaded[key] = max(0, self.loaded[key] - 1)
        self.buffered -= new.num_rows

    def _compute(self, plan: StreamPlan, events: pa.Table) -> tuple[int, int]:
        if events.num_rows == 0:
            return 0, 0
        keys = list(plan.keys)
        affected = events.select(keys).group_by(keys).aggregate([])
        self.con.register("__fl_affected", affected)
        on = " AND ".join(f"b.{_q(k)} = a.{_q(k)}" for k in keys)
        self.con.execute(f"DELETE FROM {INPUT_TABLE}")
        if plan.lookback is None:
            self.con.execute(f"INSERT INTO {INPUT_TABLE} SELECT b.* FROM {BUFFER} AS b SEMI JOIN __fl_affected AS a ON {on}")
        else:
            et = _q(plan.event_time)
            seconds = plan.lookback.total_seconds()
            self.con.execute(
                f"INSERT INTO {INPUT_TABLE} SELECT * EXCLUDE (__fl_newest) FROM (SELECT b.*, max(b.{et}) OVER "
                f"(PARTITION BY {', '.join('b.' + _q(k) for k in keys)}) AS __fl_newest FROM {BUFFER} AS b "
                f"SEMI JOIN __fl_affected AS a ON {on}) WHERE {et} >= __fl_newest - to_microseconds("
                f"{int(seconds * 1e6)})")
        self.con.unregister("__fl_affected")
        latest = self.con.sql(self._latest[plan.view.name]).to_arrow_table()
        layout = self._layouts[plan.view.name]
        encoded = encode_batch(layout, latest, event_column=EVENT_ALIAS,
                               created_column=CREATED_ALIAS if plan.view.created_at else None,
                               now_us=self.online.clock())
        writer = self.online.writer(ttl_us=layout.ttl_us)
        try:
            writer.write(encoded)
            counts = writer.close()  # every value acknowledged before the events are
        except BaseException:
            writer.abort()
            raise
        return counts.written, counts.kept_newer

    def close(self) -> None:
        self._lander.shutdown(wait=True)
        self.con.close()
        getattr(self.log, "close", lambda: None)()  # a table log's warehouse connection


def lag_ms(entry_ids: Sequence[str], now_ms: float) -> np.ndarray:
    """Milliseconds from each entry's XADD (its stream id's time part) to ``now_ms``."""
    added = np.array([int(e.split("-", 1)[0]) for e in entry_ids], dtype=np.float64)
    return now_ms - added


__all__ = ["BatchOutcome", "StreamPipeline", "lag_ms"]
