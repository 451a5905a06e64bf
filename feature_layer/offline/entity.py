"""Entity inputs for training sets: normalise, validate, and place them in the warehouse.

An entity input may be a pandas DataFrame, a pyarrow Table, a polars DataFrame, a Parquet
path, or a table/query already in the warehouse. In-memory inputs are converted to Arrow
once (no row loops), a naive UTC copy of their timestamp and a row-position column added,
and registered with the engine; warehouse inputs are checked through a zero-row query and
never pulled into Python.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
from sqlglot import exp

from feature_layer.errors import InputError
from feature_layer.offline.engine import EntityTableFacts
from feature_layer.registry.model import Feature, FeatureView
from feature_layer.sql.point_in_time import INTERNAL_PREFIX, ROW, TS, EntitySpine, ident
from feature_layer.types import logical_type

if TYPE_CHECKING:
    from feature_layer.offline.engine import Engine

DEFAULT_TIMESTAMP_COLUMN = "event_timestamp"
_QUERY_START = re.compile(r"^\s*(\(|select\b|with\b|from\b|values\b)", re.IGNORECASE)


def arrow_logical_type(arrow_type: pa.DataType) -> str:
    """The logical type (see ``feature_layer.types``) of an Arrow type."""
    t = arrow_type
    if pa.types.is_dictionary(t):
        return arrow_logical_type(t.value_type)
    if pa.types.is_boolean(t):
        return "bool"
    if pa.types.is_integer(t):
        return "int64"
    if pa.types.is_floating(t):
        return "float64"
    if pa.types.is_decimal(t):
        return "decimal"
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return "string"
    if pa.types.is_timestamp(t):
        return "timestamp"
    if pa.types.is_date(t):
        return "date"
    return "unknown"


_ARROW_FOR_LOGICAL = {
    "int64": pa.int64(),
    "float64": pa.float64(),
    "string": pa.string(),
    "bool": pa.bool_(),
    "timestamp": pa.timestamp("us"),
    "date": pa.date32(),
}


@dataclass
class PreparedEntities:
    """Entity rows ready to be joined: the spine description and what to clean up afterwards."""

    spine: EntitySpine
    columns: tuple[str, ...]
    registered: str | None = None
    num_rows: int | None = None
    table: pa.Table | None = None
    """The in-memory input as given: its columns are returned as they are (types, time zones,
    units), whatever the warehouse made of its copy."""
    key_types: Mapping[tuple[str, str], str] = dataclass_field(default_factory=dict)
    """(view, join key) → the logical type the entity rows and the view agree on (keys whose
    types differ or are unknown are left out): ``ViewOutputs.key_types``."""
    unchecked_timestamp: str | None = None
    """A warehouse input's timestamp column that may hold nulls (not declared NOT NULL). A whole
    result is checked after its query (every entity row comes back with its timestamp:
    ``refuse_null_timestamps``, no scan of the entity table); streamed or warehouse-side
    results before it (``check_entity_nulls``)."""


def _to_arrow(entity_df: Any) -> pa.Table | None:
    """Arrow for in-memory inputs and Parquet paths; ``None`` for warehouse tables/queries."""
    if isinstance(entity_df, pa.Table):
        return entity_df
    if isinstance(entity_df, pa.RecordBatch):
        return pa.Table.from_batches([entity_df])
    if isinstance(entity_df, Path) or (
        isinstance(entity_df, str) and entity_df.strip().lower().endswith((".parquet", ".pq"))
    ):
        path = Path(entity_df)
        if not path.exists():
            raise InputError(f"Entity file {path} does not exist.", fix="pass the path of an existing Parquet file.")
        import pyarrow.parquet as pq

        try:
            return pq.read_table(path)
        except (pa.ArrowException, OSError) as exc:
            raise InputError(f"Could not read {path} as Parquet: {exc}", fix="pass a Parquet file.") from exc
    if isinstance(entity_df, str):
        return None
    module = type(entity_df).__module__
    if module.startswith("pandas"):
        if not hasattr(entity_df, "columns"):
            raise InputError("entity_df is a pandas Series.", fix="pass a DataFrame (series.to_frame()).")
        try:
            return pa.Table.from_pandas(entity_df, preserve_index=False)
        except (pa.ArrowException, TypeError, ValueError, OverflowError) as exc:
            raise InputError(
                f"The entity DataFrame cannot be converted to Arrow: {exc}",
                fix="give each column one type (e.g. no mixed numbers and strings in one column).",
            ) from exc
    if module.startswith("polars"):
        return polars_to_arrow(entity_df)
    raise InputError(
        f"entity_df has type {type(entity_df).__name__}, which is not a supported entity input.",
        fix="pass a pandas or polars DataFrame, a pyarrow Table, a Parquet path, or a warehouse table "
        "name or SQL query.",
    )


def polars_to_arrow(frame: Any) -> pa.Table:
    """A polars DataFrame or LazyFrame as Arrow; what polars cannot export is an InputError.

    polars reports some inputs (a NUL in a column name, an unknown time zone) with a Rust panic,
    a BaseException that would otherwise escape every handler as a traceback.
    """
    try:
        if hasattr(frame, "collect"):
            frame = frame.collect()
        return frame.to_arrow()
    except (KeyboardInterrupt, SystemExit, MemoryError):
        raise
    except BaseException as exc:  # noqa: BLE001 - polars panics (pyo3 PanicException) derive from it
        raise InputError(
            f"The polars entity frame cannot be converted to Arrow: {type(exc).__name__}: {exc}",
            fix="check its column names (no NUL characters) and types, or pass a pyarrow table.",
        ) from None


def _pick_timestamp(schema: pa.Schema, timestamp_column: str | None) -> str:
    names = schema.names
    if timestamp_column is not None:
        if timestamp_column not in names:
            raise InputError(
                f"The entity dataframe has no timestamp column {timestamp_column!r} (columns: {', '.join(names)}).",
                fix="pass the name of the column holding each row's as-of time as timestamp_column.",
            )
        return timestamp_column
    if DEFAULT_TIMESTAMP_COLUMN in names:
        return DEFAULT_TIMESTAMP_COLUMN
    candidates = [f.name for f in schema if arrow_logical_type(f.type) in {"timestamp", "date"}]
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        raise InputError(
            f"The entity dataframe has no timestamp column (columns: {', '.join(names) or '(none)'}).",
            fix=f"add a column {DEFAULT_TIMESTAMP_COLUMN!r} with each row's as-of time, or pass "
            "timestamp_column= naming it.",
        )
    raise InputError(
        f"The entity dataframe has several timestamp columns ({', '.join(candidates)}) and none is "
        f"named {DEFAULT_TIMESTAMP_COLUMN!r}.",
        fix="pass timestamp_column= naming the as-of time column.",
    )


def _check_columns(
    schema: pa.Schema,
    timestamp: str,
    views: Sequence[FeatureView],
    view_key_types: Mapping[tuple[str, str], str],
) -> None:
    names = schema.names
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise InputError(f"The entity dataframe has duplicate columns: {', '.join(duplicates)}.", fix="rename them.")
    reserved = [n for n in names if n.startswith(INTERNAL_PREFIX)]
    if reserved:
        raise InputError(
            f"Entity column(s) {', '.join(reserved)} start with {INTERNAL_PREFIX!r}, which feature_layer reserves.",
            fix="rename them.",
        )
    ts_type = arrow_logical_type(schema.field(timestamp).type)
    if ts_type not in {"timestamp", "date"}:
        raise InputError(
            f"Entity timestamp column {timestamp!r} holds {ts_type} values ({schema.field(timestamp).type}), "
            "not timestamps.",
            fix=f"convert it to a timestamp (pandas: pd.to_datetime(df[{timestamp!r}]); SQL: CAST(… AS TIMESTAMP)).",
        )
    for view in views:
        missing = [k for k in view.join_keys if k not in names]
        if missing:
            raise InputError(
                f"The entity dataframe lacks join key column(s) {', '.join(missing)} needed by feature view "
                f"{view.name!r} (entity columns: {', '.join(names)}).",
                fix=f"add column(s) {', '.join(missing)} (the join keys of "
                f"{' / '.join(view.entities) or view.name}).",
            )
        for key in view.join_keys:
            given = arrow_logical_type(schema.field(key).type)
            expected = view_key_types.get((view.name, key), "unknown")
            if pa.types.is_null(schema.field(key).type) or "unknown" in (given, expected):
                continue
            if {given, expected} == {"decimal", "int64"}:
                continue  # compared numerically and exactly (DuckDB, PostgreSQL): 42 = 42.0
            if given != expected:
                raise InputError(
                    f"Join key {key!r} is {given} in the entity dataframe ({schema.field(key).type}) but "
                    f"{expected} in feature view {view.name!r}; the rows would never match.",
                    fix=f"cast entity column {key!r} to {expected}.",
                )


def agreed_key_types(
    schema: pa.Schema, views: Sequence[FeatureView], view_key_types: Mapping[tuple[str, str], str]
) -> dict[tuple[str, str], str]:
    """(view, join key) → logical type, for the keys whose entity column and view column have the
    same known logical type."""
    agreed = {}
    for view in views:
        for key in view.join_keys:
            given = arrow_logical_type(schema.field(key).type)
            if given != "unknown" and given == view_key_types.get((view.name, key)):
                agreed[(view.name, key)] = given
    return agreed


def view_key_types(engine: Engine, views: Sequence[FeatureView]) -> dict[tuple[str, str], str]:
    """Logical type of each view's join keys: from the registry, else from the warehouse."""
    from feature_layer.sql.point_in_time import relation_table

    types: dict[tuple[str, str], str] = {}
    for view in views:
        unknown = []
        for key in view.join_keys:
            logical = logical_type(view.column_type(key)) if view.column_type(key) != "unknown" else "unknown"
            types[(view.name, key)] = logical
            if logical == "unknown":
                unknown.append(key)
        if unknown:
            query = exp.select(*[exp.column(ident(k)) for k in unknown]).from_(relation_table(view)).limit(0)
            schema = engine.schema_of(query)
            for key in unknown:
                types[(view.name, key)] = arrow_logical_type(schema.field(key).type)
    return types


