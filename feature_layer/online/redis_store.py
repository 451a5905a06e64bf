"""Redis online store: one key per (view, entity), one MGET per lookup, Lua-guarded writes.

Writes go through ``write_latest.lua`` (loaded once with SCRIPT LOAD, called with EVALSHA),
which takes a whole batch of keys per call and refuses any value older than the stored one —
atomically, on the server, so overlapping runs and late data cannot race it.

The write path builds each EVALSHA request as RESP bytes straight from Arrow/numpy buffers (no
per-key Python objects) and keeps two requests in flight: the client encodes batch k+1 while
Redis runs batch k. Every request is idempotent, so after a connection error the unacknowledged
ones are simply sent again (with exponential backoff, ``retries`` times).
"""

from __future__ import annotations

import socket
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
from redis.exceptions import NoPermissionError, NoScriptError, RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from feature_layer.config import OnlineStoreSettings
from feature_layer.errors import OnlineStoreError
from feature_layer.online.encoding import EncodedBatch
from feature_layer.online.redis_connect import RetryPolicy, describe_failure, redis_client, single_attempt
from feature_layer.online.store import OnlineStore, WriteCounts, Writer

_SCRIPT = resources.files("feature_layer.online").joinpath("write_latest.lua").read_text()
_TRANSIENT = (RedisConnectionError, RedisTimeoutError, OSError)


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


