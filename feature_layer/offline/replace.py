"""Replace a warehouse table by the rows of a query, the way the engine's ``replace`` flag says.

One statement list per strategy (:data:`~feature_layer.offline.kinds.REPLACE_STRATEGIES`), built
as sqlglot trees in the engine's dialect; :func:`replace_table` runs it. In each strategy the new
rows are complete before the old table is touched, so a failing query leaves it as it was.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

from sqlglot import exp

from feature_layer.offline.kinds import capabilities_of

if TYPE_CHECKING:
    from feature_layer.offline.engine import Engine


def _renamed(table: exp.Table, name: str) -> exp.Table:
    copy = table.copy()
    copy.set("this", exp.to_identifier(name, quoted=True))
    return copy


def _rename(table: exp.Table, to: str, *, if_exists: bool = False) -> exp.Alter:
    """``ALTER TABLE [IF EXISTS] table RENAME TO to`` (the new name unqualified: same schema)."""
    rename = exp.AlterRename(this=exp.Table(this=exp.to_identifier(to, quoted=True)))
    return exp.Alter(this=table.copy(), kind="TABLE", actions=[rename], exists=if_exists)


def create_or_replace(table: exp.Table, query: exp.Expression) -> list[exp.Expression]:
    """One atomic ``CREATE OR REPLACE TABLE … AS``."""
    return [exp.Create(this=table.copy(), kind="TABLE", expression=query, replace=True)]


def rename_in_transaction(table: exp.Table, query: exp.Expression, suffix: str) -> list[exp.Expression]:
    """CREATE under a new name, then swap with renames: run as one transaction."""
    staging, old = f"__fl_new_{suffix}", f"__fl_old_{suffix}"
    return [
        exp.Create(this=_renamed(table, staging), kind="TABLE", expression=query),
        _rename(table, old, if_exists=True),
        _rename(_renamed(table, staging), table.name),
        exp.Drop(tables=[_renamed(table, old)], kind="TABLE", exists=True),
    ]


def swap(table: exp.Table, query: exp.Expression, suffix: str) -> list[exp.Expression]:
    """CREATE under a new name (the old table readable meanwhile), then DROP the old, RENAME the new."""
    staging = f"__fl_new_{suffix}"
    return [
        exp.Create(this=_renamed(table, staging), kind="TABLE", expression=query),
        exp.Drop(tables=[table.copy()], kind="TABLE", exists=True),
        _rename(_renamed(table, staging), table.name),
    ]


def replace_table(engine: Engine, table: exp.Table, query: exp.Expression) -> str:
    """Replace ``table`` by the rows of ``query`` on ``engine``; returns the strategy used."""
    strategy = capabilities_of(engine).replace
    suffix = uuid.uuid4().hex[:8]
    if strategy == "create_or_replace":
        engine.execute(create_or_replace(table, query)[0])
    elif strategy == "rename":
        # One execute: the driver runs the statements in one transaction and commits once.
        engine.execute(";\n".join(s.sql(dialect=engine.dialect) for s in rename_in_transaction(table, query, suffix)))
    else:
        create, *rest = swap(table, query, suffix)
        engine.execute(create)
        try:
            for statement in rest:
                engine.execute(statement)
        except BaseException:
            _drop_quietly(engine, _renamed(table, f"__fl_new_{suffix}"))
            raise
    return strategy


def _drop_quietly(engine: Engine, table: exp.Table) -> None:
    """Drop a staging table after a failed swap (the failure itself is what the caller reports)."""
    from feature_layer.errors import WarehouseError

    try:
        engine.execute(exp.Drop(tables=[table], kind="TABLE", exists=True))
    except WarehouseError:
        pass
