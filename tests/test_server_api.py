"""The HTTP API: lookups, search, feature pages' data, validation, limits, metrics, hot reload."""

from __future__ import annotations

import dataclasses
import json
import re
import threading
import time
from pathlib import Path

import httpx
import pytest
from server_helpers import FakeStore, LiveServer, build_registry
from starlette.testclient import TestClient

from feature_layer.errors import ManifestError
from feature_layer.server.app import Limits, create_app
from feature_layer.server.reload import RegistryHolder

AMOUNT = "user_txn_features.amount_sum_7d"


@pytest.fixture()
def store() -> FakeStore:
    s = FakeStore()
    yield s
    s.close()


@pytest.fixture()
def client(store: FakeStore) -> TestClient:
    with TestClient(create_app(store, reload_interval=None)) as c:
        yield c


def error_of(response: httpx.Response) -> dict:
    body = response.json()
    assert set(body) == {"error"}
    assert body["error"]["message"] and body["error"]["fix"], body
    return body["error"]


# -- online features ------------------------------------------------------------------------

def test_online_features_return_what_the_python_client_returns(client, store):
    body = {"features": [AMOUNT, "merchant_risk.chargeback_rate"], "entity_rows": [{"user_id": 3, "merchant_id": 101}]}
    response = client.post("/v1/online-features", json=body)
    assert response.status_code == 200
    expected = store.get_online_features(features=body["features"], entity_rows=body["entity_rows"]).to_dict()
    assert response.json() == expected
    assert response.json()["amount_sum_7d"][0] == pytest.approx(256.58)


def test_online_features_accept_columnar_entities_and_a_service(client, store):
    response = client.post("/v1/online-features", json={"service": "fraud_model_v1",
                                                        "entities": {"user_id": [3, 4], "merchant_id": [101, 102]}})
    assert response.status_code == 200
    assert response.json()["user_id"] == [3, 4]
    assert set(response.json()) >= {"txn_count_7d", "amount_sum_7d", "chargeback_rate"}


def test_unknown_feature_is_404_naming_the_field_with_a_suggestion(client):
    response = client.post("/v1/online-features", json={"features": [AMOUNT, "user_txn_features.amount_sum_7"],
                                                        "entity_rows": [{"user_id": 1}]})
    assert response.status_code == 404
    error = error_of(response)
    assert error["field"] == "features[1]"
    assert "Did you mean 'amount_sum_7d'" in error["message"]
    assert client.post("/v1/online-features", json={"service": "fraud_v2", "entity_rows": [{"user_id": 1}]}).json()[
        "error"]["field"] == "service"


@pytest.mark.parametrize(("payload", "field", "words"), [
    (b"{not json", "body", "not valid JSON"),
    (b"[1, 2]", "body", "JSON object"),
    (b"", "body", "empty"),
    ({"features": [AMOUNT], "entity_rows": [{"user_id": 1}], "entity_row": []}, "entity_row", "Did you mean"),
    ({"features": [AMOUNT], "service": "fraud_model_v1", "entity_rows": [{"user_id": 1}]}, "features", "exactly one"),
    ({"entity_rows": [{"user_id": 1}]}, "features", "exactly one"),
    ({"features": [], "entity_rows": [{"user_id": 1}]}, "features", "non-empty"),
    ({"features": [7], "entity_rows": [{"user_id": 1}]}, "features[0]", "not a string"),
    ({"features": ["amount_sum_7d"], "entity_rows": [{"user_id": 1}]}, "features[0]", "not a feature reference"),
    ({"features": [AMOUNT]}, "entity_rows", "exactly one"),
    ({"features": [AMOUNT], "entity_rows": []}, "entity_rows", "non-empty"),
    ({"features": [AMOUNT], "entity_rows": [{"user_id": 1}, 5]}, "entity_rows[1]", "object"),
    ({"features": [AMOUNT], "entity_rows": [{"user_id": {"a": 1}}]}, "entity_rows[0].user_id", "strings, numbers"),
    ({"features": [AMOUNT], "entities": {"user_id": [1], "x": [1, 2]}}, "entities", "different lengths"),
    ({"features": [AMOUNT], "entity_rows": [{"user_id": 1}], "include_event_times": "yes"}, "include_event_times", "true or false"),
])
def test_malformed_requests_are_4xx_naming_the_field_and_the_fix(client, payload, field, words):
    if isinstance(payload, bytes):
        response = client.post("/v1/online-features", content=payload, headers={"content-type": "application/json"})
    else:
        response = client.post("/v1/online-features", json=payload)
    assert response.status_code == 422, response.text
    error = error_of(response)
    assert error["field"] == field
    assert words in error["message"]


