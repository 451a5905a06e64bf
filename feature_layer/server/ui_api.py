"""Page data for the discovery UI: ML models (feature services), sources, the project map and
the feature table.

The shapes are built from registry objects by small pure functions (``project_map``,
``source_columns``, ``service_requests``, ``feature_rows``); the handlers only validate the
path, read the state (freshness) or the warehouse (one example entity key per ML model) and
shape JSON. Nothing a caller sends reaches SQL: the example-key query is built with sqlglot
from the registry's own names.
"""

from __future__ import annotations

import contextlib
import json
import shlex
import threading
import weakref
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from sqlglot import exp
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from feature_layer.errors import FeatureLayerError
from feature_layer.registry import column_lineage as column_lineage_mod
from feature_layer.registry.declarations import close_matches
from feature_layer.registry.model import FeatureService, FeatureView
from feature_layer.server import payloads
from feature_layer.server.payloads import snippet_project_dir
from feature_layer.server.requests import query_params, unknown_feature
from feature_layer.server.responses import json_response
from feature_layer.sql.names import col, relation_table

MAP_KINDS = ("source", "seed", "model", "feature_view", "ml_model", "exposure")
_MODEL_TYPES = {"model", "snapshot"}


# ---------------------------------------------------------------- routes of the UI (hash URLs)
def page_url(kind: str, name: str) -> str:
    """The UI's address of an object's page; objects without one open the map on them.

    >>> page_url("ml_model", "fraud_model_v1")
    '#/ml-model/fraud_model_v1'
    >>> page_url("model", "stg users")
    '#/map?object=stg%20users'
    """
    from urllib.parse import quote

    route = {"feature": "feature", "feature_view": "view", "entity": "entity", "ml_model": "ml-model",
             "source": "source", "seed": "source"}.get(kind)
    if route is None:
        return f"#/map?object={quote(name, safe='')}"
    return f"#/{route}/{quote(name, safe='')}"


# ---------------------------------------------------------------- the project map
def _kind_of(uid: str, node: Any, views_by_uid: dict[str, FeatureView],
             services_by_uid: dict[str, FeatureService]) -> str | None:
    """The map's kind of a dbt node, None for the ones it does not draw (analyses, operations)."""
    resource_type = getattr(node, "resource_type", "")
    if uid in views_by_uid:
        return "feature_view"
    if uid in services_by_uid:
        return "ml_model"
    if resource_type == "source":
        return "source"
    if resource_type == "seed":
        return "seed"
    if resource_type in _MODEL_TYPES:
        return "model"
    if resource_type == "exposure":
        return "exposure"
    return None


def source_label(uid: str, node: Any) -> str:
    """``source_name.table`` for a dbt source.

    >>> source_label("source.feature_layer.raw.transactions", None)
    'raw.transactions'
    """
    parts = uid.split(".")
    return ".".join(parts[-2:]) if len(parts) >= 4 else getattr(node, "name", uid)


