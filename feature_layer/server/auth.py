"""Bearer-token access control for the feature server (tokens and scopes: ``feature_layer.access``).

An ASGI middleware in front of every route, the online fast path included: it finds the
scope a request needs from its method and path (``required_scope``), answers 401 without a
token or with an unknown one, 403 when the token lacks the scope, and otherwise hands the
request on with the token's ``Grant`` in the ASGI scope (``GRANT_KEY``). Which feature views
an online lookup reads is known only once its body is parsed, so that check
(``check_online``) runs in ``fastpath.lookup_json``, on the parsed request: one set lookup
per requested view.

Every denial writes one line to the ``feature_layer.audit`` logger (status, method, path,
token name or ``-``, reason, client address), never the token itself. Without an ``auth``
block in ``feature_layer.yml`` the middleware is not installed at all.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import orjson
from starlette.types import ASGIApp, Receive, Scope, Send

from feature_layer.access import (
    METRICS_READ,
    PUSH,
    REGISTRY_READ,
    SCOPES_HELP,
    AuthSettings,
    Grant,
    online_denial,
)
from feature_layer.errors import FeatureLayerError

audit = logging.getLogger("feature_layer.audit")

GRANT_KEY = "feature_layer.grant"
"""Where the authenticated ``Grant`` travels in the ASGI scope."""
ONLINE = "online"
"""The scope family of ``POST /v1/online-features`` (views and services checked on the body)."""
PUBLIC_PATHS = frozenset({"/", "/healthz"})
"""No token needed: the UI shell (its data comes from API calls that carry the token) and the
health probe load balancers call."""
_BEARER = b"bearer "


class ForbiddenError(FeatureLayerError):
    """The token is valid but does not grant what the request reads (HTTP 403)."""

    field: str | None = None


def required_scope(method: str, path: str) -> str | None:
    """The scope a request needs (None: public). Reads are ``registry:read`` unless listed;
    any other write (a route added later and not listed here) needs ``push``, never less."""
    if path in PUBLIC_PATHS or path.startswith("/static/"):
        return None
    if path == "/v1/online-features":
        return ONLINE
    if path == "/metrics":
        return METRICS_READ
    if path.startswith("/v1/push") or method not in ("GET", "HEAD"):
        return PUSH
    return REGISTRY_READ


def bearer_token(headers: Iterable[tuple[bytes, bytes]]) -> bytes | None:
    """The token of an ``Authorization: Bearer <token>`` header (None when absent or another scheme)."""
    for name, value in headers:
        if name == b"authorization":
            if value[:7].lower() == _BEARER:
                return value[7:].strip() or None
            return None
    return None


def _client(scope: Scope) -> str:
    client = scope.get("client")
    return f"{client[0]}:{client[1]}" if client else "-"


def log_denial(scope: Scope, status: int, grant: Grant | None, reason: str) -> None:
    """The audit line of one denied request."""
    audit.warning("denied status=%d method=%s path=%s token=%s reason=%r client=%s", status, scope.get("method"),
                  scope.get("path"), grant.name if grant else "-", reason, _client(scope))


def _error(kind: str, message: str, fix: str) -> bytes:
    return orjson.dumps({"error": {"type": kind, "message": message, "field": None, "fix": fix}})


class AuthMiddleware:
    """Refuses requests without the scope their route needs (see the module docstring)."""

    def __init__(self, app: ASGIApp, auth: AuthSettings) -> None:
        self.app = app
        self.auth = auth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        needed = required_scope(scope["method"], scope["path"])
        if needed is None:
            await self.app(scope, receive, send)
            return
        token = bearer_token(scope["headers"])
        if token is None:
            await self._deny(scope, send, 401, None, "no bearer token",
                             f"{scope['method']} {scope['path']} needs an access token.",
                             "send `Authorization: Bearer <token>` (tokens are declared under `auth:` in "
                             "feature_layer.yml; in the UI, enter it when asked).")
            return
        grant = self.auth.authenticate(token)
        if grant is None:
            await self._deny(scope, send, 401, None, "unknown token", "The access token is not valid.",
                             "check the token; the server accepts the tokens whose SHA-256 is listed under "
                             "`auth.tokens` in feature_layer.yml (`feature-layer token hash` computes it).")
            return
        allowed = grant.some_online if needed == ONLINE else grant.allows(needed)
        if not allowed:
            wanted = "online:views/<view>, online:services/<service> or online:*" if needed == ONLINE else needed
            await self._deny(scope, send, 403, grant, f"missing scope {wanted}",
                             f"Token {grant.name!r} may not call {scope['method']} {scope['path']}: it needs "
                             f"the scope {wanted}.",
                             f"add {wanted} to the scopes of token {grant.name!r} in feature_layer.yml, or use "
                             "a token that has it.")
            return
        scope[GRANT_KEY] = grant
        await self.app(scope, receive, send)

    async def _deny(self, scope: Scope, send: Send, status: int, grant: Grant | None, reason: str,
                    message: str, fix: str) -> None:
        log_denial(scope, status, grant, reason)
        body = _error("UnauthorizedError" if status == 401 else "ForbiddenError", message, fix)
        challenge = b'Bearer realm="feature_layer"' if status == 401 else b'Bearer error="insufficient_scope"'
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"www-authenticate", challenge),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


_DECISIONS: dict[tuple[Any, ...], tuple[Any, Grant, str | None]] = {}
"""(grant id, registry id, features, service) -> (registry, grant, denial or None): a request repeats the same
feature list again and again, so the per-view check runs once per list and registry."""


def check_online(scope: Scope | None, registry: Any, payload: Any) -> None:
    """Refuse (``ForbiddenError``, audited) an online lookup the request's token may not make.

    ``scope`` is the ASGI scope (None, or no grant in it: auth is off, everything is allowed);
    ``payload`` the request body as sent (checked before it is validated, see ``requested``).
    """
    grant = scope.get(GRANT_KEY) if scope is not None else None
    if grant is None or grant.any_online:
        return
    try:  # the hot path: a repeated feature list, one dict lookup
        features = payload.get("features")
        key = (id(grant), id(registry), tuple(features) if features.__class__ is list else features,
               payload.get("service"))
        hit = _DECISIONS.get(key)
    except (AttributeError, TypeError):  # not a JSON object, or unhashable values: validation refuses it
        key, hit = None, None
    if hit is not None and hit[0] is registry and hit[1] is grant:
        denied = hit[2]
    else:
        features, service = requested(payload)
        services = registry.services
        expanded = () if service is not None else _expanded(registry, features or ())
        denied = online_denial(grant, expanded, service,
                               {s: services[s].features for s in grant.services if s in services})
        if key is not None:
            if len(_DECISIONS) > 1024:
                _DECISIONS.clear()
            _DECISIONS[key] = (registry, grant, denied)
    if denied is None:
        return
    log_denial(scope, 403, grant, f"no online scope for {denied}")
    kind, _, name = denied.partition(" ")
    needed = f"online:services/{name.strip(chr(39))}" if kind == "service" \
        else f"online:views/{denied.rsplit(' ', 1)[-1].strip(chr(39))}"
    raise ForbiddenError(f"Token {grant.name!r} may not read the online features of {denied}.",
                         fix=f"add {needed} (or online:*) to the scopes of token {grant.name!r} in "
                         f"feature_layer.yml. Scopes: {SCOPES_HELP}.")


def _expanded(registry: Any, refs: Iterable[str]) -> list[str]:
    """``view.*`` references as the view's features (a service grant lists them one by one)."""
    out: list[str] = []
    for ref in refs:
        view, _, name = ref.partition(".")
        if name == "*" and view in registry.views:
            out.extend(f.ref for f in registry.views[view].features)
        else:
            out.append(ref)
    return out


def install(app: Any, auth: AuthSettings | None) -> None:
    """Add the middleware to ``app`` when ``auth`` is configured (the server's one hook)."""
    if auth is not None:
        app.add_middleware(AuthMiddleware, auth=auth)


def requested(payload: Any) -> tuple[list[str] | None, str | None]:
    """(features, service) of an online request body as sent, before validation: the access check
    runs first, so a token without the scope learns nothing of which features exist. Values of
    the wrong type are left to the request validation (which refuses them)."""
    if not isinstance(payload, dict):
        return [], None
    features = payload.get("features")
    service = payload.get("service")
    refs = [f for f in features if isinstance(f, str)] if isinstance(features, list) else []
    return refs, service if isinstance(service, str) else None
