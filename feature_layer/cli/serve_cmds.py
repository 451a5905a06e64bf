"""``feature-layer serve`` (HTTP API + web UI) and ``feature-layer column-lineage``."""

from __future__ import annotations

import os

import click

from feature_layer.cli.base import Context, echo_json, handle_errors, main
from feature_layer.server import DEFAULT_HEADER_TIMEOUT, DEFAULT_KEEP_ALIVE_TIMEOUT, DEFAULT_MAX_HEADER_BYTES


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to bind (0.0.0.0 for all).")
@click.option("--port", default=8080, show_default=True, type=click.IntRange(1, 65535), help="TCP port.")
@click.option("--reload-interval", default=2.0, show_default=True, type=click.FloatRange(min=0),
              help="Seconds between checks of target/manifest.json for a new registry (0: never reload).")
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64),
              help="uvicorn worker processes (one per core for throughput).")
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["critical", "error", "warning", "info", "debug"]))
@click.option("--lookup-deadline", default=1.5, show_default=True, type=click.FloatRange(min=0.01),
              help="Seconds an online lookup may take (online-store IO included) before it fails with a 504.")
@click.option("--header-timeout", default=DEFAULT_HEADER_TIMEOUT, show_default=True, type=click.FloatRange(min=0.1),
              help="Seconds a client has to send its request line and headers (slow or idle clients get a 408).")
@click.option("--keep-alive-timeout", default=DEFAULT_KEEP_ALIVE_TIMEOUT, show_default=True,
              type=click.IntRange(min=1), help="Seconds an idle keep-alive connection is kept open.")
@click.option("--max-header-bytes", default=DEFAULT_MAX_HEADER_BYTES, show_default=True,
              type=click.IntRange(min=1024), help="Largest request line + headers accepted (larger: 431).")
@click.pass_obj
@handle_errors
def serve(ctx: Context, host: str, port: int, reload_interval: float, workers: int, log_level: str,
          lookup_deadline: float, header_timeout: float, keep_alive_timeout: int, max_header_bytes: int) -> None:
    """Serve the HTTP API (online features, search, lineage, metrics) and the web UI."""
    import uvicorn

    from feature_layer.server.protocol import HEADER_TIMEOUT_ENV, MAX_HEADER_BYTES_ENV, uvicorn_options
    from feature_layer.server.reload import holder_for_store

    store = ctx.store
    holder = holder_for_store(store)  # load now: a missing or unreadable manifest fails here, with its message
    click.echo(f"feature_layer: {len(holder.registry.views)} feature views; UI and API on http://{host}:{port}/",
               err=True)
    if store.settings.auth is not None:  # ops2
        click.echo(f"feature_layer: access control on, {len(store.settings.auth.grants)} token(s) "
                   "(auth: in feature_layer.yml; /healthz and the UI shell stay open)", err=True)
    from feature_layer.server.health import broken_views

    for name, messages in broken_views(holder.registry).items():
        click.secho(f"warning: feature view {name!r} is not served: {messages[0]} (see /healthz)", fg="yellow",
                    err=True)
    loop = "uvloop" if _has("uvloop") else "asyncio"
    os.environ[HEADER_TIMEOUT_ENV] = str(header_timeout)  # read by every worker's protocol
    os.environ[MAX_HEADER_BYTES_ENV] = str(max_header_bytes)
    http = uvicorn_options(keep_alive_timeout)
    if workers > 1:
        os.environ["FEATURE_LAYER_PROJECT_DIR"] = str(store.project_dir)
        if ctx.target:
            os.environ["FEATURE_LAYER_TARGET"] = ctx.target
        os.environ["FEATURE_LAYER_RELOAD_INTERVAL"] = str(reload_interval)
        os.environ["FEATURE_LAYER_LOOKUP_DEADLINE"] = str(lookup_deadline)
        store.close()
        uvicorn.run("feature_layer.server.app:app_from_env", factory=True, host=host, port=port, workers=workers,
                    loop=loop, log_level=log_level, access_log=False, **http)
        return
    from feature_layer.server.app import Limits, create_app

    app = create_app(store, reload_interval=reload_interval or None, limits=Limits(lookup_deadline=lookup_deadline),
                     holder=holder)
    uvicorn.run(app, host=host, port=port, loop=loop, log_level=log_level, access_log=False, **http)


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


@main.command("column-lineage")
@click.argument("feature")
@click.option("--json", "as_json", is_flag=True, help="Print the graph as JSON (nodes and edges).")
@click.pass_obj
@handle_errors
def column_lineage(ctx: Context, feature: str, as_json: bool) -> None:
    """Column-level lineage of FEATURE (view.feature): source columns → models → feature → ML models."""
    from feature_layer.registry.column_lineage import column_lineage as build

    graph = build(ctx.store.registry, feature)
    if as_json:
        echo_json(graph.to_dict())
        return
    click.secho(graph.feature, bold=True)
    _print_upstream(graph, graph.root, prefix="", seen=set())
    for exposure in graph.exposures:
        click.echo(f"  ↳ used by ML model {exposure.name} ({exposure.unique_id})")
    for warning in graph.warnings:
        click.secho(f"warning: {warning}", fg="yellow", err=True)


def _label(node) -> str:  # noqa: ANN001 - ColumnNode
    kind = {"source": "source", "external": "table", "model": "model", "feature": "feature"}.get(node.kind, node.kind)
    typ = f" {node.sql_type}" if node.sql_type else ""
    expr = f"  = {node.expression}" if node.expression else ""
    return f"{node.name}.{node.column} [{kind}{typ}]{expr}"


def _print_upstream(graph, node_id: str, prefix: str, seen: set[str]) -> None:  # noqa: ANN001
    parents = graph.upstream(node_id)
    for i, parent in enumerate(parents):
        last = i == len(parents) - 1
        click.echo(f"{prefix}{'└── ' if last else '├── '}{_label(parent)}")
        if parent.id in seen:
            continue
        seen.add(parent.id)
        _print_upstream(graph, parent.id, prefix + ("    " if last else "│   "), seen)
