"""Statistics of what is served: each entity's latest value as of the materialization.

The online store holds, per entity, the latest row with event time <= ``end`` (and, with a
TTL, newer than ``end - ttl``: older values are never written). The statistics describe
exactly those values — not every historical row — so a merchant with 300 daily rows counts
once, with the value a lookup returns. They are computed in the warehouse over
``sql.latest.latest_values`` (the materialization's own query) as one CTE:

1. a summary: entities, non-null count, distinct count (approximate where the engine has a
   cheap HyperLogLog), min, max and mean of every feature;
2. histograms of numeric features in ``BINS`` bins whose scale follows the data: *linear*
   (equal width), or *log* when the distribution is right-skewed (the mean lies in the lowest
   fifth of the range): ``position(x) = ln(1 + K·(x − min)/(max − min)) / ln(1 + K)``, K = 1000,
   so a long tail no longer squeezes every value into one bar. The axis ticks (value, label,
   position 0–1 along the axis) come with the payload, so a chart needs no maths of its own;
3. the most frequent values of strings and booleans (``TOP_VALUES``) with their counts.

Stored per feature by ``StateStore.save_many_statistics`` (the materializer's job), read by
``server.stats.normalize_statistics``. The same summaries of the last training set built are
recorded by :func:`record_training_statistics` (from the Arrow table, no warehouse query) and
compared with the served ones by :func:`drift` (PSI per feature).

Payload of one feature (``compute(...)[ref]``)::

    {"rows": 250, "nulls": 0, "null_pct": 0.0, "distinct": 241, "distinct_is_approximate": true,
     "min": 0.0, "max": 0.31, "mean": 0.012,
     "histogram": {"edges": [11 numbers], "counts": [10 ints], "scale": "log"},
     "axis": {"scale": "log", "ticks": [{"value": 0.0, "label": "0", "position": 0.0}, ...]},
     "top_values": [{"value": "grocery", "count": 80, "share": 0.32}, ...],   # strings, booleans
     "scope": "served", "scope_label": "latest value per entity as of 2025-12-02T12:00:00+00:00 …",
     "as_of": "2025-12-02T12:00:00+00:00", "computed_at": "…"}
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import sqlglot.expressions as exp

from feature_layer.registry.model import Feature, FeatureView
from feature_layer.sql.latest import EVENT_ALIAS, _ts, latest_values
from feature_layer.sql.names import col
from feature_layer.types import sql_type

BINS = 10
TOP_VALUES = 10
LOG_K = 1000.0
"""How strongly the log scale stretches the low end: positions ln(1 + K·t) / ln(1 + K), t ∈ [0, 1]."""
SKEW_FOR_LOG = 0.2
"""A numeric feature is drawn on a log scale when (mean − min) / (max − min) is below this."""
APPROX_DISTINCT_DIALECTS = frozenset({"duckdb", "snowflake", "bigquery", "trino", "presto", "spark", "databricks"})
"""Engines with a cheap approximate distinct count (HyperLogLog); others count exactly."""
_NUMERIC = {"float64", "int64", "decimal"}
_ORDERED = _NUMERIC | {"timestamp", "date"}
_CATEGORICAL = {"string", "bool"}
SERVED = "__fl_served"
FAR_FUTURE = datetime(9999, 12, 31, tzinfo=UTC)


# -- scales and ticks (pure) ----------------------------------------------------------------

def choose_scale(lo: float, hi: float, mean: float | None) -> str:
    """``log`` for right-skewed values (mean in the lowest ``SKEW_FOR_LOG`` of the range), else ``linear``."""
    if mean is None or not hi > lo:
        return "linear"
    return "log" if (mean - lo) / (hi - lo) < SKEW_FOR_LOG else "linear"


def position(value: float, lo: float, hi: float, scale: str) -> float:
    """Where ``value`` sits along an axis from ``lo`` (0) to ``hi`` (1)."""
    if not hi > lo:
        return 0.0
    t = min(max((value - lo) / (hi - lo), 0.0), 1.0)
    return math.log1p(LOG_K * t) / math.log1p(LOG_K) if scale == "log" else t


def value_at(pos: float, lo: float, hi: float, scale: str) -> float:
    """The inverse of :func:`position`."""
    t = math.expm1(pos * math.log1p(LOG_K)) / LOG_K if scale == "log" else pos
    return lo + t * (hi - lo)


def bin_edges(lo: float, hi: float, scale: str, bins: int = BINS) -> list[float]:
    """``bins + 1`` edges, equal steps of :func:`position`; the last is exactly ``hi``."""
    return [value_at(k / bins, lo, hi, scale) for k in range(bins)] + [hi]


def _label(value: float) -> str:
    if value == 0:
        return "0"
    magnitude = abs(value)
    if magnitude >= 1e6 or magnitude < 1e-3:
        return f"{value:.2g}"
    return f"{value:,.3f}".rstrip("0").rstrip(".") if magnitude < 10 else f"{value:,.0f}" if magnitude >= 100 \
        else f"{value:,.1f}".rstrip("0").rstrip(".")


def axis_ticks(lo: float, hi: float, scale: str, *, target: int = 5) -> list[dict[str, Any]]:
    """Round tick values between ``lo`` and ``hi`` with their label and position (0-1).

    Both ends, and between them — linear: steps of 1, 2 or 5 × 10^k, about ``target`` of them;
    log: ``lo`` plus powers of ten. Ticks closer than 0.08 along the axis are dropped.
    """
    if not (math.isfinite(lo) and math.isfinite(hi)) or not hi > lo:
        return [{"value": lo, "label": _label(lo), "position": 0.0}]
    values: list[float]
    if scale == "log":
        span = hi - lo
        step = 10.0 ** math.floor(math.log10(span / LOG_K))
        values = [lo]
        while step < span:
            values.append(_round_nice(lo + step))
            step *= 10
        values.append(hi)
    else:
        raw = (hi - lo) / max(target - 1, 1)
        power = 10.0 ** math.floor(math.log10(raw))
        step = max(m * power for m in (1, 2, 5, 10) if m * power <= raw * 1.000001)
        first = math.ceil(lo / step) * step
        nice = [round(first + k * step, 12) for k in range(int((hi - first) / step + 1e-9) + 1)]
        values = [lo, *(v for v in nice if lo < v < hi), hi]
    inner = sorted({v for v in values if lo < v < hi})
    out: list[dict[str, Any]] = [{"value": lo, "label": _label(lo), "position": 0.0}]
    for v in inner:
        pos = position(v, lo, hi, scale)
        if pos - out[-1]["position"] >= 0.08 and 1.0 - pos >= 0.08:
            out.append({"value": v, "label": _label(v), "position": round(pos, 6)})
    out.append({"value": hi, "label": _label(hi), "position": 1.0})
    return out


def _round_nice(value: float) -> float:
    if value == 0:
        return 0.0
    digits = 2 - int(math.floor(math.log10(abs(value))))
    return round(value, max(digits, 0)) if digits > 0 else float(round(value))


# -- SQL (pure sqlglot) ---------------------------------------------------------------------

def served_cte(view: FeatureView, *, end: datetime, dialect: str) -> exp.Select:
    """Each entity's latest row as of ``end``, only those the TTL keeps (what the store holds)."""
    latest = latest_values(view, end=end, dialect=dialect)
    query = exp.select(exp.Star()).from_(latest.subquery("__fl_latest"))
    if view.ttl is not None:
        query = query.where(exp.GT(this=col(EVENT_ALIAS), expression=_ts(end - view.ttl)))
    return query


