"""JSON bodies and the error → HTTP status table, shared by the app, its routes and the fast path.

The app layer owns the mapping from domain errors to HTTP status codes (the exception
classes know nothing of HTTP). It lives here, below ``app``, ``routes`` and ``fastpath``, so
none of them imports another back.
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response

from feature_layer.errors import (
    ConfigError,
    DeclarationError,
    FeatureLayerError,
    InputError,
    ManifestError,
    OnlineStoreError,
    UnknownFeatureError,
    WarehouseError,
)
from feature_layer.server.auth import ForbiddenError
from feature_layer.server.public import public_text
from feature_layer.server.requests import RequestFieldError, RequestTooLargeError


class OnlineStoreTimeoutError(OnlineStoreError):
    """The online store did not answer a lookup within the server's deadline (HTTP 504)."""


# Most specific first: the first isinstance match wins.
STATUS_BY_ERROR: tuple[tuple[type[Exception], int], ...] = (
    (ForbiddenError, 403),
    (RequestTooLargeError, 413),
    (RequestFieldError, 422),
    (UnknownFeatureError, 404),
    (InputError, 422),
    (DeclarationError, 503),
    (ManifestError, 503),
    (ConfigError, 503),
    (OnlineStoreTimeoutError, 504),
    (OnlineStoreError, 503),
    (WarehouseError, 502),
    (FeatureLayerError, 400),
)


def json_response(payload: Any, status_code: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(payload, default=json_default, option=orjson.OPT_SERIALIZE_NUMPY),
                    status_code=status_code, media_type="application/json", headers=headers)


def json_default(value: Any) -> Any:
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if hasattr(value, "as_py"):
        return value.as_py()
    return str(value)


def error_body(exc: FeatureLayerError, project_dir: Any = None) -> dict[str, Any]:
    """The JSON error of ``exc``; absolute server paths are made relative or hidden (public_text)."""
    fix = exc.fix
    return {"error": {"type": type(exc).__name__, "message": public_text(exc.message, project_dir),
                      "field": getattr(exc, "field", None), "fix": public_text(fix, project_dir) if fix else fix}}


def status_for(exc: Exception) -> int:
    for cls, status in STATUS_BY_ERROR:
        if isinstance(exc, cls):
            return status
    return 500
