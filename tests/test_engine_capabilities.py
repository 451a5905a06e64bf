"""Each engine capability flag drives its behaviour, on real engines (offline.kinds).

* ``replace``: how ``to_table(replace=True)`` swaps a table in (CREATE OR REPLACE, rename in a
  transaction, or build-then-drop-and-rename), each leaving the old table when the query fails;
* ``temp_tables``: entity rows staged in a session temporary table, or inlined as VALUES;
* ``connection_cost``: the engine factory reuses idle engines (PostgreSQL, generic) or opens a
  new one per use (DuckDB);
* ``offline.memory_limit``: PostgreSQL's work_mem split (native and generic), and the generic
  engine's fetched chunks, read from the server as they go.

The reference for every training set is the same training set computed the default way (the
native engine with temporary tables), itself checked against the brute-force reference in
tests/test_training_set.py and tests/test_engines.py.
"""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import psycopg2
import pyarrow as pa
import pytest
from sqlglot import exp

from feature_layer.client import FeatureStore
from feature_layer.clock import FixedClock
from feature_layer.config import ENGINE_VARIABLE, WarehouseSettings, load_settings, warehouse_settings
from feature_layer.errors import InputError, WarehouseError
from feature_layer.offline.engine import Engine, PostgresEngine
from feature_layer.offline.engines import EngineFactory, connect
from feature_layer.offline.generic import GenericEngine, batch_rows
from feature_layer.offline.inline import INLINE_ROWS, inline_values
from feature_layer.offline.kinds import SPARK, capabilities_of
from feature_layer.offline.replace import replace_table
from tests.conftest import PostgresExampleProject, clean_project_env
from tests.offline_helpers import PG

FEATURES = ["user_transaction_features.amount_sum_24h", "merchant_risk_features.category",
            "user_profile_features.age_at_signup"]


def _store(project: Path, target: str, engine: str | None, tmp: Path, now: datetime) -> FeatureStore:
    values = {ENGINE_VARIABLE: engine} if engine else {}
    with clean_project_env(**values):
        return FeatureStore(project, target=target, online_store=f"sqlite:///{tmp / 'online.sqlite'}",
                            clock=FixedClock(now))


def _labels(store: FeatureStore) -> pa.Table:
    node = next(n for n in store.registry.nodes.values() if n.name == "fraud_training_labels")
    table = ".".join(f'"{p}"' for p in node.relation.parts())
    return store.offline_engine().fetch_arrow(
        f"SELECT user_id, merchant_id, occurred_at FROM {table} ORDER BY transaction_id LIMIT 200")


def _set(engine: Engine, **flags: object) -> None:
    engine.capabilities = dataclasses.replace(capabilities_of(engine), **flags)  # type: ignore[attr-defined]


