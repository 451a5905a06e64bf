"""The small set of logical types feature_layer reasons about, and what each one is everywhere.

Logical types keep the rest of the code engine-agnostic: the online encoding, the UI and
type checks of entity keys all speak ``int64``, ``float64``, ``bool``, ``string``,
``timestamp``, ``date``, ``decimal`` or ``unknown``.

A feature's logical type (from its ``dtype`` override, else the catalog, else the YAML
``data_type``) is the one type it has on every path: ``arrow_type`` is the Arrow type a
training set and an online lookup both return for it, and ``sql_type`` the SQL type a
training set casts the warehouse's column to (a DuckDB ``HUGEINT`` from ``sum(…)``, a
PostgreSQL ``integer`` or ``numeric``). ``unknown`` has neither: a training set keeps the
warehouse's own type, and the online store serves it as text.

>>> logical_type("HUGEINT"), logical_type("numeric(38,0)"), logical_type("timestamp with time zone")
('int64', 'int64', 'timestamp')
>>> logical_type("INTEGER[]"), logical_type("interval"), logical_type(None)
('unknown', 'unknown', 'unknown')
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pyarrow as pa
    from sqlglot import exp

LOGICAL_TYPES = ("int64", "float64", "bool", "string", "timestamp", "date", "decimal", "unknown")

_NAMES: dict[str, str] = {
    **dict.fromkeys(
        ("tinyint", "smallint", "integer", "int", "bigint", "hugeint", "int1", "int2", "int4", "int8", "int16",
         "int32", "int64", "int128", "utinyint", "usmallint", "uinteger", "ubigint", "uhugeint", "long", "short",
         "mediumint", "byteint", "serial", "smallserial", "bigserial", "serial4", "serial8"),
        "int64",
    ),
    **dict.fromkeys(("double", "double precision", "float", "float4", "float8", "float32", "float64", "real"), "float64"),
    **dict.fromkeys(("decimal", "numeric", "number", "dec", "bignumeric", "bigdecimal"), "decimal"),
    **dict.fromkeys(("bool", "boolean", "logical"), "bool"),
    **dict.fromkeys(
        ("varchar", "character varying", "char", "character", "bpchar", "nvarchar", "nchar", "text", "string",
         "varchar2", "nvarchar2", "tinytext", "mediumtext", "longtext", "ntext", "clob", "uuid", "citext", "name"),
        "string",
    ),
    **dict.fromkeys(("datetime", "datetime2", "smalldatetime", "timestamptz"), "timestamp"),
    "date": "date",
}
_COMPOSITE = re.compile(r"\[\]\s*$|^(array|list|struct|map|union|row|tuple)\b")
_PARAMS = re.compile(r"\(([^)]*)\)")


def logical_type(sql_type: str | None) -> str:
    """Return the logical type of a SQL type name (``BIGINT`` → ``int64``); ``unknown`` if unsure.

    A decimal of scale 0 (``NUMERIC(38,0)``, ``DECIMAL(10)``) holds whole numbers: ``int64``,
    as ``HUGEINT`` is (what DuckDB's ``sum`` of integers returns). Arrays, structs, maps,
    intervals, JSON and anything else not listed are ``unknown``.
    """
    if not sql_type:
        return "unknown"
    name = " ".join(sql_type.strip().lower().split())
    if name in LOGICAL_TYPES:
        return name
    if _COMPOSITE.search(name):
        return "unknown"
    params = _PARAMS.search(name)
    base = _PARAMS.sub("", name).strip().removesuffix(" unsigned").removesuffix(" signed")
    if base.startswith("timestamp"):  # timestamp(3), timestamp_ns, timestamp with time zone, …
        return "timestamp"
    logical = _NAMES.get(base, "unknown")
    if logical == "decimal" and params:
        parts = [p.strip() for p in params.group(1).split(",")]
        if len(parts) == 1 or (len(parts) == 2 and parts[1] == "0"):
            return "int64"
    return logical


# ----------------------------------------------------------------------------- one type everywhere

_SQL_TYPES = {
    "int64": "BIGINT",
    "float64": "DOUBLE",
    "bool": "BOOLEAN",
    "string": "TEXT",
    "timestamp": "TIMESTAMP",
    "date": "DATE",
    "decimal": "DOUBLE",
}


def arrow_type(logical: str) -> pa.DataType | None:
    """The Arrow type a feature of this logical type has in training sets and online lookups.

    ``decimal`` is ``float64`` (the online store keeps an 8-byte float; exact whole numbers
    are ``int64``), ``timestamp`` an instant in UTC. ``None`` for ``unknown``.
    """
    import pyarrow as pa

    types = {
        "int64": pa.int64(),
        "float64": pa.float64(),
        "bool": pa.bool_(),
        "string": pa.string(),
        "timestamp": pa.timestamp("us", tz="UTC"),
        "date": pa.date32(),
        "decimal": pa.float64(),
    }
    return types.get(logical)


def sql_type(logical: str) -> exp.DataType | None:
    """The SQL type a training set casts a feature of this logical type to; ``None`` for ``unknown``.

    A ``timestamp`` is cast to a naive ``TIMESTAMP`` (UTC by convention) and then made an
    instant without the session time zone (see ``feature_layer.sql.point_in_time``).
    """
    from sqlglot import exp

    name = _SQL_TYPES.get(logical)
    return exp.DataType.build(name) if name else None


def matches_arrow(logical: str, arrow: pa.DataType) -> bool:
    """True when a warehouse column of Arrow type ``arrow`` needs no SQL cast to ``logical``.

    Time zones and units are not compared: relabelling them is free on the Arrow side.
    """
    import pyarrow as pa

    target = arrow_type(logical)
    if target is None:
        return True
    if pa.types.is_timestamp(target):
        return pa.types.is_timestamp(arrow) and arrow.tz is not None
    if pa.types.is_string(target):
        return pa.types.is_string(arrow) or pa.types.is_large_string(arrow) or pa.types.is_string_view(arrow)
    return arrow == target
