"""Warehouse entity inputs with null timestamps: refused with the exact count by every way of
reading a training set (``to_arrow`` counts them in the rows its query returns, without a scan of
the entity table before it; streamed and warehouse-side outputs count first), and nothing is left
behind (no Parquet file, no table)."""

from __future__ import annotations

import re
import uuid
from datetime import datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pytest

from feature_layer.errors import InputError
from feature_layer.offline.training_set import build_training_set
from tests.offline_helpers import (
    ViewData,
    duckdb_engine,
    load_table,
    make_view,
    postgres_engine,
    reference_training_set,
)

ROWS = [
    {"user_id": 1, "event_ts": datetime(2025, 1, 1, 10), "amount": 1.0},
    {"user_id": 2, "event_ts": datetime(2025, 1, 1, 9), "amount": 2.0},
]
ENTITIES = [
    {"user_id": 1, "event_timestamp": datetime(2025, 1, 1, 11)},
    {"user_id": 2, "event_timestamp": None},
    {"user_id": 1, "event_timestamp": datetime(2025, 1, 2, 11)},
    {"user_id": 2, "event_timestamp": None},
    {"user_id": 3, "event_timestamp": datetime(2025, 1, 1, 11)},
]
MESSAGE = re.escape("2 entity row(s) have a null timestamp in column 'event_timestamp'")

ENGINES = {"duckdb": duckdb_engine, "postgres": postgres_engine}


@pytest.fixture(params=["duckdb", pytest.param("postgres", marks=pytest.mark.postgres)])
def loaded(request):
    engine = ENGINES[request.param]()
    view = make_view("activity", load_table(engine, f"feat_{uuid.uuid4().hex[:6]}", pa.Table.from_pylist(ROWS)),
                     created_at=None, ttl=timedelta(days=1))
    schema = pa.schema([("user_id", pa.int64()), ("event_timestamp", pa.timestamp("us"))])
    entities = load_table(engine, f"ents_{uuid.uuid4().hex[:6]}", pa.Table.from_pylist(ENTITIES, schema=schema))
    try:
        yield engine, view, f"{entities.schema}.{entities.identifier}"
    finally:
        engine.close()


def _training(engine, view, source: str):  # noqa: ANN001, ANN202
    return build_training_set(engine, source, [(view, list(view.features))])


def test_to_arrow_refuses_null_timestamps_with_the_whole_count(loaded) -> None:
    engine, view, source = loaded
    with pytest.raises(InputError, match=MESSAGE) as info:
        _training(engine, view, source).to_arrow()
    assert "drop those rows or fill the timestamps" in info.value.fix


def test_to_batches_refuses_them_before_the_first_batch(loaded) -> None:
    engine, view, source = loaded
    training = _training(engine, view, source)
    with pytest.raises(InputError, match=MESSAGE):  # the whole input's count, whatever the batch size
        next(iter(training.to_batches(batch_size=1)))


def test_to_parquet_leaves_no_file_and_keeps_the_previous_one(loaded, tmp_path: Path) -> None:
    engine, view, source = loaded
    target = tmp_path / "train.parquet"
    target.write_bytes(b"previous")
    with pytest.raises(InputError, match=MESSAGE):
        _training(engine, view, source).to_parquet(target, batch_size=2)
    assert target.read_bytes() == b"previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train.parquet"]


def test_to_table_refuses_before_creating_anything(loaded) -> None:
    engine, view, source = loaded
    name = f"out_{uuid.uuid4().hex[:6]}"
    with pytest.raises(InputError, match=MESSAGE):
        _training(engine, view, source).to_table(name)
    exists = engine.fetch_arrow(
        f"SELECT count(*) AS n FROM information_schema.tables WHERE table_name = '{name}'"
    ).column(0)[0].as_py()
    assert exists == 0


def test_a_query_input_is_checked_the_same_way_and_a_clean_one_passes(loaded) -> None:
    engine, view, source = loaded
    with pytest.raises(InputError, match=MESSAGE):
        _training(engine, view, f"SELECT * FROM {source}").to_arrow()
    clean = f"SELECT * FROM {source} WHERE event_timestamp IS NOT NULL"
    got = _training(engine, view, clean).to_arrow().to_pylist()
    kept = [e for e in ENTITIES if e["event_timestamp"] is not None]
    expected = reference_training_set(kept, [ViewData(view, ROWS, list(view.features))], "event_timestamp")
    assert len(got) == 3
    assert sorted(got, key=repr) == sorted(expected, key=repr)
