"""Pushed values in training sets (issue #11 item 5): the view's offline push log is read beside
its warehouse relation, on DuckDB, PostgreSQL and the generic dbt-adapter path.

The push log is written by the real push code (``validate_rows`` then the log writer of
``feature_layer.stream.push``); the reference is the brute-force training set over the union of
the warehouse rows and the pushed rows.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pytest

from feature_layer.errors import InputError
from feature_layer.offline.training_set import build_training_set
from feature_layer.stream.push import _append_log, validate_rows
from tests.offline_helpers import (
    ViewData,
    duckdb_engine,
    load_table,
    make_view,
    postgres_engine,
    reference_training_set,
)

T0 = datetime(2026, 3, 1)
CLOCK = datetime(2026, 3, 10)  # when the pushes are logged (file names only)


def _warehouse_rows(rng: random.Random) -> list[dict]:
    return [{"user_id": rng.randint(1, 30), "event_ts": T0 + timedelta(minutes=rng.randint(0, 5000)),
             "created_ts": None, "amount": round(rng.uniform(0, 100), 2)} for _ in range(400)]


def _pushed_rows(rng: random.Random) -> list[dict]:
    # some entities only pushed (31-35), some pushed after their warehouse rows, some before
    return [{"user_id": rng.randint(1, 35), "event_ts": T0 + timedelta(minutes=rng.randint(0, 6000)),
             "created_ts": None, "amount": round(rng.uniform(100, 200), 2)} for _ in range(60)]


def _entities(rng: random.Random) -> list[dict]:
    return [{"user_id": rng.randint(1, 36), "event_timestamp": T0 + timedelta(minutes=rng.randint(-10, 6500))}
            for _ in range(300)]


@pytest.fixture(params=["duckdb", "postgres", "generic-duckdb", "duckdb-no-temp-tables"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[object]:
    if request.param == "postgres":
        from tests.conftest import require_postgres

        require_postgres("postgres")
        made = postgres_engine()
    elif request.param == "generic-duckdb":  # the generic dbt-adapter path, forced on a DuckDB file
        from feature_layer.config import WarehouseSettings
        from feature_layer.offline.engine import DuckDBEngine
        from feature_layer.offline.generic import GenericEngine

        path = tmp_path / "generic.duckdb"
        DuckDBEngine(path, read_only=False).close()
        made = GenericEngine.from_settings(WarehouseSettings(type="duckdb", target="dev", path=path, engine="generic",
                                                             profile={"type": "duckdb", "path": str(path)}))
    else:
        made = duckdb_engine()
        if request.param == "duckdb-no-temp-tables":  # the push log inlined as VALUES, like the entity rows
            import dataclasses

            from feature_layer.offline.kinds import capabilities_of

            made.capabilities = dataclasses.replace(capabilities_of(made), temp_tables=False)  # type: ignore[attr-defined]
    try:
        yield made
    finally:
        made.close()


def _log(folder: Path, view, rows: list[dict]) -> None:
    for start in range(0, len(rows), 25):  # several pushes → several files
        chunk = [{**r, "event_ts": r["event_ts"].isoformat() + "Z"} for r in rows[start:start + 25]]
        chunk = [{k: v for k, v in r.items() if k != "created_ts"} for r in chunk]
        _append_log(folder / view.name, validate_rows(view, chunk), CLOCK)


def test_training_sets_read_pushed_rows_beside_the_warehouse(engine, tmp_path: Path) -> None:
    rng = random.Random(11)
    stored, pushed, entities = _warehouse_rows(rng), _pushed_rows(rng), _entities(rng)
    table = pa.Table.from_pylist(stored, schema=pa.schema([("user_id", pa.int64()), ("event_ts", pa.timestamp("us")),
                                                          ("created_ts", pa.timestamp("us")),
                                                          ("amount", pa.float64())]))
    relation = load_table(engine, "pushed_view_rows", table)
    view = make_view("pushed_view", relation, created_at=None, ttl=timedelta(days=2))
    _log(tmp_path / "push", view, pushed)
    spine = pa.Table.from_pylist(entities)
    with build_training_set(engine, spine, [(view, list(view.features))], push_log=tmp_path / "push") as ts:
        got = ts.to_arrow().to_pylist()
        assert "__fl_pushed_" not in ts.sql("duckdb" if engine.dialect != "duckdb" else "postgres")
        from feature_layer.offline.entity import staged_in_temp_tables

        assert ("VALUES" in ts.sql()) != staged_in_temp_tables(engine)  # inlined exactly where no temp tables
    union = [{k: v for k, v in r.items() if k != "created_ts"} for r in stored + pushed]
    expected = reference_training_set(entities, [ViewData(view, union, list(view.features))], "event_timestamp")
    assert got == expected
    from_push = sum(1 for g in got if g["amount"] is not None and g["amount"] >= 100)
    assert from_push >= 20  # the pushed values do reach the training set (not only the warehouse's)
    with build_training_set(engine, spine, [(view, list(view.features))], push_log=None) as ts:
        without = ts.to_arrow().to_pylist()
    assert without == reference_training_set(entities, [ViewData(view, [{k: v for k, v in r.items()
                                                                          if k != "created_ts"} for r in stored],
                                                                 list(view.features))], "event_timestamp")
    assert without != got


def test_a_damaged_push_file_is_named_with_the_fix(tmp_path: Path) -> None:
    engine = duckdb_engine()
    try:
        table = pa.table({"user_id": pa.array([1], pa.int64()), "event_ts": pa.array([T0], pa.timestamp("us")),
                          "amount": pa.array([1.0])})
        view = make_view("damaged_view", load_table(engine, "damaged_view_rows", table), created_at=None)
        folder = tmp_path / "push" / view.name
        folder.mkdir(parents=True)
        (folder / "push-20260310T000000000000-deadbeef.parquet").write_bytes(b"not parquet")
        spine = pa.table({"user_id": [1], "event_timestamp": pa.array([T0], pa.timestamp("us"))})
        with pytest.raises(InputError) as caught:
            build_training_set(engine, spine, [(view, list(view.features))], push_log=tmp_path / "push")
        assert "push-20260310T000000000000-deadbeef.parquet" in str(caught.value)
        assert "move the damaged file" in caught.value.fix
    finally:
        engine.close()


def test_store_push_then_training_set_sees_the_pushed_value(built_example_project: Path, fixture_now: datetime,
                                                            tmp_path: Path) -> None:
    import shutil

    from feature_layer.client import FeatureStore
    from feature_layer.clock import FixedClock
    from tests.conftest import clean_project_env

    project = tmp_path / "project"
    shutil.copytree(built_example_project, project, ignore=shutil.ignore_patterns(".feature_layer", "logs"))
    with clean_project_env():
        store = FeatureStore(project, online_store=f"sqlite:///{tmp_path / 'online.db'}",
                             clock=FixedClock(fixture_now))
    with store:
        labels = store.offline_engine().fetch_arrow(
            "SELECT user_id FROM main.user_profile_features ORDER BY user_id LIMIT 1")
        user = labels.column("user_id")[0].as_py()
        pushed_at = fixture_now - timedelta(hours=1)
        row = {"user_id": user, "signup_at": pushed_at.isoformat(), "signed_up_at": pushed_at.isoformat(),
               "country": "XX", "is_verified": True, "birth_year": 1901, "age_at_signup": 99}
        assert store.push("user_profile_features", [row]).written == 1
        spine = pa.table({"user_id": [user, user],
                          "event_timestamp": pa.array([pushed_at - timedelta(seconds=1), pushed_at],
                                                      pa.timestamp("us"))})
        got = store.get_training_set(spine, ["user_profile_features.country",
                                             "user_profile_features.birth_year"]).to_arrow().to_pylist()
        online = store.get_online_features(["user_profile_features.country"], [{"user_id": user}]).to_dict()
    assert got[1]["country"] == "XX" and got[1]["birth_year"] == 1901  # the pushed row, at its event time
    assert got[0]["country"] != "XX"  # a second earlier: the warehouse's value
    assert online["country"] == ["XX"]
