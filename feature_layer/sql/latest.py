"""Latest value per entity as of ``end``: the materialization query, as a pure sqlglot tree.

The query ranks a view's rows per entity by event time, then by the training sets' tie-break
(``point_in_time.tie_break_order``: created-at, then every orderable feature, larger first,
NULL lowest), and keeps rank 1 — so the online value is the one a training set built at
``end`` would pick, even among exact duplicates. One tree serves every dialect; ``to_sql`` renders it.

Incremental runs and late data
------------------------------
A run remembers a :class:`Watermark`: the ``end`` it used (every row with an event time at or
before it was considered) and, when the view declares a created-at column, the largest
created-at among the rows read. The next run reads only rows that may be new since then::

    event_time <= end AND (event_time > previous_end OR created_at > previous_max_created - lookback)

so a *late-arriving* row (event time older than the watermark, landing in the warehouse after
the last run) **is** picked up, and the online store's server-side rule (an older value never
overwrites a newer one) decides whether it wins: it does when it is newer than the stored value
for its entity, as a training set built now would say. Because the new rows' latest value is
merged with the stored one under that rule, ``max(stored, latest(new rows))`` equals
``latest(all rows)``.

Created-at is not a load time: rows need not land in created-at order (a source system's
clock, batches loaded out of order). ``lookback`` (default :data:`DEFAULT_LATE_LOOKBACK`, one
hour) covers that. The guarantee, exactly: a row with event time <= ``end`` is read by the
first run that starts after it landed, provided its created-at is later than (the largest
created-at read by any earlier run) − ``lookback``. A row landing later than that (created
more than ``lookback`` before rows already materialized) needs ``--start`` or
``--full-refresh``. Re-read rows cost a re-write of identical bytes, nothing else.

Views without a created-at column cannot tell a late row from an old one; they are read by
event time only (``event_time > previous_end``), so rows that land with an event time at or
before the last ``end`` are not seen until ``--full-refresh`` (or an explicit ``--start``).
Declare ``created_at`` on views that receive late data.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import sqlglot.expressions as exp

from feature_layer.registry.model import FeatureView
from feature_layer.sql.names import col, relation_table
from feature_layer.sql.point_in_time import tie_break_order

EVENT_ALIAS = "__fl_event_time"
CREATED_ALIAS = "__fl_created_at"
_RANK = "__fl_rank"

DEFAULT_LATE_LOOKBACK = timedelta(hours=1)
"""How far below the created-at watermark an incremental run re-reads (see the module docstring)."""


@dataclass(frozen=True)
class Watermark:
    """What a finished materialization run of one view has covered."""

    event_time: datetime
    """The run's ``end``: every row with event time <= this was considered."""
    created_at: datetime | None = None
    """Largest created-at among the rows considered (views with a created-at column)."""


def _ts(value: datetime) -> exp.Expression:
    """A UTC timestamp literal (naive timestamps in the warehouse are read as UTC)."""
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return exp.cast(
        exp.Literal.string(value.isoformat(sep=" ", timespec="microseconds")), exp.DataType.build("timestamp")
    )


def new_rows_filter(
    view: FeatureView,
    *,
    end: datetime,
    start: datetime | None = None,
    watermark: Watermark | None = None,
    lookback: timedelta = DEFAULT_LATE_LOOKBACK,
) -> exp.Expression:
    """The WHERE clause choosing the rows a run must look at (see the module docstring)."""
    event = col(view.event_time)
    cond: exp.Expression = exp.and_(event.is_(exp.null()).not_(), exp.LTE(this=event.copy(), expression=_ts(end)))
    for key in view.join_keys:
        cond = exp.and_(cond, col(key).is_(exp.null()).not_())
    if start is not None:
        return exp.and_(cond, exp.GTE(this=event.copy(), expression=_ts(start)))
    if watermark is None:
        return cond
    newer = exp.GT(this=event.copy(), expression=_ts(watermark.event_time))
    if view.created_at:
        # No created-at seen yet (the last run read no rows): any row with one is new.
        later = (
            exp.GT(this=col(view.created_at), expression=_ts(watermark.created_at - lookback))
            if watermark.created_at is not None
            else col(view.created_at).is_(exp.null()).not_()
        )
        newer = exp.or_(newer, later)
    return exp.and_(cond, exp.paren(newer))


