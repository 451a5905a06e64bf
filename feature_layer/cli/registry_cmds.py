"""Registry commands: features, show, lineage, validate (search: ``cli/search_cmds.py``)."""

from __future__ import annotations

from typing import Any

import click

from feature_layer.cli.base import Context, echo_json, handle_errors, main, render_table
from feature_layer.durations import format_duration
from feature_layer.errors import plural
from feature_layer.registry.model import Feature
from feature_layer.registry.registry import LineageNode, Registry


def describe_counts(summary: dict[str, int]) -> str:
    """'3 entities, 1 feature service, …' with singular and plural right."""
    parts = []
    for key, count in summary.items():
        many = key.replace("_", " ")
        one = many[:-3] + "y" if many.endswith("ies") else many.removesuffix("s")
        parts.append(plural(count, one, many))
    return ", ".join(parts)


def feature_record(registry: Registry, feature: Feature) -> dict[str, Any]:
    """Everything known about a feature, as plain JSON-able data (CLI and HTTP share it)."""
    view = registry.view(feature.view)
    return {
        "name": feature.ref,
        "feature": feature.name,
        "view": view.name,
        "dtype": feature.dtype,
        "sql_type": feature.sql_type,
        "description": feature.description,
        "entities": list(view.entities),
        "join_keys": list(view.join_keys),
        "event_time": view.event_time,
        "created_at": view.created_at,
        "ttl": format_duration(view.ttl) if view.ttl else None,
        "online": view.online,
        "owner": view.owner,
        "tags": sorted(set(view.tags) | set(feature.tags)),
        "file_path": view.file_path,
        "checksum": view.checksum,
        "unique_id": view.unique_id,
        "relation": ".".join(view.relation.parts()) if view.relation else None,
        "services": [s.name for s in registry.services_using(feature.ref)],
        "compiled_sql": view.compiled_sql,
    }


@main.command()
@click.option("--entity", help="Only features of this entity.")
@click.option("--tag", help="Only features with this tag.")
@click.option("--owner", help="Only features of this owner.")
@click.option("--view", help="Only features of this feature view.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
@handle_errors
def features(ctx: Context, entity: str | None, tag: str | None, owner: str | None, view: str | None, as_json: bool) -> None:
    """List features."""
    registry = ctx.registry
    found = registry.features(entity=entity, tag=tag, owner=owner, view=view)
    if as_json:
        echo_json([feature_record(registry, f) | {"compiled_sql": None} for f in found])
        return
    rows = []
    for f in found:
        v = registry.view(f.view)
        rows.append((f.ref, f.dtype, ", ".join(v.entities), format_duration(v.ttl) if v.ttl else "-",
                     v.owner or "-", f.description))
    render_table(["feature", "type", "entities", "ttl", "owner", "description"], rows,
                 title=plural(len(rows), "feature"))


@main.command()
@click.argument("feature")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
@handle_errors
def show(ctx: Context, feature: str, as_json: bool) -> None:
    """Show one feature (VIEW.FEATURE): type, entities, TTL, owner, SQL, services."""
    registry = ctx.registry
    record = feature_record(registry, registry.feature(feature))
    if as_json:
        echo_json(record)
        return
    for key, value in record.items():
        if key == "compiled_sql":
            continue
        if isinstance(value, list):
            value = ", ".join(value) or "-"
        click.echo(f"{click.style(key + ':', bold=True):<28} {value if value not in (None, '') else '-'}")
    if record["compiled_sql"]:
        click.echo(click.style("compiled SQL:", bold=True))
        click.echo(record["compiled_sql"].strip())


def _print_tree(node: LineageNode, prefix: str = "", last: bool = True, top: bool = True) -> None:
    branch = "" if top else ("└── " if last else "├── ")
    click.echo(f"{prefix}{branch}{node.name} [{node.resource_type}] {click.style(node.file_path, dim=True)}")
    extension = "" if top else ("    " if last else "│   ")
    for i, child in enumerate(node.children):
        _print_tree(child, prefix + extension, i == len(node.children) - 1, top=False)


@main.command()
@click.argument("feature")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
@handle_errors
def lineage(ctx: Context, feature: str, as_json: bool) -> None:
    """Lineage of a feature: upstream to sources and seeds, downstream to exposures."""
    result = ctx.registry.lineage(feature)
    if as_json:
        echo_json(result.to_dict())
        return
    click.secho("upstream (model ← its parents):", bold=True)
    _print_tree(result.upstream)
    click.secho("downstream:", bold=True)
    for node in result.downstream:
        _print_tree(node)
    if not result.downstream:
        click.echo("(nothing downstream)")
    if result.services:
        click.secho("feature services (ML exposures) using it: ", bold=True, nl=False)
        click.echo(", ".join(result.services))


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
@handle_errors
def validate(ctx: Context, as_json: bool) -> None:
    """Check every feature declaration; print all problems found (exit 1 if any)."""
    from feature_layer.registry.registry import Registry

    registry = Registry.load(ctx.store.settings, strict=False)
    if as_json:
        echo_json({"ok": not registry.issues, "summary": registry.summary(),
                   "issues": [issue.__dict__ for issue in registry.issues],
                   "broken_views": sorted(registry.broken_views), "broken_services": sorted(registry.broken_services)})
    elif registry.issues:
        click.secho(f"{plural(len(registry.issues), 'problem')} in feature declarations:", fg="red", err=True)
        for issue in registry.issues:
            click.echo(issue.render(), err=True)
    else:
        s = registry.summary()
        click.secho(f"OK: {describe_counts(s)}.", fg="green")
    if registry.issues:
        raise SystemExit(1)
