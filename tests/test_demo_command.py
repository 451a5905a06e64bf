"""`feature-layer demo` (what `make demo` runs) works end to end on a fresh copy."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import clean_project_env, copy_example_project

from feature_layer.cli import main
from feature_layer.client import FeatureStore
from feature_layer.clock import NOW_VARIABLE

NOW = datetime(2031, 1, 15, tzinfo=UTC)


def test_demo_builds_trains_materializes_and_looks_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # "Today" pinned: the demo generates data ending there and materializes and looks up as of it.
    monkeypatch.setenv(NOW_VARIABLE, NOW.isoformat())
    project = copy_example_project(tmp_path / "demo")
    with clean_project_env():
        result = CliRunner().invoke(main, ["--project-dir", str(project), "demo", "--rows", "5000"])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "dbt build passed." in out
    assert "4 feature views" in out
    assert "Training set for ML exposure 'fraud_model_v1'" in out and "5,000 rows" in out
    assert "Online lookup" in out
    assert "300 payments streamed" in out and "online " in out and "ms after it was written" in out  # stream part
    assert "as of its latest payment, " in out and "windows end at its own time" in out
    # The data ends "today", so the freshest entities have values online (not all null).
    store = FeatureStore(project)
    newest = store.offline_engine().fetch_arrow("select max(occurred_at) as t from user_transaction_features")
    assert timedelta(0) < NOW - newest["t"][0].as_py().replace(tzinfo=UTC) < timedelta(days=1)
    recent = store.offline_engine().fetch_arrow(
        "select user_id from user_transaction_features order by occurred_at desc limit 20")
    rows = [{"user_id": u} for u in recent["user_id"].to_pylist()]
    values = store.get_online_features(["user_transaction_features.txn_count_24h"], rows).to_dict()
    assert all(v is not None and v >= 1 for v in values["txn_count_24h"])
    store.close()
