"""Point-in-time-correct training-set SQL, built once as a sqlglot tree for any dialect.

Pure functions from registry objects to sqlglot expressions: no IO, the dialect a parameter.
The query is assembled in small named passes, each a function you can read on its own:

1. ``plan_outputs``  (resolve) — which features come from which view, under which output
   column names; name clashes are refused here.
2. ``build_spine``   — the entity rows, each with its input position (``__fl_row``) and its
   timestamp as a naive UTC ``TIMESTAMP`` (``__fl_ts``).
3. ``build_latest_per_event`` (dedupe) — for the ASOF formulation: one row per
   (keys, event time), the tie-break order deciding (ranking only the tied pairs).
4. ``build_window_events`` + ``build_latest_matches`` (per-view join) — for the window
   formulation: the view's feature rows and the entity rows in one ``UNION ALL``, one window per
   key numbering each entity row's latest feature row, joined back on that number; the TTL
   applied after, to the matched row. The cost does not depend on how many feature rows share a
   key value. ``build_lateral_latest`` (per-view join, lateral) — where the engine has ``LATERAL``
   and the view's relation is indexed on (join keys…, event time): one index probe per entity row.
5. ``build_training_set_query`` (project) — joins the spine to each view and projects the
   entity columns unchanged, then the features, in input order.
6. ``typed_feature`` (conform) — each feature cast to its logical type's SQL type (a DuckDB
   ``HUGEINT`` to ``BIGINT``, a naive UTC timestamp to an instant), so every result — Arrow,
   Parquet, a warehouse table — has the registry's type, as the online store does.

Semantics (``docs/training_sets.md``): for each entity row and view, the matching feature row
has equal join keys, ``event_time <= ts`` and, with a TTL, ``event_time >= ts - ttl``; the
latest event time wins, then the latest created-at (nulls oldest), then the larger feature
values in the view's column order (nulls last). No match gives nulls.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta

from sqlglot import exp

from feature_layer.errors import InputError
from feature_layer.registry.model import Feature, FeatureView
from feature_layer.sql.dialects import capabilities, pit_strategy, to_naive_utc, to_utc_instant
from feature_layer.sql.join_key_map import map_join_keys, output_name
from feature_layer.sql.names import col, ident, relation_table  # noqa: F401 - re-exported
from feature_layer.sql.range_join import build_range_best, join_range_best, range_feature

ROW = "__fl_row"
"""Spine column holding each entity row's input position; the result is ordered by it."""
TS = "__fl_ts"
"""Spine column holding the entity timestamp as a naive UTC TIMESTAMP."""
RANK = "__fl_rank"
SPINE = "__fl_spine"
RANGE_SPINE = "__fl_spine_keys"
INTERNAL_PREFIX = "__fl_"
FULL_NAME_SEPARATOR = "__"
_ORDERABLE = {"int64", "float64", "bool", "string", "timestamp", "date", "decimal"}


@dataclass(frozen=True)
class EntitySpine:
    """Where the entity rows are and what they look like.

    ``source`` is a table or a query. ``columns`` are the user's columns in output order
    (``None`` when unknown: then only keys and timestamp are projected). ``row_number`` names
    a column of the source that already holds the input position; without it the spine
    numbers rows with ``ROW_NUMBER() OVER ()`` (the warehouse's scan order).
    """

    source: exp.Expression
    timestamp: str
    columns: tuple[str, ...] | None = None
    row_number: str | None = None
    naive_utc: bool = False
    """The timestamp column is already a naive UTC TIMESTAMP: compare it as is (no cast)."""
    tz_aware: bool = False
    """The timestamp column is time-zone-aware (``timestamptz``): it is converted to naive UTC
    explicitly, never with a cast that depends on the session time zone."""
    row_locator: str | None = None
    """A system column of the source table whose order is the order a scan reads its rows
    (PostgreSQL's ``ctid`` on a plain heap table, from the catalog). Where the spine is read once
    (no ``window`` view), the rows are ordered by it instead of a ``ROW_NUMBER() OVER ()``: the
    same input order without the numbering pass, and a plain column the planner can sort early."""

    @property
    def as_of(self) -> str:
        """The spine column compared with event times."""
        return self.timestamp if self.naive_utc else TS


@dataclass(frozen=True)
class Conversion:
    """How one feature's warehouse column becomes its logical type (see ``typed_feature``)."""

    cast: exp.DataType | None = None
    """The SQL type to cast to first (``None``: the column already has it)."""
    to_instant: bool = False
    """The (cast) value is a naive UTC timestamp to turn into a time-zone-aware instant."""


