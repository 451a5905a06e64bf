"""The pure SQL layer: golden SQL per dialect, executed snapshots, dialect choice, quoting.

Golden files live in tests/sql_snapshots/<scenario>.<dialect>.sql. Regenerate them with

    FEATURE_LAYER_UPDATE_SNAPSHOTS=1 pytest tests/test_point_in_time_sql.py

and review the diff: a changed snapshot is a changed query for every user.
"""

from __future__ import annotations

import os
import re
import uuid
from datetime import datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pytest
import sqlglot
from sqlglot import exp

from feature_layer.errors import InputError
from feature_layer.registry.model import Feature, FeatureView, Relation
from feature_layer.sql.dialects import capabilities, pit_strategy
from feature_layer.sql.point_in_time import (
    ROW,
    EntitySpine,
    build_training_set_query,
    interval,
    plan_outputs,
    training_set_sql,
)
from tests.offline_helpers import ViewData, duckdb_engine, postgres_engine, reference_training_set

SNAPSHOTS = Path(__file__).parent / "sql_snapshots"
UPDATE = os.environ.get("FEATURE_LAYER_UPDATE_SNAPSHOTS") == "1"
DIALECTS = ("duckdb", "postgres", "bigquery", "spark", "trino", "snowflake")
SCHEMA = "fl_snapshot"


def _view(name, keys, features, *, ttl=None, created_at=None, event_time="event_ts", key_types=None) -> FeatureView:
    key_types = key_types or ["int64"] * len(keys)
    return FeatureView(
        name=name,
        unique_id=f"model.snap.{name}",
        entities=("user",),
        join_keys=tuple(keys),
        event_time=event_time,
        features=tuple(Feature(f, name, t) for f, t in features),
        relation=Relation(None, SCHEMA, name),
        created_at=created_at,
        ttl=ttl,
        column_types=tuple(zip(keys, key_types, strict=True)),
    )


ACTIVITY = _view(
    "user_activity",
    ["user_id"],
    [("amount", "float64"), ("merchant", "string")],
    ttl=timedelta(days=30),
    created_at="created_ts",
)
PAIR = _view(
    "user_merchant",
    ["user_id", "merchant_id"],
    [("txn_count", "int64"), ("first_seen", "timestamp")],
    ttl=timedelta(hours=36),
    key_types=["int64", "string"],
)
PROFILE = _view("user_profile", ["user_id"], [("age", "int64")])

WAREHOUSE_SPINE = EntitySpine(
    source=exp.Table(this=exp.to_identifier("entities", quoted=True), db=exp.to_identifier(SCHEMA, quoted=True)),
    timestamp="event_timestamp",
    columns=("user_id", "merchant_id", "event_timestamp", "label"),
)
UPLOADED_SPINE = EntitySpine(
    source=exp.Table(this=exp.to_identifier("__fl_entities_0", quoted=True)),
    timestamp="event_timestamp",
    columns=("user_id", "event_timestamp", "is_fraud"),
    row_number=ROW,
    naive_utc=True,
)

SCENARIOS = {
    "one_view_ttl_created_at": (WAREHOUSE_SPINE, [(ACTIVITY, list(ACTIVITY.features))], False),
    "three_views_full_names": (
        WAREHOUSE_SPINE,
        [(ACTIVITY, [ACTIVITY.feature("amount")]), (PAIR, list(PAIR.features)), (PROFILE, list(PROFILE.features))],
        True,
    ),
    "uploaded_entities": (UPLOADED_SPINE, [(PROFILE, list(PROFILE.features))], False),
    # timestamptz entity timestamp and event time: explicit UTC conversions, never a session-zone CAST
    "tz_aware_timestamps": (
        EntitySpine(source=WAREHOUSE_SPINE.source, timestamp="event_timestamp", columns=WAREHOUSE_SPINE.columns,
                    tz_aware=True),
        [(ACTIVITY, list(ACTIVITY.features)), (PROFILE, list(PROFILE.features))],
        False,
    ),
}
TZ_AWARE_VIEWS = {"tz_aware_timestamps": {"user_activity"}}
# PostgreSQL (LATERAL) probes an indexed view per entity row; a unique (keys, event time) index
# drops the tie-break; every other dialect ignores indexes (window formulation).
SCENARIOS["indexed_views"] = (
    WAREHOUSE_SPINE,
    [(ACTIVITY, list(ACTIVITY.features)), (PAIR, list(PAIR.features)), (PROFILE, list(PROFILE.features))],
    False,
)
INDEXED_VIEWS = {"indexed_views": ({"user_activity", "user_merchant"}, {"user_merchant"})}


