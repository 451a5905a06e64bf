"""Search as a user of the example project meets it: the thirty queries of
tests/fixtures/search_queries.yml (>= 27 found first), ``dispute`` / ``chargebak`` / ``spend``,
``GET /v1/search`` and ``feature-layer search`` over the dbt-built project."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from server_helpers import open_store
from starlette.testclient import TestClient

from feature_layer.cli import main
from feature_layer.registry.search import search_objects

QUERIES = Path(__file__).parent / "fixtures" / "search_queries.yml"


@pytest.fixture(scope="module")
def project(built_example_project: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    dest = tmp_path_factory.mktemp("search") / "project"
    shutil.copytree(built_example_project, dest, ignore=shutil.ignore_patterns(".feature_layer", "logs"))
    return dest


@pytest.fixture(scope="module")
def store(project: Path):
    s = open_store(project)
    yield s
    s.close()


@pytest.fixture(scope="module")
def registry(store):
    return store.registry


def test_thirty_user_queries_find_what_they_meant_first_at_least_27_times(registry):
    cases = yaml.safe_load(QUERIES.read_text())["queries"]
    assert len(cases) == 30
    kinds = {c["expect"].split(":", 1)[0] for c in cases}
    assert kinds == {"feature", "feature_view", "ml_model", "entity", "source", "model"}
    misses = []
    for case in cases:
        kind, title = case["expect"].split(":", 1)
        found = search_objects(registry, case["query"], limit=5).results
        assert any((m.kind, m.title) == (kind, title) for m in search_objects(registry, "", limit=None).results), \
            f"{case['expect']} is not an object of the example project"
        if not found or (found[0].kind, found[0].title) != (kind, title):
            misses.append(f"{case['query']!r}: expected {case['expect']}, got "
                          f"{[f'{m.kind}:{m.title}' for m in found[:3]]}")
    assert len(cases) - len(misses) >= 27, "\n".join(misses)


def test_dispute_chargebak_and_spend_find_their_features(registry):
    dispute = search_objects(registry, "dispute").results
    assert (dispute[0].kind, dispute[0].title) == ("source", "raw.chargebacks")  # "Disputed payments"
    features = [m.title for m in dispute if m.kind == "feature"]
    assert features[:3] and all("chargeback" in f for f in features[:3])  # named like the source it describes
    chargebak = search_objects(registry, "chargebak", kinds=["feature"]).results
    assert {m.title for m in chargebak[:3]} == {"merchant_risk_features.chargeback_rate_30d",
                                                "merchant_risk_features.chargeback_count_30d",
                                                "merchant_risk_features.fraud_chargeback_count_90d"}
    spend = [m.title for m in search_objects(registry, "spend", kinds=["feature"]).results]
    assert set(spend[:2]) == {"user_transaction_features.amount_sum_24h", "user_merchant_features.amount_sum_30d"}


def test_age_finds_age_before_average(registry):
    hits = search_objects(registry, "age", kinds=["feature"]).results
    assert hits[0].title == "user_profile_features.age_at_signup"
    average = [m for m in hits if "avg" in m.title]
    assert average and all(hits[0].score > 5 * m.score for m in average)


def test_the_http_search_ranks_every_kind_and_validates_its_parameters(store):
    from feature_layer.server.app import create_app

    with TestClient(create_app(store, reload_interval=None)) as client:
        body = client.get("/v1/search", params={"q": "chargebak"}).json()
        assert set(body) == {"query", "total", "took_ms", "results", "did_you_mean"}
        assert body["results"][0]["kind"] == "feature" and "chargeback" in body["results"][0]["name"]
        assert set(body["results"][0]) == {"kind", "name", "title", "description", "score", "matched", "url"}
        assert body["did_you_mean"][0] == "chargeback"
        kinds = {r["kind"] for r in client.get("/v1/search", params={"q": "fraud", "limit": "100"}).json()["results"]}
        assert {"feature", "feature_view", "ml_model", "model"} <= kinds
        only = client.get("/v1/search", params=[("q", "chargeback"), ("kind", "source,model")]).json()["results"]
        assert {r["kind"] for r in only} == {"source", "model"}
        assert client.get("/v1/search", params={"q": "velcty"}).json()["did_you_mean"][0] == "velocity"
        owned = client.get("/v1/search", params={"owner": "identity-team@example.com", "kind": "feature_view"})
        assert [r["name"] for r in owned.json()["results"]] == ["user_profile_features"]
        bad = client.get("/v1/search", params={"q": "x", "kind": "tables"})
        assert bad.status_code == 422 and bad.json()["error"]["field"] == "kind"
        assert client.get("/v1/search", params={"entity": "usr"}).status_code == 404
        assert client.get("/v1/search", params={"limit": "0"}).status_code == 422
        assert client.get("/v1/search", params={"query": "x"}).status_code == 422
        features = client.get("/v1/features", params={"q": "chargebak"}).json()["features"]  # same ranking
        assert [f["ref"] for f in features][:1] == [body["results"][0]["title"]]
        assert "/v1/search" in client.get("/openapi.json").json()["paths"]


def test_the_cli_searches_every_kind_with_json_and_kind_filter(project: Path):
    runner = CliRunner()
    result = runner.invoke(main, ["--project-dir", str(project), "search", "dispute", "--json"])
    assert result.exit_code == 0, result.output
    body = json.loads(result.output)
    assert body["results"][0]["title"] == "raw.chargebacks"
    result = runner.invoke(main, ["--project-dir", str(project), "search", "fraud", "--kind", "ml_model"])
    assert result.exit_code == 0 and "fraud_model_v1" in result.output and "feature_view" not in result.output
    result = runner.invoke(main, ["--project-dir", str(project), "search", "velcty"])
    assert result.exit_code == 0 and "Did you mean: 'velocity'" in result.output
    result = runner.invoke(main, ["--project-dir", str(project), "search", "x", "--kind", "table"])
    assert result.exit_code == 2
