"""The warehouse engine table: adapter type → how to open its engine.

One place decides which engine serves a dbt target, so adding an adapter is one entry here
(and its Engine subclass), not an if/elif in several modules.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from feature_layer.config import WarehouseSettings, require_warehouse_file
from feature_layer.errors import WarehouseError
from feature_layer.offline.engine import DuckDBEngine, Engine, PostgresEngine


def _duckdb(settings: WarehouseSettings) -> Engine:
    require_warehouse_file(settings)  # never let duckdb.connect create an empty database
    path: str | Path = settings.path or ":memory:"
    if Path(path).name == ":memory:":
        path = ":memory:"
    return DuckDBEngine(path, schema=settings.schema, file_search_path=settings.project_dir, target=settings.target)


def _postgres(settings: WarehouseSettings) -> Engine:
    return PostgresEngine(
        host=settings.host,
        port=settings.port,
        user=settings.user,
        password=settings.password,
        dbname=settings.dbname,
        schema=settings.schema,
        target=settings.target,
    )


def _spark(settings: WarehouseSettings) -> Engine:
    from feature_layer.offline.spark import SparkEngine  # pyspark only when a spark target is used

    return SparkEngine(conf=settings.options, warehouse_dir=settings.path, schema=settings.schema,
                       target=settings.target)


ENGINES: dict[str, Callable[[WarehouseSettings], Engine]] = {
    "duckdb": _duckdb,
    "postgres": _postgres,
    "spark": _spark,
}
"""Adapter type (profiles.yml ``type:``) → the opener of its engine."""


def connect(settings: WarehouseSettings) -> Engine:
    """Open the engine for a dbt target (``duckdb``, ``postgres`` or ``spark``)."""
    opener = ENGINES.get(settings.type)
    if opener is None:
        raise WarehouseError(
            f"Target {settings.target!r} uses adapter {settings.type!r}, which feature_layer cannot query yet.",
            fix=f"use a {', '.join(sorted(ENGINES))} target.",
        )
    return opener(settings)
