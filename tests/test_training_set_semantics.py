"""Every clause of the training-set semantics (docs/training_sets.md), on every formulation.

Each test runs on DuckDB with the ASOF formulation, on DuckDB with the portable window
formulation, and on PostgreSQL (window), with small hand-made tables whose answer is obvious.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pandas as pd
import pyarrow as pa
import pytest

from feature_layer.errors import InputError
from feature_layer.offline.training_set import build_training_set
from tests.offline_helpers import duckdb_engine, load_table, make_view, postgres_engine

T0 = datetime(2025, 6, 1)


def h(hours: float) -> datetime:
    return T0 + timedelta(hours=hours)


FEATURES = pa.schema(
    [
        ("user_id", pa.int64()),
        ("event_ts", pa.timestamp("us")),
        ("created_ts", pa.timestamp("us")),
        ("amount", pa.float64()),
        ("name", pa.string()),
    ]
)


@pytest.fixture(scope="module")
def _duck():
    engine = duckdb_engine()
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def _pg():
    engine = postgres_engine()
    yield engine
    engine.close()


@pytest.fixture(
    params=[
        pytest.param(("duckdb", "asof"), id="duckdb-asof"),
        pytest.param(("duckdb", "window"), id="duckdb-window"),
        pytest.param(("postgres", None), id="postgres-window", marks=pytest.mark.postgres),
    ]
)
def run(request):
    """``run(feature_rows, entity_rows, **view_options)`` → list of result dicts."""
    kind, strategy = request.param
    engine = request.getfixturevalue("_duck" if kind == "duckdb" else "_pg")

    def _run(feature_rows, entities, *, features=("amount",), ttl=None, created_at="created_ts", keys=("user_id",),
             schema=FEATURES, extra_views=(), full_feature_names=False, after_load=None, **kwargs):
        rel = load_table(engine, "features", pa.Table.from_pylist(feature_rows, schema=schema))
        if after_load is not None:
            after_load(engine)
        view = make_view(
            "activity",
            rel,
            keys=keys,
            key_types=[logical(schema.field(k).type) for k in keys],
            features=tuple((f.name, logical(f.type)) for f in schema if f.name in {"amount", "name", "n"}),
            created_at=created_at,
            ttl=ttl,
        )
        requested = [(view, [view.feature(f) for f in features]), *(extra_views(engine) if extra_views else ())]
        ts = build_training_set(
            engine, entities, requested, strategy=strategy, full_feature_names=full_feature_names, **kwargs
        )
        try:
            return ts.to_arrow().to_pylist()
        finally:
            ts.close()

    _run.engine = engine
    _run.strategy = strategy
    return _run


def logical(arrow_type: pa.DataType) -> str:
    from feature_layer.offline.entity import arrow_logical_type

    return arrow_logical_type(arrow_type)


def entities(*rows: tuple) -> pa.Table:
    return pa.Table.from_pylist(
        [{"user_id": u, "event_timestamp": ts, "label": i} for i, (u, ts) in enumerate(rows)],
        schema=pa.schema([("user_id", pa.int64()), ("event_timestamp", pa.timestamp("us")), ("label", pa.int64())]),
    )


def amounts(result: list[dict]) -> list:
    return [r["amount"] for r in result]


def row(user_id, event, created=None, amount=None, name=None) -> dict:
    return {"user_id": user_id, "event_ts": event, "created_ts": created, "amount": amount, "name": name}


def test_latest_event_at_or_before_the_timestamp_wins(run):
    data = [row(1, h(0), amount=1.0), row(1, h(2), amount=2.0), row(1, h(4), amount=4.0)]
    result = run(data, entities((1, h(1)), (1, h(2)), (1, h(3.5)), (1, h(9))))
    assert amounts(result) == [1.0, 2.0, 2.0, 4.0]


def test_a_training_row_never_sees_its_future(run):
    data = [row(1, h(5), amount=5.0)]
    assert amounts(run(data, entities((1, h(4)), (1, h(4.999))))) == [None, None]


def test_ttl_boundary_is_inclusive(run):
    data = [row(1, h(0), amount=1.0)]
    result = run(
        data,
        entities((1, h(2)), (1, h(2) + timedelta(microseconds=1)), (1, h(1))),
        ttl=timedelta(hours=2),
    )
    assert amounts(result) == [1.0, None, 1.0]


def test_expired_latest_row_is_not_replaced_by_an_older_one(run):
    data = [row(1, h(0), amount=0.0), row(1, h(1), amount=1.0)]
    assert amounts(run(data, entities((1, h(4))), ttl=timedelta(hours=2))) == [None]


def test_created_at_breaks_event_time_ties(run):
    data = [
        row(1, h(1), created=h(1.2), amount=2.0),
        row(1, h(1), created=h(1.5), amount=1.0),
        row(1, h(1), created=h(1.1), amount=3.0),
    ]
    assert amounts(run(data, entities((1, h(2))))) == [1.0]


def test_null_created_at_counts_as_oldest(run):
    data = [row(1, h(1), created=None, amount=9.0), row(1, h(1), created=h(1), amount=1.0)]
    assert amounts(run(data, entities((1, h(2))))) == [1.0]


def test_full_ties_go_to_larger_feature_values_nulls_last(run):
    data = [
        row(1, h(1), created=h(1), amount=None, name="z"),
        row(1, h(1), created=h(1), amount=2.0, name="a"),
        row(1, h(1), created=h(1), amount=2.0, name="b"),
        row(1, h(1), created=h(1), amount=1.0, name="zz"),
    ]
    result = run(data, entities((1, h(2))), features=("name", "amount"))
    assert [(r["name"], r["amount"]) for r in result] == [("b", 2.0)]


def test_string_tie_break_is_bytewise_on_every_engine(run):
    def linguistic_collation(engine):  # where 'B' sorts after 'a'; byte order says the opposite
        if engine.dialect == "postgres":
            engine.execute('ALTER TABLE "features" ALTER COLUMN "name" TYPE text COLLATE "en-US-x-icu"')

    data = [row(1, h(1), amount=1.0, name="B"), row(1, h(1), amount=1.0, name="a")]
    result = run(data, entities((1, h(2))), features=("name",), after_load=linguistic_collation)
    assert [r["name"] for r in result] == ["a"]


def test_tie_break_does_not_depend_on_which_features_are_requested(run):
    data = [row(1, h(1), amount=1.0, name="late"), row(1, h(1), amount=2.0, name="early")]
    assert [r["name"] for r in run(data, entities((1, h(2))), features=("name",))] == ["early"]


def test_no_match_gives_null(run):
    data = [row(1, h(1), amount=1.0)]
    assert amounts(run(data, entities((2, h(5)), (1, h(0))))) == [None, None]


def test_null_entity_key_keeps_the_row_with_null_features(run):
    data = [row(1, h(1), amount=1.0), row(None, h(1), amount=7.0)]
    result = run(data, entities((None, h(5)), (1, h(5))))
    assert [(r["user_id"], r["label"], r["amount"]) for r in result] == [(None, 0, None), (1, 1, 1.0)]


def test_feature_rows_with_null_event_time_never_match(run):
    data = [row(1, None, amount=5.0)]
    assert amounts(run(data, entities((1, h(5))))) == [None]


def test_every_entity_row_comes_back_once_in_input_order_with_labels(run):
    data = [row(u, h(t), amount=float(10 * u + t)) for u in (1, 2, 3) for t in range(5)]
    order = [(3, h(4)), (1, h(0.5)), (2, h(9)), (1, h(0.5)), (3, h(4)), (1, h(-1)), (2, h(1))]
    result = run(data, entities(*order))
    assert [(r["user_id"], r["event_timestamp"], r["label"]) for r in result] == [
        (u, ts, i) for i, (u, ts) in enumerate(order)
    ]
    assert amounts(result) == [34.0, 10.0, 24.0, 10.0, 34.0, None, 21.0]


def test_composite_keys_must_all_match(run):
    schema = pa.schema(
        [("user_id", pa.int64()), ("region", pa.string()), ("event_ts", pa.timestamp("us")),
         ("created_ts", pa.timestamp("us")), ("amount", pa.float64())]
    )
    data = [
        {"user_id": 1, "region": "eu", "event_ts": h(1), "created_ts": None, "amount": 1.0},
        {"user_id": 1, "region": "us", "event_ts": h(2), "created_ts": None, "amount": 2.0},
    ]
    ents = pa.Table.from_pylist(
        [{"user_id": 1, "region": "eu", "event_timestamp": h(3)}, {"user_id": 1, "region": "xx", "event_timestamp": h(3)}]
    )
    assert amounts(run(data, ents, keys=("user_id", "region"), schema=schema)) == [1.0, None]


def test_view_without_created_at_still_resolves_ties_deterministically(run):
    data = [row(1, h(1), amount=1.0), row(1, h(1), amount=3.0), row(1, h(1), amount=2.0)]
    assert amounts(run(data, entities((1, h(1))), created_at=None)) == [3.0]


def test_naive_timestamps_are_utc_and_aware_ones_are_converted(run):
    data = [row(1, h(0), amount=0.0), row(1, h(1), amount=1.0), row(1, h(2), amount=2.0)]
    paris = ZoneInfo("Europe/Paris")  # UTC+2 in June
    frame = pd.DataFrame(
        {
            "user_id": [1, 1],
            "event_timestamp": pd.to_datetime([h(1.5).replace(tzinfo=UTC), h(1.5).replace(tzinfo=UTC)])
            .tz_convert(paris),
        }
    )
    result = run(data, frame)
    assert amounts(result) == [1.0, 1.0]
    returned = result[0]["event_timestamp"]  # returned as given: the same instant, still in Paris time
    assert returned == h(1.5).replace(tzinfo=UTC) and returned.utcoffset() == timedelta(hours=2)
    naive = pd.DataFrame({"user_id": [1], "event_timestamp": [h(2)]})
    assert amounts(run(data, naive)) == [2.0]


def test_empty_entity_dataframe_gives_an_empty_typed_result(run):
    result = run([row(1, h(1), amount=1.0)], entities())
    assert result == []


def test_empty_feature_table_gives_nulls(run):
    assert amounts(run([], entities((1, h(1)), (2, h(2))))) == [None, None]


def test_a_second_view_with_the_same_feature_name_needs_full_feature_names(run):
    engine = run.engine

    def other(engine_=engine):
        rel = load_table(engine_, "other", pa.Table.from_pylist([row(1, h(0), amount=100.0)], schema=FEATURES))
        view = make_view("other", rel, features=(("amount", "float64"),))
        return [(view, list(view.features))]

    data = [row(1, h(1), amount=1.0)]
    with pytest.raises(InputError) as info:
        run(data, entities((1, h(2))), extra_views=lambda e: other())
    assert "'amount' would come from both feature activity.amount and feature other.amount" in str(info.value)
    assert "full_feature_names=True" in str(info.value)
    result = run(data, entities((1, h(2))), extra_views=lambda e: other(), full_feature_names=True)
    assert [(r["activity__amount"], r["other__amount"]) for r in result] == [(1.0, 100.0)]


def test_feature_name_clashing_with_an_entity_column_is_an_error(run):
    frame = pd.DataFrame({"user_id": [1], "event_timestamp": [h(2)], "amount": [3.0]})
    with pytest.raises(InputError, match="'amount' would come from both the entity dataframe and feature activity.amount"):
        run([row(1, h(1), amount=1.0)], frame)


def test_a_date_timestamp_means_midnight_utc(run):
    from datetime import date

    data = [row(1, datetime(2025, 6, 1), amount=1.0), row(1, datetime(2025, 6, 1, 0, 0, 1), amount=2.0)]
    frame = pa.table({"user_id": [1], "day": pa.array([date(2025, 6, 1)])})
    result = run(data, frame)
    assert amounts(result) == [1.0]
    assert result[0]["day"] == date(2025, 6, 1)  # returned as given: still a date


def test_polars_lazy_and_nanosecond_inputs_are_accepted(run):
    import polars as pl

    data = [row(1, h(1), amount=1.0)]
    lazy = pl.DataFrame({"user_id": [1], "event_timestamp": [h(1)]}).lazy()
    assert amounts(run(data, lazy)) == [1.0]
    nanos = pa.table({"user_id": [1], "event_timestamp": pa.array([h(1)], pa.timestamp("ns"))})
    assert amounts(run(data, nanos)) == [1.0]


def test_feature_tables_with_tz_aware_event_times_compare_in_utc(run):
    schema = pa.schema(
        [("user_id", pa.int64()), ("event_ts", pa.timestamp("us", tz="UTC")), ("created_ts", pa.timestamp("us")),
         ("amount", pa.float64())]
    )
    data = [
        {"user_id": 1, "event_ts": h(1).replace(tzinfo=UTC), "created_ts": None, "amount": 1.0},
        {"user_id": 1, "event_ts": h(2).replace(tzinfo=UTC), "created_ts": None, "amount": 2.0},
    ]
    result = run(data, entities((1, h(1.5)), (1, h(2)), (1, h(0.5))), schema=schema, ttl=timedelta(hours=1))
    assert amounts(result) == [1.0, 2.0, None]


def test_warehouse_query_with_tz_aware_timestamps_is_compared_in_utc(run):
    data = [row(1, h(1), amount=1.0), row(1, h(2), amount=2.0)]
    query = (
        "SELECT CAST(1 AS BIGINT) AS user_id, CAST('2025-06-01 03:30:00+02' AS TIMESTAMPTZ) AS event_timestamp "
        "UNION ALL SELECT CAST(1 AS BIGINT), CAST('2025-06-01 02:00:00+00' AS TIMESTAMPTZ)"
    )
    result = run(data, query)
    assert amounts(result) == [1.0, 2.0]
    assert result[0]["event_timestamp"] == h(1.5).replace(tzinfo=UTC)  # warehouse columns come back unchanged


@pytest.mark.postgres
def test_postgres_uuid_string_features_take_part_in_the_tie_break(_pg):
    """A "string" feature of a non-text type (uuid) must not break the query (no COLLATE on uuid)."""
    from feature_layer.registry.model import Feature, FeatureView, Relation

    _pg.execute("DROP TABLE IF EXISTS pg_temp.uuid_features")
    _pg.execute("CREATE TEMPORARY TABLE uuid_features (user_id bigint, event_ts timestamp, device uuid, amount float8)")
    _pg.execute(
        "INSERT INTO pg_temp.uuid_features VALUES "
        "(1, '2025-06-01 01:00', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', 1.0), "
        "(1, '2025-06-01 01:00', 'f0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', 2.0)"
    )
    view = FeatureView(
        name="uuid_features",
        unique_id="model.test.uuid_features",
        entities=("user",),
        join_keys=("user_id",),
        event_time="event_ts",
        features=(Feature("device", "uuid_features", "string", sql_type="uuid"),
                  Feature("amount", "uuid_features", "float64")),
        relation=Relation(None, "pg_temp", "uuid_features"),
        column_types=(("user_id", "int64"), ("event_ts", "timestamp"), ("device", "string"), ("amount", "float64")),
    )
    ts = build_training_set(_pg, entities((1, h(2))), [(view, [view.feature("amount")])])
    try:
        assert amounts(ts.to_arrow().to_pylist()) == [2.0]  # the larger uuid wins the full tie
    finally:
        ts.close()


# ------------------------------------------------------------------ SQL printed for analysts, any session zone

SESSION_ZONES = ("UTC", "Europe/Berlin", "Asia/Tokyo", "America/Los_Angeles")


def _printed_sql_rows(engine, sql: str, zone: str, dbname: str | None = None) -> list[tuple]:
    """Run the printed SQL as an analyst would: on its own connection, in session time zone ``zone``."""
    if engine.dialect == "duckdb":
        con = engine.connection
        con.execute(f"SET TimeZone = '{zone}'")
        try:
            return [tuple(r) for r in con.execute(sql).fetchall()]
        finally:
            con.execute("SET TimeZone = 'UTC'")
    import psycopg2

    from tests.offline_helpers import PG

    con = psycopg2.connect(**{**PG, "dbname": dbname or PG["dbname"]})
    try:
        with con.cursor() as cur:
            cur.execute(f"SET TIME ZONE '{zone}'")
            cur.execute(sql)
            return [tuple(r) for r in cur.fetchall()]
    finally:
        con.close()


@pytest.fixture(params=["duckdb", pytest.param("postgres", marks=pytest.mark.postgres)])
def tz_tables(request):
    """A naive feature table, a timestamptz one (with a 1-day TTL across a DST change), and a
    timestamptz entity table, in a real schema that another connection can read."""
    engine = duckdb_engine() if request.param == "duckdb" else postgres_engine()
    schema = "fl_tz_printed"
    engine.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    engine.execute(f"CREATE SCHEMA {schema}")
    engine.execute(f"CREATE TABLE {schema}.naive (user_id BIGINT, event_ts TIMESTAMP, amount DOUBLE PRECISION)")
    engine.execute(f"INSERT INTO {schema}.naive VALUES (1, '2025-03-01 12:00', 1.0), (1, '2025-03-01 12:30', 2.0)")
    engine.execute(f"CREATE TABLE {schema}.aware (user_id BIGINT, event_ts TIMESTAMPTZ, score DOUBLE PRECISION)")
    engine.execute(
        f"INSERT INTO {schema}.aware VALUES (1, '2025-03-01 12:00+00', 10.0), (1, '2025-03-01 12:30+00', 20.0), "
        "(2, '2025-03-30 00:30+00', 30.0)"
    )
    engine.execute(f"CREATE TABLE {schema}.entities (user_id BIGINT, event_timestamp TIMESTAMPTZ, label BIGINT)")
    engine.execute(
        f"INSERT INTO {schema}.entities VALUES (1, '2025-03-01 12:10+00', 0), (1, '2025-03-01 21:40+09', 1), "
        # exactly one day (the TTL) after user 2's row, across Europe's DST change: inclusive, must match
        "(2, '2025-03-31 00:30+00', 2)"
    )
    from feature_layer.registry.model import Relation

    naive = make_view("naive", Relation(None, schema, "naive"), created_at=None)
    aware = make_view("aware", Relation(None, schema, "aware"), created_at=None, features=(("score", "float64"),),
                      ttl=timedelta(days=1))
    yield engine, f"{schema}.entities", [(naive, list(naive.features)), (aware, list(aware.features))]
    engine.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    engine.close()


EXPECTED_TZ = [(1.0, 10.0), (2.0, 20.0), (None, 30.0)]


def test_printed_sql_gives_the_same_rows_in_any_session_time_zone(tz_tables):
    engine, entity_table, requested = tz_tables
    strategies = ("asof", "window") if engine.dialect == "duckdb" else (None,)
    for strategy in strategies:
        ts = build_training_set(engine, entity_table, requested, strategy=strategy)
        got = [(r["amount"], r["score"]) for r in ts.to_arrow().to_pylist()]
        assert got == EXPECTED_TZ, strategy
        sql = ts.sql()
        for zone in SESSION_ZONES:
            rows = _printed_sql_rows(engine, sql, zone)
            assert [(r[-2], r[-1]) for r in rows] == EXPECTED_TZ, (strategy, zone)


@pytest.fixture(params=["duckdb", pytest.param("postgres", marks=pytest.mark.postgres)])
def tz_project(request, tmp_path):
    """(target, project): ``tests/fixtures/tz_project`` (the same rows as ``tz_tables``) built by dbt."""
    import uuid

    from feature_layer.dbt.runner import run_dbt
    from tests.conftest import clean_project_env, drop_postgres_schemas, replace_in_file, require_postgres
    from tests.dbt_helpers import copy_fixture

    target, project = request.param, copy_fixture("tz_project", tmp_path)
    schema = dsn = None
    if target == "postgres":
        dsn = require_postgres()
        schema = f"fl_tz_{uuid.uuid4().hex[:12]}"
        replace_in_file(project / "profiles.yml", "__TZ_SCHEMA__", schema)
    try:
        with clean_project_env():
            run_dbt(["build"], project, target=target, quiet=True)
        yield target, project, schema
    finally:
        if schema is not None:
            drop_postgres_schemas(dsn, schema)


def test_cli_printed_sql_gives_the_same_rows_in_any_session_time_zone(tz_project):
    """``feature-layer sql training-set`` on a real project reads the column types from the
    warehouse, so what it prints gives the same rows whatever the session's time zone."""
    from click.testing import CliRunner

    from feature_layer.cli import main as cli
    from feature_layer.client import FeatureStore
    from tests.conftest import PG_DATABASE

    target, project, schema = tz_project
    entities = "main.entities" if target == "duckdb" else f"{schema}.entities"
    result = CliRunner().invoke(cli, ["--project-dir", str(project), "--target", target, "sql", "training-set",
                                      "--features", "naive.amount,aware.score", "--entity-table", entities])
    assert result.exit_code == 0, result.output
    assert "could not be read" not in result.stdout
    with FeatureStore(project, target=target) as store:
        engine = store.offline_engine()
        for zone in SESSION_ZONES:
            rows = _printed_sql_rows(engine, result.stdout, zone, dbname=PG_DATABASE)
            assert [(r[-2], r[-1]) for r in rows] == EXPECTED_TZ, zone


