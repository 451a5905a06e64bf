"""Feature statistics for the HTTP API: what is served, the last training set, and drift.

Computed in the warehouse by ``online.statistics`` (one computation for the materializer and
the server): each entity's latest value as of the view's last materialization (else as of
the server's clock), the values the online store holds. Only registry objects and numbers the
first query returned go into the SQL; nothing a caller sends ever does.

``GET /v1/features/{name}/statistics`` answers::

    {"feature": "view.feature",
     "statistics": {...served...},          # or null
     "training": {...last training set...}, # or null: no training set built with this feature yet
     "drift": {"psi": 0.03, "threshold": 0.2, "drifted": false, "method": "...",
               "bins": [{"label": "null", "serving": 0.0, "training": 0.0}, ...],
               "served_at": "...", "trained_at": "..."}}   # or null

``statistics`` and ``training`` have the same keys. Kept for the UI as they were: ``rows``,
``nulls``, ``null_pct``, ``distinct``, ``min``, ``max``, ``mean``, ``histogram`` (a list of
``{"lo", "hi", "count"}`` for numbers or ``{"value", "count"}`` for strings and booleans),
``histogram_kind`` (``bins`` / ``values``), ``computed_at``, ``source`` (``materialization``,
``on-demand``, ``training``), ``scope``. New: ``scope`` is now ``served`` or ``training`` and
``scope_label`` says it in words with the time (``as_of``); ``axis`` =
``{"scale": "linear"|"log", "ticks": [{"value", "label", "position"}]}`` (position 0-1 along
the x axis, bins are equal steps of it); ``histogram_scale``; ``top_values`` =
``[{"value", "count", "share"}]`` for strings and booleans.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from feature_layer.online import statistics as served_stats
from feature_layer.registry.model import Feature, FeatureView

NUMERIC = {"int64", "float64", "decimal"}
CATEGORICAL = {"string", "bool"}
DEFAULT_BINS = served_stats.BINS
TOP_VALUES = served_stats.TOP_VALUES


def compute_statistics(engine: Any, view: FeatureView, feature: Feature, *, bins: int = DEFAULT_BINS,
                       end: datetime | None = None, now: datetime | None = None) -> dict[str, Any]:
    """Statistics of what ``feature`` serves as of ``end`` (None: each entity's newest row), normalized."""
    raw = served_stats.compute(engine, view, end=end, now=now, features=[feature], bins=bins)[feature.ref]
    raw["source"] = "on-demand"
    out = normalize_statistics(raw)
    assert out is not None
    return out


def complete_histogram(engine: Any, view: FeatureView, feature: Feature, stats: dict[str, Any],
                       *, bins: int = DEFAULT_BINS, end: datetime | None = None,
                       now: datetime | None = None) -> dict[str, Any]:
    """Stored statistics without a histogram (written by an older version) get one now."""
    fresh = compute_statistics(engine, view, feature, bins=bins, end=end, now=now)
    out = dict(stats)
    for key in ("histogram", "histogram_kind", "histogram_scale", "axis", "top_values"):
        if fresh.get(key) is not None:
            out[key] = fresh[key]
    if out.get("histogram"):
        out["histogram_source"] = "on-demand"
    return out


def normalize_statistics(raw: dict[str, Any] | None) -> dict[str, Any] | None:
    """Statistics as the UI reads them, whichever writer (materializer, on-demand, training) stored them."""
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
            out["histogram_scale"] = histogram.get("scale", "linear")
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
    out.pop("quantiles", None)  # kept in the state for drift; not for display
    out.pop("categories", None)
    out.setdefault("source", "training" if raw.get("scope") == "training" else "materialization")
    return out


def statistics_payload(parts: Any, feature: Feature, served: dict[str, Any] | None) -> dict[str, Any]:
    """The ``GET /v1/features/{name}/statistics`` body (see the module docstring)."""
    from feature_layer.errors import FeatureLayerError

    try:
        training_raw = parts.state().get_statistics(served_stats.TRAINING_PREFIX + feature.ref)
        served_raw = parts.state().get_statistics(feature.ref)
    except FeatureLayerError:
        training_raw = served_raw = None
    drift = served_stats.drift(served_raw or _raw_form(served), training_raw)
    return {"feature": feature.ref, "statistics": served, "training": normalize_statistics(training_raw),
            "drift": drift}


def _raw_form(stats: dict[str, Any] | None) -> dict[str, Any] | None:
    """Normalized statistics back in the stored form :func:`online.statistics.drift` reads."""
    if not stats:
        return None
    out = dict(stats)
    histogram = stats.get("histogram") or []
    if stats.get("histogram_kind") == "bins" and histogram:
        out["histogram"] = {"edges": [b["lo"] for b in histogram] + [histogram[-1]["hi"]],
                            "counts": [b["count"] for b in histogram]}
    return out
