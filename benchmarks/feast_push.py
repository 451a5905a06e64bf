"""Feast 0.67 ``push`` of precomputed rows into its Redis online store (run by benchmarks/stream.py).

Runs under a Python that has ``feast[redis]==0.67.0`` (the ``bench-feast`` extra, best in its own
venv: Feast pins its own pandas/pyarrow/protobuf) and does not import feature_layer. It pushes
rows of 11 feature columns (the shape of user_transaction_features) for ``--entities`` card holders,
1,000 rows per call, for ``--seconds``, and prints one line: rows/s and the per-call p50/p99.
Feast computes nothing here: the values are handed to it ready-made.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

FEATURES = ["amount", "txn_count_1h", "txn_count_24h", "txn_count_7d", "amount_sum_24h", "amount_avg_7d",
            "amount_max_30d", "online_txn_count_24h", "amount_to_avg_30d", "seconds_since_previous_txn", "is_online"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--redis", required=True, help="redis://host:port/db")
    parser.add_argument("--entities", type=int, default=2500)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--batch", type=int, default=1000)
    args = parser.parse_args()
    from feast import Entity, FeatureStore, FeatureView, Field, FileSource, PushSource
    from feast.data_source import PushMode
    from feast.types import Bool, Float64, Int64

    hostport, _, db = args.redis.removeprefix("redis://").partition("/")
    repo = Path(tempfile.mkdtemp(prefix="feast-push-"))
    (repo / "feature_store.yaml").write_text(
        "project: bench\n"
        f"registry: {repo / 'registry.db'}\n"
        "provider: local\n"
        f"online_store:\n  type: redis\n  connection_string: \"{hostport},db={db or 0}\"\n"
        "offline_store:\n  type: file\n"
        "entity_key_serialization_version: 3\n"
    )
    now = datetime.now(UTC)
    rng = np.random.default_rng(1)

    def frame(n: int) -> pd.DataFrame:
        data = {"user_id": rng.integers(1, args.entities + 1, n), "occurred_at": [now] * n}
        for name in FEATURES:
            if name.startswith("txn_count") or name.startswith("online_txn"):
                data[name] = rng.integers(0, 50, n)
            elif name == "is_online":
                data[name] = rng.random(n) < 0.3
            else:
                data[name] = rng.random(n) * 100
        return pd.DataFrame(data)

    frame(10).to_parquet(repo / "batch.parquet")
    user = Entity(name="user", join_keys=["user_id"])
    push = PushSource(name="payments_push", batch_source=FileSource(path=str(repo / "batch.parquet"),
                                                                     timestamp_field="occurred_at"))
    schema = [Field(name=n, dtype=Int64 if "count" in n else Bool if n == "is_online" else Float64) for n in FEATURES]
    view = FeatureView(name="user_transaction_features", entities=[user], schema=schema, source=push, online=True,
                       ttl=timedelta(days=30))
    store = FeatureStore(repo_path=str(repo))
    store.apply([user, push, view])
    store.push("payments_push", frame(args.batch), to=PushMode.ONLINE)  # warm-up
    calls: list[float] = []
    rows = 0
    start = time.perf_counter()
    while time.perf_counter() - start < args.seconds:
        df = frame(args.batch)
        t = time.perf_counter()
        store.push("payments_push", df, to=PushMode.ONLINE)
        calls.append((time.perf_counter() - t) * 1000)
        rows += len(df)
    took = time.perf_counter() - start
    print(f"{rows / took:,.0f} rows/s ({args.batch:,} rows per push call, {len(calls)} calls; per call p50 "
          f"{np.percentile(calls, 50):,.0f} ms, p99 {np.percentile(calls, 99):,.0f} ms)")


if __name__ == "__main__":
    main()
