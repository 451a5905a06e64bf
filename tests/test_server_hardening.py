"""The server under hostile conditions and inputs: a hung online store, refresh storms,
unbounded metric labels, crashes, response headers, snippet quoting, error fields."""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path

import httpx
import pytest
from server_helpers import LiveServer, SilentListener, materialized_copy, open_store
from starlette.testclient import TestClient

from feature_layer.server.app import Limits, create_app

COUNTRY = "user_profile_features.country"
AMOUNT = "user_transaction_features.amount"
RATE = "merchant_risk_features.chargeback_rate_30d"


@pytest.fixture(scope="module")
def project(built_example_project: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return materialized_copy(built_example_project, tmp_path_factory.mktemp("hardening") / "project")


@pytest.fixture(scope="module")
def store(project: Path):
    s = open_store(project)
    yield s
    s.close()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_hung_online_store_fails_lookups_within_the_deadline_and_never_stalls_the_server(
        parsed_example_project: Path):
    from feature_layer import FeatureStore

    with SilentListener() as redis_that_never_answers:
        url = f"redis://127.0.0.1:{redis_that_never_answers.port}/0"
        # the store client would wait 60 s per attempt: only the server's deadline can end the request sooner
        store = FeatureStore(parsed_example_project, online_store={"type": "redis", "url": url, "socket_timeout": 60})
        app = create_app(store, reload_interval=None, limits=Limits(lookup_deadline=0.5))
        results: list[tuple[float, httpx.Response]] = []
        try:
            with LiveServer(app) as server:
                def lookup() -> None:
                    start = time.monotonic()
                    response = httpx.post(server.url + "/v1/online-features", timeout=120,
                                          json={"features": [COUNTRY], "entity_rows": [{"user_id": 7}]})
                    results.append((time.monotonic() - start, response))

                threads = [threading.Thread(target=lookup) for _ in range(3)]
                for t in threads:
                    t.start()
                deadline = time.monotonic() + 10
                while not redis_that_never_answers.accepted:  # a lookup is now stuck on the silent socket
                    assert time.monotonic() < deadline, "the lookup never reached the online store"
                    time.sleep(0.01)
                start = time.monotonic()
                health = httpx.get(server.url + "/healthz", timeout=30)
                health_seconds = time.monotonic() - start
                # the truth, and at once: the store does not answer its bounded ping
                assert health.status_code == 503 and health.json()["status"] == "unavailable", health.text
                assert health.json()["online_store"]["status"] == "unreachable"
                assert f"127.0.0.1:{redis_that_never_answers.port}" in health.json()["online_store"]["name"]
                assert health_seconds < 2.0, f"/healthz took {health_seconds:.2f} s behind a stuck lookup"
                assert httpx.get(server.url + "/v1/features", params={"q": "country"}, timeout=30).status_code == 200
                for t in threads:
                    t.join(timeout=60)
                # a lookup after the pool's threads are all stuck still fails within the deadline
                lookup()
        finally:
            store.close()
    assert len(results) == 4
    for seconds, response in results:
        assert response.status_code == 504, response.text
        assert seconds < 2.0, f"a lookup took {seconds:.2f} s with a 0.5 s deadline"
        error = response.json()["error"]
        assert error["type"] == "OnlineStoreTimeoutError"
        assert f"redis://127.0.0.1:{redis_that_never_answers.port}/0" in error["message"]
        assert "0.5 s" in error["message"]
        assert "online_store" in error["fix"] and "--lookup-deadline" in error["fix"]


# -- statistics refresh: one scan per feature at a time, rate-limited -------------------------

def _scans(text: str) -> int:
    found = re.search(r"^feature_layer_statistics_warehouse_scans_total (\d+)$", text, re.M)
    return int(found.group(1)) if found else 0


def test_concurrent_statistics_refreshes_run_one_warehouse_scan_and_recent_ones_are_not_repeated(store):
    app = create_app(store, reload_interval=None, limits=Limits(stats_refresh_interval=30))
    with LiveServer(app) as server:
        url = f"{server.url}/v1/features/{AMOUNT}/statistics?refresh=true"
        answers: list[dict] = []
        barrier = threading.Barrier(6)

        def refresh(wait: bool = False) -> None:
            if wait:
                barrier.wait()
            response = httpx.get(url, timeout=60)
            assert response.status_code == 200, response.text
            answers.append(response.json()["statistics"])

        threads = [threading.Thread(target=refresh, args=(True,)) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        metrics = lambda: httpx.get(server.url + "/metrics").text  # noqa: E731
        assert len(answers) == 6
        assert _scans(metrics()) == 1, "concurrent refreshes each scanned the table"
        # one answer for all six, over what is served (one latest row per entity: hundreds here)
        assert all(a == answers[0] for a in answers) and answers[0]["scope"] == "served"
        assert answers[0]["rows"] > 100
        refresh()  # right after: the recent result, no new scan
        assert _scans(metrics()) == 1
        app.state.limits = Limits(stats_refresh_interval=0)
        refresh()  # the interval has passed: recomputed
        assert _scans(metrics()) == 2


# -- metrics labels: bounded whatever the caller sends ---------------------------------------

def test_metric_labels_are_bounded_whatever_methods_and_paths_callers_send(store):
    with TestClient(create_app(store, reload_interval=None)) as client:
        for i in range(5):
            client.request(f"BREW{i}", "/healthz")
            client.request("PROPFIND", f"/v1/features/x{i}/statistics")
            client.get(f"/no/such/path/{i}-secret")
            client.get(f"/v1/features/user_transaction_features.f{i}")
        assert client.get("/healthz").status_code == 200
        text = client.get("/metrics").text
    requests = [line for line in text.splitlines() if line.startswith("feature_layer_http_requests_total{")]
    methods = set(re.findall(r'method="([^"]*)"', "\n".join(requests)))
    routes = set(re.findall(r'route="([^"]*)"', text))
    assert methods <= {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "other"}, methods
    assert "other" in methods
    assert not any("BREW" in line or "PROPFIND" in line for line in text.splitlines())
    assert routes <= {"/healthz", "/metrics", "/v1/features/{name}", "/v1/features/{name}/statistics", "<unmatched>"}, routes
    assert "secret" not in text and "x0" not in text and ".f0" not in text


# -- crashes: a generic 500 with a request id, the traceback in the log ----------------------

def test_an_unhandled_error_answers_a_generic_500_with_a_request_id_and_logs_the_traceback(caplog, monkeypatch,
                                                                                           store):
    from feature_layer.server import payloads

    def broken(*args, **kwargs):  # a bug in the server's own code, injected
        raise RuntimeError("connect to postgres://admin:hunter2@db.internal/prod failed")

    monkeypatch.setattr(payloads, "freshness", broken)
    with TestClient(create_app(store, reload_interval=None), raise_server_exceptions=False) as client, \
            caplog.at_level("ERROR", logger="feature_layer.server"):
        response = client.get(f"/v1/features/{AMOUNT}")
    assert response.status_code == 500
    error = response.json()["error"]
    assert "hunter2" not in response.text and "RuntimeError" not in response.text and "postgres" not in response.text
    assert error["type"] == "InternalError" and error["fix"]
    request_id = error["request_id"]
    assert re.fullmatch(r"[0-9a-f]{16}", request_id) and request_id in error["message"]
    assert response.headers["x-request-id"] == request_id
    assert response.headers["x-content-type-options"] == "nosniff"
    logged = [r for r in caplog.records if request_id in r.getMessage()]
    assert logged and logged[0].exc_info and "hunter2" in str(logged[0].exc_info[1])


# -- security headers on every response ------------------------------------------------------

def test_every_response_carries_the_security_headers(store):
    with TestClient(create_app(store, reload_interval=None)) as client:
        responses = [
            client.get("/"), client.get("/static/app.js"), client.get("/healthz"), client.get("/metrics"),
            client.get(f"/v1/features/{AMOUNT}"), client.get("/v1/features/nope.nope"), client.get("/missing"),
            client.post("/v1/online-features", json={"features": [AMOUNT], "entity_rows": [{"user_id": 1}]}),
            client.post("/v1/online-features", content=b"{bad"),
            client.delete("/healthz"),
        ]
    for response in responses:
        headers = response.headers
        assert headers.get_list("content-security-policy") == [
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
            "font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
        ], response.request.url
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["referrer-policy"] == "no-referrer"
        assert headers["x-frame-options"] == "DENY"


# -- the copy-able Python snippet is valid Python whatever the names ------------------------

@pytest.mark.parametrize(("view_name", "feature_name", "join_key", "project_dir"), [
    ("user_txn_features", "amount_sum_7d", "user_id", "."),
    ('we"ird\\view', 'it\'s "a\\b"', 'user "id"\n', 'C:\\data\\"proj"'),
    ("v\u00e9ue", "f\u2028x\ty", "k\\", "/srv/pro'ject\\\n# x"),
])
def test_the_python_snippet_is_valid_python_whatever_the_names_and_paths(view_name, feature_name, join_key,
                                                                          project_dir):
    import ast
    import dataclasses

    from server_helpers import build_registry

    from feature_layer.server.payloads import python_snippet

    view = build_registry().views["user_txn_features"]
    feature = dataclasses.replace(view.features[1], name=feature_name, view=view_name)
    view = dataclasses.replace(view, name=view_name, join_keys=(join_key,), features=(feature,))
    snippet = python_snippet(view, feature, project_dir)
    tree = ast.parse(snippet)  # a SyntaxError fails the test
    calls = {node.func.attr if isinstance(node.func, ast.Attribute) else node.func.id: node
             for node in ast.walk(tree) if isinstance(node, ast.Call) and isinstance(node.func, (ast.Attribute, ast.Name))}
    assert ast.literal_eval(calls["FeatureStore"].args[0]) == project_dir
    online = {kw.arg: ast.literal_eval(kw.value) for kw in calls["get_online_features"].keywords}
    assert online["features"] == [f"{view_name}.{feature_name}"]
    assert list(online["entity_rows"][0]) == [join_key]
    training = {kw.arg: ast.literal_eval(kw.value) for kw in calls["get_training_set"].keywords}
    assert training["features"] == [f"{view_name}.{feature_name}"]
    assert len([n for n in tree.body if isinstance(n, ast.Expr | ast.Assign)]) == 4  # nothing escaped a comment


# -- lookup errors from the store name the request field -------------------------------------

@pytest.mark.parametrize(("body", "field"), [
    ({"features": [AMOUNT], "entity_rows": [{"user_id": 1}, {"user_id": 2}, {"merchant_id": 3}]}, "entity_rows[2].user_id"),
    ({"features": [AMOUNT, RATE], "entity_rows": [{"user_id": 1}]}, "entity_rows[0].merchant_id"),
    ({"features": [AMOUNT], "entities": {"merchant_id": [1, 2]}}, "entities.user_id"),
    ({"service": "fraud_model_v1", "entity_rows": [{"user_id": 1, "merchant_id": 1}, {"user_id": 1}]},
     "entity_rows[1].merchant_id"),
])
def test_missing_join_keys_name_the_row_and_key(body, field, store):
    with TestClient(create_app(store, reload_interval=None)) as client:
        response = client.post("/v1/online-features", json=body)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["field"] == field


def test_join_key_values_of_the_wrong_type_name_the_row_and_key(parsed_example_project: Path, tmp_path: Path):
    from starlette.testclient import TestClient

    from feature_layer import FeatureStore

    store = FeatureStore(parsed_example_project, online_store={"type": "sqlite", "path": str(tmp_path / "o.sqlite")})
    try:
        with TestClient(create_app(store, reload_interval=None)) as client:
            def error(body):
                response = client.post("/v1/online-features", json=body)
                assert response.status_code == 422, response.text
                return response.json()["error"]

            wrong = error({"features": [COUNTRY], "entity_rows": [{"user_id": 7}, {"user_id": 8}, {"user_id": "9"}]})
            assert wrong["field"] == "entity_rows[2].user_id" and "'9'" in wrong["message"]
            assert error({"features": [COUNTRY], "entity_rows": [{"user_id": 1.5}]})["field"] == "entity_rows[0].user_id"
            assert error({"features": [COUNTRY], "entities": {"user_id": [1, True]}})["field"] == "entities.user_id[1]"
            assert error({"features": [COUNTRY], "entity_rows": [{"user_id": None}]})["field"] == "entity_rows[0].user_id"
            assert error({"features": [COUNTRY], "entity_rows": [{"uid": 1}]})["field"] == "entity_rows[0].user_id"
    finally:
        store.close()


def test_only_the_embedded_sqlite_store_is_read_on_the_event_loop():
    from types import SimpleNamespace

    from feature_layer.config import OnlineStoreSettings
    from feature_layer.server.fastpath import lookup_inline
    from feature_layer.server.public import online_store_name

    def settings(**online):
        return SimpleNamespace(project_dir=Path("/p"), online_store=OnlineStoreSettings(**online))

    sqlite = settings(type="sqlite", path=Path("/p/.feature_layer/online.sqlite"))
    elsewhere = settings(type="sqlite", path=Path("/srv/shared/online.sqlite"))
    redis = settings(type="redis", url="redis://alice:s3cret@cache.internal:6380/2")
    assert lookup_inline(sqlite, None) and not lookup_inline(redis, None) and not lookup_inline(None, None)
    assert not lookup_inline(sqlite, True) and lookup_inline(redis, False)
    assert online_store_name(redis) == "Redis at redis://cache.internal:6380/2"  # never the credentials
    assert online_store_name(sqlite) == "The embedded SQLite online store at .feature_layer/online.sqlite"
    assert online_store_name(elsewhere) == "The embedded SQLite online store at <server path>/online.sqlite"


# -- health that tells the truth, lookups that fail fast ------------------------------------

def test_a_refusing_online_store_answers_503_fast_naming_the_store_and_health_says_so(project: Path):
    port = _free_port()  # nothing listens: every connection is refused
    store = open_store(project, online_store={"type": "redis", "url": f"redis://127.0.0.1:{port}/0"})
    try:
        with TestClient(create_app(store, reload_interval=None, limits=Limits(lookup_deadline=5.0))) as client:
            timings = []
            for _ in range(3):
                start = time.perf_counter()
                response = client.post("/v1/online-features", json={"features": [COUNTRY], "entity_rows": [{"user_id": 7}]})
                timings.append(time.perf_counter() - start)
                assert response.status_code == 503, response.text
                error = response.json()["error"]
                assert error["type"] == "OnlineStoreError" and f"redis://127.0.0.1:{port}/0" in error["message"]
                assert error["fix"]
            health = client.get("/healthz")
    finally:
        store.close()
    # the bound is generous (a loaded machine); benchmarks/server.py measures the real figure
    assert min(timings) < 1.0, f"a refused connection took {min(timings):.3f} s to answer (deadline 5 s)"
    assert health.status_code == 503 and health.json()["status"] == "unavailable"
    assert health.json()["online_store"]["status"] == "unreachable"
    assert any(f"127.0.0.1:{port}" in p for p in health.json()["problems"])


def test_http_errors_never_show_absolute_server_paths(project: Path, tmp_path: Path):
    import shutil

    copy = tmp_path / "p"
    shutil.copytree(project, copy)
    store = open_store(copy)
    try:
        with TestClient(create_app(store, reload_interval=0.01)) as client:
            assert client.get("/healthz").json()["status"] == "ok"
            (copy / "target" / "manifest.json").write_text("{ not json")
            client.app.state.holder.check()  # what the reload task does on its next tick
            health = client.get("/healthz")
            # an unreadable online store file: the lookup's 503 names it relative to the project
            store.online_store().close()
            (copy / ".feature_layer" / "online.sqlite").unlink()
            (copy / ".feature_layer" / "online.sqlite").mkdir()
            store._online = None  # reopen on the next lookup
            lookup = client.post("/v1/online-features", json={"features": [COUNTRY], "entity_rows": [{"user_id": 7}]})
    finally:
        store.close()
    assert health.json()["status"] == "degraded" and "manifest.json" in health.json()["reload_error"]
    assert lookup.status_code == 503, lookup.text
    assert ".feature_layer/online.sqlite" in lookup.json()["error"]["message"]
    for body in (health.text, lookup.text):
        assert str(tmp_path) not in body and "/tmp/" not in body, body


def test_serve_starts_with_a_broken_view_and_health_names_it(project: Path, tmp_path: Path):
    import json
    import shutil

    from feature_layer.server.reload import holder_for_store

    copy = tmp_path / "p"
    shutil.copytree(project, copy)
    manifest = copy / "target" / "manifest.json"
    raw = json.loads(manifest.read_text())
    node = next(n for n in raw["nodes"].values() if n.get("name") == "merchant_risk_features")
    node["config"]["meta"]["feature_layer"]["entities"] = ["shop"]  # not a declared entity
    manifest.write_text(json.dumps(raw))
    store = open_store(copy)
    try:
        holder = holder_for_store(store)  # a strict load would refuse the whole project
        with TestClient(create_app(store, reload_interval=None, holder=holder)) as client:
            health = client.get("/healthz")
            lookup = client.post("/v1/online-features", json={"features": [COUNTRY], "entity_rows": [{"user_id": 7}]})
            gone = client.post("/v1/online-features", json={"features": [RATE], "entity_rows": [{"merchant_id": 1}]})
    finally:
        store.close()
    body = health.json()
    assert health.status_code == 200 and body["status"] == "degraded", body
    assert list(body["broken_views"]) == ["merchant_risk_features"]
    assert "shop" in body["broken_views"]["merchant_risk_features"][0]
    assert any("merchant_risk_features" in p for p in body["problems"])
    assert lookup.status_code == 200 and lookup.json()["country"] == ["IN"]  # the valid rest is served
    assert gone.status_code == 404


def test_a_layout_change_while_serving_keeps_values_and_reports_the_view_stale(project: Path, tmp_path: Path):
    """Mark one column `feature: false` and `dbt parse` while the server runs: the reload keeps
    serving the features still declared (values, not nulls), /healthz is degraded naming the
    view as stale, and its page says so."""
    import shutil

    from conftest import clean_project_env, replace_in_file

    from feature_layer.dbt.runner import run_dbt

    copy = tmp_path / "p"
    shutil.copytree(project, copy)
    store = open_store(copy)
    kept = {"features": [AMOUNT, "user_transaction_features.txn_count_24h"], "entity_rows": [{"user_id": 7}]}
    try:
        with TestClient(create_app(store, reload_interval=None)) as client:
            before = client.post("/v1/online-features", json=kept).json()
            assert before["amount"][0] is not None and before["txn_count_24h"][0] is not None
            assert client.get("/healthz").json()["status"] == "ok"
            replace_in_file(
                copy / "models" / "example" / "schema.yml",
                "        description: Seconds since the card holder's previous payment (null for the first).\n"
                "        data_type: double\n",
                "        description: Seconds since the card holder's previous payment (null for the first).\n"
                "        data_type: double\n        config:\n          meta:\n            feature_layer: {feature: false}\n",
            )
            with clean_project_env():
                run_dbt(["parse"], copy, target="duckdb", quiet=True)
            assert client.app.state.holder.check()  # what the reload task does on its next tick
            after = client.post("/v1/online-features", json=kept)
            health = client.get("/healthz").json()
            view = client.get("/v1/views/user_transaction_features").json()
    finally:
        store.close()
    assert after.status_code == 200 and after.json() == before  # values, not nulls
    assert health["status"] == "degraded" and list(health["stale_layouts"]) == ["user_transaction_features"]
    assert any("user_transaction_features" in p and "stale" in p for p in health["problems"])
    assert view["layout"]["stale"] is True and view["layout"]["active"] != view["layout"]["wanted"]