# ------------------------------------------------------------------ writing results: never lose the previous one


@pytest.fixture(params=["duckdb", pytest.param("postgres", marks=pytest.mark.postgres)])
def engine_and_view(request):
    engine = request.getfixturevalue("_duck" if request.param == "duckdb" else "_pg")
    rel = load_table(engine, "writes", pa.Table.from_pylist([row(1, h(1), amount=1.0)], schema=FEATURES))
    view = make_view("writes", rel, features=(("amount", "float64"),))
    return engine, view


def test_to_parquet_failure_keeps_the_previous_file_and_leaves_no_partial_one(engine_and_view, tmp_path):
    import pyarrow.parquet as pq

    from feature_layer.errors import WarehouseError

    engine, view = engine_and_view
    target = tmp_path / "train.parquet"
    pq.write_table(pa.table({"old": [1]}), target)
    many = entities(*[(1, h(2))] * 50)
    ts = build_training_set(engine, many, [(view, list(view.features))])
    real_stream = engine.stream_arrow

    def failing(sql, batch_size=100_000):
        for index, batch in enumerate(real_stream(sql, batch_size)):
            if index == 1:
                raise WarehouseError("connection lost", fix="retry")
            yield batch

    try:
        engine.stream_arrow = failing
        with pytest.raises(WarehouseError, match="connection lost"):
            ts.to_parquet(target, batch_size=10)
        assert pq.read_table(target).column_names == ["old"]  # untouched
        assert sorted(p.name for p in tmp_path.iterdir()) == ["train.parquet"]  # no temp file left
        del engine.stream_arrow
        ts.to_parquet(target, batch_size=10)
        assert pq.read_table(target).num_rows == 50
        assert sorted(p.name for p in tmp_path.iterdir()) == ["train.parquet"]
    finally:
        engine.__dict__.pop("stream_arrow", None)
        ts.close()


