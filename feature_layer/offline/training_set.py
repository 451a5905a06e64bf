"""Training sets: point-in-time-correct features for each row of an entity dataframe.

``get_training_set`` resolves feature references through the registry, prepares the entity
rows in the warehouse (``feature_layer.offline.entity``) and returns a lazy ``TrainingSet``:
the SQL is built by the pure builders in ``feature_layer.sql.point_in_time`` and runs only
when a result is asked for. Semantics: ``docs/training_sets.md``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
from sqlglot import exp

from feature_layer.errors import FeatureLayerError, InputError
from feature_layer.offline.entity import (
    PreparedEntities,
    arrow_logical_type,
    check_entity_nulls,
    prepare_entities,
    refuse_null_timestamps,
    table_keys,
    warehouse_schemas,
)
from feature_layer.offline.pushed import PushedRows, stage_pushed
from feature_layer.registry.join_keys import with_join_key_map
from feature_layer.registry.model import Feature, FeatureView
from feature_layer.sql.dialects import capabilities
from feature_layer.sql.point_in_time import (
    Conversion,
    ViewOutputs,
    build_training_set_query,
    plan_outputs,
)
from feature_layer.types import arrow_type, matches_arrow, sql_type

if TYPE_CHECKING:
    import pandas
    import polars

    from feature_layer.offline.engine import Engine
    from feature_layer.parts import Parts
    from feature_layer.registry.registry import Registry


class TrainingSet:
    """A training set not yet computed: its SQL, and ways to get the rows."""

    def __init__(
        self,
        engine: Engine,
        entities: PreparedEntities,
        outputs: Sequence[ViewOutputs],
        *,
        strategy: str | None = None,
        pushed: PushedRows | None = None,
    ) -> None:
        self._engine = engine
        self._entities = entities
        self.outputs = tuple(outputs)
        self._strategy = strategy
        self._pushed = pushed or PushedRows()
        self.on_arrow: Any = None
        """Called with (self, table) after ``to_arrow``: ``get_training_set`` records statistics."""

    @property
    def columns(self) -> tuple[str, ...]:
        """Output columns: the entity columns unchanged, then the features in request order."""
        return (*self._entities.columns, *(n for o in self.outputs for n in o.names))

    @property
    def features(self) -> tuple[str, ...]:
        """The ``view.feature`` references in the training set, in column order."""
        return tuple(f.ref for o in self.outputs for f in o.features)

    def expression(self, dialect: str | None = None) -> exp.Select:
        """The query as a sqlglot tree for ``dialect`` (default: the engine's)."""
        dialect = dialect or self._engine.dialect
        strategy = self._strategy if dialect == self._engine.dialect else None
        tree = build_training_set_query(self._entities.spine, self.outputs, dialect, strategy=strategy)
        if dialect == self._engine.dialect:  # the uploaded push logs exist in the engine's session only
            tree = self._pushed.apply(tree)
        return tree

    def sql(self, dialect: str | None = None, *, pretty: bool = True) -> str:
        """The SQL that computes this training set, in ``dialect`` (default: the engine's)."""
        dialect = dialect or self._engine.dialect
        return self.expression(dialect).sql(dialect=dialect, pretty=pretty)

    def to_arrow(self) -> pa.Table:
        """Run the query and return the rows as an Arrow table (input order).

        Features have their logical type's Arrow type (``feature_layer.types.arrow_type``), the
        type an online lookup returns; an in-memory input's columns come back as given.
        """
        fetched = self._engine.fetch_arrow(self.expression())
        refuse_null_timestamps(self._entities, fetched)
        table = self._conform(fetched, 0)
        if self.on_arrow is not None:  # search: record the training set's statistics (never raises)
            self.on_arrow(self, table)
        return table

    def to_batches(self, batch_size: int = 100_000) -> Iterator[pa.RecordBatch]:
        """Stream the rows in Arrow record batches (bounded memory), typed as ``to_arrow``."""
        check_entity_nulls(self._engine, self._entities)
        batches = self._engine.stream_arrow(self.expression(), batch_size=batch_size)
        return (self._conform(batch, offset) for batch, offset in _offsets(batches))

    def _conform(self, batch: Any, offset: int) -> Any:
        """``batch`` (rows ``offset``… of the result) with the training set's own column types."""
        columns = {}
        given = self._entities.table
        if given is not None:
            for name in self._entities.columns:
                column = given.column(name).slice(offset, batch.num_rows)
                columns[name] = column.combine_chunks() if isinstance(batch, pa.RecordBatch) else column
        for out in self.outputs:
            for feature, name in zip(out.features, out.names, strict=True):
                target = arrow_type(feature.dtype)
                current = batch.column(name)
                if target is not None and current.type != target:
                    columns[name] = current.cast(target)
        for name, column in columns.items():
            batch = batch.set_column(batch.schema.get_field_index(name), name, column)
        return batch

    def to_pandas(self) -> pandas.DataFrame:
        from feature_layer.extras import require

        require("pandas", "TrainingSet.to_pandas()")
        return self.to_arrow().to_pandas()

    def to_polars(self) -> polars.DataFrame:
        from feature_layer.extras import require

        pl = require("polars", "TrainingSet.to_polars()")
        return pl.from_arrow(_polars_ready(self.to_arrow()))

    def to_parquet(self, path: str | Path, *, batch_size: int = 100_000) -> Path:
        """Write the rows to a Parquet file, streaming batches (never the whole set in memory).

        The rows go to a temporary file in the same folder, moved over ``path`` only once
        complete: a failure leaves any previous file untouched and no partial file behind.
        """
        import os
        import uuid

        import pyarrow.parquet as pq

        target = _parquet_target(path)
        # Same folder (so os.replace is an atomic rename), created like any file (umask applies).
        temp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:12]}.tmp")
        writer: pq.ParquetWriter | None = None
        try:
            try:
                for batch in self.to_batches(batch_size):
                    if writer is None:
                        writer = pq.ParquetWriter(temp, batch.schema)
                    writer.write_batch(batch)
                if writer is None:
                    pq.write_table(self._conform(self._engine.fetch_arrow(self.expression().limit(0)), 0), temp)
            finally:
                if writer is not None:
                    writer.close()
            os.replace(temp, target)
        except OSError as exc:
            temp.unlink(missing_ok=True)
            raise InputError(
                f"Could not write the training set to {target}: {exc.strerror or exc}.",
                fix="pass a writable file path (its folder must exist and be writable).",
            ) from exc
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
        return target

    def to_table(self, name: str, *, replace: bool = False) -> str:
        """Create warehouse table ``name`` from the training set without pulling rows into Python.

        With an in-memory entity dataframe, the table is created in the same session that holds
        the uploaded entity rows. With ``replace``, an existing table is replaced the way the
        engine's ``replace`` capability says (``offline.kinds.REPLACE_STRATEGIES``): in every
        strategy a failing query leaves the previous table as it was. Returns the name as given.
        """
        from feature_layer.offline.replace import replace_table

        table = _output_table(name, self._engine.dialect)
        for part in ("this", "db", "catalog"):
            node = table.args.get(part)
            if isinstance(node, exp.Identifier):
                node.set("quoted", True)
        check_entity_nulls(self._engine, self._entities)  # no rows come back to check
        if replace:
            replace_table(self._engine, table, self.expression())
        else:
            self._engine.execute(exp.Create(this=table, kind="TABLE", expression=self.expression()))
        return name

    def close(self) -> None:
        """Drop the uploaded entity rows (and push logs) from the warehouse session."""
        self._pushed.close()
        if self._entities.registered:
            self._engine.unregister(self._entities.registered)
            self._entities.registered = None

    def __enter__(self) -> TrainingSet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"TrainingSet(features={list(self.features)!r}, rows={self._entities.num_rows})"


