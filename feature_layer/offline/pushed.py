"""Pushed values in training sets: a view's offline push log read beside its warehouse relation.

``store.push`` and ``POST /v1/push`` append each push to the view's offline log
(``<project>/data/push/<view>/push-*.parquet``, see ``feature_layer.stream.push``). A training set
over such a view reads the union of the view's relation and those rows, so a value served online
after a push is also the value a model trains on at that time. The rows are uploaded into the
warehouse session once per training set (``Engine.register_arrow``: a DuckDB scan, a PostgreSQL
temporary table, a Spark temporary view; inline VALUES on an engine without temporary tables,
like the entity rows), typed like the relation's own columns, and the view's
table reference in the point-in-time query becomes ``(SELECT … FROM relation UNION ALL SELECT …
FROM pushed) AS f`` — one small named pass over the finished sqlglot tree, in the engine's dialect
only (another dialect's SQL has no session holding the uploaded rows).

A pushed row that a dbt model has also loaded into the relation shows up twice with the same key,
event time and values; the point-in-time rule picks one of two equal rows, so the result is the same.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.parquet as pq
from sqlglot import exp

from feature_layer.errors import InputError
from feature_layer.registry.model import FeatureView
from feature_layer.sql.names import ident, relation_table

if TYPE_CHECKING:
    from feature_layer.offline.engine import Engine


def log_files(push_log: Path | None, view: FeatureView) -> list[Path]:
    """The view's landed push files (a crash mid-write leaves only a hidden ``.tmp``, never matched)."""
    if push_log is None:
        return []
    folder = push_log / view.name
    return sorted(folder.glob("push-*.parquet")) if folder.is_dir() else []


def _columns(view: FeatureView) -> list[str]:
    return [*view.join_keys, view.event_time, *([view.created_at] if view.created_at else []), *view.feature_names]


def _read(files: Sequence[Path], columns: list[str], view: FeatureView) -> pa.Table:
    tables = []
    for path in files:
        try:
            table = pq.read_table(path)
        except (OSError, pa.ArrowInvalid) as exc:
            raise InputError(f"The push log file {path} of feature view {view.name!r} cannot be read: {exc}.",
                             fix="move the damaged file out of the folder (the values it held were pushed "
                             "online already) and build the training set again.") from exc
        missing = [c for c in columns if c not in table.column_names]
        if missing:
            raise InputError(f"The push log file {path} lacks {', '.join(missing)}, which feature view "
                             f"{view.name!r} now declares.",
                             fix="push the view's values again under its current declaration, or move the "
                             "old file out of the folder.")
        tables.append(table.select(columns))
    return pa.concat_tables(tables, promote_options="permissive")


def _cast(table: pa.Table, target: pa.Schema, view: FeatureView) -> pa.Table:
    arrays = []
    for name in table.column_names:
        want = target.field(name).type
        column = table.column(name)
        if pa.types.is_timestamp(want) and pa.types.is_timestamp(column.type) and want.tz and not column.type.tz:
            column = column.cast(pa.timestamp(column.type.unit, tz="UTC"))  # pushes are stored in UTC
        try:
            arrays.append(column.cast(want))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise InputError(f"Pushed values of {view.name}.{name} ({column.type}) do not fit the warehouse "
                             f"column ({want}): {exc}.",
                             fix="push values of the feature's declared type.") from exc
    return pa.Table.from_arrays(arrays, schema=pa.schema([target.field(n) for n in table.column_names]))


@dataclass
class PushedRows:
    """The push logs uploaded into one engine session, and how the query reads them."""

    engine: Engine | None = None
    unions: dict[tuple[str, str, str], exp.Union] = field(default_factory=dict)
    registered: list[str] = field(default_factory=list)
    views: set[str] = field(default_factory=set)

    def apply(self, tree: exp.Expression) -> exp.Expression:
        """``tree`` with each pushed view's relation read as the union (the pass; see the module doc)."""
        if not self.unions:
            return tree

        def swap(node: exp.Expression) -> exp.Expression:
            if not isinstance(node, exp.Table):
                return node
            union = self.unions.get(_key(node))
            if union is None:
                return node
            alias = node.args.get("alias") or exp.TableAlias(this=ident(node.name))
            return exp.Subquery(this=union.copy(), alias=alias.copy())

        return tree.transform(swap, copy=True)

    def close(self) -> None:
        while self.registered and self.engine is not None:
            self.engine.unregister(self.registered.pop())


def _key(table: exp.Table) -> tuple[str, str, str]:
    return (table.catalog, table.db, table.name)


def _source(engine: Engine, name: str, rows: pa.Table, staged: PushedRows) -> exp.Expression:
    """The uploaded rows: a session temporary table, or inline VALUES where the engine has none."""
    from feature_layer.offline.entity import staged_in_temp_tables

    if staged_in_temp_tables(engine):
        engine.register_arrow(name, rows)
        staged.registered.append(name)
        return exp.Table(this=ident(name))
    from feature_layer.offline.inline import inline_values

    return exp.Subquery(this=inline_values(rows, name), alias=exp.TableAlias(this=ident(name)))


def stage_pushed(engine: Engine, views: Sequence[FeatureView], push_log: Path | None) -> PushedRows:
    """Upload the push logs of ``views`` that have one; the caller closes the result."""
    staged = PushedRows(engine=engine)
    try:
        for view in views:
            files = log_files(push_log, view)
            if not files or view.name in staged.views:
                continue
            columns = _columns(view)
            source = relation_table(view)
            selected = exp.select(*[exp.column(ident(c)) for c in columns]).from_(source.copy())
            target = engine.schema_of(selected)
            name = f"__fl_pushed_{uuid.uuid4().hex[:12]}"
            rows = _cast(_read(files, columns, view), target, view)
            pushed = exp.select(*[exp.column(ident(c)) for c in columns]).from_(_source(engine, name, rows, staged))
            staged.unions[_key(source)] = exp.union(selected, pushed, distinct=False)
            staged.views.add(view.name)
    except BaseException:
        staged.close()
        raise
    return staged


__all__ = ["PushedRows", "log_files", "stage_pushed"]
