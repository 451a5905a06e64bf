"""The feature server: HTTP API (online features, search, lineage, statistics, metrics) and web UI.

``create_app(store)`` builds the starlette application; ``feature-layer serve`` runs it on uvicorn.
"""

from __future__ import annotations

from typing import Any

__all__ = ["create_app"]


def create_app(store: Any, **kwargs: Any) -> Any:
    """See :func:`feature_layer.server.app.create_app` (imported lazily: starlette is only needed to serve)."""
    from feature_layer.server.app import create_app as _create_app

    return _create_app(store, **kwargs)
