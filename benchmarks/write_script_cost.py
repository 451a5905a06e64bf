"""Redis server cost per key of the never-older write script against raw MSET (issue 10, materialization).

    python -m benchmarks.write_script_cost [benchmarks/scripts/*.lua ...]

Against one private redis-server: 100 calls of 5,000 keys (keys as long as a view's, distinct
97-byte values in feature_layer's v1 layout: equal values would be one string to Lua, which
interns strings, and cost less than real ones) per contender, in three phases (fresh keys;
overwriting older values; values older than the stored ones), without and with a TTL (each
value's ``PX`` passed as the writer does), each phase repeated three times, the minimum kept.
The shipped script runs in mode w (keys may repeat) and u (distinct keys, as materialization
sends them); the variants in mode w. Per key: the command's own
time (INFO commandstats usec) and the redis-server process's CPU time (/proc/PID/stat), which is
less sensitive to other processes on a shared machine. The extra scripts are measurement aids
(``benchmarks/scripts``): a no-op taking the same arguments (the cost of handing 2 x 5,000
arguments to Lua), MGET only, MSET only, and MGET + compare + MSET (a candidate write script).
"""

from __future__ import annotations

import os
import struct
import sys
import time
from pathlib import Path

from benchmarks.online import PrivateRedis

N = 5000
CALLS = 100
TTL_US = 10**12  # about 11.6 days: every value live
FENCE, LEDGER = b"fl1:s:__markers__:fence", b"fl1:s:__markers__:ledger"
KEY = b"fl1:scale:standard:81417598:%d"  # as long as the scale benchmark's keys


def _value(ev: int, i: int) -> bytes:
    return b"\x01" + struct.pack("<qq", ev, ev) + struct.pack("<q", i) * 10


class Bench:
    def __init__(self, server: PrivateRedis) -> None:
        self.server, self.client = server, server.client()

    def cpu(self) -> float:
        fields = Path(f"/proc/{self.server.proc.pid}/stat").read_text().split(")")[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def script(self, source: str, mode: bytes, ev: int, ttl: int) -> None:
        sha = self.client.script_load(source)
        self.client.set(FENCE, b"1")
        self.client.setbit(LEDGER, 0, 1)
        expiry = [b"%d" % -(-(ev + ttl) // 1000)] * N if ttl else []  # the writer's PX at clock 0
        for c in range(CALLS):
            keys = [KEY % (c * N + i) for i in range(N)]
            values = [_value(ev, c * N + i) for i in range(N)]
            argv = [mode, b"1", b"0", b"%d" % (c + 1), b"0", b"%d" % ttl, *values, *expiry]
            self.client.evalsha(sha, N + 2, FENCE, LEDGER, *keys, *argv)

    def mset(self, ev: int) -> None:
        for c in range(CALLS):
            self.client.mset({KEY % (c * N + i): _value(ev, c * N + i) for i in range(N)})

    def measure(self, source: str | None, mode: bytes, phase: str, ev: int, ttl: int) -> tuple[float, float]:
        best = (float("inf"), float("inf"))
        for _ in range(3):
            self.client.flushall()
            if phase != "fresh":
                self.mset(150)
            self.client.config_resetstat()
            before = self.cpu()
            self.mset(ev) if source is None else self.script(source, mode, ev, ttl)
            cpu = (self.cpu() - before) / (N * CALLS) * 1e6
            stats = self.client.info("commandstats").get("cmdstat_" + ("mset" if source is None else "evalsha"), {})
            best = (min(best[0], stats.get("usec", 0) / (N * CALLS)), min(best[1], cpu))
        return best


def variant(shipped: str, body: str) -> str:
    """A measurement variant: the shipped script's head (arguments, fence, ledger checks) + its body."""
    return shipped.split("\nlocal now = tonumber(ARGV[5])")[0] + "\n" + body


def main() -> None:
    from feature_layer.online.redis_store import _SCRIPT

    scripts: dict[str, tuple[str | None, bytes]] = {
        "write_latest.lua (shipped), mode w": (_SCRIPT, b"w"),
        "write_latest.lua (shipped), mode u": (_SCRIPT, b"u"),
    }
    scripts.update({Path(p).name: (variant(_SCRIPT, Path(p).read_text()), b"w") for p in sys.argv[1:]})
    scripts["raw MSET"] = (None, b"")
    server = PrivateRedis()
    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, load {os.getloadavg()[0]:.1f}")
    try:
        bench = Bench(server)
        for ttl in (0, TTL_US):
            for phase, ev in (("fresh", 100), ("newer", 200), ("older", 50)):
                for name, (source, mode) in scripts.items():
                    if ttl and source is None:
                        continue  # raw MSET sets no expiry
                    usec, cpu = bench.measure(source, mode, phase, ev, ttl)
                    label = f"{phase}{', TTL' if ttl else ''}"
                    print(f"{label:11s} {name:36s} command {usec:.2f} us/key   server CPU {cpu:.2f} us/key",
                          flush=True)
    finally:
        server.stop()


if __name__ == "__main__":
    main()
