"""Training sets end to end: the example fraud project built by dbt on DuckDB and PostgreSQL.

Entity inputs of every kind, every output format, the CLI, bad-input messages, and the same
training set from both warehouses, checked against the brute-force reference.
"""

from __future__ import annotations

import math
from datetime import datetime
from pathlib import Path

import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from feature_layer.cli import main as cli
from feature_layer.client import FeatureStore
from feature_layer.errors import InputError, UnknownFeatureError, WarehouseError
from tests.offline_helpers import ViewData, reference_training_set

SERVICE = "fraud_model_v1"
FEATURES = [
    "user_transaction_features.amount_sum_24h",
    "user_transaction_features.txn_count_1h",
    "merchant_risk_features.category",
    "merchant_risk_features.chargeback_rate_30d",
    "user_merchant_features.*",
    "user_profile_features.age_at_signup",
]
SAMPLE = 400


@pytest.fixture(scope="module")
def duck_store(built_example_project: Path):
    store = FeatureStore(built_example_project, target="duckdb")
    yield store
    store.close()


@pytest.fixture(scope="module")
def pg_store(postgres_example_project):
    store = FeatureStore(postgres_example_project.path, target="postgres")
    yield store
    store.close()


def _labels_table(store: FeatureStore) -> str:
    return ".".join(f'"{p}"' for p in store.registry.nodes[
        next(uid for uid, n in store.registry.nodes.items() if n.name == "fraud_training_labels")
    ].relation.parts())


@pytest.fixture(scope="module")
def labels(duck_store: FeatureStore) -> pa.Table:
    """A deterministic sample of label rows, with duplicates and rows from before any feature."""
    table = duck_store.offline_engine().fetch_arrow(
        f"SELECT user_id, merchant_id, occurred_at, is_fraud FROM {_labels_table(duck_store)} "
        f"ORDER BY transaction_id DESC LIMIT {SAMPLE}"
    )
    early = pa.table({"user_id": [table["user_id"][0].as_py()], "merchant_id": [table["merchant_id"][0].as_py()],
                      "occurred_at": pa.array([datetime(2000, 1, 1)], pa.timestamp("us")), "is_fraud": [False]})
    return pa.concat_tables([table, table.slice(0, 5), early.cast(table.schema)])


def _reference(store: FeatureStore, entity: pa.Table, refs: list[str], **kwargs) -> list[dict]:
    engine = store.offline_engine()
    resolved = store.registry.resolve(refs)
    views = []
    for name, features in resolved.items():
        view = store.registry.view(name)
        rel = ".".join(f'"{p}"' for p in view.relation.parts())
        views.append(ViewData(view, _as_logical(view, engine.fetch_arrow(f"SELECT * FROM {rel}")).to_pylist(), features))
    return reference_training_set(entity.to_pylist(), views, "occurred_at", **kwargs)


def _as_logical(view, table: pa.Table) -> pa.Table:
    """The view's rows with each feature in its logical type's Arrow type (naive timestamps are UTC)."""
    from feature_layer.types import arrow_type

    for feature in view.features:
        target = arrow_type(feature.dtype)
        index = table.schema.get_field_index(feature.name)
        if target is not None and table.schema.field(index).type != target:
            table = table.set_column(index, feature.name, table.column(index).cast(target))
    return table


def _same(got: list[dict], expected: list[dict]) -> None:
    assert len(got) == len(expected)
    for g, e in zip(got, expected, strict=True):
        assert g.keys() == e.keys()
        for key in g:
            if isinstance(e[key], float) and isinstance(g[key], float):
                assert math.isclose(g[key], e[key], rel_tol=1e-9, abs_tol=1e-12), (key, g, e)
            else:
                assert g[key] == e[key], (key, g, e)


# ------------------------------------------------------------------ DuckDB end to end


def test_training_set_equals_reference_on_the_example_project(duck_store, labels):
    training = duck_store.get_training_set(labels, features=FEATURES, timestamp_column="occurred_at")
    got = training.to_arrow()
    assert got.column_names[:4] == ["user_id", "merchant_id", "occurred_at", "is_fraud"]
    expected = _reference(duck_store, labels, FEATURES)
    _same(got.to_pylist(), expected)
    filled = sum(r["amount_sum_24h"] is not None for r in expected)
    assert SAMPLE // 2 < filled < len(expected)  # most rows match, the year-2000 row does not
    assert got.slice(got.num_rows - 1).to_pylist()[0]["amount_sum_24h"] is None


