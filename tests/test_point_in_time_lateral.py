"""PostgreSQL's per-view choice of the ``lateral`` formulation: which indexes qualify, read from the
real catalog, and the training set it gives equal to the brute-force reference."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

import pyarrow as pa
import pytest

from feature_layer.offline.training_set import build_training_set, event_indexes
from feature_layer.registry.model import Relation
from tests.offline_helpers import ViewData, duckdb_engine, make_view, postgres_engine, reference_training_set

pytestmark = pytest.mark.postgres

ROWS = [  # unique per (user_id, region, event_ts)
    {"user_id": 1, "region": "eu", "event_ts": datetime(2025, 1, 1, 10), "amount": 1.0},
    {"user_id": 1, "region": "eu", "event_ts": datetime(2025, 1, 1, 12), "amount": 2.0},
    {"user_id": 1, "region": "us", "event_ts": datetime(2025, 1, 1, 11), "amount": 3.0},
    {"user_id": 2, "region": "eu", "event_ts": datetime(2025, 1, 1, 9), "amount": None},
]
ENTITIES = [
    {"user_id": 1, "region": "eu", "event_timestamp": datetime(2025, 1, 1, 11, 30)},
    {"user_id": 1, "region": "eu", "event_timestamp": datetime(2025, 1, 1, 12)},
    {"user_id": 1, "region": "us", "event_timestamp": datetime(2025, 1, 1, 15)},  # expired (TTL 3 h)
    {"user_id": 2, "region": "eu", "event_timestamp": datetime(2025, 1, 1, 9)},
    {"user_id": 3, "region": "eu", "event_timestamp": datetime(2025, 1, 1, 9)},
]

# (index DDL on the table "t", indexed?, unique?)
CASES = {
    "keys then time": ('CREATE INDEX ON {t} (user_id, region, event_ts)', True, False),
    "keys in another order": ('CREATE INDEX ON {t} (region, user_id, event_ts)', True, False),
    "unique keys and time": ('CREATE UNIQUE INDEX ON {t} (user_id, region, event_ts)', True, True),
    "primary key": ('ALTER TABLE {t} ADD PRIMARY KEY (region, user_id, event_ts)', True, True),
    "unique with a column more": ('CREATE UNIQUE INDEX ON {t} (user_id, region, event_ts, amount)', True, False),
    "time first": ('CREATE INDEX ON {t} (event_ts, user_id, region)', False, False),
    "keys only": ('CREATE INDEX ON {t} (user_id, region)', False, False),
    "partial": ("CREATE INDEX ON {t} (user_id, region, event_ts) WHERE amount > 0", False, False),
    "expression": ("CREATE INDEX ON {t} (user_id, lower(region), event_ts)", False, False),
    "hash": ("CREATE INDEX ON {t} USING hash (user_id)", False, False),
    "none": ("SELECT 1", False, False),
}


@pytest.fixture()
def schema():
    engine = postgres_engine()
    name = f"fl_lateral_{uuid.uuid4().hex[:8]}"
    engine.execute(f'CREATE SCHEMA "{name}"')
    try:
        yield engine, name
    finally:
        try:
            engine.execute(f'DROP SCHEMA "{name}" CASCADE')
        finally:
            engine.close()


def _table(engine, schema: str, name: str) -> Relation:
    engine.register_arrow("__stage", pa.Table.from_pylist(ROWS))
    engine.execute(f'CREATE TABLE "{schema}"."{name}" AS SELECT * FROM "__stage"')
    engine.unregister("__stage")
    return Relation(None, schema, name)


def _view(relation: Relation):
    return make_view("activity", relation, keys=("user_id", "region"), key_types=["int64", "string"],
                     features=(("amount", "float64"),), created_at=None, ttl=timedelta(hours=3))


@pytest.mark.parametrize("case", sorted(CASES))
def test_which_indexes_choose_the_lateral_probe(schema, case: str) -> None:
    engine, db = schema
    ddl, indexed, unique = CASES[case]
    relation = _table(engine, db, "Odd Name")
    engine.execute(ddl.format(t=f'"{db}"."Odd Name"'))
    view = _view(relation)
    found, found_unique = event_indexes(engine, [view])
    assert (view.name in found, view.name in found_unique) == (indexed, unique)
    training = build_training_set(engine, pa.Table.from_pylist(ENTITIES), [(view, list(view.features))])
    try:
        sql = training.sql()
        assert ("LEFT JOIN LATERAL" in sql) == indexed
        if indexed:  # the tie-break sort only where the index allows two rows per (keys, time)
            assert ('"f"."amount" DESC NULLS LAST' in sql) == (not unique)
        got = training.to_arrow().to_pylist()
    finally:
        training.close()
    expected = reference_training_set(ENTITIES, [ViewData(view, ROWS, list(view.features))], "event_timestamp")
    assert got == expected
    assert [r["amount"] for r in got] == [1.0, 2.0, None, None, None]


def test_a_view_a_missing_relation_and_other_engines_get_no_probe(schema) -> None:
    engine, db = schema
    relation = _table(engine, db, "base")
    engine.execute(f'CREATE INDEX ON "{db}"."base" (user_id, region, event_ts)')
    engine.execute(f'CREATE VIEW "{db}"."over_base" AS SELECT * FROM "{db}"."base"')
    over = _view(Relation(None, db, "over_base"))
    missing = _view(Relation(None, f"{db}_absent", "base"))
    assert event_indexes(engine, [over]) == (set(), set())
    assert event_indexes(engine, [missing]) == (set(), set())
    assert event_indexes(engine, [_view(relation)]) == ({"activity"}, set())
    duck = duckdb_engine()
    try:
        assert event_indexes(duck, [_view(relation)]) == (set(), set())  # no LATERAL formulation there
    finally:
        duck.close()


# entity rows as a warehouse table: a plain heap table is read in ctid order (no numbering pass);
# a view, a partitioned table and an inheritance parent keep ROW_NUMBER; every case equals the reference
ENTITY_TABLES = {
    "plain table": ('CREATE TABLE {e} AS SELECT * FROM "__ents"', True),
    "not null time": ('CREATE TABLE {e} (user_id bigint, region text, event_timestamp timestamp NOT NULL);'
                      ' INSERT INTO {e} SELECT * FROM "__ents"', True),
    "view": ('CREATE TABLE {s}."ents_base" AS SELECT * FROM "__ents"; CREATE VIEW {e} AS SELECT * FROM {s}."ents_base"', False),
    "partitioned": ('CREATE TABLE {e} (user_id bigint, region text, event_timestamp timestamp)'
                    ' PARTITION BY RANGE (user_id); CREATE TABLE {s}."ents_p" PARTITION OF {e} FOR VALUES FROM (0) TO (100);'
                    ' INSERT INTO {e} SELECT * FROM "__ents"', False),
    "inheritance parent": ('CREATE TABLE {e} AS SELECT * FROM "__ents"; CREATE TABLE {s}."ents_child" () INHERITS ({e})',
                           False),
}


@pytest.mark.parametrize("case", sorted(ENTITY_TABLES))
def test_entity_tables_are_ordered_by_ctid_only_when_plain(schema, case: str) -> None:
    engine, db = schema
    relation = _table(engine, db, "feat")
    engine.execute(f'CREATE UNIQUE INDEX ON "{db}"."feat" (user_id, region, event_ts)')
    view = _view(relation)
    ddl, plain = ENTITY_TABLES[case]
    engine.register_arrow("__ents", pa.Table.from_pylist(ENTITIES))
    engine.execute(ddl.format(e=f'"{db}"."ents"', s=f'"{db}"'))
    engine.unregister("__ents")
    training = build_training_set(engine, f"{db}.ents", [(view, list(view.features))])
    try:
        sql = training.sql()
        got = training.to_arrow().to_pylist()
    finally:
        training.close()
    assert ('"ctid"' in sql or "ctid" in sql.lower()) == plain
    assert ("ROW_NUMBER()" in sql.upper()) == (not plain)
    expected = reference_training_set(ENTITIES, [ViewData(view, ROWS, list(view.features))], "event_timestamp")
    assert got == expected  # rows in the table's scan order, which for these fresh tables is insertion order
