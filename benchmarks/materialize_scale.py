"""Materialization at 10x the standard workload, within a memory budget, against its floor.

    python -m benchmarks.materialize_scale [--rows 10000000] [--entities 1000000] [--rounds 3]
        [--memory-limit 1GB] [--out docs/bench_materialize_scale.md]

The workload is the standard one (``benchmarks.online.generate``: ten float64 features, event
times uniform over 2025) at 10x: 10M feature rows, 1M entities (ten rows each), no TTL so every
entity is written. Two contenders, each in a fresh process (peak RSS is that process's
VmHWM), interleaved A B B A …, against one private redis-server flushed before each run:

* **feature_layer**: ``materialize_view`` on a DuckDB engine with ``offline.memory_limit``
  (the latest-per-entity query streamed in Arrow batches, encoded, written with the
  never-older script, fenced and ledgered, watermark committed); statistics off.
* **floor_same**: the floor below, but with feature_layer's own latest-per-entity SQL (whose
  tie-break runs over every feature, as the training sets' does): what is left is the write path.
* **floor**: a hand-written latest-per-entity query on DuckDB (same DuckDB memory limit; newest
  event time per entity, joined back, tie-break on created-at), streamed in the same batches, each
  row's event time and ten features packed with numpy (88 bytes), and raw pipelined ``MSET``
  of 5,000 keys per command with redis-py + hiredis.

Both time only the work (the DuckDB file and the Redis connection are opened before the clock).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import markdown_table
from benchmarks.online import DATA, FEATURES, NOW, ROOT, PrivateRedis, _high_water_mb, generate, workload_view

BATCH = 100_000


def _ours(db: str, port: int, limit: str) -> dict:
    import redis

    from feature_layer.offline.engine import DuckDBEngine
    from feature_layer.offline.kinds import embedded_duckdb_limit, parse_memory_limit
    from feature_layer.online.encoding import to_micros
    from feature_layer.online.materialize import materialize_view
    from feature_layer.online.redis_store import RedisOnlineStore
    from feature_layer.state import StateStore

    # what connect() opens for `offline: {memory_limit: LIMIT}` (kinds._open_duckdb)
    engine = DuckDBEngine(db, read_only=True,
                          memory_limit=embedded_duckdb_limit(parse_memory_limit(limit, "--memory-limit")))
    client = redis.Redis(port=port)
    client.ping()
    online = RedisOnlineStore(client, "scale")
    online.clock = lambda: to_micros(NOW)
    with tempfile.TemporaryDirectory() as tmp:
        state = StateStore(Path(tmp) / "state.sqlite")
        started = time.perf_counter()
        result = materialize_view(workload_view(ttl=None), engine=engine, online=online, state=state, end=NOW,
                                  statistics=False)
        seconds = time.perf_counter() - started
        state.close()
    engine.close()
    return {"seconds": seconds, "entities": result.entities, "written": result.rows_written,
            "stages": result.stage_seconds, "keys": client.dbsize()}


def floor_sql() -> str:
    """The fastest hand-written latest-per-entity query found for this workload on DuckDB under a
    memory limit: newest event time per entity, join back, QUALIFY the tie-break (created-at).
    (``arg_max(struct_pack(…), (event_time, created_at))``, the one-pass form, took 6-7x as long
    at 1M entities under the limit: its per-group state spills.)"""
    end = NOW.replace(tzinfo=None).isoformat(sep=" ")
    feats = ", ".join(f"f.{f}" for f in FEATURES)
    return (f"WITH m AS (SELECT entity_id, max(event_time) AS mx FROM features WHERE event_time <= TIMESTAMP '{end}' "
            "GROUP BY entity_id) "
            f"SELECT f.entity_id, f.event_time AS ev, {feats} FROM features f JOIN m ON f.entity_id = m.entity_id "
            "AND f.event_time = m.mx QUALIFY row_number() OVER (PARTITION BY f.entity_id ORDER BY f.created_at DESC) = 1")


def same_sql() -> str:
    """feature_layer's own latest-per-entity SQL (its tie-break: event time, created-at, then every
    feature), for the floor that differs from feature_layer only in the write path."""
    from feature_layer.sql.newest import materialization_query

    return materialization_query(workload_view(ttl=None), end=NOW, dialect="duckdb").sql(dialect="duckdb")


def _floor(db: str, port: int, limit: str, *, same: bool = False) -> dict:
    import duckdb
    import numpy as np
    import redis
    from redis.connection import _HiredisParser

    from feature_layer.offline.kinds import embedded_duckdb_limit, parse_memory_limit

    con = duckdb.connect(db, read_only=True)
    spill = tempfile.mkdtemp(prefix="fl-floor-duckdb-")
    # the DuckDB limit feature_layer's engine sets for this budget (kinds.EMBEDDED_SHARE)
    con.execute("SET memory_limit = ?", [f"{embedded_duckdb_limit(parse_memory_limit(limit, '--memory-limit'))}B"])
    con.execute("SET temp_directory = ?", [spill])
    client = redis.Redis(connection_pool=redis.ConnectionPool(port=port, parser_class=_HiredisParser))
    client.ping()
    started = time.perf_counter()
    written = 0
    con.execute("SET TimeZone = 'UTC'")
    event = "__fl_event_time" if same else "ev"
    for batch in con.sql(same_sql() if same else floor_sql()).to_arrow_reader(BATCH):
        n = batch.num_rows
        ids = batch.column("entity_id").to_numpy()
        packed = np.empty((n, 1 + len(FEATURES)), dtype=np.float64)
        packed[:, 0] = batch.column(event).cast("int64").to_numpy().view(np.float64)
        for i, f in enumerate(FEATURES, start=1):
            packed[:, i] = batch.column(f).to_numpy(zero_copy_only=False)
        buf = packed.tobytes()
        width = packed.shape[1] * 8
        keys = [b"scale:%d" % k for k in ids.tolist()]
        values = [buf[i : i + width] for i in range(0, len(buf), width)]
        pipe = client.pipeline(transaction=False)
        for i in range(0, n, 5000):
            pipe.mset(dict(zip(keys[i : i + 5000], values[i : i + 5000], strict=True)))
        pipe.execute()
        written += n
    seconds = time.perf_counter() - started
    con.close()
    return {"seconds": seconds, "entities": written, "written": written, "keys": client.dbsize()}


def child(kind: str, db: str, port: int, limit: str) -> None:
    base = _high_water_mb()
    if kind == "ours":
        out = _ours(db, port, limit)
    else:
        out = _floor(db, port, limit, same=kind == "floor_same")
    out.update(peak_rss_mb=_high_water_mb(), start_rss_mb=base)
    print(json.dumps(out))


def _server_cpu(server: PrivateRedis) -> float:
    """CPU seconds (user + system) the private redis-server has used so far (/proc/PID/stat)."""
    import os

    fields = Path(f"/proc/{server.proc.pid}/stat").read_text().split(")")[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_child(kind: str, db: Path, server: PrivateRedis, limit: str) -> dict:
    server.client().flushall()
    cpu = _server_cpu(server)
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.materialize_scale", "--child", kind, str(db), str(server.port), limit],
        capture_output=True, text=True, cwd=ROOT,
    )
    if proc.returncode:
        sys.exit(f"{kind} child failed:\n{proc.stderr[-4000:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["redis_cpu_s"] = _server_cpu(server) - cpu
    return out


LABELS = {
    "ours": "feature_layer materialize_view",
    "floor": "floor: hand query + numpy pack + pipelined MSET (hiredis)",
    "floor_same": "floor with feature_layer's query (same tie-break) + pack + MSET",
}


def report(args: argparse.Namespace, runs: dict[str, list[dict]], meta: dict) -> str:
    ours, floor, same = runs["ours"], runs["floor"], runs["floor_same"]
    med = {k: statistics.median(r["seconds"] for r in v) for k, v in runs.items()}
    rss = {k: max(r["peak_rss_mb"] for r in v) for k, v in runs.items()}
    ratios = [o["seconds"] / f["seconds"] for o, f in zip(ours, floor, strict=True)]
    same_ratios = [o["seconds"] / f["seconds"] for o, f in zip(ours, same, strict=True)]
    rows = [[LABELS[k], f"{med[k]:.2f}", ", ".join(f"{r['seconds']:.2f}" for r in v), f"{rss[k]:.0f}",
             f"{statistics.median(r['redis_cpu_s'] for r in v):.2f}", f"{v[0]['keys']:,}"] for k, v in runs.items()]
    stages = {k: round(statistics.median(r["stages"].get(k, 0.0) for r in ours), 2) for k in ours[0]["stages"]}
    return "\n".join([
        "# Materialization at 10x the standard workload",
        "",
        f"{args.rows:,} feature rows → {args.entities:,} entities, `memory_limit: {args.memory_limit}`, "
        f"{args.rounds} interleaved rounds, each contender in a fresh process. {meta['when']}, {meta['machine']}; "
        f"load average at start {meta['load']} (the machine is shared with other suites).",
        "",
        "Command: `" + meta["command"] + "`",
        "",
        markdown_table(["contender", "median s", "runs s", "peak RSS MB (max)", "redis-server CPU s (median)",
                        "keys in Redis"], rows),
        "",
        f"Ratio feature_layer / floor: median of per-round ratios **{statistics.median(ratios):.2f}x** "
        f"(rounds: {', '.join(f'{r:.2f}' for r in ratios)}); ratio of medians {med['ours'] / med['floor']:.2f}x.",
        f"Against the floor running feature_layer's own query: **{statistics.median(same_ratios):.2f}x** "
        f"(rounds: {', '.join(f'{r:.2f}' for r in same_ratios)}).",
        f"Peak RSS of feature_layer's process: **{rss['ours']:.0f} MB** (budget 1 GB).",
        "",
        f"feature_layer stages (median s): {stages}",
        "",
        "Floor query:",
        "",
        "```sql",
        floor_sql(),
        "```",
        "",
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--entities", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--memory-limit", default="1GB")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--child", nargs=4, metavar=("KIND", "DB", "PORT", "LIMIT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, db, port, limit = args.child
        child(kind, db, int(port), limit)
        return
    import os

    db = generate(DATA / f"scale_{args.rows}_{args.entities}.duckdb", args.rows, entities=args.entities)
    server = PrivateRedis()
    meta = {"when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "machine": f"{os.cpu_count()} cores, Python {platform.python_version()}, redis-server {server.version}",
            "load": f"{os.getloadavg()[0]:.1f}", "command": "python -m benchmarks.materialize_scale " + " ".join(sys.argv[1:])}
    runs: dict[str, list[dict]] = {"ours": [], "floor": [], "floor_same": []}
    try:
        for i in range(args.rounds):
            order = ("ours", "floor", "floor_same") if i % 2 == 0 else ("floor_same", "floor", "ours")
            for kind in order:
                result = run_child(kind, db, server, args.memory_limit)
                runs[kind].append(result)
                print(f"round {i + 1} {kind}: {result['seconds']:.2f} s, peak RSS {result['peak_rss_mb']:.0f} MB, "
                      f"redis-server CPU {result['redis_cpu_s']:.2f} s, {result['keys']:,} keys", flush=True)
    finally:
        server.stop()
    text = report(args, runs, meta)
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
