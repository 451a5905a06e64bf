"""The engine table and the generic dbt-adapter engine.

The generic engine is forced (``FEATURE_LAYER_ENGINE=generic``) on the example project built
on DuckDB and on PostgreSQL; its training set and its materialization must equal the native
engine's, row for row and byte for byte in the online store. The native engine is the
independent reference here (it is itself checked against the brute-force reference in
tests/test_training_set.py).
"""

from __future__ import annotations

import shutil
import sqlite3
from datetime import datetime
from pathlib import Path

import pyarrow as pa
import pytest

from feature_layer.client import FeatureStore
from feature_layer.clock import FixedClock
from feature_layer.config import ENGINE_VARIABLE, WarehouseSettings, load_settings, warehouse_settings
from feature_layer.errors import ConfigError, WarehouseError
from feature_layer.offline.engine import DuckDBEngine, PostgresEngine
from feature_layer.offline.engines import connect, engine_kind
from feature_layer.offline.generic import GenericEngine
from feature_layer.offline.kinds import ENGINE_KINDS, kind_for, parse_memory_limit, spark_conf
from tests.conftest import PostgresExampleProject, clean_project_env

FEATURES = [
    "user_transaction_features.amount_sum_24h",
    "user_transaction_features.txn_count_1h",
    "merchant_risk_features.category",
    "merchant_risk_features.chargeback_rate_30d",
    "user_merchant_features.*",
    "user_profile_features.age_at_signup",
]


def _copy(project: Path, dest: Path) -> Path:
    """A private copy (own state, own DuckDB file): the session's project stays untouched."""
    shutil.copytree(project, dest, ignore=shutil.ignore_patterns(".feature_layer", "logs"))
    return dest


def _store(project: Path, target: str, engine: str | None, online: Path, now: datetime) -> FeatureStore:
    values = {ENGINE_VARIABLE: engine} if engine else {}
    with clean_project_env(**values):
        return FeatureStore(project, target=target, online_store=f"sqlite:///{online}", clock=FixedClock(now))


def _labels(store: FeatureStore) -> pa.Table:
    node = next(n for n in store.registry.nodes.values() if n.name == "fraud_training_labels")
    table = ".".join(f'"{p}"' for p in node.relation.parts())
    return store.offline_engine().fetch_arrow(
        f"SELECT user_id, merchant_id, occurred_at, is_fraud FROM {table} ORDER BY transaction_id DESC LIMIT 300"
    )


def _online_rows(path: Path) -> list[tuple]:
    with sqlite3.connect(path) as db:
        return db.execute("SELECT key, value, event_us, created_us, expires_us FROM online_values ORDER BY key").fetchall()


def _run(project: Path, target: str, engine: str | None, tmp: Path, now: datetime, labels: pa.Table | None):
    """(engine class name, labels, training set, materialize result, online rows) for one engine."""
    online = tmp / f"online-{engine or 'native'}.sqlite"
    store = _store(project, target, engine, online, now)
    try:
        kind = type(store.offline_engine()).__name__
        labels = labels if labels is not None else _labels(store)
        training = store.get_training_set(labels, features=FEATURES, timestamp_column="occurred_at").to_arrow()
        result = store.materialize(full_refresh=True)
    finally:
        store.close()
    summary = sorted((v.view, v.rows_written, v.entities, v.watermark, v.newest_event_time) for v in result.views)
    return kind, labels, training, summary, _online_rows(online)


def _assert_generic_equals_native(project: Path, target: str, native_class: str, tmp: Path, now: datetime) -> None:
    native_kind, labels, native_training, native_summary, native_online = _run(project, target, None, tmp, now, None)
    generic_kind, _, generic_training, generic_summary, generic_online = _run(project, target, "generic", tmp, now,
                                                                              labels)
    assert (native_kind, generic_kind) == (native_class, "GenericEngine")
    assert labels.num_rows == 300
    assert generic_training.schema == native_training.schema
    assert generic_training.to_pylist() == native_training.to_pylist()
    assert sum(r["amount_sum_24h"] is not None for r in native_training.to_pylist()) > 100  # features were found
    assert generic_summary == native_summary
    assert len(native_online) > 100
    assert generic_online == native_online


def test_generic_engine_on_duckdb_equals_the_native_engine(built_example_project: Path, fixture_now: datetime,
                                                           tmp_path: Path) -> None:
    project = _copy(built_example_project, tmp_path / "project")
    _assert_generic_equals_native(project, "duckdb", "DuckDBEngine", tmp_path, fixture_now)


@pytest.mark.postgres
def test_generic_engine_on_postgres_equals_the_native_engine(postgres_example_project: PostgresExampleProject,
                                                             fixture_now: datetime, tmp_path: Path) -> None:
    project = _copy(postgres_example_project.path, tmp_path / "project")
    _assert_generic_equals_native(project, "postgres", "PostgresEngine", tmp_path, fixture_now)


