# ruff: noqa: F811  (pytest fixtures imported from tests.redis_helpers are used as arguments)
"""get_online_features: input shapes, typed columnar output, TTL, naming, one round trip."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from feature_layer.errors import InputError, UnknownFeatureError
from feature_layer.offline.engine import DuckDBEngine
from feature_layer.online.encoding import to_micros
from feature_layer.online.lookup import get_online_features
from feature_layer.online.materialize import materialize
from feature_layer.online.redis_store import RedisOnlineStore
from feature_layer.online.sqlite_store import SqliteOnlineStore
from feature_layer.registry.model import Feature, FeatureService, FeatureView, Relation
from feature_layer.state import StateStore
from tests.redis_helpers import RedisServer, make_parts, private_redis, redis_server  # noqa: F401

NOW = datetime(2025, 3, 1, tzinfo=UTC)


def views() -> list[FeatureView]:
    users = FeatureView(
        name="users",
        unique_id="model.p.users",
        entities=("user",),
        join_keys=("user_id",),
        event_time="ts",
        features=(
            Feature("score", "users", "float64"),
            Feature("n", "users", "int64"),
            Feature("vip", "users", "bool"),
            Feature("name", "users", "string"),
            Feature("seen", "users", "timestamp"),
            Feature("born", "users", "date"),
        ),
        relation=Relation(None, "main", "users"),
        ttl=timedelta(days=30),
        column_types=(("user_id", "int64"),),
    )
    pairs = FeatureView(
        name="pairs",
        unique_id="model.p.pairs",
        entities=("user", "merchant"),
        join_keys=("user_id", "merchant"),
        event_time="ts",
        features=(Feature("n", "pairs", "int64"),),
        relation=Relation(None, "main", "pairs"),
        column_types=(("user_id", "int64"), ("merchant", "string")),
    )
    hidden = FeatureView(
        name="hidden",
        unique_id="model.p.hidden",
        entities=("user",),
        join_keys=("user_id",),
        event_time="ts",
        features=(Feature("h", "hidden", "float64"),),
        relation=Relation(None, "main", "users"),
        online=False,
        column_types=(("user_id", "int64"),),
    )
    return [users, pairs, hidden]


@pytest.fixture(params=["redis", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path):  # noqa: ANN201
    engine = DuckDBEngine(":memory:")
    engine.execute("""CREATE TABLE main.users AS SELECT * FROM (VALUES
        (1, TIMESTAMP '2025-02-27', 0.5, 10, true, 'ann', TIMESTAMP '2024-01-02 03:04:05', DATE '1990-05-06', 1.0),
        (2, TIMESTAMP '2025-01-01', 1.5, 20, false, 'bob', NULL, NULL, 2.0),
        (3, TIMESTAMP '2025-02-28', NULL, NULL, NULL, NULL, NULL, NULL, 3.0)
    ) t(user_id, ts, score, n, vip, name, seen, born, h)""")
    engine.execute("""CREATE TABLE main.pairs AS SELECT * FROM (VALUES
        (1, 'm|1', TIMESTAMP '2025-02-01', 7), (1, 'm2', TIMESTAMP '2025-02-01', 8)) t(user_id, merchant, ts, n)""")
    if request.param == "redis":
        online = RedisOnlineStore(request.getfixturevalue("redis_server").client(), f"t{uuid.uuid4().hex[:8]}")
    else:
        online = SqliteOnlineStore(tmp_path / "o.sqlite", "p")
    online.clock = lambda: to_micros(NOW)
    services = [FeatureService(name="fraud", unique_id="exposure.p.fraud", features=("users.score", "pairs.n"))]
    s = make_parts(engine, online, StateStore(tmp_path / "s.sqlite"), views(), services)
    materialize(s, end=NOW)
    yield s
    engine.close()


def test_values_are_typed_and_missing_or_expired_ones_are_none(store) -> None:  # noqa: ANN001
    got = get_online_features(
        store, features=["users.*"], entity_rows=[{"user_id": u} for u in (1, 2, 3, 4)], include_event_times=True
    ).to_dict()
    assert got["user_id"] == [1, 2, 3, 4]
    assert got["score"] == [0.5, None, None, None]  # user 2 is older than the 30-day TTL
    assert got["n"] == [10, None, None, None]
    assert got["vip"] == [True, None, None, None]
    assert got["name"] == ["ann", None, None, None]
    assert got["seen"] == [datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC), None, None, None]
    assert got["born"] == [date(1990, 5, 6), None, None, None]
    assert got["score__event_time"] == [
        datetime(2025, 2, 27, tzinfo=UTC),
        None,
        datetime(2025, 2, 28, tzinfo=UTC),
        None,
    ]


def test_arrow_and_pandas_outputs_keep_types(store) -> None:  # noqa: ANN001
    rows = [{"user_id": u} for u in range(1, 200)]
    resp = get_online_features(
        store, features=["users.score", "users.n", "users.vip", "users.seen", "users.born"], entity_rows=rows
    )
    table = resp.to_arrow()
    assert table.schema.field("score").type == pa.float64()
    assert table.schema.field("n").type == pa.int64()
    assert table.schema.field("vip").type == pa.bool_()
    assert table.schema.field("seen").type == pa.timestamp("us", tz="UTC")
    assert table.schema.field("born").type == pa.date32()
    assert table.column("n").to_pylist()[:3] == [10, None, None]
    frame = resp.to_pandas()
    assert list(frame.columns) == ["user_id", "score", "n", "vip", "seen", "born"] and len(frame) == 199
    assert resp.to_dict() == {k: v for k, v in table.to_pydict().items()}


@pytest.mark.parametrize("shape", ["dicts", "columns", "numpy", "arrow", "pandas"])
def test_every_entity_row_shape_gives_the_same_answer(store, shape: str) -> None:  # noqa: ANN001
    users = [3, 1, 99, 1]
    rows = {
        "dicts": [{"user_id": u} for u in users],
        "columns": {"user_id": users},
        "numpy": {"user_id": np.array(users)},
        "arrow": pa.table({"user_id": users}),
        "pandas": pd.DataFrame({"user_id": users}),
    }[shape]
    got = get_online_features(store, features=["users.name", "users.n"], entity_rows=rows).to_dict()
    assert got["name"] == [None, "ann", None, "ann"] and got["n"] == [None, 10, None, 10]


def test_composite_keys_and_services(store) -> None:  # noqa: ANN001
    rows = [{"user_id": 1, "merchant": "m|1"}, {"user_id": 1, "merchant": "m2"}, {"user_id": 2, "merchant": "m2"}]
    got = get_online_features(store, service="fraud", entity_rows=rows).to_dict()
    assert got == {"user_id": [1, 1, 2], "merchant": ["m|1", "m2", "m2"], "score": [0.5, 0.5, None], "n": [7, 8, None]}


def test_a_name_requested_from_two_views_is_qualified(store) -> None:  # noqa: ANN001
    rows = [{"user_id": 1, "merchant": "m2"}]
    got = get_online_features(store, features=["users.n", "pairs.n"], entity_rows=rows).to_dict()
    assert got["users__n"] == [10] and got["pairs__n"] == [8]


def test_many_views_and_entities_are_one_round_trip(
    private_redis: RedisServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch  # noqa: F811
) -> None:
    from feature_layer.online import layouts

    monkeypatch.setattr(layouts, "REFRESH_SECONDS", 600.0)  # the active layouts, read once, stay trusted
    engine = DuckDBEngine(":memory:")
    engine.execute(
        "CREATE TABLE main.users AS SELECT range AS user_id, TIMESTAMP '2025-02-27' AS ts, 1.0 AS score, "
        "1 AS n, true AS vip, 'x' AS name, NULL::TIMESTAMP AS seen, NULL::DATE AS born FROM range(3000)"
    )
    engine.execute(
        "CREATE TABLE main.pairs AS SELECT range AS user_id, 'm' AS merchant, TIMESTAMP '2025-02-01' AS ts, "
        "2 AS n FROM range(3000)"
    )
    online = RedisOnlineStore(private_redis.client(), "p")
    online.clock = lambda: to_micros(NOW)
    s = make_parts(engine, online, StateStore(tmp_path / "s.sqlite"), views()[:2])
    materialize(s, end=NOW)
    admin = private_redis.client()
    rows = {"user_id": list(range(3000)), "merchant": ["m"] * 3000}
    get_online_features(s, features=["users.score", "pairs.n", "users.name"], entity_rows=rows)
    admin.config_resetstat()  # the plan has read the views' active layouts (one MGET, once a second)
    got = get_online_features(s, features=["users.score", "pairs.n", "users.name"], entity_rows=rows).to_dict()
    assert got["score"] == [1.0] * 3000 and got["n"] == [2] * 3000
    stats = admin.info("commandstats")
    assert stats["cmdstat_mget"]["calls"] == 1 and "cmdstat_get" not in stats and "cmdstat_evalsha" not in stats


def test_bad_requests_fail_with_the_fix(store) -> None:  # noqa: ANN001
    with pytest.raises(InputError, match="no column 'user_id'"):
        get_online_features(store, features=["users.n"], entity_rows={"uid": [1]})
    with pytest.raises(InputError, match="has no join key 'merchant'"):
        get_online_features(store, features=["pairs.n"], entity_rows=[{"user_id": 1}])
    with pytest.raises(InputError, match="null join key"):
        get_online_features(store, features=["users.n"], entity_rows=pa.table({"user_id": pa.array([1, None])}))
    with pytest.raises(InputError, match="online: false"):
        get_online_features(store, features=["hidden.h"], entity_rows=[{"user_id": 1}])
    with pytest.raises(UnknownFeatureError):
        get_online_features(store, features=["users.nope"], entity_rows=[{"user_id": 1}])
    with pytest.raises(InputError, match="either features or a service"):
        get_online_features(store, features=["users.n"], service="fraud", entity_rows=[{"user_id": 1}])
    with pytest.raises(InputError, match="No entity rows"):
        get_online_features(store, features=["users.n"])


@pytest.mark.parametrize(
    ("features", "rows", "words"),
    [
        (["users.n"], [{"user_id": 1.5}], "expected an integer, got 1.5"),
        (["users.n"], [{"user_id": "1"}], "expected an integer, got '1'"),
        (["users.n"], [{"user_id": True}], "expected an integer, got True"),
        (["users.n"], {"user_id": ["1"]}, "expected an integer, got '1'"),
        (["users.n"], pa.table({"user_id": ["1"]}), "is int64, but the entity rows give string"),
        (["users.n"], pa.table({"user_id": [1.0]}), "is int64, but the entity rows give double"),
        (["pairs.n"], [{"user_id": 1, "merchant": 7}], "expected a string, got 7"),
    ],
)
def test_a_key_of_the_wrong_type_is_an_error_never_another_entity(store, features, rows, words) -> None:  # noqa: ANN001
    with pytest.raises(InputError, match=words) as raised:
        get_online_features(store, features=features, entity_rows=rows)
    assert "To fix this" in str(raised.value)


def test_integral_floats_and_narrow_ints_are_accepted_as_integer_keys(store) -> None:  # noqa: ANN001
    as_int = get_online_features(store, features=["users.n"], entity_rows=[{"user_id": 1}]).to_dict()["n"]
    assert as_int == [10]  # a value that is there: the comparisons below never pass on None == None
    assert get_online_features(store, features=["users.n"], entity_rows=[{"user_id": 1.0}]).to_dict()["n"] == as_int
    narrow = pa.table({"user_id": pa.array([1], pa.int32())})
    assert get_online_features(store, features=["users.n"], entity_rows=narrow).to_dict()["n"] == as_int


def test_empty_entity_rows_give_an_empty_response(store) -> None:  # noqa: ANN001
    assert get_online_features(store, features=["users.n"], entity_rows=[]).to_dict() == {"user_id": [], "n": []}
