"""Map warehouse type names to the small set of logical types feature_layer reasons about.

Logical types keep the rest of the code engine-agnostic: the online encoding, the UI and
type checks of entity keys all speak ``int64``, ``float64``, ``bool``, ``string``,
``timestamp``, ``date``, ``decimal`` or ``unknown``.
"""

from __future__ import annotations

LOGICAL_TYPES = ("int64", "float64", "bool", "string", "timestamp", "date", "decimal", "unknown")

_PREFIXES: tuple[tuple[str, str], ...] = (
    ("timestamp", "timestamp"),
    ("datetime", "timestamp"),
    ("date", "date"),
    ("bool", "bool"),
    ("double", "float64"),
    ("float", "float64"),
    ("real", "float64"),
    ("decimal", "decimal"),
    ("numeric", "decimal"),
    ("hugeint", "int64"),
    ("ubigint", "int64"),
    ("bigint", "int64"),
    ("int", "int64"),
    ("smallint", "int64"),
    ("tinyint", "int64"),
    ("usmallint", "int64"),
    ("uinteger", "int64"),
    ("utinyint", "int64"),
    ("long", "int64"),
    ("short", "int64"),
    ("varchar", "string"),
    ("character", "string"),
    ("char", "string"),
    ("text", "string"),
    ("string", "string"),
    ("uuid", "string"),
)


def logical_type(sql_type: str | None) -> str:
    """Return the logical type of a SQL type name (``BIGINT`` → ``int64``); ``unknown`` if unsure."""
    if not sql_type:
        return "unknown"
    name = sql_type.strip().lower()
    if name in LOGICAL_TYPES:
        return name
    if name in {"int8", "int4", "int2", "integer"}:
        return "int64"
    if name in {"float8", "float4"}:
        return "float64"
    for prefix, logical in _PREFIXES:
        if name.startswith(prefix):
            return logical
    return "unknown"
