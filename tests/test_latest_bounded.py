"""The two-pass (bounded-memory) latest-per-entity query equals ``latest_values``, row for row.

References: the brute-force reference of tests/test_online_latest_sql.py, and both
formulations of ``latest_values`` (ARG_MIN and the window) on the same data — with exact ties
on event time and created-at broken by NULL, NaN, ±inf, integers and strings; two join keys;
incremental filters (watermark, start).
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from feature_layer.offline.engine import DuckDBEngine
from feature_layer.registry.model import Feature, FeatureView, Relation
from feature_layer.sql.latest import Watermark, latest_values, to_sql
from feature_layer.sql.newest import bounded_latest_values, materialization_query
from tests.test_online_latest_sql import ROW, reference, run
from tests.test_online_latest_sql import view as simple_view

BASE = datetime(2025, 1, 1)


@pytest.fixture(scope="module")
def engine():  # noqa: ANN201
    eng = DuckDBEngine(":memory:")
    yield eng
    eng.close()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(ROW, max_size=25), end_hour=st.integers(0, 7))
def test_bounded_form_matches_brute_force(engine, rows: list[tuple], end_hour: int) -> None:  # noqa: ANN001
    tree = bounded_latest_values(simple_view(), end=BASE + timedelta(hours=end_hour))
    got = run(engine, rows, to_sql(tree, "duckdb"))
    expected = reference(rows, end_hour)
    assert set(got) == set(expected)
    for key, (_, _, value) in got.items():
        assert value in expected[key]


def two_key_view() -> FeatureView:
    return FeatureView(
        name="w", unique_id="model.p.w", entities=("user", "merchant"), join_keys=("k1", "k2"), event_time="ts",
        created_at="cr",
        features=(Feature("a", "w", "float64"), Feature("b", "w", "int64"), Feature("s", "w", "string")),
        relation=Relation(None, "", "w"), column_types=(("k1", "int64"), ("k2", "string")),
    )


FLOATS = st.sampled_from([None, float("nan"), float("inf"), float("-inf"), -0.5, 0.0, 1.0, 2.0])
WIDE_ROW = st.tuples(
    st.integers(0, 2), st.sampled_from(["x", "y"]),  # two keys
    st.integers(0, 3),  # event hour: many exact ties
    st.one_of(st.none(), st.integers(0, 1)),  # created-at offset (ties too)
    FLOATS, st.one_of(st.none(), st.integers(-2, 2)), st.one_of(st.none(), st.sampled_from(["a", "b", "ab"])),
)


def wide_table(rows: list[tuple]) -> pa.Table:
    return pa.table({
        "k1": pa.array([r[0] for r in rows], pa.int64()),
        "k2": pa.array([r[1] for r in rows], pa.string()),
        "ts": pa.array([BASE + timedelta(hours=r[2]) for r in rows], pa.timestamp("us")),
        "cr": pa.array([None if r[3] is None else BASE + timedelta(hours=r[2] + r[3]) for r in rows],
                       pa.timestamp("us")),
        "a": pa.array([r[4] for r in rows], pa.float64()),
        "b": pa.array([r[5] for r in rows], pa.int64()),
        "s": pa.array([r[6] for r in rows], pa.string()),
    })


def _canonical(table: pa.Table) -> list[tuple]:
    """Rows sorted by key, NaN made comparable (NaN != NaN would fail an equal result)."""
    def fix(v: object) -> object:
        return "NaN" if isinstance(v, float) and math.isnan(v) else v

    return sorted(tuple(fix(v) for v in row.values()) for row in table.to_pylist())


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    rows=st.lists(WIDE_ROW, max_size=30),
    end_hour=st.integers(0, 4),
    mode=st.sampled_from(["full", "watermark", "start"]),
)
def test_bounded_form_picks_the_same_row_as_both_latest_formulations(engine, rows, end_hour, mode) -> None:  # noqa: ANN001
    v = two_key_view()
    engine.unregister("w")
    engine.register_arrow("w", wide_table(rows))
    end = BASE + timedelta(hours=end_hour)
    kwargs: dict = {}
    if mode == "watermark":
        kwargs["watermark"] = Watermark(BASE + timedelta(hours=1), BASE + timedelta(hours=1, minutes=30))
    elif mode == "start":
        kwargs["start"] = BASE + timedelta(hours=1)
    bounded = _canonical(engine.fetch_arrow(to_sql(bounded_latest_values(v, end=end, **kwargs), "duckdb")))
    for form in ("duckdb", "postgres"):  # ARG_MIN, and the window form (plain SQL DuckDB runs)
        reference_rows = _canonical(engine.fetch_arrow(to_sql(latest_values(v, end=end, dialect=form, **kwargs),
                                                              "duckdb")))
        assert bounded == reference_rows, form
    if mode == "full":  # one row per entity with any row up to the end
        assert len(bounded) == len({(r[0], r[1]) for r in rows if r[2] <= end_hour})


def test_materialization_uses_the_bounded_form_only_where_it_is_chosen() -> None:
    v = two_key_view()
    duck = materialization_query(v, end=BASE, dialect="duckdb").sql(dialect="duckdb")
    pg = materialization_query(v, end=BASE, dialect="postgres").sql(dialect="postgres")
    assert 'IN (SELECT "k1", "k2", MAX("ts")' in duck
    assert pg == latest_values(v, end=BASE, dialect="postgres").sql(dialect="postgres")
