"""Per-feature statistics computed in the warehouse at materialization time (cheap aggregates).

Two scans of the view, both plain aggregates every engine runs well: one for counts, approximate
distinct counts, min, max and mean of every feature; one for ten equal-width histogram bins of
each numeric feature between its min and max. The builders are pure sqlglot; ``compute`` runs
them and returns ``{feature_ref: stats}`` for ``StateStore.save_statistics``.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

import sqlglot.expressions as exp

from feature_layer.registry.model import FeatureView
from feature_layer.sql.latest import _ts
from feature_layer.sql.names import col, relation_table
from feature_layer.types import sql_type

BINS = 10
APPROX_DISTINCT_DIALECTS = frozenset({"duckdb", "snowflake", "bigquery", "trino", "presto", "spark", "databricks"})
"""Engines with a cheap approximate distinct count (HyperLogLog); others count exactly."""
_NUMERIC = {"float64", "int64", "decimal"}
_ORDERED = _NUMERIC | {"timestamp", "date"}


def _where(view: FeatureView, end: datetime) -> exp.Expression:
    return exp.and_(
        col(view.event_time).is_(exp.null()).not_(), exp.LTE(this=col(view.event_time), expression=_ts(end))
    )


def summary_sql(view: FeatureView, *, end: datetime, dialect: str = "duckdb") -> exp.Select:
    """One row: ``__n`` then per feature i ``c{i}`` (non-null), ``d{i}`` (≈distinct), ``lo{i}``, ``hi{i}``, ``mu{i}``."""
    cols: list[exp.Expression] = [exp.alias_(exp.Count(this=exp.Star()), "__n")]
    for i, f in enumerate(view.features):
        c = col(f.name)
        cols.append(exp.alias_(exp.Count(this=c), f"c{i}"))
        distinct = (
            exp.ApproxDistinct(this=c.copy())
            if dialect in APPROX_DISTINCT_DIALECTS
            else exp.Count(this=exp.Distinct(expressions=[c.copy()]))
        )
        cols.append(exp.alias_(distinct, f"d{i}"))
        if f.dtype in _ORDERED:
            # numbers in their logical type (a HUGEINT or NUMERIC min is a Decimal, which got no histogram)
            typed = exp.cast(c.copy(), sql_type(f.dtype)) if f.dtype in _NUMERIC else c.copy()
            cols.append(exp.alias_(exp.Min(this=typed.copy()), f"lo{i}"))
            cols.append(exp.alias_(exp.Max(this=typed), f"hi{i}"))
        if f.dtype in _NUMERIC:
            cols.append(exp.alias_(exp.Avg(this=exp.cast(c.copy(), exp.DataType.build("double"))), f"mu{i}"))
    return exp.select(*cols).from_(relation_table(view)).where(_where(view, end))


def histogram_sql(
    view: FeatureView, ranges: dict[int, tuple[float, float]], *, end: datetime, sample_percent: float | None = None
) -> exp.Expression | None:
    """Rows of (``f`` feature index, ``b`` bin 0-9, ``n`` count) for numeric features with a finite range.

    ``sample_percent`` reads a block sample (``TABLESAMPLE SYSTEM``): a ten-bin histogram of a
    few hundred thousand rows has the shape of the whole, at a fraction of the scan.

    A UNION ALL of one small GROUP BY per feature: each reads one column, which every engine
    does fast (a single SELECT of 10 x 10 ``SUM(CASE …)`` was 4x slower on DuckDB).
    """
    parts: list[exp.Select] = []
    for i, (lo, hi) in ranges.items():
        value = exp.cast(col(view.features[i].name), exp.DataType.build("double"))
        scaled = exp.Div(
            this=exp.paren(exp.Sub(this=value, expression=exp.Literal.number(repr(lo)))),
            expression=exp.Literal.number(repr((hi - lo) / BINS)),
        )
        bin_ = exp.func(
            "LEAST", exp.cast(exp.Floor(this=scaled), exp.DataType.build("int")), exp.Literal.number(BINS - 1)
        )
        parts.append(
            exp.select(
                exp.alias_(exp.Literal.number(i), "f"),
                exp.alias_(bin_, "b"),
                exp.alias_(exp.Count(this=exp.Star()), "n"),
            )
            .from_(_sampled(relation_table(view), sample_percent))
            .where(exp.and_(_where(view, end), col(view.features[i].name).is_(exp.null()).not_()))
            .group_by(bin_.copy())
        )
    if not parts:
        return None
    query: exp.Expression = parts[0]
    for part in parts[1:]:
        query = exp.union(query, part, distinct=False)
    return query


def _sampled(table: exp.Table, percent: float | None) -> exp.Table:
    if percent is None or percent >= 100:
        return table
    table.set("sample", exp.TableSample(method=exp.Var(this="SYSTEM"), percent=exp.Literal.number(round(percent, 3))))
    return table


HISTOGRAM_ROWS = 200_000
"""Above this many rows the histograms are read from a sample of about this many."""


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def compute(engine: Any, view: FeatureView, *, end: datetime) -> dict[str, dict[str, Any]]:
    """Run the statistics queries on ``engine``; return ``{"view.feature": stats}``."""
    dialect = getattr(engine, "dialect", "duckdb")
    row = engine.fetch_arrow(summary_sql(view, end=end, dialect=dialect)).to_pylist()[0]
    total = int(row["__n"] or 0)
    computed = datetime.now(UTC).isoformat()
    out: dict[str, dict[str, Any]] = {}
    ranges: dict[int, tuple[float, float]] = {}
    for i, f in enumerate(view.features):
        non_null = int(row[f"c{i}"] or 0)
        stats: dict[str, Any] = {
            "rows": total,
            "null_pct": round(100.0 * (total - non_null) / total, 4) if total else None,
            "distinct": int(row[f"d{i}"] or 0),
            "distinct_is_approximate": dialect in APPROX_DISTINCT_DIALECTS,
            "computed_at": computed,
            "as_of": end.isoformat(),
            "scope": "all rows with event time <= as_of",
        }
        if f"lo{i}" in row:
            stats["min"] = _finite(row[f"lo{i}"])
            stats["max"] = _finite(row[f"hi{i}"])
        if f"mu{i}" in row:
            stats["mean"] = _finite(row[f"mu{i}"])
            lo, hi = stats.get("min"), stats.get("max")
            if isinstance(lo, (int, float)) and isinstance(hi, (int, float)) and hi > lo:
                ranges[i] = (float(lo), float(hi))
        out[f.ref] = stats
    sample = 100.0 * HISTOGRAM_ROWS / total if total > 2 * HISTOGRAM_ROWS else None
    hist = histogram_sql(view, ranges, end=end, sample_percent=sample)
    if hist is not None:
        counts: dict[int, list[int]] = {i: [0] * BINS for i in ranges}
        for rec in engine.fetch_arrow(hist).to_pylist():
            if rec["b"] is not None and 0 <= int(rec["b"]) < BINS:
                counts[int(rec["f"])][int(rec["b"])] += int(rec["n"])
        for i, (lo, hi) in ranges.items():
            width = (hi - lo) / BINS
            out[view.features[i].ref]["histogram"] = {
                "edges": [lo + k * width for k in range(BINS)] + [hi],
                "counts": counts[i],
                "sample_percent": round(sample, 3) if sample else 100.0,
            }
    return out
