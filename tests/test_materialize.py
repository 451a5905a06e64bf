# ruff: noqa: F811  (pytest fixtures imported from tests.redis_helpers are used as arguments)
"""Materialization into a real redis-server (private instances) and the embedded store.

The fault tests stop and restart Redis in the middle of a run, kill client connections, and
run two materializations of one view at once; each asserts the exact online state afterwards.
"""

from __future__ import annotations

import dataclasses
import threading
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from feature_layer.errors import (
    InputError,
    MaterializationConflictError,
    OnlineStoreError,
    UnknownFeatureError,
    WarehouseError,
)
from feature_layer.offline.engine import DuckDBEngine
from feature_layer.offline.kinds import DUCKDB
from feature_layer.online.encoding import to_micros
from feature_layer.online.lookup import get_online_features
from feature_layer.online.materialize import materialize, materialize_view
from feature_layer.online.redis_store import RedisOnlineStore
from feature_layer.online.sqlite_store import SqliteOnlineStore
from feature_layer.parts import Parts
from feature_layer.registry.model import Feature, FeatureView, Relation
from feature_layer.state import StateStore
from tests.redis_helpers import RedisServer, make_parts, private_redis, redis_server  # noqa: F401

BASE = datetime(2025, 1, 1, tzinfo=UTC)
END = datetime(2025, 2, 1, tzinfo=UTC)


def make_view(
    name: str = "user_stats", *, ttl: timedelta | None = None, extra: tuple[Feature, ...] = (), online: bool = True
) -> FeatureView:
    return FeatureView(
        name=name,
        unique_id=f"model.p.{name}",
        entities=("user",),
        join_keys=("user_id",),
        event_time="ts",
        created_at="cr",
        features=(Feature("x", name, "float64"), Feature("label", name, "string"), *extra),
        relation=Relation(None, "main", "events"),
        ttl=ttl,
        online=online,
        column_types=(("user_id", "int64"),),
    )


def load_events(engine: DuckDBEngine, users: int, per_user: int = 3, *, day_offset: int = 0) -> None:
    """Deterministic rows: user u, event i at BASE + i days + u seconds; x = u * 10 + i."""
    engine.execute(
        "CREATE TABLE IF NOT EXISTS main.events (user_id BIGINT, ts TIMESTAMP, cr TIMESTAMP, x DOUBLE, label VARCHAR, y BIGINT)"
    )
    engine.execute(f"""
        INSERT INTO main.events
        SELECT u, TIMESTAMP '2025-01-01' + INTERVAL (i + {day_offset}) DAY + INTERVAL (u) SECOND,
               TIMESTAMP '2025-01-01' + INTERVAL (i + {day_offset}) DAY + INTERVAL (u + 30) SECOND,
               u * 10 + i + {day_offset}, 'u' || u::VARCHAR || '-' || (i + {day_offset})::VARCHAR, u
        FROM range({users}) t(u), range({per_user}) s(i)
    """)


@pytest.fixture
def engine():  # noqa: ANN201
    eng = DuckDBEngine(":memory:")
    yield eng
    eng.close()


@pytest.fixture
def state(tmp_path: Path):  # noqa: ANN201
    s = StateStore(tmp_path / "state.sqlite")
    yield s
    s.close()


def redis_store(server: RedisServer, namespace: str | None = None, **kw) -> RedisOnlineStore:  # noqa: ANN003
    store = RedisOnlineStore(server.client(), namespace or f"t{uuid.uuid4().hex[:8]}", **kw)
    store.clock = lambda: to_micros(END)
    return store


def snapshot(online: RedisOnlineStore) -> dict[bytes, bytes]:
    """Every value key of the store's namespace (namespace stripped) -> value; bookkeeping
    markers (``__markers__:…``) are left out."""
    prefix = b"fl1:" + online.namespace.encode() + b":"
    keys = sorted(k for k in online.client.scan_iter(match=prefix + b"*", count=10_000)
                  if not k.startswith(prefix + b"__markers__:"))
    return {k[len(prefix) :]: v for k, v in zip(keys, online.client.mget(keys) if keys else [], strict=False)}


