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
    """``HttpToolsProtocol`` plus a header read timeout and a header size limit (module docstring).

    Per request on the hot path: three overridden callbacks and a comparison. Header bytes
    are counted per read while a request's headers are incomplete; only when a single read is
    larger than the limit are the parsed headers measured exactly.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.header_timeout, self.max_header_bytes = _limits()
        self._in_headers = True
        self._header_bytes = 0
        self._read = 0
        self._header_timer: asyncio.TimerHandle | None = None
        self._headers_too_large = False

    # -- the header read timeout -----------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._header_timer = self.loop.call_later(self.header_timeout, self._header_timeout_expired)

    def _header_timeout_expired(self) -> None:
        self._header_timer = None
        if self._in_headers and not self.transport.is_closing():
            self.transport.write(REQUEST_TIMEOUT)
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        self._read = len(data)
        super().data_received(data)
        if self._in_headers and not self.transport.is_closing():  # this read ended mid-headers
            self._header_bytes += self._read
            if self._header_bytes > self.max_header_bytes:
                self._reject_headers()
            elif self._header_timer is None:  # they must complete in time from now
                self._header_timer = self.loop.call_later(self.header_timeout, self._header_timeout_expired)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None
        super().connection_lost(exc)

    # -- parser callbacks ------------------------------------------------------------------
    def on_message_begin(self) -> None:
        self._in_headers = True
        self._header_bytes = 0
        super().on_message_begin()

    def on_headers_complete(self) -> None:
        if self._header_bytes + self._read > self.max_header_bytes and self._header_size() > self.max_header_bytes:
            self._headers_too_large = True
            raise ValueError("request headers too large")  # httptools stops parsing: send_400_response
        self._in_headers = False
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None
        super().on_headers_complete()

    def _header_size(self) -> int:
        return len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)

    def _reject_headers(self) -> None:
        self.transport.write(HEADERS_TOO_LARGE)
        self.transport.close()

    def send_400_response(self, msg: str) -> None:
        if self._headers_too_large:
            self._reject_headers()
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