def table_keys(view: FeatureView) -> tuple[str, ...]:
    """The view's key columns in its own table, aligned with ``join_keys`` (a mapped use's
    ``join_keys`` are the entity columns: ``registry.join_keys.MappedView.source_keys``)."""
    return tuple(getattr(view, "source_keys", ()) or view.join_keys)


def warehouse_schemas(
    engine: Engine, requested: Sequence[tuple[FeatureView, Sequence[Feature]]]
) -> dict[str, pa.Schema]:
    """Each view's event time, requested features and join keys with the warehouse's own Arrow types.

    One zero-row query per view: it tells which event times are time-zone-aware and which
    feature columns need a cast to their logical type (``feature_layer.types``).
    """
    from feature_layer.sql.point_in_time import relation_table

    schemas = {}
    for view, features in requested:
        names = list(dict.fromkeys([view.event_time, *(f.name for f in features), *table_keys(view)]))
        query = exp.select(*[exp.column(ident(n)) for n in names]).from_(relation_table(view)).limit(0)
        schemas[view.name] = engine.schema_of(query)
    return schemas


def tz_aware_event_times(engine: Engine, views: Sequence[FeatureView]) -> set[str]:
    """Names of the views whose event time is time-zone-aware, from the warehouse's own types.

    The registry keeps logical types only (``timestamp`` for both), and the generated SQL must
    convert a ``timestamptz`` explicitly to be right in any session time zone.
    """
    schemas = warehouse_schemas(engine, [(view, ()) for view in views])
    return {name for name, schema in schemas.items() if pa.types.is_timestamp(schema.field(0).type)
            and schema.field(0).type.tz is not None}


