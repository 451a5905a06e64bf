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

A view may also declare a freshness SLA in dbt's own shape (``freshness: {warn_after: {count:
2, period: hour}, error_after: {count: 1, period: day}}``), measured on the same newest
materialized event time: ``sla`` is ``pass``, ``warn`` or ``error`` (None without an SLA), as
``dbt source freshness`` reports a source. A view never materialized is in error.

>>> sla = FreshnessSla(warn_after=timedelta(hours=2), error_after=timedelta(days=1))
>>> freshness(datetime(2026, 1, 10, 21, tzinfo=timezone.utc), None, now, sla).sla
'warn'
>>> freshness(None, None, now, sla).sla
'error'
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

Status = Literal["fresh", "expired", "never"]
STATUSES: tuple[Status, ...] = ("fresh", "expired", "never")
SlaStatus = Literal["pass", "warn", "error"]
SLA_STATUSES: tuple[SlaStatus, ...] = ("pass", "warn", "error")
PERIODS: dict[str, timedelta] = {"minute": timedelta(minutes=1), "hour": timedelta(hours=1), "day": timedelta(days=1)}
"""dbt's freshness periods (``period: hour``)."""


@dataclass(frozen=True)
class FreshnessSla:
    """A view's freshness SLA: warn when the newest materialized event is older than
    ``warn_after``, error when older than ``error_after`` (either may be None)."""

    warn_after: timedelta | None = None
    error_after: timedelta | None = None

    def to_dict(self) -> dict[str, float | None]:
        return {
            "warn_after_seconds": None if self.warn_after is None else self.warn_after.total_seconds(),
            "error_after_seconds": None if self.error_after is None else self.error_after.total_seconds(),
        }


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
    sla: SlaStatus | None = None
    """``pass``/``warn``/``error`` against the view's freshness SLA; None when it declares none."""

    @property
    def lag_seconds(self) -> float | None:
        return None if self.lag is None else self.lag.total_seconds()


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def freshness(
    newest_event_time: datetime | None, ttl: timedelta | None, now: datetime, sla: FreshnessSla | None = None
) -> Freshness:
    """Freshness of a view whose newest materialized event time is ``newest_event_time``.

    Naive datetimes are taken as UTC. A view without a TTL never expires. The newest value
    expires when ``now - newest_event_time > ttl`` (the lookup's own rule: a value is served
    while its event time is within the TTL of now). ``sla``: the view's freshness SLA, judged
    with dbt's rule (strictly older than ``error_after`` is an error, than ``warn_after`` a
    warning).
    """
    if newest_event_time is None:
        return Freshness(None, None, False, "never", None if sla is None else "error")
    newest = _utc(newest_event_time)
    lag = _utc(now) - newest
    expired = ttl is not None and lag > ttl
    return Freshness(newest, lag, expired, "expired" if expired else "fresh", sla_status(lag, sla))


def sla_status(lag: timedelta, sla: FreshnessSla | None) -> SlaStatus | None:
    """``error`` past ``error_after``, ``warn`` past ``warn_after``, else ``pass`` (None: no SLA)."""
    if sla is None:
        return None
    if sla.error_after is not None and lag > sla.error_after:
        return "error"
    if sla.warn_after is not None and lag > sla.warn_after:
        return "warn"
    return "pass"
