"""``GET /v1/search``: every kind of object, ranked together (``registry.search.search_objects``).

Response (``ObjectSearchResponse``)::

    {"query": "chargebak", "total": 14, "took_ms": 0.4,
     "results": [{"kind": "feature", "name": "chargeback_rate_30d",
                  "title": "merchant_risk_features.chargeback_rate_30d", "description": "...",
                  "score": 6.0, "matched": ["name"], "url": "/#/feature/merchant_risk_features.chargeback_rate_30d"},
                 ...],
     "did_you_mean": ["chargeback", "chargebacks"]}

``kind`` is one of feature, feature_view, ml_model, entity, source, model; ``kind`` may be
given several times or comma-separated. ``did_you_mean`` is filled when nothing matched or a
word matched only as a typo.
"""

from __future__ import annotations

import time
from typing import Any

from pydantic import BaseModel, ConfigDict
from starlette.requests import Request
from starlette.responses import Response

from feature_layer.registry.declarations import close_matches
from feature_layer.registry.search import KINDS, search_objects
from feature_layer.server.requests import RequestFieldError, int_param, query_params, unknown_feature
from feature_layer.server.responses import json_response

PARAMS = ("q", "kind", "tag", "owner", "entity", "limit")
DESCRIPTIONS = {
    "q": "Free text: names, descriptions, tags, owners, column names, the SQL's columns; typos forgiven.",
    "kind": f"Only objects of these kinds (comma-separated): {', '.join(KINDS)}.",
    "tag": "Only objects with this tag.",
    "owner": "Only objects of this owner.",
    "entity": "Only objects of this entity.",
}


class SearchResultItem(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: str
    name: str
    title: str
    description: str
    score: float
    matched: list[str]
    url: str


class ObjectSearchResponse(BaseModel):
    model_config = ConfigDict(extra="forbid")

    query: str
    total: int
    took_ms: float
    results: list[SearchResultItem]
    did_you_mean: list[str]


def parse_kinds(raw: str | None) -> tuple[str, ...] | None:
    """``kind=feature,source`` → ("feature", "source"); an unknown kind is a 422 naming the kinds."""
    if not raw:
        return None
    kinds = tuple(dict.fromkeys(k.strip() for k in raw.split(",") if k.strip()))
    for kind in kinds:
        if kind not in KINDS:
            raise RequestFieldError("kind", f"kind={kind!r} is not an object kind.{close_matches(kind, KINDS)}",
                                    fix=f"use one or more of: {', '.join(KINDS)}.")
    return kinds or None


async def search(request: Request) -> Response:
    state = request.app.state
    limits = state.limits
    params = query_params(request, PARAMS, limits.max_query_chars)
    kinds = parse_kinds(",".join(v for k, v in request.query_params.multi_items() if k == "kind" and v))
    registry = state.holder.registry
    entity = params.get("entity")
    if entity is not None and entity not in registry.entities:
        raise unknown_feature("entity", f"Entity {entity!r} does not exist.{close_matches(entity, registry.entities)}",
                              fix=f"use one of: {', '.join(sorted(registry.entities))}.")
    limit = int_param(params, "limit", 50, 1, limits.max_results)
    start = time.perf_counter()
    result = search_objects(registry, params.get("q", ""), kinds=kinds,
                            filters={k: params.get(k) for k in ("tag", "owner", "entity")}, limit=limit)
    body: dict[str, Any] = result.to_dict()
    body["took_ms"] = round((time.perf_counter() - start) * 1000, 3)
    return json_response(body, 200)


def openapi_paths(limits: Any, query: Any, errors: Any) -> dict[str, Any]:
    """The ``/v1/search`` path item, built with ``server.openapi``'s helpers."""
    text = {"type": "string", "maxLength": limits.max_query_chars}
    parameters = [query(k, d, text) for k, d in DESCRIPTIONS.items()]
    parameters.append(query("limit", "Most results to return.",
                            {"type": "string", "pattern": "^[0-9]+$", "description": f"1 to {limits.max_results}"}))
    ok = {"description": "OK", "content": {"application/json": {
        "schema": {"$ref": "#/components/schemas/ObjectSearchResponse"}}}}
    return {"/v1/search": {"get": {"summary": "Search every object (features, views, entities, ML models, sources, "
                                              "models), ranked together.",
                                   "parameters": parameters,
                                   "responses": {"200": ok, **errors(404, 422, 405, 500)}}}}
