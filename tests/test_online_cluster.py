# ruff: noqa: F811  (pytest fixtures imported from tests.redis_helpers are used as arguments)
"""Redis Cluster online store on a real local cluster (3 primaries + 3 replicas, redis-server in
cluster mode, one per test session in xdist group ``redis-cluster``).

The store contract of tests/test_online_stores.py runs here unchanged (its tests are imported),
then: settings and URLs, keys spread over every primary, batch lookups equal to a single-node
store's, and primaries killed with SIGKILL mid-materialization and mid-lookup.
"""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid
from pathlib import Path

import pytest

from feature_layer.config import OnlineStoreSettings, online_settings_from
from feature_layer.errors import ConfigError, LostWritesError, OnlineStoreError
from feature_layer.online.backends import BACKENDS, connect_online_store
from feature_layer.online.cluster_store import RedisClusterOnlineStore, key_slots, slot_tags
from feature_layer.online.encoding import to_micros, view_layout
from feature_layer.online.lookup import get_online_features
from feature_layer.online.materialize import materialize_view
from feature_layer.state import StateStore
from tests.redis_helpers import RedisClusterProcesses, make_parts, redis_cluster, redis_server  # noqa: F401
from tests.test_materialize import END, engine, load_events, make_view, redis_store, state  # noqa: F401
from tests.test_online_stores import (  # noqa: F401  (the store contract, run on the cluster)
    T0,
    test_a_commit_refuses_a_ledger_missing_requests,
    test_a_stale_fencing_token_or_an_expired_lease_writes_nothing,
    test_any_sequence_of_batches_leaves_the_latest_value_per_key,
    test_delete_prefix_removes_only_that_views_keys,
    test_equal_event_times_are_decided_by_created_at,
    test_late_value_never_overwrites_newer,
    test_missing_keys_read_as_none_in_order,
    test_overlapping_writers_leave_the_newest_value_whatever_the_interleaving,
    test_ttl_is_enforced_at_read_from_the_stored_event_time,
)

pytestmark = [pytest.mark.redis, pytest.mark.xdist_group("redis-cluster")]


def cluster_store(cluster: RedisClusterProcesses, namespace: str | None = None, **kw) -> RedisClusterOnlineStore:  # noqa: ANN003
    settings = OnlineStoreSettings(
        type="redis-cluster",
        startup_nodes=tuple(f"127.0.0.1:{p}" for p in cluster.ports),
        retries=kw.pop("retries", 2),
        batch_size=kw.pop("batch_size", 5000),
        failover_timeout=kw.pop("failover_timeout", 20.0),
        socket_timeout=1.0,
        connect_timeout=0.5,
    )
    store = connect_online_store(settings, namespace or f"c{uuid.uuid4().hex[:8]}")
    assert isinstance(store, RedisClusterOnlineStore)
    return store


@pytest.fixture
def online(redis_cluster: RedisClusterProcesses):  # noqa: ANN201
    store = cluster_store(redis_cluster)
    store.clock = lambda: to_micros(T0)
    yield store
    store.close()


# -- settings -----------------------------------------------------------------------------------


def test_cluster_urls_and_settings_parse_and_bad_ones_say_how_to_fix_them(tmp_path: Path) -> None:
    source = tmp_path / "feature_layer.yml"
    got = online_settings_from("redis+cluster://u:p%40ss@10.0.0.1:7000,10.0.0.2:7001", tmp_path, source)
    assert (got.type, got.startup_nodes, got.username, got.password) == (
        "redis-cluster",
        ("10.0.0.1:7000", "10.0.0.2:7001"),
        "u",
        "p@ss",
    )
    got = online_settings_from(
        {"type": "redis-cluster", "startup_nodes": ["h1:1", "h2:2"], "failover_timeout": 5}, tmp_path, source
    )
    assert (got.startup_nodes, got.failover_timeout) == (("h1:1", "h2:2"), 5.0)
    for bad, message in [
        ({"type": "redis-cluster"}, "names no node"),
        ({"type": "redis-cluster", "startup_nodes": "h1:1"}, "must be a list"),
        ({"type": "redis-cluster", "startup_nodes": ["h1"]}, "not host:port"),
        ({"type": "redis-cluster", "url": "redis://h:1"}, "not a redis\\+cluster:// URL"),
        ({"type": "redis-cluster", "startup_nodes": ["h:1"], "db": 3}, "Unknown key"),
        ({"type": "redis-cluster", "startup_nodes": ["h:1"], "failover_timeout": -1}, "outside"),
    ]:
        with pytest.raises(ConfigError, match=message) as caught:
            online_settings_from(bad, tmp_path, source)
        assert caught.value.fix
    assert BACKENDS["redis-cluster"].nodes == "many" and BACKENDS["redis-cluster"].failover


