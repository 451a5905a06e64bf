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
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from feature_layer.errors import WarehouseError

if TYPE_CHECKING:
    from sqlglot import exp




@dataclass(frozen=True)
class EntityTableFacts:
    """Catalog facts about a warehouse table used as entity rows (``Engine.entity_table_facts``)."""

    row_locator: str | None = None
    """A system column ordering the rows as a scan reads them (``EntitySpine.row_locator``)."""
    timestamp_not_null: bool = False
    """The timestamp column is declared NOT NULL: the null check can be skipped."""


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

    def entity_table_facts(self, table: exp.Table, timestamp: str) -> EntityTableFacts:
        """What the warehouse catalog says of ``table`` read as entity rows (by default nothing):
        a row locator giving its scan order, and whether ``timestamp`` is declared NOT NULL."""
        return EntityTableFacts()

    def schema_of(self, sql_or_expression: str | exp.Expression) -> pa.Schema:
        """The Arrow schema of a query's result, without reading its rows."""
        sql = self.render(sql_or_expression)
        return self.fetch_arrow(f"SELECT * FROM ({sql}) AS __fl_schema LIMIT 0").schema

    def has_rows(self, query: exp.Select) -> bool:
        """Whether ``query`` returns at least one row (its first row at most is read)."""
        return self.fetch_arrow(query.limit(1)).num_rows > 0

    @abstractmethod
    def close(self) -> None:
        """Release the connection."""

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _fail(action: str, sql: str, exc: Exception, fix: str, *, lead: str = "", whole: bool = False) -> WarehouseError:
    text = str(exc).strip()
    if whole:  # every line of the driver's message, on one line
        first_line = " ".join(text.split()) or type(exc).__name__
    else:
        first_line = text.splitlines()[0] if text else type(exc).__name__
    snippet = sql if len(sql) < 400 else sql[:400] + " …"
    return WarehouseError(f"{lead}The warehouse failed to {action}: {first_line}\nSQL: {snippet}", fix=fix)


# ----------------------------------------------------------------------------- what happened → the fix
# A warehouse error is mapped to a fix by what actually happened, never to a blanket
# "run dbt run": each kind below names its own cause and remedy.

_MISSING_COLUMN = re.compile(r'column "?([\w.]+)"? (?:does not exist|not found)|Referenced column "([^"]+)"', re.I)
_MISSING_TABLE = re.compile(r'(?:Table|relation|Schema) (?:with name )?"?([^"\s!]+)"? does not exist', re.I)


def _target_flag(target: str | None) -> str:
    return f" --target {target}" if target else ""


def _named(pattern: re.Pattern[str], message: str) -> str:
    match = pattern.search(message)
    name = next((g for g in match.groups() if g), None) if match else None
    return repr(name) if name else "it"


def fix_for(kind: str, message: str, target: str | None = None) -> str:
    """The remedy for a warehouse failure of ``kind`` (see ``_duckdb_kind`` / ``_postgres_kind``)."""
    build = f"`dbt build{_target_flag(target)}`"
    if kind == "missing_table":
        return (
            f"the table {_named(_MISSING_TABLE, message)} is not in the warehouse of this target: build it with "
            f"{build} (or `dbt build -s <model>{_target_flag(target)}`), and check that profiles.yml points at the "
            "warehouse dbt built."
        )
    if kind == "missing_column":
        return (
            f"the warehouse table has no column {_named(_MISSING_COLUMN, message)}, which the dbt artifacts declare: "
            f"the table is older than its model (rebuild it with {build}), or target/catalog.json is stale "
            "(refresh it with `dbt docs generate`)."
        )
    if kind == "cast":
        return (
            "a value could not be converted to the type feature_layer asked for: fix the column's `dtype` "
            "override (meta.feature_layer.dtype in the model's YAML) to match the warehouse column's type, or cast "
            "the column in the model's SQL."
        )
    if kind == "lock":
        return (
            "another process holds a lock on the data (a `dbt build`, another materialization or a feature-layer "
            "command writing a table): wait for it to finish and retry."
        )
    if kind == "connection":
        return (
            "the warehouse closed the connection while the query ran (an administrator or pg_terminate_backend, a "
            "server restart, a network drop or an idle timeout); nothing partial was kept: check that the server is "
            "up and run the command again."
        )
    if kind == "canceled":
        return (
            "the query was canceled (statement_timeout, lock_timeout or pg_cancel_backend): raise the timeout for "
            "the feature_layer user or rerun when the warehouse is less busy."
        )
    if kind == "permission":
        return "grant the target's user SELECT on the feature tables (and CREATE on the schema for to_table)."
    if kind == "read_only":
        return "this engine opened the DuckDB file read-only: open it with read_only=False (or the default) to write."
    if kind == "syntax":
        return "the SQL is not valid for this engine; if feature_layer generated it, please report it with the SQL."
    return "check the SQL above against the warehouse; the error says what the engine refused."


