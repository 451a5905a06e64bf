"""Parse human durations such as ``30d`` or ``1h30m`` (TTLs, rolling windows)."""

from __future__ import annotations

import re
from datetime import timedelta

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_PART = re.compile(r"(\d+)\s*([smhdw])")
_WHOLE = re.compile(r"^\s*(?:\d+\s*[smhdw]\s*)+$")


def parse_duration(text: str | int | float) -> timedelta:
    """Return the timedelta for ``text``; plain numbers are seconds.

    Raises ValueError with the accepted forms when the text does not parse, so callers can
    wrap it with the file and field it came from.

    >>> parse_duration("1d12h")
    datetime.timedelta(days=1, seconds=43200)
    """
    if isinstance(text, bool):
        raise ValueError(f"{text!r} is not a duration; use forms like 30d, 12h, 90m, 1w2d")
    if isinstance(text, (int, float)):
        if text <= 0 or text != int(text):
            raise ValueError(f"{text!r} must be a whole, positive number of seconds")
        return _bounded(int(text), text)
    lowered = str(text).strip().lower()
    if not _WHOLE.match(lowered):
        raise ValueError(f"{text!r} is not a duration; use forms like 30d, 12h, 90m, 1w2d")
    seconds = sum(int(n) * _UNITS[unit] for n, unit in _PART.findall(lowered))
    if seconds <= 0:
        raise ValueError(f"{text!r} must be longer than zero")
    return _bounded(seconds, text)


_MAX_SECONDS = 100 * 365 * 86400


def _bounded(seconds: int, text: object) -> timedelta:
    """Refuse absurd durations (beyond a century) before they overflow a timedelta or an INTERVAL."""
    if seconds > _MAX_SECONDS:
        raise ValueError(f"{text!r} is longer than 100 years; leave the TTL out for no limit")
    return timedelta(seconds=seconds)


def format_duration(value: timedelta) -> str:
    """Render a timedelta in the shortest unit form (the inverse of ``parse_duration``)."""
    seconds = int(value.total_seconds())
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):  # days, not weeks: "30d" reads better
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts) or "0s"
