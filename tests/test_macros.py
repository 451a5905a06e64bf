"""The rolling-window macros, compiled by real dbt and run on DuckDB and PostgreSQL.

Every aggregation and window is checked against a brute-force Python reference on
hypothesis-generated events, with ties on the timestamp and events exactly on (and one
microsecond inside) window boundaries. The window contract: for a row at t, the frame is
the rows of the same partition with t - window < ts <= t (all of history for window=None).
"""

from __future__ import annotations

import math
import re
import shutil
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO, clean_project_env, require_postgres
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from feature_layer.dbt.runner import run_dbt
from feature_layer.errors import FeatureLayerError

AGGS = ("count", "sum", "avg", "min", "max")
WINDOWS: dict[str, str | None] = {
    "1s": "1s",
    "90s": "90s",
    "1h": "1h",
    "90m": "90m",
    "1d": "1d",
    "1d12h": "1d12h",
    "1w": "1w",
    "all": None,
}
WINDOW_SECONDS = {"1s": 1, "90s": 90, "1h": 3600, "90m": 5400, "1d": 86400, "1d12h": 129600, "1w": 604800}
BASE = datetime(2025, 3, 1)
US = 1_000_000

HARNESS_MODEL = """
select
    i, k, ts, v,
{%- for window_name, window in windows.items() %}
    {{ feature_layer.rolling_agg('count', '*', partition_by=['k'], order_by='ts', window=window) }} as count_star_{{ window_name }},
  {%- for agg in aggs %}
    {{ feature_layer.rolling_agg(agg, 'v', partition_by='k', order_by='ts', window=window) }} as {{ agg }}_{{ window_name }},
  {%- endfor %}
{%- endfor %}
    {{ feature_layer.rolling_agg('count', '*', partition_by=[], order_by='ts', window='1h', data_type='bigint') }} as count_star_global_1h
from events
"""


def _harness_project(dest: Path) -> Path:
    """A copy of the root project with only the macros and one model that uses them."""
    dest.mkdir(parents=True)
    for name in ("dbt_project.yml", "profiles.yml"):
        shutil.copy2(REPO / name, dest / name)
    shutil.copytree(REPO / "macros", dest / "macros")
    models = dest / "models"
    models.mkdir()
    header = "{%- set windows = " + repr(WINDOWS).replace("None", "none") + " -%}\n"
    header += "{%- set aggs = " + repr(list(AGGS)) + " -%}\n"
    (models / "rolling_harness.sql").write_text(header + HARNESS_MODEL)
    return dest


def _compile(project: Path, target: str) -> str:
    with clean_project_env():
        run_dbt(["compile", "--select", "rolling_harness"], project, target=target, quiet=True)
    return (project / "target" / "compiled" / "feature_layer" / "models" / "rolling_harness.sql").read_text()


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _harness_project(tmp_path_factory.mktemp("macros") / "harness")


@pytest.fixture(scope="module")
def duckdb_sql(harness: Path) -> str:
    return _compile(harness, "duckdb")


@pytest.fixture(scope="module")
def postgres_sql(harness: Path) -> str:
    require_postgres()
    return _compile(harness, "postgres")


# --- reference ---------------------------------------------------------------------------


def reference(events: list[tuple[int, int, int, int | None]]) -> dict[int, dict[str, Any]]:
    """Brute force: for every event, aggregate its partition's events in (t - w, t]."""
    out: dict[int, dict[str, Any]] = {}
    for i, k, t, _ in events:
        row: dict[str, Any] = {}
        for name, window in WINDOWS.items():
            lower = None if window is None else t - WINDOW_SECONDS[name] * US
            frame = [e for e in events if e[1] == k and e[2] <= t and (lower is None or e[2] > lower)]
            values = [e[3] for e in frame if e[3] is not None]
            row[f"count_star_{name}"] = len(frame)
            row[f"count_{name}"] = len(values)
            row[f"sum_{name}"] = sum(values) if values else None
            row[f"avg_{name}"] = sum(values) / len(values) if values else None
            row[f"min_{name}"] = min(values) if values else None
            row[f"max_{name}"] = max(values) if values else None
        row["count_star_global_1h"] = sum(1 for e in events if t - 3600 * US < e[2] <= t)
        out[i] = row
    return out


def assert_matches(rows: list[dict[str, Any]], events: list[tuple[int, int, int, int | None]]) -> None:
    expected = reference(events)
    assert len(rows) == len(events)
    for row in rows:
        want = expected[row["i"]]
        for column, value in want.items():
            got = row[column]
            if isinstance(got, Decimal):
                got = float(got)
            if value is None or got is None:
                assert got == value, (row["i"], column, got, value)
            else:
                assert math.isclose(float(got), float(value), rel_tol=1e-9, abs_tol=1e-9), (
                    row["i"],
                    column,
                    got,
                    value,
                )


# --- events ------------------------------------------------------------------------------

_BOUNDARY_US = sorted(
    {
        edge
        for seconds in (*WINDOW_SECONDS.values(), 60, 7200)
        for edge in (seconds * US - 1, seconds * US, seconds * US + 1, 2 * seconds * US)
    }
    | {0, 1}
)