def lookup(store: Parts, users: list[int], feats: tuple[str, ...] = ("user_stats.x", "user_stats.label")) -> dict:
    return get_online_features(store, features=list(feats), entity_rows=[{"user_id": u} for u in users]).to_dict()


@pytest.mark.parametrize("kind", ["redis", "sqlite"])
def test_materialize_writes_each_entitys_latest_value_and_advances_the_watermark(
    kind: str,
    engine,
    state,
    tmp_path: Path,
    request: pytest.FixtureRequest,  # noqa: ANN001
) -> None:
    online = (
        redis_store(request.getfixturevalue("redis_server"))
        if kind == "redis"
        else SqliteOnlineStore(tmp_path / "o.sqlite", "p")
    )
    online.clock = lambda: to_micros(END)
    load_events(engine, users=50)
    store = make_parts(engine, online, state, [make_view()])
    result = materialize(store, end=END)
    assert (result["user_stats"].entities, result["user_stats"].rows_written) == (50, 50)
    assert state.last_materialized("user_stats")[0] == END
    got = lookup(store, [0, 7, 49, 50])
    assert got["x"] == [2.0, 72.0, 492.0, None]
    assert got["label"] == ["u0-2", "u7-2", "u49-2", None]
    again = materialize(store, end=END, late_lookback=timedelta(0))  # nothing new since the watermark
    assert again["user_stats"].entities == 0


def test_incremental_run_takes_late_rows_that_are_newer_and_never_lets_older_ones_win(
    redis_server: RedisServer,
    engine,
    state,  # noqa: ANN001, F811
) -> None:
    online = redis_store(redis_server)
    load_events(engine, users=3)  # latest per user: day 2
    store = make_parts(engine, online, state, [make_view()])
    materialize(store, end=END)
    # Late rows, created now: user 0 gets an event on day 5 (newer), user 1 one on day 1 (older).
    engine.execute("""INSERT INTO main.events VALUES
        (0, TIMESTAMP '2025-01-06', TIMESTAMP '2025-01-31 23:00', -1, 'late-newer', 0),
        (1, TIMESTAMP '2025-01-02', TIMESTAMP '2025-01-31 23:00', -2, 'late-older', 1)""")
    result = materialize(store, end=END, late_lookback=timedelta(0))
    assert result["user_stats"].entities == 2  # only the late rows were read
    assert result["user_stats"].kept_newer == 1
    assert lookup(store, [0, 1, 2])["label"] == ["late-newer", "u1-2", "u2-2"]


def test_redis_stopped_mid_run_fails_clearly_keeps_the_watermark_and_a_rerun_converges(
    private_redis: RedisServer,
    engine,
    state,
    tmp_path: Path,  # noqa: ANN001, F811
) -> None:
    # A server that persists every write, so the keys written before the crash survive it.
    server = RedisServer(tmp_path / "aof", extra=("--appendonly", "yes", "--appendfsync", "always")).start()
    try:
        load_events(engine, users=20_000, per_user=1)
        view = make_view()
        online = redis_store(server, "crash", batch_size=500, retries=1)
        materialize_view(view, engine=engine, online=online, state=state, end=BASE + timedelta(days=3))
        first_watermark = state.watermark("user_stats")
        assert first_watermark is not None and first_watermark.event_time == BASE + timedelta(days=3)
        load_events(engine, users=20_000, per_user=1, day_offset=5)  # new rows for the next run

        batches = []

        def crash_after_first_batch(rows: int) -> None:
            batches.append(rows)
            if len(batches) == 2:
                server.stop()

        with pytest.raises(OnlineStoreError) as info:
            materialize_view(
                view,
                engine=engine,
                online=online,
                state=state,
                end=END,
                on_rows=crash_after_first_batch,
                batch_rows=2_000,
            )
        message = str(info.value)
        assert "user_stats" in message and "watermark was not advanced" in message and "To fix this" in message
        assert state.watermark("user_stats") == first_watermark

        server.start()
        partial = snapshot(online)
        materialize_view(view, engine=engine, online=online, state=state, end=END)  # the rerun
        assert state.watermark("user_stats").event_time == END

        # The same two runs, uninterrupted, into another namespace of the same server.
        reference_state = StateStore(tmp_path / "ref.sqlite")
        reference = redis_store(server, "ref")
        materialize_view(view, engine=engine, online=reference, state=reference_state, end=BASE + timedelta(days=3))
        materialize_view(view, engine=engine, online=reference, state=reference_state, end=END)
        assert partial != snapshot(reference)  # the crash really interrupted the run
        assert snapshot(online) == snapshot(reference)
        assert len(snapshot(online)) == 20_000
    finally:
        server.stop()


