"""Settings: defaults, feature_layer.yml, environment overrides, and clear refusals."""

from __future__ import annotations

from pathlib import Path

import pytest

from feature_layer.client import FeatureStore
from feature_layer.config import load_settings, warehouse_settings
from feature_layer.errors import ConfigError

PROFILES = """
demo:
  target: local
  outputs:
    local: {type: duckdb, path: "{{ env_var('DEMO_DB', 'target/x.duckdb') }}"}
    pg: {type: postgres, host: 127.0.0.1, port: 5432, user: postgres, dbname: test, schema: s}
    snow: {type: snowflake, account: x}
"""


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in ("FEATURE_LAYER_ONLINE_STORE", "FEATURE_LAYER_TARGET", "DBT_PROFILES_DIR", "DEMO_DB"):
        monkeypatch.delenv(name, raising=False)
    (tmp_path / "dbt_project.yml").write_text("name: demo\nprofile: demo\nversion: '1'\nconfig-version: 2\n")
    (tmp_path / "profiles.yml").write_text(PROFILES)
    return tmp_path


def test_defaults_need_no_file(project: Path) -> None:
    settings = load_settings(project)
    assert settings.project == "demo"
    assert settings.online_store.type == "sqlite"
    assert settings.online_store.path == project / ".feature_layer" / "online.sqlite"
    assert settings.manifest_path == project / "target" / "manifest.json"
    warehouse = warehouse_settings(settings)
    assert warehouse.type == "duckdb" and warehouse.path == project / "target" / "x.duckdb"


def test_env_var_in_profiles_is_rendered(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEMO_DB", "/tmp/elsewhere.duckdb")
    assert warehouse_settings(load_settings(project)).path == Path("/tmp/elsewhere.duckdb")


def test_target_flag_and_environment_pick_the_output(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert warehouse_settings(load_settings(project, target="pg")).type == "postgres"
    monkeypatch.setenv("FEATURE_LAYER_TARGET", "pg")
    assert warehouse_settings(load_settings(project)).dbname == "test"


def test_unknown_target_lists_the_known_ones(project: Path) -> None:
    with pytest.raises(ConfigError, match="use one of: local, pg, snow"):
        warehouse_settings(load_settings(project, target="prod"))


def test_unsupported_adapter_is_refused(project: Path) -> None:
    with pytest.raises(ConfigError, match="snowflake"):
        warehouse_settings(load_settings(project, target="snow"))


def test_unknown_keys_are_refused(project: Path) -> None:
    (project / "feature_layer.yml").write_text("projet: x\n")
    with pytest.raises(ConfigError, match="Unknown key.*projet"):
        load_settings(project)
    (project / "feature_layer.yml").write_text("online_store: {type: redis, url: 'redis://h', pasword: x}\n")
    with pytest.raises(ConfigError, match="pasword"):
        load_settings(project)


def test_redis_from_file_with_password_from_the_environment(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_PW", "s3cret")
    (project / "feature_layer.yml").write_text(
        "project: fraud\nonline_store:\n  url: rediss://cache:6380/0\n  username: fl\n"
        "  password: \"{{ env_var('REDIS_PW') }}\"\n  retries: 5\n"
    )
    online = load_settings(project).online_store
    assert (online.type, online.url, online.username, online.password, online.retries) == (
        "redis", "rediss://cache:6380/0", "fl", "s3cret", 5)
    monkeypatch.delenv("REDIS_PW")
    with pytest.raises(ConfigError, match="REDIS_PW"):
        load_settings(project)


def test_a_bad_url_in_the_environment_is_blamed_on_the_environment(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FEATURE_LAYER_ONLINE_STORE", "memcached://x")
    with pytest.raises(ConfigError, match="environment variable FEATURE_LAYER_ONLINE_STORE"):
        load_settings(project)


def test_environment_url_overrides_the_file(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (project / "feature_layer.yml").write_text("online_store: {type: sqlite, path: a.sqlite}\n")
    monkeypatch.setenv("FEATURE_LAYER_ONLINE_STORE", "redis://127.0.0.1:6379/2")
    assert load_settings(project).online_store.url == "redis://127.0.0.1:6379/2"


@pytest.mark.parametrize(
    ("content", "words"),
    [
        ("online_store: memcached://x\n", "not a recognised URL"),
        ("online_store: {type: redis}\n", "has no url"),
        ("online_store: {type: mongo}\n", "not supported"),
        ("online_store: {url: 'redis://x', retries: many}\n", "bad number"),
        ("online_store: {url: 'redis://x', socket_timeout: -1}\n", "socket_timeout .* is -1.0, outside"),
        ("online_store: {url: 'redis://x', batch_size: 0}\n", "batch_size .* is 0, outside"),
        ("- a\n- b\n", "mapping at the top level"),
        ("a: [\n", "not valid YAML"),
    ],
)
def test_malformed_settings_name_the_problem(project: Path, content: str, words: str) -> None:
    (project / "feature_layer.yml").write_text(content)
    with pytest.raises(ConfigError, match=words) as raised:
        load_settings(project)
    assert "To fix this" in str(raised.value)


def test_a_folder_without_dbt_project_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a dbt project"):
        FeatureStore(tmp_path)


def test_online_store_argument_overrides_settings(project: Path) -> None:
    store = FeatureStore(project, online_store="sqlite:///other.sqlite")
    assert store.settings.online_store.path == (project / "other.sqlite").resolve()


def test_stream_settings_default_and_refuse_a_non_boolean_newest_rows(project: Path) -> None:
    from feature_layer.config import stream_connections

    (project / "feature_layer.yml").write_text("streams: {raw.t: {url: 'redis://127.0.0.1:6379/0', stream: s}}\n")
    (connection,) = stream_connections(load_settings(project)).values()
    assert connection.newest_rows is True and connection.threads == 1 and connection.dead_letter == "s:dead-letter"
    (project / "feature_layer.yml").write_text(
        "streams: {raw.t: {url: 'redis://127.0.0.1:6379/0', stream: s, newest_rows: false}}\n")
    assert stream_connections(load_settings(project))["raw.t"].newest_rows is False
    (project / "feature_layer.yml").write_text(
        "streams: {raw.t: {url: 'redis://127.0.0.1:6379/0', stream: s, newest_rows: 'sometimes'}}\n")
    with pytest.raises(ConfigError, match="streams.raw.t.newest_rows .* must be true or false") as raised:
        stream_connections(load_settings(project))
    assert "To fix this" in str(raised.value)
