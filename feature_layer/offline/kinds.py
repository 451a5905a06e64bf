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
from feature_layer.offline.budget import (  # noqa: F401 - re-exported
    EMBEDDED_SHARE,
    PG_WORK_MEM_PARTS,
    embedded_duckdb_limit,
    postgres_session_settings,
)

if TYPE_CHECKING:
    from feature_layer.offline.engine import Engine

ENGINE_CHOICES = ("auto", "generic")
"""``offline.engine`` in feature_layer.yml: ``auto`` (the native engine where the adapter has
one, else generic) or ``generic`` (the dbt adapter's connection for every target)."""


REPLACE_STRATEGIES = ("create_or_replace", "rename", "swap")
"""How ``TrainingSet.to_table(replace=True)`` replaces a table:

* ``create_or_replace``: one ``CREATE OR REPLACE TABLE … AS`` statement. Atomic: a failing query
  leaves the old table as it was, and readers see the old table or the new one.
* ``rename``: ``CREATE`` under a new name, then ``RENAME`` the old away, the new in, ``DROP`` the
  old, all in one transaction (transactional DDL): as atomic as ``create_or_replace``.
* ``swap``: ``CREATE`` under a new name (the old table stays readable while the new one is built,
  and stays as it was if that fails), then ``DROP`` the old and ``RENAME`` the new in: between
  those two metadata statements (milliseconds) the name is briefly absent.
"""

CONNECTION_COSTS = ("cheap", "moderate", "expensive")


@dataclass(frozen=True)
class Capabilities:
    """What an engine can do; each flag decides one behaviour (docs/scale.md, "Engine flags")."""

    replace: str
    """:data:`REPLACE_STRATEGIES`: how ``to_table(replace=True)`` swaps a table in."""
    temp_tables: bool
    """Uploaded entity rows are staged in a session temporary table (``register_arrow``);
    without temporary tables they are inlined in the query as ``VALUES`` (at most
    :data:`feature_layer.offline.entity.INLINE_ROWS` rows)."""
    connection_cost: str
    """:data:`CONNECTION_COSTS`. ``cheap`` (in-process): the engine factory opens a new engine
    for each use; ``moderate`` (a network round trip or two) and ``expensive`` (a JVM, a remote
    session): the factory keeps closed engines idle and hands them out again (``moderate`` ones
    for at most ``engines.IDLE_SECONDS``, so the server does not drop them first)."""
    threaded_streams: bool = False
    """A stream of ``stream_arrow`` may be read from another thread while this one works
    (materialization then fetches the next batch while it writes the current one)."""

    @property
    def atomic_replace(self) -> bool:
        """Readers of a replaced table never find the name missing."""
        return self.replace != "swap"

    @property
    def pooled(self) -> bool:
        """The engine factory reuses idle engines of this kind."""
        return self.connection_cost != "cheap"


@dataclass(frozen=True)
class EngineKind:
    """One kind of warehouse engine: its settings, its opener and its capabilities."""

    name: str
    read_settings: Callable[[str, Mapping[str, Any], Path], dict[str, Any]]
    """(target, rendered profile output, project folder) → WarehouseSettings fields."""
    open: Callable[[Any], Engine]
    """WarehouseSettings → an open engine (imports its driver only now)."""
    capabilities: Capabilities
    """What this kind can do (the generic kind: per adapter, :func:`generic_capabilities`)."""

    def capabilities_for(self, adapter_type: str) -> Capabilities:
        """This kind's capabilities on a target of ``adapter_type``."""
        return generic_capabilities(adapter_type) if self.name == "generic" else self.capabilities


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

    session = postgres_session_settings(settings.memory_limit) if settings.memory_limit else None
    return PostgresEngine(host=settings.host, port=settings.port, user=settings.user, password=settings.password,
                          dbname=settings.dbname, schema=settings.schema, target=settings.target,
                          session_settings=session)


# ----------------------------------------------------------------------------- Spark
def _spark_fields(target: str, out: Mapping[str, Any], project_dir: Path) -> dict[str, Any]:
    from feature_layer.offline.spark_settings import spark_warehouse_fields

    return spark_warehouse_fields(target, out, project_dir)


