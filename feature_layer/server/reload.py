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

    return RegistryHolder(lambda: Registry.load(settings), [settings.manifest_path, settings.catalog_path],
                          initial=store.registry)


class ServingStore:
    """The store as request handlers see it: the holder's registry, everything else delegated.

    ``FeatureStore.registry`` reloads lazily (and synchronously) when the artifacts change; on
    the request path that would stall the event loop or, with a half-written manifest, fail
    the request. Handlers therefore call the store's own methods with this object as ``self``,
    so lookups keep ``get_online_features``' exact semantics while reading the registry the
    holder swapped in.
    """

    def __init__(self, store: Any, holder: RegistryHolder) -> None:
        self._store = store
        self._holder = holder
        parts = getattr(store, "parts", None)
        self.parts = None if parts is None else replace(parts, registry=lambda: holder.registry)

    @property
    def registry(self) -> Any:
        return self._holder.registry

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def get_online_features(self, *args: Any, **kwargs: Any) -> Any:
        return type(self._store).get_online_features(self, *args, **kwargs)
