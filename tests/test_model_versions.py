"""dbt model versions (``versions:``) as feature views: a test-only project built by real dbt-duckdb
(tests/fixtures/versioned_project). Each version is ``user_scores@vN``, the latest also
``user_scores``; both versions materialize side by side and serve what a brute force over the
seed computes."""

from __future__ import annotations

import csv
from datetime import UTC, datetime
from pathlib import Path

import pytest
from dbt_helpers import FIXTURES, copy_fixture, dbt
from starlette.testclient import TestClient

from feature_layer import FeatureStore
from feature_layer.clock import FixedClock
from feature_layer.server.app import create_app

# one worker builds the module fixture once (split over both, each built it: ~23 s twice)
pytestmark = pytest.mark.xdist_group("model_versions")
NOW = datetime(2025, 1, 10, tzinfo=UTC)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = copy_fixture("versioned_project", tmp_path_factory.mktemp("versions"))
    dbt(root, "build")
    dbt(root, "docs", "generate")
    return root


@pytest.fixture(scope="module")
def store(project: Path):
    s = FeatureStore(project, clock=FixedClock(NOW))
    s.materialize(end=NOW)
    yield s
    s.close()


def brute_force_latest(version: int) -> dict[int, tuple[float, bool]]:
    """Per user, the latest row's (score, big) as version ``version`` computes them; ties at one
    event time go to the larger score (the documented tie-break)."""
    rows = list(csv.DictReader((FIXTURES / "versioned_project" / "seeds" / "score_events.csv").open()))
    best: dict[int, tuple[str, float]] = {}
    for row in rows:
        user, ts, amount = int(row["user_id"]), row["event_ts"], float(row["amount"])
        if user not in best or (ts, amount) > best[user]:
            best[user] = (ts, amount)
    return {u: (a * (2 if version == 2 else 1), a > 5) for u, (_, a) in best.items()}


def test_each_version_is_a_view_and_the_latest_is_the_default(store):
    registry = store.registry
    assert {"user_scores", "user_scores@v1", "user_scores@v2"} <= set(registry.views)
    v1, v2, default = (registry.views[n] for n in ("user_scores@v1", "user_scores@v2", "user_scores"))
    assert (v1.version, v2.version, default.version) == ("1", "2", "2")
    assert v1.relation.identifier == "user_scores_v1" and v2.relation.identifier == "user_scores_v2"
    assert default.relation == v2.relation and default.unique_id.endswith(".v2")
    assert v1.feature_names == ("score",) and v2.feature_names == ("score", "big")
    assert registry.feature("user_scores@v1.score").view == "user_scores@v1"
    assert registry.services["score_model"].features == ("user_scores.big", "user_scores@v1.score")
    assert not registry.broken_views


def test_both_versions_are_served_side_by_side_with_the_brute_force_values(store):
    users = [1, 2, 3, 4, 99]
    got = store.get_online_features(
        features=["user_scores@v1.score", "user_scores@v2.score", "user_scores.big"],
        entity_rows=[{"user_id": u} for u in users]).to_dict()
    v1, v2 = brute_force_latest(1), brute_force_latest(2)
    assert got["user_scores@v1__score"] == [v1[u][0] if u in v1 else None for u in users]
    assert got["user_scores@v2__score"] == [v2[u][0] if u in v2 else None for u in users]
    assert got["big"] == [v2[u][1] if u in v2 else None for u in users]
    assert got["user_scores@v1__score"][0] is not None and got["user_scores@v1__score"] != got["user_scores@v2__score"]


def test_a_training_set_can_hold_two_versions(store):
    import pyarrow as pa

    entities = pa.table({"user_id": [1, 4, 2], "event_timestamp": pa.array(
        [datetime(2025, 1, 5, tzinfo=UTC)] * 3, pa.timestamp("us", "UTC"))})
    table = store.get_training_set(entities, features=["user_scores@v1.score", "user_scores.score"],
                                   full_feature_names=True).to_arrow().to_pydict()
    v1, v2 = brute_force_latest(1), brute_force_latest(2)
    assert table["user_scores@v1__score"] == [v1[u][0] for u in (1, 4, 2)]
    assert table["user_scores__score"] == [v2[u][0] for u in (1, 4, 2)]


