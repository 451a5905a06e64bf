"""Same computation, two names: features whose canonical SQL lineage is identical.

A feature's *canonical expression* is the SQL that computes it, rewritten by sqlglot so that
names chosen by the author no longer matter:

1. take the feature column's expression in its model's compiled SQL (sqlglot lineage, the
   same qualification as ``column_lineage``) without its alias;
2. replace every column it reads by that column's own canonical expression, recursively
   through CTEs, subqueries and upstream dbt models, down to the source (or seed) columns,
   which are written ``"source_name.table.column"``; a plain pass-through (``select amount``)
   is its input unchanged, so ``t.amount``, ``transactions.amount`` and ``stg.amount`` are
   all ``"raw.transactions.amount"``;
3. append the filters of each SELECT on the way (WHERE, GROUP BY, HAVING, QUALIFY, JOIN ON,
   with table qualifiers dropped), so a sum over every payment is not a sum over online
   payments only;
4. render it in one dialect with normalized identifiers and spellings (``range`` / ``RANGE``,
   ``INTERVAL '1' DAY`` / ``DAYS``).

Two features with the same canonical expression compute the same values from the same
source columns under two names: duplicates. It is a conservative test — different SQL that
happens to be equivalent (``a + b`` vs ``b + a``) is not detected, and SQL sqlglot cannot
read makes a feature no one's duplicate.

Pure: reads registry objects only; results are cached per registry object.
"""

from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass
from typing import Any

from sqlglot import exp
from sqlglot.errors import SqlglotError
from sqlglot.lineage import Node
from sqlglot.lineage import lineage as sqlglot_lineage

from feature_layer.registry.column_lineage import _index_for, _table_key

_MODEL_TYPES = {"model", "snapshot"}
_FILTERS = ("where", "group", "having", "qualify")
_READ_ERRORS = (SqlglotError, ValueError, KeyError, AttributeError, RecursionError, TypeError)


@dataclass(frozen=True)
class DuplicateGroup:
    """Features (``view.feature``, sorted) that compute the same expression over the same columns."""

    features: tuple[str, ...]
    expression: str
    """The canonical expression they share (see the module docstring)."""
    source_columns: tuple[str, ...]
    """The source columns it reads, ``source_name.table.column``."""

    def to_dict(self) -> dict[str, Any]:
        return {"features": list(self.features), "expression": self.expression,
                "source_columns": list(self.source_columns)}


class _Canonicalizer:
    """Canonical expressions of one registry's columns, memoised per (dbt node, column)."""

    def __init__(self, registry: Any) -> None:
        self.registry = registry
        self.index = _index_for(registry)
        self.dialect = self.index.dialect
        self._roots: dict[str, dict[str, Node] | None] = {}
        self._memo: dict[tuple[str, str], tuple[str, frozenset[str]] | None] = {}

    def roots(self, unique_id: str) -> dict[str, Node] | None:
        if unique_id not in self._roots:
            node = self.index.nodes.get(unique_id)
            sql = getattr(node, "compiled_sql", None)
            found = None
            if sql:
                for expand in (True, False):
                    try:
                        roots = sqlglot_lineage(None, sql, schema=self.index.schema, dialect=self.dialect,
                                                expand_alias_refs=expand)
                    except _READ_ERRORS:
                        continue
                    if isinstance(roots, dict):
                        found = {str(k).lower(): v for k, v in roots.items()}
                    break
            self._roots[unique_id] = found
        return self._roots[unique_id]

    def column(self, unique_id: str, column: str, depth: int = 0) -> tuple[str, frozenset[str]] | None:
        """(canonical SQL, source columns) of ``column`` of dbt node ``unique_id``; None if unreadable."""
        key = (unique_id, column.lower())
        if key in self._memo:
            return self._memo[key]
        self._memo[key] = None  # a cycle (never in dbt) ends as unreadable
        node = self.index.nodes.get(unique_id)
        if node is None or getattr(node, "resource_type", "") not in _MODEL_TYPES or depth > 50:
            leaf = f"{_display(unique_id, node)}.{column.lower()}"
            result: tuple[str, frozenset[str]] | None = (_quoted(leaf), frozenset({leaf}))
        else:
            roots = self.roots(unique_id)
            root = roots.get(column.lower()) if roots else None
            result = None if root is None else self.node(root, depth)
        self._memo[key] = result
        return result

    def node(self, lnode: Node, depth: int) -> tuple[str, frozenset[str]] | None:
        if isinstance(lnode.source, exp.Table):
            table = lnode.source
            uid = self.index.resolve_table(_table_key((table.catalog, table.db, table.name)))
            column = lnode.name.rsplit(".", 1)[-1].strip('"`[]')
            if uid is None:
                leaf = f"{'.'.join(_table_key((table.catalog, table.db, table.name)))}.{column.lower()}"
                return _quoted(leaf), frozenset({leaf})
            return self.column(uid, column, depth + 1)
        expression = lnode.expression
        if isinstance(expression, exp.Alias):
            expression = expression.this
        children = {c.name.replace('"', "").replace("`", "").lower(): c for c in lnode.downstream}
        if isinstance(expression, exp.Column) and len(lnode.downstream) == 1:
            return self.node(lnode.downstream[0], depth)  # a pass-through keeps its input's identity
        tree = expression.copy()
        sources: set[str] = set()
        for col in list(tree.find_all(exp.Column)):
            child = children.get(_column_key(col))
            if child is None and not col.table:
                child = children.get(col.name.lower())
            if child is None:
                col.replace(exp.column(col.name))  # unresolved (e.g. inside a subquery): by name only
                continue
            canonical = self.node(child, depth)
            if canonical is None:
                return None
            sources |= canonical[1]
            replacement = exp.Var(this=canonical[0])  # already canonical SQL: rendered as is
            if col is tree:
                tree = replacement
            else:
                col.replace(replacement)
        text = _render(tree, self.dialect)
        filters = _filters(lnode.source, self.dialect)
        if filters:  # braces keep an inlined expression's filters apart from its parent's SQL
            text = "{" + text + filters + "}"
        return text, frozenset(sources)


