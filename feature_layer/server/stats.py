"""On-demand feature statistics, computed in the warehouse with SQL built by sqlglot.

Only registry objects (relation and column names, quoted as identifiers) and numbers the
first query returned go into the SQL; nothing a caller sends ever does. Two queries: a
summary (rows, nulls, distinct, min/max/mean) and a histogram (equal-width bins for numbers,
the most frequent values for strings and booleans).
"""

from __future__ import annotations

import math
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from sqlglot import exp

from feature_layer.registry.model import Feature, FeatureView
from feature_layer.sql.names import relation_table
from feature_layer.types import sql_type

NUMERIC = {"int64", "float64", "decimal"}
CATEGORICAL = {"string", "bool"}
DEFAULT_BINS = 20
TOP_VALUES = 12


def _column(name: str) -> exp.Column:
    return exp.column(name, quoted=True)


def _number(value: float | int) -> exp.Expression:
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(value)
    return exp.Literal.number(repr(value) if isinstance(value, float) else str(value))


def summary_query(view: FeatureView, feature: Feature) -> exp.Select:
    """Rows, non-null count, distinct count, min, max (and mean for numbers) of one feature."""
    col = _column(feature.name)
    projections: list[exp.Expression] = [
        exp.alias_(exp.Count(this=exp.Star()), "row_count"),
        exp.alias_(exp.Count(this=col.copy()), "non_null"),
        exp.alias_(exp.Count(this=exp.Distinct(expressions=[col.copy()])), "distinct_count"),
    ]
    if feature.dtype != "bool":
        typed = exp.cast(col.copy(), sql_type(feature.dtype)) if feature.dtype in NUMERIC else col  # no Decimals
        projections += [exp.alias_(exp.Min(this=typed.copy()), "min_value"),
                        exp.alias_(exp.Max(this=typed.copy()), "max_value")]
    if feature.dtype in NUMERIC:
        projections.append(exp.alias_(exp.Avg(this=exp.cast(col.copy(), "DOUBLE")), "mean_value"))
    return exp.select(*projections).from_(relation_table(view))


def histogram_query(view: FeatureView, feature: Feature, low: float, high: float, bins: int) -> exp.Select:
    """Counts per equal-width bin over [low, high]; the top edge falls in the last bin."""
    col = exp.cast(_column(feature.name), "DOUBLE")
    width = (high - low) / bins
    bucket = exp.Least(
        this=exp.cast(exp.Floor(this=exp.Div(this=exp.Paren(this=exp.Sub(this=col, expression=_number(low))),
                                             expression=_number(width))), "INT"),
        expressions=[_number(bins - 1)],
    )
    return (
        exp.select(exp.alias_(bucket, "bin"), exp.alias_(exp.Count(this=exp.Star()), "n"))
        .from_(relation_table(view))
        .where(exp.Not(this=exp.Is(this=_column(feature.name), expression=exp.Null())))
        .group_by(exp.column("bin"))
        .order_by(exp.column("bin"))
    )


def top_values_query(view: FeatureView, feature: Feature, limit: int = TOP_VALUES) -> exp.Select:
    col = _column(feature.name)
    return (
        exp.select(exp.alias_(col, "value"), exp.alias_(exp.Count(this=exp.Star()), "n"))
        .from_(relation_table(view))
        .where(exp.Not(this=exp.Is(this=col.copy(), expression=exp.Null())))
        .group_by(col.copy())
        .order_by(exp.Ordered(this=exp.column("n"), desc=True), exp.Ordered(this=col.copy()))
        .limit(limit)
    )


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    return value


def _run(engine: Any, query: exp.Select) -> list[dict[str, Any]]:
    dialect = getattr(engine, "dialect", "") or "duckdb"
    sql_or_expr: Any = query if hasattr(engine, "render") else query.sql(dialect=dialect)
    return engine.fetch_arrow(sql_or_expr).to_pylist()


