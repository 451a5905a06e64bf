"""Freshness SLAs (ops1): dbt's `freshness:` shape in the view block, validated; the verdict rule
against a brute-force reference; `feature-layer freshness` exit codes; /metrics gauges and the
`freshness.sla` key of the view and feature API payloads, on the real built example project."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from server_helpers import materialized_copy, open_store
from starlette.testclient import TestClient
from test_declarations import ENTITIES, model

from feature_layer.dbt.artifacts import Manifest
from feature_layer.freshness import FreshnessSla, freshness
from feature_layer.registry.declarations import build_declarations

VIEW = "merchant_risk_features"  # the example declares warn_after 30h, error_after 2d on it
BLOCK = {"entities": ["user"], "event_time": "ts"}


def declare(sla: object) -> tuple[list[tuple[str, str]], object]:
    node = model("v", {**BLOCK, "freshness": sla})
    manifest = Manifest(Path("m.json"), "1.11", "p", {node.unique_id: node}, {}, {}, False)
    declared = build_declarations(manifest, ENTITIES, "dbt_project.yml")
    return [(i.code, i.message + " / " + i.fix) for i in declared.issues], declared.views.get("v")


def test_the_dbt_shape_is_read_into_the_view() -> None:
    issues, view = declare({"warn_after": {"count": 2, "period": "hour"}, "error_after": {"count": 1, "period": "day"}})
    assert issues == []
    assert view.freshness == FreshnessSla(warn_after=timedelta(hours=2), error_after=timedelta(days=1))
    issues, view = declare({"error_after": {"count": 15, "period": "minute"}})
    assert issues == [] and view.freshness == FreshnessSla(None, timedelta(minutes=15))
    issues, view = declare(None)
    assert issues == [] and view.freshness is None


@pytest.mark.parametrize(("sla", "expected"), [
    ({"warn_after": {"count": 2, "period": "hours"}}, "period 'hours' is not one of minute, hour, day. Did you mean 'hour'"),
    ({"warn_after": {"count": 0, "period": "hour"}}, "warn_after.count must be a positive whole number, got 0"),
    ({"warn_after": {"count": "2", "period": "hour"}}, "count must be a positive whole number, got '2'"),
    ({"warn_after": {"count": True, "period": "hour"}}, "count must be a positive whole number, got True"),
    ({"warn_after": "2h"}, "freshness warn_after must be {count: N, period: minute|hour|day}"),
    ({"warn_afer": {"count": 2, "period": "hour"}}, "an unknown key warn_afer. Did you mean 'warn_after'"),
    ({}, "declares neither warn_after nor error_after"),
    ("2h", "freshness must be a mapping, got str"),
    ({"warn_after": {"count": 2, "period": "day"}, "error_after": {"count": 1, "period": "day"}},
     "warn_after (2 days, 0:00:00) is later than error_after (1 day, 0:00:00)"),
])
def test_a_bad_sla_is_refused_with_the_fix(sla: object, expected: str) -> None:
    issues, view = declare(sla)
    assert view is None, "an invalid SLA leaves the view out"
    assert [code for code, _ in issues] == ["bad-freshness"]
    assert expected in issues[0][1]
    assert "To fix" not in issues[0][1] and issues[0][1].split(" / ")[1]  # a fix is given


NOW = datetime(2026, 3, 1, tzinfo=UTC)
durations = st.one_of(st.none(), st.integers(1, 10**7).map(lambda s: timedelta(seconds=s)))


@given(st.integers(-10**6, 10**8), durations, durations)
def test_the_sla_verdict_is_dbts_rule(lag_s: int, warn: timedelta | None, error: timedelta | None) -> None:
    """Brute force of dbt's rule: error when strictly older than error_after, else warn when
    strictly older than warn_after, else pass."""
    sla = FreshnessSla(warn, error)
    got = freshness(NOW - timedelta(seconds=lag_s), None, NOW, sla).sla
    lag = timedelta(seconds=lag_s)
    expected = "error" if error is not None and lag > error else "warn" if warn is not None and lag > warn else "pass"
    assert got == expected
    assert freshness(None, None, NOW, sla).sla == "error"  # never materialized: in error
    assert freshness(NOW, None, NOW).sla is None  # no SLA, no verdict


@pytest.fixture(scope="module")
def project(built_example_project: Path, fixture_now: datetime, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return materialized_copy(built_example_project, tmp_path_factory.mktemp("sla") / "project", now=fixture_now)


class Done:
    def __init__(self, result: object) -> None:
        self.returncode, self.stdout, self.stderr = result.exit_code, result.stdout, result.stderr


def cli(project: Path, now: datetime, *args: str) -> Done:
    """The real CLI in-process (click's runner), the clock pinned by FEATURE_LAYER_NOW."""
    from click.testing import CliRunner

    from feature_layer.cli import main

    runner = CliRunner()
    return Done(runner.invoke(main, ["--project-dir", str(project), *args], env={"FEATURE_LAYER_NOW": now.isoformat()}))


def newest(project: Path, fixture_now: datetime) -> datetime:
    with open_store(project, fixture_now) as store:
        found = store.state.newest_event_time(VIEW)
    assert found is not None
    return found if found.tzinfo else found.replace(tzinfo=UTC)


def test_freshness_command_exit_codes_follow_dbt_source_freshness(project: Path, fixture_now: datetime) -> None:
    at = newest(project, fixture_now)
    cases = [(at + timedelta(hours=30), 0, "pass"),                     # exactly warn_after: still pass
             (at + timedelta(hours=30, seconds=1), 0, "warn"),          # a warning is reported, exit 0
             (at + timedelta(days=2, seconds=1), 1, "error")]           # past error_after: exit 1
    for now, code, status in cases:
        done = cli(project, now, "freshness", "--select", VIEW, "--json")
        assert done.returncode == code, done.stderr
        body = json.loads(done.stdout)
        assert body["views"][0]["view"] == VIEW and body["views"][0]["status"] == status
        assert body["views"][0]["sla"] == status and body["status"] == status
        assert body["views"][0]["lag_seconds"] == (now - at).total_seconds()
    text = cli(project, at + timedelta(days=3), "freshness")
    assert text.returncode == 1 and "ERROR" in text.stdout and "error_after 2d" in text.stdout


def test_metrics_and_payloads_carry_the_sla(project: Path, fixture_now: datetime) -> None:
    from feature_layer.server.app import create_app

    at = newest(project, fixture_now)
    store = open_store(project, at + timedelta(hours=31))  # past warn_after, within error_after
    try:
        with TestClient(create_app(store, reload_interval=None)) as client:
            metrics = client.get("/metrics").text
            view = client.get(f"/v1/views/{VIEW}").json()
            feature = client.get(f"/v1/features/{VIEW}.chargeback_rate_30d").json()
            other = client.get("/v1/views/user_transaction_features").json()
    finally:
        store.close()
    assert f'feature_layer_feature_view_freshness_status{{view="{VIEW}"}} 1' in metrics
    assert f'feature_layer_feature_view_freshness_warn_after_seconds{{view="{VIEW}"}} 108000' in metrics
    assert f'feature_layer_feature_view_freshness_error_after_seconds{{view="{VIEW}"}} 172800' in metrics
    assert view["freshness"]["sla"] == "warn" and feature["freshness"]["sla"] == "warn"
    assert view["freshness"]["sla_thresholds"] == {"warn_after_seconds": 108000.0, "error_after_seconds": 172800.0}
    assert other["freshness"]["sla"] is None and other["freshness"]["sla_thresholds"] is None