def test_an_unreachable_cluster_fails_with_a_clear_message() -> None:
    settings = OnlineStoreSettings(type="redis-cluster", startup_nodes=("127.0.0.1:1",), connect_timeout=0.2)
    with pytest.raises(OnlineStoreError, match="Could not reach the Redis Cluster") as caught:
        connect_online_store(settings, "x")
    assert "startup_nodes" in caught.value.fix


def test_slot_tags_pin_a_key_to_each_slot() -> None:
    tags = slot_tags()
    assert len(tags) == 16384
    assert key_slots([b"fl1:{" + tags[s] + b"}:x" for s in (0, 1, 5000, 16383)]) == [0, 1, 5000, 16383]


# -- lookups ------------------------------------------------------------------------------------


def test_materialized_values_spread_over_every_primary_and_batch_lookups_equal_a_single_node_store(
    redis_cluster: RedisClusterProcesses, redis_server, engine, tmp_path: Path  # noqa: ANN001
) -> None:
    users = 3_000
    load_events(engine, users=users, per_user=2)
    view = make_view()
    single = redis_store(redis_server)
    clustered = cluster_store(redis_cluster, batch_size=300)
    clustered.clock = single.clock
    for online in (single, clustered):
        materialize_view(
            view, engine=engine, online=online, state=StateStore(tmp_path / f"{online.namespace}.sqlite"),
            end=END, statistics=False, batch_rows=700,
        )
    # Spread: every primary holds a share of the keys, no hash tag forces them together.
    layout = view_layout(view, clustered.namespace)
    counts = [len(n.client().keys(layout.key_prefix + b"*")) for n in redis_cluster.primary_nodes()]
    assert sum(counts) == users and min(counts) > users / 6, counts
    feats = ["user_stats.x", "user_stats.label"]
    ids = [*range(0, users, 3), users + 5, -1, *range(1, 400, 7)]  # absent entities and repeats too
    for rows in ({"user_id": ids}, [{"user_id": i} for i in ids[:1]], [{"user_id": i} for i in ids[:150]]):
        want = get_online_features(make_parts(None, single, None, [view]), features=feats, entity_rows=rows)
        got = get_online_features(make_parts(None, clustered, None, [view]), features=feats, entity_rows=rows)
        assert got.to_dict() == want.to_dict()
        assert sum(v is not None for v in got.to_dict()["x"]) > 0
    clustered.close()


def test_a_primary_killed_mid_lookup_gives_errors_or_right_values_never_wrong_ones(
    redis_cluster: RedisClusterProcesses, engine, state  # noqa: ANN001
) -> None:
    users = 1_000
    load_events(engine, users=users, per_user=1)
    view = make_view()
    online = cluster_store(redis_cluster, retries=2)
    online.clock = lambda: to_micros(END)
    materialize_view(view, engine=engine, online=online, state=state, end=END, statistics=False)
    for node in redis_cluster.primary_nodes():  # the replicas hold every value before the kill
        node.client().execute_command("WAIT", 1, 2000)
    parts = make_parts(None, online, None, [view])
    rows = {"user_id": list(range(users))}
    want = get_online_features(parts, features=["user_stats.x"], entity_rows=rows).to_dict()
    assert None not in want["x"]
    outcomes: list[str] = []
    stop = threading.Event()

    def lookups() -> None:
        while not stop.is_set():
            try:
                got = get_online_features(parts, features=["user_stats.x"], entity_rows=rows).to_dict()
            except OnlineStoreError as exc:
                assert "Redis" in exc.message and exc.fix
                outcomes.append("error")
                continue
            outcomes.append("ok" if got == want else f"WRONG {got['x'][:5]}")

    thread = threading.Thread(target=lookups)
    thread.start()
    def wait_for(count: int) -> None:
        deadline = time.monotonic() + 20
        while len(outcomes) < count and time.monotonic() < deadline:
            time.sleep(0.02)

    try:
        wait_for(3)
        victim = redis_cluster.primary_of(view_layout(view, online.namespace).key_prefix + b"7")
        victim.stop()  # SIGKILL
        killed_at = len(outcomes)
        redis_cluster.wait_failover(victim)
        after = len(outcomes)
        wait_for(after + 5)  # lookups after the failover
    finally:
        stop.set()
        thread.join(30)
    try:
        assert not [o for o in outcomes if o.startswith("WRONG")]
        assert "ok" in outcomes[:killed_at] and "ok" in outcomes[after:]  # served before and after the failover
    finally:
        online.close()
        redis_cluster.heal()


