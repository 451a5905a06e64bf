"""The warehouse engine table: one row per engine kind, found by the dbt target's adapter type.

Each :class:`EngineKind` says how to read its settings from the (rendered) profile output,
how to open its engine, and what it can do (capability flags). ``kind_for`` picks the row
for a target: the native kind of its adapter type (``duckdb``, ``postgres``, ``spark``), or
the ``generic`` kind, which runs through the dbt adapter's own connection, for every other
adapter whose dbt plugin is installed (and for any target when ``offline: {engine: generic}``
forces it). Adding a native engine is one row here and its ``Engine`` subclass.

This module reads no files and imports neither pyarrow-heavy engines nor dbt at import time:
``config`` reads settings through it, ``engines.connect`` opens engines through it.
"""

from __future__ import annotations

import importlib.util
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from feature_layer.errors import ConfigError

if TYPE_CHECKING:
    from feature_layer.offline.engine import Engine

ENGINE_CHOICES = ("auto", "generic")
"""``offline.engine`` in feature_layer.yml: ``auto`` (the native engine where the adapter has
one, else generic) or ``generic`` (the dbt adapter's connection for every target)."""


@dataclass(frozen=True)
class EngineKind:
    """One kind of warehouse engine: its settings, its opener and its capabilities."""

    name: str
    read_settings: Callable[[str, Mapping[str, Any], Path], dict[str, Any]]
    """(target, rendered profile output, project folder) → WarehouseSettings fields."""
    open: Callable[[Any], Engine]
    """WarehouseSettings → an open engine (imports its driver only now)."""
    native_arrow: bool
    """Results arrive as Arrow from the driver (no Python object per value)."""
    asof: bool
    """The engine has ASOF JOIN (the point-in-time ``asof`` formulation runs there)."""
    atomic_replace: bool
    """``to_table(replace=True)`` swaps the table in one step (a failure keeps the old one)."""
    temp_tables: bool
    """Uploaded entity rows live in session temporary tables (gone with the connection)."""
    connection_cost: str
    """``cheap`` (in-process), ``moderate`` (a network round trip or two), ``expensive``
    (a JVM or a remote session): how freely a second connection may be opened."""
    memory_limit: bool
    """``offline.memory_limit`` is applied to this engine (otherwise it is ignored)."""


# ----------------------------------------------------------------------------- DuckDB
def _is_file_path(raw_path: str) -> bool:
    """False for ``:memory:`` and URL-like paths (``md:…``, ``s3://…``) DuckDB opens itself."""
    return raw_path not in {"", ":memory:"} and not re.match(r"^[A-Za-z][A-Za-z0-9+.-]+:", raw_path)


def duckdb_path(raw_path: str, project_dir: Path) -> Path:
    """Where the DuckDB file of a profile lives.

    dbt-duckdb hands ``path`` to ``duckdb.connect`` unchanged, so a relative path is relative
    to the directory dbt runs in: the project folder when you run ``dbt build`` there (dbt's
    default, and what ``feature_layer.dbt.runner`` does). feature_layer cannot know where an
    earlier dbt ran, so it resolves a relative path against the project folder, that same
    default; ``config.require_warehouse_file`` explains the other case when the file is missing.
    """
    if not _is_file_path(raw_path):
        return Path(raw_path)
    path = Path(raw_path).expanduser()
    return path if path.is_absolute() else project_dir / path


def _duckdb_database_name(raw_path: str) -> str:
    """The catalog name dbt-duckdb gives the database: the file's stem (``memory`` in memory)."""
    if not _is_file_path(raw_path):
        return "memory" if raw_path in {"", ":memory:"} else raw_path.split(":", 1)[-1].split("?")[0].rsplit("/", 1)[-1]
    return Path(raw_path).stem


def _duckdb_fields(target: str, out: Mapping[str, Any], project_dir: Path) -> dict[str, Any]:
    raw_path = str(out.get("path", ":memory:"))
    settings = out.get("settings") or {}
    own_limit = settings.get("memory_limit") if isinstance(settings, Mapping) else None
    return {
        "type": "duckdb", "target": target, "path": duckdb_path(raw_path, project_dir),
        "schema": out.get("schema", "main"), "project_dir": project_dir, "profile_path": raw_path,
        "database": out.get("database") or _duckdb_database_name(raw_path),
        "options": {"memory_limit": str(own_limit)} if own_limit else {},
    }