def test_service_training_set_needs_full_names_for_its_clashing_features(duck_store, labels):
    with pytest.raises(InputError) as info:
        duck_store.get_training_set(labels, service=SERVICE, timestamp_column="occurred_at")
    assert "'txn_count_30d' would come from both feature merchant_risk_features.txn_count_30d and feature " \
           "user_merchant_features.txn_count_30d" in str(info.value)
    assert "To fix this, pass full_feature_names=True" in str(info.value)
    training = duck_store.get_training_set(labels, service=SERVICE, full_feature_names=True,
                                           timestamp_column="occurred_at")
    service = duck_store.registry.service(SERVICE)
    assert training.features == tuple(f.ref for fs in duck_store.registry.resolve(list(service.features)).values()
                                      for f in fs)
    got = training.to_arrow()
    assert "merchant_risk_features__txn_count_30d" in got.column_names
    _same(got.to_pylist(), _reference(duck_store, labels, list(service.features), full_feature_names=True))


def test_every_entity_input_kind_gives_the_same_result(duck_store, labels, tmp_path):
    refs = ["user_transaction_features.amount_sum_24h", "user_profile_features.country"]
    expected = duck_store.get_training_set(labels, features=refs, timestamp_column="occurred_at").to_arrow()
    path = tmp_path / "entities.parquet"
    pq.write_table(labels, path)
    engine = duck_store.offline_engine()
    engine.register_arrow("labels_in_warehouse", labels)
    engine.execute("CREATE OR REPLACE TEMP TABLE labels_table AS SELECT * FROM labels_in_warehouse")
    inputs = {
        "pandas": labels.to_pandas(),
        "polars": pl.from_arrow(labels),
        "parquet str": str(path),
        "parquet Path": path,
        "warehouse table": "labels_table",
        "warehouse query": "SELECT * FROM labels_table WHERE occurred_at IS NOT NULL",
        "parenthesised query": "(SELECT * FROM labels_table WHERE coalesce(user_id, 0) > -1);",
    }
    for kind, entity in inputs.items():
        got = duck_store.get_training_set(entity, features=refs, timestamp_column="occurred_at").to_arrow()
        assert got.to_pylist() == expected.to_pylist(), kind


def test_outputs_arrow_pandas_polars_parquet_table_sql(duck_store, labels, tmp_path):
    refs = ["user_merchant_features.txn_count_30d", "merchant_risk_features.category"]
    training = duck_store.get_training_set(labels, features=refs, timestamp_column="occurred_at")
    table = training.to_arrow()
    assert training.columns == tuple(table.column_names)
    pd.testing.assert_frame_equal(training.to_pandas(), table.to_pandas())
    assert training.to_polars().equals(pl.from_arrow(table))
    written = training.to_parquet(tmp_path / "ts.parquet")
    assert pq.read_table(written).to_pylist() == table.to_pylist()
    training.to_table("main.my_training_set")
    engine = duck_store.offline_engine()
    assert engine.fetch_arrow('SELECT * FROM main.my_training_set').to_pylist() == table.to_pylist()
    training.to_table("main.my_training_set", replace=True)
    assert "ASOF LEFT JOIN" in training.sql()
    postgres_sql = training.sql("postgres")
    assert "ASOF" not in postgres_sql and "UNION ALL" in postgres_sql and "__fl_grp" in postgres_sql  # window formulation
    assert engine.fetch_arrow(training.sql()).to_pylist() == table.to_pylist()


def test_closing_a_training_set_drops_the_uploaded_entities(duck_store, labels):
    engine = duck_store.offline_engine()
    with duck_store.get_training_set(labels, features=["user_profile_features.country"],
                                     timestamp_column="occurred_at") as training:
        uploaded = training._entities.registered
        assert engine.fetch_arrow(f'SELECT count(*) AS n FROM "{uploaded}"').column("n")[0].as_py() == labels.num_rows
    with pytest.raises(WarehouseError):
        engine.fetch_arrow(f'SELECT count(*) FROM "{uploaded}"')
    assert "user_profile_features.country" in repr(training)


def test_empty_parquet_entity_file_gives_an_empty_result(duck_store, labels, tmp_path):
    path = tmp_path / "empty.parquet"
    pq.write_table(labels.slice(0, 0), path)
    training = duck_store.get_training_set(path, features=["user_profile_features.country"],
                                           timestamp_column="occurred_at")
    result = training.to_arrow()
    assert result.num_rows == 0 and result.column_names[-1] == "country"
    assert training.to_parquet(tmp_path / "out.parquet").exists()


# ------------------------------------------------------------------ bad input


