"""Column-level lineage: from raw source columns, through intermediate models, to a feature
and on to the ML models (dbt exposures of type ``ml``) that use it.

Each model's compiled SQL is qualified by sqlglot against a schema built from the catalog's
column types, and :func:`sqlglot.lineage.lineage` gives, for every output column, the table
columns it reads. Those tables are mapped back to dbt nodes by their warehouse relation, and
the walk repeats upstream until it reaches sources, seeds or SQL it cannot see through.

Pure: reads registry objects only; per-model results are cached per registry object, so a
page view costs one sqlglot pass per model the first time and nothing afterwards.
"""

from __future__ import annotations

import re
import threading
import weakref
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlglot import exp
from sqlglot.errors import SqlglotError
from sqlglot.lineage import lineage as sqlglot_lineage

from feature_layer.errors import UnknownFeatureError

DEFAULT_DIALECT = "duckdb"
_MODEL_TYPES = {"model", "snapshot"}


@dataclass(frozen=True)
class ColumnNode:
    """A column of a dbt node (or, for an exposure, the ML model itself)."""

    id: str
    unique_id: str
    name: str
    """The dbt node's name (model, source table, seed or exposure)."""
    column: str | None
    resource_type: str
    kind: str
    """``source`` (source or seed), ``model``, ``feature`` (the one asked for), ``exposure``
    or ``external`` (a table no dbt node describes)."""
    sql_type: str | None = None
    expression: str | None = None
    """How the model computes this column (SQL), when it is not a plain pass-through."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "unique_id": self.unique_id,
            "name": self.name,
            "column": self.column,
            "resource_type": self.resource_type,
            "kind": self.kind,
            "sql_type": self.sql_type,
            "expression": self.expression,
        }


@dataclass(frozen=True)
class ColumnEdge:
    source: str
    target: str

    def to_dict(self) -> dict[str, str]:
        return {"source": self.source, "target": self.target}


@dataclass(frozen=True)
class ColumnLineage:
    """A feature's column graph: nodes ordered upstream first, edges from input to output."""

    feature: str
    root: str
    nodes: tuple[ColumnNode, ...]
    edges: tuple[ColumnEdge, ...]
    warnings: tuple[str, ...] = ()

    def node(self, node_id: str) -> ColumnNode:
        for node in self.nodes:
            if node.id == node_id:
                return node
        raise KeyError(node_id)

    def upstream(self, node_id: str) -> list[ColumnNode]:
        return [self.node(e.source) for e in self.edges if e.target == node_id]

    @property
    def sources(self) -> list[ColumnNode]:
        return [n for n in self.nodes if n.kind in ("source", "external")]

    @property
    def exposures(self) -> list[ColumnNode]:
        return [n for n in self.nodes if n.kind == "exposure"]

    def to_dict(self) -> dict[str, Any]:
        return {
            "feature": self.feature,
            "root": self.root,
            "nodes": [n.to_dict() for n in self.nodes],
            "edges": [e.to_dict() for e in self.edges],
            "warnings": list(self.warnings),
        }


@dataclass
class _ModelColumns:
    """For one model: output column → (upstream table key, column) pairs, and its SQL."""

    inputs: dict[str, list[tuple[tuple[str, ...], str]]] = field(default_factory=dict)
    expressions: dict[str, str] = field(default_factory=dict)
    error: str | None = None


def node_column_types(node: Any) -> dict[str, str]:
    """Column → SQL type of a dbt node, whichever shape its ``columns`` take."""
    types = getattr(node, "column_types", None)
    if isinstance(types, Mapping) and types:
        return {str(k).lower(): str(v or "") for k, v in types.items()}
    out: dict[str, str] = {}
    for name, col in (getattr(node, "columns", None) or {}).items():
        out[str(name).lower()] = str(col if isinstance(col, str) else getattr(col, "data_type", "") or "")
    return out


def _table_key(parts: Iterable[str | None]) -> tuple[str, ...]:
    return tuple(p.lower() for p in parts if p)


