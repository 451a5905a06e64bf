"""Freshness of a feature view's online values: one pure function for the CLI, the API, /metrics and the UI.

Freshness is about the *data*, not the run: the newest event time that was materialized
(``StateStore.newest_event_time``, MAX(event_time) of the rows written), never the
watermark (the ``end`` a run was given, usually the moment it ran). A view whose source
stopped updating 10 days ago, with a 2-day TTL, materialized a minute ago, is expired:
every value it holds is past its TTL, so lookups answer None.

>>> from datetime import datetime, timedelta, timezone
>>> now = datetime(2026, 1, 11, tzinfo=timezone.utc)
>>> freshness(datetime(2026, 1, 1, tzinfo=timezone.utc), timedelta(days=2), now).status
'expired'
>>> freshness(datetime(2026, 1, 10, tzinfo=timezone.utc), timedelta(days=2), now).lag
datetime.timedelta(days=1)
>>> freshness(None, timedelta(days=2), now).status
'never'
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

Status = Literal["fresh", "expired", "never"]
STATUSES: tuple[Status, ...] = ("fresh", "expired", "never")


@dataclass(frozen=True)
class Freshness:
    """How old a view's newest online value is.

    ``newest_event_time``: the newest materialized event time (UTC), None when nothing was
    materialized (or the state predates recording it). ``lag``: ``now`` minus that time (None
    without it; negative when the data is stamped after ``now``). ``expired``: the TTL has
    passed for the newest value, hence for every value of the view. ``status``: ``never``
    (nothing materialized), ``expired`` or ``fresh``.
    """

    newest_event_time: datetime | None
    lag: timedelta | None
    expired: bool
    status: Status

    @property
    def lag_seconds(self) -> float | None:
        return None if self.lag is None else self.lag.total_seconds()


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def freshness(newest_event_time: datetime | None, ttl: timedelta | None, now: datetime) -> Freshness:
    """Freshness of a view whose newest materialized event time is ``newest_event_time``.

    Naive datetimes are taken as UTC. A view without a TTL never expires. The newest value
    expires when ``now - newest_event_time > ttl`` (the lookup's own rule: a value is served
    while its event time is within the TTL of now).
    """
    if newest_event_time is None:
        return Freshness(None, None, False, "never")
    newest = _utc(newest_event_time)
    lag = _utc(now) - newest
    expired = ttl is not None and lag > ttl
    return Freshness(newest, lag, expired, "expired" if expired else "fresh")
