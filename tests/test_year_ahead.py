"""The clock-sensitive tests again, with this machine's wall clock a year ahead.

``scripts/year-ahead.sh`` runs a command under libfaketime (+365 days); the redis-server
processes the tests start keep the real clock (redis-server cannot run under libfaketime), so
these runs also check that a host whose clock disagrees with Redis's by a year still gets its
lease checked right (``RunFence.clock_offset_us``). ``make test-year-ahead`` runs the whole suite
this way; this test keeps the part most likely to break in ``make test``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "year-ahead.sh"
SUBSET = (
    "tests/test_clock.py",
    "tests/test_freshness.py::test_freshness_cases",
    "tests/test_online_stores.py",
    "tests/test_materialize_faults.py::test_a_long_query_keeps_the_lease_through_the_heartbeat",
    "tests/test_materialize_faults.py::test_a_run_that_lost_its_lease_records_no_watermark",
)


def _year_ahead(*command: str) -> subprocess.CompletedProcess[str]:
    if shutil.which("faketime") is None:
        pytest.fail("faketime is not installed; install it with `sudo apt-get install faketime` "
                    "(or `make system-deps`), then rerun.", pytrace=False)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "FAKETIME")) and k != "LD_PRELOAD"}
    return subprocess.run(["bash", str(SCRIPT), *command], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=900)


def _real_time() -> float:
    """The machine's real wall clock, also when this test itself runs a year ahead (make test-year-ahead)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FAKETIME") and k != "LD_PRELOAD"}
    done = subprocess.run([sys.executable, "-c", "import time; print(time.time())"], env=env,
                          capture_output=True, text=True, check=True)
    return float(done.stdout)


def test_the_script_moves_the_wall_clock_a_year_ahead_and_keeps_timed_waits_working() -> None:
    probe = ("import threading, time; t0 = time.monotonic(); time.sleep(0.05); threading.Event().wait(0.05); "
             "print(time.time(), time.monotonic() - t0)")
    before = _real_time()
    done = _year_ahead(sys.executable, "-c", probe)
    assert done.returncode == 0, done.stderr
    faked, waited = map(float, done.stdout.split())
    assert faked - before > 364 * 86400, (faked, before)
    assert 0.09 < waited < 5, waited


@pytest.mark.xdist_group("year_ahead")
def test_clock_sensitive_tests_pass_a_year_ahead() -> None:
    done = _year_ahead(sys.executable, "-m", "pytest", "-n", "0", "-q", "-p", "no:cacheprovider", *SUBSET)
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-3000:]
    assert " passed" in done.stdout and "failed" not in done.stdout, done.stdout[-2000:]
