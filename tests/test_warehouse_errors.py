"""Warehouse failures become a WarehouseError naming what happened, with the fix for that.

Each case makes the real engine fail the way users meet it (a table dbt never built, a column
the artifacts declare but the table lacks, a value that does not fit the requested type, a
lock held by another session, a connection the server ends mid-stream) and checks the cause
and the fix — never a blanket "run dbt run", never psycopg2's follow-up ``InterfaceError``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg2
import pyarrow as pa
import pytest

from feature_layer.errors import WarehouseError
from feature_layer.offline.engine import DuckDBEngine, PostgresEngine
from feature_layer.offline.training_set import build_training_set
from feature_layer.online.materialize import materialize_view
from feature_layer.online.sqlite_store import SqliteOnlineStore
from feature_layer.state import StateStore
from tests.offline_helpers import PG, load_table, make_view

ENGINES = ["duckdb", pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.fixture(params=ENGINES)
def engine(request):
    engine = DuckDBEngine(":memory:", target="dev") if request.param == "duckdb" else PostgresEngine(**PG, target="pg")
    engine.execute("CREATE TEMP TABLE facts (user_id BIGINT, label TEXT)")
    engine.execute("INSERT INTO facts VALUES (1, 'a'), (2, 'not a number')")
    yield engine
    engine.close()


def _flag(engine) -> str:
    return f"`dbt build --target {engine.target}`"


def _failure(engine, sql: str) -> str:
    with pytest.raises(WarehouseError) as info:
        engine.fetch_arrow(sql)
    text = str(info.value)
    assert "dbt run" not in text
    return text


def test_a_missing_table_asks_for_dbt_build_of_this_target(engine):
    text = _failure(engine, "SELECT * FROM main_features.never_built")
    fix = text.split("To fix this, ")[1]
    assert fix.startswith("the table '") and "never_built' is not in the warehouse of this target" in fix
    assert _flag(engine) in text


def test_a_missing_column_names_it_and_points_at_stale_artifacts(engine):
    text = _failure(engine, "SELECT renamed_feature FROM facts")
    assert "no column 'renamed_feature'" in text
    assert _flag(engine) in text and "`dbt docs generate`" in text


def test_a_failed_cast_points_at_the_dtype_override(engine):
    text = _failure(engine, "SELECT CAST(label AS BIGINT) AS n FROM facts")
    assert "meta.feature_layer.dtype" in text and "dbt build" not in text


@pytest.mark.postgres
def test_a_lock_held_by_another_session_says_so():
    holder = psycopg2.connect(**PG)
    engine = PostgresEngine(**PG)
    try:
        engine.execute("CREATE TABLE IF NOT EXISTS public.fl_lock_probe (x int)")
        with holder.cursor() as cur:
            cur.execute("LOCK TABLE public.fl_lock_probe IN ACCESS EXCLUSIVE MODE")
        with pytest.raises(WarehouseError) as info:
            engine.execute("SET lock_timeout = '200ms'; SELECT * FROM public.fl_lock_probe")
        assert "lock" in str(info.value) and "another process holds a lock" in str(info.value)
    finally:
        holder.rollback()
        holder.close()
        engine.execute("DROP TABLE IF EXISTS public.fl_lock_probe")
        engine.close()


def test_duckdb_lock_errors_name_the_other_process(tmp_path: Path):
    import subprocess
    import sys

    path = tmp_path / "w.duckdb"
    DuckDBEngine(path, read_only=False).close()
    holder = subprocess.Popen(
        [sys.executable, "-c", f"import duckdb,sys; c=duckdb.connect({str(path)!r}); print('x', flush=True); "
         "sys.stdin.readline()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "x"
        with pytest.raises(WarehouseError) as info:
            DuckDBEngine(path, lock_wait=0.2)
        assert f"process {holder.pid}" in str(info.value) and "To fix this, wait for that process" in str(info.value)
    finally:
        holder.kill()
        holder.wait()


# ----------------------------------------------------------------------------- connection killed mid-stream


def _terminate(engine: PostgresEngine) -> None:
    pid = engine.connection.get_backend_pid()
    with psycopg2.connect(**PG) as other, other.cursor() as cur:
        cur.execute("SELECT pg_terminate_backend(%s)", (pid,))
        assert cur.fetchone() == (True,)
    other.close()


def _assert_lost_connection(error: WarehouseError) -> None:
    text = str(error)
    assert "The connection to PostgreSQL at 127.0.0.1:5432 was lost" in text
    # The real cause, as far as the server told it (libpq may see only the closed socket):
    assert "terminating connection due to administrator command" in text or (
        "server closed the connection unexpectedly This probably means the server terminated abnormally" in text
    )
    assert "To fix this, the warehouse closed the connection while the query ran" in text
    assert "InterfaceError" not in text and "connection already closed" not in text
    assert not isinstance(error.__cause__, psycopg2.InterfaceError)


@pytest.mark.postgres
def test_a_terminated_connection_mid_stream_is_a_warehouse_error_and_the_engine_reconnects():
    engine = PostgresEngine(**PG)
    try:
        engine.register_arrow("uploaded", pa.table({"n": [1, 2, 3]}))
        stream = engine.stream_arrow("SELECT g FROM generate_series(1, 50000) AS t(g)", batch_size=1000)
        assert next(stream).num_rows == 1000
        _terminate(engine)
        with pytest.raises(WarehouseError) as info:
            list(stream)
        _assert_lost_connection(info.value)
        # The next call opens a new session, with the uploaded Arrow table loaded again.
        assert engine.fetch_arrow("SELECT sum(n) AS s FROM uploaded").column("s").to_pylist() == [6]
    finally:
        engine.close()


BASE = datetime(2025, 1, 1)


def _events(users: int, per_user: int) -> pa.Table:
    rows = [
        {"user_id": u, "event_ts": BASE + timedelta(hours=i), "created_ts": BASE + timedelta(hours=i), "amount": u + i / 10}
        for u in range(users)
        for i in range(per_user)
    ]
    return pa.Table.from_pylist(rows)


@pytest.mark.postgres
def test_a_training_set_whose_connection_is_terminated_fails_with_the_cause():
    engine = PostgresEngine(**PG)
    try:
        view = make_view("activity", load_table(engine, "activity", _events(50, 20)))
        entities = pa.table(
            {"user_id": [u % 50 for u in range(20_000)], "event_timestamp": [BASE + timedelta(hours=30)] * 20_000}
        )
        training = build_training_set(engine, entities, [(view, list(view.features))])
        batches = training.to_batches(1000)
        assert next(batches).num_rows == 1000
        _terminate(engine)
        with pytest.raises(WarehouseError) as info:
            list(batches)
        _assert_lost_connection(info.value)
        again = training.to_arrow()  # a rerun works: the entity rows and the feature table are reloaded
        assert again.num_rows == 20_000 and again.column("amount").null_count == 0
    finally:
        engine.close()


@pytest.mark.postgres
def test_a_materialization_whose_connection_is_terminated_fails_and_records_nothing(tmp_path: Path):
    engine = PostgresEngine(**PG)
    state = StateStore(tmp_path / "state.sqlite")
    online = SqliteOnlineStore(tmp_path / "online.sqlite", "p")
    end = datetime(2025, 2, 1, tzinfo=UTC)
    try:
        view = make_view("activity", load_table(engine, "activity", _events(3000, 2)))
        killed = []

        def kill_once(rows: int) -> None:
            if not killed:
                killed.append(rows)
                _terminate(engine)

        with pytest.raises(WarehouseError) as info:
            materialize_view(
                view, engine=engine, online=online, state=state, end=end, on_rows=kill_once, batch_rows=500,
                statistics=False,
            )
        _assert_lost_connection(info.value)
        assert killed and state.watermark(view.name) is None  # the run that lost its stream records nothing
        rerun = materialize_view(view, engine=engine, online=online, state=state, end=end, statistics=False)
        assert rerun.entities == 3000 and state.watermark(view.name) is not None
    finally:
        online.close()
        state.close()
        engine.close()
