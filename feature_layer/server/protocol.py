"""uvicorn's HTTP protocol with the limits it lacks: a header read timeout and a header size limit.

uvicorn times out idle keep-alive connections (``timeout_keep_alive``) but nothing else: a
client that connects and sends nothing, or sends its request line and headers one byte a
second, holds its connection (and a file descriptor) for ever; and with httptools any header
size is accepted. ``GuardedHttpToolsProtocol`` adds, per connection:

- a **header read timeout**: from the connection's start (or the previous request's end) the
  request line and headers must arrive within ``header_timeout`` seconds, else ``408`` and
  the connection is closed (a slowloris, an idle partial request);
- a **header size limit**: request line plus headers over ``max_header_bytes`` is ``431``,
  and the connection is closed.

The hot path pays almost nothing: a request whose headers arrive in one read never arms a
timer (the timer is armed only when a read ends mid-headers), and the size count is one
addition per header. The limits come from the environment (``FEATURE_LAYER_HEADER_TIMEOUT``,
``FEATURE_LAYER_MAX_HEADER_BYTES``), which ``feature-layer serve`` sets, so that every worker
process, spawned by uvicorn, applies the same ones.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from feature_layer.server import DEFAULT_HEADER_TIMEOUT, DEFAULT_KEEP_ALIVE_TIMEOUT, DEFAULT_MAX_HEADER_BYTES

HEADER_TIMEOUT_ENV = "FEATURE_LAYER_HEADER_TIMEOUT"
MAX_HEADER_BYTES_ENV = "FEATURE_LAYER_MAX_HEADER_BYTES"


def _limits() -> tuple[float, int]:
    timeout = float(os.environ.get(HEADER_TIMEOUT_ENV) or DEFAULT_HEADER_TIMEOUT)
    size = int(os.environ.get(MAX_HEADER_BYTES_ENV) or DEFAULT_MAX_HEADER_BYTES)
    return timeout, size


def _response(status: bytes, message: bytes) -> bytes:
    return b"".join([b"HTTP/1.1 ", status, b"\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: ",
                     str(len(message)).encode(), b"\r\nconnection: close\r\n\r\n", message])


REQUEST_TIMEOUT = _response(b"408 Request Timeout", b"The request headers did not arrive in time.")
HEADERS_TOO_LARGE = _response(b"431 Request Header Fields Too Large", b"The request headers are too large.")


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """``HttpToolsProtocol`` plus a header read timeout and a header size limit (module docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.header_timeout, self.max_header_bytes = _limits()
        self._in_headers = True
        self._header_bytes = 0
        self._headers_since = 0.0
        self._header_timer: asyncio.TimerHandle | None = None
        self._headers_too_large = False

    # -- the header read timeout -----------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._headers_since = self.loop.time()
        self._arm_header_timer()

    def _arm_header_timer(self) -> None:
        remaining = self._headers_since + self.header_timeout - self.loop.time()
        self._header_timer = self.loop.call_later(max(0.0, remaining), self._header_timeout_expired)

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _header_timeout_expired(self) -> None:
        self._header_timer = None
        if self._in_headers and not self.transport.is_closing():
            self.transport.write(REQUEST_TIMEOUT)
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._in_headers and self._header_timer is None and not self.transport.is_closing():
            self._arm_header_timer()  # this read ended mid-headers: they must complete in time

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_timer()
        super().connection_lost(exc)

    # -- parser callbacks ------------------------------------------------------------------
    def on_message_begin(self) -> None:
        if not self._in_headers:  # a new request on a kept-alive connection
            self._in_headers = True
            self._headers_since = self.loop.time()
        self._header_bytes = 0
        super().on_message_begin()

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value) + 4)
        super().on_header(name, value)

    def _count(self, size: int) -> None:
        self._header_bytes += size
        if self._header_bytes > self.max_header_bytes:
            self._headers_too_large = True
            raise ValueError("request headers too large")  # httptools stops parsing: send_400_response

    def on_headers_complete(self) -> None:
        self._in_headers = False
        self._cancel_header_timer()
        super().on_headers_complete()

    def send_400_response(self, msg: str) -> None:
        if self._headers_too_large:
            self.transport.write(HEADERS_TOO_LARGE)
            self.transport.close()
            return
        super().send_400_response(msg)


def uvicorn_options(keep_alive_timeout: int = DEFAULT_KEEP_ALIVE_TIMEOUT) -> dict[str, Any]:
    """uvicorn settings for the guarded protocol (h11 when httptools is missing: its own size limit)."""
    import importlib.util

    _, max_header_bytes = _limits()
    if importlib.util.find_spec("httptools") is not None:
        http: Any = GuardedHttpToolsProtocol
    else:
        http = "h11"
    return {"http": http, "timeout_keep_alive": keep_alive_timeout, "h11_max_incomplete_event_size": max_header_bytes}
