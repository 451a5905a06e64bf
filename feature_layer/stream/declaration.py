"""The ``stream:`` key of a feature view's ``feature_layer`` block: which upstream relation's new
rows arrive as events, which column identifies an event, and how much history a micro-batch needs.

Pure: a mapping in, a :class:`StreamSpec` and issues out. Whether the SQL from that source to
the view can be computed per entity is checked on the compiled SQL (``feature_layer.stream.plan``);
where the events come from (a Redis Stream) is configuration (``feature_layer.yml`` ``streams:``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from feature_layer.durations import parse_duration

STREAM_KEYS = {"source", "event_id", "lookback"}


@dataclass(frozen=True)
class StreamSpec:
    """A view's stream declaration, as written (validated for form, not yet against the SQL)."""

    source: str
    """``<source_name>.<table>`` of a dbt source, or the name of a seed or model."""
    event_id: str
    """The source column identifying an event (de-duplication of redelivered events)."""
    lookback: timedelta | None = None
    """History a micro-batch reads before its events; None: derived from the model's windows."""


@dataclass(frozen=True)
class StreamProblem:
    """One problem with a ``stream:`` block (declarations turns it into a ValidationIssue)."""

    code: str
    message: str
    fix: str


_EXAMPLE = "`stream: {source: raw.transactions, event_id: transaction_id}`"


def parse_stream_block(raw: Any) -> tuple[StreamSpec | None, list[StreamProblem]]:
    """Read ``meta.feature_layer.stream``; ``(None, [])`` when the view does not stream.

    >>> parse_stream_block({"source": "raw.transactions", "event_id": "transaction_id", "lookback": "2d"})[0]
    StreamSpec(source='raw.transactions', event_id='transaction_id', lookback=datetime.timedelta(days=2))
    >>> parse_stream_block({"source": "raw.transactions"})[1][0].code
    'stream-event-id'
    """
    if raw is None:
        return None, []
    if not isinstance(raw, Mapping):
        return None, [StreamProblem("stream-format", f"stream must be a mapping, got {type(raw).__name__} {raw!r}.",
                                    f"write {_EXAMPLE} in meta.feature_layer.")]
    problems: list[StreamProblem] = []
    unknown = sorted(str(k) for k in set(raw) - STREAM_KEYS)
    if unknown:
        problems.append(StreamProblem("unknown-key", f"stream has unknown key(s) {', '.join(unknown)}.",
                                      f"use only {', '.join(sorted(STREAM_KEYS))}; the connection (Redis Stream name "
                                      "and URL) goes under `streams:` in feature_layer.yml."))
    source, event_id = raw.get("source"), raw.get("event_id")
    if not isinstance(source, str) or not source.strip():
        problems.append(StreamProblem("stream-source", f"stream.source must name the upstream dbt source "
                                      f"(`<source>.<table>`), seed or model whose rows arrive as events, got {source!r}.",
                                      f"write {_EXAMPLE}."))
    if not isinstance(event_id, str) or not event_id.strip():
        problems.append(StreamProblem("stream-event-id", f"stream.event_id must name the source column that "
                                      f"identifies an event (for de-duplication), got {event_id!r}.",
                                      f"write {_EXAMPLE}."))
    lookback = None
    if raw.get("lookback") not in (None, ""):
        value = raw["lookback"]
        try:
            if isinstance(value, bool) or not isinstance(value, str):
                raise ValueError("a bare number has no unit")
            lookback = parse_duration(value)
        except ValueError as exc:
            problems.append(StreamProblem("stream-lookback", f"stream.lookback {value!r} is not a duration ({exc}).",
                                          "write a duration such as `30d` or `12h`, or leave lookback out: it is "
                                          "then derived from the model's windows."))
    if problems:
        return None, problems
    return StreamSpec(source=str(source).strip(), event_id=str(event_id).strip(), lookback=lookback), []


__all__ = ["STREAM_KEYS", "StreamProblem", "StreamSpec", "parse_stream_block"]
