# ruff: noqa: F811  (pytest fixtures imported from tests.redis_helpers are used as arguments)
"""End to end on the built example project: FeatureStore + CLI, embedded store and Redis."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pytest
from click.testing import CliRunner

from feature_layer.cli import main
from feature_layer.client import FeatureStore
from feature_layer.clock import FixedClock
from feature_layer.online.encoding import to_micros
from tests.redis_helpers import RedisServer, private_redis, redis_server  # noqa: F401


@pytest.fixture
def project(built_example_project: Path, tmp_path: Path) -> Path:
    """A private copy of the built project, so online state never leaks between tests."""
    dest = tmp_path / "project"
    shutil.copytree(built_example_project, dest, ignore=shutil.ignore_patterns(".feature_layer"))
    return dest


def first_entity_row(store: FeatureStore, view_name: str) -> dict:
    view = store.registry.view(view_name)
    cols = ", ".join(f'"{k}"' for k in view.join_keys)
    rel = ".".join(f'"{p}"' for p in view.relation.parts())
    row = store.offline_engine().fetch_arrow(f'SELECT {cols} FROM {rel} ORDER BY "{view.event_time}" DESC LIMIT 1')
    return row.to_pylist()[0]


def sample_entities(store: FeatureStore, view_name: str, n: int = 25) -> list[dict]:
    view = store.registry.view(view_name)
    cols = ", ".join(f'"{k}"' for k in view.join_keys)
    rel = ".".join(f'"{p}"' for p in view.relation.parts())
    return (
        store.offline_engine().fetch_arrow(f"SELECT DISTINCT {cols} FROM {rel} ORDER BY {cols} LIMIT {n}").to_pylist()
    )


def comparable(value: object) -> object:
    if isinstance(value, datetime):
        return value.replace(tzinfo=None) if value.tzinfo is None else value.astimezone(UTC).replace(tzinfo=None)
    if isinstance(value, float):
        return round(value, 9)
    return value


@pytest.mark.parametrize("backend", ["sqlite", "redis"])
def test_online_lookup_equals_a_training_set_built_now(
    project: Path,
    backend: str,
    fixture_now: datetime,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if backend == "redis":
        monkeypatch.setenv("FEATURE_LAYER_ONLINE_STORE", request.getfixturevalue("redis_server").url)
    # "Now" is the end of the example data, so TTLs leave some values live and expire others.
    now = fixture_now + timedelta(hours=1)
    store = FeatureStore(project, clock=FixedClock(now))
    try:
        assert store.online_store().kind == backend
        assert store.online_store().clock() == to_micros(now)
        online_views = [v for v in store.registry.views.values() if v.online]
        result = store.materialize()  # up to the clock's now
        assert {r.view for r in result.views} == {v.name for v in online_views}
        checked: dict[str, int] = {}
        for view in online_views:
            assert store.state.last_materialized(view.name)[0] == now
            assert store.state.get_statistics(view.features[0].ref) is not None
            rows = sample_entities(store, view.name)
            online = store.get_online_features([f"{view.name}.*"], rows).to_rows()
            spine = pa.table(
                {
                    **{k: [r[k] for r in rows] for k in view.join_keys},
                    "event_timestamp": pa.array([now.replace(tzinfo=None)] * len(rows), pa.timestamp("us")),
                }
            )
            offline = store.get_training_set(spine, [f"{view.name}.*"]).to_arrow().to_pylist()
            by_key = {tuple(r[k] for k in view.join_keys): r for r in offline}
            for got in online:
                want = by_key[tuple(got[k] for k in view.join_keys)]
                for f in view.features:
                    assert comparable(got[f.name]) == comparable(want[f.name]), (f.ref, got, want)
                    checked[f.ref] = checked.get(f.ref, 0) + (got[f.name] is not None)
        # every feature of every online view is compared on values that are there, not None == None
        absent = sorted(ref for ref, n in checked.items() if n == 0)
        assert not absent and len(checked) == sum(len(v.features) for v in online_views), absent
    finally:
        store.close()


def test_cli_materialize_get_and_status(project: Path, now_env: datetime) -> None:
    runner = CliRunner()
    base = ["--project-dir", str(project)]
    out = runner.invoke(main, [*base, "materialize", "--json"])
    assert out.exit_code == 0, out.output
    views = json.loads(out.stdout)["views"]
    assert views and all(v["entities"] > 0 for v in views)  # the data's end: every view has live values
    store = FeatureStore(project, clock=FixedClock(now_env))
    view = next(v for v in store.registry.views.values() if v.online and len(v.join_keys) == 1)
    feature = view.features[0]
    row = first_entity_row(store, view.name)
    key, value = next(iter(row.items()))
    spine = pa.table({key: [value], "event_timestamp": pa.array([now_env.replace(tzinfo=None)], pa.timestamp("us"))})
    want = store.get_training_set(spine, [feature.ref]).to_arrow().column(feature.name)[0].as_py()
    store.close()
    assert want is not None, f"{feature.ref} of {row} has no value at {now_env}: pick another entity"
    got = runner.invoke(main, [*base, "online-get", feature.ref, "-e", f"{key}={value}", "--json"])
    assert got.exit_code == 0, got.output
    answer = json.loads(got.stdout)[0]
    assert answer[key] == value
    assert comparable(answer[feature.name]) == comparable(want)
    status = runner.invoke(main, [*base, "online-status", "--json"])
    assert status.exit_code == 0
    assert {v["view"]: v["watermark"] for v in json.loads(status.stdout)["views"]} == {
        v["view"]: now_env.isoformat() for v in views
    }
    again = runner.invoke(main, [*base, "materialize", "--no-progress"])
    assert again.exit_code == 0 and "since" in again.output
    bad = runner.invoke(main, [*base, "online-get", "nope.x", "-e", "a=1"])
    assert bad.exit_code == 1 and "To fix this" in bad.output
    bad_time = runner.invoke(main, [*base, "materialize", "--end", "yesterday"])
    assert bad_time.exit_code == 2
    bad_lookback = runner.invoke(main, [*base, "materialize", "--late-lookback", "soon"])
    assert bad_lookback.exit_code == 2 and "--late-lookback" in bad_lookback.output
    no_lookback = runner.invoke(main, [*base, "materialize", "--late-lookback", "0s", "--json"])
    assert no_lookback.exit_code == 0
    assert all(v["entities"] == 0 for v in json.loads(no_lookback.stdout)["views"])  # nothing new, nothing re-read
    newest = json.loads(runner.invoke(main, [*base, "online-status", "--json"]).stdout)["views"]
    assert all(v["newest_event_time"] <= v["watermark"] for v in newest if v["newest_event_time"])


def test_cli_reports_an_unreachable_redis_clearly(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FEATURE_LAYER_ONLINE_STORE", "redis://127.0.0.1:1/0")
    out = CliRunner().invoke(main, ["--project-dir", str(project), "materialize", "--no-progress"])
    assert out.exit_code == 1
    assert "unreachable" in out.output and "watermark was not advanced" in out.output


def test_a_column_marked_feature_false_keeps_serving_the_others_and_reports_the_view_stale(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The case: mark one column `feature: false`, `dbt parse`, and the view's layout
    # changes; lookups must keep serving the features still declared (not null) until the next
    # materialization, and the view is reported stale.
    from feature_layer.dbt.runner import run_dbt
    from feature_layer.errors import UnknownFeatureError
    from feature_layer.online.layouts import layout_state
    from tests.conftest import clean_project_env, replace_in_file

    runner = CliRunner()
    base = ["--project-dir", str(project)]
    view = "user_transaction_features"
    store = FeatureStore(project)
    entity = first_entity_row(store, view)
    spec = store.registry.view(view)
    rel = ".".join(f'"{p}"' for p in spec.relation.parts())
    latest = store.offline_engine().fetch_arrow(f'SELECT max("{spec.event_time}") FROM {rel}').column(0)[0].as_py()
    store.close()
    now = (latest if latest.tzinfo else latest.replace(tzinfo=UTC)) + timedelta(hours=1)
    monkeypatch.setenv("FEATURE_LAYER_NOW", now.isoformat())  # the end of the example data: values live
    assert runner.invoke(main, [*base, "materialize", "--json"]).exit_code == 0
    store = FeatureStore(project)
    kept = [f"{view}.amount", f"{view}.txn_count_24h"]
    before = store.get_online_features(kept, entity_rows=[entity]).to_dict()
    assert before["amount"][0] is not None and before["txn_count_24h"][0] is not None
    store.close()

    replace_in_file(
        project / "models" / "example" / "schema.yml",
        "        description: Seconds since the card holder's previous payment (null for the first).\n"
        "        data_type: double\n",
        "        description: Seconds since the card holder's previous payment (null for the first).\n"
        "        data_type: double\n        config:\n          meta:\n            feature_layer: {feature: false}\n",
    )
    with clean_project_env():
        run_dbt(["parse"], project, target="duckdb", quiet=True)
    store = FeatureStore(project)
    assert "seconds_since_previous_txn" not in [f.name for f in store.registry.view(view).features]
    assert store.get_online_features(kept, entity_rows=[entity]).to_dict() == before  # values, not nulls
    with pytest.raises(UnknownFeatureError):
        store.get_online_features([f"{view}.seconds_since_previous_txn"], entity_rows=[entity])
    state = layout_state(store.online_store(), store.registry.view(view))
    assert state.stale and state.missing_features == () and state.active != state.wanted
    done = runner.invoke(main, [*base, "online-status", "--json"])
    assert done.exit_code == 0, done.output
    status = json.loads(done.stdout)["views"]
    assert next(v for v in status if v["view"] == view)["layout"]["stale"] is True
    table = runner.invoke(main, [*base, "online-status"]).output
    assert "stale" in table
    store.close()

    assert runner.invoke(main, [*base, "materialize", "--json"]).exit_code == 0
    store = FeatureStore(project)
    assert not layout_state(store.online_store(), store.registry.view(view)).stale
    assert store.get_online_features(kept, entity_rows=[entity]).to_dict() == before
    store.close()