SAMPLE = pa.table({
    "i": pa.array([1, None, 3], pa.int64()),
    "s": pa.array(["it's", "", None]),
    "f": pa.array([1.5, None, float("-inf")]),
    "b": pa.array([True, None, False]),
    "ts": pa.array([datetime(2025, 1, 1), None, datetime(2025, 3, 1, 1, 2, 3, 456789)], pa.timestamp("us")),
})


@pytest.mark.parametrize("use_cursor", [True, False], ids=["cursor", "agate"])
def test_generic_round_trips_uploads_through_cursor_and_agate(tmp_path: Path, use_cursor: bool) -> None:
    DuckDBEngine(tmp_path / "w.duckdb", read_only=False).close()
    settings = WarehouseSettings(type="duckdb", target="dev", path=tmp_path / "w.duckdb", engine="generic",
                                 profile={"type": "duckdb", "path": str(tmp_path / "w.duckdb")})
    engine = GenericEngine.from_settings(settings, use_cursor=use_cursor)
    try:
        engine.register_arrow("sample", SAMPLE)
        back = engine.fetch_arrow("SELECT * FROM sample ORDER BY i NULLS LAST")
        expected = SAMPLE.take([0, 2, 1]).to_pylist()
        assert back.to_pylist() == expected
        assert sum(b.num_rows for b in engine.stream_arrow("SELECT * FROM sample", batch_size=2)) == 3
        with pytest.raises(WarehouseError, match="not in the warehouse") as info:
            engine.fetch_arrow("SELECT * FROM no_such_table")
        assert "SQL: SELECT * FROM no_such_table" in str(info.value)
        engine.unregister("sample")
        with pytest.raises(WarehouseError):
            engine.fetch_arrow("SELECT * FROM sample")
    finally:
        engine.close()


