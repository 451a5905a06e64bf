"""Freshness SLAs of every online view, judged by :func:`feature_layer.freshness.freshness`.

A view's verdict (``status``) follows ``dbt source freshness``: with an SLA declared it is the
SLA's ``pass`` / ``warn`` / ``error``; without one, a view whose TTL expired every online value
(lookups answer null) is an ``error``, a view never materialized a ``warn``, any other ``pass``.
``feature-layer freshness`` exits 1 on any error (warnings are reported, exit 0), and
``feature-layer run`` exits 3 ("completed with stale views") on the same condition.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from feature_layer.durations import format_duration
from feature_layer.errors import FeatureLayerError
from feature_layer.freshness import Freshness, freshness
from feature_layer.parts import Parts
from feature_layer.registry.model import FeatureView

Verdict = Literal["pass", "warn", "error"]
_RANK: dict[str, int] = {"pass": 0, "warn": 1, "error": 2}


@dataclass(frozen=True)
class ViewFreshness:
    """One view's freshness and its verdict."""

    view: FeatureView
    freshness: Freshness
    status: Verdict
    reason: str

    def to_dict(self) -> dict[str, Any]:
        f, sla = self.freshness, self.view.freshness
        return {
            "view": self.view.name,
            "status": self.status,
            "reason": self.reason,
            "sla": f.sla,
            "warn_after_seconds": sla.warn_after.total_seconds() if sla and sla.warn_after else None,
            "error_after_seconds": sla.error_after.total_seconds() if sla and sla.error_after else None,
            "freshness": f.status,
            "newest_event_time": f.newest_event_time.isoformat() if f.newest_event_time else None,
            "lag_seconds": f.lag_seconds,
            "ttl_seconds": self.view.ttl.total_seconds() if self.view.ttl else None,
            "expired": f.expired,
        }


@dataclass(frozen=True)
class FreshnessReport:
    """Every checked view's freshness as of ``now``."""

    now: datetime
    views: tuple[ViewFreshness, ...]

    @property
    def status(self) -> Verdict:
        worst = max((_RANK[v.status] for v in self.views), default=0)
        return ("pass", "warn", "error")[worst]  # type: ignore[return-value]

    @property
    def stale(self) -> list[str]:
        """Views in error: past their SLA's error_after, or every value past its TTL."""
        return [v.view.name for v in self.views if v.status == "error"]

    @property
    def warned(self) -> list[str]:
        return [v.view.name for v in self.views if v.status == "warn"]

    @property
    def exit_code(self) -> int:
        """``dbt source freshness``'s codes: 1 when a view is in error, else 0 (warnings included)."""
        return 1 if self.stale else 0

    def to_dict(self) -> dict[str, Any]:
        return {"now": self.now.isoformat(), "status": self.status, "stale": self.stale, "warned": self.warned,
                "views": [v.to_dict() for v in self.views]}


def verdict(view: FeatureView, fresh: Freshness) -> tuple[Verdict, str]:
    """The view's status and a one-line reason (see the module docstring for the rule)."""
    lag = format_duration(fresh.lag) if fresh.lag is not None and fresh.lag.total_seconds() > 0 else "0s"
    sla = view.freshness
    if fresh.sla is not None and sla is not None:
        if fresh.newest_event_time is None:
            return "error", "never materialized (a freshness SLA is declared)"
        limits = ", ".join(f"{name} {format_duration(value)}" for name, value in
                           (("warn_after", sla.warn_after), ("error_after", sla.error_after)) if value is not None)
        return fresh.sla, f"newest event {lag} old ({limits})"
    if fresh.status == "never":
        return "warn", "never materialized"
    if fresh.expired:
        return "error", f"newest event {lag} old is past the TTL {format_duration(view.ttl)}: lookups answer null"  # type: ignore[arg-type]
    return "pass", f"newest event {lag} old (no freshness SLA declared)"


def view_freshness(parts: Parts, view: FeatureView, now: datetime) -> ViewFreshness:
    state = parts.state().view_state(view.name)
    fresh = freshness(state.newest_event_time if state else None, view.ttl, now, view.freshness)
    status, reason = verdict(view, fresh)
    return ViewFreshness(view, fresh, status, reason)


def check_freshness(parts: Parts, select: Sequence[str] | None = None, *, now: datetime | None = None) -> FreshnessReport:
    """Freshness of the online views (or those in ``select``) as of ``now`` (default: the clock's)."""
    registry = parts.registry()
    when = parts.clock.now() if now is None else now
    views = [registry.view(name) for name in select] if select else [v for v in registry.views.values() if v.online]
    return FreshnessReport(when, tuple(view_freshness(parts, v, when) for v in sorted(views, key=lambda v: v.name)))


def sla_gauges(parts: Parts, registry: Any, now: datetime) -> list[tuple[str, str, dict[str, str], float]]:
    """/metrics gauges: each online view's verdict (0 pass, 1 warn, 2 error) and its SLA thresholds."""
    out: list[tuple[str, str, dict[str, str], float]] = []
    for view in sorted(registry.views.values(), key=lambda v: v.name):
        if not view.online:
            continue
        try:
            checked = view_freshness(parts, view, now)
        except (FeatureLayerError, OSError):
            continue  # the state store is unreadable: /healthz says so; the other gauges stay
        out.append(("feature_layer_feature_view_freshness_status",
                    "Freshness verdict per feature view: 0 pass, 1 warn, 2 error (SLA, or TTL expired).",
                    {"view": view.name}, float(_RANK[checked.status])))
        sla = view.freshness
        if sla is not None and sla.warn_after is not None:
            out.append(("feature_layer_feature_view_freshness_warn_after_seconds",
                        "The freshness SLA's warn_after, per feature view.", {"view": view.name},
                        sla.warn_after.total_seconds()))
        if sla is not None and sla.error_after is not None:
            out.append(("feature_layer_feature_view_freshness_error_after_seconds",
                        "The freshness SLA's error_after, per feature view.", {"view": view.name},
                        sla.error_after.total_seconds()))
    return out
