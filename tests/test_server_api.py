"""The HTTP API over the real store: the dbt-built example project, materialized into its
embedded SQLite online store with the clock pinned to the data's end (server_helpers)."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import threading
import time
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from server_helpers import EXAMPLE_NOW, LiveServer, materialized_copy, open_store
from starlette.testclient import TestClient

from feature_layer.server.app import Limits, create_app

AMOUNT = "user_transaction_features.amount"
RATE = "merchant_risk_features.chargeback_rate_30d"
COUNTRY = "user_profile_features.country"


@pytest.fixture(scope="module")
def project(built_example_project: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return materialized_copy(built_example_project, tmp_path_factory.mktemp("served") / "project")


@pytest.fixture(scope="module")
def store(project: Path):
    s = open_store(project)
    yield s
    s.close()


@pytest.fixture(scope="module")
def client(store) -> TestClient:
    with TestClient(create_app(store, reload_interval=None)) as c:
        yield c


def error_of(response: httpx.Response) -> dict:
    body = response.json()
    assert set(body) == {"error"}
    assert body["error"]["message"] and body["error"]["fix"], body
    return body["error"]


# -- online features ------------------------------------------------------------------------

def test_online_features_return_what_the_python_client_returns(client, store):
    body = {"features": [AMOUNT, RATE, COUNTRY, "user_merchant_features.txn_count_30d"],
            "entity_rows": [{"user_id": u, "merchant_id": m} for u, m in ((7, 3), (8, 4), (1, 1), (99999, 99999))],
            "include_event_times": True}
    response = client.post("/v1/online-features", json=body)
    assert response.status_code == 200, response.text
    expected = store.get_online_features(features=body["features"], entity_rows=body["entity_rows"],
                                         include_event_times=True).to_dict()
    got = response.json()
    assert got == json.loads(json.dumps(expected, default=lambda v: v.isoformat()))
    # values are present (the clock is pinned to the data), and a missing entity is null
    assert got["amount"][0] == pytest.approx(376.96) and got["country"][:3] == ["IN", "US", got["country"][2]]
    assert all(v is not None for v in got["chargeback_rate_30d"][:3]) and got["country"][2] is not None
    assert got["chargeback_rate_30d"][3] is None and got["amount"][3] is None
    assert got["amount__event_time"][0] is not None and got["user_id"] == [7, 8, 1, 99999]


def test_online_features_accept_columnar_entities_and_a_service(client, store):
    entities = {"user_id": [7, 8], "merchant_id": [3, 4]}
    response = client.post("/v1/online-features", json={"service": "fraud_model_v1", "entities": entities})
    assert response.status_code == 200, response.text
    expected = store.get_online_features(service="fraud_model_v1", entity_rows=entities).to_dict()
    assert response.json() == json.loads(json.dumps(expected, default=lambda v: v.isoformat()))
    assert response.json()["user_id"] == [7, 8] and response.json()["category"][0] is not None


def test_unknown_feature_is_404_naming_the_field_with_a_suggestion(client):
    response = client.post("/v1/online-features", json={"features": [AMOUNT, "user_transaction_features.amount_avg_7"],
                                                        "entity_rows": [{"user_id": 1}]})
    assert response.status_code == 404
    error = error_of(response)
    assert error["field"] == "features[1]"
    assert "Did you mean 'amount_avg_7d'" in error["message"]
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
    ({"features": ["amount"], "entity_rows": [{"user_id": 1}]}, "features[0]", "not a feature reference"),
    ({"features": [AMOUNT], "entity_rows": [{"user_id": 123456789012345678901234567890}]}, "entity_rows[0].user_id",
     "64-bit integer range"),
    ({"features": [AMOUNT], "entity_rows": [{"user_id": 9223372036854775808}]}, "entity_rows[0].user_id",
     "64-bit integer range"),
    ({"features": [AMOUNT], "entities": {"user_id": [1, -9223372036854775809]}}, "entities.user_id[1]",
     "64-bit integer range"),
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


def test_int64_boundaries_are_valid_join_keys(client):
    for value in (9223372036854775807, -9223372036854775808):
        response = client.post("/v1/online-features", json={"features": [AMOUNT], "entity_rows": [{"user_id": value}]})
        assert response.status_code == 200, response.text
        assert response.json() == {"user_id": [value], "amount": [None]}


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
    refs = [f["ref"] for f in body["features"]]
    assert refs[:2] == [AMOUNT, "user_transaction_features.amount_avg_7d"] and len(refs) == body["total"] == 7
    assert body["features"][0]["matched"] == ["name"]
    merchant = client.get("/v1/features", params={"entity": "merchant", "tag": "merchant"}).json()["features"]
    assert merchant and all(f["view"] == "merchant_risk_features" for f in merchant)
    assert client.get("/v1/features", params={"q": "", "limit": "1"}).json()["total"] == len(client.app.state.holder.refs)
    response = client.get("/v1/features", params={"query": "amount"})
    assert response.status_code == 422 and error_of(response)["field"] == "query"
    response = client.get("/v1/features", params={"entity": "usr"})
    assert response.status_code == 404 and "Did you mean 'user'" in error_of(response)["message"]
    assert client.get("/v1/features", params={"limit": "100000"}).status_code == 422
    assert client.get("/v1/features", params={"q": "x" * 500}).status_code == 422


def test_feature_endpoint_has_metadata_sql_freshness_services_and_snippet(client, store):
    f = client.get(f"/v1/features/{AMOUNT}").json()
    assert f["dtype"] == "float64" and f["ttl"] == "30d" and f["owner"] == "risk-team@example.com"
    assert f["entities"] == [{"name": "user", "join_keys": ["user_id"], "description": "A card holder"}]
    assert "amount" in f["compiled_sql"]
    newest = store.state.newest_event_time("user_transaction_features")
    assert newest is not None
    assert f["freshness"]["newest_event_time"] == newest.isoformat()
    assert f["freshness"]["lag_seconds"] == pytest.approx((EXAMPLE_NOW - newest).total_seconds())
    assert f["freshness"]["status"] == "fresh" and f["freshness"]["expired"] is False
    assert [s["name"] for s in f["services"]] == ["fraud_model_v1"]
    assert f'features=["{AMOUNT}"]' in f["snippet"] and "get_online_features" in f["snippet"]
    compile(f["snippet"], "snippet", "exec")  # the snippet is valid Python
    response = client.get("/v1/features/user_transaction_features.nope")
    assert response.status_code == 404 and error_of(response)["field"] == "name"


def test_freshness_is_the_newest_materialized_event_not_the_run_end(built_example_project, tmp_path):
    """Data 40 days old, a 30-day TTL, materialized "now": expired, not "fresh, lag 0"."""
    now = EXAMPLE_NOW + timedelta(days=40)
    project = materialized_copy(built_example_project, tmp_path / "p", ["user_transaction_features"], now=now)
    store = open_store(project, now)
    try:
        state = store.state.view_state("user_transaction_features")
        assert state is not None and state.watermark.event_time == now  # the run's end is now...
        with TestClient(create_app(store, reload_interval=None)) as client:
            fresh = client.get("/v1/views/user_transaction_features").json()["freshness"]
            metrics = client.get("/metrics").text
            lookup = client.post("/v1/online-features", json={"features": [AMOUNT], "entity_rows": [{"user_id": 7}]})
    finally:
        store.close()
    # ...but its newest event is the data's, 40 days before now
    assert fresh["newest_event_time"] == state.newest_event_time.isoformat()
    assert fresh["lag_seconds"] == pytest.approx((now - state.newest_event_time).total_seconds())
    assert fresh["lag_seconds"] > 40 * 86400 and fresh["expired"] is True and fresh["status"] == "expired"
    assert fresh["watermark"] == now.isoformat()
    assert 'feature_layer_feature_view_expired{view="user_transaction_features"} 1' in metrics
    lag = re.search(r'^feature_layer_feature_view_freshness_lag_seconds\{view="user_transaction_features"\} (\S+)$',
                    metrics, re.M)
    assert lag and float(lag.group(1)) == pytest.approx(fresh["lag_seconds"])
    assert lookup.json()["amount"] == [None]  # what "expired" means: lookups answer null


def _scans(client) -> int:
    found = re.search(r"^feature_layer_statistics_warehouse_scans_total (\d+)$", client.get("/metrics").text, re.M)
    return int(found.group(1)) if found else 0


SERVED = {"merchant_risk_features": (("merchant_id",), "as_of", 2),
          "user_merchant_features": (("user_id", "merchant_id"), "occurred_at", 90)}


def _warehouse_amounts(project: Path, view: str, column: str) -> dict:
    """The reference for what is served: each entity's latest row as of the materialization
    (EXAMPLE_NOW), newer than the TTL, computed with a plain window query."""
    import duckdb

    keys, event_time, ttl_days = SERVED[view]
    now = EXAMPLE_NOW.replace(tzinfo=None).isoformat(sep=" ")
    served = (f"select * from (select *, row_number() over (partition by {', '.join(keys)} order by {event_time} desc) "
              f"as rn from main.{view} where {event_time} <= timestamp '{now}') where rn = 1 "
              f"and {event_time} > timestamp '{now}' - interval {ttl_days} day")
    with duckdb.connect(str(project / "target" / "feature_layer.duckdb"), read_only=True) as con:
        row = con.execute(f"select count(*), count({column}), min({column}), max({column}) from ({served})").fetchone()
    return {"rows": row[0], "non_null": row[1], "min": row[2], "max": row[3]}


def test_statistics_are_computed_in_the_warehouse_on_demand_then_stored(client, store, project):
    feature = "merchant_risk_features.amount_avg_30d"
    truth = _warehouse_amounts(project, "merchant_risk_features", "amount_avg_30d")
    before = _scans(client)
    stats = client.get(f"/v1/features/{feature}/statistics", params={"refresh": "true"}).json()["statistics"]
    assert stats["source"] == "on-demand" and stats["rows"] == truth["rows"] > 0
    assert stats["min"] == pytest.approx(truth["min"]) and stats["max"] == pytest.approx(truth["max"])
    assert stats["null_pct"] == pytest.approx(100 * (1 - truth["non_null"] / truth["rows"]))
    assert sum(b["count"] for b in stats["histogram"]) == truth["non_null"]
    assert _scans(client) == before + 1
    assert store.state.get_statistics(feature)["rows"] == truth["rows"]  # stored
    client.get(f"/v1/features/{feature}/statistics")
    assert _scans(client) == before + 1  # stored: no second warehouse trip
    client.get(f"/v1/features/{feature}/statistics", params={"refresh": "true"})
    assert _scans(client) == before + 1  # computed moments ago: refresh answers from that result
    limits = client.app.state.limits
    client.app.state.limits = dataclasses.replace(limits, stats_refresh_interval=0)
    try:
        client.get(f"/v1/features/{feature}/statistics", params={"refresh": "true"})
    finally:
        client.app.state.limits = limits
    assert _scans(client) == before + 2


def test_stored_statistics_from_materialization_are_normalised(client, store):
    feature = "user_merchant_features.txn_count_total"
    store.state.save_statistics(feature, {"rows": 10, "null_pct": 10.0, "distinct": 3, "min": 1, "max": 4, "mean": 2.5,
                                          "histogram": {"edges": [1, 2, 3, 4], "counts": [3, 4, 2]}})
    stats = client.get(f"/v1/features/{feature}/statistics").json()["statistics"]
    assert stats["histogram"] == [{"lo": 1, "hi": 2, "count": 3}, {"lo": 2, "hi": 3, "count": 4}, {"lo": 3, "hi": 4, "count": 2}]
    assert stats["histogram_kind"] == "bins" and stats["source"] == "materialization"


def test_stored_statistics_without_a_histogram_get_one_once(client, store, project):
    feature = "user_merchant_features.amount_sum_30d"
    truth = _warehouse_amounts(project, "user_merchant_features", "amount_sum_30d")
    store.state.save_statistics(feature, {"rows": truth["rows"], "null_pct": 0.0, "distinct": 9, "min": truth["min"],
                                          "max": truth["max"]})
    before = _scans(client)
    stats = client.get(f"/v1/features/{feature}/statistics").json()["statistics"]
    assert stats["histogram_kind"] == "bins" and stats["histogram_source"] == "on-demand"
    assert sum(b["count"] for b in stats["histogram"]) == truth["non_null"]
    assert _scans(client) == before + 1  # the histogram only; the summary was stored
    client.get(f"/v1/features/{feature}/statistics")
    assert _scans(client) == before + 1  # saved with it
    assert store.state.get_statistics(feature)["histogram_source"] == "on-demand"


def test_lineage_endpoint_returns_the_column_graph_with_layers(client):
    graph = client.get(f"/v1/lineage/{AMOUNT}").json()
    depth = {n["id"]: n["depth"] for n in graph["nodes"]}
    assert depth["source.feature_layer.raw.transactions:amount"] == 0
    assert depth[graph["root"]] > depth["source.feature_layer.raw.transactions:amount"]
    assert depth["exposure.feature_layer.fraud_model_v1"] == depth[graph["root"]] + 1
    assert {"source": graph["root"], "target": "exposure.feature_layer.fraud_model_v1"} in graph["edges"]
    assert client.get(f"/v1/lineage/{AMOUNT}", params={"level": "table"}).status_code == 422


def test_entity_view_catalog_and_health_endpoints(client, store):
    entity = client.get("/v1/entities/merchant").json()
    assert [v["name"] for v in entity["views"]] == ["merchant_risk_features"] and len(entity["features"]) > 3
    view = client.get("/v1/views/merchant_risk_features").json()
    assert view["services"] == ["fraud_model_v1"] and view["freshness"]["status"] == "fresh"
    assert [u["name"] for u in view["upstream"]]
    catalog = client.get("/v1/catalog").json()
    assert catalog["features"] == len(client.app.state.holder.refs) and "risk-team@example.com" in catalog["owners"]
    health = client.get("/healthz")
    assert health.status_code == 200, health.text
    body = health.json()
    assert body["status"] == "ok" and body["problems"] == [] and body["broken_views"] == {}
    assert body["online_store"]["status"] == "ok" and body["online_store"]["latency_ms"] >= 0
    assert body["online_store"]["name"] == "The embedded SQLite online store at .feature_layer/online.sqlite"
    assert client.get("/v1/entities/nobody").status_code == 404
    assert client.get("/v1/views/nobody").status_code == 404
    assert client.get("/").headers["content-type"].startswith("text/html")
    assert client.get("/static/app.js").status_code == 200


def test_no_endpoint_runs_caller_supplied_sql(client, project):
    import duckdb

    def rows() -> int:
        with duckdb.connect(str(project / "target" / "feature_layer.duckdb"), read_only=True) as con:
            return con.execute("select count(*) from main.user_transaction_features").fetchone()[0]

    before = rows()
    hostile = f"{AMOUNT}; drop table main.user_transaction_features"
    assert client.get(f"/v1/features/{hostile}/statistics").status_code == 404
    assert client.get("/v1/features", params={"q": "'; select 1; --"}).status_code == 200
    response = client.post("/v1/online-features",
                           json={"features": [AMOUNT], "entity_rows": [{"user_id": "1; drop table x"}]})
    assert response.status_code == 422
    assert rows() == before > 0


def test_metrics_report_request_counts_latencies_and_freshness(store):
    with TestClient(create_app(store, reload_interval=None)) as client:
        served = len(client.app.state.holder.refs)
        client.post("/v1/online-features", json={"features": [AMOUNT], "entity_rows": [{"user_id": 1}]})
        client.post("/v1/online-features", json={"features": ["x.y"], "entity_rows": [{"user_id": 1}]})
        text = client.get("/metrics").text
    assert 'feature_layer_http_requests_total{method="POST",route="/v1/online-features",status="200"} 1' in text
    assert 'feature_layer_http_requests_total{method="POST",route="/v1/online-features",status="404"} 1' in text
    assert 'feature_layer_http_request_duration_seconds_bucket{route="/v1/online-features",le="+Inf"} 2' in text
    newest = store.state.newest_event_time("user_transaction_features")
    assert newest is not None
    lag = (EXAMPLE_NOW - newest).total_seconds()
    assert f'feature_layer_feature_view_freshness_lag_seconds{{view="user_transaction_features"}} {lag!r}' in text
    assert 'feature_layer_feature_view_expired{view="user_transaction_features"} 0' in text
    assert 'feature_layer_feature_view_ttl_seconds{view="merchant_risk_features"} 172800' in text
    assert "feature_layer_online_entity_rows_total 1" in text
    assert f"feature_layer_registry_features {served}\n" in text and served > 20


# -- hot reload -----------------------------------------------------------------------------

def _rewrite_description(project: Path, view: str, column: str, description: str) -> None:
    """Rewrite the manifest as dbt does (a new file, then a rename) with a new column description."""
    manifest = project / "target" / "manifest.json"
    raw = json.loads(manifest.read_text())
    uid = next(u for u, n in raw["nodes"].items() if n.get("name") == view and n.get("resource_type") == "model")
    entry = raw["nodes"][uid]["columns"].setdefault(column, {"name": column, "meta": {}, "tags": []})
    entry["description"] = description
    tmp = project / "target" / "manifest.tmp"
    tmp.write_text(json.dumps(raw))
    tmp.replace(manifest)


def test_registry_reloads_when_the_manifest_changes_without_dropping_requests(project, tmp_path):
    copy = tmp_path / "p"
    shutil.copytree(project, copy)
    store = open_store(copy)
    app = create_app(store, reload_interval=0.05)
    failures: list[str] = []
    statuses: list[int] = []
    stop = threading.Event()

    def hammer(url: str) -> None:
        with httpx.Client(base_url=url, timeout=30) as http:
            while not stop.is_set():
                r = http.post("/v1/online-features", json={"features": [AMOUNT], "entity_rows": [{"user_id": 7}]})
                statuses.append(r.status_code)
                if r.status_code != 200 or r.json()["amount"] != [pytest.approx(376.96)]:
                    failures.append(r.text)

    try:
        with LiveServer(app) as server:
            threads = [threading.Thread(target=hammer, args=(server.url,)) for _ in range(4)]
            for t in threads:
                t.start()
            with httpx.Client(base_url=server.url) as http:
                for version in ("two", "three"):
                    time.sleep(0.15)
                    _rewrite_description(copy, "user_transaction_features", "amount", f"version {version}")
                    deadline = time.monotonic() + 20
                    while http.get(f"/v1/features/{AMOUNT}").json()["description"] != f"version {version}":
                        assert time.monotonic() < deadline, "the registry was not reloaded"
                        time.sleep(0.02)
                # a broken manifest: the last good registry keeps serving, health says why (no server paths)
                (copy / "target" / "manifest.json").write_text("{ half written")
                deadline = time.monotonic() + 20
                while http.get("/healthz").json()["status"] != "degraded":
                    assert time.monotonic() < deadline
                    time.sleep(0.02)
                assert http.get(f"/v1/features/{AMOUNT}").json()["description"] == "version three"
                health = http.get("/healthz").json()
                assert health["reload_error"] and "manifest.json" in health["reload_error"]
                assert str(tmp_path) not in json.dumps(health) and "/tmp/" not in json.dumps(health)
                failures_metric = re.search(r"^feature_layer_registry_reload_failures (\d+)$",
                                            http.get("/metrics").text, re.M)
                assert failures_metric and int(failures_metric.group(1)) >= 1
            stop.set()
            for t in threads:
                t.join()
    finally:
        stop.set()
        store.close()
    assert app.state.holder.reloads == 2
    assert len(statuses) > 20 and not failures, failures[:3]


# -- the example project, built by dbt and materialized -------------------------------------

def test_example_project_served_end_to_end_with_reload(built_example_project: Path, tmp_path: Path):
    project = materialized_copy(built_example_project, tmp_path / "project",
                                ["user_profile_features", "user_transaction_features"])
    store = open_store(project)
    refs = ["user_profile_features.country", "user_profile_features.age_at_signup", "user_transaction_features.amount"]
    rows = [{"user_id": 7}, {"user_id": 8}]
    expected = store.get_online_features(features=refs, entity_rows=rows).to_dict()
    app = create_app(store, reload_interval=0.05)
    try:
        with LiveServer(app) as server, httpx.Client(base_url=server.url, timeout=10) as http:
            response = http.post("/v1/online-features", json={"features": refs, "entity_rows": rows})
            assert response.status_code == 200, response.text
            assert response.json() == json.loads(json.dumps(expected, default=str))
            assert response.json()["country"][0] is not None and response.json()["amount"][0] is not None
            # statistics written at materialization, shown as stored
            stats = http.get("/v1/features/user_transaction_features.amount/statistics").json()["statistics"]
            assert stats["source"] == "materialization" and stats["histogram_kind"] == "bins"
            assert sum(b["count"] for b in stats["histogram"]) == stats["rows"] * (1 - stats["null_pct"] / 100)
            # a view never materialized: statistics computed on demand in DuckDB, then stored
            stats = http.get("/v1/features/merchant_risk_features.chargeback_rate_30d/statistics").json()["statistics"]
            assert stats["source"] == "on-demand" and stats["rows"] > 0
            assert store.state.get_statistics("merchant_risk_features.chargeback_rate_30d")["rows"] == stats["rows"]
            feature = http.get("/v1/features/user_transaction_features.amount").json()
            assert feature["freshness"]["status"] == "fresh" and feature["freshness"]["newest_event_time"]
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