def test_missing_join_key_is_a_422_from_the_lookup(client):
    response = client.post("/v1/online-features", json={"features": [AMOUNT], "entity_rows": [{"merchant_id": 1}]})
    assert response.status_code == 422
    assert "user_id" in error_of(response)["message"]


def test_request_size_is_bounded_by_bytes_and_by_rows(store):
    app = create_app(store, reload_interval=None, limits=Limits(max_body_bytes=2_000, max_entity_rows=10))
    with TestClient(app) as client:
        big = {"features": [AMOUNT], "entity_rows": [{"user_id": i} for i in range(400)]}
        response = client.post("/v1/online-features", json=big)
        assert response.status_code == 413
        assert error_of(response)["field"] == "body"

        def chunks():  # no Content-Length: the limit applies while streaming
            for _ in range(10):
                yield b" " * 500
        assert client.post("/v1/online-features", content=chunks()).status_code == 413
        rows = {"features": [AMOUNT], "entity_rows": [{"user_id": i} for i in range(11)]}
        response = client.post("/v1/online-features", json=rows)
        assert response.status_code == 422
        assert "at most 10 rows" in error_of(response)["fix"]


# -- search and pages -----------------------------------------------------------------------

def test_search_endpoint_ranks_filters_and_refuses_unknown_parameters(client):
    body = client.get("/v1/features", params={"q": "amount"}).json()
    assert [f["ref"] for f in body["features"]] == [AMOUNT, "user_txn_features.avg_amount_7d"]
    assert body["total"] == 2 and body["features"][0]["matched"] == ["name"]
    assert [f["ref"] for f in client.get("/v1/features", params={"entity": "merchant", "tag": "risk"}).json()["features"]] \
        == ["merchant_risk.chargeback_rate", "merchant_risk.foreign_share"]
    assert client.get("/v1/features", params={"q": "", "limit": "1"}).json()["total"] == 5
    response = client.get("/v1/features", params={"query": "amount"})
    assert response.status_code == 422 and error_of(response)["field"] == "query"
    response = client.get("/v1/features", params={"entity": "usr"})
    assert response.status_code == 404 and "Did you mean 'user'" in error_of(response)["message"]
    assert client.get("/v1/features", params={"limit": "100000"}).status_code == 422
    assert client.get("/v1/features", params={"q": "x" * 500}).status_code == 422


def test_feature_endpoint_has_metadata_sql_freshness_services_and_snippet(client):
    f = client.get(f"/v1/features/{AMOUNT}").json()
    assert f["dtype"] == "float64" and f["ttl"] == "2d" and f["owner"] == "risk-analytics@example.com"
    assert f["entities"] == [{"name": "user", "join_keys": ["user_id"], "description": "A card holder."}]
    assert "sum(total) over w as amount_sum_7d" in f["compiled_sql"]
    assert f["freshness"]["status"] == "stale" and f["freshness"]["lag_seconds"] > 2 * 86400
    assert [s["name"] for s in f["services"]] == ["fraud_model_v1"]
    assert f'features=["{AMOUNT}"]' in f["snippet"] and "get_online_features" in f["snippet"]
    compile(f["snippet"], "snippet", "exec")  # the snippet is valid Python
    response = client.get("/v1/features/user_txn_features.nope")
    assert response.status_code == 404 and error_of(response)["field"] == "name"


