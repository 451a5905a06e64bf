"""Events from a stream, validated and typed against the source's columns, in Arrow.

An event is one Redis Stream entry whose fields are the source's columns (``transaction_id``,
``user_id``, ``amount``, ``occurred_at`` …) with text values: integers, decimals, ``true`` /
``false``, ISO 8601 timestamps (an offset is converted to UTC; none means UTC). A column left
out is NULL, except the required ones (the event id, the join keys, the event time). An event
that does not fit — an unknown field, a value of the wrong type, a required field missing, an
event time too far in the future — is *rejected* with the reason, never raised: the consumer
dead-letters it and carries on.

Typing is vectorised (one Arrow cast per column); only when a column's cast fails are its
values typed one by one, to find the events at fault.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

_TRUE = {"true", "1", "t", "yes"}
_FALSE = {"false", "0", "f", "no"}


@dataclass(frozen=True)
class Rejected:
    """An event the consumer cannot use: its stream id, its fields and why."""

    entry_id: str
    fields: dict[str, str]
    reason: str


@dataclass
class TypedBatch:
    """The usable events of one read, typed as the source, and the rejected ones."""

    table: pa.Table
    entry_ids: list[str]
    """Stream id of each row of ``table``."""
    rejected: list[Rejected]


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _one(value: str, dtype: pa.DataType) -> Any:
    """Type one text value as ``dtype``; ValueError with the reason when it does not fit."""
    if pa.types.is_integer(dtype):
        try:
            number = int(value.strip())
        except ValueError:
            raise ValueError(f"{value!r} is not an integer") from None
        info = np.iinfo(dtype.to_pandas_dtype())
        if not info.min <= number <= info.max:
            raise ValueError(f"{value!r} is out of range for {dtype}")
        return number
    if pa.types.is_floating(dtype) or pa.types.is_decimal(dtype):
        try:
            number = float(value)
        except ValueError:
            raise ValueError(f"{value!r} is not a number") from None
        if number != number or number in (float("inf"), float("-inf")):
            raise ValueError(f"{value!r} is not a finite number")
        return number
    if pa.types.is_boolean(dtype):
        lowered = value.strip().lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        raise ValueError(f"{value!r} is not true or false")
    if pa.types.is_timestamp(dtype) or pa.types.is_date(dtype):
        try:
            parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(f"{value!r} is not an ISO 8601 timestamp") from None
        if parsed.tzinfo is not None:
            parsed = parsed.astimezone(UTC).replace(tzinfo=None)
        return parsed.date() if pa.types.is_date(dtype) else parsed
    if pa.types.is_string(dtype) or pa.types.is_large_string(dtype):
        return value
    raise ValueError(f"the source column type {dtype} cannot be sent as text")


def _typed(text: pa.Array, dtype: pa.DataType) -> tuple[pa.Array, dict[int, str]]:
    """``text`` typed as ``dtype`` (vectorised), and the reason for each row that does not fit."""
    if pa.types.is_string(dtype) or pa.types.is_large_string(dtype):
        return text.cast(dtype), {}
    try:
        if pa.types.is_boolean(dtype):
            lowered = pc.utf8_lower(pc.utf8_trim_whitespace(text))
            true = pc.is_in(lowered, pa.array(sorted(_TRUE)))
            false = pc.is_in(lowered, pa.array(sorted(_FALSE)))
            if pc.any(pc.and_(pc.invert(pc.or_(true, false)), pc.is_valid(text))).as_py():
                raise pa.ArrowInvalid("not a boolean")
            return pc.if_else(pc.is_valid(text), true, pa.scalar(None, pa.bool_())), {}
        if pa.types.is_timestamp(dtype) and dtype.tz is not None:
            raise pa.ArrowInvalid("typed one by one")  # offsets → UTC by _one
        cast = pc.cast(text, dtype)
        if pa.types.is_floating(dtype):
            finite = pc.is_finite(cast)
            if not pc.all(pc.or_kleene(finite, pc.is_null(cast))).as_py():
                raise pa.ArrowInvalid("not finite")
        return cast, {}
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
        pass
    out: list[Any] = []
    bad: dict[int, str] = {}
    for i, value in enumerate(text.to_pylist()):
        if value is None:
            out.append(None)
            continue
        try:
            out.append(_one(value, dtype))
        except ValueError as exc:
            bad[i] = str(exc)
            out.append(None)
    return pa.array(out, dtype), bad


def _as_bytes(raw: dict[Any, Any]) -> dict[bytes, bytes]:
    """One entry's fields with bytes names and values (redis-py gives bytes; tests may give text)."""
    return {(k if isinstance(k, bytes) else str(k).encode()): (v if isinstance(v, bytes) else str(v).encode())
            for k, v in raw.items()}


