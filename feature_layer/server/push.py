"""``POST /v1/push``: values computed elsewhere, written like ``FeatureStore.push``.

Disabled unless the server accepts writes (``server: {accept_writes: true}`` in feature_layer.yml,
or FEATURE_LAYER_ACCEPT_WRITES=1): a read-only feature server answers 403 and names the setting.
The body is ``{"view": "<feature view>", "rows": [{…}, …]}``, validated like every body (size
limit, JSON, unknown keys refused, each row checked against the view by ``validate_rows``).
"""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from feature_layer.errors import FeatureLayerError
from feature_layer.registry.declarations import close_matches
from feature_layer.server.requests import RequestFieldError, read_json_body, unknown_feature
from feature_layer.server.responses import error_body, json_response

PUSH_KEYS = ("view", "rows")


class WritesDisabledError(FeatureLayerError):
    """The server was started read-only (HTTP 403)."""

    field = "server"


def _parse(payload: Any, registry: Any) -> tuple[str, list[Any]]:
    if not isinstance(payload, dict):
        raise RequestFieldError("body", "The body must be a JSON object.",
                                fix='send {"view": "<feature view>", "rows": [{...}]}.')
    unknown = sorted(str(k) for k in set(payload) - set(PUSH_KEYS))
    if unknown:
        raise RequestFieldError(unknown[0], f"Unknown key(s) {', '.join(unknown)} in the push body.",
                                fix=f"use only {', '.join(PUSH_KEYS)}.")
    view = payload.get("view")
    if not isinstance(view, str) or not view:
        raise RequestFieldError("view", "`view` must name a feature view.", fix='send "view": "<feature view>".')
    if view not in registry.views:
        raise unknown_feature("view", f"Feature view {view!r} does not exist.{close_matches(view, registry.views)}",
                              fix="GET /v1/catalog lists the feature views.")
    rows = payload.get("rows")
    if not isinstance(rows, list):
        raise RequestFieldError("rows", "`rows` must be a list of objects.", fix='send "rows": [{...}].')
    return view, rows


async def push(request: Request) -> Response:
    state = request.app.state
    if not getattr(state, "accept_writes", False):
        exc = WritesDisabledError("This feature server is read-only: POST /v1/push is disabled.",
                                  fix="start it with `server: {accept_writes: true}` in feature_layer.yml "
                                  "(or FEATURE_LAYER_ACCEPT_WRITES=1) to accept pushed values.")
        return json_response(error_body(exc, state.project_dir), 403)
    payload = await read_json_body(request, state.limits.max_body_bytes)
    parts = state.parts
    view, rows = _parse(payload, parts.registry())
    from feature_layer.stream.push import push_rows

    result = await asyncio.to_thread(push_rows, parts, view, rows, log_dir=parts.push_log)
    return json_response(result.to_dict())
