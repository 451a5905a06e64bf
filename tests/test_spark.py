"""Apache Spark for real: the example project built by dbt-spark (session method), training
sets, materialization and statistics on it, the Spark golden SQL and the point-in-time
properties executed on Spark against the brute-force reference.

One Spark session per test session: ``spark_project`` builds the example project in this
process with dbt-spark, whose session every test here then shares (feature_layer finds it
with ``SparkSession.active()``). All tests are in xdist group ``spark``, so only one worker
starts a JVM. A test that cannot start Spark fails with how to get Java and pyspark.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import clean_project_env, copy_example_project
from hypothesis import Phase, given, settings
from test_point_in_time_properties import SETTINGS, run_scenario, scenarios
from test_point_in_time_sql import (
    ACTIVITY_ROWS,
    ENTITY_ROWS,
    PAIR_ROWS,
    PROFILE_ROWS,
    SCENARIOS,
    SCHEMA,
    SNAPSHOTS,
)

from feature_layer.clock import FixedClock
from feature_layer.errors import WarehouseError
from tests.offline_helpers import ViewData, reference_training_set

pytestmark = [pytest.mark.spark, pytest.mark.xdist_group("spark")]

SPARK_ROWS = 3_000
SPARK_SEED = 11
SPARK_HELP = (
    "These tests need Apache Spark and never skip. Install Java 17 and pyspark:\n"
    "    apt-get install openjdk-17-jre-headless\n"
    "    pip install -c requirements.lock -e '.[dev]'   (or pip install 'feature_layer[spark]')"
)


def _require_spark() -> None:
    try:
        import pyspark  # noqa: F401
    except ImportError as exc:
        pytest.fail(f"{SPARK_HELP}\n({exc})", pytrace=False)
    if not (shutil.which("java") or os.environ.get("JAVA_HOME")):
        pytest.fail(f"{SPARK_HELP}\n(no `java` on PATH and JAVA_HOME is not set)", pytrace=False)


def _build(project: Path, target: str) -> None:
    from feature_layer.dbt.runner import run_dbt

    # The profile's one thread, raised to 4 here: each Spark node is mostly per-statement latency,
    # and the one session runs independent nodes side by side (~3.5 s off a 36 s build, 2 cores).
    threads = ["--threads", "4"] if target == "spark" else []
    with clean_project_env():
        run_dbt(["build", *threads], project, target=target, quiet=True)
        run_dbt(["docs", "generate"], project, target=target, quiet=True)


@pytest.fixture(scope="session")
def spark_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example project (3k rows) built on the ``spark`` target in this process."""
    from feature_layer.demo.data import generate_demo_data

    _require_spark()
    project = copy_example_project(tmp_path_factory.mktemp("spark_example_project"))
    generate_demo_data(project / "data" / "raw", rows=SPARK_ROWS, seed=SPARK_SEED)
    try:
        _build(project, "spark")
    except Exception as exc:  # noqa: BLE001 - a JVM that cannot start surfaces here
        pytest.fail(f"dbt build --target spark failed: {exc}\n{SPARK_HELP}", pytrace=False)
    return project