def _text_column(values: list[Any]) -> pa.Array:
    """Raw field values as UTF-8 text (invalid bytes replaced, as one by one decoding would); values
    that are not bytes (a client that decodes, a test's numbers) as their text."""
    try:
        raw = pa.array(values, pa.binary())
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        values = [v if v is None or isinstance(v, bytes) else str(v).encode() for v in values]
        raw = pa.array(values, pa.binary())
    try:
        return raw.cast(pa.string())
    except pa.ArrowInvalid:
        return pa.array([None if v is None else v.decode("utf-8", "replace") for v in values], pa.string())


def type_events(
    entries: Sequence[tuple[Any, dict[Any, Any]]],
    schema: pa.Schema,
    *,
    required: Sequence[str],
    event_time: str,
    latest_us: int | None = None,
) -> TypedBatch:
    """Type stream ``entries`` ((id, fields) pairs as redis-py returns them) as ``schema``.

    ``required`` columns must be present and non-empty; ``latest_us``: events whose ``event_time``
    is later (microseconds since the epoch, UTC) are rejected as being in the future. Vectorised:
    the per-entry Python work is one set comparison and one dict lookup per column.
    """
    names = schema.names
    known = {n.encode(): n for n in names}
    ids: list[Any] = []
    rows: list[dict[bytes, bytes]] = []
    rejected: list[Rejected] = []
    for entry_id, raw in entries:
        if not raw.keys() <= known.keys():  # text names (tests), or an unknown field
            raw = _as_bytes(raw)
        if raw.keys() <= known.keys():
            ids.append(entry_id)
            rows.append(raw)
            continue
        fields = {_text(k): _text(v) for k, v in raw.items()}
        unknown = sorted(set(fields) - set(names))
        rejected.append(Rejected(_text(entry_id), fields, f"unknown field(s) {', '.join(unknown)}; the source's "
                                 f"columns are {', '.join(names)}"))
    texts = {field.name: _text_column([r.get(key) for r in rows]) for key, field in zip(known, schema, strict=True)}
    missing_any = np.zeros(len(rows), dtype=bool)
    for column in required:
        text = texts[column]
        empty = pc.or_kleene(pc.is_null(text), pc.equal(pc.utf8_trim_whitespace(text), ""))
        missing_any |= empty.to_numpy(zero_copy_only=False)
    if missing_any.any():
        for i in np.flatnonzero(missing_any).tolist():
            fields = {_text(k): _text(v) for k, v in rows[i].items()}
            missing = [c for c in required if not fields.get(c, "").strip()]
            rejected.append(Rejected(_text(ids[i]), fields, f"required field(s) {', '.join(missing)} missing or "
                                     "empty (the event id, the join keys and the event time are required)"))
        keep = ~missing_any
        ids = [e for e, k in zip(ids, keep.tolist(), strict=True) if k]
        rows = [r for r, k in zip(rows, keep.tolist(), strict=True) if k]
        mask = pa.array(keep)
        texts = {n: t.filter(mask) for n, t in texts.items()}
    columns: list[pa.Array] = []
    reasons: dict[int, list[str]] = {}
    for field in schema:
        text = texts[field.name]
        if not (pa.types.is_string(field.type) or pa.types.is_large_string(field.type)) and len(text):
            text = pc.if_else(pc.equal(text, ""), pa.scalar(None, pa.string()), text)
        array, bad = _typed(text, field.type)
        for i, why in bad.items():
            reasons.setdefault(i, []).append(f"{field.name}: {why}")
        columns.append(array)
    table = pa.Table.from_arrays(columns, schema=schema) if rows else schema.empty_table()
    if latest_us is not None and rows:
        times = table.column(event_time).cast(pa.timestamp("us")).cast(pa.int64()).to_numpy(zero_copy_only=False)
        for i in np.flatnonzero(times > latest_us).tolist():
            when = table.column(event_time)[i].as_py()
            reasons.setdefault(i, []).append(f"{event_time} {when} is in the future (later than the clock allows)")
    if reasons:
        keep = np.ones(len(rows), dtype=bool)
        for i, why in sorted(reasons.items()):
            keep[i] = False
            rejected.append(Rejected(_text(ids[i]), {_text(k): _text(v) for k, v in rows[i].items()}, "; ".join(why)))
        table = table.filter(pa.array(keep))
        ids = [e for e, k in zip(ids, keep.tolist(), strict=True) if k]
    return TypedBatch(table=table, entry_ids=[_text(e) for e in ids], rejected=rejected)


def event_text(value: Any) -> str:
    """How a producer writes one value into a stream entry (the inverse of the typing above)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            value = value.astimezone(UTC).replace(tzinfo=None)
        return value.isoformat(sep=" ", timespec="microseconds")
    return str(value)


__all__ = ["Rejected", "TypedBatch", "event_text", "type_events"]
