"""Loaded (through PYTHONPATH) only by ``scripts/year-ahead.sh``, which runs a command under
libfaketime with the wall clock a year ahead.

libfaketime 0.9.10 must leave the monotonic clock alone for Python's timed waits to work
(``threading.Event.wait``, locks and queues with a timeout wait on the real monotonic clock, so
a faked one makes them wait a year), but then its ``clock_nanosleep`` wrapper rejects the
absolute monotonic deadline ``time.sleep`` passes (EINVAL). This puts back a ``time.sleep`` that
waits with ``select``, which libfaketime does not touch. Nothing else changes: the wall clock
(``time.time``, ``datetime.now``, DuckDB's and SQLite's ``now``) is the faked one.
"""

from __future__ import annotations

import os
import select
import time

if os.environ.get("FAKETIME") and os.environ.get("FAKETIME_DONT_FAKE_MONOTONIC") == "1":

    def _sleep(seconds: float) -> None:
        if seconds < 0:
            raise ValueError("sleep length must be non-negative")
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            select.select([], [], [], left)

    time.sleep = _sleep
