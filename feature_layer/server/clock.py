"""What "now" is for freshness in the server and ``online-status``.

The store's clock when it has one (``FeatureStore.clock``: ``FixedClock``, ``FEATURE_LAYER_NOW``),
else the online store's own (``OnlineStore.clock``), the one its TTL check at read uses — so
freshness and lookups always agree on what has expired.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any


class OnlineStoreClock:
    """``now()`` from ``store.online_store().clock()`` (microseconds since the epoch)."""

    def __init__(self, store: Any) -> None:
        self._store = store

    def now(self) -> datetime:
        return datetime.fromtimestamp(self._store.online_store().clock() / 1_000_000, UTC)


def clock_for(store: Any) -> Any:
    """The store's clock (anything with ``now() -> datetime``), else the online store's."""
    clock = getattr(store, "clock", None)
    return clock if callable(getattr(clock, "now", None)) else OnlineStoreClock(store)
