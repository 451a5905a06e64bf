"""One bad view degrades only itself: the rest of the registry, and the commands that use it, work.

The fixture project (tests/fixtures/broken_project) is built by real dbt into a DuckDB file; its
broken views are left out of a lenient load, named in a one-line warning, and refused by name
with their own issues. ``validate`` and an all-view ``materialize`` still exit 1.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from dbt_helpers import copy_fixture, dbt

from feature_layer.cli import main
from feature_layer.client import FeatureStore
from feature_layer.clock import NOW_VARIABLE
from feature_layer.config import load_settings
from feature_layer.errors import BrokenDeclarationError, DeclarationError
from feature_layer.registry.registry import Registry

BROKEN_VIEWS = ["bad_ttl", "duplicate_feature", "event_time_missing", "join_key_missing", "unknown_entity"]
VALID_VIEWS = ["good_view", "service_target"]
# The valid views' one row is stamped 2025-06-01 12:00 (7-day TTL): "now" is pinned the day after.
NOW = "2025-06-02T00:00:00+00:00"


@pytest.fixture(autouse=True)
def _pinned_now(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(NOW_VARIABLE, NOW)


@pytest.fixture(scope="module")
def built_broken(tmp_path_factory: pytest.TempPathFactory) -> Path:
    project = copy_fixture("broken_project", tmp_path_factory.mktemp("degraded"))
    warehouse = project / "warehouse.duckdb"
    (project / "profiles.yml").write_text(
        f"broken_features:\n  target: dev\n  outputs:\n    dev:\n      type: duckdb\n      path: '{warehouse}'\n"
    )
    dbt(project, "run")
    return project


def run(project: Path, *args: str) -> Result:
    return CliRunner().invoke(main, ["--project-dir", str(project), *args])


def test_lenient_load_keeps_valid_views_and_names_each_broken_one(built_broken: Path) -> None:
    registry = Registry.load(load_settings(built_broken), strict=False)
    assert sorted(registry.views) == VALID_VIEWS
    assert sorted(registry.broken_views) == BROKEN_VIEWS
    assert [i.code for i in registry.broken_views["unknown_entity"]] == ["unknown-entity"]
    assert registry.broken_views["bad_ttl"][0].file == "models/bad_ttl.sql"
    # every issue belongs to a broken view or service, and every broken one has an issue
    owned = [i for issues in (*registry.broken_views.values(), *registry.broken_services.values()) for i in issues]
    assert sorted(map(id, owned)) == sorted(map(id, registry.issues))
    message = registry.degraded_message()
    assert message and all(name in message for name in BROKEN_VIEWS) and "feature-layer validate" in message


def test_asking_for_a_broken_view_raises_its_own_issues(built_broken: Path) -> None:
    registry = FeatureStore(built_broken).registry  # the Python client loads leniently too
    with pytest.raises(BrokenDeclarationError) as raised:
        registry.view("unknown_entity")
    assert isinstance(raised.value, DeclarationError)
    text = str(raised.value)
    assert "'unknown_entity' is invalid" in text and "[unknown-entity]" in text and "'custmer'" in text
    with pytest.raises(BrokenDeclarationError, match="unknown-entity"):
        registry.feature("unknown_entity.amount")
    with pytest.raises(BrokenDeclarationError):
        registry.resolve(["good_view.amount", "unknown_entity.*"])
    assert [f.ref for f in registry.resolve(["good_view.amount"])["good_view"]] == ["good_view.amount"]


def test_a_service_using_a_broken_view_is_left_out_with_an_issue(built_broken: Path) -> None:
    registry = Registry.load(load_settings(built_broken), strict=False)
    assert "model_using_broken_view" not in registry.services
    [issue] = registry.broken_services["model_using_broken_view"]
    assert issue.code == "service-uses-broken-view"
    assert "'unknown_entity'" in issue.message and "feature-layer validate" in issue.fix
    assert issue.unique_id == "exposure.broken_features.model_using_broken_view"
    with pytest.raises(BrokenDeclarationError, match="service-uses-broken-view"):
        registry.service("model_using_broken_view")
    assert registry.service("model_with_good_features").features == ("good_view.amount", "service_target.amount")


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["features"], "good_view.amount"),
        (["features", "--json"], '"name": "service_target.amount"'),
        (["show", "good_view.amount"], "Amount paid"),
        (["search", "amount"], "good_view.amount"),
        (["lineage", "good_view.amount"], "good_view [model]"),
        (["sql", "training-set", "-f", "good_view.amount", "--entity-table", "service_target",
          "--timestamp-column", "occurred_at", "--full-feature-names"], "good_view__amount"),
    ],
)
def test_commands_that_do_not_need_a_broken_view_work_and_warn_once(built_broken: Path, args: list[str],
                                                                     expected: str) -> None:
    result = run(built_broken, *args)
    assert result.exit_code == 0, result.output
    assert expected in result.stdout
    warnings = [line for line in result.stderr.splitlines() if line.startswith("Warning:")]
    assert len(warnings) == 1 and all(name in warnings[0] for name in BROKEN_VIEWS)
    assert "model_using_broken_view" in warnings[0]
    if "--json" in args:
        assert json.loads(result.stdout)  # the warning never mixes into the JSON on stdout


def test_a_command_naming_a_broken_view_fails_with_its_issues(built_broken: Path) -> None:
    result = run(built_broken, "show", "join_key_missing.amount")
    assert result.exit_code == 1
    assert "'join_key_missing' is invalid" in result.stderr and "[join-key-missing]" in result.stderr
    assert "Traceback" not in result.output


def test_validate_still_exits_1_with_broken_views(built_broken: Path) -> None:
    result = run(built_broken, "validate")
    assert result.exit_code == 1 and "[unknown-entity]" in result.stderr


def test_materialize_all_writes_the_valid_views_and_exits_1_naming_the_skipped(built_broken: Path) -> None:
    result = run(built_broken, "materialize", "--no-progress", "--end", "2100-01-01", "--json")
    assert result.exit_code == 1, result.output
    payload = json.loads(result.stdout)
    assert sorted(v["view"] for v in payload["views"]) == VALID_VIEWS
    assert all(v["rows_written"] == 1 for v in payload["views"])
    assert sorted(payload["skipped"]) == BROKEN_VIEWS
    assert "skipped 5 invalid feature views: " + ", ".join(BROKEN_VIEWS) in result.stderr
    online = run(built_broken, "online-get", "good_view.amount", "-e", "user_id=1", "--json")
    assert online.exit_code == 0, online.output
    assert json.loads(online.stdout)[0]["amount"] == 1.0


def test_materialize_naming_a_broken_view_refuses_it(built_broken: Path) -> None:
    result = run(built_broken, "materialize", "--no-progress", "-s", "bad_ttl")
    assert result.exit_code == 1
    assert "'bad_ttl' is invalid" in result.stderr and "[bad-ttl]" in result.stderr


def test_python_materialize_reports_the_views_it_skipped(built_broken: Path) -> None:
    from datetime import UTC, datetime

    store = FeatureStore(built_broken, online_store="sqlite:///python-online.sqlite")
    result = store.materialize(end=datetime(2100, 1, 1, tzinfo=UTC))
    assert sorted(v.view for v in result.views) == VALID_VIEWS and result.rows_written == 2
    assert sorted(result.skipped) == BROKEN_VIEWS
    assert result.skipped["bad_ttl"][0].code == "bad-ttl"
    assert sorted(result.to_dict()["skipped"]) == BROKEN_VIEWS
    assert store.materialize(["good_view"], end=datetime(2100, 1, 1, tzinfo=UTC)).skipped == {}
