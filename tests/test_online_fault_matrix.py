# ruff: noqa: F811  (pytest fixtures imported from tests.redis_helpers are used as arguments)
"""The online fault matrix (issue 9): every fault ends with 0 lost or regressed values after the
reruns its error message asks for, and the run that lost data never reports success.

Each case runs on private redis-server processes, injects one real fault (kill -9 and restart
with and without an RDB snapshot, SIGSTOP of Redis, kill -9 and SIGSTOP of the materializer past
its lease, a lagging replica promoted, maxmemory evicting, a full disk under the state file, a
layout change while lookups run), reruns as the error says, and compares the final store with
an uninterrupted run of the same data: byte for byte (every key and value) and decoded (every
entity's values, all present).
"""

from __future__ import annotations

import dataclasses
import os
import signal
import threading
import time
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
import redis

from feature_layer.errors import LostWritesError, MaterializationConflictError, OnlineStoreError, StateStoreError
from feature_layer.offline.engine import DuckDBEngine
from feature_layer.online import layouts
from feature_layer.online import materialize as materialize_module
from feature_layer.online.encoding import to_micros, view_layout
from feature_layer.online.layouts import layout_state
from feature_layer.online.lookup import get_online_features
from feature_layer.online.materialize import materialize, materialize_view
from feature_layer.online.redis_store import RedisOnlineStore
from feature_layer.registry.model import Feature, FeatureView
from feature_layer.state import StateStore
from tests.fault_helpers import MaterializerProcess, TcpProxy, TmpfsDisk
from tests.redis_helpers import RedisServer, make_parts, private_redis, redis_server  # noqa: F401
from tests.test_materialize import BASE, END, engine, load_events, make_view, redis_store, snapshot, state  # noqa: F401

USERS = 2_000


def run(engine: DuckDBEngine, online: RedisOnlineStore, state: StateStore, view: FeatureView | None = None, **kw):  # noqa: ANN003, ANN201
    kw.setdefault("statistics", False)
    kw.setdefault("end", END)
    return materialize_view(view or make_view(), engine=engine, online=online, state=state, **kw)


def values(online: RedisOnlineStore, view: FeatureView, users: int = USERS) -> dict[str, list]:
    store = make_parts(None, online, None, [view])
    feats = [f"{view.name}.{f.name}" for f in view.features]
    return get_online_features(store, features=feats, entity_rows={"user_id": list(range(users))}).to_dict()


def assert_same_as_uninterrupted(
    online: RedisOnlineStore,
    engine: DuckDBEngine,
    reference_server: RedisServer,
    tmp_path: Path,
    view=None,  # noqa: ANN001
) -> None:
    """The store holds exactly what one uninterrupted run of the same data leaves."""
    view = view or make_view()
    ref = redis_store(reference_server, f"ref{uuid.uuid4().hex[:8]}")
    run(engine, ref, StateStore(tmp_path / f"{ref.namespace}.sqlite"), view)
    got, want = snapshot(online), snapshot(ref)
    assert len(want) == USERS and got == want  # byte for byte: no key lost, none regressed, none extra
    decoded = values(online, view)
    assert decoded == values(ref, view)
    assert None not in decoded["x"] and None not in decoded["label"]  # every value present


def _hook(at: dict[int, object]):  # noqa: ANN202
    """An ``on_rows`` callback running ``at[n]()`` after the n-th batch."""
    seen = [0]

    def on_rows(rows: int) -> None:
        seen[0] += 1
        action = at.get(seen[0])
        if action is not None:
            action()  # type: ignore[operator]

    return on_rows


# -- Redis loses data -------------------------------------------------------------------------


def test_kill_9_of_redis_without_persistence(
    private_redis: RedisServer, redis_server: RedisServer, engine, state, tmp_path: Path
) -> None:  # noqa: ANN001, E501
    load_events(engine, users=USERS, per_user=1)
    online = redis_store(private_redis, batch_size=250, retries=6)

    def kill_and_restart_later() -> None:
        private_redis.stop()  # SIGKILL: every value in memory is gone
        threading.Timer(0.3, private_redis.start).start()

    with pytest.raises(OnlineStoreError, match="watermark was not advanced") as info:
        run(engine, online, state, batch_rows=500, on_rows=_hook({2: kill_and_restart_later}))
    assert isinstance(info.value, LostWritesError) and "lost values" in str(info.value)
    assert state.watermark("user_stats") is None
    run(engine, online, state)  # "rerun `feature-layer materialize -s user_stats`"
    assert_same_as_uninterrupted(online, engine, redis_server, tmp_path)


