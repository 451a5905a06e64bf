"""The suite's own scheduling: ``make test`` runs ``pytest -n 2 --dist loadgroup`` and relies on
``xdist_group`` to keep each group on one worker (one JVM for the Spark tests, one browser, one
Redis Cluster). pytest 9.2 made xdist 3.8 drop the marks without a word (pytest-xdist#1386): the
Spark tests then started two JVMs and built the example project twice. This runs a small suite
the same way and fails if a group is ever split again.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

GROUPED = '''
import os
import pytest

pytestmark = pytest.mark.xdist_group("together")


@pytest.mark.parametrize("i", range(4))
def test_records_its_worker(i):
    out = os.environ["GROUPING_RECORDS"]
    with open(os.path.join(out, f"{__name__}-{i}"), "w") as f:
        f.write(os.environ["PYTEST_XDIST_WORKER"])
'''

UNGROUPED = '''
import time
import pytest


@pytest.mark.parametrize("i", range(8))
def test_keeps_the_other_worker_busy(i):
    time.sleep(0.05)
'''


def test_an_xdist_group_runs_on_one_worker(tmp_path: Path) -> None:
    suite = tmp_path / "suite"
    suite.mkdir()
    (suite / "test_a.py").write_text(GROUPED)
    (suite / "test_b.py").write_text(GROUPED)
    (suite / "test_c.py").write_text(UNGROUPED)
    records_dir = tmp_path / "workers"
    records_dir.mkdir()
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-n", "2", "--dist", "loadgroup", "-q", "-p", "no:cacheprovider",
         "-o", "addopts=", str(suite)],
        capture_output=True, text=True, cwd=tmp_path, timeout=240,
        env={**os.environ, "GROUPING_RECORDS": str(records_dir)},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    records = sorted(records_dir.iterdir())
    assert len(records) == 8, [str(r) for r in records]  # both grouped files ran, every case recorded
    workers = {r.read_text() for r in records}
    assert len(workers) == 1, f"the group 'together' was split over workers {sorted(workers)}"


def test_the_longest_group_is_handed_out_first() -> None:
    """``make test`` hands out work in collection order (``--no-loadscope-reorder``), and the
    suite's conftest puts the Spark group first: started last, it ran alone on one worker at the
    end (616 s for the suite against ~10 minutes allowed)."""
    repo = Path(__file__).resolve().parents[1]
    make = (repo / "Makefile").read_text()
    assert "--dist loadgroup --no-loadscope-reorder" in make.split("\ntest:", 1)[1].split("\n\n", 1)[0]
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
         "tests/test_demo_data.py", "tests/test_spark.py"],
        capture_output=True, text=True, cwd=repo, timeout=240,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    ids = [line for line in done.stdout.splitlines() if "::" in line]
    spark = [i for i, line in enumerate(ids) if line.startswith("tests/test_spark.py")]
    assert spark and len(spark) < len(ids), ids
    assert spark == list(range(len(spark))), f"the Spark tests are not collected first: {ids[:5]}"