def _naive_utc(ts: pa.ChunkedArray) -> pa.ChunkedArray:
    """A timestamp (or date) column as naive UTC microseconds: the as-of time the SQL compares."""
    import pyarrow.compute as pc

    if pa.types.is_dictionary(ts.type):
        ts = ts.cast(ts.type.value_type)
    if pa.types.is_timestamp(ts.type):
        if ts.type.tz is not None:
            ts = ts.cast(pa.timestamp(ts.type.unit, tz="UTC")).cast(pa.timestamp(ts.type.unit))
        if ts.type.unit != "us":
            ts = pc.cast(ts, pa.timestamp("us"), safe=False)
        return ts
    return ts.cast(pa.timestamp("us"))


def _normalise_arrow(table: pa.Table, timestamp: str, key_types: Mapping[str, str]) -> pa.Table:
    """The as-of time (naive UTC µs) appended beside the user's own timestamp column, which
    stays as given; all-null keys typed; row positions appended."""
    table = table.append_column(TS, _naive_utc(table.column(timestamp)))
    for key, logical in key_types.items():
        index = table.schema.get_field_index(key)
        column = table.column(index)
        if pa.types.is_dictionary(column.type):
            table = table.set_column(index, key, column.cast(column.type.value_type))
        elif pa.types.is_null(column.type) and logical in _ARROW_FOR_LOGICAL:
            table = table.set_column(index, key, column.cast(_ARROW_FOR_LOGICAL[logical]))
    import numpy as np

    return table.append_column(ROW, pa.array(np.arange(table.num_rows, dtype=np.int64)))