def test_statistics_are_computed_in_the_warehouse_on_demand_then_stored(client, store):
    assert client.get(f"/v1/features/{AMOUNT}").json()["statistics"] is None
    before = len(store.engine.queries)
    stats = client.get(f"/v1/features/{AMOUNT}/statistics").json()["statistics"]
    assert stats["rows"] == 2000 and stats["null_pct"] == 0 and stats["source"] == "on-demand"
    assert stats["min"] == pytest.approx(5.14) and stats["max"] == pytest.approx(442.29)
    assert sum(b["count"] for b in stats["histogram"]) == 2000
    assert len(store.engine.queries) == before + 2  # summary + histogram, generated by sqlglot
    assert all('"memory"."main"."user_txn_features"' in q for q in store.engine.queries[before:])
    assert store.state.get_statistics(AMOUNT)["rows"] == 2000
    client.get(f"/v1/features/{AMOUNT}/statistics")
    assert len(store.engine.queries) == before + 2  # stored: no second warehouse trip
    client.get(f"/v1/features/{AMOUNT}/statistics", params={"refresh": "true"})
    assert len(store.engine.queries) == before + 2  # computed moments ago: refresh answers from that result
    client.app.state.limits = dataclasses.replace(client.app.state.limits, stats_refresh_interval=0)
    client.get(f"/v1/features/{AMOUNT}/statistics", params={"refresh": "true"})
    assert len(store.engine.queries) == before + 4


def test_stored_statistics_from_materialization_are_normalised(client, store):
    store.state.save_statistics(AMOUNT, {"rows": 10, "null_pct": 10.0, "distinct": 3, "min": 1, "max": 4, "mean": 2.5,
                                         "histogram": {"edges": [1, 2, 3, 4], "counts": [3, 4, 2]}})
    stats = client.get(f"/v1/features/{AMOUNT}/statistics").json()["statistics"]
    assert stats["histogram"] == [{"lo": 1, "hi": 2, "count": 3}, {"lo": 2, "hi": 3, "count": 4}, {"lo": 3, "hi": 4, "count": 2}]
    assert stats["histogram_kind"] == "bins" and stats["source"] == "materialization"


def test_stored_statistics_without_a_histogram_get_one_once(client, store):
    store.state.save_statistics(AMOUNT, {"rows": 2000, "null_pct": 0.0, "distinct": 9, "min": 5.14, "max": 442.29})
    before = len(store.engine.queries)
    stats = client.get(f"/v1/features/{AMOUNT}/statistics").json()["statistics"]
    assert stats["histogram_kind"] == "bins" and stats["histogram_source"] == "on-demand"
    assert sum(b["count"] for b in stats["histogram"]) == 2000
    assert len(store.engine.queries) == before + 1  # the histogram only; the summary was stored
    client.get(f"/v1/features/{AMOUNT}/statistics")
    assert len(store.engine.queries) == before + 1  # saved with it
    assert store.state.get_statistics(AMOUNT)["histogram_source"] == "on-demand"


def test_lineage_endpoint_returns_the_column_graph_with_layers(client):
    graph = client.get(f"/v1/lineage/{AMOUNT}").json()
    depth = {n["id"]: n["depth"] for n in graph["nodes"]}
    assert depth["source.fraud.raw.transactions:amount"] == 0
    assert depth["model.fraud.stg_transactions:amount"] == 1
    assert depth[graph["root"]] == 2
    assert depth["exposure.fraud.fraud_model_v1"] == 3
    assert {"source": graph["root"], "target": "exposure.fraud.fraud_model_v1"} in graph["edges"]
    assert client.get(f"/v1/lineage/{AMOUNT}", params={"level": "table"}).status_code == 422


def test_entity_view_catalog_and_health_endpoints(client):
    entity = client.get("/v1/entities/user").json()
    assert [v["name"] for v in entity["views"]] == ["user_txn_features"] and len(entity["features"]) == 3
    view = client.get("/v1/views/merchant_risk").json()
    assert view["services"] == ["fraud_model_v1"] and view["freshness"]["status"] == "never"
    assert [u["name"] for u in view["upstream"]] == ["stg_transactions", "chargebacks"]
    catalog = client.get("/v1/catalog").json()
    assert catalog["features"] == 5 and catalog["owners"] == ["merchant-team@example.com", "risk-analytics@example.com"]
    assert client.get("/healthz").json()["status"] == "ok"
    assert client.get("/v1/entities/nobody").status_code == 404
    assert client.get("/v1/views/nobody").status_code == 404
    assert client.get("/").headers["content-type"].startswith("text/html")
    assert client.get("/static/app.js").status_code == 200


