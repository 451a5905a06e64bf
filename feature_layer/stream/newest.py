"""The newest-row pass: a view's windows computed for each entity's newest rows only.

A micro-batch keeps one output row per entity, the latest (``latest_values``: the newest event
time, ties broken by created-at and the features). The view's SQL, as dbt runs it, computes its
windows for *every* history row — the part of a batch that grows with each entity's history.
This pass rewrites the view's windowed SELECT so that it returns only the rows at each entity's
newest event time, with every window replaced by a grouped aggregate over the same frame::

    COUNT(*) OVER (PARTITION BY k ORDER BY t RANGE BETWEEN w PRECEDING AND CURRENT ROW)
        -> COUNT(*) FILTER (WHERE t >= newest_t - w)          -- per k, newest_t = MAX(t)
    MIN(x) OVER (PARTITION BY k ORDER BY t [RANGE UNBOUNDED PRECEDING AND CURRENT ROW])
        -> MIN(x) FILTER (WHERE t IS NOT NULL)
    LAG(x) OVER (PARTITION BY k ORDER BY t)
        -> ARG_MAX_NULL(x, t) FILTER (WHERE t < newest_t)

Every row at the newest time of its entity has the same frame (a RANGE frame ending at the
current row holds all its peers), so the aggregates are the windows' values there, row for row.
``lag`` is not a frame: among several rows at the newest time it reads a peer, in an order SQL
leaves undefined. Entities with such ties therefore keep the original windows (their rows are
selected by the original SELECT, restricted to them). With several rows at the time just before
the newest, ``lag`` reads one of them (which one SQL leaves undefined; so does the pass). So the
pass returns, for every entity, rows the original may return at its newest time — and
``latest_values`` picks among them the same way.

The pass applies to the SELECT that computes the windows: the model's outer SELECT, or a CTE it
reads through pure projections (each passing the join keys and the event time through by name,
no WHERE, GROUP BY, join or window). It is refused — and the original SQL used — for anything
else: a window partitioned by other columns or ordered by anything but the event time ascending
with NULLs last, a ROWS frame or a frame not ending at the current row, an aggregate other than
COUNT/SUM/AVG/MIN/MAX, DISTINCT inside a window, a ``lag`` with another offset or a default, a
per-row frame offset, an unaliased window projection; in the windowed SELECT any clause besides
FROM and WHERE (GROUP BY, HAVING, QUALIFY, DISTINCT, LIMIT, ORDER BY, SAMPLE, WINDOW, a join), a
star, a subquery, UNNEST, PIVOT, a nested WITH, a schema-qualified column or a lateral alias (a
name that is also another projection's alias); in the projections above it, a star with EXCLUDE,
REPLACE or RENAME, or a key or time column that is not the first of its name.
The reason is returned, so the consumer can log why a view runs the slower way.

DuckDB only (the stream pipeline's engine). Pure: sqlglot trees in, trees out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import sqlglot.expressions as exp

_FRAMED = (exp.Count, exp.Sum, exp.Avg, exp.Min, exp.Max)
_CONSTANT = (exp.Literal, exp.Interval, exp.Paren, exp.Add, exp.Sub, exp.Mul, exp.Div, exp.Neg, exp.Cast, exp.Var,
             exp.DataType, exp.DataTypeParam)
"""What a frame offset may be made of (a per-row offset, e.g. ``h * INTERVAL 1 HOUR``, is not)."""


def constant_offset(start: exp.Expression) -> bool:
    """Is a RANGE frame's offset the same for every row (literals, intervals, arithmetic, casts)?"""
    return all(isinstance(n, _CONSTANT) for n in start.walk())
_ROWS = "__fl_nr"
"""The windowed SELECT's input rows with their entity's newest event time (``__fl_tn``)."""
_AGG = "__fl_na"
"""One row per entity: the keys (``__fl_k<i>``), ``__fl_tn``, the windows' values (``__fl_w<i>``)."""
_NEWEST = "__fl_tn"
_PEERS = "__fl_peers"


