"""Online-store benchmark: materialization and lookup against one private redis-server.

    python -m benchmarks.online [--quick] [--out docs/bench_online.md]

The standard workload (generated deterministically into a DuckDB file): 100,000 entities; one
feature view of 1,000,000 rows with ten float64 features; event times uniform over 2025;
created-at = event time + 0-60 s; TTL 30 days. Each figure sits next to the fastest raw
redis-py way of doing the same job (the floor), measured in the same run on the same server:

* materialization, end to end (warehouse query → encode → Lua-guarded writes → statistics →
  watermark), entities/s; and the Redis-writing stage alone (pre-encoded batches → writer)
  against raw ``MSET`` of pre-packed 88-byte values, 5,000 keys per call;
* lookup of 10 features: one entity (p50/p99 over 3,000 calls) against one raw ``GET``;
  batches of 100 and 1,000 entities against one raw ``MGET`` of as many keys;
* peak memory of materialization at 1M and 10M rows (each in a fresh process).

The clock of the online store is set to 2026-01-01 (the workload's "now"), so the TTL leaves
the entities seen in the last 30 days of 2025 live, as a production run on that date would.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

from benchmarks.common import markdown_table

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data" / "bench"
ENTITIES = 100_000
FEATURES = [f"f{i}" for i in range(10)]
NOW = datetime(2026, 1, 1, tzinfo=UTC)


# -- workload -------------------------------------------------------------------------------
def generate(path: Path, rows: int, *, entities: int = ENTITIES, seed: int = 7, chunk: int = 1_000_000) -> Path:
    """Write the standard workload's feature table (``main.features``) into a DuckDB file."""
    import duckdb
    import pyarrow as pa

    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.unlink(missing_ok=True)
    con = duckdb.connect(str(tmp))
    con.execute(
        "CREATE TABLE features (entity_id BIGINT, event_time TIMESTAMP, created_at TIMESTAMP, "
        + ", ".join(f"{f} DOUBLE" for f in FEATURES)
        + ")"
    )
    rng = np.random.default_rng(seed)
    start = np.datetime64("2025-01-01T00:00:00", "us").astype(np.int64)
    span = 365 * 86_400 * 1_000_000
    for offset in range(0, rows, chunk):
        n = min(chunk, rows - offset)
        event = start + rng.integers(0, span, n)
        batch = {
            "entity_id": (np.arange(offset, offset + n) % entities).astype(np.int64),
            "event_time": pa.array(event, pa.timestamp("us")),
            "created_at": pa.array(event + rng.integers(0, 60_000_000, n), pa.timestamp("us")),
        }
        for f in FEATURES:
            batch[f] = rng.standard_normal(n)
        chunk_table = pa.table(batch)  # noqa: F841 - read by DuckDB's replacement scan
        con.execute("INSERT INTO features SELECT * FROM chunk_table")
    con.close()
    tmp.rename(path)
    return path


def workload_view(ttl: timedelta | None = timedelta(days=30)):  # noqa: ANN201
    from feature_layer.registry.model import Feature, FeatureView, Relation

    return FeatureView(
        name="standard",
        unique_id="model.bench.standard",
        entities=("entity",),
        join_keys=("entity_id",),
        event_time="event_time",
        created_at="created_at",
        features=tuple(Feature(f, "standard", "float64") for f in FEATURES),
        relation=Relation(None, "main", "features"),
        ttl=ttl,
        column_types=(("entity_id", "int64"),),
    )


# -- redis ----------------------------------------------------------------------------------
class PrivateRedis:
    def __init__(self) -> None:
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        if not Path(binary).exists():
            sys.exit("redis-server is not installed: sudo apt-get install redis-server")
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.dir = tempfile.mkdtemp(prefix="fl-bench-redis-")
        self.proc = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                self.dir,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        import redis

        for _ in range(200):
            try:
                redis.Redis(port=self.port).ping()
                break
            except redis.ConnectionError:
                time.sleep(0.02)
        self.version = redis.Redis(port=self.port).info("server")["redis_version"]

    def client(self):  # noqa: ANN201
        import redis

        return redis.Redis(host="127.0.0.1", port=self.port)

    def floor_client(self):  # noqa: ANN201
        """redis-py with the hiredis reply parser, chosen explicitly: the floor issue 10 names."""
        import redis
        from redis.connection import _HiredisParser
        from redis.utils import HIREDIS_AVAILABLE

        if not HIREDIS_AVAILABLE:
            sys.exit("hiredis is not installed: pip install hiredis (it is a feature_layer dependency)")
        pool = redis.ConnectionPool(host="127.0.0.1", port=self.port, parser_class=_HiredisParser)
        return redis.Redis(connection_pool=pool)

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