def warehouse_source(entity: str, dialect: str) -> exp.Expression:
    text = entity.strip().rstrip(";")
    if _QUERY_START.match(text):
        import sqlglot

        try:
            parsed = sqlglot.parse_one(text, dialect=dialect)
        except sqlglot.errors.ParseError as exc:
            raise InputError(f"The entity query does not parse as {dialect} SQL: {exc}", fix="correct the SQL.") from exc
        if isinstance(parsed, exp.Subquery):
            parsed = parsed.unnest()
        if not isinstance(parsed, exp.Query):
            raise InputError("The entity SQL is not a query.", fix="pass a SELECT statement or a table name.")
        return parsed
    try:
        table = exp.to_table(text, dialect=dialect)
    except Exception as exc:  # sqlglot raises several types for bad names
        raise InputError(f"{entity!r} is not a table name or a query.", fix="pass `schema.table` or a SELECT.") from exc
    for part in ("this", "db", "catalog"):
        node = table.args.get(part)
        if isinstance(node, exp.Identifier):
            node.set("quoted", True)
    return table


def staged_in_temp_tables(engine: Engine) -> bool:
    """Whether in-memory entity rows go to a session temporary table (the engine's ``temp_tables``
    capability), rather than inline VALUES."""
    from feature_layer.offline.kinds import capabilities_of

    return capabilities_of(engine).temp_tables


def prepare_entities(
    engine: Engine,
    entity_df: Any,
    views: Sequence[FeatureView],
    *,
    timestamp_column: str | None = None,
) -> PreparedEntities:
    """Validate ``entity_df`` against the requested views and make it joinable in ``engine``.

    Raises ``InputError`` naming the column and the fix for: missing key or timestamp columns,
    a timestamp column that is not a timestamp, null timestamps, join keys whose type differs
    from the view's, reserved or duplicate column names.
    """
    key_types = view_key_types(engine, views)
    table = _to_arrow(entity_df)
    if table is None:
        source = warehouse_source(str(entity_df), engine.dialect)
        probe = source.copy() if isinstance(source, exp.Query) else exp.select("*").from_(source.copy())
        schema = engine.schema_of(probe)
        timestamp = _pick_timestamp(schema, timestamp_column)
        _check_columns(schema, timestamp, views, key_types)
        facts = engine.entity_table_facts(source, timestamp) if isinstance(source, exp.Table) else EntityTableFacts()
        ts_type = schema.field(timestamp).type
        naive = pa.types.is_timestamp(ts_type) and ts_type.tz is None
        aware = pa.types.is_timestamp(ts_type) and ts_type.tz is not None
        spine = EntitySpine(
            source=source, timestamp=timestamp, columns=tuple(schema.names), naive_utc=naive, tz_aware=aware,
            row_locator=facts.row_locator,
        )
        unchecked = None if facts.timestamp_not_null else timestamp
        return PreparedEntities(spine=spine, columns=tuple(schema.names), unchecked_timestamp=unchecked,
                                key_types=agreed_key_types(schema, views, key_types))

    timestamp = _pick_timestamp(table.schema, timestamp_column)
    _check_columns(table.schema, timestamp, views, key_types)
    _check_integral_decimal_keys(table, views, key_types)
    nulls = table.column(timestamp).null_count
    if nulls:
        raise _null_timestamps(timestamp, nulls)
    entity_keys = {k: key_types[(v.name, k)] for v in views for k in v.join_keys}
    normalised = _normalise_arrow(table, timestamp, entity_keys)
    name = f"__fl_entities_{uuid.uuid4().hex[:12]}"
    source: exp.Expression
    registered: str | None = name
    if staged_in_temp_tables(engine):
        engine.register_arrow(name, normalised)
        source = exp.Table(this=ident(name))
    else:  # no temporary tables: the rows are the query's own VALUES (offline.inline)
        from feature_layer.offline.inline import inline_values

        source, registered = inline_values(normalised, name), None
    spine = EntitySpine(
        source=source,
        timestamp=TS,  # the appended naive UTC copy: the user's column is projected unchanged
        columns=tuple(table.schema.names),
        row_number=ROW,
        naive_utc=True,
    )
    return PreparedEntities(
        spine=spine, columns=tuple(table.schema.names), registered=registered, num_rows=table.num_rows, table=table,
        key_types=agreed_key_types(normalised.schema, views, key_types),
    )


