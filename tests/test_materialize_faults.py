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
from feature_layer.online.encoding import to_micros
from feature_layer.online.materialize import materialize, materialize_view
from feature_layer.online.sqlite_store import SqliteOnlineStore
from feature_layer.registry.model import Feature
from feature_layer.state import StateStore
from tests.redis_helpers import RedisServer, make_parts, private_redis, redis_server  # noqa: F401
from tests.test_materialize import BASE, END, engine, load_events, lookup, make_view, redis_store, snapshot, state  # noqa: F401

MINIMAL_ACL = [  # the documented minimum (docs/online_store.md, "Configuration")
    *("+get", "+mget", "+set", "+mset", "+msetnx", "+evalsha", "+script|load", "+script|exists", "+scan", "+unlink", "+ping"),
    *("+setbit", "+bitcount", "+exists", "+pexpire", "+time"),
]


def run_view(engine, online, state, **options):  # noqa: ANN001, ANN003, ANN201
    """``materialize_view`` of the standard test view as of END (statistics off unless asked)."""
    options.setdefault("statistics", False)
    return materialize_view(make_view(), engine=engine, online=online, state=state, end=END, **options)


def _reference(server: RedisServer, engine: DuckDBEngine, tmp_path: Path, end=END) -> dict:  # noqa: ANN001
    ref = redis_store(server, f"ref{uuid.uuid4().hex[:6]}")
    materialize_view(
        make_view(),
        engine=engine,
        online=ref,
        state=StateStore(tmp_path / f"{ref.namespace}.sqlite"),
        end=end,
        statistics=False,
    )
    return snapshot(ref)


