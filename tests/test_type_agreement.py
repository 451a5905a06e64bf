"""One type per feature: a training set and an online lookup agree on every logical type.

The fixture dbt project ``tests/fixtures/typed_project`` (built for real with dbt on DuckDB
and on PostgreSQL) has one feature view with a column for every logical type of
``feature_layer.types``, each computed the way analysts write it, so the warehouse's own type
differs from the logical one (DuckDB's ``sum`` of integers is HUGEINT, PostgreSQL's ``sum`` of
bigints NUMERIC, ``integer`` and ``real`` are 32-bit, a naive timestamp is UTC). For the same
entity and time, the training set and the online lookup must return the same Arrow type —
the registry's — and the same value, which is also the hand-computed one below. A registry
read without catalog.json covers ``unknown``. Entity columns come back as they went in.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from feature_layer.client import FeatureStore
from feature_layer.clock import FixedClock
from feature_layer.offline.entity import arrow_logical_type
from feature_layer.types import LOGICAL_TYPES, arrow_type
from tests.conftest import (
    FIXTURES_DIR,
    PG_DATABASE,
    clean_project_env,
    drop_postgres_schemas,
    replace_in_file,
    require_postgres,
)

# one worker builds the module fixture once (split over both, each built it: ~11 s twice)
pytestmark = pytest.mark.xdist_group("type_agreement")
VIEW = "typed_features"
END = datetime(2025, 6, 1, tzinfo=UTC)
"""The pinned "now" (materialization end, online reads) and the as-of time: after every event."""

DTYPES = {
    "flag_count": "int64",  # DuckDB HUGEINT, PostgreSQL bigint
    "flag_count_int": "int64",  # integer (Arrow int32)
    "whole_sum": "int64",  # numeric(20,0)
    "big_sum": "int64",  # DuckDB HUGEINT (PostgreSQL: numeric, so decimal; see _dtypes)
    "amount_total": "decimal",  # DECIMAL(38,2) / numeric
    "quarter": "float64",
    "amount_real": "float64",  # real (Arrow float32)
    "flag_as_float": "float64",  # integer: `dtype: float64` override
    "ever_vip": "bool",
    "label": "string",
    "ref_id": "string",  # uuid
    "last_seen_at": "timestamp",  # naive
    "last_seen_tz": "timestamp",  # timestamptz
    "seen_on": "date",
}
FEATURES = [f"{VIEW}.{name}" for name in DTYPES]


def _dtypes(store: FeatureStore) -> dict[str, str]:
    """The logical type of each feature on ``store``'s engine: PostgreSQL's sum of bigints is a numeric."""
    return {**DTYPES, "big_sum": "decimal"} if store.offline_engine().dialect == "postgres" else DTYPES


def _utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


# The latest row per user, computed by hand from the VALUES in models/typed_features.sql.
EXPECTED = {
    1: {"flag_count": 2, "flag_count_int": 2, "whole_sum": 2, "big_sum": 2, "amount_total": 6.75,
        "quarter": 4.4 / 4, "amount_real": float(np.float32(4.4)), "flag_as_float": 1.0, "ever_vip": True, "label": "beta",
        "ref_id": "1c1f3a7b-2d4e-4f60-9bac-1d2e3f4a5b6c", "last_seen_at": _utc(2025, 3, 2, 11, 30, 0, 250000),
        "last_seen_tz": _utc(2025, 3, 2, 11, 30, 0, 250000), "seen_on": date(2025, 3, 2)},
    2: {"flag_count": 0, "flag_count_int": 1, "whole_sum": 0, "big_sum": 0, "amount_total": 1.15,
        "quarter": 1.15 / 4, "amount_real": float(np.float32(1.15)), "flag_as_float": 0.0, "ever_vip": False, "label": "gamma",
        "ref_id": "2d204b8c-3e5f-4071-acbd-2e3f4a5b6c7d", "last_seen_at": _utc(2025, 3, 1, 9, 15),
        "last_seen_tz": _utc(2025, 3, 1, 9, 15), "seen_on": date(2025, 3, 1)},
    # a row of nulls (count(flag) is 0, the timestamps are the event's)
    3: {**dict.fromkeys(DTYPES), "flag_count_int": 0, "last_seen_at": _utc(2025, 3, 3),
        "last_seen_tz": _utc(2025, 3, 3), "seen_on": date(2025, 3, 3)},
    4: dict.fromkeys(DTYPES),  # no feature row at all
}
USERS = list(EXPECTED)


def _build(project: Path, target: str) -> None:
    from feature_layer.dbt.runner import run_dbt

    with clean_project_env():
        run_dbt(["build"], project, target=target, quiet=True)
        run_dbt(["docs", "generate"], project, target=target, quiet=True)


def _without_catalog(project: Path, dest: Path) -> Path:
    """A copy of the built project whose registry has only the YAML ``data_type``s."""
    copy = Path(shutil.copytree(project, dest))
    (copy / "target" / "catalog.json").unlink()
    return copy


@pytest.fixture(scope="module", params=["duckdb", pytest.param("postgres", marks=pytest.mark.postgres)])
def built(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """(target, project): the fixture project built with dbt on ``target``, with its catalog."""
    target = request.param
    root = tmp_path_factory.mktemp(f"typed_{target}")
    project = Path(shutil.copytree(FIXTURES_DIR / "typed_project", root / "project"))
    schema = None
    if target == "postgres":
        dsn = require_postgres(PG_DATABASE)
        schema = f"fl_types_{uuid.uuid4().hex[:12]}"
        replace_in_file(project / "profiles.yml", "__TYPED_SCHEMA__", schema)
    try:
        _build(project, target)
        yield target, project
    finally:
        if schema is not None:
            drop_postgres_schemas(dsn, schema)


@pytest.fixture(scope="module")
def store(built: tuple[str, Path]) -> Iterator[FeatureStore]:
    target, project = built
    with FeatureStore(project, target=target, clock=FixedClock(END)) as fs:
        fs.materialize(full_refresh=True)
        yield fs


def _entities() -> pa.Table:
    return pa.table({"user_id": pa.array(USERS, pa.int64()),
                     "event_timestamp": pa.array([END] * len(USERS), pa.timestamp("us", tz="UTC"))})


def _online(store: FeatureStore, features: list[str]) -> pa.Table:
    return store.get_online_features(features, [{"user_id": u} for u in USERS]).to_arrow()


def test_the_fixture_covers_every_logical_type(store: FeatureStore) -> None:
    view = store.registry.view(VIEW)
    assert {f.name: f.dtype for f in view.features} == _dtypes(store)
    assert set(DTYPES.values()) == set(LOGICAL_TYPES) - {"unknown"}  # unknown: see the catalog-free test
    for user, values in EXPECTED.items():  # the reference holds values, so no comparison is None == None
        if user in (1, 2):
            assert all(v is not None for v in values.values()), user


def test_training_set_and_online_lookup_return_the_registry_type_and_the_same_values(store: FeatureStore) -> None:
    with store.get_training_set(_entities(), FEATURES) as training:
        offline = training.to_arrow()
    online = _online(store, FEATURES)
    assert offline.column("user_id").to_pylist() == online.column("user_id").to_pylist() == USERS
    for name, dtype in _dtypes(store).items():
        expected_type = arrow_type(dtype)
        assert offline.schema.field(name).type == expected_type, name
        assert online.schema.field(name).type == expected_type, name
        expected = [EXPECTED[u][name] for u in USERS]
        assert offline.column(name).to_pylist() == expected, name
        assert online.column(name).to_pylist() == expected, name


def test_parquet_batches_and_warehouse_tables_carry_the_registry_types(store: FeatureStore, tmp_path: Path) -> None:
    expected = pa.schema([("user_id", pa.int64()), ("event_timestamp", pa.timestamp("us", tz="UTC"))]
                         + [(n, arrow_type(t)) for n, t in _dtypes(store).items()])
    with store.get_training_set(_entities(), FEATURES) as training:
        assert pq.read_schema(training.to_parquet(tmp_path / "set.parquet")) == expected
        assert all(b.schema == expected for b in training.to_batches(batch_size=2))
        table = f"typed_set_{uuid.uuid4().hex[:8]}"
        training.to_table(table)
    engine = store.offline_engine()
    try:
        stored = engine.fetch_arrow(f'SELECT * FROM "{table}" ORDER BY user_id')
    finally:
        engine.execute(f'DROP TABLE IF EXISTS "{table}"')
    for name, dtype in _dtypes(store).items():
        assert stored.schema.field(name).type == arrow_type(dtype), name  # BIGINT, DOUBLE, TIMESTAMPTZ, …
        assert stored.column(name).to_pylist() == [EXPECTED[u][name] for u in USERS], name


def test_without_a_catalog_unknown_features_keep_the_warehouse_type_offline_and_are_text_online(
    built: tuple[str, Path], store: FeatureStore, tmp_path: Path
) -> None:
    target, project = built
    copy = _without_catalog(project, tmp_path / "no_catalog")
    with FeatureStore(copy, target=target, clock=FixedClock(END)) as bare:
        view = bare.registry.view(VIEW)
        dtypes = {f.name: f.dtype for f in view.features}
        assert dtypes["flag_count"] == "int64" and dtypes["label"] == "string"  # YAML data_type
        assert dtypes["flag_as_float"] == "float64"  # dtype override
        unknown = [n for n, t in dtypes.items() if t == "unknown"]
        assert unknown == ["flag_count_int", "whole_sum", "big_sum", "amount_total", "quarter", "amount_real", "ever_vip",
                           "ref_id", "last_seen_at", "last_seen_tz", "seen_on"]
        bare.materialize(full_refresh=True)
        features = [f"{VIEW}.{n}" for n in dtypes]
        with bare.get_training_set(_entities(), features) as training:
            offline = training.to_arrow()
        online = _online(bare, features)
        relation = ".".join(f'"{p}"' for p in view.relation.parts())
        raw = bare.offline_engine().fetch_arrow(f"SELECT * FROM {relation}").schema
    for name, dtype in dtypes.items():
        got = offline.column(name)
        if dtype != "unknown":
            assert got.type == online.schema.field(name).type == arrow_type(dtype), name
            assert got.to_pylist() == online.column(name).to_pylist() == [EXPECTED[u][name] for u in USERS], name
            continue
        # the warehouse's own type, unchanged (PostgreSQL numerics: the precision Arrow infers from the values)
        assert arrow_logical_type(got.type) == arrow_logical_type(raw.field(name).type), name
        if target == "duckdb":
            assert got.type == raw.field(name).type, name
        assert online.schema.field(name).type == pa.string(), name  # the online store keeps text
        assert online.column(name).to_pylist() == got.cast(pa.string()).to_pylist(), name
        assert online.column(name).null_count < len(USERS), name  # values present


def test_statistics_and_histograms_follow_the_logical_type(store: FeatureStore) -> None:
    """Numbers summarised as their logical type: a HUGEINT or NUMERIC column used to give Decimal
    bounds, hence no histogram ("No histogram for this type" in the UI)."""
    from feature_layer.server.stats import compute_statistics, normalize_statistics

    view = store.registry.view(VIEW)
    numeric = {n: t for n, t in _dtypes(store).items() if t in {"int64", "float64", "decimal"}}
    assert set(numeric.values()) == {"int64", "float64", "decimal"}
    for name, dtype in numeric.items():
        kind = int if dtype == "int64" else float
        # what is served: the latest row per user, non-null (the reference: EXPECTED, by hand)
        rows = sum(EXPECTED[u][name] is not None for u in USERS)
        stored = normalize_statistics(store.state.get_statistics(f"{VIEW}.{name}"))  # from materialize
        assert stored is not None, name
        assert type(stored["min"]) is kind and type(stored["max"]) is kind and stored["min"] < stored["max"], name
        assert sum(b["count"] for b in stored["histogram"]) == rows, name
        on_demand = compute_statistics(store.offline_engine(), view, view.feature(name))  # the server's
        assert on_demand["histogram"] and sum(b["count"] for b in on_demand["histogram"]) == rows, name


# ----------------------------------------------------------------------------- entity columns


def test_in_memory_entity_columns_come_back_with_their_input_types(store: FeatureStore, tmp_path: Path) -> None:
    new_york = pd.to_datetime([END, END, END, END]).tz_convert("America/New_York")
    frame = pd.DataFrame({
        "user_id": USERS,
        "event_timestamp": new_york,  # tz-aware, nanoseconds
        "label_small": pd.array([1, 2, 3, 4], dtype="int8"),
        "weight": pd.array([0.5, 1.5, 2.5, 3.5], dtype="float32"),
        "group": pd.Categorical(["a", "b", "a", "b"]),
        "noted_at": pd.to_datetime(["2025-01-01 00:00:00.123456789"] * 4),  # naive, nanoseconds
        "day": [date(2025, 1, d) for d in (1, 2, 3, 4)],
    })
    given = pa.Table.from_pandas(frame, preserve_index=False)
    with store.get_training_set(frame, [f"{VIEW}.flag_count"]) as training:
        outputs = [training.to_arrow(), pa.Table.from_batches(list(training.to_batches(batch_size=3)))]
        parquet = pq.read_table(training.to_parquet(tmp_path / "entities.parquet"))
    for result in [*outputs, parquet]:
        assert result.select(given.column_names).to_pylist() == given.to_pylist()
        assert result.column("flag_count").to_pylist() == [EXPECTED[u]["flag_count"] for u in USERS]
        assert result.schema.field("event_timestamp").type == pa.timestamp("us", tz="America/New_York")
    for result in outputs:  # the exact Arrow types (time zone, unit, dictionary); Parquet has its own
        assert [result.schema.field(n).type for n in given.column_names] == [f.type for f in given.schema]
    back = outputs[0].to_pandas()
    assert str(back["event_timestamp"].dt.tz) == "America/New_York"
    assert (back["event_timestamp"] == new_york).all()


def test_warehouse_entity_columns_come_back_with_the_warehouse_types(store: FeatureStore) -> None:
    engine = store.offline_engine()
    table = f"typed_entities_{uuid.uuid4().hex[:8]}"
    engine.execute(f'CREATE TABLE "{table}" AS SELECT CAST(user_id AS BIGINT) AS user_id, '
                   f"updated_at AT TIME ZONE 'UTC' AS as_of, CAST(user_id AS INTEGER) AS small "
                   f'FROM "{VIEW}" WHERE user_id = 1')
    try:
        with store.get_training_set(table, [f"{VIEW}.flag_count"], timestamp_column="as_of") as training:
            result = training.to_arrow()
        source = engine.fetch_arrow(f'SELECT * FROM "{table}"')
    finally:
        engine.execute(f'DROP TABLE IF EXISTS "{table}"')
    assert result.schema.field("as_of").type == pa.timestamp("us", tz="UTC")  # timestamptz stays tz-aware
    assert result.select(source.column_names).schema == source.schema
    assert sorted(result.column("as_of").to_pylist()) == sorted(source.column("as_of").to_pylist())
    assert result.num_rows == 2 and all(v is not None for v in result.column("flag_count").to_pylist())


def test_the_printed_training_set_sql_casts_to_the_logical_types(store: FeatureStore) -> None:
    """``feature-layer sql training-set`` prints what the Python training set runs, casts included."""
    import subprocess
    import sys

    engine = store.offline_engine()
    table = f"typed_asof_{uuid.uuid4().hex[:8]}"
    engine.execute(f"CREATE TABLE \"{table}\" AS SELECT CAST(2 AS BIGINT) AS user_id, "
                   f"TIMESTAMP '2025-06-01 00:00:00' AS event_timestamp")
    try:
        # its own process, as users run it (an in-process CLI would keep the DuckDB file open)
        done = subprocess.run(
            [sys.executable, "-c", "from feature_layer.cli import main; main()", "--project-dir",
             str(store.project_dir), "--target", engine.dialect, "sql", "training-set", "--entity-table", table,
             "--features", ",".join(FEATURES)],
            capture_output=True, text=True, timeout=120,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        result = engine.fetch_arrow(done.stdout.strip().rstrip(";"))
    finally:
        engine.execute(f'DROP TABLE IF EXISTS "{table}"')
    for name, dtype in _dtypes(store).items():
        target = arrow_type(dtype)
        got = result.schema.field(name).type
        assert got == target or (pa.types.is_timestamp(target) and got.tz is not None), name  # TIMESTAMPTZ
        assert result.column(name).to_pylist() == [EXPECTED[2][name]], name


@pytest.mark.parametrize(("sql_type", "logical"), [
    ("HUGEINT", "int64"), ("integer", "int64"), ("UBIGINT", "int64"), ("bigint unsigned", "int64"),
    ("numeric(38,0)", "int64"), ("NUMBER(38, 0)", "int64"), ("decimal(10)", "int64"),
    ("numeric", "decimal"), ("DECIMAL(38,2)", "decimal"), ("double precision", "float64"), ("real", "float64"),
    ("boolean", "bool"), ("character varying(8)", "string"), ("UUID", "string"), ("text", "string"),
    ("timestamp without time zone", "timestamp"), ("TIMESTAMP(3) WITH TIME ZONE", "timestamp"),
    ("TIMESTAMP_NS", "timestamp"), ("timestamptz", "timestamp"), ("DATE", "date"),
    # once read as int64 or timestamp by a prefix match: not types a feature can be served as
    ("INTERVAL", "unknown"), ("integer[]", "unknown"), ("TIMESTAMP WITH TIME ZONE[]", "unknown"),
    ("STRUCT(a INTEGER)", "unknown"), ("array<int>", "unknown"), ("int4range", "unknown"), ("JSON", "unknown"),
    ("USER-DEFINED", "unknown"), ("time", "unknown"), ("", "unknown"), (None, "unknown"),
])
def test_warehouse_type_names_map_to_logical_types(sql_type: str | None, logical: str) -> None:
    from feature_layer.types import logical_type

    assert logical_type(sql_type) == logical