def test_connection_blips_are_retried_without_losing_writes(private_redis: RedisServer, engine, state) -> None:  # noqa: ANN001, F811
    load_events(engine, users=5_000, per_user=1)
    online = redis_store(private_redis, batch_size=250, retries=3)
    admin = private_redis.client()
    kills = []

    def blip(rows: int) -> None:
        kills.append(admin.client_kill_filter(_type="normal", skipme=True))

    result = materialize_view(
        make_view(), engine=engine, online=online, state=state, end=END, on_rows=blip, batch_rows=1_000
    )
    assert sum(kills) >= 3 and result.rows_written == 5_000
    assert len(snapshot(online)) == 5_000
    admin.client_kill_filter(_type="normal", skipme=True)
    store = make_parts(engine, online, state, [make_view()])
    assert lookup(store, [4_999])["x"] == [49_990.0]  # reads retry too


def test_a_flushed_write_script_is_reloaded_mid_run(private_redis: RedisServer, engine, state) -> None:  # noqa: ANN001, F811
    load_events(engine, users=3_000, per_user=1)
    online = redis_store(private_redis, batch_size=200)
    admin = private_redis.client()
    result = materialize_view(
        make_view(),
        engine=engine,
        online=online,
        state=state,
        end=END,
        on_rows=lambda rows: admin.script_flush(),
        batch_rows=500,
    )
    assert result.rows_written == 3_000 and len(snapshot(online)) == 3_000


def test_two_concurrent_materializations_of_one_view_one_fails_clearly(
    redis_server: RedisServer,
    engine,
    tmp_path: Path,  # noqa: ANN001, F811
) -> None:
    load_events(engine, users=2_000, per_user=1)
    online = redis_store(redis_server)
    first_started, release = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def slow(rows: int) -> None:
        first_started.set()
        release.wait(10)

    def first_run() -> None:
        try:
            materialize_view(
                make_view(),
                engine=engine,
                online=online,
                state=StateStore(tmp_path / "s.sqlite"),
                end=END,
                on_rows=slow,
                batch_rows=500,
            )
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    thread = threading.Thread(target=first_run)
    thread.start()
    assert first_started.wait(10)
    other_engine = DuckDBEngine(":memory:")
    with pytest.raises(MaterializationConflictError, match="already being materialized") as info:
        materialize_view(
            make_view(), engine=other_engine, online=online, state=StateStore(tmp_path / "s.sqlite"), end=END
        )
    assert "To fix this, wait for that run to finish" in str(info.value)
    release.set()
    thread.join(20)
    assert not errors
    # Once the first run is done, the view can be materialized again.
    materialize_view(make_view(), engine=engine, online=online, state=StateStore(tmp_path / "s.sqlite"), end=END)