def test_kill_9_of_redis_reloading_an_older_rdb_snapshot(
    redis_server: RedisServer, engine, state, tmp_path: Path
) -> None:  # noqa: ANN001, E501
    server = RedisServer(tmp_path / "rdb").start()
    try:
        admin = server.client()
        online = redis_store(server, batch_size=250, retries=6)
        load_events(engine, users=USERS, per_user=1)
        run(engine, online, state)
        first = state.watermark("user_stats")
        load_events(engine, users=USERS, per_user=1, day_offset=5)  # new values for every entity

        # Mid-run: a snapshot, more acknowledged writes, then kill -9 and a restart from it.
        with pytest.raises(LostWritesError, match="lost values"):
            run(engine, online, state, batch_rows=500, on_rows=_hook({1: admin.save, 3: server.restart}))
        assert state.watermark("user_stats") == first  # not advanced over the lost writes
        run(engine, online, state)  # the rerun re-reads from the watermark the snapshot still holds
        assert_same_as_uninterrupted(online, engine, redis_server, tmp_path)

        # Between runs: a run succeeds, then Redis restarts from a snapshot older than it.
        load_events(engine, users=USERS, per_user=1, day_offset=10)
        admin.save()
        run(engine, online, state)
        server.restart()
        result = run(engine, online, state)
        assert result.full_refresh  # the store's watermark marker is older than the state's: read in full
        assert_same_as_uninterrupted(online, engine, redis_server, tmp_path)
    finally:
        server.stop()


def test_sigstop_of_redis(private_redis: RedisServer, redis_server: RedisServer, engine, state, tmp_path: Path) -> None:  # noqa: ANN001, E501
    load_events(engine, users=USERS, per_user=1)
    online = redis_store(private_redis, batch_size=250, retries=6)
    pid = private_redis.process.pid  # type: ignore[union-attr]

    def stall() -> None:
        os.kill(pid, signal.SIGSTOP)
        threading.Timer(3.0, os.kill, (pid, signal.SIGCONT)).start()  # longer than the 2 s socket timeout

    try:
        result = run(engine, online, state, batch_rows=500, on_rows=_hook({2: stall}))
        assert result.rows_written == USERS  # nothing was lost, so the run may finish: it did, exactly
    except OnlineStoreError as exc:  # or it gave up: then its message asks for a rerun
        assert "watermark was not advanced" in str(exc) and "rerun" in str(exc)
        run(engine, online, state)
    finally:
        os.kill(pid, signal.SIGCONT)
    assert_same_as_uninterrupted(online, engine, redis_server, tmp_path)


def test_a_lagging_replica_promoted_mid_run(
    private_redis: RedisServer, redis_server: RedisServer, engine, state, tmp_path: Path
) -> None:  # noqa: ANN001, E501
    primary = private_redis
    replica = RedisServer(tmp_path / "replica", extra=("--replicaof", "127.0.0.1", str(primary.port))).start()
    proxy = TcpProxy(primary.port)  # the service address clients use; failover moves it
    try:
        deadline = time.monotonic() + 10
        while replica.client().info("replication").get("master_link_status") != "up":
            assert time.monotonic() < deadline, "the replica did not connect to the primary"
            time.sleep(0.05)
        online = RedisOnlineStore(
            redis.Redis(port=proxy.port, socket_timeout=2), f"t{uuid.uuid4().hex[:8]}", batch_size=250, retries=6
        )
        online.clock = lambda: to_micros(END)
        load_events(engine, users=USERS, per_user=1)

        def partition_replica() -> None:  # it has everything so far, then falls behind
            primary.client().wait(1, 5000)
            replica.client().replicaof("NO", "ONE")

        def fail_over() -> None:
            primary.stop()
            proxy.switch(replica.port)

        with pytest.raises(LostWritesError, match="lost values"):
            run(engine, online, state, batch_rows=500, on_rows=_hook({1: partition_replica, 3: fail_over}))
        assert state.watermark("user_stats") is None
        run(engine, online, state)
        assert_same_as_uninterrupted(online, engine, redis_server, tmp_path)
    finally:
        proxy.close()
        replica.stop()


