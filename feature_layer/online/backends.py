"""Which online store a project's settings open: one table from ``online_store.type`` to its opener.

It sits apart from ``feature_layer.online.store`` (the interface the backends implement) so
that the interface never imports its implementations. Each opener imports its backend on
first use: a project on the embedded store never imports redis-py.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from feature_layer.clock import Clock, epoch_us_source
from feature_layer.config import OnlineStoreSettings
from feature_layer.errors import ConfigError
from feature_layer.online.store import OnlineStore


def _open_redis(settings: OnlineStoreSettings, namespace: str) -> OnlineStore:
    from feature_layer.online.redis_store import RedisOnlineStore

    return RedisOnlineStore.from_settings(settings, namespace)


def _open_redis_cluster(settings: OnlineStoreSettings, namespace: str) -> OnlineStore:
    from feature_layer.online.cluster_store import RedisClusterOnlineStore

    return RedisClusterOnlineStore.from_settings(settings, namespace)


def _open_sqlite(settings: OnlineStoreSettings, namespace: str) -> OnlineStore:
    from feature_layer.online.sqlite_store import SqliteOnlineStore

    if settings.path is None:
        raise ConfigError("The sqlite online store has no path.", fix="set online_store.path in feature_layer.yml.")
    return SqliteOnlineStore(settings.path, namespace)


@dataclass(frozen=True)
class Backend:
    """One kind of online store: how to open it, and what it can do."""

    open: Callable[[OnlineStoreSettings, str], OnlineStore]
    shared: bool
    """Several processes (servers, materialization runs) can use it at once over the network."""
    can_evict: bool
    """It may drop keys on its own (maxmemory): materialization checks its writes at commit."""
    nodes: str
    """``one`` server/file, or ``many`` (keys spread over hash slots and primaries)."""
    failover: bool
    """Reads and writes survive a primary's failure (a replica takes over; requests are resent)."""


BACKENDS: dict[str, Backend] = {
    "redis": Backend(_open_redis, shared=True, can_evict=True, nodes="one", failover=False),
    "redis-cluster": Backend(_open_redis_cluster, shared=True, can_evict=True, nodes="many", failover=True),
    "sqlite": Backend(_open_sqlite, shared=False, can_evict=False, nodes="one", failover=False),
}
OPENERS: dict[str, Callable[[OnlineStoreSettings, str], OnlineStore]] = {k: b.open for k, b in BACKENDS.items()}


def connect_online_store(settings: OnlineStoreSettings, namespace: str, clock: Clock | None = None) -> OnlineStore:
    """Open the online store ``settings`` describe, for the project ``namespace``, telling time by
    ``clock`` (default: ``FEATURE_LAYER_NOW`` or the system clock)."""
    backend = BACKENDS.get(settings.type)
    if backend is None:
        kinds = " or ".join(f"`{k}`" for k in BACKENDS)
        raise ConfigError(f"Online store type {settings.type!r} is not supported.", fix=f"use {kinds}.")
    store = backend.open(settings, namespace)
    if clock is not None:
        store.clock = epoch_us_source(clock)
    return store


__all__ = ["BACKENDS", "OPENERS", "Backend", "connect_online_store"]
