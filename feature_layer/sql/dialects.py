"""What each SQL dialect can do, and which point-in-time formulation it gets.

sqlglot happily renders ``ASOF JOIN`` for dialects that have no such thing, so the choice
of formulation cannot be left to the generator: it is made here, explicitly, per dialect.

* ``asof``: DuckDB's ``ASOF LEFT JOIN`` on a feature table deduplicated per
  (keys, event time). One sort-merge pass; the fastest formulation where it exists.
* ``window``: the entity rows and the feature rows in one ``UNION ALL``, sorted once per key
  by a ``SUM(…) OVER (… ROWS UNBOUNDED PRECEDING)`` that numbers each entity row's latest
  feature row, joined back on that number, the TTL applied after; portable to every engine
  with window functions (PostgreSQL, Spark, BigQuery, Trino, Snowflake, …), and its cost does
  not depend on how many feature rows share a key value.
* ``carry`` (Spark, Databricks): the same union, but the window carries the latest feature row
  forward as a struct (``LAST(struct) IGNORE NULLS OVER (… ROWS UNBOUNDED PRECEDING)``) instead of
  numbering it, so there is no join back; the views chain (each view's entity rows feed the next
  view's union) and the entity rows are read once, numbered in scan order with
  ``MONOTONICALLY_INCREASING_ID()`` (no global sort).
* ``lateral``: per entity row, ``LEFT JOIN LATERAL (… ORDER BY event time DESC … LIMIT 1)``: one
  index probe per entity row. Chosen per view, only where the engine has ``LATERAL``
  (PostgreSQL) and the view's relation has a b-tree index on (join keys…, event time); without
  such an index every probe would scan the table, so those views keep ``window``.

Both formulations implement the same semantics (``docs/training_sets.md``) and are executed
against a brute-force reference in the tests.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlglot import exp
from sqlglot.dialects.dialect import Dialect

from feature_layer.errors import InputError

STRATEGIES = ("asof", "window", "lateral", "carry")


@dataclass(frozen=True)
class DialectCapabilities:
    """The few engine differences the point-in-time builder cares about."""

    name: str
    pit_strategy: str
    """``asof`` or ``window`` (see the module docstring)."""
    asof_join: bool = False
    """The engine has ``ASOF [LEFT] JOIN … ON keys AND ts >= event_time``."""
    materialized_cte: bool = False
    """``WITH x AS MATERIALIZED (…)`` forces a CTE to be computed once."""
    string_order_collation: str | None = None
    """Collation that makes string ordering byte-wise (used only for deterministic tie-breaks)."""
    utc_instant: bool = False
    """``naive AT TIME ZONE 'UTC'`` turns a naive UTC timestamp into a time-zone-aware instant
    whatever the session time zone: time-zone-aware event times are then compared bare (an
    index on them stays usable) with the as-of time converted, once per entity row."""
    carry_forward: bool = False
    """``LAST(struct) IGNORE NULLS OVER (…)`` and ``MONOTONICALLY_INCREASING_ID()``: the ``carry``
    formulation (Spark, Databricks)."""
    lateral_join: bool = False
    """``LEFT JOIN LATERAL (correlated subquery … LIMIT 1) ON TRUE``: the ``lateral`` formulation,
    used for views whose relation has an index on (join keys…, event time)."""


_KNOWN: dict[str, DialectCapabilities] = {
    "duckdb": DialectCapabilities("duckdb", "asof", asof_join=True, materialized_cte=True, utc_instant=True),
    "postgres": DialectCapabilities(
        "postgres", "window", materialized_cte=True, string_order_collation="C", utc_instant=True,
        lateral_join=True,
    ),
    "bigquery": DialectCapabilities("bigquery", "window"),
    "spark": DialectCapabilities("spark", "carry", carry_forward=True),
    "databricks": DialectCapabilities("databricks", "carry", carry_forward=True),
    "trino": DialectCapabilities("trino", "window"),
    "presto": DialectCapabilities("presto", "window"),
    "athena": DialectCapabilities("athena", "window"),
    # Snowflake has ASOF JOIN (MATCH_CONDITION syntax), which sqlglot does not model yet.
    "snowflake": DialectCapabilities("snowflake", "window"),
    "redshift": DialectCapabilities("redshift", "window"),
}


def capabilities(dialect: str | None) -> DialectCapabilities:
    """Capabilities of ``dialect``; any other dialect sqlglot knows gets the portable formulation.

    >>> capabilities("duckdb").pit_strategy
    'asof'
    >>> capabilities("postgres").pit_strategy
    'window'
    """
    name = (dialect or "duckdb").lower()
    if name in _KNOWN:
        return _KNOWN[name]
    try:
        Dialect.get_or_raise(name)
    except ValueError as exc:
        known = ", ".join(sorted(_KNOWN))
        raise InputError(
            f"SQL dialect {dialect!r} is not known to sqlglot.",
            fix=f"use one of: {known} (or another sqlglot dialect name).",
        ) from exc
    return DialectCapabilities(name, "window")


def _utc() -> exp.Literal:
    return exp.Literal.string("UTC")


def to_naive_utc(value: exp.Expression, dialect: str | None) -> exp.Expression:
    """A time-zone-aware timestamp as the naive timestamp of its UTC wall clock.

    Never ``CAST(… AS TIMESTAMP)``: that conversion uses the session time zone, so SQL
    printed for analysts would shift every as-of time in a non-UTC session.

    Spark and Databricks: the value as it is. Their time-zone-aware ``TIMESTAMP`` holds UTC
    microseconds and compares as an instant in any session time zone; the former
    ``CAST(FROM_UTC_TIMESTAMP(…, 'UTC') AS TIMESTAMP)`` was the identity (same type, same
    microseconds), evaluated for every feature row of a range join.
    """
    name = capabilities(dialect).name
    if name in {"spark", "databricks"}:
        return value
    if name == "bigquery":
        return exp.Anonymous(this="DATETIME", expressions=[value, _utc()])
    if name == "snowflake":
        converted = exp.Anonymous(this="CONVERT_TIMEZONE", expressions=[_utc(), value])
        return exp.cast(converted, exp.DataType.build("TIMESTAMP_NTZ", dialect="snowflake"))
    at_utc = exp.AtTimeZone(this=value, zone=_utc())
    if name in {"postgres", "duckdb", "redshift"}:
        return at_utc
    return exp.cast(at_utc, exp.DataType.build("TIMESTAMP"))


def to_utc_instant(value: exp.Expression, dialect: str | None) -> exp.Expression:
    """A naive UTC timestamp as a time-zone-aware instant (only where ``utc_instant``)."""
    if not capabilities(dialect).utc_instant:
        raise ValueError(f"{dialect}: no session-independent naive-to-instant conversion is modelled.")
    return exp.AtTimeZone(this=value, zone=_utc())


def pit_strategy(dialect: str | None, strategy: str | None = None) -> str:
    """The point-in-time formulation for ``dialect``; ``strategy`` overrides it when the engine allows."""
    caps = capabilities(dialect)
    if strategy is None:
        return caps.pit_strategy
    if strategy not in STRATEGIES:
        raise InputError(f"Unknown point-in-time strategy {strategy!r}.", fix=f"use one of: {', '.join(STRATEGIES)}.")
    if strategy == "asof" and not caps.asof_join:
        raise InputError(
            f"Dialect {caps.name!r} has no ASOF JOIN, so the `asof` formulation cannot run there.",
            fix="use the `window` formulation (the default for this dialect).",
        )
    if strategy == "carry" and not caps.carry_forward:
        raise InputError(
            f"Dialect {caps.name!r} has no modelled LAST(…) IGNORE NULLS carry-forward, so the `carry` formulation "
            "cannot run there.",
            fix="use the `window` formulation (the default for this dialect).",
        )
    if strategy == "lateral" and not caps.lateral_join:
        raise InputError(
            f"Dialect {caps.name!r} has no correlated LATERAL join, so the `lateral` formulation cannot run there.",
            fix="use the `window` formulation (the default for this dialect).",
        )
    return strategy


ADAPTER_DIALECTS: dict[str, str] = {
    "duckdb": "duckdb",
    "postgres": "postgres",
    "redshift": "redshift",
    "materialize": "postgres",
    "snowflake": "snowflake",
    "bigquery": "bigquery",
    "spark": "spark",
    "databricks": "databricks",
    "trino": "trino",
    "starburst": "trino",
    "presto": "presto",
    "athena": "athena",
    "clickhouse": "clickhouse",
    "sqlserver": "tsql",
    "fabric": "tsql",
    "synapse": "tsql",
    "oracle": "oracle",
    "mysql": "mysql",
    "sqlite": "sqlite",
    "teradata": "teradata",
    "doris": "doris",
    "starrocks": "starrocks",
    "exasol": "exasol",
    "dremio": "dremio",
}
"""dbt adapter type (profiles.yml ``type:``) → the sqlglot dialect its SQL is written in."""


def dialect_for_adapter(adapter_type: str) -> str:
    """The sqlglot dialect of a dbt adapter: from :data:`ADAPTER_DIALECTS`, else the adapter's
    own name when sqlglot knows it (InputError naming both otherwise).

    >>> dialect_for_adapter("sqlserver")
    'tsql'
    >>> dialect_for_adapter("duckdb")
    'duckdb'
    """
    name = ADAPTER_DIALECTS.get(adapter_type.lower(), adapter_type.lower())
    try:
        Dialect.get_or_raise(name)
    except ValueError as exc:
        raise InputError(
            f"dbt adapter {adapter_type!r} has no SQL dialect feature_layer knows (sqlglot has no {name!r}).",
            fix="use a target whose adapter sqlglot models (duckdb, postgres, snowflake, bigquery, spark, trino, …), "
            "or report the adapter so it can be mapped in feature_layer/sql/dialects.py.",
        ) from exc
    return name
