"""Fuzzing the declarations: dbt YAML meta (model, column and exposure ``meta.feature_layer``,
``vars.feature_layer.entities``) written into synthetic manifests and read through the registry.

Oracle: the registry loads (the lenient load keeps the valid views) or raises a
DeclarationError naming the problems; every registry query on what loaded answers or raises a
FeatureLayerError.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from feature_layer.config import load_settings
from feature_layer.registry.registry import Registry
from tests.fuzz.fuzz_harness import check, examples
from tests.fuzz.strategies import NASTY_TEXT, TEXT, json_values, mapping, maybe, mostly

PROJECT = "fuzzproj"
COLUMNS = ["user_id", "merchant_id", "ts", "created", "amount", "country", "is_new", "Amount", "v__event_time"]
SQL_TYPES = ["bigint", "integer", "double", "varchar", "text", "timestamp", "timestamp with time zone", "date",
             "boolean", "decimal(10,2)", "numeric", "struct(a int)", "int[]", "interval", "blob", "uuid", "json"]
ENTITY_NAMES = ["user", "merchant", "user_merchant", "ghost"]

COLUMN_NAME = mostly(st.sampled_from(COLUMNS), st.one_of(NASTY_TEXT, st.text(min_size=1, max_size=8)))
DATA_TYPE = st.one_of(st.sampled_from(SQL_TYPES), st.none(), TEXT)
COLUMN_META = mostly(st.none(), mapping({
    "feature": maybe(st.booleans()),
    "dtype": maybe(st.sampled_from(["int64", "float64", "string", "bool", "timestamp", "date", "decimal", "nope"])),
    "tags": maybe(st.lists(st.sampled_from(["a", "b", "fraud"]), max_size=3)),
}), 2)
DURATIONS = st.sampled_from(["30d", "1h", "1d12h", "90m", "1w", "", "none", 0, -1, 1.5, 3600, "1x", "0d",
                             10**20, True, "9999999999999999d", " 2h ", "1h 30m"])
VIEW_BLOCK = mostly(mapping({
    "entities": maybe(st.lists(st.sampled_from(ENTITY_NAMES), min_size=1, max_size=2)),
    "entity": maybe(st.sampled_from(ENTITY_NAMES)),
    "event_time": maybe(COLUMN_NAME),
    "created_at": maybe(COLUMN_NAME),
    "ttl": maybe(DURATIONS),
    "online": maybe(st.booleans()),
    "owner": maybe(TEXT),
    "tags": maybe(st.lists(TEXT, max_size=3)),
    "description": maybe(TEXT),
    "features": maybe(st.lists(COLUMN_NAME, max_size=4)),
}), json_values(4))
ENTITIES = mostly(
    st.dictionaries(st.sampled_from(ENTITY_NAMES), mostly(mapping({
        "join_keys": maybe(st.lists(st.sampled_from(["user_id", "merchant_id", "Amount"]), min_size=1, max_size=2)),
        "description": maybe(TEXT),
    }), st.one_of(st.sampled_from(["user_id", ["merchant_id"]]), json_values(3))), max_size=4),
    json_values(4),
)


@st.composite
def models(draw: Any, index: int) -> dict[str, Any]:
    name = draw(mostly(st.sampled_from([f"view_{index}", "dup_view"]), st.one_of(NASTY_TEXT, st.text(max_size=10))))
    columns = draw(st.lists(st.tuples(COLUMN_NAME, DATA_TYPE, COLUMN_META), max_size=7))
    # dbt itself guarantees that meta is a mapping; what is inside it is the user's YAML
    meta = {"feature_layer": draw(VIEW_BLOCK)} if draw(st.integers(0, 5)) else draw(
        st.dictionaries(TEXT, json_values(2), max_size=2))
    selected = ", ".join(json.dumps(c) for c, _, _ in columns) or "1 AS x"
    compiled = draw(mostly(st.just(f'select {selected} from "db"."raw"."events"'), TEXT))
    uid = f"model.{PROJECT}.{name}"
    return {
        "unique_id": uid, "resource_type": "model", "name": name, "package_name": PROJECT,
        "original_file_path": f"models/{name}.sql", "database": "db", "schema": "main", "alias": name,
        "description": draw(TEXT), "tags": draw(st.lists(st.sampled_from(["a", "b"]), max_size=2)),
        "config": {"enabled": draw(mostly(st.just(True), st.booleans())), "materialized": "table",
                   "event_time": draw(st.one_of(st.none(), COLUMN_NAME)), "meta": meta},
        "columns": {c.lower(): {"name": c, "description": "", "data_type": t,
                                "meta": {} if m is None else {"feature_layer": m}, "tags": []}
                    for c, t, m in columns},
        "raw_code": compiled, "compiled_code": compiled,
        "depends_on": {"nodes": ["source.fuzzproj.raw.events"]}, "checksum": {"checksum": "x"},
    }


@st.composite
def manifests(draw: Any) -> dict[str, Any]:
    nodes = {}
    for index in range(draw(st.integers(0, 3))):
        node = draw(models(index))
        nodes[node["unique_id"]] = node
    view_names = [n["name"] for n in nodes.values()]
    ref = mostly(
        st.builds(lambda v, f: f"{v}.{f}", st.sampled_from(view_names or ["nope"]),
                  st.one_of(st.just("*"), COLUMN_NAME)),
        TEXT,
    )
    exposures = {}
    for index in range(draw(st.integers(0, 2))):
        uid = f"exposure.{PROJECT}.svc_{index}"
        block = draw(mostly(mapping({"features": maybe(st.lists(ref, max_size=4)), "description": maybe(TEXT)}),
                            json_values(3)))
        exposures[uid] = {
            "unique_id": uid, "resource_type": "exposure", "name": f"svc_{index}", "package_name": PROJECT,
            "original_file_path": "models/exposures.yml", "type": draw(mostly(st.just("ml"), st.just("dashboard"))),
            "owner": draw(st.one_of(st.just({"email": "a@b"}), TEXT, json_values(2))),
            "meta": {"feature_layer": block}, "config": {"enabled": True, "meta": {"feature_layer": block}},
            "depends_on": {"nodes": list(nodes)},
        }
    source = {"unique_id": "source.fuzzproj.raw.events", "resource_type": "source", "name": "events",
              "package_name": PROJECT, "original_file_path": "models/sources.yml", "database": "db",
              "schema": "raw", "identifier": "events", "columns": {}, "config": {}}
    every = [source["unique_id"], *nodes, *exposures]
    parents = {uid: (["source.fuzzproj.raw.events"] if uid in nodes else list(nodes) if uid in exposures else [])
               for uid in every}
    children = {uid: [c for c, ps in parents.items() if uid in ps] for uid in every}
    return {
        "metadata": {"dbt_schema_version": "https://schemas.getdbt.com/dbt/manifest/v12.json",
                     "dbt_version": "1.11.0", "project_name": PROJECT, "adapter_type": "duckdb"},
        "nodes": nodes, "sources": {source["unique_id"]: source}, "exposures": exposures,
        "parent_map": parents, "child_map": children,
    }


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("fuzz_declarations")
    (path / "target").mkdir()
    (path / "profiles.yml").write_text("fuzzproj:\n  target: d\n  outputs:\n    d: {type: duckdb, path: x.duckdb}\n")
    return path


def _exercise(registry: Registry, text: str) -> None:
    registry.summary()
    registry.features()
    registry.search(text)
    for view in registry.views.values():
        registry.resolve([f"{view.name}.*"])
        registry.lineage(f"{view.name}.*")
        for feature in view.features:
            registry.feature(feature.ref)
            registry.lineage(feature.ref)
            registry.column_lineage(feature.ref)
            registry.services_using(feature.ref)
    for service in registry.services.values():
        registry.resolve(list(service.features))


@given(manifest=manifests(), entities=ENTITIES, text=TEXT, strict=st.booleans())
@examples(sample=40, full=2000)
def test_declarations_load_or_name_every_problem(folder: Path, manifest, entities, text, strict) -> None:
    project = {"name": PROJECT, "profile": PROJECT, "vars": {"feature_layer": {"entities": entities}}}
    (folder / "dbt_project.yml").write_text(yaml.safe_dump(project, allow_unicode=True))
    manifest_path = folder / "target" / "manifest.json"
    manifest_path.write_text(json.dumps(manifest))  # written after the project file, as dbt parse does
    stamp = (folder / "dbt_project.yml").stat().st_mtime_ns + 1_000_000
    os.utime(manifest_path, ns=(stamp, stamp))

    def action() -> None:
        registry = Registry.load(load_settings(folder), strict=strict)
        _exercise(registry, text)

    check("declarations", action, lambda: f"manifest={json.dumps(manifest)[:1500]} entities={entities!r}")