@dataclass(frozen=True)
class ViewOutputs:
    """The features one view contributes, and their output column names."""

    view: FeatureView
    features: tuple[Feature, ...]
    names: tuple[str, ...]
    tz_aware: bool = False
    """The view's event time is time-zone-aware (``timestamptz``): it is compared with the as-of
    time as an instant in UTC, so the SQL gives the same rows in any session time zone."""
    conversions: tuple[Conversion | None, ...] = ()
    """Per feature (in ``features`` order), how its column becomes its logical type; empty or
    ``None``: projected as the warehouse has it."""
    indexed: bool = False
    """The view's relation has a b-tree index on (join keys…, event time): where the engine has
    ``LATERAL``, each entity row finds its feature row with one index probe (``lateral``)."""
    unique_events: bool = False
    """A unique index on exactly (join keys…, event time) guarantees one feature row per key and
    event time: the ``lateral`` probe needs no tie-break order (no sort per entity row)."""
    key_types: tuple[str, ...] = ()
    """Per join key (in ``view.join_keys`` order), its logical type where the entity rows and the
    view agree on it, else ``unknown``; empty: not known. Spark's range join hashes integer keys
    into one join key (``range_join._key_and_bucket``)."""

    @property
    def alias(self) -> str:
        return self.view.name

    def conversion(self, index: int) -> Conversion | None:
        return self.conversions[index] if index < len(self.conversions) else None