class NotRewritable(Exception):
    """Why the pass does not apply (the original SQL is used)."""


@dataclass(frozen=True)
class _Target:
    """The windowed SELECT and where it sits in the model's tree."""

    select: exp.Select
    cte: exp.CTE | None
    """The CTE whose body ``select`` is (None: the model's outer SELECT)."""


def newest_rows(tree: exp.Expression, keys: Sequence[str], event_time: str) -> exp.Expression:
    """``tree`` (a model's SQL, DuckDB) returning only each entity's rows at its newest event time,
    its windows as aggregates (see the module docstring). Raises :class:`NotRewritable` with the
    reason when the pass does not apply. ``tree`` is not modified."""
    tree = tree.copy()
    if not isinstance(tree, exp.Select):
        raise NotRewritable("the model's SQL is not a single SELECT (a set operation?)")
    target = _find_target(tree, [k.lower() for k in keys], event_time.lower())
    rows, agg, body = _rewrite_select(target.select, [k.lower() for k in keys], event_time.lower())
    ctes = [exp.CTE(this=rows, alias=exp.TableAlias(this=exp.to_identifier(_ROWS)), materialized=True),
            exp.CTE(this=agg, alias=exp.TableAlias(this=exp.to_identifier(_AGG)))]
    with_ = tree.args.get("with_")
    if target.cte is None:
        if with_ is None:
            with_ = exp.With(expressions=[])
            tree.set("with_", with_)
        with_.set("expressions", [*with_.expressions, *ctes])
        body.set("with_", with_)  # the CTEs the windowed SELECT read, then the pass's
        return body
    position = with_.expressions.index(target.cte)
    with_.set("expressions", [*with_.expressions[:position], *ctes, *with_.expressions[position:]])
    target.cte.set("this", body)
    return tree


# -- finding the windowed SELECT -----------------------------------------------------------------


def _own_windows(select: exp.Select) -> list[exp.Window]:
    return [w for w in select.find_all(exp.Window) if w.find_ancestor(exp.Select) is select]


def _star(projection: exp.Expression) -> exp.Expression | None:
    """The Star of ``*`` or ``t.*`` (None for any other projection)."""
    if isinstance(projection, exp.Column) and projection.is_star:
        return projection.this
    return projection if isinstance(projection, exp.Star) else None


def _passes_through(select: exp.Select, name: str) -> bool:
    """Does ``select`` output the column ``name`` unchanged: is the first projection of that name (or
    a star before it) the plain column, or a star without EXCLUDE/REPLACE/RENAME?"""
    for projection in select.expressions:
        star = _star(projection)
        if star is not None:
            return not any(star.args.get(k) for k in ("except", "replace", "rename"))
        if projection.alias_or_name.lower() == name:
            inner = projection.this if isinstance(projection, exp.Alias) else projection
            return isinstance(inner, exp.Column) and inner.name.lower() == name
    return False


_PLAIN_ARGS = {"expressions", "from_", "where", "with_", "kind"}
"""The SELECT arguments the pass understands; any other one set (GROUP BY, SAMPLE, WINDOW, …) refuses."""
_ROW_MAKERS = (exp.Unnest, exp.Explode, exp.UDTF, exp.Select)


def _check_plain(select: exp.Select, what: str) -> None:
    for arg, value in select.args.items():
        if arg not in _PLAIN_ARGS and value:
            raise NotRewritable(f"{what} has {arg.rstrip('_').upper()}")
    if select.args.get("from_") is None:
        raise NotRewritable(f"{what} reads no relation")
    source = select.args["from_"].this
    if any(source.args.get(k) for k in ("pivots", "sample", "joins", "laterals")):
        raise NotRewritable(f"{what} reads its relation through PIVOT/UNPIVOT or a sample")
    for projection in select.expressions:
        for node in projection.walk():
            if isinstance(node, _ROW_MAKERS) and node is not select:
                raise NotRewritable(f"{what} has a subquery or a row-making function (UNNEST…): "
                                    f"{projection.sql('duckdb')[:90]}")


