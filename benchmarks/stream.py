"""Stream benchmark: payments into a Redis Stream at increasing rates, through ``feature-layer stream``.

    python -m benchmarks.stream [--quick] [--rows 50000] [--users N] [--threads 1] [--rates 500,1000,2000,5000,10000]
                                [--phase-seconds 20] [--duration 300] [--feast-python PATH]

Set-up: the example project in a temporary folder, ``--rows`` demo payments (about rows/20 card
holders), ``dbt build``, the two streamed views materialized into a private redis-server (which
also carries the stream). The consumer is ``feature-layer stream`` in its own process (real clock).

The floor, interleaved (right after each rate's phase, same rate and length, same probe): a
consumer group reader that computes nothing (XREADGROUP, SET the raw event time per card, XACK).

For each rate, a producer in this process XADDs payments (existing card holders, event time =
now) every 20 ms for ``--phase-seconds``; a probe samples ~10 payments a second and polls
``get_online_features`` (include_event_times) until that payment is the card's latest value online:
event written to the stream → value readable, end to end. A rate is *sustained* when the consumer
consumed >= 95% of the phase's events by its end (+2 s) and the probe's p99 is under 1 s. Then one
run of ``--duration`` seconds at the highest sustained rate samples the consumer's RSS every 5 s.

Feast (optional, ``--feast-python`` = a Python with ``pip install 'feast[redis]==0.67.0'``, e.g.
the ``bench-feast`` extra in its own venv): ``benchmarks/feast_push.py`` pushes precomputed rows
(same number of card holders, the same 11 feature columns) into Feast's Redis online store on the
same server, in the same run. Feast computes nothing there: it writes values it is handed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np

from benchmarks.common import markdown_table

REPO = Path(__file__).resolve().parents[1]


def rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def setup(base: Path, rows: int, threads: int = 1, users: int | None = None) -> tuple[Path, object, str]:
    sys.path.insert(0, str(REPO))
    from feature_layer.dbt.runner import run_dbt
    from feature_layer.demo.data import generate_demo_data
    from tests.conftest import clean_project_env, copy_example_project
    from tests.redis_helpers import RedisServer

    server = RedisServer(base / "redis").start()
    project = copy_example_project(base / "project")
    generate_demo_data(project / "data" / "raw", rows=rows, end=date.today(), users=users)
    with clean_project_env():
        run_dbt(["build"], project, target="duckdb", quiet=True)
    (project / "feature_layer.yml").write_text(json.dumps({
        "online_store": {"type": "redis", "url": server.url},
        "streams": {"raw.transactions": {"url": server.url, "stream": "payments", "batch_size": 20000,
                                         "block_ms": 50, "buffer_rows": 20_000_000, "threads": threads}},
    }))
    from feature_layer.client import FeatureStore

    with clean_project_env(), FeatureStore(project) as store:
        store.materialize(select=["user_transaction_features", "user_merchant_features"])
    return project, server, server.url


def _bulk(value: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(value), value)


class Producer:
    """XADDs payments at a rate; remembers the XADD time of sampled payments for the probe.

    The commands are packed here (RESP, one ``sendall`` per 20 ms tick, replies parsed by hiredis)
    rather than through redis-py's pipeline, whose per-command packing capped a Python producer at
    ~9,000 events/s on the 2 shared cores. Each event is still XADDed at its tick with ``*`` as its
    id, so its stream id carries its real write time (what the latency probe and the consumer's
    lag measure from)."""

    def __init__(self, client: object, users: np.ndarray, merchants: np.ndarray, first_id: int) -> None:
        self.client = client
        self.users = users
        self.merchants = merchants
        self.next_id = first_id
        self.rng = np.random.default_rng(3)
        self.sent = 0
        self.sent_to: dict[str, int] = {}
        self.samples: list[tuple[int, datetime, float]] = []  # (user, occurred_at, xadd time)
        self.lock = threading.Lock()
        kwargs = client.connection_pool.connection_kwargs  # type: ignore[attr-defined]
        self.address = (kwargs.get("host", "127.0.0.1"), int(kwargs.get("port", 6379)))
        self._sock: socket.socket | None = None

    def _send(self, blob: bytes, replies: int) -> None:
        """Send packed commands, read their ``replies`` (an error reply raises)."""
        import hiredis

        if self._sock is None:
            self._sock = socket.create_connection(self.address, timeout=10)
        self._sock.sendall(blob)
        reader = hiredis.Reader()
        got = 0
        while got < replies:
            reader.feed(self._sock.recv(1 << 20))
            while got < replies:
                reply = reader.gets()
                if reply is False:
                    break
                if isinstance(reply, hiredis.ReplyError):
                    raise RuntimeError(f"XADD failed: {reply}")
                got += 1

    def _pack(self, stream: bytes, users: np.ndarray, merchants: np.ndarray, amounts: np.ndarray,
              stamp: bytes) -> bytes:
        head = b"*19\r\n" + _bulk(b"XADD") + _bulk(stream) + _bulk(b"*") + _bulk(b"transaction_id")
        tail = (_bulk(b"currency") + _bulk(b"EUR") + _bulk(b"is_online") + _bulk(b"false")
                + _bulk(b"occurred_at") + _bulk(stamp) + _bulk(b"created_at") + _bulk(stamp))
        parts = []
        for i in range(len(users)):
            parts.append(head + _bulk(b"%d" % self.next_id) + _bulk(b"user_id") + _bulk(b"%d" % users[i])
                         + _bulk(b"merchant_id") + _bulk(b"%d" % merchants[i]) + _bulk(b"amount")
                         + _bulk(str(amounts[i]).encode()) + tail)
            self.next_id += 1
        return b"".join(parts)

    def run(self, rate: int, seconds: float, stream: str = "payments") -> int:
        sent = 0
        tick = 0.02
        start = time.perf_counter()
        next_sample = start
        name = stream.encode()
        while time.perf_counter() - start < seconds:
            n = int(rate * (time.perf_counter() - start + tick)) - sent  # catches up after a late tick
            now = datetime.now(UTC).replace(tzinfo=None)
            stamp = now.isoformat(sep=" ", timespec="microseconds").encode()
            users = self.rng.choice(self.users, n)
            merchants = self.rng.choice(self.merchants, n)
            amounts = np.round(self.rng.gamma(2.0, 30.0, n), 2)
            sample_user = None
            if n and time.perf_counter() >= next_sample:
                sample_user = int(users[0])
                next_sample += 0.1
            if n:
                self._send(self._pack(name, users, merchants, amounts, stamp), n)
            if sample_user is not None:
                with self.lock:
                    self.samples.append((sample_user, now, time.perf_counter()))
            sent += n
            sleep = start + (tick * (1 + (time.perf_counter() - start) // tick)) - time.perf_counter()
            if sleep > 0:
                time.sleep(sleep)
        self.sent += sent
        self.sent_to[stream] = self.sent_to.get(stream, 0) + sent
        return sent


def probe(seen: object, producer: Producer, stop: threading.Event, out: list[float]) -> None:
    """Poll until each sampled payment is its card's latest value (``seen(user)`` → event time), or 10 s pass."""
    while not stop.is_set():
        with producer.lock:
            todo, producer.samples = producer.samples, []
        for user, occurred, sent in todo:
            deadline = sent + 10
            while time.perf_counter() < deadline and not stop.is_set():
                value = seen(user)
                if value is not None and value >= occurred:
                    out.append((time.perf_counter() - sent) * 1000)
                    break
                time.sleep(0.005)
            else:
                if not stop.is_set():
                    out.append(float("inf"))
        time.sleep(0.01)


