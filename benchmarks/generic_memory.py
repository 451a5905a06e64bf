"""The generic dbt-adapter engine within ``offline.memory_limit``: peak memory of reading a large result.

    python -m benchmarks.generic_memory [--rows 2000000] [--rounds 5] [--memory-limit 256MB]

One query on the local PostgreSQL (``generate_series``: an int key, four float features, a text
and a timestamp column: 7 columns) read to its end in each of three fresh processes, interleaved
round by round; each reports its peak RSS (``VmHWM``) and time:

* **generic, budgeted**: ``GenericEngine.stream_arrow`` through dbt-postgres's connection with
  ``memory_limit`` (server-side cursor, ``fetchmany`` chunks capped by the budget);
* **generic, whole result** (what the generic path did before: ``cursor.execute`` + ``fetchall``,
  one Arrow table from every row's Python values) — the memory this work removes;
* **native** ``PostgresEngine.stream_arrow`` (the floor for time: the well-tuned path with the same
  driver; server-side cursor, 100,000-row batches).

Nothing is kept: each batch is counted and dropped, as materialization does after writing it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

PG = {"host": "127.0.0.1", "port": 5432, "user": "postgres", "dbname": "postgres"}


def _query(rows: int) -> str:
    return (f"SELECT i AS entity_id, i * 0.5 AS f1, i * 0.25 AS f2, sqrt(i::float8) AS f3, ln(i::float8) AS f4, "
            f"'entity-' || i AS label, TIMESTAMP '2025-01-01' + i * INTERVAL '1 second' AS event_ts "
            f"FROM generate_series(1, {rows}) AS t(i)")


def _high_water_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _generic(memory_limit: int | None):  # noqa: ANN202
    from feature_layer.config import WarehouseSettings
    from feature_layer.offline.generic import GenericEngine

    profile = {"type": "postgres", **PG, "password": "", "schema": "public", "threads": 1}
    settings = WarehouseSettings(type="postgres", target="pg", engine="generic", memory_limit=memory_limit,
                                 profile=profile, **PG, schema="public")
    return GenericEngine.from_settings(settings)


def child(mode: str, rows: int, memory_limit: int) -> dict:
    sql = _query(rows)
    if mode == "native":
        from feature_layer.offline.engine import PostgresEngine

        engine = PostgresEngine(**PG)
    else:
        engine = _generic(memory_limit if mode == "budgeted" else None)
    base = _high_water_mb()
    started = time.perf_counter()
    count, largest = 0, 0
    if mode == "whole":
        cursor = engine._conn.handle.cursor()  # the generic path before: the whole result, then Arrow
        cursor.execute(sql)
        table = engine._rows(list(cursor.description), cursor.fetchall())
        count = largest = table.num_rows
        del table
    else:
        for batch in engine.stream_arrow(sql, batch_size=100_000):
            count += batch.num_rows
            largest = max(largest, batch.num_rows)
    seconds = time.perf_counter() - started
    engine.close()
    return {"mode": mode, "rows": count, "largest_batch": largest, "seconds": seconds,
            "peak_mb": _high_water_mb(), "base_mb": base}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--memory-limit", default="256MB")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        mode, rows, limit = args.child
        print(json.dumps(child(mode, int(rows), int(limit))))
        return
    from feature_layer.offline.kinds import parse_memory_limit

    limit = parse_memory_limit(args.memory_limit, "--memory-limit")
    results: dict[str, list[dict]] = {"budgeted": [], "whole": [], "native": []}
    load = open("/proc/loadavg").read().split()[:3]
    for round_ in range(args.rounds):
        order = ["budgeted", "native", "whole"] if round_ % 2 == 0 else ["whole", "native", "budgeted"]
        for mode in order:
            done = subprocess.run([sys.executable, "-m", "benchmarks.generic_memory", "--child", mode,
                                   str(args.rows), str(limit)], check=True, capture_output=True, text=True)
            results[mode].append(json.loads(done.stdout.strip().splitlines()[-1]))
    ratios = [b["seconds"] / n["seconds"] for b, n in zip(results["budgeted"], results["native"], strict=True)]
    print(f"{args.rows:,} rows x 7 columns from PostgreSQL, memory_limit {args.memory_limit}, {args.rounds} rounds, "
          f"load average {' '.join(load)} -> {' '.join(open('/proc/loadavg').read().split()[:3])}")
    print("| path | largest batch (rows) | RSS before the query, MB | peak RSS MB, median (max) | seconds, median |")
    print("|---|---|---|---|---|")
    for mode, label in (("budgeted", "generic, budgeted stream"), ("whole", "generic, whole result (before)"),
                        ("native", "native PostgresEngine stream (floor)")):
        runs = results[mode]
        peaks = [r["peak_mb"] for r in runs]
        base = statistics.median(r["base_mb"] for r in runs)
        print(f"| {label} | {runs[0]['largest_batch']:,} | {base:.0f} | {statistics.median(peaks):.0f} ({max(peaks):.0f}) | "
              f"{statistics.median(r['seconds'] for r in runs):.2f} |")
    print(f"generic budgeted / native time, median of per-round ratios: {statistics.median(ratios):.2f}x")


if __name__ == "__main__":
    main()
