"""The event log of a warehouse-table source: events appended to the dbt source's table, through
the offline engine, so the next ``dbt build`` reads exactly the events the stream saw.

A source is a *table source* when the compiled SQL reads its warehouse relation (a PostgreSQL
table, a DuckDB table, any adapter's table) rather than a file (dbt-duckdb ``external_location``:
:class:`~feature_layer.stream.landing.FileEventLog`). :func:`open_event_log` picks one from the
source's declaration and refuses what cannot hold events (a seed or a model: ``dbt build``
replaces their tables, so landed events would be lost).

Per micro-batch, :meth:`TableEventLog.append` stages the events in the engine's session
(``register_arrow``: a DuckDB scan, a PostgreSQL temporary table) and runs **one** statement::

    INSERT INTO <source> (<columns>) SELECT <columns> FROM <staged> AS e
    WHERE NOT EXISTS (SELECT 1 FROM <source> AS t WHERE t.<event_id> = e.<event_id>)

One statement is one transaction: a failure (a constraint, a lost connection, a locked file)
leaves the table as it was and raises :class:`~feature_layer.errors.StreamError`, so the consumer
acknowledges nothing and lands the same events on its next try; an event already in the table
(a redelivery, a consumer killed between landing and acknowledging) is never inserted twice.
:meth:`TableEventLog.history` reads an entity's landed rows back through the same engine.

The warehouse is never held: an engine whose connections are cheap (DuckDB, a file only one
process may write) is opened per call and closed right after, so ``dbt build`` can run while
the stream lands; others (PostgreSQL) keep one connection, re-opened by the engine when lost.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import pyarrow as pa
import pyarrow.compute as pc
from sqlglot import exp

from feature_layer.errors import FeatureLayerError, StreamError
from feature_layer.registry.model import Relation
from feature_layer.sql.names import col, ident, quoted_table

if TYPE_CHECKING:
    from feature_layer.offline.engine import Engine
    from feature_layer.stream.plan import StreamSource

STAGED = "__fl_stream_events"
"""The micro-batch's events, staged in the engine's session for the INSERT."""
KEYS = "__fl_stream_keys"
"""The join keys whose history is read, staged in the engine's session."""


class EventLog(Protocol):
    """What the pipeline needs of an event log (file or table)."""

    pattern: str
    """Where the events land, for messages (a glob, or the table's name)."""

    def schema(self) -> pa.Schema: ...

    def append(self, table: pa.Table, first_id: str, last_id: str) -> Any: ...

    def history(self, keys: pa.Table | None) -> pa.Table: ...


# ----------------------------------------------------------------------------- the SQL (sqlglot)
def insert_new_events(relation: Relation, columns: list[str], event_id: str) -> exp.Insert:
    """``INSERT INTO relation (columns) SELECT columns FROM staged WHERE NOT EXISTS (same id)``."""
    seen = (exp.select(exp.Literal.number(1)).from_(quoted_table(relation, "t"))
            .where(exp.EQ(this=col(event_id, "t"), expression=col(event_id, "e"))))
    rows = (exp.select(*(col(c, "e") for c in columns))
            .from_(exp.Table(this=ident(STAGED), alias=exp.TableAlias(this=ident("e"))))
            .where(exp.Not(this=exp.Exists(this=seen))))
    target = exp.Schema(this=quoted_table(relation), expressions=[ident(c) for c in columns])
    return exp.Insert(this=target, expression=rows)


def history_query(relation: Relation, columns: list[str], keys: list[str] | None) -> exp.Select:
    """Every row of ``relation`` (``columns``), or only those whose ``keys`` are in the staged keys."""
    query = exp.select(*(col(c, "s") for c in columns)).from_(quoted_table(relation, "s"))
    if keys is None:
        return query
    on = exp.and_(*(exp.EQ(this=col(k, "s"), expression=col(k, "k")) for k in keys))
    wanted = exp.select(exp.Literal.number(1)).from_(exp.Table(this=ident(KEYS), alias=exp.TableAlias(this=ident("k"))))
    return query.where(exp.Exists(this=wanted.where(on)))


def first_per_id(table: pa.Table, event_id: str) -> pa.Table:
    """``table`` with only the first row of each event id (a batch may repeat an event)."""
    if table.num_rows == 0:
        return table
    indexed = table.select([event_id]).append_column("__fl_i", pa.array(range(table.num_rows), pa.int64()))
    first = indexed.group_by(event_id, use_threads=False).aggregate([("__fl_i", "min")]).column("__fl_i_min")
    return table.take(pc.sort_indices(first))


