"""redis-server instructions per key of the write script against raw MSET, under callgrind.

    python -m benchmarks.write_script_instructions [benchmarks/scripts/*.lua ...]

The same workload as ``benchmarks.write_script_cost`` (5,000 keys per call as long as a view's,
distinct 97-byte v1 values; phases: fresh keys, overwriting older values, values older than the
stored ones; without and with a TTL), but 10 calls per contender against a redis-server run
under ``valgrind --tool=callgrind``, counting the server's instructions (callgrind's counters are
zeroed before and dumped after each contender). Instruction counts do not depend on what else
runs on the machine, so they compare variants on a shared, loaded machine where CPU times do
not; they ignore cache misses, so they are a proxy, not a time. The shipped script runs in mode
u (distinct keys, what materialization sends) and w; the extra scripts (bodies, see
``write_script_cost.variant``) and the previous script's body, if given, in mode w.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.write_script_cost import FENCE, KEY, LEDGER, TTL_US, N, _value, variant

CALLS = 10


class Callgrind:
    """A redis-server under callgrind; ``instructions()`` = instructions since the last call."""

    def __init__(self) -> None:
        import redis

        if not shutil.which("valgrind"):
            sys.exit("valgrind is not installed: sudo apt-get install valgrind")
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        self.dir = tempfile.mkdtemp(prefix="fl-callgrind-")
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        self.proc = subprocess.Popen(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={self.dir}/cg.%p", binary, "--port", str(port),
             "--save", "", "--appendonly", "no", "--dir", self.dir],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        self.client = redis.Redis(port=port, socket_timeout=600)
        for _ in range(600):
            try:
                self.client.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.1)

    def instructions(self) -> int:
        subprocess.run(["callgrind_control", "-d", str(self.proc.pid)], capture_output=True, check=True)
        time.sleep(0.5)
        newest = max(glob.glob(f"{self.dir}/cg.*"), key=os.path.getmtime)
        for line in Path(newest).read_text().splitlines():
            if line.startswith(("summary:", "totals:")):
                return int(line.split()[1])
        raise RuntimeError(f"no totals in {newest}")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


def _prefill(client, ev: int) -> None:  # noqa: ANN001
    for c in range(CALLS):
        client.mset({KEY % (c * N + i): _value(ev, c * N + i) for i in range(N)})


def _script(client, sha: str, mode: bytes, ev: int, ttl: int) -> None:  # noqa: ANN001
    expiry = [b"%d" % -(-(ev + ttl) // 1000)] * N if ttl else []  # the writer's PX at clock 0
    for c in range(CALLS):
        keys = [KEY % (c * N + i) for i in range(N)]
        values = [_value(ev, c * N + i) for i in range(N)]
        client.evalsha(sha, N + 2, FENCE, LEDGER, *keys, mode, b"1", b"0", b"%d" % (c + 1), b"0", b"%d" % ttl,
                       *values, *expiry)


def main() -> None:
    from feature_layer.online.redis_store import _SCRIPT

    scripts: dict[str, tuple[str | None, bytes]] = {
        "write_latest.lua (shipped), mode u": (_SCRIPT, b"u"),
        "write_latest.lua (shipped), mode w": (_SCRIPT, b"w"),
    }
    scripts.update({Path(p).name: (variant(_SCRIPT, Path(p).read_text()), b"w") for p in sys.argv[1:]})
    scripts["raw MSET"] = (None, b"")
    server = Callgrind()
    client = server.client
    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, load {os.getloadavg()[0]:.1f}")
    try:
        for ttl in (0, TTL_US):
            for phase, ev in (("fresh", 100), ("newer", 200), ("older", 50)):
                for name, (source, mode) in scripts.items():
                    if ttl and source is None:
                        continue  # raw MSET sets no expiry
                    client.flushall()
                    client.set(FENCE, b"1")
                    client.setbit(LEDGER, 0, 1)
                    if phase != "fresh":
                        _prefill(client, 150)
                    sha = client.script_load(source) if source else ""
                    server.instructions()  # a dump zeroes the counters
                    if source is None:
                        _prefill(client, ev)
                    else:
                        _script(client, sha, mode, ev, ttl)
                    per_key = server.instructions() / (N * CALLS)
                    label = f"{phase}{', TTL' if ttl else ''}"
                    print(f"{label:11s} {name:36s} {per_key:8,.0f} instructions/key", flush=True)
    finally:
        server.stop()


if __name__ == "__main__":
    main()