def test_maxmemory_evicting_keys_mid_run(redis_server: RedisServer, engine, state, tmp_path: Path) -> None:  # noqa: ANN001
    server = RedisServer(tmp_path / "mem", extra=("--maxmemory-policy", "volatile-lru")).start()
    try:
        admin = server.client()
        admin.config_set("maxmemory", admin.info("memory")["used_memory"] + 250_000)
        view = make_view(ttl=timedelta(days=3650))  # keys with a TTL: what volatile-lru evicts
        online = redis_store(server, batch_size=250)
        load_events(engine, users=USERS, per_user=1)
        # Redis evicts, and either the commit finds the run's evicted values missing (LostWritesError)
        # or Redis cannot evict enough and refuses a write (out of memory): both say maxmemory.
        with pytest.raises(OnlineStoreError, match="maxmemory") as info:
            run(engine, online, state, view, batch_rows=500)
        assert "watermark was not advanced" in str(info.value)
        assert admin.info("stats")["evicted_keys"] > 0  # the fault really happened
        assert state.watermark("user_stats") is None
        admin.config_set("maxmemory", 0)  # "first raise Redis's maxmemory …", then rerun
        run(engine, online, state, view)
        assert_same_as_uninterrupted(online, engine, redis_server, tmp_path, view)
    finally:
        server.stop()


