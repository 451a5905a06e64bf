"""HTTP handlers. Thin: validate, call the store or registry, shape JSON.

``POST /v1/online-features`` is the hot path: no pydantic, orjson both ways, membership checks
against a precomputed set of feature references, and the store IO in a bounded thread pool
under a deadline (``fastpath.lookup_json``). Everything slower (lineage, statistics in the
warehouse) runs in a worker thread too, so neither ever stalls the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING, Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from feature_layer.errors import FeatureLayerError
from feature_layer.parts import Parts
from feature_layer.registry import column_lineage as column_lineage_mod
from feature_layer.registry.declarations import close_matches
from feature_layer.registry.duplicates import duplicates_payload
from feature_layer.registry.model import Feature, FeatureView
from feature_layer.registry.search import index_for
from feature_layer.registry.versions import version_info
from feature_layer.server import health, payloads
from feature_layer.server.fastpath import lookup_json
from feature_layer.server.requests import (
    int_param,
    query_params,
    read_json_body,
    unknown_feature,
)
from feature_layer.server.responses import json_response
from feature_layer.server.stats import (
    CATEGORICAL,
    NUMERIC,
    complete_histogram,
    compute_statistics,
    normalize_statistics,
    statistics_payload,
)

if TYPE_CHECKING:
    pass

HISTOGRAM_TYPES = CATEGORICAL | NUMERIC
SEARCH_PARAMS = ("q", "entity", "tag", "owner", "view", "limit")


def _json(payload: Any, status: int = 200) -> Response:
    return json_response(payload, status)


async def online_features(request: Request) -> Response:
    """The same lookup as :class:`~feature_layer.server.fastpath.OnlineFastPath`, through starlette
    (used when the app is mounted without that middleware)."""
    state = request.app.state
    payload = await read_json_body(request, state.limits.max_body_bytes)
    return Response(await lookup_json(state, payload, request.scope), media_type="application/json")


def _resolve_feature(registry: Any, ref: str) -> tuple[FeatureView, Feature]:
    view_name, dot, name = ref.partition(".")
    if not dot:
        raise unknown_feature("name", f"{ref!r} is not a feature reference.",
                              fix="address features as `view.feature`, e.g. /v1/features/user_txn_features.amount_sum_7d.")
    view = registry.views.get(view_name)
    if view is None:
        raise unknown_feature("name", f"Feature view {view_name!r} does not exist.{close_matches(view_name, registry.views)}",
                              fix="GET /v1/features lists every feature.")
    for feature in view.features:
        if feature.name == name:
            return view, feature
    raise unknown_feature("name", f"Feature {ref!r} does not exist.{close_matches(name, view.feature_names)}",
                          fix=f"use one of {view_name}'s features: {', '.join(view.feature_names)}.")


async def list_features(request: Request) -> Response:
    state = request.app.state
    limits = state.limits
    params = query_params(request, SEARCH_PARAMS, limits.max_query_chars)
    registry = state.holder.registry
    if "entity" in params and params["entity"] not in registry.entities:
        raise unknown_feature("entity", f"Entity {params['entity']!r} does not exist."
                              f"{close_matches(params['entity'], registry.entities)}",
                              fix=f"use one of: {', '.join(sorted(registry.entities))}.")
    if "view" in params and params["view"] not in registry.views:
        raise unknown_feature("view", f"Feature view {params['view']!r} does not exist."
                              f"{close_matches(params['view'], registry.views)}",
                              fix="GET /v1/catalog lists the feature views.")
    limit = int_param(params, "limit", 50, 1, limits.max_results)
    start = time.perf_counter()
    hits, total = index_for(registry).search_with_total(
        params.get("q", ""), entity=params.get("entity"), tag=params.get("tag"), owner=params.get("owner"),
        view=params.get("view"), limit=limit)
    took_ms = (time.perf_counter() - start) * 1000
    return _json({
        "query": params.get("q", ""),
        "total": total,
        "took_ms": round(took_ms, 3),
        "features": [payloads.feature_summary(registry, h.feature, score=h.score, matched=h.matched) for h in hits],
    })


async def get_feature(request: Request) -> Response:
    state = request.app.state
    registry = state.holder.registry
    view, feature = _resolve_feature(registry, request.path_params["name"])
    body = payloads.feature_detail(registry, view, feature, project_dir=payloads.snippet_project_dir(state.settings))
    body["freshness"] = payloads.freshness(state.parts, view, state.clock.now())
    body["statistics"] = _stored_statistics(state.parts, feature.ref)
    body["duplicates"] = await run_in_threadpool(duplicates_payload, registry, feature.ref)  # search
    return _json(body)


def _stored_statistics(parts: Parts, ref: str) -> dict[str, Any] | None:
    try:
        return normalize_statistics(parts.state().get_statistics(ref))
    except FeatureLayerError:
        return None


async def get_statistics(request: Request) -> Response:
    """Stored statistics, or computed now in the warehouse (and stored) when there are none.

    ``refresh=true`` recomputes them, but a full-table scan per caller would let anyone load
    the warehouse: one computation per feature runs at a time (callers arriving meanwhile wait
    for it and get its result), at most ``Limits.stats_concurrency`` run at once, and a feature
    computed less than ``Limits.stats_refresh_interval`` seconds ago answers from that result.
    """
    state = request.app.state
    registry = state.holder.registry
    view, feature = _resolve_feature(registry, request.path_params["name"])
    params = query_params(request, ("refresh",), 10)
    refresh = params.get("refresh", "false").lower() in ("1", "true", "yes")
    stats = None if refresh else _stored_statistics(state.parts, feature.ref)
    if stats is None or (not stats.get("histogram") and feature.dtype in HISTOGRAM_TYPES
                         and not stats.get("histogram_source")):
        stats = await _computed_statistics(state, view, feature, refresh=refresh)
    # search: served statistics, the last training set's, and the drift between them (server/stats.py)
    return _json(await run_in_threadpool(statistics_payload, state.parts, feature, stats))


async def _computed_statistics(state: Any, view: FeatureView, feature: Feature, *, refresh: bool) -> dict[str, Any]:
    ref = feature.ref
    lock = state.stats_locks.get(ref)
    if lock is None:
        lock = state.stats_locks[ref] = asyncio.Lock()
    async with lock:
        recent = state.stats_computed.get(ref)
        if recent is not None and time.monotonic() - recent[0] < state.limits.stats_refresh_interval:
            return recent[1]  # computed moments ago, perhaps while this caller waited: no second scan
        stored = _stored_statistics(state.parts, ref)
        if not refresh and stored is not None and (stored.get("histogram") or feature.dtype not in HISTOGRAM_TYPES
                                                   or stored.get("histogram_source")):
            return stored  # another caller completed them while this one waited
        async with state.stats_scans:
            state.metrics.inc("feature_layer_statistics_warehouse_scans_total")
            if refresh or stored is None:
                stats = await run_in_threadpool(_compute_and_save, state.parts, view, feature)
            else:
                stats = await run_in_threadpool(_complete_and_save, state.parts, view, feature, stored)
        state.stats_computed[ref] = (time.monotonic(), stats)
        return stats


def _warehouse(parts: Parts) -> Any:
    """A short-lived warehouse connection: a server holding DuckDB's file lock would block `dbt run`."""
    if parts.new_engine is not None:
        return contextlib.closing(parts.new_engine())
    return contextlib.nullcontext(parts.engine())