def online_seen(store: object) -> object:
    def seen(user: int) -> datetime | None:
        got = store.get_online_features(["user_transaction_features.amount"], [{"user_id": user}],
                                        include_event_times=True).to_dict()
        value = got["amount__event_time"][0]
        return value.replace(tzinfo=None) if value is not None else None

    return seen


def floor_seen(client: object) -> object:
    def seen(user: int) -> datetime | None:
        raw = client.get(f"floor:{user}")
        return datetime.fromisoformat(raw.decode()) if raw else None

    return seen


def floor_consumer(url: str) -> None:
    """The floor: a consumer group reader that computes nothing — XREADGROUP, SET the raw event time
    per card, XACK (run as ``python -m benchmarks.stream --floor-consumer URL``)."""
    import redis

    client = redis.Redis.from_url(url)
    try:
        client.xgroup_create("payments-floor", "floor", id="0", mkstream=True)
    except redis.ResponseError:
        pass
    while True:
        reply = client.xreadgroup("floor", "floor", {"payments-floor": ">"}, count=5000, block=50)
        entries = [e for _, es in reply or [] for e in es]
        if not entries:
            continue
        pipe = client.pipeline(transaction=False)
        for _, fields in entries:
            pipe.set(b"floor:" + fields[b"user_id"], fields[b"occurred_at"])
        pipe.xack("payments-floor", "floor", *[e for e, _ in entries])
        pipe.execute()


