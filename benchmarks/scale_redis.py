"""Per-node Redis throughput for docs/scale.md: one private redis-server, redis-py + hiredis clients.

Loads ``--keys`` keys shaped like the online store's (~55 bytes), each with an expiry, of
``--value-bytes`` bytes (the size of a 10-float feature row as the online
store encodes it is about 90 bytes), then for each access pattern runs for ``--seconds`` with
``--clients`` client processes and reports:

* what the clients got (wall clock): lookups (keys) per second;
* what it cost the server: redis-server's own CPU time (``/proc/<pid>/stat``, user + system)
  per key — the figure that decides how many keys one Redis core can serve when it is saturated
  (Redis executes commands on one thread), and that the load of other processes on this shared
  machine barely moves. ``capacity = 1 / CPU per key``.

Patterns: ``GET`` one key per round trip (single-entity lookups); ``MGET`` of 1,000 keys per round
trip (batch lookups); pipelined ``SET … PX`` of 1,000 keys per round trip (a write without the
online store's never-older script, which costs more server CPU per key); all with hiredis as
redis-py's parser. Memory: ``used_memory`` growth per
key loaded.

    python -m benchmarks.scale_redis --keys 200000 --seconds 5 --clients 2
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import random
import sys
import time


def _client(port: int):  # noqa: ANN202
    import redis
    from redis.connection import _HiredisParser

    pool = redis.ConnectionPool(host="127.0.0.1", port=port, parser_class=_HiredisParser)
    return redis.Redis(connection_pool=pool)


def _worker(port: int, pattern: str, keys: int, batch: int, value_bytes: int, seconds: float, seed: int,
            out) -> None:  # noqa: ANN001
    r = _client(port)
    rng = random.Random(seed)
    value = os.urandom(value_bytes)
    names = [key(i) for i in range(keys)]
    done = 0
    stop = time.perf_counter() + seconds
    while time.perf_counter() < stop:
        if pattern == "GET":
            r.get(names[rng.randrange(keys)])
            done += 1
        elif pattern == "SET":  # a pipelined batch of SET … PX (materialization without the script)
            start = rng.randrange(keys - batch)
            pipe = r.pipeline(transaction=False)
            for name in names[start : start + batch]:
                pipe.set(name, value, px=30 * 86_400_000)
            pipe.execute()
            done += batch
        else:
            start = rng.randrange(keys - batch)
            values = r.mget(names[start : start + batch])
            done += len(values)
    out.put(done)


PREFIX = b"1:default:user_transaction_features:3f9a1c2b7d4e:"
"""A key shaped like the online store's (``version:namespace:view:fingerprint:entity``)."""


def key(i: int) -> bytes:
    return PREFIX + str(i).encode()


def _server_cpu(pid: int) -> float:
    """redis-server's user + system CPU seconds so far."""
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(server, pattern: str, keys: int, batch: int, value_bytes: int, seconds: float,  # noqa: ANN001
            clients: int) -> dict:
    queue: mp.Queue = mp.Queue()
    procs = [
        mp.Process(target=_worker, args=(server.port, pattern, keys, batch, value_bytes, seconds, i, queue)) for i in range(clients)
    ]
    cpu0, wall0 = _server_cpu(server.proc.pid), time.perf_counter()
    for p in procs:
        p.start()
    done = sum(queue.get() for _ in procs)
    for p in procs:
        p.join()
    cpu, wall = _server_cpu(server.proc.pid) - cpu0, time.perf_counter() - wall0
    return {
        "pattern": {"GET": "GET", "SET": f"pipelined SET … PX, {batch:,} per round trip"}.get(
            pattern, f"MGET of {batch:,}"),
        "clients": clients,
        "keys_per_s": done / seconds,
        "server_cpu_us_per_key": cpu / done * 1e6,
        "capacity_keys_per_s": done / cpu if cpu else float("inf"),
        "wall": wall,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keys", type=int, default=200_000)
    parser.add_argument("--value-bytes", type=int, default=90)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--clients", type=int, default=2)
    parser.add_argument("--batch", type=int, default=1000)
    args = parser.parse_args(argv)
    from benchmarks.common import markdown_table
    from benchmarks.online import PrivateRedis

    server = PrivateRedis()
    try:
        r = _client(server.port)
        before = r.info("memory")["used_memory"]
        value = os.urandom(args.value_bytes)
        for start in range(0, args.keys, 5000):  # with an expiry, as materialization writes them
            pipe = r.pipeline(transaction=False)
            for i in range(start, min(args.keys, start + 5000)):
                pipe.set(key(i), value, px=30 * 86_400_000)
            pipe.execute()
        per_key = (r.info("memory")["used_memory"] - before) / args.keys
        rows = []
        for pattern in ("GET", "MGET", "SET"):
            for clients in sorted({1, args.clients}):
                m = measure(server, pattern, args.keys, args.batch, args.value_bytes, args.seconds, clients)
                rows.append([
                    m["pattern"], str(m["clients"]), f"{m['keys_per_s']:,.0f}",
                    f"{m['server_cpu_us_per_key']:.2f}", f"{m['capacity_keys_per_s']:,.0f}",
                ])
        version = server.version
    finally:
        server.stop()
    command = "python -m benchmarks.scale_redis " + " ".join(argv if argv is not None else sys.argv[1:])
    print(
        f"`{command}` — {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, redis-server {version} "
        f"(private, no persistence), redis-py + hiredis, {os.cpu_count()} CPUs shared with other work "
        f"(load average {os.getloadavg()[0]:.1f}); {args.keys:,} keys × {args.value_bytes} B values: "
        f"{per_key:.0f} B of `used_memory` per key.\n"
    )
    print(markdown_table(
        ["pattern", "client processes", "keys/s (clients, wall clock)", "server CPU µs per key",
         "one saturated Redis core (keys/s = 1 / CPU per key)"],
        rows,
    ))


if __name__ == "__main__":
    main()