def _find_target(tree: exp.Select, keys: list[str], event_time: str) -> _Target:
    """The topmost SELECT with windows, reached from ``tree`` through pure projections of one CTE each."""
    ctes = {c.alias_or_name.lower(): c for c in (tree.args.get("with_") or exp.With(expressions=[])).expressions}
    select, cte = tree, None
    while True:
        if _own_windows(select):
            return _Target(select, cte)
        what = "the model's SELECT" if cte is None else f"CTE {cte.alias_or_name}"
        _check_plain(select, what)
        if select.args.get("where") is not None:
            raise NotRewritable(f"{what} filters rows (WHERE) above the windows")
        for name in (*keys, event_time):
            if not _passes_through(select, name):
                raise NotRewritable(f"{what} does not pass {name} through unchanged")
        source = select.args["from_"].this
        if not isinstance(source, exp.Table) or source.db or source.name.lower() not in ctes:
            raise NotRewritable("no window function above the source (nothing to compute per newest row)")
        name = source.name.lower()
        if sum(1 for t in tree.find_all(exp.Table) if not t.db and t.name.lower() == name) != 1:
            raise NotRewritable(f"CTE {name} is read more than once")
        cte = ctes[name]
        if not isinstance(cte.this, exp.Select):
            raise NotRewritable(f"CTE {name} is not a single SELECT")
        if cte.this.args.get("with_"):
            raise NotRewritable(f"CTE {name} has its own WITH")
        select = cte.this


# -- one window as an aggregate ----------------------------------------------------------------


def _column_name(node: exp.Expression) -> str | None:
    return node.name.lower() if isinstance(node, exp.Column) and not node.args.get("db") else None


def _check_window(window: exp.Window, keys: list[str], event_time: str) -> None:
    shown = window.sql(dialect="duckdb")[:90]
    parts = [_column_name(p) for p in window.args.get("partition_by") or []]
    if None in parts or set(parts) != set(keys) or len(parts) != len(keys):
        raise NotRewritable(f"a window is not partitioned by the join keys exactly: {shown}")
    order = window.args.get("order")
    ordered = order.expressions if order is not None else []
    if (len(ordered) != 1 or _column_name(ordered[0].this) != event_time or ordered[0].args.get("desc")
            or ordered[0].args.get("nulls_first")):
        raise NotRewritable(f"a window is not ordered by {event_time} ascending, NULLs last: {shown}")


def _frame_start(window: exp.Window) -> exp.Expression | None:
    """The RANGE frame's start offset (None: UNBOUNDED PRECEDING); raises for any other frame."""
    spec = window.args.get("spec")
    if spec is None:
        return None  # with ORDER BY: RANGE BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW
    extra = set(spec.args) - {"kind", "start", "start_side", "end", "end_side"}
    end = spec.args.get("end")
    if (str(spec.args.get("kind", "")).upper() != "RANGE" or any(spec.args.get(k) for k in extra)
            or not (isinstance(end, str) and end.upper() == "CURRENT ROW")
            or str(spec.args.get("start_side", "")).upper() != "PRECEDING"):
        raise NotRewritable(f"a window frame is not RANGE … PRECEDING AND CURRENT ROW: {window.sql('duckdb')[:90]}")
    start = spec.args.get("start")
    if isinstance(start, str):
        if start.upper() != "UNBOUNDED":
            raise NotRewritable(f"a window frame starts at {start}")
        return None
    if not constant_offset(start):
        raise NotRewritable(f"a window frame's offset is not a constant: {window.sql('duckdb')[:90]}")
    return start


