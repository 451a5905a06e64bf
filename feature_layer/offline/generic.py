"""The generic engine: any dbt adapter, through the adapter's own connection.

For a target whose adapter has no native Arrow path (Snowflake, BigQuery, Trino, Redshift, …)
feature_layer asks dbt itself: the profile is rendered by dbt's own renderer
(``dbt.config.profile.Profile``, ``env_var`` and all), the credentials come from the
adapter plugin (``dbt.adapters.factory``), and the connection is opened by the adapter's
``ConnectionManager`` — the same retries, keepalives and session settings ``dbt run`` uses.
Rows come back through the connection's DB-API cursor (``fetchmany`` per batch), or, for
adapters whose handle has no cursor, ``adapter.execute(sql, fetch=True)`` (an agate table);
either way they become Arrow here, one Python object per value: slower than a native path,
but it works wherever dbt does. SQL is generated in the adapter's sqlglot dialect
(``sql.dialects.dialect_for_adapter``).

Memory: results are read ``fetchmany`` by ``fetchmany``, each chunk turned into an Arrow record
batch before the next is fetched, so Python holds one chunk of Python values at a time
(``fetch_arrow`` concatenates the Arrow batches: compact columns, not tuples). On psycopg2
(dbt-postgres) the cursor is a server-side one (``DECLARE … CURSOR``), since psycopg2's plain
cursor receives the whole result before the first ``fetchmany``. With ``offline.memory_limit``
a chunk is at most :func:`batch_rows` rows (a share of the budget at an estimated
:data:`VALUE_BYTES` per Python value), and the session gets the adapter's own budget settings
where there are any (:data:`BUDGET_SETTINGS`: DuckDB's ``memory_limit``, PostgreSQL's
``work_mem`` split). (The ``adapter.execute`` path, for handles without a cursor, receives the
whole result as one agate table: dbt gives no way to stream it.) Uploaded entity rows go to a session temporary table, written as
``INSERT … VALUES`` in chunks (or inline VALUES where the adapter has no temporary tables).
"""

from __future__ import annotations

import contextvars
import dataclasses
import multiprocessing
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc

from feature_layer.errors import ConfigError, WarehouseError
from feature_layer.offline.engine import _MISSING_COLUMN, _MISSING_TABLE, Engine, _fail, fix_for

if TYPE_CHECKING:
    from sqlglot import exp

INSERT_ROWS = 1000
"""Rows per ``INSERT … VALUES`` statement when uploading (many engines cap a VALUES list)."""

SESSION_UTC: dict[str, str] = {
    "duckdb": "SET TimeZone = 'UTC'",
    "postgres": "SET TIME ZONE 'UTC'",
    "redshift": "SET TIME ZONE 'UTC'",
    "snowflake": "ALTER SESSION SET TIMEZONE = 'UTC'",
    "spark": "SET TIME ZONE 'UTC'",
    "databricks": "SET TIME ZONE 'UTC'",
    "trino": "SET TIME ZONE 'UTC'",
}
"""Per adapter type, the statement that puts the session in UTC (BigQuery always is)."""


VALUE_BYTES = 100
"""Estimated bytes of one value fetched as a Python object (the object, its slot in the row tuple,
its Arrow copy while the batch is built): ints 28-32, floats 24, datetimes 48, short strings 50-80."""
BATCH_SHARE = 16
"""One chunk of fetched rows takes at most 1/BATCH_SHARE of ``offline.memory_limit``: the rest is
the caller's (the Arrow batches it keeps, the online writer's buffers) and the driver's."""
MIN_BATCH_ROWS = 1000


