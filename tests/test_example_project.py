"""The example fraud project builds on DuckDB and PostgreSQL, its features are
point-in-time safe, and a project installing it as a package gets only the macros."""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path
from typing import Any

import duckdb
import pytest
import yaml
from conftest import EXAMPLE_SEED, FIXTURES_DIR, PostgresExampleProject, clean_project_env, copy_example_project

from feature_layer.dbt.runner import run_dbt
from feature_layer.errors import FeatureLayerError

FEATURE_VIEWS = {
    "user_transaction_features": ["user_id"],
    "merchant_risk_features": ["merchant_id"],
    "user_merchant_features": ["user_id", "merchant_id"],
    "user_profile_features": ["user_id"],
}


def _manifest(project: Path) -> dict[str, Any]:
    return json.loads((project / "target" / "manifest.json").read_text())


def _duckdb(project: Path) -> duckdb.DuckDBPyConnection:
    """The built warehouse, reading the views' relative Parquet paths from the project (as dbt
    wrote them), whatever pytest's working directory is."""
    conn = duckdb.connect(str(project / "target" / "feature_layer.duckdb"), read_only=True)
    conn.execute("SET file_search_path = ?", [str(project)])
    return conn


def _rows(conn: duckdb.DuckDBPyConnection, sql: str) -> list[tuple]:
    return conn.sql(sql).fetchall()


# --- DuckDB build ------------------------------------------------------------------------


def test_dbt_build_passes_and_writes_artifacts(built_example_project: Path) -> None:
    target = built_example_project / "target"
    for name in ("manifest.json", "catalog.json", "feature_layer.duckdb"):
        assert (target / name).is_file(), name
    catalog = json.loads((target / "catalog.json").read_text())
    for view in [*FEATURE_VIEWS, "fraud_training_labels"]:
        assert f"model.feature_layer.{view}" in catalog["nodes"], view


def test_every_feature_model_is_built_with_rows(built_example_project: Path) -> None:
    conn = _duckdb(built_example_project)
    try:
        counts = {view: _rows(conn, f"select count(*) from main.{view}")[0][0] for view in FEATURE_VIEWS}
        labels = _rows(conn, "select count(*), sum(is_fraud::int) from main.fraud_training_labels")[0]
    finally:
        conn.close()
    assert counts["user_transaction_features"] == 10_000
    assert counts["user_merchant_features"] == 10_000
    assert counts["user_profile_features"] == 500
    assert counts["merchant_risk_features"] > 50 * 300  # one row per merchant and day
    assert labels[0] == 10_000 and 50 <= labels[1] <= 250


def test_feature_views_are_declared_in_meta_with_known_entities(built_example_project: Path) -> None:
    manifest = _manifest(built_example_project)
    project = yaml.safe_load((built_example_project / "dbt_project.yml").read_text())
    entities = project["vars"]["feature_layer"]["entities"]
    assert entities["user_merchant"]["join_keys"] == ["user_id", "merchant_id"]
    declared = {
        node["name"]: node
        for node in manifest["nodes"].values()
        if node["resource_type"] == "model" and "feature_layer" in node["config"].get("meta", {})
    }
    assert set(declared) == set(FEATURE_VIEWS)
    for name, keys in FEATURE_VIEWS.items():
        block = declared[name]["config"]["meta"]["feature_layer"]
        join_keys = [k for entity in block["entities"] for k in entities[entity]["join_keys"]]
        assert join_keys == keys, name
        event_time = block.get("event_time") or declared[name]["config"].get("event_time")
        assert event_time in declared[name]["columns"], name
        for column in declared[name]["columns"].values():
            assert column["data_type"], (name, column["name"])
    assert declared["merchant_risk_features"]["config"]["event_time"] == "as_of"
    assert declared["user_transaction_features"]["config"]["meta"]["feature_layer"]["ttl"] == "30d"
    assert "ttl" not in declared["user_profile_features"]["config"]["meta"]["feature_layer"]
    transaction_id = declared["user_transaction_features"]["columns"]["transaction_id"]
    assert transaction_id["config"]["meta"]["feature_layer"] == {"feature": False}