# ----------------------------------------------------------------------------- the table and the settings
PROFILES = """
demo:
  target: local
  outputs:
    local: {type: duckdb, path: "{{ env_var('DEMO_DB', 'target/x.duckdb') }}", settings: {memory_limit: 300MB}}
    plain: {type: duckdb, path: target/y.duckdb}
    other: {type: duckdb, path: target/z.duckdb}
    snow: {type: snowflake, account: x, user: u, password: p, database: d, warehouse: w, schema: s}
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "dbt_project.yml").write_text("name: demo\nprofile: demo\nversion: '1'\nconfig-version: 2\n")
    (tmp_path / "profiles.yml").write_text(PROFILES)
    return tmp_path


def test_each_adapter_finds_its_kind_and_others_fall_to_generic() -> None:
    assert {k: kind_for(k).name for k in ("duckdb", "postgres", "spark", "snowflake", "bigquery", "trino")} == {
        "duckdb": "duckdb", "postgres": "postgres", "spark": "spark",
        "snowflake": "generic", "bigquery": "generic", "trino": "generic"}
    assert kind_for("duckdb", "generic").name == "generic"
    assert ENGINE_KINDS["duckdb"].capabilities.replace == "create_or_replace"
    assert ENGINE_KINDS["postgres"].capabilities.replace == "rename" and not ENGINE_KINDS["spark"].capabilities.atomic_replace
    assert ENGINE_KINDS["spark"].capabilities.connection_cost == "expensive"
    assert not ENGINE_KINDS["generic"].capabilities_for("bigquery").temp_tables
    assert ENGINE_KINDS["generic"].capabilities_for("no-such-adapter").replace == "swap"  # nothing assumed


def test_an_adapter_without_its_dbt_plugin_names_the_package(project: Path) -> None:
    with clean_project_env(), pytest.raises(ConfigError, match=r"pip install dbt-snowflake") as info:
        warehouse_settings(load_settings(project, target="snow"))
    assert "generic engine" in str(info.value)


def test_forcing_generic_by_file_or_environment(project: Path) -> None:
    with clean_project_env():
        assert warehouse_settings(load_settings(project, target="plain")).engine == "duckdb"
        (project / "feature_layer.yml").write_text("offline: {engine: generic}\n")
        forced = warehouse_settings(load_settings(project, target="plain"))
        assert (forced.engine, forced.type, forced.path) == ("generic", "duckdb", project / "target" / "y.duckdb")
        assert engine_kind(forced).name == "generic"
        (project / "feature_layer.yml").write_text("offline: {engine: fast}\n")
        with pytest.raises(ConfigError, match="'fast', which is not an engine choice"):
            load_settings(project)
    with clean_project_env(**{ENGINE_VARIABLE: "generic"}):
        (project / "feature_layer.yml").unlink()
        assert warehouse_settings(load_settings(project, target="plain")).engine == "generic"


@pytest.mark.parametrize(
    ("value", "words"),
    [("1 GB", "no space between"), ("abc", "not a size"), ("12", "not a size"), ("1XB", "not a size"),
     ("10MB", "below the 64MiB"), ("true", "not a size")],
)
def test_bad_memory_limits_name_the_setting_and_the_fix(project: Path, value: str, words: str) -> None:
    (project / "feature_layer.yml").write_text(f"offline: {{memory_limit: '{value}'}}\n")
    with clean_project_env(), pytest.raises(ConfigError, match=words) as info:
        load_settings(project)
    assert "offline.memory_limit" in str(info.value) and "To fix this, write a size" in str(info.value)


def test_memory_limit_sizes() -> None:
    assert parse_memory_limit("1GB", "x") == 10**9
    assert parse_memory_limit("1.5GiB", "x") == 3 * 2**29
    assert parse_memory_limit("512mb", "x") == 512 * 10**6
    with pytest.raises(ConfigError):
        parse_memory_limit(1024, "x")  # a bare number has no unit


def _duckdb_setting(engine: DuckDBEngine, name: str) -> str:
    return engine.fetch_arrow(f"SELECT current_setting('{name}') AS v").column("v")[0].as_py()


def test_memory_limit_reaches_duckdb_with_a_spill_folder_per_file(project: Path) -> None:
    (project / "target").mkdir()
    for name in ("x", "y", "z"):  # one file per engine: DuckDB shares one database (and its settings) per file
        DuckDBEngine(project / "target" / f"{name}.duckdb", read_only=False).close()
    with clean_project_env():
        default = connect(warehouse_settings(load_settings(project, target="plain")))
        from_profile = connect(warehouse_settings(load_settings(project, target="local")))
        (project / "feature_layer.yml").write_text("offline: {memory_limit: 700MiB}\n")
        configured = connect(warehouse_settings(load_settings(project, target="other")))
    try:
        # feature_layer.yml wins; DuckDB gets 60% of the process budget (the rest is the Python side's)
        assert _duckdb_setting(configured, "memory_limit") == "420.0 MiB"
        assert _duckdb_setting(from_profile, "memory_limit") == "286.1 MiB"  # the profile's settings: 300MB
        assert _duckdb_setting(default, "memory_limit").endswith("GiB")  # half the machine, at most 2 GiB
        spill = Path(_duckdb_setting(configured, "temp_directory"))
        assert spill.is_dir() and spill != Path(_duckdb_setting(default, "temp_directory"))
    finally:
        for engine in (default, from_profile, configured):
            engine.close()
    assert spill.is_dir()  # kept for the process (another engine on the file may have spilled there)


def test_memory_limit_is_the_spark_driver_memory_unless_the_profile_sets_one() -> None:
    base = WarehouseSettings(type="spark", target="spark", options={"spark.master": "local[2]"}, memory_limit=2**30)
    assert spark_conf(base)["spark.driver.memory"] == "1024m"
    own = WarehouseSettings(type="spark", target="spark", options={"spark.driver.memory": "3g"}, memory_limit=2**30)
    assert spark_conf(own)["spark.driver.memory"] == "3g"


def test_our_profile_renderer_agrees_with_dbts(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The native engines read the profile through config's small renderer (dbt's costs a second
    of imports); dbt's own ProfileRenderer is the reference it must agree with."""
    import contextvars
    import os

    import yaml

    from feature_layer.config import _render_env

    example = yaml.safe_load((Path(__file__).resolve().parents[1] / "profiles.yml").read_text())
    outputs = dict(example["feature_layer"]["outputs"])
    outputs["extra"] = {"a": "{{ env_var('FL_TEST_SET', 'no') }}-x", "b": "{{ env_var('FL_TEST_UNSET', 'dflt') }}",
                        "c": "plain", "n": {"deep": "{{ env_var('FL_TEST_SET') }}"}}
    monkeypatch.setenv("FL_TEST_SET", "yes")
    monkeypatch.setenv("FEATURE_LAYER_DUCKDB_PATH", "/data/w.duckdb")

    def dbt_render(value: dict) -> dict:
        from dbt.config.renderer import ProfileRenderer
        from dbt_common.context import set_invocation_context

        set_invocation_context(os.environ)
        return ProfileRenderer({}).render_data(value)

    for name, output in outputs.items():
        ours = {k: _render_env(v) for k, v in output.items()}
        theirs = contextvars.copy_context().run(dbt_render, output)
        assert ours == {k: (str(v) if isinstance(v, (int, float)) and not isinstance(ours[k], (int, float)) else v)
                        for k, v in theirs.items()}, name


@pytest.mark.postgres
def test_native_postgres_still_opens_natively() -> None:
    from tests.offline_helpers import PG

    engine = connect(WarehouseSettings(type="postgres", target="pg", **PG))
    try:
        assert isinstance(engine, PostgresEngine)
    finally:
        engine.close()