def _served_as_of(parts: Parts, view: FeatureView) -> Any:
    """The end of the view's last materialization (what the online store holds), else now."""
    try:
        last = parts.state().last_materialized(view.name)
    except FeatureLayerError:
        last = None
    return last[0] if last else parts.clock.now()


def _complete_and_save(parts: Parts, view: FeatureView, feature: Feature, stats: dict[str, Any]) -> dict[str, Any]:
    with _warehouse(parts) as engine:
        completed = complete_histogram(engine, view, feature, stats, end=_served_as_of(parts, view),
                                       now=parts.clock.now())
    completed.setdefault("histogram_source", "none")  # asked once; do not query again for it
    try:
        parts.state().save_statistics(feature.ref, completed)
    except FeatureLayerError:
        pass
    return completed


def _compute_and_save(parts: Parts, view: FeatureView, feature: Feature) -> dict[str, Any]:
    with _warehouse(parts) as engine:
        stats = compute_statistics(engine, view, feature, end=_served_as_of(parts, view), now=parts.clock.now())
    try:
        parts.state().save_statistics(feature.ref, stats)
    except FeatureLayerError:
        pass  # read-only state: still show what was computed
    return stats


async def get_lineage(request: Request) -> Response:
    state = request.app.state
    registry = state.holder.registry
    view, feature = _resolve_feature(registry, request.path_params["name"])
    params = query_params(request, ("level",), 10)
    level = params.get("level", "column")
    if level not in ("column", "model"):
        from feature_layer.server.requests import RequestFieldError

        raise RequestFieldError("level", f"level={level!r} is not known.", fix="pass level=column or level=model.")
    if level == "model":
        return _json(registry.lineage(feature.ref).to_dict())
    graph = await run_in_threadpool(column_lineage_mod.column_lineage, registry, feature.ref)
    body = graph.to_dict()
    depth = column_lineage_mod.depth_of(graph)
    view_by_uid = {v.unique_id: v.name for v in registry.views.values()}
    for node in body["nodes"]:
        node["depth"] = depth[node["id"]]
        node["feature_view"] = view_by_uid.get(node["unique_id"])
    return _json(body)


