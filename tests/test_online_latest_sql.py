"""The latest-per-entity SQL against a brute-force reference, on a real DuckDB, both formulations.

Also the incremental rule: latest(new rows since the watermark) merged under "older never
overwrites newer" equals latest(all rows) — including late rows (old event time, new created-at).
"""

from __future__ import annotations

from datetime import datetime, timedelta

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from feature_layer.offline.engine import DuckDBEngine
from feature_layer.registry.model import Feature, FeatureView, Relation
from feature_layer.sql.latest import CREATED_ALIAS, EVENT_ALIAS, Watermark, latest_values, max_created, to_sql

BASE = datetime(2025, 1, 1)


def view(created: bool = True) -> FeatureView:
    return FeatureView(
        name="v",
        unique_id="model.p.v",
        entities=("user",),
        join_keys=("k",),
        event_time="ts",
        created_at="cr" if created else None,
        features=(Feature("x", "v", "int64"),),
        relation=Relation(None, "", "t"),
        column_types=(("k", "int64"),),
    )


ROW = st.tuples(
    st.integers(0, 4),  # key
    st.integers(0, 6),  # event hour (small range: many ties)
    st.one_of(st.none(), st.integers(0, 6)),  # created = event + this many hours, or NULL
    st.integers(-100, 100),  # value
)


def as_table(rows: list[tuple]) -> pa.Table:
    return pa.table(
        {
            "k": pa.array([r[0] for r in rows], pa.int64()),
            "ts": pa.array([BASE + timedelta(hours=r[1]) for r in rows], pa.timestamp("us")),
            "cr": pa.array(
                [None if r[2] is None else BASE + timedelta(hours=r[1] + r[2]) for r in rows], pa.timestamp("us")
            ),
            "x": pa.array([r[3] for r in rows], pa.int64()),
        }
    )


def order_key(row: tuple) -> tuple:
    """The training sets' order: event, created-at (NULL oldest), then the feature (larger first)."""
    return (row[1], -1 if row[2] is None else row[1] + row[2], row[3])


def reference(rows: list[tuple], end_hour: int) -> dict[int, set[int]]:
    """Per key, the value(s) of the rows tied for latest (a tie may legitimately pick any)."""
    best: dict[int, tuple] = {}
    for r in rows:
        if r[1] <= end_hour and (r[0] not in best or order_key(r) > order_key(best[r[0]])):
            best[r[0]] = r
    return {
        k: {r[3] for r in rows if r[0] == k and r[1] <= end_hour and order_key(r) == order_key(b)}
        for k, b in best.items()
    }


def run(engine: DuckDBEngine, rows: list[tuple], sql: str) -> dict[int, tuple]:
    engine.unregister("t")
    engine.register_arrow("t", as_table(rows))
    out = engine.fetch_arrow(sql).to_pylist()
    return {r["k"]: (r[EVENT_ALIAS], r[CREATED_ALIAS], r["x"]) for r in out}


@pytest.fixture(scope="module")
def engine():  # noqa: ANN201
    eng = DuckDBEngine(":memory:")
    yield eng
    eng.close()


@pytest.mark.parametrize("dialect_form", ["duckdb", "postgres"], ids=["arg_max", "window"])
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(ROW, max_size=25), end_hour=st.integers(0, 7))
def test_latest_value_per_entity_matches_brute_force(
    engine, dialect_form: str, rows: list[tuple], end_hour: int
) -> None:  # noqa: ANN001
    # The window form is rendered for postgres but is plain SQL DuckDB runs too.
    tree = latest_values(view(), end=BASE + timedelta(hours=end_hour), dialect=dialect_form)
    got = run(engine, rows, to_sql(tree, "duckdb"))
    expected = reference(rows, end_hour)
    assert set(got) == set(expected)
    for key, (_, _, value) in got.items():
        assert value in expected[key]


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    first=st.lists(ROW, max_size=15), late=st.lists(ROW, max_size=15), end1=st.integers(0, 7), end2=st.integers(0, 7)
)
def test_incremental_run_merged_with_never_older_equals_a_full_run(engine, first, late, end1, end2) -> None:  # noqa: ANN001
    end2 = max(end1, end2)
    v = view()
    # Rows of the second arrival were created after run 1 (created-at > every first-run created-at).
    shift = 100
    late = [(k, h, (c or 0) + shift, x) for k, h, c, x in late]  # created = event + c + shift hours
    stored: dict[int, tuple] = {}

    def merge(found: dict[int, tuple]) -> None:
        for key, (ev, cr, x) in found.items():
            pair = (ev, cr or datetime.min)
            if key not in stored or pair >= stored[key][:2]:
                stored[key] = (*pair, x)

    merge(run(engine, first, to_sql(latest_values(v, end=BASE + timedelta(hours=end1)), "duckdb")))
    max_cr = engine.fetch_arrow(to_sql(max_created(v, end=BASE + timedelta(hours=end1)), "duckdb")).column(0)[0].as_py()
    watermark = Watermark(BASE + timedelta(hours=end1), max_cr)
    everything = first + late
    merge(
        run(
            engine,
            everything,
            to_sql(latest_values(v, end=BASE + timedelta(hours=end2), watermark=watermark), "duckdb"),
        )
    )
    expected = reference(everything, end2)
    assert set(stored) == set(expected)
    for key, (_, _, x) in stored.items():
        assert x in expected[key]