def _with_served(query: exp.Select, view: FeatureView, end: datetime, dialect: str) -> exp.Select:
    return query.with_(SERVED, as_=served_cte(view, end=end, dialect=dialect))


def summary_sql(view: FeatureView, *, end: datetime, dialect: str = "duckdb",
                features: Sequence[Feature] | None = None) -> exp.Select:
    """One row: ``__n`` then per feature i ``c{i}`` (non-null), ``d{i}`` (≈distinct), ``lo{i}``, ``hi{i}``, ``mu{i}``."""
    chosen = list(features or view.features)
    cols: list[exp.Expression] = [exp.alias_(exp.Count(this=exp.Star()), "__n")]
    for i, f in enumerate(chosen):
        c = col(f.name)
        cols.append(exp.alias_(exp.Count(this=c), f"c{i}"))
        distinct = (
            exp.ApproxDistinct(this=c.copy())
            if dialect in APPROX_DISTINCT_DIALECTS
            else exp.Count(this=exp.Distinct(expressions=[c.copy()]))
        )
        cols.append(exp.alias_(distinct, f"d{i}"))
        if f.dtype in _ORDERED:
            typed = exp.cast(c.copy(), sql_type(f.dtype)) if f.dtype in _NUMERIC else c.copy()
            cols.append(exp.alias_(exp.Min(this=typed.copy()), f"lo{i}"))
            cols.append(exp.alias_(exp.Max(this=typed), f"hi{i}"))
        if f.dtype in _NUMERIC:
            cols.append(exp.alias_(exp.Avg(this=exp.cast(c.copy(), exp.DataType.build("double"))), f"mu{i}"))
    return _with_served(exp.select(*cols).from_(SERVED), view, end, dialect)


