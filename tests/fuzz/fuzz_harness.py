"""The fuzzing oracle, its counters, and the shared fuzz project.

Every generated input goes through :func:`check`. The only acceptable outcomes are success or
a ``FeatureLayerError`` (the CLI: a clean exit with a message; HTTP: a status below 500 with a
JSON error body); any other exception is a *traceback*, and an input that runs longer than
``PER_INPUT_SECONDS`` is a *hang* (SIGALRM interrupts it; ``faulthandler`` kills the process with
every thread's stack if even that cannot interrupt it). A traceback or a hang fails the test, so
hypothesis shrinks it to a minimal input.

Scale: ``FEATURE_LAYER_FUZZ=full`` (``make fuzz``) runs the full counts (over 10,000 inputs in
total); otherwise a small deterministic sample runs in the normal suite. Loaded as a pytest
plugin (``-p tests.fuzz.fuzz_harness``), it prints inputs per surface at the end of the run and,
with ``FEATURE_LAYER_FUZZ_REPORT=<path>``, writes them as a Markdown table.
"""

from __future__ import annotations

import faulthandler
import os
import platform
import shutil
import signal
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, settings

from feature_layer.errors import FeatureLayerError

FULL = os.environ.get("FEATURE_LAYER_FUZZ", "") == "full"
PER_INPUT_SECONDS = 30.0
SURFACES = ("config files", "declarations", "entity frames", "HTTP bodies", "CLI flags")


@dataclass
class Tally:
    inputs: int = 0
    ok: int = 0
    refused: int = 0
    tracebacks: int = 0
    hangs: int = 0
    seconds: float = 0.0
    examples: list[str] = field(default_factory=list)


RESULTS: dict[str, Tally] = {name: Tally() for name in SURFACES}


class Hang(BaseException):  # noqa: N818 - BaseException so that no `except Exception` swallows it
    """The input ran past its time limit."""


class Traceback(AssertionError):  # noqa: N818 - what the oracle calls it
    """An input ended in an exception that is not a FeatureLayerError."""


def examples(sample: int, full: int) -> settings:
    """hypothesis settings: ``full`` examples under ``make fuzz``, else a deterministic ``sample``."""
    return settings(
        max_examples=full if FULL else sample,
        deadline=None,
        derandomize=not FULL,
        database=None,
        print_blob=True,
        suppress_health_check=list(HealthCheck),
    )


@contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Interrupt the block after ``seconds`` (main thread: SIGALRM); a backstop kills the process."""
    faulthandler.dump_traceback_later(seconds * 4, exit=True)
    main = threading.current_thread() is threading.main_thread()
    previous = None
    if main:
        def interrupt(signum: int, frame: Any) -> None:
            raise Hang(f"no answer after {seconds} s")

        previous = signal.signal(signal.SIGALRM, interrupt)
        signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        if main:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
        faulthandler.cancel_dump_traceback_later()


def check(surface: str, action: Callable[[], Any], describe: Callable[[], str] | str = "") -> str:
    """Run one generated input through the oracle; returns ``"ok"`` or ``"refused"``.

    ``action`` returns normally on success, raises ``FeatureLayerError`` for a refused input, or
    raises :class:`Refused` when it checked a clean refusal itself (CLI exit code, HTTP 4xx).
    """
    tally = RESULTS[surface]
    tally.inputs += 1
    started = time.monotonic()
    outcome, error = "ok", None
    try:
        with time_limit(PER_INPUT_SECONDS):
            action()
    except (FeatureLayerError, Refused):
        outcome = "refused"
    except Hang as exc:
        outcome, error = "hang", exc
    except Exception as exc:  # noqa: BLE001 - that is the oracle's question
        outcome, error = "traceback", exc
    finally:
        tally.seconds += time.monotonic() - started
    if outcome == "ok":
        tally.ok += 1
    elif outcome == "refused":
        tally.refused += 1
    else:
        what = describe() if callable(describe) else describe
        text = "".join(traceback.format_exception(error)) if error is not None else ""
        if outcome == "hang":
            tally.hangs += 1
        else:
            tally.tracebacks += 1
        if len(tally.examples) < 5:
            tally.examples.append(f"{outcome}: {what[:500]}\n{text[-3000:]}")
        raise Traceback(f"{surface}: {outcome} for input {what[:2000]}\n{text}") from error
    return outcome


class Refused(Exception):  # noqa: N818 - a clean refusal the action verified itself
    """A clean refusal that is not a FeatureLayerError object (a CLI exit with a message, a 4xx)."""


# -- the fuzz project: the built example project, copied so fuzzing may write to it -------------


_PROJECT: list[Path] = []


def fuzz_project(built_example_project: Path, tmp_path_factory: Any) -> Path:
    """A private copy of the built example project (warehouse file, artifacts, data), its online
    store (embedded SQLite) materialized for every view; one per session, shared by the surfaces."""
    from conftest import clean_project_env

    from feature_layer.client import FeatureStore

    if _PROJECT:
        return _PROJECT[0]
    root = tmp_path_factory.mktemp("fuzz_project")
    target = root / "project"
    shutil.copytree(built_example_project, target, ignore=shutil.ignore_patterns(".feature_layer", "logs"))
    with clean_project_env():
        store = FeatureStore(target)
        store.materialize(full_refresh=True)
        store.close()
    _PROJECT.append(target)
    return target


# -- reporting (only when loaded as a plugin) --------------------------------------------------


def summary_rows() -> list[tuple[str, Tally]]:
    return [(name, RESULTS[name]) for name in SURFACES]


def render_markdown(command: str, wall: float) -> str:
    rows = summary_rows()
    total = Tally()
    for _, t in rows:
        total.inputs += t.inputs
        total.ok += t.ok
        total.refused += t.refused
        total.tracebacks += t.tracebacks
        total.hangs += t.hangs
        total.seconds += t.seconds
    lines = [
        "| surface | inputs | accepted | refused with a message | tracebacks | hangs | seconds |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, t in [*rows, ("**total**", total)]:
        lines.append(f"| {name} | {t.inputs:,} | {t.ok:,} | {t.refused:,} | {t.tracebacks} | {t.hangs} | "
                     f"{t.seconds:,.0f} |")
    machine = f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    return "\n".join([
        f"Command: `{command}`  ",
        f"Wall time: {wall:,.0f} s on {machine}; per-input limit {PER_INPUT_SECONDS:.0f} s.",
        "",
        *lines,
        "",
        f"Inputs: {total.inputs:,}; tracebacks = {total.tracebacks}; hangs = {total.hangs}.",
    ])


_STARTED = time.monotonic()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not any(t.inputs for t in RESULTS.values()):
        return
    wall = time.monotonic() - _STARTED
    terminalreporter.section("fuzzing: inputs per surface")
    for name, t in summary_rows():
        terminalreporter.write_line(f"{name:>14}: {t.inputs:6,} inputs  {t.ok:6,} accepted  {t.refused:6,} refused  "
                                    f"tracebacks = {t.tracebacks}  hangs = {t.hangs}")
    total = sum(t.inputs for t in RESULTS.values())
    tracebacks = sum(t.tracebacks for t in RESULTS.values())
    hangs = sum(t.hangs for t in RESULTS.values())
    terminalreporter.write_line(f"{'total':>14}: {total:6,} inputs  tracebacks = {tracebacks}  hangs = {hangs}")
    for name, t in summary_rows():
        for example in t.examples:
            terminalreporter.write_line(f"--- {name} {example}")
    report = os.environ.get("FEATURE_LAYER_FUZZ_REPORT")
    if report:
        command = os.environ.get("FEATURE_LAYER_FUZZ_COMMAND", "make fuzz")
        path = Path(report)
        header = path.read_text().split("<!-- results -->")[0] if path.exists() else "# Fuzzing\n\n"
        path.write_text(f"{header}<!-- results -->\n{render_markdown(command, wall)}\n")