def _polars_ready(table: pa.Table) -> pa.Table:
    """Timestamps with a fixed-offset zone (``+05:30``, kept from the entity dataframe) in UTC:
    polars accepts only named zones, and UTC names the same instants."""
    import re

    for index, field in enumerate(table.schema):
        tz = getattr(field.type, "tz", None)
        if pa.types.is_timestamp(field.type) and tz and re.fullmatch(r"[+-]\d{2}:?\d{2}", tz):
            table = table.set_column(index, field.name, table.column(index).cast(pa.timestamp(field.type.unit, "UTC")))
    return table


def _parquet_target(path: str | Path) -> Path:
    """The Parquet output path, refused up front when it cannot be a file we may write."""
    if not isinstance(path, (str, Path)) or not str(path).strip():
        raise InputError(f"to_parquet needs a file path, got {path!r}.", fix="pass a path such as 'training.parquet'.")
    target = Path(path)
    if target.is_dir():
        raise InputError(f"{target} is a folder, not a file.", fix=f"pass a file path, e.g. {target / 'training.parquet'}.")
    if not target.parent.is_dir():
        raise InputError(
            f"Cannot write the training set to {target}: the folder {target.parent} does not exist.",
            fix="create the folder first or pass a path in an existing folder.",
        )
    return target


