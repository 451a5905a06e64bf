"""Warehouse engines: run SQL (text or sqlglot trees) and move results as Arrow.

An ``Engine`` is the only place feature_layer talks to the offline warehouse. It renders
sqlglot expressions in its own dialect at the last moment, returns Arrow tables or bounded
streams of Arrow record batches, and maps every driver failure to ``WarehouseError``.

Every engine runs its session in UTC, so naive timestamps mean UTC and ``timestamptz``
values compare correctly against them (see ``docs/training_sets.md``).

Engines are not thread-safe: use one per thread (``connect`` is cheap).
"""

from __future__ import annotations

import io
import re
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from feature_layer.errors import WarehouseError

if TYPE_CHECKING:
    from sqlglot import exp

    from feature_layer.config import WarehouseSettings



class Engine(ABC):
    """A connection to the offline warehouse that speaks Arrow."""

    dialect: str = ""

    def render(self, sql_or_expression: str | exp.Expression) -> str:
        """SQL text for ``sql_or_expression`` in this engine's dialect."""
        if isinstance(sql_or_expression, str):
            return sql_or_expression
        return sql_or_expression.sql(dialect=self.dialect)

    @abstractmethod
    def fetch_arrow(self, sql_or_expression: str | exp.Expression) -> pa.Table:
        """Run a query and return all its rows as one Arrow table."""

    @abstractmethod
    def stream_arrow(
        self, sql_or_expression: str | exp.Expression, batch_size: int = 100_000
    ) -> Iterator[pa.RecordBatch]:
        """Run a query and yield its rows in record batches of at most ``batch_size`` rows.

        Memory stays bounded by the batch size: the warehouse keeps the cursor.
        """

    @abstractmethod
    def execute(self, sql: str | exp.Expression) -> None:
        """Run a statement that returns no rows (DDL, INSERT, SET)."""

    @abstractmethod
    def register_arrow(self, name: str, table: pa.Table) -> None:
        """Make ``table`` queryable as ``name`` (a temporary table or view) in later queries."""

    @abstractmethod
    def unregister(self, name: str) -> None:
        """Drop what ``register_arrow`` created (no error if it is gone)."""

    def schema_of(self, sql_or_expression: str | exp.Expression) -> pa.Schema:
        """The Arrow schema of a query's result, without reading its rows."""
        sql = self.render(sql_or_expression)
        return self.fetch_arrow(f"SELECT * FROM ({sql}) AS __fl_schema LIMIT 0").schema

    @abstractmethod
    def close(self) -> None:
        """Release the connection."""

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _fail(action: str, sql: str, exc: Exception, fix: str) -> WarehouseError:
    first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    snippet = sql if len(sql) < 400 else sql[:400] + " …"
    return WarehouseError(f"The warehouse failed to {action}: {first_line}\nSQL: {snippet}", fix=fix)


_QUERY_FIX = "check that the tables exist (run `dbt run` for this target) and that the SQL is valid for the engine."


