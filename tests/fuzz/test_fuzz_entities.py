"""Fuzzing the entity inputs: pandas / pyarrow / polars frames, Parquet files, warehouse queries,
lists of dicts and dicts of columns, into ``get_training_set`` and ``get_online_features``.

Columns have generated names (join keys, timestamps, reserved and hostile names, duplicates)
and types (every Arrow integer, float, string, binary, bool, null, timestamp unit and zone,
date, decimal, dictionary, list and struct), with nulls, NaN, infinities and extremes.
Oracle: rows come back (and convert to every output format), or an InputError / a
FeatureLayerError says what to fix.
"""

from __future__ import annotations

import datetime as dt
import decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from conftest import clean_project_env
from hypothesis import given
from hypothesis import strategies as st

from feature_layer.client import FeatureStore
from tests.fuzz.fuzz_harness import check, examples, fuzz_project
from tests.fuzz.strategies import NASTY_TEXT, SCALARS, mostly

NAMES = ["user_id", "merchant_id", "event_timestamp", "occurred_at", "label", "__fl_row", "User_Id", "country"]
COLUMN_NAMES = mostly(st.sampled_from(NAMES), NASTY_TEXT, 5)
ZONES = [None, "UTC", "Europe/Paris", "+05:30", "America/St_Johns"]
T0 = dt.datetime(2020, 1, 1)


def _timestamps(unit: str) -> st.SearchStrategy[Any]:
    bounds = {"s": (dt.datetime(1, 1, 1), dt.datetime(9999, 12, 31)),
              "ns": (dt.datetime(1678, 1, 1), dt.datetime(2262, 4, 1))}.get(unit, (dt.datetime(1, 1, 1),
                                                                                    dt.datetime(9999, 12, 31)))
    return st.one_of(st.datetimes(*bounds), st.datetimes(dt.datetime(2020, 1, 1), dt.datetime(2030, 1, 1)))


KINDS: dict[str, tuple[pa.DataType, st.SearchStrategy[Any]]] = {
    "int64": (pa.int64(), st.integers(-(2**63), 2**63 - 1)),
    "small_int64": (pa.int64(), st.integers(0, 60)),
    "int32": (pa.int32(), st.integers(-(2**31), 2**31 - 1)),
    "int8": (pa.int8(), st.integers(-128, 127)),
    "uint64": (pa.uint64(), st.integers(0, 2**64 - 1)),
    "float64": (pa.float64(), st.floats(allow_nan=True, allow_infinity=True)),
    "float32": (pa.float32(), st.floats(width=32)),
    "string": (pa.string(), st.one_of(NASTY_TEXT, st.text(max_size=6))),
    "large_string": (pa.large_string(), st.text(max_size=4)),
    "binary": (pa.binary(), st.binary(max_size=4)),
    "bool": (pa.bool_(), st.booleans()),
    "null": (pa.null(), st.none()),
    "date32": (pa.date32(), st.dates()),
    "decimal": (pa.decimal128(12, 2), st.decimals(min_value=-10**9, max_value=10**9, places=2, allow_nan=False)),
    "list": (pa.list_(pa.int64()), st.lists(st.integers(0, 9), max_size=2)),
    "struct": (pa.struct([("a", pa.int64())]), st.fixed_dictionaries({"a": st.integers(0, 9)})),
}
for _unit in ("s", "ms", "us", "ns"):
    for _zone in ZONES:
        KINDS[f"ts_{_unit}_{_zone}"] = (pa.timestamp(_unit, tz=_zone), _timestamps(_unit))
KIND_NAMES = sorted(KINDS)
CONTAINERS = ["arrow", "batch", "pandas", "polars", "polars_lazy", "parquet", "rows", "columns", "pandas_objects",
              "chunked"]


@st.composite
def entity_tables(draw: Any) -> tuple[pa.Table, list[Any]]:
    """An Arrow table of generated columns (duplicates allowed) and a pandas object-column variant."""
    rows = draw(st.integers(0, 4))
    plausible = [("user_id", "small_int64"), ("merchant_id", "small_int64"), ("event_timestamp", "ts_us_None")]
    columns = draw(mostly(
        st.just(plausible).flatmap(
            lambda base: st.lists(st.tuples(COLUMN_NAMES, st.sampled_from(KIND_NAMES)), max_size=2).map(
                lambda extra: base + extra)),
        st.one_of(
            st.lists(st.sampled_from(plausible), min_size=1, max_size=3, unique=True).flatmap(
                lambda base: st.lists(st.tuples(COLUMN_NAMES, st.sampled_from(KIND_NAMES)), max_size=2).map(
                    lambda extra: base + extra)),
            st.lists(st.tuples(COLUMN_NAMES, st.sampled_from(KIND_NAMES)), max_size=5),
        ),
        1,
    ))
    arrays, names, objects = [], [], []
    for name, kind in columns:
        arrow_type, values = KINDS[kind]
        data = draw(st.lists(mostly(values, st.none(), 7), min_size=rows, max_size=rows))
        if draw(st.integers(0, 9)) == 0:
            array = pa.array(data, type=arrow_type).dictionary_encode() if kind not in ("list", "struct") else \
                pa.array(data, type=arrow_type)
        else:
            array = pa.array(data, type=arrow_type)
        arrays.append(array)
        names.append(name)
        objects.append(draw(st.lists(st.one_of(SCALARS, st.just(T0), st.just(decimal.Decimal("1.5"))),
                                     min_size=rows, max_size=rows)))
    return pa.Table.from_arrays(arrays, names=names), objects


