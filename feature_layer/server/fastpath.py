"""``POST /v1/online-features`` as a raw ASGI handler: the one hot path, kept lean.

Starlette's routing, Request/Response objects and exception middleware cost about twice
what the lookup itself costs. This middleware answers the lookup route directly from the
ASGI messages, with the same validation, limits, error bodies and status codes as every
other route (it reuses their functions), and hands every other request to the app.

The store call itself (the online store's IO: a Redis round trip, a SQLite read) runs in a
small bounded thread pool under a per-request deadline (``Limits.lookup_deadline``), never on
the event loop: an online store that stops answering makes its lookups fail with a 504 that
names the store, while ``/healthz``, the UI and every other request keep being answered. A
lookup stuck past the deadline keeps its pool thread until the store client's own socket
timeout frees it; requests beyond the pool wait in its queue, within the same deadline.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import orjson
from starlette.types import ASGIApp, Receive, Scope, Send

from feature_layer.errors import FeatureLayerError, InputError, UnknownFeatureError
from feature_layer.online.lookup import get_online_features
from feature_layer.parts import Parts
from feature_layer.server.auth import GRANT_KEY, check_online
from feature_layer.server.requests import (
    OnlineRequest,
    parse_json_body,
    parse_online_request,
    read_body,
)
from feature_layer.server.responses import OnlineStoreTimeoutError, error_body, json_default, status_for

if TYPE_CHECKING:
    from feature_layer.config import Settings

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
            status, payload = 200, await lookup_json(self.state, parse_json_body(body), scope)
        except FeatureLayerError as exc:
            status, payload = status_for(exc), orjson.dumps(error_body(exc, self.state.project_dir))
        await send({"type": "http.response.start", "status": status,
                    "headers": [*_JSON_HEADERS, (b"content-length", str(len(payload)).encode())]})
        await send({"type": "http.response.body", "body": payload})

    async def _body(self, scope: Scope, receive: Receive) -> bytes:
        return await read_body(scope["headers"], receive, self.state.limits.max_body_bytes)



async def lookup_json(state: Any, payload: Any, scope: Scope | None = None) -> bytes:
    """Validate a parsed request body, look the features up, return the JSON response body.

    Validation runs on the event loop (pure CPU, microseconds); the store call runs in
    ``state.lookup_pool`` under ``state.limits.lookup_deadline`` seconds — except for the
    embedded SQLite store (``state.lookup_inline``, see :func:`lookup_inline`). ``scope``: the
    ASGI scope, whose access grant (``server.auth``) must allow the requested views.
    """
    limits = state.limits
    holder = state.holder
    if scope is not None and GRANT_KEY in scope:
        check_online(scope, holder.registry, payload)
    parsed = parse_online_request(payload, holder.registry, holder.refs,
                                  max_rows=limits.max_entity_rows, max_features=limits.max_features)
    try:
        if state.lookup_inline:  # the embedded SQLite store: a local indexed read, no peer to hang on
            body = _lookup_in_thread(state.parts, parsed)
        else:
            future = asyncio.get_running_loop().run_in_executor(
                state.lookup_pool.get(), _lookup_in_thread, state.parts, parsed)
            body = await asyncio.wait_for(future, limits.lookup_deadline)
    except TimeoutError:
        raise _timeout_error(state.online_store_name, limits.lookup_deadline) from None
    except (InputError, UnknownFeatureError) as exc:
        if getattr(exc, "field", None) is None:  # the store's errors know no request fields: name it here
            exc.field = offending_field(holder.registry, parsed, payload)  # type: ignore[attr-defined]
        raise
    state.metrics.inc("feature_layer_online_entity_rows_total", len(parsed.entity_rows))
    return body


def _lookup_in_thread(parts: Parts, parsed: OnlineRequest) -> bytes:
    response = get_online_features(
        parts,
        features=parsed.features,
        entity_rows=parsed.entity_rows,
        service=parsed.service,
        include_event_times=parsed.include_event_times,
        join_key_map=parsed.join_key_map,  # ops2
    )
    return orjson.dumps(response.to_dict(), default=json_default, option=orjson.OPT_SERIALIZE_NUMPY)


def offending_field(registry: Any, parsed: OnlineRequest, payload: Any) -> str:
    """The request field a lookup error from the store is about, found by checking the request
    the way the lookup does: a view not served online, then a missing join key, then a join-key
    value of the wrong type (``entity_rows[3].user_id``); ``entity_rows`` when none stands out.

    Runs only after the store refused a request, so the hot path pays nothing for it.
    """
    columnar = isinstance(payload, dict) and payload.get("entities") is not None
    base = "entities" if columnar else "entity_rows"

    def cell(i: int, key: str) -> str:
        return f"entities.{key}[{i}]" if columnar else f"entity_rows[{i}].{key}"

    try:
        refs = list(parsed.features or registry.services[parsed.service].features)
        views = [registry.views[name] for name in dict.fromkeys(r.partition(".")[0] for r in refs)
                 if name in registry.views]
        for view in views:
            if not view.online:
                if parsed.features is None:
                    return "service"
                return next(f"features[{i}]" for i, r in enumerate(refs) if r.partition(".")[0] == view.name)
        rows = parsed.entity_rows
        for key in dict.fromkeys(k for view in views for k in view.join_keys):
            for i, row in enumerate(rows):
                if key not in row:
                    return f"entities.{key}" if columnar else cell(i, key)
        from feature_layer.online.encoding import key_text, view_layout

        for view in views:
            for key, key_type in zip(view.join_keys, view_layout(view, "").key_types, strict=False):
                for i, row in enumerate(rows):
                    try:
                        key_text(row[key], key_type)
                    except (ValueError, TypeError):
                        return cell(i, key)
    except Exception:  # naming the field is best effort: never hide the store's own error
        return base
    return base


def lookup_inline(settings: Settings | None, offload: bool | None) -> bool:
    """Whether lookups may run on the event loop instead of the thread pool.

    ``offload`` None (the default) means: in the pool, unless the online store is the embedded
    SQLite file. The thread hop costs ~30-40 µs of CPU per lookup, about a fifth of a
    single-entity request; a SQLite read is a local indexed lookup that readers in WAL mode do
    not wait on writers for, so it has no remote peer that could hang. Redis, or any store not
    known from the settings, always goes through the pool and its deadline.
    """
    if offload is not None:
        return not offload
    return settings is not None and settings.online_store.type == "sqlite"


def _timeout_error(store_name: str, deadline: float) -> OnlineStoreTimeoutError:
    return OnlineStoreTimeoutError(
        f"{store_name} did not answer the lookup within {deadline:g} s.",
        fix="check that the online store is running and reachable from the server (online_store in "
        "feature_layer.yml); lower online_store.socket_timeout so stuck connections are dropped sooner; "
        "if the store is only slow, raise the deadline with `feature-layer serve --lookup-deadline`.",
    )