def compute_statistics(engine: Any, view: FeatureView, feature: Feature, *, bins: int = DEFAULT_BINS) -> dict[str, Any]:
    """Statistics of ``feature`` over its whole feature-view table, in the warehouse."""
    row = _run(engine, summary_query(view, feature))[0]
    rows = int(row["row_count"] or 0)
    non_null = int(row["non_null"] or 0)
    stats: dict[str, Any] = {
        "rows": rows,
        "nulls": rows - non_null,
        "null_pct": round(100.0 * (rows - non_null) / rows, 4) if rows else 0.0,
        "distinct": int(row["distinct_count"] or 0),
        "min": _plain(row.get("min_value")),
        "max": _plain(row.get("max_value")),
        "mean": _plain(row.get("mean_value")),
        "histogram": [],
        "histogram_kind": None,
        "computed_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "source": "on-demand",
        "scope": f"all rows of {'.'.join(view.relation.parts())}",
    }
    if feature.dtype in NUMERIC and non_null:
        low, high = float(row["min_value"]), float(row["max_value"])
        if feature.dtype == "int64" and stats["distinct"] <= bins:
            values = _run(engine, top_values_query(view, feature, limit=bins))
            stats["histogram"] = sorted(({"value": _plain(r["value"]), "count": int(r["n"])} for r in values),
                                        key=lambda b: b["value"])
            stats["histogram_kind"] = "values"
            return stats
        if low == high or not (math.isfinite(low) and math.isfinite(high)):
            stats["histogram"] = [{"lo": low, "hi": high, "count": non_null}]
        else:
            n_bins = bins
            counts = {int(r["bin"]): int(r["n"]) for r in _run(engine, histogram_query(view, feature, low, high, n_bins))}
            width = (high - low) / n_bins
            stats["histogram"] = [
                {"lo": low + i * width, "hi": low + (i + 1) * width, "count": counts.get(i, 0)} for i in range(n_bins)
            ]
        stats["histogram_kind"] = "bins"
    elif feature.dtype in CATEGORICAL and non_null:
        stats["histogram"] = [{"value": _plain(r["value"]), "count": int(r["n"])}
                              for r in _run(engine, top_values_query(view, feature))]
        stats["histogram_kind"] = "values"
    return stats


def complete_histogram(engine: Any, view: FeatureView, feature: Feature, stats: dict[str, Any],
                       *, bins: int = DEFAULT_BINS) -> dict[str, Any]:
    """Stored statistics without a histogram (e.g. strings at materialization) get one now."""
    out = dict(stats)
    if feature.dtype in CATEGORICAL:
        out["histogram"] = [{"value": _plain(r["value"]), "count": int(r["n"])}
                            for r in _run(engine, top_values_query(view, feature))]
        out["histogram_kind"] = "values"
    elif feature.dtype in NUMERIC and isinstance(stats.get("min"), (int, float)) and isinstance(stats.get("max"), (int, float)):
        low, high = float(stats["min"]), float(stats["max"])
        if high > low and math.isfinite(low) and math.isfinite(high):
            counts = {int(r["bin"]): int(r["n"]) for r in _run(engine, histogram_query(view, feature, low, high, bins))}
            width = (high - low) / bins
            out["histogram"] = [{"lo": low + i * width, "hi": low + (i + 1) * width, "count": counts.get(i, 0)}
                                for i in range(bins)]
            out["histogram_kind"] = "bins"
    if out.get("histogram"):
        out["histogram_source"] = "on-demand"
    return out


def normalize_statistics(raw: dict[str, Any] | None) -> dict[str, Any] | None:
    """Statistics as the UI reads them, whichever writer (materializer or on-demand) stored them."""
    if not raw:
        return None
    out = dict(raw)
    aliases = {
        "null_pct": ("null_pct", "null_percent", "null_fraction"),
        "distinct": ("distinct", "distinct_count", "n_distinct"),
        "mean": ("mean", "avg", "average"),
        "rows": ("rows", "row_count", "count"),
    }
    for key, names in aliases.items():
        for name in names:
            if raw.get(name) is not None:
                value = raw[name]
                if name == "null_fraction":
                    value = 100.0 * float(value)
                out[key] = value
                break
    histogram = raw.get("histogram")
    if isinstance(histogram, dict):
        edges = histogram.get("edges") or histogram.get("bins") or []
        counts = histogram.get("counts") or []
        if len(edges) == len(counts) + 1:
            out["histogram"] = [{"lo": edges[i], "hi": edges[i + 1], "count": c} for i, c in enumerate(counts)]
            out["histogram_kind"] = "bins"
        elif histogram.get("values") is not None:
            out["histogram"] = [{"value": v, "count": c} for v, c in zip(histogram["values"], counts, strict=False)]
            out["histogram_kind"] = "values"
        else:
            out["histogram"] = []
    elif isinstance(histogram, list):
        out["histogram_kind"] = out.get("histogram_kind") or (
            "bins" if histogram and isinstance(histogram[0], dict) and "lo" in histogram[0] else "values")
    else:
        out["histogram"] = []
    out.setdefault("source", "materialization")
    return out