def project_map(registry: Any) -> dict[str, Any]:
    """Every source, seed, model, feature view and ML model with the edges between them.

    Each node carries what the map filters on: entities, owner, tags (a feature view's own and
    its features'), and the UI address of its page.
    """
    views_by_uid = {v.unique_id: v for v in registry.views.values()}
    services_by_uid = {s.unique_id: s for s in registry.services.values()}
    nodes: list[dict[str, Any]] = []
    for uid, node in sorted(registry.nodes.items()):
        kind = _kind_of(uid, node, views_by_uid, services_by_uid)
        if kind is None:
            continue
        view = views_by_uid.get(uid)
        service = services_by_uid.get(uid)
        name = source_label(uid, node) if kind == "source" else (
            view.name if view else service.name if service else node.name)
        tags = set(getattr(node, "tags", ()) or ())
        entities: list[str] = []
        owner = getattr(node, "owner", None)
        features: list[str] = []
        if view is not None:
            tags |= set(view.tags) | {t for f in view.features for t in f.tags}
            entities = list(view.entities)
            owner = view.owner
            features = [f.ref for f in view.features]
        if service is not None:
            owner = service.owner or owner
            tags |= set(service.tags)
            features = list(service.features)
            entities = sorted({e for ref in service.features
                               for e in registry.views[ref.split(".", 1)[0]].entities
                               if ref.split(".", 1)[0] in registry.views})
        nodes.append({
            "id": uid, "name": name, "kind": kind, "resource_type": node.resource_type,
            "description": (view.description if view else service.description if service else node.description) or "",
            "owner": owner, "tags": sorted(tags), "entities": entities, "features": features,
            "file_path": getattr(node, "file_path", ""), "url": page_url(kind, uid if kind in ("source", "seed") else name),
        })
    known = {n["id"] for n in nodes}
    edges = [{"source": parent, "target": n["id"]}
             for n in nodes for parent in registry.parent_map.get(n["id"], ()) if parent in known]
    return {
        "nodes": nodes,
        "edges": edges,
        "entities": sorted(registry.entities),
        "owners": sorted({n["owner"] for n in nodes if n["owner"]}),
        "tags": sorted({t for n in nodes for t in n["tags"]}),
        "counts": {k: sum(1 for n in nodes if n["kind"] == k) for k in MAP_KINDS},
    }


def ancestors(registry: Any, uid: str) -> set[str]:
    """``uid`` and everything upstream of it (dbt's parent map)."""
    seen = {uid}
    stack = [uid]
    while stack:
        for parent in registry.parent_map.get(stack.pop(), ()):
            if parent not in seen:
                seen.add(parent)
                stack.append(parent)
    return seen


def subgraph(graph: dict[str, Any], keep: Iterable[str]) -> dict[str, Any]:
    """The map restricted to ``keep`` (node ids)."""
    wanted = set(keep)
    return {"nodes": [n for n in graph["nodes"] if n["id"] in wanted],
            "edges": [e for e in graph["edges"] if e["source"] in wanted and e["target"] in wanted]}


# ---------------------------------------------------------------- sources: which features derive from each column
_usage_lock = threading.Lock()
_usage_cache: list[tuple[weakref.ReferenceType[Any], dict[str, dict[str, list[str]]]]] = []


def column_usage(registry: Any) -> dict[str, dict[str, list[str]]]:
    """For every upstream node (source, seed, model): column → the features computed from it.

    Walks the column-level lineage of every feature once per registry object (cached: the
    server's registry is replaced, not mutated, on reload).
    """
    with _usage_lock:
        for ref, cached in _usage_cache:
            if ref() is registry:
                return cached
    usage: dict[str, dict[str, list[str]]] = {}
    for view in sorted(registry.views.values(), key=lambda v: v.name):
        for feature in view.features:
            try:
                graph = column_lineage_mod.column_lineage(registry, feature.ref)
            except FeatureLayerError:
                continue
            for node in graph.nodes:
                if node.column is None or node.id == graph.root:
                    continue
                refs = usage.setdefault(node.unique_id, {}).setdefault(node.column.lower(), [])
                if feature.ref not in refs:
                    refs.append(feature.ref)
    with _usage_lock:  # registries are not hashable (dataclasses): an identity list, the last few kept
        _usage_cache[:] = [(r, u) for r, u in _usage_cache if r() is not None][-3:]
        _usage_cache.append((weakref.ref(registry), usage))
    return usage


def resolve_source(registry: Any, name: str) -> tuple[str, Any]:
    """A source or seed by unique id, ``source_name.table`` or (when unique) table name."""
    candidates = {uid: node for uid, node in registry.nodes.items() if node.resource_type in ("source", "seed")}
    if name in candidates:
        return name, candidates[name]
    by_label = {source_label(uid, node): uid for uid, node in candidates.items()}
    if name in by_label:
        return by_label[name], candidates[by_label[name]]
    by_table = [uid for uid, node in candidates.items() if node.name == name]
    if len(by_table) == 1:
        return by_table[0], candidates[by_table[0]]
    raise unknown_feature("name", f"Source {name!r} does not exist.{close_matches(name, by_label)}",
                          fix=f"use one of: {', '.join(sorted(by_label)) or '(no sources in the project)'}.")


