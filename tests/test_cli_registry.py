"""The registry CLI on the example project, built by real dbt on DuckDB."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from feature_layer.cli import main
from feature_layer.client import FeatureStore


def run(project: Path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["--project-dir", str(project), *args])
    return result.exit_code, result.output


@pytest.fixture(scope="module")
def project(built_example_project: Path) -> Path:
    return built_example_project


def test_registry_holds_the_example_views_entities_and_service(project: Path) -> None:
    registry = FeatureStore(project).registry
    assert {"user", "merchant", "user_merchant"} <= set(registry.entities)
    assert {"user_transaction_features", "merchant_risk_features", "user_merchant_features",
            "user_profile_features"} <= set(registry.views)
    assert registry.view("user_merchant_features").join_keys == ("user_id", "merchant_id")
    dtypes = {f.dtype for f in registry.features()}
    assert {"int64", "float64", "bool", "string", "timestamp"} <= dtypes
    service = registry.service("fraud_model_v1")
    profile = registry.view("user_profile_features")
    assert all(f.ref in service.features for f in profile.features)  # "view.*" expanded
    view = registry.view("user_transaction_features")
    assert view.compiled_sql and "OVER" in view.compiled_sql.upper()
    assert view.checksum and view.file_path.endswith("user_transaction_features.sql")


def test_features_lists_and_filters(project: Path) -> None:
    code, out = run(project, "features", "--entity", "merchant", "--json")
    assert code == 0
    rows = json.loads(out)
    assert rows and all("merchant" in r["entities"] for r in rows)
    code, out = run(project, "features")
    assert code == 0 and "user_transaction_features.txn_count_24h" in out


def test_show_prints_type_entities_ttl_and_sql(project: Path) -> None:
    code, out = run(project, "show", "user_transaction_features.txn_count_24h", "--json")
    assert code == 0
    record = json.loads(out)
    assert record["dtype"] == "int64" and record["entities"] == ["user"] and record["ttl"] == "30d"
    assert "fraud_model_v1" in record["services"] and record["compiled_sql"]


def test_show_unknown_feature_suggests_close_matches_and_exits_1(project: Path) -> None:
    code, out = run(project, "show", "user_transaction_features.txn_count_24")
    assert code == 1
    assert "does not exist" in out and "txn_count_24h" in out


def test_search_ranks_name_matches_first(project: Path) -> None:
    code, out = run(project, "search", "chargeback", "--json")
    assert code == 0
    hits = json.loads(out)["results"]
    assert hits and "chargeback" in hits[0]["name"]


def test_lineage_reaches_sources_and_exposures(project: Path) -> None:
    code, out = run(project, "lineage", "user_transaction_features.txn_count_24h", "--json")
    assert code == 0
    tree = json.loads(out)

    def walk(node: dict) -> list[dict]:
        return [node] + [n for c in node["children"] for n in walk(c)]

    upstream = walk(tree["upstream"])
    assert any(n["resource_type"] == "source" for n in upstream)
    assert any(n["name"] == "stg_transactions" for n in upstream)
    downstream = [n for d in tree["downstream"] for n in walk(d)]
    assert any(n["resource_type"] == "exposure" and n["name"] == "fraud_model_v1" for n in downstream)
    assert tree["services"] == ["fraud_model_v1"]
    code, text = run(project, "lineage", "user_transaction_features.txn_count_24h")
    assert code == 0 and "stg_transactions" in text and "fraud_model_v1" in text


def test_validate_passes_on_the_example(project: Path) -> None:
    code, out = run(project, "validate")
    assert code == 0 and "OK:" in out


def test_usage_errors_exit_2(project: Path) -> None:
    code, _ = run(project, "features", "--no-such-flag")
    assert code == 2
    code, _ = run(project, "search", "x", "--limit", "0")
    assert code == 2


def test_registry_knows_the_warehouse_dialect(project: Path) -> None:
    assert FeatureStore(project).registry.dialect == "duckdb"


def test_postgres_build_reads_as_postgres_and_traces_columns(postgres_example_project) -> None:  # noqa: ANN001
    registry = FeatureStore(postgres_example_project.path, target="postgres").registry  # the target that built it
    assert registry.dialect == "postgres"
    graph = registry.column_lineage("user_transaction_features.txn_count_24h").to_dict()
    text = json.dumps(graph)
    assert "stg_transactions" in text and "fraud_model_v1" in text


def test_views_over_relative_parquet_paths_read_from_any_working_directory(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # dbt wrote 'data/raw/…' paths relative to the project
    store = FeatureStore(project)
    count = store.offline_engine().fetch_arrow("select count(*) as n from stg_transactions")["n"][0].as_py()
    store.close()
    assert count == 10_000


def test_an_unknown_target_is_an_error_not_a_guess(project: Path) -> None:
    code, out = run(project, "--target", "nosuch", "sql", "training-set", "--features",
                     "user_profile_features.country", "--entity-table", "labels")
    assert code == 1 and "'nosuch'" in out and "use one of" in out
