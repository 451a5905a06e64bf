"""Online key and value encoding, layout version 1 (pure: no IO; spec in docs/online_store.md).

Why a hand-rolled binary layout: lookups are dominated by decode cost once the network is
fast (Feast's protobuf decode dominated its latency, feast #3649). A fixed-width struct per
(view, entity) decodes for a whole batch with one ``numpy.frombuffer`` and encodes for a whole
Arrow batch with column assignments, so neither side runs a per-row Python loop on the hot path.

Key:   ``fl1:{namespace}:{view}:{layout}:{entity}``
       ``layout`` is 8 hex chars fingerprinting the feature list and types, so a changed view
       never decodes old bytes with a new schema; ``entity`` is the join-key value as text
       (composite keys joined with ``|``, with ``\\`` and ``|`` backslash-escaped).
Value: ``u8 version=1 | i64 event_us | i64 created_us | null bitmap | fixed slots | var slots``
       little-endian; times are microseconds since the Unix epoch (UTC); bit i of the bitmap
       (LSB first) set means feature i is null; fixed slots hold numbers, bools, timestamps and
       dates in view order; var slots hold ``u32 length + UTF-8`` for strings and decimals.
"""

from __future__ import annotations

import hashlib
import operator
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from functools import cached_property
from itertools import repeat
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from feature_layer.registry.model import FeatureView

VERSION = 1
KEY_VERSION = b"fl1"
HEADER = struct.Struct("<Bqq")  # version, event_us, created_us
NULL_CREATED = -(2**62)  # created_us stored for a NULL created-at
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_EPOCH_DATE = date(1970, 1, 1)

# logical type -> (numpy dtype of the fixed slot, arrow type of decoded values); None = var slot
_FIXED: dict[str, tuple[str, pa.DataType]] = {
    "float64": ("<f8", pa.float64()),
    "int64": ("<i8", pa.int64()),
    "bool": ("u1", pa.bool_()),
    "timestamp": ("<i8", pa.timestamp("us", tz="UTC")),
    "date": ("<i4", pa.date32()),
    "decimal": ("<f8", pa.float64()),  # float64, as training sets return it (feature_layer.types)
}


@dataclass(frozen=True)
class Slot:
    """Where one feature lives inside a value."""

    name: str
    dtype: str  # logical type
    index: int  # position in the null bitmap (= view feature order)
    fixed: bool


@dataclass(frozen=True)
class ViewLayout:
    """The encoding of one feature view: key prefix, value struct, slot order."""

    view: str
    namespace: str
    join_keys: tuple[str, ...]
    key_types: tuple[str, ...]
    slots: tuple[Slot, ...]
    fingerprint: str
    ttl_us: int | None

    @cached_property
    def key_prefix(self) -> bytes:
        return b"%s:%s:%s:%s:" % (KEY_VERSION, self.namespace.encode(), self.view.encode(), self.fingerprint.encode())

    @cached_property
    def null_bytes(self) -> int:
        return (len(self.slots) + 7) // 8

    @cached_property
    def fixed_dtype(self) -> np.dtype:
        """numpy struct of the fixed part of a value (header, bitmap, fixed slots)."""
        fields: list[tuple[str, Any]] = [("__v", "u1"), ("__ev", "<i8"), ("__cr", "<i8")]
        if self.null_bytes:
            fields.append(("__nulls", "u1", (self.null_bytes,)))
        fields += [(f"f{s.index}", _FIXED[s.dtype][0]) for s in self.slots if s.fixed]
        return np.dtype(fields)

    @cached_property
    def has_var(self) -> bool:
        return any(not s.fixed for s in self.slots)

    @cached_property
    def fixed_width(self) -> int:
        return self.fixed_dtype.itemsize

    @cached_property
    def struct(self) -> struct.Struct:
        """Per-value decoder of the fixed part (used for small batches, where numpy's setup costs more)."""
        codes = {"float64": "d", "int64": "q", "bool": "B", "timestamp": "q", "date": "i", "decimal": "d"}
        fmt = "<Bqq" + f"{self.null_bytes}x" + "".join(codes[s.dtype] for s in self.slots if s.fixed)
        return struct.Struct(fmt)


def slot_kind(dtype: str) -> bool:
    """True when a logical type has a fixed-width slot."""
    return dtype in _FIXED


