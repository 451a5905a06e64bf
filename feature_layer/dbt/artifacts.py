"""Read dbt's ``manifest.json`` and ``catalog.json`` into small typed objects.

This is the only module that knows dbt's artifact layout. It checks the schema version
first, so an unsupported dbt fails with a message naming what was expected and found,
instead of a KeyError deep inside the registry.
"""

from __future__ import annotations

import gc
import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from feature_layer.errors import ManifestError
from feature_layer.registry.model import Relation

SUPPORTED_MANIFEST_VERSIONS = ("v12",)
_VERSION = re.compile(r"/manifest/(v\d+)\.json$")
_NODE_TYPES = {"model", "seed", "snapshot"}


@dataclass(frozen=True)
class DbtColumn:
    name: str
    description: str = ""
    data_type: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    tags: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)
    """Keys dbt does not define for a column (where a misplaced ``feature_layer:`` block lands)."""


_COLUMN_KEYS = {"name", "description", "meta", "data_type", "constraints", "quote", "config", "tags", "granularity",
                "doc_blocks", "tests", "data_tests"}


@dataclass(frozen=True)
class DbtNode:
    """A model, seed, snapshot, source or exposure, reduced to what feature_layer uses."""

    unique_id: str
    name: str
    resource_type: str
    package_name: str = ""
    file_path: str = ""
    description: str = ""
    relation: Relation | None = None
    columns: dict[str, DbtColumn] = field(default_factory=dict)
    """Declared columns (schema.yml), by lower-cased name, in declaration order."""
    catalog_types: dict[str, str] = field(default_factory=dict)
    """Warehouse column types from catalog.json, by lower-cased name, in table order."""
    catalog_names: tuple[str, ...] = ()
    """The same columns spelled as the warehouse has them (catalog.json), in table order."""
    meta: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    tags: tuple[str, ...] = ()
    raw_sql: str = ""
    compiled_sql: str | None = None
    depends_on: tuple[str, ...] = ()
    checksum: str = ""
    exposure_type: str | None = None
    owner: str | None = None
    url: str | None = None
    yaml_path: str | None = None
    """The properties file (schema.yml) that documents the node, where its meta usually lives."""
    version: str | None = None
    """dbt model version (``versions:`` on the model; ``model.pkg.name.v2``), None when unversioned."""
    latest_version: str | None = None
    """The model's ``latest_version`` (what an unpinned ``ref('name')`` resolves to)."""

    @property
    def enabled(self) -> bool:
        return bool(self.config.get("enabled", True))

    @property
    def column_types(self) -> dict[str, str | None]:
        """Column → SQL type: the catalog where known, else the declared data_type."""
        merged: dict[str, str | None] = {name: col.data_type for name, col in self.columns.items()}
        for name, sql_type in self.catalog_types.items():
            merged[name] = sql_type
        return merged


@dataclass(frozen=True)
class Manifest:
    """The parts of a dbt manifest (plus catalog) that the registry is built from."""

    path: Path
    dbt_version: str
    project_name: str
    nodes: dict[str, DbtNode]
    parent_map: dict[str, tuple[str, ...]]
    child_map: dict[str, tuple[str, ...]]
    has_catalog: bool
    adapter_type: str = ""
    generated_at: str = ""
    invocation_id: str = ""
    catalog: CatalogInfo | None = None
    """What the catalog was, when there is one: when it was made, and which nodes it got wrong."""


@dataclass(frozen=True)
class CatalogInfo:
    """catalog.json as compared with the manifest it is read with."""

    path: Path
    generated_at: str = ""
    invocation_id: str = ""
    disagreeing: tuple[str, ...] = ()
    """Nodes whose declared columns (schema.yml) the catalog lacks: it predates a rename, so
    its columns were dropped and the manifest's are used."""