def batch_rows(requested: int, columns: int, budget: int | None) -> int:
    """Rows per ``fetchmany``: ``requested``, capped so a chunk of Python values stays within
    its share of ``budget`` bytes (no cap without a budget).

    >>> batch_rows(100_000, 10, 10**9)
    62500
    >>> batch_rows(100_000, 10, None)
    100000
    """
    if budget is None:
        return requested
    return max(min(MIN_BATCH_ROWS, requested), min(requested, budget // BATCH_SHARE // (VALUE_BYTES * max(1, columns))))


def _duckdb_budget(budget: int) -> list[str]:
    from feature_layer.offline.budget import embedded_duckdb_limit

    return [f"SET memory_limit = '{embedded_duckdb_limit(budget)}B'"]


def _postgres_budget(budget: int) -> list[str]:
    from feature_layer.offline.budget import postgres_session_settings

    return [f"SET {name} = '{value}'" for name, value in postgres_session_settings(budget).items()]


BUDGET_SETTINGS: dict[str, Callable[[int], list[str]]] = {"duckdb": _duckdb_budget, "postgres": _postgres_budget}
"""Per adapter type, the session statements that apply ``offline.memory_limit`` (the same split
as the native engines'); other warehouses size their memory on the server."""


@dataclasses.dataclass
class _AdapterConfig:
    """The few fields of dbt's runtime config an adapter reads to open connections."""

    credentials: Any
    profile_name: str
    target_name: str
    threads: int = 1
    project_name: str = "feature_layer"
    query_comment: Any = None
    log_cache_events: bool = False
    cli_vars: dict[str, Any] = dataclasses.field(default_factory=dict)
    quoting: dict[str, Any] = dataclasses.field(default_factory=dict)
    target_path: str = "target"

    def __post_init__(self) -> None:
        if self.query_comment is None:
            from dbt.adapters.contracts.connection import QueryComment

            self.query_comment = QueryComment(comment=None)


class _Flags:
    """``flags`` in a profile: ``{{ flags.PROJECT_DIR }}`` (what dbt's flags give there)."""

    def __init__(self, project_dir: Path | None) -> None:
        self.PROJECT_DIR = str(project_dir) if project_dir is not None else None  # noqa: N815


def _default_dbt_flags() -> None:
    """dbt's global flags at their defaults, unless a dbt command in this process set them: dbt's
    Profile reads them (``LOG_CACHE_EVENTS``), and a process that never ran dbt has none."""
    from argparse import Namespace

    from dbt.flags import get_flags, set_from_args

    if not hasattr(get_flags(), "LOG_CACHE_EVENTS"):
        set_from_args(Namespace(), None)


def dbt_credentials(settings: Any) -> Any:
    """The dbt ``Credentials`` of a target, rendered by dbt itself.

    With ``settings.profiles_file`` the profile is read again and rendered by dbt's
    ``ProfileRenderer`` (``Profile.from_raw_profiles``); settings made in code use their
    ``profile`` mapping. dbt's errors become ConfigError naming the target and the fix.
    """
    def build() -> Any:
        from dbt_common.context import set_invocation_context

        set_invocation_context(os.environ)  # env_var reads the invocation's environment
        _default_dbt_flags()
        from dbt.config.profile import Profile
        from dbt.config.renderer import ProfileRenderer

        if settings.profiles_file is not None and settings.profile_name:
            import yaml

            raw = yaml.safe_load(Path(settings.profiles_file).read_text()) or {}
            renderer = ProfileRenderer({})
            renderer.context["flags"] = _Flags(settings.project_dir)
            return Profile.from_raw_profiles(raw, settings.profile_name, renderer,
                                             target_override=settings.target).credentials
        return Profile._credentials_from_profile(dict(settings.profile), "feature_layer", settings.target)

    try:
        credentials = contextvars.copy_context().run(build)  # dbt's context vars stay out of ours
    except Exception as exc:  # dbt's DbtProfileError, EnvVarMissingError, a plugin's validation error
        first = " ".join(str(exc).split())
        raise ConfigError(
            f"dbt could not read target {settings.target!r} of profile {settings.profile_name!r}: {first}",
            fix=f"correct the target in {settings.profiles_file or 'profiles.yml'} until `dbt debug --target "
            f"{settings.target}` passes.",
        ) from None
    path = getattr(credentials, "path", None)
    if settings.type == "duckdb" and settings.path is not None and isinstance(path, str):
        # dbt-duckdb opens a relative path from the directory dbt runs in: the project folder.
        credentials = dataclasses.replace(credentials, path=str(settings.path))
    return credentials


def _arrow_literals(column: pa.ChunkedArray | pa.Array, sql_type: str) -> pa.Array:
    """Each value of ``column`` as a SQL literal (text), NULL for nulls — vectorised."""
    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    t = arr.type
    if pa.types.is_dictionary(t):
        arr = arr.cast(t.value_type)
        t = arr.type
    if pa.types.is_boolean(t):
        text = pc.if_else(arr, "TRUE", "FALSE")
    elif pa.types.is_integer(t):
        text = pc.cast(arr, pa.string())
    elif pa.types.is_floating(t):
        arr = arr.cast(pa.float64())
        plain = pc.cast(arr, pa.string())
        special = pc.or_(pc.is_nan(arr), pc.is_inf(arr))
        word = pc.if_else(pc.is_nan(arr), "NaN", pc.if_else(pc.greater(arr, 0), "Infinity", "-Infinity"))
        quoted = pc.binary_join_element_wise("CAST('", word, f"' AS {sql_type})", "")
        text = pc.if_else(special, quoted, plain)
    elif pa.types.is_decimal(t):
        text = pc.cast(arr, pa.string())
    else:
        if pa.types.is_timestamp(t):
            if t.tz is not None:
                arr = arr.cast(pa.timestamp(t.unit, "UTC"))
            raw = pc.cast(arr.cast(pa.timestamp(t.unit)), pa.string())
            raw = pc.binary_join_element_wise(raw, "+00:00" if t.tz is not None else "", "")
        elif pa.types.is_date(t) or pa.types.is_string(t) or pa.types.is_large_string(t):
            raw = pc.cast(arr, pa.string())
        else:
            raise WarehouseError(f"Arrow type {t} cannot be uploaded through the generic engine.",
                                 fix="cast the column to a number, string, boolean, date or timestamp first.")
        escaped = pc.replace_substring(raw, "'", "''")
        text = pc.binary_join_element_wise("CAST('", escaped, f"' AS {sql_type})", "")
    return pc.fill_null(text, "NULL")


def _sql_type(field: pa.Field, dialect: str) -> str:
    from sqlglot import exp

    t = field.type
    if pa.types.is_dictionary(t):
        t = t.value_type
    if pa.types.is_boolean(t):
        name = "BOOLEAN"
    elif pa.types.is_integer(t):
        name = "BIGINT"
    elif pa.types.is_floating(t):
        name = "DOUBLE"
    elif pa.types.is_decimal(t):
        name = f"DECIMAL({t.precision}, {t.scale})"
    elif pa.types.is_timestamp(t):
        name = "TIMESTAMPTZ" if t.tz else "TIMESTAMP"
    elif pa.types.is_date(t):
        name = "DATE"
    elif pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t):
        name = "TEXT"
    else:
        raise WarehouseError(f"Column {field.name!r} has Arrow type {t}, which the generic engine cannot upload.",
                             fix="cast it to a number, string, boolean, date or timestamp first.")
    return exp.DataType.build(name).sql(dialect=dialect)


def _to_arrow(names: list[str], columns: list[list[Any]], declared: list[pa.DataType | None]) -> pa.Table:
    """Python values (one list per column) as an Arrow table; time-zone-aware times in UTC."""
    arrays = []
    for values, wanted in zip(columns, declared, strict=True):
        try:
            array = pa.array(values, from_pandas=False)
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError):
            array = pa.array([None if v is None else str(v) for v in values], pa.string())
        if pa.types.is_null(array.type) and wanted is not None:
            array = pa.nulls(len(values), wanted)
        elif pa.types.is_timestamp(array.type) and array.type.tz is not None and array.type.tz != "UTC":
            array = array.cast(pa.timestamp(array.type.unit, "UTC"))
        arrays.append(array)
    return pa.Table.from_arrays(arrays, names=names)


