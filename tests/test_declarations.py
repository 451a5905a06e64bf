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


# --- columns: catalog, then the model's SQL select list, then schema.yml -------------------

def sql_model(name: str, sql: str, *, columns: dict[str, str | None] | None = None,
              catalog: dict[str, str] | None = None, block: object = None, compiled: bool = True) -> DbtNode:
    node = model(name, block or {"entities": ["user"], "event_time": "ts"}, ())
    return DbtNode(**{**node.__dict__,
                      "columns": {c.lower(): DbtColumn(name=c, data_type=t) for c, t in (columns or {}).items()},
                      "catalog_types": {c.lower(): t for c, t in (catalog or {}).items()},
                      "catalog_names": tuple(catalog or ()),
                      "compiled_sql": sql if compiled else None, "raw_sql": "" if compiled else sql})


def declare(*nodes: DbtNode, dialect: str = "duckdb", entities: object = ENTITIES):  # noqa: ANN201
    manifest = Manifest(Path("m.json"), "1.11", "p", {n.unique_id: n for n in nodes}, {}, {}, False)
    return build_declarations(manifest, entities, "dbt_project.yml", dialect)


def test_a_key_selected_in_compiled_sql_is_found_without_yaml() -> None:
    out = declare(sql_model("v", "with s as (select * from raw) select user_id, ts, count(*) over w as n from s",
                            columns={"n": "bigint"}))
    assert not out.issues and out.views["v"].feature_names == ("n",) and out.views["v"].feature("n").dtype == "int64"


@pytest.mark.parametrize("sql", ["select * from t", "select t.*, 1 as x from t", "select count(*), x from t",
                                 "select columns('a.*'), x from t"])
def test_an_incomplete_select_list_claims_nothing_missing(sql: str) -> None:
    out = declare(sql_model("v", sql, columns={"x": "double"}))
    assert not out.issues and out.views["v"].feature_names == ("x",)


@pytest.mark.parametrize(("raw", "complete"), [
    ("{{ config(materialized='table', tags=['a']) }}\nselect user_id, ts, x from {{ ref('t') }}", True),
    ("{% set n = 3 %} select user_id, ts, x from {{ ref('t') }}", True),
    ("select user_id, ts, x from {{ ref('t') }} {% if is_incremental() %} where ts > (select max(ts) from {{ this }})"
     " {% endif %}", False),
    ("select user_id, ts, {% for c in ['p', 'q'] %} sum({{ c }}) as {{ c }}_sum, {% endfor %} x from t group by all", False),
])
def test_raw_sql_after_dbt_parse_is_read_through_its_jinja(raw: str, complete: bool) -> None:
    from feature_layer.registry.columns import SQL, model_columns

    cols = model_columns(sql_model("v", raw, compiled=False))
    assert (list(cols.types)[:2], cols.source, cols.complete) == (["user_id", "ts"], SQL, complete)
    assert "x" in cols


def test_a_complete_select_list_reports_the_missing_key_and_what_it_read() -> None:
    out = declare(sql_model("v", "select driver_id, ts, x from {{ ref('trips') }}", compiled=False))
    [issue] = out.issues
    assert issue.code == "join-key-missing"
    assert "the model's SQL selects: driver_id, ts, x" in issue.message and "select 'user_id'" in issue.fix


def test_a_missing_key_read_from_the_catalog_says_to_refresh_it() -> None:
    out = declare(sql_model("v", "select user_id, ts, x from t", catalog={"driver_id": "BIGINT", "ts": "TIMESTAMP",
                                                                          "x": "DOUBLE"}))
    [issue] = out.issues
    assert "catalog.json lists: driver_id, ts, x" in issue.message and "`dbt docs generate`" in issue.fix


def test_unreadable_sql_falls_back_to_yaml_and_says_so() -> None:
    out = declare(sql_model("v", "{{ dbt_utils.union_relations(relations=[ref('a'), ref('b')]) }}",
                            columns={"ts": "timestamp", "x": None}, compiled=False))
    [issue] = out.issues
    assert issue.code == "join-key-missing" and "schema.yml" in issue.message and "`dbt compile`" in issue.fix


@pytest.mark.parametrize(
    ("dialect", "sql", "entity_key", "ok"),
    [
        ("postgres", "select User_ID, ts, x from t", "user_id", True),  # unquoted: PostgreSQL folds to user_id
        ("postgres", "select User_ID, ts, x from t", "User_ID", False),
        ("postgres", 'select "User_ID", ts, x from t', "User_ID", True),
        ("duckdb", "select User_ID, ts, x from t", "user_id", False),  # DuckDB keeps the spelling
    ],
)
def test_names_must_be_spelled_as_the_warehouse_names_the_column(dialect: str, sql: str, entity_key: str, ok: bool) -> None:
    out = declare(sql_model("v", sql), dialect=dialect, entities={"user": {"join_keys": [entity_key]}})
    if ok:
        assert not out.issues and out.views["v"].join_keys == (entity_key,)
    else:
        [issue] = out.issues
        assert issue.code == "name-case" and "only when case is ignored" in issue.message
        assert "vars.feature_layer.entities" in issue.fix


