"""Can a view stream, and with which SQL: the per-entity proof and the micro-batch rewrite.

A view streams from a source when every output row depends only on source rows with the same
join keys (within a lookback). That is checked on the *compiled* SQL of every model between the
source and the view, one sqlglot scope (CTE, derived table, subquery) at a time:

* a window over rows from the source is partitioned by the join keys;
* an aggregate over rows from the source groups by the join keys;
* a join of two relations derived from the source is on equal join keys; a join to any other
  relation reads it as a dimension table (an outer join that keeps dimension rows without
  events is refused: those rows exist whatever the events say);
* no scalar/IN/EXISTS subquery, LIMIT or OFFSET reads rows from the source.

Anything else is refused with the construct named. The lookback (how much of an entity's
history a micro-batch needs) is the largest RANGE window; an unbounded frame, a ROWS frame, a
navigation function (first_value, row_number…) or a GROUP BY needs the entity's whole history
(``lookback=None``). ``lag(x, n)`` / ``lead(x, n)`` with a literal offset, partitioned by the join
keys and ordered by the event time, needs only the ``n`` rows just before the newest one
(``preceding_rows``). A scope on the path that filters rows (WHERE, HAVING, QUALIFY, DISTINCT, an
inner join) makes either bound wrong — "n source rows before" is not "n rows before", and a dropped
row can leave an entity's latest output row older than the horizon — so then the whole history is read.

The rewrite (:func:`rewrite_model`) replaces, in each model's compiled SQL, the source relation by
the micro-batch's input table and each upstream model on the path by its local view: the SQL
dbt runs over history is the SQL the stream runs over each micro-batch. Pure: no IO.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Protocol

import sqlglot
import sqlglot.expressions as exp
from sqlglot.optimizer.scope import Scope, traverse_scope

from feature_layer.dbt.artifacts import DbtNode
from feature_layer.errors import ValidationIssue
from feature_layer.registry.model import FeatureView
from feature_layer.stream.declaration import StreamSpec
from feature_layer.stream.newest import constant_offset

INPUT_TABLE = "__fl_stream_input"
"""The micro-batch's source rows: history of the affected entities plus the new events."""

_NAVIGATION = (exp.Lag, exp.Lead, exp.FirstValue, exp.LastValue, exp.NthValue, exp.RowNumber)
_NAVIGATION_NAMES = {"rank", "dense_rank", "percent_rank", "cume_dist", "ntile", "row_number", "lag", "lead",
                     "first_value", "last_value", "nth_value"}
_UNIT_SECONDS = {"microsecond": 1e-6, "millisecond": 1e-3, "second": 1, "minute": 60, "hour": 3600, "day": 86400,
                 "week": 7 * 86400, "month": 31 * 86400, "quarter": 92 * 86400, "year": 366 * 86400}


@dataclass(frozen=True)
class StreamSource:
    """The upstream relation whose new rows arrive as events."""

    name: str
    """As views name it: ``raw.transactions`` (a dbt source) or a seed/model name."""
    unique_id: str
    node: DbtNode
    location: str | None = None
    """File sources (dbt-duckdb ``external_location``): the path or glob as the compiled SQL reads it."""

    def matches(self, table: exp.Table) -> bool:
        """Is ``table`` (in compiled SQL) this source's relation?"""
        if self.location is not None:
            return not table.db and table.name == self.location
        rel = self.node.relation
        if rel is None:
            return False
        if table.name.lower() != rel.identifier.lower():
            return False
        return not table.db or table.db.lower() == rel.schema.lower()


@dataclass(frozen=True)
class StreamPlan:
    """How one view streams: its source, the models from the source to it, and its lookback."""

    view: FeatureView
    spec: StreamSpec
    source: StreamSource
    models: tuple[DbtNode, ...]
    """The models between the source and the view, in build order, the view last."""
    dimensions: tuple[DbtNode, ...]
    """Other relations those models read (dimension tables), copied once at start."""
    lookback: timedelta | None
    """History a micro-batch reads per entity; None: all of it."""
    derived_lookback: timedelta | None
    event_time: str
    """The source's event-time column (the view's, under the same name)."""
    dialect: str
    preceding_rows: int = 0
    """Besides the lookback, the rows just before it a micro-batch reads per entity (``lag(x, n)``'s n)."""

    @property
    def keys(self) -> tuple[str, ...]:
        return self.view.join_keys

    def describe_lookback(self) -> str:
        """``30 days, 0:00:00 + 1 preceding row``, or ``whole entity history``."""
        if self.lookback is None:
            return "whole entity history"
        rows = self.preceding_rows
        return f"{self.lookback}" + (f" + {rows} preceding row{'s' if rows > 1 else ''}" if rows else "")


