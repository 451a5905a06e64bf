"""Which online store a project's settings open: one table from ``online_store.type`` to its opener.

It sits apart from ``feature_layer.online.store`` (the interface the backends implement) so
that the interface never imports its implementations. Each opener imports its backend on
first use: a project on the embedded store never imports redis-py.
"""

from __future__ import annotations

from collections.abc import Callable

from feature_layer.clock import Clock, epoch_us_source
from feature_layer.config import OnlineStoreSettings
from feature_layer.errors import ConfigError
from feature_layer.online.store import OnlineStore


def _open_redis(settings: OnlineStoreSettings, namespace: str) -> OnlineStore:
    from feature_layer.online.redis_store import RedisOnlineStore

    return RedisOnlineStore.from_settings(settings, namespace)


def _open_sqlite(settings: OnlineStoreSettings, namespace: str) -> OnlineStore:
    from feature_layer.online.sqlite_store import SqliteOnlineStore

    if settings.path is None:
        raise ConfigError("The sqlite online store has no path.", fix="set online_store.path in feature_layer.yml.")
    return SqliteOnlineStore(settings.path, namespace)


OPENERS: dict[str, Callable[[OnlineStoreSettings, str], OnlineStore]] = {
    "redis": _open_redis,
    "sqlite": _open_sqlite,
}


def connect_online_store(settings: OnlineStoreSettings, namespace: str, clock: Clock | None = None) -> OnlineStore:
    """Open the online store ``settings`` describe, for the project ``namespace``, telling time by
    ``clock`` (default: ``FEATURE_LAYER_NOW`` or the system clock)."""
    opener = OPENERS.get(settings.type)
    if opener is None:
        kinds = " or ".join(f"`{k}`" for k in OPENERS)
        raise ConfigError(f"Online store type {settings.type!r} is not supported.", fix=f"use {kinds}.")
    store = opener(settings, namespace)
    if clock is not None:
        store.clock = epoch_us_source(clock)
    return store


__all__ = ["OPENERS", "connect_online_store"]
