"""Apache Spark (and Databricks' dialect): a native Arrow path through pyspark.

One ``SparkSession`` per process. With dbt-spark's ``method: session`` dbt and feature_layer
run in the same JVM: when a session already exists in the process (``dbt build`` ran
in-process, a notebook, a test), the engine uses it, so it sees exactly the tables dbt
built in that session's catalog (the Hive/Derby metastore dbt-spark enables).

A separate process (the CLI after ``dbt build``) must not open dbt's embedded Derby
metastore: Derby admits one process at a time, so a second one would fail while any other
holds it. There the engine starts its own session with an in-memory catalog over the same
warehouse folder and registers every table it finds there by path
(``<warehouse>/<schema>.db/<table>``, the layout of Spark's managed tables) as an external
table of the same schema and name; the SQL stays identical. Tables it creates (``to_table``)
go to the same folder, so a later process sees them too.

Rows come back with ``DataFrame.toArrow()`` (pyspark >= 4): Arrow batches from the JVM, no
Python object per value. The session runs in UTC (``spark.sql.session.timeZone``).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from feature_layer.errors import WarehouseError
from feature_layer.offline.engine import Engine, _fail, fix_for

if TYPE_CHECKING:
    from sqlglot import exp

SPARK_HELP = (
    "Spark needs pyspark and a Java runtime (17 or newer): pip install 'feature_layer[spark]' and "
    "apt-get install openjdk-17-jre-headless (or set JAVA_HOME to a JDK 17)."
)

BASE_CONF: dict[str, str] = {
    "spark.sql.session.timeZone": "UTC",
    "spark.ui.enabled": "false",
    "spark.sql.shuffle.partitions": "4",
    # dbt-spark forces ANSI off (Spark 3 and 4 then agree); the same semantics here.
    "spark.sql.ansi.enabled": "false",
    "spark.sql.sources.default": "parquet",
    "spark.sql.legacy.createHiveTableByDefault": "false",
    "spark.sql.execution.arrow.pyspark.enabled": "true",
}
"""Settings every feature_layer Spark session has (profile values are applied after them)."""


def _pyspark(module: str = "pyspark") -> Any:
    """``module`` of pyspark, or MissingExtraError naming feature_layer[spark]."""
    from feature_layer.extras import require

    return require(module, "The spark target")


def _missing_table(message: str) -> bool:
    return "TABLE_OR_VIEW_NOT_FOUND" in message or "SCHEMA_NOT_FOUND" in message


def _spark_kind(exc: Exception) -> str:
    message = str(exc)
    if _missing_table(message):
        return "missing_table"
    if "UNRESOLVED_COLUMN" in message or "FIELD_NOT_FOUND" in message:
        return "missing_column"
    if "CAST_INVALID_INPUT" in message or "CANNOT_PARSE" in message or "DATATYPE_MISMATCH" in message:
        return "cast"
    if "PARSE_SYNTAX_ERROR" in message or "ParseException" in type(exc).__name__:
        return "syntax"
    return "other"


def _spark_message(exc: Exception) -> str:
    """The first meaningful line of a Spark error (no JVM stack)."""
    text = str(exc).strip()
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), type(exc).__name__)
    return line


def _quote(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def active_session() -> Any | None:
    """The SparkSession already running in this process (dbt-spark's, a notebook's), if any."""
    import sys

    if "pyspark" not in sys.modules:
        return None
    PySparkRuntimeError = _pyspark("pyspark.errors").PySparkRuntimeError  # noqa: N806
    SparkSession = _pyspark("pyspark.sql").SparkSession  # noqa: N806

    try:
        return SparkSession.active()  # the thread's active session, else the process's default
    except PySparkRuntimeError:
        return None


def start_session(conf: Mapping[str, str], *, catalog: str = "in-memory") -> Any:
    """A new SparkSession (or the one this process has) with ``conf``; WarehouseError naming
    how to get Java and pyspark when it cannot start."""
    SparkSession = _pyspark("pyspark.sql").SparkSession  # noqa: N806

    existing = active_session()
    if existing is not None:
        return existing
    builder = SparkSession.builder.config("spark.sql.catalogImplementation", catalog)
    for key, value in {**BASE_CONF, **conf}.items():
        builder = builder.config(key, str(value))
    try:
        session = builder.getOrCreate()
    except Exception as exc:  # noqa: BLE001 - the JVM failed to start: Java missing or broken
        raise WarehouseError(f"Could not start Spark: {_spark_message(exc)}", fix=SPARK_HELP) from exc
    session.sparkContext.setLogLevel("ERROR")
    return session


class SparkEngine(Engine):
    """Spark SQL through pyspark, returning Arrow (``DataFrame.toArrow``)."""

    dialect = "spark"

    def __init__(
        self,
        session: Any | None = None,
        *,
        conf: Mapping[str, str] | None = None,
        warehouse_dir: str | Path | None = None,
        schema: str | None = None,
        target: str | None = None,
    ) -> None:
        _pyspark()  # MissingExtraError naming feature_layer[spark] when pyspark is not installed
        self.target = target
        self.schema = schema
        shared = session is not None or active_session() is not None
        conf = dict(conf or {})
        if warehouse_dir is not None:
            conf.setdefault("spark.sql.warehouse.dir", str(warehouse_dir))
        self.session = session if session is not None else start_session(conf)
        self.session.sparkContext.setLogLevel("ERROR")  # Spark's WARN lines would drown the CLI's output
        self.warehouse_dir = Path(warehouse_dir) if warehouse_dir is not None else None
        self._registered: set[str] = set()
        self._shared = shared
        if not shared and self.warehouse_dir is not None:
            register_warehouse_tables(self.session, self.warehouse_dir)

    # -- running SQL --------------------------------------------------------------------------
    def _failure(self, action: str, sql: str, exc: Exception) -> WarehouseError:
        kind = _spark_kind(exc)
        fix = fix_for(kind, _spark_message(exc), self.target)
        if kind == "missing_table" and self.warehouse_dir is not None and not self._shared:
            fix += f" (this process reads the tables under {self.warehouse_dir})"
        snippet = sql if len(sql) < 400 else sql[:400] + " …"
        return WarehouseError(f"The warehouse failed to {action}: {_spark_message(exc)}\nSQL: {snippet}", fix=fix)

    def _df(self, sql: str) -> Any:
        try:
            return self.session.sql(sql)
        except Exception as exc:  # noqa: BLE001 - pyspark raises its own tree and Py4J errors
            raise self._failure("run a query", sql, exc) from exc

    def fetch_arrow(self, sql_or_expression: str | exp.Expression) -> pa.Table:
        sql = self.render(sql_or_expression)
        df = self._df(sql)
        try:
            return df.toArrow()
        except Exception as exc:  # noqa: BLE001
            raise self._failure("run a query", sql, exc) from exc

    def schema_of(self, sql_or_expression: str | exp.Expression) -> pa.Schema:
        """The Arrow schema ``fetch_arrow`` returns for the query, from Spark's analysis alone:
        no job runs (a ``LIMIT 0`` query still schedules one, 0.15–0.3 s each)."""
        sql = self.render(sql_or_expression)
        df = self._df(sql)
        try:
            return _arrow_schema(df)
        except Exception as exc:  # noqa: BLE001 - a type Arrow cannot hold
            raise self._failure("run a query", sql, exc) from exc

    def has_rows(self, query: exp.Select) -> bool:
        """``DataFrame.isEmpty``: one job reading partitions until a row is found (no shuffle,
        unlike a count)."""
        sql = self.render(query)
        df = self._df(sql)
        try:
            return not df.isEmpty()
        except Exception as exc:  # noqa: BLE001
            raise self._failure("run a query", sql, exc) from exc

    def stream_arrow(
        self, sql_or_expression: str | exp.Expression, batch_size: int = 100_000
    ) -> Iterator[pa.RecordBatch]:
        """Record batches of at most ``batch_size`` rows.

        pyspark's public Arrow path (``toArrow``) collects the result in the driver, so memory
        is bounded by the result, not by the batch size (size the driver for it).
        """
        table = self.fetch_arrow(sql_or_expression)
        return iter(table.to_batches(max_chunksize=batch_size))

    def execute(self, sql: str | exp.Expression) -> None:
        text = self.render(sql)
        for statement in _statements(text):
            df = self._df(statement)
            try:
                df.collect()
            except Exception as exc:  # noqa: BLE001
                raise self._failure("run a statement", statement, exc) from exc

    def replace_table(self, table: exp.Table, query: exp.Expression) -> None:
        """Replace ``table`` by the rows of ``query``: built under a new name first (a failing
        query leaves the old table as it was), then swapped in by two renames and the old one
        dropped. Spark's file-based tables have no transactional swap, so between the renames
        (metadata only, milliseconds) the name is briefly absent."""
        from sqlglot import exp as sg

        suffix = uuid.uuid4().hex[:8]

        def renamed(prefix: str) -> sg.Table:
            copy = table.copy()
            copy.set("this", sg.to_identifier(f"{prefix}_{suffix}", quoted=True))
            return copy

        staging, old = renamed("__fl_new"), renamed("__fl_old")
        self.execute(sg.Create(this=staging, kind="TABLE", expression=query))
        had_old = self._exists(table)
        if had_old:
            self.execute(f"ALTER TABLE {table.sql(dialect='spark')} RENAME TO {old.sql(dialect='spark')}")
        self.execute(f"ALTER TABLE {staging.sql(dialect='spark')} RENAME TO {table.sql(dialect='spark')}")
        if had_old:
            self.execute(f"DROP TABLE IF EXISTS {old.sql(dialect='spark')}")

    def _exists(self, table: exp.Table) -> bool:
        name = ".".join(p.name for p in table.parts)
        try:
            return bool(self.session.catalog.tableExists(name))
        except Exception:  # noqa: BLE001
            return False

    def register_arrow(self, name: str, table: pa.Table) -> None:
        """``table`` as a temporary view ``name`` of this session."""
        for index, field in enumerate(table.schema):
            if pa.types.is_dictionary(field.type):
                table = table.set_column(index, field.name, table.column(index).cast(field.type.value_type))
        try:
            df = self.session.createDataFrame(table) if table.num_rows else self._empty(table.schema)
            df.createOrReplaceTempView(name)
        except Exception as exc:  # noqa: BLE001
            raise _fail("register an Arrow table", name, exc, "check the column types of the data.") from exc
        self._registered.add(name)

    def _empty(self, schema: pa.Schema) -> Any:
        from_arrow_schema = _pyspark("pyspark.sql.pandas.types").from_arrow_schema

        return self.session.createDataFrame([], from_arrow_schema(schema))

    def unregister(self, name: str) -> None:
        self._registered.discard(name)
        try:
            self.session.catalog.dropTempView(name)
        except Exception:  # noqa: BLE001 - gone already
            pass

    def close(self) -> None:
        """Drop this engine's temporary views; the session stays (it is the process's)."""
        for name in list(self._registered):
            self.unregister(name)


def _arrow_schema(df: Any) -> pa.Schema:
    """The schema ``DataFrame.toArrow`` casts its batches to (pyspark's own conversion)."""
    to_arrow_schema = _pyspark("pyspark.sql.pandas.types").to_arrow_schema
    large = df.sparkSession._jconf.arrowUseLargeVarTypes()
    return to_arrow_schema(df.schema, error_on_duplicated_field_names_in_struct=True, prefers_large_types=large)


def _statements(text: str) -> list[str]:
    """``text`` split on top-level semicolons (Spark's ``sql`` runs one statement)."""
    import sqlglot

    try:
        parsed = sqlglot.parse(text, read="spark")
    except Exception:  # noqa: BLE001 - not ours to validate: let Spark say what is wrong
        return [text]
    if len(parsed) <= 1:
        return [text]
    return [p.sql(dialect="spark") for p in parsed if p is not None]


_TABLE_DIR = re.compile(r"^[A-Za-z0-9_]+$")


def register_warehouse_tables(session: Any, warehouse_dir: Path) -> list[str]:
    """Register every Parquet table folder of ``warehouse_dir`` in the session's catalog.

    Spark's managed-table layout: ``<warehouse>/<schema>.db/<table>/`` (and
    ``<warehouse>/<table>/`` for the ``default`` schema). Returns ``schema.table`` names.
    """
    found: list[str] = []
    if not warehouse_dir.is_dir():
        return found
    for schema_dir in sorted(p for p in warehouse_dir.iterdir() if p.is_dir()):
        if schema_dir.suffix == ".db":
            schema = schema_dir.stem
            tables = [p for p in schema_dir.iterdir() if p.is_dir()]
        else:
            continue
        if not _TABLE_DIR.match(schema):
            continue
        session.sql(f"CREATE DATABASE IF NOT EXISTS {_quote(schema)}")
        for table_dir in sorted(tables):
            if not _TABLE_DIR.match(table_dir.name) or not any(table_dir.glob("*.parquet")):
                continue
            location = str(table_dir.resolve()).replace("'", "\\'")
            session.sql(
                f"CREATE TABLE IF NOT EXISTS {_quote(schema)}.{_quote(table_dir.name)} USING parquet "
                f"LOCATION '{location}'"
            )
            found.append(f"{schema}.{table_dir.name}")
    return found


def spark_conf_from_profile(output: Mapping[str, Any]) -> dict[str, str]:
    """The Spark settings of a dbt-spark target (``server_side_parameters``), as strings."""
    params = output.get("server_side_parameters") or {}
    if not isinstance(params, Mapping):
        raise WarehouseError(
            "server_side_parameters of the spark target must be a mapping of Spark settings.",
            fix="write them as `spark.setting: value` pairs under server_side_parameters in profiles.yml.",
        )
    return {str(k): str(v) for k, v in params.items()}


def new_table_name(prefix: str = "__fl_tmp") -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


__all__ = ["SPARK_HELP", "SparkEngine", "active_session", "register_warehouse_tables", "start_session"]
