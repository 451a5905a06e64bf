"""Declarations that used to be silent or misleading now get an issue with model, file and fix.

tests/fixtures/declaration_cases holds one model per case, parsed by real dbt (no catalog,
no compiled SQL: the registry reads the raw select list). Each broken model must yield exactly
its own issue; the two valid ones must load with the right columns.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from click.testing import CliRunner
from dbt_helpers import copy_fixture, dbt

from feature_layer.cli import main
from feature_layer.config import load_settings
from feature_layer.registry.registry import Registry, read_entity_declarations

CASES = {
    # model → (issue code, words the message must contain, words the fix must contain)
    "bare_ttl": ("bad-ttl", ["ttl 2 has no unit"], ["`2h` or `2d`"]),
    "infinite_ttl": ("bad-ttl", ["ttl inf is not a duration"], ["leave ttl out for no limit"]),
    "hyphen_block": ("misspelt-block", ["'feature-layer'", "Did you mean 'feature_layer'"],
                     ["rename `feature-layer:` to `feature_layer:`"]),
    "config_level_block": ("misplaced-block", ["directly under `config:`"], ["under `config: meta:`"]),
    "column_meta_outside": ("misplaced-block", ["column 'amount'", "outside its meta"],
                            ["`config: meta: feature_layer:`"]),
    "case_mismatch": ("name-case", ["'User_ID'", "'user_id'", "only when case is ignored", "PostgreSQL"],
                      ["spell it 'user_id'"]),
    "dtype_on_double": ("dtype-mismatch", ["'amount' is double", "'int64'", "materialize would fail"],
                        ["cast(amount as bigint) as amount", "'float64'"]),
    "model_level_block": ("misplaced-block", ["beside `config:`", "dbt drops"], ["under the model's `config: meta:`"]),
    "column_config_block": ("misplaced-block", ["column 'amount'", "directly under `config:`", "dbt drops"],
                            ["under the column's `config: meta:`"]),
    "owner_mapping": ("bad-owner", ["team name or an email", "{'name': 'risk-team'}"], ["`owner: risk-team`"]),
}


@pytest.fixture(scope="module")
def cases_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    project = copy_fixture("declaration_cases", tmp_path_factory.mktemp("cases"))
    dbt(project, "parse")
    return project


@pytest.fixture(scope="module")
def registry(cases_project: Path) -> Registry:
    return Registry.load(load_settings(cases_project), strict=False)


@pytest.mark.parametrize("name", sorted(CASES))
def test_each_case_gets_exactly_its_own_issue(registry: Registry, name: str) -> None:
    code, message_words, fix_words = CASES[name]
    mine = [i for i in registry.issues if i.unique_id == f"model.declaration_cases.{name}"]
    assert [i.code for i in mine] == [code], [i.render() for i in mine]
    for word in message_words:
        assert word in mine[0].message
    for word in fix_words:
        assert word in mine[0].fix
    assert mine[0].file == f"models/{name}.sql" and mine[0].yaml_file == "models/schema.yml"
    assert f"model.declaration_cases.{name} (models/{name}.sql, models/schema.yml)" in mine[0].render()
    assert name in registry.broken_views and name not in registry.views


def test_no_other_issues_and_the_valid_views_load(registry: Registry) -> None:
    assert sorted(i.unique_id.rsplit(".", 1)[-1] for i in registry.issues if i.unique_id) == sorted(CASES)
    assert sorted(registry.views) == ["key_only_in_sql", "star_select"]


def test_key_selected_in_sql_but_not_under_columns_is_found(registry: Registry) -> None:
    view = registry.view("key_only_in_sql")
    assert view.join_keys == ("user_id",) and view.event_time == "occurred_at"
    assert view.feature_names == ("amount",)
    assert view.feature("amount").description == "Amount paid"
    assert [name for name, _ in view.column_types] == ["user_id", "occurred_at", "amount"]


def test_select_star_claims_nothing_missing(registry: Registry) -> None:
    view = registry.view("star_select")
    assert view.feature_names == ("amount",) and view.feature("amount").dtype == "float64"


def test_infinite_ttl_is_a_declaration_issue_not_invalid_json(cases_project: Path) -> None:
    assert "Infinity" in (cases_project / "target" / "manifest.json").read_text()  # what dbt writes for .inf
    result = CliRunner().invoke(main, ["--project-dir", str(cases_project), "validate"])
    assert result.exit_code == 1
    assert "not valid JSON" not in result.output and "[bad-ttl]" in result.output
    assert f"{len(CASES)} problems in feature declarations" in result.output and "(s)" not in result.output


def test_misspelt_vars_block_is_reported(tmp_path: Path) -> None:
    (tmp_path / "dbt_project.yml").write_text("name: p\nvars:\n  feature-layer:\n    entities: {user: [user_id]}\n")
    raw, source, issues = read_entity_declarations(tmp_path)
    assert raw is None and source == "dbt_project.yml"
    [issue] = issues
    assert issue.code == "misspelt-block" and "Did you mean 'feature_layer'" in issue.message
    assert issue.file == "dbt_project.yml" and "rename `feature-layer:` to `feature_layer:` under `vars:`" in issue.fix


def test_the_compiled_select_list_names_the_same_columns_as_the_catalog(built_example_project: Path,
                                                                       tmp_path: Path) -> None:
    """The example project read without catalog.json (compiled SQL only) gives the same registry."""
    settings = load_settings(built_example_project)
    with_catalog = Registry.load(settings)
    without = Registry.load(replace(settings, catalog_path=tmp_path / "no-catalog.json"))
    assert with_catalog.views and not without.issues
    assert sorted(without.views) == sorted(with_catalog.views)
    for name, view in with_catalog.views.items():
        other = without.view(name)
        assert other.compiled_sql  # read from the compiled SQL, not schema.yml alone
        assert (other.join_keys, other.event_time, other.created_at) == (view.join_keys, view.event_time, view.created_at)
        assert other.feature_names == view.feature_names
        assert [c for c, _ in other.column_types] == [c for c, _ in view.column_types]