def spark_conf(settings: Any) -> dict[str, str]:
    """The Spark settings of a target, with ``offline.memory_limit`` as the driver's memory
    (``spark.driver.memory``, read when this process starts the JVM) unless the profile sets it.

    Only the driver's: in ``local[…]`` mode the executors run in the driver's JVM, so this is the
    whole engine's heap; on a cluster the executors are sized by the cluster. (pyspark's Arrow
    path collects a result in the driver, so a stream there is bounded by the result: size the
    driver for the largest ``to_arrow`` or materialized view.)"""
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
DUCKDB = Capabilities(replace="create_or_replace", temp_tables=True, connection_cost="cheap", threaded_streams=True)
POSTGRES = Capabilities(replace="rename", temp_tables=True, connection_cost="moderate")
SPARK = Capabilities(replace="swap", temp_tables=True, connection_cost="expensive")  # temp views

NATIVE_KINDS: dict[str, EngineKind] = {
    "duckdb": EngineKind("duckdb", _duckdb_fields, _open_duckdb, DUCKDB),
    "postgres": EngineKind("postgres", _postgres_fields, _open_postgres, POSTGRES),
    "spark": EngineKind("spark", _spark_fields, _open_spark, SPARK),
}
"""Adapter type (profiles.yml ``type:``) → its native engine kind."""

GENERIC_DEFAULT = Capabilities(replace="swap", temp_tables=True, connection_cost="moderate")
"""An adapter not in :data:`GENERIC_CAPABILITIES`: no assumption of an atomic replace."""

GENERIC_CAPABILITIES: dict[str, Capabilities] = {
    "duckdb": Capabilities(replace="create_or_replace", temp_tables=True, connection_cost="moderate"),
    "postgres": POSTGRES,
    "redshift": Capabilities(replace="rename", temp_tables=True, connection_cost="moderate"),
    "snowflake": Capabilities(replace="create_or_replace", temp_tables=True, connection_cost="expensive"),
    "bigquery": Capabilities(replace="create_or_replace", temp_tables=False, connection_cost="expensive"),
    "databricks": Capabilities(replace="create_or_replace", temp_tables=False, connection_cost="expensive"),
    "spark": Capabilities(replace="swap", temp_tables=False, connection_cost="expensive"),
    "trino": Capabilities(replace="swap", temp_tables=False, connection_cost="moderate"),
}
"""The generic engine's capabilities per adapter type: what the warehouse's SQL allows through a
dbt connection (BigQuery has temporary tables only inside scripts; Spark and Databricks have
temporary views but no ``CREATE TEMPORARY TABLE``; Trino's connectors mostly have neither; Delta,
BigQuery and Snowflake have an atomic ``CREATE OR REPLACE TABLE``)."""


def generic_capabilities(adapter_type: str) -> Capabilities:
    """The generic engine's capabilities on a target of ``adapter_type``."""
    return GENERIC_CAPABILITIES.get(adapter_type, GENERIC_DEFAULT)


GENERIC = EngineKind("generic", _generic_fields, _open_generic, GENERIC_DEFAULT)
"""Any other dbt adapter, through its own connection: rows come back as Python values."""

ENGINE_KINDS: dict[str, EngineKind] = {**NATIVE_KINDS, "generic": GENERIC}


def kind_for(adapter_type: str, engine: str | None = None) -> EngineKind:
    """The engine kind that serves a target of ``adapter_type``; ``engine="generic"`` forces the
    dbt adapter's connection even where a native engine exists."""
    if engine == "generic":
        return GENERIC
    return NATIVE_KINDS.get(adapter_type, GENERIC)


def capabilities_of(engine: Any) -> Capabilities:
    """The capabilities of an open engine: those its opener gave it (``engines.connect``), else
    its dialect's native kind's (an engine built directly, e.g. ``DuckDBEngine(path)``)."""
    given = getattr(engine, "capabilities", None)
    if isinstance(given, Capabilities):
        return given
    dialect = getattr(engine, "dialect", "")
    native = NATIVE_KINDS.get(dialect)
    return native.capabilities if native is not None else generic_capabilities(dialect)


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
    fix = "write a size with its unit and no space, e.g. `memory_limit: 1GB` (or 512MB, 2GiB); at least 64MiB."
    if isinstance(value, bool) or not isinstance(value, str):
        raise ConfigError(f"{where} is {value!r}, not a size.", fix=fix)
    match = _SIZE.fullmatch(value.strip())
    if match is None:
        hint = " (no space between the number and the unit)" if re.fullmatch(r"\d+(\.\d+)?\s+\w+", value.strip()) else ""
        raise ConfigError(f"{where} is {value!r}, which is not a size{hint}.", fix=fix)
    size = int(float(match["number"]) * _UNITS[match["unit"].lower()])
    if size < MIN_MEMORY_LIMIT:
        raise ConfigError(f"{where} is {value!r}, below the 64MiB an engine needs to run at all.", fix=fix)
    return size