@pytest.fixture(scope="session")
def duckdb_twin(spark_project: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same project and the same raw files, built on DuckDB: the second engine."""
    project = copy_example_project(tmp_path_factory.mktemp("spark_twin_duckdb"))
    shutil.copytree(spark_project / "data", project / "data")
    _build(project, "duckdb")
    return project


@pytest.fixture(scope="session")
def spark_engine(spark_project: Path):
    from feature_layer.config import load_settings, warehouse_settings
    from feature_layer.offline.engines import connect

    engine = connect(warehouse_settings(load_settings(spark_project, target="spark")))
    engine.execute("CREATE DATABASE IF NOT EXISTS fl_test")
    yield engine
    engine.close()


def _now(project: Path) -> datetime:
    from conftest import data_end

    return data_end(project)


ENTITY_SQL = (
    "select transaction_id, user_id, merchant_id, occurred_at as event_timestamp "
    "from {schema}.fraud_training_labels"
)


def _normalised(table: pa.Table) -> list[dict]:
    """Rows sorted by transaction id, timestamps as UTC instants, floats rounded."""
    out = []
    for row in table.to_pylist():
        clean = {}
        for key, value in row.items():
            if isinstance(value, datetime):
                value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
            elif isinstance(value, float):
                value = round(value, 9)
            clean[key] = value
        out.append(clean)
    return sorted(out, key=lambda r: r["transaction_id"])


# --- the example project ---------------------------------------------------------------


def test_example_project_builds_on_spark_with_every_feature_view(spark_project: Path, spark_engine) -> None:
    manifest = json.loads((spark_project / "target" / "manifest.json").read_text())
    assert manifest["metadata"]["adapter_type"] == "spark"
    warehouse = spark_project / "target" / "spark" / "warehouse" / "feature_layer.db"
    for view in ("user_transaction_features", "merchant_risk_features", "user_merchant_features",
                 "user_profile_features", "fraud_training_labels"):
        assert (warehouse / view).is_dir(), view
        count = spark_engine.fetch_arrow(f"select count(*) from feature_layer.{view}").column(0)[0].as_py()
        assert count and count > 0, view


def test_training_set_on_spark_equals_duckdb_on_the_same_data(spark_project: Path, duckdb_twin: Path) -> None:
    from feature_layer.client import FeatureStore

    results = {}
    for name, project, target in (("spark", spark_project, "spark"), ("duckdb", duckdb_twin, "duckdb")):
        schema = "feature_layer" if target == "spark" else "main"
        with clean_project_env(), FeatureStore(project, target=target, clock=FixedClock(_now(duckdb_twin))) as store:
            with store.get_training_set(ENTITY_SQL.format(schema=schema), service="fraud_model_v1",
                                        full_feature_names=True) as training:
                results[name] = training.to_arrow()
    spark, duck = results["spark"], results["duckdb"]
    assert spark.num_rows == SPARK_ROWS
    assert spark.column_names == duck.column_names
    for field in spark.schema:  # the registry's logical types: same Arrow types on both engines
        if field.name != "event_timestamp":
            assert field.type == duck.schema.field(field.name).type, field.name
    assert _normalised(spark) == _normalised(duck)
    features = [c for c in spark.column_names if "__" in c]
    assert all(spark.column(c).null_count < spark.num_rows for c in features)  # values present


def test_training_set_to_parquet_and_to_table_on_spark(spark_project: Path, spark_engine, tmp_path: Path) -> None:
    from feature_layer.client import FeatureStore

    with clean_project_env(), FeatureStore(spark_project, target="spark") as store:
        entities = pa.table({
            "user_id": pa.array([1, 2, 3, 999], pa.int64()),
            "event_timestamp": pa.array([datetime(2025, 6, 1)] * 4, pa.timestamp("us")),
        })
        with store.get_training_set(entities, features=["user_profile_features.country",
                                                        "user_profile_features.birth_year"]) as training:
            expected = training.to_arrow()
            path = training.to_parquet(tmp_path / "training.parquet", batch_size=2)
            name = f"feature_layer.ts_{uuid.uuid4().hex[:8]}"
            training.to_table(name)
            training.to_table(name, replace=True)
    assert expected.column("user_id").to_pylist() == [1, 2, 3, 999]
    assert expected.column("country").to_pylist()[3] is None
    assert any(v is not None for v in expected.column("country").to_pylist())
    assert pq.read_table(path).equals(expected)
    stored = spark_engine.fetch_arrow(f"select user_id, country, birth_year from {name} order by user_id")
    assert stored.column("country").to_pylist() == expected.column("country").to_pylist()
    assert stored.column("birth_year").to_pylist() == expected.column("birth_year").to_pylist()


def test_failed_replace_leaves_the_previous_table(spark_engine) -> None:
    from sqlglot import exp

    name = f"ts_keep_{uuid.uuid4().hex[:8]}"
    spark_engine.execute(f"CREATE TABLE fl_test.{name} USING parquet AS SELECT 1 AS x")
    table = exp.to_table(f"fl_test.{name}", dialect="spark")
    with pytest.raises(WarehouseError, match="failed to run"):
        spark_engine.replace_table(table, exp.select("x").from_("fl_test.no_such_table"))
    assert spark_engine.fetch_arrow(f"select x from fl_test.{name}").column(0).to_pylist() == [1]


def test_schema_without_a_job_is_the_fetched_schema_and_null_timestamps_are_probed(spark_engine) -> None:
    from feature_layer.errors import InputError
    from feature_layer.offline.entity import check_entity_nulls, prepare_entities

    query = (
        "SELECT CAST(1 AS BIGINT) AS i, 1.5D AS d, CAST(2.25 AS DECIMAL(10, 2)) AS m, 'x' AS s, DATE'2025-01-02' AS dt,"
        " TIMESTAMP'2025-01-02 03:04:05' AS ts, TIMESTAMP_NTZ'2025-01-02 03:04:05' AS ntz, ARRAY(1, 2) AS a,"
        " NAMED_STRUCT('k', 1) AS st, true AS b"
    )
    tracker = spark_engine.session.sparkContext.statusTracker()
    jobs = len(tracker.getJobIdsForGroup())
    schema = spark_engine.schema_of(query)
    assert len(tracker.getJobIdsForGroup()) == jobs  # analysis only
    assert schema == spark_engine.fetch_arrow(query).schema
    name = f"fl_test.ents_{uuid.uuid4().hex[:8]}"
    spark_engine.execute(
        f"CREATE TABLE {name} USING parquet AS SELECT * FROM VALUES (1, TIMESTAMP'2025-01-01 00:00:00'), (2, NULL),"
        " (3, NULL) AS t(user_id, event_timestamp)"
    )
    with pytest.raises(InputError, match=r"2 entity row\(s\) have a null timestamp in column 'event_timestamp'"):
        check_entity_nulls(spark_engine, prepare_entities(spark_engine, name, []))
    spark_engine.execute(f"DROP TABLE {name}")
    spark_engine.execute(
        f"CREATE TABLE {name} USING parquet AS SELECT * FROM VALUES (1, TIMESTAMP'2025-01-01 00:00:00')"
        " AS t(user_id, event_timestamp)"
    )
    prepared = prepare_entities(spark_engine, name, [])
    check_entity_nulls(spark_engine, prepared)  # no null: the isEmpty probe only
    assert prepared.columns == ("user_id", "event_timestamp")
    assert spark_engine.has_rows(sqlglot_select(name)) and not spark_engine.has_rows(sqlglot_select(name).where("false"))


def sqlglot_select(table: str):  # noqa: ANN201
    from sqlglot import exp

    return exp.select("*").from_(exp.to_table(table, dialect="spark"))


def test_materialize_and_statistics_on_spark_match_duckdb(spark_project: Path, duckdb_twin: Path, tmp_path: Path) -> None:
    from feature_layer.client import FeatureStore

    now = _now(duckdb_twin)
    online = {}
    for name, project, target in (("spark", spark_project, "spark"), ("duckdb", duckdb_twin, "duckdb")):
        store_path = tmp_path / f"{name}.sqlite"
        with clean_project_env(), FeatureStore(project, target=target, online_store=f"sqlite:///{store_path}",
                                               clock=FixedClock(now)) as store:
            result = store.materialize()
            assert all(v.statistics for v in result.views), result
            online[name] = store.get_online_features(
                ["user_profile_features.country", "user_profile_features.birth_year"],
                [{"user_id": u} for u in range(1, 40)],
            ).to_dict()
    spark, duck = online["spark"], online["duckdb"]
    assert spark == duck
    assert any(v is not None for v in spark["country"])


def _start_cli(project: Path, *args: str, cwd: Path, now: datetime) -> subprocess.Popen:
    cli = Path(sys.executable).parent / "feature-layer"
    return subprocess.Popen(
        [str(cli), "--project-dir", str(project), "--target", "spark", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=cwd,
        env={**os.environ, "FEATURE_LAYER_NOW": now.isoformat()},
    )


def _finish(process: subprocess.Popen) -> str:
    try:
        out, err = process.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate()
    assert process.returncode == 0, out + err
    return out


def test_cli_in_another_process_reads_the_spark_warehouse_by_path(spark_project: Path, spark_engine,
                                                                   duckdb_twin: Path, tmp_path: Path) -> None:
    """A separate process never opens dbt's Derby metastore (this process holds it): its own
    session with an in-memory catalog over the warehouse folder's tables. The SQL it prints
    (after probing the warehouse's column types there) gives, run here, the training set."""
    from feature_layer.client import FeatureStore

    # Two processes, each with its own JVM, started together (each mostly waits for its JVM to start).
    materialize = _start_cli(spark_project, "materialize", "--json", "--no-progress", cwd=tmp_path,
                             now=_now(duckdb_twin))
    sql = _start_cli(spark_project, "sql", "training-set", "--entity-table", "feature_layer.fraud_training_labels",
                     "--timestamp-column", "occurred_at", "--service", "fraud_model_v1", "--full-feature-names",
                     cwd=tmp_path, now=_now(duckdb_twin))
    try:
        printed_sql = _finish(sql)
        written = _finish(materialize)
    finally:
        for process in (sql, materialize):
            if process.poll() is None:
                process.kill()
                process.communicate()
    printed = spark_engine.fetch_arrow(printed_sql.split("\n\n", 1)[-1] if printed_sql.startswith("--") else printed_sql)
    with clean_project_env(), FeatureStore(spark_project, target="spark") as store:
        with store.get_training_set("feature_layer.fraud_training_labels", service="fraud_model_v1",
                                    full_feature_names=True, timestamp_column="occurred_at") as training:
            expected = training.to_arrow()
    assert printed.num_rows == expected.num_rows == SPARK_ROWS
    assert _normalised(printed.select(expected.column_names).cast(expected.schema)) == _normalised(expected)
    assert '"rows_written"' in written, written
    assert '"rows_written": 0' not in written.replace('"rows_written":0', '"rows_written": 0'), written


# --- the Spark golden SQL, executed -----------------------------------------------------


def _load(engine, db: str, name: str, rows: list[dict], schema: pa.Schema | None = None) -> None:
    staging = f"stage_{uuid.uuid4().hex[:8]}"
    engine.register_arrow(staging, pa.Table.from_pylist(rows, schema=schema))
    engine.execute(f"CREATE TABLE `{db}`.`{name}` USING parquet AS SELECT * FROM `{staging}`")
    engine.unregister(staging)


@pytest.mark.parametrize("scenario", ["one_view_ttl_created_at", "three_views_full_names"])
def test_spark_snapshot_sql_runs_and_equals_the_reference(spark_engine, scenario: str) -> None:
    db = f"{SCHEMA}_{uuid.uuid4().hex[:8]}"
    spark_engine.execute(f"CREATE DATABASE `{db}`")
    try:
        _load(spark_engine, db, "entities", ENTITY_ROWS)
        _load(spark_engine, db, "user_activity", ACTIVITY_ROWS, pa.schema(
            [("user_id", pa.int64()), ("event_ts", pa.timestamp("us")), ("created_ts", pa.timestamp("us")),
             ("amount", pa.float64()), ("merchant", pa.string())]))
        _load(spark_engine, db, "user_merchant", PAIR_ROWS)
        _load(spark_engine, db, "user_profile", PROFILE_ROWS)
        sql = (SNAPSHOTS / f"{scenario}.spark.sql").read_text()
        assert sql.count(f"`{SCHEMA}`.") >= 2  # the snapshot really reads the fixed schema
        got = spark_engine.fetch_arrow(sql.replace(f"`{SCHEMA}`.", f"`{db}`.")).to_pylist()
    finally:
        spark_engine.execute(f"DROP DATABASE IF EXISTS `{db}` CASCADE")
    spine, requested, full = SCENARIOS[scenario]
    rows = {"user_activity": ACTIVITY_ROWS, "user_merchant": PAIR_ROWS, "user_profile": PROFILE_ROWS}
    expected = reference_training_set(
        ENTITY_ROWS, [ViewData(v, rows[v.name], feats) for v, feats in requested], "event_timestamp",
        full_feature_names=full,
    )
    # Spark's TIMESTAMP is an instant: the entity timestamps come back UTC-aware
    got = [{k: (v.astimezone(UTC).replace(tzinfo=None) if isinstance(v, datetime) and v.tzinfo else v)
            for k, v in r.items()} for r in got]
    # numbered by the entity columns' values (Spark keeps no scan order): compare as multisets
    assert sorted(got, key=repr) == sorted(expected, key=repr)
    assert any(value is not None for r in got for k, value in r.items() if k not in ENTITY_ROWS[0])


# --- point-in-time properties on Spark ----------------------------------------------------


@settings(SETTINGS, max_examples=12, phases=(Phase.explicit, Phase.generate))  # no minutes-long shrinking
@given(scenario=scenarios())
def test_spark_window_formulation_matches_reference(spark_engine, scenario):
    # the default: views with a TTL by range join + MAX_BY, the others carried forward
    run_scenario(spark_engine, scenario, None)


@settings(SETTINGS, max_examples=4, phases=(Phase.explicit, Phase.generate))
@given(scenario=scenarios())
def test_spark_forced_carry_formulation_matches_reference(spark_engine, scenario):
    # strategy="carry": every view carried forward, TTL or not (the range join left out)
    run_scenario(spark_engine, scenario, "carry")


def test_spark_without_pyspark_names_the_extra(tmp_path: Path) -> None:
    code = (
        "import sys; sys.modules['pyspark'] = None\n"
        "from feature_layer.errors import FeatureLayerError\n"
        "from feature_layer.offline.spark import SparkEngine\n"
        "try:\n    SparkEngine()\nexcept FeatureLayerError as exc:\n    print(exc)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "The spark target needs pyspark" in done.stdout
    assert "pip install 'feature_layer[spark]'" in done.stdout


def test_spark_target_settings_come_from_the_profile(spark_project: Path) -> None:
    from feature_layer.config import load_settings, warehouse_settings

    settings = warehouse_settings(load_settings(spark_project, target="spark"))
    assert settings.type == "spark" and settings.schema == "feature_layer"
    assert settings.path == (spark_project / "target" / "spark" / "warehouse").resolve()
    assert settings.options["spark.master"] == "local[2]"
    assert settings.options["spark.sql.session.timeZone"] == "UTC"


# --- the range join's time buckets --------------------------------------------------------


def test_range_join_buckets_keep_every_match_at_their_edges(spark_engine) -> None:
    """The TTL range join is also an equality on a TTL-wide time bucket (range_join.py). Event
    and as-of times on the buckets' edges (exact multiples of the TTL, as-of − TTL exactly), on
    both sides of 1970 (negative microseconds: DIV truncates towards zero there), one key holding
    thousands of rows, naive and UTC-aware event times, in a UTC and a non-UTC session: every
    entity row gets the reference's features."""
    import numpy as np

    from feature_layer.offline.training_set import build_training_set
    from tests.offline_helpers import load_table, make_view

    ttl = timedelta(hours=3)
    rng = np.random.default_rng(5)
    start = datetime(1969, 12, 30)
    step = timedelta(minutes=20)  # the TTL is 9 steps: many events sit exactly on an edge
    events = [{"user_id": int(u), "event_ts": start + step * int(i), "created_ts": None,
               "amount": float(rng.integers(0, 100))}
              for i in range(0, 600) for u in (1, 2) if rng.random() < 0.8]
    as_of = [start + step * int(i) for i in rng.integers(-20, 700, 400)]
    as_of += [e["event_ts"] + ttl for e in events[:50]] + [start + ttl * k for k in range(0, 60)]
    entities = [{"row_id": i, "user_id": int(rng.integers(1, 3)), "event_timestamp": t} for i, t in enumerate(as_of)]
    feature_schema = pa.schema([("user_id", pa.int64()), ("event_ts", pa.timestamp("us")),
                                ("created_ts", pa.timestamp("us")), ("amount", pa.float64())])
    expected = reference_training_set(entities, [ViewData(make_view("v", None, ttl=ttl), events,
                                                          list(make_view("v", None, ttl=ttl).features))],
                                      "event_timestamp")
    want = sorted((r["row_id"], r["amount"]) for r in expected)
    assert sum(a is not None for _, a in want) > 300 and sum(a is None for _, a in want) > 20
    entity_table = load_table(spark_engine, f"ents_{uuid.uuid4().hex[:6]}", pa.Table.from_pylist(entities))
    for aware in (False, True):
        schema = feature_schema
        if aware:
            schema = pa.schema([f.with_type(pa.timestamp("us", tz="UTC")) if f.name.endswith("_ts") else f
                                for f in feature_schema])
        relation = load_table(spark_engine, f"buckets_{uuid.uuid4().hex[:6]}", pa.Table.from_pylist(events, schema=schema))
        view = make_view("v", relation, ttl=ttl)
        for zone in ("UTC", "America/New_York"):
            spark_engine.session.conf.set("spark.sql.session.timeZone", zone)
            try:
                training = build_training_set(spark_engine, f"fl_test.{entity_table.identifier}",
                                              [(view, list(view.features))])
                assert "__fl_bk" in training.sql()  # the bucketed range join, not the carried window
                got = sorted((r["row_id"], r["amount"]) for r in training.to_arrow().to_pylist())
            finally:
                spark_engine.session.conf.set("spark.sql.session.timeZone", "UTC")
            assert got == want, (aware, zone)


def test_range_join_hashes_integer_keys_of_any_width_and_keeps_every_match(spark_engine) -> None:
    """Integer keys join on one hashed BIGINT (``XXHASH64`` of the keys and the time bucket) with
    each key's equality checked after it (range_join._key_and_bucket). An entity table whose key
    is a 32-bit INT against a BIGINT view, keys beyond 32 bits and negative ones, a null key and
    an in-memory input: every row gets the reference's features; a string key joins on itself."""
    import numpy as np

    from feature_layer.offline.training_set import build_training_set
    from tests.offline_helpers import load_table, make_view

    ttl = timedelta(hours=6)
    rng = np.random.default_rng(11)
    start = datetime(2026, 3, 1)
    small = [1, 2, 3, -7, 2**31 - 1]
    big = [2**40 + 5, -(2**62), 2**63 - 1]
    events = [{"user_id": u, "event_ts": start + timedelta(minutes=int(m)), "created_ts": None,
               "amount": float(rng.integers(0, 1000))}
              for u in small + big for m in rng.integers(0, 3 * 24 * 60, 40)]
    view_ref = make_view("v", None, ttl=ttl)
    relation = load_table(spark_engine, f"hashed_{uuid.uuid4().hex[:6]}", pa.Table.from_pylist(
        events, schema=pa.schema([("user_id", pa.int64()), ("event_ts", pa.timestamp("us")),
                                  ("created_ts", pa.timestamp("us")), ("amount", pa.float64())])))
    view = make_view("v", relation, ttl=ttl)

    def entities_of(users: list[int | None]) -> list[dict]:
        return [{"row_id": i, "user_id": users[i % len(users)],
                 "event_timestamp": start + timedelta(minutes=int(m))}
                for i, m in enumerate(rng.integers(-60, 3 * 24 * 60 + 600, 300))]

    def want(entities: list[dict]) -> list[tuple]:
        expected = reference_training_set(entities, [ViewData(view_ref, events, list(view_ref.features))],
                                          "event_timestamp")
        return sorted((r["row_id"], r["amount"]) for r in expected)

    narrow = entities_of([*small, None])
    narrow_table = pa.Table.from_pylist(narrow, schema=pa.schema([("row_id", pa.int64()), ("user_id", pa.int32()),
                                                                  ("event_timestamp", pa.timestamp("us"))]))
    wide = entities_of([*small, *big, 99])
    for entity_df, rows in ((f"fl_test.{load_table(spark_engine, f'e32_{uuid.uuid4().hex[:6]}', narrow_table).identifier}", narrow),
                            (pa.Table.from_pylist(wide), wide)):
        training = build_training_set(spark_engine, entity_df, [(view, list(view.features))])
        assert "XXHASH64" in training.sql() and "COALESCE(`f`.`user_id` = `s`.`user_id`, FALSE)" in training.sql()
        got = sorted((r["row_id"], r["amount"]) for r in training.to_arrow().to_pylist())
        expected = want(rows)
        assert sum(a is not None for _, a in expected) > 100 and any(a is None for _, a in expected)
        assert got == expected

    text = [dict(e, user_id=f"u{e['user_id']}") for e in events]
    text_relation = load_table(spark_engine, f"texts_{uuid.uuid4().hex[:6]}", pa.Table.from_pylist(
        text, schema=pa.schema([("user_id", pa.string()), ("event_ts", pa.timestamp("us")),
                                ("created_ts", pa.timestamp("us")), ("amount", pa.float64())])))
    text_view = make_view("v", text_relation, ttl=ttl, key_types=["string"])
    entities = [dict(e, user_id=f"u{e['user_id']}") for e in wide]
    training = build_training_set(spark_engine, pa.Table.from_pylist(entities), [(text_view, list(text_view.features))])
    assert "XXHASH64" not in training.sql()
    expected = reference_training_set(entities, [ViewData(make_view("v", None, ttl=ttl, key_types=["string"]), text,
                                                          list(text_view.features))], "event_timestamp")
    assert sorted((r["row_id"], r["amount"]) for r in training.to_arrow().to_pylist()) == sorted(
        (r["row_id"], r["amount"]) for r in expected)
    # a registry that says int64 for a column the warehouse holds as STRING (a stale catalog): the
    # warehouse's own type decides, so the key is not hashed ('42.0' = 42 in Spark, a NULL hash)
    stale = make_view("v", text_relation, ttl=ttl, key_types=["int64"])
    numbers = pa.Table.from_pylist(wide[:20])
    assert "XXHASH64" not in build_training_set(spark_engine, numbers, [(stale, list(stale.features))]).sql()


def test_range_join_hashed_keys_with_nulls_collisions_and_ansi_keep_every_match(spark_engine, monkeypatch) -> None:
    """A two-key integer view whose feature and entity rows hold null keys ((1, NULL), (NULL, 1),
    (NULL, NULL)): the hashed join matches exactly the reference's rows, also with a hash that
    collides for half of all keys (the key equalities and the window decide, not the hash) and
    with ANSI mode on."""
    import numpy as np
    from sqlglot import exp

    from feature_layer.offline.training_set import build_training_set
    from feature_layer.sql import range_join
    from tests.offline_helpers import load_table, make_view

    ttl = timedelta(hours=4)
    rng = np.random.default_rng(23)
    start = datetime(2026, 5, 1)
    pairs = [(1, 1), (1, 2), (2, 1), (1, None), (None, 1), (None, None), (3, 3)]
    events = [{"user_id": u, "shop": sh, "event_ts": start + timedelta(minutes=int(m)), "created_ts": None,
               "amount": float(rng.integers(0, 1000))}
              for u, sh in pairs for m in rng.integers(0, 2 * 24 * 60, 60)]
    schema = pa.schema([("user_id", pa.int64()), ("shop", pa.int64()), ("event_ts", pa.timestamp("us")),
                        ("created_ts", pa.timestamp("us")), ("amount", pa.float64())])
    relation = load_table(spark_engine, f"pairs_{uuid.uuid4().hex[:6]}", pa.Table.from_pylist(events, schema=schema))
    view = make_view("v", relation, keys=("user_id", "shop"), ttl=ttl)
    entities = [{"row_id": i, "user_id": pairs[i % len(pairs)][0], "shop": pairs[i % len(pairs)][1],
                 "event_timestamp": start + timedelta(minutes=int(m))}
                for i, m in enumerate(rng.integers(-60, 2 * 24 * 60 + 300, 500))]
    entity_table = pa.Table.from_pylist(entities, schema=pa.schema(
        [("row_id", pa.int64()), ("user_id", pa.int64()), ("shop", pa.int64()), ("event_timestamp", pa.timestamp("us"))]))
    expected = reference_training_set(
        entities, [ViewData(make_view("v", None, keys=("user_id", "shop"), ttl=ttl), events, list(view.features))],
        "event_timestamp")
    want = sorted((r["row_id"], r["amount"]) for r in expected)
    assert sum(a is not None for _, a in want) > 150 and sum(a is None for _, a in want) > 150

    def run() -> list[tuple]:
        training = build_training_set(spark_engine, entity_table, [(view, list(view.features))])
        assert "XXHASH64" in training.sql()
        return sorted((r["row_id"], r["amount"]) for r in training.to_arrow().to_pylist())

    assert run() == want
    hashed = range_join.hash_key
    monkeypatch.setattr(range_join, "hash_key", lambda parts: exp.Anonymous(
        this="PMOD", expressions=[hashed(parts), exp.Literal.number(2)]))
    assert run() == want  # two hash values in all: every other key pair collides
    monkeypatch.setattr(range_join, "hash_key", hashed)
    spark_engine.session.conf.set("spark.sql.ansi.enabled", "true")
    try:
        assert run() == want
    finally:
        spark_engine.session.conf.set("spark.sql.ansi.enabled", "false")