LOOKBACK_HOURS = 6


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    first=st.lists(ROW, max_size=15),
    late=st.lists(
        st.tuples(
            st.integers(0, 4), st.integers(0, 6), st.integers(1, 3 * 60 * LOOKBACK_HOURS), st.integers(-100, 100)
        ),
        max_size=15,
    ),
    end1=st.integers(0, 7),
    end2=st.integers(0, 7),
)
def test_incremental_run_catches_late_rows_landing_out_of_created_at_order(engine, first, late, end1, end2) -> None:  # noqa: ANN001
    """Rows landing after run 1 whose created-at is *below* run 1's created-at watermark (but
    within the lookback of it) are read by run 2: incremental + never-older == a full run."""
    end2 = max(end1, end2)
    v = view()
    lookback = timedelta(hours=LOOKBACK_HOURS)
    stored: dict[int, tuple] = {}

    def merge(found: dict[int, tuple]) -> None:
        for key, (ev, cr, x) in found.items():
            pair = (ev, cr or datetime.min)
            if key not in stored or pair >= stored[key][:2]:
                stored[key] = (*pair, x)

    merge(run(engine, first, to_sql(latest_values(v, end=BASE + timedelta(hours=end1)), "duckdb")))
    max_cr = engine.fetch_arrow(to_sql(max_created(v, end=BASE + timedelta(hours=end1)), "duckdb")).column(0)[0].as_py()
    # Late rows: created-at anywhere above (watermark - lookback), often below the watermark itself.
    floor = (max_cr - lookback) if max_cr is not None else BASE
    late_rows = [(k, h, m, x) for k, h, m, x in late]
    everything = first + [(k, h, None, x) for k, h, _, x in late_rows]
    table = as_table(everything)
    created = table.column("cr").to_pylist()[: len(first)] + [floor + timedelta(minutes=m) for _, _, m, _ in late_rows]
    table = table.set_column(2, "cr", pa.array(created, pa.timestamp("us")))
    watermark = Watermark(BASE + timedelta(hours=end1), max_cr)
    engine.unregister("t")
    engine.register_arrow("t", table)
    sql = to_sql(latest_values(v, end=BASE + timedelta(hours=end2), watermark=watermark, lookback=lookback), "duckdb")
    merge({r["k"]: (r[EVENT_ALIAS], r[CREATED_ALIAS], r["x"]) for r in engine.fetch_arrow(sql).to_pylist()})
    # The reference, over the same rows with their real created-at.
    ref_rows = [(r["k"], int((r["ts"] - BASE).total_seconds() // 3600), r["cr"], r["x"]) for r in table.to_pylist()]
    best: dict[int, tuple] = {}

    def key_of(r: tuple) -> tuple:
        return (r[1], r[2] or datetime.min, r[3])

    for r in ref_rows:
        if r[1] <= end2 and (r[0] not in best or key_of(r) > key_of(best[r[0]])):
            best[r[0]] = r
    assert set(stored) == set(best)
    for key, (_, cr, x) in stored.items():
        assert (cr if cr != datetime.min else None, x) == (best[key][2], best[key][3])


def test_without_created_at_the_incremental_filter_is_by_event_time_only() -> None:
    sql = to_sql(latest_values(view(created=False), end=BASE, watermark=Watermark(BASE - timedelta(days=1))), "duckdb")
    assert '"ts" > CAST(\'2024-12-31' in sql and '"cr"' not in sql


def test_identifiers_are_quoted_in_every_dialect() -> None:
    v = FeatureView(
        name="v",
        unique_id="m",
        entities=("e",),
        join_keys=("select",),
        event_time="order",
        features=(Feature("from", "v", "float64"),),
        relation=Relation("db", "my schema", "t-1"),
    )
    for dialect in ("duckdb", "postgres", "snowflake", "bigquery"):
        sql = to_sql(latest_values(v, end=BASE, dialect=dialect), dialect)
        assert "select" in sql.lower() and ('"my schema"' in sql or "`my schema`" in sql)


FIXED_ROWS = [  # (key, event hour, created offset or None, value): ties, NULL created-at, late rows
    (0, 1, 0, 10),
    (0, 3, 0, 11),
    (0, 3, 2, 12),
    (0, 3, None, 13),
    (1, 2, None, 20),
    (1, 2, 1, 21),
    (1, 9, 0, 22),
    (2, 5, 0, 30),
    (3, 0, 0, 40),
    (3, 0, 0, 40),
]


@pytest.mark.postgres
def test_window_formulation_and_statistics_run_on_postgresql() -> None:
    import uuid as _uuid

    from feature_layer.offline.engine import PostgresEngine
    from feature_layer.online import statistics
    from tests.conftest import drop_postgres_schemas, require_postgres

    dsn = require_postgres()
    schema = f"fl_online_{_uuid.uuid4().hex[:8]}"
    engine = PostgresEngine(dbname="test", user="postgres")
    try:
        engine.execute(f'CREATE SCHEMA "{schema}"')
        engine.execute(f'CREATE TABLE "{schema}".t (k BIGINT, ts TIMESTAMP, cr TIMESTAMP, x BIGINT)')
        values = ", ".join(
            f"({k}, TIMESTAMP '2025-01-01' + INTERVAL '{h} hours', "
            + ("NULL" if c is None else f"TIMESTAMP '2025-01-01' + INTERVAL '{h + c} hours'")
            + f", {x})"
            for k, h, c, x in FIXED_ROWS
        )
        engine.execute(f'INSERT INTO "{schema}".t VALUES {values}')
        v = FeatureView(
            name="v",
            unique_id="model.p.v",
            entities=("user",),
            join_keys=("k",),
            event_time="ts",
            created_at="cr",
            features=(Feature("x", "v", "int64"),),
            relation=Relation(None, schema, "t"),
            column_types=(("k", "int64"),),
        )
        for end_hour in (0, 3, 10):
            tree = latest_values(v, end=BASE + timedelta(hours=end_hour), dialect="postgres")
            got = {r["k"]: r["x"] for r in engine.fetch_arrow(tree).to_pylist()}
            expected = reference(FIXED_ROWS, end_hour)
            assert set(got) == set(expected) and all(got[k] in expected[k] for k in got), end_hour
        # Incremental: after a run up to hour 3, a run up to hour 10 reads only newer rows.
        wm = Watermark(BASE + timedelta(hours=3), BASE + timedelta(hours=5))
        newer = engine.fetch_arrow(
            latest_values(v, end=BASE + timedelta(hours=10), watermark=wm, dialect="postgres", lookback=timedelta(0))
        )
        assert sorted(newer.column("x").to_pylist()) == [22, 30]
        assert engine.fetch_arrow(max_created(v, end=BASE + timedelta(hours=3))).column(0)[
            0
        ].as_py() == BASE + timedelta(hours=5)
        stats = statistics.compute(engine, v, end=BASE + timedelta(hours=10))["v.x"]
        served = reference(FIXED_ROWS, 10)  # what is served: each key's latest value
        assert (
            stats["rows"] == len(served) == 4
            and stats["min"] == min(min(s) for s in served.values())
            and stats["max"] == max(max(s) for s in served.values())
            and sum(stats["histogram"]["counts"]) == len(served)
        )
    finally:
        engine.close()
        drop_postgres_schemas(dsn, schema)


@pytest.mark.parametrize("dialect_form", ["duckdb", "postgres"], ids=["arg_min/arg_max", "window"])
@pytest.mark.parametrize("with_string", [False, True], ids=["numeric", "string-fallback"])
def test_exact_duplicates_are_broken_by_feature_values_as_training_sets_do(
    engine,
    dialect_form: str,
    with_string: bool,  # noqa: ANN001
) -> None:
    feats = [Feature("a", "v", "float64"), Feature("b", "v", "int64")]
    if with_string:
        feats.append(Feature("s", "v", "string"))
    v = FeatureView(
        name="v",
        unique_id="model.p.v",
        entities=("user",),
        join_keys=("k",),
        event_time="ts",
        created_at="cr",
        features=tuple(feats),
        relation=Relation(None, "", "d"),
        column_types=(("k", "int64"),),
    )
    ts, cr = BASE, BASE + timedelta(seconds=1)
    rows = [  # same key, event time and created-at: a is compared first (NULL lowest), then b, then s
        (1, ts, cr, None, 9, "z"),
        (1, ts, cr, 2.0, None, "a"),
        (1, ts, cr, 2.0, 1, None),
        (1, ts, cr, 1.0, 99, "zz"),
        (2, ts, None, 5.0, 5, "x"),
        (2, ts, cr, 1.0, 1, "a"),  # a NULL created-at loses first
        (3, ts, cr, 1.0, 1, "b"),
        (3, ts, cr, 1.0, 1, "c"),
        (3, ts, cr, 1.0, 1, None),
    ]
    table = pa.table(
        {
            "k": [r[0] for r in rows],
            "ts": pa.array([r[1] for r in rows], pa.timestamp("us")),
            "cr": pa.array([r[2] for r in rows], pa.timestamp("us")),
            "a": pa.array([r[3] for r in rows], pa.float64()),
            "b": pa.array([r[4] for r in rows], pa.int64()),
            "s": pa.array([r[5] for r in rows], pa.string()),
        }
    )
    engine.unregister("d")
    engine.register_arrow("d", table)
    got = engine.fetch_arrow(to_sql(latest_values(v, end=BASE + timedelta(days=1), dialect=dialect_form), "duckdb"))
    picked = {r["k"]: (r["a"], r["b"], r.get("s")) for r in got.to_pylist()}
    assert picked[1][:2] == (2.0, 1) and picked[2][:2] == (1.0, 1)
    if with_string:
        assert picked[3][2] == "c"


@pytest.mark.parametrize("engine_name", ["duckdb", "postgres"])
def test_nan_ties_pick_what_a_training_set_picks_nan_largest(engine_name: str) -> None:
    """Exact (event, created-at) ties broken by a float feature holding NaN, ±inf and NULL:
    the training sets order NaN largest (DuckDB and PostgreSQL), so materialization must too."""
    import math

    from feature_layer.offline.training_set import build_training_set
    from tests.offline_helpers import duckdb_engine, load_table, make_view, postgres_engine

    nan, inf = float("nan"), float("inf")
    groups = {  # key: tied rows' (a, b); the winner is compared on a first, then b
        1: [(nan, 0), (1.0, 0)],
        2: [(None, 0), (nan, 1)],
        3: [(inf, 0), (nan, 2)],
        4: [(None, 0), (-inf, 3)],
        5: [(1.0, 0), (2.0, 4), (None, 9)],
        6: [(nan, 1), (nan, 5), (3.0, 9)],
        7: [(-0.5, 1), (-inf, 9)],
    }
    expected = {1: (nan, 0), 2: (nan, 1), 3: (nan, 2), 4: (-inf, 3), 5: (2.0, 4), 6: (nan, 5), 7: (-0.5, 1)}
    rows = [(k, a, b) for k, pairs in groups.items() for a, b in pairs]
    table = pa.table(
        {
            "user_id": pa.array([r[0] for r in rows], pa.int64()),
            "event_ts": pa.array([BASE] * len(rows), pa.timestamp("us")),
            "created_ts": pa.array([BASE] * len(rows), pa.timestamp("us")),
            "a": pa.array([r[1] for r in rows], pa.float64()),
            "b": pa.array([r[2] for r in rows], pa.int64()),
        }
    )
    eng = duckdb_engine() if engine_name == "duckdb" else postgres_engine()
    try:
        v = make_view(
            f"nan_ties_{engine_name}",
            load_table(eng, f"nan_ties_{engine_name}", table),
            features=(("a", "float64"), ("b", "int64")),
        )

        def same(x: tuple, y: tuple) -> bool:
            return all(
                (p is q) or p == q or (isinstance(p, float) and math.isnan(p) and math.isnan(q))
                for p, q in zip(x, y, strict=True)
            )

        forms = ["duckdb", "postgres"] if engine_name == "duckdb" else ["postgres"]
        for form in forms:  # DuckDB runs both formulations (ARG_MIN and the window)
            got = eng.fetch_arrow(to_sql(latest_values(v, end=BASE + timedelta(days=1), dialect=form), eng.dialect))
            picked = {r["user_id"]: (r["a"], r["b"]) for r in got.to_pylist()}
            assert set(picked) == set(expected)
            for key, want in expected.items():
                assert same(picked[key], want), (form, key, picked[key], want)
        spine = pa.table(
            {
                "user_id": list(expected),
                "event_timestamp": pa.array([BASE + timedelta(hours=1)] * 7, pa.timestamp("us")),
            }
        )
        trained = build_training_set(eng, spine, [(v, list(v.features))]).to_arrow().to_pylist()
        for r in trained:
            assert same((r["a"], r["b"]), expected[r["user_id"]]), (r, expected[r["user_id"]])
    finally:
        eng.close()
