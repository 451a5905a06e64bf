"""Run dbt commands in-process, the way a user would run them in the project directory.

dbt resolves relative paths (the DuckDB file in ``profiles.yml``, the raw Parquet files of
the example sources) against the working directory, so the runner switches into the
project directory for the duration of the command. Failures become one
``FeatureLayerError`` naming the command, every failing node with its file and message, and
a fix; dbt's own console output stays visible unless ``quiet=True``.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from feature_layer.errors import FeatureLayerError

_CWD_LOCK = threading.RLock()
"""The working directory and environment are process-wide: one dbt command at a time."""

_FAILED = {"error", "fail", "runtime error"}
_PROJECT_FLAGS = {"--project-dir"}
_NO_PROJECT_COMMANDS = {"--version", "-v", "--help", "-h", "init"}


@contextmanager
def _inside(project_dir: Path, env: dict[str, str]) -> Iterator[None]:
    with _CWD_LOCK:
        previous_cwd = os.getcwd()
        previous_env = {key: os.environ.get(key) for key in env}
        os.environ.update(env)
        os.chdir(project_dir)
        try:
            yield
        finally:
            os.chdir(previous_cwd)
            for key, value in previous_env.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


def _release_duckdb() -> None:
    """Close the DuckDB database dbt-duckdb keeps open for the whole process.

    dbt-duckdb caches one database handle per process across invocations; left open, it
    blocks every later ``duckdb.connect`` to the same file with another configuration (for
    example ``read_only=True``) and holds the file lock against other processes.
    """
    if "dbt.adapters.duckdb.connections" not in sys.modules:
        return
    from dbt.adapters.duckdb.connections import DuckDBConnectionManager

    with DuckDBConnectionManager._LOCK:
        env = DuckDBConnectionManager._ENV
        DuckDBConnectionManager._ENV = None
        if env is not None:
            try:
                env.close()
            except Exception:  # noqa: BLE001 - best effort: the file is released either way
                pass


def _profiles_dir(project_dir: Path, profiles_dir: Path | None) -> Path:
    if profiles_dir is not None:
        return Path(profiles_dir).resolve()
    if (project_dir / "profiles.yml").is_file():
        return project_dir
    from_env = os.environ.get("DBT_PROFILES_DIR")
    return Path(from_env).resolve() if from_env else project_dir


def _command_line(args: list[str], project_dir: Path, target: str | None, quiet: bool) -> list[str]:
    argv = list(args)
    if quiet and "--quiet" not in argv and "-q" not in argv:
        argv = ["--quiet", *argv]
    if argv and not set(argv) & _NO_PROJECT_COMMANDS:
        if not set(argv) & _PROJECT_FLAGS:
            argv += ["--project-dir", str(project_dir)]
        if target is not None and "--target" not in argv and "-t" not in argv:
            argv += ["--target", target]
    return argv


def _failed_nodes(result: Any) -> list[str]:
    lines: list[str] = []
    for node_result in getattr(result, "results", None) or []:
        status = str(getattr(node_result, "status", "")).lower()
        if status not in _FAILED:
            continue
        node = getattr(node_result, "node", None)
        unique_id = getattr(node, "unique_id", "?")
        path = getattr(node, "original_file_path", "?")
        message = (getattr(node_result, "message", None) or "").strip()
        failures = getattr(node_result, "failures", None)
        detail = f"{message}" + (f" ({failures} failing rows)" if failures else "")
        lines.append(f"  - {unique_id} ({path}) [{status}]: {detail}")
    return lines


def _exception_chain(exc: BaseException) -> str:
    """The messages of ``exc`` and its causes: dbt often wraps the useful one."""
    messages: list[str] = []
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        text = str(current).strip()
        if text and text not in messages:
            messages.append(text)
        current = current.__cause__ or current.__context__
    return "\n".join(messages)


def run_dbt(
    args: list[str],
    project_dir: Path,
    target: str | None = None,
    profiles_dir: Path | None = None,
    *,
    quiet: bool = False,
) -> Any:
    """Run ``dbt <args>`` in-process against ``project_dir``; raise on any failure, else return
    dbt's result object (for ``build``: its node results, which ``feature-layer run`` reports).

    ``target`` selects the profile target (default: the profile's own default) and
    ``profiles_dir`` the directory holding ``profiles.yml`` (default: the project directory,
    where the example project keeps it).

    For example ``run_dbt(["build"], Path("."), target="duckdb")`` builds the project in the
    current folder (not a doctest: it needs a dbt project).
    """
    from dbt.cli.main import dbtRunner  # heavy import, only when dbt really runs

    project = Path(project_dir).resolve()
    if not (project / "dbt_project.yml").is_file():
        raise FeatureLayerError(
            f"{project} is not a dbt project (no dbt_project.yml).",
            fix="pass the directory that holds dbt_project.yml as project_dir.",
        )
    profiles = _profiles_dir(project, profiles_dir)
    argv = _command_line(list(args), project, target, quiet)
    shown = "dbt " + " ".join(args) + (f" --target {target}" if target else "")
    with _inside(project, {"DBT_PROFILES_DIR": str(profiles)}):
        try:
            outcome = dbtRunner().invoke(argv)
        except Exception as exc:  # dbt raised instead of reporting: still one clear error
            raise FeatureLayerError(
                f"`{shown}` crashed in {project}: {type(exc).__name__}: {exc}",
                fix="run the same command with the dbt CLI in that directory to see the full log.",
            ) from exc
        finally:
            _release_duckdb()
    if outcome.success:
        return outcome.result
    failed = _failed_nodes(outcome.result)
    if failed:
        raise FeatureLayerError(
            f"`{shown}` failed in {project}; {len(failed)} node(s) did not pass:\n" + "\n".join(failed),
            fix="fix the SQL or data of the nodes listed above (dbt's log is in "
            f"{project / 'logs' / 'dbt.log'}), then run the command again.",
        )
    reason = _exception_chain(outcome.exception) if outcome.exception else "dbt reported failure"
    raise FeatureLayerError(
        f"`{shown}` failed in {project}: {reason}",
        fix="check dbt_project.yml, profiles.yml (profiles dir: "
        f"{profiles}) and the model files named above, then run the command again.",
    )