def view_layout(view: FeatureView, namespace: str) -> ViewLayout:
    """The layout of ``view``'s values; its fingerprint changes whenever the encoding would."""
    slots = tuple(
        Slot(name=f.name, dtype=_norm_dtype(f.dtype), index=i, fixed=_norm_dtype(f.dtype) in _FIXED)
        for i, f in enumerate(view.features)
    )
    key_types = tuple(_norm_dtype(view.column_type(k)) for k in view.join_keys)
    spec = repr((VERSION, view.join_keys, key_types, tuple((s.name, s.dtype) for s in slots)))
    fingerprint = hashlib.blake2s(spec.encode(), digest_size=4).hexdigest()
    ttl_us = int(view.ttl.total_seconds() * 1_000_000) if view.ttl else None
    return ViewLayout(view.name, namespace, view.join_keys, key_types, slots, fingerprint, ttl_us)


def _norm_dtype(dtype: str) -> str:
    return dtype if dtype in _FIXED else "string"


# ---------------------------------------------------------------------------------------------
# Keys
# ---------------------------------------------------------------------------------------------


def _escape(col: pa.Array) -> pa.Array:
    col = pc.replace_substring(col, "\\", "\\\\")
    return pc.replace_substring(col, "|", "\\|")


def _key_text_column(col: pa.Array, key_type: str) -> pa.Array:
    """Arrow column of join-key values -> their key text (must match ``key_text`` below)."""
    if pa.types.is_dictionary(col.type):
        col = col.dictionary_decode()
    if key_type == "int64" and (pa.types.is_floating(col.type) or pa.types.is_decimal(col.type)):
        col = col.cast(pa.int64())
    if pa.types.is_timestamp(col.type):
        col = pc.cast(pc.cast(col, pa.timestamp("us", tz="UTC")), pa.int64())
    return col.cast(pa.string())


def key_column(layout: ViewLayout, table: pa.Table | pa.RecordBatch, columns: Sequence[str] | None = None) -> pa.Array:
    """Full Redis keys (binary) for every row, vectorised; rows with a null key part give null."""
    names = columns or layout.join_keys
    parts = [
        _key_text_column(table.column(n) if isinstance(table, pa.Table) else table.column(n), t)
        for n, t in zip(names, layout.key_types, strict=False)
    ]
    if isinstance(table, pa.Table):
        parts = [p.combine_chunks() if isinstance(p, pa.ChunkedArray) else p for p in parts]
    if len(parts) > 1:
        parts = [_escape(p) for p in parts]
        joined = pc.binary_join_element_wise(*parts, "|")
    else:
        joined = parts[0]
    keys = pc.binary_join_element_wise(pa.scalar(layout.key_prefix.decode("utf-8")), joined, "")
    return keys.cast(pa.binary())


def key_text(value: Any, key_type: str) -> str:
    """Python join-key value -> key text, matching the Arrow casts used at write time.

    Strict on purpose: a value of the wrong type (``"42"`` or ``1.5`` for an integer key, ``7``
    for a string key) raises instead of silently looking up another entity or none.
    """
    if value is None:
        raise ValueError("null join key")
    if key_type == "int64":
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
            raise ValueError(f"expected an integer, got {value!r}")
        if isinstance(value, (float, np.floating)) and not float(value).is_integer():
            raise ValueError(f"expected an integer, got {value!r}")
        return str(int(value))
    if key_type == "bool":
        if not isinstance(value, (bool, np.bool_)):
            raise ValueError(f"expected true or false, got {value!r}")
        return "true" if value else "false"
    if key_type == "string":
        if isinstance(value, bytes):
            return value.decode("utf-8")
        if not isinstance(value, str):
            raise ValueError(f"expected a string, got {value!r}")
        return value
    if key_type == "timestamp":
        if not isinstance(value, datetime):
            raise ValueError(f"expected a timestamp, got {value!r}")
        return str(to_micros(value))
    if isinstance(value, datetime):
        return str(to_micros(value))
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, bytes):
        return value.decode("utf-8")
    return str(value)


def entity_key(layout: ViewLayout, values: Sequence[Any]) -> bytes:
    if len(values) == 1:
        return layout.key_prefix + key_text(values[0], layout.key_types[0]).encode()
    texts = [
        key_text(v, t).replace("\\", "\\\\").replace("|", "\\|") for v, t in zip(values, layout.key_types, strict=False)
    ]
    return layout.key_prefix + "|".join(texts).encode()


