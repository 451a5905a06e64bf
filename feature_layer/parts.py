"""The collaborators of training sets, materialization, lookups and the server, passed explicitly.

Each of those receives a :class:`Parts` instead of the ``FeatureStore`` façade: a registry
source, a warehouse engine factory, the online store, the state store and the clock. The
façade builds one ``Parts`` (its sources open each part on first use, so a training set never
connects to Redis); the server builds its own from it, with the registry its reloader swaps
in; a test or a benchmark builds one over real objects it opened itself (:meth:`Parts.of`).

The online store tells time by its own ``clock`` (TTL at read, expiry at write), which the
façade sets from the same :class:`~feature_layer.clock.Clock` it puts here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from feature_layer.clock import Clock, clock_from_env
from feature_layer.errors import ConfigError

if TYPE_CHECKING:
    from feature_layer.offline.engine import Engine
    from feature_layer.online.store import OnlineStore
    from feature_layer.registry.registry import Registry
    from feature_layer.state import StateStore

T = TypeVar("T")


@dataclass(frozen=True)
class Parts:
    """What the parts of a feature store work with; each source returns the part, opening it once."""

    registry: Callable[[], Registry]
    """The current registry (the façade re-reads it when dbt rewrites the artifacts)."""
    engine: Callable[[], Engine]
    """The shared warehouse connection."""
    online: Callable[[], OnlineStore]
    """The online store."""
    state: Callable[[], StateStore]
    """The durable state: watermarks, leases, statistics."""
    clock: Clock
    """What time it is: materialization's default end, freshness."""
    new_engine: Callable[[], Engine] | None = None
    """A new warehouse connection, owned by the caller (statistics in a thread, the server's
    short-lived reads); None where there are no settings to open one from."""
    push_log: Path | None = None
    """The folder of the views' offline push logs (``<project>/data/push``): pushes append to it
    and training sets read it beside the warehouse (``feature_layer.offline.pushed``); None: neither."""

    @classmethod
    def of(
        cls,
        *,
        registry: Registry,
        engine: Engine | None = None,
        online: OnlineStore | None = None,
        state: StateStore | None = None,
        clock: Clock | None = None,
        new_engine: Callable[[], Engine] | None = None,
        push_log: Path | None = None,
    ) -> Parts:
        """Parts over objects already open; a part not given fails clearly when asked for.

        ``clock`` defaults to ``FEATURE_LAYER_NOW`` or the system clock, as in ``FeatureStore``.
        """
        return cls(
            registry=_given(registry, "registry"),
            engine=_given(engine, "engine"),
            online=_given(online, "online"),
            state=_given(state, "state"),
            clock=clock_from_env() if clock is None else clock,
            new_engine=new_engine,
            push_log=push_log,
        )


_WHAT = {"registry": "a registry", "engine": "a warehouse engine", "online": "an online store",
         "state": "a state store"}


def _given(part: T | None, name: str) -> Callable[[], T]:
    def source() -> T:
        if part is None:
            raise ConfigError(f"These Parts were built without {_WHAT[name]}.", fix=f"pass {name}=… to Parts.of.")
        return part

    return source


__all__ = ["Parts"]