# ----------------------------------------------------------------------------- the log
class TableEventLog:
    """Events appended to a warehouse table through the offline engine (see the module docstring)."""

    def __init__(self, relation: Relation, open_engine: Callable[[], Engine], *, event_id: str,
                 keep_open: bool, source_name: str = "") -> None:
        self.relation = relation
        self.event_id = event_id
        self.source_name = source_name or ".".join(relation.parts())
        self.pattern = ".".join(relation.parts())
        self._open_engine = open_engine
        self._keep_open = keep_open
        self._engine: Engine | None = None
        self._schema: pa.Schema | None = None

    # -- the engine ---------------------------------------------------------------------------
    @contextmanager
    def _session(self) -> Iterator[Engine]:
        if self._keep_open:
            if self._engine is None:
                self._engine = self._open_engine()
            yield self._engine
            return
        engine = self._open_engine()
        try:
            yield engine
        finally:
            engine.close()

    def close(self) -> None:
        if self._engine is not None:
            self._engine.close()
            self._engine = None

    # -- the three methods the pipeline uses --------------------------------------------------
    def schema(self) -> pa.Schema:
        """The table's columns as Arrow types: what events are typed as (read once)."""
        if self._schema is None:
            try:
                with self._session() as engine:
                    schema = engine.schema_of(exp.select("*").from_(quoted_table(self.relation)))
            except FeatureLayerError as exc:
                raise StreamError(f"Could not read the columns of the stream's source table {self.pattern}: "
                                  f"{exc.message}", fix=exc.fix or "create the table (load the source data) first.") from exc
            untyped = [f.name for f in schema if pa.types.is_null(f.type)]
            if untyped:
                raise StreamError(f"The stream's source table {self.pattern} has column(s) {', '.join(untyped)} of a "
                                  "type events cannot be typed as.",
                                  fix="use integer, double, boolean, text, date or timestamp columns in the source.")
            self._schema = pa.schema([pa.field(f.name, f.type) for f in schema])
        return self._schema

    def append(self, table: pa.Table, first_id: str, last_id: str) -> str | None:
        """Insert the events of ``table`` not in the table yet, in one statement; None when empty."""
        if table.num_rows == 0:
            return None
        schema = self.schema()
        events = first_per_id(table.select(schema.names).cast(schema), self.event_id)
        statement = insert_new_events(self.relation, schema.names, self.event_id)
        try:
            with self._session() as engine:
                engine.register_arrow(STAGED, events)
                try:
                    engine.execute(statement)
                finally:
                    engine.unregister(STAGED)
        except FeatureLayerError as exc:
            raise StreamError(f"Could not land {events.num_rows} events ({first_id}…{last_id}) in {self.pattern}; "
                              f"the table is unchanged. {exc.message}",
                              fix=f"{(exc.fix or 'check the warehouse.').rstrip('.')}. The events stay unacknowledged in "
                              "the stream and are landed on the next try.") from exc
        return f"{self.pattern} ({first_id}…{last_id})"

    def row_count(self) -> int:
        """Rows in the table: does it fit in the stream's history buffer (read whole at start)?"""
        query = exp.select(exp.Count(this=exp.Star()).as_("n")).from_(quoted_table(self.relation))
        try:
            with self._session() as engine:
                return int(engine.fetch_arrow(query).column(0)[0].as_py())
        except FeatureLayerError as exc:
            raise StreamError(f"Could not count the rows of the stream's source table {self.pattern}: {exc.message}",
                              fix=exc.fix or "check the warehouse connection.") from exc

    def history(self, keys: pa.Table | None) -> pa.Table:
        """Every row of the table whose join keys are in ``keys``, typed like :meth:`schema`;
        ``keys=None``: every row."""
        schema = self.schema()
        if keys is not None and keys.num_rows == 0:
            return schema.empty_table()
        query = history_query(self.relation, schema.names, None if keys is None else keys.column_names)
        try:
            with self._session() as engine:
                if keys is None:
                    return engine.fetch_arrow(query).cast(schema)
                engine.register_arrow(KEYS, keys)
                try:
                    return engine.fetch_arrow(query).cast(schema)
                finally:
                    engine.unregister(KEYS)
        except FeatureLayerError as exc:
            raise StreamError(f"Could not read history from the stream's source table {self.pattern}: {exc.message}",
                              fix=exc.fix or "check the warehouse connection.") from exc


# ----------------------------------------------------------------------------- choosing one
def open_event_log(source: StreamSource, store: Any, event_id: str) -> EventLog:
    """The event log of ``source``: its files (a glob the dbt source reads) or its warehouse table.

    ``store`` is the FeatureStore (its settings open the engine). Refuses a seed or a model (their
    tables are replaced by ``dbt build``) and a source with neither a file nor a relation.
    """
    from feature_layer.stream.landing import FileEventLog

    if source.location is not None:
        return FileEventLog(source.location, store.settings.project_dir)
    node = source.node
    if node.resource_type != "source":
        raise StreamError(
            f"stream.source {source.name!r} is a {node.resource_type}: `dbt build` replaces its table, so events "
            "landed there would be lost before the next build read them.",
            fix="stream from a dbt source (`<source>.<table>`): a warehouse table, or Parquet files read as a glob "
            "(dbt-duckdb external_location).")
    if node.relation is None:
        raise StreamError(f"The dbt source {source.name!r} names no warehouse relation and no file.",
                          fix="give it a schema and identifier (a table), or an external_location glob.")
    return table_event_log(node.relation, store.settings, event_id=event_id, source_name=source.name)


def table_event_log(relation: Relation, settings: Any, *, event_id: str, source_name: str = "") -> TableEventLog:
    """A :class:`TableEventLog` on the warehouse of ``settings`` (feature_layer Settings)."""
    from feature_layer.config import warehouse_settings
    from feature_layer.offline.engines import connect, engine_kind

    warehouse = warehouse_settings(settings)
    kind = engine_kind(warehouse)
    if kind.name == "spark":
        raise StreamError(f"{source_name or relation.identifier} is a Spark table; landing events in a Spark table "
                          "is not built (an INSERT there is not one atomic step).",
                          fix="read the source from Parquet files with a glob, or stream from a DuckDB or PostgreSQL "
                          "table.")
    if kind.name == "duckdb" and isinstance(warehouse.path, Path) and not warehouse.path.exists():
        raise StreamError(f"The DuckDB warehouse {warehouse.path} does not exist, so the stream's source table "
                          f"{'.'.join(relation.parts())} cannot be read.",
                          fix="load the source table and run `dbt build` first.")
    return TableEventLog(relation, lambda: connect(warehouse), event_id=event_id,
                         keep_open=kind.capabilities_for(warehouse.type).pooled, source_name=source_name)


__all__ = ["EventLog", "TableEventLog", "first_per_id", "history_query", "insert_new_events", "open_event_log",
           "table_event_log"]