class Graph(Protocol):
    """What the plan reads of dbt's graph: a Manifest or a Registry."""

    nodes: dict[str, DbtNode]
    parent_map: dict[str, tuple[str, ...]]


def _issue(code: str, message: str, fix: str, node: DbtNode | None) -> ValidationIssue:
    return ValidationIssue(code=code, message=message, fix=fix, unique_id=node.unique_id if node else None,
                           file=node.file_path if node else None,
                           yaml_file=node.yaml_path if node and node.yaml_path != node.file_path else None)


def resolve_source(manifest: Graph, name: str, project_dir: Path | None = None) -> DbtNode | None:
    """The source (``<source>.<table>``), seed or model named ``name`` in ``stream.source``."""
    for node in manifest.nodes.values():
        if node.resource_type == "source":
            parts = node.unique_id.split(".")
            if len(parts) >= 4 and ".".join(parts[2:]) == name:
                return node
        elif node.resource_type in {"seed", "model"} and node.name == name:
            return node
    return None


def _ancestors(manifest: Graph, unique_id: str) -> set[str]:
    seen: set[str] = set()
    todo = [unique_id]
    while todo:
        for parent in manifest.parent_map.get(todo.pop(), ()):
            if parent not in seen:
                seen.add(parent)
                todo.append(parent)
    return seen


def path_models(manifest: Graph, source_id: str, view_id: str) -> list[DbtNode]:
    """Models that read ``source_id`` (directly or not) and that ``view_id`` reads, in build order."""
    on_path = {n for n in _ancestors(manifest, view_id) | {view_id} if source_id in _ancestors(manifest, n)}
    ordered: list[str] = []

    def visit(uid: str) -> None:
        if uid in ordered or uid not in on_path:
            return
        for parent in manifest.parent_map.get(uid, ()):
            visit(parent)
        ordered.append(uid)

    visit(view_id)
    return [manifest.nodes[u] for u in ordered]


def _file_location(node: DbtNode) -> str | None:
    meta = node.meta or {}
    location = meta.get("external_location") or (node.config.get("meta") or {}).get("external_location")
    if not isinstance(location, str) or not location:
        return None
    return location.format(name=node.name)


def _source_table_name(source: DbtNode, sql: exp.Expression) -> str | None:
    """The file path/glob as the compiled SQL of the first model reads it (project_file anchors it)."""
    location = _file_location(source)
    if location is None:
        return None
    tables = list(sql.find_all(exp.Table))
    for table in tables:
        if not table.db and (table.name == location or table.name.endswith("/" + location.lstrip("./"))):
            return table.name
    relation = StreamSource(name=source.name, unique_id=source.unique_id, node=source)
    if any(relation.matches(t) for t in tables):
        return None  # the SQL reads the warehouse relation (external_location is dbt-duckdb's only): a table source
    return location


def parse_sql(node: DbtNode, dialect: str) -> exp.Expression:
    return sqlglot.parse_one(node.compiled_sql or "", read=dialect)


# --- the per-entity proof ---------------------------------------------------------------------------


def _names(expressions: list[exp.Expression] | None) -> set[str]:
    return {e.name.lower() for e in expressions or [] if isinstance(e, exp.Column)}


def _scope_label(scope: Scope, node: DbtNode) -> str:
    parent = scope.expression.parent
    if isinstance(parent, exp.CTE):
        return f"CTE `{parent.alias}` of {node.name}"
    if isinstance(parent, exp.Subquery) and parent.alias:
        return f"subquery `{parent.alias}` of {node.name}"
    return f"the main SELECT of {node.name}" if scope.is_root else f"a subquery of {node.name}"


def _short(expression: exp.Expression, dialect: str, limit: int = 110) -> str:
    text = re.sub(r"\s+", " ", expression.sql(dialect=dialect))
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _interval_seconds(node: exp.Expression) -> float | None:
    """Seconds of the largest INTERVAL literal under ``node`` (None when there is none)."""
    found: list[float] = []
    for interval in node.find_all(exp.Interval):
        text = interval.this.name if interval.this is not None else ""
        unit = interval.unit.name if interval.unit is not None else ""
        match = re.match(r"^\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*$", text.lower())
        if not match:
            return None
        unit = (unit or match.group(2) or "second").lower().rstrip("s")
        if unit not in _UNIT_SECONDS:
            return None
        found.append(float(match.group(1)) * _UNIT_SECONDS[unit])
    return max(found) if found else None