def _duckdb_kind(exc: Exception) -> str:
    import duckdb

    message = str(exc)
    if "Could not set lock" in message or "Conflicting lock" in message:
        return "lock"
    if isinstance(exc, duckdb.ConnectionException) and "different configuration" in message:
        return "config"
    if isinstance(exc, duckdb.CatalogException) and _MISSING_TABLE.search(message):
        return "missing_table"
    if isinstance(exc, duckdb.BinderException) and _MISSING_COLUMN.search(message):
        return "missing_column"
    if isinstance(exc, duckdb.ConversionException) or "Could not convert" in message:
        return "cast"
    if isinstance(exc, duckdb.ParserException):
        return "syntax"
    if isinstance(exc, duckdb.InterruptException):
        return "canceled"
    if _writes_a_read_only_file(exc):
        return "read_only"
    return "other"


def _duckdb_fix(exc: Exception, target: str | None) -> str:
    kind = _duckdb_kind(exc)
    return fix_for("lock" if kind == "config" else kind, str(exc), target)


# SQLSTATE codes (https://www.postgresql.org/docs/current/errcodes-appendix.html) by what happened.
_PG_KINDS = {
    "42P01": "missing_table",
    "3F000": "missing_table",
    "42703": "missing_column",
    "42804": "cast",
    "42846": "cast",
    "42883": "cast",  # operator does not exist: e.g. text = integer on a join key
    "55P03": "lock",
    "40P01": "lock",
    "40001": "lock",
    "57014": "canceled",
    "42501": "permission",
    "42601": "syntax",
}


def _postgres_kind(exc: Exception) -> str:
    from feature_layer.extras import require

    psycopg2 = require("psycopg2", "The postgres target")  # installed: exc came from it

    code = getattr(exc, "pgcode", None) or ""
    if code in _PG_KINDS:
        return _PG_KINDS[code]
    if code.startswith("22"):  # data exception: invalid text, out of range, bad datetime …
        return "cast"
    if code.startswith(("08", "57P")) or isinstance(exc, psycopg2.InterfaceError):
        return "connection"
    if isinstance(exc, psycopg2.OperationalError) and not code:
        return "connection"  # the server went away: psycopg2 has no SQLSTATE for it
    return "other"


def _writes_a_read_only_file(exc: Exception) -> bool:
    import duckdb

    return isinstance(exc, duckdb.InvalidInputException) and "read-only mode" in str(exc)


def _lock_holder(message: str) -> str:
    match = re.search(r"held in (.+?) \(PID (\d+)\)", message)
    return f"process {match.group(2)} ({match.group(1)})" if match else "another process"


_SPILL_FOLDERS: dict[str, str] = {}


def _spill_folder(path: str) -> str:
    """DuckDB's spill folder for database ``path`` in this process, removed when the process ends.

    DuckDB keeps one database instance per file per process (engines on one file share it), and
    names its temporary files per instance: one folder per (process, file) keeps two processes,
    or two files, from ever sharing them, and outlives every engine that may have spilled there.
    """
    folder = _SPILL_FOLDERS.get(path)
    if folder is None:
        import atexit
        import shutil
        import tempfile

        folder = _SPILL_FOLDERS[path] = tempfile.mkdtemp(prefix="feature_layer-duckdb-")
        atexit.register(shutil.rmtree, folder, True)
    return folder


