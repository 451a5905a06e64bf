"""Warehouse engines: Arrow in and out, bounded streaming, UTC sessions, errors with fixes."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pyarrow as pa
import pytest
import sqlglot

from feature_layer.config import WarehouseSettings
from feature_layer.errors import WarehouseError
from feature_layer.offline.engine import DuckDBEngine, PostgresEngine
from feature_layer.offline.engines import connect
from tests.offline_helpers import PG, duckdb_engine, postgres_engine

SAMPLE = pa.table(
    {
        "i": pa.array([1, None, 3], pa.int64()),
        "s": pa.array(["x", "", None]),
        "f": pa.array([1.5, None, -0.0]),
        "b": pa.array([True, None, False]),
        "ts": pa.array([datetime(2025, 1, 1), None, datetime(2025, 3, 1, 1, 2, 3, 456789)], pa.timestamp("us")),
        "tz": pa.array([datetime(2025, 1, 1, 5, tzinfo=UTC), None, None], pa.timestamp("us", tz="UTC")),
        "d": pa.array([date(2025, 1, 2), None, None]),
    }
)


@pytest.fixture(params=["duckdb", pytest.param("postgres", marks=pytest.mark.postgres)])
def engine(request):
    engine = duckdb_engine() if request.param == "duckdb" else postgres_engine()
    yield engine
    engine.close()


def test_registered_arrow_round_trips_with_nulls_and_empty_strings(engine):
    engine.register_arrow("sample", SAMPLE)
    back = engine.fetch_arrow("SELECT * FROM sample")
    assert back.schema.names == SAMPLE.schema.names
    assert back.to_pylist() == SAMPLE.to_pylist()


def test_expressions_are_rendered_in_the_engine_dialect(engine):
    engine.register_arrow("sample", SAMPLE)
    query = sqlglot.parse_one('SELECT "i" FROM "sample" WHERE "i" IS NOT NULL ORDER BY "i"')
    assert engine.fetch_arrow(query).column("i").to_pylist() == [1, 3]
    assert engine.schema_of(query).names == ["i"]


def test_stream_yields_bounded_batches(engine):
    batches = list(engine.stream_arrow("SELECT * FROM generate_series(1, 2500) AS t(n)", batch_size=1000))
    assert sum(b.num_rows for b in batches) == 2500
    assert max(b.num_rows for b in batches) <= 1000
    assert len(batches) >= 3


def test_session_runs_in_utc(engine):
    tz = engine.fetch_arrow("SELECT current_setting('TimeZone') AS tz").column("tz")[0].as_py()
    assert tz == "UTC"


def test_failures_become_warehouse_errors_with_the_sql_and_a_fix(engine):
    with pytest.raises(WarehouseError) as info:
        engine.fetch_arrow("SELECT * FROM no_such_table")
    assert "no_such_table" in str(info.value) and "To fix this, " in str(info.value)
    with pytest.raises(WarehouseError):
        list(engine.stream_arrow("SELECT * FROM no_such_table"))
    with pytest.raises(WarehouseError):
        engine.execute("CREATE TABLE")
    engine.execute("CREATE TEMP TABLE still_usable AS SELECT 1 AS one")  # the session survives a failure
    assert engine.fetch_arrow("SELECT one FROM still_usable").column(0).to_pylist() == [1]


def test_unregister_drops_the_upload(engine):
    engine.register_arrow("gone", SAMPLE)
    engine.unregister("gone")
    with pytest.raises(WarehouseError):
        engine.fetch_arrow("SELECT * FROM gone")
    engine.unregister("gone")  # no error the second time


def test_connect_chooses_the_engine_from_the_target(tmp_path):
    DuckDBEngine(tmp_path / "w.duckdb", read_only=False).close()  # a warehouse file dbt would have built
    duck = connect(WarehouseSettings(type="duckdb", target="dev", path=tmp_path / "w.duckdb", schema="main"))
    assert isinstance(duck, DuckDBEngine) and duck.dialect == "duckdb"
    duck.close()
    memory = connect(WarehouseSettings(type="duckdb", target="dev", path=tmp_path / ":memory:"))
    assert memory.fetch_arrow("SELECT 1 AS x").column("x").to_pylist() == [1]
    memory.close()
    with pytest.raises(WarehouseError, match="uses adapter 'snowflake'"):
        connect(WarehouseSettings(type="snowflake", target="prod"))


@pytest.mark.postgres
def test_connect_postgres_and_unreachable_server_message():
    pg = connect(WarehouseSettings(type="postgres", target="pg", **PG))
    assert isinstance(pg, PostgresEngine) and pg.dialect == "postgres"
    pg.close()
    with pytest.raises(WarehouseError) as info:
        PostgresEngine(host="127.0.0.1", port=1, user="postgres", dbname="postgres")
    assert "Could not connect to PostgreSQL at 127.0.0.1:1" in str(info.value)
    assert "To fix this, check that the server is running" in str(info.value)


def test_postgres_rejects_unloadable_arrow_types():
    from feature_layer.offline.engine import _arrow_to_pg_type

    with pytest.raises(WarehouseError, match="Column 'l' has Arrow type list<item: int64>"):
        _arrow_to_pg_type(pa.field("l", pa.list_(pa.int64())))


def test_pandas_style_columns_load_on_every_engine(engine):
    import pandas as pd

    frame = pd.DataFrame(
        {"city": pd.Categorical(["a", "b", "a"]), "text": pd.array(["x", None, "z"], dtype="string"), "n": [1, 2, 3]}
    )
    engine.register_arrow("frame", pa.Table.from_pandas(frame, preserve_index=False))
    back = engine.fetch_arrow("SELECT city, text, n FROM frame ORDER BY n")
    assert back.to_pylist() == [
        {"city": "a", "text": "x", "n": 1},
        {"city": "b", "text": None, "n": 2},
        {"city": "a", "text": "z", "n": 3},
    ]


def test_a_stream_survives_other_statements_on_the_same_engine(engine):
    stream = engine.stream_arrow("SELECT * FROM generate_series(1, 3000) AS t(n)", batch_size=1000)
    first = next(stream)
    if engine.dialect == "postgres":  # DuckDB has one pending result per connection; PostgreSQL holds the cursor
        assert engine.fetch_arrow("SELECT 1 AS one").column("one").to_pylist() == [1]
    rest = sum(batch.num_rows for batch in stream)
    assert first.num_rows + rest == 3000
