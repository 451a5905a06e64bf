"""The one answer to "what time is it": materialization's default end, TTL at read, freshness.

Every part that needs "now" asks a :class:`Clock` handed to it, never ``datetime.now()``, so a
test (or a replay, or a benchmark) pins time once and the whole store agrees on it. The
environment variable ``FEATURE_LAYER_NOW`` (ISO-8601) pins it for subprocesses, the CLI and
the server.

Bookkeeping that measures real elapsed time (leases, uptime, "computed at" stamps, statistics
age) stays on the real clock: a pinned "now" must not make a lease last forever.

>>> from datetime import datetime, UTC
>>> FixedClock(datetime(2024, 5, 1, 12, tzinfo=UTC)).now().isoformat()
'2024-05-01T12:00:00+00:00'
>>> clock_from_env({"FEATURE_LAYER_NOW": "2024-05-01T14:00:00+02:00"}).now().isoformat()
'2024-05-01T12:00:00+00:00'
>>> epoch_us(FixedClock(datetime(1970, 1, 1, 0, 0, 1, tzinfo=UTC)))
1000000
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol, runtime_checkable

from feature_layer.errors import ConfigError

NOW_VARIABLE = "FEATURE_LAYER_NOW"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@runtime_checkable
class Clock(Protocol):
    """Tells the current time as a UTC-aware datetime."""

    def now(self) -> datetime: ...


@dataclass(frozen=True)
class SystemClock:
    """The machine's wall clock, in UTC."""

    def now(self) -> datetime:
        return datetime.now(UTC)


@dataclass(frozen=True)
class FixedClock:
    """Always ``t`` (a naive ``t`` is read as UTC, as everywhere in feature_layer)."""

    t: datetime

    def __post_init__(self) -> None:
        if not isinstance(self.t, datetime):
            raise TypeError(f"FixedClock needs a datetime, got {type(self.t).__name__}")
        object.__setattr__(self, "t", as_utc(self.t))

    def now(self) -> datetime:
        return self.t


def as_utc(value: datetime) -> datetime:
    """``value`` in UTC; a naive value is taken to be UTC already."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def parse_now(text: str, *, source: str = NOW_VARIABLE) -> FixedClock:
    """A clock pinned to the ISO-8601 ``text`` (naive means UTC); ``source`` names it in errors."""
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ConfigError(
            f"{source}={text!r} is not an ISO-8601 date or time.",
            fix=f"set {source} to a time such as 2024-05-01T12:00:00+00:00, or unset it to use the system clock.",
        ) from None
    return FixedClock(value)


def clock_from_env(environ: Mapping[str, str] | None = None) -> Clock:
    """``FixedClock`` at ``FEATURE_LAYER_NOW`` when it is set (and not empty), else ``SystemClock``."""
    text = (os.environ if environ is None else environ).get(NOW_VARIABLE, "")
    return parse_now(text) if text.strip() else SystemClock()


def epoch_us(clock: Clock) -> int:
    """``clock.now()`` in microseconds since the Unix epoch (the online store's time unit)."""
    if isinstance(clock, SystemClock):
        return time.time_ns() // 1000
    delta = as_utc(clock.now()) - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def epoch_us_source(clock: Clock) -> Callable[[], int]:
    """A zero-argument function returning ``epoch_us(clock)`` (what an online store calls per read)."""
    if isinstance(clock, SystemClock):
        return _wall_clock_us
    if isinstance(clock, FixedClock):
        fixed = epoch_us(clock)
        return lambda: fixed
    return lambda: epoch_us(clock)


def _wall_clock_us() -> int:
    return time.time_ns() // 1000