# Dialects with an ``arg_max(value, ordering)`` aggregate that accepts structs. There the
# latest row is a hash aggregate whose memory grows with the number of entities, not rows
# (DuckDB: 10M rows in 1.2 s and ~400 MB, against 5-7 s and 2 GB for the window form).
_ARG_MAX_DIALECTS = frozenset({"duckdb"})


def latest_values(
    view: FeatureView,
    *,
    end: datetime,
    start: datetime | None = None,
    watermark: Watermark | None = None,
    dialect: str = "duckdb",
    lookback: timedelta = DEFAULT_LATE_LOOKBACK,
) -> exp.Select:
    """SELECT join keys, event time, created-at and features of each entity's latest row.

    Output columns: the join keys, ``__fl_event_time``, ``__fl_created_at`` (NULL when the
    view has none), then the features in view order. On DuckDB the latest row is chosen by
    one ``ARG_MAX`` over a struct of the row (one aggregate, so exact ties cannot mix values
    of two rows); elsewhere by ``ROW_NUMBER() … = 1``, the portable formulation.
    """
    if dialect in _ARG_MAX_DIALECTS:
        return _latest_by_arg_max(view, end=end, start=start, watermark=watermark, lookback=lookback)
    return _latest_by_window(view, end=end, start=start, watermark=watermark, dialect=dialect, lookback=lookback)


def _latest_by_arg_max(
    view: FeatureView, *, end: datetime, start: datetime | None, watermark: Watermark | None, lookback: timedelta
) -> exp.Select:
    created = col(view.created_at) if view.created_at else exp.cast(exp.null(), exp.DataType.build("timestamp"))
    fields = [(EVENT_ALIAS, col(view.event_time)), (CREATED_ALIAS, created)]
    fields += [(f.name, col(f.name)) for f in view.features]
    row = exp.Struct(
        expressions=[
            exp.PropertyEQ(this=exp.to_identifier(name, quoted=True), expression=value) for name, value in fields
        ]
    )
    # The same order as the window form and the training sets: event time, then created-at,
    # then every orderable feature, each larger first with NULL lowest. DuckDB orders NULL
    # highest inside tuples, so the cheap form takes ARG_MIN over negated values (a NULL
    # negates to NULL, the highest, so it loses); views ordering by strings, which cannot be
    # negated, take ARG_MAX over (x IS NOT NULL, x) pairs instead.
    ordered = tie_break_order(view, None, "duckdb")
    negated = _negated_order(view, ordered)
    if negated is not None:
        pick: exp.Expression = exp.ArgMin(this=row, expression=exp.Tuple(expressions=negated))
    else:
        parts: list[exp.Expression] = [col(view.event_time)]
        for o in ordered:
            parts.append(exp.Tuple(expressions=[o.this.copy().is_(exp.null()).not_(), o.this.copy()]))
        pick = exp.ArgMax(this=row, expression=exp.Tuple(expressions=parts))
    return (
        exp.select(*[col(k) for k in view.join_keys], exp.Unnest(expressions=[pick]))
        .from_(relation_table(view))
        .where(new_rows_filter(view, end=end, start=start, watermark=watermark, lookback=lookback))
        .group_by(*[col(k) for k in view.join_keys])
    )