def _sql(scenario: str, dialect: str) -> str:
    spine, requested, full = SCENARIOS[scenario]
    outputs = plan_outputs(
        requested, entity_columns=spine.columns or (), full_feature_names=full,
        tz_aware_views=TZ_AWARE_VIEWS.get(scenario, ()),
        indexed_views=INDEXED_VIEWS.get(scenario, ((), ()))[0],
        unique_event_views=INDEXED_VIEWS.get(scenario, ((), ()))[1],
    )
    return training_set_sql(spine, outputs, dialect)


def _header(scenario: str, dialect: str) -> str:
    return (
        f"-- snapshot: tests/test_point_in_time_sql.py::{scenario} [{dialect}]\n"
        "-- regenerate: FEATURE_LAYER_UPDATE_SNAPSHOTS=1 pytest tests/test_point_in_time_sql.py\n"
    )


@pytest.mark.parametrize("dialect", DIALECTS)
@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_generated_sql_matches_the_golden_snapshot(scenario: str, dialect: str) -> None:
    path = SNAPSHOTS / f"{scenario}.{dialect}.sql"
    text = _header(scenario, dialect) + _sql(scenario, dialect) + "\n"
    if UPDATE or not path.exists():
        if not UPDATE:
            pytest.fail(f"{path} is missing; run with FEATURE_LAYER_UPDATE_SNAPSHOTS=1 to create it.")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert text == path.read_text(), f"{path} differs; regenerate with FEATURE_LAYER_UPDATE_SNAPSHOTS=1 and review."


@pytest.mark.parametrize("dialect", DIALECTS)
def test_every_snapshot_parses_back_in_its_dialect(dialect: str) -> None:
    for scenario in SCENARIOS:
        sqlglot.parse_one(_sql(scenario, dialect), read=dialect)


def test_only_duckdb_gets_asof_join() -> None:
    for dialect in DIALECTS:
        sql = _sql("three_views_full_names", dialect)
        assert ("ASOF" in sql) == (dialect == "duckdb"), dialect


def test_asof_is_refused_where_the_engine_lacks_it() -> None:
    with pytest.raises(InputError, match="Dialect 'postgres' has no ASOF JOIN"):
        pit_strategy("postgres", "asof")
    with pytest.raises(InputError, match="Unknown point-in-time strategy 'fast'"):
        pit_strategy("duckdb", "fast")
    assert pit_strategy("duckdb", "window") == "window"
    assert capabilities("databricks").pit_strategy == "carry"  # Spark's SQL: LAST … IGNORE NULLS
    assert capabilities("tsql").pit_strategy == "window"  # any sqlglot dialect: portable form


def test_unknown_dialect_is_an_error_listing_known_ones() -> None:
    with pytest.raises(InputError, match="SQL dialect 'oracel' is not known to sqlglot") as info:
        capabilities("oracel")
    assert "To fix this, use one of: " in str(info.value)


def test_interval_uses_the_largest_whole_unit() -> None:
    assert interval(timedelta(days=30)).sql("duckdb") == "INTERVAL '30' DAY"
    assert interval(timedelta(hours=36)).sql("duckdb") == "INTERVAL '36' HOUR"
    assert interval(timedelta(seconds=90)).sql("duckdb") == "INTERVAL '90' SECOND"
    with pytest.raises(InputError, match="fractions of a second"):
        interval(timedelta(milliseconds=1500))


def test_identifiers_are_always_quoted() -> None:
    odd = FeatureView(
        name='weird "view"',
        unique_id="model.x.weird",
        entities=("user",),
        join_keys=("select",),
        event_time="from",
        features=(Feature("group", 'weird "view"', "float64"),),
        relation=Relation("my db", "my schema", "my table"),
        created_at="order",
    )
    spine = EntitySpine(source=exp.Table(this=exp.to_identifier("e t", quoted=True)), timestamp="when",
                        columns=("select", "when"))
    for dialect in DIALECTS:
        sql = training_set_sql(spine, plan_outputs([(odd, list(odd.features))]), dialect, pretty=False)
        quote = "`" if dialect in {"bigquery", "spark"} else '"'
        for name in ("select", "from", "group", "order", "when", "my table", "my schema", "my db"):
            assert f"{quote}{name}{quote}" in sql, (dialect, name)
        bare = re.findall(r"(?<![\"`\w])(select|from|group|order)(?![\"`\w])", sql.replace("SELECT", "").replace(
            "FROM", "").replace("ORDER", "").replace("GROUP", ""))
        assert bare == [], (dialect, bare)


