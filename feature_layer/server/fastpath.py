"""``POST /v1/online-features`` as a raw ASGI handler: the one hot path, kept lean.

Starlette's routing, Request/Response objects and exception middleware cost about twice
what the lookup itself costs. This middleware answers the lookup route directly from the
ASGI messages, with the same validation, limits, error bodies and status codes as every
other route (it reuses their functions), and hands every other request to the app.
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.types import ASGIApp, Receive, Scope, Send

from feature_layer.errors import FeatureLayerError
from feature_layer.server.requests import RequestFieldError, RequestTooLargeError, parse_online_request

PATH = "/v1/online-features"
_JSON_HEADERS = [(b"content-type", b"application/json")]


class OnlineFastPath:
    def __init__(self, app: ASGIApp, state: Any, route: Any) -> None:
        self.app = app
        self.state = state
        self.route = route  # for the metrics' route label

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != PATH or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        scope["route"] = self.route
        try:
            body = await self._body(scope, receive)
            status, payload = 200, self._lookup(body)
        except FeatureLayerError as exc:
            from feature_layer.server.app import error_body, status_for

            status, payload = status_for(exc), orjson.dumps(error_body(exc))
        await send({"type": "http.response.start", "status": status,
                    "headers": [*_JSON_HEADERS, (b"content-length", str(len(payload)).encode())]})
        await send({"type": "http.response.body", "body": payload})

    async def _body(self, scope: Scope, receive: Receive) -> bytes:
        limit = self.state.limits.max_body_bytes
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    if int(value) > limit:
                        raise RequestTooLargeError(limit)
                except ValueError:
                    raise RequestFieldError("Content-Length", "Content-Length is not a number.",
                                            fix="send a valid Content-Length header.") from None
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise RequestFieldError("body", "The client disconnected before sending the body.",
                                        fix="send the whole request body.")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise RequestTooLargeError(limit)
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def _lookup(self, body: bytes) -> bytes:
        if not body:
            raise RequestFieldError("body", "The request body is empty.",
                                    fix='send JSON such as {"features": ["view.feature"], "entity_rows": [{"user_id": 1}]}.')
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise RequestFieldError("body", f"The request body is not valid JSON ({exc}).",
                                    fix="send a JSON object with Content-Type: application/json.") from None
        return lookup_json(self.state, payload)


def lookup_json(state: Any, payload: Any) -> bytes:
    """Validate a parsed request body, look the features up, return the JSON response body."""
    limits = state.limits
    holder = state.holder
    parsed = parse_online_request(payload, holder.registry, holder.refs,
                                  max_rows=limits.max_entity_rows, max_features=limits.max_features)
    response = state.store.get_online_features(
        features=parsed.features,
        entity_rows=parsed.entity_rows,
        service=parsed.service,
        include_event_times=parsed.include_event_times,
    )
    state.metrics.inc("feature_layer_online_entity_rows_total", len(parsed.entity_rows))
    from feature_layer.server.app import _default

    return orjson.dumps(response.to_dict(), default=_default, option=orjson.OPT_SERIALIZE_NUMPY)