def test_fraud_model_exposure_lists_features_and_depends_on_views(built_example_project: Path) -> None:
    exposure = _manifest(built_example_project)["exposures"]["exposure.feature_layer.fraud_model_v1"]
    assert exposure["type"] == "ml"
    assert exposure["owner"]["email"]
    assert {f"model.feature_layer.{view}" for view in FEATURE_VIEWS} <= set(exposure["depends_on"]["nodes"])
    features = exposure["config"]["meta"]["feature_layer"]["features"]
    assert "user_transaction_features.txn_count_24h" in features
    assert "user_profile_features.*" in features
    views = {ref.split(".")[0] for ref in features}
    assert views == set(FEATURE_VIEWS)


def test_data_tests_cover_keys_event_time_and_uniqueness(built_example_project: Path) -> None:
    tests = [n for n in _manifest(built_example_project)["nodes"].values() if n["resource_type"] == "test"]
    for view in FEATURE_VIEWS:
        mine = [t for t in tests if t["attached_node"] == f"model.feature_layer.{view}"]
        names = {t["test_metadata"]["name"] for t in mine}
        assert {"not_null", "unique_combination"} <= names, view


def test_feature_columns_have_the_promised_types(built_example_project: Path) -> None:
    conn = _duckdb(built_example_project)
    try:
        types = {
            (table, column): dtype
            for table, column, dtype in _rows(
                conn, "select table_name, column_name, data_type from information_schema.columns"
            )
        }
    finally:
        conn.close()
    assert types[("user_transaction_features", "txn_count_24h")] == "BIGINT"
    assert types[("user_transaction_features", "amount_sum_24h")] == "DOUBLE"
    assert types[("user_transaction_features", "is_online")] == "BOOLEAN"
    assert types[("user_profile_features", "country")] == "VARCHAR"
    assert types[("user_profile_features", "birth_year")] == "INTEGER"
    assert types[("user_merchant_features", "first_seen_at")] == "TIMESTAMP"
    assert types[("merchant_risk_features", "chargeback_rate_30d")] == "DOUBLE"


def test_user_velocity_matches_a_brute_force_self_join(built_example_project: Path) -> None:
    conn = _duckdb(built_example_project)
    try:
        mismatches = _rows(
            conn,
            """
            with expected as (
                select f.user_id, f.occurred_at,
                       count(*) filter (where t.occurred_at > f.occurred_at - interval 1 hour) as c1h,
                       count(*) filter (where t.occurred_at > f.occurred_at - interval 24 hour) as c24h,
                       sum(t.amount) filter (where t.occurred_at > f.occurred_at - interval 24 hour) as s24h,
                       max(t.amount) filter (where t.occurred_at > f.occurred_at - interval 30 day) as m30d
                from main.user_transaction_features f
                join main.stg_transactions t
                  on t.user_id = f.user_id and t.occurred_at <= f.occurred_at
                group by all
            )
            select count(*),
                   count(*) filter (where f.txn_count_1h != e.c1h or f.txn_count_24h != e.c24h
                       or abs(f.amount_sum_24h - e.s24h) > 1e-6 or abs(f.amount_max_30d - e.m30d) > 1e-9),
                   (select count(*) from main.user_transaction_features)
            from main.user_transaction_features f join expected e using (user_id, occurred_at)
            """,
        )
    finally:
        conn.close()
    compared, wrong, total = mismatches[0]
    assert compared == total > 0  # every feature row was checked against the reference
    assert wrong == 0


def test_merchant_chargebacks_count_only_once_reported(built_example_project: Path) -> None:
    """A daily row stamped as_of never counts a chargeback reported at or after as_of."""
    conn = _duckdb(built_example_project)
    try:
        mismatches = _rows(
            conn,
            """
            with reported as (
                select t.merchant_id, c.reported_at, c.is_fraud
                from main.stg_chargebacks c join main.stg_transactions t using (transaction_id)
            ),
            expected as (
                select f.merchant_id, f.as_of,
                       count(r.reported_at) filter (where r.reported_at >= f.as_of - interval 30 day) as cb30,
                       count(r.reported_at) filter (where r.is_fraud and r.reported_at >= f.as_of - interval 90 day)
                           as fraud90
                from main.merchant_risk_features f
                left join reported r on r.merchant_id = f.merchant_id and r.reported_at < f.as_of
                group by all
            )
            select count(*) from main.merchant_risk_features f join expected e using (merchant_id, as_of)
            where f.chargeback_count_30d != e.cb30 or f.fraud_chargeback_count_90d != e.fraud90
            """,
        )
        latest_rows = _rows(
            conn, "select count(*) from main.merchant_risk_features where as_of != date_trunc('day', as_of)"
        )
    finally:
        conn.close()
    assert mismatches == [(0,)]
    assert latest_rows == [(0,)]


