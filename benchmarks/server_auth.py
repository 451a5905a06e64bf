"""Access tokens on vs off (``python -m benchmarks.server --auth``): the same project served twice,
once with an ``auth:`` block (a per-view online scope, the fine-grained check on every request),
once without; the two alternate run by run, the order flipping every round; medians reported."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

import yaml

from benchmarks.server import FEATURES, LUA, USERS, build_project, cpu_seconds, free_port, run_wrk, start_server

TOKEN = "bench-token-0123456789abcdef"


def _auth_copy(project: Path, dest: Path) -> Path:
    from feature_layer.access import token_hash

    shutil.copytree(project, dest, symlinks=True)
    views = sorted({f.split(".")[0] for f in FEATURES})
    block = {"tokens": [{"name": "bench", "sha256": token_hash(TOKEN),
                         "scopes": [f"online:views/{v}" for v in views]}]}
    (dest / "feature_layer.yml").write_text(yaml.safe_dump({"auth": block}))
    return dest


def auth_ab_main(args: argparse.Namespace) -> None:
    load_at_start = os.getloadavg()[0]
    tmp = Path(tempfile.mkdtemp(prefix="bench_server_auth_"))
    runs: dict[tuple[str, int, int], list[dict[str, float]]] = {}
    try:
        if args.project is not None:
            off = args.project
        else:
            (tmp / "off").mkdir()
            off = build_project(tmp / "off", args.rows)
        on = _auth_copy(off, tmp / "on")
        scripts = {}
        for name, header in (("auth off", ""), ("auth on", f'wrk.headers["Authorization"] = "Bearer {TOKEN}"')):
            scripts[name] = tmp / f"{name.replace(' ', '_')}.lua"
            scripts[name].write_text(LUA % {"features": json.dumps(FEATURES), "users": USERS, "auth": header})
        variants = (("auth off", off), ("auth on", on))
        for round_ in range(args.repeat):
            for workers in [int(w) for w in args.workers.split(",")]:
                for name, project in (variants if round_ % 2 == 0 else variants[::-1]):
                    port = free_port()
                    server = start_server(project, port, workers, args.online_store)
                    try:
                        for connections in [int(c) for c in args.connections.split(",")]:
                            url = f"http://127.0.0.1:{port}"
                            run_wrk(url, connections, args.threads, 2, scripts[name])  # warm-up
                            cpu = cpu_seconds(server.pid)
                            result = run_wrk(url, connections, args.threads, args.duration, scripts[name])
                            result["cpu_us"] = (cpu_seconds(server.pid) - cpu) / max(1, result["requests"]) * 1e6
                            runs.setdefault((name, workers, connections), []).append(result)
                            print(f"round {round_ + 1} {name}: {workers} workers, {connections} connections: "
                                  f"{result['rps']:,.0f} req/s, p99 {result['p99'] * 1000:.2f} ms, "
                                  f"non-2xx {result['non2xx']}, server CPU {result['cpu_us']:.1f} µs/request",
                                  file=sys.stderr)
                    finally:
                        server.terminate()
                        server.wait(timeout=20)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    lines = [
        "### Feature server: access tokens on vs off, single-entity `POST /v1/online-features`",
        "",
        f"`python -m benchmarks.server --auth --repeat {args.repeat} --duration {args.duration} --connections "
        f"{args.connections} --workers {args.workers}` on {os.cpu_count()} cores, wrk on the same machine, embedded "
        f"SQLite store. \"auth on\": a token scoped `online:views/<view>` to the 2 views read, so every request "
        f"pays the header parse, the SHA-256, the constant-time comparison and the per-view check. The two "
        f"alternate run by run (order flipped every round). 1-minute load average at the start: "
        f"{load_at_start:.2f} (the machine is shared with other jobs).",
        "",
        "| workers | connections | variant | req/s median | req/s min–max | p99 ms median | server CPU µs/request "
        "median | non-2xx |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for (name, workers, connections), results in sorted(runs.items(), key=lambda kv: (kv[0][1], kv[0][2], kv[0][0])):
        rps = [r["rps"] for r in results]
        lines.append(f"| {workers} | {connections} | {name} | {statistics.median(rps):,.0f} | "
                     f"{min(rps):,.0f}–{max(rps):,.0f} | {statistics.median(r['p99'] for r in results) * 1000:.2f} | "
                     f"{statistics.median(r['cpu_us'] for r in results):.1f} | "
                     f"{sum(r['non2xx'] for r in results)} |")
    for workers in [int(w) for w in args.workers.split(",")]:
        for connections in [int(c) for c in args.connections.split(",")]:
            off_rps = statistics.median(r["rps"] for r in runs[("auth off", workers, connections)])
            on_rps = statistics.median(r["rps"] for r in runs[("auth on", workers, connections)])
            off_cpu = statistics.median(r["cpu_us"] for r in runs[("auth off", workers, connections)])
            on_cpu = statistics.median(r["cpu_us"] for r in runs[("auth on", workers, connections)])
            lines.append(f"\n{workers} workers, {connections} connections: requests/s auth on / off = "
                         f"{on_rps / off_rps:.3f}; server CPU per request on / off = {on_cpu / off_cpu:.3f}")
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


def _asgi_cpu_us(app: object, headers: list[tuple[bytes, bytes]], body: bytes, n: int) -> float:
    """Process CPU µs per ``POST /v1/online-features`` sent straight to the ASGI app (no sockets)."""
    import asyncio
    import time

    async def run() -> float:
        sent: list[dict] = []

        async def receive() -> dict:
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: dict) -> None:
            sent.append(message)

        scope = {"type": "http", "method": "POST", "path": "/v1/online-features", "headers": headers,
                 "query_string": b"", "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80), "scheme": "http",
                 "http_version": "1.1", "root_path": ""}
        start = time.process_time()
        for _ in range(n):
            sent.clear()
            await app(dict(scope), receive, send)  # type: ignore[operator]
        if sent[0]["status"] != 200:
            raise RuntimeError(f"the lookup failed: {sent}")
        return (time.process_time() - start) / n * 1e6

    return asyncio.run(run())


def asgi_main() -> None:
    """In one process, the app with and without tokens, alternating; CPU per request (µs)."""
    parser = argparse.ArgumentParser(description="Access tokens on vs off, in-process (CPU per request).")
    parser.add_argument("--project", type=Path, default=None, help="A built and materialized project.")
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--requests", type=int, default=3000)
    args = parser.parse_args()
    os.environ.setdefault("FEATURE_LAYER_NOW", "2025-12-02T12:00:00+00:00")
    from feature_layer.client import FeatureStore
    from feature_layer.server.app import create_app

    tmp = Path(tempfile.mkdtemp(prefix="bench_auth_asgi_"))
    try:
        off = args.project
        if off is None:
            (tmp / "off").mkdir()
            off = build_project(tmp / "off", args.rows)
        on = _auth_copy(off, tmp / "on")
        body = json.dumps({"features": FEATURES, "entity_rows": [{"user_id": 7}]}).encode()
        base = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        variants = {"auth off": (create_app(FeatureStore(off), reload_interval=None), base),
                    "auth on": (create_app(FeatureStore(on), reload_interval=None),
                                [*base, (b"authorization", f"Bearer {TOKEN}".encode())])}
        for app, _ in variants.values():
            app.state.lookup_inline = True  # the lookup on the loop: CPU time is the whole request's
        results: dict[str, list[float]] = {name: [] for name in variants}
        for round_ in range(args.rounds):
            order = list(variants) if round_ % 2 == 0 else list(variants)[::-1]
            for name in order:
                app, headers = variants[name]
                results[name].append(_asgi_cpu_us(app, headers, body, args.requests))
        off_us, on_us = (statistics.median(results[n]) for n in ("auth off", "auth on"))
        print(f"`python -m benchmarks.server_auth --rounds {args.rounds} --requests {args.requests}`: "
              f"CPU per request, auth off {off_us:.1f} µs, auth on {on_us:.1f} µs (medians of {args.rounds} "
              f"interleaved rounds; on/off = {on_us / off_us:.3f}, +{on_us - off_us:.1f} µs); 1-minute load average "
              f"{os.getloadavg()[0]:.2f}. Rounds: {json.dumps({k: [round(v, 1) for v in vs] for k, vs in results.items()})}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    asgi_main()