def _window_lookback(window: exp.Window) -> tuple[bool, float | None]:
    """(bounded, seconds) a window needs before the row: RANGE n PRECEDING … CURRENT ROW is bounded."""
    if isinstance(window.this, _NAVIGATION) or window.this.sql_name().lower() in _NAVIGATION_NAMES:
        return False, None
    spec = window.args.get("spec")
    if spec is None or str(spec.args.get("kind", "")).upper() != "RANGE":
        return False, None
    start = spec.args.get("start")
    if not isinstance(start, exp.Expression) or spec.args.get("start_side", "").upper() != "PRECEDING":
        return False, None
    end = spec.args.get("end")
    if not (isinstance(end, str) and end.upper() == "CURRENT ROW"):
        return False, None
    if not constant_offset(start):
        return False, None  # a per-row offset (e.g. `h * INTERVAL 1 HOUR`): no bound known before the row
    seconds = _interval_seconds(start)
    return (seconds is not None), seconds


def _offset_rows(window: exp.Window, event_time: str) -> int | None:
    """Rows before the newest row that ``lag``/``lead`` with a literal offset, ordered by the event
    time, reads (None: not such a function, or not bounded that way)."""
    func = window.this
    if not isinstance(func, (exp.Lag, exp.Lead)):
        return None
    offset = func.args.get("offset")
    if offset is None:
        n = 1
    elif isinstance(offset, exp.Literal) and not offset.is_string and offset.name.isdigit():
        n = int(offset.name)
    else:
        return None
    order = window.args.get("order")
    ordered = order.expressions if order is not None else []
    if len(ordered) != 1 or not isinstance(ordered[0].this, exp.Column):
        return None
    if ordered[0].this.name.lower() != event_time.lower():
        return None
    descending = bool(ordered[0].args.get("desc"))
    looks_back = isinstance(func, exp.Lag) != descending  # lag ascending or lead descending: older rows
    return n if looks_back else 0


def _filters(select: exp.Select) -> str | None:
    """The clause of a path scope that drops rows (None when it keeps every row)."""
    for clause in ("where", "having", "qualify", "distinct"):
        if select.args.get(clause) is not None:
            return clause.upper()
    for join in select.args.get("joins") or []:
        if (join.side or "").upper() != "LEFT":
            return "an inner join"
    return None


def _is_path_source(source: Any, path_tables: set[str], path_scopes: set[int], plan_source: StreamSource,
                    locals_: dict[str, str]) -> bool:
    if isinstance(source, Scope):
        return id(source) in path_scopes
    if isinstance(source, exp.Table):
        if plan_source.matches(source):
            return True
        return _table_key(source) in path_tables
    return False


def _table_key(table: exp.Table) -> str:
    return ".".join(p.name.lower() for p in table.parts)


def _relation_keys(node: DbtNode) -> set[str]:
    rel = node.relation
    if rel is None:
        return set()
    parts = [p.lower() for p in rel.parts()]
    return {".".join(parts[i:]) for i in range(len(parts))}


def _group_names(select: exp.Select) -> set[str]:
    group = select.args.get("group")
    if group is None:
        return set()
    projections = select.expressions
    out: set[str] = set()
    for item in group.expressions:
        if isinstance(item, exp.Literal) and not item.is_string and item.name.isdigit():
            index = int(item.name) - 1
            if 0 <= index < len(projections):
                target = projections[index]
                item = target.this if isinstance(target, exp.Alias) else target
        if isinstance(item, exp.Column):
            out.add(item.name.lower())
        else:
            for projection in projections:
                if isinstance(projection, exp.Alias) and projection.alias.lower() == item.name.lower():
                    if isinstance(projection.this, exp.Column):
                        out.add(projection.this.name.lower())
    return out


def _own(select: exp.Select, node_type: type[exp.Expression]) -> list[exp.Expression]:
    """Nodes of ``node_type`` in ``select`` itself, not in its nested SELECTs."""
    return [n for n in select.find_all(node_type) if n.find_ancestor(exp.Select) is select]