def _negated(column: exp.Expression, dtype: str) -> exp.Expression | None:
    """``column`` negated so that ascending order is the original descending order (DuckDB)."""
    if isinstance(column, exp.Collate) or dtype not in {"float64", "decimal", "int64", "bool", "timestamp", "date"}:
        return None
    if dtype == "float64":
        # NaN sorts largest in training sets (ORDER BY … DESC on DuckDB and PostgreSQL), so it
        # must sort smallest here; -NaN is NaN, which DuckDB also sorts largest. The pair
        # (NOT isnan(x), -x) puts NaN first and keeps NULL (a NULL pair element) last.
        not_nan = exp.Not(this=exp.func("ISNAN", column.copy()))
        return exp.Tuple(expressions=[not_nan, exp.Neg(this=exp.paren(column.copy()))])
    if dtype == "decimal":
        value: exp.Expression = column
    elif dtype == "int64":
        value = exp.cast(column, exp.DataType.build("hugeint", dialect="duckdb"))  # -INT64_MIN fits
    elif dtype == "bool":
        value = exp.cast(column, exp.DataType.build("int"))
    else:
        value = exp.func("EPOCH_US", exp.cast(column, exp.DataType.build("timestamp")))
    return exp.Neg(this=exp.paren(value))


def _negated_order(view: FeatureView, ordered: list[exp.Ordered]) -> list[exp.Expression] | None:
    types = {f.name: f.dtype for f in view.features}
    if view.created_at:
        types[view.created_at] = "timestamp"
    out = [_negated(col(view.event_time), "timestamp")]
    for o in ordered:
        name = o.this.this.name if isinstance(o.this, exp.Collate) else o.this.name
        out.append(_negated(o.this, types.get(name, "unknown")))
    return None if any(part is None for part in out) else out  # type: ignore[return-value]


def _latest_by_window(
    view: FeatureView,
    *,
    end: datetime,
    start: datetime | None,
    watermark: Watermark | None,
    dialect: str,
    lookback: timedelta,
) -> exp.Select:
    order = [exp.Ordered(this=col(view.event_time), desc=True, nulls_first=False)]
    order += tie_break_order(view, None, dialect)
    rank = exp.Window(
        this=exp.RowNumber(),
        partition_by=[col(k) for k in view.join_keys],
        order=exp.Order(expressions=order),
    )
    created = col(view.created_at) if view.created_at else exp.cast(exp.null(), exp.DataType.build("timestamp"))
    inner = (
        exp.select(
            *[col(k) for k in view.join_keys],
            exp.alias_(col(view.event_time), EVENT_ALIAS, quoted=True),
            exp.alias_(created, CREATED_ALIAS, quoted=True),
            *[col(f.name) for f in view.features],
            exp.alias_(rank, _RANK, quoted=True),
        )
        .from_(relation_table(view))
        .where(new_rows_filter(view, end=end, start=start, watermark=watermark, lookback=lookback))
    )
    outer_cols = [*view.join_keys, EVENT_ALIAS, CREATED_ALIAS, *(f.name for f in view.features)]
    return (
        exp.select(*[col(c, "latest") for c in outer_cols])
        .from_(inner.subquery("latest"))
        .where(exp.EQ(this=col(_RANK, "latest"), expression=exp.Literal.number(1)))
    )


def max_created(
    view: FeatureView,
    *,
    end: datetime,
    start: datetime | None = None,
    watermark: Watermark | None = None,
    lookback: timedelta = DEFAULT_LATE_LOOKBACK,
) -> exp.Select:
    """SELECT ``max_created``, ``max_event``: MAX(created-at) and MAX(event time) of the rows a
    run reads (the same WHERE as :func:`latest_values`).

    ``max_created`` (NULL for views without created-at) is the next created-at watermark, once
    combined with the previous one; ``max_event`` is the newest event time materialized (the
    data's freshness). Run it *before* :func:`latest_values`: a row landing between the two
    queries is then read again by the next run (harmless: writes are idempotent) instead of
    being skipped.
    """
    created = col(view.created_at) if view.created_at else exp.cast(exp.null(), exp.DataType.build("timestamp"))
    return (
        exp.select(
            exp.alias_(exp.Max(this=created), "max_created", quoted=True),
            exp.alias_(exp.Max(this=col(view.event_time)), "max_event", quoted=True),
        )
        .from_(relation_table(view))
        .where(new_rows_filter(view, end=end, start=start, watermark=watermark, lookback=lookback))
    )


def to_sql(expression: exp.Expression, dialect: str) -> str:
    return expression.sql(dialect=dialect)