def _aggregate(window: exp.Window, time: exp.Column, newest: exp.Column) -> tuple[exp.Expression, bool]:
    """The aggregate standing for ``window`` at the newest rows, and whether it is a ``lag``."""
    func = window.this
    condition: exp.Expression | None = None
    if isinstance(func, exp.Filter):
        condition = func.expression.this
        func = func.this
    if isinstance(func, exp.Lag):
        offset = func.args.get("offset")
        if func.args.get("default") is not None or (offset is not None and offset.sql() != "1") or condition:
            raise NotRewritable(f"lag with an offset other than 1 or a default: {window.sql('duckdb')[:90]}")
        picked = exp.Anonymous(this="ARG_MAX_NULL", expressions=[func.this.copy(), time.copy()])
        return exp.Filter(this=picked, expression=exp.Where(this=exp.LT(this=time.copy(), expression=newest))), True
    if not isinstance(func, _FRAMED) or any(isinstance(a, exp.Distinct) for a in func.iter_expressions()):
        raise NotRewritable(f"a window function other than COUNT/SUM/AVG/MIN/MAX: {window.sql('duckdb')[:90]}")
    start = _frame_start(window)
    in_frame: exp.Expression = (exp.Is(this=time.copy(), expression=exp.Null()).not_() if start is None else
                                exp.GTE(this=time.copy(), expression=exp.Sub(this=newest, expression=exp.paren(
                                    start.copy(), copy=False))))
    if condition is not None:
        in_frame = exp.and_(exp.paren(condition.copy()), in_frame)
    return exp.Filter(this=func.copy(), expression=exp.Where(this=in_frame)), False


# -- the rewritten SELECT ----------------------------------------------------------------------


def _key_columns(select: exp.Select, keys: list[str], event_time: str) -> None:
    if any(_star(p) is not None for p in select.expressions):
        raise NotRewritable("the windowed SELECT has a star")
    for name in (*keys, event_time):
        if not _passes_through(select, name):
            raise NotRewritable(f"the windowed SELECT does not project {name} as a plain column")
    for projection in select.expressions:
        if not isinstance(projection, exp.Alias) and projection.find(exp.Window) is not None:
            raise NotRewritable(f"a window's projection has no alias: {projection.sql('duckdb')[:90]}")
    _check_references(select)


def _check_references(select: exp.Select) -> None:
    """Refuse columns the rewrite would resolve differently: a catalog/schema-qualified column (the
    relation is read under its alias), or a name that is also an alias of another expression in the
    same SELECT (DuckDB's lateral aliases: the pass moves windows and the WHERE to other SELECTs)."""
    lateral = {p.alias.lower() for p in select.expressions if isinstance(p, exp.Alias)
               and not (isinstance(p.this, exp.Column) and p.this.name.lower() == p.alias.lower())}
    where = select.args.get("where")
    for node in (*select.expressions, *([where] if where is not None else [])):
        for column in node.find_all(exp.Column):
            if column.args.get("db") or column.args.get("catalog"):
                raise NotRewritable(f"a column is qualified by schema or catalog: {column.sql('duckdb')}")
            if not column.table and column.name.lower() in lateral:
                raise NotRewritable(f"{column.name} names another expression of the same SELECT (a lateral alias)")


@dataclass(frozen=True)
class _Names:
    """The windowed SELECT's relation alias and the columns the pass refers to through it."""

    ref: str
    keys: list[str]
    event_time: str

    def col(self, name: str) -> exp.Column:
        return exp.column(name, table=exp.to_identifier(self.ref, quoted=True), quoted=True)

    def rows_table(self) -> exp.Table:
        """``__fl_nr`` under the windowed SELECT's alias, so its column references still resolve."""
        return exp.Table(this=exp.to_identifier(_ROWS), alias=exp.TableAlias(this=exp.to_identifier(self.ref, quoted=True)))

    def same_entity(self) -> list[exp.Expression]:
        return [exp.EQ(this=self.col(k), expression=exp.column(f"__fl_k{i}", table=_AGG)) for i, k in enumerate(self.keys)]