def _read_json(path: Path, what: str, fix: str) -> dict[str, Any]:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ManifestError(f"No {what} at {path}.", fix=fix) from None
    try:
        loaded = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        try:  # dbt writes YAML's .inf / .nan as Infinity / NaN, which orjson refuses; json reads them
            loaded = json.loads(data)
        except ValueError:
            raise ManifestError(f"{path} is not valid JSON ({exc}).", fix=fix) from exc
    if not isinstance(loaded, dict):
        raise ManifestError(f"{path} does not hold a JSON object.", fix=fix)
    return loaded


def _merged_meta(raw: dict[str, Any]) -> dict[str, Any]:
    """Legacy top-level ``meta`` merged under ``config.meta`` (config wins, as in dbt)."""
    meta = dict(raw.get("meta") or {})
    meta.update((raw.get("config") or {}).get("meta") or {})
    return meta


def _columns(raw: dict[str, Any]) -> dict[str, DbtColumn]:
    columns = {}
    for name, col in (raw.get("columns") or {}).items():
        col_meta = dict(col.get("meta") or {})
        col_meta.update((col.get("config") or {}).get("meta") or {})
        columns[name.lower()] = DbtColumn(
            name=col.get("name", name),
            description=col.get("description") or "",
            data_type=col.get("data_type"),
            meta=col_meta,
            tags=tuple(col.get("tags") or ()),
            extra={k: v for k, v in col.items() if k not in _COLUMN_KEYS},
        )
    return columns


def _relation(raw: dict[str, Any]) -> Relation | None:
    identifier = raw.get("alias") or raw.get("identifier") or raw.get("name")
    schema = raw.get("schema")
    if not schema or not identifier:
        return None
    return Relation(database=raw.get("database"), schema=schema, identifier=identifier)


def _owner(raw: dict[str, Any]) -> str | None:
    owner = raw.get("owner") or {}
    if isinstance(owner, dict):
        return owner.get("email") or owner.get("name")
    return str(owner) if owner else None


def _node(raw: dict[str, Any], catalog_types: dict[str, str]) -> DbtNode:
    """``catalog_types``: the model's catalog columns, as the warehouse spells them, in table order."""
    resource_type = raw.get("resource_type", "")
    return DbtNode(
        unique_id=raw["unique_id"],
        name=raw.get("name", ""),
        resource_type=resource_type,
        package_name=raw.get("package_name", ""),
        file_path=raw.get("original_file_path") or raw.get("path") or "",
        description=raw.get("description") or "",
        relation=_relation(raw) if resource_type in _NODE_TYPES | {"source"} else None,
        columns=_columns(raw),
        catalog_types={name.lower(): sql_type for name, sql_type in catalog_types.items()},
        catalog_names=tuple(catalog_types),
        meta=_merged_meta(raw),
        config=raw.get("config") or {},
        tags=tuple(raw.get("tags") or ()),
        raw_sql=raw.get("raw_code") or raw.get("raw_sql") or "",
        compiled_sql=raw.get("compiled_code") or raw.get("compiled_sql"),
        depends_on=tuple((raw.get("depends_on") or {}).get("nodes") or ()),
        checksum=(raw.get("checksum") or {}).get("checksum", ""),
        exposure_type=raw.get("type") if resource_type == "exposure" else None,
        owner=_owner(raw) if resource_type == "exposure" else None,
        url=raw.get("url"),
        yaml_path=(raw.get("patch_path") or "").partition("://")[2] or None,
        version=_version_text(raw.get("version")),
        latest_version=_version_text(raw.get("latest_version")),
    )


def _version_text(value: Any) -> str | None:
    """A dbt model version as text (dbt allows numbers and strings: ``2``, ``"2"``, ``1.5``)."""
    if value is None or value == "":
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value)


def _catalog_types(catalog_path: Path | None) -> tuple[dict[str, dict[str, str]], dict[str, Any] | None]:
    """Column types per node from catalog.json, and its metadata (None without a catalog)."""
    if catalog_path is None or not catalog_path.exists():
        return {}, None
    catalog = _read_json(catalog_path, "dbt catalog", "run `dbt docs generate` again.")
    types: dict[str, dict[str, str]] = {}
    for section in ("nodes", "sources"):
        for unique_id, entry in (catalog.get(section) or {}).items():
            cols = sorted((entry.get("columns") or {}).values(), key=lambda c: c.get("index", 0))
            types[unique_id] = {c["name"]: c.get("type") or "" for c in cols}
    return types, dict(catalog.get("metadata") or {})


