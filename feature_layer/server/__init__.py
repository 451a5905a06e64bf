"""The feature server: HTTP API (online features, search, lineage, statistics, metrics) and web UI.

``create_app(store)`` builds the starlette application; ``feature-layer serve`` runs it on uvicorn.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from feature_layer.client import FeatureStore

__all__ = ["DEFAULT_HEADER_TIMEOUT", "DEFAULT_KEEP_ALIVE_TIMEOUT", "DEFAULT_MAX_HEADER_BYTES", "create_app"]

# Slow and idle clients (feature_layer.server.protocol; `feature-layer serve` options).
DEFAULT_HEADER_TIMEOUT = 10.0  # seconds for the request line and headers
DEFAULT_KEEP_ALIVE_TIMEOUT = 5  # seconds an idle keep-alive connection stays open
DEFAULT_MAX_HEADER_BYTES = 32 * 1024  # request line + headers


def create_app(store: FeatureStore, **kwargs: Any) -> Any:
    """See :func:`feature_layer.server.app.create_app` (imported lazily: starlette is only needed to serve)."""
    from feature_layer.server.app import create_app as _create_app

    return _create_app(store, **kwargs)
