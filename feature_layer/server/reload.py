"""Hot reload of the registry when dbt rewrites ``target/manifest.json`` (or ``catalog.json``).

A background task polls the artifacts' modification stamps. On a change it loads the new
registry in a worker thread, warms its search index, then swaps one reference: requests in
flight finish on the registry they started with, new ones see the new registry, and none is
dropped or blocked. A manifest that fails to load (half-written, invalid) is reported in
``/healthz`` and ``/metrics`` and the last good registry keeps serving; the next change is
tried again.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from feature_layer.errors import FeatureLayerError
from feature_layer.parts import Parts
from feature_layer.registry.search import index_for

log = logging.getLogger("feature_layer.server")

Stamp = tuple[tuple[int, int] | None, ...]


def file_stamp(paths: Sequence[Path]) -> Stamp:
    out: list[tuple[int, int] | None] = []
    for path in paths:
        try:
            st = os.stat(path)
        except OSError:
            out.append(None)
        else:
            out.append((st.st_mtime_ns, st.st_size))
    return tuple(out)


def _ref_set(registry: Any) -> frozenset[str]:
    return frozenset(f.ref for v in registry.views.values() for f in v.features)


class RegistryHolder:
    """The registry the server answers from, swapped atomically on reload."""

    def __init__(
        self,
        loader: Callable[[], Any],
        paths: Sequence[Path],
        *,
        initial: Any | None = None,
        on_swap: Callable[[Any], None] | None = None,
    ) -> None:
        self._loader = loader
        self.paths = list(paths)
        self._on_swap = on_swap
        self._lock = threading.Lock()
        self.stamp = file_stamp(self.paths)
        self.registry = initial if initial is not None else loader()
        self.refs = _ref_set(self.registry)
        index_for(self.registry)
        self.loaded_at = time.time()
        self.reloads = 0
        self.failures = 0
        self.last_error: str | None = None

    @property
    def loaded_at_iso(self) -> str:
        from datetime import UTC, datetime

        return datetime.fromtimestamp(self.loaded_at, UTC).isoformat(timespec="seconds")

    def check(self) -> bool:
        """Reload if the artifacts changed; True when a new registry was swapped in."""
        stamp = file_stamp(self.paths)
        if stamp == self.stamp:
            return False
        with self._lock:
            if stamp == self.stamp:
                return False
            try:
                registry = self._loader()
                refs = _ref_set(registry)
                index_for(registry)
            except (FeatureLayerError, OSError, ValueError) as exc:
                self.failures += 1
                self.last_error = str(exc)
                self.stamp = stamp  # wait for the next write instead of re-reading a broken file
                log.warning("registry reload failed; still serving the previous registry: %s", exc)
                return False
            self.registry, self.refs, self.stamp = registry, refs, stamp
            self.loaded_at = time.time()
            self.reloads += 1
            self.last_error = None
            if self._on_swap is not None:
                self._on_swap(registry)
            log.info("registry reloaded: %d features", len(refs))
            return True

    async def watch(self, interval: float) -> None:
        """Poll forever (until cancelled) every ``interval`` seconds."""
        while True:
            await asyncio.sleep(interval)
            try:
                await asyncio.to_thread(self.check)
            except Exception:  # never let the watcher die; the next tick retries
                log.exception("registry reload crashed")


def holder_for_store(store: Any) -> RegistryHolder:
    """A holder for a :class:`~feature_layer.client.FeatureStore` (or an object shaped like one)."""
    settings = getattr(store, "settings", None)
    if settings is None or not hasattr(settings, "manifest_path"):
        paths = [Path(p) for p in getattr(store, "artifact_paths", ())]
        return RegistryHolder(lambda: store.registry, paths, initial=store.registry)

    from feature_layer.registry.registry import Registry

    # Lenient: a view with an invalid declaration is left out (Registry.broken_views, reported
    # by /healthz) instead of taking every other view down with it.
    return RegistryHolder(lambda: Registry.load(settings, strict=False),
                          [settings.manifest_path, settings.catalog_path])


def serving_parts(parts: Parts, holder: RegistryHolder) -> Parts:
    """``parts`` as request handlers use them: the registry is the one ``holder`` swapped in.

    ``FeatureStore.registry`` reloads lazily (and synchronously) when the artifacts change; on
    the request path that would stall the event loop or, with a half-written manifest, fail
    the request. Handlers therefore read the registry the holder loaded in the background;
    every other part (online store, state, warehouse, clock) is the store's own.
    """
    return replace(parts, registry=lambda: holder.registry)
