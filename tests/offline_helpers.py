"""Shared helpers for the training-set tests: a brute-force reference and table loaders.

The reference reads the semantics in docs/training_sets.md literally, one entity row and one
view at a time, with no SQL: it is the oracle every formulation on every engine must match.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import pyarrow as pa

from feature_layer.offline.engine import DuckDBEngine, Engine, PostgresEngine
from feature_layer.registry.model import Feature, FeatureView, Relation

PG = {"host": "127.0.0.1", "port": 5432, "user": "postgres", "dbname": "postgres"}


def duckdb_engine() -> DuckDBEngine:
    return DuckDBEngine(":memory:")


def postgres_engine() -> PostgresEngine:
    return PostgresEngine(**PG)


def load_table(engine: Engine, name: str, table: pa.Table) -> Relation:
    """Put ``table`` in the warehouse as a real relation a FeatureView can point at."""
    if engine.dialect == "duckdb":
        staging = f"__stage_{uuid.uuid4().hex[:8]}"
        engine.register_arrow(staging, table)
        engine.execute(f'CREATE OR REPLACE TABLE main."{name}" AS SELECT * FROM "{staging}"')
        engine.unregister(staging)
        return Relation(None, "main", name)
    if engine.dialect == "spark":
        staging = f"__stage_{uuid.uuid4().hex[:8]}"
        engine.register_arrow(staging, table)
        engine.execute(f"DROP TABLE IF EXISTS fl_test.`{name}`")
        engine.execute(f"CREATE TABLE fl_test.`{name}` USING parquet AS SELECT * FROM `{staging}`")
        engine.unregister(staging)
        return Relation(None, "fl_test", name)
    engine.register_arrow(name, table)  # a session temp table
    return Relation(None, "pg_temp", name)


def make_view(
    name: str,
    relation: Relation,
    *,
    keys: Sequence[str] = ("user_id",),
    features: Sequence[tuple[str, str]] = (("amount", "float64"),),
    event_time: str = "event_ts",
    created_at: str | None = "created_ts",
    ttl: timedelta | None = None,
    key_types: Sequence[str] | None = None,
) -> FeatureView:
    key_types = key_types or ["int64"] * len(keys)
    return FeatureView(
        name=name,
        unique_id=f"model.test.{name}",
        entities=("user",),
        join_keys=tuple(keys),
        event_time=event_time,
        features=tuple(Feature(n, name, t) for n, t in features),
        relation=relation,
        created_at=created_at,
        ttl=ttl,
        column_types=tuple(zip(keys, key_types, strict=True))
        + ((event_time, "timestamp"),)
        + (((created_at, "timestamp"),) if created_at else ())
        + tuple(features),
    )


@dataclass
class ViewData:
    view: FeatureView
    rows: list[dict[str, Any]]
    requested: list[Feature]


def _nulls_lowest(value: Any) -> tuple[bool, Any]:
    return (value is not None, value if value is not None else 0)


def reference_training_set(
    entity_rows: Sequence[dict[str, Any]],
    views: Sequence[ViewData],
    timestamp: str,
    *,
    full_feature_names: bool = False,
) -> list[dict[str, Any]]:
    """The training set computed the slow, obvious way."""
    by_key = []  # rows grouped by join-key values: same answer, fast enough for 10k-row tables
    for data in views:
        index: dict[tuple, list[dict[str, Any]]] = {}
        for feature_row in data.rows:
            index.setdefault(tuple(feature_row[k] for k in data.view.join_keys), []).append(feature_row)
        by_key.append(index)
    out = []
    for entity in entity_rows:
        row = dict(entity)
        ts: datetime | None = entity[timestamp]
        for data, index in zip(views, by_key, strict=True):
            view = data.view
            candidates = []
            for feature_row in index.get(tuple(entity[k] for k in view.join_keys), []):
                event = feature_row[view.event_time]
                if ts is None or event is None:
                    continue
                if any(entity[k] is None or feature_row[k] is None or entity[k] != feature_row[k] for k in view.join_keys):
                    continue
                if event > ts:
                    continue
                if view.ttl is not None and event < ts - view.ttl:
                    continue
                candidates.append(feature_row)

            def order(r: dict[str, Any], view: FeatureView = view) -> tuple:
                created = _nulls_lowest(r[view.created_at]) if view.created_at else (False, 0)
                return (r[view.event_time], created, *(_nulls_lowest(r[f.name]) for f in view.features))

            best = max(candidates, key=order) if candidates else None
            for feature in data.requested:
                name = f"{view.name}__{feature.name}" if full_feature_names else feature.name
                row[name] = best[feature.name] if best is not None else None
        out.append(row)
    return out


def rows_of(table: pa.Table) -> list[dict[str, Any]]:
    return table.to_pylist()