class RedisOnlineStore(OnlineStore):
    kind = "redis"

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
            return OnlineStoreError(f"Redis at {self._location} {described[0]}, while trying to {action}.",
                                    fix=described[1])
        if isinstance(exc, _TRANSIENT):
            return OnlineStoreError(
                f"Redis at {self._location} is unreachable: could not {action} ({type(exc).__name__}: {exc}), "
                f"after {self.retries} retries.",
                fix="start Redis or correct online_store.url, then rerun; a failed materialization did not advance "
                "its watermark, so the rerun redoes the same work.",
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

    def instance_id(self) -> str | None:
        """The server's ``run_id`` (``INFO server``); None when the ACL user may not run INFO —
        materialization then relies on its run sentinel alone."""
        try:
            return str(self.client.info("server").get("run_id")) or None
        except NoPermissionError:
            return None
        except ResponseError as exc:
            if "NOPERM" in str(exc):
                return None
            raise self._error("read the server's run id (INFO server)", exc) from exc
        except RedisError as exc:
            raise self._error("read the server's run id (INFO server)", exc) from exc

    def ping(self) -> None:
        try:
            self.client.ping()
        except RedisError as exc:
            raise self._error("answer PING", exc) from exc

    # -- reads ------------------------------------------------------------------------------
    def read(self, keys: Sequence[bytes]) -> list[bytes | None]:
        """One GET/MGET, sent as pre-packed RESP on a pooled connection.

        This skips redis-py's per-command machinery (argument encoding, callbacks), which is
        most of a single lookup's client time; connection errors are retried with backoff.
        """
        if not keys:
            return []
        if len(keys) == 1:
            key = keys[0]
            packed = b"*2\r\n$3\r\nGET\r\n$%d\r\n%s\r\n" % (len(key), key)
        else:
            packed = b"*%d\r\n$4\r\nMGET\r\n%s" % (
                len(keys) + 1,
                b"".join([b"$%d\r\n%s\r\n" % (len(k), k) for k in keys]),
            )
        try:
            reply = self.retry.run(lambda: self._read_once(packed, len(keys)))
        except _TRANSIENT as exc:
            raise self._error("read feature values", exc) from exc
        except RedisError as exc:
            raise self._error("read feature values", exc) from exc
        return [reply] if len(keys) == 1 else reply

    def _read_once(self, packed: bytes, count: int) -> Any:
        """One attempt: a pooled connection, the packed command, the reply (the policy retries)."""
        pool = self.client.connection_pool
        conn = None
        try:
            conn = pool.get_connection()
            conn.send_packed_command([packed], check_health=False)
            if count > 1 and _raw_readable(conn):
                try:
                    reply = _read_bulk_array(conn._sock, count)
                except BaseException:
                    conn.disconnect()  # the stream position is unknown now
                    raise
            else:
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

    def writer(self, *, ttl_us: int | None, force: bool = False) -> Writer:
        return RedisWriter(self, ttl_us, force=force)

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

    def delete_keys(self, keys: Sequence[bytes]) -> int:
        try:
            return int(self.client.unlink(*keys)) if keys else 0
        except RedisError as exc:
            raise self._error("delete old keys", exc) from exc

    def delete_prefix(self, prefix: bytes) -> int:
        deleted = 0
        try:
            batch: list[bytes] = []
            for key in self.client.scan_iter(match=_glob_escape(prefix) + b"*", count=5000):
                batch.append(key)
                if len(batch) >= 5000:
                    deleted += self.client.unlink(*batch)
                    batch = []
            if batch:
                deleted += self.client.unlink(*batch)
        except RedisError as exc:
            raise self._error("delete old keys", exc) from exc
        return deleted

    def close(self) -> None:
        self.client.close()


def _raw_readable(conn: Any) -> bool:
    """True when the connection's parser holds no unread bytes, so the socket is at a reply start."""
    parser = getattr(conn, "_parser", None)
    buffer = getattr(parser, "_buffer", None)
    unread = getattr(buffer, "unread_bytes", None)
    return getattr(conn, "_sock", None) is not None and callable(unread) and unread() == 0


def _read_bulk_array(sock: socket.socket, count: int) -> list[bytes | None]:
    """Read one RESP2/RESP3 array of ``count`` bulk strings (or nulls) straight off the socket.

    An MGET reply of 1,000 values parses here in about a quarter of the time redis-py's pure-Python
    parser takes (it builds a reader object per element); values come back as ``bytes``.
    """
    buf = bytearray()
    pos = 0
    out: list[bytes | None] = []
    append = out.append
    recv = sock.recv
    header_done = False
    while True:
        chunk = recv(262_144)
        if not chunk:
            raise RedisConnectionError("Connection closed by server.")
        buf += chunk
        size = len(buf)
        if not header_done:
            eol = buf.find(b"\r\n")
            if eol < 0:
                continue
            if buf[0] == 45:  # '-': an error reply
                raise ResponseError(buf[1:eol].decode("utf-8", "replace"))
            if buf[0] != 42 or int(buf[1:eol]) != count:  # '*'
                raise RedisConnectionError(f"Unexpected reply to MGET: {bytes(buf[:40])!r}")
            pos = eol + 2
            header_done = True
        while len(out) < count and pos < size:
            kind = buf[pos]
            if kind == 95:  # '_' RESP3 null
                if pos + 3 > size:
                    break
                append(None)
                pos += 3
                continue
            eol = buf.find(b"\r\n", pos)
            if eol < 0:
                break
            length = int(buf[pos + 1 : eol])
            if length < 0:  # '$-1' RESP2 null
                append(None)
                pos = eol + 2
                continue
            end = eol + 2 + length
            if end + 2 > size:
                break
            append(bytes(buf[eol + 2 : end]))
            pos = end + 2
        if len(out) == count:
            return out


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
    """Sends EVALSHA requests with up to ``window`` of them in flight on one connection."""

    window = 2

    def __init__(self, store: RedisOnlineStore, ttl_us: int | None, *, force: bool = False) -> None:
        super().__init__(ttl_us, force=force)
        self.store = store
        self.sha = store.script_sha(refresh=not store.script_loaded()).encode()
        self._conn: Any = None
        self._inflight: deque[list[Any]] = deque()

    def _connection(self) -> Any:
        if self._conn is None:
            self._conn = self.store.client.connection_pool.get_connection()
        return self._conn

    def _request(
        self,
        batch: EncodedBatch,
        start: int,
        stop: int,
        keys_block: memoryview,
        key_offsets: np.ndarray,
        values_block: memoryview,
        value_offsets: np.ndarray,
    ) -> list[Any]:
        n = stop - start
        clock = self.store.clock()
        now = b"%d" % clock
        ttl = b"%d" % (self.ttl_us or 0)
        expiry: list[Any] = []
        if self.ttl_us:
            expiry = [_expiry_block(batch.event_us[start:stop], self.ttl_us, clock)]
        count = 3 + 2 * n + 3 + (n if expiry else 0)
        head = b"*%d\r\n$7\r\nEVALSHA\r\n$40\r\n%s\r\n$%d\r\n%d\r\n" % (count, self.sha, len(b"%d" % n), n)
        args = b"$%d\r\n%s\r\n$%d\r\n%s\r\n$1\r\n%s\r\n" % (len(now), now, len(ttl), ttl, b"1" if self.force else b"0")
        return [
            head,
            keys_block[int(key_offsets[start]) : int(key_offsets[stop])],
            args,
            values_block[int(value_offsets[start]) : int(value_offsets[stop])],
            *expiry,
        ]

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
            request = self._request(batch, start, stop, keys_block, key_offsets, values_block, value_offsets)
            self._send(request)
            while len(self._inflight) >= self.window:
                self._receive()

    def _send(self, request: list[Any]) -> None:
        self._inflight.append(request)
        try:
            self._connection().send_packed_command(request, check_health=False)
        except _TRANSIENT as exc:
            self._recover(exc)

    def _receive(self) -> None:
        try:
            reply = self._connection().read_response()
        except NoScriptError:
            # Redis restarted, failed over, or ran SCRIPT FLUSH. Only this request failed: the
            # ones behind it are still in flight and answer for themselves, so reload the script
            # and send this one again at the back of the queue (order does not matter: writes
            # commute). A restart or flush may also have lost acknowledged writes, which no
            # resend can recover: ``suspect`` makes materialization check its run sentinel.
            self.suspect = True
            request = self._inflight.popleft()
            self.sha = self.store.script_sha(refresh=True).encode()
            self._send(_with_sha(request, self.sha))
            return
        except ResponseError as exc:
            self.abort()
            raise self.store._error("write feature values", exc) from exc
        except _TRANSIENT as exc:
            self._recover(exc)
            return
        self._inflight.popleft()
        self.counts.add(reply)

    def _resend_all(self) -> None:
        pending = list(self._inflight)
        self._inflight.clear()
        conn = self._connection()
        for request in pending:
            request = _with_sha(request, self.sha)
            self._inflight.append(request)
            conn.send_packed_command(request, check_health=False)

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
