"""Entity rows inlined in the query, for engines without temporary tables.

Where the engine's ``temp_tables`` capability is off (BigQuery, Trino, Spark through the dbt
adapter, …) the uploaded entity rows cannot be staged in a session table: they become the
query's own ``(VALUES …) AS e(columns…)``, each value a typed literal, so the spine is a
subquery like any warehouse query. A query grows with its rows, so at most :data:`INLINE_ROWS`
rows are inlined; a larger input must be a warehouse table (its name, or a SELECT).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pyarrow as pa
from sqlglot import exp

from feature_layer.errors import InputError

INLINE_ROWS = 10_000
"""The most entity rows inlined as VALUES (warehouses cap a statement's size: BigQuery 1 MB of
SQL, Trino's default query text 1 MB)."""


def _sql_type(arrow: pa.DataType) -> exp.DataType:
    if pa.types.is_boolean(arrow):
        return exp.DataType.build("BOOLEAN")
    if pa.types.is_integer(arrow):
        return exp.DataType.build("BIGINT")
    if pa.types.is_floating(arrow):
        return exp.DataType.build("DOUBLE")
    if pa.types.is_decimal(arrow):
        return exp.DataType.build(f"DECIMAL({arrow.precision}, {arrow.scale})")
    if pa.types.is_timestamp(arrow):
        return exp.DataType.build("TIMESTAMPTZ" if arrow.tz else "TIMESTAMP")
    if pa.types.is_date(arrow):
        return exp.DataType.build("DATE")
    if pa.types.is_string(arrow) or pa.types.is_large_string(arrow) or pa.types.is_string_view(arrow):
        return exp.DataType.build("TEXT")
    raise InputError(f"Entity column type {arrow} cannot be inlined in the query.",
                     fix="cast the column to a number, string, boolean, date or timestamp first.")


def _literal_maker(arrow: pa.DataType, sql_type: exp.DataType) -> Callable[[Any], exp.Expression]:
    """value → its typed literal (the values come from ``to_pylist``)."""
    def cast_text(text: str) -> exp.Expression:
        return exp.cast(exp.Literal.string(text), sql_type.copy())

    if pa.types.is_boolean(arrow):
        return lambda v: exp.Boolean(this=bool(v))
    if pa.types.is_integer(arrow) or pa.types.is_decimal(arrow):
        return lambda v: exp.cast(exp.Literal.number(str(v)), sql_type.copy())
    if pa.types.is_floating(arrow):
        def number(v: float) -> exp.Expression:
            if math.isnan(v):
                return cast_text("NaN")
            if math.isinf(v):
                return cast_text("Infinity" if v > 0 else "-Infinity")
            return exp.cast(exp.Literal.number(repr(float(v))), sql_type.copy())
        return number
    if pa.types.is_timestamp(arrow):
        return lambda v: cast_text(v.isoformat(sep=" "))
    if pa.types.is_date(arrow):
        return lambda v: cast_text(v.isoformat())
    return lambda v: cast_text(str(v))


def _column(values: pa.ChunkedArray) -> list[exp.Expression]:
    arrow = values.type
    if pa.types.is_dictionary(arrow):
        values, arrow = values.cast(arrow.value_type), arrow.value_type
    if pa.types.is_timestamp(arrow) and arrow.tz:
        values = values.cast(pa.timestamp(arrow.unit, "UTC"))
    sql_type = _sql_type(arrow)
    make = _literal_maker(arrow, sql_type)
    null = exp.cast(exp.Null(), sql_type)
    return [null.copy() if v is None else make(v) for v in values.to_pylist()]


def inline_values(table: pa.Table, alias: str) -> exp.Select:
    """``SELECT * FROM (VALUES (…), …) AS alias(columns…)``: ``table``'s rows as typed literals."""
    if table.num_rows > INLINE_ROWS:
        raise InputError(
            f"The entity dataframe has {table.num_rows:,} rows; this engine has no temporary tables, so they would "
            f"be inlined in the query, which holds at most {INLINE_ROWS:,}.",
            fix="write the entity rows to a warehouse table and pass its name (or a SELECT) as entity_df.",
        )
    if table.num_rows == 0:
        # VALUES needs a row: one all-NULL row, filtered out
        row = [exp.cast(exp.Null(), _sql_type(f.type)) for f in table.schema]
        values = exp.values([exp.Tuple(expressions=row)], alias=alias,
                           columns=[exp.to_identifier(n, quoted=True) for n in table.schema.names])
        return exp.select("*").from_(values).where(exp.false())
    columns = [_column(table.column(i)) for i in range(table.num_columns)]
    rows = [exp.Tuple(expressions=list(row)) for row in zip(*columns, strict=True)]
    values = exp.values(rows, alias=alias, columns=[exp.to_identifier(n, quoted=True) for n in table.schema.names])
    return exp.select("*").from_(values)