def _column_key(col: exp.Column) -> str:
    return f"{col.table}.{col.name}".lower() if col.table else col.name.lower()


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def normalize_spelling(tree: exp.Expression) -> exp.Expression:
    """Spellings that mean the same: window frame keywords in any case (``range`` / ``RANGE``,
    ``preceding``), interval units singular or plural (``DAY`` / ``DAYS``). In place."""
    for node in tree.walk():
        if isinstance(node, exp.WindowSpec):
            for key in ("kind", "start_side", "end_side", "start", "end"):
                value = node.args.get(key)
                if isinstance(value, str):
                    node.set(key, value.upper())
        elif isinstance(node, exp.Interval):
            unit = node.args.get("unit")
            if isinstance(unit, exp.Var):
                name = unit.name.upper()
                node.set("unit", exp.Var(this=name[:-1] if name.endswith("S") and len(name) > 3 else name))
    return tree


def _render(tree: exp.Expression, dialect: str) -> str:
    try:
        return normalize_spelling(tree).sql(dialect=dialect, normalize=True)
    except _READ_ERRORS:
        return tree.sql()


def _filters(select: Any, dialect: str) -> str:
    """The row filters of the SELECT an expression sits in, qualifiers dropped."""
    if not isinstance(select, exp.Select):
        return ""
    parts = []
    for key in _FILTERS:
        clause = select.args.get(key)
        if clause is not None:
            parts.append(_render(_unqualified(clause), dialect))  # "WHERE …", "GROUP BY …"
    for join in select.args.get("joins") or ():
        on = join.args.get("on")
        if on is not None:
            parts.append(f"JOIN ON {_render(_unqualified(on), dialect)}")
    return "".join(f" {p}" for p in parts)


def _unqualified(clause: exp.Expression) -> exp.Expression:
    tree = clause.copy()
    for col in list(tree.find_all(exp.Column)):
        col.replace(exp.column(col.name))
    return tree


def _display(unique_id: str, node: Any) -> str:
    """``raw.transactions`` for a source, the node's name otherwise."""
    if node is not None and getattr(node, "resource_type", "") == "source":
        parts = unique_id.split(".")
        return f"{parts[-2]}.{node.name}" if len(parts) >= 4 else node.name
    return getattr(node, "name", None) or unique_id


def canonical_expressions(registry: Any) -> dict[str, tuple[str, frozenset[str]]]:
    """Feature reference → (canonical expression, source columns), for every readable feature."""
    return _cached(registry)[0]


def duplicate_groups(registry: Any) -> list[DuplicateGroup]:
    """Every set of two or more features with the same canonical expression, largest first."""
    return _cached(registry)[1]


def duplicates_of(registry: Any, ref: str) -> list[str]:
    """The other features computing what ``ref`` computes (empty when none, or unreadable)."""
    for group in duplicate_groups(registry):
        if ref in group.features:
            return [f for f in group.features if f != ref]
    return []


def _compute(registry: Any) -> tuple[dict[str, tuple[str, frozenset[str]]], list[DuplicateGroup]]:
    canon = _Canonicalizer(registry)
    out: dict[str, tuple[str, frozenset[str]]] = {}
    views = getattr(registry, "views", {}) or {}
    for view in views.values():
        if view.unique_id not in canon.index.nodes:
            continue
        for feature in view.features:
            try:
                found = canon.column(view.unique_id, feature.name)
            except _READ_ERRORS:
                found = None
            if found is not None and found[1]:  # a constant reads no column: no computation to share
                out[feature.ref] = found
    by_expression: dict[str, list[str]] = {}
    for ref, (text, _) in out.items():
        by_expression.setdefault(text, []).append(ref)
    groups = [DuplicateGroup(tuple(sorted(refs)), text, tuple(sorted(out[refs[0]][1])))
              for text, refs in by_expression.items() if len(refs) > 1]
    groups.sort(key=lambda g: (-len(g.features), g.features))
    return out, groups


_lock = threading.Lock()
_cache: list[tuple[weakref.ReferenceType[Any], Any]] = []


def _cached(registry: Any) -> tuple[dict[str, tuple[str, frozenset[str]]], list[DuplicateGroup]]:
    with _lock:
        for ref, value in _cache:
            if ref() is registry:
                return value
    value = _compute(registry)
    with _lock:
        _cache[:] = [(r, v) for r, v in _cache if r() is not None][-3:]
        _cache.append((weakref.ref(registry), value))
    return value


def duplicates_payload(registry: Any, ref: str) -> list[dict[str, str]]:
    """The ``duplicates`` key of ``GET /v1/features/{name}``: the other features computing the
    same thing, each ``{"ref", "view", "name", "url", "expression"}`` (the shared canonical SQL).
    Unreadable SQL (or an error reading it) gives an empty list, never a failed page."""
    try:
        others = duplicates_of(registry, ref)
        expression = canonical_expressions(registry).get(ref, ("", frozenset()))[0]
    except _READ_ERRORS:
        return []
    return [{"ref": other, "view": other.partition(".")[0], "name": other.partition(".")[2],
             "url": f"/#/feature/{other}", "expression": expression} for other in others]
