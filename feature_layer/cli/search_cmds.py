"""``feature-layer search`` (every object, ranked together) and ``feature-layer duplicates``."""

from __future__ import annotations

import click

from feature_layer.cli.base import Context, echo_json, handle_errors, main, render_table
from feature_layer.registry.search import KINDS, search_objects


@main.command()
@click.argument("text")
@click.option("--kind", "kinds", multiple=True, type=click.Choice(KINDS),
              help="Only objects of this kind (repeatable).")
@click.option("--entity", help="Only objects of this entity.")
@click.option("--tag", help="Only objects with this tag.")
@click.option("--owner", help="Only objects of this owner.")
@click.option("--view", help="Only features of this feature view.")
@click.option("--limit", type=click.IntRange(1, 1000), default=20, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON (the shape of GET /v1/search).")
@click.pass_obj
@handle_errors
def search(ctx: Context, text: str, kinds: tuple[str, ...], entity: str | None, tag: str | None, owner: str | None,
           view: str | None, limit: int, as_json: bool) -> None:
    """Search features, feature views, entities, ML models, sources and models (ranked, typos forgiven)."""
    registry = ctx.registry
    if entity is not None:
        registry.entity(entity)
    if view is not None:
        registry.view(view)
    result = search_objects(registry, text, kinds=kinds or None,
                            filters={"entity": entity, "tag": tag, "owner": owner, "view": view}, limit=limit)
    if as_json:
        echo_json(result.to_dict())
        return
    if not result.results:
        hint = f" Did you mean: {', '.join(repr(s) for s in result.did_you_mean)}?" if result.did_you_mean else ""
        click.echo(f"Nothing matches {text!r}.{hint} Try fewer words, or `feature-layer features` to list features.")
        return
    if result.did_you_mean:
        click.echo(f"(did you mean: {', '.join(result.did_you_mean)})")
    render_table(["kind", "name", "score", "matched", "description"],
                 [(m.kind, m.title, f"{m.score:.2f}", ", ".join(m.matched), m.description.strip())
                  for m in result.results])


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON: a list of groups.")
@click.pass_obj
@handle_errors
def duplicates(ctx: Context, as_json: bool) -> None:
    """Features that compute the same thing under two names (same canonical SQL over the same columns)."""
    from feature_layer.registry.duplicates import duplicate_groups

    groups = duplicate_groups(ctx.registry)
    if as_json:
        echo_json([g.to_dict() for g in groups])
        return
    if not groups:
        click.echo("No duplicates: no two features compute the same expression over the same source columns.")
        return
    for group in groups:
        click.echo(click.style(" = ".join(group.features), bold=True))
        click.echo(f"  reads {', '.join(group.source_columns)}")
        click.echo(f"  computes {group.expression}")
