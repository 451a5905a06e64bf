"""Opening Redis connections: one retry policy, TLS that says what failed, an eviction check.

redis-py retries at two levels that nest (a command's retry reconnects, and connecting retries
again), and our own loops sat on top: ``rediss://`` against a plain port took 88 s to fail.
``RetryPolicy`` is redis-py's ``Retry`` with bounded exponential backoff, applied once per
operation: a retry started while another is running makes a single attempt. Errors no retry
can fix are raised at once: a refused connection (nothing listens there, so lookups answer
503 at once instead of after a second of backoff), TLS handshake and certificate failures,
credentials. ``TLSConnection`` turns a handshake that never completes (a plain-text port) or a
certificate failure into ``TLSError``, which names the cause instead of "unreachable".

On the first connection a store opens, ``check_eviction_policy`` asks ``CONFIG GET`` whether
the server may evict keys (``maxmemory`` with an ``allkeys-*`` or ``volatile-*`` policy) and
logs one warning: evicted feature values look like missing entities. An ACL that forbids
CONFIG is not an error: the check is skipped (logged at debug level).
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import redis
from redis.backoff import ExponentialBackoff
from redis.exceptions import AuthenticationError, RedisError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from feature_layer.config import OnlineStoreSettings

log = logging.getLogger("feature_layer.online")
T = TypeVar("T")
RETRIABLE = (RedisConnectionError, RedisTimeoutError, OSError)
_active = threading.local()


class TLSError(RedisError):
    """The TLS handshake failed or never completed; retrying cannot help."""


def _causes(error: BaseException) -> list[BaseException]:
    chain, seen = [], set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


def refused(error: BaseException) -> bool:
    """True when nothing accepted the connection (ECONNREFUSED, a missing unix socket)."""
    return any(isinstance(e, (ConnectionRefusedError, FileNotFoundError)) for e in _causes(error)) or (
        isinstance(error, RedisConnectionError) and "Connection refused" in str(error)
    )


def permanent(error: BaseException) -> bool:
    """Errors that the same request will meet again: refused, TLS, certificates, credentials."""
    return refused(error) or any(isinstance(e, (TLSError, ssl.SSLError, AuthenticationError)) for e in _causes(error))


@contextmanager
def single_attempt() -> Iterator[None]:
    """Inside: redis-py's retries make one attempt, because the caller's own loop is the policy."""
    outer = getattr(_active, "depth", 0)
    _active.depth = outer + 1
    try:
        yield
    finally:
        _active.depth = outer


class RetryPolicy(Retry):
    """redis-py's ``Retry`` (bounded exponential backoff), one level deep, permanent errors at once."""

    def __init__(self, retries: int, *, base: float = 0.05, cap: float = 0.5) -> None:
        super().__init__(ExponentialBackoff(cap=cap, base=base), retries, supported_errors=RETRIABLE)

    def call_with_retry(
        self,
        do: Callable[[], T],
        fail: Callable[..., Any],
        is_retryable: Callable[[Exception], bool] | None = None,
        with_failure_count: bool = False,
    ) -> T:
        """redis-py's retry loop (same arguments in redis-py 5 to 8), but one level deep: inside
        another ``call_with_retry`` of any policy it makes a single attempt."""

        def failed(error: Exception, count: int) -> None:
            if with_failure_count:
                fail(error, count)
            else:
                fail(error)

        if getattr(_active, "depth", 0):
            try:
                return do()  # an outer call owns the retries: attempt once
            except self._supported_errors as error:
                failed(error, 1)
                raise
        _active.depth = 1
        try:
            self._backoff.reset()
            failures = 0
            while True:
                try:
                    return do()
                except self._supported_errors as error:
                    if permanent(error) or (is_retryable is not None and not is_retryable(error)):
                        raise
                    failures += 1
                    failed(error, failures)
                    if failures > self._retries:
                        raise
                    time.sleep(self._backoff.compute(failures))
        finally:
            _active.depth = 0

    def run(self, do: Callable[[], T]) -> T:
        """Run ``do`` under this policy (our own raw-socket reads and writes use it too)."""
        return self.call_with_retry(do, lambda *_: None)


