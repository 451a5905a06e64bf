# ruff: noqa: F811  (the redis_server fixture imported from tests.redis_helpers is used as an argument)
"""`feature-layer run` end to end on a fresh copy of the example project (ops1): dbt build →
validate → materialize → statistics → freshness (→ verify), the JSON report against its schema,
exit codes 0 / 3 / 1, and `feature-layer verify` (0% right after a run; a corrupted online value
found). Real dbt, DuckDB, the embedded SQLite online store; the clock pinned to the data's end."""

from __future__ import annotations

import json
import shutil
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from conftest import EXAMPLE_ROWS, EXAMPLE_SEED, clean_project_env, copy_example_project, replace_in_file
from ops_helpers import cli, corrupt_online_value, validate_report
from redis_helpers import redis_server  # noqa: F401
from server_helpers import open_store
from sqlglot import exp

from feature_layer.sql.names import col, relation_table

pytestmark = pytest.mark.xdist_group("ops_run")


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example project with its raw data, never built: `run` builds it."""
    from feature_layer.demo.data import generate_demo_data

    dest = copy_example_project(tmp_path_factory.mktemp("ops_run") / "project")
    generate_demo_data(dest / "data" / "raw", rows=EXAMPLE_ROWS, seed=EXAMPLE_SEED)
    return dest


@pytest.fixture(scope="module")
def first_run(project: Path, fixture_now: datetime) -> tuple[int, dict, dict]:
    with clean_project_env():
        done = cli(project, fixture_now, "run", "--json", "--report", str(project / "reports" / "run.json"))
    return done.returncode, done.json(), json.loads((project / "reports" / "run.json").read_text())


def latest_entities(project: Path, now: datetime) -> dict[str, int]:
    """Independent count: distinct entities with a row at or before ``now``, per online view."""
    with open_store(project, now) as store:
        engine = store.offline_engine()
        out = {}
        for view in store.registry.views.values():
            if view.online:
                keys = exp.Tuple(expressions=[col(k) for k in view.join_keys]) if len(view.join_keys) > 1 \
                    else col(view.join_keys[0])
                sql = exp.select(exp.Count(this=exp.Distinct(expressions=[keys]))).from_(relation_table(view)).where(
                    exp.LTE(this=col(view.event_time), expression=exp.cast(exp.Literal.string(
                        now.replace(tzinfo=None).isoformat(sep=" ")), exp.DataType.build("timestamp"))))
                out[view.name] = engine.fetch_arrow(sql).column(0)[0].as_py()
        return out


def test_a_run_builds_materializes_and_reports_every_step(first_run, project: Path, fixture_now: datetime) -> None:
    code, report, written = first_run
    assert code == 0, json.dumps(report["steps"], indent=1)
    assert written == report  # --report writes what --json prints
    validate_report(report)
    assert report["status"] == "ok" and report["exit_code"] == 0 and report["now"] == fixture_now.isoformat()
    steps = {s["name"]: s for s in report["steps"]}
    assert [s["status"] for s in report["steps"]] == ["ok", "ok", "ok", "ok", "ok", "ok", "skipped"]
    assert steps["dbt_build"]["details"]["nodes"] > 20 and "success" in steps["dbt_build"]["details"]["by_status"]
    expected = latest_entities(project, fixture_now)
    views = {v["view"]: v for v in report["views"]}
    assert set(views) == set(expected) and len(expected) == 4
    for name, count in expected.items():
        m = views[name]["materialize"]
        assert m["status"] == "ok" and m["full_refresh"] and not m["sql_changed"]
        assert m["entities"] == count > 0
        assert m["rows_written"] + m["expired"] == count and m["kept_newer"] == 0
        assert views[name]["statistics"]["status"] == "computed"
        assert views[name]["freshness"]["status"] == "pass"
    assert steps["materialize"]["rows"] == sum(v["materialize"]["rows_written"] for v in views.values())
    merchant = views["merchant_risk_features"]["freshness"]
    assert merchant["sla"] == "pass" and merchant["error_after_seconds"] == 172800.0


def test_verify_right_after_a_run_finds_no_mismatch(first_run, project: Path, fixture_now: datetime) -> None:
    done = cli(project, fixture_now, "verify", "--sample", "40", "--json")
    assert done.returncode == 0, done.stdout
    body = done.json()
    assert body["ok"] and body["max_mismatch_rate"] == 0.0
    assert set(body["entities"]) == {"merchant_risk_features", "user_merchant_features", "user_profile_features",
                                     "user_transaction_features"}
    assert all(n == 40 for n in body["entities"].values())
    for feature in body["features"]:
        assert feature["compared"] == 40 and feature["mismatches"] == 0, feature
    compared_values = sum(f["compared"] - f["both_null"] for f in body["features"])
    assert compared_values > 0.9 * sum(f["compared"] for f in body["features"])  # real values, not null = null


def test_verify_finds_a_corrupted_online_value(first_run, project: Path, fixture_now: datetime) -> None:
    store = open_store(project, fixture_now)
    try:
        before = corrupt_online_value(store, "user_transaction_features", "amount", {"user_id": 7}, fixture_now,
                                      -12345.5)
    finally:
        store.close()
    assert before is not None and before != -12345.5
    done = cli(project, fixture_now, "verify", "--select", "user_transaction_features", "--sample", "100000",
               "--json")
    assert done.returncode == 1
    body = done.json()
    by_feature = {f["feature"]: f for f in body["features"]}
    assert body["failed"] == ["user_transaction_features.amount"]
    amount = by_feature["user_transaction_features.amount"]
    assert amount["mismatches"] == 1 and amount["mismatch_rate"] == 1 / amount["compared"]
    assert amount["examples"] == [{"entity": {"user_id": 7}, "offline": before, "online": -12345.5}]
    assert all(f["mismatches"] == 0 for name, f in by_feature.items() if name != "user_transaction_features.amount")
    within = cli(project, fixture_now, "verify", "--select", "user_transaction_features", "--sample", "100000",
                 "--threshold", str(2 / amount["compared"]))
    assert within.returncode == 0  # one bad value in N is within a threshold of 2/N
    with open_store(project, fixture_now) as store:  # a full refresh rewrites the corrupted value
        assert store.materialize(["user_transaction_features"], full_refresh=True).rows_written > 0
    assert cli(project, fixture_now, "verify", "--select", "user_transaction_features").returncode == 0


def test_a_run_with_a_view_past_its_sla_exits_3(first_run, project: Path, fixture_now: datetime) -> None:
    later = fixture_now + timedelta(days=2, hours=1)  # merchant_risk_features: error_after 2d
    done = cli(project, later, "run", "--select", "merchant_risk_features", "--no-docs", "--verify", "--json")
    assert done.returncode == 3, json.dumps(done.json()["steps"], indent=1)
    report = done.json()
    validate_report(report)
    steps = {s["name"]: s for s in report["steps"]}
    assert report["status"] == "stale" and steps["freshness"]["status"] == "stale"
    assert steps["freshness"]["details"]["stale"] == ["merchant_risk_features"]
    assert [v["view"] for v in report["views"]] == ["merchant_risk_features"]  # only what dbt built
    view = report["views"][0]
    assert view["freshness"]["sla"] == "error" and view["freshness"]["status"] == "error"
    assert view["materialize"]["full_refresh"] is False  # incremental from the first run's watermark
    # every merchant value is past its 2d TTL now: verify has nothing to compare, and says so
    assert steps["verify"]["status"] == "warn" and view["verify"]["entities"] == 0
    assert any("verify compared nothing for merchant_risk_features" in w for w in report["warnings"])


def test_a_failed_dbt_build_exits_1_skips_the_rest_and_keeps_the_online_values(
    first_run, project: Path, fixture_now: datetime
) -> None:
    def online_amount() -> float:
        with open_store(project, fixture_now) as store:
            value = store.get_online_features(["user_transaction_features.amount"], [{"user_id": 7}]).to_dict()
        return value["amount"][0]

    served = online_amount()
    assert served is not None
    model = project / "models" / "example" / "user_profile_features.sql"
    original = model.read_text()
    replace_in_file(model, "birth_year,", "birth_year +,")
    try:
        done = cli(project, fixture_now, "run", "--json", "--report", str(project / "reports" / "failed.json"))
    finally:
        model.write_text(original)
    assert done.returncode == 1
    report = json.loads((project / "reports" / "failed.json").read_text())
    validate_report(report)
    assert report["status"] == "failed" and report == done.json()
    statuses = {s["name"]: s["status"] for s in report["steps"]}
    assert statuses == {"dbt_build": "failed", "dbt_docs": "skipped", "validate": "skipped", "materialize": "skipped",
                        "statistics": "skipped", "freshness": "skipped", "verify": "skipped"}
    assert "user_profile_features" in report["steps"][0]["error"]
    assert online_amount() == served  # the previous good state is still served


def test_verify_on_redis_finds_a_corrupted_value(
    built_example_project: Path, fixture_now: datetime, redis_server, tmp_path: Path  # noqa: ANN001
) -> None:
    """The same check against a real redis-server: materialized, 0% mismatch, then one value
    written wrongly is the only mismatch found."""
    from feature_layer.client import FeatureStore
    from feature_layer.clock import FixedClock
    from feature_layer.ops.verify import verify

    project = tmp_path / "project"
    shutil.copytree(built_example_project, project, ignore=shutil.ignore_patterns(".feature_layer", "logs"))
    with clean_project_env(), FeatureStore(project, online_store=f"redis://127.0.0.1:{redis_server.port}/0",
                                           clock=FixedClock(fixture_now)) as store:
        store.materialize(["user_merchant_features"])
        clean = verify(store.parts, select=["user_merchant_features"], sample=30)
        assert clean.ok and clean.entities == {"user_merchant_features": 30}
        assert all(f.compared == 30 and f.mismatches == 0 and not f.examples for f in clean.features)
        first = sample_key(store, fixture_now)
        before = corrupt_online_value(store, "user_merchant_features", "txn_count_30d", first, fixture_now, 987654)
        found = verify(store.parts, select=["user_merchant_features"], sample=30)
    assert found.failed == ["user_merchant_features.txn_count_30d"]
    bad = next(f for f in found.features if f.feature == "user_merchant_features.txn_count_30d")
    assert bad.mismatches == 1 and bad.examples == [{"entity": first, "offline": before, "online": 987654}]


def sample_key(store, now: datetime) -> dict:  # noqa: ANN001
    """The first entity verify samples (seed 0) for user_merchant_features."""
    from feature_layer.ops.verify import sample_entities

    view = store.registry.view("user_merchant_features")
    return sample_entities(store.offline_engine(), view, now, 30, 0).to_pylist()[0]