def _output_table(name: str, dialect: str) -> exp.Table:
    """``name`` (``table``, ``schema.table``, ``catalog.schema.table``) as a table node, or InputError."""
    from sqlglot.errors import SqlglotError

    if not isinstance(name, str) or not name.strip():
        raise InputError(f"to_table needs a table name, got {name!r}.", fix="pass a name such as 'training_set'.")
    try:
        table = exp.to_table(name, dialect=dialect)
    except SqlglotError as exc:
        raise InputError(
            f"{name!r} is not a table name the warehouse accepts ({dialect}).",
            fix="use letters, digits and underscores, optionally as `schema.table`; no quotes.",
        ) from exc
    parts = [table.args.get(k) for k in ("this", "db", "catalog") if table.args.get(k) is not None]
    if not table.name or table.comments or not all(isinstance(p, exp.Identifier) for p in parts):
        raise InputError(f"{name!r} is not a plain table name.", fix="pass `table` or `schema.table`.")
    return table


def build_training_set(
    engine: Engine,
    entity_df: Any,
    requested: Mapping[FeatureView, Sequence[Feature]] | Sequence[tuple[FeatureView, Sequence[Feature]]],
    *,
    full_feature_names: bool = False,
    timestamp_column: str | None = None,
    strategy: str | None = None,
    push_log: Path | None = None,
) -> TrainingSet:
    """A training set from feature views already resolved (the registry-free core).

    Validation happens here, eagerly, so a bad entity dataframe fails before any query runs.
    ``push_log``: the folder of the views' offline push logs (``feature_layer.offline.pushed``).
    """
    items = list(requested.items()) if isinstance(requested, Mapping) else list(requested)
    if not items or not any(features for _, features in items):
        raise InputError("No features were requested.", fix="pass features=['view.feature', …] or service=….")
    views = [view for view, features in items if features]
    entities = prepare_entities(engine, entity_df, views, timestamp_column=timestamp_column)
    pushed = PushedRows()
    try:
        pushed = stage_pushed(engine, views, push_log)
        tz_views, conversions, warehouse_keys = warehouse_types(engine, items)
        indexed, unique = event_indexes(engine, views) if strategy is None else (set(), set())
        indexed, unique = indexed - pushed.views, unique - pushed.views  # the union has no index
        outputs = plan_outputs(
            items,
            entity_columns=entities.columns,
            full_feature_names=full_feature_names,
            tz_aware_views=tz_views,
            conversions=conversions,
            indexed_views=indexed,
            unique_event_views=unique,
            # the entity rows, the registry and the warehouse's own column all agree (a stale
            # registry type must not make Spark hash a key whose column is something else)
            key_types={k: t for k, t in entities.key_types.items() if warehouse_keys.get(k) == t},
        )
    except FeatureLayerError:
        pushed.close()
        if entities.registered:
            engine.unregister(entities.registered)
        raise
    return TrainingSet(engine, entities, outputs, strategy=strategy, pushed=pushed)