def bench_parts(engine, online, state, views):  # noqa: ANN001, ANN201
    """The collaborators get_online_features/materialize take, for a view made in code."""
    from feature_layer.clock import FixedClock
    from feature_layer.parts import Parts
    from feature_layer.registry.registry import Registry

    registry = Registry(
        entities={}, views={v.name: v for v in views}, services={}, nodes={}, parent_map={}, child_map={}
    )
    return Parts.of(registry=registry, engine=engine, online=online, state=state, clock=FixedClock(NOW))


def interleaved(fns: list, n: int) -> list[list[float]]:
    """Call ``fns[0](i), fns[1](i), …`` for each i (A B C A B C …): load bursts on this shared
    machine hit every contender alike. Returns each one's samples (after a warm-up)."""
    for i in range(min(50, n)):
        for fn in fns:
            fn(i)
    samples: list[list[float]] = [[] for _ in fns]
    for i in range(n):
        for fn, out in zip(fns, samples, strict=True):
            start = time.perf_counter()
            fn(i)
            out.append(time.perf_counter() - start)
    return samples


def percentiles(samples: list[float]) -> tuple[float, float]:
    arr = np.array(samples) * 1000
    return float(np.percentile(arr, 50)), float(np.percentile(arr, 99))


# -- measurements -----------------------------------------------------------------------------
def bench_materialize(db: Path, redis_server: PrivateRedis, repeat: int) -> dict:
    from feature_layer.offline.engine import DuckDBEngine
    from feature_layer.online.encoding import encode_batch, to_micros, view_layout
    from feature_layer.online.materialize import materialize_view
    from feature_layer.online.redis_store import RedisOnlineStore
    from feature_layer.sql.latest import CREATED_ALIAS, EVENT_ALIAS, latest_values
    from feature_layer.state import StateStore

    view = workload_view()
    engine = DuckDBEngine(db, read_only=True)
    engine.fetch_arrow("SELECT count(*) FROM features")  # open the file (both sides pay this once)
    client = redis_server.client()
    online = RedisOnlineStore(client, "bench")
    online.clock = lambda: to_micros(NOW)
    out: dict = {}

    runs = []
    for _ in range(repeat):
        client.flushall()
        with tempfile.TemporaryDirectory() as tmp:
            state = StateStore(Path(tmp) / "state.sqlite")
            result = materialize_view(
                view,
                engine=engine,
                online=online,
                state=state,
                end=NOW,
                statistics_engine=lambda: DuckDBEngine(db, read_only=True),
            )
            state.close()
        runs.append(result)
    best = min(runs, key=lambda r: r.seconds)
    out["e2e_seconds"] = best.seconds
    out["e2e_entities"] = best.entities
    out["e2e_written"] = best.rows_written
    out["e2e_expired"] = best.expired
    out["e2e_stages"] = best.stage_seconds
    out["e2e_runs"] = [r.seconds for r in runs]

    runs_nostats = []
    for _ in range(repeat):
        client.flushall()
        with tempfile.TemporaryDirectory() as tmp:
            state = StateStore(Path(tmp) / "state.sqlite")
            runs_nostats.append(
                materialize_view(view, engine=engine, online=online, state=state, end=NOW, statistics=False).seconds
            )
            state.close()
    out["e2e_nostats_seconds"] = min(runs_nostats)

    # Writing stage alone: pre-encoded batches of all 100k entities (a clock at the start of 2025
    # keeps every value live, so all 100k keys are written).
    latest = engine.fetch_arrow(latest_values(view, end=NOW, dialect="duckdb"))
    layout = view_layout(view, "bench")
    early = to_micros(datetime(2025, 1, 1, tzinfo=UTC))
    encoded = [
        encode_batch(layout, b, event_column=EVENT_ALIAS, created_column=CREATED_ALIAS, now_us=early)
        for b in latest.to_batches(100_000)
    ]
    n_keys = sum(len(e) for e in encoded)
    writer_online = RedisOnlineStore(client, "bench")
    writer_online.clock = lambda: early
    write_times, floor_times = [], []
    values = [np.random.default_rng(1).bytes(88) for _ in range(n_keys)]
    keys = [b"floor:%d" % i for i in range(n_keys)]
    from feature_layer.online.store import RunFence

    for i in range(repeat + 2):
        client.flushall()
        writer_online.script_sha(refresh=True)
        # Fenced and ledgered like a real run: every request carries the token, the lease expiry
        # and its ledger bit (the write script checks the fence and the server's TIME).
        lease_end = (time.time_ns() // 1000) + 3_600_000_000
        fence = RunFence("bench", "bench", i + 1, f"run{i}", lambda end=lease_end: end)
        writer_online.claim(fence)
        start = time.perf_counter()
        with writer_online.writer(ttl_us=layout.ttl_us, fence=fence) as w:
            for e in encoded:
                w.write(e)
        write_times.append(time.perf_counter() - start)
        client.flushall()
        start = time.perf_counter()
        for i in range(0, n_keys, 5000):
            client.mset(dict(zip(keys[i : i + 5000], values[i : i + 5000], strict=False)))
        floor_times.append(time.perf_counter() - start)
    out["write_keys"] = n_keys
    out["write_seconds"] = min(write_times)
    out["mset_seconds"] = min(floor_times)
    engine.close()
    return out


def _parsers(ours, floor) -> dict:  # noqa: ANN001
    """Which reply parser each client's connections use (both must be hiredis for a fair floor)."""
    out = {}
    for name, client in (("ours", ours), ("floor", floor)):
        conn = client.connection_pool.get_connection()
        out[name] = type(conn._parser).__name__
        client.connection_pool.release(conn)
    return out


def bench_lookup(db: Path, redis_server: PrivateRedis, calls: int) -> dict:
    from feature_layer.offline.engine import DuckDBEngine
    from feature_layer.online.encoding import to_micros, view_layout
    from feature_layer.online.lookup import get_online_features
    from feature_layer.online.materialize import materialize_view
    from feature_layer.online.redis_store import RedisOnlineStore
    from feature_layer.state import StateStore

    view = workload_view()
    engine = DuckDBEngine(db, read_only=True)
    client = redis_server.client()
    client.flushall()
    online = RedisOnlineStore(client, "bench")
    online.clock = lambda: to_micros(NOW)
    tmp = tempfile.mkdtemp()
    state = StateStore(Path(tmp) / "state.sqlite")
    materialize_view(view, engine=engine, online=online, state=state, end=NOW, statistics=False)
    store = bench_parts(engine, online, state, [view])
    layout = view_layout(view, "bench")
    live = [i for i, v in enumerate(client.mget([layout.key_prefix + b"%d" % i for i in range(ENTITIES)])) if v]
    rng = np.random.default_rng(3)
    feats = [f"standard.{f}" for f in FEATURES]
    raw = redis_server.floor_client()
    raw.ping()
    out: dict = {"live_entities": len(live), "parsers": _parsers(client, raw)}

    ids = rng.choice(live, size=calls).tolist()
    single_keys = [layout.key_prefix + b"%d" % i for i in ids]
    rows_single = [[{"entity_id": i}] for i in ids]
    # Interleave the floor and ours call by call (A B A B …), so machine noise hits both alike.
    floor, ours, ours_dict = interleaved(
        [
            lambda i: raw.get(single_keys[i]),
            lambda i: get_online_features(store, features=feats, entity_rows=rows_single[i]),
            lambda i: get_online_features(store, features=feats, entity_rows=rows_single[i]).to_dict(),
        ],
        calls,
    )
    out["single"] = {"ours": percentiles(ours), "ours_to_dict": percentiles(ours_dict), "floor": percentiles(floor)}

    for size, n in ((100, 1000), (1000, 300)):
        batches = [rng.choice(live, size=size, replace=False).tolist() for _ in range(n)]
        key_batches = [[layout.key_prefix + b"%d" % i for i in b] for b in batches]
        row_batches = [[{"entity_id": i} for i in b] for b in batches]
        floor, ours, ours_dict = interleaved(
            [
                lambda i: raw.mget(key_batches[i]),  # noqa: B023
                lambda i: get_online_features(store, features=feats, entity_rows=row_batches[i]),  # noqa: B023
                lambda i: get_online_features(store, features=feats, entity_rows=row_batches[i]).to_dict(),  # noqa: B023
            ],
            n,
        )
        out[f"batch_{size}"] = {
            "ours": percentiles(ours),
            "ours_to_dict": percentiles(ours_dict),
            "floor": percentiles(floor),
        }
    state.close()
    engine.close()
    return out


def _high_water_mb() -> float:
    """This process's peak RSS (VmHWM; unlike ru_maxrss it is not inherited from the parent)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _memory_child(db: str, port: int, limit: str | None) -> None:
    """Run in a fresh process: one materialization; print peak RSS and feature_layer's own peak."""
    import tracemalloc

    import pyarrow as pa
    import redis

    from feature_layer.offline.engine import DuckDBEngine
    from feature_layer.online.encoding import to_micros
    from feature_layer.online.materialize import materialize_view
    from feature_layer.online.redis_store import RedisOnlineStore
    from feature_layer.state import StateStore

    engine = DuckDBEngine(db, read_only=True)
    if limit:
        engine.execute(f"SET memory_limit = '{limit}'")
    online = RedisOnlineStore(redis.Redis(port=port), "mem")
    online.clock = lambda: to_micros(NOW)
    base = _high_water_mb()
    tracemalloc.start()
    with tempfile.TemporaryDirectory() as tmp:
        result = materialize_view(
            workload_view(), engine=engine, online=online, state=StateStore(Path(tmp) / "s"), end=NOW, statistics=False
        )
    _, py_peak = tracemalloc.get_traced_memory()
    print(
        json.dumps(
            {
                "peak_rss_mb": _high_water_mb(),
                "baseline_rss_mb": base,
                "arrow_peak_mb": pa.default_memory_pool().max_memory() / 2**20,
                "python_peak_mb": py_peak / 2**20,
                "seconds": result.seconds,
                "entities": result.entities,
            }
        )
    )


def bench_memory(dbs: dict[str, Path], redis_server: PrivateRedis) -> dict:
    out = {}
    for label, db in dbs.items():
        for limit in (None, "256MB"):
            redis_server.client().flushall()
            proc = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "benchmarks.online",
                    "--memory-child",
                    str(db),
                    str(redis_server.port),
                    limit or "",
                ],
                capture_output=True,
                text=True,
                cwd=ROOT,
                check=True,
            )
            out[(label, limit or "default")] = json.loads(proc.stdout.strip().splitlines()[-1])
    return out


