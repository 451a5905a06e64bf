"""Spark's per-view range join: ``max_by`` of the feature rows within the TTL window.

Used by the ``carry`` formulation's query (``build_carry_query``) for a view with a TTL: one CTE
per such view holding, for every (join keys, as-of time) of the spine, the latest feature row
within the TTL, joined back to the entity rows at the end:

    SELECT s.keys, s.as_of, max_by(struct(features), struct(event, tie-break…)) AS best
    FROM <view> AS f JOIN <spine> AS s
      ON f.keys = s.keys AND f.event <= s.as_of AND f.event >= s.as_of - ttl
    GROUP BY s.keys, s.as_of
    … <entity rows> LEFT JOIN best ON keys = keys AND as_of = as_of

The TTL bounds the rows each entity row *matches*, but an equality on the keys alone would still
compare each entity row with every feature row of its key (a key with 3 values and 13,000 rows each:
billions of comparisons). So the join is also on a time bucket ``BUCKET_TTLS`` TTLs wide: a feature
row's event time falls in its bucket, ``UNIX_MICROS(event) DIV width``, and an entity row asks for
every bucket from that of its window's start (``as-of − ttl``, the very expression the event time is
compared with) to that of its end (``SEQUENCE``, exploded: one row, or two when the window straddles
a bucket edge; ``DIV`` is monotonic, also where it truncates towards zero before 1970, so no bucket
the window touches is left out). Each entity row then meets the feature rows of its key within
``BUCKET_TTLS + 1`` TTLs of it, however many share the key, and the spine is joined with ``1 +
1/BUCKET_TTLS`` rows per entity row on average (a one-TTL bucket always took two). Both sides are
bucketed as the ``TIMESTAMP`` (instant) that Spark compares them as (a naive event time or date is
compared with the as-of instant after the same session-time-zone cast), so the bucket never
disagrees with the comparison. The inner join lets Spark broadcast the smaller side (the spine's
exploded (keys, as-of) on the standard workload, the feature rows on a short, low-cardinality one)
and stream the other past it without shuffling it — the plan of the hand-written floor; an outer
join preserving the entity rows could only broadcast the feature rows, and shuffled both sides
(measured ~1.5× the floor). Grouping by (keys, as-of) instead of a row number keeps it deterministic
although the spine is read twice (features depend on nothing else; a null key never joins, so it
gets null features either way). ``max_by`` compares the ordering struct field by field with nulls
smallest, so the winner is the window formulations': event time, then created-at (latest, nulls
oldest), then every orderable feature (larger, nulls last) — exactly ``tie_break_order``. When the
requested features are all among those ranks, the aggregate is ``MAX(struct(ranks))`` instead
(``best_row``: the same winner, one struct per row). Integer keys (on both sides) and the bucket
are hashed into one ``BIGINT`` equi-join key, each key's equality checked after it
(``_key_and_bucket``).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

from sqlglot import exp

from feature_layer.sql.names import col, ident, relation_table

BEST = "__fl_best"
KEY = "__fl_rk"
BUCKET = "__fl_bk"
"""The exploded spine's time bucket: one its TTL window touches."""
BUCKET_TTLS = 2
"""A bucket's width in TTLs. Wider, fewer entity rows span two buckets (on average 1 + 1/width
rows per entity row are joined, against 2 for one TTL) and each meets the feature rows of its key
within width + 1 TTLs of it (still independent of how many share the key)."""


def time_bucket(value: exp.Expression, width_us: int) -> exp.Expression:
    """``value``'s bucket of ``width_us`` microseconds, as Spark compares it (an instant)."""
    instant = exp.cast(value, exp.DataType.build("TIMESTAMP", dialect="spark"))
    return exp.IntDiv(this=exp.UnixMicros(this=instant), expression=exp.Literal.number(max(1, width_us)))