def _frame(**columns) -> pd.DataFrame:
    base = {"user_id": [1, 2], "event_timestamp": pd.to_datetime(["2025-03-01", "2025-03-02"])}
    base.update(columns)
    return pd.DataFrame({k: v for k, v in base.items() if v is not None})


BAD_INPUTS = [
    (
        "missing key",
        lambda: _frame(user_id=None),
        InputError,
        "lacks join key column(s) user_id needed by feature view 'user_profile_features'",
        "add column(s) user_id",
    ),
    (
        "missing timestamp",
        lambda: pd.DataFrame({"user_id": [1]}),
        InputError,
        "has no timestamp column (columns: user_id)",
        "add a column 'event_timestamp'",
    ),
    (
        "timestamp is a string",
        lambda: _frame(event_timestamp=["2025-03-01", "2025-03-02"]),
        InputError,
        "Entity timestamp column 'event_timestamp' holds string values",
        "pd.to_datetime",
    ),
    (
        "null timestamp",
        lambda: _frame(event_timestamp=pd.to_datetime(["2025-03-01", None])),
        InputError,
        "1 entity row(s) have a null timestamp in column 'event_timestamp'",
        "drop those rows or fill the timestamps",
    ),
    (
        "key type mismatch",
        lambda: _frame(user_id=["1", "2"]),
        InputError,
        "Join key 'user_id' is string in the entity dataframe",
        "cast entity column 'user_id' to int64",
    ),
    (
        "key type mismatch (message end)",
        lambda: _frame(user_id=["1", "2"]),
        InputError,
        "but int64 in feature view 'user_profile_features'; the rows would never match",
        "cast entity column 'user_id' to int64",
    ),
    (
        "reserved column",
        lambda: _frame(__fl_row=[1, 2]),
        InputError,
        "Entity column(s) __fl_row start with '__fl_', which feature_layer reserves",
        "rename them",
    ),
    (
        "several timestamps",
        lambda: pd.DataFrame({"user_id": [1], "a": pd.to_datetime(["2025-01-01"]), "b": pd.to_datetime(["2025-01-01"])}),
        InputError,
        "several timestamp columns (a, b) and none is named 'event_timestamp'",
        "pass timestamp_column=",
    ),
    ("unsupported type", lambda: [{"user_id": 1}], InputError, "entity_df has type list", "pass a pandas or polars"),
    ("missing parquet", lambda: "nope/entities.parquet", InputError, "Entity file nope/entities.parquet does not exist",
     "existing Parquet file"),
    ("missing table", lambda: "main.no_such_entities", WarehouseError, "no_such_entities", "is not in the warehouse of this target: build it with `dbt build"),
    ("bad query", lambda: "SELECT FROM WHERE", InputError, "does not parse as duckdb SQL", "correct the SQL"),
]


