"""Statistics of what is served: each entity's latest value as of the materialization.

The online store holds, per entity, the latest row with event time <= ``end`` (and, with a
TTL, newer than ``end - ttl``: older values are never written). The statistics describe
exactly those values — not every historical row — so a merchant with 300 daily rows counts
once, with the value a lookup returns. One warehouse query reads them
(``sql.latest.latest_values``, the materialization's own query, streamed in batches); the
rest is Arrow and numpy, the same code as for the training set's columns:

1. entities, nulls, min, max and mean of every feature (exact), distinct count;
2. histograms of numeric features in ``BINS`` bins whose scale follows the data: *linear*
   (equal width), or *log* when the distribution is right-skewed (the mean lies in the lowest
   fifth of the range): ``position(x) = ln(1 + K·(x − min)/(max − min)) / ln(1 + K)``, K = 1000,
   so a long tail no longer squeezes every value into one bar. The axis ticks (value, label,
   position 0–1 along the axis) come with the payload, so a chart needs no maths of its own;
3. the most frequent values of strings and booleans (``TOP_VALUES``) with their counts.

Above ``MAX_ROWS`` served rows, histograms, top values and the distinct count come from an
evenly spaced sample (``sample_rows`` says how many); counts, nulls, min, max and mean never do.

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


def served_rows_sql(view: FeatureView, features: Sequence[Feature], *, end: datetime,
                    dialect: str = "duckdb") -> exp.Select:
    """The chosen feature columns of every served row (one warehouse query per view)."""
    return exp.select(*[col(f.name) for f in features]).from_(
        served_cte(view, end=end, dialect=dialect).subquery(SERVED))


def _plain(value: Any) -> Any:
    """JSON-ready: Decimals as floats, dates and times as ISO strings, NaN/inf as None."""
    from datetime import date
    from decimal import Decimal

    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def scope_label(view: FeatureView, end: datetime) -> str:
    ttl = f", newer than the TTL ({view.ttl})" if view.ttl is not None else ""
    when = "the newest row" if end.replace(tzinfo=None) >= FAR_FUTURE.replace(tzinfo=None) else end.isoformat()
    return f"latest value per entity as of {when}{ttl}: what the online store serves"


MAX_ROWS = 2_000_000
"""Served rows kept in memory for histograms, top values and distinct counts; above it every
second row is dropped (and the stride doubled) as often as needed: an evenly spaced sample.
Counts, nulls, min, max and mean are always exact."""


class _Running:
    """Exact per-column counts over every batch, and an evenly thinned sample of the rows."""

    def __init__(self, names: Sequence[str], limit: int) -> None:
        self.names = list(names)
        self.limit = limit
        self.rows = 0
        self.nulls = dict.fromkeys(self.names, 0)
        self.low: dict[str, Any] = dict.fromkeys(self.names)
        self.high: dict[str, Any] = dict.fromkeys(self.names)
        self.sums = dict.fromkeys(self.names, 0.0)
        self.kept: list[Any] = []
        self.kept_rows = 0
        self.stride = 1

    def add(self, batch: Any, numeric: dict[str, str], ordered: set[str]) -> None:
        """Count ``batch``; numbers compared in their logical type (int64 stays an integer)."""
        import pyarrow as pa
        import pyarrow.compute as pc

        for name in self.names:
            column = batch.column(name)
            self.nulls[name] += column.null_count
            if name in ordered and column.null_count < len(column):
                if name in numeric:
                    column = column.cast(pa.int64() if numeric[name] == "int64" else pa.float64())
                bounds = pc.min_max(column).as_py()
                lo, hi = bounds["min"], bounds["max"]
                self.low[name] = lo if self.low[name] is None else min(self.low[name], lo)
                self.high[name] = hi if self.high[name] is None else max(self.high[name], hi)
                if name in numeric:
                    self.sums[name] += float(pc.sum(column).as_py() or 0.0)
        start = (-self.rows) % self.stride
        self.rows += batch.num_rows
        if self.stride > 1:
            batch = batch.take(pa.array(range(start, batch.num_rows, self.stride)))
        self.kept.append(batch)
        self.kept_rows += batch.num_rows
        while self.kept_rows > self.limit:
            table = pa.Table.from_batches(self.kept).combine_chunks()
            thinned = table.take(pa.array(range(0, table.num_rows, 2)))
            self.kept, self.kept_rows, self.stride = thinned.to_batches(), thinned.num_rows, self.stride * 2


def compute(engine: Any, view: FeatureView, *, end: datetime | None, now: datetime | None = None,
            features: Sequence[Feature] | None = None, bins: int = BINS,
            max_rows: int = MAX_ROWS) -> dict[str, dict[str, Any]]:
    """Statistics of what is served, ``{"view.feature": stats}`` (see the module docstring).

    One warehouse query (the served rows of the chosen features, streamed in batches); then
    the same Arrow code as the training set's (:func:`training_statistics`), so the two sides
    are computed alike. ``end``: the materialization's end (None: each entity's newest row);
    ``now``: when they are computed (the caller's clock; default ``FEATURE_LAYER_NOW`` or the
    system clock).
    """
    import pyarrow as pa

    from feature_layer.clock import as_utc, clock_from_env

    end = FAR_FUTURE if end is None else as_utc(end)
    chosen = list(features or view.features)
    dialect = getattr(engine, "dialect", "duckdb")
    query = served_rows_sql(view, chosen, end=end, dialect=dialect)
    running = _Running([f.name for f in chosen], max_rows)
    numeric = {f.name: f.dtype for f in chosen if f.dtype in _NUMERIC}
    ordered = {f.name for f in chosen if f.dtype in _ORDERED}
    for batch in engine.stream_arrow(query, batch_size=100_000):
        running.add(batch, numeric, ordered)
    schema = pa.schema([(f.name, pa.null()) for f in chosen])
    table = pa.Table.from_batches(running.kept) if running.kept else schema.empty_table()
    when = now or clock_from_env().now()
    out = training_statistics(table, [(f, f.name) for f in chosen], now=when, bins=bins)
    label = scope_label(view, end)
    for f in chosen:
        stats = out[f.ref]
        stats.pop("quantiles", None)
        stats.pop("categories", None)
        rows, nulls = running.rows, running.nulls[f.name]
        stats.update(rows=rows, nulls=nulls, null_pct=round(100.0 * nulls / rows, 4) if rows else None,
                     scope="served", scope_label=label, as_of=None if end >= FAR_FUTURE else end.isoformat(),
                     computed_at=when.isoformat(), distinct_is_approximate=running.stride > 1)
        if running.stride > 1:
            stats["sample_rows"] = running.kept_rows
        if f.name in ordered and running.low[f.name] is not None:
            stats["min"], stats["max"] = _plain(running.low[f.name]), _plain(running.high[f.name])
        if f.name in numeric and rows > nulls:
            stats["mean"] = running.sums[f.name] / (rows - nulls)
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
            "distinct": int(pc.count_distinct(column).as_py()) if len(column) and column.type != pa.null() else 0,
            "distinct_is_approximate": False,
            "computed_at": now.isoformat(), "as_of": now.isoformat(), "scope": "training",
            "scope_label": f"the last training set built ({total:,} rows, {now.isoformat()})",
        }
        present = pc.drop_null(column)
        if feature.dtype in _NUMERIC and len(present):
            values = np.asarray(present.cast(pa.float64()).to_numpy(zero_copy_only=False), dtype=np.float64)
            values = values[np.isfinite(values)]
            if len(values):
                lo, hi, mean = float(values.min()), float(values.max()), float(values.mean())
                whole = feature.dtype == "int64"
                stats.update(min=int(lo) if whole else lo, max=int(hi) if whole else hi, mean=mean)
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
