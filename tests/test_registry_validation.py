"""Every malformed declaration is reported, with model, file and fix, all in one pass.

The fixture project (tests/fixtures/broken_project) has one broken model per problem; it
is parsed by real dbt, and each model must yield exactly its own issue.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from dbt_helpers import copy_fixture, dbt

from feature_layer.cli import main
from feature_layer.config import load_settings
from feature_layer.errors import DeclarationError, ManifestError
from feature_layer.registry.registry import Registry

# one worker builds the module fixture once (split over both, each built it: ~7 s twice)
pytestmark = pytest.mark.xdist_group("registry_validation")
EXPECTED = {
    # model or exposure → (issue code, words the message must contain, words the fix must contain)
    "unknown_entity": ("unknown-entity", ["'custmer'", "Did you mean 'user'"], ["vars.feature_layer.entities"]),
    "event_time_missing": ("event-time-not-in-model", ["'happened_at'"], ["timestamp column"]),
    "bad_ttl": ("bad-ttl", ["'thirty days'"], ["30d"]),
    "join_key_missing": ("join-key-missing", ["'merchant_id'", "'user_merchant'"], ["select 'merchant_id'"]),
    "duplicate_feature": ("duplicate-feature", ["'amount'", "twice"], ["once"]),
    "model_with_missing_feature": ("unknown-feature", ["'good_view.amonut'", "Did you mean 'amount'"], ["amount"]),
    "model_using_broken_view": ("service-uses-broken-view", ["'unknown_entity'", "left out"], ["validate"]),
}


@pytest.fixture(scope="module")
def broken_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    project = copy_fixture("broken_project", tmp_path_factory.mktemp("broken"))
    dbt(project, "parse")
    return project


@pytest.fixture(scope="module")
def broken_registry(broken_project: Path) -> Registry:
    return Registry.load(load_settings(broken_project), strict=False)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_broken_declaration_gets_exactly_its_own_issue(broken_registry: Registry, name: str) -> None:
    code, message_words, fix_words = EXPECTED[name]
    mine = [i for i in broken_registry.issues if i.unique_id and i.unique_id.endswith("." + name)]
    assert [i.code for i in mine] == [code]
    issue = mine[0]
    for word in message_words:
        assert word in issue.message
    for word in fix_words:
        assert word in issue.fix
    assert issue.file and issue.file.startswith("models/")
    rendered = issue.render()
    assert issue.unique_id in rendered and issue.file in rendered and "To fix this," in rendered


def test_valid_declarations_still_load_beside_broken_ones(broken_registry: Registry) -> None:
    assert sorted(broken_registry.views) == ["good_view", "service_target"]
    view = broken_registry.view("good_view")
    assert view.ttl is not None and view.ttl.days == 7
    assert view.join_keys == ("user_id",)
    assert view.feature("amount").description == "Amount paid"
    assert broken_registry.service("model_with_good_features").features == ("good_view.amount", "service_target.amount")


def test_legacy_top_level_meta_declares_a_view(broken_registry: Registry) -> None:
    assert broken_registry.view("service_target").event_time == "occurred_at"


def test_strict_load_raises_all_problems_at_once(broken_project: Path) -> None:
    with pytest.raises(DeclarationError) as raised:
        Registry.load(load_settings(broken_project))
    assert len(raised.value.issues) == len(EXPECTED)
    text = str(raised.value)
    assert f"{len(EXPECTED)} problems in feature declarations" in text
    for name in EXPECTED:
        assert name in text


def test_validate_command_lists_every_problem_and_exits_1(broken_project: Path) -> None:
    result = CliRunner().invoke(main, ["--project-dir", str(broken_project), "validate"])
    assert result.exit_code == 1
    for code, *_ in EXPECTED.values():
        assert f"[{code}]" in result.output
    as_json = CliRunner().invoke(main, ["--project-dir", str(broken_project), "validate", "--json"])
    payload = json.loads(as_json.stdout)
    assert payload["ok"] is False and len(payload["issues"]) == len(EXPECTED)
    assert "unknown_entity" in payload["broken_views"] and payload["broken_services"] == ["model_using_broken_view",
                                                                                        "model_with_missing_feature"]


def test_missing_manifest_says_run_dbt_parse(tmp_path: Path) -> None:
    project = copy_fixture("broken_project", tmp_path)
    with pytest.raises(ManifestError, match="run `dbt parse`"):
        Registry.load(load_settings(project))
    result = CliRunner().invoke(main, ["--project-dir", str(project), "features"])
    assert result.exit_code == 1 and "dbt parse" in result.output


def test_manifest_from_unsupported_dbt_version_is_refused(broken_project: Path, tmp_path: Path) -> None:
    project = copy_fixture("broken_project", tmp_path)
    raw = json.loads((broken_project / "target" / "manifest.json").read_text())
    raw["metadata"]["dbt_schema_version"] = "https://schemas.getdbt.com/dbt/manifest/v11.json"
    raw["metadata"]["dbt_version"] = "1.6.0"
    (project / "target").mkdir()
    (project / "target" / "manifest.json").write_text(json.dumps(raw))
    with pytest.raises(ManifestError) as raised:
        Registry.load(load_settings(project))
    text = str(raised.value)
    assert "v11" in text and "dbt 1.6.0" in text and "v12" in text and "dbt-core>=1.11" in text


def test_corrupt_manifest_is_a_clear_error(tmp_path: Path) -> None:
    project = copy_fixture("broken_project", tmp_path)
    (project / "target").mkdir()
    (project / "target" / "manifest.json").write_text("{not json")
    with pytest.raises(ManifestError, match="not valid JSON"):
        Registry.load(load_settings(project))
