"""Run real dbt against small fixture projects (no hand-written manifests)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

FIXTURES = Path(__file__).parent / "fixtures"


def dbt_executable() -> str:
    return str(Path(sys.executable).parent / "dbt")


def copy_fixture(name: str, dest: Path) -> Path:
    """Copy ``tests/fixtures/<name>`` into ``dest`` (without build output) and return it."""
    target = dest / name
    shutil.copytree(FIXTURES / name, target, ignore=shutil.ignore_patterns("target", "logs", "*.duckdb"))
    return target


def dbt(project: Path, *args: str) -> None:
    """Run a dbt command in ``project``; fail the test with dbt's output if it fails."""
    done = subprocess.run(
        [dbt_executable(), *args, "--project-dir", str(project), "--profiles-dir", str(project)],
        cwd=project,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise AssertionError(f"dbt {' '.join(args)} failed in {project}:\n{done.stdout}\n{done.stderr}")
