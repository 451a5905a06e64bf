"""Redis Cluster online store: the same keys and values as one Redis, spread over hash slots.

Keys are the single-node keys (``fl1:{namespace}:{view}:{layout}:{entity}``, no hash tag), so
entities spread over all 16,384 slots and every primary. redis-py's ``RedisCluster`` keeps the
topology (which node serves which slot, refreshed after a failover); this module only groups
keys by slot and node and talks to each node through redis-py's public connection API:

* **Lookups**: the keys of a request are grouped by the node serving their slot (a slot→primary
  table built from redis-py's slots cache); every node gets one ``GET`` per key as one pipelined
  write, all nodes before any reply is read: one round trip per node, in parallel. (A multi-key
  ``MGET`` must stay inside one slot, and 1,000 keys over 16,384 slots rarely share one.)
* **Writes** go through the same never-older script (``write_latest.lua``), one call per slot
  (a script's keys must share a slot). Fencing and the run ledger are per slot too: each call
  carries the slot's fence and ledger keys (``fl1:{tag}:…`` where the tag hashes to that slot), a
  slot's first call in a run claims it (raises its fence, opens its ledger) in the same
  pipeline, and the commit checks every written slot's ledger before setting the markers. So a
  failover to a replica that missed acknowledged writes is detected exactly as a restart of one
  Redis is: the missing ledger bits make the run fail instead of advancing its watermark.
* The view-level claim, the markers (watermarks, active layouts) and the run's global ledger
  live in one slot (hash tag ``{namespace}``), so they keep the single-node atomic commit.

After a connection error, a ``MOVED``/``ASK``/``TRYAGAIN``/``CLUSTERDOWN`` reply or a missing
script, the unanswered requests are sent again (they are idempotent) once the topology is
re-read, for up to ``failover_timeout`` seconds for writes and ``retries`` backoffs for reads.
"""

from __future__ import annotations