def refuse_null_timestamps(entities: PreparedEntities, result: pa.Table) -> None:
    """Refuse a warehouse input with null timestamps, counted in the whole training set ``result``
    (it holds every entity row once, with its timestamp as given)."""
    column = entities.unchecked_timestamp
    if column is not None and (nulls := result.column(column).null_count):
        raise _null_timestamps(column, nulls)


def check_entity_nulls(engine: Engine, entities: PreparedEntities) -> None:
    """Before a query whose rows are not all seen at once (streamed, or written in the
    warehouse): refuse a warehouse input with null timestamps (one counting query)."""
    if entities.unchecked_timestamp is not None:
        check_warehouse_nulls(engine, entities.spine.source, entities.unchecked_timestamp)


def check_warehouse_nulls(engine: Engine, source: exp.Expression, timestamp: str) -> None:
    """Refuse warehouse entity rows with a null timestamp (a probe for one such row; counted
    only when there is one, for the message)."""
    subject = source.subquery(ident("e")) if isinstance(source, exp.Query) else source.copy()
    null = exp.Is(this=exp.column(ident(timestamp)), expression=exp.Null())
    if not engine.has_rows(exp.select(exp.Literal.number(1)).from_(subject.copy()).where(null.copy())):
        return  # the usual case: one early-stopping probe (Spark: no shuffle), no count
    nulls = engine.fetch_arrow(
        exp.select(exp.func("count", exp.Star()).as_("n")).from_(subject).where(null)
    ).column(0)[0].as_py()
    if nulls:
        raise _null_timestamps(timestamp, nulls)


def _check_integral_decimal_keys(
    table: pa.Table, views: Sequence[FeatureView], key_types: Mapping[tuple[str, str], str]
) -> None:
    """A decimal entity key against an int64 view key must hold whole numbers (``42.00``, not ``42.5``)."""
    import pyarrow.compute as pc

    for view in views:
        for key in view.join_keys:
            field = table.schema.field(key)
            if key_types.get((view.name, key)) != "int64" or not pa.types.is_decimal(field.type):
                continue
            if field.type.scale <= 0:
                continue
            column = table.column(key)
            fractional = pc.not_equal(column, pc.floor(column))
            bad = pc.filter(column, pc.fill_null(fractional, False))
            if len(bad):
                raise InputError(
                    f"Join key {key!r} is {field.type} in the entity dataframe and holds non-whole values "
                    f"(e.g. {bad[0].as_py()}), but it is int64 in feature view {view.name!r}; those rows would "
                    "never match.",
                    fix=f"round or cast entity column {key!r} to int64 (pandas: df[{key!r}].astype('int64')).",
                )


def _null_timestamps(column: str, count: int) -> InputError:
    return InputError(
        f"{count} entity row(s) have a null timestamp in column {column!r}; a training row needs an as-of time.",
        fix="drop those rows or fill the timestamps before building the training set.",
    )