def source_columns(registry: Any, uid: str, node: Any) -> list[dict[str, Any]]:
    """The source's columns (declared, in the catalog, or read by a model's SQL), each with the
    features derived from it."""
    used = column_usage(registry).get(uid, {})
    types = column_lineage_mod.node_column_types(node)
    declared = getattr(node, "columns", {}) or {}
    names = list(dict.fromkeys([*declared, *types, *sorted(used)]))
    out = []
    for column in names:
        info = declared.get(column)
        out.append({"name": column, "sql_type": types.get(column) or None,
                    "description": getattr(info, "description", "") or "",
                    "features": used.get(column, [])})
    return out


# ---------------------------------------------------------------- ML models: requests that work
def service_views(registry: Any, service: FeatureService) -> list[FeatureView]:
    names = list(dict.fromkeys(ref.split(".", 1)[0] for ref in service.features))
    return [registry.views[n] for n in names if n in registry.views]


def service_join_keys(views: list[FeatureView]) -> list[str]:
    return list(dict.fromkeys(k for v in views for k in v.join_keys))


def latest_key_query(view: FeatureView, keys: tuple[str, ...], now: datetime) -> exp.Select:
    """The join keys of the view's newest row at or before ``now`` with every key present."""
    cols = [col(k) for k in keys]
    event = col(view.event_time)
    if now.tzinfo is not None:  # naive timestamps in the warehouse are read as UTC
        now = now.astimezone(UTC).replace(tzinfo=None)
    stamp = exp.cast(exp.Literal.string(now.isoformat(sep=" ", timespec="microseconds")),
                     exp.DataType.build("timestamp"))
    condition: exp.Expression = exp.LTE(this=event, expression=stamp)
    for key_column in cols:
        condition = exp.and_(condition, exp.Not(this=exp.Is(this=key_column.copy(), expression=exp.Null())))
    return (exp.select(*cols).from_(relation_table(view)).where(condition)
            .order_by(exp.Ordered(this=event.copy(), desc=True)).limit(1))


def example_entity_row(engine: Any, views: list[FeatureView], now: datetime) -> dict[str, Any]:
    """One real entity key for the views' join keys: the newest row of the view with the most
    keys first (a user×merchant view gives a user and a merchant that belong together)."""
    row: dict[str, Any] = {}
    for view in sorted(views, key=lambda v: -len(v.join_keys)):
        missing = tuple(k for k in view.join_keys if k not in row)
        if not missing:
            continue
        query = latest_key_query(view, view.join_keys, now)
        dialect = getattr(engine, "dialect", "") or "duckdb"
        found = engine.fetch_arrow(query if hasattr(engine, "render") else query.sql(dialect=dialect)).to_pylist()
        if found:
            for key in missing:
                value = found[0][key]
                row[key] = value if isinstance(value, (int, float, str, bool)) else str(value)
    return row


def placeholder_row(keys: list[str]) -> dict[str, Any]:
    return {k: 1001 if k.endswith("_id") or k == "id" else "…" for k in keys}


def service_requests(service: FeatureService, entity_row: dict[str, Any], base_url: str,
                     project_dir: str = ".") -> dict[str, Any]:
    """The body of ``POST /v1/online-features`` for this ML model, as JSON, curl and Python."""
    body = {"service": service.name, "entity_rows": [entity_row]}
    text = json.dumps(body, ensure_ascii=False)
    url = base_url.rstrip("/") + "/v1/online-features"
    curl = (f"curl -sS -X POST {shlex.quote(url)} \\\n"
            f"  -H 'Content-Type: application/json' \\\n"
            f"  -d {shlex.quote(text)}")
    rows = json.dumps([entity_row], ensure_ascii=False)
    http = (
        "import json\n"
        "import urllib.request\n"
        "\n"
        f"body = {json.dumps(body, ensure_ascii=False, indent=4)}\n"
        "request = urllib.request.Request(\n"
        f"    {json.dumps(url)},\n"
        "    data=json.dumps(body).encode(),\n"
        "    headers={\"Content-Type\": \"application/json\"},\n"
        ")\n"
        "with urllib.request.urlopen(request) as response:\n"
        "    print(json.load(response))\n"
    )
    sdk = (
        "from feature_layer import FeatureStore\n"
        "\n"
        f"store = FeatureStore({json.dumps(project_dir, ensure_ascii=False)})\n"
        "response = store.get_online_features(\n"
        f"    service={json.dumps(service.name, ensure_ascii=False)},\n"
        f"    entity_rows={rows},\n"
        ")\n"
        "print(response.to_dict())\n"
    )
    return {"body": body, "url": url, "curl": curl, "python_http": http, "python_sdk": sdk}


