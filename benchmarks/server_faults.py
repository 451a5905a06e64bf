"""How fast the feature server says "the online store is down": lookups and /healthz against a
Redis that refuses connections (nothing listening) and one that accepts and never answers.

Builds the example project (or reuses ``--project``), starts ``feature-layer serve`` with
``FEATURE_LAYER_ONLINE_STORE`` pointing at the broken store, and times sequential requests
from one client on loopback (the client's own time included).

    python -m benchmarks.server_faults [--requests 50] [--project PATH] [--out docs/bench_server_faults.md]
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

from benchmarks.server import build_project, free_port

BODY = {"features": ["user_profile_features.country"], "entity_rows": [{"user_id": 7}]}


def _serve(project: Path, online_store: str, deadline: float) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = dict(os.environ, FEATURE_LAYER_ONLINE_STORE=online_store)
    cmd = [sys.executable, "-c", "from feature_layer.cli import main; main()", "--project-dir", str(project), "serve",
           "--port", str(port), "--log-level", "error", "--reload-interval", "0", "--lookup-deadline", str(deadline)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    stop = time.monotonic() + 60
    while time.monotonic() < stop:
        if proc.poll() is not None:
            raise RuntimeError(proc.stderr.read().decode()[-2000:])
        try:
            httpx.get(f"{url}/healthz", timeout=5)
            return proc, url
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("the server did not start")


def _time(client: httpx.Client, method: str, path: str, n: int, **kwargs: object) -> tuple[list[float], set[int]]:
    seconds, statuses = [], set()
    for _ in range(n):
        start = time.perf_counter()
        response = client.request(method, path, **kwargs)
        seconds.append(time.perf_counter() - start)
        statuses.add(response.status_code)
    return seconds, statuses


def _row(name: str, seconds: list[float], statuses: set[int]) -> str:
    ms = sorted(s * 1000 for s in seconds)
    p99 = ms[min(len(ms) - 1, int(0.99 * len(ms)))]
    return (f"| {name} | {len(ms)} | {', '.join(map(str, sorted(statuses)))} | {ms[0]:.1f} | "
            f"{statistics.median(ms):.1f} | {p99:.1f} | {ms[-1]:.1f} |")


class _Silent:
    """Accepts connections and never answers (a hung Redis)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(256)
        self.port = self.sock.getsockname()[1]
        self.held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                self.held.append(self.sock.accept()[0])
            except OSError:
                return

    def close(self) -> None:
        self.sock.close()
        for conn in self.held:
            conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=50)
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--project", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    load = os.getloadavg()[0]
    tmp = Path(tempfile.mkdtemp(prefix="bench_server_faults_"))
    rows: list[str] = []
    try:
        project = args.project or build_project(tmp, args.rows)
        refused = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
        proc, url = _serve(project, refused, 1.5)
        try:
            with httpx.Client(base_url=url, timeout=30) as client:
                _time(client, "POST", "/v1/online-features", 3, json=BODY)  # warm-up
                rows.append(_row("lookup, Redis refusing connections", *_time(
                    client, "POST", "/v1/online-features", args.requests, json=BODY)))
                rows.append(_row("/healthz, Redis refusing connections", *_time(client, "GET", "/healthz", args.requests)))
        finally:
            proc.terminate()
            proc.wait(timeout=20)
        silent = _Silent()
        try:
            proc, url = _serve(project, f"redis://127.0.0.1:{silent.port}/0", 1.5)
            try:
                with httpx.Client(base_url=url, timeout=30) as client:
                    n = max(5, args.requests // 10)
                    rows.append(_row("lookup, Redis accepting and never answering (deadline 1.5 s)",
                                     *_time(client, "POST", "/v1/online-features", n, json=BODY)))
                    rows.append(_row("/healthz, Redis never answering", *_time(client, "GET", "/healthz", n)))
            finally:
                proc.terminate()
                proc.wait(timeout=20)
        finally:
            silent.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    text = "\n".join([
        "### Feature server against a broken online store",
        "",
        f"`python -m benchmarks.server_faults --requests {args.requests}` on {os.cpu_count()} cores, "
        f"`feature-layer serve` (1 worker, `--lookup-deadline 1.5`), one sequential httpx client on loopback. "
        f"1-minute load average at the start: {load:.2f}.",
        "",
        "| case | requests | statuses | min ms | median ms | p99 ms | max ms |",
        "|---|---|---|---|---|---|---|",
        *rows,
        "",
        "Target: a refused connection answers 503 in < 100 ms, naming the store; /healthz says so within its "
        "bounded ping (0.5 s).",
    ])
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
