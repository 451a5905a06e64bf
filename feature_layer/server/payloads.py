"""JSON shapes of registry objects for the API and the UI (pure, apart from reading state)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from feature_layer.errors import FeatureLayerError
from feature_layer.freshness import freshness as freshness_of
from feature_layer.ops.sla import sla_gauges
from feature_layer.parts import Parts
from feature_layer.registry.model import Feature, FeatureView
from feature_layer.registry.versions import version_info
from feature_layer.server.health import layout_of


def _human(delta: timedelta | None) -> str | None:
    if delta is None:
        return None
    seconds = int(delta.total_seconds())
    for unit, size in (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def feature_summary(registry: Any, feature: Feature, *, score: float | None = None,
                    matched: tuple[str, ...] = ()) -> dict[str, Any]:
    view = registry.views[feature.view]
    out: dict[str, Any] = {
        "ref": feature.ref,
        "name": feature.name,
        "view": feature.view,
        "dtype": feature.dtype,
        "description": feature.description,
        "tags": list(feature.tags),
        "view_tags": list(view.tags),
        "entities": list(view.entities),
        "owner": view.owner,
    }
    if score is not None:
        out["score"] = score
        out["matched"] = list(matched)
    return out


def node_ref(registry: Any, unique_id: str) -> dict[str, Any]:
    node = getattr(registry, "nodes", {}).get(unique_id)
    return {
        "unique_id": unique_id,
        "name": getattr(node, "name", unique_id),
        "resource_type": getattr(node, "resource_type", "unknown"),
        "file_path": getattr(node, "file_path", ""),
    }


def _py(value: str) -> str:
    """A Python string literal for ``value``: JSON string syntax is valid Python (quotes,
    backslashes, newlines and control characters escaped; other characters kept as they are)."""
    return json.dumps(value, ensure_ascii=False)


def python_snippet(view: FeatureView, feature: Feature, project_dir: str = ".") -> str:
    """Runnable Python for the feature page: every name and path is a quoted literal, so any
    identifier or folder (quotes, backslashes, newlines) yields valid code."""
    keys = ", ".join(f"{_py(k)}: {_example_key(k)}" for k in view.join_keys)
    ref = _py(feature.ref)
    return (
        "from feature_layer import FeatureStore\n"
        "\n"
        f"store = FeatureStore({_py(project_dir)})\n"
        "\n"
        "# Online: the latest value for one entity\n"
        "response = store.get_online_features(\n"
        f"    features=[{ref}],\n"
        f"    entity_rows=[{{{keys}}}],\n"
        ")\n"
        "print(response.to_dict())\n"
        "\n"
        f"# Offline: point-in-time-correct training set; entity_df has {', '.join(_py(k) for k in view.join_keys)}\n"
        "# and an event_timestamp column (a pandas/polars DataFrame, Arrow table or Parquet path)\n"
        f"training = store.get_training_set(entity_df, features=[{ref}])\n"
    )


def _example_key(key: str) -> str:
    return "1001" if key.endswith("_id") or key == "id" else '"…"'


def feature_detail(registry: Any, view: FeatureView, feature: Feature, *, project_dir: str = ".") -> dict[str, Any]:
    entities = [registry.entities[e] for e in view.entities if e in registry.entities]
    services = [s for s in registry.services.values() if feature.ref in s.features]
    out = feature_summary(registry, feature)
    out.update({
        "sql_type": feature.sql_type,
        "entities": [{"name": e.name, "join_keys": list(e.join_keys), "description": e.description} for e in entities],
        "join_keys": list(view.join_keys),
        "ttl": _human(view.ttl),
        "ttl_seconds": view.ttl.total_seconds() if view.ttl else None,
        "online": view.online,
        "view_info": {
            "name": view.name,
            "description": view.description,
            "unique_id": view.unique_id,
            "file_path": view.file_path,
            "materialized": view.materialized,
            "relation": ".".join(view.relation.parts()) if view.relation else None,
            "event_time": view.event_time,
            "created_at": view.created_at,
            "features": list(view.feature_names),
        },
        "compiled_sql": view.compiled_sql,
        "raw_sql": view.raw_sql,
        "services": [{"name": s.name, "owner": s.owner, "description": s.description} for s in services],
        "snippet": python_snippet(view, feature, project_dir),
    })
    return out


def _view_state(parts: Parts, view_name: str) -> Any:
    """The view's last successful materialization (a ``ViewState``), None when never (or unreadable)."""
    try:
        return parts.state().view_state(view_name)
    except (FeatureLayerError, OSError):
        return None