def test_catalog_spelling_is_checked_and_kept() -> None:
    catalog = {"user_id": "BIGINT", "ts": "TIMESTAMP", "Amount": "DOUBLE"}
    out = declare(sql_model("v", "", catalog=catalog))
    assert not out.issues and out.views["v"].feature_names == ("Amount",)
    out = declare(sql_model("v", "", catalog=catalog, block={"entities": ["user"], "event_time": "TS"}))
    assert [(i.code, "spell it 'ts'" in i.fix) for i in out.issues] == [("name-case", True)]


@pytest.mark.parametrize(
    ("sql_type", "dtype", "fits"),
    [("DOUBLE", "int64", False), ("DECIMAL(38,0)", "int64", True), ("DECIMAL(10,2)", "int64", False),
     ("INTEGER", "float64", True), ("VARCHAR", "int64", False), ("TIMESTAMP", "date", False),
     ("DATE", "timestamp", True), ("BIGINT", "string", True), ("GEOMETRY", "int64", True)],
)
def test_a_dtype_override_must_fit_the_warehouse_type(sql_type: str, dtype: str, fits: bool) -> None:
    node = sql_model("v", "", catalog={"user_id": "BIGINT", "ts": "TIMESTAMP", "x": sql_type})
    node = DbtNode(**{**node.__dict__, "columns": {"x": DbtColumn(name="x", meta={"feature_layer": {"dtype": dtype}})}})
    out = declare(node)
    if fits:
        assert not out.issues and out.views["v"].feature("x").dtype == dtype
    else:
        [issue] = out.issues
        assert issue.code == "dtype-mismatch" and "in the warehouse (catalog.json)" in issue.message
        assert "cast(x as " in issue.fix


@pytest.mark.parametrize(("ttl", "words"), [(2, "ttl 2 has no unit"), (1.5, "ttl 1.5 has no unit"),
                                            (float("inf"), "not a duration"), (float("nan"), "not a duration"),
                                            (True, "cannot be parsed"), ("2", "cannot be parsed")])
def test_a_ttl_needs_a_unit(ttl: object, words: str) -> None:
    out = declare(sql_model("v", "select user_id, ts, x from t", block={"entities": ["user"], "event_time": "ts", "ttl": ttl}))
    [issue] = out.issues
    assert issue.code == "bad-ttl" and words in issue.message and ("30d" in issue.fix or "2h" in issue.fix or "h`" in issue.fix)


@pytest.mark.parametrize(("owner", "fix"), [({"name": "x"}, "`owner: x`"), ({"email": "a@b.c", "name": "x"}, "`owner: a@b.c`"),
                                            (["a", "b"], "`owner: risk-team`"), (3, "`owner: risk-team`")])
def test_an_owner_must_be_a_string(owner: object, fix: str) -> None:
    out = declare(sql_model("v", "select user_id, ts, x from t", block={"entities": ["user"], "event_time": "ts", "owner": owner}))
    [issue] = out.issues
    assert issue.code == "bad-owner" and fix in issue.fix
    ok = declare(sql_model("v", "select user_id, ts, x from t", block={"entities": ["user"], "event_time": "ts", "owner": "risk"}))
    assert ok.views["v"].owner == "risk"


def test_a_misspelt_column_block_and_a_misspelt_exposure_block_are_issues() -> None:
    node = sql_model("v", "select user_id, ts, x from t")
    node = DbtNode(**{**node.__dict__, "columns": {"x": DbtColumn(name="x", meta={"feature-layer": {"dtype": "int64"}})}})
    exposure = DbtNode(unique_id="exposure.p.m", name="m", resource_type="exposure", file_path="models/x.yml",
                       meta={"featureLayer": {"features": ["v.x"]}}, exposure_type="ml")
    out = declare(node, exposure)
    assert [(i.code, i.unique_id) for i in out.issues] == [("misspelt-block", "model.p.v"), ("misspelt-block", "exposure.p.m")]
    assert "Did you mean 'feature_layer'" in out.issues[0].message and "column 'x'" in out.issues[0].message
    assert sorted(out.broken_views) == ["v"] and sorted(out.broken_services) == ["m"]


def test_counts_read_as_english() -> None:
    from feature_layer.cli.registry_cmds import describe_counts

    assert describe_counts({"entities": 1, "feature_views": 2, "features": 1, "feature_services": 0}) == (
        "1 entity, 2 feature views, 1 feature, 0 feature services")