# ---------------------------------------------------------------------------------------------
# Values: encode a whole Arrow batch at once
# ---------------------------------------------------------------------------------------------


def to_micros(value: datetime) -> int:
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    delta = value - _EPOCH
    return (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_micros(value: int) -> datetime:
    return datetime.fromtimestamp(value // 1_000_000, tz=UTC).replace(microsecond=value % 1_000_000)


def time_column_micros(col: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Timestamp (or date) column -> int64 microseconds since epoch, UTC; nulls become INT64_MIN."""
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    if pa.types.is_date(col.type):
        col = col.cast(pa.timestamp("us"))
    if not pa.types.is_timestamp(col.type):
        raise TypeError(f"expected a timestamp column, got {col.type}")
    if col.type.unit != "us":
        col = col.cast(pa.timestamp("us", tz=col.type.tz))
    ints = col.view(pa.int64()) if col.type.tz is None else col.cast(pa.timestamp("us")).view(pa.int64())
    return (
        ints.to_numpy(zero_copy_only=False)
        if ints.null_count == 0
        else pc.fill_null(ints, np.iinfo(np.int64).min).to_numpy(zero_copy_only=False)
    )


def _fixed_values(col: pa.Array, dtype: str) -> np.ndarray:
    """A column's values as numpy for its fixed slot (nulls filled with zero; the bitmap says null)."""
    if dtype == "timestamp":
        if pa.types.is_timestamp(col.type) or pa.types.is_date(col.type):
            return time_column_micros(
                pc.fill_null(col, pa.scalar(0, pa.int64()).cast(col.type)) if col.null_count else col
            )
        return pc.fill_null(col.cast(pa.int64()), 0).to_numpy(zero_copy_only=False)
    if dtype == "date":
        col = col.cast(pa.date32())
        return pc.fill_null(col.view(pa.int32()), 0).to_numpy(zero_copy_only=False)
    if dtype == "bool":
        return pc.fill_null(col.cast(pa.bool_()), False).to_numpy(zero_copy_only=False).astype("u1")
    target = pa.int64() if dtype == "int64" else pa.float64()
    if pa.types.is_decimal(col.type) and target == pa.float64():
        # Arrow's decimal→double cast misses the nearest double (0.35, 1.15, …); its text→double
        # parse and the warehouses' CAST do not, so online values equal a training set's.
        col = col.cast(pa.string())
    if col.type != target:
        col = col.cast(target)
    if col.null_count:
        col = pc.fill_null(col, 0)
    return col.to_numpy(zero_copy_only=False)


def _var_values(col: pa.Array) -> tuple[pa.Array, pa.Array]:
    """(u32 little-endian length prefixes, UTF-8 bytes) of a string-like column, nulls as empty."""
    if pa.types.is_dictionary(col.type):
        col = col.dictionary_decode()
    text = pc.fill_null(col.cast(pa.string()), "").cast(pa.binary())
    lengths = pc.binary_length(text).to_numpy(zero_copy_only=False).astype("<u4")
    prefix = pa.FixedSizeBinaryArray.from_buffers(pa.binary(4), len(lengths), [None, pa.py_buffer(lengths.tobytes())])
    return prefix.cast(pa.binary()), text


@dataclass
class EncodedBatch:
    """One batch ready for any online store: keys, values and the ordering fields."""

    keys: pa.Array  # binary
    values: pa.Array  # binary (for fixed layouts: FixedSizeBinary cast to binary)
    event_us: np.ndarray
    created_us: np.ndarray
    fixed_rows: np.ndarray | None  # (n, width) uint8 when every value has the same width

    def __len__(self) -> int:
        return len(self.keys)


def encode_batch(
    layout: ViewLayout,
    batch: pa.RecordBatch | pa.Table,
    *,
    event_column: str,
    created_column: str | None,
    now_us: int | None = None,
) -> EncodedBatch:
    """Encode a batch of latest rows: keys + values, dropping rows whose value is already expired.

    Rows with a null join key or event time are dropped too: they cannot be looked up.
    """
    if isinstance(batch, pa.Table):
        batch = (
            batch.combine_chunks().to_batches()[0]
            if batch.num_rows
            else pa.RecordBatch.from_pylist([], schema=batch.schema)
        )
    event_us = time_column_micros(batch.column(event_column))
    keep = event_us != np.iinfo(np.int64).min
    for name in layout.join_keys:
        col = batch.column(name)
        if col.null_count:
            keep &= col.is_valid().to_numpy(zero_copy_only=False)
    if layout.ttl_us is not None and now_us is not None:
        keep &= event_us >= now_us - layout.ttl_us  # inclusive, as training sets: event >= ts - ttl
    if not keep.all():
        mask = pa.array(keep)
        batch = batch.filter(mask)
        event_us = event_us[keep]
    n = batch.num_rows
    created_us = time_column_micros(batch.column(created_column)) if created_column else event_us
    if created_column is not None:
        # A NULL created-at loses every tie, as ``ORDER BY created DESC NULLS LAST`` says.
        created_us = np.where(created_us == np.iinfo(np.int64).min, NULL_CREATED, created_us)

    rows = np.zeros(n, dtype=layout.fixed_dtype)
    rows["__v"] = VERSION
    rows["__ev"] = event_us
    rows["__cr"] = created_us
    if layout.slots:
        nulls = np.zeros((n, len(layout.slots)), dtype=bool)
        for slot in layout.slots:
            col = batch.column(slot.name)
            if col.null_count:
                nulls[:, slot.index] = col.is_null().to_numpy(zero_copy_only=False)
            if slot.fixed:
                rows[f"f{slot.index}"] = _fixed_values(col, slot.dtype)
        rows["__nulls"] = np.packbits(nulls, axis=1, bitorder="little")
    width = layout.fixed_width
    raw = rows.view(np.uint8).reshape(n, width)
    fixed = pa.FixedSizeBinaryArray.from_buffers(pa.binary(width), n, [None, pa.py_buffer(raw)]).cast(pa.binary())
    if layout.has_var:
        parts: list[pa.Array] = [fixed]
        for slot in layout.slots:
            if not slot.fixed:
                parts.extend(_var_values(batch.column(slot.name)))
        values = pc.binary_join_element_wise(*parts, pa.scalar(b""))
        fixed_rows = None
    else:
        values = fixed
        fixed_rows = raw
    keys = key_column(layout, batch)
    return EncodedBatch(keys=keys, values=values, event_us=event_us, created_us=created_us, fixed_rows=fixed_rows)


# ---------------------------------------------------------------------------------------------
# Values: decode
# ---------------------------------------------------------------------------------------------


@dataclass
class Decoded:
    """Decoded values of one view for a lookup batch: per-slot values, validity, event times."""

    columns: dict[int, Any]  # slot index -> numpy array or list
    valid: dict[int, np.ndarray | list[bool]]
    event_us: np.ndarray | list[int | None]
    present: np.ndarray | list[bool]


SMALL_BATCH = 128
"""Up to this many values, one ``struct.unpack`` per value beats numpy's fixed setup cost."""


def decode_values(layout: ViewLayout, raw: Sequence[bytes | None], now_us: int) -> Decoded:
    """Decode the values of one view; missing, undecodable-version and expired values count as absent."""
    if len(raw) <= SMALL_BATCH or layout.has_var:
        return _decode_rows(layout, raw, now_us)
    return _decode_numpy(layout, raw, now_us)


def _decode_numpy(layout: ViewLayout, raw: Sequence[bytes | None], now_us: int) -> Decoded:
    """Columnar decode of a whole reply: one ``join`` + ``frombuffer``, then one numpy pass per slot.

    No per-value Python work on the common path (every value present, fixed width, no nulls): the
    absent values are counted and filtered at C speed (``list.count``, ``map``), and a column is
    only scattered into place when some values are absent or expired.
    """
    n = len(raw)
    width = layout.fixed_width
    dtype = layout.fixed_dtype
    raw = raw if isinstance(raw, list) else list(raw)
    absent = raw.count(None)
    values = raw if not absent else [v for v in raw if v is not None]
    widths = set(map(len, values))
    if widths and widths != {width}:  # a value of another width (corrupt, or another layout): per value
        present = np.fromiter((v is not None and len(v) == width for v in raw), dtype=bool, count=n)
        values = [v for v in values if len(v) == width]
    elif absent:
        present = np.fromiter(map(operator.is_not, raw, repeat(None)), dtype=bool, count=n)
    else:
        present = np.ones(n, dtype=bool)
    packed = np.frombuffer(b"".join(values), dtype=dtype)
    ok = packed["__v"] == VERSION
    ev_p = packed["__ev"]
    if layout.ttl_us is not None:
        ok &= ev_p >= now_us - layout.ttl_us
    dense = len(packed) == n  # every value present and decodable so far: no scatter needed
    index = None
    if not dense or not ok.all():
        index = np.flatnonzero(present)
        if not ok.all():
            present[index[~ok]] = False
    if index is None:
        event_us = ev_p.copy()
    else:
        event_us = np.zeros(n, dtype=np.int64)
        event_us[index] = ev_p
    nulls_p = None
    if layout.slots and packed["__nulls"].any():
        nulls_p = np.unpackbits(packed["__nulls"], axis=1, bitorder="little", count=len(layout.slots)).astype(bool)
    columns: dict[int, Any] = {}
    valid: dict[int, Any] = {}
    for slot in layout.slots:
        field = packed[f"f{slot.index}"]
        if index is None:
            col = np.ascontiguousarray(field)
            v = present if nulls_p is None else ~nulls_p[:, slot.index]
        else:
            col = np.zeros(n, dtype=field.dtype)
            col[index] = field
            if nulls_p is None:
                v = present
            else:
                v = np.zeros(n, dtype=bool)
                v[index] = ~nulls_p[:, slot.index]
                v &= present
        columns[slot.index] = col
        valid[slot.index] = v
    return Decoded(columns, valid, event_us, present)


def _decode_rows(layout: ViewLayout, raw: Sequence[bytes | None], now_us: int) -> Decoded:
    """Per-value ``struct`` decode, transposed with ``zip``: the fast path for a few values.

    Columns come back as tuples holding None for null/absent values (validity is implied).
    """
    unpack = layout.struct.unpack_from
    size = layout.struct.size
    nb = layout.null_bytes
    slots = layout.slots
    k = len(slots)
    var_slots = [s for s in slots if not s.fixed]
    order = [s.index for s in slots if s.fixed] + [s.index for s in var_slots]
    reorder = var_slots and order != list(range(k))
    horizon = now_us - layout.ttl_us if layout.ttl_us is not None else None
    empty = (None,) * k
    rows: list[tuple[Any, ...]] = []
    events: list[int | None] = []
    for value in raw:
        if value is None or len(value) < size or value[0] != VERSION:
            rows.append(empty)
            events.append(None)
            continue
        fields = unpack(value)
        event = fields[1]
        if horizon is not None and event < horizon:
            rows.append(empty)
            events.append(None)
            continue
        events.append(event)
        row = fields[3:]
        if var_slots:
            pos = size
            texts = []
            for _ in var_slots:
                (length,) = _U32.unpack_from(value, pos)
                texts.append(value[pos + 4 : pos + 4 + length].decode("utf-8"))
                pos += 4 + length
            row = row + tuple(texts)
            if reorder:
                ordered: list[Any] = [None] * k
                for position, v in zip(order, row, strict=False):
                    ordered[position] = v
                row = tuple(ordered)
        if nb:
            bitmap = int.from_bytes(value[17 : 17 + nb], "little")
            if bitmap:
                row = tuple(None if (bitmap >> i) & 1 else v for i, v in enumerate(row))
        rows.append(row)
    transposed = list(zip(*rows, strict=False)) if rows else [() for _ in range(k)]
    columns = {s.index: transposed[s.index] for s in slots}
    present = [e is not None for e in events]
    return Decoded(columns, {s.index: None for s in slots}, events, present)  # type: ignore[arg-type]


_U32 = struct.Struct("<I")


def python_value(dtype: str, value: Any) -> Any:
    """Convert a decoded slot value (int/float/str) to the Python type users expect."""
    if value is None:
        return None
    if dtype == "timestamp":
        return from_micros(int(value))
    if dtype == "date":
        return date.fromordinal(_EPOCH_DATE.toordinal() + int(value))
    if dtype == "bool":
        return bool(value)
    return value


def arrow_type(dtype: str) -> pa.DataType:
    if dtype in _FIXED:
        return _FIXED[dtype][1]
    return pa.string()
