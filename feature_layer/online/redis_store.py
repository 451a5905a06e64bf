"""Redis online store: one key per (view, entity), one MGET per lookup, Lua-guarded writes.

Writes go through ``write_latest.lua`` (loaded once with SCRIPT LOAD, called with EVALSHA),
which takes a whole batch of keys per call and refuses any value older than the stored one —
atomically, on the server, so overlapping runs and late data cannot race it. Each call carries
the run's fencing token and lease expiry (refused once the run lost its lease) and sets the
run's ledger bit, so the commit can prove the server still holds every acknowledged write.

The write path builds each EVALSHA request as RESP bytes straight from Arrow/numpy buffers (no
per-key Python objects) and keeps four requests in flight (``RedisWriter.window``): the client
encodes the next batch while Redis still has queued requests to run (with two, it idled while a
100k-row batch was encoded: 3.42 s → 3.06–3.24 s at 10M rows → 1M entities, BENCHMARKS.md).
Every request is idempotent, so after a connection error the unacknowledged ones are simply sent
again (with exponential backoff, ``retries`` times).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterator, Sequence
from importlib import resources
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import redis
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from feature_layer.config import OnlineStoreSettings
from feature_layer.errors import OnlineStoreError
from feature_layer.online.encoding import EncodedBatch
from feature_layer.online.redis_connect import RetryPolicy, describe_failure, redis_client, single_attempt
from feature_layer.online.store import OnlineStore, RunFence, WriteCounts, Writer

_SCRIPT = resources.files("feature_layer.online").joinpath("write_latest.lua").read_text()
_TRANSIENT = (RedisConnectionError, RedisTimeoutError, OSError)
SCRIPT_ACL = "+get +mget +set +mset +msetnx +unlink +exists +setbit +bitcount +pexpire +time"
"""The commands ``write_latest.lua`` calls: Redis checks each against the calling user's ACL."""


def script_mode(force: bool, distinct_keys: bool) -> bytes:
    """``write_latest.lua``'s write mode: f (full refresh), u (distinct keys) or w."""
    return b"f" if force else b"u" if distinct_keys else b"w"


def _bulk_block(values: pa.Array) -> tuple[memoryview, np.ndarray]:
    """RESP bulk strings (``$len\\r\\nbytes\\r\\n``) of a binary array: one buffer + n+1 offsets."""
    lengths = pc.binary_length(values).cast(pa.string()).cast(pa.binary())
    framed = pc.binary_join_element_wise(
        pa.scalar(b"$"), lengths, pa.scalar(b"\r\n"), values, pa.scalar(b"\r\n"), pa.scalar(b"")
    )
    offsets = np.frombuffer(framed.buffers()[1], dtype=np.int32)[framed.offset : framed.offset + len(framed) + 1]
    offsets = offsets.astype(np.int64)
    return memoryview(framed.buffers()[2]), offsets


def _fixed_block(rows: np.ndarray) -> tuple[memoryview, np.ndarray]:
    """RESP bulk strings of equal-width values, built with numpy (faster than the Arrow join)."""
    n, width = rows.shape
    head = b"$%d\r\n" % width
    block = np.empty((n, len(head) + width + 2), dtype=np.uint8)
    block[:, : len(head)] = np.frombuffer(head, dtype=np.uint8)
    block[:, len(head) : len(head) + width] = rows
    block[:, -2:] = np.frombuffer(b"\r\n", dtype=np.uint8)
    return memoryview(block.reshape(-1)), np.arange(n + 1, dtype=np.int64) * block.shape[1]


_EXPIRED = pa.scalar(b"-")


