"""The join-key-mapping pass of the training-set query (see ``feature_layer.registry.join_keys``).

The point-in-time builders treat a mapped use (``MappedView``) like any view whose join keys
are the entity columns it reads (``payee_id``). This pass, run on the finished tree, makes the
feature rows carry those names: inside the CTEs of that use, every read of the view's relation
becomes a subquery that selects the view's key columns under the entity columns' names and
the columns the builders read (event time, created-at, features) as they are::

    FROM "main"."user_profile_features" AS "f"
    →  FROM (SELECT "user_id" AS "payee_id", "signup_at", … FROM "main"."user_profile_features") AS "f"

Everything else (spine, joins, tie-break order, TTL, type conformance) is untouched, so a
mapped use has exactly the semantics of the plain one with the keys taken elsewhere.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from sqlglot import exp

from feature_layer.registry.join_keys import MappedView, output_suffix
from feature_layer.registry.model import Feature, FeatureView
from feature_layer.sql.names import col, ident, relation_table

FULL_NAME_SEPARATOR = "__"


def output_name(view: FeatureView, feature: Feature, full_feature_names: bool) -> str:
    """A feature's output column: ``feature`` or ``view__feature``, then a mapped use's suffix."""
    base = view.source_name if isinstance(view, MappedView) else view.name
    name = f"{base}{FULL_NAME_SEPARATOR}{feature.name}" if full_feature_names else feature.name
    return name + output_suffix(view)


def renamed_relation(view: MappedView, alias: str | None) -> exp.Subquery:
    """The view's relation with its key columns under the entity columns' names."""
    keys = [exp.alias_(col(source), target, quoted=True) for source, target in zip(view.source_keys, view.join_keys,
                                                                                    strict=True)]
    rest = list(dict.fromkeys(c for c in (view.event_time, view.created_at, *view.feature_names)
                              if c and c not in view.join_keys))
    select = exp.select(*keys, *[col(c) for c in rest]).from_(relation_table(view))
    return select.subquery(ident(alias) if alias else None)


def _same_relation(table: exp.Table, view: FeatureView) -> bool:
    rel = view.relation
    return (table.name == rel.identifier and (table.db or None) == (rel.schema or None)
            and (table.catalog or None) == (rel.database or None))


def map_join_keys(query: exp.Select, outputs: Sequence[Any], cte_name: Callable[[int], str]) -> exp.Select:
    """Rewrite the CTEs of every mapped use (``outputs[i].view`` a ``MappedView``) in place."""
    mapped = {i: out.view for i, out in enumerate(outputs) if isinstance(out.view, MappedView)}
    if not mapped:
        return query
    owners = {}
    for index, view in mapped.items():
        name = cte_name(index)
        owners[name] = view
        for suffix in ("_ties", "_events"):
            owners[name + suffix] = view
    for cte in query.find_all(exp.CTE):
        view = owners.get(cte.alias_or_name)
        if view is None:
            continue
        for table in list(cte.this.find_all(exp.Table)):
            if _same_relation(table, view):
                table.replace(renamed_relation(view, table.alias or None))
    return query