def test_warehouse_returns_the_same_rows_whatever_directory_opens_it(
    built_example_project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A folder with other raw data under the same relative path (the repo root after
    `make demo`) must not change what the built warehouse returns: staging is built as
    tables, read once from the project's own files."""
    from feature_layer.demo.data import generate_demo_data

    generate_demo_data(tmp_path / "data" / "raw", rows=1_000, seed=EXAMPLE_SEED + 1)
    monkeypatch.chdir(tmp_path)
    conn = duckdb.connect(str(built_example_project / "target" / "feature_layer.duckdb"), read_only=True)
    try:
        counts = _rows(conn, "select (select count(*) from main.stg_transactions),"
                             " (select count(*) from main.user_transaction_features)")[0]
        kinds = dict(_rows(conn, "select table_name, table_type from information_schema.tables"
                                 " where table_name like 'stg_%'"))
    finally:
        conn.close()
    assert counts == (10_000, 10_000)
    assert set(kinds.values()) == {"BASE TABLE"} and len(kinds) == 4


def test_dbt_run_from_another_folder_reads_the_projects_raw_files(tmp_path: Path) -> None:
    """`dbt build --project-dir project` from a folder that has its own data/raw reads the
    project's files: relative source paths are anchored at the project, not dbt's cwd."""
    import subprocess
    import sys

    from feature_layer.demo.data import generate_demo_data

    project = copy_example_project(tmp_path / "project")
    generate_demo_data(project / "data" / "raw", rows=1_000, seed=EXAMPLE_SEED)
    generate_demo_data(tmp_path / "data" / "raw", rows=2_000, seed=EXAMPLE_SEED)  # the decoy
    warehouse = tmp_path / "warehouse.duckdb"
    with clean_project_env(FEATURE_LAYER_DUCKDB_PATH=str(warehouse)):
        done = subprocess.run(
            [str(Path(sys.executable).parent / "dbt"), "--quiet", "run", "--select", "path:models/example/staging",
             "--project-dir", "project", "--profiles-dir", "project"],
            capture_output=True, text=True, cwd=tmp_path, env=dict(os.environ),
        )
    assert done.returncode == 0, done.stdout + done.stderr
    conn = duckdb.connect(str(warehouse), read_only=True)
    try:
        assert _rows(conn, "select count(*) from main.stg_transactions") == [(1_000,)]
    finally:
        conn.close()


def test_raw_data_directory_comes_from_the_environment(tmp_path: Path) -> None:
    project = copy_example_project(tmp_path / "project")
    elsewhere = tmp_path / "elsewhere" / "raw"
    with clean_project_env(FEATURE_LAYER_DATA_DIR=str(elsewhere)):
        run_dbt(["parse"], project, target="duckdb", quiet=True)
    sources = _manifest(project)["sources"]
    assert sources["source.feature_layer.raw.transactions"]["relation_name"] == f"'{elsewhere}/transactions*.parquet'"  # a glob: streamed events land beside it
    with clean_project_env():
        run_dbt(["parse"], project, target="duckdb", quiet=True)
    sources = _manifest(project)["sources"]
    assert sources["source.feature_layer.raw.users"]["relation_name"] == "'data/raw/users.parquet'"


# --- PostgreSQL build --------------------------------------------------------------------


def _postgres_rows(project: PostgresExampleProject, sql: str) -> list[tuple]:
    import psycopg2

    conn = psycopg2.connect(project.dsn)
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
            return cur.fetchall()
    finally:
        conn.close()


def _same(left: list[tuple], right: list[tuple]) -> bool:
    if len(left) != len(right):
        return False
    for a_row, b_row in zip(left, right, strict=True):
        for a, b in zip(a_row, b_row, strict=True):
            if isinstance(a, float) or isinstance(b, float):
                if a is None or b is None or not math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-6):
                    if a != b:
                        return False
            elif a != b:
                return False
    return True