def test_no_endpoint_runs_caller_supplied_sql(client, store):
    hostile = "user_txn_features.amount_sum_7d; drop table main.stg_transactions"
    assert client.get(f"/v1/features/{hostile}/statistics").status_code == 404
    assert client.get("/v1/features", params={"q": "'; select 1; --"}).status_code == 200
    assert all("drop" not in q.lower() for q in store.engine.queries)
    assert store.engine.fetch_arrow("select count(*) as n from main.stg_transactions").to_pylist()[0]["n"] == 2000


def test_metrics_report_request_counts_latencies_and_freshness(client):
    client.post("/v1/online-features", json={"features": [AMOUNT], "entity_rows": [{"user_id": 1}]})
    client.post("/v1/online-features", json={"features": ["x.y"], "entity_rows": [{"user_id": 1}]})
    text = client.get("/metrics").text
    assert 'feature_layer_http_requests_total{method="POST",route="/v1/online-features",status="200"} 1' in text
    assert 'feature_layer_http_requests_total{method="POST",route="/v1/online-features",status="404"} 1' in text
    assert 'feature_layer_http_request_duration_seconds_bucket{route="/v1/online-features",le="+Inf"} 2' in text
    assert 'feature_layer_feature_view_freshness_lag_seconds{view="user_txn_features"}' in text
    assert 'feature_layer_feature_view_ttl_seconds{view="merchant_risk"} 2592000' in text
    assert "feature_layer_online_entity_rows_total 1" in text
    assert "feature_layer_registry_features 5" in text


# -- hot reload -----------------------------------------------------------------------------

def _registry_from(path: Path):
    """A registry whose descriptions come from a JSON 'manifest' (invalid JSON fails like dbt's would)."""
    try:
        spec = json.loads(path.read_text())
    except ValueError as exc:
        raise ManifestError(f"{path} is not valid JSON.", fix="run dbt parse again.") from exc
    registry = build_registry()
    from dataclasses import replace

    view = registry.views["user_txn_features"]
    features = tuple(replace(f, description=spec.get(f.name, f.description)) for f in view.features)
    registry.views["user_txn_features"] = replace(view, features=features)
    return registry


def test_registry_reloads_when_the_manifest_changes_without_dropping_requests(tmp_path, store):
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps({"amount_sum_7d": "version one"}))
    holder = RegistryHolder(lambda: _registry_from(manifest), [manifest])
    store.registry = holder.registry
    app = create_app(store, reload_interval=0.05, holder=holder)
    failures: list[str] = []
    statuses: list[int] = []
    stop = threading.Event()

    def hammer(url: str) -> None:
        with httpx.Client(base_url=url, timeout=30) as http:
            while not stop.is_set():
                r = http.post("/v1/online-features", json={"features": [AMOUNT], "entity_rows": [{"user_id": 3}]})
                statuses.append(r.status_code)
                if r.status_code != 200:
                    failures.append(r.text)

    with LiveServer(app) as server:
        threads = [threading.Thread(target=hammer, args=(server.url,)) for _ in range(4)]
        for t in threads:
            t.start()
        with httpx.Client(base_url=server.url) as http:
            assert http.get(f"/v1/features/{AMOUNT}").json()["description"] == "version one"
            for version in ("two", "three"):
                time.sleep(0.15)
                tmp = tmp_path / "manifest.tmp"
                tmp.write_text(json.dumps({"amount_sum_7d": f"version {version}"}))
                tmp.replace(manifest)  # how dbt writes: a new file, then a rename
                deadline = time.monotonic() + 20
                while http.get(f"/v1/features/{AMOUNT}").json()["description"] != f"version {version}":
                    assert time.monotonic() < deadline, "the registry was not reloaded"
                    time.sleep(0.02)
            # a broken manifest: the last good registry keeps serving, health says why
            manifest.write_text("{ half written")
            deadline = time.monotonic() + 20
            while http.get("/healthz").json()["status"] != "degraded":
                assert time.monotonic() < deadline
                time.sleep(0.02)
            assert http.get(f"/v1/features/{AMOUNT}").json()["description"] == "version three"
            assert "not valid JSON" in http.get("/healthz").json()["reload_error"]
            # (a non-atomic write may be seen half-way too: one or more failures)
            failures_metric = re.search(r"^feature_layer_registry_reload_failures (\d+)$", http.get("/metrics").text, re.M)
            assert failures_metric and int(failures_metric.group(1)) >= 1
        stop.set()
        for t in threads:
            t.join()
    assert holder.reloads == 2
    assert len(statuses) > 20 and not failures, failures[:3]