def _bin_of(value: exp.Expression, lo: float, hi: float, scale: str, bins: int) -> exp.Expression:
    shifted = exp.paren(exp.Sub(this=value, expression=exp.Literal.number(repr(lo))))
    if scale == "log":
        scaled: exp.Expression = exp.Mul(
            this=exp.Ln(this=exp.Add(this=exp.Literal.number(1), expression=exp.Mul(
                this=shifted, expression=exp.Literal.number(repr(LOG_K / (hi - lo)))))),
            expression=exp.Literal.number(repr(bins / math.log1p(LOG_K))))
    else:
        scaled = exp.Div(this=shifted, expression=exp.Literal.number(repr((hi - lo) / bins)))
    return exp.func("LEAST", exp.cast(exp.Floor(this=scaled), exp.DataType.build("int")),
                    exp.Literal.number(bins - 1))


def histogram_sql(view: FeatureView, ranges: dict[int, tuple[float, float, str]], *, end: datetime,
                  dialect: str = "duckdb", features: Sequence[Feature] | None = None,
                  bins: int = BINS) -> exp.Expression | None:
    """Rows of (``f`` feature index, ``b`` bin, ``n`` count) for numeric features with a finite range:
    one small GROUP BY per feature over the served rows, UNION ALL."""
    chosen = list(features or view.features)
    parts: list[exp.Select] = []
    for i, (lo, hi, scale) in ranges.items():
        name = chosen[i].name
        bin_ = _bin_of(exp.cast(col(name), exp.DataType.build("double")), lo, hi, scale, bins)
        parts.append(
            exp.select(exp.alias_(exp.Literal.number(i), "f"), exp.alias_(bin_, "b"),
                       exp.alias_(exp.Count(this=exp.Star()), "n"))
            .from_(SERVED).where(col(name).is_(exp.null()).not_()).group_by(bin_.copy()))
    if not parts:
        return None
    body: exp.Expression = parts[0]
    for part in parts[1:]:
        body = exp.union(body, part, distinct=False)
    return exp.select(exp.Star()).from_(body.subquery("__fl_bins")).with_(  # type: ignore[attr-defined]
        SERVED, as_=served_cte(view, end=end, dialect=dialect))


def top_values_sql(view: FeatureView, feature: Feature, *, end: datetime, dialect: str = "duckdb",
                   limit: int = TOP_VALUES) -> exp.Select:
    c = col(feature.name)
    query = (exp.select(exp.alias_(c, "value"), exp.alias_(exp.Count(this=exp.Star()), "n"))
             .from_(SERVED).where(c.copy().is_(exp.null()).not_()).group_by(c.copy())
             .order_by(exp.Ordered(this=exp.column("n"), desc=True), exp.Ordered(this=c.copy())).limit(limit))
    return _with_served(query, view, end, dialect)


