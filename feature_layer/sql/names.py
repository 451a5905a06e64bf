"""Quoted names for generated SQL: identifiers from users and dbt are never pasted in bare.

Shared by every builder (point-in-time joins, latest values, statistics) so quoting is
decided in one place.
"""

from __future__ import annotations

from sqlglot import exp

from feature_layer.registry.model import FeatureView, Relation


def ident(name: str) -> exp.Identifier:
    """A quoted identifier."""
    return exp.to_identifier(name, quoted=True)


def col(name: str, table: str | None = None) -> exp.Column:
    """A quoted column reference, optionally qualified by a quoted table alias."""
    return exp.Column(this=ident(name), table=ident(table) if table else None)


def relation_table(view: FeatureView, alias: str | None = None) -> exp.Table:
    """The warehouse relation of a view as a fully quoted table reference."""
    return quoted_table(view.relation, alias)


def quoted_table(rel: Relation, alias: str | None = None) -> exp.Table:
    """Any dbt relation (model, seed, source) as a fully quoted table reference."""
    return exp.Table(
        this=ident(rel.identifier),
        db=ident(rel.schema) if rel.schema else None,
        catalog=ident(rel.database) if rel.database else None,
        alias=exp.TableAlias(this=ident(alias)) if alias else None,
    )