def test_to_table_replace_that_fails_keeps_the_previous_table(engine_and_view):
    from feature_layer.errors import WarehouseError

    engine, view = engine_and_view
    schema = "fl_to_table"
    engine.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    engine.execute(f"CREATE SCHEMA {schema}")
    try:
        engine.execute(f"CREATE TABLE {schema}.train AS SELECT 42 AS previous")
        ts = build_training_set(engine, entities((1, h(2))), [(view, list(view.features))])
        try:
            ts.to_table(f"{schema}.train", replace=True)  # replacing works…
            assert engine.fetch_arrow(f"SELECT amount FROM {schema}.train").to_pylist() == [{"amount": 1.0}]
            engine.execute(f"DROP TABLE IF EXISTS {schema}.train")
            engine.execute(f"CREATE TABLE {schema}.train AS SELECT 42 AS previous")
            # … and when the query fails (the view's table was rebuilt with another schema), the old table stays.
            rel = view.relation
            target = f"{rel.schema}.{rel.identifier}"
            engine.execute(f"DROP TABLE {target}")
            engine.execute(f"CREATE {'TEMPORARY ' if engine.dialect == 'postgres' else ''}TABLE "
                           f"{rel.identifier if engine.dialect == 'postgres' else target} AS SELECT 1 AS broken")
            with pytest.raises(WarehouseError):
                ts.to_table(f"{schema}.train", replace=True)
            assert engine.fetch_arrow(f"SELECT previous FROM {schema}.train").to_pylist() == [{"previous": 42}]
            tables = engine.fetch_arrow(
                f"SELECT table_name FROM information_schema.tables WHERE table_schema = '{schema}'"
            ).column(0).to_pylist()
            assert tables == ["train"]  # no staging table left behind
        finally:
            ts.close()
    finally:
        engine.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