def _agate_values(column: Any) -> list[Any]:
    """An agate column's values; agate reads every non-integer number as a Decimal: floats here
    (dbt's own Integer type keeps whole numbers exact)."""
    from decimal import Decimal

    values = list(column.values())
    if any(isinstance(v, Decimal) for v in values):
        return [float(v) if isinstance(v, Decimal) else v for v in values]
    return values


def _declared_type(type_code: Any) -> pa.DataType | None:
    """The Arrow type a cursor's description names, where it is unambiguous."""
    from feature_layer.offline.engine import _PG_ARROW_TYPES

    if isinstance(type_code, int) and not isinstance(type_code, bool):
        return _PG_ARROW_TYPES.get(type_code)
    text = str(type_code).upper()
    return {"BIGINT": pa.int64(), "INTEGER": pa.int32(), "DOUBLE": pa.float64(), "FLOAT": pa.float32(),
            "BOOLEAN": pa.bool_(), "VARCHAR": pa.string(), "DATE": pa.date32(), "TIMESTAMP": pa.timestamp("us"),
            "TIMESTAMP WITH TIME ZONE": pa.timestamp("us", "UTC")}.get(text)


def _kind(exc: Exception) -> str:
    message = str(exc)
    module = type(exc).__module__.split(".")[0]
    if module == "psycopg2":
        from feature_layer.offline.engine import _postgres_kind

        return _postgres_kind(exc)
    if module in {"duckdb", "_duckdb"}:
        from feature_layer.offline.engine import _duckdb_kind

        return _duckdb_kind(exc)
    if _MISSING_TABLE.search(message):
        return "missing_table"
    if _MISSING_COLUMN.search(message):
        return "missing_column"
    return "other"


