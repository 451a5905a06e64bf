"""The online value/key layout v1: round trips, nulls, TTL at decode, key text (pure, no IO)."""

from __future__ import annotations

import struct
from datetime import UTC, date, datetime, timedelta

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from feature_layer.online.encoding import (
    _decode_numpy,
    _decode_rows,
    decode_values,
    encode_batch,
    entity_key,
    key_column,
    python_value,
    to_micros,
    view_layout,
)
from feature_layer.registry.model import Feature, FeatureView, Relation

T0 = datetime(2025, 6, 1, tzinfo=UTC)


def make_view(
    features: list[tuple[str, str]],
    *,
    keys: tuple[str, ...] = ("user_id",),
    key_types=("int64",),
    ttl: timedelta | None = None,
) -> FeatureView:
    return FeatureView(
        name="v",
        unique_id="model.p.v",
        entities=("user",),
        join_keys=keys,
        event_time="ts",
        created_at="created",
        features=tuple(Feature(n, "v", t) for n, t in features),
        relation=Relation(None, "main", "v"),
        ttl=ttl,
        column_types=tuple(zip(keys, key_types, strict=False)),
    )


ALL_TYPES = [("f", "float64"), ("i", "int64"), ("b", "bool"), ("s", "string"), ("t", "timestamp"), ("d", "date")]


def test_value_layout_is_the_documented_struct() -> None:
    view = make_view([("a", "float64"), ("b", "float64")])
    layout = view_layout(view, "proj")
    batch = pa.table(
        {
            "user_id": [7],
            "__ev": pa.array([T0], pa.timestamp("us", tz="UTC")),
            "__cr": pa.array([T0 + timedelta(seconds=5)], pa.timestamp("us", tz="UTC")),
            "a": [1.5],
            "b": pa.array([None], pa.float64()),
        }
    )
    enc = encode_batch(layout, batch, event_column="__ev", created_column="__cr")
    value = enc.values[0].as_py()
    version, ev, cr, nulls, a, b = struct.unpack("<BqqBdd", value)
    assert (version, ev, cr, nulls, a, b) == (1, to_micros(T0), to_micros(T0) + 5_000_000, 0b10, 1.5, 0.0)
    assert len(value) == 1 + 8 + 8 + 1 + 16
    assert enc.keys[0].as_py() == b"fl1:proj:v:" + layout.fingerprint.encode() + b":7"


@st.composite
def rows(draw):  # noqa: ANN001, ANN201
    n = draw(st.integers(1, 40))

    def col(strategy):  # noqa: ANN001, ANN202
        return draw(st.lists(st.one_of(st.none(), strategy), min_size=n, max_size=n))

    return {
        "user_id": list(range(n)),
        "f": col(st.floats(allow_nan=False, width=64)),
        "i": col(st.integers(-(2**63), 2**63 - 1)),
        "b": col(st.booleans()),
        "s": col(st.text(max_size=12)),
        "t": col(st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC))),
        "d": col(st.dates(min_value=date(1971, 1, 1), max_value=date(2200, 1, 1))),
        "ev": draw(st.lists(st.integers(0, 10**6), min_size=n, max_size=n)),
    }


@settings(max_examples=60, deadline=None)
@given(data=rows())
def test_every_type_round_trips_with_nulls(data: dict) -> None:
    view = make_view(ALL_TYPES)
    layout = view_layout(view, "p")
    n = len(data["user_id"])
    table = pa.table(
        {
            "user_id": data["user_id"],
            "__ev": pa.array([T0 + timedelta(seconds=s) for s in data["ev"]], pa.timestamp("us", tz="UTC")),
            "f": pa.array(data["f"], pa.float64()),
            "i": pa.array(data["i"], pa.int64()),
            "b": pa.array(data["b"], pa.bool_()),
            "s": pa.array(data["s"], pa.string()),
            "t": pa.array(data["t"], pa.timestamp("us", tz="UTC")),
            "d": pa.array(data["d"], pa.date32()),
        }
    )
    enc = encode_batch(layout, table, event_column="__ev", created_column=None)
    raw = enc.values.to_pylist()
    decoded = decode_values(layout, raw, now_us=to_micros(T0))
    for slot in layout.slots:
        col = decoded.columns[slot.index]
        values = col.tolist() if isinstance(col, np.ndarray) else list(col)
        got = [python_value(slot.dtype, v) for v in values]
        assert got == data[slot.name], slot.name
    assert list(decoded.event_us) == [to_micros(T0) + s * 1_000_000 for s in data["ev"]]
    assert len(raw) == n


