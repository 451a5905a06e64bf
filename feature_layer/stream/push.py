"""Push: feature values computed elsewhere, written online (never-older) and to the view's offline log.

The Feast push-source use case: a service already computed a view's values for some entities and
hands them over. Each row names the view's join keys, its event time, optionally its created-at,
and every feature (a missing feature would silently blank the stored value, so it is refused);
types must fit the features' types. Rows are validated all together first — one bad row refuses
the whole push, naming the row, the column and the fix — then appended to the view's offline log
(Parquet files ``<project>/data/push/<view>/push-*.parquet``, written under a temporary name, then
renamed), then written to the online store with the rule materialization uses (an older value never
replaces a newer one). Training sets read the offline log beside the view's warehouse table
(``feature_layer.offline.pushed``), so they see pushed values at their event times.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from feature_layer.errors import InputError
from feature_layer.online import layouts
from feature_layer.online.encoding import encode_batch, view_layout
from feature_layer.registry.model import FeatureView

MAX_PUSH_ROWS = 10_000
_KEY_TYPES = {"int64": (int,), "string": (str,)}


class PushError(InputError):
    """A pushed row does not fit the view (HTTP 422), naming the row and the column."""

    def __init__(self, message: str, *, fix: str, field: str = "rows") -> None:
        self.field = field
        super().__init__(message, fix=fix)


@dataclass(frozen=True)
class PushResult:
    view: str
    rows: int
    written: int
    kept_newer: int
    expired: int
    offline_log: str | None

    def to_dict(self) -> dict[str, Any]:
        return {"view": self.view, "rows": self.rows, "written": self.written, "kept_newer": self.kept_newer,
                "expired": self.expired, "offline_log": self.offline_log}


def _arrow_type(dtype: str) -> pa.DataType:
    return {"int64": pa.int64(), "float64": pa.float64(), "bool": pa.bool_(), "string": pa.string(),
            "timestamp": pa.timestamp("us"), "date": pa.date32(), "decimal": pa.float64()}.get(dtype, pa.string())


def _timestamp(value: Any, where: str) -> datetime:
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            raise PushError(f"{where} is {value!r}, not an ISO 8601 timestamp.",
                            fix="write it like 2026-01-31T12:00:00Z (no offset means UTC).") from None
    elif isinstance(value, date):
        parsed = datetime(value.year, value.month, value.day)
    else:
        raise PushError(f"{where} is {value!r} ({type(value).__name__}), not a timestamp.",
                        fix="write it like 2026-01-31T12:00:00Z.")
    return parsed.astimezone(UTC).replace(tzinfo=None) if parsed.tzinfo else parsed


def _value(value: Any, dtype: str, where: str) -> Any:
    if value is None:
        return None
    ok: bool
    if dtype == "int64":
        ok = isinstance(value, int) and not isinstance(value, bool) and -(2**63) <= value < 2**63
    elif dtype in {"float64", "decimal"}:
        ok = isinstance(value, (int, float, Decimal)) and not isinstance(value, bool)
        if ok:
            value = float(value)
            ok = value == value and value not in (float("inf"), float("-inf"))
    elif dtype == "bool":
        ok = isinstance(value, bool)
    elif dtype == "string":
        ok = isinstance(value, str)
    elif dtype in {"timestamp", "date"}:
        stamp = _timestamp(value, where)
        return stamp.date() if dtype == "date" else stamp
    else:
        ok = True
    if not ok:
        raise PushError(f"{where} is {value!r} ({type(value).__name__}), but the feature is {dtype}.",
                        fix=f"send a {dtype} value (or null).")
    return value


def validate_rows(view: FeatureView, rows: Any, *, max_rows: int = MAX_PUSH_ROWS) -> pa.Table:
    """The rows as an Arrow table typed as the view (keys, event time, created-at, features)."""
    if hasattr(rows, "to_pylist") and not isinstance(rows, list):
        rows = rows.to_pylist()
    elif hasattr(rows, "to_dict") and not isinstance(rows, (list, Mapping)):
        rows = rows.to_dict("records")
    if not isinstance(rows, Sequence) or isinstance(rows, (str, bytes)) or not rows:
        raise PushError("rows must be a non-empty list of objects, one per entity.",
                        fix=f'send [{{"{view.join_keys[0]}": 1, "{view.event_time}": "2026-01-31T12:00:00Z", '
                        f'"{view.features[0].name}": …}}].')
    if len(rows) > max_rows:
        raise PushError(f"{len(rows):,} rows is more than one push takes ({max_rows:,}).",
                        fix="split them over several pushes.")
    key_types = {k: view.column_type(k) for k in view.join_keys}
    allowed = [*view.join_keys, view.event_time, *([view.created_at] if view.created_at else []),
               *view.feature_names]
    columns: dict[str, list[Any]] = {name: [] for name in allowed}
    for i, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise PushError(f"rows[{i}] is {type(row).__name__}, not an object.", fix="send one object per entity.")
        unknown = sorted(str(k) for k in set(row) - set(allowed))
        if unknown:
            raise PushError(f"rows[{i}] has unknown column(s) {', '.join(unknown)} for feature view {view.name!r}.",
                            fix=f"send only {', '.join(allowed)}.")
        missing = [c for c in (*view.join_keys, view.event_time, *view.feature_names) if c not in row]
        if missing:
            raise PushError(f"rows[{i}] lacks {', '.join(missing)}.",
                            fix="send the join keys, the event time and every feature (null for no value): a "
                            "missing feature would blank the stored value.")
        for key in view.join_keys:
            value = row[key]
            want = _KEY_TYPES.get(key_types[key], (int, str))
            if value is None or isinstance(value, bool) or not isinstance(value, want):
                raise PushError(f"rows[{i}].{key} is {value!r}; the join key is {key_types[key]}.",
                                fix=f"send a non-null {key_types[key]} {key}.")
            columns[key].append(value)
        columns[view.event_time].append(_timestamp(row[view.event_time], f"rows[{i}].{view.event_time}"))
        if view.created_at:
            created = row.get(view.created_at)
            columns[view.created_at].append(None if created is None else
                                            _timestamp(created, f"rows[{i}].{view.created_at}"))
        for feature in view.features:
            columns[feature.name].append(_value(row[feature.name], feature.dtype, f"rows[{i}].{feature.name}"))
    arrays = {}
    for name, values in columns.items():
        if name in key_types:
            dtype = pa.int64() if key_types[name] == "int64" else pa.string()
        elif name in (view.event_time, view.created_at):
            dtype = pa.timestamp("us")
        else:
            dtype = _arrow_type(view.feature(name).dtype)
        arrays[name] = pa.array(values, dtype)
    return pa.table(arrays)


def push_rows(parts: Any, view_name: str, rows: Any, *, log_dir: Path | None, max_rows: int = MAX_PUSH_ROWS
              ) -> PushResult:
    """Validate ``rows``, write them online (never-older), append them to the offline log."""
    view = parts.registry().view(view_name)
    table = validate_rows(view, rows, max_rows=max_rows)
    online = parts.online()
    layout = view_layout(view, online.namespace)
    active = layouts.read_marker(online, view.name)
    if active is not None and active.fingerprint != layout.fingerprint:
        raise PushError(f"The online store holds {view.name!r} in another layout than its declaration needs.",
                        fix=f"run `feature-layer materialize -s {view.name}` first.", field="view")
    renamed = table.rename_columns([
        "__fl_event_time" if c == view.event_time else "__fl_created_at" if c == view.created_at else c
        for c in table.column_names
    ])
    # the offline log first: a push the online store then refuses is still on record (a retry
    # writes a second log row with the same values, which training sets de-duplicate like any tie)
    logged = _append_log(log_dir / view.name, table, parts.clock.now()) if log_dir is not None else None
    encoded = encode_batch(layout, renamed, event_column="__fl_event_time",
                           created_column="__fl_created_at" if view.created_at else None, now_us=online.clock())
    writer = online.writer(ttl_us=layout.ttl_us)
    try:
        writer.write(encoded)
        counts = writer.close()
    except BaseException:
        writer.abort()
        raise
    if active is None:
        online.set_marker(layouts.marker_name(view.name), layouts.marker_value(layout, None))
    return PushResult(view=view.name, rows=table.num_rows, written=counts.written, kept_newer=counts.kept_newer,
                      expired=table.num_rows - len(encoded), offline_log=str(logged) if logged else None)


def _append_log(folder: Path, table: pa.Table, now: datetime) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    name = f"push-{now.astimezone(UTC).strftime('%Y%m%dT%H%M%S%f')}-{uuid.uuid4().hex[:8]}.parquet"
    temporary = folder / f".{name}.tmp"
    with open(temporary, "wb") as handle:
        pq.write_table(table, handle, compression="zstd")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, folder / name)
    return folder / name


__all__ = ["MAX_PUSH_ROWS", "PushError", "PushResult", "push_rows", "validate_rows"]