@pytest.mark.parametrize("check", ["exists", "scan"])
def test_values_vanishing_mid_run_are_found_at_commit(
    private_redis: RedisServer,
    redis_server: RedisServer,
    engine,  # noqa: ANN001
    state,  # noqa: ANN001
    tmp_path: Path,
    check: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # What eviction does, deterministically: keys the run wrote disappear without a word.
    if check == "scan":  # a run too large to keep its keys: one SCAN against their hashes
        monkeypatch.setattr(materialize_module, "EXISTS_CHECK_KEYS", 0)
    admin = private_redis.client()
    # A server that may evict (maxmemory under an evicting policy, far above what the test
    # uses): on one that cannot, an unchanged evicted-keys counter stands in for the check.
    admin.config_set("maxmemory-policy", "allkeys-lru")
    admin.config_set("maxmemory", 1 << 30)
    online = redis_store(private_redis, batch_size=250)
    load_events(engine, users=USERS, per_user=1)
    run(engine, online, state)
    load_events(engine, users=USERS, per_user=1, day_offset=5)
    first = sorted(admin.keys(f"fl1:{online.namespace}:user_stats:*".encode()))
    before = dict(zip(first, admin.mget(first), strict=True))

    def vanish() -> None:
        # 7 keys this run already rewrote (a newer value): none is written again, so all 7 stay
        # gone — a key still waiting in a request in flight would be written back
        keys = [k for k, v in zip(first, admin.mget(first), strict=True) if v != before[k]][:7]
        assert len(keys) == 7
        admin.unlink(*keys)

    with pytest.raises(LostWritesError, match="7 of the 2,000 values it wrote are no longer there"):
        run(engine, online, state, batch_rows=1_000, on_rows=_hook({2: vanish}))
    result = run(engine, online, state)
    assert result.full_refresh  # keys of earlier runs may have gone too: the rerun reads in full
    assert_same_as_uninterrupted(online, engine, redis_server, tmp_path)


def test_eviction_snapshots_prove_nothing_evicted_only_on_a_server_that_cannot_evict(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "snap").start()
    try:
        admin = server.client()
        online = RedisOnlineStore(server.client(), "snap")
        before = online.eviction_snapshot()
        admin.set(b"k", b"v")
        assert online.nothing_evicted_between(before, online.eviction_snapshot())  # maxmemory 0
        admin.config_set("maxmemory", 1 << 30)
        assert online.nothing_evicted_between(before, online.eviction_snapshot())  # noeviction policy
        admin.config_set("maxmemory-policy", "allkeys-lru")
        assert not online.nothing_evicted_between(before, online.eviction_snapshot())  # it may evict now
        assert not online.nothing_evicted_between(None, online.eviction_snapshot())  # INFO refused
        server.stop()
        server.start()  # another process (run_id): its counters started again
        assert not online.nothing_evicted_between(before, RedisOnlineStore(server.client(), "snap").eviction_snapshot())
    finally:
        server.stop()


def test_materialization_checks_each_key_once_the_server_evicts(
    private_redis: RedisServer, engine, state  # noqa: ANN001
) -> None:
    # maxmemory set mid-run under an evicting policy: the snapshots differ, so the run checks every
    # key it wrote, and finds the ones removed behind its back.
    online = redis_store(private_redis, batch_size=250)
    load_events(engine, users=USERS, per_user=1)
    admin = private_redis.client()

    def may_evict_then_vanish() -> None:
        admin.config_set("maxmemory-policy", "allkeys-lru")
        admin.config_set("maxmemory", 1 << 30)
        admin.unlink(*sorted(admin.keys(f"fl1:{online.namespace}:user_stats:*".encode()))[:3])

    with pytest.raises(LostWritesError, match="3 of the 2,000 values it wrote are no longer there"):
        run(engine, online, state, batch_rows=1_000, on_rows=_hook({2: may_evict_then_vanish}))


# -- the materializer dies or stalls ------------------------------------------------------------


def test_kill_9_of_the_materializer(
    private_redis: RedisServer, redis_server: RedisServer, engine, tmp_path: Path
) -> None:  # noqa: ANN001, E501
    namespace = f"t{uuid.uuid4().hex[:8]}"
    path = tmp_path / "state.sqlite"
    child = MaterializerProcess(
        how="kill",
        port=private_redis.port,
        namespace=namespace,
        state=path,
        end=END,
        users=USERS,
        pause_at=2,
        lease_seconds=0.5,
    )
    child.wait_paused()
    child.kill()
    admin = private_redis.client()
    ledgers = admin.keys(f"fl1:{namespace}:__markers__:run:*".encode())
    assert ledgers and all(0 < admin.pttl(k) <= 1_500 for k in ledgers)  # its ledger expires on its own
    time.sleep(1.6)
    assert not admin.keys(f"fl1:{namespace}:__markers__:run:*".encode())  # and is gone: nothing leaks

    load_events(engine, users=USERS, per_user=1)
    online = redis_store(private_redis, namespace)
    state = StateStore(path)
    run(engine, online, state)  # the dead run's lease is reclaimed at once (same host, dead pid)
    assert_same_as_uninterrupted(online, engine, redis_server, tmp_path)


def test_sigstop_of_a_full_refresh_past_its_lease(
    private_redis: RedisServer, redis_server: RedisServer, engine, tmp_path: Path
) -> None:  # noqa: ANN001, E501
    # The run A: `--full-refresh --end <4 days ago>` paused past its lease while run B
    # takes the view over and finishes; A resumes and must not write a single value more.
    namespace = f"t{uuid.uuid4().hex[:8]}"
    path = tmp_path / "state.sqlite"
    load_events(engine, users=USERS, per_user=3)
    online = redis_store(private_redis, namespace)
    run(engine, online, StateStore(path))  # the store holds the latest values (day 2 of each user)
    a = MaterializerProcess(
        how="stop",
        port=private_redis.port,
        namespace=namespace,
        state=path,
        end=BASE + timedelta(days=1, hours=12),
        users=USERS,
        per_user=3,
        pause_at=2,
        lease_seconds=1.0,
        full_refresh=True,
    )
    a.wait_paused()  # A has force-written 1,000 day-1 values over the newer ones, and is stopped
    time.sleep(1.5)  # past A's lease
    b = run(engine, online, StateStore(path))  # B takes the expired lease
    assert b.full_refresh  # A's full refresh had withdrawn the watermark marker: B reads everything
    code, output = a.resume()
    assert code == 3 and "MaterializationConflictError" in output and "lost the materialization lease" in output
    assert_same_as_uninterrupted(online, engine, redis_server, tmp_path)  # no value moved back in time


def test_a_run_that_lost_its_lease_cannot_write_even_forced(private_redis: RedisServer, engine, tmp_path: Path) -> None:  # noqa: ANN001, E501
    load_events(engine, users=USERS, per_user=1)
    online = redis_store(private_redis)
    path = tmp_path / "state.sqlite"
    state = StateStore(path)
    admin = private_redis.client()
    before: dict = {}

    def taken_over() -> None:  # another run takes the view (a newer token claims the fence)
        newer = StateStore(path)
        newer._db.execute("UPDATE leases SET owner = 'someone-else'")
        from feature_layer.online.store import RunFence

        lease = newer.acquire_lease("user_stats", seconds=60, owner="someone-else")
        online.claim(RunFence("user_stats", newer.id, lease.token, "other", lambda: lease.expires_us))
        before.update(snapshot(online))

    with pytest.raises(MaterializationConflictError, match="refused its write"):
        run(engine, online, state, full_refresh=True, batch_rows=500, on_rows=_hook({1: taken_over}))
    assert snapshot(online) == before  # not one value written after the takeover
    assert admin.dbsize() > 0


# -- the state store's disk fills up ------------------------------------------------------------


def test_a_full_disk_under_the_state_file(redis_server: RedisServer, engine, tmp_path: Path) -> None:  # noqa: ANN001
    disk = TmpfsDisk(tmp_path / "disk", size=1 << 20)
    try:
        path = disk.path / "state.sqlite"
        state = StateStore(path)
        online = redis_store(redis_server)
        load_events(engine, users=USERS, per_user=1)
        run(engine, online, state)
        first = state.watermark("user_stats")
        state.close()  # a new CLI process for the next run: the last connection's close removed the WAL
        state = StateStore(path)
        load_events(engine, users=USERS, per_user=1, day_offset=5)
        with pytest.raises(StateStoreError, match="disk is full") as info:
            run(engine, online, state, batch_rows=500, on_rows=_hook({1: disk.fill}))
        assert "To fix this, free space" in str(info.value) and "no transaction is active" not in str(info.value)
        disk.free()  # "free space on the disk …, then rerun"
        assert state.watermark("user_stats") == first
        StateStore(path).release_lease(StateStore(path).acquire_lease("user_stats"))  # no lease was left behind
        result = run(engine, online, state)
        assert result.full_refresh  # the store's marker moved, the state's did not: read in full
        assert_same_as_uninterrupted(online, engine, redis_server, tmp_path)
    finally:
        disk.unmount()


# -- a declaration change while lookups are served ------------------------------------------------


def test_a_layout_change_while_serving(
    private_redis: RedisServer,
    redis_server: RedisServer,
    engine,
    state,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # noqa: ANN001, E501
    monkeypatch.setattr(layouts, "REFRESH_SECONDS", 0.0)
    load_events(engine, users=USERS, per_user=1)
    online = redis_store(private_redis)
    old = make_view()
    materialize(make_parts(engine, online, state, [old]), end=END, statistics=False)
    expected_x = [float(u * 10) for u in range(USERS)]

    # A feature dropped from the declaration (`feature: false`): the others keep their values.
    narrower = dataclasses.replace(old, features=old.features[:1])
    assert values(online, narrower)["x"] == expected_x
    assert layout_state(online, narrower).stale and layout_state(online, narrower).missing_features == ()

    # A feature added: the old ones keep their values, the new one is None and reported.
    wider = make_view(extra=(Feature("y", "user_stats", "int64"),))
    store = make_parts(engine, online, state, [wider])
    response = get_online_features(store, features=["user_stats.x", "user_stats.y"], entity_rows={"user_id": [0, 7]})
    assert response.to_dict() == {"user_id": [0, 7], "x": [0.0, 70.0], "y": [None, None]}
    assert response.missing_features == {"user_stats": ("y",)}
    stale = layout_state(online, wider)
    assert stale.stale and stale.missing_features == ("y",)
    assert (stale.active, stale.wanted) == (
        view_layout(old, online.namespace).fingerprint,
        view_layout(wider, online.namespace).fingerprint,
    )

    # Re-materialized while lookups run: never a missing value, then the new layout is active.
    nulls: list[int] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            nulls.append(values(online, wider)["x"].count(None))

    server = threading.Thread(target=serve)
    server.start()
    try:
        materialize(store, end=END, statistics=False, progress=False)
    finally:
        stop.set()
        server.join()
    assert nulls and not any(nulls)
    fresh = layout_state(online, wider)
    assert not fresh.stale and fresh.missing_features == () and fresh.active == fresh.wanted
    assert values(online, wider)["y"] == list(range(USERS))
    monkeypatch.setattr(layouts, "RETIRE_GRACE_SECONDS", 0.0)
    materialize(store, end=END, statistics=False)  # a later run deletes the retired layout's keys
    assert_same_as_uninterrupted(online, engine, redis_server, tmp_path, wider)
