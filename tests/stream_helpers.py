"""The stream tests' project: the example built for real, payments generated and produced, the
batch reference (dbt build + materialize into a second store) and the value-by-value comparison."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from tests.conftest import clean_project_env, copy_example_project, data_end
from tests.redis_helpers import RedisServer

STREAM_VIEWS = ("user_transaction_features", "user_merchant_features")
ROWS = 3000


@dataclass
class StreamProject:
    """The example project (built), its stream Redis, its online Redis, the pinned "now"."""

    path: Path
    stream_redis: RedisServer
    online_redis: RedisServer
    now: datetime
    data_end: datetime

    def write_config(self, stream: str) -> None:
        (self.path / "feature_layer.yml").write_text(yaml.safe_dump({
            "online_store": {"type": "redis", "url": self.online_redis.url},
            "streams": {"raw.transactions": {"url": self.stream_redis.url, "stream": stream, "block_ms": 50,
                                             "batch_size": 400}},
        }))

    def store(self, **kwargs: Any) -> Any:
        from feature_layer.client import FeatureStore
        from feature_layer.clock import FixedClock

        return FeatureStore(self.path, clock=FixedClock(self.now), **kwargs)

    def env(self) -> dict[str, str]:
        import os

        from feature_layer.clock import NOW_VARIABLE

        env = {k: v for k, v in os.environ.items() if not k.startswith("FEATURE_LAYER_")}
        env[NOW_VARIABLE] = self.now.isoformat()
        return env

    def stream_command(self, *args: str) -> list[str]:
        return [str(Path(sys.executable).parent / "feature-layer"), "--project-dir", str(self.path), "stream", *args]


def build_stream_project(dest: Path, stream_redis: RedisServer, online_redis: RedisServer) -> StreamProject:
    from feature_layer.dbt.runner import run_dbt
    from feature_layer.demo.data import generate_demo_data

    project = copy_example_project(dest)
    generate_demo_data(project / "data" / "raw", rows=ROWS, seed=11)
    with clean_project_env():
        run_dbt(["build"], project, target="duckdb", quiet=True)
    end = data_end(project).replace(tzinfo=None)
    now = end + timedelta(hours=2)
    from datetime import UTC

    return StreamProject(project, stream_redis, online_redis, now.replace(tzinfo=UTC), end)


def payments(project: StreamProject, n: int, *, seed: int, first_id: int, spread: timedelta = timedelta(days=3),
             new_users: int = 5) -> pa.Table:
    """``n`` payments of existing card holders (and a few new ones) at existing merchants, with event
    times in the ``spread`` before "now" (so older than rows already built: out of order too)."""
    rng = np.random.default_rng(seed)
    raw = project.path / "data" / "raw"
    users = pq.read_table(raw / "users.parquet", columns=["user_id"]).column(0).to_numpy()
    merchants = pq.read_table(raw / "merchants.parquet", columns=["merchant_id"]).column(0).to_numpy()
    pool = np.concatenate([users[: max(20, len(users) // 4)], np.arange(new_users) + 10_000_000 + seed * 1000])
    user = rng.choice(pool, n)
    merchant = rng.choice(merchants[:30], n)
    now = project.now.replace(tzinfo=None)
    offsets = rng.integers(1, int(spread.total_seconds() * 1e6), n)
    occurred = np.datetime64(now, "us") - offsets.astype("timedelta64[us]")
    created = occurred + rng.integers(0, 60_000_000, n).astype("timedelta64[us]")
    created = np.minimum(created, np.datetime64(now, "us"))
    return pa.table({
        "transaction_id": pa.array(np.arange(n, dtype=np.int64) + first_id),
        "user_id": pa.array(user.astype(np.int64)),
        "merchant_id": pa.array(merchant.astype(np.int64)),
        "amount": pa.array(np.round(rng.gamma(2.0, 30.0, n), 2)),
        "currency": pa.array(rng.choice(["EUR", "USD", "GBP"], n)),
        "is_online": pa.array(rng.random(n) < 0.3),
        "occurred_at": pa.array(occurred, pa.timestamp("us")),
        "created_at": pa.array(created, pa.timestamp("us")),
    })


def produce(client: Any, stream: str, table: pa.Table, *, chunk: int = 500) -> list[bytes]:
    """XADD each row as one entry (text fields, as a producer would); returns the entry ids."""
    from feature_layer.stream.events import event_text

    ids: list[bytes] = []
    rows = table.to_pylist()
    for start in range(0, len(rows), chunk):
        pipe = client.pipeline(transaction=False)
        for row in rows[start : start + chunk]:
            pipe.xadd(stream, {k: event_text(v) for k, v in row.items() if v is not None})
        ids += pipe.execute()
    return ids


def entity_rows(project: StreamProject, view: str) -> list[dict[str, Any]]:
    """Every entity of ``view`` in the (rebuilt) warehouse."""
    from feature_layer.offline.engine import DuckDBEngine

    keys = {"user_transaction_features": ["user_id"], "user_merchant_features": ["user_id", "merchant_id"]}[view]
    with DuckDBEngine(project.path / "target" / "feature_layer.duckdb", read_only=True) as engine:
        table = engine.fetch_arrow(f"select distinct {', '.join(keys)} from main.{view} order by all")
    return table.to_pylist()


def rebuild(project: StreamProject) -> None:
    """dbt build over the raw files plus every landed event file."""
    from feature_layer.dbt.runner import run_dbt

    with clean_project_env():
        run_dbt(["build"], project.path, target="duckdb", quiet=True)


def batch_reference(project: StreamProject, tmp: Path) -> Any:
    """A second store filled by `dbt build` + full materialize over the landed events."""
    rebuild(project)
    store = project.store(online_store={"type": "sqlite", "path": str(tmp / f"batch-{id(tmp)}.sqlite")})
    store.materialize(select=list(STREAM_VIEWS), full_refresh=True)
    return store


FLOAT_TOLERANCE = 1e-12
"""Relative: a window SUM/AVG over doubles adds in an order that depends on how DuckDB lays out the
partitions it sorts together (other entities' rows), so batch vs batch over different data sets, and
stream vs batch, can differ in the last bit. Everything else (integers, booleans, text, event times)
must be equal exactly."""


def _same_row(a: dict[str, Any], b: dict[str, Any]) -> bool:
    if a.keys() != b.keys():
        return False
    for key, x in a.items():
        y = b[key]
        if isinstance(x, float) and isinstance(y, float):
            if not (x == y or abs(x - y) <= FLOAT_TOLERANCE * max(abs(x), abs(y))):
                return False
        elif x != y or type(x) is not type(y):
            return False
    return True


def compare(stream_store: Any, batch_store: Any, project: StreamProject) -> dict[str, int]:
    """Every online value of both streamed views, stream vs batch; AssertionError naming the first
    differing entities. Returns how many entities were compared per view."""
    counts = {}
    for view in STREAM_VIEWS:
        rows = entity_rows(project, view)
        assert rows, f"{view} has no entities"
        features = [f"{view}.{f}" for f in stream_store.registry.view(view).feature_names]
        got = stream_store.get_online_features(features, rows, include_event_times=True).to_arrow()
        want = batch_store.get_online_features(features, rows, include_event_times=True).to_arrow()
        assert got.column_names == want.column_names
        differing = [i for i, (a, b) in enumerate(zip(got.to_pylist(), want.to_pylist(), strict=True))
                     if not _same_row(a, b)]
        present = sum(1 for r in want.to_pylist() if any(v is not None for k, v in r.items() if k not in
                                                          ("user_id", "merchant_id")))
        assert present > 0, f"the batch store serves no value of {view}: the comparison would prove nothing"
        if differing:
            shown = [(got.slice(i, 1).to_pylist()[0], want.slice(i, 1).to_pylist()[0]) for i in differing[:3]]
            raise AssertionError(f"{view}: {len(differing)} of {len(rows)} entities differ (stream, batch): {shown}")
        counts[view] = len(rows)
    return counts


def wait_until(condition: Callable[[], bool], timeout: float, poll: float = 0.002) -> bool:
    """Poll ``condition`` until it holds or ``timeout`` seconds pass; whether it held."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            return False
        time.sleep(poll)
    return True


def run_consumer(project: StreamProject, *, until_idle: float = 1.0) -> Any:
    """The consumer, in this process, until the stream is idle; returns its counters."""
    from feature_layer.stream.consumer import open_consumer

    with project.store() as store:
        worker = open_consumer(store, list(STREAM_VIEWS), consumer="test", log_seconds=60)
        try:
            return worker.run(until_idle=until_idle)
        finally:
            worker.pipeline.close()


def consumer_process(project: StreamProject, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(project.stream_command("--consumer", "test", "--log-seconds", "0.2", *args),
                            env=project.env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
