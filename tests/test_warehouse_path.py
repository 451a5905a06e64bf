"""The DuckDB warehouse file: a relative profile path resolves against the project folder
(where dbt-duckdb puts it when dbt runs there), and a missing file is an error naming the
path and the build to run, never a new empty database."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from feature_layer.client import FeatureStore
from feature_layer.config import load_settings, warehouse_settings
from feature_layer.errors import ConfigError

PROJECT = "name: shop\nprofile: shop\nversion: '1.0.0'\nconfig-version: 2\n"
MODEL = "select 1 as id"


def _project(root: Path, db_path: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "dbt_project.yml").write_text(PROJECT)
    (root / "profiles.yml").write_text(f"shop:\n  target: dev\n  outputs:\n    dev: {{type: duckdb, path: '{db_path}'}}\n")
    (root / "models").mkdir(exist_ok=True)
    (root / "models" / "one.sql").write_text(MODEL)
    return root


@pytest.fixture
def no_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("FEATURE_LAYER_ONLINE_STORE", "FEATURE_LAYER_TARGET", "DBT_PROFILES_DIR"):
        monkeypatch.delenv(name, raising=False)


def _dbt(cwd: Path, *args: str) -> None:
    done = subprocess.run([str(Path(sys.executable).parent / "dbt"), "--quiet", *args], cwd=cwd,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_relative_path_is_the_file_dbt_writes_when_run_in_the_project(tmp_path: Path, no_env: None,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    project = _project(tmp_path / "shop", "target/shop.duckdb")
    _dbt(project, "run", "--profiles-dir", ".")
    monkeypatch.chdir(tmp_path)  # feature_layer opened from elsewhere, as with --project-dir
    warehouse = warehouse_settings(load_settings(project))
    assert warehouse.path == project / "target" / "shop.duckdb"
    assert warehouse.path.is_file()
    with FeatureStore(project) as store:
        assert store.offline_engine().fetch_arrow("select id from one")["id"].to_pylist() == [1]


def test_missing_warehouse_is_an_error_and_no_file_is_created(tmp_path: Path, no_env: None) -> None:
    project = _project(tmp_path / "shop", "target/shop.duckdb")
    with FeatureStore(project) as store, pytest.raises(ConfigError) as raised:
        store.offline_engine()
    message = str(raised.value)
    assert str(project / "target" / "shop.duckdb") in message
    assert f"cd {project} && dbt build --target dev" in message
    assert not (project / "target" / "shop.duckdb").exists()
    assert not (project / "target").exists()


def test_missing_warehouse_points_at_the_file_dbt_made_in_another_directory(
    tmp_path: Path, no_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`dbt run --project-dir shop` from the parent: dbt-duckdb resolved the path there."""
    project = _project(tmp_path / "shop", "target/shop.duckdb")
    (tmp_path / "target").mkdir()  # dbt-duckdb does not create the folder of a cwd-relative path
    _dbt(tmp_path, "run", "--project-dir", "shop", "--profiles-dir", "shop")
    assert (tmp_path / "target" / "shop.duckdb").is_file()
    monkeypatch.chdir(tmp_path)
    with FeatureStore(project) as store, pytest.raises(ConfigError) as raised:
        store.offline_engine()
    message = str(raised.value)
    assert f"A file {tmp_path / 'target' / 'shop.duckdb'} exists" in message
    assert "absolute" in message
    assert not (project / "target" / "shop.duckdb").exists()


def test_absolute_and_in_memory_paths_are_used_as_written(tmp_path: Path, no_env: None) -> None:
    db = tmp_path / "elsewhere.duckdb"
    duckdb.connect(str(db)).close()
    project = _project(tmp_path / "shop", str(db))
    warehouse = warehouse_settings(load_settings(project))
    assert warehouse.path == db and warehouse.database == "elsewhere"
    with FeatureStore(project) as store:
        assert store.offline_engine().fetch_arrow("select 2 as x")["x"].to_pylist() == [2]
    memory = _project(tmp_path / "mem", ":memory:")
    warehouse = warehouse_settings(load_settings(memory))
    assert str(warehouse.path) == ":memory:" and warehouse.database == "memory"
    with FeatureStore(memory) as store:
        assert store.offline_engine().fetch_arrow("select 3 as x")["x"].to_pylist() == [3]