# ---------------------------------------------------------------- the feature table
def feature_rows(registry: Any, freshness_by_view: dict[str, str]) -> list[dict[str, Any]]:
    """Every feature as one flat row (what the table shows, sorts, filters and exports)."""
    services_of: dict[str, list[str]] = {}
    for service in sorted(registry.services.values(), key=lambda s: s.name):
        for ref in service.features:
            services_of.setdefault(ref, []).append(service.name)
    rows = []
    for view in sorted(registry.views.values(), key=lambda v: v.name):
        for feature in view.features:
            rows.append({
                "ref": feature.ref, "name": feature.name, "view": view.name, "dtype": feature.dtype,
                "sql_type": feature.sql_type, "entities": list(view.entities), "join_keys": list(view.join_keys),
                "owner": view.owner, "tags": sorted(set(feature.tags) | set(view.tags)),
                "online": view.online, "ttl": payloads._human(view.ttl),  # noqa: SLF001 - one formatter
                "freshness": freshness_by_view.get(view.name), "services": services_of.get(feature.ref, []),
                "description": feature.description,
            })
    return rows


# ---------------------------------------------------------------- handlers
def _service(registry: Any, name: str) -> FeatureService:
    service = registry.services.get(name)
    if service is None:
        raise unknown_feature("name", f"ML model {name!r} does not exist.{close_matches(name, registry.services)}",
                              fix=f"use one of: {', '.join(sorted(registry.services)) or '(none declared)'} "
                              "(dbt exposures of type ml with meta.feature_layer.features).")
    return service


def _example_row(state: Any, service: FeatureService, views: list[FeatureView]) -> tuple[dict[str, Any], str]:
    """A real key from the warehouse (cached per ML model and registry), else a placeholder."""
    registry = state.holder.registry
    cache = getattr(state, "ui_example_rows", None)
    if cache is None:
        cache = state.ui_example_rows = {}
    hit = cache.get(service.name)
    if hit is not None and hit[0] is registry:
        return hit[1], hit[2]
    keys = service_join_keys(views)
    origin = "placeholder"
    row: dict[str, Any] = {}
    try:
        parts = state.parts
        opener = (contextlib.closing(parts.new_engine()) if parts.new_engine is not None
                  else contextlib.nullcontext(parts.engine()))
        with opener as engine:
            row = example_entity_row(engine, views, state.clock.now())
        origin = "warehouse"
    except (FeatureLayerError, OSError):
        row = {}
    if any(k not in row for k in keys):
        row = {**placeholder_row(keys), **row}
        origin = "placeholder" if not row or origin != "warehouse" else "warehouse (some keys are placeholders)"
    cache[service.name] = (registry, row, origin)
    return row, origin


