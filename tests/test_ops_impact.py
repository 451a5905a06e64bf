"""Change impact (ops1): the data fingerprint (compiled SQL) makes materialize rewrite values a
SQL edit changed, and `feature-layer impact --state` names exactly the views, features, ML models
and layouts a prepared change touches (one SQL edit, one renamed column, one new view), on a copy
of the dbt-built example project compiled again by real dbt."""

from __future__ import annotations

import dataclasses
import json
import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest
from conftest import clean_project_env, replace_in_file
from ops_helpers import cli
from redis_helpers import make_parts

from feature_layer.offline.engine import DuckDBEngine
from feature_layer.online import layouts
from feature_layer.online.encoding import to_micros
from feature_layer.online.lookup import get_online_features
from feature_layer.online.materialize import materialize
from feature_layer.online.sqlite_store import SqliteOnlineStore
from feature_layer.registry.model import Feature, FeatureView, Relation
from feature_layer.state import StateStore

END = datetime(2025, 2, 1, tzinfo=UTC)
SQL = 'select user_id, ts, x * 1 as x from "db"."main"."raw"'


def small_view(compiled: str | None) -> FeatureView:
    return FeatureView(name="v", unique_id="model.p.v", entities=("user",), join_keys=("user_id",), event_time="ts",
                       features=(Feature("x", "v", "float64"),), relation=Relation(None, "main", "events"),
                       column_types=(("user_id", "int64"), ("ts", "timestamp"), ("x", "float64")),
                       compiled_sql=compiled)


@pytest.fixture
def parts_for(tmp_path: Path):  # noqa: ANN201
    engine = DuckDBEngine(":memory:")
    engine.execute("CREATE TABLE main.events AS SELECT range AS user_id, TIMESTAMP '2025-01-05' AS ts, "
                   "range * 1.0 AS x FROM range(5)")
    online = SqliteOnlineStore(tmp_path / "o.sqlite", "p")
    online.clock = lambda: to_micros(END)
    state = StateStore(tmp_path / "s.sqlite")
    yield lambda view: make_parts(engine, online, state, [view])
    engine.close(), online.close(), state.close()


def x_of(parts, users):  # noqa: ANN001, ANN201
    return get_online_features(parts, features=["v.x"], entity_rows=[{"user_id": u} for u in users]).to_dict()["x"]


def test_a_sql_edit_rewrites_every_value_while_formatting_and_schema_names_do_not(parts_for) -> None:  # noqa: ANN001
    first = parts_for(small_view(SQL))
    assert materialize(first, end=END)["v"].full_refresh
    incremental = materialize(first, end=END)["v"]
    assert not incremental.full_refresh and not incremental.sql_changed
    # The same SQL compiled for another schema, reformatted, with a comment: the same data fingerprint.
    same = small_view('-- moved\nSELECT user_id, ts,\n   x * 1 AS x FROM "prod"."analytics"."raw"')
    assert layouts.sql_fingerprint(same, "duckdb") == layouts.sql_fingerprint(small_view(SQL), "duckdb")
    assert not materialize(parts_for(same), end=END)["v"].full_refresh
    # The new SQL doubles x, with the same columns and event times (the layout is unchanged).
    edited = small_view(SQL.replace("x * 1", "x * 2"))
    parts = parts_for(edited)
    parts.engine().execute("UPDATE main.events SET x = x * 2")
    assert layouts.layout_state(parts.online(), edited).sql_changed  # reported before it is refreshed
    assert layouts.layout_state(parts.online(), edited).stale
    result = materialize(parts, end=END)["v"]
    assert result.sql_changed and result.full_refresh and result.rows_written == 5
    assert x_of(parts, [1, 4]) == [2.0, 8.0]  # forced: equal event times do not keep the old-SQL values
    state = layouts.layout_state(parts.online(), edited)
    assert not state.sql_changed and not state.stale
    # A manifest without compiled SQL (dbt parse only) claims nothing changed and keeps the record.
    unknown = small_view(None)
    assert not materialize(parts_for(unknown), end=END)["v"].sql_changed
    assert not materialize(parts, end=END)["v"].sql_changed


NEW_VIEW_SQL = """{{ config(enabled=feature_layer.examples_enabled()) }}
select user_id, signup_at, birth_year * 2 as doubled_birth_year from {{ ref('stg_users') }}
"""
NEW_VIEW_YML = """version: 2
models:
  - name: user_extra_features
    config:
      meta:
        feature_layer: {entities: [user], event_time: signup_at}
    columns:
      - {name: user_id, data_type: bigint}
      - {name: signup_at, data_type: timestamp}
      - {name: doubled_birth_year, data_type: integer}
exposures:
  - name: velocity_model
    type: ml
    owner: {name: Risk team, email: risk-team@example.com}
    depends_on: [ref('user_transaction_features')]
    config:
      meta:
        feature_layer:
          features: [user_transaction_features.txn_count_24h]
"""


