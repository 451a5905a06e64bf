"""The one clock: a pinned "now" reaches every part, and a bad FEATURE_LAYER_NOW is a clear error."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from feature_layer.clock import (
    NOW_VARIABLE,
    Clock,
    FixedClock,
    SystemClock,
    clock_from_env,
    epoch_us,
    epoch_us_source,
)
from feature_layer.errors import ConfigError


def test_fixed_clock_is_utc_aware_whatever_it_was_given() -> None:
    paris = timezone(timedelta(hours=2))
    assert FixedClock(datetime(2024, 5, 1, 14, tzinfo=paris)).now() == datetime(2024, 5, 1, 12, tzinfo=UTC)
    naive = FixedClock(datetime(2024, 5, 1, 12)).now()
    assert naive.tzinfo is UTC and naive == datetime(2024, 5, 1, 12, tzinfo=UTC)


def test_system_clock_tells_the_real_time() -> None:
    before = datetime.now(UTC)
    now = SystemClock().now()
    assert now.tzinfo is not None
    assert before - timedelta(seconds=60) <= now <= datetime.now(UTC) + timedelta(seconds=60)
    assert isinstance(SystemClock(), Clock) and isinstance(FixedClock(now), Clock)


def test_environment_pins_the_clock() -> None:
    assert clock_from_env({NOW_VARIABLE: "2024-05-01T12:00:00Z"}) == FixedClock(datetime(2024, 5, 1, 12, tzinfo=UTC))
    assert clock_from_env({NOW_VARIABLE: "2024-05-01"}).now() == datetime(2024, 5, 1, tzinfo=UTC)
    assert isinstance(clock_from_env({}), SystemClock)
    assert isinstance(clock_from_env({NOW_VARIABLE: "  "}), SystemClock)


def test_bad_environment_value_names_the_variable_and_the_fix() -> None:
    with pytest.raises(ConfigError) as caught:
        clock_from_env({NOW_VARIABLE: "yesterday"})
    text = str(caught.value)
    assert NOW_VARIABLE in text and "'yesterday'" in text
    assert "To fix this, set FEATURE_LAYER_NOW to a time such as" in text


def test_epoch_microseconds_agree_with_the_datetime() -> None:
    t = datetime(2031, 2, 3, 4, 5, 6, 789_012, tzinfo=UTC)
    expected = round(t.timestamp() * 1_000_000)
    assert epoch_us(FixedClock(t)) == expected
    assert epoch_us_source(FixedClock(t))() == expected
    wall = epoch_us_source(SystemClock())()
    assert abs(wall - round(datetime.now(UTC).timestamp() * 1_000_000)) < 60_000_000


def test_feature_store_hands_its_clock_to_the_online_store(parsed_example_project, monkeypatch) -> None:
    from feature_layer.client import FeatureStore

    t = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    with FeatureStore(parsed_example_project, clock=FixedClock(t)) as store:
        assert store.clock.now() == t
        assert store.online_store().clock() == epoch_us(FixedClock(t))
    monkeypatch.setenv(NOW_VARIABLE, "2030-01-02T03:04:05+00:00")
    with FeatureStore(parsed_example_project) as store:
        assert store.clock == FixedClock(t)
        assert store.online_store().clock() == epoch_us(FixedClock(t))
    monkeypatch.setenv(NOW_VARIABLE, "not a time")
    with pytest.raises(ConfigError, match=NOW_VARIABLE):
        FeatureStore(parsed_example_project)


def test_the_cli_refuses_a_bad_pinned_time_with_the_fix(parsed_example_project, monkeypatch) -> None:
    from click.testing import CliRunner

    from feature_layer.cli import main

    monkeypatch.setenv(NOW_VARIABLE, "yesterday")
    result = CliRunner().invoke(main, ["--project-dir", str(parsed_example_project), "online-status"])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit)  # a message, not a crash
    assert "FEATURE_LAYER_NOW='yesterday' is not an ISO-8601" in result.output
    assert "To fix this, set FEATURE_LAYER_NOW" in result.output and "Traceback" not in result.output