def interval(ttl: timedelta) -> exp.Interval:
    """``ttl`` as an INTERVAL literal in the largest whole unit (days, hours, minutes, seconds)."""
    total = ttl.total_seconds()
    if total != int(total):
        raise InputError(f"TTL {ttl} has fractions of a second.", fix="use a whole number of seconds.")
    seconds = int(total)
    for unit, size in (("DAY", 86400), ("HOUR", 3600), ("MINUTE", 60)):
        if seconds % size == 0:
            return exp.Interval(this=exp.Literal.string(str(seconds // size)), unit=exp.var(unit))
    return exp.Interval(this=exp.Literal.string(str(seconds)), unit=exp.var("SECOND"))


# ----------------------------------------------------------------------------- 1. resolve


def plan_outputs(
    requested: Mapping[FeatureView, Sequence[Feature]] | Sequence[tuple[FeatureView, Sequence[Feature]]],
    *,
    entity_columns: Sequence[str] = (),
    full_feature_names: bool = False,
    tz_aware_views: Collection[str] = (),
    conversions: Mapping[str, Conversion] | None = None,
    indexed_views: Collection[str] = (),
    unique_event_views: Collection[str] = (),
    key_types: Mapping[tuple[str, str], str] | None = None,
) -> tuple[ViewOutputs, ...]:
    """Name each requested feature's output column and refuse clashes.

    Features are named as themselves, or ``view__feature`` with ``full_feature_names``. A name
    used twice (two views, or a view and an entity column) is an error naming both sources.
    ``tz_aware_views`` names the views whose event time is time-zone-aware; ``conversions``
    maps a feature reference (``view.feature``) to how its column becomes its logical type;
    ``indexed_views`` names the views whose relation is indexed on (join keys…, event time),
    ``unique_event_views`` those where that index is unique; ``key_types`` maps (view, join key)
    to the logical type the entity rows and the view agree on (``ViewOutputs.key_types``).
    """
    items = list(requested.items()) if isinstance(requested, Mapping) else list(requested)
    taken: dict[str, str] = {c: "the entity dataframe" for c in entity_columns}
    plans = []
    seen_views: set[str] = set()
    for view, features in items:
        if view.name in seen_views:
            raise InputError(f"Feature view {view.name!r} is requested twice.", fix="list its features once.")
        seen_views.add(view.name)
        names = []
        for feature in features:
            name = output_name(view, feature, full_feature_names)  # ops2: + a mapped use's suffix (join_key_map)
            if name.startswith(INTERNAL_PREFIX):
                raise InputError(
                    f"Output column {name!r} starts with {INTERNAL_PREFIX!r}, which feature_layer reserves.",
                    fix="rename the feature.",
                )
            if name in taken:
                other = taken[name]
                fix = (
                    "pass full_feature_names=True (--full-feature-names) to name columns `view__feature`."
                    if not full_feature_names
                    else "rename the entity column or the feature."
                )
                if other == f"feature {feature.ref}":
                    raise InputError(f"Feature {feature.ref} is requested twice.", fix="list it once.")
                raise InputError(
                    f"Output column {name!r} would come from both {other} and feature {feature.ref}.", fix=fix
                )
            taken[name] = f"feature {feature.ref}"
            names.append(name)
        if features:
            typed = tuple((conversions or {}).get(f.ref) for f in features)
            plans.append(ViewOutputs(view, tuple(features), tuple(names), tz_aware=view.name in tz_aware_views,
                                     conversions=typed if any(typed) else (),
                                     indexed=view.name in indexed_views,
                                     unique_events=view.name in unique_event_views,
                                     key_types=tuple((key_types or {}).get((view.name, k), "unknown")
                                                     for k in view.join_keys)))
    return tuple(plans)


# ----------------------------------------------------------------------------- 2. spine


def build_spine(
    spine: EntitySpine,
    *,
    stable_numbering: Sequence[str] = (),
    dialect: str | None = None,
    scan_numbering: exp.Expression | None = None,
) -> exp.Select:
    """Entity rows plus their input position and their timestamp as naive UTC.

    Without a row-number column, rows are numbered in the warehouse's scan order. Where the
    spine CTE cannot be materialized (it may then be evaluated once per reference),
    ``stable_numbering`` numbers rows in the order of these columns (every column the query
    returns) instead: rows that tie on all of them may swap numbers, which changes nothing.
    ``scan_numbering`` (a spine read exactly once, e.g. Spark's ``MONOTONICALLY_INCREASING_ID()``)
    numbers rows in scan order without a global sort.
    """
    source = spine.source
    if isinstance(source, exp.Query):
        source = source.subquery(ident("src"))
    else:
        source = source.copy()
        source.set("alias", exp.TableAlias(this=ident("src")))
    projections: list[exp.Expression] = [exp.Column(this=exp.Star(), table=ident("src"))]
    if not spine.naive_utc:
        if spine.tz_aware:
            as_of = to_naive_utc(col(spine.timestamp, "src"), dialect)
        else:  # naive or a date: the cast does not depend on the session time zone
            as_of = exp.cast(col(spine.timestamp, "src"), exp.DataType.build("TIMESTAMP"))
        projections.append(exp.alias_(as_of, TS, quoted=True))
    if spine.row_number is None and scan_numbering is not None:
        projections.append(exp.alias_(scan_numbering, ROW, quoted=True))
    elif spine.row_number is None:
        order = None
        if stable_numbering:
            order = exp.Order(expressions=[exp.Ordered(this=col(c, "src"), nulls_first=True) for c in stable_numbering])
        projections.append(exp.alias_(exp.Window(this=exp.RowNumber(), order=order), ROW, quoted=True))
    elif spine.row_number != ROW:
        projections.append(exp.alias_(col(spine.row_number, "src"), ROW, quoted=True))
    return exp.select(*projections).from_(source)


# ----------------------------------------------------------------------------- ordering


def tie_break_order(view: FeatureView, table: str, dialect: str | None) -> list[exp.Ordered]:
    """Created-at (latest first, nulls oldest), then every orderable feature (larger first, nulls last).

    The order depends on the view only, never on which features were requested, so the same
    row wins whatever the request. Strings compare byte-wise on every engine.
    """
    caps = capabilities(dialect)
    order = []
    if view.created_at:
        order.append(exp.Ordered(this=col(view.created_at, table), desc=True, nulls_first=False))
    for feature in view.features:
        if feature.dtype not in _ORDERABLE:
            continue
        key: exp.Expression = col(feature.name, table)
        if feature.dtype == "string" and caps.string_order_collation:
            # "string" covers uuid, citext, enums…: only text takes a collation, and a uuid's
            # canonical text orders exactly like its bytes. CAST to TEXT is free for text.
            key = exp.cast(key, exp.DataType.build("TEXT"))
            key = exp.Collate(this=key, expression=ident(caps.string_order_collation))
        order.append(exp.Ordered(this=key, desc=True, nulls_first=False))
    return order


def _not_null(*columns: exp.Expression) -> exp.Expression | None:
    return exp.and_(*(exp.Not(this=exp.Is(this=c, expression=exp.Null())) for c in columns)) if columns else None


# ----------------------------------------------------------------------------- 3. dedupe (ASOF)


def build_tied_events(view: FeatureView) -> exp.Select:
    """The (keys, event time) pairs held by more than one feature row: the only ones to rank."""
    keys = [col(k, "f") for k in view.join_keys]
    event = col(view.event_time, "f")
    return (
        exp.select(*[k.copy() for k in keys], event.copy())
        .from_(relation_table(view, "f"))
        .where(_not_null(*[k.copy() for k in keys], event.copy()))
        .group_by(*[k.copy() for k in keys], event.copy())
        .having(exp.GT(this=exp.Count(this=exp.Star()), expression=exp.Literal.number(1)))
    )


def build_latest_per_event(outputs: ViewOutputs, dialect: str | None, tied: str) -> exp.Union:
    """One feature row per (keys, event time): the one the tie-break order puts first.

    Rows alone at their (keys, event time) pass straight through; only the pairs listed in
    the CTE ``tied`` (see ``build_tied_events``) are ranked. Ties are rare in real data, so
    the wide tie-break sort runs on a handful of rows instead of the whole table — measured
    faster than ranking every row even by created-at alone.
    """
    view = outputs.view
    names = (*view.join_keys, view.event_time)
    columns = [col(c, "f") for c in names] + [col(f.name, "f") for f in outputs.features]
    is_tied = exp.Exists(
        this=exp.select(exp.Literal.number(1))
        .from_(exp.Table(this=ident(tied), alias=exp.TableAlias(this=ident("t"))))
        .where(exp.and_(*[exp.EQ(this=col(c, "t"), expression=col(c, "f")) for c in names]))
    )
    alone = (
        exp.select(*[c.copy() for c in columns])
        .from_(relation_table(view, "f"))
        .where(exp.and_(_not_null(*[col(c, "f") for c in names]), exp.Not(this=is_tied.copy())))
    )
    order = tie_break_order(view, "f", dialect)
    rank = exp.Window(
        this=exp.RowNumber(),
        partition_by=[col(c, "f") for c in names],
        order=exp.Order(expressions=order) if order else None,
    )
    ranked = (
        exp.select(*[c.copy() for c in columns])
        .select(exp.alias_(rank, RANK, quoted=True))
        .from_(relation_table(view, "f"))
        .where(is_tied.copy())
    )
    best = (
        exp.select(*[col(c) for c in (*names, *(f.name for f in outputs.features))])
        .from_(ranked.subquery(ident("ranked")))
        .where(exp.EQ(this=col(RANK), expression=exp.Literal.number(1)))
    )
    return exp.union(alone, best, distinct=False)


# ----------------------------------------------------------------------------- 4. per-view join (window)

FEATURE_FLAG = "__fl_feature"
"""In the window formulation's union: 1 for a feature row, 0 for an entity row."""
AT = "__fl_t"
"""In the window formulation's union: the feature row's event time, or the entity row's as-of time."""
GROUP = "__fl_grp"
"""How many feature rows of the key sort at or before this row: an entity row's latest feature row."""


def _within_ttl(
    view: FeatureView, event: exp.Expression, ts: exp.Expression, *, tz_aware: bool = False, dialect: str | None = None
) -> exp.Expression | None:
    if view.ttl is None:
        return None
    event, bound = _comparable(event, exp.Sub(this=ts, expression=interval(view.ttl)), tz_aware, dialect)
    return exp.GTE(this=event, expression=bound)


def _comparable(
    event: exp.Expression, ts: exp.Expression, tz_aware: bool, dialect: str | None
) -> tuple[exp.Expression, exp.Expression]:
    """(event time, as-of time) in types whose comparison does not depend on the session time zone.

    ``ts`` is naive UTC (arithmetic such as the TTL bound is done on it, naive, before any
    conversion: on a time-zone-aware value a day's length would follow the session's DST).
    A time-zone-aware event time stays bare where the engine converts the as-of time to an
    instant (an index on it stays usable); elsewhere it is converted to naive UTC.
    """
    if not tz_aware:
        return event, ts
    if capabilities(dialect).utc_instant:
        return event, to_utc_instant(exp.paren(ts) if isinstance(ts, exp.Sub) else ts, dialect)
    return to_naive_utc(event, dialect), ts


def _range_window(outputs: ViewOutputs, as_of: str, dialect: str | None) -> tuple[exp.Expression, exp.Expression, exp.Expression]:
    """For ``range_join.build_range_best``: the comparable event time and the TTL window's start
    and end it is compared with (``_within_ttl``'s bound, and the as-of time)."""
    view = outputs.view
    event, end = _comparable(col(view.event_time, "f"), col(as_of, "s"), outputs.tz_aware, dialect)
    start = _within_ttl(view, col(view.event_time, "f"), col(as_of, "s"), tz_aware=outputs.tz_aware, dialect=dialect)
    assert start is not None  # a ranged view has a TTL
    return event, start.expression, end


def _carried_columns(outputs: ViewOutputs) -> list[str]:
    """The feature-row columns the union carries: the tie-break columns, then the requested features."""
    view = outputs.view
    names = [view.created_at] if view.created_at else []
    names += [f.name for f in view.features if f.dtype in _ORDERABLE]
    names += [f.name for f in outputs.features]
    return list(dict.fromkeys(names))


def _ascending(order: Sequence[exp.Ordered]) -> list[exp.Ordered]:
    """``order`` reversed (latest/largest first, nulls last → oldest/smallest first, nulls first)."""
    return [exp.Ordered(this=o.this.copy(), desc=False, nulls_first=True) for o in order]


def build_window_events(outputs: ViewOutputs, dialect: str | None, as_of: str = TS) -> exp.Select:
    """Entity rows and feature rows in one relation, each tagged with its key's latest feature row.

    ``UNION ALL`` of the view's feature rows (``__fl_t`` = event time, as naive UTC) and the
    spine's entity rows (``__fl_t`` = as-of time), then one window per key, ordered by time with
    feature rows before entity rows at equal time and, among feature rows of one time, by the
    tie-break order reversed (the winner last). ``__fl_grp`` counts the feature rows sorted at
    or before each row: on a feature row it numbers that row, on an entity row it names the
    latest feature row it may see (0: none). One sort per key, whatever the number of feature
    rows per key value; ``build_latest_matches`` joins the numbers back.
    """
    view = outputs.view
    carried = _carried_columns(outputs)
    event = col(view.event_time, "f")
    if outputs.tz_aware:
        event = to_naive_utc(event, dialect)
    features = (
        exp.select(*[col(k, "f") for k in view.join_keys])
        .select(
            exp.alias_(event, AT, quoted=True),
            exp.alias_(exp.Literal.number(1), FEATURE_FLAG, quoted=True),
            exp.alias_(exp.Null(), ROW, quoted=True),
        )
        .select(*[col(c, "f") for c in carried])
        .from_(relation_table(view, "f"))
        .where(_not_null(*[col(k, "f") for k in view.join_keys], col(view.event_time, "f")))
    )
    entities = (
        exp.select(*[col(k, "s") for k in view.join_keys])
        .select(
            exp.alias_(col(as_of, "s"), AT, quoted=True),
            exp.alias_(exp.Literal.number(0), FEATURE_FLAG, quoted=True),
            col(ROW, "s"),
        )
        .select(*[exp.alias_(exp.Null(), c, quoted=True) for c in carried])
        .from_(exp.Table(this=ident(SPINE), alias=exp.TableAlias(this=ident("s"))))
    )
    order = [
        exp.Ordered(this=col(AT, "u"), desc=False, nulls_first=True),
        exp.Ordered(this=col(FEATURE_FLAG, "u"), desc=True, nulls_first=False),
        *_ascending(tie_break_order(view, "u", dialect)),
    ]
    group = exp.Window(
        this=exp.Sum(this=col(FEATURE_FLAG, "u")),
        partition_by=[col(k, "u") for k in view.join_keys],
        order=exp.Order(expressions=order),
        spec=exp.WindowSpec(kind="ROWS", start="UNBOUNDED", start_side="PRECEDING", end="CURRENT ROW"),
    )
    return (
        exp.select(*[col(c, "u") for c in (*view.join_keys, AT, FEATURE_FLAG, ROW)])
        .select(*[col(f.name, "u") for f in outputs.features])
        .select(exp.alias_(group, GROUP, quoted=True))
        .from_(exp.union(features, entities, distinct=False).subquery(ident("u")))
    )


def build_latest_matches(outputs: ViewOutputs, events: str) -> exp.Select:
    """For each entity row, the feature row ``build_window_events`` numbered for it, within the TTL.

    An equality join on (keys, ``__fl_grp``) of the entity rows with the feature rows of the CTE
    ``events``; the TTL is applied after, on the matched row only (an expired latest row gives
    nulls, it is never replaced by an older one). Keys compare with ``=``: a null key matches
    nothing.
    """
    view = outputs.view
    on = [exp.EQ(this=col(k, "e"), expression=col(k, "f")) for k in view.join_keys]
    on.append(exp.EQ(this=col(GROUP, "e"), expression=col(GROUP, "f")))
    on.append(exp.EQ(this=col(FEATURE_FLAG, "f"), expression=exp.Literal.number(1)))
    if view.ttl is not None:
        bound = exp.Sub(this=col(AT, "e"), expression=interval(view.ttl))
        on.append(exp.GTE(this=col(AT, "f"), expression=bound))
    return (
        exp.select(col(ROW, "e"), *[col(f.name, "f") for f in outputs.features])
        .from_(exp.Table(this=ident(events), alias=exp.TableAlias(this=ident("e"))))
        .join(
            exp.Table(this=ident(events), alias=exp.TableAlias(this=ident("f"))),
            on=exp.and_(*on),
            join_type="inner",
        )
        .where(exp.EQ(this=col(FEATURE_FLAG, "e"), expression=exp.Literal.number(0)))
    )


def build_lateral_latest(outputs: ViewOutputs, as_of: str, dialect: str | None) -> exp.Lateral:
    """For one entity row (alias ``s``), its latest feature row within the TTL: ``LATERAL (… LIMIT 1)``.

    ``WHERE keys = s.keys AND event_time <= as-of [AND event_time >= as-of - ttl] ORDER BY
    event_time DESC, <tie-break order> LIMIT 1``: on an index over (join keys…, event time) a
    backward index scan that stops at the first row (the tie-break sorts only the rows sharing
    that event time; with ``unique_events`` there is none to sort). The event time is compared bare (``DESC`` keeps the index order, and a null
    event time never passes ``<=``); the TTL inside the probe is the same as after it, because
    when the latest row is expired every older one is too.
    """
    view = outputs.view
    conditions: list[exp.Expression] = [exp.EQ(this=col(k, "f"), expression=col(k, "s")) for k in view.join_keys]
    event, ts = _comparable(col(view.event_time, "f"), col(as_of, "s"), outputs.tz_aware, dialect)
    conditions.append(exp.LTE(this=event, expression=ts))
    ttl = _within_ttl(view, col(view.event_time, "f"), col(as_of, "s"), tz_aware=outputs.tz_aware, dialect=dialect)
    if ttl is not None:
        conditions.append(ttl)
    order = [exp.Ordered(this=col(view.event_time, "f"), desc=True, nulls_first=True)]
    if not outputs.unique_events:
        order += tie_break_order(view, "f", dialect)
    probe = (
        exp.select(*[col(f.name, "f") for f in outputs.features])
        .from_(relation_table(view, "f"))
        .where(exp.and_(*conditions))
        .order_by(*order)
        .limit(1)
    )
    return probe


CARRIED = "__fl_r"
"""In the carry-forward formulation's union: the feature row's event time and features, as a struct."""
LATEST = "__fl_latest"
"""The carry-forward window's result: the latest feature row's struct at or before each row."""
ORDER_PREFIX = "__fl_o"
KEY_PREFIX = "__fl_k"


def build_carry_forward(
    outputs: ViewOutputs,
    source: str,
    passthrough: Sequence[str],
    as_of: str,
    dialect: str | None,
) -> exp.Select:
    """The entity rows of CTE ``source`` with this view's features appended (``carry`` formulation).

    ``UNION ALL`` of the view's feature rows — keys, ``__fl_t`` (event time, naive UTC), the
    tie-break values, and a struct of the event time and the requested features — with the entity
    rows of ``source`` (keys, as-of time, every ``passthrough`` column — the keys too, so they keep
    the entity's types whatever the union's common type); then one window per key,
    in the order of ``build_window_events``, carrying the latest feature row's struct forward:
    ``LAST(struct) IGNORE NULLS OVER (PARTITION BY keys ORDER BY … ROWS UNBOUNDED PRECEDING)``.
    A struct is never null on a feature row, even when its features are, so ignoring nulls skips
    exactly the entity rows. The TTL is applied after, to the carried row. One sort per key and
    no join: the entity rows leave the window with their columns and this view's features, and
    feed the next view's union.
    """
    view = outputs.view
    keys = list(view.join_keys)
    parts = [f"{KEY_PREFIX}{i}" for i in range(len(keys))]  # the entity's own key columns pass through
    event = col(view.event_time, "f")
    if outputs.tz_aware:
        event = to_naive_utc(event, dialect)
    tie = tie_break_order(view, "f", dialect)
    struct = exp.Struct(
        expressions=[exp.PropertyEQ(this=ident(AT), expression=event.copy())]
        + [exp.PropertyEQ(this=ident(f.name), expression=col(f.name, "f")) for f in outputs.features]
    )
    features = (
        exp.select(*[exp.alias_(col(k, "f"), p, quoted=True) for k, p in zip(keys, parts, strict=True)])
        .select(
            exp.alias_(event, AT, quoted=True),
            exp.alias_(exp.Literal.number(1), FEATURE_FLAG, quoted=True),
        )
        .select(*[exp.alias_(o.this.copy(), f"{ORDER_PREFIX}{i}", quoted=True) for i, o in enumerate(tie)])
        .select(exp.alias_(struct, CARRIED, quoted=True))
        .select(*[exp.alias_(exp.Null(), c, quoted=True) for c in passthrough])
        .from_(relation_table(view, "f"))
        .where(_not_null(*[col(k, "f") for k in keys], col(view.event_time, "f")))
    )
    entities = (
        exp.select(*[exp.alias_(col(k, "s"), p, quoted=True) for k, p in zip(keys, parts, strict=True)])
        .select(
            exp.alias_(col(as_of, "s"), AT, quoted=True),
            exp.alias_(exp.Literal.number(0), FEATURE_FLAG, quoted=True),
        )
        .select(*[exp.alias_(exp.Null(), f"{ORDER_PREFIX}{i}", quoted=True) for i in range(len(tie))])
        .select(exp.alias_(exp.Null(), CARRIED, quoted=True))
        .select(*[col(c, "s") for c in passthrough])
        .from_(exp.Table(this=ident(source), alias=exp.TableAlias(this=ident("s"))))
    )
    order = [
        exp.Ordered(this=col(AT, "u"), desc=False, nulls_first=True),
        exp.Ordered(this=col(FEATURE_FLAG, "u"), desc=True, nulls_first=False),
        *[exp.Ordered(this=col(f"{ORDER_PREFIX}{i}", "u"), desc=False, nulls_first=True) for i in range(len(tie))],
    ]
    latest = exp.Window(
        this=exp.IgnoreNulls(this=exp.Last(this=col(CARRIED, "u"))),
        partition_by=[col(p, "u") for p in parts],
        order=exp.Order(expressions=order),
        spec=exp.WindowSpec(kind="ROWS", start="UNBOUNDED", start_side="PRECEDING", end="CURRENT ROW"),
    )
    carried = (
        exp.select(*[col(c, "u") for c in (AT, FEATURE_FLAG, *passthrough)])
        .select(exp.alias_(latest, LATEST, quoted=True))
        .from_(exp.union(features, entities, distinct=False).subquery(ident("u")))
    )

    def field(name: str) -> exp.Expression:
        return exp.Dot(this=col(LATEST, "c"), expression=ident(name))

    fresh = None
    if view.ttl is not None:
        fresh = exp.GTE(this=field(AT), expression=exp.Sub(this=col(AT, "c"), expression=interval(view.ttl)))
    values = []
    for feature, name in zip(outputs.features, outputs.names, strict=True):
        value: exp.Expression = field(feature.name)
        if fresh is not None:
            value = exp.Case(ifs=[exp.If(this=fresh.copy(), true=value)])
        values.append(exp.alias_(value, name, quoted=True))
    return (
        exp.select(*[col(c, "c") for c in passthrough])
        .select(*values)
        .from_(carried.subquery(ident("c")))
        .where(exp.EQ(this=col(FEATURE_FLAG, "c"), expression=exp.Literal.number(0)))
    )


def build_carry_query(
    spine: EntitySpine,
    outputs: Sequence[ViewOutputs],
    entity_columns: Sequence[str],
    dialect: str | None,
    *,
    range_join: bool = True,
) -> exp.Select:
    """The whole query in the ``carry`` formulation: a chain of one CTE per view, no joins.

    The spine is read once (by the first view's union), so a warehouse table's rows are numbered
    in scan order (``MONOTONICALLY_INCREASING_ID()``), without the global sort a ``ROW_NUMBER``
    needs; each view's CTE passes the entity rows on with its features appended. With
    ``range_join`` (the default unless ``carry`` was asked for), a view with a TTL is not in the
    chain: its latest feature row per (keys, as-of time) within the TTL comes from a range join +
    ``MAX_BY`` on the spine, joined to the chain's rows at the end (``range_join.py``).
    """
    numbering = exp.Anonymous(this="MONOTONICALLY_INCREASING_ID", expressions=[])
    passthrough = list(dict.fromkeys((*entity_columns, ROW, spine.as_of)))
    query = exp.select().with_(
        ident(SPINE), as_=build_spine(spine, dialect=dialect, scan_numbering=numbering)
    )
    source = SPINE
    ranged = [range_join and out.view.ttl is not None for out in outputs]
    if any(ranged):  # the same rows unnumbered: a CTE without MONOTONICALLY_INCREASING_ID is inlined
        query = query.with_(ident(RANGE_SPINE), as_=build_spine(spine, dialect=dialect, scan_numbering=exp.Null()))
    for index, out in enumerate(outputs):
        if ranged[index]:
            best = build_range_best(out, RANGE_SPINE, spine.as_of, _range_window(out, spine.as_of, dialect),
                                    tie_break_order(out.view, "f", dialect))
            query = query.with_(ident(f"__fl_b{index}"), as_=best)
            continue
        cte = _cte_name(index)
        query = query.with_(ident(cte), as_=build_carry_forward(out, source, passthrough, spine.as_of, dialect))
        passthrough += list(out.names)
        source = cte
    projections = [exp.alias_(col(c, "s"), c, quoted=True) for c in entity_columns]
    for index, out in enumerate(outputs):
        alias = f"b{index}"
        for feature, name in zip(out.features, out.names, strict=True):
            value = range_feature(alias, feature.name) if ranged[index] else col(name, "s")
            projections.append(exp.alias_(value, name, quoted=True))
    query = query.select(*projections).from_(exp.Table(this=ident(source), alias=exp.TableAlias(this=ident("s"))))
    for index, out in enumerate(outputs):
        if ranged[index]:
            query = join_range_best(query, out, f"__fl_b{index}", f"b{index}", spine.as_of)
    return query.order_by(exp.Ordered(this=col(ROW, "s")))


# ----------------------------------------------------------------------------- 5. project


def _cte_name(index: int) -> str:
    return f"__fl_v{index}"


def build_training_set_query(
    spine: EntitySpine,
    outputs: Sequence[ViewOutputs],
    dialect: str | None = "duckdb",
    *,
    strategy: str | None = None,
) -> exp.Select:
    """The whole training-set query: every entity row once, in input order, features appended.

    ``strategy`` overrides the dialect's formulation (``asof`` only where ASOF JOIN exists,
    ``lateral`` only where LATERAL does). Without it, on an engine with LATERAL, each view whose
    relation is indexed (``ViewOutputs.indexed``) gets the ``lateral`` formulation and the rest
    ``window``; see ``view_strategy``.
    """
    chosen = pit_strategy(dialect, strategy)
    caps = capabilities(dialect)
    entity_columns = spine.columns
    if entity_columns is None:
        views = [o.view for o in outputs]
        keys = list(dict.fromkeys(k for v in views for k in v.join_keys))
        entity_columns = (*keys, spine.timestamp)
    entity_columns = tuple(c for c in entity_columns if c != spine.row_number)
    if chosen == "carry":
        carry = build_carry_query(spine, outputs, entity_columns, dialect, range_join=strategy is None)
        return conform_feature_types(carry, outputs, dialect)

    projections: list[exp.Expression] = [exp.alias_(col(c, "s"), c, quoted=True) for c in entity_columns]
    query = exp.select().from_(exp.Table(this=ident(SPINE), alias=exp.TableAlias(this=ident("s"))))
    forced = strategy is not None
    # The spine is referenced again by each window view's union: numbered once, then reused.
    numbered_here = spine.row_number is None and any(
        view_strategy(out, chosen, dialect, forced=forced) == "window" for out in outputs
    )
    query = query.with_(
        ident(SPINE),
        as_=build_spine(
            spine,
            stable_numbering=entity_columns if numbered_here and not caps.materialized_cte else (),
            dialect=dialect,
            scan_numbering=_scan_position(spine, numbered_here),
        ),
        materialized=True if numbered_here and caps.materialized_cte else None,
    )

    for index, out in enumerate(outputs):
        alias = f"v{index}"
        cte = _cte_name(index)
        view = out.view
        target = exp.Table(this=ident(cte), alias=exp.TableAlias(this=ident(alias)))
        formulation = view_strategy(out, chosen, dialect, forced=forced)
        if formulation == "lateral":
            probe = build_lateral_latest(out, spine.as_of, dialect)
            lateral = exp.Lateral(this=probe.subquery(), alias=exp.TableAlias(this=ident(alias)))
            query = query.join(lateral, on=exp.true(), join_type="left")
            for feature, name in zip(out.features, out.names, strict=True):
                projections.append(exp.alias_(col(feature.name, alias), name, quoted=True))
        elif formulation == "asof":
            tied = f"{cte}_ties"
            query = query.with_(ident(tied), as_=build_tied_events(view))
            query = query.with_(ident(cte), as_=build_latest_per_event(out, dialect, tied))
            on = [exp.EQ(this=col(k, "s"), expression=col(k, alias)) for k in view.join_keys]
            event, ts = _comparable(col(view.event_time, alias), col(spine.as_of, "s"), out.tz_aware, dialect)
            on.append(exp.GTE(this=ts, expression=event))
            query = query.join(target, on=exp.and_(*on), join_type="asof left")
            ttl = _within_ttl(
                view, col(view.event_time, alias), col(spine.as_of, "s"), tz_aware=out.tz_aware, dialect=dialect
            )
            for feature, name in zip(out.features, out.names, strict=True):
                value: exp.Expression = col(feature.name, alias)
                if ttl is not None:
                    value = exp.Case(ifs=[exp.If(this=ttl.copy(), true=value)])
                projections.append(exp.alias_(value, name, quoted=True))
        else:
            events = f"{cte}_events"
            query = query.with_(ident(events), as_=build_window_events(out, dialect, spine.as_of))
            query = query.with_(ident(cte), as_=build_latest_matches(out, events))
            query = query.join(
                target, on=exp.EQ(this=col(ROW, alias), expression=col(ROW, "s")), join_type="left"
            )
            for feature, name in zip(out.features, out.names, strict=True):
                projections.append(exp.alias_(col(feature.name, alias), name, quoted=True))

    query = query.select(*projections).order_by(exp.Ordered(this=col(ROW, "s")))
    query = map_join_keys(query, outputs, _cte_name)  # ops2: mapped uses read renamed key columns
    return conform_feature_types(query, outputs, dialect)


def _scan_position(spine: EntitySpine, numbered_here: bool) -> exp.Expression | None:
    """The spine's own row locator (``EntitySpine.row_locator``) as its input position, where the
    spine is read once and has no row-number column; else ``None`` (``ROW_NUMBER() OVER ()``)."""
    if numbered_here or spine.row_number is not None or not spine.row_locator:
        return None
    return col(spine.row_locator, "src")


def view_strategy(outputs: ViewOutputs, chosen: str, dialect: str | None, *, forced: bool = False) -> str:
    """The formulation one view gets: ``chosen``, or ``lateral`` for an indexed view on an engine
    with LATERAL when the strategy was not forced."""
    if not forced and chosen == "window" and outputs.indexed and capabilities(dialect).lateral_join:
        return "lateral"
    return chosen


# ----------------------------------------------------------------------------- 6. conform


def typed_feature(value: exp.Expression, conversion: Conversion | None, dialect: str | None) -> exp.Expression:
    """``value`` as its feature's logical type: cast, then (a naive UTC timestamp) made an instant.

    The instant is built with ``AT TIME ZONE 'UTC'``, never a cast that follows the session
    time zone. Dialects without that conversion keep the naive UTC value.
    """
    if conversion is None:
        return value
    if conversion.cast is not None:
        value = exp.cast(value, conversion.cast.copy())
    if conversion.to_instant and capabilities(dialect).utc_instant:
        value = to_utc_instant(value, dialect)
    return value


def conform_feature_types(query: exp.Select, outputs: Sequence[ViewOutputs], dialect: str | None) -> exp.Select:
    """Apply each feature's ``Conversion`` to its output column (the last projections, in order)."""
    conversions = [out.conversion(i) for out in outputs for i in range(len(out.features))]
    if not any(conversions):
        return query
    projections = list(query.expressions)
    start = len(projections) - len(conversions)
    for offset, conversion in enumerate(conversions):
        projection = projections[start + offset]
        if conversion is not None and isinstance(projection, exp.Alias):
            typed = typed_feature(projection.this, conversion, dialect)
            projections[start + offset] = exp.alias_(typed, projection.alias, quoted=True)
    return query.select(*projections, append=False)


def training_set_sql(
    spine: EntitySpine,
    outputs: Sequence[ViewOutputs],
    dialect: str | None = "duckdb",
    *,
    strategy: str | None = None,
    pretty: bool = True,
) -> str:
    """The training-set query as SQL text for ``dialect`` (what ``feature-layer sql`` prints)."""
    name = capabilities(dialect).name
    return build_training_set_query(spine, outputs, name, strategy=strategy).sql(dialect=name, pretty=pretty)