# -- materialization ----------------------------------------------------------------------------


def _snapshot(online: RedisClusterOnlineStore, view) -> dict[bytes, bytes]:  # noqa: ANN001
    prefix = view_layout(view, online.namespace).key_prefix
    keys = sorted(k for batch in online.scan_prefix(prefix) for k in batch)
    return {k[len(prefix) :]: v for k, v in zip(keys, online.read(keys), strict=True)}


@pytest.mark.parametrize("fault", ["kill", "kill_with_lagging_replica"])
def test_a_primary_killed_mid_materialization_never_reports_success_with_lost_data(
    redis_cluster: RedisClusterProcesses, engine, tmp_path: Path, fault: str  # noqa: ANN001
) -> None:
    """SIGKILL of a primary between acknowledged writes: the run succeeds after the failover or
    fails loudly, and a rerun converges to a clean run's state. With its replica stopped
    (SIGSTOP) while the primary acknowledged writes, the promoted replica lacks them: the run's
    per-slot ledgers show it, and the run must fail rather than advance its watermark."""
    users = 6_000
    load_events(engine, users=users, per_user=1)
    view = make_view()
    reference = cluster_store(redis_cluster)
    reference.clock = lambda: to_micros(END)
    materialize_view(view, engine=engine, online=reference, state=StateStore(tmp_path / "ref.sqlite"), end=END,
                     statistics=False)
    want = _snapshot(reference, view)
    assert len(want) == users

    online = cluster_store(redis_cluster, batch_size=250, failover_timeout=15.0)
    online.clock = reference.clock
    state = StateStore(tmp_path / "state.sqlite")
    victim = redis_cluster.primary_of(view_layout(view, online.namespace).key_prefix + b"1")
    replica = redis_cluster.replica_of(victim)
    seen = [0]

    def kill_after_two_batches(rows: int) -> None:
        seen[0] += 1
        if fault == "kill_with_lagging_replica" and seen[0] == 1:
            os.kill(replica.process.pid, signal.SIGSTOP)  # replication stops; the primary still acknowledges
        if seen[0] == 3:
            victim.stop()  # SIGKILL of a primary holding a third of the slots
            if fault == "kill_with_lagging_replica":
                os.kill(replica.process.pid, signal.SIGCONT)  # it takes over without the last writes

    try:
        try:
            materialize_view(view, engine=engine, online=online, state=state, end=END, statistics=False,
                             batch_rows=1_000, on_rows=kill_after_two_batches)
            outcome = "succeeded after the failover"
        except (OnlineStoreError, LostWritesError) as exc:
            outcome = "failed loudly"
            assert "watermark was not advanced" in exc.message and exc.fix
            redis_cluster.wait_failover(victim)
            materialize_view(view, engine=engine, online=online, state=state, end=END, statistics=False)
        # the kill came at the third of users / 1,000 = 6 batches: mid-run, with batches still to write
        assert seen[0] >= 3 and users // 1_000 > 3, outcome
        assert _snapshot(online, view) == want, outcome  # the same state as a clean run: nothing lost
        assert state.view_state(view.name) is not None
    finally:
        if replica.running:
            os.kill(replica.process.pid, signal.SIGCONT)
        online.close()
        reference.close()
        redis_cluster.heal()