# -- running them ---------------------------------------------------------------------------

def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _plain(value: Any) -> Any:
    from datetime import date
    from decimal import Decimal

    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    return value


def scope_label(view: FeatureView, end: datetime) -> str:
    ttl = f", newer than the TTL ({view.ttl})" if view.ttl is not None else ""
    when = "the newest row" if end.replace(tzinfo=None) >= FAR_FUTURE.replace(tzinfo=None) else end.isoformat()
    return f"latest value per entity as of {when}{ttl}: what the online store serves"


def compute(engine: Any, view: FeatureView, *, end: datetime | None, now: datetime | None = None,
            features: Sequence[Feature] | None = None, bins: int = BINS) -> dict[str, dict[str, Any]]:
    """Statistics of what is served, ``{"view.feature": stats}`` (see the module docstring).

    ``end``: the materialization's end (None: every row, the latest of each entity); ``now``:
    when they are computed (the caller's clock; default ``FEATURE_LAYER_NOW`` or the system clock).
    """
    from feature_layer.clock import as_utc, clock_from_env

    end = FAR_FUTURE if end is None else as_utc(end)
    chosen = list(features or view.features)
    dialect = getattr(engine, "dialect", "duckdb")
    row = engine.fetch_arrow(summary_sql(view, end=end, dialect=dialect, features=chosen)).to_pylist()[0]
    total = int(row["__n"] or 0)
    computed = (now or clock_from_env().now()).isoformat()
    label = scope_label(view, end)
    out: dict[str, dict[str, Any]] = {}
    ranges: dict[int, tuple[float, float, str]] = {}
    for i, f in enumerate(chosen):
        non_null = int(row[f"c{i}"] or 0)
        stats: dict[str, Any] = {
            "rows": total,
            "nulls": total - non_null,
            "null_pct": round(100.0 * (total - non_null) / total, 4) if total else None,
            "distinct": int(row[f"d{i}"] or 0),
            "distinct_is_approximate": dialect in APPROX_DISTINCT_DIALECTS,
            "computed_at": computed,
            "as_of": None if end >= FAR_FUTURE else end.isoformat(),  # end is UTC-aware here
            "scope": "served",
            "scope_label": label,
        }
        if f"lo{i}" in row:
            stats["min"] = _plain(_finite(row[f"lo{i}"]))
            stats["max"] = _plain(_finite(row[f"hi{i}"]))
        if f"mu{i}" in row:
            stats["mean"] = _finite(row[f"mu{i}"])
            lo, hi = stats.get("min"), stats.get("max")
            if isinstance(lo, int | float) and isinstance(hi, int | float) and hi > lo:
                ranges[i] = (float(lo), float(hi), choose_scale(float(lo), float(hi), stats["mean"]))
        out[f.ref] = stats
    hist = histogram_sql(view, ranges, end=end, dialect=dialect, features=chosen, bins=bins)
    if hist is not None:
        counts: dict[int, list[int]] = {i: [0] * bins for i in ranges}
        for rec in engine.fetch_arrow(hist).to_pylist():
            if rec["b"] is not None and 0 <= int(rec["b"]) < bins:
                counts[int(rec["f"])][int(rec["b"])] += int(rec["n"])
        for i, (lo, hi, scale) in ranges.items():
            out[chosen[i].ref]["histogram"] = {"edges": bin_edges(lo, hi, scale, bins), "counts": counts[i],
                                               "scale": scale}
            out[chosen[i].ref]["axis"] = {"scale": scale, "ticks": axis_ticks(lo, hi, scale)}
    for f in chosen:
        if f.dtype in _CATEGORICAL and out[f.ref]["rows"] - out[f.ref]["nulls"] > 0:
            top = engine.fetch_arrow(top_values_sql(view, f, end=end, dialect=dialect)).to_pylist()
            non_null = out[f.ref]["rows"] - out[f.ref]["nulls"]
            values = [{"value": _plain(r["value"]), "count": int(r["n"]), "share": round(int(r["n"]) / non_null, 6)}
                      for r in top]
            out[f.ref]["top_values"] = values
            out[f.ref]["histogram"] = {"values": [v["value"] for v in values], "counts": [v["count"] for v in values]}
    return out


