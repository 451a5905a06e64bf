# ruff: noqa: F811  (pytest fixtures imported from tests.redis_helpers are used as arguments)
"""One contract, two stores: the same tests run on Redis (a private server) and on SQLite."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from feature_layer.config import OnlineStoreSettings
from feature_layer.errors import OnlineStoreError
from feature_layer.online.backends import connect_online_store
from feature_layer.online.encoding import decode_values, encode_batch, to_micros, view_layout
from feature_layer.online.redis_store import RedisOnlineStore
from feature_layer.online.sqlite_store import SqliteOnlineStore
from tests.redis_helpers import RedisServer, private_redis, redis_server  # noqa: F401
from tests.test_online_encoding import make_view

T0 = datetime(2025, 6, 1, tzinfo=UTC)


@pytest.fixture(params=["redis", "sqlite"])
def online(request: pytest.FixtureRequest, tmp_path: Path):  # noqa: ANN201
    if request.param == "redis":
        server = request.getfixturevalue("redis_server")
        store = RedisOnlineStore(server.client(), f"t{uuid.uuid4().hex[:8]}", retries=1)
    else:
        store = SqliteOnlineStore(tmp_path / "online.sqlite", "p")
    store.clock = lambda: to_micros(T0)
    yield store
    store.close()


def batch(layout, ids, events, values, created=None):  # noqa: ANN001, ANN201
    table = pa.table(
        {
            "user_id": ids,
            "__ev": pa.array(events, pa.timestamp("us", tz="UTC")),
            "__cr": pa.array(created or events, pa.timestamp("us", tz="UTC")),
            "a": pa.array(values, pa.float64()),
        }
    )
    return encode_batch(layout, table, event_column="__ev", created_column="__cr", now_us=to_micros(T0))


def write(online, layout, *batches):  # noqa: ANN001, ANN201
    with online.writer(ttl_us=layout.ttl_us) as writer:
        for b in batches:
            writer.write(b)
    return writer.counts


def read_a(online, layout, ids):  # noqa: ANN001, ANN201
    raw = online.read([layout.key_prefix + str(i).encode() for i in ids])
    dec = decode_values(layout, raw, online.clock())
    return [v if ok else None for v, ok in zip(list(dec.columns[0]), dec.present, strict=False)]


def test_late_value_never_overwrites_newer(online) -> None:  # noqa: ANN001
    layout = view_layout(make_view([("a", "float64")]), online.namespace)
    write(online, layout, batch(layout, [1, 2], [T0, T0], [10.0, 20.0]))
    counts = write(
        online, layout, batch(layout, [1, 2], [T0 - timedelta(hours=1), T0 + timedelta(hours=1)], [-1.0, 21.0])
    )
    assert read_a(online, layout, [1, 2]) == [10.0, 21.0]
    assert (counts.written, counts.kept_newer) == (1, 1)


def test_equal_event_times_are_decided_by_created_at(online) -> None:  # noqa: ANN001
    layout = view_layout(make_view([("a", "float64")]), online.namespace)
    write(online, layout, batch(layout, [1], [T0], [1.0], created=[T0 + timedelta(seconds=30)]))
    write(online, layout, batch(layout, [1], [T0], [2.0], created=[T0 + timedelta(seconds=10)]))
    assert read_a(online, layout, [1]) == [1.0]
    write(online, layout, batch(layout, [1], [T0], [3.0], created=[T0 + timedelta(seconds=30)]))  # a rerun: same pair
    assert read_a(online, layout, [1]) == [3.0]


def test_ttl_is_enforced_at_read_from_the_stored_event_time(online) -> None:  # noqa: ANN001
    layout = view_layout(make_view([("a", "float64")], ttl=timedelta(hours=1)), online.namespace)
    write(online, layout, batch(layout, [1, 2], [T0 - timedelta(minutes=50), T0 - timedelta(minutes=5)], [1.0, 2.0]))
    assert read_a(online, layout, [1, 2]) == [1.0, 2.0]
    online.clock = lambda: to_micros(T0 + timedelta(minutes=20))
    assert read_a(online, layout, [1, 2, 3]) == [None, 2.0, None]
    # The boundary is inclusive, as in training sets (event_time >= ts - ttl).
    online.clock = lambda: to_micros(T0 + timedelta(minutes=55))
    assert read_a(online, layout, [2]) == [2.0]
    online.clock = lambda: to_micros(T0 + timedelta(minutes=55, microseconds=1))
    assert read_a(online, layout, [2]) == [None]


def test_missing_keys_read_as_none_in_order(online) -> None:  # noqa: ANN001
    layout = view_layout(make_view([("a", "float64")]), online.namespace)
    write(online, layout, batch(layout, list(range(0, 3000, 2)), [T0] * 1500, [float(i) for i in range(0, 3000, 2)]))
    got = read_a(online, layout, list(range(3000)))
    assert got == [float(i) if i % 2 == 0 else None for i in range(3000)]


def test_delete_prefix_removes_only_that_views_keys(online) -> None:  # noqa: ANN001
    a = view_layout(make_view([("a", "float64")]), online.namespace)
    b = view_layout(make_view([("a", "float64")], ttl=timedelta(days=9999)), online.namespace)
    b = type(b)(
        view="w",
        namespace=b.namespace,
        join_keys=b.join_keys,
        key_types=b.key_types,
        slots=b.slots,
        fingerprint=b.fingerprint,
        ttl_us=None,
    )
    write(online, a, batch(a, [1, 2], [T0, T0], [1.0, 2.0]))
    write(online, b, batch(b, [1], [T0], [5.0]))
    assert online.delete_prefix(a.key_prefix) == 2
    assert read_a(online, a, [1, 2]) == [None, None]
    assert read_a(online, b, [1]) == [5.0]


def test_redis_keys_expire_with_their_values(redis_server: RedisServer) -> None:  # noqa: F811
    online = RedisOnlineStore(redis_server.client(), "exp" + uuid.uuid4().hex[:6])
    now = T0  # the writer's clock: the key's expiry is relative to it, whatever today is
    online.clock = lambda: to_micros(now)
    layout = view_layout(make_view([("a", "float64")], ttl=timedelta(hours=1)), online.namespace)
    table = pa.table(
        {
            "user_id": [1],
            "__ev": pa.array([now - timedelta(minutes=30)], pa.timestamp("us", tz="UTC")),
            "__cr": pa.array([now], pa.timestamp("us", tz="UTC")),
            "a": [1.0],
        }
    )
    write(online, layout, encode_batch(layout, table, event_column="__ev", created_column="__cr"))
    pttl = online.client.pttl(layout.key_prefix + b"1")
    assert 29 * 60_000 < pttl <= 30 * 60_000


def test_one_lookup_is_one_command_whatever_the_batch_size(private_redis: RedisServer) -> None:  # noqa: F811
    online = RedisOnlineStore(private_redis.client(), "p")
    layout = view_layout(make_view([("a", "float64")]), "p")
    write(online, layout, batch(layout, list(range(5000)), [T0] * 5000, [1.0] * 5000))
    private_redis.client().config_resetstat()
    online.read([layout.key_prefix + str(i).encode() for i in range(5000)])
    stats = private_redis.client().info("commandstats")
    assert stats["cmdstat_mget"]["calls"] == 1
    setup = ("cmdstat_info", "cmdstat_config|resetstat", "cmdstat_hello", "cmdstat_client|setinfo", "cmdstat_select")
    assert [k for k in stats if k not in setup] == ["cmdstat_mget"]


def test_settings_connect_with_acl_user_and_password(private_redis: RedisServer) -> None:  # noqa: F811
    admin = private_redis.client()
    admin.acl_setuser("feature_writer", enabled=True, passwords=["+s3cret"], keys=["*"], commands=["+@all"])
    settings = OnlineStoreSettings(type="redis", url=private_redis.url, username="feature_writer", password="s3cret")
    store = connect_online_store(settings, "acl")
    store.ping()
    store.close()
    bad = connect_online_store(
        OnlineStoreSettings(
            type="redis", url=private_redis.url, username="feature_writer", password="wrong", retries=0
        ),
        "acl",
    )
    with pytest.raises(OnlineStoreError, match="refused the credentials"):
        bad.ping()


def test_unreachable_redis_fails_with_a_clear_message() -> None:
    settings = OnlineStoreSettings(type="redis", url="redis://127.0.0.1:1/0", retries=1, socket_timeout=0.2)
    store = connect_online_store(settings, "p")
    with pytest.raises(OnlineStoreError, match="unreachable") as info:
        store.read([b"x", b"y"])
    assert "To fix this" in str(info.value)


def test_rediss_url_configures_tls() -> None:
    store = connect_online_store(OnlineStoreSettings(type="redis", url="rediss://cache.example:6380/2"), "p")
    pool = store.client.connection_pool
    assert issubclass(pool.connection_class, __import__("redis").SSLConnection)
    assert store.describe() == "rediss://cache.example:6380/2"


@pytest.mark.parametrize("protocol", [2, 3])
def test_raw_mget_reader_matches_redis_py_for_nulls_empty_binary_and_large_values(
    redis_server: RedisServer, protocol: int
) -> None:
    import redis

    client = redis.Redis(port=redis_server.port, protocol=protocol)
    store = RedisOnlineStore(client, "raw")
    client.set(b"raw:empty", b"")
    client.set(b"raw:big", bytes(range(256)) * 2_000)  # spans many socket reads
    client.set(b"raw:tricky", b"\r\n$5\r\n_\r\n*2\r\n")
    keys = [b"raw:empty", b"raw:missing", b"raw:big", b"raw:tricky"] * 5
    assert store.read(keys) == client.mget(keys)
    assert store.read([b"raw:tricky"]) == [b"\r\n$5\r\n_\r\n*2\r\n"]
    client.set(b"raw:after", b"ok")  # the connection is still in step
    assert client.get(b"raw:after") == b"ok" and store.read([b"raw:after", b"raw:empty"]) == [b"ok", b""]


def test_a_missing_redis_server_binary_fails_with_install_instructions(monkeypatch: pytest.MonkeyPatch) -> None:
    import tests.redis_helpers as helpers

    class Nowhere:
        def __init__(self, *args: object) -> None:
            pass

        def exists(self) -> bool:
            return False

    monkeypatch.setattr(helpers.shutil, "which", lambda name: None)
    monkeypatch.setattr(helpers, "Path", Nowhere)
    with pytest.raises(pytest.fail.Exception, match="apt-get install redis-server"):
        helpers.redis_binary()


def test_overlapping_writers_leave_the_newest_value_whatever_the_interleaving(online) -> None:  # noqa: ANN001
    import threading

    layout = view_layout(make_view([("a", "float64")]), online.namespace)
    ids = list(range(2_000))

    def run(hours: int) -> None:
        stamp = T0 - timedelta(hours=hours)
        with online.writer(ttl_us=None) as writer:
            for start in range(0, len(ids), 100):
                chunk = ids[start : start + 100]
                writer.write(batch(layout, chunk, [stamp] * len(chunk), [float(-hours)] * len(chunk)))

    threads = [threading.Thread(target=run, args=(h,)) for h in (3, 0, 2, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert read_a(online, layout, ids) == [0.0] * len(ids)


WRITE = st.tuples(st.integers(0, 5), st.integers(0, 4), st.integers(0, 3), st.integers(-50, 50))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batches=st.lists(st.lists(WRITE, min_size=1, max_size=8), min_size=1, max_size=6))
def test_any_sequence_of_batches_leaves_the_latest_value_per_key(online, batches) -> None:  # noqa: ANN001
    """Oracle: per key, the value with the largest (event, created); exact ties keep the last written."""
    layout = view_layout(make_view([("a", "float64")]), online.namespace + uuid.uuid4().hex[:6])
    expected: dict[int, tuple] = {}
    for writes in batches:
        # One batch holds one value per key (as the latest-per-entity query yields).
        latest = {k: (e, c, v) for k, e, c, v in writes}
        ids = list(latest)
        events = [T0 + timedelta(hours=latest[k][0]) for k in ids]
        created = [T0 + timedelta(hours=latest[k][0] + latest[k][1]) for k in ids]
        write(online, layout, batch(layout, ids, events, [float(latest[k][2]) for k in ids], created=created))
        for k in ids:
            if k not in expected or latest[k][:2] >= expected[k][:2]:
                expected[k] = latest[k]
    assert read_a(online, layout, list(range(6))) == [
        float(expected[k][2]) if k in expected else None for k in range(6)
    ]


def _fence(token: int, expires_in_s: float = 60.0, view: str = "v"):  # noqa: ANN202
    import time

    from feature_layer.online.store import RunFence

    expires = time.time_ns() // 1000 + int(expires_in_s * 1e6)
    return RunFence(view, "scope", token, f"run{token}", lambda: expires)


def test_a_stale_fencing_token_or_an_expired_lease_writes_nothing(online) -> None:  # noqa: ANN001
    from feature_layer.errors import MaterializationConflictError

    layout = view_layout(make_view([("a", "float64")]), online.namespace)
    old, new = _fence(1), _fence(2)
    online.claim(old)
    online.claim(new)  # a newer run took the view over
    for fence in (old, _fence(3, expires_in_s=-1.0)):  # a stale token; a lease that already expired
        for force in (False, True):
            with pytest.raises(MaterializationConflictError, match="refused its write"):
                with online.writer(ttl_us=layout.ttl_us, force=force, fence=fence) as writer:
                    writer.write(batch(layout, [1], [T0], [1.0]))
        with pytest.raises(MaterializationConflictError):
            online.delete_keys([layout.key_prefix + b"1"], fence)
    assert read_a(online, layout, [1]) == [None]
    with online.writer(ttl_us=layout.ttl_us, fence=new) as writer:
        writer.write(batch(layout, [1], [T0], [2.0]))
    assert read_a(online, layout, [1]) == [2.0]
    online.commit(new, {"m": b"1"})
    assert online.get_marker("m") == b"1"


def test_a_commit_refuses_a_ledger_missing_requests(online) -> None:  # noqa: ANN001
    from feature_layer.errors import LostWritesError

    layout = view_layout(make_view([("a", "float64")]), online.namespace)
    fence = _fence(1)
    online.claim(fence)
    with online.writer(ttl_us=layout.ttl_us, fence=fence) as writer:
        writer.write(batch(layout, [1, 2], [T0, T0], [1.0, 2.0]))
    assert fence.requests >= 1 and online.missing_requests(fence) == 0
    fence.requests += 1  # a request the store acknowledged but no longer holds
    fence.acknowledged.add(fence.requests)
    assert online.missing_requests(fence) == 1
    with pytest.raises(LostWritesError, match="lost values"):
        online.commit(fence, {"m": b"1"})
    assert online.get_marker("m") is None  # nothing set