class _LineageIndex:
    """Relations and schema of one registry, plus a cache of per-model column maps."""

    def __init__(self, registry: Any) -> None:
        self.nodes: Mapping[str, Any] = getattr(registry, "nodes", {}) or {}
        self.dialect = str(getattr(registry, "dialect", None) or DEFAULT_DIALECT)
        self.by_relation: dict[tuple[str, ...], str] = {}
        self.by_file_stem: dict[str, list[str]] = {}
        schema: dict[str, Any] = {}
        three_level = all(
            n.relation.database for n in self.nodes.values() if getattr(n, "relation", None) is not None
        )
        for uid, node in self.nodes.items():
            relation = getattr(node, "relation", None)
            if relation is None:
                continue
            key = _table_key(relation.parts())
            for i in range(len(key)):
                self.by_relation.setdefault(key[i:], uid)
            location = _external_location(node)
            if location:
                self.by_relation.setdefault((location.lower(),), uid)
                self.by_file_stem.setdefault(relation.identifier.lower(), []).append(uid)
            columns = node_column_types(node)
            if not columns:
                continue
            typed = {name: _safe_type(t, self.dialect) for name, t in columns.items()}
            if three_level:
                schema.setdefault(relation.database.lower(), {}).setdefault(relation.schema.lower(), {})[
                    relation.identifier.lower()] = typed
            else:
                schema.setdefault(relation.schema.lower(), {})[relation.identifier.lower()] = typed
        self.schema = schema
        self._models: dict[str, _ModelColumns] = {}
        self._lock = threading.Lock()

    def resolve_table(self, key: tuple[str, ...]) -> str | None:
        for i in range(len(key)):
            uid = self.by_relation.get(key[i:])
            if uid is not None:
                return uid
        # an external file read directly (dbt-duckdb sources with external_location)
        # (its stem before any extension or glob: transactions*.parquet reads transactions.*.parquet files)
        stem = re.split(r"[.*?\[]", key[-1].replace("\\", "/").rsplit("/", 1)[-1], maxsplit=1)[0] if key else ""
        candidates = self.by_file_stem.get(stem, [])
        return candidates[0] if len(candidates) == 1 else None

    def model_columns(self, unique_id: str) -> _ModelColumns:
        with self._lock:
            cached = self._models.get(unique_id)
        if cached is not None:
            return cached
        result = self._compute(unique_id)
        with self._lock:
            self._models[unique_id] = result
        return result

    def _compute(self, unique_id: str) -> _ModelColumns:
        node = self.nodes[unique_id]
        sql = getattr(node, "compiled_sql", None)
        out = _ModelColumns()
        if not sql:
            out.error = f"{unique_id} has no compiled SQL; run `dbt compile` (or `dbt build`) so lineage can see through it."
            return out
        try:
            roots = sqlglot_lineage(None, sql, schema=self.schema, dialect=self.dialect)
        except (SqlglotError, ValueError, KeyError, AttributeError, RecursionError):
            # Tables without known columns (external files, sources missing from the catalog)
            # make alias references ambiguous; resolving names literally still gives lineage.
            try:
                roots = sqlglot_lineage(None, sql, schema=self.schema, dialect=self.dialect, expand_alias_refs=False)
            except (SqlglotError, ValueError, KeyError, AttributeError, RecursionError) as exc:
                out.error = f"sqlglot could not read the compiled SQL of {unique_id}: {str(exc).splitlines()[0][:200]}"
                return out
        assert isinstance(roots, dict)
        for column, root in roots.items():
            inputs: list[tuple[tuple[str, ...], str]] = []
            for lnode in root.walk():
                if lnode.downstream or not isinstance(lnode.source, exp.Table):
                    continue
                table = lnode.source
                key = _table_key((table.catalog, table.db, table.name))
                upstream_column = lnode.name.rsplit(".", 1)[-1].strip('"`[]').lower()
                if (key, upstream_column) not in inputs:
                    inputs.append((key, upstream_column))
            name = str(column).lower()
            out.inputs[name] = inputs
            expression = root.expression
            if isinstance(expression, exp.Alias):
                expression = expression.this
            if not isinstance(expression, exp.Column):
                out.expressions[name] = expression.sql(dialect=self.dialect)
        return out