def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).isoformat()


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def freshness(parts: Parts, view: FeatureView, now: datetime) -> dict[str, Any]:
    """The view's freshness (:func:`feature_layer.freshness.freshness`) with its run, as JSON."""
    state = _view_state(parts, view.name)
    fresh = freshness_of(state.newest_event_time if state else None, view.ttl, now, view.freshness)
    return {
        "newest_event_time": _iso(fresh.newest_event_time),
        "lag_seconds": fresh.lag_seconds,
        "ttl_seconds": view.ttl.total_seconds() if view.ttl else None,
        "expired": fresh.expired,
        "status": fresh.status,
        "watermark": _iso(state.watermark.event_time) if state else None,
        "materialized_at": _iso(state.wall_time) if state else None,
        "online": view.online,
        "sla": fresh.sla,  # ops1: pass | warn | error against the view's freshness SLA; None without one
        "sla_thresholds": view.freshness.to_dict() if view.freshness else None,
    }


def view_summary(parts: Parts, view: FeatureView, now: datetime) -> dict[str, Any]:
    return {
        "name": view.name,
        "description": view.description,
        "entities": list(view.entities),
        "join_keys": list(view.join_keys),
        "event_time": view.event_time,
        "ttl": _human(view.ttl),
        "owner": view.owner,
        "tags": list(view.tags),
        "online": view.online,
        "file_path": view.file_path,
        "materialized": view.materialized,
        "relation": ".".join(view.relation.parts()) if view.relation else None,
        "feature_count": len(view.features),
        "freshness": freshness(parts, view, now),
        "layout": layout_of(parts, view) if view.online else None,
        "version": version_info(parts.registry(), view),  # ops2: dbt model versions (registry/versions.py)
    }


def freshness_gauges(parts: Parts, registry: Any, now: datetime) -> list[tuple[str, str, dict[str, str], float]]:
    out: list[tuple[str, str, dict[str, str], float]] = []
    for view in sorted(registry.views.values(), key=lambda v: v.name):
        if view.ttl:
            out.append(("feature_layer_feature_view_ttl_seconds", "TTL of each feature view.",
                        {"view": view.name}, view.ttl.total_seconds()))
        state = _view_state(parts, view.name)
        if state is None:
            continue
        fresh = freshness_of(state.newest_event_time, view.ttl, now)
        if fresh.newest_event_time is not None and fresh.lag_seconds is not None:
            out.append(("feature_layer_feature_view_last_event_timestamp_seconds",
                        "Newest event time materialized to the online store, per feature view.",
                        {"view": view.name}, fresh.newest_event_time.timestamp()))
            out.append(("feature_layer_feature_view_freshness_lag_seconds",
                        "Seconds between now and the newest materialized event time, per feature view.",
                        {"view": view.name}, fresh.lag_seconds))
        out.append(("feature_layer_feature_view_expired",
                    "1 when the TTL has expired every online value of the view (lookups answer null), else 0.",
                    {"view": view.name}, 1.0 if fresh.expired else 0.0))
        out.append(("feature_layer_feature_view_materialized_timestamp_seconds",
                    "Wall-clock time of the last successful materialization, per feature view.",
                    {"view": view.name}, _aware(state.wall_time).timestamp()))
    return out + sla_gauges(parts, registry, now)


def snippet_project_dir(settings: Any) -> str:
    """The project folder as a snippet should name it: relative to where the server runs."""
    if settings is None:
        return "."
    path = Path(settings.project_dir)
    try:
        relative = path.resolve().relative_to(Path.cwd().resolve())
    except ValueError:
        return str(path)
    return str(relative) if str(relative) != "." else "."