# -- the last training set built, and drift between it and what is served ----------------------

TRAINING_PREFIX = "training:"
"""State-store key prefix of a feature's training-set statistics (``training:view.feature``)."""
TRAINING_CATEGORIES = 50
QUANTILES = 101
PSI_THRESHOLD = 0.2
PSI_FLOOR = 1e-4
PSI_METHOD = ("PSI = sum over bins of (s - t) * ln(s / t), s and t the served and training shares of each "
              "bin of the served histogram (numbers) or of each top value plus 'other' (strings, booleans), "
              "plus a bin for nulls; shares floored at 1e-4. Above 0.2: the served values have drifted.")


def training_statistics(table: Any, columns: Sequence[tuple[Feature, str]], *, now: datetime,
                        bins: int = BINS) -> dict[str, dict[str, Any]]:
    """Statistics of a training set's feature columns (Arrow, in memory: no warehouse query).

    ``columns``: (feature, column name in ``table``). Numbers also keep ``QUANTILES``
    quantiles, strings and booleans their ``TRAINING_CATEGORIES`` most frequent values, so
    :func:`drift` can compare them with the served values on the served bins.
    """
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    total = table.num_rows
    out: dict[str, dict[str, Any]] = {}
    for feature, name in columns:
        column = table.column(name)
        nulls = column.null_count
        stats: dict[str, Any] = {
            "rows": total, "nulls": nulls, "null_pct": round(100.0 * nulls / total, 4) if total else None,
            "distinct": int(pc.count_distinct(column).as_py()), "distinct_is_approximate": False,
            "computed_at": now.isoformat(), "as_of": now.isoformat(), "scope": "training",
            "scope_label": f"the last training set built ({total:,} rows, {now.isoformat()})",
        }
        present = pc.drop_null(column)
        if feature.dtype in _NUMERIC and len(present):
            values = np.asarray(present.cast(pa.float64()).to_numpy(zero_copy_only=False), dtype=np.float64)
            values = values[np.isfinite(values)]
            if len(values):
                lo, hi, mean = float(values.min()), float(values.max()), float(values.mean())
                stats.update(min=lo, max=hi, mean=mean)
                stats["quantiles"] = [float(q) for q in np.quantile(values, np.linspace(0, 1, QUANTILES))]
                if hi > lo:
                    scale = choose_scale(lo, hi, mean)
                    edges = bin_edges(lo, hi, scale, bins)
                    counts, _ = np.histogram(values, bins=np.asarray(edges))
                    stats["histogram"] = {"edges": edges, "counts": [int(c) for c in counts], "scale": scale}
                    stats["axis"] = {"scale": scale, "ticks": axis_ticks(lo, hi, scale)}
        elif feature.dtype in _ORDERED and len(present):
            stats.update(min=_plain(pc.min(present).as_py()), max=_plain(pc.max(present).as_py()))
        elif feature.dtype in _CATEGORICAL and len(present):
            counted = pc.value_counts(present).to_pylist()
            counted.sort(key=lambda r: (-r["counts"], str(r["values"])))
            top = [{"value": _plain(r["values"]), "count": int(r["counts"]),
                    "share": round(int(r["counts"]) / len(present), 6)} for r in counted[:TRAINING_CATEGORIES]]
            stats["categories"] = top
            stats["top_values"] = top[:TOP_VALUES]
            stats["histogram"] = {"values": [t["value"] for t in top[:TOP_VALUES]],
                                  "counts": [t["count"] for t in top[:TOP_VALUES]]}
        out[feature.ref] = stats
    return out