def _external_location(node: Any) -> str | None:
    """Where a dbt-duckdb source reads its file from (``meta``/``config`` ``external_location``)."""
    if getattr(node, "resource_type", "") != "source":
        return None
    meta = getattr(node, "meta", None) or {}
    config = getattr(node, "config", None) or {}
    location = meta.get("external_location") or config.get("external_location")
    if not isinstance(location, str) or getattr(node, "relation", None) is None:
        return None
    identifier = node.relation.identifier
    try:
        return location.format(name=identifier, identifier=identifier)
    except (KeyError, IndexError, ValueError):
        return location


def _safe_type(sql_type: str, dialect: str) -> str:
    if not sql_type:
        return "UNKNOWN"
    try:
        exp.DataType.build(sql_type, dialect=dialect)
    except (SqlglotError, ValueError):
        return "UNKNOWN"
    return sql_type


_cache_lock = threading.Lock()
_cache: list[tuple[weakref.ReferenceType[Any], _LineageIndex]] = []


def _index_for(registry: Any) -> _LineageIndex:
    with _cache_lock:
        for ref, index in _cache:
            if ref() is registry:
                return index
    index = _LineageIndex(registry)
    with _cache_lock:
        _cache[:] = [(r, i) for r, i in _cache if r() is not None][-3:]
        _cache.append((weakref.ref(registry), index))
    return index


def _find_view_feature(registry: Any, ref: str) -> tuple[Any, str]:
    view_name, dot, feature_name = ref.partition(".")
    views = getattr(registry, "views", {})
    view = views.get(view_name) if dot else None
    if view is None:
        from feature_layer.registry.declarations import close_matches

        raise UnknownFeatureError(
            f"No feature view {view_name!r} (in {ref!r}).{close_matches(view_name, views)}",
            fix="write the feature as `view.feature`; `feature-layer features` lists every feature.",
        )
    for feature in view.features:
        if feature.name.lower() == feature_name.lower():
            return view, feature.name
    from feature_layer.registry.declarations import close_matches

    raise UnknownFeatureError(
        f"Feature view {view_name!r} has no feature {feature_name!r}.{close_matches(feature_name, view.feature_names)}",
        fix=f"use one of: {', '.join(view.feature_names)}.",
    )