@dataclass
class Needs:
    """What the windows of the path need of an entity's history."""

    lookbacks: list[float | None]
    """Seconds each construct needs before the newest row (None: the whole history)."""
    preceding: list[int]
    """Rows just before that each ``lag``/``lead`` with a literal offset reads."""
    filters: list[str]
    """Path scopes that drop rows (named), which make ``preceding`` count the wrong rows."""


def check_model(
    node: DbtNode,
    tree: exp.Expression,
    keys: tuple[str, ...],
    source: StreamSource,
    path_tables: set[str],
    dialect: str,
    event_time: str = "",
) -> tuple[list[ValidationIssue], Needs]:
    """Issues that make ``node`` not per-entity, and what of an entity's history its constructs need."""
    issues: list[ValidationIssue] = []
    needs = Needs([], [], [])
    lookbacks = needs.lookbacks
    wanted = {k.lower() for k in keys}
    shown_keys = ", ".join(keys)
    path_scopes: set[int] = set()
    fix = (f"stream only views whose rows depend on one entity's source rows: partition windows and GROUP BY by "
           f"{shown_keys}, join other source-derived relations on {shown_keys}; or leave `stream:` out and "
           "refresh the view with `dbt build` + `feature-layer materialize`.")

    def refuse(code: str, scope: Scope, what: str) -> None:
        issues.append(_issue(code, f"{node.name} cannot stream from {source.name}: in {_scope_label(scope, node)}, "
                             f"{what}", fix, node))

    for scope in traverse_scope(tree):
        sub_path = [s for s in scope.subquery_scopes if id(s) in path_scopes]
        sources = {name: _is_path_source(src, path_tables, path_scopes, source, {})
                   for name, (_, src) in scope.selected_sources.items()}
        union_path = any(id(s) in path_scopes for s in scope.set_operation_scopes)
        if not (any(sources.values()) or sub_path or union_path):
            continue
        path_scopes.add(id(scope))
        select = scope.expression
        for sub in sub_path:
            refuse("stream-subquery", scope, f"the subquery `{_short(sub.expression, dialect)}` reads rows of "
                   f"{source.name} for every entity at once.")
        if isinstance(select, exp.Select) and (dropped := _filters(select)) is not None:
            needs.filters.append(f"{dropped} in {_scope_label(scope, node)}")
        elif isinstance(select, exp.Union) and select.args.get("distinct"):
            needs.filters.append(f"UNION in {_scope_label(scope, node)}")
        if not isinstance(select, exp.Select) or not any(sources.values()):
            continue
        for window in _own(select, exp.Window):
            if not wanted <= _names(window.args.get("partition_by")):
                refuse("stream-window", scope, f"the window `{_short(window, dialect)}` is not partitioned by "
                       f"{shown_keys}: each row would depend on other entities' rows.")
                continue
            rows = _offset_rows(window, event_time) if event_time else None
            if rows is not None:
                needs.preceding.append(rows)
                continue
            bounded, seconds = _window_lookback(window)
            lookbacks.append(seconds if bounded else None)
        aggregates = [a for a in _own(select, exp.AggFunc) if a.find_ancestor(exp.Window) is None]
        if aggregates or select.args.get("group") is not None:
            if not wanted <= _group_names(select):
                what = _short(aggregates[0], dialect) if aggregates else _short(select.args["group"], dialect)
                refuse("stream-aggregate", scope, f"`{what}` aggregates rows of {source.name} "
                       f"{'without GROUP BY' if select.args.get('group') is None else 'not grouped by'} {shown_keys}.")
            else:
                lookbacks.append(None)
        for clause in ("limit", "offset"):
            if select.args.get(clause) is not None:
                refuse("stream-limit", scope, f"`{_short(select.args[clause], dialect)}` keeps some rows of "
                       f"{source.name} and drops others regardless of entity.")
        _check_joins(select, scope, sources, wanted, shown_keys, source, dialect, refuse)
    return issues, needs


