"""Pure checks of the declaration rules that the fixture project does not exercise."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from feature_layer.dbt.artifacts import DbtColumn, DbtNode, Manifest
from feature_layer.durations import format_duration, parse_duration
from feature_layer.registry.declarations import build_declarations, parse_entities
from feature_layer.registry.model import Relation

ENTITIES = {"user": {"join_keys": ["user_id"]}}


def model(name: str, block: object, columns: tuple[str, ...] = ("user_id", "ts", "x"), **config: object) -> DbtNode:
    return DbtNode(
        unique_id=f"model.p.{name}",
        name=name,
        resource_type="model",
        file_path=f"models/{name}.sql",
        relation=Relation("db", "main", name),
        columns={c: DbtColumn(name=c) for c in columns},
        meta={"feature_layer": block},
        config=dict(config),
    )


def issues_for(*nodes: DbtNode, entities: object = ENTITIES) -> list[tuple[str, str | None]]:
    manifest = Manifest(Path("m.json"), "1.11", "p", {n.unique_id: n for n in nodes}, {}, {}, False)
    return [(i.code, i.unique_id) for i in build_declarations(manifest, entities, "dbt_project.yml").issues]


def test_event_time_defaults_to_dbt_event_time_config() -> None:
    node = model("v", {"entities": ["user"]}, event_time="ts")
    manifest = Manifest(Path("m.json"), "1.11", "p", {node.unique_id: node}, {}, {}, False)
    view = build_declarations(manifest, ENTITIES, "x").views["v"]
    assert view.event_time == "ts" and view.feature_names == ("x",)


@pytest.mark.parametrize(
    ("block", "columns", "code"),
    [
        ({"entities": ["user"]}, ("user_id", "ts", "x"), "missing-event-time"),
        ({"entities": ["user"], "event_time": "ts", "tll": "1d"}, ("user_id", "ts", "x"), "unknown-key"),
        ({"entities": [], "event_time": "ts"}, ("user_id", "ts", "x"), "missing-entity"),
        ({"entities": ["user"], "event_time": "ts"}, ("user_id", "ts"), "no-features"),
        ({"entities": ["user"], "event_time": "ts", "online": "yes"}, ("user_id", "ts", "x"), "bad-online"),
        ({"entities": ["user"], "event_time": "ts", "created_at": "made"}, ("user_id", "ts", "x"), "created-at-not-in-model"),
        ({"entities": ["user"], "event_time": "ts", "features": ["nope"]}, ("user_id", "ts", "x"), "feature-not-in-model"),
        ({"entities": ["user"], "event_time": "ts", "features": ["user_id"]}, ("user_id", "ts", "x"), "feature-is-key"),
        ({"entities": ["user"], "event_time": "ts"}, (), "no-columns"),
        ("user", ("user_id", "ts", "x"), "meta-format"),
    ],
)
def test_each_rule_reports_its_code(block: object, columns: tuple[str, ...], code: str) -> None:
    codes = [c for c, _ in issues_for(model("v", block, columns))]
    assert code in codes


def typed_model(name: str, block: object, types: dict[str, str], column_meta: dict[str, object] | None = None) -> DbtNode:
    meta = column_meta or {}
    node = model(name, block, tuple(types))
    columns = {c: DbtColumn(name=c, data_type=t, meta={"feature_layer": meta[c]} if c in meta else {})
               for c, t in types.items()}
    return DbtNode(**{**node.__dict__, "columns": columns})


@pytest.mark.parametrize(
    ("block", "types", "column_meta", "code"),
    [
        ({"entities": ["user"], "event_time": "ts"}, {"user_id": "bigint", "ts": "varchar", "x": "double"}, None,
         "event-time-type"),
        ({"entities": ["user"], "event_time": "ts", "created_at": "x"}, {"user_id": "bigint", "ts": "timestamp",
         "x": "double"}, None, "created-at-type"),
        ({"entities": ["user"], "event_time": "ts"}, {"user_id": "bigint", "ts": "timestamp", "x": "double"},
         {"x": {"dtype": "float"}}, "bad-dtype"),
        ({"entities": ["user"], "event_time": "ts"}, {"user_id": "bigint", "ts": "timestamp", "x": "double"},
         {"x": {"tags": [1, 2]}}, "bad-tags"),
        ({"entities": ["user"], "event_time": "ts"}, {"user_id": "bigint", "ts": "timestamp", "x": "double"},
         {"x": {"feature": "yes"}}, "column-meta"),
        ({"entities": ["user"], "event_time": "ts", "ttl": "9999999999999d"},
         {"user_id": "bigint", "ts": "timestamp", "x": "double"}, None, "bad-ttl"),
        ({"entities": ["user"], "event_time": "ts", "ttl": 0.5},
         {"user_id": "bigint", "ts": "timestamp", "x": "double"}, None, "bad-ttl"),
    ],
)
def test_typed_rules_report_their_code(block: object, types: dict[str, str], column_meta: dict | None, code: str) -> None:
    codes = [c for c, _ in issues_for(typed_model("v", block, types, column_meta))]
    assert code in codes


def test_a_single_column_tag_is_one_tag_not_letters() -> None:
    node = typed_model("v", {"entities": ["user"], "event_time": "ts"},
                       {"user_id": "bigint", "ts": "timestamp", "x": "double"}, {"x": {"tags": "fraud"}})
    manifest = Manifest(Path("m.json"), "1.11", "p", {node.unique_id: node}, {}, {}, False)
    assert build_declarations(manifest, ENTITIES, "x").views["v"].feature("x").tags == ("fraud",)


def test_an_exposure_with_feature_meta_must_be_of_type_ml() -> None:
    view = model("v", {"entities": ["user"], "event_time": "ts"})
    exposure = DbtNode(unique_id="exposure.p.dash", name="dash", resource_type="exposure", file_path="models/x.yml",
                       meta={"feature_layer": {"features": ["v.x"]}}, exposure_type="dashboard")
    assert ("service-not-ml", "exposure.p.dash") in issues_for(view, exposure)


def test_two_models_with_one_name_are_a_duplicate_view() -> None:
    a = model("v", {"entities": ["user"], "event_time": "ts"})
    b = DbtNode(**{**a.__dict__, "unique_id": "model.other_pkg.v"})
    assert [c for c, _ in issues_for(a, b)] == ["duplicate-view", "duplicate-view"]


def test_columns_marked_as_features_are_the_only_features() -> None:
    node = model("v", {"entities": ["user"], "event_time": "ts"}, columns=("user_id", "ts", "x", "y"))
    cols = dict(node.columns)
    cols["y"] = DbtColumn(name="y", meta={"feature_layer": {"feature": True, "dtype": "float64"}})
    node = DbtNode(**{**node.__dict__, "columns": cols})
    manifest = Manifest(Path("m.json"), "1.11", "p", {node.unique_id: node}, {}, {}, False)
    view = build_declarations(manifest, ENTITIES, "x").views["v"]
    assert view.feature_names == ("y",) and view.feature("y").dtype == "float64"


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        ({"user": {"description": "no keys"}}, "entity-join-keys"),
        ({"user": {"join_keys": ["id"], "keys": 1}}, "unknown-key"),
        (["user"], "entity-format"),
        ({"user": 3}, "entity-format"),
    ],
)
def test_entity_declaration_errors(raw: object, code: str) -> None:
    _, issues = parse_entities(raw, "dbt_project.yml")
    assert code in [i.code for i in issues]
    assert all(i.file == "dbt_project.yml" and i.fix for i in issues)


def test_entity_shorthand_is_a_list_of_join_keys() -> None:
    entities, issues = parse_entities({"pair": ["a", "b"]}, "x")
    assert not issues and entities["pair"].join_keys == ("a", "b")


@given(st.integers(min_value=1, max_value=10**8))
def test_duration_format_round_trips(seconds: int) -> None:
    value = timedelta(seconds=seconds)
    assert parse_duration(format_duration(value)) == value


@pytest.mark.parametrize("text", ["", "30", "0d", "30 days", "d", "1.5h", "-1d", "9999999999999d", 0.5, -3, True])
def test_bad_durations_are_rejected_with_the_accepted_forms(text: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)