def _container(table: pa.Table, objects: list[Any], kind: str, folder: Path) -> Any:
    """The entity input in the form ``kind``; None when that library cannot hold these columns
    (a limit of the conversion, not of feature_layer)."""
    try:
        if kind == "arrow":
            return table
        if kind == "batch":
            return table.combine_chunks().to_batches()[0] if table.num_rows else pa.RecordBatch.from_pylist(
                [], schema=table.schema)
        if kind == "chunked":
            return pa.concat_tables([table.slice(0, 1), table.slice(1)])
        if kind == "pandas":
            return table.to_pandas()
        if kind == "pandas_objects":
            import pandas as pd

            return pd.DataFrame(dict(enumerate(objects))).set_axis(table.column_names, axis=1) if objects else None
        if kind in ("polars", "polars_lazy"):
            import polars as pl

            frame = pl.from_arrow(table)
            return frame.lazy() if kind == "polars_lazy" else frame
        if kind == "parquet":
            import pyarrow.parquet as pq

            path = folder / "entities.parquet"
            pq.write_table(table, path)
            return path
        if kind == "rows":
            return table.to_pylist()
        if kind == "columns":
            return table.to_pydict()
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException:  # noqa: BLE001 - pandas/polars/parquet refuse (polars: panic) some Arrow types
        return None
    raise AssertionError(kind)


REFS = [
    "user_profile_features.country", "user_profile_features.*", "user_transaction_features.amount_sum_24h",
    "merchant_risk_features.category", "user_merchant_features.txn_count_30d", "user_merchant_features.*",
    "nope.x", "user_profile_features.nope", "", "*", "user_profile_features", ".country",
]
FEATURES = mostly(st.lists(st.sampled_from(REFS[:6]), min_size=1, max_size=3),
                  st.one_of(st.lists(st.sampled_from(REFS), max_size=3), st.sampled_from(REFS), st.none()), 4)


@pytest.fixture(scope="module")
def store(built_example_project: Path, tmp_path_factory: pytest.TempPathFactory):
    project = fuzz_project(built_example_project, tmp_path_factory)
    with clean_project_env():
        store = FeatureStore(project, target="duckdb")
        yield store
        store.close()


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz_entities")


SQL_ENTITIES = st.sampled_from([
    "select 1 as user_id, timestamp '2021-01-01' as event_timestamp",
    "select user_id, occurred_at from main.fraud_training_labels limit 3",
    "select user_id, merchant_id, occurred_at as event_timestamp from main.fraud_training_labels limit 2",
    "main.fraud_training_labels", "fraud_training_labels", "no_such_table", "select", "select * from",
    "(select 1 as user_id)", "with x as (select 1) select * from x", "main.", '"', "values (1)",
])


@given(
    data=entity_tables(), container=st.sampled_from(CONTAINERS), features=FEATURES,
    timestamp_column=mostly(st.none(), COLUMN_NAMES, 4), sql=mostly(st.none(), SQL_ENTITIES, 6),
    output=st.sampled_from(["arrow", "pandas", "polars", "sql", "batches", "parquet", "table"]),
    full_feature_names=st.booleans(),
)
@examples(sample=40, full=1500)
def test_training_sets_from_any_entity_input(store, folder, data, container, features, timestamp_column, sql,
                                             output, full_feature_names) -> None:
    table, objects = data
    entity = sql if sql is not None else _container(table, objects, container, folder)
    if entity is None:
        entity = table

    def action() -> None:
        training = store.get_training_set(entity, features, timestamp_column=timestamp_column,
                                          full_feature_names=full_feature_names)
        try:
            if output == "arrow":
                training.to_arrow()
            elif output == "pandas":
                training.to_pandas()
            elif output == "polars":
                training.to_polars()
            elif output == "sql":
                training.sql("postgres")
            elif output == "batches":
                list(training.to_batches(2))
            elif output == "parquet":
                training.to_parquet(folder / "out.parquet")
            else:
                training.to_table("fuzz_training_set", replace=True)
        finally:
            training.close()

    check("entity frames", action, lambda: f"{container}: {table!r} objects={objects!r} sql={sql!r} "
                                           f"features={features!r} ts={timestamp_column!r} output={output}")


@given(
    data=entity_tables(), container=st.sampled_from(CONTAINERS), features=FEATURES,
    event_times=st.booleans(), output=st.sampled_from(["dict", "rows", "arrow", "pandas"]),
)
@examples(sample=40, full=1500)
def test_online_lookups_from_any_entity_rows(store, folder, data, container, features, event_times, output) -> None:
    table, objects = data
    rows = _container(table, objects, container, folder)

    def action() -> None:
        response = store.get_online_features(features, rows, include_event_times=event_times)
        {"dict": response.to_dict, "rows": response.to_rows, "arrow": response.to_arrow,
         "pandas": response.to_pandas}[output]()

    check("entity frames", action, lambda: f"{container}: {table!r} objects={objects!r} features={features!r} "
                                           f"event_times={event_times} output={output}")
