"""Feature-server benchmark: single-entity ``POST /v1/online-features`` on loopback.

Builds the example project (demo data → ``dbt build`` → ``dbt docs generate`` →
``materialize``), starts ``feature-layer serve --workers N`` (N = cores) in a subprocess and
drives it with ``wrk`` (Debian: ``apt-get install wrk``) and a Lua script that POSTs one
entity row per request, a random user each time. The load generator runs on the same
machine, so the figures include its CPU. Without wrk, an asyncio httpx load generator is
used instead (slower itself; the report says which one ran).

    python -m benchmarks.server [--duration 15] [--connections 8,32] [--workers N]
                                [--online-store redis://127.0.0.1:6379/0 | --redis] [--out docs/bench_server.md]
    python -m benchmarks.server --auth [--repeat 3] …   # access tokens on vs off, interleaved (ops2)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
FEATURES = [
    "user_profile_features.country",
    "user_profile_features.is_verified",
    "user_profile_features.age_at_signup",
    "user_transaction_features.amount_avg_7d",
    "user_transaction_features.txn_count_24h",
]
USERS = 500

LUA = """
math.randomseed(os.time())
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local features = '%(features)s'
%(auth)s
request = function()
  local body = '{"features":' .. features .. ',"entity_rows":[{"user_id":' .. math.random(1, %(users)d) .. '}]}'
  return wrk.format(nil, "/v1/online-features", nil, body)