def test_the_api_exposes_versions(store):
    with TestClient(create_app(store, reload_interval=None)) as client:
        pinned = client.get("/v1/views/user_scores@v1").json()
        assert pinned["version"] == {"model": "user_scores", "version": "1", "latest_version": "2",
                                     "is_latest": False, "pinned": True,
                                     "views": ["user_scores@v1", "user_scores@v2"], "default": "user_scores"}
        default = client.get("/v1/views/user_scores").json()["version"]
        assert default["pinned"] is False and default["is_latest"] is True and default["version"] == "2"
        catalog = {v["name"]: v["version"] for v in client.get("/v1/catalog").json()["views"]}
        assert catalog["user_scores@v2"]["pinned"] is True
        feature = client.get("/v1/features/user_scores@v1.score")
        assert feature.status_code == 200 and feature.json()["name"] == "score"


def test_the_ui_shows_a_views_version_and_links_the_others(store, ui_browser):
    """Headless Chromium on the real server over the versioned project: a pinned version's page
    names its version, says which is the latest, and links to the other version and the default."""
    from playwright.sync_api import expect
    from server_helpers import LiveServer

    with LiveServer(create_app(store, reload_interval=None)) as live:
        context = ui_browser.new_context(viewport={"width": 1280, "height": 900})
        try:
            page = context.new_page()
            page.goto(live.url + "/#/view/" + "user_scores%40v1")
            expect(page.locator("#view-title")).to_have_text("user_scores@v1", timeout=15_000)
            cell = page.locator(".meta", has_text="Version")
            expect(cell.locator(".version")).to_have_text("v1")
            expect(cell).to_contain_text("latest is v2")
            cell.locator("a", has_text="user_scores@v2").click()
            expect(page.locator("#view-title")).to_have_text("user_scores@v2", timeout=15_000)
            expect(page.locator(".meta", has_text="Version")).to_contain_text("latest")
        finally:
            context.close()


def test_latest_version_follows_the_model_declaration(project, tmp_path):
    import shutil

    copy = tmp_path / "p"
    shutil.copytree(project, copy, ignore=shutil.ignore_patterns(".feature_layer", "logs"))
    schema = copy / "models" / "schema.yml"
    schema.write_text(schema.read_text().replace("latest_version: 2", "latest_version: 1"))
    dbt(copy, "parse")
    with FeatureStore(copy, clock=FixedClock(NOW)) as s:
        views = s.registry.views
        assert views["user_scores"].version == "1" and views["user_scores"].relation.identifier == "user_scores_v1"
        assert views["user_scores@v2"].latest_version == "1"


def test_a_service_declares_a_join_key_map_in_its_exposure_meta(store):
    import pyarrow as pa

    service = store.registry.services["pair_model"]
    assert service.join_key_map == {"user_scores": ({}, {"user_id": "friend_id"})}
    pairs = [(1, 2), (2, 4), (3, 99), (4, 1)]
    v2 = brute_force_latest(2)
    entities = pa.table({"user_id": [u for u, _ in pairs], "friend_id": [f for _, f in pairs],
                         "event_timestamp": pa.array([NOW] * len(pairs), pa.timestamp("us", "UTC"))})
    table = store.get_training_set(entities, service="pair_model").to_arrow().to_pydict()
    assert table["score"] == [v2[u][0] for u, _ in pairs]
    assert table["score__friend_id"] == [v2[f][0] if f in v2 else None for _, f in pairs]
    online = store.get_online_features(service="pair_model", entity_rows=[{"user_id": u, "friend_id": f}
                                                                          for u, f in pairs]).to_dict()
    assert online["score"] == table["score"] and online["score__friend_id"] == table["score__friend_id"]