def _check_joins(select: exp.Select, scope: Scope, sources: dict[str, bool], wanted: set[str], shown_keys: str,
                 source: StreamSource, dialect: str, refuse: Any) -> None:
    joins = select.args.get("joins") or []
    if not joins:
        return
    from_ = select.args.get("from") or select.args.get("from_")
    first = from_.this if from_ is not None else None
    first_name = first.alias_or_name if isinstance(first, exp.Expression) else ""
    path_seen = [first_name] if sources.get(first_name) else []
    for join in joins:
        name = join.this.alias_or_name
        side = (join.side or "").upper()
        is_path = sources.get(name, False)
        if not is_path:
            if side in {"FULL"} and path_seen:
                refuse("stream-join", scope, f"the FULL JOIN of `{name}` keeps its rows without events of "
                       f"{source.name}.")
            continue
        if not path_seen and side in {"LEFT", "FULL"} or (side == "RIGHT" and path_seen):
            pass
        if side in {"RIGHT", "FULL"} or (not path_seen and side == "LEFT"):
            refuse("stream-join", scope, f"`{_short(join, dialect)}` keeps rows of a dimension table that have no "
                   f"events of {source.name}.")
        if path_seen:
            on = join.args.get("on")
            equal = set()
            for eq in (on.find_all(exp.EQ) if on is not None else []):
                left, right = eq.this, eq.expression
                if isinstance(left, exp.Column) and isinstance(right, exp.Column) and left.name.lower() == right.name.lower():
                    equal.add(left.name.lower())
            using = {c.name.lower() for c in join.args.get("using") or []}
            if not wanted <= equal | using:
                refuse("stream-join", scope, f"`{_short(join, dialect)}` joins two relations derived from "
                       f"{source.name} without equal {shown_keys}.")
        path_seen.append(name)


def plan_stream(manifest: Graph, view: FeatureView, dialect: str) -> tuple[StreamPlan | None, list[ValidationIssue]]:
    """The view's stream plan, or the issues that refuse it (each naming the construct)."""
    node = manifest.nodes.get(view.unique_id)
    spec = view.stream
    if spec is None:
        return None, [_issue("not-streaming", f"feature view {view.name!r} declares no stream.",
                             "add `stream: {source: <source>.<table>, event_id: <column>}` to its meta.feature_layer "
                             "block, then run `dbt parse`.", node)]
    source_node = resolve_source(manifest, spec.source)
    if source_node is None:
        known = sorted(".".join(n.unique_id.split(".")[2:]) for n in manifest.nodes.values()
                       if n.resource_type == "source")
        return None, [_issue("stream-unknown-source", f"stream.source {spec.source!r} of {view.name!r} is not a dbt "
                             "source, seed or model of this project.",
                             f"name one of the sources ({', '.join(known) or 'none'}) or a seed/model.", node)]
    models = path_models(manifest, source_node.unique_id, view.unique_id)
    if not models or models[-1].unique_id != view.unique_id:
        return None, [_issue("stream-not-upstream", f"{view.name!r} does not read {spec.source!r} (not even through "
                             "other models), so its events cannot change it.",
                             "name the source the view's models select from in stream.source.", node)]
    missing = [m.name for m in models if not m.compiled_sql]
    if missing:
        return None, [_issue("stream-not-compiled", f"the compiled SQL of {', '.join(missing)} is not in the manifest.",
                             "run `dbt compile` (or `dbt build`) so target/manifest.json holds compiled SQL.", node)]
    trees = {m.unique_id: parse_sql(m, dialect) for m in models}
    location = _source_table_name(source_node, trees[models[0].unique_id])
    source = StreamSource(name=spec.source, unique_id=source_node.unique_id, node=source_node, location=location)
    issues: list[ValidationIssue] = []
    needs = Needs([], [], [])
    path_tables: set[str] = set()
    on_path = {m.unique_id for m in models}
    dimensions: dict[str, DbtNode] = {}
    for model in models:
        found, needed = check_model(model, trees[model.unique_id], view.join_keys, source, path_tables, dialect,
                                    view.event_time)
        issues += found
        needs.lookbacks += needed.lookbacks
        needs.preceding += needed.preceding
        needs.filters += needed.filters
        path_tables |= _relation_keys(model)
        for parent in manifest.parent_map.get(model.unique_id, ()):
            if parent not in on_path and parent != source_node.unique_id and parent in manifest.nodes:
                dimensions[parent] = manifest.nodes[parent]
    if issues:
        return None, issues
    columns = {c.lower() for c in (source_node.catalog_names or ())} | set(source_node.columns)
    event_time = view.event_time
    if columns and event_time.lower() not in columns and spec.event_id.lower() not in columns:
        pass  # a file source has no catalog columns: checked against the files at start
    derived, preceding = _derived_lookback(needs)
    if spec.lookback is not None and (derived is None or spec.lookback < derived):
        need = "the whole history of an entity" if derived is None else f"{derived}"
        if preceding:
            need += f" and the {preceding} row(s) before it"
        return None, [_issue("stream-lookback", f"stream.lookback {spec.lookback} of {view.name!r} is shorter than "
                             f"what its SQL needs ({need}: its largest window, or an unbounded one such as lag() or "
                             "window=none): streamed values would differ from `dbt build`'s.",
                             "leave lookback out (it is derived from the windows) or make it at least that long.", node)]
    lookback = spec.lookback if spec.lookback is not None else derived
    return StreamPlan(view=view, spec=spec, source=source, models=tuple(models), dimensions=tuple(dimensions.values()),
                      lookback=lookback, derived_lookback=derived, event_time=event_time, dialect=dialect,
                      preceding_rows=preceding if lookback is not None else 0), []


