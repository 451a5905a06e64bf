"""One consumer per stream, and what it is doing, kept in the stream's own Redis.

**The lease.** Two ``feature-layer stream`` processes on one stream and group would each compute
from a history buffer that lacks the other's events, so a value missing an event could replace the
right one. A consumer therefore holds a lease, ``fl:stream:lease:<stream>:<group>`` (``SET NX PX``,
renewed by the run loop, deleted on a clean stop): a second consumer waits for it to expire (a
consumer killed on another machine stops renewing it) and then refuses, naming the holder. A
holder on this machine whose process is gone (``kill -9``) is taken over at once.

**The status.** The running consumer publishes its counters about once a second to the hash
``fl:stream:status:<stream>:<group>`` (expiring a minute after its last update), so the HTTP
server's ``/metrics`` exports progress, lag and throughput without talking to the consumer
(:func:`stream_gauges`, which also reads the group's lag and pending entries from XINFO GROUPS).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from feature_layer.errors import StreamError
from feature_layer.state import pid_alive

log = logging.getLogger("feature_layer.stream")

LEASE_MS = 15_000
STATUS_TTL_MS = 60_000

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""
_TAKE_OVER = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3]) end
return false
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def lease_key(stream: str, group: str) -> str:
    return f"fl:stream:lease:{stream}:{group}"


def status_key(stream: str, group: str) -> str:
    return f"fl:stream:status:{stream}:{group}"


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class LeaseLost(StreamError):
    """Another consumer holds this consumer's lease (at start or since): stop at once."""


class StreamLease:
    """The one-consumer lease of a stream and group (see the module docstring)."""

    def __init__(self, client: Callable[[], Any], stream: str, group: str, consumer: str, *,
                 lease_ms: int = LEASE_MS, wait: Callable[[float], Any] = time.sleep) -> None:
        self._client = client
        self.stream, self.group, self.key = stream, group, lease_key(stream, group)
        self.lease_ms = lease_ms
        self._wait = wait
        self.value = json.dumps({"consumer": consumer, "host": socket.gethostname(), "pid": os.getpid(),
                                 "token": uuid.uuid4().hex})
        self._renewed = 0.0

    def _holder(self, raw: Any) -> dict[str, Any]:
        try:
            holder = json.loads(_text(raw))
            return holder if isinstance(holder, dict) else {}
        except ValueError:
            return {}

    def acquire(self) -> None:
        """Take the lease; wait up to one lease period for a holder that stopped renewing, then refuse."""
        deadline = time.monotonic() + self.lease_ms / 1000 + 1.0
        while True:
            client = self._client()
            if client.set(self.key, self.value, nx=True, px=self.lease_ms):
                self._renewed = time.monotonic()
                return
            raw = client.get(self.key)
            if raw is None:
                continue  # expired between the two calls
            holder = self._holder(raw)
            if holder.get("host") == socket.gethostname() and isinstance(holder.get("pid"), int) \
                    and not pid_alive(holder["pid"]):
                if client.eval(_TAKE_OVER, 1, self.key, raw, self.value, self.lease_ms):
                    log.warning("stream %s: took over the lease of consumer %s (pid %s, no longer running)",
                                self.stream, holder.get("consumer"), holder.get("pid"))
                    self._renewed = time.monotonic()
                    return
                continue
            if time.monotonic() >= deadline:
                who = f"{holder.get('consumer', '?')} on {holder.get('host', '?')} (pid {holder.get('pid', '?')})"
                raise LeaseLost(
                    f"Another consumer, {who}, is streaming {self.stream} (group {self.group}); two consumers of one "
                    "stream would each compute from history that lacks the other's events.",
                    fix="stop the other `feature-layer stream` first (a killed one's lease expires after "
                    f"{self.lease_ms / 1000:.0f} s), or stream another source.")
            self._wait(0.5)

    def renew(self, *, every: float | None = None) -> None:
        """Extend the lease (at most every ``every`` seconds, default a third of it); a lease another
        consumer holds now raises (this one must stop), a vanished one (Redis restarted) is taken again."""
        now = time.monotonic()
        if now - self._renewed < (every if every is not None else self.lease_ms / 3000):
            return
        client = self._client()
        if client.eval(_RENEW, 1, self.key, self.value, self.lease_ms):
            self._renewed = now
            return
        if client.set(self.key, self.value, nx=True, px=self.lease_ms):
            self._renewed = now
            return
        holder = self._holder(client.get(self.key))
        raise LeaseLost(
            f"This consumer lost the lease of {self.stream} to {holder.get('consumer', '?')} on "
            f"{holder.get('host', '?')} (pid {holder.get('pid', '?')}): it stopped renewing it for more than "
            f"{self.lease_ms / 1000:.0f} s.", fix="it stops now, leaving its read unacknowledged for the other one.")

    def release(self) -> None:
        try:
            self._client().eval(_RELEASE, 1, self.key, self.value)
        except Exception:  # noqa: BLE001 - an expiring lease frees itself
            pass


