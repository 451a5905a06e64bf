"""The starlette application: one process serves the HTTP API, the metrics and the web UI.

The app layer owns the mapping from domain errors to HTTP status codes (the exception
classes know nothing of HTTP). Every error body has the same shape::

    {"error": {"type": "InputError", "message": "...", "field": "entity_rows[0]", "fix": "..."}}
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from feature_layer.errors import FeatureLayerError
from feature_layer.server import routes, search_api  # search: search_api
from feature_layer.server.fastpath import OnlineFastPath, lookup_inline
from feature_layer.server.health import StoreProbe
from feature_layer.server.metrics import Metrics, MetricsMiddleware
from feature_layer.server.pools import Pool
from feature_layer.server.public import online_store_name
from feature_layer.server.reload import RegistryHolder, holder_for_store, serving_parts
from feature_layer.server.responses import error_body, json_response, status_for

if TYPE_CHECKING:
    from feature_layer.client import FeatureStore
    from feature_layer.config import Settings
    from feature_layer.parts import Parts

log = logging.getLogger("feature_layer.server")
STATIC_DIR = Path(__file__).parent / "static"


@dataclass(frozen=True)
class Limits:
    """Bounds on what one request may ask for."""

    max_body_bytes: int = 1 << 20
    max_entity_rows: int = 1000
    max_features: int = 500
    max_query_chars: int = 200
    max_results: int = 500
    # Seconds one online lookup may take, store IO included, before it fails with a 504.
    lookup_deadline: float = 1.5
    # Threads doing online-store IO (per worker process); lookups beyond them queue, within the deadline.
    lookup_threads: int = 8
    # True: every lookup in the pool; False: on the event loop; None: in the pool unless the online
    # store is the embedded SQLite file (fastpath.lookup_inline says why).
    lookup_offload: bool | None = None
    # On-demand statistics: a feature computed this recently answers ?refresh=true from that result,
    # and at most this many full-table scans run at once (one per feature at a time in any case).
    stats_refresh_interval: float = 60.0
    stats_concurrency: int = 2


# On every response (added by MetricsMiddleware; the crash handler, outside it, adds them itself).
# The UI is same-origin only: scripts, styles and fetches from this server, no inline code or
# styles, images from the server or data: URIs (the favicon), never framed.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
)


async def _domain_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, FeatureLayerError)
    status = status_for(exc)
    if status >= 500:
        log.warning("%s %s -> %d: %s", request.method, request.url.path, status, exc)
    return json_response(error_body(exc, request.app.state.project_dir), status)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    fixes = {404: "see GET /v1/features for the API, or / for the UI.",
             405: "check the HTTP method: POST /v1/online-features, GET for everything else."}
    body = {"error": {"type": "HTTPError", "message": exc.detail or "", "field": None,
                      "fix": fixes.get(exc.status_code)}}
    return json_response(body, exc.status_code)


async def _crash(request: Request, exc: Exception) -> Response:
    """A bug: the client gets a generic 500 with a request id; the traceback goes to the log only
    (exception text can carry paths, SQL, connection strings)."""
    request_id = uuid.uuid4().hex[:16]
    log.error("unhandled error on %s %s (request id %s)", request.method, request.url.path, request_id,
              exc_info=exc)
    body = {"error": {"type": "InternalError", "message": f"Internal server error (request id {request_id}).",
                      "field": None, "request_id": request_id,
                      "fix": "this is a bug in feature_layer; please report it with the request id and the "
                             "server log's traceback for it."}}
    headers = {k.decode(): v.decode() for k, v in SECURITY_HEADERS}
    headers["x-request-id"] = request_id
    return json_response(body, 500, headers=headers)


async def _index(request: Request) -> Response:
    return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})


def create_app(
    store: FeatureStore,
    *,
    reload_interval: float | None = 2.0,
    limits: Limits | None = None,
    holder: RegistryHolder | None = None,
) -> Starlette:
    """The feature server for ``store``: its parts (online store, state, warehouse, clock), with
    the registry of a holder that reloads it when dbt rewrites the artifacts.

    ``reload_interval``: seconds between checks of the dbt artifacts (None: never reload).
    """
    return build_app(store.parts, holder or holder_for_store(store), store.settings,
                     reload_interval=reload_interval, limits=limits)


def build_app(
    parts: Parts,
    holder: RegistryHolder,
    settings: Settings | None = None,
    *,
    reload_interval: float | None = 2.0,
    limits: Limits | None = None,
) -> Starlette:
    """The feature server over explicit collaborators: ``parts`` (whose registry is replaced by
    ``holder``'s) and the ``settings`` that name the project and the online store in messages."""
    parts = serving_parts(parts, holder)
    metrics = Metrics()
    limits = limits or Limits()
    probe = StoreProbe(parts.online)
    lookup_pool = Pool(limits.lookup_threads, "feature-layer-lookup")

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await asyncio.to_thread(probe.warm_up)
        task = asyncio.create_task(holder.watch(reload_interval)) if reload_interval else None
        try:
            yield
        finally:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            lookup_pool.shutdown()  # a lookup stuck in IO must not hold up shutdown
            probe.close()

    online_route = Route("/v1/online-features", routes.online_features, methods=["POST"])
    app = Starlette(
        routes=[
            online_route,
            Route("/v1/features", routes.list_features, methods=["GET"]),
            Route("/v1/features/{name}", routes.get_feature, methods=["GET"]),
            Route("/v1/features/{name}/statistics", routes.get_statistics, methods=["GET"]),
            Route("/v1/lineage/{name}", routes.get_lineage, methods=["GET"]),
            Route("/v1/entities/{name}", routes.get_entity, methods=["GET"]),
            Route("/v1/views/{name}", routes.get_view, methods=["GET"]),
            Route("/v1/catalog", routes.get_catalog, methods=["GET"]),
            # search: every object ranked together
            Route("/v1/search", search_api.search, methods=["GET"]),
            Route("/healthz", routes.healthz, methods=["GET"]),
            Route("/metrics", routes.metrics, methods=["GET"]),
            Route("/openapi.json", routes.openapi, methods=["GET"]),
            Route("/", _index, methods=["GET"]),
            Mount("/static", StaticFiles(directory=STATIC_DIR), name="static"),
        ],
        exception_handlers={FeatureLayerError: _domain_error, HTTPException: _http_error, Exception: _crash},
        lifespan=lifespan,
    )
    app.state.parts = parts
    app.state.settings = settings
    app.state.holder = holder
    app.state.clock = parts.clock
    app.state.openapi = None  # built on first request (routes.openapi)
    app.state.project_dir = settings.project_dir if settings is not None else None
    app.state.online_store_name = online_store_name(settings)
    app.state.store_probe = probe
    app.state.metrics = metrics
    app.state.limits = limits
    app.state.lookup_pool = lookup_pool
    app.state.lookup_inline = lookup_inline(settings, limits.lookup_offload)
    app.state.stats_locks = {}  # feature ref -> asyncio.Lock: one computation per feature at a time
    app.state.stats_computed = {}  # feature ref -> (monotonic time, statistics) of the last computation
    app.state.stats_scans = asyncio.Semaphore(max(1, limits.stats_concurrency))
    app.add_middleware(OnlineFastPath, state=app.state, route=online_route)  # inner: answers the hot path
    # outer: times every request, fast path included, and adds the security headers to every response
    app.add_middleware(MetricsMiddleware, metrics=metrics, headers=SECURITY_HEADERS)
    return app


def app_from_env() -> Starlette:
    """uvicorn factory (``--factory``) for multi-worker serving: settings from the environment.

    ``FEATURE_LAYER_PROJECT_DIR``, ``FEATURE_LAYER_TARGET``, ``FEATURE_LAYER_RELOAD_INTERVAL`` and
    ``FEATURE_LAYER_LOOKUP_DEADLINE`` (seconds).
    """
    from feature_layer.client import FeatureStore

    store = FeatureStore(os.environ.get("FEATURE_LAYER_PROJECT_DIR", "."),
                         target=os.environ.get("FEATURE_LAYER_TARGET") or None)
    interval = float(os.environ.get("FEATURE_LAYER_RELOAD_INTERVAL", "2") or 0)
    deadline = os.environ.get("FEATURE_LAYER_LOOKUP_DEADLINE")
    limits = Limits(lookup_deadline=float(deadline)) if deadline else None
    return create_app(store, reload_interval=interval or None, limits=limits)
