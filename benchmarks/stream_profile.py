"""Stream pipeline in-process: where a micro-batch's time goes as the history grows.

    python -m benchmarks.stream_profile [--users 100000] [--batch 5000] [--events 3000000] [--project DIR]

Set-up as ``benchmarks.stream`` (the example project, ~20 demo payments per card holder, ``dbt build``,
both streamed views materialized into a private redis-server), then the consumer's pipeline in this
process is handed typed batches of ``--batch`` payments (existing card holders, event time = a clock
advancing 1 ms per event: the rate the batch sizes stand for) until ``--events`` were processed. Every
``--every`` batches it prints the median seconds per stage and the process's RSS. No Redis Stream here:
this is the computing side only (``benchmarks.stream`` measures end to end).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa

from benchmarks.stream import REPO, rss_mb, setup


def population(store: object) -> tuple[np.ndarray, np.ndarray, int]:
    """The built example's card holders and merchants, and the largest payment id (new ids go above)."""
    engine = store.offline_engine()  # type: ignore[attr-defined]
    users = engine.fetch_arrow("select distinct user_id from main.stg_transactions order by 1").column(0).to_numpy()
    merchants = engine.fetch_arrow("select merchant_id from main.stg_merchants").column(0).to_numpy()
    first_id = int(engine.fetch_arrow("select max(transaction_id) from main.stg_transactions").column(0)[0].as_py())
    return users, merchants, first_id


def payment_batch(rng: np.random.Generator, users: np.ndarray, merchants: np.ndarray, first_id: int,
                  start: datetime, done: int, n: int, schema: pa.Schema, online_share: float = 0.0) -> pa.Table:
    """``n`` payments of existing card holders, ids and event times (1 ms apart) following ``done`` earlier ones."""
    times = [start + timedelta(milliseconds=done + i) for i in range(n)]
    return pa.table({
        "transaction_id": pa.array(np.arange(first_id + 1 + done, first_id + 1 + done + n)),
        "user_id": pa.array(rng.choice(users, n)),
        "merchant_id": pa.array(rng.choice(merchants, n)),
        "amount": pa.array(np.round(rng.gamma(2.0, 30.0, n), 2)),
        "currency": pa.array(["EUR"] * n),
        "is_online": pa.array(rng.random(n) < online_share),
        "occurred_at": pa.array(times, pa.timestamp("us")),
        "created_at": pa.array(times, pa.timestamp("us")),
    }).select(schema.names).cast(schema)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--history", type=int, default=20, help="payments per card holder in the generated history")
    parser.add_argument("--batch", type=int, default=5_000)
    parser.add_argument("--events", type=int, default=3_000_000)
    parser.add_argument("--every", type=int, default=50)
    parser.add_argument("--explain", action="store_true")
    parser.add_argument("--buffer-rows", type=int, default=None)
    args = parser.parse_args()
    import os

    base = Path(tempfile.mkdtemp(prefix="bench-stream-profile-"))
    project, server, _ = setup(base, args.history * args.users, users=args.users)
    sys.path.insert(0, str(REPO))
    from feature_layer.client import FeatureStore
    from feature_layer.stream.consumer import open_consumer
    from tests.conftest import clean_project_env

    with clean_project_env():
        store = FeatureStore(project)
        users, merchants, first_id = population(store)
        start = datetime.now(UTC).replace(tzinfo=None, microsecond=0)  # as the producer of benchmarks.stream
        consumer = open_consumer(store, log_seconds=1e9)
        pipeline = consumer.pipeline
        if args.buffer_rows:
            pipeline.buffer_rows = args.buffer_rows
        schema = pipeline.schema
        rng = np.random.default_rng(7)
        done = 0
        seq = 0
        stages: dict[str, list[float]] = {}
        print(f"pid {os.getpid()} RSS {rss_mb(os.getpid()):.0f} MB after set-up; buffer {pipeline.buffered} rows",
              flush=True)
        while done < args.events:
            n = args.batch
            table = payment_batch(rng, users, merchants, first_id, start, done, n, schema)
            ids = [f"{int(time.time() * 1000)}-{seq}", f"{int(time.time() * 1000)}-{seq + n - 1}"]
            seq += n
            out = pipeline.process(table, ids)
            for k, v in out.seconds.items():
                stages.setdefault(k, []).append(v)
            done += n
            if (done // n) % args.every == 0:
                shown = "  ".join(f"{k} {statistics.median(v) * 1000:.0f}" for k, v in stages.items())
                print(f"{done:>9,} events  buffer {pipeline.buffered:>9,}  RSS {rss_mb(os.getpid()):5.0f} MB  "
                      f"median ms: {shown}", flush=True)
                stages = {}
        if args.explain:
            for sql, in pipeline.con.execute("select sql from duckdb_views() where not internal").fetchall():
                print(sql)
            for name, sql in pipeline._latest.items():
                print(name, sql)
                pipeline.con.execute("PRAGMA enable_profiling='query_tree'")
                print(pipeline.con.execute("EXPLAIN ANALYZE " + sql).fetchall()[0][1])
        pipeline.close()
        store.close()
    server.stop()


if __name__ == "__main__":
    main()
