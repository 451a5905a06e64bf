"""The UI's page data: ML models, sources, the project map and the feature table.

Over the real server (starlette's TestClient on the real app) of the dbt-built example
project, materialized with the clock pinned to the data's end; results are checked against
the registry, the column lineage walked directly and the Python SDK's online lookup.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from server_helpers import build_registry, materialized_copy, open_store
from starlette.testclient import TestClient

from feature_layer.registry.column_lineage import column_lineage
from feature_layer.server.app import create_app
from feature_layer.server.ui_api import ancestors, latest_key_query, project_map, service_requests

SERVICE = "fraud_model_v1"


@pytest.fixture(scope="module")
def project(built_example_project: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return materialized_copy(built_example_project, tmp_path_factory.mktemp("ui_api") / "project")


@pytest.fixture(scope="module")
def store(project: Path):
    store = open_store(project)
    yield store
    store.close()


@pytest.fixture(scope="module")
def client(store):
    with TestClient(create_app(store, reload_interval=None)) as client:
        yield client


def test_the_ml_model_page_lists_its_features_views_and_freshness(client, store):
    body = client.get(f"/v1/services/{SERVICE}").json()
    service = store.registry.services[SERVICE]
    assert [f["ref"] for f in body["features"]] == list(service.features)
    assert {v["name"] for v in body["views"]} == {r.split(".")[0] for r in service.features}
    assert {f["freshness"] for f in body["features"]} == {"fresh"}  # materialized as of the pinned clock
    assert body["join_keys"] == ["user_id", "merchant_id"]
    lineage_ids = {n["id"] for n in body["lineage"]["nodes"]}
    assert lineage_ids == ancestors(store.registry, service.unique_id)
    assert "source.feature_layer.raw.transactions" in lineage_ids


def test_the_ml_model_request_body_works_and_matches_the_sdk(client, store):
    body = client.get(f"/v1/services/{SERVICE}").json()
    assert body["example"]["origin"] == "warehouse"
    row = body["example"]["entity_row"]
    assert set(row) == {"user_id", "merchant_id"} and all(isinstance(v, int) for v in row.values())
    request = body["requests"]["body"]
    assert request == {"service": SERVICE, "entity_rows": [row]}
    answer = client.post("/v1/online-features", json=request)
    assert answer.status_code == 200, answer.text
    values = answer.json()
    reference = store.get_online_features(service=SERVICE, entity_rows=[row]).to_dict()
    assert list(values) == list(reference)
    for key, expected in reference.items():
        plain = [v.isoformat() if hasattr(v, "isoformat") else v for v in expected]
        assert values[key] == pytest.approx(plain) if isinstance(plain[0], float) else values[key] == plain, key
    non_null = [k for k, v in values.items() if v[0] is not None and k not in row]
    assert len(non_null) >= 15, values  # a real key: the newest rows have values for nearly every feature
    # the curl and Python texts carry the same body
    assert json.dumps(request) in body["requests"]["curl"]
    compile(body["requests"]["python_http"], "python_http", "exec")
    compile(body["requests"]["python_sdk"], "python_sdk", "exec")


def test_requests_quote_awkward_names_for_the_shell_and_python():
    registry = build_registry()
    service = registry.services["fraud_model_v1"]
    out = service_requests(service, {"user_id": "it's \"odd\"\n"}, "http://h:1/", project_dir="a'b")
    import shlex

    words = shlex.split(out["curl"].replace("\\\n", " "))
    assert json.loads(words[words.index("-d") + 1]) == out["body"]
    assert words[words.index("-X") + 2] == "http://h:1/v1/online-features"
    compile(out["python_http"], "http", "exec")
    compile(out["python_sdk"], "sdk", "exec")


def test_the_example_key_query_is_newest_first_at_or_before_now():
    from datetime import UTC, datetime

    view = build_registry().views["merchant_risk"]
    sql = latest_key_query(view, view.join_keys, datetime(2025, 1, 2, 3, tzinfo=UTC)).sql(dialect="duckdb")
    assert '"event_ts" <= CAST(\'2025-01-02 03:00:00.000000\' AS TIMESTAMP)' in sql
    assert 'NOT "merchant_id" IS NULL' in sql and 'ORDER BY "event_ts" DESC LIMIT 1' in sql


def test_a_source_lists_the_features_derived_from_each_column(client, store):
    body = client.get("/v1/sources/raw.transactions").json()
    assert body["unique_id"] == "source.feature_layer.raw.transactions"
    by_column = {c["name"]: set(c["features"]) for c in body["columns"]}
    # brute force: walk every feature's column lineage and collect the columns of this source
    truth: dict[str, set[str]] = {}
    for feature in store.registry._features.values():  # noqa: SLF001 - every feature once
        for node in column_lineage(store.registry, feature.ref).nodes:
            if node.unique_id == body["unique_id"] and node.column:
                truth.setdefault(node.column, set()).add(feature.ref)
    assert {k: v for k, v in by_column.items() if v} == truth
    assert "user_transaction_features.amount" in by_column["amount"]
    assert set(body["features"]) == set().union(*truth.values())
    assert client.get("/v1/sources/source.feature_layer.raw.transactions").json()["name"] == "raw.transactions"


def test_unknown_objects_and_parameters_explain_the_fix(client):
    missing = client.get("/v1/services/fraud_model_v2")
    assert missing.status_code == 404
    assert "fraud_model_v1" in missing.json()["error"]["message"] + missing.json()["error"]["fix"]
    source = client.get("/v1/sources/raw.transaction")
    assert source.status_code == 404 and "raw.transactions" in source.json()["error"]["message"]
    bad = client.get("/v1/map?entity=user")
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "entity"


def test_the_project_map_has_every_object_and_dbt_edge(client, store):
    body = client.get("/v1/map").json()
    registry = store.registry
    kinds = {n["id"]: n["kind"] for n in body["nodes"]}
    assert {v.unique_id for v in registry.views.values()} == {i for i, k in kinds.items() if k == "feature_view"}
    assert {s.unique_id for s in registry.services.values()} == {i for i, k in kinds.items() if k == "ml_model"}
    sources = {uid for uid, n in registry.nodes.items() if n.resource_type == "source"}
    assert sources == {i for i, k in kinds.items() if k == "source"}
    edges = {(e["source"], e["target"]) for e in body["edges"]}
    truth = {(p, uid) for uid in kinds for p in registry.parent_map.get(uid, ()) if p in kinds}
    assert edges == truth and len(edges) > 10
    assert body["counts"] == {"source": 4, "seed": 0, "model": 5, "feature_view": 4, "ml_model": 1, "exposure": 0}
    urls = {n["name"]: n["url"] for n in body["nodes"]}
    assert urls["fraud_model_v1"] == "#/ml-model/fraud_model_v1"
    assert urls["raw.transactions"] == "#/source/source.feature_layer.raw.transactions"
    assert urls["merchant_risk_features"] == "#/view/merchant_risk_features"


def test_the_map_of_a_hand_built_registry():
    graph = project_map(build_registry())
    by_name = {n["name"]: n for n in graph["nodes"]}
    assert by_name["merchant_risk"]["entities"] == ["merchant"]
    assert by_name["fraud_model_v1"]["entities"] == ["merchant", "user"]
    assert set(by_name["user_txn_features"]["tags"]) == {"fraud", "velocity", "spend"}
    assert by_name["raw.chargebacks"]["kind"] == "source"


def test_the_feature_table_has_every_feature_once(client, store):
    body = client.get("/v1/feature-table").json()
    refs = [r["ref"] for r in body["features"]]
    assert sorted(refs) == sorted(store.registry._features) and len(refs) == len(set(refs)) == body["total"]  # noqa: SLF001
    row = next(r for r in body["features"] if r["ref"] == "merchant_risk_features.chargeback_rate_30d")
    assert row["services"] == [SERVICE] and row["entities"] == ["merchant"] and row["freshness"] == "fresh"