def test_quoted_odd_names_execute_on_duckdb() -> None:
    engine = duckdb_engine()
    try:
        engine.execute('CREATE TABLE "my table" ("select" BIGINT, "from" TIMESTAMP, "group" DOUBLE)')
        engine.execute("INSERT INTO \"my table\" VALUES (1, '2025-01-01', 4.5)")
        engine.execute('CREATE TABLE "e t" ("select" BIGINT, "when" TIMESTAMP)')
        engine.execute("INSERT INTO \"e t\" VALUES (1, '2025-01-02')")
        view = FeatureView(
            name="v", unique_id="m", entities=("e",), join_keys=("select",), event_time="from",
            features=(Feature("group", "v", "float64"),), relation=Relation(None, "main", "my table"),
        )
        spine = EntitySpine(source=exp.Table(this=exp.to_identifier("e t", quoted=True)), timestamp="when",
                            columns=("select", "when"))
        for strategy in ("asof", "window"):
            query = build_training_set_query(spine, plan_outputs([(view, list(view.features))]), strategy=strategy)
            assert engine.fetch_arrow(query).column("group").to_pylist() == [4.5]
    finally:
        engine.close()


def test_requesting_a_feature_twice_is_an_error() -> None:
    with pytest.raises(InputError, match="Feature user_profile.age is requested twice"):
        plan_outputs([(PROFILE, [PROFILE.feature("age"), PROFILE.feature("age")])])
    with pytest.raises(InputError, match="Feature view 'user_profile' is requested twice"):
        plan_outputs([(PROFILE, list(PROFILE.features)), (PROFILE, list(PROFILE.features))])


# ------------------------------------------------------------------ executed snapshots

ENTITY_ROWS = [
    {"user_id": 1, "merchant_id": "m1", "event_timestamp": datetime(2025, 3, 2), "label": 0},
    {"user_id": 2, "merchant_id": "m1", "event_timestamp": datetime(2025, 3, 5), "label": 1},
    {"user_id": 1, "merchant_id": "m2", "event_timestamp": datetime(2025, 4, 20), "label": 0},
    {"user_id": 1, "merchant_id": "m1", "event_timestamp": datetime(2025, 3, 2), "label": 1},
    {"user_id": 3, "merchant_id": "m9", "event_timestamp": datetime(2025, 3, 2), "label": 0},
]
ACTIVITY_ROWS = [
    {"user_id": 1, "event_ts": datetime(2025, 3, 1), "created_ts": datetime(2025, 3, 1, 0, 1), "amount": 5.0,
     "merchant": "m1"},
    {"user_id": 1, "event_ts": datetime(2025, 3, 1), "created_ts": datetime(2025, 3, 1, 0, 2), "amount": 6.0,
     "merchant": "m2"},
    {"user_id": 2, "event_ts": datetime(2025, 3, 6), "created_ts": None, "amount": 7.0, "merchant": "m1"},
    {"user_id": 2, "event_ts": datetime(2025, 1, 1), "created_ts": None, "amount": 1.0, "merchant": "m1"},
]
PAIR_ROWS = [
    {"user_id": 1, "merchant_id": "m1", "event_ts": datetime(2025, 3, 1), "txn_count": 3,
     "first_seen": datetime(2025, 1, 1)},
    {"user_id": 1, "merchant_id": "m2", "event_ts": datetime(2025, 4, 19), "txn_count": 1,
     "first_seen": datetime(2025, 4, 19)},
]
PROFILE_ROWS = [{"user_id": 1, "event_ts": datetime(2024, 1, 1), "age": 40},
                {"user_id": 2, "event_ts": datetime(2026, 1, 1), "age": 30}]


def _load(engine, db_schema: str, name: str, rows: list[dict], schema: pa.Schema | None = None) -> None:
    table = pa.Table.from_pylist(rows, schema=schema)
    engine.register_arrow(f"stage_{name}", table)
    engine.execute(f'CREATE TABLE "{db_schema}"."{name}" AS SELECT * FROM "stage_{name}"')
    engine.unregister(f"stage_{name}")


