"""The demo's stream part: a few hundred payments through ``feature-layer stream``'s pipeline.

A private ``redis-server`` (a free port, no persistence, under target/) carries the events; the
consumer runs in a thread over the project's online store; the producer writes payments of many
cards, and for one card prints its online ``txn_count_1h`` / ``amount_sum_24h`` before and after
each of its payments with the time from XADD to the new value being readable online.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np

from feature_layer.config import StreamConnection
from feature_layer.errors import StreamError

STREAM_VIEWS = ("user_transaction_features", "user_merchant_features")
WATCHED = ("txn_count_1h", "amount_sum_24h")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _service_env() -> dict[str, str]:
    """This process's environment without preloaded libraries: the redis-server is a separate
    service, and a hook preloaded into Python (libfaketime, as `make test-year-ahead` uses) breaks it."""
    return {k: v for k, v in os.environ.items() if k != "LD_PRELOAD" and not k.startswith("FAKETIME")}


def start_redis(folder: Path) -> tuple[subprocess.Popen[bytes], str]:
    """A private redis-server for the demo's stream (killed by the caller)."""
    binary = shutil.which("redis-server") or ("/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists() else None)
    if binary is None:
        raise StreamError("The demo's stream part needs redis-server.",
                          fix="install it (`sudo apt-get install redis-server` or `make system-deps`), or run "
                          "`feature-layer demo --no-stream`.")
    import redis

    folder.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    process = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                                "--dir", str(folder), "--protected-mode", "no"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_service_env())
    url = f"redis://127.0.0.1:{port}/0"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            if redis.Redis.from_url(url, socket_timeout=1).ping():
                return process, url
        except redis.RedisError:
            time.sleep(0.02)
    process.kill()
    raise StreamError(f"redis-server did not start on port {port}.", fix="check that redis-server runs here.")


def _fmt(value: Any) -> str:
    return f"{value:.2f}" if isinstance(value, float) else str(value)


def run_stream_demo(store: Any, echo: Callable[[str], None], *, events: int = 300, seconds: float = 3.0) -> dict[str, Any]:
    """Stream ``events`` payments over about ``seconds``; returns the watched card's latencies (ms)."""
    import redis

    from feature_layer.client import FeatureStore
    from feature_layer.stream.consumer import StreamConsumer
    from feature_layer.stream.events import event_text
    from feature_layer.stream.landing import FileEventLog
    from feature_layer.stream.pipeline import StreamPipeline
    from feature_layer.stream.plan import plan_stream

    registry = store.registry
    plans = []
    for name in STREAM_VIEWS:
        plan, issues = plan_stream(registry, registry.view(name), registry.dialect)
        if plan is None:
            raise StreamError(f"{name} cannot stream: {issues[0].message}", fix=issues[0].fix)
        plans.append(plan)
    process, url = start_redis(store.project_dir / "target" / "stream-demo-redis")
    consumer_store = FeatureStore(store.project_dir, target=store.settings.target, clock=store.clock)
    try:
        connection = StreamConnection(source=plans[0].source.name, url=url, stream="payments",
                                      dead_letter="payments:dead-letter", batch_size=500, block_ms=20)
        pipeline = StreamPipeline(plans, FileEventLog(plans[0].source.location, store.project_dir),
                                  consumer_store.online_store())
        from feature_layer.clock import epoch_us_source

        worker = StreamConsumer(connection, pipeline, clock_us=epoch_us_source(store.clock), log_seconds=3600)
        worker.ensure_group()
        thread = threading.Thread(target=worker.run, name="demo-stream", daemon=True)
        thread.start()
        engine = store.offline_engine()
        card = engine.fetch_arrow("select user_id, merchant_id, occurred_at from main.stg_transactions "
                                  "order by occurred_at desc limit 1").to_pylist()[0]
        users = engine.fetch_arrow("select distinct user_id from main.user_transaction_features").column(0).to_numpy()
        merchants = engine.fetch_arrow("select merchant_id from main.stg_merchants").column(0).to_numpy()
        max_id = engine.fetch_arrow("select max(transaction_id) from main.stg_transactions").column(0)[0].as_py()
        store.close()  # the demo ends here with the warehouse: never hold it while dbt may run
        features = [f"user_transaction_features.{f}" for f in WATCHED]

        def value() -> tuple[Any, ...]:
            row = store.get_online_features(features, [{"user_id": card["user_id"]}]).to_dict()
            return tuple(row[f][0] for f in WATCHED)

        before = value()
        echo(f"card {card['user_id']} online now: {', '.join(f'{f}={_fmt(v)}' for f, v in zip(WATCHED, before, strict=True))}"
             f" (as of its latest payment, {card['occurred_at']:%Y-%m-%d %H:%M}); each new payment's 1h and 24h "
             "windows end at its own time, so payments older than that drop out of them")
        rng = np.random.default_rng(17)
        client = redis.Redis.from_url(url)
        watched_every = max(1, events // 6)
        latencies: list[float] = []
        pause = seconds / events
        for i in range(events):
            now = store.clock.now().replace(tzinfo=None)
            mine = i % watched_every == watched_every - 1
            amount = float(np.round(rng.gamma(2.0, 30.0), 2))
            payment = {
                "transaction_id": int(max_id) + 1 + i, "user_id": int(card["user_id"] if mine else rng.choice(users)),
                "merchant_id": int(card["merchant_id"] if mine else rng.choice(merchants)), "amount": amount,
                "currency": "EUR", "is_online": bool(rng.random() < 0.3), "occurred_at": now - timedelta(seconds=1),
                "created_at": now,
            }
            sent = time.perf_counter()
            client.xadd("payments", {k: event_text(v) for k, v in payment.items()})
            if mine:
                old = value()
                while time.perf_counter() - sent < 5:
                    current = value()
                    if current != old:
                        break
                    time.sleep(0.002)
                took = (time.perf_counter() - sent) * 1000
                latencies.append(took)
                shown = ", ".join(f"{f} {_fmt(a)} → {_fmt(b)}" for f, a, b in zip(WATCHED, old, current, strict=True))
                echo(f"  payment of {amount:>7.2f} by card {card['user_id']}: {shown}   online {took:,.0f} ms after "
                     "it was written to the stream")
            else:
                time.sleep(pause)
        deadline = time.monotonic() + 10
        while worker.counters.events < events and time.monotonic() < deadline:
            time.sleep(0.02)
        worker.stop()
        thread.join(10)
        pipeline.close()
        counters = worker.counters
        echo(f"{counters.events:,} payments streamed: {counters.values_written:,} online values recomputed with the "
             f"views' own SQL; events landed in {pipeline.log.pattern} for the next dbt build.")
        return {"latencies_ms": latencies, "events": counters.events}
    finally:
        consumer_store.close()
        process.kill()
        process.wait(10)