def test_numpy_and_row_decoders_agree_and_ttl_hides_expired_values() -> None:
    view = make_view([("a", "float64"), ("n", "int64"), ("t", "timestamp")], ttl=timedelta(hours=1))
    layout = view_layout(view, "p")
    n = 50
    events = [T0 - timedelta(minutes=3 * k) for k in range(n)]  # 0..147 minutes old
    table = pa.table(
        {
            "user_id": list(range(n)),
            "__ev": pa.array(events, pa.timestamp("us", tz="UTC")),
            "a": pa.array([float(k) if k % 7 else None for k in range(n)], pa.float64()),
            "n": list(range(n)),
            "t": pa.array(events, pa.timestamp("us", tz="UTC")),
        }
    )
    raw = encode_batch(layout, table, event_column="__ev", created_column=None).values.to_pylist()
    raw[3] = None  # a missing key
    now = to_micros(T0)
    big, small = _decode_numpy(layout, raw, now), _decode_rows(layout, raw, now)
    live = [k for k in range(n) if k != 3 and 3 * k <= 60]  # exactly TTL old is live, as in training sets
    assert [k for k in range(n) if big.present[k]] == live
    assert [k for k in range(n) if small.present[k]] == live
    for slot in layout.slots:
        b = [v if ok else None for v, ok in zip(big.columns[slot.index].tolist(), big.valid[slot.index], strict=False)]
        assert b == list(small.columns[slot.index])


def test_expired_rows_are_not_encoded() -> None:
    layout = view_layout(make_view([("a", "float64")], ttl=timedelta(days=1)), "p")
    table = pa.table(
        {
            "user_id": [1, 2],
            "__ev": pa.array([T0 - timedelta(days=2), T0], pa.timestamp("us", tz="UTC")),
            "a": [1.0, 2.0],
        }
    )
    enc = encode_batch(layout, table, event_column="__ev", created_column=None, now_us=to_micros(T0))
    assert enc.keys.to_pylist() == [layout.key_prefix + b"2"]


def test_composite_keys_escape_the_separator_identically_on_both_paths() -> None:
    view = make_view([("a", "float64")], keys=("u", "m"), key_types=("string", "string"))
    layout = view_layout(view, "p")
    pairs = [("a|b", "c"), ("a", "b|c"), ("x\\", "|y"), ("plain", "k")]
    table = pa.table({"u": [p[0] for p in pairs], "m": [p[1] for p in pairs]})
    vectorised = key_column(layout, table).to_pylist()
    assert vectorised == [entity_key(layout, p) for p in pairs]
    assert len(set(vectorised)) == len(pairs)


def test_int_keys_match_between_python_values_and_arrow_columns() -> None:
    layout = view_layout(make_view([("a", "float64")]), "p")
    table = pa.table({"user_id": pa.array([5, -3, 2**40], pa.int64())})
    assert key_column(layout, table).to_pylist() == [entity_key(layout, [v]) for v in (5, -3, 2**40)]
    assert entity_key(layout, [np.int64(5)]) == entity_key(layout, [5.0]) == entity_key(layout, [5])


def test_layout_fingerprint_changes_when_the_encoding_would() -> None:
    base = view_layout(make_view([("a", "float64")]), "p").fingerprint
    assert view_layout(make_view([("a", "float64")]), "p").fingerprint == base
    assert view_layout(make_view([("a", "int64")]), "p").fingerprint != base
    assert view_layout(make_view([("a", "float64"), ("b", "float64")]), "p").fingerprint != base


@pytest.mark.parametrize("bad", [b"", b"\x02" + b"\x00" * 40])
def test_unknown_or_truncated_values_decode_as_missing(bad: bytes) -> None:
    layout = view_layout(make_view([("a", "float64")]), "p")
    assert decode_values(layout, [bad], 0).present == [False]


@pytest.mark.parametrize("case", ["dense", "dense_with_nulls", "missing", "odd_width", "expired"])
def test_columnar_decode_agrees_with_the_per_value_decoder(case: str) -> None:
    """Every shortcut of the columnar decoder (no scatter when dense, no bitmap pass without
    nulls, a value of another width) gives what the per-value decoder gives."""
    view = make_view([("a", "float64"), ("n", "int64"), ("b", "bool")], ttl=timedelta(hours=1))
    layout = view_layout(view, "p")
    n = 300
    table = pa.table(
        {
            "user_id": list(range(n)),
            "__ev": pa.array(
                [T0 - timedelta(minutes=(90 if case == "expired" and k % 5 == 0 else 1)) for k in range(n)],
                pa.timestamp("us", tz="UTC"),
            ),
            "a": pa.array([None if case == "dense_with_nulls" and k % 3 == 0 else k / 4 for k in range(n)]),
            "n": list(range(n)),
            "b": [k % 2 == 0 for k in range(n)],
        }
    )
    raw = encode_batch(layout, table, event_column="__ev", created_column=None).values.to_pylist()
    if case == "missing":
        raw[7] = raw[200] = None
    if case == "odd_width":
        raw[11] = raw[11][:-1]  # truncated values: absent on both paths
        raw[12] = b"\x01"
    now = to_micros(T0)
    big, small = _decode_numpy(layout, raw, now), _decode_rows(layout, raw, now)
    assert list(big.present) == list(small.present)
    expected_absent = {"dense": 0, "dense_with_nulls": 0, "missing": 2, "odd_width": 2, "expired": n // 5}[case]
    assert n - sum(big.present) == expected_absent
    for slot in layout.slots:
        got = [v if ok else None for v, ok in zip(big.columns[slot.index].tolist(), big.valid[slot.index], strict=True)]
        assert got == list(small.columns[slot.index]), slot.name
    assert [e if p else None for e, p in zip(big.event_us.tolist(), big.present, strict=True)] == list(small.event_us)