@pytest.mark.parametrize("dialect", ["duckdb", pytest.param("postgres", marks=pytest.mark.postgres)])
@pytest.mark.parametrize("scenario", ["one_view_ttl_created_at", "three_views_full_names", "indexed_views"])
def test_snapshot_sql_runs_and_equals_the_reference(scenario: str, dialect: str) -> None:
    engine = duckdb_engine() if dialect == "duckdb" else postgres_engine()
    # The snapshots name the schema fl_snapshot; each run gets its own copy of it, so runs in
    # parallel (xdist workers, two CI jobs on one PostgreSQL) never drop each other's tables.
    db_schema = f"{SCHEMA}_{uuid.uuid4().hex[:8]}"
    try:
        engine.execute(f'CREATE SCHEMA "{db_schema}"')
        _load(engine, db_schema, "entities", ENTITY_ROWS)
        _load(engine, db_schema, "user_activity", ACTIVITY_ROWS, pa.schema(
            [("user_id", pa.int64()), ("event_ts", pa.timestamp("us")), ("created_ts", pa.timestamp("us")),
             ("amount", pa.float64()), ("merchant", pa.string())]))
        _load(engine, db_schema, "user_merchant", PAIR_ROWS)
        _load(engine, db_schema, "user_profile", PROFILE_ROWS)
        sql = (SNAPSHOTS / f"{scenario}.{dialect}.sql").read_text()
        assert sql.count(f'"{SCHEMA}".') >= 2  # the snapshot really reads the fixed schema
        got = engine.fetch_arrow(sql.replace(f'"{SCHEMA}".', f'"{db_schema}".')).to_pylist()
    finally:
        try:
            engine.execute(f'DROP SCHEMA IF EXISTS "{db_schema}" CASCADE')
        finally:
            engine.close()
    spine, requested, full = SCENARIOS[scenario]
    rows = {"user_activity": ACTIVITY_ROWS, "user_merchant": PAIR_ROWS, "user_profile": PROFILE_ROWS}
    expected = reference_training_set(
        ENTITY_ROWS, [ViewData(v, rows[v.name], feats) for v, feats in requested], "event_timestamp",
        full_feature_names=full,
    )
    assert got == expected
    assert any(value is not None for r in got for k, value in r.items() if k not in ENTITY_ROWS[0])


def test_postgres_probes_indexed_views_and_only_where_lateral_exists() -> None:
    text = (SNAPSHOTS / "indexed_views.postgres.sql").read_text()
    assert text.count("LEFT JOIN LATERAL") == 2 and '"__fl_v2_events"' in text  # profile: no index
    assert 'AS MATERIALIZED' in text  # the window view reads the numbered spine twice
    unique_probe = text.split('"user_merchant" AS "f"')[1].split("LIMIT 1")[0]
    assert 'ORDER BY\n    "f"."event_ts" DESC\n' in unique_probe  # unique (keys, time): no tie-break
    activity_probe = text.split('"user_activity" AS "f"')[1].split("LIMIT 1")[0]
    assert '"f"."created_ts" DESC NULLS LAST' in activity_probe
    for dialect in ("duckdb", "spark", "bigquery", "trino", "snowflake"):
        assert "JOIN LATERAL" not in (SNAPSHOTS / f"indexed_views.{dialect}.sql").read_text()
    only_lateral = plan_outputs([(PAIR, list(PAIR.features))], indexed_views={"user_merchant"})
    sql = training_set_sql(WAREHOUSE_SPINE, only_lateral, "postgres", pretty=False)
    assert "LATERAL" in sql and "MATERIALIZED" not in sql  # the spine is read once: no copy
    forced = training_set_sql(WAREHOUSE_SPINE, only_lateral, "postgres", strategy="window", pretty=False)
    assert "LATERAL" not in forced
    with pytest.raises(InputError, match="Dialect 'spark' has no correlated LATERAL join"):
        pit_strategy("spark", "lateral")
    with pytest.raises(InputError, match="Dialect 'postgres' has no modelled LAST"):
        pit_strategy("postgres", "carry")
    spark = (SNAPSHOTS / "three_views_full_names.spark.sql").read_text()
    # Spark: a view without TTL carried forward (no join back), one with a TTL by range join + MAX
    # of one struct (its features all orderable, so all among the ranks)
    assert "IGNORE NULLS" in spark and "MAX(\n      STRUCT(" in spark and "MONOTONICALLY_INCREASING_ID" in spark
    assert "MAX_BY" not in spark and "FROM_UTC_TIMESTAMP" not in spark
    assert "MONOTONICALLY_INCREASING_ID()" in spark  # the spine is read once: no global sort


