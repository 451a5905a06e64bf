"""Run real dbt against small fixture projects (no hand-written manifests)."""

from __future__ import annotations

import shutil
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
    """Run a dbt command in ``project`` (its own profiles.yml); fail the test with dbt's errors if it fails.

    In this process, through ``run_dbt`` (dbt's own ``dbtRunner``, in the project folder): a
    ``dbt`` subprocess would import dbt and its adapters again, seconds per command."""
    from feature_layer.dbt.runner import run_dbt
    from feature_layer.errors import FeatureLayerError

    try:
        run_dbt([*args, "--profiles-dir", str(project)], project, quiet=True)
    except FeatureLayerError as exc:
        raise AssertionError(f"dbt {' '.join(args)} failed in {project}:\n{exc}") from exc