@pytest.fixture(scope="module")
def changed(built_example_project: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A copy of the built project (its target/ kept as the production state), then changed:
    a SQL edit (merchant_risk_features), a renamed column (user_profile_features.is_verified →
    verified), a new view (user_extra_features) and an unaffected new ML model."""
    from feature_layer.dbt.runner import run_dbt

    root = tmp_path_factory.mktemp("impact")
    project = root / "project"
    shutil.copytree(built_example_project, project, ignore=shutil.ignore_patterns(".feature_layer", "logs"))
    state = root / "prod_target"
    state.mkdir()
    for name in ("manifest.json", "catalog.json"):
        shutil.copy2(project / "target" / name, state / name)
    models = project / "models" / "example"
    replace_in_file(models / "merchant_risk_features.sql", "sum(case when is_fraud then 1 else 0 end)",
                    "sum(case when is_fraud and amount > 0 then 1 else 0 end)")
    replace_in_file(models / "user_profile_features.sql", "    is_verified,\n", "    is_verified as verified,\n")
    replace_in_file(models / "schema.yml", "      - name: is_verified\n", "      - name: verified\n")
    (models / "user_extra_features.sql").write_text(NEW_VIEW_SQL)
    (models / "user_extra_features.yml").write_text(NEW_VIEW_YML)
    with clean_project_env():
        run_dbt(["compile"], project, target="duckdb", quiet=True)
    return project, state


def test_impact_names_exactly_what_the_prepared_change_touches(changed: tuple[Path, Path]) -> None:
    from feature_layer.client import FeatureStore
    from feature_layer.ops.impact import load_state_registry

    project, state = changed
    done = cli(project, datetime(2026, 1, 1, tzinfo=UTC), "impact", "--state", str(state), "--json")
    assert done.returncode == 0, done.stderr
    body = done.json()
    with clean_project_env(), FeatureStore(project) as store:
        old = load_state_registry(state, project)
        merchant = [f.ref for f in old.view("merchant_risk_features").features]
        profile_before = old.view("user_profile_features")
        profile_after = store.registry.view("user_profile_features")
    assert body["changed_views"] == ["merchant_risk_features", "user_extra_features", "user_profile_features"]
    views = {v["view"]: v for v in body["views"]}
    assert views["merchant_risk_features"]["changes"] == ["sql"]
    assert views["user_extra_features"]["changes"] == ["new"]
    assert views["user_profile_features"]["changes"] == ["sql", "schema"]
    assert views["user_profile_features"]["details"]["sql"] == {"columns": ["is_verified", "verified"]}
    assert views["merchant_risk_features"]["details"]["sql"] == {"columns": "all"}  # a CTE changed
    assert views["user_profile_features"]["details"]["schema"] == {"added": ["verified"], "removed": ["is_verified"],
                                                                   "retyped": {}}
    assert body["features"] == sorted([*merchant, "user_extra_features.doubled_birth_year",
                                       "user_profile_features.is_verified", "user_profile_features.verified"])
    assert views["user_profile_features"]["features"] == {"user_profile_features.is_verified": "removed",
                                                          "user_profile_features.verified": "added"}
    assert set(views["merchant_risk_features"]["features"].values()) == {"changed"}
    assert body["ml_models"] == ["fraud_model_v1"]  # velocity_model uses an unchanged feature only
    from feature_layer.online.encoding import view_layout

    assert body["layouts"] == [{"view": "user_profile_features", "before": view_layout(profile_before, "").fingerprint,
                                "after": view_layout(profile_after, "").fingerprint}]
    assert body["layouts"][0]["before"] != body["layouts"][0]["after"]
    assert body["full_refresh_needed"] and body["full_refresh_views"] == ["merchant_risk_features",
                                                                         "user_profile_features"]
    text = cli(project, datetime(2026, 1, 1, tzinfo=UTC), "impact", "--state", str(state))
    assert text.returncode == 0 and "ML models affected: fraud_model_v1" in text.stdout


def test_impact_against_itself_is_empty_and_a_bad_state_path_says_what_to_pass(
    built_example_project: Path, tmp_path: Path
) -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    with clean_project_env():
        same = cli(built_example_project, now, "impact", "--state", str(built_example_project / "target"), "--json")
        missing = cli(built_example_project, now, "impact", "--state", str(tmp_path))
    assert same.returncode == 0 and json.loads(same.stdout)["changed_views"] == []
    assert json.loads(same.stdout)["full_refresh_needed"] is False
    assert missing.returncode == 1 and "holds no manifest.json" in missing.stderr and "To fix this" in missing.stderr


def test_a_description_edit_is_metadata_only() -> None:
    from feature_layer.ops.impact import compare_view

    view = small_view(SQL)
    edited = dataclasses.replace(view, description="new words", owner="someone")
    change = compare_view(view, edited, "duckdb", "duckdb")
    assert change.changes == ["metadata"] and not change.full_refresh and change.features == {}


def test_one_select_expression_edit_names_only_its_column_and_any_other_edit_names_all() -> None:
    from feature_layer.ops.impact import changed_columns

    old = 'with t as (select * from "db"."main"."r") select user_id, ts, a + 1 as a1, b from t'
    assert changed_columns(old, old.replace("a + 1", "a + 2"), "duckdb") == {"a1"}
    assert changed_columns(old, old.replace("b from t", "b as c from t"), "duckdb") == {"b", "c"}
    assert changed_columns(old, old.replace('"db"."main"', '"prod"."x"'), "duckdb") == set()
    assert changed_columns(old, old.replace('"r")', '"r" where a > 0)'), "duckdb") is None
    assert changed_columns(old, "select * from t", "duckdb") is None
