"""`feature-layer init` turns an existing dbt project into a feature project: it adds the
entity block (keeping the file's comments and content) and an example view that dbt
parses and feature_layer validates, and it never overwrites anything."""

from __future__ import annotations

from pathlib import Path

import yaml
from click.testing import CliRunner, Result
from conftest import clean_project_env

from feature_layer.cli import main
from feature_layer.dbt.runner import run_dbt

PROJECT = """\
# The shop's dbt project (a comment init must keep)
name: shop
version: "1.0.0"
config-version: 2
profile: shop

vars:
    # an existing var, indented by four
    start_date: "2024-01-01"

models:
  shop:
    +materialized: view   # keep views
"""
PROFILES = "shop:\n  target: dev\n  outputs:\n    dev: {type: duckdb, path: target/shop.duckdb}\n"


def _project(root: Path, text: str = PROJECT) -> Path:
    root.mkdir(parents=True)
    (root / "dbt_project.yml").write_text(text)
    (root / "profiles.yml").write_text(PROFILES)
    (root / "models").mkdir()
    return root


def _init(project: Path, *args: str) -> Result:
    with clean_project_env():
        return CliRunner().invoke(main, ["--project-dir", str(project), "init", *args])


def test_init_adds_entities_keeps_the_file_and_writes_a_view_that_validates(tmp_path: Path) -> None:
    project = _project(tmp_path / "shop")
    result = _init(project, "--entity", "customer")
    assert result.exit_code == 0, result.output
    text = (project / "dbt_project.yml").read_text()
    assert "# The shop's dbt project (a comment init must keep)" in text
    assert "    # an existing var, indented by four" in text and "+materialized: view   # keep views" in text
    parsed = yaml.safe_load(text)
    assert parsed["vars"]["start_date"] == "2024-01-01"
    assert parsed["vars"]["feature_layer"]["entities"]["customer"]["join_keys"] == ["customer_id"]
    assert parsed["models"] == {"shop": {"+materialized": "view"}}
    example = project / "models" / "feature_layer"
    assert sorted(p.name for p in example.iterdir()) == ["customer_features_example.sql",
                                                         "customer_features_example.yml"]
    with clean_project_env():
        run_dbt(["parse"], project, quiet=True)
    validated = _init_free_cli(project, "validate")
    assert validated.exit_code == 0, validated.output
    assert "1 feature view, 2 features" in validated.stdout
    shown = _init_free_cli(project, "show", "customer_features_example.spend_7d", "--json")
    assert shown.exit_code == 0, shown.output
    assert '"join_keys": [\n    "customer_id"\n  ]' in shown.stdout and '"dtype": "float64"' in shown.stdout


def _init_free_cli(project: Path, *args: str) -> Result:
    with clean_project_env():
        return CliRunner().invoke(main, ["--project-dir", str(project), *args])


def test_init_appends_vars_when_absent_with_a_composite_key(tmp_path: Path) -> None:
    text = "name: shop\nversion: '1.0.0'\nconfig-version: 2\nprofile: shop\n"
    project = _project(tmp_path / "shop", text)
    result = _init(project, "--entity", "customer_store", "--join-key", "customer_id", "--join-key", "store_id",
                   "--models-dir", "models/features")
    assert result.exit_code == 0, result.output
    after = (project / "dbt_project.yml").read_text()
    assert after.startswith(text)
    entities = yaml.safe_load(after)["vars"]["feature_layer"]["entities"]
    assert entities["customer_store"]["join_keys"] == ["customer_id", "store_id"]
    sql = (project / "models" / "features" / "customer_store_features_example.sql").read_text()
    assert "as t(customer_id, store_id, event_at, orders_7d, spend_7d)" in sql


def test_init_refuses_a_project_that_already_has_the_block(tmp_path: Path) -> None:
    project = _project(tmp_path / "shop")
    assert _init(project).exit_code == 0
    before = (project / "dbt_project.yml").read_bytes()
    (project / "models" / "feature_layer" / "customer_features_example.sql").unlink()
    again = _init(project)
    assert again.exit_code == 1
    assert "already has a `vars: feature_layer:` block" in again.stderr
    assert (project / "dbt_project.yml").read_bytes() == before
    assert not (project / "models" / "feature_layer" / "customer_features_example.sql").exists()


def test_init_never_overwrites_an_example_file(tmp_path: Path) -> None:
    project = _project(tmp_path / "shop")
    mine = project / "models" / "feature_layer" / "customer_features_example.yml"
    mine.parent.mkdir()
    mine.write_text("# mine\n")
    result = _init(project)
    assert result.exit_code == 1
    assert "already exist" in result.stderr and "never overwrites" in result.stderr
    assert mine.read_text() == "# mine\n"
    assert (project / "dbt_project.yml").read_text() == PROJECT
    assert not (project / "models" / "feature_layer" / "customer_features_example.sql").exists()


def test_init_outside_a_dbt_project_says_so(tmp_path: Path) -> None:
    result = _init(tmp_path)
    assert result.exit_code == 1
    assert f"{tmp_path} is not a dbt project (no dbt_project.yml)" in result.stderr
    assert "Traceback" not in result.output
    assert list(tmp_path.iterdir()) == []


def test_init_refuses_inline_vars_and_bad_names(tmp_path: Path) -> None:
    text = "name: shop\nversion: '1.0.0'\nconfig-version: 2\nprofile: shop\nvars: {start_date: '2024-01-01'}\n"
    project = _project(tmp_path / "shop", text)
    inline = _init(project)
    assert inline.exit_code == 1 and "written inline" in inline.stderr
    bad = _init(project, "--entity", "my-customer")
    assert bad.exit_code == 1 and "'my-customer' is not a plain name" in bad.stderr
    assert (project / "dbt_project.yml").read_text() == text
    assert list((project / "models").iterdir()) == []