async def get_entity(request: Request) -> Response:
    registry = request.app.state.holder.registry
    name = request.path_params["name"]
    entity = registry.entities.get(name)
    if entity is None:
        raise unknown_feature("name", f"Entity {name!r} does not exist.{close_matches(name, registry.entities)}",
                              fix=f"use one of: {', '.join(sorted(registry.entities))}.")
    views = [v for v in sorted(registry.views.values(), key=lambda v: v.name) if name in v.entities]
    now = request.app.state.clock.now()
    return _json({
        "name": entity.name,
        "join_keys": list(entity.join_keys),
        "description": entity.description,
        "views": [payloads.view_summary(request.app.state.parts, v, now) for v in views],
        "features": [payloads.feature_summary(registry, f) for v in views for f in v.features],
    })


async def get_view(request: Request) -> Response:
    state = request.app.state
    registry = state.holder.registry
    name = request.path_params["name"]
    view = registry.views.get(name)
    if view is None:
        raise unknown_feature("name", f"Feature view {name!r} does not exist.{close_matches(name, registry.views)}",
                              fix="GET /v1/catalog lists the feature views.")
    body = payloads.view_summary(state.parts, view, state.clock.now())
    body.update({
        "features": [payloads.feature_summary(registry, f) for f in view.features],
        "compiled_sql": view.compiled_sql,
        "raw_sql": view.raw_sql,
        "columns": [{"name": c, "dtype": t} for c, t in view.column_types],
        "services": [s.name for s in registry.services.values()
                     if any(r.startswith(view.name + ".") for r in s.features)],
        "upstream": [payloads.node_ref(registry, uid) for uid in view.depends_on],
    })
    return _json(body)


async def get_catalog(request: Request) -> Response:
    """Everything the UI needs for its filters, in one small response."""
    registry = request.app.state.holder.registry
    views = sorted(registry.views.values(), key=lambda v: v.name)
    tags = sorted({t for v in views for t in v.tags} | {t for v in views for f in v.features for t in f.tags})
    return _json({
        "entities": [{"name": e.name, "join_keys": list(e.join_keys), "description": e.description,
                      "views": sum(1 for v in views if e.name in v.entities)}
                     for e in sorted(registry.entities.values(), key=lambda e: e.name)],
        "views": [{"name": v.name, "entities": list(v.entities), "owner": v.owner, "tags": list(v.tags),
                   "features": len(v.features), "description": v.description,
                   "version": version_info(registry, v)} for v in views],  # ops2: dbt model versions
        "owners": sorted({v.owner for v in views if v.owner}),
        "tags": tags,
        "services": [{"name": s.name, "features": list(s.features), "owner": s.owner, "description": s.description}
                     for s in sorted(registry.services.values(), key=lambda s: s.name)],
        "features": sum(len(v.features) for v in views),
    })


async def openapi(request: Request) -> Response:
    """The OpenAPI 3.1 description, generated once per app from the request models and limits."""
    state = request.app.state
    if getattr(state, "openapi", None) is None:
        from importlib.metadata import PackageNotFoundError, version

        from feature_layer.server.openapi import openapi_document

        try:
            release = version("feature_layer")
        except PackageNotFoundError:
            release = "0"
        state.openapi = openapi_document(state.limits, release, state.holder.registry)
    return _json(state.openapi)


async def healthz(request: Request) -> Response:
    """ok / degraded (broken views, stale layouts, a failed reload) / unavailable (online store down: 503)."""
    state = request.app.state
    holder = state.holder
    online = await state.store_probe.check()
    stale = await run_in_threadpool(health.stale_layouts, state.parts, holder.registry) if online["status"] == "ok" else {}
    body, status = health.health_body(holder, online, state.online_store_name, stale, state.project_dir)
    return _json(body, status)


def _stream_gauges(settings: Any) -> list[tuple[str, str, dict[str, str], float]]:
    """The configured streams' progress, lag and throughput (``feature_layer.stream.status``)."""
    if settings is None:
        return []
    from feature_layer.config import stream_connections
    from feature_layer.errors import ConfigError
    from feature_layer.stream.status import stream_gauges

    try:
        connections = stream_connections(settings)
    except ConfigError:  # a bad streams: section is the consumer's error to report, not the scrape's
        return []
    return stream_gauges(connections) if connections else []


async def metrics(request: Request) -> Response:
    state = request.app.state
    holder = state.holder
    gauges: list[tuple[str, str, dict[str, str], float]] = [
        ("feature_layer_registry_features", "Features in the registry being served.", {}, float(len(holder.refs))),
        ("feature_layer_registry_reloads", "Successful registry reloads since start.", {}, float(holder.reloads)),
        ("feature_layer_registry_reload_failures", "Failed registry reloads since start.", {}, float(holder.failures)),
        ("feature_layer_registry_loaded_timestamp_seconds", "When the served registry was loaded.", {},
         holder.loaded_at),
    ]
    gauges += await run_in_threadpool(payloads.freshness_gauges, state.parts, holder.registry, state.clock.now())
    gauges += await run_in_threadpool(_stream_gauges, state.settings)
    return Response(state.metrics.render(gauges), media_type="text/plain; version=0.0.4; charset=utf-8")
