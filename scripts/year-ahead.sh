#!/usr/bin/env bash
# Runs a command with this machine's wall clock a year ahead (libfaketime), e.g.
#   bash scripts/year-ahead.sh .venv/bin/python -m pytest -n 2 --dist loadgroup
# The faked clock reaches every process the command starts (Python, dbt, the JVM) except the
# redis-server processes the tests start (tests/redis_helpers.py::service_env: redis-server
# cannot run under libfaketime) and the PostgreSQL service: those keep the real clock, which
# the code must cope with (the write script's lease check translates clocks by the measured skew).
set -euo pipefail
command -v faketime >/dev/null || {
  echo "faketime is not installed; install it with: sudo apt-get install faketime (or make system-deps)" >&2
  exit 1
}
here="$(cd "$(dirname "$0")/.." && pwd)"
export FAKETIME_DONT_FAKE_MONOTONIC=1   # timed waits need the real monotonic clock
export FAKETIME_FORCE_MONOTONIC_FIX=0   # its "fix" breaks timed waits on the real monotonic clock (the GIL's among them)
export PYTHONPATH="$here/tests/year_ahead${PYTHONPATH:+:$PYTHONPATH}"   # time.sleep via select
exec faketime -f "${YEAR_AHEAD_OFFSET:-+365d}" "$@"