def _offsets(batches: Iterable[pa.RecordBatch]) -> Iterator[tuple[pa.RecordBatch, int]]:
    """Each batch with the position of its first row in the result."""
    offset = 0
    for batch in batches:
        yield batch, offset
        offset += batch.num_rows


def _tz_aware(arrow: pa.DataType) -> bool:
    return pa.types.is_timestamp(arrow) and arrow.tz is not None


def feature_conversion(feature: Feature, warehouse: pa.DataType) -> Conversion | None:
    """How a feature's warehouse column (of Arrow type ``warehouse``) becomes its logical type.

    ``None`` when it already is (or the logical type is ``unknown``: the warehouse's type is
    kept). A naive timestamp is UTC by convention: it is made an instant, not cast.
    """
    target = sql_type(feature.dtype)
    if target is None or matches_arrow(feature.dtype, warehouse):
        return None
    if feature.dtype == "timestamp":
        naive = pa.types.is_timestamp(warehouse)
        return Conversion(cast=None if naive else target, to_instant=True)
    return Conversion(cast=target)


def feature_conversions(
    requested: Sequence[tuple[FeatureView, Sequence[Feature]]], schemas: Mapping[str, pa.Schema]
) -> dict[str, Conversion]:
    """``view.feature`` → its ``Conversion``, for the requested features that need one."""
    out = {}
    for view, features in requested:
        for feature in features:
            conversion = feature_conversion(feature, schemas[view.name].field(feature.name).type)
            if conversion is not None:
                out[feature.ref] = conversion
    return out


def warehouse_types(
    engine: Engine, requested: Sequence[tuple[FeatureView, Sequence[Feature]]]
) -> tuple[set[str], dict[str, Conversion], dict[tuple[str, str], str]]:
    """(views whose event time is time-zone-aware, ``view.feature`` → ``Conversion``, (view, join
    key) → its logical type), read from the warehouse's own column types (one zero-row query per
    view)."""
    wanted = [(view, features) for view, features in requested if features]
    schemas = warehouse_schemas(engine, wanted)
    tz_views = {name for name, schema in schemas.items() if _tz_aware(schema.field(0).type)}
    keys = {(view.name, key): arrow_logical_type(schemas[view.name].field(column).type)
            for view, _ in wanted for key, column in zip(view.join_keys, table_keys(view), strict=True)}
    return tz_views, feature_conversions(wanted, schemas), keys