class DuckDBEngine(Engine):
    """DuckDB, the embedded default: a file written by dbt-duckdb, or ``:memory:``."""

    dialect = "duckdb"

    def __init__(
        self,
        path: str | Path = ":memory:",
        *,
        schema: str | None = None,
        read_only: bool = False,
        file_search_path: str | Path | None = None,
    ) -> None:
        import duckdb

        self._duckdb = duckdb
        target = str(path)
        try:
            self._con = duckdb.connect(target, read_only=read_only)
            self._con.execute("SET TimeZone = 'UTC'")
            if file_search_path is not None:
                # dbt ran in the project folder, so its views may read relative paths
                # ('data/raw/x.parquet'): resolve them there, whatever our working directory.
                self._con.execute("SET file_search_path = ?", [str(file_search_path)])
            if schema:
                exists = self._con.execute(
                    "SELECT count(*) FROM information_schema.schemata WHERE schema_name = ?", [schema]
                ).fetchone()
                if exists and exists[0]:
                    self._con.execute(f'SET schema = \'{schema.replace(chr(39), chr(39) * 2)}\'')
        except duckdb.Error as exc:
            raise WarehouseError(
                f"Could not open the DuckDB database {target}: {exc}",
                fix="check the `path` of the duckdb target in profiles.yml and that no other process holds "
                "a write lock on the file.",
            ) from exc
        self.path = target

    @property
    def connection(self) -> Any:
        """The underlying ``duckdb.DuckDBPyConnection`` (for advanced use and tests)."""
        return self._con

    def fetch_arrow(self, sql_or_expression: str | exp.Expression) -> pa.Table:
        sql = self.render(sql_or_expression)
        try:
            return self._con.sql(sql).to_arrow_table()
        except self._duckdb.Error as exc:
            raise _fail("run a query", sql, exc, _QUERY_FIX) from exc

    def stream_arrow(
        self, sql_or_expression: str | exp.Expression, batch_size: int = 100_000
    ) -> Iterator[pa.RecordBatch]:
        sql = self.render(sql_or_expression)
        try:
            reader = self._con.sql(sql).to_arrow_reader(batch_size)
        except self._duckdb.Error as exc:
            raise _fail("run a query", sql, exc, _QUERY_FIX) from exc
        return self._iterate(reader, sql)

    def _iterate(self, reader: pa.RecordBatchReader, sql: str) -> Iterator[pa.RecordBatch]:
        try:
            for batch in reader:
                if batch.num_rows:
                    yield batch
        except (self._duckdb.Error, pa.ArrowException) as exc:
            raise _fail("stream a query", sql, exc, _QUERY_FIX) from exc

    def execute(self, sql: str | exp.Expression) -> None:
        text = self.render(sql)
        try:
            self._con.execute(text)
        except self._duckdb.Error as exc:
            raise _fail("run a statement", text, exc, _QUERY_FIX) from exc

    def register_arrow(self, name: str, table: pa.Table) -> None:
        try:
            self._con.register(name, table)
        except self._duckdb.Error as exc:
            raise _fail("register an Arrow table", name, exc, "use a name that is not taken.") from exc

    def unregister(self, name: str) -> None:
        try:
            self._con.unregister(name)
        except self._duckdb.Error:
            pass

    def close(self) -> None:
        try:
            self._con.close()
        except self._duckdb.Error:
            pass


# PostgreSQL type OIDs → Arrow types. Anything else is left to Arrow's inference.
_PG_ARROW_TYPES: dict[int, pa.DataType] = {
    16: pa.bool_(),
    20: pa.int64(),
    21: pa.int16(),
    23: pa.int32(),
    700: pa.float32(),
    701: pa.float64(),
    25: pa.string(),
    1042: pa.string(),
    1043: pa.string(),
    19: pa.string(),
    1114: pa.timestamp("us"),
    1184: pa.timestamp("us", tz="UTC"),
    1082: pa.date32(),
    2950: pa.string(),
}


_SELECT = re.compile(r"^(select|with)\b", re.IGNORECASE)
# Types whose PostgreSQL CSV text Arrow parses exactly (session in UTC, DateStyle ISO).
_CSV_SAFE: dict[int, pa.DataType] = {
    16: pa.bool_(),
    20: pa.int64(),
    21: pa.int16(),
    23: pa.int32(),
    700: pa.float32(),
    701: pa.float64(),
    25: pa.string(),
    1043: pa.string(),
    1114: pa.timestamp("us"),
    1184: pa.timestamp("us", tz="UTC"),
    1082: pa.date32(),
}


def _arrow_to_pg_type(field: pa.Field) -> str:
    t = field.type
    if pa.types.is_boolean(t):
        return "boolean"
    if pa.types.is_int8(t) or pa.types.is_int16(t) or pa.types.is_uint8(t):
        return "smallint"
    if pa.types.is_int32(t) or pa.types.is_uint16(t):
        return "integer"
    if pa.types.is_int64(t) or pa.types.is_uint32(t):
        return "bigint"
    if pa.types.is_uint64(t):
        return "numeric(20, 0)"
    if pa.types.is_float16(t) or pa.types.is_float32(t):
        return "real"
    if pa.types.is_float64(t):
        return "double precision"
    if pa.types.is_decimal(t):
        return f"numeric({t.precision}, {t.scale})"
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return "text"
    if pa.types.is_timestamp(t):
        return "timestamptz" if t.tz else "timestamp"
    if pa.types.is_date(t):
        return "date"
    raise WarehouseError(
        f"Column {field.name!r} has Arrow type {t}, which cannot be loaded into PostgreSQL.",
        fix="cast it to a number, string, boolean, date or timestamp first.",
    )


