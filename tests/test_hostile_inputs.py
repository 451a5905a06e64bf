"""Hostile entity inputs and output targets: each is handled correctly or refused with an InputError.

The cases come from an adversarial run (issue 9) where each one raised a raw traceback:
dictionary-encoded Arrow keys, duplicate pandas column names, mixed-type object columns,
``to_table`` with a quote in the name and ``to_parquet`` to a path that cannot be written.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute  # noqa: F401 - pa.compute in the polars test
import pytest
from conftest import clean_project_env

from feature_layer.client import FeatureStore
from feature_layer.errors import InputError

FEATURE = "user_profile_features.country"
AS_OF = datetime(2100, 1, 1)


@pytest.fixture(scope="module")
def store(built_example_project: Path, tmp_path_factory: pytest.TempPathFactory):
    online = tmp_path_factory.mktemp("hostile") / "online.sqlite"
    with clean_project_env():
        store = FeatureStore(built_example_project, target="duckdb", online_store=f"sqlite:///{online}")
        store.materialize(["user_profile_features"], full_refresh=True)
        yield store
        store.close()


@pytest.fixture(scope="module")
def user_ids(store: FeatureStore) -> list[int]:
    rows = store.get_training_set(
        pa.table({"user_id": pa.array(list(range(1, 40)), pa.int64()), "event_timestamp": [AS_OF] * 39}), [FEATURE]
    ).to_arrow()
    ids = [r["user_id"] for r in rows.to_pylist() if r["country"] is not None][:5]
    assert len(ids) == 5, "the example project should have users 1..39 with a country"
    return ids


def test_dictionary_encoded_keys_give_the_same_training_rows_as_plain_keys(store, user_ids) -> None:
    plain = pa.table({"user_id": pa.array(user_ids, pa.int64()), "event_timestamp": [AS_OF] * len(user_ids)})
    encoded = plain.set_column(0, "user_id", plain.column("user_id").dictionary_encode())
    expected = store.get_training_set(plain, [FEATURE]).to_arrow().column("country").to_pylist()
    got = store.get_training_set(encoded, [FEATURE]).to_arrow().column("country").to_pylist()
    assert all(v is not None for v in expected)
    assert got == expected


def test_dictionary_encoded_and_categorical_keys_look_up_the_same_online_values(store, user_ids) -> None:
    expected = store.get_online_features([FEATURE], [{"user_id": u} for u in user_ids]).to_dict()["country"]
    assert all(v is not None for v in expected)
    encoded = pa.table({"user_id": pa.array(user_ids, pa.int64()).dictionary_encode()})
    assert store.get_online_features([FEATURE], encoded).to_dict()["country"] == expected
    chunked = pa.concat_tables([encoded.slice(0, 2), encoded.slice(2)])
    assert store.get_online_features([FEATURE], chunked).to_dict()["country"] == expected
    categorical = pd.DataFrame({"user_id": pd.Categorical(user_ids)})
    assert store.get_online_features([FEATURE], categorical).to_dict()["country"] == expected


def test_duplicate_pandas_column_names_are_refused(store) -> None:
    frame = pd.DataFrame([[1, AS_OF, 2]], columns=["user_id", "event_timestamp", "user_id"])
    with pytest.raises(InputError, match="[Dd]uplicate|more than once"):
        store.get_training_set(frame, [FEATURE])
    with pytest.raises(InputError, match="user_id more than once"):
        store.get_online_features([FEATURE], pd.DataFrame([[1, 2]], columns=["user_id", "user_id"]))


def test_mixed_object_columns_are_refused_naming_the_column(store) -> None:
    mixed = pd.DataFrame({"user_id": [1, "a"], "event_timestamp": [AS_OF, AS_OF]})
    with pytest.raises(InputError, match="user_id") as raised:
        store.get_training_set(mixed, [FEATURE])
    assert "To fix this" in str(raised.value)
    with pytest.raises(InputError, match="user_id"):
        store.get_online_features([FEATURE], pd.DataFrame({"user_id": [1, "a"]}))


@pytest.mark.parametrize("name", ['a"b', "a'b", "", "   ", '"unclosed', "a(1)", "read_csv('x')", "t -- c"])
def test_to_table_with_an_unusable_name_is_an_input_error(store, name: str) -> None:
    entity = pa.table({"user_id": [1], "event_timestamp": [AS_OF]})
    with pytest.raises(InputError, match="table name"):
        store.get_training_set(entity, [FEATURE]).to_table(name)


@pytest.mark.parametrize(("name", "quoted"), [('"hostile ""quoted"" name"', '"hostile ""quoted"" name"'),
                                              ("a b; drop table x", '"a b; drop table x"')])
def test_to_table_with_quotes_or_spaces_creates_exactly_that_table(store, name: str, quoted: str) -> None:
    entity = pa.table({"user_id": [1], "event_timestamp": [AS_OF]})
    store.get_training_set(entity, [FEATURE]).to_table(name, replace=True)
    rows = store.offline_engine().fetch_arrow(f"SELECT * FROM {quoted}")
    assert rows.num_rows == 1 and rows.column_names == ["user_id", "event_timestamp", "country"]


def test_to_parquet_to_a_path_that_cannot_be_written_is_an_input_error(store, tmp_path: Path) -> None:
    training = store.get_training_set(pa.table({"user_id": [1], "event_timestamp": [AS_OF]}), [FEATURE])
    with pytest.raises(InputError, match="does not exist"):
        training.to_parquet(tmp_path / "missing" / "x.parquet")
    with pytest.raises(InputError, match="is a folder"):
        training.to_parquet(tmp_path)
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(InputError, match="does not exist"):
        training.to_parquet(tmp_path / "file" / "x.parquet")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]  # no temporary file left


def test_to_polars_keeps_fixed_offset_entity_timestamps_as_the_same_instants(store) -> None:
    import datetime as dt

    when = pa.array([dt.datetime(2030, 1, 1, 12)], pa.timestamp("us", tz="+05:30"))
    entity = pa.table({"user_id": [1], "event_timestamp": when, "seen_at": when})
    frame = store.get_training_set(entity, [FEATURE]).to_polars()  # polars knows no "+05:30" zone
    assert str(frame.schema["seen_at"]) == "Datetime(time_unit='us', time_zone='UTC')"
    assert frame["seen_at"].dt.epoch("us").to_list() == [pa.compute.cast(when, pa.int64())[0].as_py()]