DUCKDB_DEFAULT_LIMIT_CAP = 2 * 1024**3


def default_duckdb_memory_limit() -> int:
    """The embedded DuckDB's budget when none is configured: half the machine's memory, at most
    2 GiB (DuckDB's own default, 80% of the machine, leaves nothing for the Python side)."""
    try:
        physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return DUCKDB_DEFAULT_LIMIT_CAP
    return min(DUCKDB_DEFAULT_LIMIT_CAP, physical // 2)


EMBEDDED_SHARE = 0.6
"""The share of ``offline.memory_limit`` the embedded DuckDB gets as its own ``memory_limit``:
DuckDB runs inside this process, so the budget also has to hold the Python side (the batch in
flight, its encoded keys and values, the key hashes a run keeps, the Redis client's buffers)."""


def embedded_duckdb_limit(budget: int) -> int:
    """DuckDB's ``memory_limit`` for a process budget of ``budget`` bytes (:data:`EMBEDDED_SHARE`)."""
    return int(budget * EMBEDDED_SHARE)


def _open_duckdb(settings: Any) -> Engine:
    from feature_layer.offline.engine import DuckDBEngine

    path: str | Path = settings.path or ":memory:"
    if Path(path).name == ":memory:":
        path = ":memory:"
    limit: int | str = (embedded_duckdb_limit(settings.memory_limit) if settings.memory_limit
                        else settings.options.get("memory_limit") or default_duckdb_memory_limit())
    return DuckDBEngine(path, schema=settings.schema, file_search_path=settings.project_dir, target=settings.target,
                        memory_limit=limit)


# ----------------------------------------------------------------------------- PostgreSQL
def _postgres_fields(target: str, out: Mapping[str, Any], project_dir: Path) -> dict[str, Any]:
    return {
        "type": "postgres", "target": target, "host": out.get("host"), "port": out.get("port", 5432),
        "user": out.get("user"), "password": out.get("password") or out.get("pass") or None,
        "dbname": out.get("dbname") or out.get("database"), "schema": out.get("schema"),
        "database": out.get("dbname") or out.get("database"),
    }


def _open_postgres(settings: Any) -> Engine:
    from feature_layer.offline.engine import PostgresEngine

    return PostgresEngine(host=settings.host, port=settings.port, user=settings.user, password=settings.password,
                          dbname=settings.dbname, schema=settings.schema, target=settings.target)


# ----------------------------------------------------------------------------- Spark
def _spark_fields(target: str, out: Mapping[str, Any], project_dir: Path) -> dict[str, Any]:
    from feature_layer.offline.spark_settings import spark_warehouse_fields

    return spark_warehouse_fields(target, out, project_dir)


def spark_conf(settings: Any) -> dict[str, str]:
    """The Spark settings of a target, with ``offline.memory_limit`` as the driver's memory
    (``spark.driver.memory``, read when this process starts the JVM) unless the profile sets it."""
    conf = dict(settings.options)
    if settings.memory_limit and "spark.driver.memory" not in conf:
        conf["spark.driver.memory"] = f"{max(1, settings.memory_limit // 2**20)}m"
    return conf


def _open_spark(settings: Any) -> Engine:
    from feature_layer.offline.spark import SparkEngine  # pyspark only when a spark target is used

    return SparkEngine(conf=spark_conf(settings), warehouse_dir=settings.path, schema=settings.schema,
                       target=settings.target)


# ----------------------------------------------------------------------------- generic (any dbt adapter)
def adapter_plugin_installed(adapter_type: str) -> bool:
    """Whether dbt's plugin for ``adapter_type`` (``dbt.adapters.<type>``) can be imported."""
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", adapter_type):
        return False
    try:
        return importlib.util.find_spec(f"dbt.adapters.{adapter_type}") is not None
    except (ImportError, ValueError):
        return False


def _generic_fields(target: str, out: Mapping[str, Any], project_dir: Path) -> dict[str, Any]:
    adapter_type = str(out.get("type"))
    if not adapter_plugin_installed(adapter_type):
        natives = ", ".join(sorted(NATIVE_KINDS))
        raise ConfigError(
            f"Target {target!r} uses adapter {adapter_type!r}: feature_layer has no native engine for it, and the "
            f"generic engine (which runs through the dbt adapter's own connection) needs dbt's plugin for it, "
            "which is not installed.",
            fix=f"pip install dbt-{adapter_type} (the package dbt itself needs to run this target), or use a "
            f"{natives} target.",
        )
    schema = out.get("schema") or out.get("dataset")
    database = out.get("database") or out.get("dbname") or out.get("project") or out.get("catalog")
    fields: dict[str, Any] = {
        "type": adapter_type, "target": target, "schema": str(schema) if schema is not None else None,
        "database": str(database) if database is not None else None, "project_dir": project_dir,
    }
    if adapter_type == "duckdb":  # the native reader knows where a relative path points
        fields["path"] = duckdb_path(str(out.get("path", ":memory:")), project_dir)
        fields["profile_path"] = str(out.get("path", ":memory:"))
        fields["database"] = out.get("database") or _duckdb_database_name(fields["profile_path"])
    return fields


def _open_generic(settings: Any) -> Engine:
    from feature_layer.offline.generic import GenericEngine

    return GenericEngine.from_settings(settings)


# ----------------------------------------------------------------------------- the table
NATIVE_KINDS: dict[str, EngineKind] = {
    "duckdb": EngineKind("duckdb", _duckdb_fields, _open_duckdb, native_arrow=True, asof=True,
                         atomic_replace=True, temp_tables=True, connection_cost="cheap", memory_limit=True),
    "postgres": EngineKind("postgres", _postgres_fields, _open_postgres, native_arrow=True, asof=False,
                           atomic_replace=True, temp_tables=True, connection_cost="moderate", memory_limit=False),
    "spark": EngineKind("spark", _spark_fields, _open_spark, native_arrow=True, asof=False,
                        atomic_replace=False, temp_tables=True, connection_cost="expensive", memory_limit=True),
}
"""Adapter type (profiles.yml ``type:``) → its native engine kind."""

GENERIC = EngineKind("generic", _generic_fields, _open_generic, native_arrow=False, asof=False,
                     atomic_replace=False, temp_tables=True, connection_cost="moderate", memory_limit=False)
"""Any other dbt adapter, through its own connection: rows come back as Python values."""

ENGINE_KINDS: dict[str, EngineKind] = {**NATIVE_KINDS, "generic": GENERIC}


def kind_for(adapter_type: str, engine: str | None = None) -> EngineKind:
    """The engine kind that serves a target of ``adapter_type``; ``engine="generic"`` forces the
    dbt adapter's connection even where a native engine exists."""
    if engine == "generic":
        return GENERIC
    return NATIVE_KINDS.get(adapter_type, GENERIC)


# ----------------------------------------------------------------------------- memory sizes
_SIZE = re.compile(r"(?P<number>\d+(?:\.\d+)?)(?P<unit>[KMGT]i?B|B)", re.IGNORECASE)
_UNITS = {"b": 1, "kb": 1000, "mb": 1000**2, "gb": 1000**3, "tb": 1000**4,
          "kib": 1024, "mib": 1024**2, "gib": 1024**3, "tib": 1024**4}
MIN_MEMORY_LIMIT = 64 * 1024**2


def parse_memory_limit(value: Any, where: str) -> int:
    """Bytes of a size such as ``1GB``, ``512MB`` or ``2GiB`` (decimal or binary units, as DuckDB
    reads them); ConfigError naming ``where`` and the fix otherwise.

    >>> parse_memory_limit("1GB", "offline.memory_limit")
    1000000000
    >>> parse_memory_limit("512MiB", "offline.memory_limit")
    536870912
    """
    fix = "write a size with its unit and no space, e.g. `memory_limit: 1GB` (or 512MB, 2GiB); at least 64MB."
    if isinstance(value, bool) or not isinstance(value, str):
        raise ConfigError(f"{where} is {value!r}, not a size.", fix=fix)
    match = _SIZE.fullmatch(value.strip())
    if match is None:
        hint = " (no space between the number and the unit)" if re.fullmatch(r"\d+(\.\d+)?\s+\w+", value.strip()) else ""
        raise ConfigError(f"{where} is {value!r}, which is not a size{hint}.", fix=fix)
    size = int(float(match["number"]) * _UNITS[match["unit"].lower()])
    if size < MIN_MEMORY_LIMIT:
        raise ConfigError(f"{where} is {value!r}, below the 64MB an engine needs to run at all.", fix=fix)
    return size