def test_a_slot_ledger_missing_acknowledged_writes_fails_the_commit(redis_cluster: RedisClusterProcesses) -> None:
    """What a replica promoted without the last writes looks like to the run: one slot's ledger
    lacks them (here: deleted). The run detects it before and at commit, and sets no marker."""
    from tests.test_online_encoding import make_view as one_feature_view
    from tests.test_online_stores import _fence, batch

    online = cluster_store(redis_cluster)
    online.clock = lambda: to_micros(T0)
    layout = view_layout(one_feature_view([("a", "float64")]), online.namespace)
    fence = _fence(1)
    online.claim(fence)
    with online.writer(ttl_us=None, fence=fence) as writer:
        writer.write(batch(layout, list(range(50)), [T0] * 50, [1.0] * 50))
    ledgers = online.slot_ledgers(fence)
    assert len(ledgers) > 10 and online.missing_requests(fence) == 0
    assert online.touch(fence)  # the heartbeat renews every slot's ledger
    slot = next(iter(ledgers))
    online.client.delete(online._ledger_key(fence, slot))
    assert not online.touch(fence)  # and notices one is gone
    assert online.missing_requests(fence) == 1 + len(ledgers[slot].acknowledged)
    with pytest.raises(LostWritesError, match="lost values"):
        online.commit(fence, {"m": b"1"})
    assert online.get_marker("m") is None
    online.close()


def test_entity_keys_with_braces_are_read_from_the_slot_their_hash_tag_names(online) -> None:  # noqa: ANN001
    """An entity's text may contain ``{…}``: Redis then hashes only the tag; reads must agree."""
    import pyarrow as pa

    from feature_layer.online.encoding import decode_values, encode_batch
    from tests.test_online_encoding import make_view as one_feature_view

    view = one_feature_view([("a", "float64")], key_types=("string",))
    layout = view_layout(view, online.namespace)
    ids = ["a{b}c", "{}", "x{y}", "plain", "{z", "}{q}", *[f"{{t{i}}}" for i in range(40)]]
    table = pa.table(
        {
            "user_id": ids,
            "__ev": pa.array([T0] * len(ids), pa.timestamp("us", tz="UTC")),
            "a": [float(i) for i in range(len(ids))],
        }
    )
    with online.writer(ttl_us=None) as writer:
        writer.write(encode_batch(layout, table, event_column="__ev", created_column=None))
    keys = [layout.key_prefix + i.encode() for i in ids]
    assert len(set(key_slots(keys))) > 10
    decoded = decode_values(layout, online.read(keys), online.clock())
    assert list(decoded.columns[0]) == [float(i) for i in range(len(ids))]


def test_a_batch_lookup_is_one_pipelined_write_per_node(
    redis_cluster: RedisClusterProcesses, online, monkeypatch: pytest.MonkeyPatch  # noqa: ANN001
) -> None:
    """1,000 keys spread over every primary: each primary gets exactly one write (its pipeline of
    GETs), counted on redis-py's real connections; the values come back in order."""
    import redis.connection

    from feature_layer.online.encoding import decode_values
    from tests.test_online_encoding import make_view as one_feature_view
    from tests.test_online_stores import batch

    layout = view_layout(one_feature_view([("a", "float64")]), online.namespace)
    ids = list(range(1_000))
    with online.writer(ttl_us=None) as writer:
        writer.write(batch(layout, ids, [T0] * len(ids), [float(i) for i in ids]))
    keys = [layout.key_prefix + str(i).encode() for i in ids]
    online.read(keys[:1])  # the slot table and connections exist before counting
    sends: list[tuple[str, int]] = []
    real = redis.connection.AbstractConnection.send_packed_command

    def counted(conn, command, check_health=True):  # noqa: ANN001, ANN202
        sends.append((conn.host, conn.port))
        return real(conn, command, check_health)

    monkeypatch.setattr(redis.connection.AbstractConnection, "send_packed_command", counted)
    raw = online.read(keys)
    monkeypatch.undo()
    primaries = {("127.0.0.1", n.port) for n in redis_cluster.primary_nodes()}
    assert sorted(sends) == sorted(primaries)  # one write per primary, none per key
    assert list(decode_values(layout, raw, online.clock()).columns[0]) == [float(i) for i in ids]