def publish_status(client: Any, stream: str, group: str, fields: Mapping[str, float | int | str]) -> None:
    key = status_key(stream, group)
    pipe = client.pipeline(transaction=True)
    pipe.hset(key, mapping={k: str(v) for k, v in fields.items()})
    pipe.pexpire(key, STATUS_TTL_MS)
    pipe.execute()


_STATUS_GAUGES = {
    "events": ("feature_layer_stream_events", "Events the consumer read since it started."),
    "new": ("feature_layer_stream_events_new", "Events new to the event log since start."),
    "duplicates": ("feature_layer_stream_events_duplicate", "Redelivered or repeated events since start."),
    "rejected": ("feature_layer_stream_events_rejected", "Events dead-lettered since start."),
    "late": ("feature_layer_stream_events_late", "Events older than the lookback (left to the batch path)."),
    "values_written": ("feature_layer_stream_values_written", "Online values written since start."),
    "batches": ("feature_layer_stream_batches", "Micro-batches processed since start."),
    "retries": ("feature_layer_stream_batch_retries", "Micro-batches retried since start."),
    "events_per_second": ("feature_layer_stream_events_per_second", "Events per second over the last report window."),
    "latency_p50_ms": ("feature_layer_stream_latency_p50_ms", "Event written to the stream → value online, p50."),
    "latency_p99_ms": ("feature_layer_stream_latency_p99_ms", "Event written to the stream → value online, p99."),
    "updated_ms": ("feature_layer_stream_status_timestamp_seconds", "When the consumer last published (Unix s)."),
}


def stream_gauges(connections: Mapping[str, Any], *, timeout: float = 0.5) -> list[tuple[str, str, dict[str, str],
                                                                                         float]]:
    """``/metrics`` gauges of every configured stream: up, lag, pending, and the consumer's status."""
    import redis

    gauges: list[tuple[str, str, dict[str, str], float]] = []
    for source, c in sorted(connections.items()):
        labels = {"source": source, "stream": c.stream, "group": c.group}
        client = redis.Redis.from_url(c.url, socket_timeout=timeout, socket_connect_timeout=timeout)
        try:
            try:
                groups = client.xinfo_groups(c.stream)
            except redis.ResponseError as exc:  # no such key: nothing produced or consumed yet
                if "no such key" not in str(exc).lower():
                    raise
                groups = []
            status = client.hgetall(status_key(c.stream, c.group))
            length = int(client.xlen(c.stream))
        except (redis.ResponseError, redis.ConnectionError, redis.TimeoutError, OSError):
            gauges.append(("feature_layer_stream_up", "1 when the stream's Redis answered.", labels, 0.0))
            continue
        finally:
            client.close()
        gauges.append(("feature_layer_stream_up", "1 when the stream's Redis answered.", labels, 1.0))
        mine = next((g for g in groups if _text(g.get("name")) == c.group), None)
        # no group yet (no consumer ever ran): every entry in the stream is still to be read
        lag = float(length if mine is None else (mine.get("lag") or 0))
        gauges.append(("feature_layer_stream_lag_events", "Entries not yet read by the group (XINFO lag).",
                       labels, lag))
        gauges.append(("feature_layer_stream_pending_events", "Entries read but not yet acknowledged.",
                       labels, float(0 if mine is None else (mine.get("pending") or 0))))
        values = {_text(k): _text(v) for k, v in status.items()}
        running = {**labels, "consumer": values.get("consumer", "")}
        gauges.append(("feature_layer_stream_consumer_running", "1 while a consumer publishes its status.",
                       running if values else labels, 1.0 if values else 0.0))
        for field, (name, text) in _STATUS_GAUGES.items():
            if field in values:
                try:
                    number = float(values[field])
                except ValueError:
                    continue
                gauges.append((name, text, running, number / 1000 if field == "updated_ms" else number))
    return gauges


__all__ = ["LEASE_MS", "LeaseLost", "StreamLease", "lease_key", "publish_status", "status_key", "stream_gauges"]
