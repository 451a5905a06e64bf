"""Online commands: materialize, online-get, online-status."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import click

from feature_layer.cli.base import Context, echo_json, handle_errors, main, render_table
from feature_layer.cli.sql_cmds import JOIN_KEY_MAP_HELP, join_key_map_json
from feature_layer.durations import format_duration, parse_duration
from feature_layer.errors import InputError, plural


class _Timestamp(click.ParamType):
    """An ISO-8601 time (``2025-06-01``, ``2025-06-01T12:00:00Z``); naive means UTC."""

    name = "timestamp"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> datetime:
        if isinstance(value, datetime):
            return value
        try:
            parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        except ValueError:
            self.fail(f"{value!r} is not an ISO-8601 time such as 2025-06-01 or 2025-06-01T12:00:00Z", param, ctx)
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


TIMESTAMP = _Timestamp()


@main.command()
@click.option("--select", "-s", multiple=True, metavar="VIEW", help="Only these feature views (repeatable).")
@click.option("--start", type=TIMESTAMP, help="Re-read rows with event time from here (default: the watermark).")
@click.option("--end", type=TIMESTAMP, help="Latest values as of this time (default: now).")
@click.option("--full-refresh", is_flag=True, help="Delete the views' online keys and rewrite them from all rows.")
@click.option("--late-lookback", metavar="DURATION", default=None,
              help="How far before the created-at watermark to look for late rows, e.g. 1h, 2d, 0s (default 1h).")
@click.option("--no-progress", is_flag=True, help="Do not draw the progress bar.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_obj
@handle_errors
def materialize(
    obj: Context,
    select: tuple[str, ...],
    start: datetime | None,
    end: datetime | None,
    full_refresh: bool,
    late_lookback: str | None,
    no_progress: bool,
    as_json: bool,
) -> None:
    """Push the latest feature values per entity into the online store (incremental by default)."""
    lookback = None
    if late_lookback is not None:
        try:
            lookback = timedelta(0) if late_lookback.strip() in {"0", "0s"} else parse_duration(late_lookback)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--late-lookback") from None
    store = obj.store
    obj.registry  # noqa: B018 - loads it, warning once about any view left out
    result = store.materialize(
        list(select) or None,
        start=start,
        end=end,
        full_refresh=full_refresh,
        progress=not no_progress and not as_json,
        late_lookback=lookback,
    )
    if as_json:
        echo_json(result.to_dict())
        _fail_if_skipped(result.skipped)
        return
    rows = [
        (
            v.view,
            "full" if v.full_refresh else f"since {v.incremental_from:%Y-%m-%d %H:%M:%S}",
            f"{v.entities:,}",
            f"{v.rows_written:,}",
            f"{v.kept_newer:,}",
            f"{v.expired:,}",
            f"{v.seconds:.2f}",
            f"{v.watermark:%Y-%m-%d %H:%M:%S}" if v.watermark else "",
        )
        for v in result.views
    ]
    render_table(
        ["view", "read", "entities", "written", "kept newer", "expired", "seconds", "watermark (UTC)"],
        rows,
        title=f"Materialized into {store.online_store().describe()}",
    )
    _fail_if_skipped(result.skipped)


def _fail_if_skipped(skipped: dict[str, Any]) -> None:
    """A run that left views out is not a success: name them and exit 1 (the others were written)."""
    if skipped:
        click.secho(f"Error: skipped {plural(len(skipped), 'invalid feature view')}: {', '.join(sorted(skipped))}; "
                    "the other views were materialized.\nTo fix this, fix the problems `feature-layer validate` "
                    "lists, then materialize again.", fg="red", err=True)
        raise SystemExit(1)


def _parse_rows(entities: tuple[str, ...], rows_json: str | None) -> list[dict[str, Any]]:
    if rows_json:
        try:
            rows = json.loads(rows_json)
        except json.JSONDecodeError as exc:
            raise InputError(f"--rows is not valid JSON: {exc}.", fix="pass e.g. --rows '[{\"user_id\": 1}]'.") from exc
        if isinstance(rows, dict):
            rows = [rows]
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise InputError(
                "--rows must be a JSON object or a list of objects.", fix="pass e.g. --rows '[{\"user_id\": 1}]'."
            )
        return rows
    if not entities:
        raise InputError("No entity given.", fix="pass --entity user_id=42 (repeat for composite keys) or --rows JSON.")
    row: dict[str, Any] = {}
    for item in entities:
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise InputError(f"--entity {item!r} is not KEY=VALUE.", fix="write it as --entity user_id=42.")
        row[key] = int(value) if value.lstrip("-").isdigit() else value
    return [row]


@main.command("online-get")
@click.argument("features", nargs=-1)
@click.option("--service", help="Read the features of this feature service instead.")
@click.option("--entity", "-e", "entities", multiple=True, metavar="KEY=VALUE", help="A join key value (repeatable).")
@click.option("--rows", "rows_json", metavar="JSON", help="Entity rows as JSON: an object or a list of objects.")
@click.option("--event-times", is_flag=True, help="Also show each value's event time.")
@click.option("--join-key-map", "join_key_map", default=None, metavar="JSON", help=JOIN_KEY_MAP_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
@handle_errors
def online_get(
    obj: Context,
    features: tuple[str, ...],
    service: str | None,
    entities: tuple[str, ...],
    rows_json: str | None,
    event_times: bool,
    join_key_map: str | None,
    as_json: bool,
) -> None:
    """Look up online values: feature-layer online-get users.score -e user_id=42."""
    rows = _parse_rows(entities, rows_json)
    obj.registry  # noqa: B018 - loads it, warning once about any view left out
    response = obj.store.get_online_features(
        list(features) or None, rows, service=service, include_event_times=event_times,
        join_key_map=join_key_map_json(join_key_map),
    )
    if as_json:
        echo_json(response.to_rows())
        return
    data = response.to_dict()
    render_table(list(data), [list(r) for r in zip(*data.values(), strict=False)])


@main.command("online-status")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
@handle_errors
def online_status(obj: Context, as_json: bool) -> None:
    """Freshness of every online view: watermark, when it ran, rows written."""
    from feature_layer.freshness import freshness
    from feature_layer.online.layouts import layout_state

    store = obj.store
    now = store.clock.now()
    out = []
    for view in obj.registry.views.values():
        if not view.online:
            continue
        state = store.state.view_state(view.name)
        fresh = freshness(state.newest_event_time if state else None, view.ttl, now)
        layout = layout_state(store.online_store(), view)
        out.append(
            {
                "view": view.name,
                "status": fresh.status,
                "newest_event_time": fresh.newest_event_time.isoformat() if fresh.newest_event_time else None,
                "lag": format_duration(fresh.lag) if fresh.lag is not None and fresh.lag.total_seconds() > 0 else None,
                "lag_seconds": fresh.lag_seconds,
                "expired": fresh.expired,
                "watermark": state.watermark.event_time.isoformat() if state else None,
                "materialized_at": state.wall_time.isoformat() if state else None,
                "rows_written": state.rows_written if state else 0,
                "entities": state.entities if state else 0,
                "ttl": format_duration(view.ttl) if view.ttl else None,
                "layout": {
                    "active": layout.active,
                    "wanted": layout.wanted,
                    "stale": layout.stale,
                    "missing_features": list(layout.missing_features),
                },
            }
        )
    if as_json:
        echo_json({"online_store": store.online_store().describe(), "views": out})
        return
    render_table(
        ["view", "status", "newest event", "lag", "watermark", "materialized at", "entities", "written", "ttl",
         "layout"],
        [
            (
                o["view"],
                o["status"],
                o["newest_event_time"] or "",
                o["lag"] or "",
                o["watermark"] or "never",
                o["materialized_at"] or "",
                o["entities"],
                o["rows_written"],
                o["ttl"] or "",
                _layout_text(o["layout"]),
            )
            for o in out
        ],
        title=f"Online store {store.online_store().describe()}",
    )


def _layout_text(layout: dict[str, Any]) -> str:
    """Current, or stale with the features lookups serve as null until the next materialization."""
    if layout["active"] is None:
        return ""  # never materialized (the watermark column says so)
    if not layout["stale"]:
        return "current"
    missing = layout["missing_features"]
    return "stale" + (f" (not yet online: {', '.join(missing)})" if missing else " (rematerialize)")
