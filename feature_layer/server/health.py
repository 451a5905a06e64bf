"""``/healthz``: what the server can really answer right now.

Three things can go wrong while the process itself is fine, and each is reported by name:

- the online store does not answer a bounded ping (``ONLINE_STORE_PING_SECONDS``): lookups
  fail, so the status is ``unavailable`` and the HTTP status 503 (a load balancer routes away);
- feature views are left out of the registry because their declaration is invalid
  (``Registry.broken_views``) or the last reload failed: ``degraded``, the rest is served;
- a view's online layout is older than its declaration (``online.layouts.layout_state``):
  ``degraded``, its lookups answer from the old layout until it is re-materialized.

The ping runs on its own thread, one at a time: a hung store cannot queue pings behind
stuck lookups, and a burst of health checks shares the ping in flight.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from feature_layer.errors import FeatureLayerError
from feature_layer.parts import Parts
from feature_layer.server.pools import Pool
from feature_layer.server.public import public_text

if TYPE_CHECKING:
    from feature_layer.online.store import OnlineStore

ONLINE_STORE_PING_SECONDS = 0.5
# A ping answered this recently answers the next health checks too (no ping storm under probes).
PING_REUSE_SECONDS = 1.0


class StoreProbe:
    """A bounded, shared ping of the online store."""

    def __init__(self, online: Callable[[], OnlineStore], timeout: float = ONLINE_STORE_PING_SECONDS) -> None:
        self._online = online
        self.timeout = timeout
        self._pool = Pool(1, "feature-layer-ping")
        self._lock = threading.Lock()
        self._inflight: concurrent.futures.Future[float] | None = None
        self._done_at = 0.0
        self._started_at = 0.0

    def _ping(self) -> float:
        online = self._online()  # opening it (a first SQLite open) is not the ping
        start = time.perf_counter()
        try:
            online.ping()
            return (time.perf_counter() - start) * 1000
        finally:
            self._done_at = time.monotonic()

    def warm_up(self) -> None:
        """Open the online store (no IO for Redis, the file for SQLite); errors wait for /healthz."""
        try:
            self._online()
        except Exception:  # noqa: BLE001 - reported by the first ping instead
            pass

    def _future(self) -> concurrent.futures.Future[float]:
        with self._lock:
            inflight = self._inflight
            if inflight is None or (inflight.done() and time.monotonic() - self._done_at > PING_REUSE_SECONDS):
                self._inflight = inflight = self._pool.get().submit(self._ping)
                self._started_at = time.monotonic()
            return inflight

    async def check(self) -> dict[str, Any]:
        """{"status": "ok", "latency_ms"} or {"status": "unreachable", "error"}; never raises."""
        inflight = self._future()
        if not inflight.done():
            waited = time.monotonic() - self._started_at
            if waited >= self.timeout:  # a ping stuck since earlier checks: no need to wait again
                return {"status": "unreachable", "error": f"no answer to a ping for {waited:.1f} s"}
            try:
                await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(inflight)), self.timeout - waited)
            except TimeoutError:
                return {"status": "unreachable", "error": f"no answer to a ping within {self.timeout:g} s"}
            except Exception:  # noqa: BLE001 - read below, from the future itself
                pass
        return _outcome(inflight)

    def close(self) -> None:
        self._pool.shutdown()


def _broken(registry: Any) -> dict[str, list[Any]]:
    broken = getattr(registry, "broken_views", None)
    if broken is not None:
        return dict(broken)
    # Registries without ``broken_views``: the lenient load's issues, grouped by the model left out.
    out: dict[str, list[Any]] = {}
    nodes = getattr(registry, "nodes", {})
    for issue in getattr(registry, "issues", ()):
        node = nodes.get(issue.unique_id) if issue.unique_id else None
        name = getattr(node, "name", None)
        if name and name not in registry.views:
            out.setdefault(name, []).append(issue)
    return out


def _outcome(done: concurrent.futures.Future[float]) -> dict[str, Any]:
    if done.cancelled():  # the server is shutting down
        return {"status": "unreachable", "error": "the ping was cancelled"}
    exc = done.exception()
    if exc is None:
        return {"status": "ok", "latency_ms": round(done.result(), 3)}
    if isinstance(exc, FeatureLayerError):
        return {"status": "unreachable", "error": exc.message}
    return {"status": "unreachable", "error": type(exc).__name__}  # a health check reports, it never crashes


def broken_views(registry: Any) -> dict[str, list[str]]:
    """View name → its validation messages, for the views the lenient load left out."""
    return {name: [f"[{i.code}] {i.message} To fix this, {i.fix}" for i in issues]
            for name, issues in sorted(_broken(registry).items())}


def stale_layouts(parts: Parts, registry: Any) -> dict[str, dict[str, Any]]:
    """Online views whose materialized layout differs from the one their declaration needs.

    Empty when the online store cannot tell (no ``feature_layer.online.layouts`` yet)."""
    try:
        from feature_layer.online.layouts import layout_state
    except ImportError:
        return {}
    online = parts.online()
    out: dict[str, dict[str, Any]] = {}
    for view in sorted(registry.views.values(), key=lambda v: v.name):
        if not view.online:
            continue
        try:
            state = layout_state(online, view)
        except FeatureLayerError:
            continue
        if state.stale and state.active is not None:  # never materialized is freshness "never", not stale
            out[view.name] = {"active": state.active, "wanted": state.wanted,
                              "missing_features": list(state.missing_features)}
    return out


def layout_of(parts: Parts, view: Any) -> dict[str, Any] | None:
    """The view's layout state as JSON for the UI (None when unknown)."""
    try:
        from feature_layer.online.layouts import layout_state
    except ImportError:
        return None
    try:
        state = layout_state(parts.online(), view)
    except FeatureLayerError:
        return None
    return {"active": state.active, "wanted": state.wanted, "stale": state.stale,
            "missing_features": list(state.missing_features)}


def health_body(holder: Any, online: dict[str, Any], store_name: str, stale: dict[str, dict[str, Any]],
                project_dir: Any) -> tuple[dict[str, Any], int]:
    """The /healthz body and its HTTP status (pure: every probe result is passed in)."""
    broken = broken_views(holder.registry)
    problems: list[str] = []
    if online["status"] != "ok":
        problems.append(f"{store_name} is unreachable ({online.get('error')}): online lookups fail.")
    for name in broken:
        problems.append(f"Feature view {name!r} is not served: its declaration is invalid.")
    for name, state in stale.items():
        missing = ", ".join(state["missing_features"]) or "none"
        problems.append(f"Feature view {name!r} has a stale online layout (features not online yet: {missing}); "
                        "run `feature-layer materialize`.")
    if holder.last_error is not None:
        problems.append("The last registry reload failed; the previous registry is still served.")
    status = "unavailable" if online["status"] != "ok" else ("degraded" if problems else "ok")
    body = {
        "status": status,
        "problems": [public_text(p, project_dir) for p in problems],
        "online_store": {"name": store_name, **{k: public_text(v, project_dir) if isinstance(v, str) else v
                                                for k, v in online.items()}},
        "broken_views": {k: [public_text(m, project_dir) for m in v] for k, v in broken.items()},
        "stale_layouts": stale,
        "features": len(holder.refs),
        "views": len(holder.registry.views),
        "registry_loaded_at": holder.loaded_at_iso,
        "reloads": holder.reloads,
        "reload_error": public_text(holder.last_error, project_dir) if holder.last_error else None,
    }
    return body, 503 if status == "unavailable" else 200
