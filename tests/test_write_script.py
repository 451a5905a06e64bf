# ruff: noqa: F811  (pytest fixtures imported from tests.redis_helpers are used as arguments)
"""The write script (``write_latest.lua``) against a Python reference of the never-older rule.

Every path of the script is driven through the real ``RedisWriter`` on a real redis-server: mode
w (keys may repeat: sequential semantics), mode u (distinct keys: MGET / MSET, and MSETNX after a
chunk of new keys), with and without a TTL, requests larger than a chunk (3,000 keys) and than
Lua's unpack() limit (8,000), and values the writer already knows are expired ("-").
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from feature_layer.online.encoding import EncodedBatch, encode_batch, to_micros, view_layout
from feature_layer.online.redis_store import RedisOnlineStore
from tests.redis_helpers import RedisServer, redis_server  # noqa: F401
from tests.test_online_encoding import make_view

T0 = datetime(2025, 6, 1, tzinfo=UTC)
HOUR = 3_600_000_000


def _store(server: RedisServer, batch_size: int = 5000) -> RedisOnlineStore:
    store = RedisOnlineStore(server.client(), f"ws{uuid.uuid4().hex[:8]}", batch_size=batch_size, retries=1)
    store.clock = lambda: to_micros(T0)
    return store


def _encoded(layout, rows: list[tuple[int, int, int, float]]) -> EncodedBatch:  # noqa: ANN001
    """(key, event hours, created hours, value) rows, encoded without dropping expired ones."""
    table = pa.table(
        {
            "user_id": pa.array([r[0] for r in rows], pa.int64()),
            "__ev": pa.array([T0 + timedelta(hours=r[1]) for r in rows], pa.timestamp("us", tz="UTC")),
            "__cr": pa.array([T0 + timedelta(hours=r[2]) for r in rows], pa.timestamp("us", tz="UTC")),
            "a": pa.array([r[3] for r in rows], pa.float64()),
        }
    )
    # now_us=None: nothing dropped here, so the script sees the expired values as "-"
    return encode_batch(layout, table, event_column="__ev", created_column="__cr", now_us=None)


def _reference(stored: dict[bytes, tuple], batch: EncodedBatch, ttl_us: int | None, now_us: int):  # noqa: ANN202
    """The never-older rule, key by key in order: (stored after, written, kept, expired)."""
    state = dict(stored)
    written = kept = expired = 0
    for key, value, ev, cr in zip(
        batch.keys.to_pylist(), batch.values.to_pylist(), batch.event_us.tolist(), batch.created_us.tolist(), strict=True
    ):
        if ttl_us and ev + ttl_us < now_us:
            expired += 1
            continue
        old = state.get(key)
        if old is not None and old[0] != value and (old[1], old[2]) > (ev, cr):
            kept += 1
        else:
            state[key] = (value, ev, cr)
            written += 1
    return state, written, kept, expired


def _check(store: RedisOnlineStore, layout, prior: list[tuple], request: list[tuple], *, distinct: bool) -> None:  # noqa: ANN001
    """Write ``prior`` (full refresh: exactly these values), then ``request``; compare with the reference."""
    ttl = layout.ttl_us
    stored: dict[bytes, tuple] = {}
    if prior:
        first = _encoded(layout, prior)
        with store.writer(ttl_us=ttl, force=True) as writer:
            writer.write(first)
        stored, *_ = _reference({}, first, ttl, store.clock())
    batch = _encoded(layout, request)
    expected, written, kept, expired = _reference(stored, batch, ttl, store.clock())
    with store.writer(ttl_us=ttl, distinct_keys=distinct) as writer:
        writer.write(batch)
    assert (writer.counts.written, writer.counts.kept_newer, writer.counts.expired) == (written, kept, expired)
    keys = sorted({*expected, *batch.keys.to_pylist()})
    got = store.read(keys)
    assert got == [expected[k][0] if k in expected else None for k in keys]
    if ttl:  # every stored value expires with its own event time: event + ttl (ms, rounded either way)
        pttls = [store.client.pttl(k) for k in expected]
        for pttl, (_, ev, _cr) in zip(pttls, expected.values(), strict=True):
            left_ms = (ev + ttl - store.clock()) / 1000
            assert left_ms - 5_000 < pttl <= left_ms + 1, (pttl, left_ms)


ROW = st.tuples(st.integers(0, 7), st.integers(-3, 3), st.integers(0, 2), st.integers(-5, 5))


@pytest.mark.parametrize("ttl_minutes", [None, 150])
@pytest.mark.parametrize("distinct", [False, True])
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(prior=st.lists(ROW, max_size=8), request_rows=st.lists(ROW, min_size=1, max_size=12))
def test_a_request_leaves_what_the_never_older_rule_says(
    redis_server: RedisServer, ttl_minutes: int | None, distinct: bool, prior: list, request_rows: list
) -> None:
    """Random stored and new (event, created) pairs: ties on event time and on created-at, identical
    bytes (a rerun), values the writer already knows are expired (3 h back with a 2.5 h TTL)."""
    store = _store(redis_server)
    ttl = timedelta(minutes=ttl_minutes) if ttl_minutes else None
    layout = view_layout(make_view([("a", "float64")], ttl=ttl), store.namespace)
    prior = list({r[0]: r for r in prior}.values())  # a full refresh of one value per key
    if distinct:  # mode u: the caller guarantees one row per key
        request_rows = list({r[0]: r for r in request_rows}.values())
    rows = [(k, e, e + c, float(v)) for k, e, c, v in request_rows]
    _check(store, layout, [(k, e, e + c, float(v)) for k, e, c, v in prior], rows, distinct=distinct)


CHUNKS = (0, 100, 3100, 6100, 9000)  # the script's chunks of a 9,000-key request (PROBE 100, CHUNK 3000)


def _large(seed: int, *, repeats: bool) -> tuple[list[tuple], list[tuple]]:
    """9,000 keys in one request; per chunk of the script the keys are all new, all stored, new but
    one, or 1% stored (seed 0: all new; seed 1: new, new, new but one, new; other seeds at random),
    so chunks of new keys follow chunks with stored ones and back; with ``repeats`` 1% of the keys
    from row 3,100 on come a second time a few rows later, older, as old or newer (mode w: the
    chunks before have none, so they do not stop the script from taking a chunk of new keys as new)."""
    rng = np.random.default_rng(seed)
    fixed = {0: ["new"] * 4, 1: ["new", "new", "one", "new"]}
    kinds = fixed.get(seed) or rng.choice(["new", "all", "one", "some"], size=4).tolist()
    stored = np.zeros(CHUNKS[-1], dtype=bool)
    for lo, hi, kind in zip(CHUNKS, CHUNKS[1:], kinds, strict=False):
        if kind == "all":
            stored[lo:hi] = True
        elif kind == "one":
            stored[int(rng.integers(lo, hi))] = True
        elif kind == "some":
            stored[lo:hi] = rng.random(hi - lo) < 0.01
    events = rng.integers(-2, 2, size=len(stored))
    prior = [(k, int(events[k] + rng.integers(-1, 2)), 0, float(k)) for k in np.flatnonzero(stored).tolist()]
    request = [(k, int(events[k]), int(rng.integers(-1, 2)), float(-k)) for k in range(len(stored))]
    if repeats:
        for at in sorted(rng.choice(range(CHUNKS[2], len(stored) - 10), size=55, replace=False).tolist(), reverse=True):
            k, ev, cr, _ = request[at]
            request.insert(at + int(rng.integers(1, 10)), (k, ev + int(rng.integers(-1, 2)), cr, float(k) + 0.5))
    return prior, request


@pytest.mark.parametrize("distinct", [False, True])
@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_requests_larger_than_a_chunk_match_the_reference(redis_server: RedisServer, seed: int, distinct: bool) -> None:
    store = _store(redis_server, batch_size=10_000)  # one request: 9,000-9,090 rows, over unpack()'s 8,000
    layout = view_layout(make_view([("a", "float64")]), store.namespace)
    prior, request = _large(seed, repeats=not distinct)
    _check(store, layout, prior, request, distinct=distinct)


def test_a_first_fill_then_one_stored_key_in_a_later_chunk(redis_server: RedisServer) -> None:
    """Mode u: the probe chunk (keys 0-99) is new, so the next (100-3099) goes as one MSETNX, which
    the stored, newer key 2000 makes refuse: that chunk is compared key by key and the newer value
    stays; 3100-6099 are new again, so 6100-7999 go as MSETNX, refused for the older key 7999."""
    store = _store(redis_server, batch_size=8000)
    layout = view_layout(make_view([("a", "float64")]), store.namespace)
    prior = [(2000, 5, 5, 99.0), (7999, -5, -5, 98.0)]  # one newer (kept), one older (overwritten)
    request = [(k, 0, 0, float(k)) for k in range(8000)]
    before = store.client.info("commandstats").get("cmdstat_msetnx", {}).get("calls", 0)
    _check(store, layout, prior, request, distinct=True)
    assert store.client.info("commandstats")["cmdstat_msetnx"]["calls"] - before == 2


def test_mode_w_compares_a_repeated_key_with_the_value_it_wrote_first(redis_server: RedisServer) -> None:
    store = _store(redis_server)
    layout = view_layout(make_view([("a", "float64")]), store.namespace)
    # key 1: newer then older (the older is kept out); key 2: older then newer; key 3 three times
    request = [(1, 2, 2, 1.0), (2, 0, 0, 2.0), (1, 1, 1, -1.0), (2, 1, 1, 3.0), (3, 0, 1, 4.0), (3, 0, 0, 5.0),
               (3, 0, 1, 6.0)]
    _check(store, layout, [(1, 0, 0, 0.0), (3, 0, 0, 0.0)], request, distinct=False)


def test_a_key_holding_another_type_is_replaced_without_a_ttl(redis_server: RedisServer) -> None:
    store = _store(redis_server)
    layout = view_layout(make_view([("a", "float64")]), store.namespace)
    store.client.rpush(layout.key_prefix + b"1", b"x")
    with store.writer(ttl_us=None, distinct_keys=True) as writer:
        writer.write(_encoded(layout, [(1, 0, 0, 1.0), (2, 0, 0, 2.0)]))
    assert writer.counts.written == 2
    assert store.client.type(layout.key_prefix + b"1") == b"string"


@pytest.mark.parametrize("force", [False, True])
def test_more_keys_in_one_request_than_unpack_returns(redis_server: RedisServer, force: bool) -> None:
    """20,000 keys in one call of each mode (w, u, f, and d through the script): no unpack() error."""
    store = _store(redis_server, batch_size=20_000)
    layout = view_layout(make_view([("a", "float64")]), store.namespace)
    rows = [(k, 0, 0, float(k)) for k in range(20_000)]
    for distinct in (False, True):
        with store.writer(ttl_us=None, force=force, distinct_keys=distinct) as writer:
            writer.write(_encoded(layout, rows))
        assert writer.counts.written == 20_000
    keys = [layout.key_prefix + b"%d" % k for k in range(20_000)]
    assert store.run_script(b"d", None, keys, [])[0] == 20_000
    assert store.read(keys[:3] + keys[-3:]) == [None] * 6


def test_a_user_without_the_scripts_new_commands_gets_an_error_naming_them(redis_server: RedisServer) -> None:
    """An ACL written for the script before it used MSET / MSETNX: the write fails, saying what to grant."""
    from feature_layer.config import OnlineStoreSettings
    from feature_layer.errors import OnlineStoreError
    from feature_layer.online.backends import connect_online_store

    namespace = f"acl{uuid.uuid4().hex[:6]}"
    user = f"old{uuid.uuid4().hex[:6]}"
    old = ["+get", "+mget", "+set", "+evalsha", "+script|load", "+script|exists", "+scan", "+unlink", "+ping",
           "+setbit", "+bitcount", "+exists", "+pexpire", "+time"]
    redis_server.client().acl_setuser(user, enabled=True, passwords=["+pw"], keys=[f"fl1:{namespace}:*"], commands=old)
    settings = OnlineStoreSettings(type="redis", url=redis_server.url, username=user, password="pw")
    online = connect_online_store(settings, namespace)
    online.clock = lambda: to_micros(T0)
    layout = view_layout(make_view([("a", "float64")]), namespace)
    with pytest.raises(OnlineStoreError, match=r"\+mset \+msetnx") as refused:
        with online.writer(ttl_us=None, distinct_keys=True) as writer:
            writer.write(_encoded(layout, [(1, 0, 0, 1.0)]))
    assert "ACL user" in str(refused.value)
    online.close()
