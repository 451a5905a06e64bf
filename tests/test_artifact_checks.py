"""Artifacts you can trust: stale manifests and catalogs warn in one line on every command
that loads the registry, the manifest's columns win over an older catalog, and a manifest
built for another target is refused with the target that built it."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from conftest import clean_project_env, replace_in_file

from feature_layer.cli import main
from feature_layer.dbt.runner import run_dbt

MANIFEST = Path("target") / "manifest.json"


def _copy(built: Path, dest: Path) -> Path:
    """The built example's project files and artifacts (mtimes kept, as dbt left them)."""
    shutil.copytree(built, dest, ignore=shutil.ignore_patterns("*.duckdb", "*.wal", "logs", "run", "compiled", "data"))
    return dest


def _cli(project: Path, *args: str) -> Result:
    with clean_project_env():
        return CliRunner().invoke(main, ["--project-dir", str(project), *args])


def _warnings(result: Result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("Warning:")]


def _touch_after_manifest(project: Path, relative: str) -> None:
    written = (project / MANIFEST).stat().st_mtime
    os.utime(project / relative, (written + 60, written + 60))


def test_fresh_artifacts_give_no_warning(built_example_project: Path, tmp_path: Path) -> None:
    project = _copy(built_example_project, tmp_path / "p")
    result = _cli(project, "features")
    assert result.exit_code == 0, result.output
    assert "user_profile_features.birth_year" in result.stdout
    assert _warnings(result) == []


@pytest.mark.parametrize("command", [["features"], ["validate"], ["show", "user_profile_features.country"],
                                     ["search", "amount"]])
def test_a_model_edited_after_the_manifest_warns_to_run_dbt_parse(built_example_project: Path, tmp_path: Path,
                                                                   command: list[str]) -> None:
    project = _copy(built_example_project, tmp_path / "p")
    _touch_after_manifest(project, "models/example/schema.yml")
    result = _cli(project, *command)
    assert result.exit_code == 0, result.output
    assert _warnings(result) == [
        "Warning: models/example/schema.yml changed after target/manifest.json was written: the registry may be "
        "out of date; run `dbt parse` (or `dbt build`)."
    ]


def test_dbt_project_yml_edited_after_the_manifest_warns(built_example_project: Path, tmp_path: Path) -> None:
    project = _copy(built_example_project, tmp_path / "p")
    _touch_after_manifest(project, "dbt_project.yml")
    result = _cli(project, "features")
    assert result.exit_code == 0, result.output
    assert len(_warnings(result)) == 1
    assert "dbt_project.yml changed after target/manifest.json" in _warnings(result)[0]


def test_a_catalog_older_than_the_manifest_warns_to_run_docs_generate(built_example_project: Path,
                                                                      tmp_path: Path) -> None:
    project = _copy(built_example_project, tmp_path / "p")
    with clean_project_env():
        run_dbt(["parse"], project, target="duckdb", quiet=True)  # a new manifest, the old catalog
    result = _cli(project, "features")
    assert result.exit_code == 0, result.output
    assert _warnings(result) == [
        "Warning: target/catalog.json is older than target/manifest.json: column types may be out of date; "
        "run `dbt docs generate`."
    ]


def test_a_renamed_column_comes_from_the_manifest_not_the_old_catalog(built_example_project: Path,
                                                                       tmp_path: Path) -> None:
    project = _copy(built_example_project, tmp_path / "p")
    replace_in_file(project / "models/example/user_profile_features.sql", "    birth_year,\n",
                    "    birth_year as year_of_birth,\n")
    replace_in_file(project / "models/example/schema.yml", "      - name: birth_year\n        description: Year of",
                    "      - name: year_of_birth\n        description: Year of")
    with clean_project_env():
        run_dbt(["parse"], project, target="duckdb", quiet=True)
    shown = _cli(project, "show", "user_profile_features.year_of_birth")
    assert shown.exit_code == 0, shown.output
    assert "integer" in shown.stdout  # the declared data_type, since the catalog predates the column
    assert _warnings(shown) == [
        "Warning: target/catalog.json lacks columns the manifest declares for user_profile_features: using the "
        "manifest's columns; run `dbt docs generate`."
    ]
    listed = _cli(project, "features", "--view", "user_profile_features", "--json")
    assert listed.exit_code == 0, listed.output
    assert "user_profile_features.year_of_birth" in listed.stdout
    assert "user_profile_features.birth_year" not in listed.stdout


def test_a_manifest_built_for_postgres_is_refused_for_duckdb(built_example_project: Path, tmp_path: Path) -> None:
    project = _copy(built_example_project, tmp_path / "p")
    with clean_project_env():
        run_dbt(["parse"], project, target="postgres", quiet=True)  # parse needs no server
    refused = _cli(project, "--target", "duckdb", "features")
    assert refused.exit_code == 1
    assert "target/manifest.json was compiled for the postgres adapter, but target 'duckdb' is duckdb" in refused.stderr
    assert "run `dbt parse --target duckdb`" in refused.stderr
    assert "Traceback" not in refused.output
    accepted = _cli(project, "--target", "postgres", "features")
    assert accepted.exit_code == 0, accepted.output
    assert "user_profile_features.birth_year" in accepted.stdout


def test_a_manifest_built_for_another_duckdb_database_is_refused(built_example_project: Path,
                                                                 tmp_path: Path) -> None:
    project = _copy(built_example_project, tmp_path / "p")
    replace_in_file(project / "profiles.yml", "  outputs:\n",
                    "  outputs:\n    prod:\n      type: duckdb\n      path: target/prod.duckdb\n")
    refused = _cli(project, "--target", "prod", "features")
    assert refused.exit_code == 1
    assert "compiled for database feature_layer, but target 'prod' is duckdb, database prod" in refused.stderr
    assert _cli(project, "--target", "duckdb", "features").exit_code == 0