def record_training_statistics(parts: Any, training_set: Any, table: Any) -> None:
    """Store the statistics of a training set just built (``TrainingSet.to_arrow``'s hook).

    Informational: a failure (a read-only state file) is logged, never raised — the training
    set is the caller's result and must not be lost to its statistics.
    """
    import logging

    from feature_layer.errors import FeatureLayerError

    try:
        columns = [(f, n) for out in training_set.outputs for f, n in zip(out.features, out.names, strict=True)]
        stats = training_statistics(table, columns, now=parts.clock.now())
        parts.state().save_many_statistics({TRAINING_PREFIX + ref: s for ref, s in stats.items()})
    except (FeatureLayerError, OSError, ValueError, TypeError, KeyError) as exc:
        logging.getLogger(__name__).warning("Training-set statistics were not recorded: %s: %s",
                                            type(exc).__name__, exc)


def _shares(counts: Sequence[float], total: float) -> list[float]:
    return [c / total for c in counts] if total else [0.0 for _ in counts]


def _psi(served: Sequence[float], training: Sequence[float]) -> float:
    return float(sum((s - t) * math.log(s / t) for s, t in (
        (max(s, PSI_FLOOR), max(t, PSI_FLOOR)) for s, t in zip(served, training, strict=True))))


def drift(served: dict[str, Any] | None, training: dict[str, Any] | None) -> dict[str, Any] | None:
    """The population stability index between served and training values (``PSI_METHOD``).

    ``served`` as stored by :func:`compute` (histogram ``edges``/``counts`` or top values),
    ``training`` as stored by :func:`training_statistics`. None when either is missing or
    they cannot be compared (no range, no values).
    """
    import numpy as np

    if not served or not training or not served.get("rows") or not training.get("rows"):
        return None
    s_null = (served.get("null_pct") or 0.0) / 100.0
    t_null = (training.get("null_pct") or 0.0) / 100.0
    labels: list[str] = ["null"]
    s_shares: list[float] = [s_null]
    t_shares: list[float] = [t_null]
    histogram = served.get("histogram") if isinstance(served.get("histogram"), dict) else {}
    if histogram.get("edges") and training.get("quantiles"):
        edges = [float(e) for e in histogram["edges"]]
        counts = histogram["counts"]
        quantiles = np.asarray(training["quantiles"], dtype=np.float64)
        ranks = np.linspace(0.0, 1.0, len(quantiles))
        # the training CDF, linear between its quantiles; the outer bins take the tails
        cdf = [0.0] + [float(np.interp(e, quantiles, ranks)) for e in edges[1:-1]] + [1.0]
        t_bins = [cdf[k + 1] - cdf[k] for k in range(len(counts))]
        s_bins = _shares(counts, sum(counts))
        labels += [f"[{_label(edges[k])}, {_label(edges[k + 1])})" for k in range(len(counts))]
    elif served.get("top_values") is not None and training.get("categories") is not None:
        served_top = {str(v["value"]): v["count"] for v in served["top_values"]}
        training_top = {str(v["value"]): v["count"] for v in training["categories"]}
        s_total = (served["rows"] - (served.get("nulls") or 0)) or 1
        t_total = (training["rows"] - (training.get("nulls") or 0)) or 1
        keys = list(served_top) + [k for k in training_top if k not in served_top][:TOP_VALUES]
        s_bins = [served_top.get(k, 0) / s_total for k in keys]
        t_bins = [training_top.get(k, 0) / t_total for k in keys]
        s_bins.append(max(0.0, 1.0 - sum(s_bins)))
        t_bins.append(max(0.0, 1.0 - sum(t_bins)))
        labels += keys + ["other"]
    else:
        return None
    s_shares += [(1 - s_null) * v for v in s_bins]
    t_shares += [(1 - t_null) * v for v in t_bins]
    psi = _psi(s_shares, t_shares)
    return {
        "psi": round(psi, 6), "threshold": PSI_THRESHOLD, "drifted": psi > PSI_THRESHOLD, "method": PSI_METHOD,
        "bins": [{"label": lab, "serving": round(s, 6), "training": round(t, 6)}
                 for lab, s, t in zip(labels, s_shares, t_shares, strict=True)],
        "served_at": served.get("as_of") or served.get("computed_at"), "trained_at": training.get("computed_at"),
    }