async def get_service(request: Request) -> Response:
    """``GET /v1/services/{name}``: the ML model page (features, views, freshness, requests, lineage)."""
    state = request.app.state
    query_params(request, (), 10)
    registry = state.holder.registry
    service = _service(registry, request.path_params["name"])
    views = service_views(registry, service)
    now = state.clock.now()
    summaries = {v.name: payloads.view_summary(state.parts, v, now) for v in views}
    row, origin = await run_in_threadpool(_example_row, state, service, views)
    features = []
    for ref in service.features:
        view_name = ref.split(".", 1)[0]
        if view_name in registry.views:
            feature = registry.views[view_name].feature(ref.split(".", 1)[1])
            item = payloads.feature_summary(registry, feature)
            item["freshness"] = summaries[view_name]["freshness"]["status"]
            features.append(item)
    node = registry.nodes.get(service.unique_id)
    graph = subgraph(project_map(registry), ancestors(registry, service.unique_id))
    return json_response({
        "name": service.name, "unique_id": service.unique_id, "kind": "ml_model",
        "label": (getattr(node, "meta", {}) or {}).get("label") or service.name,
        "description": service.description, "owner": service.owner, "tags": list(service.tags),
        "file_path": service.file_path, "url": getattr(node, "url", None),
        "features": features, "views": list(summaries.values()),
        "entities": sorted({e for v in views for e in v.entities}),
        "join_keys": service_join_keys(views),
        "example": {"entity_row": row, "origin": origin},
        "requests": service_requests(service, row, str(request.base_url), snippet_project_dir(state.settings)),
        "lineage": graph,
    })


async def get_source(request: Request) -> Response:
    """``GET /v1/sources/{name}``: a source's columns and the features derived from each."""
    state = request.app.state
    query_params(request, (), 10)
    registry = state.holder.registry
    uid, node = resolve_source(registry, request.path_params["name"])
    columns = await run_in_threadpool(source_columns, registry, uid, node)
    downstream = sorted(registry.child_map.get(uid, ()))
    graph = project_map(registry)
    ids = {uid}
    stack = [uid]
    while stack:
        for child in registry.child_map.get(stack.pop(), ()):
            if child not in ids:
                ids.add(child)
                stack.append(child)
    return json_response({
        "unique_id": uid, "name": source_label(uid, node), "kind": node.resource_type,
        "description": node.description, "file_path": node.file_path,
        "relation": ".".join(node.relation.parts()) if node.relation else None,
        "columns": columns,
        "features": sorted({ref for c in columns for ref in c["features"]}),
        "downstream": [payloads.node_ref(registry, d) for d in downstream],
        "lineage": subgraph(graph, ids),
    })


async def get_map(request: Request) -> Response:
    """``GET /v1/map``: the project's lineage graph (the UI filters, lays out and draws it)."""
    query_params(request, (), 10)
    return json_response(project_map(request.app.state.holder.registry))


async def get_feature_table(request: Request) -> Response:
    """``GET /v1/feature-table``: every feature in one flat list, with its view's freshness."""
    state = request.app.state
    query_params(request, (), 10)
    registry = state.holder.registry
    now = state.clock.now()
    fresh = {v.name: payloads.freshness(state.parts, v, now)["status"] for v in registry.views.values()}
    rows = feature_rows(registry, fresh)
    return json_response({"features": rows, "total": len(rows)})


def openapi_paths(registry: Any, path: Any, errors: Any) -> dict[str, Any]:
    """The page-data path items, built with ``server.openapi``'s helpers (``_path``, ``_errors``)."""
    doc = {"description": "OK", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Document"}}}}
    services = sorted(getattr(registry, "services", {}) or {})
    sources = sorted(source_label(uid, n) for uid, n in (getattr(registry, "nodes", {}) or {}).items()
                     if n.resource_type in ("source", "seed"))

    def get(summary: str, parameters: list[dict[str, Any]], *codes: int) -> dict[str, Any]:
        return {"get": {"summary": summary, "parameters": parameters,
                        "responses": {"200": doc, **errors(*codes, 405, 422, 500)}}}

    return {
        "/v1/services/{name}": get(
            "An ML model (feature service): features, views, freshness, working online-features requests, lineage.",
            [path("name", "An ML model (dbt exposure) name.", services[0] if services else None)], 404),
        "/v1/sources/{name}": get(
            "A source: its columns and the features derived from each.",
            [path("name", "`source_name.table`, a unique id, or a table name.", sources[0] if sources else None)], 404),
        "/v1/map": get("The project's lineage graph: sources, models, feature views, ML models.", []),
        "/v1/feature-table": get("Every feature as one flat row (the feature table).", []),
    }