class TLSConnection(redis.SSLConnection):
    """An SSL connection whose handshake is bounded by the connect timeout and says why it failed."""

    def _wrap_socket_with_ssl(self, sock: socket.socket) -> Any:
        sock.settimeout(self.socket_connect_timeout)
        try:
            wrapped = super()._wrap_socket_with_ssl(sock)
        except TimeoutError as exc:
            raise TLSError(
                f"the TLS handshake with {self.host}:{self.port} got no answer within "
                f"{self.socket_connect_timeout} s: the server does not speak TLS on this port (a plain redis:// "
                "port?)"
            ) from exc
        except ssl.SSLCertVerificationError as exc:
            raise TLSError(
                f"the server's TLS certificate was refused: {exc.verify_message or exc} (CERTIFICATE_VERIFY_FAILED)"
            ) from exc
        except ssl.SSLError as exc:
            raise TLSError(f"the TLS handshake with {self.host}:{self.port} failed: {exc}") from exc
        except ConnectionResetError as exc:
            raise TLSError(f"the server closed the connection during the TLS handshake: {exc}") from exc
        wrapped.settimeout(self.socket_timeout)
        return wrapped


def check_eviction_policy(conn: Any, location: str) -> None:
    """Warn (once per store: the caller arranges that) when the server may evict feature keys."""
    try:
        conn.send_command("CONFIG", "GET", "maxmemory*")
        reply = conn.read_response()
    except RedisError as exc:
        log.debug("Could not check %s for an eviction policy (CONFIG GET refused: %s).", location, exc)
        return
    if isinstance(reply, dict):
        values = {_text(k): _text(v) for k, v in reply.items()}
    else:
        items = [_text(v) for v in reply or []]
        values = dict(zip(items[::2], items[1::2], strict=False))
    policy, limit = values.get("maxmemory-policy", "noeviction"), values.get("maxmemory", "0")
    if policy == "noeviction" or limit in ("", "0"):
        return
    which = "any key" if policy.startswith("allkeys") else "keys with a TTL (every view that declares a ttl)"
    log.warning(
        "Redis at %s may evict %s: maxmemory is %s bytes and maxmemory-policy is %s. Evicted feature values "
        "are served as missing (None) until the next full refresh. To fix this, set maxmemory-policy "
        "noeviction (writes then fail loudly when memory is full) or give Redis more memory.",
        location,
        which,
        limit,
        policy,
    )


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def tls_files(settings: OnlineStoreSettings) -> dict[str, str]:
    """redis-py's ``ssl_ca_certs`` / ``ssl_certfile`` / ``ssl_keyfile`` options of ``settings`` (the
    files config resolved and checked), for a single Redis and for every node of a cluster."""
    keys = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile")
    return {key: str(getattr(settings, key)) for key in keys if getattr(settings, key) is not None}


def redis_client(settings: OnlineStoreSettings) -> tuple[redis.Redis, RetryPolicy, str]:
    """A client for ``settings``, its retry policy, and the location to name in messages.

    Raises ValueError for a URL redis-py cannot parse (the caller turns it into an error).
    """
    policy = RetryPolicy(settings.retries)
    url = settings.url or "redis://127.0.0.1:6379/0"
    options: dict[str, Any] = {
        "socket_timeout": settings.socket_timeout,
        "socket_connect_timeout": settings.connect_timeout,
        "retry": policy,
        "health_check_interval": 30,
    }
    if settings.username:
        options["username"] = settings.username
    if settings.password:
        options["password"] = settings.password
    tls = url.startswith("rediss://")
    if tls:
        options["connection_class"] = TLSConnection
        options.update(tls_files(settings))
    client = redis.Redis.from_url(url, **options)
    kw = client.connection_pool.connection_kwargs
    location = (
        f"{'rediss' if tls else 'redis'}://{kw.get('host', kw.get('path', '?'))}:{kw.get('port', '')}/{kw.get('db', 0)}"
    )
    checked = threading.Event()

    def on_connect(conn: Any) -> None:
        conn.on_connect()
        if not checked.is_set():
            checked.set()
            check_eviction_policy(conn, location)

    client.connection_pool.connection_kwargs["redis_connect_func"] = on_connect
    return client, policy, location


def describe_failure(error: BaseException) -> tuple[str, str] | None:
    """(what happened, how to fix it) for connection failures that deserve their own words."""
    tls = next((e for e in _causes(error) if isinstance(e, TLSError)), None)
    if tls is not None:
        return (
            f"could not open a TLS connection: {tls}",
            "for a plain-text Redis use redis://; for TLS set online_store.ssl_ca_certs to the CA that "
            "signed the server's certificate (and ssl_certfile / ssl_keyfile if it wants client certificates).",
        )
    if any(isinstance(e, ssl.SSLError) for e in _causes(error)):
        return (
            f"the TLS connection failed: {error}",
            "check online_store.ssl_ca_certs / ssl_certfile / ssl_keyfile and the server's TLS settings.",
        )
    if refused(error):
        return (
            f"is unreachable: it refused the connection ({error})",
            "start Redis or correct online_store.url, then rerun; a failed materialization did not advance "
            "its watermark, so the rerun redoes the same work.",
        )
    return None