def _bucketed_spine(spine: str, window: tuple[exp.Expression, exp.Expression], width_us: int) -> exp.Subquery:
    """The spine's rows, once per bucket its TTL window touches: ``window`` is (start, end), the
    expressions the event time is compared with (as-of − ttl, as-of); every bucket from the
    start's to the end's (usually one or two: a bucket is two TTLs wide)."""
    start, end = (time_bucket(bound.copy(), width_us) for bound in window)
    buckets = exp.Anonymous(this="SEQUENCE", expressions=[start, end])
    lateral = exp.Lateral(this=exp.Explode(this=buckets), view=True,
                          alias=exp.TableAlias(this=ident("__fl_e"), columns=[ident(BUCKET)]))
    select = exp.select(exp.Column(this=exp.Star(), table=ident("s")), col(BUCKET, "__fl_e")).from_(
        exp.Table(this=ident(spine), alias=exp.TableAlias(this=ident("s"))))
    select.append("laterals", lateral)
    return select.subquery(ident("s"))


def build_range_best(  # noqa: ANN001 - outputs: point_in_time.ViewOutputs (that module imports this one)
    outputs, spine: str, as_of: str, window: tuple[exp.Expression, exp.Expression, exp.Expression],
    tie_break: list[exp.Ordered],
) -> exp.Select:
    """Per (join keys, as-of time) of CTE ``spine``: this view's latest feature row within the TTL.

    Columns: ``__fl_rk<i>`` (the keys), ``as_of`` and ``__fl_best`` (a struct of the features).
    ``window``: the comparable event time and the TTL window's start and end it is compared with
    (``event >= start AND event <= end``); ``tie_break``: the training sets' order after the
    event time (both from ``point_in_time``).
    """
    view = outputs.view
    event, start, end = window
    width_us = view.ttl // timedelta(microseconds=1) * BUCKET_TTLS
    conditions = _key_and_bucket(view.join_keys, outputs.key_types, time_bucket(event.copy(), width_us))
    conditions += [exp.LTE(this=event.copy(), expression=end.copy()), exp.GTE(this=event.copy(), expression=start.copy())]
    ranks = [event.copy(), *(o.this.copy() for o in tie_break)]
    groups = [col(k, "s") for k in view.join_keys] + [col(as_of, "s")]
    return (
        exp.select(*[exp.alias_(col(k, "s"), f"{KEY}{i}", quoted=True) for i, k in enumerate(view.join_keys)])
        .select(col(as_of, "s"))
        .select(exp.alias_(best_row(outputs.features, ranks), BEST, quoted=True))
        .from_(relation_table(view, "f"))
        .join(_bucketed_spine(spine, (start, end), width_us), on=exp.and_(*conditions))
        .group_by(*groups)
    )


def hash_key(parts: list[exp.Expression]) -> exp.Expression:
    """The one ``BIGINT`` the integer keys and the bucket are joined on (any hash is correct:
    the key equalities are checked after it; a test swaps in one that collides)."""
    return exp.Anonymous(this="XXHASH64", expressions=parts)