end
"""


def build_project(root: Path, rows: int) -> Path:
    from feature_layer.client import FeatureStore
    from feature_layer.dbt.runner import run_dbt
    from feature_layer.demo.data import generate_demo_data

    for name in ("dbt_project.yml", "profiles.yml"):
        shutil.copy2(REPO / name, root / name)
    for name in ("models", "macros"):
        shutil.copytree(REPO / name, root / name)
    generate_demo_data(root / "data" / "raw", rows=rows, seed=7)
    env_backup = {k: os.environ.pop(k) for k in list(os.environ) if k.startswith(("FEATURE_LAYER_", "DBT_"))}
    try:
        run_dbt(["build"], root, target="duckdb", quiet=True)
        run_dbt(["docs", "generate"], root, target="duckdb", quiet=True)
    finally:
        os.environ.update(env_backup)
    with FeatureStore(root) as store:
        store.materialize()
    return root


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(project: Path, port: int, workers: int, online_store: str | None,
                 source: Path | None = None) -> subprocess.Popen:
    env = dict(os.environ)
    if source is not None:  # serve another checkout's feature_layer (the A/B baseline)
        env["PYTHONPATH"] = os.pathsep.join([str(source), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    if online_store:
        env["FEATURE_LAYER_ONLINE_STORE"] = online_store
    cmd = [sys.executable, "-c", "from feature_layer.cli import main; main()", "--project-dir", str(project), "serve", "--port", str(port),
           "--workers", str(workers), "--log-level", "warning", "--reload-interval", "2"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited: {proc.stderr.read().decode()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code in (200, 503):
                return proc
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("the server did not start within 60 s")


def _seconds(value: str) -> float:
    number, unit = re.match(r"([\d.]+)(us|ms|s|m)", value).groups()
    return float(number) * {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}[unit]


def run_wrk(url: str, connections: int, threads: int, duration: int, script: Path) -> dict[str, float]:
    out = subprocess.run(
        ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}s", "--latency", "-s", str(script), url],
        capture_output=True, text=True, check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    lat = {p: _seconds(v) for p, v in re.findall(r"^\s+(50|75|90|99)%\s+(\S+)", out, re.M)}
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    total = int(re.search(r"(\d+) requests in", out).group(1))
    return {"rps": rps, "p50": lat["50"], "p90": lat["90"], "p99": lat["99"], "requests": total,
            "non2xx": int(non2xx.group(1)) if non2xx else 0, "socket_errors": errors.group(1) if errors else ""}


async def _httpx_load(url: str, connections: int, duration: float) -> dict[str, float]:
    import random

    latencies: list[float] = []
    bad = 0
    stop = time.perf_counter() + duration
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=10) as client:
        async def worker() -> None:
            nonlocal bad
            while time.perf_counter() < stop:
                body = {"features": FEATURES, "entity_rows": [{"user_id": random.randint(1, USERS)}]}
                start = time.perf_counter()
                r = await client.post("/v1/online-features", json=body)
                latencies.append(time.perf_counter() - start)
                bad += r.status_code != 200
        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(connections)))
        elapsed = time.perf_counter() - t0
    latencies.sort()
    q = lambda p: latencies[min(len(latencies) - 1, int(p * len(latencies)))]  # noqa: E731
    return {"rps": len(latencies) / elapsed, "p50": q(0.5), "p90": q(0.9), "p99": q(0.99), "requests": len(latencies),
            "non2xx": bad, "socket_errors": ""}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=15, help="Seconds per run.")
    parser.add_argument("--connections", default="8,32", help="Comma-separated concurrent connections per run.")
    cores = os.cpu_count() or 1
    parser.add_argument("--workers", default=",".join(str(w) for w in sorted({max(1, cores - 1), cores})),
                        help="Comma-separated uvicorn worker counts to try (default: cores-1 and cores).")
    parser.add_argument("--threads", type=int, default=1, help="wrk threads.")
    parser.add_argument("--rows", type=int, default=20_000, help="Demo transactions to build the project from.")
    parser.add_argument("--project", type=Path, default=None, help="Reuse a built and materialized project.")
    parser.add_argument("--online-store", default=None, help="Online store URL (default: the embedded SQLite store).")
    parser.add_argument("--redis", action="store_true",
                        help="Start a private redis-server on a free port and use it as the online store.")
    parser.add_argument("--out", type=Path, default=None, help="Write the markdown report here too.")
    parser.add_argument("--baseline-src", type=Path, default=None,
                        help="A/B: also serve the feature_layer package found in this folder (e.g. `git archive main "
                        "| tar -x -C /tmp/base`), alternating with this one run by run.")
    parser.add_argument("--auth", action="store_true",
                        help="A/B: access tokens (auth: in feature_layer.yml, a per-view scope) on vs off, alternating.")
    parser.add_argument("--repeat", type=int, default=1, help="Runs per configuration (with --baseline-src: pairs).")
    parser.add_argument("--now", default="2025-12-02T12:00:00+00:00",
                        help="FEATURE_LAYER_NOW for materialization and the servers: the demo data's end, so the "
                        "looked-up values are live, not expired (default: the data's last day).")
    args = parser.parse_args()
    os.environ["FEATURE_LAYER_NOW"] = args.now
    if args.baseline_src is not None:
        ab_main(args)
        return
    if args.auth:
        from benchmarks.server_auth import auth_ab_main

        auth_ab_main(args)
        return
    load_at_start = os.getloadavg()[0]

    tmp = Path(tempfile.mkdtemp(prefix="bench_server_"))
    redis_proc = None
    try:
        if args.redis:
            redis_port = free_port()
            redis_proc = subprocess.Popen(["redis-server", "--port", str(redis_port), "--save", "", "--appendonly", "no"],
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            args.online_store = f"redis://127.0.0.1:{redis_port}/0"
            time.sleep(0.5)
        if args.project is None:
            print("building the example project …", file=sys.stderr)
            project = build_project(tmp, args.rows)
        else:
            project = args.project
        if args.online_store:
            from feature_layer.client import FeatureStore

            with FeatureStore(project, online_store=args.online_store) as store:
                # full refresh: the state store's watermarks describe the default store, not this one
                store.materialize(full_refresh=True)
        use_wrk = shutil.which("wrk") is not None
        script = tmp / "post.lua"
        script.write_text(LUA % {"features": json.dumps(FEATURES), "users": USERS, "auth": ""})
        results = []
        served = 0
        for workers in [int(w) for w in args.workers.split(",")]:
            port = free_port()
            url = f"http://127.0.0.1:{port}"
            server = start_server(project, port, workers, args.online_store)
            try:
                sample = httpx.post(f"{url}/v1/online-features",
                                    json={"features": FEATURES, "entity_rows": [{"user_id": 7}]}).json()
                for connections in [int(c) for c in args.connections.split(",")]:
                    if use_wrk:
                        run_wrk(url, connections, args.threads, 2, script)  # warm-up
                        result = run_wrk(url, connections, args.threads, args.duration, script)
                    else:
                        asyncio.run(_httpx_load(url, connections, 2))
                        result = asyncio.run(_httpx_load(url, connections, args.duration))
                    results.append((workers, connections, result))
                    print(f"{workers} workers, {connections} connections: {result}", file=sys.stderr)
                metrics = httpx.get(f"{url}/metrics").text
                served += sum(int(float(m)) for m in re.findall(
                    r'feature_layer_http_requests_total\{method="POST",route="/v1/online-features",status="200"\} (\S+)',
                    metrics))
            finally:
                server.terminate()
                server.wait(timeout=20)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if redis_proc is not None:
            redis_proc.terminate()
            redis_proc.wait(timeout=10)

    generator = f"wrk ({args.threads} thread, Lua POST script)" if use_wrk else "an asyncio httpx client"
    lines = [
        "### Feature server: single-entity `POST /v1/online-features`",
        "",
        f"`python -m benchmarks.server --duration {args.duration} --connections {args.connections} "
        f"--workers {args.workers}` on {os.cpu_count()} cores: `feature-layer serve --workers N` (uvicorn"
        f"{', uvloop + httptools' if _has('uvloop') and _has('httptools') else ', asyncio + h11'}), "
        f"online store: {'a private Redis on loopback' if args.redis else args.online_store or 'embedded SQLite'}; load generator on the same machine: {generator}. "
        f"Each request asks {len(FEATURES)} features of 2 feature views for one random user of {USERS}. "
        f"1-minute load average when the script started: {load_at_start:.2f}.",
        "",
        "| server workers | connections | requests/s | p50 ms | p90 ms | p99 ms | requests | non-2xx |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for workers, connections, r in results:
        lines.append(f"| {workers} | {connections} | {r['rps']:,.0f} | {r['p50'] * 1000:.2f} | {r['p90'] * 1000:.2f} | "
                     f"{r['p99'] * 1000:.2f} | {r['requests']:,} | {r['non2xx']} |")
    lines += ["", "Targets: ≥ 2,500 requests/s with p99 < 10 ms on 2 cores, load generator included. "
              f"Sample response: `{json.dumps(sample)}`",
              f"(The workers' `/metrics` scraped after each run counted {served:,} successful lookups.)"]
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` and its children (the uvicorn workers), from /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(entry.name) == pid or int(fields[1]) == pid:  # fields[1]: the parent pid
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


def ab_main(args: argparse.Namespace) -> None:
    """Before/after: the baseline checkout and this one, alternating, ``--repeat`` pairs per setting."""
    import statistics

    load_at_start = os.getloadavg()[0]
    tmp = Path(tempfile.mkdtemp(prefix="bench_server_ab_"))
    runs: dict[tuple[str, int, int], list[dict[str, float]]] = {}
    try:
        project = args.project or build_project(tmp, args.rows)
        script = tmp / "post.lua"
        script.write_text(LUA % {"features": json.dumps(FEATURES), "users": USERS, "auth": ""})
        variants = (("before", args.baseline_src.resolve()), ("after", None))
        for round_ in range(args.repeat):
            for workers in [int(w) for w in args.workers.split(",")]:
                for name, source in (variants if round_ % 2 == 0 else variants[::-1]):
                    port = free_port()
                    server = start_server(project, port, workers, args.online_store, source)
                    try:
                        for connections in [int(c) for c in args.connections.split(",")]:
                            url = f"http://127.0.0.1:{port}"
                            run_wrk(url, connections, args.threads, 2, script)  # warm-up
                            cpu = cpu_seconds(server.pid)
                            result = run_wrk(url, connections, args.threads, args.duration, script)
                            # the server's CPU per request: what throughput costs, whatever else loads the machine
                            result["cpu_us"] = (cpu_seconds(server.pid) - cpu) / max(1, result["requests"]) * 1e6
                            runs.setdefault((name, workers, connections), []).append(result)
                            print(f"round {round_ + 1} {name}: {workers} workers, {connections} connections: "
                                  f"{result['rps']:,.0f} req/s, p99 {result['p99'] * 1000:.2f} ms, "
                                  f"server CPU {result['cpu_us']:.1f} µs/request", file=sys.stderr)
                    finally:
                        server.terminate()
                        server.wait(timeout=20)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    lines = [
        "### Feature server A/B: single-entity `POST /v1/online-features`, before and after",
        "",
        f"`python -m benchmarks.server --baseline-src {args.baseline_src} --repeat {args.repeat} --duration "
        f"{args.duration} --connections {args.connections} --workers {args.workers}` on {os.cpu_count()} cores, "
        f"wrk on the same machine, embedded SQLite store; before and after alternate run by run (the order flips "
        f"every round). 1-minute load average at the start: {load_at_start:.2f}.",
        "",
        "| workers | connections | variant | req/s median | req/s min–max | p99 ms median | server CPU µs/request "
        "median (min–max) | non-2xx |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for (name, workers, connections), results in sorted(runs.items(), key=lambda kv: (kv[0][1], kv[0][2], kv[0][0] != "before")):
        rps = [r["rps"] for r in results]
        cpu = [r["cpu_us"] for r in results]
        lines.append(f"| {workers} | {connections} | {name} | {statistics.median(rps):,.0f} | "
                     f"{min(rps):,.0f}–{max(rps):,.0f} | {statistics.median(r['p99'] for r in results) * 1000:.2f} | "
                     f"{statistics.median(cpu):.1f} ({min(cpu):.1f}–{max(cpu):.1f}) | {sum(r['non2xx'] for r in results)} |")
    for workers in [int(w) for w in args.workers.split(",")]:
        for connections in [int(c) for c in args.connections.split(",")]:
            before = statistics.median(r["rps"] for r in runs[("before", workers, connections)])
            after = statistics.median(r["rps"] for r in runs[("after", workers, connections)])
            cpu_before = statistics.median(r["cpu_us"] for r in runs[("before", workers, connections)])
            cpu_after = statistics.median(r["cpu_us"] for r in runs[("after", workers, connections)])
            lines.append(f"\n{workers} workers, {connections} connections: requests/s after / before = "
                         f"{after / before:.3f}; server CPU per request after / before = {cpu_after / cpu_before:.3f}")
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


if __name__ == "__main__":
    main()