@pytest.fixture(params=["duckdb", "postgres", "generic-duckdb", "generic-postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path, fixture_now: datetime) -> Iterator[FeatureStore]:
    """A FeatureStore on each engine: native and generic, DuckDB (a private copy) and PostgreSQL."""
    target = request.param.removeprefix("generic-")
    engine = "generic" if request.param.startswith("generic") else None
    if target == "duckdb":
        source = request.getfixturevalue("built_example_project")
        project = Path(shutil.copytree(source, tmp_path / "p", ignore=shutil.ignore_patterns(".feature_layer", "logs")))
    else:
        project = request.getfixturevalue("postgres_example_project").path
    opened = _store(project, target, engine, tmp_path, fixture_now)
    yield opened
    opened.close()


# ----------------------------------------------------------------------------- replace
def _table_names(engine: Engine, prefix: str) -> list[str]:
    rows = engine.fetch_arrow("SELECT table_name FROM information_schema.tables").column(0).to_pylist()
    return sorted(r for r in rows if r.startswith(prefix))


def _strategies(engine: Engine) -> list[str]:
    # PostgreSQL has no CREATE OR REPLACE TABLE; ``rename`` is one multi-statement transaction,
    # which is what psycopg2 makes of it (DuckDB's driver runs each statement on its own)
    return ["rename", "swap"] if engine.dialect == "postgres" else ["create_or_replace", "swap"]


def _rows(table: pa.Table) -> list[dict]:
    return sorted(table.to_pylist(), key=repr)


def test_to_table_replaces_by_the_engines_strategy_and_keeps_the_old_table_on_failure(store: FeatureStore) -> None:
    engine = store.offline_engine()
    training = store.get_training_set(_labels(store), features=FEATURES, timestamp_column="occurred_at")
    expected = training.to_arrow()
    columns = ", ".join(f'"{n}"' for n in expected.column_names)
    for strategy in _strategies(engine):
        name = f"fl_replaced_{strategy}"
        _set(engine, replace=strategy)
        engine.execute(f'DROP TABLE IF EXISTS "{name}"')
        engine.execute(f'CREATE TABLE "{name}" AS SELECT 1 AS x')  # an older table of another shape
        training.to_table(name, replace=True)
        back = engine.fetch_arrow(f'SELECT {columns} FROM "{name}"')
        assert _rows(back) == _rows(expected), strategy
        failing = exp.select(exp.cast(exp.Literal.string("not a number"), "INT").as_("x"))
        with pytest.raises(WarehouseError):
            replace_table(engine, exp.to_table(f'"{name}"', dialect=engine.dialect), failing)
        assert _rows(engine.fetch_arrow(f'SELECT {columns} FROM "{name}"')) == _rows(expected), strategy
        assert _table_names(engine, "__fl_new_") == _table_names(engine, "__fl_old_") == [], strategy
        engine.execute(f'DROP TABLE "{name}"')
    training.close()


def test_the_strategy_comes_from_the_engine_kind(store: FeatureStore) -> None:
    engine = store.offline_engine()
    expected = {"duckdb": "create_or_replace", "postgres": "rename"}[engine.dialect]
    assert capabilities_of(engine).replace == expected  # native and generic agree on these two warehouses
    assert capabilities_of(engine).atomic_replace


# ----------------------------------------------------------------------------- temp tables
def _temp_entity_tables(engine: Engine) -> list[str]:
    if engine.dialect == "postgres":
        # this session's temporary tables only: another test worker's session may hold its own
        sql = "SELECT relname::text AS n FROM pg_class WHERE relpersistence = 't' AND relnamespace = pg_my_temp_schema()"
    else:
        sql = "SELECT table_name AS n FROM information_schema.tables WHERE table_type IN ('LOCAL TEMPORARY', 'VIEW')"
    return [n for n in engine.fetch_arrow(sql).column(0).to_pylist() if n.startswith("__fl_entities_")]


def test_without_temp_tables_the_entity_rows_are_inlined_with_the_same_result(store: FeatureStore) -> None:
    engine = store.offline_engine()
    labels = _labels(store)
    staged = store.get_training_set(labels, features=FEATURES, timestamp_column="occurred_at")
    reference = staged.to_arrow()
    staged.close()
    _set(engine, temp_tables=False)
    before = _temp_entity_tables(engine)
    inlined = store.get_training_set(labels, features=FEATURES, timestamp_column="occurred_at")
    assert "VALUES" in inlined.sql() and _temp_entity_tables(engine) == before == []
    got = inlined.to_arrow()
    assert got.schema == reference.schema
    assert got.to_pylist() == reference.to_pylist()  # input order kept: the row numbers are inlined too
    inlined.close()


def test_inlined_entity_rows_are_capped_with_a_clear_fix() -> None:
    table = pa.table({"user_id": pa.array(range(INLINE_ROWS + 1), pa.int64())})
    with pytest.raises(InputError, match="no temporary tables") as info:
        inline_values(table, "e")
    assert "warehouse table" in str(info.value)
    typed = inline_values(pa.table({"f": [float("nan"), None, 1.5], "s": ["it's", None, ""]}), "e").sql("postgres")
    assert "CAST('NaN' AS DOUBLE PRECISION)" in typed and "'it''s'" in typed


# ----------------------------------------------------------------------------- connection cost
def _pid(engine: Engine) -> int:
    return engine.fetch_arrow("SELECT pg_backend_pid() AS p").column(0)[0].as_py()


@pytest.mark.parametrize("engine_mode", [None, "generic"], ids=["native", "generic"])
def test_postgres_engines_are_reused_by_the_factory(postgres_example_project: PostgresExampleProject, tmp_path: Path,
                                                    fixture_now: datetime, engine_mode: str | None) -> None:
    store = _store(postgres_example_project.path, "postgres", engine_mode, tmp_path, fixture_now)
    try:
        first = store.parts.new_engine()
        pid = _pid(first)
        first.register_arrow("fl_lease_probe", pa.table({"a": [1]}))
        first.close()
        again = store.parts.new_engine()
        assert _pid(again) == pid  # the same connection, handed out again
        with pytest.raises(WarehouseError):
            again.fetch_arrow("SELECT * FROM fl_lease_probe")  # what the last user registered is gone
        again.close()  # a failed call: closed for real, not reused
        fresh = store.parts.new_engine()
        assert _pid(fresh) != pid
        fresh.close()
    finally:
        store.close()


def test_duckdb_engines_are_opened_per_use(built_example_project: Path, tmp_path: Path, fixture_now: datetime) -> None:
    store = _store(built_example_project, "duckdb", None, tmp_path, fixture_now)
    try:
        first, second = store.parts.new_engine(), store.parts.new_engine()
        assert first is not second and type(first).__name__ == "DuckDBEngine"  # no lease: cheap to open
        first.close()
        second.close()
        assert store._engines is not None and store._engines.opened == 2 and store._engines.idle == 0
    finally:
        store.close()


def test_moderate_engines_expire_when_idle_and_expensive_ones_do_not() -> None:
    now = [0.0]
    settings = WarehouseSettings(type="postgres", target="pg", **PG)
    moderate = EngineFactory(lambda: connect(settings), clock=lambda: now[0])
    expensive = EngineFactory(lambda: connect(settings), capabilities=SPARK, clock=lambda: now[0])
    try:
        for factory, kept in ((moderate, False), (expensive, True)):
            lease = factory()
            pid = _pid(lease)
            lease.close()
            now[0] += 3600
            lease = factory()
            assert (_pid(lease) == pid) is kept
            lease.close()
        late = moderate()
        moderate.close()
        late.close()  # given back after the factory closed: closed, not kept
        assert moderate.idle == 0
    finally:
        moderate.close()
        expensive.close()


# ----------------------------------------------------------------------------- memory budget
def _pg_settings(engine: Engine) -> dict[str, str]:
    names = ("work_mem", "maintenance_work_mem", "temp_buffers")
    row = engine.fetch_arrow("SELECT " + ", ".join(f"current_setting('{n}') AS {n}" for n in names)).to_pylist()[0]
    return row


BUDGET = {"work_mem": "61035kB", "maintenance_work_mem": "244140kB", "temp_buffers": "122064kB"}  # of 1GB
"""PostgreSQL prints sizes in its largest whole unit: 61035kB stays kB, 244140kB is not whole MB."""


def _pg_project(tmp_path: Path, memory_limit: str | None) -> Path:
    tmp_path.mkdir(exist_ok=True)
    (tmp_path / "dbt_project.yml").write_text("name: demo\nprofile: demo\nversion: '1'\nconfig-version: 2\n")
    (tmp_path / "profiles.yml").write_text(
        "demo:\n  target: pg\n  outputs:\n    pg: {type: postgres, host: 127.0.0.1, port: 5432, user: postgres, "
        "password: '', dbname: postgres, schema: public, threads: 1}\n")
    if memory_limit:
        (tmp_path / "feature_layer.yml").write_text(f"offline: {{memory_limit: {memory_limit}}}\n")
    return tmp_path


@pytest.mark.parametrize("engine_mode", [None, "generic"], ids=["native", "generic"])
def test_memory_limit_sets_the_postgres_work_mem_split(tmp_path: Path, engine_mode: str | None) -> None:
    values = {ENGINE_VARIABLE: engine_mode} if engine_mode else {}
    with clean_project_env(**values):
        budgeted = connect(warehouse_settings(load_settings(_pg_project(tmp_path, "1GB"))))
        plain = connect(warehouse_settings(load_settings(_pg_project(tmp_path / "plain", None))))
    try:
        assert type(budgeted).__name__ == ("GenericEngine" if engine_mode else "PostgresEngine")
        assert _pg_settings(budgeted) == BUDGET
        server_default = _pg_settings(plain)
        assert server_default != BUDGET
        if isinstance(budgeted, PostgresEngine):  # a lost connection comes back with the same budget
            with psycopg2.connect(**{k: v for k, v in PG.items()}) as admin, admin.cursor() as cur:
                cur.execute("SELECT pg_terminate_backend(%s)", (_pid(budgeted),))
            with pytest.raises(WarehouseError, match="connection"):
                _pid(budgeted)
            assert _pg_settings(budgeted) == BUDGET
    finally:
        budgeted.close()
        plain.close()


def _generic(tmp_path: Path, target: str, memory_limit: str) -> GenericEngine:
    if target == "pg":
        project = _pg_project(tmp_path, memory_limit)
    else:
        project = tmp_path
        (project / "dbt_project.yml").write_text("name: demo\nprofile: demo\nversion: '1'\nconfig-version: 2\n")
        (project / "profiles.yml").write_text("demo:\n  target: dd\n  outputs:\n    dd: {type: duckdb, path: w.duckdb}\n")
        (project / "feature_layer.yml").write_text(f"offline: {{memory_limit: {memory_limit}}}\n")
        import duckdb

        duckdb.connect(str(project / "w.duckdb")).close()
    with clean_project_env(**{ENGINE_VARIABLE: "generic"}):
        engine = connect(warehouse_settings(load_settings(project)))
    assert isinstance(engine, GenericEngine)
    return engine


SERIES = {"pg": "generate_series(1, 100000) AS t(i)", "dd": "range(1, 100001) AS t(i)"}
LATE_FAILURE = {  # a query whose row 9,000,000 of 10,000,000 fails
    "pg": "SELECT 1 / (i - 9000000) AS v FROM generate_series(1, 10000000) AS t(i)",
    "dd": "SELECT CASE WHEN i = 9000000 THEN error('late row') ELSE i END AS v FROM range(1, 10000001) AS t(i)",
}


@pytest.mark.parametrize("target", ["pg", "dd"], ids=["postgres", "duckdb"])
def test_the_generic_engine_streams_budgeted_batches_from_the_server(tmp_path: Path, target: str) -> None:
    engine = _generic(tmp_path, target, "100MB")
    try:
        cap = batch_rows(100_000, 3, 10**8)
        assert cap == 20_833  # 100 MB / 16 / (3 columns x 100 bytes)
        sql = f"SELECT i, i * 2 AS j, 'row ' || CAST(i AS VARCHAR) AS s FROM {SERIES[target]} ORDER BY i"
        sizes = [b.num_rows for b in engine.stream_arrow(sql, batch_size=100_000)]
        assert sum(sizes) == 100_000 and max(sizes) <= cap and len(sizes) >= 100_000 // cap
        whole = engine.fetch_arrow(sql)  # assembled from the same budgeted chunks
        assert whole.num_rows == 100_000 and whole.column("s")[99_999].as_py() == "row 100000"
        # The rows come from the server as they are read: the first batches arrive although a
        # later row fails (a result fetched whole would fail before the first batch).
        stream = engine.stream_arrow(LATE_FAILURE[target], batch_size=100_000)
        assert 0 < next(stream).num_rows <= batch_rows(100_000, 1, 10**8)
        stream.close()  # left unfinished: the cursor is closed, the engine stays usable
        assert engine.fetch_arrow("SELECT 1 AS one").column(0).to_pylist() == [1]  # usable afterwards
    finally:
        engine.close()


def test_the_generic_engine_applies_the_duckdb_budget(tmp_path: Path) -> None:
    engine = _generic(tmp_path, "dd", "1GB")
    try:
        assert engine.fetch_arrow("SELECT current_setting('memory_limit') AS m").column(0)[0].as_py() == "572.2 MiB"
    finally:
        engine.close()