# -- the example project, built by dbt and materialized -------------------------------------

def test_example_project_served_end_to_end_with_reload(built_example_project: Path, tmp_path: Path):
    import shutil

    from feature_layer import FeatureStore

    project = tmp_path / "project"
    shutil.copytree(built_example_project, project, ignore=shutil.ignore_patterns(".feature_layer", "logs"))
    store = FeatureStore(project)
    store.materialize(select=["user_profile_features", "user_transaction_features"])
    refs = ["user_profile_features.country", "user_profile_features.age_at_signup", "user_transaction_features.amount"]
    rows = [{"user_id": 7}, {"user_id": 8}]
    expected = store.get_online_features(features=refs, entity_rows=rows).to_dict()
    app = create_app(store, reload_interval=0.05)
    try:
        with LiveServer(app) as server, httpx.Client(base_url=server.url, timeout=10) as http:
            response = http.post("/v1/online-features", json={"features": refs, "entity_rows": rows})
            assert response.status_code == 200, response.text
            assert response.json() == json.loads(json.dumps(expected, default=str))
            assert response.json()["country"][0] is not None
            # statistics written at materialization, shown as stored
            stats = http.get("/v1/features/user_transaction_features.amount/statistics").json()["statistics"]
            assert stats["source"] == "materialization" and stats["histogram_kind"] == "bins"
            assert sum(b["count"] for b in stats["histogram"]) == stats["rows"] * (1 - stats["null_pct"] / 100)
            # a view never materialized: statistics computed on demand in DuckDB, then stored
            stats = http.get("/v1/features/merchant_risk_features.chargeback_rate_30d/statistics").json()["statistics"]
            assert stats["source"] == "on-demand" and stats["rows"] > 0
            assert store.state.get_statistics("merchant_risk_features.chargeback_rate_30d")["rows"] == stats["rows"]
            feature = http.get("/v1/features/user_transaction_features.amount").json()
            assert feature["freshness"]["status"] in ("fresh", "stale") and feature["freshness"]["last_event_time"]
            lineage = http.get("/v1/lineage/user_transaction_features.amount").json()
            assert "source.feature_layer.raw.transactions:amount" in {n["id"] for n in lineage["nodes"]}
            models = http.get("/v1/lineage/user_transaction_features.amount", params={"level": "model"}).json()
            assert models["upstream"]["children"][0]["name"] == "stg_transactions"
            assert models["services"] == ["fraud_model_v1"]
            assert 'feature_layer_feature_view_freshness_lag_seconds{view="user_profile_features"}' in http.get("/metrics").text
            # dbt rewrites the manifest: the server picks the change up while serving
            manifest = project / "target" / "manifest.json"
            raw = json.loads(manifest.read_text())
            uid = next(u for u, n in raw["nodes"].items() if n.get("name") == "user_profile_features")
            column = raw["nodes"][uid]["columns"].setdefault("country", {"name": "country", "meta": {}, "tags": []})
            column["description"] = "Country of residence (reloaded)."
            (project / "target" / "manifest.tmp").write_text(json.dumps(raw))
            (project / "target" / "manifest.tmp").replace(manifest)
            deadline = time.monotonic() + 10
            while http.get("/v1/features/user_profile_features.country").json()["description"] != "Country of residence (reloaded).":
                assert time.monotonic() < deadline, "the registry was not reloaded"
                assert http.post("/v1/online-features", json={"features": refs, "entity_rows": rows}).status_code == 200
                time.sleep(0.05)
            assert http.get("/healthz").json()["reloads"] == 1
    finally:
        store.close()