class DuckDBEngine(Engine):
    """DuckDB, the embedded default: a file written by dbt-duckdb, or ``:memory:``.

    A database file is opened **read-only** unless ``read_only=False``: DuckDB lets many
    processes read one file at once but only one hold it for writing, so materializations of
    different views (and training sets) run side by side. A statement that writes to the file
    (``to_table``) briefly reopens it for writing, replays the Arrow tables registered on this
    engine, runs, and goes back to reading; ``read_only=True`` never writes. While another
    process holds the file (``dbt build``, another engine's write), opening waits up to
    ``lock_wait`` seconds, then fails naming that process.
    """

    dialect = "duckdb"

    def __init__(
        self,
        path: str | Path = ":memory:",
        *,
        schema: str | None = None,
        read_only: bool | None = None,
        file_search_path: str | Path | None = None,
        lock_wait: float = 10.0,
        target: str | None = None,
        memory_limit: int | str | None = None,
        temp_directory: str | Path | None = None,
    ) -> None:
        import duckdb

        self._duckdb = duckdb
        self.path = str(path)
        self.memory_limit = f"{memory_limit}B" if isinstance(memory_limit, int) else memory_limit
        """DuckDB's ``memory_limit`` (e.g. ``1000000000B``, ``2GB``); None keeps DuckDB's default."""
        if memory_limit is not None and temp_directory is None:
            temp_directory = _spill_folder(self.path)
        self._temp_directory = temp_directory
        self.target = target
        self._schema = schema
        self._file_search_path = file_search_path
        self._lock_wait = lock_wait
        self._in_memory = Path(self.path).name == ":memory:" or self.path == ""
        self._may_write = read_only is None  # a file opened for reading that may upgrade for a write
        self._registered: dict[str, pa.Table] = {}
        self._con = self._open(read_only=read_only is not False and not self._in_memory)

    # -- opening ------------------------------------------------------------------------------
    def _open(self, *, read_only: bool) -> Any:
        """A configured connection, waiting out other processes' locks for ``lock_wait`` seconds."""
        deadline = time.monotonic() + self._lock_wait
        pause = 0.02
        while True:
            try:
                con = self._connect(read_only)
                break
            except self._duckdb.Error as exc:
                if _duckdb_kind(exc) != "lock" or time.monotonic() >= deadline:
                    raise self._open_error(exc, read_only) from exc
            time.sleep(pause)
            pause = min(pause * 2, 0.25)
        try:
            self._configure(con)
        except self._duckdb.Error as exc:
            con.close()
            raise self._open_error(exc, read_only) from exc
        return con

    def _connect(self, read_only: bool) -> Any:
        try:
            return self._duckdb.connect(self.path, read_only=read_only)
        except self._duckdb.ConnectionException as exc:
            if read_only and "different configuration" in str(exc):
                # This process already has the file open for writing (a fixture, an in-process
                # dbt run): share that database instead; the lock is ours either way.
                return self._duckdb.connect(self.path)
            raise

    def _configure(self, con: Any) -> None:
        con.execute("SET TimeZone = 'UTC'")
        if self.memory_limit is not None:
            # The budget covers DuckDB's operators and buffer cache; beyond it they spill to the
            # temp directory. Arrow batches handed to Python are outside it (one batch at a time).
            con.execute("SET memory_limit = ?", [self.memory_limit])
            if self._temp_directory is not None:
                try:
                    con.execute("SET temp_directory = ?", [str(self._temp_directory)])
                except self._duckdb.Error:
                    pass  # this process's database already spills elsewhere (opened by dbt or another engine)
        if self._file_search_path is not None:
            # dbt ran in the project folder, so its views may read relative paths
            # ('data/raw/x.parquet'): resolve them there, whatever our working directory.
            con.execute("SET file_search_path = ?", [str(self._file_search_path)])
        if self._schema:
            exists = con.execute(
                "SELECT count(*) FROM information_schema.schemata WHERE schema_name = ?", [self._schema]
            ).fetchone()
            if exists and exists[0]:
                con.execute(f"SET schema = '{self._schema.replace(chr(39), chr(39) * 2)}'")
        for name, table in self._registered.items():
            con.register(name, table)

    def _open_error(self, exc: Exception, read_only: bool) -> WarehouseError:
        kind = _duckdb_kind(exc)
        message = str(exc).strip()
        if kind == "lock":
            holder = _lock_holder(message)
            mode = "read" if read_only else "write to"
            return WarehouseError(
                f"Could not {mode} the DuckDB database {self.path}: {holder} holds it "
                f"{'for writing' if read_only else ''} (waited {self._lock_wait:g} s). {message}".replace("  ", " "),
                fix="wait for that process to finish (a `dbt build`, or another feature-layer command writing a "
                "table) and retry; DuckDB lets many processes read a file at once, but a writer excludes everyone.",
            )
        if kind == "config":
            return WarehouseError(
                f"Could not reopen the DuckDB database {self.path} for writing: another connection in this "
                f"process has it open for reading. {message}",
                fix="close the other FeatureStore or engine on this file (or open this one with "
                "read_only=False) before writing a table.",
            )
        if "does not exist" in message:
            return WarehouseError(
                f"The DuckDB database {self.path} does not exist.",
                fix=f"build it with `dbt build{_target_flag(self.target)}` in the dbt project, or check the `path` "
                "of the duckdb target in profiles.yml.",
            )
        return WarehouseError(
            f"Could not open the DuckDB database {self.path}: {message}",
            fix="check the `path` of the duckdb target in profiles.yml and that the file is a DuckDB database "
            "written by a compatible DuckDB version.",
        )

    @property
    def connection(self) -> Any:
        """The underlying ``duckdb.DuckDBPyConnection`` (for advanced use and tests)."""
        return self._con

    # -- queries ------------------------------------------------------------------------------
    def _failure(self, action: str, sql: str, exc: Exception) -> WarehouseError:
        return _fail(action, sql, exc, _duckdb_fix(exc, self.target))

    def fetch_arrow(self, sql_or_expression: str | exp.Expression) -> pa.Table:
        sql = self.render(sql_or_expression)
        try:
            return self._con.sql(sql).to_arrow_table()
        except self._duckdb.Error as exc:
            raise self._failure("run a query", sql, exc) from exc

    def stream_arrow(
        self, sql_or_expression: str | exp.Expression, batch_size: int = 100_000
    ) -> Iterator[pa.RecordBatch]:
        sql = self.render(sql_or_expression)
        try:
            reader = self._con.sql(sql).to_arrow_reader(batch_size)
        except self._duckdb.Error as exc:
            raise self._failure("run a query", sql, exc) from exc
        return self._iterate(reader, sql)

    def _iterate(self, reader: pa.RecordBatchReader, sql: str) -> Iterator[pa.RecordBatch]:
        try:
            for batch in reader:
                if batch.num_rows:
                    yield batch
        except (self._duckdb.Error, pa.ArrowException) as exc:
            raise self._failure("stream a query", sql, exc) from exc

    def execute(self, sql: str | exp.Expression) -> None:
        text = self.render(sql)
        try:
            self._con.execute(text)
        except self._duckdb.Error as exc:
            if not (self._may_write and _writes_a_read_only_file(exc)):
                raise self._failure("run a statement", text, exc) from exc
            self._execute_writing(text)

    def _execute_writing(self, text: str) -> None:
        """Run ``text`` on the file opened for writing, then go back to reading (see the class doc)."""
        self._con.close()
        try:
            writer = self._open(read_only=False)
        except WarehouseError:
            self._con = self._open(read_only=True)
            raise
        try:
            writer.execute(text)
        except self._duckdb.Error as exc:
            raise self._failure("run a statement", text, exc) from exc
        finally:
            writer.close()
            self._con = self._open(read_only=True)

    def register_arrow(self, name: str, table: pa.Table) -> None:
        try:
            self._con.register(name, table)
        except self._duckdb.Error as exc:
            raise _fail("register an Arrow table", name, exc, "use a name that is not taken.") from exc
        self._registered[name] = table

    def unregister(self, name: str) -> None:
        self._registered.pop(name, None)
        try:
            self._con.unregister(name)
        except self._duckdb.Error:
            pass

    def close(self) -> None:
        self._registered.clear()
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
    """PostgreSQL through psycopg2, with the connection of the dbt-postgres target.

    Every failure is a ``WarehouseError`` naming what happened (``fix_for``). A connection the
    server ended (``pg_terminate_backend``, a restart, a network drop) fails the running call
    with that cause, never with psycopg2's follow-up ``InterfaceError``; the next call opens a
    new connection and reloads the Arrow tables registered on this engine.
    """

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
        target: str | None = None,
        session_settings: dict[str, str] | None = None,
    ) -> None:
        from feature_layer.extras import require

        psycopg2 = require("psycopg2", "The postgres target")
        self._pg = psycopg2
        self._session_settings = dict(session_settings or {})
        """Set on every connection (``offline.memory_limit``: ``kinds.postgres_session_settings``)."""
        self._params = {"host": host, "port": port, "user": user, "password": password, "dbname": dbname}
        self.schema = schema
        self.target = target
        self._registered: dict[str, pa.Table] = {}
        self._con = self._connect()

    def _connect(self) -> Any:
        params = self._params
        try:
            con = self._pg.connect(**params, application_name="feature_layer")
            with con.cursor() as cur:
                cur.execute("SET TIME ZONE 'UTC'")
                cur.execute("SET DateStyle TO ISO, YMD")
                if self.schema:
                    cur.execute(f"SET search_path TO {_quote_pg(self.schema)}, public")
                for name, value in self._session_settings.items():
                    cur.execute("SELECT set_config(%s, %s, false)", (name, value))
            con.commit()
        except self._pg.Error as exc:
            raise WarehouseError(
                f"Could not connect to PostgreSQL at {params['host']}:{params['port']} (database "
                f"{params['dbname']!r}, user {params['user']!r}): {str(exc).strip()}",
                fix="check that the server is running and the postgres target in profiles.yml is right.",
            ) from exc
        return con

    def _live(self) -> Any:
        """The connection, reopened (with the registered tables reloaded) if the server ended it."""
        if self._con.closed:
            self._con = self._connect()
            for name, table in self._registered.items():
                self._load(name, table)
        return self._con

    def _rollback(self) -> None:
        """Roll back after a failure; a connection that is already gone needs nothing."""
        if self._con.closed:
            return
        try:
            self._con.rollback()
        except self._pg.Error:
            pass

    def _failure(self, action: str, sql: str, exc: Exception, fix: str | None = None) -> WarehouseError:
        self._rollback()
        kind = _postgres_kind(exc)
        lead = ""
        if kind == "connection":
            lead = f"The connection to PostgreSQL at {self._params['host']}:{self._params['port']} was lost. "
        elif fix is None:
            fix = fix_for(kind, str(exc), self.target)
        return _fail(action, sql, exc, fix or fix_for(kind, str(exc), self.target), lead=lead, whole=bool(lead))

    @property
    def connection(self) -> Any:
        """The underlying psycopg2 connection (for advanced use and tests)."""
        return self._live()

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
            con = self._live()
            with con.cursor() as cur:
                cur.execute(sql)
                rows = cur.fetchall() if cur.description else []
                table = self._to_table(cur.description or [], rows)
            con.commit()
            return table
        except self._pg.Error as exc:
            raise self._failure("run a query", sql, exc) from exc

    def _fetch_via_copy(self, sql: str) -> pa.Table | None:
        """``None`` when the query is not a plain SELECT of CSV-safe types (the caller falls back)."""
        import pyarrow.csv as pacsv

        stripped = sql.strip().rstrip(";")
        if not _SELECT.match(stripped):
            return None
        con = self._live()
        try:
            with con.cursor() as cur:
                # Zero rows never repay a JIT compile, which the planner costs on the whole query
                # under the LIMIT (a sort's start-up cost): without this, 0.1-0.3 s per probe.
                cur.execute("SET LOCAL jit = off")
                cur.execute(f"SELECT * FROM ({stripped}) AS __fl_probe LIMIT 0")
                description = cur.description
            con.commit()
        except self._pg.Error as exc:
            if _postgres_kind(exc) == "connection":
                raise self._failure("run a query", sql, exc) from exc
            self._rollback()
            return None
        names = [d.name for d in description]
        types = [_CSV_SAFE.get(d.type_code) for d in description]
        if not names or None in types or len(set(names)) != len(names):
            return None
        buffer = io.BytesIO()
        try:
            with con.cursor() as cur:
                cur.copy_expert(f"COPY ({stripped}) TO STDOUT WITH (FORMAT csv)", buffer)
            con.commit()
        except self._pg.Error as exc:
            raise self._failure("run a query", sql, exc) from exc
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

    def entity_table_facts(self, table: exp.Table, timestamp: str) -> EntityTableFacts:
        """From ``pg_class``: a plain heap table (or materialized view) without inheritance
        children is read in ``ctid`` order, which is unique and its scan order; and whether
        ``timestamp`` is NOT NULL. A name in another database, or not found, tells nothing."""
        if table.catalog:
            return EntityTableFacts()
        bare = table.copy()
        bare.set("alias", None)
        name = bare.sql(dialect="postgres")
        query = (
            "SELECT c.relkind IN ('r', 'm') AND NOT c.relhassubclass AS heap, coalesce(a.attnotnull, false)"
            " FROM pg_class c LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = %s"
            " AND a.attnum > 0 AND NOT a.attisdropped WHERE c.oid = to_regclass(%s)"
        )
        try:
            con = self._live()
            with con.cursor() as cur:
                cur.execute(query, (timestamp, name))
                row = cur.fetchone()
            con.commit()
        except self._pg.Error as exc:
            if _postgres_kind(exc) == "connection":
                raise self._failure("read the catalog", query, exc) from exc
            self._rollback()
            return EntityTableFacts()
        if row is None:
            return EntityTableFacts()
        return EntityTableFacts(row_locator="ctid" if row[0] else None, timestamp_not_null=bool(row[1]))

    def _stream(self, sql: str, batch_size: int) -> Iterator[pa.RecordBatch]:
        name = f"fl_cursor_{uuid.uuid4().hex[:12]}"
        con = self._live()
        # WITH HOLD: other statements on this connection (which commit) do not close the stream.
        cur = con.cursor(name=name, withhold=True)
        cur.itersize = batch_size
        try:
            cur.execute(sql)
            while True:
                rows = cur.fetchmany(batch_size)
                if not rows:
                    break
                yield from self._to_table(cur.description, rows).to_batches()
            cur.close()
            con.commit()
        except self._pg.Error as exc:
            raise self._failure("stream a query", sql, exc) from exc
        finally:
            if not cur.closed and not con.closed:
                try:
                    cur.close()
                    con.rollback()
                except self._pg.Error:
                    pass

    def execute(self, sql: str | exp.Expression) -> None:
        text = self.render(sql)
        try:
            con = self._live()
            with con.cursor() as cur:
                cur.execute(text)
            con.commit()
        except self._pg.Error as exc:
            raise self._failure("run a statement", text, exc) from exc

    def register_arrow(self, name: str, table: pa.Table) -> None:
        """Load ``table`` into a temporary table ``name`` with COPY (CSV, nulls kept apart from '')."""
        for index, field in enumerate(table.schema):
            if pa.types.is_dictionary(field.type):  # pandas categoricals: load the values
                table = table.set_column(index, field.name, table.column(index).cast(field.type.value_type))
        self._live()
        self._load(name, table)
        self._registered[name] = table

    def _load(self, name: str, table: pa.Table) -> None:
        import pyarrow.csv as pacsv

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
            kind = _postgres_kind(exc)
            fix = None if kind in {"connection", "lock", "canceled"} else "check the column types of the data."
            raise self._failure("load an Arrow table", name, exc, fix) from exc

    def unregister(self, name: str) -> None:
        self._registered.pop(name, None)
        if self._con.closed:
            return  # its temporary tables went with it
        try:
            self.execute(f"DROP TABLE IF EXISTS {_quote_pg(name)}")
        except WarehouseError:
            pass

    def close(self) -> None:
        self._registered.clear()
        try:
            self._con.close()
        except self._pg.Error:
            pass
