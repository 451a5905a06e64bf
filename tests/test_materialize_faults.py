# ruff: noqa: F811  (pytest fixtures imported from tests.redis_helpers are used as arguments)
"""Materialization faults found in review: an online store that loses data mid-run, a full
refresh that fails half way, leases that expire under a long run, statistics that fail.

Each test runs against private redis-server processes (never the shared one on :6379) and
asserts the exact online state and watermark afterwards.
"""

from __future__ import annotations

import threading
import time
import uuid
from datetime import timedelta
from pathlib import Path

import pytest

from feature_layer.errors import MaterializationConflictError, OnlineStoreError, WarehouseError
from feature_layer.offline.engine import DuckDBEngine
from feature_layer.online import materialize as materialize_module
from feature_layer.online.materialize import materialize, materialize_view
from feature_layer.online.sqlite_store import SqliteOnlineStore
from feature_layer.state import StateStore
from tests.redis_helpers import RedisServer, StubStore, private_redis, redis_server  # noqa: F401
from tests.test_materialize import BASE, END, engine, load_events, lookup, make_view, redis_store, snapshot, state  # noqa: F401


def _reference(server: RedisServer, engine: DuckDBEngine, tmp_path: Path, end=END) -> dict:  # noqa: ANN001
    ref = redis_store(server, f"ref{uuid.uuid4().hex[:6]}")
    materialize_view(
        make_view(), engine=engine, online=ref, state=StateStore(tmp_path / f"{ref.namespace}.sqlite"), end=end,
        statistics=False,
    )
    return snapshot(ref)


@pytest.mark.parametrize("how", ["flushall+script_flush", "flushall", "flushdb"])
def test_a_store_flushed_mid_run_fails_the_run_and_the_rerun_converges(
    private_redis: RedisServer, engine, state, tmp_path: Path, how: str  # noqa: ANN001
) -> None:
    load_events(engine, users=5_000, per_user=1)
    online = redis_store(private_redis, batch_size=500)
    admin = private_redis.client()
    batches: list[int] = []

    def flush(rows: int) -> None:
        batches.append(rows)
        if len(batches) == 2:  # what a restart without persistence or an operator's flush does
            admin.flushdb() if how == "flushdb" else admin.flushall()
            if "script" in how:
                admin.script_flush()

    with pytest.raises(OnlineStoreError, match="may have lost writes") as info:
        materialize_view(
            make_view(), engine=engine, online=online, state=state, end=END, on_rows=flush, batch_rows=1_000,
            statistics=False,
        )
    assert "watermark was not advanced" in str(info.value)
    assert state.watermark("user_stats") is None
    materialize_view(make_view(), engine=engine, online=online, state=state, end=END, statistics=False)
    assert state.watermark("user_stats").event_time == END
    assert len(snapshot(online)) == 5_000
    assert snapshot(online) == _reference(private_redis, engine, tmp_path)


def test_a_flush_during_an_incremental_run_makes_the_rerun_read_in_full(
    private_redis: RedisServer, engine, state, tmp_path: Path  # noqa: ANN001
) -> None:
    load_events(engine, users=3_000, per_user=1)
    online = redis_store(private_redis, batch_size=500)
    materialize_view(make_view(), engine=engine, online=online, state=state, end=BASE + timedelta(days=3))
    first = state.watermark("user_stats")
    load_events(engine, users=3_000, per_user=1, day_offset=5)
    admin = private_redis.client()
    batches: list[int] = []

    def flush(rows: int) -> None:
        batches.append(rows)
        if len(batches) == 1:
            admin.flushall()

    with pytest.raises(OnlineStoreError, match="may have lost writes"):
        materialize_view(
            make_view(), engine=engine, online=online, state=state, end=END, on_rows=flush, batch_rows=1_000
        )
    assert state.watermark("user_stats") == first
    result = materialize_view(make_view(), engine=engine, online=online, state=state, end=END)
    assert result.full_refresh  # the store no longer holds the watermark marker: read everything
    assert snapshot(online) == _reference(private_redis, engine, tmp_path)


def test_a_redis_restart_mid_run_fails_the_run_even_with_persistence(
    engine, state, tmp_path: Path  # noqa: ANN001
) -> None:
    # Persisting server: data survives the restart, but acknowledged writes since the last fsync
    # may not (appendfsync everysec); only the changed run_id tells. The run must not claim them.
    server = RedisServer(tmp_path / "aof", extra=("--appendonly", "yes", "--appendfsync", "everysec")).start()
    try:
        load_events(engine, users=4_000, per_user=1)
        online = redis_store(server, batch_size=500, retries=5)
        batches: list[int] = []

        def restart(rows: int) -> None:
            batches.append(rows)
            if len(batches) == 2:
                server.restart()

        with pytest.raises(OnlineStoreError, match="restarted or failed over"):
            materialize_view(
                make_view(), engine=engine, online=online, state=state, end=END, on_rows=restart, batch_rows=1_000,
                statistics=False,
            )
        assert state.watermark("user_stats") is None
        materialize_view(make_view(), engine=engine, online=online, state=state, end=END, statistics=False)
        assert snapshot(online) == _reference(server, engine, tmp_path)
    finally:
        server.stop()