def _agrees(entry: dict[str, Any], catalog_columns: dict[str, str]) -> bool:
    """True unless the manifest declares a column the catalog does not have (a renamed or
    new column the catalog predates). Undeclared catalog columns are fine: schema.yml
    needs not list every column. Compared case-insensitively: spelling is validation's job."""
    known = {name.lower() for name in catalog_columns}
    return not known or all(name.lower() in known for name in (entry.get("columns") or {}))


def _graph(edges: dict[str, list[str]] | None, nodes: dict[str, DbtNode]) -> dict[str, tuple[str, ...]]:
    """dbt's parent/child maps restricted to the nodes kept (tests and analyses dropped)."""
    return {k: tuple(v for v in vs if v in nodes) for k, vs in (edges or {}).items() if k in nodes}


def manifest_schema_version(raw: dict[str, Any]) -> str:
    url = (raw.get("metadata") or {}).get("dbt_schema_version", "")
    match = _VERSION.search(url)
    return match.group(1) if match else url or "(none)"


@contextmanager
def _no_gc() -> Iterator[None]:
    """Pause the cyclic GC: parsing makes ~10^6 acyclic objects, and GC passes double the time."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def load_manifest(manifest_path: Path, catalog_path: Path | None = None) -> Manifest:
    """Parse the manifest (and catalog when present) into ``DbtNode`` objects."""
    with _no_gc():
        return _load_manifest(manifest_path, catalog_path)


def _load_manifest(manifest_path: Path, catalog_path: Path | None) -> Manifest:
    raw = _read_json(
        manifest_path,
        "dbt manifest",
        "run `dbt parse` (or `dbt build`) in the project first; it writes target/manifest.json.",
    )
    version = manifest_schema_version(raw)
    if version not in SUPPORTED_MANIFEST_VERSIONS:
        found = (raw.get("metadata") or {}).get("dbt_version", "unknown")
        raise ManifestError(
            f"{manifest_path} has manifest schema {version} (dbt {found}); feature_layer reads "
            f"{', '.join(SUPPORTED_MANIFEST_VERSIONS)} (dbt 1.8 to 1.11).",
            fix="install dbt-core>=1.11,<1.12 and run `dbt parse` again.",
        )
    catalog, catalog_metadata = _catalog_types(catalog_path)
    nodes: dict[str, DbtNode] = {}
    disagreeing: list[str] = []
    for section in ("nodes", "sources", "exposures"):
        for unique_id, entry in (raw.get(section) or {}).items():
            if entry.get("resource_type") in {"test", "unit_test", "analysis", "operation", "sql_operation"}:
                continue
            types = catalog.get(unique_id, {})
            if not _agrees(entry, types):
                disagreeing.append(unique_id)
                types = {}  # the manifest's columns win over a stale catalog
            nodes[unique_id] = _node(entry, types)
    metadata = raw.get("metadata") or {}
    return Manifest(
        path=manifest_path,
        dbt_version=metadata.get("dbt_version", ""),
        project_name=metadata.get("project_name") or "",
        nodes=nodes,
        parent_map=_graph(raw.get("parent_map"), nodes),
        child_map=_graph(raw.get("child_map"), nodes),
        has_catalog=bool(catalog),
        adapter_type=str(metadata.get("adapter_type") or ""),
        generated_at=str(metadata.get("generated_at") or ""),
        invocation_id=str(metadata.get("invocation_id") or ""),
        catalog=None if catalog_metadata is None or catalog_path is None else CatalogInfo(
            path=catalog_path,
            generated_at=str(catalog_metadata.get("generated_at") or ""),
            invocation_id=str(catalog_metadata.get("invocation_id") or ""),
            disagreeing=tuple(disagreeing),
        ),
    )