class GenericEngine(Engine):
    """A dbt adapter's own connection, speaking Arrow (see the module docstring).

    ``use_cursor=False`` forces the ``adapter.execute(…, fetch=True)`` path even when the
    handle has a DB-API cursor (the path for adapters whose handle has none).
    """

    def __init__(self, adapter: Any, *, adapter_type: str, target: str | None = None, schema: str | None = None,
                 use_cursor: bool | None = None, memory_limit: int | None = None) -> None:
        from feature_layer.sql.dialects import dialect_for_adapter

        self._adapter = adapter
        self.adapter_type = adapter_type
        self.dialect = dialect_for_adapter(adapter_type)
        self.target = target
        self.schema = schema
        self._registered: dict[str, pa.Table] = {}
        self._conn = self._open_connection()
        handle = self._conn.handle
        self._use_cursor = hasattr(handle, "cursor") if use_cursor is None else use_cursor
        self.memory_limit = memory_limit
        """``offline.memory_limit`` in bytes (None: no cap on a fetched chunk)."""
        if adapter_type in SESSION_UTC:
            self.execute(SESSION_UTC[adapter_type])
        if memory_limit is not None:
            for statement in BUDGET_SETTINGS.get(adapter_type, lambda _: [])(memory_limit):
                self.execute(statement)

    @classmethod
    def from_settings(cls, settings: Any, *, use_cursor: bool | None = None) -> GenericEngine:
        """Open the dbt adapter of ``settings.type`` with the target's credentials."""
        from dbt.adapters.factory import FACTORY

        credentials = dbt_credentials(settings)
        plugin = FACTORY.get_plugin_by_name(settings.type)
        config = _AdapterConfig(credentials=credentials, profile_name=settings.profile_name or "feature_layer",
                                target_name=settings.target)
        adapter = plugin.adapter(config, multiprocessing.get_context("spawn"))
        return cls(adapter, adapter_type=settings.type, target=settings.target, schema=settings.schema,
                   use_cursor=use_cursor, memory_limit=settings.memory_limit)

    # -- the connection ------------------------------------------------------------------------
    def _open_connection(self) -> Any:
        """A connection of the adapter's ConnectionManager, owned by this engine (not by a thread)."""
        from dbt.adapters.contracts.connection import Connection, ConnectionState, Identifier

        manager = type(self._adapter.connections)
        conn = Connection(type=Identifier(manager.TYPE), name="feature_layer", state=ConnectionState.INIT,
                          transaction_open=False, handle=None, credentials=self._adapter.config.credentials)
        try:
            return manager.open(conn)
        except Exception as exc:  # noqa: BLE001 - the adapter's own connection error, with its message
            raise WarehouseError(
                f"The dbt {self.adapter_type} adapter could not connect for target {self.target!r}: "
                f"{' '.join(str(exc).split())}",
                fix=f"check the target in profiles.yml (`dbt debug --target {self.target}` shows the same failure).",
            ) from exc

    def _failure(self, action: str, sql: str, exc: Exception) -> WarehouseError:
        rollback = getattr(self._conn.handle, "rollback", None)
        if rollback is not None:
            try:
                rollback()
            except Exception:  # noqa: BLE001, S110 - the connection may be gone; the error below says why
                pass
        kind = _kind(exc)
        return _fail(action, sql, exc, fix_for(kind, str(exc), self.target), whole=True)

    def _commit(self) -> None:
        commit = getattr(self._conn.handle, "commit", None)
        if commit is not None:
            commit()

    def _run(self, sql: str, fetch: bool) -> pa.Table | None:
        """Run one statement; its rows as Arrow when ``fetch``."""
        if not self._use_cursor:
            # adapter.execute runs on "this thread's connection": lend it ours for the call, so
            # session state (the UTC time zone, temporary tables) stays on one connection.
            manager = self._adapter.connections
            manager.clear_thread_connection()
            manager.set_thread_connection(self._conn)
            try:
                _, table = self._adapter.execute(sql, fetch=fetch)
                self._commit()
            finally:
                manager.clear_thread_connection()
            if not fetch:
                return None
            names = list(table.column_names)
            return _to_arrow(names, [_agate_values(c) for c in table.columns], [None] * len(names))
        if fetch:
            batches = list(self._batches(sql, 100_000))
            if not batches:
                return None
            if len(batches) == 1:
                return batches[0]
            return pa.concat_tables(batches, promote_options="default")
        # Cursors are left open, as dbt's own ``add_query`` does: dbt-duckdb hands out one
        # shared cursor per connection, and closing it would close the connection.
        self._conn.handle.cursor().execute(sql)
        self._commit()
        return None

    def _streaming_cursor(self) -> tuple[Any, bool]:
        """(a cursor whose ``fetchmany`` reads from the server as it goes, whether to close it).

        psycopg2's plain cursor receives the whole result at ``execute``: a named cursor (``DECLARE
        … CURSOR WITH HOLD``: commits of other statements on the connection leave it open) streams.
        """
        handle = self._conn.handle
        if type(handle).__module__.split(".")[0] == "psycopg2":
            cursor = handle.cursor(name=f"fl_cursor_{uuid.uuid4().hex[:12]}", withhold=True)
            return cursor, True
        return handle.cursor(), False

    def _batches(self, sql: str, batch_size: int) -> Iterator[pa.Table]:
        """The rows of ``sql`` as Arrow tables of at most :func:`batch_rows` rows each (one empty,
        typed table for an empty result; none for a statement without rows).

        Driver errors propagate as they are (the callers map them to WarehouseError).
        """
        cursor, owned = self._streaming_cursor()
        try:
            cursor.execute(sql)
            # A named psycopg2 cursor describes its rows only once the first are fetched.
            rows = cursor.fetchmany(min(batch_size, MIN_BATCH_ROWS)) if owned else None
            if cursor.description is None:
                return
            description = list(cursor.description)
            size = batch_rows(batch_size, len(description), self.memory_limit)
            if rows is None:
                rows = cursor.fetchmany(size)
            more = bool(rows)
            table = self._rows(description, rows)
            del rows  # the Python values go before the next chunk arrives
            yield table
            while more:
                rows = cursor.fetchmany(size)
                more = bool(rows)
                if more:
                    table = self._rows(description, rows)
                    del rows
                    yield table
            if owned:
                cursor.close()
                owned = False
            self._commit()
        finally:
            if owned and not cursor.closed:
                try:
                    cursor.close()
                    self._conn.handle.rollback()
                except Exception:  # noqa: BLE001, S110 - the connection is gone: the error in flight says why
                    pass

    def _rows(self, description: list[Any], rows: list[Any]) -> pa.Table:
        names = [d[0] for d in description]
        columns = [list(c) for c in zip(*rows, strict=True)] if rows else [[] for _ in names]
        return _to_arrow(names, columns, [_declared_type(d[1]) for d in description])

    # -- Engine ---------------------------------------------------------------------------------
    def fetch_arrow(self, sql_or_expression: str | exp.Expression) -> pa.Table:
        sql = self.render(sql_or_expression)
        try:
            table = self._run(sql, fetch=True)
        except WarehouseError:
            raise
        except Exception as exc:  # noqa: BLE001 - every driver's errors: mapped by what happened
            raise self._failure("run a query", sql, exc) from exc
        return table if table is not None else pa.table({})

    def stream_arrow(
        self, sql_or_expression: str | exp.Expression, batch_size: int = 100_000
    ) -> Iterator[pa.RecordBatch]:
        sql = self.render(sql_or_expression)
        if not self._use_cursor:
            yield from self.fetch_arrow(sql).to_batches(batch_size)
            return
        batches = self._batches(sql, batch_size)
        while True:
            try:
                table = next(batches, None)
            except Exception as exc:  # noqa: BLE001 - every driver's errors: mapped by what happened
                raise self._failure("stream a query", sql, exc) from exc
            if table is None:
                break
            yield from table.to_batches()

    def execute(self, sql: str | exp.Expression) -> None:
        text = self.render(sql)
        try:
            self._run(text, fetch=False)
        except WarehouseError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise self._failure("run a statement", text, exc) from exc

    def register_arrow(self, name: str, table: pa.Table) -> None:
        """Upload ``table`` into a session temporary table ``name`` (CREATE, then INSERT … VALUES)."""
        from sqlglot import exp

        types = [_sql_type(f, self.dialect) for f in table.schema]
        quoted = [exp.to_identifier(f.name, quoted=True).sql(dialect=self.dialect) for f in table.schema]
        target = exp.to_identifier(name, quoted=True).sql(dialect=self.dialect)
        columns = ", ".join(f"{q} {t}" for q, t in zip(quoted, types, strict=True))
        self.execute(f"DROP TABLE IF EXISTS {target}")
        create = exp.Create(this=exp.to_table(name, quoted=True), kind="TABLE",
                            properties=exp.Properties(expressions=[exp.TemporaryProperty()]))
        head = create.sql(dialect=self.dialect)
        self.execute(f"{head} ({columns})")
        self._registered[name] = table
        if not table.num_rows:
            return
        literals = [_arrow_literals(table.column(i), types[i]) for i in range(table.num_columns)]
        rows = pc.binary_join_element_wise(*literals, ", ") if len(literals) > 1 else literals[0]
        for start in range(0, len(rows), INSERT_ROWS):
            chunk = rows.slice(start, INSERT_ROWS).to_pylist()
            self.execute(f"INSERT INTO {target} ({', '.join(quoted)}) VALUES ({'), ('.join(chunk)})")

    def unregister(self, name: str) -> None:
        from sqlglot import exp

        if self._registered.pop(name, None) is None:
            return
        try:
            self.execute(f"DROP TABLE IF EXISTS {exp.to_identifier(name, quoted=True).sql(dialect=self.dialect)}")
        except WarehouseError:
            pass

    def close(self) -> None:
        self._registered.clear()
        try:
            type(self._adapter.connections).close(self._conn)
        except Exception:  # noqa: BLE001, S110 - closing a broken connection
            pass
        try:
            self._adapter.cleanup_connections()
        except Exception:  # noqa: BLE001, S110
            pass


