"""Fuzzing the config files: feature_layer.yml, profiles.yml and dbt_project.yml, and the
environment variables that override them. Oracle: settings load, or a ConfigError with a fix."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from feature_layer.client import FeatureStore
from feature_layer.config import load_settings, warehouse_settings
from feature_layer.online.backends import connect_online_store
from tests.fuzz.fuzz_harness import check, examples
from tests.fuzz.strategies import NASTY_TEXT, NUMBERS, TEXT, json_values, mapping, maybe, mostly

_ENV = ("FEATURE_LAYER_ONLINE_STORE", "FEATURE_LAYER_TARGET", "DBT_PROFILES_DIR", "FL_FUZZ_SET", "FL_FUZZ_UNSET")

HOSTS = st.sampled_from(["127.0.0.1", "localhost", "[::1]", "cache.internal", "", "h:o:s:t", "user:pw@h", "%zz"])
PORTS = st.one_of(st.sampled_from(["", ":6379", ":0", ":65536", ":99999", ":-1", ":abc", ":"]),
                  st.integers(0, 70000).map(lambda p: f":{p}"))
DBS = st.sampled_from(["", "/", "/0", "/15", "/notadb", "/-1", "/1.5", "/0/1", "/%30", "/9999999999999"])
QUERIES = st.sampled_from(["", "?db=3", "?db=x", "?ssl_ca_certs=/nonexistent/ca.crt", "?socket_timeout=abc",
                           "?ssl_cert_reqs=none", "?health_check_interval=-1", "?protocol=9", "?&&", "?db"])
SCHEMES = st.sampled_from(["redis://", "rediss://", "unix://", "sqlite:///", "memcached://", "", "REDIS://"])
URLS = st.one_of(st.builds(lambda *parts: "".join(parts), SCHEMES, HOSTS, PORTS, DBS, QUERIES), TEXT)

GOOD_ONLINE = st.sampled_from([None, "sqlite:///online.sqlite", "redis://127.0.0.1:6379/0", "rediss://cache:6380/2",
                               {"type": "sqlite", "path": "o.sqlite"}, {"url": "redis://h/1", "retries": 2},
                               {"url": "rediss://h:1/0", "ssl_ca_certs": "ca.crt", "connect_timeout": 0.5}])
ONLINE = mostly(GOOD_ONLINE, st.one_of(
    URLS,
    mapping({
        "type": maybe(st.sampled_from(["redis", "sqlite", "mongo", ""])),
        "url": maybe(URLS),
        "path": maybe(st.sampled_from(["online.sqlite", "a/b.sqlite", "", ".", "/dev/null/x"])),
        "username": maybe(TEXT),
        "password": maybe(TEXT),
        "socket_timeout": maybe(NUMBERS),
        "connect_timeout": maybe(NUMBERS),
        "retries": maybe(NUMBERS),
        "batch_size": maybe(NUMBERS),
        "ssl_ca_certs": maybe(st.sampled_from(["ca.crt", "missing.crt", "", "."])),
        "ssl_certfile": maybe(st.sampled_from(["ca.crt", "missing.crt"])),
        "ssl_keyfile": maybe(st.sampled_from(["ca.crt", "missing.crt"])),
    }),
    json_values(4),
))
FEATURE_LAYER_YML = mostly(
    mapping({
        "project": maybe(TEXT),
        "target": maybe(st.sampled_from(["local", "local", "local", "pg", "missing", ""])),
        "online_store": ONLINE,
        "state_path": maybe(st.sampled_from(["state.sqlite", ".feature_layer/state.sqlite", "", "."])),
        "target_path": maybe(st.sampled_from(["target", "elsewhere", "", "."])),
        "profiles_dir": maybe(st.sampled_from([".", ".", ".", "profiles", "", "missing"])),
    }),
    json_values(4),
)
TEMPLATED = st.one_of(TEXT, NASTY_TEXT)
OUTPUT = st.fixed_dictionaries(
    {"type": maybe(st.sampled_from(["duckdb", "duckdb", "duckdb", "postgres", "postgres", "snowflake", ""]))},
    optional={
        "path": maybe(st.one_of(st.sampled_from(["target/x.duckdb", ":memory:", "", "{{ env_var('FL_FUZZ_SET') }}"]),
                                TEMPLATED)),
        "host": maybe(TEMPLATED),
        "port": maybe(st.one_of(st.integers(1, 65535), NUMBERS, TEMPLATED)),
        "user": maybe(TEMPLATED),
        "password": maybe(TEMPLATED),
        "pass": maybe(TEMPLATED),
        "dbname": maybe(TEMPLATED),
        "database": maybe(TEMPLATED),
        "schema": maybe(TEMPLATED),
        "threads": maybe(NUMBERS),
    },
)
PROFILES_YML = mostly(
    st.fixed_dictionaries({"demo": st.fixed_dictionaries({
        "target": maybe(st.sampled_from(["local", "local", "local", "pg", "missing",
                                         "{{ env_var('FL_FUZZ_SET', 'local') }}"])),
        "outputs": maybe(st.fixed_dictionaries({"local": maybe(OUTPUT)}, optional={"pg": maybe(OUTPUT)})),
    })}),
    json_values(4),
)
DBT_PROJECT_YML = mostly(
    st.fixed_dictionaries({"name": st.just("demo"), "profile": st.just("demo")}),
    mapping({"name": maybe(TEXT), "profile": maybe(st.sampled_from(["demo", "other"])),
             "target-path": maybe(st.sampled_from(["target", "", "."])), "vars": json_values(4)}),
)


def _dump(value: Any, raw: str | None) -> str:
    if raw is not None:
        return raw
    try:
        return yaml.safe_dump(value, allow_unicode=True)
    except yaml.YAMLError:
        return repr(value)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("fuzz_config")
    (path / "ca.crt").write_text("not really a certificate\n")
    return path


def _load_everything(project: Path, target: str | None) -> None:
    settings = load_settings(project, target=target)
    warehouse_settings(settings)
    if settings.online_store.type == "redis":  # builds the client and its TLS options; connects lazily
        connect_online_store(settings.online_store, settings.project).close()
    FeatureStore(project, target=target).close()


@given(
    feature_layer_yml=FEATURE_LAYER_YML,
    profiles_yml=PROFILES_YML,
    dbt_project_yml=DBT_PROJECT_YML,
    raw_text=mostly(st.none(), st.one_of(TEXT, st.sampled_from(["a: [\n", "- a\n", ": :", "\t x", "? [a]: 1"])), 6),
    which_raw=st.sampled_from(["feature_layer.yml", "profiles.yml", "dbt_project.yml"]),
    env_online=mostly(st.none(), URLS, 4),
    target=mostly(st.none(), st.one_of(st.sampled_from(["local", "pg", "x", ""]), TEXT), 4),
)
@examples(sample=60, full=2500)
def test_config_files_load_or_are_refused_with_a_fix(
    folder: Path, feature_layer_yml, profiles_yml, dbt_project_yml, raw_text, which_raw, env_online, target
) -> None:
    files = {
        "feature_layer.yml": _dump(feature_layer_yml, raw_text if which_raw == "feature_layer.yml" else None),
        "profiles.yml": _dump(profiles_yml, raw_text if which_raw == "profiles.yml" else None),
        "dbt_project.yml": _dump(dbt_project_yml, raw_text if which_raw == "dbt_project.yml" else None),
    }
    for name, text in files.items():
        (folder / name).write_text(text)

    def action() -> None:
        saved = {k: os.environ.get(k) for k in _ENV}
        for key in _ENV:
            os.environ.pop(key, None)
        os.environ["FL_FUZZ_SET"] = "local"
        if env_online is not None and "\x00" not in env_online:
            os.environ["FEATURE_LAYER_ONLINE_STORE"] = env_online
        try:
            _load_everything(folder, target)
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value

    check("config files", action, lambda: f"{files!r} env={env_online!r} target={target!r}")