def _rewrite_select(select: exp.Select, keys: list[str], event_time: str) -> tuple[exp.Select, exp.Select, exp.Expression]:
    """(rows CTE, aggregates CTE, new body) for the windowed ``select``."""
    _check_plain(select, "the windowed SELECT")
    _key_columns(select, keys, event_time)
    source = select.args["from_"].this
    if not source.alias_or_name:
        raise NotRewritable("the windowed SELECT reads an unnamed relation")
    names = _Names(source.alias_or_name, keys, event_time)
    body = _bare(select)
    aggregates: list[exp.Expression] = []
    has_lag = False
    for i, window in enumerate(_own_windows(body)):
        _check_window(window, keys, event_time)
        aggregate, is_lag = _aggregate(window, names.col(event_time), names.col(_NEWEST))
        has_lag |= is_lag
        aggregates.append(exp.alias_(aggregate, f"__fl_w{i}"))
        window.replace(exp.column(f"__fl_w{i}", table=_AGG, quoted=True))
    rows, agg = _rows_cte(select, names), _aggregates_cte(names, aggregates, peers=has_lag)
    body.set("from_", exp.From(this=names.rows_table()))
    on = exp.and_(*names.same_entity(), exp.EQ(this=names.col(event_time), expression=exp.column(_NEWEST, table=_AGG)))
    body = body.join(exp.Table(this=exp.to_identifier(_AGG)), on=on)
    if not has_lag:
        return rows, agg, body
    # Ties at the newest time make lag read a peer in an undefined order: those entities keep the windows.
    body = body.where(exp.EQ(this=exp.column(_PEERS, table=_AGG), expression=exp.Literal.number(1)))
    return rows, agg, exp.union(body, _tied_entities(select, names), distinct=False)


def _bare(select: exp.Select) -> exp.Select:
    """A copy of ``select`` without its WHERE (applied in the rows CTE) and WITH (kept by the caller)."""
    out = select.copy()
    out.set("where", None)
    out.set("with_", None)
    return out


def _rows_cte(select: exp.Select, names: _Names) -> exp.Select:
    """The windowed SELECT's input rows (its FROM and WHERE) with each entity's newest event time."""
    newest = exp.Window(this=exp.Max(this=names.col(names.event_time)), partition_by=[names.col(k) for k in names.keys])
    star = exp.Column(this=exp.Star(), table=exp.to_identifier(names.ref, quoted=True))
    rows = exp.select(star, exp.alias_(newest, _NEWEST)).from_(select.args["from_"].this.copy())
    where = select.args.get("where")
    if where is not None:
        rows.set("where", where.copy())
    return rows


def _aggregates_cte(names: _Names, aggregates: list[exp.Expression], *, peers: bool) -> exp.Select:
    """One row per entity: its keys, newest time, the windows' values there (and its rows at that time)."""
    group = [names.col(k) for k in names.keys]
    agg = exp.select(*[exp.alias_(g, f"__fl_k{i}") for i, g in enumerate(group)],
                     exp.alias_(exp.Max(this=names.col(_NEWEST)), _NEWEST), *aggregates)
    if peers:
        at_newest = exp.EQ(this=names.col(names.event_time), expression=names.col(_NEWEST))
        agg = agg.select(exp.alias_(exp.Filter(this=exp.Count(this=exp.Star()), expression=exp.Where(this=at_newest)),
                                    _PEERS))
    return agg.from_(names.rows_table()).group_by(*[names.col(k) for k in names.keys])


def _tied_entities(select: exp.Select, names: _Names) -> exp.Select:
    """The original SELECT (windows and all) over the entities with several rows at their newest
    time, keeping those rows."""
    tied = exp.select("1").from_(_AGG).where(exp.and_(
        exp.GT(this=exp.column(_PEERS, table=_AGG), expression=exp.Literal.number(1)), *names.same_entity()))
    original = _bare(select)
    original.set("from_", exp.From(this=names.rows_table()))
    original = original.where(exp.Exists(this=tied))
    original.set("qualify", exp.Qualify(this=exp.EQ(this=names.col(names.event_time), expression=names.col(_NEWEST))))
    return original


__all__ = ["NotRewritable", "constant_offset", "newest_rows"]