def test_full_refresh_removes_entities_gone_from_the_warehouse(redis_server: RedisServer, engine, state) -> None:  # noqa: ANN001, F811
    online = redis_store(redis_server)
    load_events(engine, users=10)
    store = make_parts(engine, online, state, [make_view()])
    materialize(store, end=END)
    engine.execute("DELETE FROM main.events WHERE user_id = 3")
    materialize(store, end=END)
    assert lookup(store, [3])["x"] == [32.0]  # an incremental run cannot see a deletion
    result = materialize(store, end=END, full_refresh=True)
    assert result["user_stats"].full_refresh
    assert lookup(store, [3, 4])["x"] == [None, 42.0]


def test_a_changed_view_layout_rewrites_values_and_drops_the_old_keys_after_a_grace(
    redis_server: RedisServer, engine, state, monkeypatch: pytest.MonkeyPatch  # noqa: ANN001, F811
) -> None:
    from feature_layer.online import layouts

    online = redis_store(redis_server)
    load_events(engine, users=5)
    materialize(make_parts(engine, online, state, [make_view()]), end=END)
    wider = make_view(extra=(Feature("y", "user_stats", "int64"),))
    store = make_parts(engine, online, state, [wider])
    result = materialize(store, end=END)
    assert result["user_stats"].full_refresh and result["user_stats"].rows_written == 5
    assert lookup(store, [2], ("user_stats.y", "user_stats.x")) == {"user_id": [2], "y": [2], "x": [22.0]}
    assert len(snapshot(online)) == 10  # the old layout's keys stay while servers may still read them
    materialize(store, end=END)
    assert len(snapshot(online)) == 10  # a run within the grace keeps them
    monkeypatch.setattr(layouts, "RETIRE_GRACE_SECONDS", 0.0)
    materialize(store, end=END)
    assert len(snapshot(online)) == 5  # the next run after it deletes them
    assert lookup(store, [2], ("user_stats.y", "user_stats.x")) == {"user_id": [2], "y": [2], "x": [22.0]}


def test_statistics_are_computed_in_the_warehouse_and_saved(redis_server: RedisServer, engine, state) -> None:  # noqa: ANN001, F811
    load_events(engine, users=100)
    engine.execute("UPDATE main.events SET x = NULL WHERE user_id < 10")
    materialize(make_parts(engine, redis_store(redis_server), state, [make_view()]), end=END)
    stats = state.get_statistics("user_stats.x")
    # what is served: each user's latest row (event i = 2, x = 10u + 2), users 0-9 null
    assert stats["rows"] == 100 and stats["null_pct"] == pytest.approx(10.0) and stats["scope"] == "served"
    assert stats["min"] == 102.0 and stats["max"] == 992.0 and stats["as_of"] == END.isoformat()
    assert sum(stats["histogram"]["counts"]) == 90 and len(stats["histogram"]["edges"]) == 11
    assert 80 <= stats["distinct"] <= 100
    assert state.get_statistics("user_stats.label")["distinct"] > 0


def test_expired_values_are_not_written(redis_server: RedisServer, engine, state) -> None:  # noqa: ANN001, F811
    load_events(engine, users=4)
    online = redis_store(redis_server)
    result = materialize(
        make_parts(engine, online, state, [make_view(ttl=timedelta(days=1))]), end=BASE + timedelta(days=10)
    )
    online.clock = lambda: to_micros(BASE + timedelta(days=10))
    assert result["user_stats"].expired == 4 and not snapshot(online)


def test_selecting_unknown_or_offline_views_fails_clearly(redis_server: RedisServer, engine, state) -> None:  # noqa: ANN001, F811
    store = make_parts(engine, redis_store(redis_server), state, [make_view(), make_view("offline_only", online=False)])
    with pytest.raises(UnknownFeatureError):
        materialize(store, select=["nope"])
    with pytest.raises(InputError, match="online: false"):
        materialize(store, select=["offline_only"])
    with pytest.raises(InputError, match="after"):
        materialize(store, start=END, end=BASE)


def test_progress_bar_reports_rows(redis_server: RedisServer, engine, state, capsys) -> None:  # noqa: ANN001, F811
    load_events(engine, users=10)
    materialize(make_parts(engine, redis_store(redis_server), state, [make_view()]), end=END, progress=True)
    assert "rows" in capsys.readouterr().out