def event_indexes(engine: Engine, views: Sequence[FeatureView]) -> tuple[set[str], set[str]]:
    """(views whose relation has a b-tree index on (join keys…, event time), those where it is unique).

    Only on engines with LATERAL; read from the PostgreSQL catalog in one query (valid,
    non-partial b-tree indexes; the join keys in any order as the leading columns, then the
    event time; unique only when those are all its columns). An indexed view gets the
    ``lateral`` formulation (one index probe per entity row); a unique one skips the tie-break.
    """
    if not views or not capabilities(engine.dialect).lateral_join:
        return set(), set()
    names = {v.name: _pg_relation_name(v) for v in views}
    values = ", ".join(f"({exp.Literal.string(n).sql('postgres')})" for n in sorted(set(names.values())))
    rows = engine.fetch_arrow(
        "SELECT r.rel, i.indexrelid::bigint AS idx, i.indisunique AS uniq, k.pos::int AS pos,"
        " coalesce(a.attname::text, '') AS col"
        f" FROM (VALUES {values}) AS r(rel)"
        " JOIN pg_index i ON i.indrelid = to_regclass(r.rel)"
        " JOIN pg_class ic ON ic.oid = i.indexrelid JOIN pg_am am ON am.oid = ic.relam"
        " CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, pos)"
        " LEFT JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum"
        " WHERE am.amname = 'btree' AND i.indpred IS NULL AND i.indisvalid"
    ).to_pylist()
    indexes: dict[tuple[str, int, bool], list[tuple[int, str]]] = {}
    for row in rows:
        indexes.setdefault((row["rel"], row["idx"], row["uniq"]), []).append((row["pos"], row["col"]))
    leading: dict[str, list[tuple[tuple[str, ...], bool]]] = {}
    for (rel, _, uniq), columns in indexes.items():
        leading.setdefault(rel, []).append((tuple(c for _, c in sorted(columns)), uniq))
    indexed, unique = set(), set()
    for view in views:
        width = len(view.join_keys)
        for columns, uniq in leading.get(names[view.name], []):
            if set(columns[:width]) == set(view.join_keys) and columns[width : width + 1] == (view.event_time,):
                indexed.add(view.name)
                if uniq and len(columns) == width + 1:
                    unique.add(view.name)
    return indexed, unique


def _pg_relation_name(view: FeatureView) -> str:
    """``"schema"."table"`` as ``to_regclass`` reads it (``pg_temp`` included; the database is the
    connection's own)."""
    rel = view.relation
    return exp.Table(this=exp.to_identifier(rel.identifier, quoted=True),
                     db=exp.to_identifier(rel.schema, quoted=True) if rel.schema else None).sql("postgres")


def resolve_requested(
    registry: Registry, features: Sequence[str] | str | None, service: str | None
) -> list[tuple[FeatureView, list[Feature]]]:
    """Feature references (or a service's) → (view, features) pairs in request order."""
    if features is not None and service is not None:
        raise InputError("Both features and service were given.", fix="pass one of them, not both.")
    if features is None and service is None:
        raise InputError("No features were requested.", fix="pass features=['view.feature', …] or service='…'.")
    if service is not None:
        refs: Sequence[str] = list(registry.service(service).features)
    else:
        refs = [features] if isinstance(features, str) else list(features or [])
    if not refs:
        raise InputError("The feature list is empty.", fix="pass at least one 'view.feature' or 'view.*'.")
    resolved = registry.resolve(refs)
    return [(registry.view(name), list(feats)) for name, feats in resolved.items()]


def get_training_set(
    parts: Parts,
    entity_df: Any,
    *,
    features: Sequence[str] | str | None = None,
    service: str | None = None,
    full_feature_names: bool = False,
    timestamp_column: str | None = None,
    join_key_map: Mapping[str, Any] | None = None,
) -> TrainingSet:
    """Point-in-time-correct features for each row of ``entity_df`` (see docs/training_sets.md).

    ``join_key_map``: views read under other entity columns (``feature_layer.registry.join_keys``).

    ``entity_df``: a pandas/polars DataFrame, a pyarrow Table, a Parquet path, or a warehouse
    table name or SQL query. Its timestamp column is ``event_timestamp``, else its only
    timestamp column, else ``timestamp_column``.
    """
    requested = resolve_requested(parts.registry(), features, service)
    requested = with_join_key_map(parts.registry(), requested, service, join_key_map)  # ops2
    training = build_training_set(
        parts.engine(),
        entity_df,
        requested,
        full_feature_names=full_feature_names,
        timestamp_column=timestamp_column,
        push_log=parts.push_log,
    )
    from feature_layer.online.statistics import record_training_statistics

    training.on_arrow = lambda ts, table: record_training_statistics(parts, ts, table)
    return training


__all__ = ["TrainingSet", "build_training_set", "get_training_set"]