def test_decimal_entity_keys_match_int64_view_keys(run):
    from decimal import Decimal

    data = [row(1, h(1), amount=1.0), row(2, h(1), amount=2.0)]
    for decimal_type, ids in ((pa.decimal128(20, 0), [Decimal(1), Decimal(2)]),
                              (pa.decimal128(12, 2), [Decimal("1.00"), Decimal("2.00")])):
        table = pa.table({"user_id": pa.array(ids + [None], decimal_type),
                          "event_timestamp": pa.array([h(2)] * 3, pa.timestamp("us"))})
        result = run(data, table)
        assert amounts(result) == [1.0, 2.0, None], decimal_type
        assert [r["user_id"] for r in result] == ids + [None]  # the entity column comes back unchanged
    # A warehouse query with a decimal key too (compared numerically in SQL).
    query = ("SELECT CAST(2 AS DECIMAL(18, 0)) AS user_id, "
             "CAST('2025-06-01 02:00:00' AS TIMESTAMP) AS event_timestamp")
    assert amounts(run(data, query)) == [2.0]


def test_non_whole_decimal_entity_keys_are_an_error_with_the_fix(run):
    from decimal import Decimal

    table = pa.table({"user_id": pa.array([Decimal("1.00"), Decimal("1.50")], pa.decimal128(12, 2)),
                      "event_timestamp": pa.array([h(2)] * 2, pa.timestamp("us"))})
    with pytest.raises(InputError, match=r"holds non-whole values \(e.g. 1.50\).*feature view 'activity'") as info:
        run([row(1, h(1), amount=1.0)], table)
    assert "cast entity column 'user_id' to int64" in str(info.value)