def _derived_lookback(needs: Needs) -> tuple[timedelta | None, int]:
    """(lookback, preceding rows) the path's constructs need together: the largest RANGE window plus
    the largest ``lag`` offset; the whole history (None, 0) when one construct is unbounded, or when a
    path filters rows: a dropped row can make an entity's latest output row older than the horizon
    (so its windows would miss rows), and "n source rows before" is not "n rows before"."""
    preceding = max(needs.preceding, default=0)
    if any(s is None for s in needs.lookbacks) or needs.filters:
        return None, 0
    if not needs.lookbacks:
        return (timedelta(0), preceding) if needs.preceding else (None, 0)
    return timedelta(seconds=max(s for s in needs.lookbacks if s is not None)), preceding


def declaration_issues(graph: Graph, views: dict[str, FeatureView], dialect: str) -> list[ValidationIssue]:
    """Issues of every view declaring ``stream:`` whose compiled SQL cannot stream (``feature-layer
    validate``); views not compiled yet (after ``dbt parse`` only) are checked when streaming starts."""
    issues: list[ValidationIssue] = []
    for view in views.values():
        if view.stream is None:
            continue
        try:
            plan, found = plan_stream(graph, view, dialect)
        except Exception as exc:  # noqa: BLE001 - a check that crashes is an issue, never a failed load
            node = graph.nodes.get(view.unique_id)
            found = [_issue("stream-unreadable-sql", f"the compiled SQL between {view.stream.source} and "
                            f"{view.name} could not be checked ({type(exc).__name__}: "
                            f"{(str(exc).splitlines() or [''])[0]}).",
                            "simplify the SQL, or leave `stream:` out.", node)]
        issues += [i for i in found if i.code != "stream-not-compiled"]
    return issues


# --- the rewrite -------------------------------------------------------------------------------------


def local_name(node: DbtNode) -> str:
    """The local (embedded DuckDB) name of a model or dimension relation."""
    return f"__fl_m_{re.sub(r'[^0-9A-Za-z_]', '_', node.name)}"


def rewrite_model(plan: StreamPlan, node: DbtNode, input_table: str = INPUT_TABLE, suffix: str = "") -> exp.Expression:
    """``node``'s compiled SQL with the source as ``input_table`` and every other relation as its
    local copy (path models, named ``local_name(model) + suffix``, and dimension tables), as a DuckDB tree."""
    tree = parse_sql(node, plan.dialect)
    locals_: dict[str, str] = {}
    on_path = {m.unique_id for m in plan.models}
    for other in (*plan.models, *plan.dimensions):
        for key in _relation_keys(other):
            if "." in key:  # schema.identifier at least: a bare name could be a CTE
                locals_[key] = local_name(other) + (suffix if other.unique_id in on_path else "")

    def swap(table: exp.Expression) -> exp.Expression:
        if not isinstance(table, exp.Table) or isinstance(table.parent, (exp.Column,)):
            return table
        alias = table.args.get("alias")
        if plan.source.matches(table):
            replaced = exp.Table(this=exp.to_identifier(input_table, quoted=True))
        elif _table_key(table) in locals_:
            replaced = exp.Table(this=exp.to_identifier(locals_[_table_key(table)], quoted=True))
        else:
            return table
        if alias is None:
            alias = exp.TableAlias(this=exp.to_identifier(table.name, quoted=True))
        replaced.set("alias", alias)
        return replaced

    return tree.transform(swap, copy=False)


__all__ = ["INPUT_TABLE", "Needs", "StreamPlan", "StreamSource", "local_name", "path_models", "plan_stream", "resolve_source",
           "rewrite_model"]