@pytest.mark.parametrize(("case", "make", "error", "message", "fix"), BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_bad_entity_input_names_the_problem_and_the_fix(duck_store, case, make, error, message, fix):
    with pytest.raises(error) as info:
        duck_store.get_training_set(make(), features=["user_profile_features.country"])
    text = str(info.value)
    assert message in text
    assert "To fix this, " in text and fix in text


def test_unknown_feature_suggests_close_matches(duck_store, labels):
    with pytest.raises(UnknownFeatureError) as info:
        duck_store.get_training_set(labels, features=["user_profile_features.contry"], timestamp_column="occurred_at")
    assert "Did you mean 'country'?" in str(info.value)
    with pytest.raises(UnknownFeatureError, match="Feature view 'user_profil_features' does not exist"):
        duck_store.get_training_set(labels, features=["user_profil_features.*"], timestamp_column="occurred_at")


def test_features_and_service_are_exclusive_and_required(duck_store, labels):
    with pytest.raises(InputError, match="Both features and service were given"):
        duck_store.get_training_set(labels, features=["user_profile_features.country"], service=SERVICE)
    with pytest.raises(InputError, match="No features were requested"):
        duck_store.get_training_set(labels)
    with pytest.raises(InputError, match="The feature list is empty"):
        duck_store.get_training_set(labels, features=[])


# ------------------------------------------------------------------ CLI


def test_cli_prints_sql_per_dialect_and_the_duckdb_sql_runs(built_example_project, duck_store):
    table = _labels_table(duck_store).replace('"', "")
    args = ["--project-dir", str(built_example_project), "sql", "training-set", "--features",
            "user_transaction_features.amount_sum_24h,user_profile_features.country", "--entity-table", table,
            "--timestamp-column", "occurred_at"]
    runner = CliRunner()
    duck = runner.invoke(cli, args)
    assert duck.exit_code == 0, duck.output
    assert "ASOF LEFT JOIN" in duck.stdout
    result = duck_store.offline_engine().fetch_arrow(duck.stdout.strip().rstrip(";"))
    assert result.column_names == ["transaction_id", "user_id", "merchant_id", "occurred_at", "is_fraud",
                                   "amount_sum_24h", "country"]
    for dialect in ("postgres", "bigquery", "snowflake"):
        other = runner.invoke(cli, [*args, "--dialect", dialect])
        assert other.exit_code == 0, other.output
        assert "ASOF" not in other.stdout and "UNION ALL" in other.stdout and "__fl_grp" in other.stdout
    service = runner.invoke(cli, ["--project-dir", str(built_example_project), "sql", "training-set", "--service",
                                  SERVICE, "--entity-table", table, "--timestamp-column", "occurred_at",
                                  "--full-feature-names", "--dialect", "trino"])
    assert service.exit_code == 0, service.output
    assert '"merchant_risk_features__txn_count_30d"' in service.stdout


def test_cli_without_a_readable_entity_table_projects_keys_and_timestamp(built_example_project):
    result = CliRunner().invoke(cli, ["--project-dir", str(built_example_project), "sql", "training-set", "--features",
                                      "user_merchant_features.txn_count_30d", "--entity-table", "main.not_built_yet"])
    assert result.exit_code == 0, result.output
    assert "Pass --entity-columns to list them" in result.stderr
    assert '"s"."user_id" AS "user_id"' in result.stdout and '"s"."merchant_id" AS "merchant_id"' in result.stdout
    listed = CliRunner().invoke(cli, ["--project-dir", str(built_example_project), "sql", "training-set", "--features",
                                      "user_merchant_features.txn_count_30d", "--entity-table", "main.not_built_yet",
                                      "--entity-columns", "user_id,merchant_id,event_timestamp,label"])
    assert '"s"."label" AS "label"' in listed.stdout and "Note:" not in listed.stderr


def test_cli_errors_are_one_line_with_the_fix(built_example_project):
    runner = CliRunner()
    base = ["--project-dir", str(built_example_project), "sql", "training-set", "--entity-table", "t"]
    unknown = runner.invoke(cli, [*base, "--features", "user_profile_features.contry"])
    assert unknown.exit_code == 1
    assert "Did you mean 'country'?" in unknown.output
    asof = runner.invoke(cli, [*base, "--features", "user_profile_features.country", "--dialect", "postgres",
                               "--strategy", "asof"])
    assert asof.exit_code == 1 and "Dialect 'postgres' has no ASOF JOIN" in asof.output
    dialect = runner.invoke(cli, [*base, "--features", "user_profile_features.country", "--dialect", "nosuch"])
    assert dialect.exit_code == 1 and "SQL dialect 'nosuch' is not known to sqlglot" in dialect.output


# ------------------------------------------------------------------ PostgreSQL


@pytest.mark.postgres
def test_postgres_and_duckdb_return_the_same_training_set(duck_store, pg_store, labels, tmp_path):
    from_duck = duck_store.get_training_set(labels, service=SERVICE, full_feature_names=True,
                                           timestamp_column="occurred_at").to_arrow()
    training = pg_store.get_training_set(labels, service=SERVICE, full_feature_names=True,
                                         timestamp_column="occurred_at")
    assert "ASOF" not in training.sql()
    from_pg = training.to_arrow()
    assert from_pg.column_names == from_duck.column_names
    _same(from_pg.to_pylist(), from_duck.to_pylist())
    service = pg_store.registry.service(SERVICE)
    _same(from_pg.to_pylist(), _reference(pg_store, labels, list(service.features), full_feature_names=True))
    # a warehouse table as entity input, and a training set written back as a table
    schema = pg_store.offline_engine()
    table_name = f"{postgres_schema(pg_store)}.entity_rows"
    schema.register_arrow("entity_upload", labels)
    schema.execute(f"CREATE TABLE {table_name} AS SELECT * FROM entity_upload")
    by_table = pg_store.get_training_set(table_name, service=SERVICE, full_feature_names=True,
                                         timestamp_column="occurred_at")
    by_table.to_table(f"{postgres_schema(pg_store)}.training_rows")
    copied = schema.fetch_arrow(f"SELECT * FROM {postgres_schema(pg_store)}.training_rows")
    _same(copied.to_pylist(), from_pg.to_pylist())  # heap order: a fresh table scans in insertion order


def postgres_schema(store: FeatureStore) -> str:
    from feature_layer.config import warehouse_settings

    return warehouse_settings(store.settings).schema