def test_range_best_row_is_max_of_the_ranks_unless_a_feature_cannot_be_ordered() -> None:
    from feature_layer.sql.range_join import best_row

    f = [Feature("amount", "v", "float64"), Feature("merchant", "v", "string")]
    ranks = [exp.column("event_ts", "f"), exp.column("created_ts", "f"), exp.column("amount", "f"),
             exp.column("merchant", "f")]
    picked = best_row(f, [r.copy() for r in ranks]).sql("spark")
    assert picked == (
        "MAX(STRUCT(f.event_ts AS `__fl_o0`, f.created_ts AS `__fl_o1`, f.amount AS `amount`, f.merchant AS `merchant`))"
    )
    blob = [*f, Feature("payload", "v", "bytes")]  # not orderable: not a rank, so MAX_BY of its own struct
    picked = best_row(blob, [r.copy() for r in ranks]).sql("spark")
    assert picked.startswith("MAX_BY(STRUCT(`f`.`amount` AS `amount`, `f`.`merchant` AS `merchant`, `f`.`payload` AS `payload`), ")
    assert picked.endswith("STRUCT(f.event_ts AS `__fl_o0`, f.created_ts AS `__fl_o1`, f.amount AS `__fl_o2`, "
                           "f.merchant AS `__fl_o3`))")


def test_range_join_hashes_only_keys_that_are_integers_on_both_sides() -> None:
    import dataclasses

    import pyarrow as pa

    from feature_layer.offline.entity import agreed_key_types
    from feature_layer.sql.range_join import _key_and_bucket

    bucket = exp.column("b", "f")
    def sql(types: tuple[str, ...]) -> str:
        return exp.and_(*_key_and_bucket(("user_id", "shop"), types, bucket.copy())).sql("spark").replace("`", "")

    hashed = sql(("int64", "int64"))
    assert hashed == (
        "XXHASH64(TRY_CAST(f.user_id AS BIGINT), TRY_CAST(f.shop AS BIGINT), f.b) = "
        "XXHASH64(TRY_CAST(s.user_id AS BIGINT), TRY_CAST(s.shop AS BIGINT), s.__fl_bk) "
        "AND COALESCE(f.user_id = s.user_id, FALSE) AND COALESCE(f.shop = s.shop, FALSE) "
        "AND NOT f.user_id IS NULL AND NOT f.shop IS NULL AND NOT s.user_id IS NULL AND NOT s.shop IS NULL"
    )  # null keys filtered before the join: Spark infers no IS NOT NULL from the COALESCE checks
    for types in (("int64", "string"), ("int64", "unknown"), (), ("int64",)):
        assert sql(types) == "f.user_id = s.user_id AND f.shop = s.shop AND f.b = s.__fl_bk"
    view = dataclasses.replace(PAIR, join_keys=("user_id", "shop"))
    schema = pa.schema([("user_id", pa.int32()), ("shop", pa.decimal128(10, 0)), ("ts", pa.timestamp("us"))])
    agreed = agreed_key_types(schema, [view], {(view.name, "user_id"): "int64", (view.name, "shop"): "int64"})
    assert agreed == {(view.name, "user_id"): "int64"}  # decimal vs int64 compare exactly, but hash apart
    outputs = plan_outputs([(view, list(view.features))], key_types=agreed)
    assert outputs[0].key_types == ("int64", "unknown")


def test_spine_numbering_is_stable_where_ctes_are_not_materialized() -> None:
    unknown = EntitySpine(source=exp.Table(this=exp.to_identifier("e", quoted=True)), timestamp="ts")
    outputs = plan_outputs([(PAIR, list(PAIR.features))])
    bigquery = training_set_sql(unknown, outputs, "bigquery", pretty=False)
    assert "ROW_NUMBER() OVER (ORDER BY `src`.`user_id`, `src`.`merchant_id`, `src`.`ts`)" in bigquery
    postgres = training_set_sql(unknown, outputs, "postgres", pretty=False)
    assert '"__fl_spine" AS MATERIALIZED' in postgres and "ROW_NUMBER() OVER () AS" in postgres
    query = EntitySpine(source=sqlglot.parse_one("SELECT * FROM e"), timestamp="ts")
    assert 'AS "src"' in training_set_sql(query, outputs, "postgres", pretty=False)