def column_lineage(registry: Any, ref: str, *, max_nodes: int = 500) -> ColumnLineage:
    """The column graph of feature ``ref`` (``view.feature``) in ``registry``.

    Raises :class:`UnknownFeatureError` for an unknown reference. Models whose SQL sqlglot
    cannot read end the walk there; the graph says so in ``warnings``.
    """
    view, feature_name = _find_view_feature(registry, ref)
    index = _index_for(registry)
    nodes: dict[str, ColumnNode] = {}
    edges: list[ColumnEdge] = []
    warnings: list[str] = []

    def make_node(uid: str, column: str, kind: str | None = None) -> ColumnNode:
        dbt_node = index.nodes.get(uid)
        resource_type = getattr(dbt_node, "resource_type", "model") if dbt_node is not None else "model"
        if kind is None:
            kind = "model" if resource_type in _MODEL_TYPES else "source"
        name = getattr(dbt_node, "name", uid.rsplit(".", 1)[-1]) if dbt_node is not None else uid
        if dbt_node is not None and resource_type == "source":
            relation = getattr(dbt_node, "relation", None)
            source_name = uid.split(".")[-2] if uid.count(".") >= 3 else ""
            name = f"{source_name}.{name}" if source_name else (relation.identifier if relation else name)
        types = node_column_types(dbt_node) if dbt_node is not None else {}
        return ColumnNode(id=f"{uid}:{column}", unique_id=uid, name=name, column=column,
                          resource_type=resource_type, kind=kind, sql_type=types.get(column.lower()) or None)

    root_uid = view.unique_id
    root = make_node(root_uid, feature_name, kind="feature")
    if root_uid not in index.nodes:
        root = ColumnNode(id=f"{root_uid}:{feature_name}", unique_id=root_uid, name=view.name,
                          column=feature_name, resource_type="model", kind="feature",
                          sql_type=next((f.sql_type for f in view.features if f.name == feature_name), None))
    nodes[root.id] = root
    queue: deque[ColumnNode] = deque([root])
    warned: set[str] = set()
    while queue and len(nodes) < max_nodes:
        current = queue.popleft()
        dbt_node = index.nodes.get(current.unique_id)
        if dbt_node is None or getattr(dbt_node, "resource_type", "") not in _MODEL_TYPES:
            continue
        model = index.model_columns(current.unique_id)
        if model.error:
            if current.unique_id not in warned:
                warnings.append(model.error)
                warned.add(current.unique_id)
            continue
        column = (current.column or "").lower()
        if column in model.expressions and current.expression is None:
            nodes[current.id] = current = ColumnNode(**{**current.__dict__, "expression": model.expressions[column]})
        for key, upstream_column in model.inputs.get(column, []):
            uid = index.resolve_table(key)
            if uid is None:
                table = ".".join(key)
                upstream = ColumnNode(id=f"{table}:{upstream_column}", unique_id=table, name=table,
                                      column=upstream_column, resource_type="table", kind="external")
            else:
                upstream = make_node(uid, upstream_column)
            edge = ColumnEdge(upstream.id, current.id)
            if edge not in edges:
                edges.append(edge)
            if upstream.id not in nodes:
                nodes[upstream.id] = upstream
                queue.append(upstream)
    if queue:
        warnings.append(f"lineage of {ref} was cut at {max_nodes} columns.")

    for service in getattr(registry, "services", {}).values():
        refs = {r.lower() for r in service.features}
        if f"{view.name}.{feature_name}".lower() in refs:
            node = ColumnNode(id=service.unique_id, unique_id=service.unique_id, name=service.name, column=None,
                              resource_type="exposure", kind="exposure")
            nodes[node.id] = node
            edges.append(ColumnEdge(root.id, node.id))

    ordered = _upstream_first(nodes, edges)
    return ColumnLineage(feature=f"{view.name}.{feature_name}", root=root.id, nodes=ordered,
                         edges=tuple(edges), warnings=tuple(warnings))


def _upstream_first(nodes: dict[str, ColumnNode], edges: list[ColumnEdge]) -> tuple[ColumnNode, ...]:
    """Nodes in topological order (inputs before outputs), ties kept in discovery order."""
    incoming: dict[str, int] = {n: 0 for n in nodes}
    children: dict[str, list[str]] = {n: [] for n in nodes}
    for edge in edges:
        incoming[edge.target] += 1
        children[edge.source].append(edge.target)
    ready = deque(n for n in nodes if incoming[n] == 0)
    out: list[ColumnNode] = []
    while ready:
        n = ready.popleft()
        out.append(nodes[n])
        for child in children[n]:
            incoming[child] -= 1
            if incoming[child] == 0:
                ready.append(child)
    seen = {n.id for n in out}
    out.extend(n for k, n in nodes.items() if k not in seen)  # cycles cannot occur in dbt, but stay total
    return tuple(out)


def depth_of(lineage: ColumnLineage) -> dict[str, int]:
    """Layer of each node for drawing: sources at 0, each node one right of its deepest input."""
    depth: dict[str, int] = {}
    parents: dict[str, list[str]] = {}
    for edge in lineage.edges:
        parents.setdefault(edge.target, []).append(edge.source)
    for node in lineage.nodes:
        depth[node.id] = max((depth.get(p, 0) + 1 for p in parents.get(node.id, [])), default=0)
    return depth
