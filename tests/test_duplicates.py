"""Same computation, two names: the example project plus two test-only feature views, compiled
by real dbt. ``user_spend_features.spend_24h`` sums the same amounts over the same window as
``user_transaction_features.amount_sum_24h`` but is written differently (no CTE, another alias,
``partition by`` spelt out); its ``spend_7d`` differs in the window, and the online-only view
sums the same expression over fewer rows (a WHERE). Only the first pair is a duplicate."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import clean_project_env
from server_helpers import open_store
from starlette.testclient import TestClient

from feature_layer.cli import main
from feature_layer.registry.duplicates import canonical_expressions, duplicate_groups, duplicates_of

SPEND = """{{ config(materialized='table') }}
select
    p.user_id,
    p.occurred_at,
    p.created_at,
    sum(p.amount) over (
        partition by p.user_id order by p.occurred_at
        range between (interval '1' day - interval '1' microsecond) preceding and current row
    )::double as spend_24h,
    sum(p.amount) over (
        partition by p.user_id order by p.occurred_at
        range between (interval '7' day - interval '1' microsecond) preceding and current row
    )::double as spend_7d
from {{ ref('stg_transactions') }} as p
"""

ONLINE_SPEND = """{{ config(materialized='table') }}
select
    t.user_id,
    t.occurred_at,
    t.created_at,
    sum(t.amount) over (
        partition by t.user_id order by t.occurred_at
        range between (interval '1' day - interval '1' microsecond) preceding and current row
    )::double as online_spend_24h
from {{ ref('stg_transactions') }} as t
where t.is_online
"""

SCHEMA = """version: 2
models:
  - name: user_spend_features
    description: "Test-only: the same spend as user_transaction_features, written another way."
    config:
      meta:
        feature_layer: {entities: [user], event_time: occurred_at, created_at: created_at, ttl: 30d}
    columns:
      - {name: user_id, data_type: bigint}
      - {name: occurred_at, data_type: timestamp}
      - {name: created_at, data_type: timestamp}
      - {name: spend_24h, data_type: double, description: Money spent in the last 24 hours.}
      - {name: spend_7d, data_type: double, description: Money spent in the last 7 days.}
  - name: user_online_spend_features
    description: "Test-only: card-not-present spend only."
    config:
      meta:
        feature_layer: {entities: [user], event_time: occurred_at, created_at: created_at, ttl: 30d}
    columns:
      - {name: user_id, data_type: bigint}
      - {name: occurred_at, data_type: timestamp}
      - {name: created_at, data_type: timestamp}
      - {name: online_spend_24h, data_type: double}
"""

ORIGINAL = "user_transaction_features.amount_sum_24h"
COPY = "user_spend_features.spend_24h"
PAIR = (COPY, ORIGINAL)  # sorted


@pytest.fixture(scope="module")
def project(built_example_project: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from feature_layer.dbt.runner import run_dbt

    dest = tmp_path_factory.mktemp("duplicates") / "project"
    shutil.copytree(built_example_project, dest, ignore=shutil.ignore_patterns(".feature_layer", "logs"))
    extra = dest / "models" / "test_only"
    extra.mkdir()
    (extra / "user_spend_features.sql").write_text(SPEND)
    (extra / "user_online_spend_features.sql").write_text(ONLINE_SPEND)
    (extra / "schema.yml").write_text(SCHEMA)
    with clean_project_env():
        run_dbt(["build", "-s", "user_spend_features", "user_online_spend_features"], dest, target="duckdb",
                quiet=True)
        run_dbt(["docs", "generate"], dest, target="duckdb", quiet=True)  # the new views' catalog entries
    return dest


@pytest.fixture(scope="module")
def store(project: Path):
    s = open_store(project)
    yield s
    s.close()


def test_the_same_sum_written_two_ways_is_one_duplicate_group(store):
    registry = store.registry
    groups = duplicate_groups(registry)
    assert [g.features for g in groups] == [PAIR]
    group = groups[0]
    assert set(group.source_columns) == {"raw.transactions.amount", "raw.transactions.user_id",
                                         "raw.transactions.occurred_at"}
    assert "SUM(" in group.expression and '"raw.transactions.amount"' in group.expression
    assert duplicates_of(registry, COPY) == [ORIGINAL] and duplicates_of(registry, ORIGINAL) == [COPY]
    expressions = canonical_expressions(registry)
    # another window, and the same sum over online payments only: not the same computation
    assert expressions["user_spend_features.spend_7d"][0] != expressions[ORIGINAL][0]
    online = expressions["user_online_spend_features.online_spend_24h"][0]
    assert online != expressions[ORIGINAL][0] and "WHERE" in online
    assert duplicates_of(registry, "user_online_spend_features.online_spend_24h") == []
    # every example feature is readable: none is left out of the comparison
    assert set(expressions) == {f.ref for v in registry.views.values() for f in v.features}


def test_duplicates_are_the_features_with_equal_values_on_real_data(store):
    """The reference: the two duplicates hold the same value in every row of the warehouse."""
    engine = store.offline_engine()
    rows = engine.fetch_arrow(
        "select count(*) as n, count(*) filter (where abs(a.amount_sum_24h - b.spend_24h) > 1e-9) as differ "
        "from user_transaction_features a join user_spend_features b "
        "on a.user_id = b.user_id and a.occurred_at = b.occurred_at and a.created_at = b.created_at").to_pylist()[0]
    assert rows["n"] > 1000 and rows["differ"] == 0
    online = engine.fetch_arrow(
        "select count(*) filter (where abs(a.amount_sum_24h - b.online_spend_24h) > 1e-9) as differ "
        "from user_transaction_features a join user_online_spend_features b "
        "on a.user_id = b.user_id and a.occurred_at = b.occurred_at and a.created_at = b.created_at").to_pylist()[0]
    assert online["differ"] > 0  # the filtered sum really is another computation


def test_cli_lists_duplicates_as_text_and_json(project: Path):
    runner = CliRunner()
    result = runner.invoke(main, ["--project-dir", str(project), "duplicates", "--json"])
    assert result.exit_code == 0, result.output
    assert [g["features"] for g in json.loads(result.output)] == [list(PAIR)]
    result = runner.invoke(main, ["--project-dir", str(project), "duplicates"])
    assert result.exit_code == 0 and f"{COPY} = {ORIGINAL}" in result.output


def test_feature_page_lists_its_duplicates(store):
    from feature_layer.server.app import create_app

    with TestClient(create_app(store, reload_interval=None)) as client:
        body = client.get(f"/v1/features/{COPY}").json()
        assert [d["ref"] for d in body["duplicates"]] == [ORIGINAL]
        assert body["duplicates"][0]["url"] == f"/#/feature/{ORIGINAL}" and body["duplicates"][0]["expression"]
        assert client.get("/v1/features/user_transaction_features.amount").json()["duplicates"] == []