# -- report -----------------------------------------------------------------------------------
def report(mat: dict, look: dict, mem: dict, meta: dict) -> str:
    e2e_rate = mat["e2e_entities"] / mat["e2e_seconds"]
    write_rate = mat["write_keys"] / mat["write_seconds"]
    floor_rate = mat["write_keys"] / mat["mset_seconds"]
    rows = [
        [
            "materialization end to end (1M rows → 100k entities, with statistics)",
            f"{mat['e2e_seconds']:.3f} s = {e2e_rate:,.0f} entities/s",
            "—",
            "target < 1 s",
        ],
        [
            "materialization end to end, statistics skipped",
            f"{mat['e2e_nostats_seconds']:.3f} s = {mat['e2e_entities'] / mat['e2e_nostats_seconds']:,.0f} entities/s",
            "—",
            "",
        ],
        [
            f"Redis-writing stage alone ({mat['write_keys']:,} keys)",
            f"{write_rate:,.0f} keys/s",
            f"{floor_rate:,.0f} keys/s (MSET, 5,000/call)",
            f"{write_rate / floor_rate:.0%} of floor (target ≥ 50%)",
        ],
    ]
    for label, key in (("single entity", "single"), ("batch of 100", "batch_100"), ("batch of 1,000", "batch_1000")):
        r = look[key]
        floor_name = "GET" if key == "single" else "MGET"
        rows.append(
            [
                f"lookup, 10 features, {label}: p50 / p99",
                f"{r['ours'][0]:.3f} / {r['ours'][1]:.3f} ms",
                f"{r['floor'][0]:.3f} / {r['floor'][1]:.3f} ms ({floor_name})",
                f"{r['ours'][0] / r['floor'][0]:.2f}× at p50",
            ]
        )
        rows.append(
            [
                "  … including `.to_dict()`",
                f"{r['ours_to_dict'][0]:.3f} / {r['ours_to_dict'][1]:.3f} ms",
                "",
                f"{r['ours_to_dict'][0] / r['floor'][0]:.2f}× at p50",
            ]
        )
    lines = [
        "# Online store benchmark",
        "",
        f"`python -m benchmarks.online` — {meta['when']}, {meta['machine']}, redis-server {meta['redis']} (private, "
        "local TCP), Python " + platform.python_version() + ". Standard workload: 100,000 entities, 1,000,000 rows, "
        "ten float64 features, event times uniform over 2025, created-at +0–60 s, TTL 30 days; online clock "
        f"2026-01-01, so {mat['e2e_written']:,} of {mat['e2e_entities']:,} entities are live (the others are past "
        "their TTL and are not written). Times are the best of the runs for materialization, percentiles over "
        "lookups interleaved call by call with their floor (A B A B …).",
        "",
        markdown_table(["measure", "feature_layer", "floor (raw redis-py + hiredis)", "ratio"], rows),
        "",
        f"Reply parsers: feature_layer {look['parsers']['ours']}, floor {look['parsers']['floor']} (the floor's "
        "pool is built with `parser_class=_HiredisParser` explicitly).",
        "",
        "Materialization stages of the best end-to-end run (seconds): "
        + ", ".join(f"{k} {v:.3f}" for k, v in mat["e2e_stages"].items())
        + ".",
        "",
        "## Peak memory of materialization (fresh process per run)",
        "",
        markdown_table(
            [
                "table",
                "DuckDB memory_limit",
                "peak RSS",
                "RSS before the run",
                "Arrow pool peak",
                "Python heap peak",
                "seconds",
            ],
            [
                [
                    label,
                    limit,
                    f"{m['peak_rss_mb']:.0f} MB",
                    f"{m['baseline_rss_mb']:.0f} MB",
                    f"{m['arrow_peak_mb']:.0f} MB",
                    f"{m['python_peak_mb']:.1f} MB",
                    f"{m['seconds']:.2f}",
                ]
                for (label, limit), m in mem.items()
            ],
        ),
        "",
        "feature_layer's own memory (Arrow pool + Python heap) is bounded by one streamed batch and the number of "
        "entities, not the number of rows. The process RSS also holds DuckDB's buffer cache of the table it scanned; "
        "capping DuckDB (`SET memory_limit`) bounds that too.",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer repeats, skip the 10M-row memory run")
    parser.add_argument("--out", default=str(ROOT / "docs" / "bench_online.md"))
    parser.add_argument("--memory-child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        db, port, limit = args.memory_child
        _memory_child(db, int(port), limit or None)
        return
    db1 = generate(DATA / "online_1m.duckdb", 1_000_000)
    dbs = {"1M rows": db1}
    if not args.quick:
        dbs["10M rows"] = generate(DATA / "online_10m.duckdb", 10_000_000)
    server = PrivateRedis()
    try:
        mat = bench_materialize(db1, server, repeat=2 if args.quick else 3)
        look = bench_lookup(db1, server, calls=900 if args.quick else 3000)
        mem = bench_memory(dbs, server)
    finally:
        server.stop()
    meta = {
        "when": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{os.cpu_count()} CPUs, {platform.machine()}",
        "redis": server.version,
    }
    text = report(mat, look, mem, meta)
    print(text)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