def _quote_pg(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class PostgresEngine(Engine):
    """PostgreSQL through psycopg2, with the connection of the dbt-postgres target."""

    dialect = "postgres"

    def __init__(
        self,
        *,
        host: str | None = "127.0.0.1",
        port: int | None = 5432,
        user: str | None = None,
        password: str | None = None,
        dbname: str | None = None,
        schema: str | None = None,
    ) -> None:
        from feature_layer.extras import require

        psycopg2 = require("psycopg2", "The postgres target")
        self._pg = psycopg2
        try:
            self._con = psycopg2.connect(
                host=host, port=port, user=user, password=password, dbname=dbname, application_name="feature_layer"
            )
            with self._con.cursor() as cur:
                cur.execute("SET TIME ZONE 'UTC'")
                cur.execute("SET DateStyle TO ISO, YMD")
                if schema:
                    cur.execute(f"SET search_path TO {_quote_pg(schema)}, public")
            self._con.commit()
        except psycopg2.Error as exc:
            raise WarehouseError(
                f"Could not connect to PostgreSQL at {host}:{port} (database {dbname!r}, user {user!r}): "
                f"{str(exc).strip()}",
                fix="check that the server is running and the postgres target in profiles.yml is right.",
            ) from exc
        self.schema = schema

    @property
    def connection(self) -> Any:
        """The underlying psycopg2 connection (for advanced use and tests)."""
        return self._con

    def _to_table(self, description: Any, rows: list[tuple]) -> pa.Table:
        names = [d.name for d in description]
        columns = list(zip(*rows, strict=True)) if rows else [() for _ in names]
        arrays = []
        for d, values in zip(description, columns, strict=True):
            arrow_type = _PG_ARROW_TYPES.get(d.type_code)
            if arrow_type is None and not values:
                arrow_type = pa.null()
            arrays.append(pa.array(values, type=arrow_type))
        return pa.Table.from_arrays(arrays, names=names)

    def fetch_arrow(self, sql_or_expression: str | exp.Expression) -> pa.Table:
        """Rows as Arrow: ``COPY … TO STDOUT`` parsed by Arrow's CSV reader for plain column
        types (no Python object per value), else a client cursor."""
        sql = self.render(sql_or_expression)
        fast = self._fetch_via_copy(sql)
        if fast is not None:
            return fast
        try:
            with self._con.cursor() as cur:
                cur.execute(sql)
                rows = cur.fetchall() if cur.description else []
                table = self._to_table(cur.description or [], rows)
            self._con.commit()
            return table
        except self._pg.Error as exc:
            self._con.rollback()
            raise _fail("run a query", sql, exc, _QUERY_FIX) from exc

    def _fetch_via_copy(self, sql: str) -> pa.Table | None:
        """``None`` when the query is not a plain SELECT of CSV-safe types (the caller falls back)."""
        import pyarrow.csv as pacsv

        stripped = sql.strip().rstrip(";")
        if not _SELECT.match(stripped):
            return None
        try:
            with self._con.cursor() as cur:
                cur.execute(f"SELECT * FROM ({stripped}) AS __fl_probe LIMIT 0")
                description = cur.description
            self._con.commit()
        except self._pg.Error:
            self._con.rollback()
            return None
        names = [d.name for d in description]
        types = [_CSV_SAFE.get(d.type_code) for d in description]
        if not names or None in types or len(set(names)) != len(names):
            return None
        buffer = io.BytesIO()
        try:
            with self._con.cursor() as cur:
                cur.copy_expert(f"COPY ({stripped}) TO STDOUT WITH (FORMAT csv)", buffer)
            self._con.commit()
        except self._pg.Error as exc:
            self._con.rollback()
            raise _fail("run a query", sql, exc, _QUERY_FIX) from exc
        if buffer.tell() == 0:
            return pa.table({n: pa.array([], t) for n, t in zip(names, types, strict=True)})
        buffer.seek(0)
        column_types = dict(zip(names, types, strict=True))
        return pacsv.read_csv(
            buffer,
            read_options=pacsv.ReadOptions(column_names=names, block_size=1 << 24),
            parse_options=pacsv.ParseOptions(newlines_in_values=True),
            convert_options=pacsv.ConvertOptions(
                column_types=column_types,
                null_values=[""],
                strings_can_be_null=True,
                quoted_strings_can_be_null=False,
                true_values=["t"],
                false_values=["f"],
            ),
        ).cast(pa.schema([pa.field(n, t) for n, t in column_types.items()]))

    def stream_arrow(
        self, sql_or_expression: str | exp.Expression, batch_size: int = 100_000
    ) -> Iterator[pa.RecordBatch]:
        sql = self.render(sql_or_expression)
        return self._stream(sql, batch_size)

    def _stream(self, sql: str, batch_size: int) -> Iterator[pa.RecordBatch]:
        name = f"fl_cursor_{uuid.uuid4().hex[:12]}"
        # WITH HOLD: other statements on this connection (which commit) do not close the stream.
        cur = self._con.cursor(name=name, withhold=True)
        cur.itersize = batch_size
        try:
            cur.execute(sql)
            while True:
                rows = cur.fetchmany(batch_size)
                if not rows:
                    break
                yield from self._to_table(cur.description, rows).to_batches()
            cur.close()
            self._con.commit()
        except self._pg.Error as exc:
            self._con.rollback()
            raise _fail("stream a query", sql, exc, _QUERY_FIX) from exc
        finally:
            if not cur.closed:
                try:
                    cur.close()
                    self._con.rollback()
                except self._pg.Error:
                    pass

    def execute(self, sql: str | exp.Expression) -> None:
        text = self.render(sql)
        try:
            with self._con.cursor() as cur:
                cur.execute(text)
            self._con.commit()
        except self._pg.Error as exc:
            self._con.rollback()
            raise _fail("run a statement", text, exc, _QUERY_FIX) from exc

    def register_arrow(self, name: str, table: pa.Table) -> None:
        """Load ``table`` into a temporary table ``name`` with COPY (CSV, nulls kept apart from '')."""
        import pyarrow.csv as pacsv

        for index, field in enumerate(table.schema):
            if pa.types.is_dictionary(field.type):  # pandas categoricals: load the values
                table = table.set_column(index, field.name, table.column(index).cast(field.type.value_type))
        columns = ", ".join(f"{_quote_pg(f.name)} {_arrow_to_pg_type(f)}" for f in table.schema)
        buffer = io.BytesIO()
        if table.num_rows:
            pacsv.write_csv(
                table,
                buffer,
                write_options=pacsv.WriteOptions(include_header=False, quoting_style="all_valid"),
            )
        buffer.seek(0)
        try:
            with self._con.cursor() as cur:
                cur.execute(f"DROP TABLE IF EXISTS {_quote_pg(name)}")
                cur.execute(f"CREATE TEMPORARY TABLE {_quote_pg(name)} ({columns})")
                if table.num_rows:
                    cur.copy_expert(f"COPY {_quote_pg(name)} FROM STDIN WITH (FORMAT csv)", buffer)
                cur.execute(f"ANALYZE {_quote_pg(name)}")
            self._con.commit()
        except self._pg.Error as exc:
            self._con.rollback()
            raise _fail("load an Arrow table", name, exc, "check the column types of the data.") from exc

    def unregister(self, name: str) -> None:
        try:
            self.execute(f"DROP TABLE IF EXISTS {_quote_pg(name)}")
        except WarehouseError:
            pass

    def close(self) -> None:
        try:
            self._con.close()
        except self._pg.Error:
            pass


def connect(settings: WarehouseSettings) -> Engine:
    """Open the engine for a dbt target (``duckdb`` or ``postgres``)."""
    if settings.type == "duckdb":
        from feature_layer.config import require_warehouse_file

        require_warehouse_file(settings)  # never let duckdb.connect create an empty database
        path: str | Path = settings.path or ":memory:"
        if Path(path).name == ":memory:":
            path = ":memory:"
        return DuckDBEngine(path, schema=settings.schema, file_search_path=settings.project_dir)
    if settings.type == "postgres":
        return PostgresEngine(
            host=settings.host,
            port=settings.port,
            user=settings.user,
            password=settings.password,
            dbname=settings.dbname,
            schema=settings.schema,
        )
    raise WarehouseError(
        f"Target {settings.target!r} uses adapter {settings.type!r}, which feature_layer cannot query yet.",
        fix="use a duckdb or postgres target.",
    )