def test_lease_is_released_after_a_failed_run(private_redis: RedisServer, engine, state) -> None:  # noqa: ANN001, F811
    load_events(engine, users=10)
    online = redis_store(private_redis, retries=0)
    private_redis.stop()
    with pytest.raises(OnlineStoreError):
        materialize_view(make_view(), engine=engine, online=online, state=state, end=END)
    state.release_lease(state.acquire_lease("user_stats"))


def test_a_backfill_never_moves_values_back_in_time_nor_the_watermark(redis_server: RedisServer, engine, state) -> None:
    online = redis_store(redis_server)
    load_events(engine, users=5)
    store = make_parts(engine, online, state, [make_view()])
    materialize(store, end=END)
    before = snapshot(online)
    assert len(before) == 5  # one value per user: the comparison below is about values that are there
    result = materialize(store, start=BASE, end=BASE + timedelta(days=1))  # rows of day 0 and 1 only
    assert result["user_stats"].entities == 5 and result["user_stats"].kept_newer == 5
    assert snapshot(online) == before
    assert state.watermark("user_stats").event_time == END


class _CountingEngine:
    """Wraps an engine to count the rows it has produced so far (its stream read in this thread)."""

    capabilities = dataclasses.replace(DUCKDB, threaded_streams=False)

    def __init__(self, inner: DuckDBEngine) -> None:
        self.inner, self.dialect, self.produced = inner, inner.dialect, 0

    def fetch_arrow(self, sql):  # noqa: ANN001, ANN201
        return self.inner.fetch_arrow(sql)

    def stream_arrow(self, sql, batch_size: int = 100_000):  # noqa: ANN001, ANN201
        for batch in self.inner.stream_arrow(sql, batch_size):
            self.produced += batch.num_rows
            yield batch


def test_batches_are_written_while_the_query_streams(engine, state, tmp_path: Path) -> None:  # noqa: ANN001
    load_events(engine, users=5_000, per_user=1)
    online = SqliteOnlineStore(tmp_path / "o.sqlite", "p")
    online.clock = lambda: to_micros(END)
    counting = _CountingEngine(engine)
    seen: list[tuple[int, int]] = []

    def after_batch(rows: int) -> None:
        stored = online._db.execute("SELECT count(*) FROM online_values").fetchone()[0]
        seen.append((counting.produced, stored))

    materialize_view(
        make_view(),
        engine=counting,
        online=online,
        state=state,
        end=END,
        on_rows=after_batch,
        batch_rows=1_000,
        statistics=False,
    )
    # After each batch of 1,000 its values are already in the store, and the query has produced at
    # most the part of one more engine batch that filled it (DuckDB's reader may hand out a shorter
    # batch, which the next one completes): nothing is collected before writing, so memory is one
    # batch whatever the table size.
    assert [stored for _, stored in seen] == [1_000, 2_000, 3_000, 4_000, 5_000], seen
    assert all(0 <= produced - stored < 1_000 for produced, stored in seen), seen


class _PrefetchedEngine(_CountingEngine):
    """The counting engine, read a batch ahead from a thread as DuckDB is; ``fail_after``
    batches, the warehouse fails mid-stream."""

    capabilities = DUCKDB

    def __init__(self, inner: DuckDBEngine, fail_after: int | None = None) -> None:
        super().__init__(inner)
        self.fail_after = fail_after
        self.threads: set[str] = set()

    def stream_arrow(self, sql, batch_size: int = 100_000):  # noqa: ANN001, ANN201
        for i, batch in enumerate(super().stream_arrow(sql, batch_size)):
            self.threads.add(threading.current_thread().name)
            if i == self.fail_after:
                raise WarehouseError("the warehouse went away mid-stream", fix="rerun.")
            yield batch