offsets = st.one_of(
    st.sampled_from(_BOUNDARY_US),
    st.integers(0, 9 * 86_400 * US),
    st.integers(0, 3 * 3600).map(lambda s: s * US),
)
events_strategy = st.lists(
    st.tuples(
        st.integers(1, 3),
        offsets,
        st.one_of(st.none(), st.integers(-1000, 1000), st.integers(-1000, 1000)),
    ),
    min_size=1,
    max_size=25,
).map(lambda items: [(i, k, t, v) for i, (k, t, v) in enumerate(items)])


def _timestamp(offset_us: int) -> datetime:
    return BASE + timedelta(microseconds=offset_us)


def _to_us(value: datetime) -> int:
    return (value - BASE) // timedelta(microseconds=1)


# --- DuckDB ------------------------------------------------------------------------------

HYPOTHESIS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _run_duckdb(sql: str, events: list[tuple[int, int, int, int | None]]) -> list[dict[str, Any]]:
    import duckdb
    import pyarrow as pa

    table = pa.table(
        {
            "i": pa.array([e[0] for e in events], pa.int32()),
            "k": pa.array([e[1] for e in events], pa.int32()),
            "ts": pa.array([_timestamp(e[2]) for e in events], pa.timestamp("us")),
            "v": pa.array([e[3] for e in events], pa.int32()),
        }
    )
    conn = duckdb.connect()
    try:
        conn.register("events_arrow", table)
        conn.execute("create table events as select * from events_arrow")
        return conn.sql(sql).to_arrow_table().to_pylist()
    finally:
        conn.close()


@HYPOTHESIS
@given(events=events_strategy)
def test_rolling_agg_matches_brute_force_on_duckdb(duckdb_sql: str, events: list) -> None:
    assert_matches(_run_duckdb(duckdb_sql, events), events)


# --- PostgreSQL --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pg_cursor(postgres_sql: str):
    import psycopg2

    conn = psycopg2.connect(require_postgres())
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute("create temporary table events (i integer, k integer, ts timestamp, v integer)")
            yield cur
    finally:
        conn.close()


def _run_postgres(cur: Any, sql: str, events: list[tuple[int, int, int, int | None]]) -> list[dict[str, Any]]:
    from psycopg2.extras import execute_values

    cur.execute("truncate events")
    execute_values(cur, "insert into events values %s", [(i, k, _timestamp(t), v) for i, k, t, v in events])
    cur.execute(sql)
    names = [d.name for d in cur.description]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


@HYPOTHESIS
@given(events=events_strategy)
def test_rolling_agg_matches_brute_force_on_postgres(postgres_sql: str, pg_cursor: Any, events: list) -> None:
    assert_matches(_run_postgres(pg_cursor, postgres_sql, events), events)


# --- rendering and validation ------------------------------------------------------------


def test_rolling_agg_renders_a_half_open_range_frame(duckdb_sql: str) -> None:
    compact = re.sub(r"\s+", " ", duckdb_sql)
    assert (
        "SUM(v) OVER (PARTITION BY k ORDER BY ts RANGE BETWEEN "
        "(INTERVAL '1 hours' - INTERVAL '1 microsecond') PRECEDING AND CURRENT ROW) as sum_1h"
    ) in compact
    assert "INTERVAL '36 hours'" in compact  # 1d12h
    assert "INTERVAL '7 days'" in compact  # 1w
    assert "INTERVAL '90 seconds'" in compact
    assert "RANGE BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) as max_all" in compact
    assert "CAST(COUNT(*) OVER (ORDER BY ts RANGE" in compact  # no partition, cast


@pytest.fixture(scope="module")
def parsed_harness(harness: Path, duckdb_sql: str) -> Path:
    return harness  # compiled once: later inline compiles reuse the partial parse


@pytest.mark.parametrize(
    ("call", "named"),
    [
        ("rolling_agg('median', 'v', ['k'], 'ts', '1h')", ['agg="median"', "count, sum, avg, min, max"]),
        ("rolling_agg('sum', 'v', ['k'], 'ts', '24x')", ['window="24x"', "'1h', '24h', '7d'"]),
        ("rolling_agg('sum', 'v', ['k'], 'ts', '0h')", ['window="0h"', "longer than zero"]),
        ("rolling_agg('sum', '*', ['k'], 'ts', '1h')", ["column='*'", "agg='count'"]),
        ("rolling_agg('sum', 'v', {'a': 1}, 'ts', '1h')", ["partition_by=", "list of column names"]),
        ("rolling_agg('sum', 'v', ['k'], '', '1h')", ["order_by=", "event-time column"]),
    ],
)
def test_rolling_agg_rejects_bad_arguments_naming_them(parsed_harness: Path, call: str, named: list[str]) -> None:
    with clean_project_env(), pytest.raises(FeatureLayerError) as caught:
        run_dbt(["compile", "--inline", "select {{ feature_layer." + call + " }}"], parsed_harness, quiet=True)
    message = str(caught.value)
    assert "feature_layer.rolling_agg" in message
    for fragment in named:
        assert fragment in message
    assert "To fix this" in message
