"""``GET /openapi.json``: the OpenAPI 3.1 description of every endpoint, generated from the
pydantic models of ``server.models`` (the ones request bodies are validated with) and the
server's configured limits."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from feature_layer.server import models, search_api

REF = "#/components/schemas/{model}"
SEARCH_PARAMS = {
    "q": "Free text: matched against names, descriptions, tags, owners.",
    "entity": "Only features of this entity.",
    "tag": "Only features (or views) with this tag.",
    "owner": "Only views of this owner.",
    "view": "Only features of this view.",
}


def _json(model: type[BaseModel], description: str) -> dict[str, Any]:
    return {"description": description,
            "content": {"application/json": {"schema": {"$ref": REF.format(model=model.__name__)}}}}


def _errors(*codes: int) -> dict[str, Any]:
    text = {400: "The request cannot be served.", 404: "An unknown feature, view, entity or service.",
            405: "Wrong method.", 413: "The body is too large.", 422: "A malformed field (named in `error.field`).",
            500: "A bug: a request id to report.", 502: "The warehouse failed.",
            503: "The online store or the registry is unavailable.", 504: "The online store did not answer in time."}
    return {str(c): _json(models.ErrorResponse, text[c]) for c in codes}


def _query(name: str, description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "description": description, "schema": schema}


def _path(name: str, description: str, example: str | None = None) -> dict[str, Any]:
    out = {"name": name, "in": "path", "required": True, "description": description, "schema": {"type": "string"}}
    if example is not None:
        out["example"] = example
    return out


def _get(summary: str, ok: type[BaseModel], parameters: list[dict[str, Any]], *errors: int) -> dict[str, Any]:
    return {"get": {"summary": summary, "parameters": parameters,
                    "responses": {"200": _json(ok, "OK"), **_errors(*errors, 405, 500)}}}


def _examples(registry: Any) -> tuple[str | None, str | None, str | None]:
    views = sorted(getattr(registry, "views", {}).values(), key=lambda v: v.name)
    view = next((v for v in views if v.features), None)
    if view is None:
        return None, None, None
    return view.features[0].ref, view.name, (view.entities[0] if view.entities else None)


def _lookup_example(registry: Any) -> dict[str, Any]:
    views = sorted(getattr(registry, "views", {}).values(), key=lambda v: v.name)
    view = next((v for v in views if v.features and v.online), None)
    if view is None:
        return models.EXAMPLE
    return {"features": [view.features[0].ref], "entity_rows": [{key: 1 for key in view.join_keys}]}


def _schemas(limits: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for model in (models.OnlineFeaturesRequest, models.OnlineFeaturesResponse, models.ErrorResponse,
                  models.HealthResponse, models.SearchResponse, models.StatisticsResponse, models.Document,
                  search_api.ObjectSearchResponse):  # search: GET /v1/search
        schema = model.model_json_schema(ref_template=REF)
        out.update(schema.pop("$defs", {}))
        out[model.__name__] = schema
    request = out["OnlineFeaturesRequest"]["properties"]
    for prop in request.values():  # "absent" is the default, not null (null is refused)
        if prop.get("default", 0) is None:
            del prop["default"]
    request["features"]["maxItems"] = limits.max_features  # the server's limits, as configured
    request["entity_rows"]["maxItems"] = limits.max_entity_rows
    return out


def openapi_document(limits: Any, version: str, registry: Any = None) -> dict[str, Any]:
    """The OpenAPI 3.1 document of the feature server with ``limits`` (``app.Limits``); names
    from ``registry`` (the one served) are the path parameters' examples."""
    feature, view, entity = _examples(registry)
    name = _path("name", "A feature reference `view.feature`.", feature)
    text = {"type": "string", "maxLength": limits.max_query_chars}
    search = [_query(k, d, text) for k, d in SEARCH_PARAMS.items()]
    search.append(_query("limit", "Most results to return.",
                         {"type": "string", "pattern": "^[0-9]+$", "description": f"1 to {limits.max_results}"}))
    paths = {
        "/v1/online-features": {"post": {
            "summary": "Latest feature values for entity rows (one online-store round trip).",
            "requestBody": {"required": True, "content": {"application/json": {
                "schema": {"$ref": REF.format(model="OnlineFeaturesRequest")},
                "example": _lookup_example(registry)}}},
            "responses": {"200": _json(models.OnlineFeaturesResponse, "One list per column, one value per entity row."),
                          **_errors(404, 405, 413, 422, 500, 503, 504)},
        }},
        "/v1/features": _get("Search features.", models.SearchResponse, search, 404, 422),
        "/v1/features/{name}": _get("A feature: metadata, SQL, freshness, statistics, services, snippet.",
                                    models.Document, [name], 404),
        "/v1/features/{name}/statistics": _get(
            "Statistics of a feature (stored, or computed in the warehouse).", models.StatisticsResponse,
            [name, _query("refresh", "Recompute them (rate-limited).",
                          {"type": "string", "enum": ["true", "false", "1", "0", "yes", "no"]})], 404, 422, 502, 503),
        "/v1/lineage/{name}": _get("Column- or model-level lineage of a feature.", models.Document,
                                   [name, _query("level", "column (default) or model.",
                                                 {"type": "string", "enum": ["column", "model"]})], 404, 422),
        "/v1/entities/{name}": _get("An entity, its views and features.", models.Document,
                                    [_path("name", "An entity name.", entity)], 404),
        "/v1/views/{name}": _get("A feature view: metadata, freshness, layout, features, SQL.", models.Document,
                                 [_path("name", "A feature view name.", view)], 404),
        "/v1/catalog": _get("Entities, views, owners, tags and services (for the UI's filters).", models.Document, []),
        "/healthz": {"get": {"summary": "Health: ok, degraded (named views) or unavailable (online store down).",
                             "responses": {"200": _json(models.HealthResponse, "ok or degraded"),
                                           "503": _json(models.HealthResponse, "unavailable"),
                                           **_errors(405, 500)}}},
        "/metrics": {"get": {"summary": "Prometheus metrics (text format 0.0.4).",
                             "responses": {"200": {"description": "OK", "content": {"text/plain": {
                                 "schema": {"type": "string"}}}}, **_errors(405, 500)}}},
        "/openapi.json": {"get": {"summary": "This document.",
                                  "responses": {"200": {"description": "OK", "content": {"application/json": {
                                      "schema": {"type": "object"}}}}}}},
    }
    paths.update(search_api.openapi_paths(limits, _query, _errors))  # search
    return {
        "openapi": "3.1.0",
        "info": {"title": "feature_layer", "version": version,
                 "description": "Online features, search, lineage, statistics and health of a dbt feature project."},
        "paths": paths,
        "components": {"schemas": _schemas(limits)},
    }
