"""Streams whose dbt source is a warehouse table (issue #11 item 3, "for warehouses: a table through
the engine"), on DuckDB and PostgreSQL, against real redis-server processes and real ``dbt build``s.

The example project is copied with ``raw.transactions`` turned into a table of the warehouse (no
external_location): events are appended to it by ``feature_layer.stream.table_log.TableEventLog``.
The reference is independent of the log: the ids in the table after streaming must be the loaded
ids plus the streamed ones (each once), ``dbt build`` over the table must see exactly those, and
every online value streamed must equal ``dbt build`` + full ``materialize`` into a second store.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from tests.conftest import clean_project_env, copy_example_project, data_end, drop_postgres_schemas, require_postgres
from tests.redis_helpers import RedisServer
from tests.stream_helpers import (
    ROWS,
    STREAM_VIEWS,
    StreamProject,
    _same_row,
    payments,
    produce,
    run_consumer,
    wait_until,
)

pytestmark = [pytest.mark.redis, pytest.mark.xdist_group("stream-table")]

CHECK_LIMIT = 1_000_000
"""The source table refuses amounts at or above this (a CHECK constraint): a real failed append."""


@dataclass
class TableProject(StreamProject):
    """A stream project whose ``raw.transactions`` is a warehouse table of ``target``."""

    target: str = "duckdb"
    raw_schema: str = "raw"
    dsn: str = ""

    def write_config(self, stream: str) -> None:
        (self.path / "feature_layer.yml").write_text(yaml.safe_dump({
            "target": self.target,
            "online_store": {"type": "redis", "url": self.online_redis.url},
            "streams": {"raw.transactions": {"url": self.stream_redis.url, "stream": stream, "block_ms": 50,
                                             "batch_size": 300}},
        }))

    def sql(self, query: str) -> list[tuple[Any, ...]]:
        """Rows of ``query`` on the warehouse, on a connection closed right after (never held)."""
        if self.target == "postgres":
            import psycopg2

            con = psycopg2.connect(self.dsn)
            try:
                with con.cursor() as cur:
                    cur.execute(query)
                    return cur.fetchall() if cur.description else []
            finally:
                con.commit()
                con.close()
        import duckdb

        con = duckdb.connect(str(self.path / "target" / "feature_layer.duckdb"))
        try:
            return con.execute(query).fetchall()
        finally:
            con.close()

    def source_ids(self) -> list[int]:
        return [r[0] for r in self.sql(f'select transaction_id from "{self.raw_schema}".transactions')]

    def built_ids(self) -> list[int]:
        schema = "main" if self.target == "duckdb" else self.built_schema
        return [r[0] for r in self.sql(f'select transaction_id from "{schema}".stg_transactions')]

    built_schema: str = "main"

    def build(self) -> None:
        from feature_layer.dbt.runner import run_dbt

        with clean_project_env():
            run_dbt(["build"], self.path, target=self.target, quiet=True)


def _table_sources(project: Path, raw_schema: str) -> None:
    """sources.yml with ``transactions`` a warehouse table (the other raw tables stay files on DuckDB)."""
    path = project / "models" / "example" / "staging" / "sources.yml"
    doc = yaml.safe_load(path.read_text())
    source = doc["sources"][0]
    source["schema"] = raw_schema
    location = source["config"].pop("meta")["external_location"]
    for table in source["tables"]:
        if table["name"] == "transactions":
            table.pop("config", None)
        else:
            table["config"] = {"meta": {"external_location": location}}
    path.write_text(yaml.safe_dump(doc, sort_keys=False))


def _duckdb_table(project: Path) -> None:
    """raw.transactions in the DuckDB warehouse, from the generated file, with a CHECK on amount."""
    import duckdb

    (project / "target").mkdir(exist_ok=True)
    file = project / "data" / "raw" / "transactions.parquet"
    con = duckdb.connect(str(project / "target" / "feature_layer.duckdb"))
    try:
        columns = con.execute(f"DESCRIBE SELECT * FROM read_parquet('{file}')").fetchall()
        ddl = ", ".join(f'"{name}" {kind}' for name, kind, *_ in columns)
        con.execute("CREATE SCHEMA raw")
        con.execute(f"CREATE TABLE raw.transactions ({ddl}, CHECK (amount < {CHECK_LIMIT}))")
        con.execute(f"INSERT INTO raw.transactions SELECT * FROM read_parquet('{file}')")
    finally:
        con.close()


def _build(base: Path, target: str, stream_redis: RedisServer, online_redis: RedisServer) -> TableProject:
    from feature_layer.demo.data import generate_demo_data, load_demo_data_into_postgres

    project = copy_example_project(base / "project")
    generate_demo_data(project / "data" / "raw", rows=ROWS, seed=11)
    raw_schema, dsn, built_schema = "raw", "", "main"
    if target == "postgres":
        dsn = require_postgres()
        built_schema = f"fl_stream_{uuid.uuid4().hex[:10]}"
        raw_schema = f"{built_schema}_raw"
        profiles = project / "profiles.yml"
        profiles.write_text(profiles.read_text().replace("env_var('FEATURE_LAYER_PG_SCHEMA', 'feature_layer')",
                                                         f"'{built_schema}'"))
        _table_sources(project, raw_schema)
        load_demo_data_into_postgres(project / "data" / "raw", dsn, schema=raw_schema)
        import psycopg2

        con = psycopg2.connect(dsn)
        with con, con.cursor() as cur:
            cur.execute(f'ALTER TABLE "{raw_schema}".transactions ADD CHECK (amount < {CHECK_LIMIT})')
        con.close()
    else:
        _table_sources(project, raw_schema)
        _duckdb_table(project)
    built = TableProject(project, stream_redis, online_redis, now=None, data_end=None,  # type: ignore[arg-type]
                         target=target, raw_schema=raw_schema, dsn=dsn, built_schema=built_schema)
    built.write_config("payments")
    built.build()
    end = data_end(project).replace(tzinfo=None)
    built.data_end, built.now = end, (end + timedelta(hours=2)).replace(tzinfo=UTC)
    return built


@pytest.fixture(scope="module", params=["duckdb", "postgres"])
def project(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TableProject]:
    base = tmp_path_factory.mktemp(f"stream-table-{request.param}")
    stream_redis = RedisServer(base / "stream-redis").start()
    online_redis = RedisServer(base / "online-redis").start()
    built: TableProject | None = None
    try:
        built = _build(base, request.param, stream_redis, online_redis)
        with built.store() as store:
            store.materialize(select=list(STREAM_VIEWS))
        yield built
    finally:
        stream_redis.stop()
        online_redis.stop()
        if built is not None and built.target == "postgres":
            drop_postgres_schemas(built.dsn, built.built_schema, built.raw_schema)


def _entity_rows(store: Any, view: str) -> list[dict[str, Any]]:
    from sqlglot import exp

    from feature_layer.sql.names import col, relation_table

    v = store.registry.view(view)
    query = exp.select(*(col(k) for k in v.join_keys)).distinct().from_(relation_table(v)).order_by(
        *(col(k) for k in v.join_keys))
    return store.offline_engine().fetch_arrow(query).to_pylist()


def _assert_stream_equals_batch(project: TableProject, tmp_path: Path) -> dict[str, int]:
    """dbt build over the table, full materialize into a second store, every value compared."""
    project.build()
    counts = {}
    with project.store(online_store={"type": "sqlite", "path": str(tmp_path / "batch.sqlite")}) as batch, \
            project.store() as streamed:
        batch.materialize(select=list(STREAM_VIEWS), full_refresh=True)
        for view in STREAM_VIEWS:
            rows = _entity_rows(batch, view)
            features = [f"{view}.{f}" for f in streamed.registry.view(view).feature_names]
            got = streamed.get_online_features(features, rows, include_event_times=True).to_arrow().to_pylist()
            want = batch.get_online_features(features, rows, include_event_times=True).to_arrow().to_pylist()
            assert any(v is not None for r in want for k, v in r.items() if k not in ("user_id", "merchant_id"))
            differing = [(a, b) for a, b in zip(got, want, strict=True) if not _same_row(a, b)]
            assert not differing, f"{view}: {len(differing)} of {len(rows)} entities differ: {differing[:2]}"
            counts[view] = len(rows)
    return counts


def _log(project: TableProject) -> Any:
    from feature_layer.stream.table_log import TableEventLog, table_event_log

    with project.store() as store:
        source = store.registry.nodes["source.feature_layer.raw.transactions"]
        log = table_event_log(source.relation, store.settings, event_id="transaction_id",
                              source_name="raw.transactions")
    assert isinstance(log, TableEventLog)
    return log


def test_streamed_events_land_in_the_table_and_dbt_build_sees_exactly_them(project: TableProject,
                                                                          tmp_path: Path) -> None:
    project.write_config("payments-table")
    before = project.source_ids()
    events = payments(project, 900, seed=21, first_id=5_000_000_000, spread=timedelta(days=4))
    client = project.stream_redis.client()
    produce(client, "payments-table", events)
    produce(client, "payments-table", events.slice(0, 200))  # a producer retry: redelivered events
    counters = run_consumer(project)
    assert counters.events == 1100 and counters.new == 900 and counters.duplicates == 200
    after = project.source_ids()
    streamed = events.column("transaction_id").to_pylist()
    assert len(after) == len(set(after)), "an event was inserted twice"
    assert sorted(after) == sorted(before + streamed)
    compared = _assert_stream_equals_batch(project, tmp_path)
    assert sorted(project.built_ids()) == sorted(before + streamed)  # dbt build read exactly those
    assert compared["user_transaction_features"] >= 100 and compared["user_merchant_features"] >= 300


def test_redelivery_inserts_nothing_twice(project: TableProject) -> None:
    events = payments(project, 40, seed=22, first_id=5_100_000_000, new_users=0)
    log = _log(project)
    try:
        before = len(project.source_ids())
        assert log.append(events.slice(0, 30), "1-0", "1-29") is not None
        assert log.append(events, "1-0", "1-39") is not None  # 30 again (redelivered) and 10 new
        doubled = pa.concat_tables([events.slice(35), events.slice(35)])
        log.append(doubled, "2-0", "2-9")  # one batch repeating its events (already there, too)
        ids = project.source_ids()
        assert len(ids) == before + 40 and len(ids) == len(set(ids))
        history = log.history(pa.table({"user_id": events.column("user_id").slice(0, 1)}))
        user = events.column("user_id")[0].as_py()
        want = sorted(r[0] for r in project.sql(
            f'select transaction_id from "{project.raw_schema}".transactions where user_id = {user}'))
        assert sorted(history.column("transaction_id").to_pylist()) == want and want
        assert history.schema == log.schema()
    finally:
        log.close()


def test_a_failed_append_leaves_the_table_unchanged(project: TableProject) -> None:
    from feature_layer.errors import StreamError

    events = payments(project, 50, seed=23, first_id=5_200_000_000, new_users=0)
    amounts = events.column("amount").to_pylist()
    amounts[-1] = float(CHECK_LIMIT * 3)  # the last row breaks the table's CHECK: nothing may be inserted
    poisoned = events.set_column(events.schema.get_field_index("amount"), "amount", pa.array(amounts))
    log = _log(project)
    try:
        before = sorted(project.source_ids())
        with pytest.raises(StreamError, match=r"Could not land 50 events .*; the table is unchanged"):
            log.append(poisoned, "3-0", "3-49")
        assert sorted(project.source_ids()) == before
        log.append(events, "3-0", "3-49")  # the retry, once fixed, lands all of them
        assert sorted(project.source_ids()) == sorted(before + events.column("transaction_id").to_pylist())
    finally:
        log.close()


def test_a_failed_append_acknowledges_nothing(project: TableProject) -> None:
    from feature_layer.stream.consumer import open_consumer

    project.write_config("payments-poison")
    events = payments(project, 20, seed=24, first_id=5_300_000_000, new_users=0)
    amounts = events.column("amount").to_pylist()
    amounts[3] = float(CHECK_LIMIT * 2)
    poisoned = events.set_column(events.schema.get_field_index("amount"), "amount", pa.array(amounts))
    client = project.stream_redis.client()
    produce(client, "payments-poison", poisoned)
    before = sorted(project.source_ids())
    with project.store() as store:
        worker = open_consumer(store, list(STREAM_VIEWS), consumer="poison", log_seconds=60)
        runner = threading.Thread(target=worker.run, daemon=True)
        runner.start()
        wait_until(lambda: worker.counters.retries >= 2, 30, poll=0.05)
        worker.stop()
        runner.join(30)
        worker.pipeline.close()
    assert worker.counters.retries >= 2 and worker.counters.batches == 0
    assert client.xpending("payments-poison", "feature_layer")["pending"] == 20
    assert sorted(project.source_ids()) == before


def test_a_seed_or_model_source_is_refused_naming_why(project: TableProject) -> None:
    from feature_layer.errors import StreamError
    from feature_layer.stream.plan import StreamSource
    from feature_layer.stream.table_log import open_event_log

    with project.store() as store:
        node = next(n for n in store.registry.nodes.values() if n.name == "stg_transactions")
        source = StreamSource(name="stg_transactions", unique_id=node.unique_id, node=node)
        with pytest.raises(StreamError, match="is a model: `dbt build` replaces its table"):
            open_event_log(source, store, "transaction_id")


def test_history_of_a_file_source_reads_the_glob(tmp_path: Path) -> None:
    """The file log's history (the same interface), against the files read directly."""
    from feature_layer.stream.landing import FileEventLog

    table = pa.table({"id": pa.array(range(10), pa.int64()), "k": pa.array([i % 3 for i in range(10)], pa.int64())})
    pq.write_table(table.slice(0, 5), tmp_path / "t.parquet")
    log = FileEventLog(tmp_path / "t*.parquet")
    log.append(table.slice(5), "1-0", "1-4")
    got = log.history(pa.table({"k": pa.array([1], pa.int64())}))
    assert sorted(got.column("id").to_pylist()) == [i for i in range(10) if i % 3 == 1]
