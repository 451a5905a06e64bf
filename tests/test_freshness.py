"""One freshness (feature_layer.freshness): the pure function, and its agreement with the lookup's TTL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from server_helpers import EXAMPLE_NOW, materialized_copy, open_store

from feature_layer.freshness import STATUSES, freshness

NOW = datetime(2026, 3, 1, 12, tzinfo=UTC)


@pytest.mark.parametrize(("newest", "ttl", "lag", "expired", "status"), [
    (None, timedelta(days=2), None, False, "never"),
    (None, None, None, False, "never"),
    (NOW - timedelta(days=10), timedelta(days=2), timedelta(days=10), True, "expired"),  # the case
    (NOW - timedelta(days=1), timedelta(days=2), timedelta(days=1), False, "fresh"),
    (NOW - timedelta(days=2), timedelta(days=2), timedelta(days=2), False, "fresh"),  # exactly the TTL: still served
    (NOW - timedelta(days=2, microseconds=1), timedelta(days=2), timedelta(days=2, microseconds=1), True, "expired"),
    (NOW - timedelta(days=400), None, timedelta(days=400), False, "fresh"),  # no TTL: never expires
    (NOW + timedelta(hours=1), timedelta(days=2), -timedelta(hours=1), False, "fresh"),  # stamped after now
])
def test_freshness_cases(newest, ttl, lag, expired, status):
    got = freshness(newest, ttl, NOW)
    assert (got.lag, got.expired, got.status) == (lag, expired, status)
    assert got.newest_event_time == newest
    assert got.lag_seconds == (None if lag is None else lag.total_seconds())


def test_naive_and_offset_times_are_utc():
    naive = freshness(datetime(2026, 3, 1, 10), timedelta(hours=1), NOW)
    offset = freshness(datetime(2026, 3, 1, 11, tzinfo=timezone(timedelta(hours=1))), timedelta(hours=1), NOW)
    assert naive.lag == offset.lag == timedelta(hours=2) and naive.expired and offset.expired
    assert naive.newest_event_time == offset.newest_event_time == datetime(2026, 3, 1, 10, tzinfo=UTC)


@given(st.integers(-10**12, 10**12), st.one_of(st.none(), st.integers(0, 10**12)))
def test_expired_is_exactly_the_lookup_rule(lag_us, ttl_us):
    """Brute force of the lookup's rule (encoding.decode_values): a value is served while
    event_us >= now_us - ttl_us; freshness says expired exactly when the newest value is not."""
    now_us = 1_800_000_000_000_000
    event_us = now_us - lag_us
    newest = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=event_us)
    now = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=now_us)
    ttl = None if ttl_us is None else timedelta(microseconds=ttl_us)
    got = freshness(newest, ttl, now)
    served = ttl_us is None or event_us >= now_us - ttl_us
    assert got.expired is (not served)
    assert got.status in STATUSES and got.status == ("expired" if not served else "fresh")
    assert got.lag == timedelta(microseconds=lag_us)


def test_freshness_agrees_with_what_lookups_return(built_example_project: Path, tmp_path: Path):
    """At the newest event + TTL the newest value is still served and the view fresh; one
    microsecond later the lookup answers null for it and the view is expired."""
    project = materialized_copy(built_example_project, tmp_path / "p", ["user_transaction_features"])
    store = open_store(project)
    try:
        view = store.registry.views["user_transaction_features"]
        newest = store.state.newest_event_time(view.name)
        assert newest is not None and view.ttl is not None and newest <= EXAMPLE_NOW
        entity = _entity_with_event(store, view.name, newest)
        ref = f"{view.name}.amount"
        for offset, served in ((timedelta(0), True), (timedelta(microseconds=1), False)):
            now = newest + view.ttl + offset
            at = open_store(project, now)
            try:
                value = at.get_online_features(features=[ref], entity_rows=[entity]).to_dict()["amount"][0]
            finally:
                at.close()
            assert (value is not None) is served, (offset, value)
            assert freshness(newest, view.ttl, now).expired is (not served)
    finally:
        store.close()


def _entity_with_event(store, view_name: str, event_time: datetime) -> dict:
    """The entity whose online value carries ``event_time`` (found through the lookup itself)."""
    import duckdb

    path = store.settings.project_dir / "target" / "feature_layer.duckdb"
    with duckdb.connect(str(path), read_only=True) as con:
        users = [r[0] for r in con.execute(f"select distinct user_id from main.{view_name} "
                                           "where occurred_at = ?", [event_time.replace(tzinfo=None)]).fetchall()]
    assert users, "no row carries the newest event time"
    return {"user_id": users[0]}


def test_online_status_cli_and_the_api_report_the_same_freshness(built_example_project: Path, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch):
    import json

    from click.testing import CliRunner
    from starlette.testclient import TestClient

    from feature_layer.cli import main
    from feature_layer.clock import NOW_VARIABLE
    from feature_layer.server.app import create_app

    now = EXAMPLE_NOW + timedelta(days=31)  # past the 30-day TTL of user_transaction_features, not the 90-day one
    project = materialized_copy(built_example_project, tmp_path / "p", now=EXAMPLE_NOW)
    monkeypatch.setenv(NOW_VARIABLE, now.isoformat())
    out = CliRunner().invoke(main, ["--project-dir", str(project), "online-status", "--json"])
    assert out.exit_code == 0, out.output
    cli = {v["view"]: v for v in json.loads(out.output[out.output.index("{"):])["views"]}
    store = open_store(project, now)
    try:
        with TestClient(create_app(store, reload_interval=None)) as client:
            api = {name: client.get(f"/v1/views/{name}").json()["freshness"] for name in cli}
    finally:
        store.close()
    assert cli["user_transaction_features"]["status"] == "expired" and cli["user_merchant_features"]["status"] == "fresh"
    for name, row in cli.items():
        assert row["newest_event_time"] is not None
        assert (row["status"], row["expired"], row["newest_event_time"]) == \
            (api[name]["status"], api[name]["expired"], api[name]["newest_event_time"]), name
        assert row["lag_seconds"] == pytest.approx(api[name]["lag_seconds"])