def _key_and_bucket(keys: Sequence[str], key_types: Sequence[str], bucket: exp.Expression) -> list[exp.Expression]:
    """The join's equalities: each key, and the feature row's time ``bucket`` with the spine's.

    When every key is an integer on both sides (``ViewOutputs.key_types``), the equi-join key
    is one ``BIGINT``, ``XXHASH64`` of the keys and the bucket, and each key's equality is checked
    after the hash matched, as ``COALESCE(f.k = s.k, FALSE)`` (a form Spark does not take as a
    join key). Spark's broadcast hash join on one ``BIGINT`` (a ``LongHashedRelation``) probes
    measurably faster than on two columns (an ``UnsafeHashedRelation``: 1.04× against 1.15× the
    hand-written floor, BENCHMARKS.md). The rows it returns are the same: rows whose keys are
    equal have equal hashes (both sides hashed as ``TRY_CAST(k AS BIGINT)``, whatever integer
    width each side has; a value too large for a ``BIGINT`` hashes as null on both sides), a
    hash collision only adds candidates that the key equalities and the time window still
    filter, and a feature row matching two copies of one entity row (colliding buckets) gives
    the same ``MAX``. A null key never matches (the equality is null, coalesced to false). Other
    keys (strings: a collated string's equality is not its bytes') join on the columns
    themselves.
    """
    if key_types and len(key_types) == len(keys) and all(t == "int64" for t in key_types):
        def as_int(table: str, key: str) -> exp.Expression:
            return exp.TryCast(this=col(key, table), to=exp.DataType.build("BIGINT"), safe=True)

        checks: list[exp.Expression] = [
            exp.Coalesce(this=exp.EQ(this=col(k, "f"), expression=col(k, "s")), expressions=[exp.false()])
            for k in keys
        ]
        # Spark infers no IS NOT NULL from the checks: without these, every null key of a bucket
        # would meet all the others there. On the columns themselves, so Parquet skips them in the
        # scan (a view key beyond BIGINT hashes as null but meets no entity key: those are 64-bit
        # integers at most, never null here).
        checks += [exp.Not(this=exp.Is(this=col(k, t), expression=exp.Null())) for t in ("f", "s") for k in keys]
        left = hash_key([as_int("f", k) for k in keys] + [bucket])
        right = hash_key([as_int("s", k) for k in keys] + [col(BUCKET, "s")])
        return [exp.EQ(this=left, expression=right), *checks]
    equalities: list[exp.Expression] = [exp.EQ(this=col(k, "f"), expression=col(k, "s")) for k in keys]
    return [*equalities, exp.EQ(this=bucket, expression=col(BUCKET, "s"))]


def _field(name: str, value: exp.Expression) -> exp.PropertyEQ:
    return exp.PropertyEQ(this=ident(name), expression=value)


def _feature_column(rank: exp.Expression) -> str | None:
    """The feature-row column ``rank`` is (``f.<name>``), else ``None`` (an expression)."""
    if isinstance(rank, exp.Column) and rank.table == "f" and isinstance(rank.this, exp.Identifier):
        return rank.name
    return None


def best_row(features, ranks: list[exp.Expression]) -> exp.Expression:  # noqa: ANN001 - features: Feature
    """The aggregate picking the features of the feature row with the largest ``ranks``.

    When every requested feature is itself one of the ranks (the tie-break lists every orderable
    feature), ``MAX`` of one struct of the ranks, each feature's field named after it: the same
    winner as ``MAX_BY`` (struct order, nulls smallest; rows tied on every rank hold the same
    features) with half the struct built, compared and shuffled per feature row. Otherwise
    (a feature that cannot be ordered) ``MAX_BY(struct(features), struct(ranks))``.
    """
    wanted = {f.name for f in features}
    named: list[exp.PropertyEQ] = []
    for index, rank in enumerate(ranks):
        name = _feature_column(rank)
        if name in wanted:
            wanted.discard(name)
        else:
            name = f"__fl_o{index}"
        named.append(_field(name, rank))
    if not wanted:
        return exp.Max(this=exp.Struct(expressions=named))
    values = exp.Struct(expressions=[_field(f.name, col(f.name, "f")) for f in features])
    order = exp.Struct(expressions=[_field(f"__fl_o{i}", r) for i, r in enumerate(ranks)])
    return exp.Anonymous(this="MAX_BY", expressions=[values, order])


def join_range_best(query: exp.Select, outputs, cte: str, alias: str, as_of: str) -> exp.Select:  # noqa: ANN001
    """``query`` (entity rows as ``s``) LEFT JOIN the view's CTE ``cte`` on keys and as-of time."""
    view = outputs.view
    on = [exp.EQ(this=col(k, "s"), expression=col(f"{KEY}{i}", alias)) for i, k in enumerate(view.join_keys)]
    on.append(exp.EQ(this=col(as_of, "s"), expression=col(as_of, alias)))
    target = exp.Table(this=ident(cte), alias=exp.TableAlias(this=ident(alias)))
    return query.join(target, on=exp.and_(*on), join_type="LEFT")


def range_feature(alias: str, feature: str) -> exp.Expression:
    """Feature ``feature`` of the best row joined as ``alias`` (null when none joined)."""
    return exp.Dot(this=col(BEST, alias), expression=ident(feature))
