"""``stream`` (consume a view's events into the online store) and ``stream-check`` (can it stream?)."""

from __future__ import annotations

import logging
import signal
import threading
from typing import Any

import click

from feature_layer.cli.base import Context, handle_errors, main


def _serve_metrics(consumer: Any, port: int) -> Any:
    """A tiny Prometheus endpoint with the consumer's counters (GET /metrics)."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            if self.path.split("?")[0] != "/metrics":
                self.send_error(404, "only /metrics")
                return
            body = consumer.counters.prometheus().encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True, name="stream-metrics").start()
    return server


@main.command("stream")
@click.option("--select", "-s", "select", multiple=True, help="Feature view(s) to stream (default: every view "
              "declaring `stream:`; one source per process).")
@click.option("--consumer", default=None, help="Consumer name in the group (default from feature_layer.yml, else "
              "feature-layer-stream). A restarted consumer claims what its predecessor left pending.")
@click.option("--until-idle", type=click.FloatRange(min=0.1), default=None,
              help="Stop after this many seconds without events (default: run until Ctrl-C / SIGTERM).")
@click.option("--log-seconds", type=click.FloatRange(min=0.1), default=10.0, show_default=True,
              help="How often progress, lag and throughput are logged.")
@click.option("--metrics-port", type=click.IntRange(1, 65535), default=None,
              help="Serve the consumer's counters on http://127.0.0.1:PORT/metrics (Prometheus text).")
@click.pass_obj
@handle_errors
def stream(ctx: Context, select: tuple[str, ...], consumer: str | None, until_idle: float | None,
           log_seconds: float, metrics_port: int | None) -> None:
    """Consume events from the views' stream and keep their online values current, with the views' own SQL."""
    from feature_layer.stream.consumer import open_consumer

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    ctx.registry  # noqa: B018 - prints the one-line warning for views left out
    worker = open_consumer(ctx.store, list(select) or None, consumer=consumer, log_seconds=log_seconds)
    views = ", ".join(p.view.name for p in worker.pipeline.plans)
    lookbacks = ", ".join(f"{p.view.name}: {p.describe_lookback()}" for p in worker.pipeline.plans)
    click.echo(f"Streaming {views} from {worker.connection.stream} (group {worker.connection.group}, consumer "
               f"{worker.consumer}); lookback {lookbacks}; events landed in {worker.pipeline.log.pattern}.", err=True)
    if metrics_port:
        _serve_metrics(worker, metrics_port)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: worker.stop())
    try:
        counters = worker.run(until_idle=until_idle)
    finally:
        worker.pipeline.close()
    click.echo(f"Stopped: {counters.events:,} events ({counters.new:,} new, {counters.duplicates:,} duplicates, "
               f"{counters.rejected:,} dead-lettered, {counters.late:,} late), {counters.values_written:,} values "
               "written.", err=True)


@main.command("stream-check")
@click.argument("views", nargs=-1)
@click.pass_obj
@handle_errors
def stream_check(ctx: Context, views: tuple[str, ...]) -> None:
    """Say whether each view can stream from its `stream:` source (or from SOURCE given as view=SOURCE), and why not."""
    from dataclasses import replace

    from feature_layer.stream.declaration import StreamSpec
    from feature_layer.stream.plan import plan_stream

    registry = ctx.registry
    names = list(views) or sorted(registry.views)
    failed = False
    for item in names:
        name, _, source = item.partition("=")
        view = registry.view(name)
        if source:
            view = replace(view, stream=StreamSpec(source=source, event_id=view.stream.event_id if view.stream else "id"))
        if view.stream is None:
            click.echo(f"{name}: batch only (no `stream:`)")
            continue
        plan, issues = plan_stream(registry, view, registry.dialect)
        if plan is not None:
            click.echo(f"{name}: streams from {plan.source.name} (lookback: "
                       f"{plan.describe_lookback()}; models: {', '.join(m.name for m in plan.models)})")
        else:
            failed = True
            click.echo(f"{name}: cannot stream from {view.stream.source}:")
            for issue in issues:
                click.echo("  " + issue.render().replace("\n", "\n  "))
    if failed:
        raise SystemExit(1)
