"""Prometheus metrics without a client library: counters and histograms in plain dicts.

Recording costs a dict update and a bisect per request, on the event-loop thread (no locks
needed). With several uvicorn workers each process reports its own series; scrape each
worker, or run one worker per port behind the load balancer.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Iterable
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

# The method is the caller's to choose: any other value is counted as "other", so a client
# sending made-up methods cannot create unbounded series. Routes are templates (never paths).
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED = "<unmatched>"

BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(pairs: Iterable[tuple[str, str]]) -> str:
    inner = ",".join(f'{k}="{_escape(str(v))}"' for k, v in pairs)
    return "{" + inner + "}" if inner else ""


def _num(value: float) -> str:
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


class Metrics:
    """Request counts and latency histograms by route template, plus counters set by the app."""

    def __init__(self) -> None:
        self.requests: dict[tuple[str, str, int], int] = {}
        self.latency: dict[str, list[float]] = {}  # route -> bucket counts..., then sum, count
        self.counters: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        self.started = time.time()

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        if method not in METHODS:
            method = "other"
        key = (method, route, status)
        self.requests[key] = self.requests.get(key, 0) + 1
        series = self.latency.get(route)
        if series is None:
            series = self.latency[route] = [0.0] * (len(BUCKETS) + 3)  # buckets, +Inf, sum, count
        series[bisect_left(BUCKETS, seconds)] += 1  # index len(BUCKETS) is +Inf only
        series[-2] += seconds
        series[-1] += 1

    def inc(self, name: str, value: float = 1.0, **labels: str) -> None:
        key = (name, tuple(sorted(labels.items())))
        self.counters[key] = self.counters.get(key, 0.0) + value

    def render(self, gauges: Iterable[tuple[str, str, dict[str, str], float]] = ()) -> str:
        """Prometheus text format 0.0.4. ``gauges``: (name, help, labels, value) computed at scrape."""
        out: list[str] = [
            "# HELP feature_layer_http_requests_total HTTP requests served, by method, route template and status.",
            "# TYPE feature_layer_http_requests_total counter",
        ]
        for (method, route, status), count in sorted(self.requests.items()):
            out.append(f"feature_layer_http_requests_total"
                       f"{_labels([('method', method), ('route', route), ('status', str(status))])} {count}")
        out += [
            "# HELP feature_layer_http_request_duration_seconds Time from request to last response byte.",
            "# TYPE feature_layer_http_request_duration_seconds histogram",
        ]
        for route, series in sorted(self.latency.items()):
            cumulative = 0.0
            for bound, count in zip(BUCKETS, series, strict=False):
                cumulative += count
                out.append(f"feature_layer_http_request_duration_seconds_bucket"
                           f"{_labels([('route', route), ('le', _num(bound))])} {_num(cumulative)}")
            out.append(f"feature_layer_http_request_duration_seconds_bucket"
                       f"{_labels([('route', route), ('le', '+Inf')])} {_num(series[-1])}")
            out.append(f"feature_layer_http_request_duration_seconds_sum{_labels([('route', route)])} {series[-2]!r}")
            out.append(f"feature_layer_http_request_duration_seconds_count{_labels([('route', route)])} {_num(series[-1])}")
        names_seen: set[str] = set()
        for (name, labels), value in sorted(self.counters.items()):
            if name not in names_seen:
                out.append(f"# TYPE {name} counter")
                names_seen.add(name)
            out.append(f"{name}{_labels(labels)} {_num(value)}")
        for name, help_text, labels, value in gauges:
            if name not in names_seen:
                out.append(f"# HELP {name} {help_text}")
                out.append(f"# TYPE {name} gauge")
                names_seen.add(name)
            out.append(f"{name}{_labels(sorted(labels.items()))} {_num(value)}")
        out.append(f"# TYPE feature_layer_process_start_time_seconds gauge\n"
                   f"feature_layer_process_start_time_seconds {self.started!r}")
        return "\n".join(out) + "\n"


class MetricsMiddleware:
    """Pure ASGI middleware (no BaseHTTPMiddleware task overhead) timing every HTTP request.

    It also adds ``headers`` (the security headers) to every response it passes on.
    """

    def __init__(self, app: ASGIApp, metrics: Metrics, headers: Iterable[tuple[bytes, bytes]] = ()) -> None:
        self.app = app
        self.metrics = metrics
        self.headers = list(headers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                if self.headers:
                    message["headers"] = [*message.get("headers", ()), *self.headers]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route: Any = scope.get("route")
            template = getattr(route, "path", None) or UNMATCHED  # a template: /v1/features/{name}
            self.metrics.observe(scope["method"], template, status, time.perf_counter() - start)