import functools
import time
from binascii import crc_hqx
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from itertools import repeat
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from redis.backoff import ExponentialBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.crc import key_slot
from redis.exceptions import (
    AskError,
    ClusterDownError,
    MovedError,
    NoScriptError,
    RedisClusterException,
    RedisError,
    ResponseError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from feature_layer.config import OnlineStoreSettings
from feature_layer.errors import OnlineStoreError
from feature_layer.online.encoding import EncodedBatch
from feature_layer.online.redis_connect import tls_files
from feature_layer.online.redis_store import (
    _SCRIPT,
    RedisOnlineStore,
    _bulk,
    _bulk_block,
    _fixed_block,
    _glob_escape,
    script_mode,
)
from feature_layer.online.store import RunFence, WriteCounts, Writer

SLOTS = 16384
_GET = b"*2\r\n$3\r\nGET\r\n$%d\r\n%s\r\n"
_TRANSIENT = (RedisConnectionError, RedisTimeoutError, OSError)
_REROUTE = (MovedError, AskError, TryAgainError, ClusterDownError)


@functools.cache
def slot_tags() -> tuple[bytes, ...]:
    """For each hash slot, a short tag that hashes to it (``{tag}`` pins a key to that slot)."""
    tags: list[bytes | None] = [None] * SLOTS
    left, i = SLOTS, 0
    while left:
        tag = b"%x" % i
        slot = key_slot(tag)
        if tags[slot] is None:
            tags[slot] = tag
            left -= 1
        i += 1
    return tuple(t for t in tags if t is not None)


def key_slots(keys: Sequence[bytes]) -> list[int]:
    """The hash slot of each key (redis-py's CRC16, hash tags honoured)."""
    return [key_slot(k) for k in keys]


@dataclass
class _SlotLedger:
    """What one run sent to one slot: requests numbered 1…``requests`` (bit i of the slot's ledger),
    and which were acknowledged."""

    claimed: bool = False
    claim_acknowledged: bool = False
    requests: int = 0
    acknowledged: set[int] = field(default_factory=set)


@dataclass
class _RunLedgers:
    """A run's per-slot ledgers, and which of the run's request numbers (``RunFence``) went to slots."""

    slots: dict[int, _SlotLedger] = field(default_factory=dict)
    assigned: set[int] = field(default_factory=set)


@dataclass
class _Request:
    """One script call for one slot: ``kind`` a (claim), w/f (write), d (delete)."""

    slot: int
    kind: bytes
    seq: int = 0  # bit in the slot's ledger
    number: int = 0  # the run's request number (RunFence.requests / acknowledged)
    keys: Any = b""  # RESP bulk strings of the data keys
    values: Any = b""  # RESP bulk strings of the values
    expiry: Any = b""  # RESP bulk strings of the PX arguments
    count: int = 0
    clock: int = 0
    done: bool = False


class RedisClusterOnlineStore(RedisOnlineStore):
    """``RedisOnlineStore`` over a Redis Cluster: per-slot reads and writes, per-slot fences and ledgers."""

    kind = "redis-cluster"
    can_evict = True

    def __init__(
        self,
        client: RedisCluster,
        namespace: str,
        *,
        batch_size: int = 5000,
        retries: int = 3,
        location: str = "redis-cluster",
        failover_timeout: float = 20.0,
    ) -> None:
        super().__init__(client, namespace, batch_size=batch_size, retries=retries, location=location)  # type: ignore[arg-type]
        self.failover_timeout = failover_timeout
        self.read_backoff = ExponentialBackoff(cap=0.5, base=0.05)
        self._ledgers: dict[str, _RunLedgers] = {}
        self._table: tuple[Any, int, np.ndarray, list[ClusterNode]] | None = None

    @classmethod
    def from_settings(cls, settings: OnlineStoreSettings, namespace: str) -> RedisClusterOnlineStore:  # type: ignore[override]
        """Connect to the cluster ``settings.startup_nodes`` (``host:port`` each) belong to."""
        nodes = [ClusterNode(*_host_port(n)) for n in settings.startup_nodes]
        options: dict[str, Any] = {
            "socket_timeout": settings.socket_timeout,
            "socket_connect_timeout": settings.connect_timeout,
            # Cluster-level retries (redis-py re-reads the topology between them) for the
            # bookkeeping commands sent through RedisCluster itself (markers, claim, commit):
            # as few as a lookup's, so a lookup reading the markers during a failover fails in
            # about a second instead of waiting for it (bulk writes wait: ClusterWriter.run).
            "retry": Retry(ExponentialBackoff(cap=0.5, base=0.05), max(1, settings.retries)),
        }
        if settings.username:
            options["username"] = settings.username
        if settings.password:
            options["password"] = settings.password
        if settings.tls:  # every node over TLS, with the files a single rediss:// Redis takes
            options.update(ssl=True, **tls_files(settings))
        location = ("rediss-cluster://" if settings.tls else "redis-cluster://") + ",".join(settings.startup_nodes)
        try:
            client = RedisCluster(startup_nodes=nodes, **options)
        except (RedisError, RedisClusterException) as exc:
            raise _unreachable(location, exc, settings.tls) from exc
        return cls(
            client,
            namespace,
            batch_size=settings.batch_size,
            retries=settings.retries,
            location=location,
            failover_timeout=settings.failover_timeout,
        )

    # -- keys -------------------------------------------------------------------------------
    def _marker_key(self, name: str) -> bytes:
        # Every bookkeeping key in one slot (hash tag = the namespace): the commit stays one
        # atomic script call, as on one Redis.
        return f"fl1:{{{self.namespace}}}:__markers__:{name}".encode()

    def _slot_keys(self, fence: RunFence | None, slot: int) -> bytes:
        """RESP of (fence key, ledger key) of ``slot``: pinned to the slot by a hash tag."""
        tag = slot_tags()[slot].decode()
        if fence is None:
            names = (f"fl1:{{{tag}}}:{self.namespace}:fence:none", f"fl1:{{{tag}}}:{self.namespace}:run:none")
        else:
            names = (
                f"fl1:{{{tag}}}:{self.namespace}:{fence.fence_name}",
                f"fl1:{{{tag}}}:{self.namespace}:{fence.ledger_name}",
            )
        return _bulk(names[0].encode()) + _bulk(names[1].encode())

    def _ledger_key(self, fence: RunFence, slot: int) -> bytes:
        tag = slot_tags()[slot].decode()
        return f"fl1:{{{tag}}}:{self.namespace}:{fence.ledger_name}".encode()

    # -- topology ---------------------------------------------------------------------------
    def _node_of(self, slot: int) -> ClusterNode:
        return self.client.nodes_manager.get_node_from_slot(slot)

    def _refresh(self) -> None:
        """Re-read which node serves which slot (after a failover or a MOVED reply)."""
        self._table = None
        try:
            self.client.nodes_manager.initialize()
        except (RedisError, RedisClusterException):
            pass  # no node answered yet: the next attempt tries again

    def _pool(self, node: ClusterNode) -> Any:
        return self.client.get_redis_connection(node).connection_pool

    def ping(self) -> None:
        try:
            for node in self.client.get_primaries():
                self.client.get_redis_connection(node).ping()
        except RedisError as exc:
            raise self._error("answer PING on every primary", exc) from exc

    # -- reads ------------------------------------------------------------------------------
    def _slot_table(self) -> tuple[np.ndarray, list[ClusterNode]]:
        """slot -> index of its primary in a node list, from redis-py's slots cache (rebuilt
        whenever redis-py replaces the cache, i.e. after every topology refresh)."""
        cache = self.client.nodes_manager.slots_cache
        if self._table is not None and self._table[0] is cache and len(cache) == self._table[1]:
            return self._table[2], self._table[3]
        table = np.full(SLOTS, -1, dtype=np.int64)
        nodes: list[ClusterNode] = []
        index: dict[str, int] = {}
        for slot, serving in list(cache.items()):
            if serving:
                primary = serving[0]
                if primary.name not in index:
                    index[primary.name] = len(nodes)
                    nodes.append(primary)
                table[slot] = index[primary.name]
        self._table = (cache, len(cache), table, nodes)
        return table, nodes

    def read(self, keys: Sequence[bytes]) -> list[bytes | None]:
        """One ``GET`` per key, pipelined per node, all nodes written before any reply is read (one
        round trip per node, in parallel); retried with a fresh topology after a connection error
        or a redirect (``MOVED``, ``ASK``, ``TRYAGAIN``, ``CLUSTERDOWN``)."""
        if not keys:
            return []
        keys = keys if isinstance(keys, list) else list(keys)
        if b"{" in b"".join(keys):  # a hash tag in some entity key: redis-py's rule, key by key
            slots = np.asarray(key_slots(keys), dtype=np.int64)
        else:
            slots = np.fromiter(map(crc_hqx, keys, repeat(0)), dtype=np.int64, count=len(keys)) & (SLOTS - 1)
        attempt = 0
        while True:
            try:
                return self._read_once(keys, slots)
            except (*_TRANSIENT, *_REROUTE) as exc:  # noqa: PERF203 - retry loop
                attempt += 1
                if attempt > self.retries:
                    raise self._error("read feature values", exc) from exc
                time.sleep(self.read_backoff.compute(attempt))
                self._refresh()
            except RedisError as exc:
                raise self._error("read feature values", exc) from exc

    def _read_once(self, keys: list[bytes], slots: np.ndarray) -> list[bytes | None]:
        table, nodes = self._slot_table()
        owner = table[slots]
        if (owner < 0).any():
            raise ClusterDownError("a slot is not covered by any node (a failover in progress?)")
        plan: list[tuple[Any, list[int]]] = []
        for index in np.unique(owner).tolist():
            positions = np.flatnonzero(owner == index).tolist()
            plan.append((self._pool(nodes[index]), positions))
        out: list[bytes | None] = [None] * len(keys)
        opened: list[tuple[Any, Any]] = []
        error: Exception | None = None
        try:
            for pool, positions in plan:
                conn = pool.get_connection()
                opened.append((pool, conn))
                chosen = [keys[p] for p in positions]
                packed = b"".join(map(_GET.__mod__, zip(map(len, chosen), chosen, strict=True)))
                conn.send_packed_command([packed], check_health=False)
            for (_pool, positions), (_p, conn) in zip(plan, opened, strict=True):
                read = conn.read_response
                for position in positions:
                    try:
                        out[position] = read()
                    except ResponseError as exc:  # a redirect: read the rest, then retry everything
                        error = error or exc
        except BaseException:
            for pool, conn in opened:
                conn.disconnect()  # its stream position is unknown
                pool.release(conn)
            raise
        for pool, conn in opened:
            pool.release(conn)
        if error is not None:
            raise error
        return out

    # -- writes -----------------------------------------------------------------------------
    def script_sha(self, refresh: bool = False) -> str:
        """Load the write script on every primary (a promoted replica may not have it)."""
        if self._sha is None or refresh:
            try:
                shas = {self.client.get_redis_connection(n).script_load(_SCRIPT) for n in self.client.get_primaries()}
            except RedisError as exc:
                raise self._error("load the write script", exc) from exc
            self._sha = shas.pop()
        return self._sha

    def script_loaded(self) -> bool:
        if self._sha is None:
            return False
        try:
            return all(
                bool(self.client.get_redis_connection(n).script_exists(self._sha)[0])
                for n in self.client.get_primaries()
            )
        except RedisError as exc:
            raise self._error("check the write script", exc) from exc

    def writer(
        self, *, ttl_us: int | None, force: bool = False, fence: RunFence | None = None, distinct_keys: bool = False
    ) -> Writer:
        return ClusterWriter(self, ttl_us, force=force, fence=fence, distinct_keys=distinct_keys)

    def run_ledgers(self, fence: RunFence) -> _RunLedgers:
        return self._ledgers.setdefault(fence.ledger_name, _RunLedgers())

    def slot_ledgers(self, fence: RunFence | None) -> dict[int, _SlotLedger]:
        return {} if fence is None else self.run_ledgers(fence).slots

    def check_fence(self, fence: RunFence) -> None:
        """Refuse a run whose view was claimed by a newer token (the view-level fence). Each slot's
        own fence is raised by the first write of the newest run there; this check closes the
        gap for slots the newer run has not written yet (up to one flush of the older run)."""
        try:
            current = self.client.get(self.fence_keys(fence)[0])
        except RedisError as exc:
            raise self._error("read the view's fence", exc) from exc
        if current is not None and int(current) > fence.token:
            raise fence.lost_lease(f"a newer run claimed the view: token {fence.token} < fence {int(current)}")

    # -- runs: fence and ledger, per slot ---------------------------------------------------------
    def claim(self, fence: RunFence) -> None:
        self._ledgers[fence.ledger_name] = _RunLedgers()
        super().claim(fence)

    def touch(self, fence: RunFence) -> bool:
        alive = super().touch(fence)
        ledgers = self.slot_ledgers(fence)
        if not ledgers:
            return alive
        commands = [
            (slot, b"*3\r\n$7\r\nPEXPIRE\r\n%s%s" % (_bulk(self._ledger_key(fence, slot)), _bulk(b"%d" % fence.ledger_ttl_ms)))
            for slot, ledger in list(ledgers.items())
            if ledger.claim_acknowledged  # a claim still in flight has no ledger to renew yet
        ]
        if not commands:
            return alive
        replies = self._per_slot_commands(commands, "renew the run's ledgers (PEXPIRE)")
        return alive and all(int(r) == 1 for r in replies)

    def missing_requests(self, fence: RunFence) -> int:
        run = self.run_ledgers(fence)
        try:
            raw = self.client.get(self.fence_keys(fence)[1]) or b""
        except RedisError as exc:
            raise self._error("read the run's ledger", exc) from exc
        bits = np.unpackbits(np.frombuffer(raw, dtype=np.uint8))
        wanted = np.fromiter({0, *(fence.acknowledged - run.assigned)}, dtype=np.int64)
        inside = wanted < len(bits)
        missing = int((~inside).sum() + (bits[wanted[inside]] == 0).sum())
        ledgers = run.slots
        if not ledgers:
            return missing
        slots = list(ledgers)
        commands = [(slot, b"*2\r\n$3\r\nGET\r\n%s" % _bulk(self._ledger_key(fence, slot))) for slot in slots]
        raws = self._per_slot_commands(commands, "read the run's ledgers")
        for slot, raw in zip(slots, raws, strict=True):
            ledger = ledgers[slot]
            bits = np.unpackbits(np.frombuffer(raw or b"", dtype=np.uint8))
            wanted = np.fromiter({0, *ledger.acknowledged} if ledger.claimed else ledger.acknowledged, dtype=np.int64)
            inside = wanted < len(bits)
            missing += int((~inside).sum() + (bits[wanted[inside]] == 0).sum())
        return missing

    def commit(self, fence: RunFence, markers: dict[str, bytes]) -> None:
        """Check every written slot's ledger (one script call per slot, pipelined per node), then
        the view-level commit: fence, global ledger and markers in one atomic call."""
        run = self.run_ledgers(fence)
        requests = [_Request(slot, b"c", seq=1 + ledger.requests) for slot, ledger in run.slots.items()]
        if requests:
            writer = ClusterWriter(self, None, fence=fence)
            writer.run(requests)
        names = [self._marker_key(name) for name in markers]
        global_bits = 1 + fence.requests - len(run.assigned)
        self.run_script(b"c", fence, names, [b"%d" % global_bits, *markers.values()])

    def release(self, fence: RunFence) -> None:
        run = self._ledgers.pop(fence.ledger_name, None)
        ledgers = list(run.slots) if run is not None else []
        super().release(fence)
        if ledgers:
            commands = [(slot, b"*2\r\n$6\r\nUNLINK\r\n%s" % _bulk(self._ledger_key(fence, slot))) for slot in ledgers]
            try:
                self._per_slot_commands(commands, "drop the run's ledgers")
            except OnlineStoreError:
                pass  # they expire on their own

    def _per_slot_commands(self, commands: list[tuple[int, bytes]], action: str) -> list[Any]:
        """Plain one-key commands, pipelined per node; retried with a fresh topology."""
        attempt = 0
        while True:
            try:
                by_node: dict[str, tuple[ClusterNode, list[int]]] = {}
                for i, (slot, _command) in enumerate(commands):
                    node = self._node_of(slot)
                    by_node.setdefault(node.name, (node, []))[1].append(i)
                replies: list[Any] = [None] * len(commands)
                for node, indexes in by_node.values():
                    pool = self._pool(node)
                    conn = pool.get_connection()
                    try:
                        conn.send_packed_command([b"".join(commands[i][1] for i in indexes)], check_health=False)
                        for i in indexes:
                            replies[i] = conn.read_response()
                    except BaseException:
                        conn.disconnect()
                        raise
                    finally:
                        pool.release(conn)
                return replies
            except (*_TRANSIENT, *_REROUTE) as exc:  # noqa: PERF203 - retry loop
                attempt += 1
                if attempt > self.retries:
                    raise self._error(action, exc) from exc
                time.sleep(self.read_backoff.compute(attempt))
                self._refresh()
            except RedisError as exc:
                raise self._error(action, exc) from exc

    # -- keys of a view ---------------------------------------------------------------------------
    def scan_prefix(self, prefix: bytes, *, count: int = 5000) -> Iterator[list[bytes]]:
        """SCAN every primary (redis-py's cluster ``scan_iter``)."""
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

    def count_existing(self, keys: pa.Array) -> int:
        """``EXISTS`` per slot, pipelined per node."""
        if not len(keys):
            return 0
        values = keys.cast(pa.binary()).to_pylist()
        groups: dict[int, list[bytes]] = {}
        for key, slot in zip(values, key_slots(values), strict=True):
            groups.setdefault(slot, []).append(key)
        commands = [
            (slot, b"*%d\r\n$6\r\nEXISTS\r\n%s" % (len(ks) + 1, b"".join(_bulk(k) for k in ks))) for slot, ks in groups.items()
        ]
        return sum(int(r) for r in self._per_slot_commands(commands, "check that the run's values are still there"))

    def delete_keys(self, keys: Sequence[bytes], fence: RunFence | None = None) -> int:
        """UNLINK ``keys`` through the write script, one call per slot: fenced and ledgered like a write."""
        if not len(keys):
            return 0
        writer = ClusterWriter(self, None, fence=fence)
        writer.delete(list(keys))
        return writer.close().written

    def delete_prefix(self, prefix: bytes, fence: RunFence | None = None) -> int:
        return sum(self.delete_keys(keys, fence) for keys in self.scan_prefix(prefix))

    def close(self) -> None:
        self.client.close()


def _unreachable(location: str, exc: Exception, tls: bool) -> OnlineStoreError:
    """The error for a cluster no startup node answered: TLS failures get the TLS fix."""
    import ssl

    causes, seen = [], exc.__context__ or exc.__cause__
    while seen is not None and len(causes) < 10:
        causes.append(seen)
        seen = seen.__context__ or seen.__cause__
    text = f"{exc} {' '.join(str(c) for c in causes)}"
    if "SSL" in text or any(isinstance(c, ssl.SSLError) for c in causes):
        fix = ("for a TLS cluster use rediss+cluster:// with online_store.ssl_ca_certs set to the CA that signed the "
               "nodes' certificates (and ssl_certfile / ssl_keyfile if they want client certificates); for a "
               "plain-text cluster use redis+cluster://.")
    else:
        scheme = "rediss+cluster" if tls else "redis+cluster"
        fix = (f"start the cluster or correct online_store.startup_nodes / the {scheme}:// URL "
               "(any one reachable node is enough; list several so one being down does not matter).")
    return OnlineStoreError(f"Could not reach the Redis Cluster at {location}: {' '.join(text.split())}.", fix=fix)


def _host_port(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host.strip("[]"), int(port)


class ClusterWriter(Writer):
    """Buffers encoded batches, then writes them one script call per slot, pipelined per node.

    A slot's first call of a run is preceded (same pipeline) by its claim. Unanswered calls are
    resent after a failover (they are idempotent) until ``failover_timeout``; a resend or a
    missing script marks the writer ``suspect`` so materialization checks the ledgers at once.
    """

    flush_requests = 8
    """Buffer this many ``batch_size`` requests' worth of keys before writing (slots get fuller calls)."""

    def __init__(
        self,
        store: RedisClusterOnlineStore,
        ttl_us: int | None,
        *,
        force: bool = False,
        fence: RunFence | None = None,
        distinct_keys: bool = False,
    ) -> None:
        super().__init__(ttl_us, force=force, fence=fence, distinct_keys=distinct_keys)
        self.store = store
        self.sha = store.script_sha(refresh=not store.script_loaded()).encode()
        self._mode = script_mode(force, distinct_keys)
        self._token = b"%d" % (fence.token if fence else 0)
        self._ttl = b"%d" % (ttl_us or 0)
        self._buffer: list[EncodedBatch] = []
        self._buffered = 0
        self.ledger_lost = False

    # -- building requests ------------------------------------------------------------------------
    def _ledger(self, slot: int) -> _SlotLedger | None:
        if self.fence is None:
            return None
        return self.store.slot_ledgers(self.fence).setdefault(slot, _SlotLedger())

    def _with_claims(self, requests: list[_Request]) -> list[_Request]:
        """Each slot's claim (once per run) in front of its first request."""
        if self.fence is None:
            return requests
        out: list[_Request] = []
        for request in requests:
            ledger = self._ledger(request.slot)
            assert ledger is not None
            if not ledger.claimed:
                ledger.claimed = True
                out.append(_Request(request.slot, b"a"))
            out.append(request)
        return out

    def _packed(self, request: _Request) -> list[Any]:
        expires = b"%d" % (self.store.lease_deadline_us(self.fence) if self.fence else 0)
        run_keys = self.store._slot_keys(self.fence, request.slot)
        if request.kind == b"a":
            argv = [b"a", self._token, expires, b"0", b"%d" % self.fence.ledger_ttl_ms]  # type: ignore[union-attr]
            head = b"*%d\r\n$7\r\nEVALSHA\r\n$40\r\n%s\r\n$1\r\n2\r\n%s" % (3 + 2 + len(argv), self.sha, run_keys)
            return [head, b"".join(_bulk(a) for a in argv)]
        if request.kind == b"c":
            argv = [b"c", self._token, expires, b"0", b"%d" % request.seq]
            head = b"*%d\r\n$7\r\nEVALSHA\r\n$40\r\n%s\r\n$1\r\n2\r\n%s" % (3 + 2 + len(argv), self.sha, run_keys)
            return [head, b"".join(_bulk(a) for a in argv)]
        n = request.count
        if request.kind == b"d":
            argv = [b"d", self._token, expires, b"%d" % request.seq]
            count = 3 + 2 + n + len(argv)
            head = b"*%d\r\n$7\r\nEVALSHA\r\n$40\r\n%s\r\n%s%s" % (count, self.sha, _bulk(b"%d" % (n + 2)), run_keys)
            return [head, request.keys, b"".join(_bulk(a) for a in argv)]
        argv = [self._mode, self._token, expires, b"%d" % request.seq, b"%d" % request.clock, self._ttl]
        expiry = [request.expiry] if self.ttl_us else []
        count = 3 + 2 + n + 6 + n + (n if expiry else 0)
        head = b"*%d\r\n$7\r\nEVALSHA\r\n$40\r\n%s\r\n%s%s" % (count, self.sha, _bulk(b"%d" % (n + 2)), run_keys)
        return [head, request.keys, b"".join(_bulk(a) for a in argv), request.values, *expiry]

    def _numbered(self, request: _Request) -> _Request:
        """Number a slot request: its bit in the slot's ledger, and the run's request number."""
        ledger = self._ledger(request.slot)
        if ledger is None or self.fence is None:
            return request
        ledger.requests += 1
        request.seq = ledger.requests
        request.number = self.fence.next_request()
        self.store.run_ledgers(self.fence).assigned.add(request.number)
        return request

    # -- the Writer interface ---------------------------------------------------------------------
    def write(self, batch: EncodedBatch) -> None:
        if not len(batch):
            return
        self._buffer.append(batch)
        self._buffered += len(batch)
        if self._buffered >= self.flush_requests * self.store.batch_size:
            self._flush()

    def _flush(self) -> None:
        if not self._buffer:
            return
        batches, self._buffer, self._buffered = self._buffer, [], 0
        keys = pa.concat_arrays([b.keys.cast(pa.binary()) for b in batches])
        values = pa.concat_arrays([b.values.cast(pa.binary()) for b in batches])
        event_us = np.concatenate([b.event_us for b in batches])
        fixed = [b.fixed_rows for b in batches]
        slots = np.asarray(key_slots(keys.to_pylist()), dtype=np.int64)
        order = np.argsort(slots, kind="stable")
        slots = slots[order]
        take = pa.array(order)
        keys = keys.take(take)
        keys_block, key_offsets = _bulk_block(keys)
        if all(f is not None for f in fixed) and len({f.shape[1] for f in fixed}) == 1:  # type: ignore[union-attr]
            values_block, value_offsets = _fixed_block(np.concatenate(fixed)[order])  # type: ignore[arg-type]
        else:
            values_block, value_offsets = _bulk_block(values.take(take))
        event_us = event_us[order]
        clock = self.store.clock()
        expiry_block, expiry_offsets = None, None
        if self.ttl_us:
            expiry_block, expiry_offsets = _expiry_blocks(event_us, self.ttl_us, clock)
        bounds = np.flatnonzero(np.diff(slots)) + 1
        starts = np.concatenate([[0], bounds]).tolist()
        stops = np.concatenate([bounds, [len(slots)]]).tolist()
        size = self.store.batch_size
        requests: list[_Request] = []
        for start, stop in zip(starts, stops, strict=True):
            slot = int(slots[start])
            for lo in range(start, stop, size):
                hi = min(stop, lo + size)
                requests.append(
                    _Request(
                        slot,
                        self._mode,
                        keys=keys_block[int(key_offsets[lo]) : int(key_offsets[hi])],
                        values=values_block[int(value_offsets[lo]) : int(value_offsets[hi])],
                        expiry=b""
                        if expiry_block is None
                        else expiry_block[int(expiry_offsets[lo]) : int(expiry_offsets[hi])],  # type: ignore[index]
                        count=hi - lo,
                        clock=clock,
                    )
                )
        requests = [self._numbered(r) for r in requests]
        self.run(self._with_claims(requests))

    def delete(self, keys: list[bytes]) -> None:
        groups: dict[int, list[bytes]] = {}
        for key, slot in zip(keys, key_slots(keys), strict=True):
            groups.setdefault(slot, []).append(key)
        requests = []
        for slot, ks in groups.items():
            for lo in range(0, len(ks), self.store.batch_size):
                chunk = ks[lo : lo + self.store.batch_size]
                requests.append(
                    self._numbered(_Request(slot, b"d", keys=b"".join(_bulk(k) for k in chunk), count=len(chunk)))
                )
        self.run(self._with_claims(requests))

    def close(self) -> WriteCounts:
        self._flush()
        return self.counts

    def abort(self) -> None:
        self._buffer, self._buffered = [], 0

    # -- sending ----------------------------------------------------------------------------------
    def run(self, requests: list[_Request]) -> None:
        """Send ``requests`` (per node, pipelined, all nodes before reading) until each is answered."""
        if self.fence is not None:
            self.store.check_fence(self.fence)
        pending = requests
        deadline: float | None = None
        attempt = 0
        last: Exception | None = None
        while pending:
            retry, reload = self._round(pending)
            if not retry:
                return
            self.suspect = True  # the store may have failed over: acknowledged writes may be gone
            if retry[0][1] is not None:
                last = retry[0][1]
            deadline = deadline or time.monotonic() + self.store.failover_timeout
            if time.monotonic() > deadline:
                assert last is not None
                raise self.store._error(
                    f"write feature values (no node took over within online_store.failover_timeout = "
                    f"{self.store.failover_timeout:g} s)",
                    last,
                ) from last
            attempt += 1
            time.sleep(self.store.backoff.compute(min(attempt, 5)))
            self.store._refresh()
            if reload:
                try:
                    self.sha = self.store.script_sha(refresh=True).encode()
                except OnlineStoreError:
                    pass  # a node is still down: the next round tries again
            pending = [request for request, _error in retry]

    def _round(self, requests: list[_Request]) -> tuple[list[tuple[_Request, Exception | None]], bool]:
        """One pass: (requests to send again with the error that stopped them, reload the script?)."""
        by_node: dict[str, tuple[ClusterNode | None, list[_Request]]] = {}
        retry: list[tuple[_Request, Exception | None]] = []
        for request in requests:
            try:
                node = self.store._node_of(request.slot)
            except RedisError as exc:  # the slot is not covered (yet): wait for the failover
                retry.append((request, exc))
                continue
            by_node.setdefault(node.name, (node, []))[1].append(request)
        reload = False
        failure: BaseException | None = None
        for node, node_requests in by_node.values():
            pool = self.store._pool(node)  # type: ignore[arg-type]
            try:
                conn = pool.get_connection()
            except _TRANSIENT as exc:
                retry.extend((r, exc) for r in node_requests)
                continue
            try:
                for lo in range(0, len(node_requests), 256):  # a window of calls in flight per node
                    window = node_requests[lo : lo + 256]
                    conn.send_packed_command([part for r in window for part in self._packed(r)], check_health=False)
                    for i, request in enumerate(window):
                        try:
                            reply = conn.read_response()
                        except NoScriptError as exc:
                            reload = True
                            retry.append((request, exc))
                            continue
                        except _REROUTE as exc:
                            retry.append((request, exc))
                            continue
                        except ResponseError as exc:
                            failure = failure or exc
                            continue
                        except _TRANSIENT as exc:
                            conn.disconnect()
                            retry.extend((r, exc) for r in window[i:])
                            retry.extend((r, exc) for r in node_requests[lo + len(window) :])
                            raise _NodeLost from exc
                        self._acknowledge(request, reply)
                    if failure is not None:
                        break
            except _NodeLost:
                pass
            except _TRANSIENT as exc:  # the send itself failed: nothing of this window was read
                conn.disconnect()
                sent = {id(r) for r, _e in retry}
                retry.extend((r, exc) for r in node_requests if id(r) not in sent and not r.done)
            finally:
                pool.release(conn)
        if failure is not None:
            self.abort()
            raise self.store._script_error(failure, self.fence) from failure  # type: ignore[arg-type]
        return retry, reload

    def _acknowledge(self, request: _Request, reply: Any) -> None:
        request.done = True
        if request.kind == b"a":
            ledger = self._ledger(request.slot)
            if ledger is not None:
                ledger.claim_acknowledged = True
            return
        if request.kind == b"c":
            return
        ledger = self._ledger(request.slot)
        if ledger is not None and self.fence is not None:
            ledger.acknowledged.add(request.seq)
            self.fence.acknowledged.add(request.number)
        if len(reply) > 3 and not int(reply[3]):
            self.ledger_lost = self.suspect = True
        self.counts.add(reply[:3])


class _NodeLost(Exception):
    """Internal: a node's connection broke mid-pipeline (its unanswered requests are queued again)."""


def _expiry_blocks(event_us: np.ndarray, ttl_us: int, now_us: int) -> tuple[memoryview, np.ndarray]:
    """RESP bulk strings of each value's PX (see redis_store._expiry_block), with offsets."""
    left = np.asarray(event_us, dtype=np.int64) + np.int64(ttl_us - now_us)
    px = np.maximum(-(-left // 1000), 1)
    text = pa.array(px).cast(pa.string()).cast(pa.binary())
    if (left < 0).any():
        text = pc.if_else(pa.array(left < 0), pa.scalar(b"-"), text)
    return _bulk_block(text)