def test_a_prefetched_stream_stays_a_batch_or_two_ahead_and_writes_the_same(engine, state, tmp_path: Path) -> None:  # noqa: ANN001
    load_events(engine, users=5_000, per_user=1)
    online = SqliteOnlineStore(tmp_path / "o.sqlite", "p")
    online.clock = lambda: to_micros(END)
    prefetched = _PrefetchedEngine(engine)
    ahead: list[int] = []

    def after_batch(rows: int) -> None:
        ahead.append(prefetched.produced - online._db.execute("SELECT count(*) FROM online_values").fetchone()[0])

    result = materialize_view(make_view(), engine=prefetched, online=online, state=state, end=END,
                              on_rows=after_batch, batch_rows=1_000, statistics=False)
    assert prefetched.threads == {"feature-layer-prefetch"}
    assert len(ahead) == 5 and all(0 <= a <= 3 * 1_000 for a in ahead)  # memory: a few batches at most
    assert result.entities == 5_000 and state.watermark("user_stats") is not None
    reference = SqliteOnlineStore(tmp_path / "r.sqlite", "p")
    reference.clock = online.clock
    materialize_view(make_view(), engine=engine, online=reference, state=StateStore(tmp_path / "r.state"), end=END,
                     batch_rows=1_000, statistics=False)
    query = "SELECT key, value FROM online_values ORDER BY key"
    assert online._db.execute(query).fetchall() == reference._db.execute(query).fetchall()


def test_a_warehouse_failing_mid_prefetch_fails_the_run_and_keeps_the_watermark(engine, state, tmp_path: Path) -> None:  # noqa: ANN001
    load_events(engine, users=5_000, per_user=1)
    online = SqliteOnlineStore(tmp_path / "o.sqlite", "p")
    online.clock = lambda: to_micros(END)
    with pytest.raises(WarehouseError, match="went away mid-stream"):
        materialize_view(make_view(), engine=_PrefetchedEngine(engine, fail_after=2), online=online, state=state,
                         end=END, batch_rows=1_000, statistics=False)
    assert state.watermark("user_stats") is None
    assert not [t for t in threading.enumerate() if t.name == "feature-layer-prefetch"]  # the thread is gone


def test_a_new_online_store_is_filled_even_though_the_state_has_a_watermark(engine, state, tmp_path: Path) -> None:  # noqa: ANN001
    load_events(engine, users=20)
    first = SqliteOnlineStore(tmp_path / "first.sqlite", "p")
    materialize(make_parts(engine, first, state, [make_view()]), end=END)
    second = SqliteOnlineStore(tmp_path / "second.sqlite", "p")  # e.g. pointing the project at a new store
    store = make_parts(engine, second, state, [make_view()])
    result = materialize(store, end=END)
    assert result["user_stats"].rows_written == 20
    assert lookup(store, [0, 19])["x"] == [2.0, 192.0]
    assert materialize(store, end=END, late_lookback=timedelta(0))["user_stats"].entities == 0  # incremental again


def test_a_flushed_redis_is_refilled_by_the_next_incremental_run(redis_server: RedisServer, engine, state) -> None:  # noqa: ANN001, F811
    online = redis_store(redis_server)
    load_events(engine, users=20)
    store = make_parts(engine, online, state, [make_view()])
    materialize(store, end=END)
    before = snapshot(online)
    assert len(before) == 20
    for key in online.client.scan_iter(match=b"fl1:" + online.namespace.encode() + b":*"):
        online.client.delete(key)  # what a restart without persistence does to this namespace
    assert not snapshot(online)
    result = materialize(store, end=END)
    assert result["user_stats"].rows_written == 20
    assert snapshot(online) == before


def test_a_first_run_with_start_does_not_claim_a_watermark(engine, state, tmp_path: Path) -> None:  # noqa: ANN001
    load_events(engine, users=5)
    store = make_parts(engine, SqliteOnlineStore(tmp_path / "o.sqlite", "p"), state, [make_view()])
    materialize(store, start=BASE + timedelta(days=2), end=END)
    assert state.last_materialized("user_stats") is None