def _expiry_block(event_us: np.ndarray, ttl_us: int, now_us: int) -> memoryview:
    """The ``PX`` argument of each key, as RESP bulk strings, for ``write_latest.lua``.

    ``max(1, ceil((event_us + ttl - now) / 1000))`` ms in decimal, or ``-`` for a value already
    expired (``event_us + ttl < now``: not written). Computed here, vectorised, so the script
    does no arithmetic or number formatting per key.
    """
    left = np.asarray(event_us, dtype=np.int64) + np.int64(ttl_us - now_us)
    px = np.maximum(-(-left // 1000), 1)
    text = pa.array(px).cast(pa.string()).cast(pa.binary())
    if (left < 0).any():
        text = pc.if_else(pa.array(left < 0), _EXPIRED, text)
    block, offsets = _bulk_block(text)
    return block[int(offsets[0]) : int(offsets[-1])]


def _bulk(value: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(value), value)


class RedisOnlineStore(OnlineStore):
    kind = "redis"
    can_evict = True

    def __init__(
        self, client: redis.Redis, namespace: str, *, batch_size: int = 5000, retries: int = 3, location: str = "redis"
    ) -> None:
        super().__init__(namespace)
        self.client = client
        self.batch_size = max(1, batch_size)
        self.retries = retries
        self.backoff = ExponentialBackoff(cap=1.0, base=0.05)
        self._location = location
        self._sha: str | None = None
        self.retry = RetryPolicy(retries)  # the one retry policy: redis-py's, one level deep

    @classmethod
    def from_settings(cls, settings: OnlineStoreSettings, namespace: str) -> RedisOnlineStore:
        """Connect from settings: ``redis://`` / ``rediss://`` (TLS) / ``unix://`` URL, ACL user, password."""
        try:
            client, policy, location = redis_client(settings)
        except ValueError as exc:
            raise OnlineStoreError(
                f"The Redis URL in the online_store settings is not valid: {exc}.",
                fix="use redis://[user:password@]host:port/db, rediss://… for TLS, or unix:///path/redis.sock.",
            ) from exc
        store = cls(client, namespace, batch_size=settings.batch_size, retries=settings.retries, location=location)
        store.retry = policy
        return store

    # -- errors -----------------------------------------------------------------------------
    def _error(self, action: str, exc: Exception) -> OnlineStoreError:
        if isinstance(exc, redis.AuthenticationError) or "NOAUTH" in str(exc) or "WRONGPASS" in str(exc):
            return OnlineStoreError(
                f"Redis at {self._location} refused the credentials while trying to {action}: {exc}.",
                fix="set online_store.username / online_store.password (or the URL's user:password) to a valid ACL user.",
            )
        described = describe_failure(exc)
        if described is not None:
            return OnlineStoreError(
                f"Redis at {self._location} {described[0]}, while trying to {action}.", fix=described[1]
            )
        if isinstance(exc, _TRANSIENT):
            return OnlineStoreError(
                f"Redis at {self._location} is unreachable: could not {action} ({type(exc).__name__}: {exc}), "
                f"after {self.retries} retries.",
                fix="start Redis or correct online_store.url, then rerun; a failed materialization did not advance "
                "its watermark, so the rerun redoes the same work.",
            )
        if str(exc).startswith("OOM") or "used memory > 'maxmemory'" in str(exc):
            return OnlineStoreError(
                f"Redis at {self._location} is out of memory and refused to {action}: {exc}.",
                fix="raise Redis's maxmemory (or free memory), then rerun; the run did not advance its watermark, "
                "and reads the view in full if Redis evicted keys to make room.",
                may_have_evicted=True,
            )
        if "can't run this command" in str(exc) or str(exc).startswith("NOPERM"):
            return OnlineStoreError(
                f"Redis at {self._location} refused a command to the ACL user while trying to {action}: {exc}.",
                fix=f"grant the user the commands the write script runs: {SCRIPT_ACL} (docs/online_store.md, "
                "'The minimal ACL'; `ACL LOG` on the server names the refused one).",
            )
        return OnlineStoreError(
            f"Redis at {self._location} failed to {action}: {exc}.",
            fix="check the Redis server's log and version (6.2 or later).",
        )

    def describe(self) -> str:
        return self._location

    def _marker_key(self, name: str) -> bytes:
        return f"fl1:{self.namespace}:__markers__:{name}".encode()

    def get_marker(self, name: str) -> bytes | None:
        try:
            return self.client.get(self._marker_key(name))
        except RedisError as exc:
            raise self._error("read a bookkeeping marker", exc) from exc

    def get_markers(self, names: Sequence[str]) -> list[bytes | None]:
        try:
            return list(self.client.mget([self._marker_key(n) for n in names])) if names else []
        except RedisError as exc:
            raise self._error("read bookkeeping markers", exc) from exc

    def set_marker(self, name: str, value: bytes) -> None:
        try:
            self.client.set(self._marker_key(name), value)
        except RedisError as exc:
            raise self._error("write a bookkeeping marker", exc) from exc

    def delete_marker(self, name: str) -> None:
        try:
            self.client.unlink(self._marker_key(name))
        except RedisError as exc:
            raise self._error("delete a bookkeeping marker", exc) from exc

    def ping(self) -> None:
        try:
            self.client.ping()
        except RedisError as exc:
            raise self._error("answer PING", exc) from exc

    # -- reads ------------------------------------------------------------------------------
    def read(self, keys: Sequence[bytes]) -> list[bytes | None]:
        """One GET/MGET, sent as pre-packed RESP on a pooled connection, the reply parsed by hiredis.

        Only redis-py's public connection API is used (``get_connection``, ``send_packed_command``,
        ``read_response``, ``release``): this skips its per-command machinery (argument encoding,
        response callbacks), which is most of a single lookup's client time, and the reply is
        parsed by hiredis (a declared dependency; redis-py picks it up by itself). Connection
        errors are retried with backoff.
        """
        if not keys:
            return []
        if len(keys) == 1:
            key = keys[0]
            packed = b"*2\r\n$3\r\nGET\r\n$%d\r\n%s\r\n" % (len(key), key)
        else:
            packed = b"*%d\r\n$4\r\nMGET\r\n%s" % (
                len(keys) + 1,
                b"".join(map(b"$%d\r\n%s\r\n".__mod__, zip(map(len, keys), keys, strict=True))),
            )
        try:
            reply = self.retry.run(lambda: self._read_once(packed))
        except _TRANSIENT as exc:
            raise self._error("read feature values", exc) from exc
        except RedisError as exc:
            raise self._error("read feature values", exc) from exc
        return [reply] if len(keys) == 1 else reply

    def _read_once(self, packed: bytes) -> Any:
        """One attempt: a pooled connection, the packed command, the reply (the policy retries)."""
        pool = self.client.connection_pool
        conn = None
        try:
            conn = pool.get_connection()
            conn.send_packed_command([packed], check_health=False)
            reply = conn.read_response()
        except RedisError as exc:
            if conn is not None:
                if isinstance(exc, _TRANSIENT):
                    conn.disconnect()
                pool.release(conn)
            raise
        except BaseException:
            # Anything else (a socket error, a malformed reply, KeyboardInterrupt, a bug): the
            # connection's stream position is unknown, so drop it — but always give it back to the pool.
            if conn is not None:
                conn.disconnect()
                pool.release(conn)
            raise
        pool.release(conn)
        return reply

    # -- writes -----------------------------------------------------------------------------
    def script_sha(self, refresh: bool = False) -> str:
        if self._sha is None or refresh:
            try:
                self._sha = self.client.script_load(_SCRIPT)
            except RedisError as exc:
                raise self._error("load the write script", exc) from exc
        return self._sha  # type: ignore[return-value]

    def script_loaded(self) -> bool:
        """Whether the server still has the write script (it forgets it on restart)."""
        if self._sha is None:
            return False
        try:
            return bool(self.client.script_exists(self._sha)[0])
        except RedisError as exc:
            raise self._error("check the write script", exc) from exc

    def writer(
        self, *, ttl_us: int | None, force: bool = False, fence: RunFence | None = None, distinct_keys: bool = False
    ) -> Writer:
        return RedisWriter(self, ttl_us, force=force, fence=fence, distinct_keys=distinct_keys)

    # -- runs: fence and ledger ---------------------------------------------------------------
    def fence_keys(self, fence: RunFence | None) -> tuple[bytes, bytes]:
        """(fence key, ledger key) of a run; unfenced writes use keys no run ever sets."""
        if fence is None:
            return self._marker_key("fence:none"), self._marker_key("run:none")
        return self._marker_key(fence.fence_name), self._marker_key(fence.ledger_name)

    def run_script(
        self, mode: bytes, fence: RunFence | None, keys: Sequence[bytes], args: Sequence[bytes], seq: int = 0
    ) -> Any:
        """One non-streaming call of the write script (claim, touch, commit, delete), NOSCRIPT-safe."""
        token = b"%d" % (fence.token if fence else 0)
        expires = b"%d" % (self.lease_deadline_us(fence) if fence else 0)
        all_keys = [*self.fence_keys(fence), *keys]
        argv = [mode, token, expires, b"%d" % seq, *args]
        try:
            try:
                return self.client.evalsha(self.script_sha(), len(all_keys), *all_keys, *argv)
            except NoScriptError:
                return self.client.evalsha(self.script_sha(refresh=True), len(all_keys), *all_keys, *argv)
        except ResponseError as exc:
            raise self._script_error(exc, fence) from exc
        except RedisError as exc:
            raise self._error("call the write script", exc) from exc

    def _script_error(self, exc: ResponseError, fence: RunFence | None) -> OnlineStoreError:
        text = str(exc)
        if fence is not None and text.startswith("FENCED"):
            return fence.lost_lease(f"a newer run claimed the view: {text.split(' script')[0]}")
        if fence is not None and text.startswith("LEASE_EXPIRED"):
            late = text.split()[1].rstrip(".,")
            seconds = int(late) / 1e6 if late.isdigit() else 0.0
            return fence.lost_lease(f"its lease had expired {seconds:.1f} s earlier")
        if fence is not None and text.startswith("LOST"):
            return fence.lost_writes(self._location, f"its ledger {text.split(' script')[0][5:]} requests")
        return self._error("write feature values", exc)

    def claim(self, fence: RunFence) -> None:
        self._clock_offset = self.clock_offset_us()  # measured afresh for every run
        self.run_script(b"a", fence, [], [b"%d" % fence.ledger_ttl_ms])

    _clock_offset: int | None = None

    def lease_deadline_us(self, fence: RunFence) -> int:
        """The run's lease expiry on Redis's clock, which checks it (``clock_offset_us``)."""
        if self._clock_offset is None:
            self._clock_offset = self.clock_offset_us()
        return fence.lease_expires_us() + self._clock_offset

    def clock_offset_us(self) -> int:
        """Redis's clock (TIME) minus this host's, to the round trip's midpoint: the write script
        checks a run's lease by the server's clock, which need not agree with the host's."""
        before = time.time_ns() // 1000
        try:
            seconds, micros = self.client.time()
        except RedisError as exc:
            raise self._error("read the server's clock", exc) from exc
        after = time.time_ns() // 1000
        return seconds * 1_000_000 + micros - (before + after) // 2

    def touch(self, fence: RunFence) -> bool:
        return bool(self.run_script(b"t", fence, [], [b"%d" % fence.ledger_ttl_ms]))

    def missing_requests(self, fence: RunFence) -> int:
        try:
            raw = self.client.get(self.fence_keys(fence)[1]) or b""
        except RedisError as exc:
            raise self._error("read the run's ledger", exc) from exc
        bits = np.unpackbits(np.frombuffer(raw, dtype=np.uint8))
        wanted = np.fromiter({0, *fence.acknowledged}, dtype=np.int64)
        inside = wanted < len(bits)
        return int((~inside).sum() + (bits[wanted[inside]] == 0).sum())

    def commit(self, fence: RunFence, markers: dict[str, bytes]) -> None:
        names = [self._marker_key(name) for name in markers]
        self.run_script(b"c", fence, names, [b"%d" % (1 + fence.requests), *markers.values()])

    def release(self, fence: RunFence) -> None:
        try:
            self.client.unlink(self.fence_keys(fence)[1])
        except RedisError:
            pass  # it expires on its own

    def scan_prefix(self, prefix: bytes, *, count: int = 5000) -> Iterator[list[bytes]]:
        try:
            batch: list[bytes] = []
            for key in self.client.scan_iter(match=_glob_escape(prefix) + b"*", count=count):
                batch.append(key)
                if len(batch) >= count:
                    yield batch
                    batch = []
            if batch:
                yield batch
        except RedisError as exc:
            raise self._error("list the view's keys (SCAN)", exc) from exc

    def eviction_snapshot(self) -> tuple[Any, ...] | None:
        """(run_id, evicted_keys, whether the server may evict) from one ``INFO``; None when INFO
        is refused (an ACL without it, a proxy) or lacks the fields."""
        try:
            info = self.client.info()
            may_evict = int(info["maxmemory"]) > 0 and info["maxmemory_policy"] != "noeviction"
            return (info["run_id"], int(info["evicted_keys"]), may_evict)
        except (RedisError, KeyError, TypeError, ValueError):
            return None

    @staticmethod
    def nothing_evicted_between(before: tuple[Any, ...] | None, after: tuple[Any, ...] | None) -> bool:
        """The same server process (run_id: a restart resets the counters), its evicted-keys
        counter unchanged, and no eviction policy in force at either end (a counter reset by
        CONFIG RESETSTAT could hide evictions otherwise)."""
        if before is None or after is None:
            return False
        return before[0] == after[0] and before[1] == after[1] and not before[2] and not after[2]

    def count_existing(self, keys: pa.Array) -> int:
        """``EXISTS`` over ``keys`` in pipelined calls of ``batch_size`` keys, sent as pre-packed RESP."""
        if not len(keys):
            return 0
        block, offsets = _bulk_block(keys.cast(pa.binary()))
        size = self.batch_size
        requests = []
        for start in range(0, len(keys), size):
            stop = min(len(keys), start + size)
            head = b"*%d\r\n$6\r\nEXISTS\r\n" % (stop - start + 1)
            requests.append([head, block[int(offsets[start]) : int(offsets[stop])]])
        pool = self.client.connection_pool
        conn = pool.get_connection()
        try:
            total = 0
            for i in range(0, len(requests), 8):  # eight calls in flight at a time
                window = requests[i : i + 8]
                for request in window:
                    conn.send_packed_command(request, check_health=False)
                total += sum(int(conn.read_response()) for _ in window)
            return total
        except RedisError as exc:
            conn.disconnect()
            raise self._error("check that the run's values are still there (EXISTS)", exc) from exc
        finally:
            pool.release(conn)

    def delete_keys(self, keys: Sequence[bytes], fence: RunFence | None = None) -> int:
        """UNLINK ``keys`` through the write script: fenced, and ledgered like a write."""
        deleted = 0
        for start in range(0, len(keys), 5000):
            chunk = list(keys[start : start + 5000])
            seq = fence.next_request() if fence else 0
            reply = self.run_script(b"d", fence, chunk, [], seq)
            if fence:
                fence.acknowledged.add(seq)
            deleted += int(reply[0])
        return deleted

    def delete_prefix(self, prefix: bytes, fence: RunFence | None = None) -> int:
        return sum(self.delete_keys(keys, fence) for keys in self.scan_prefix(prefix))

    def close(self) -> None:
        self.client.close()


def _glob_escape(prefix: bytes) -> bytes:
    out = bytearray()
    for byte in prefix:
        if byte in b"*?[]\\":
            out += b"\\"
        out.append(byte)
    return bytes(out)


def _with_sha(request: list[Any], sha: bytes) -> list[Any]:
    """The same EVALSHA request naming script ``sha`` (the header holds it at a fixed place)."""
    head = request[0]
    start = head.index(b"$40\r\n") + 5
    return [head[:start] + sha + head[start + 40 :], *request[1:]]


class RedisWriter(Writer):
    """Sends EVALSHA requests with up to ``window`` of them in flight on one connection.

    A request is ``[head (EVALSHA, sha, numkeys, fence and ledger keys), data keys, arguments
    (mode, token, lease expiry, ledger bit, clock, TTL), values, PX block]``; the arguments are
    rebuilt on a resend so a retried request carries the lease's current expiry.
    """

    window = 4

    def __init__(
        self,
        store: RedisOnlineStore,
        ttl_us: int | None,
        *,
        force: bool = False,
        fence: RunFence | None = None,
        distinct_keys: bool = False,
    ) -> None:
        super().__init__(ttl_us, force=force, fence=fence, distinct_keys=distinct_keys)
        self.store = store
        self.sha = store.script_sha(refresh=not store.script_loaded()).encode()
        self._conn: Any = None
        self._inflight: deque[tuple[list[Any], int, int]] = deque()  # (request, ledger bit, clock)
        fence_key, ledger_key = store.fence_keys(fence)
        self._run_keys = _bulk(fence_key) + _bulk(ledger_key)
        self._mode = script_mode(force, distinct_keys)
        self._token = b"%d" % (fence.token if fence else 0)
        self._ttl = b"%d" % (ttl_us or 0)
        self.ledger_lost = False

    def _connection(self) -> Any:
        if self._conn is None:
            self._conn = self.store.client.connection_pool.get_connection()
        return self._conn

    def _args(self, seq: int, clock: int) -> bytes:
        expires = b"%d" % (self.store.lease_deadline_us(self.fence) if self.fence else 0)
        return b"".join(
            [
                _bulk(self._mode),
                _bulk(self._token),
                _bulk(expires),
                _bulk(b"%d" % seq),
                _bulk(b"%d" % clock),
                _bulk(self._ttl),
            ]
        )

    def _request(
        self,
        batch: EncodedBatch,
        start: int,
        stop: int,
        keys_block: memoryview,
        key_offsets: np.ndarray,
        values_block: memoryview,
        value_offsets: np.ndarray,
    ) -> tuple[list[Any], int, int]:
        n = stop - start
        clock = self.store.clock()
        seq = self.fence.next_request() if self.fence else 0
        expiry: list[Any] = []
        if self.ttl_us:
            expiry = [_expiry_block(batch.event_us[start:stop], self.ttl_us, clock)]
        count = 3 + 2 + n + 6 + n + (n if expiry else 0)
        head = b"*%d\r\n$7\r\nEVALSHA\r\n$40\r\n%s\r\n%s%s" % (count, self.sha, _bulk(b"%d" % (n + 2)), self._run_keys)
        request = [
            head,
            keys_block[int(key_offsets[start]) : int(key_offsets[stop])],
            self._args(seq, clock),
            values_block[int(value_offsets[start]) : int(value_offsets[stop])],
            *expiry,
        ]
        return request, seq, clock

    def write(self, batch: EncodedBatch) -> None:
        n = len(batch)
        if n == 0:
            return
        keys_block, key_offsets = _bulk_block(batch.keys)
        if batch.fixed_rows is not None:
            values_block, value_offsets = _fixed_block(batch.fixed_rows)
        else:
            values_block, value_offsets = _bulk_block(batch.values)
        size = self.store.batch_size
        for start in range(0, n, size):
            stop = min(n, start + size)
            self._send(self._request(batch, start, stop, keys_block, key_offsets, values_block, value_offsets))
            while len(self._inflight) >= self.window:
                self._receive()

    def _send(self, entry: tuple[list[Any], int, int]) -> None:
        self._inflight.append(entry)
        try:
            self._connection().send_packed_command(entry[0], check_health=False)
        except _TRANSIENT as exc:
            self._recover(exc)

    def _refreshed(self, entry: tuple[list[Any], int, int]) -> tuple[list[Any], int, int]:
        """The same request naming the current script and carrying the lease's current expiry."""
        request, seq, clock = entry
        request = _with_sha(request, self.sha)
        request[2] = self._args(seq, clock)
        return request, seq, clock

    def _receive(self) -> None:
        try:
            reply = self._connection().read_response()
        except NoScriptError:
            # Redis restarted, failed over, or ran SCRIPT FLUSH. Only this request failed: the
            # ones behind it are still in flight and answer for themselves, so reload the script
            # and send this one again at the back of the queue (order does not matter: writes
            # commute). A restart or flush may also have lost acknowledged writes, which no
            # resend can recover: ``suspect`` makes materialization check its run ledger.
            self.suspect = True
            entry = self._inflight.popleft()
            self.sha = self.store.script_sha(refresh=True).encode()
            self._send(self._refreshed(entry))
            return
        except ResponseError as exc:
            self.abort()
            raise self.store._script_error(exc, self.fence) from exc
        except _TRANSIENT as exc:
            self._recover(exc)
            return
        _request, seq, _clock = self._inflight.popleft()
        if self.fence is not None:
            self.fence.acknowledged.add(seq)
        if len(reply) > 3 and not int(reply[3]):
            self.ledger_lost = self.suspect = True
        self.counts.add(reply[:3])

    def _resend_all(self) -> None:
        pending = list(self._inflight)
        self._inflight.clear()
        conn = self._connection()
        for entry in pending:
            entry = self._refreshed(entry)
            self._inflight.append(entry)
            conn.send_packed_command(entry[0], check_health=False)

    def _recover(self, first: Exception) -> None:
        """Reconnect with backoff and resend every unacknowledged request (they are idempotent)."""
        error: Exception = first
        self.suspect = True  # the server may have restarted: acknowledged writes may be gone
        for attempt in range(1, self.store.retries + 1):
            self._drop_connection()
            time.sleep(self.store.backoff.compute(attempt))
            try:
                with single_attempt():  # this loop is the write path's retry policy: no nested retries
                    self.sha = self.store.script_sha(refresh=True).encode()
                    self._resend_all()
                return
            except (OnlineStoreError, *_TRANSIENT) as exc:  # noqa: PERF203 - retry loop
                error = exc.__cause__ if isinstance(exc, OnlineStoreError) and exc.__cause__ else exc
        self.abort()
        raise self.store._error("write feature values", error) from error

    def _drop_connection(self) -> None:
        if self._conn is not None:
            try:
                self._conn.disconnect()
            finally:
                self.store.client.connection_pool.release(self._conn)
                self._conn = None

    def close(self) -> WriteCounts:
        while self._inflight:
            self._receive()
        if self._conn is not None:
            self.store.client.connection_pool.release(self._conn)
            self._conn = None
        return self.counts

    def abort(self) -> None:
        self._inflight.clear()
        self._drop_connection()