@pytest.mark.postgres
def test_postgres_build_matches_duckdb_values(
    built_example_project: Path, postgres_example_project: PostgresExampleProject
) -> None:
    manifest = _manifest(postgres_example_project.path)
    node = manifest["nodes"]["model.feature_layer.user_transaction_features"]
    assert node["schema"] == postgres_example_project.schema
    conn = _duckdb(built_example_project)
    try:
        for view, keys in FEATURE_VIEWS.items():
            columns = [c for c in manifest["nodes"][f"model.feature_layer.{view}"]["columns"]]
            event_time = (
                "as_of"
                if view == "merchant_risk_features"
                else ("signup_at" if view == "user_profile_features" else "occurred_at")
            )
            order = ", ".join([*keys, event_time])
            select = f"select {', '.join(columns)} from {{}}.{view} order by {order}"
            on_duckdb = _rows(conn, select.format("main"))
            on_postgres = _postgres_rows(
                postgres_example_project, select.format(f'"{postgres_example_project.schema}"')
            )
            assert _same(on_duckdb, on_postgres), view
    finally:
        conn.close()


# --- installed as a package --------------------------------------------------------------


@pytest.fixture(scope="module")
def consumer_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("package_consumer")
    package = copy_example_project(root / "feature_layer_package")
    consumer = root / "consumer"
    shutil.copytree(FIXTURES_DIR / "package_consumer", consumer)
    (consumer / "packages.yml").write_text(yaml.safe_dump({"packages": [{"local": str(package)}]}))
    with clean_project_env():
        run_dbt(["deps"], consumer, quiet=True)
        run_dbt(["build"], consumer, quiet=True)
    return consumer


def test_package_consumer_builds_with_the_macros_but_not_the_examples(consumer_project: Path) -> None:
    manifest = _manifest(consumer_project)
    enabled = [
        uid
        for section in ("nodes", "sources", "exposures")
        for uid, node in manifest[section].items()
        if node.get("package_name") == "feature_layer" and node["config"].get("enabled", True)
    ]
    assert enabled == []
    assert "model.package_consumer.card_spend" in manifest["nodes"]
    conn = duckdb.connect(str(consumer_project / "target" / "consumer.duckdb"), read_only=True)
    try:
        rows = _rows(conn, "select card_id, amount_sum_24h, payment_count_1d from card_spend order by card_id, paid_at")
        tables = {r[0] for r in _rows(conn, "select table_name from information_schema.tables")}
    finally:
        conn.close()
    assert [(k, float(s), c) for k, s, c in rows] == [(1, 10.0, 1), (1, 30.0, 2), (1, 60.0, 2), (2, 5.0, 1)]
    assert not tables & {*FEATURE_VIEWS, "fraud_training_labels", "stg_transactions"}


def test_package_consumer_can_opt_in_to_the_examples(consumer_project: Path) -> None:
    with clean_project_env():
        run_dbt(["parse", "--vars", "{feature_layer_examples: true}"], consumer_project, quiet=True)
    try:
        manifest = _manifest(consumer_project)
        assert manifest["nodes"]["model.feature_layer.user_transaction_features"]["config"]["enabled"] is True
        assert "exposure.feature_layer.fraud_model_v1" in manifest["exposures"]
    finally:
        with clean_project_env():
            run_dbt(["parse"], consumer_project, quiet=True)


# --- runner ------------------------------------------------------------------------------


def test_run_dbt_failure_names_the_node_file_and_fix(consumer_project: Path) -> None:
    broken = consumer_project / "models" / "broken_model.sql"
    broken.write_text("select * from a_table_that_does_not_exist")
    cwd, env = os.getcwd(), os.environ.get("DBT_PROFILES_DIR")
    try:
        with clean_project_env(), pytest.raises(FeatureLayerError) as caught:
            run_dbt(["run", "--select", "broken_model"], consumer_project, quiet=True)
    finally:
        broken.unlink()
    message = str(caught.value)
    assert "`dbt run --select broken_model`" in message
    assert "model.package_consumer.broken_model (models/broken_model.sql)" in message
    assert "a_table_that_does_not_exist" in message
    assert "To fix this" in message
    assert os.getcwd() == cwd and os.environ.get("DBT_PROFILES_DIR") == env


def test_run_dbt_refuses_a_directory_without_a_project(tmp_path: Path) -> None:
    with pytest.raises(FeatureLayerError, match="not a dbt project"):
        run_dbt(["build"], tmp_path)