def consumed(client: object, stream: str = "payments") -> int:
    try:
        groups = client.xinfo_groups(stream)
    except Exception:  # noqa: BLE001 - before the group exists
        return 0
    return int(groups[0].get("entries-read") or 0) - int(groups[0].get("pending") or 0) if groups else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="10 s phases, a 60 s memory run")
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--rates", default="500,1000,2000,5000,10000,15000")
    parser.add_argument("--phase-seconds", type=float, default=20.0)
    parser.add_argument("--duration", type=float, default=300.0)
    parser.add_argument("--users", type=int, default=None,
                        help="card holders the producer draws from (the demo data gets ~20 payments each: "
                        "--rows is raised to 20 × N when smaller); default: every card holder of --rows")
    parser.add_argument("--history", type=int, default=None,
                        help="with --users: payments per card holder in the generated history (--rows = N × this; "
                        "the demo data gets exactly --users card holders)")
    parser.add_argument("--threads", type=int, default=1, help="DuckDB threads of the consumer (streams.threads)")
    parser.add_argument("--feast-python", default=None)
    parser.add_argument("--out", default=None, help="write the markdown here too")
    parser.add_argument("--floor-consumer", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.floor_consumer:
        floor_consumer(args.floor_consumer)
        return
    if args.quick:
        args.phase_seconds, args.duration = 10.0, 60.0
    if args.users is not None:
        if args.users < 1:
            parser.error("--users must be a positive number of card holders")
        args.rows = max(args.rows, 20 * args.users) if args.history is None else args.history * args.users
    elif args.history is not None:
        parser.error("--history needs --users")
    base = Path(tempfile.mkdtemp(prefix="bench-stream-"))
    project, server, url = setup(base, args.rows, args.threads, args.users if args.history is not None else None)
    sys.path.insert(0, str(REPO))
    from feature_layer.client import FeatureStore
    from tests.conftest import clean_project_env

    with clean_project_env():
        store = FeatureStore(project)
        engine = store.offline_engine()
        users = engine.fetch_arrow("select distinct user_id from main.stg_transactions order by 1").column(0).to_numpy()
        if args.users is not None:
            users = users[: args.users]
        merchants = engine.fetch_arrow("select merchant_id from main.stg_merchants").column(0).to_numpy()
        first_id = int(engine.fetch_arrow("select max(transaction_id) from main.stg_transactions").column(0)[0].as_py())
        store.close()
        env = {k: v for k, v in os.environ.items() if not k.startswith("FEATURE_LAYER_")}
        log = open(base / "consumer.log", "wb")  # noqa: SIM115 - closed at the end
        consumer = subprocess.Popen([str(Path(sys.executable).parent / "feature-layer"), "--project-dir", str(project),
                                     "stream", "--log-seconds", "5"], env=env, stdout=log, stderr=subprocess.STDOUT)
        floor = subprocess.Popen([sys.executable, "-m", "benchmarks.stream", "--floor-consumer", url], cwd=REPO,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = server.client()
        producer = Producer(client, users, merchants, first_id + 1)
        results = []
        best = None
        rss: list[tuple[float, float]] = []
        started = time.perf_counter()
        try:
            producer.run(50, 1.0)  # warm-up: wait until the consumer has started and consumed these
            deadline = time.perf_counter() + 180
            while consumed(client) < producer.sent_to["payments"] and time.perf_counter() < deadline:
                time.sleep(0.1)
            with producer.lock:
                producer.samples = []
            for rate in [int(r) for r in args.rates.split(",")]:
                latencies: list[float] = []
                stop = threading.Event()
                checker = threading.Thread(target=probe, args=(online_seen(store), producer, stop, latencies),
                                           daemon=True)
                checker.start()
                before = consumed(client)
                t0 = time.perf_counter()
                sent = producer.run(rate, args.phase_seconds)
                achieved = sent / (time.perf_counter() - t0)
                deadline = time.perf_counter() + 2
                while consumed(client) - before < sent and time.perf_counter() < deadline:
                    time.sleep(0.05)
                done = consumed(client) - before
                time.sleep(0.5)
                stop.set()
                checker.join(15)
                lat = np.array(latencies) if latencies else np.array([np.inf])
                p50, p99 = np.percentile(lat, 50), np.percentile(lat, 99)
                ok = done >= 0.95 * sent and p99 < 1000
                rss.append((time.perf_counter() - started, rss_mb(consumer.pid)))
                # the floor, right after at the same rate: read, SET the raw event time, XACK (no computing)
                floor_lat: list[float] = []
                stop = threading.Event()
                checker = threading.Thread(target=probe, args=(floor_seen(client), producer, stop, floor_lat),
                                           daemon=True)
                checker.start()
                producer.run(rate, args.phase_seconds, stream="payments-floor")
                time.sleep(1.0)
                stop.set()
                checker.join(15)
                flat = np.array(floor_lat) if floor_lat else np.array([np.inf])
                f50, f99 = np.percentile(flat, 50), np.percentile(flat, 99)
                results.append((rate, f"{achieved:,.0f}", f"{done / max(sent, 1):.0%}", f"{p50:,.0f}", f"{p99:,.0f}",
                                len(latencies), f"{f50:,.0f} / {f99:,.0f}", f"{p99 / max(f99, 1e-9):,.1f}×",
                                f"{rss[-1][1]:.0f}", "yes" if ok else "no"))
                print(results[-1], flush=True)
                if not ok:
                    # let the consumer drain before the memory run
                    drain = time.perf_counter() + 120
                    while consumed(client) < producer.sent_to["payments"] and time.perf_counter() < drain:
                        time.sleep(0.5)
                    break
                best = rate
            memory: list[tuple[float, float]] = []
            long_rate = best or int(args.rates.split(",")[0])  # none sustained: the memory run at the lowest rate
            if long_rate:
                best = long_rate
                stop = threading.Event()
                t0 = time.perf_counter()

                def sample() -> None:
                    while not stop.is_set():
                        memory.append((time.perf_counter() - t0, rss_mb(consumer.pid)))
                        stop.wait(5)

                sampler = threading.Thread(target=sample, daemon=True)
                sampler.start()
                long_lat: list[float] = []
                checker = threading.Thread(target=probe, args=(online_seen(store), producer, stop, long_lat),
                                           daemon=True)
                checker.start()
                producer.run(best, args.duration)
                time.sleep(1)
                stop.set()
                sampler.join(10)
                checker.join(15)
        finally:
            floor.kill()
            floor.wait(10)
            consumer.terminate()
            consumer.wait(30)
            log.close()
        feast = None
        if args.feast_python:
            out = subprocess.run([args.feast_python, str(REPO / "benchmarks" / "feast_push.py"), "--redis", url.replace(
                "/0", "/1"), "--entities", str(len(users))], capture_output=True, text=True, timeout=1200)
            feast = out.stdout.strip().splitlines()[-1] if out.returncode == 0 else f"failed: {out.stderr[-500:]}"
        server.stop()
    lines = [f"Machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the end (shared with "
             "other jobs); consumer = `feature-layer stream` (own process), Redis on the same machine; "
             f"{len(users):,} card holders, {args.rows:,} demo payments, DuckDB threads {args.threads}.", "",
             markdown_table(["rate asked (events/s)", "produced/s", "consumed in phase", "event→online p50 ms",
                             "p99 ms", "probes", "floor p50 / p99 ms", "p99 ÷ floor p99", "consumer RSS MB",
                             "sustained"], results)]
    if best:
        mem = np.array([m for _, m in memory]) if memory else np.array([np.nan])
        lat = np.array(long_lat) if long_lat else np.array([np.inf])
        lines += ["", f"Long run at {best:,} events/s (the highest sustained rate, else the lowest tried) for {args.duration:.0f} s: event→online p50 "
                  f"{np.percentile(lat, 50):,.0f} ms, p99 {np.percentile(lat, 99):,.0f} ms ({len(lat)} probes); "
                  f"consumer RSS first/max/last {mem[0]:.0f}/{np.nanmax(mem):.0f}/{mem[-1]:.0f} MB "
                  f"(samples every 5 s: {', '.join(f'{m:.0f}' for m in mem)})."]
    if feast:
        lines += ["", f"Feast 0.67 push (precomputed rows → its Redis online store, same server, same run; Feast "
                  f"computes nothing here): {feast}"]
    text = "\n".join(lines)
    print("consumer log (last lines):\n" + "\n".join((base / "consumer.log").read_text().splitlines()[-15:]))
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