@pytest.mark.parametrize("how", ["flushall+script_flush", "flushall", "flushdb"])
def test_a_store_flushed_mid_run_fails_the_run_and_the_rerun_converges(
    private_redis: RedisServer,
    engine,
    state,
    tmp_path: Path,
    how: str,  # noqa: ANN001
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

    with pytest.raises(OnlineStoreError, match="lost values") as info:
        run_view(
            engine,
            online,
            state,
            on_rows=flush,
            batch_rows=1_000,
            statistics=False,
        )
    assert "watermark was not advanced" in str(info.value)
    assert state.watermark("user_stats") is None
    materialize_view(make_view(), engine=engine, online=online, state=state, end=END, statistics=False)
    assert state.watermark("user_stats").event_time == END
    assert len(snapshot(online)) == 5_000
    reference = _reference(private_redis, engine, tmp_path)
    assert reference and snapshot(online) == reference  # values that are there, not two empty stores


def test_a_flush_during_an_incremental_run_makes_the_rerun_read_in_full(
    private_redis: RedisServer,
    engine,
    state,
    tmp_path: Path,  # noqa: ANN001
) -> None:
    load_events(engine, users=3_000, per_user=1)
    online = redis_store(private_redis, batch_size=500)
    materialize_view(make_view(), engine=engine, online=online, state=state, end=BASE + timedelta(days=3))
    first = state.watermark("user_stats")
    assert first is not None and first.event_time == BASE + timedelta(days=3)
    load_events(engine, users=3_000, per_user=1, day_offset=5)
    admin = private_redis.client()
    batches: list[int] = []

    def flush(rows: int) -> None:
        batches.append(rows)
        if len(batches) == 1:
            admin.flushall()

    with pytest.raises(OnlineStoreError, match="lost values"):
        materialize_view(
            make_view(), engine=engine, online=online, state=state, end=END, on_rows=flush, batch_rows=1_000
        )
    assert state.watermark("user_stats") == first
    result = materialize_view(make_view(), engine=engine, online=online, state=state, end=END)
    assert result.full_refresh  # the store no longer holds the watermark marker: read everything
    reference = _reference(private_redis, engine, tmp_path)
    assert reference and snapshot(online) == reference  # values that are there, not two empty stores


def test_a_redis_restart_that_kept_every_write_lets_the_run_finish_exactly(
    engine,
    state,
    tmp_path: Path,  # noqa: ANN001
) -> None:
    # A persisting server (AOF, fsync always) killed and restarted mid-run keeps every write it
    # acknowledged (and each write's ledger bit, in the same atomic script): the run reconnects,
    # resends what was not acknowledged, proves with its ledger that nothing is missing, and
    # finishes. (With `appendfsync everysec` a loaded server may acknowledge writes it has not
    # yet written to the AOF, and lose them: the ledger then fails the run, as it should.)
    server = RedisServer(tmp_path / "aof", extra=("--appendonly", "yes", "--appendfsync", "always")).start()
    try:
        load_events(engine, users=4_000, per_user=1)
        online = redis_store(server, batch_size=500, retries=5)
        batches: list[int] = []

        def restart(rows: int) -> None:
            batches.append(rows)
            if len(batches) == 2:
                server.restart()

        result = run_view(engine, online, state, on_rows=restart, batch_rows=1_000, statistics=False)
        assert batches == [1_000] * 4 and result.rows_written == 4_000
        assert state.watermark("user_stats").event_time == END
        assert snapshot(online) == _reference(server, engine, tmp_path)
    finally:
        server.stop()


# -- full refresh: the previous values stay readable until replaced ---------------------------


class _FailingEngine:
    """Streams the first ``good`` batches of each query, then loses the warehouse connection."""

    def __init__(self, inner: DuckDBEngine, good: int = 1) -> None:
        self.inner, self.dialect, self.good = inner, inner.dialect, good

    def fetch_arrow(self, sql):  # noqa: ANN001, ANN201
        return self.inner.fetch_arrow(sql)

    def stream_arrow(self, sql, batch_size: int = 100_000):  # noqa: ANN001, ANN201
        for i, batch in enumerate(self.inner.stream_arrow(sql, batch_size)):
            if i == self.good:
                raise WarehouseError("warehouse connection lost", fix="retry")
            yield batch


def _online(kind: str, request: pytest.FixtureRequest, tmp_path: Path):  # noqa: ANN202
    if kind == "redis":
        return redis_store(request.getfixturevalue("redis_server"))
    online = SqliteOnlineStore(tmp_path / "o.sqlite", "p")
    online.clock = lambda: to_micros(END)
    return online


@pytest.mark.parametrize("kind", ["redis", "sqlite"])
def test_a_full_refresh_failing_half_way_leaves_every_previous_value_readable(
    kind: str,
    engine,
    state,
    tmp_path: Path,
    request: pytest.FixtureRequest,  # noqa: ANN001
) -> None:
    load_events(engine, users=3_000, per_user=1)
    online = _online(kind, request, tmp_path)
    store = make_parts(engine, online, state, [make_view()])
    materialize(store, end=END, statistics=False)
    before = lookup(store, list(range(3_000)))["x"]
    watermark = state.watermark("user_stats")
    engine.execute("UPDATE main.events SET x = x + 0.5")  # the rewrite brings new values for all
    with pytest.raises(WarehouseError):
        materialize_view(
            make_view(),
            engine=_FailingEngine(engine),
            online=online,
            state=state,
            end=END,
            full_refresh=True,
            batch_rows=1_000,
            statistics=False,
        )
    after = lookup(store, list(range(3_000)))["x"]
    assert None not in after  # nothing was deleted ahead of its replacement
    assert sum(a == b + 0.5 for a, b in zip(after, before, strict=True)) == 1_000  # the first batch landed
    assert sum(a == b for a, b in zip(after, before, strict=True)) == 2_000  # the rest: previous values
    assert state.watermark("user_stats") == watermark


@pytest.mark.parametrize("kind", ["redis", "sqlite"])
def test_a_full_refresh_in_progress_never_serves_missing_values(
    kind: str,
    engine,
    state,
    tmp_path: Path,
    request: pytest.FixtureRequest,  # noqa: ANN001
) -> None:
    load_events(engine, users=2_000, per_user=1)
    online = _online(kind, request, tmp_path)
    store = make_parts(engine, online, state, [make_view()])
    materialize(store, end=END, statistics=False)
    engine.execute("DELETE FROM main.events WHERE user_id = 1999")
    missing: list[int] = []

    def look(rows: int) -> None:
        missing.append(lookup(store, list(range(1_999)))["x"].count(None))

    run_view(
        engine,
        online,
        state,
        full_refresh=True,
        batch_rows=500,
        on_rows=look,
        statistics=False,
    )
    assert len(missing) == 4 and not any(missing)
    assert lookup(store, [0, 1_998, 1_999])["x"] == [0.0, 19_980.0, None]  # the deleted entity: gone at the end


@pytest.mark.parametrize("kind", ["redis", "sqlite"])
def test_a_full_refresh_leaves_exactly_what_the_warehouse_holds(
    kind: str,
    engine,
    state,
    tmp_path: Path,
    request: pytest.FixtureRequest,  # noqa: ANN001
) -> None:
    load_events(engine, users=5)
    online = _online(kind, request, tmp_path)
    store = make_parts(engine, online, state, [make_view()])
    materialize(store, end=END, statistics=False)
    # The warehouse corrected user 3: its latest row (day 2) was wrong and removed. The stored
    # value is newer than anything left, so only a forced rewrite can bring back day 1.
    engine.execute("DELETE FROM main.events WHERE user_id = 3 AND x = 32")
    materialize(store, end=END, full_refresh=True, statistics=False)
    assert lookup(store, [2, 3])["x"] == [22.0, 31.0]


def test_key_hashes_are_fnv1a_of_each_key() -> None:
    import pyarrow as pa

    from feature_layer.online.store import key_hashes

    def fnv(data: bytes) -> int:
        h = 0xCBF29CE484222325
        for b in data:
            h = ((h ^ b) * 0x100000001B3) % 2**64
        return h

    keys = [b"", b"a", b"fl1:p:v:abcd:42", b"\xff" * 40, b"x|y\\|z"]
    arr = pa.array(keys * 3, pa.binary()).slice(2, 10)
    assert key_hashes(arr).tolist() == [fnv(k) for k in (keys * 3)[2:12]]
    assert key_hashes(pa.array([], pa.binary())).tolist() == []
    assert key_hashes(pa.array([b"prefix:42", b"prefix:"]), skip=7).tolist() == [fnv(b"42"), fnv(b"")]


# -- leases: kept alive by a heartbeat, never recorded over when lost ---------------------------


class _SlowEngine:
    """A warehouse whose query takes ``delay`` seconds before the first batch arrives."""

    def __init__(self, inner: DuckDBEngine, delay: float) -> None:
        self.inner, self.dialect, self.delay = inner, inner.dialect, delay

    def fetch_arrow(self, sql):  # noqa: ANN001, ANN201
        return self.inner.fetch_arrow(sql)

    def stream_arrow(self, sql, batch_size: int = 100_000):  # noqa: ANN001, ANN201
        time.sleep(self.delay)
        yield from self.inner.stream_arrow(sql, batch_size)


def test_a_long_query_keeps_the_lease_through_the_heartbeat(
    redis_server: RedisServer,
    engine,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,  # noqa: ANN001
) -> None:
    monkeypatch.setattr(materialize_module, "LEASE_SECONDS", 0.3)
    load_events(engine, users=100)
    online = redis_store(redis_server)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            materialize_view(
                make_view(),
                engine=_SlowEngine(engine, 1.5),
                online=online,
                state=StateStore(tmp_path / "s.sqlite"),
                end=END,
                statistics=False,
            )
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    time.sleep(0.8)  # the lease is 0.3 s long: only renewals during the query keep it
    with pytest.raises(MaterializationConflictError, match="already being materialized"):
        StateStore(tmp_path / "s.sqlite").acquire_lease("user_stats")
    thread.join(20)
    assert not errors


def test_a_run_that_lost_its_lease_records_no_watermark(
    redis_server: RedisServer,
    engine,
    state,
    monkeypatch: pytest.MonkeyPatch,  # noqa: ANN001
) -> None:
    monkeypatch.setattr(materialize_module, "LEASE_SECONDS", 0.3)
    load_events(engine, users=2_000, per_user=1)
    online = redis_store(redis_server)

    def stolen(rows: int) -> None:  # another run took the view over (e.g. after this one stalled)
        state._db.execute("UPDATE leases SET owner = 'another-run'")
        time.sleep(0.25)

    with pytest.raises(MaterializationConflictError, match="lost the materialization lease"):
        run_view(
            engine,
            online,
            state,
            on_rows=stolen,
            batch_rows=500,
            statistics=False,
        )
    assert state.watermark("user_stats") is None
    markers = online.client.keys(f"fl1:{online.namespace}:__markers__:watermark:*".encode())
    assert markers == []  # nor in the online store


# -- statistics: informational, never failing a run nor outliving it ----------------------------


def test_a_statistics_failure_is_recorded_and_the_watermark_still_advances(
    redis_server: RedisServer,
    engine,
    state,  # noqa: ANN001
) -> None:
    load_events(engine, users=50)
    online = redis_store(redis_server)

    def broken_connection() -> DuckDBEngine:
        raise WarehouseError("statistics connection refused", fix="none")

    result = run_view(
        engine,
        online,
        state,
        statistics=True,
        statistics_engine=broken_connection,
    )
    assert not result.statistics and "statistics connection refused" in result.statistics_error
    assert result.rows_written == 50 and state.watermark("user_stats").event_time == END
    assert state.get_statistics("user_stats.x") is None


def test_the_statistics_thread_is_joined_when_the_writes_fail(
    private_redis: RedisServer,
    engine,
    state,  # noqa: ANN001
) -> None:
    load_events(engine, users=3_000, per_user=1)
    online = redis_store(private_redis, retries=0, batch_size=200)
    finished: list[bool] = []

    def slow_statistics_connection() -> DuckDBEngine:
        time.sleep(0.5)
        finished.append(True)
        return DuckDBEngine(":memory:")  # no table: its statistics query fails, and that is fine

    def stop_redis(rows: int) -> None:
        private_redis.stop()

    with pytest.raises(OnlineStoreError):
        run_view(
            engine,
            online,
            state,
            statistics=True,
            batch_rows=500,
            statistics_engine=slow_statistics_connection,
            on_rows=stop_redis,
        )
    assert finished == [True]  # the run did not return while its statistics thread still ran
    assert not [t for t in threading.enumerate() if t.name == "feature-layer-statistics"]


def test_an_acl_user_without_info_still_materializes_and_still_detects_a_flush(
    private_redis: RedisServer,
    engine,
    state,  # noqa: ANN001
) -> None:
    from feature_layer.config import OnlineStoreSettings
    from feature_layer.online.backends import connect_online_store

    admin = private_redis.client()
    admin.acl_setuser(
        "writer",
        enabled=True,
        passwords=["+pw"],
        keys=["fl1:acl:*"],
        commands=MINIMAL_ACL,
    )
    settings = OnlineStoreSettings(type="redis", url=private_redis.url, username="writer", password="pw")
    online = connect_online_store(settings, "acl")
    online.clock = lambda: to_micros(END)
    load_events(engine, users=2_000, per_user=1)
    batches: list[int] = []

    def flush(rows: int) -> None:
        batches.append(rows)
        if len(batches) == 1:
            admin.flushall()

    with pytest.raises(OnlineStoreError, match="lost values"):
        run_view(
            engine,
            online,
            state,
            on_rows=flush,
            batch_rows=500,
            statistics=False,
        )
    result = materialize_view(make_view(), engine=engine, online=online, state=state, end=END, statistics=False)
    assert result.rows_written == 2_000 and state.watermark("user_stats").event_time == END
    # Every other path under the same user: incremental, a full refresh deleting a vanished
    # entity (fenced deletes), the eviction check past the EXISTS limit (SCAN), a layout change.
    load_events(engine, users=2_000, per_user=1, day_offset=3)
    assert run_view(engine, online, state).rows_written == 2_000
    engine.execute("DELETE FROM main.events WHERE user_id = 5")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(materialize_module, "EXISTS_CHECK_KEYS", 0)
        run_view(engine, online, state, full_refresh=True)
    wider = make_view(extra=(Feature("y", "user_stats", "int64"),))
    materialize_view(wider, engine=engine, online=online, state=state, end=END, statistics=False)
    parts = make_parts(engine, online, state, [wider])
    assert lookup(parts, [4, 5], ("user_stats.x", "user_stats.y")) == {
        "user_id": [4, 5],
        "x": [43.0, None],
        "y": [4, None],
    }


def test_runs_sharing_a_store_do_not_trip_each_others_sentinel(
    redis_server: RedisServer, engine, tmp_path: Path
) -> None:  # noqa: ANN001
    # Two deployments with their own state files (so no shared lease) write one Redis: a run of
    # the other one starting and ending in the middle of ours is not a flush.
    load_events(engine, users=2_000, per_user=1)
    online = redis_store(redis_server)
    other_engine = DuckDBEngine(":memory:")
    load_events(other_engine, users=10, per_user=1)
    ran: list[int] = []

    def other_run(rows: int) -> None:
        if not ran:
            ran.append(1)
            materialize_view(
                make_view(),
                engine=other_engine,
                online=online,
                state=StateStore(tmp_path / "other.sqlite"),
                end=END,
                statistics=False,
            )

    result = materialize_view(
        make_view(),
        engine=engine,
        online=online,
        state=StateStore(tmp_path / "ours.sqlite"),
        end=END,
        on_rows=other_run,
        batch_rows=500,
        statistics=False,
    )
    assert ran and result.rows_written == 2_000
    assert not online.client.keys(f"fl1:{online.namespace}:__markers__:run:*".encode())  # ledgers removed
