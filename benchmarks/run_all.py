"""`make bench`: every benchmark, one after the other (never in parallel: they would skew
each other), each writing its report under docs/bench_*.md. BENCHMARKS.md summarises them.

    python -m benchmarks.run_all [--quick]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"


def runs(quick: bool) -> list[tuple[str, list[str]]]:
    return [
        ("registry_load", ["--out", str(DOCS / "bench_registry.md")]),
        ("training_set", (["--repeat", "1", "--rounds", "1"] if quick else ["--postgres"])
         + ["--out", str(DOCS / "bench_training_set.md")]),
        ("online", ["--quick"] if quick else []),
        ("search", ["--out", str(DOCS / "bench_search.md")]),
        ("server", (["--duration", "5"] if quick else []) + ["--out", str(DOCS / "bench_server.md")]),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="Fewer repeats: a smoke run, not for the record.")
    parser.add_argument("--only", nargs="*", help="Run only these benchmarks (module names).")
    args = parser.parse_args(argv)
    failed = []
    for name, extra in runs(args.quick):
        if args.only and name not in args.only:
            continue
        print(f"\n=== benchmarks.{name} {' '.join(extra)}", flush=True)
        started = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", f"benchmarks.{name}", *extra], cwd=ROOT)
        print(f"=== benchmarks.{name}: exit {done.returncode} in {time.perf_counter() - started:.0f}s", flush=True)
        if done.returncode:
            failed.append(name)
    if failed:
        print(f"Failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    print("\nReports: docs/bench_*.md; summary: BENCHMARKS.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
