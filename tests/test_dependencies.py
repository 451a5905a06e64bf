"""Every module the package imports at run time is a declared dependency; optional frames and
drivers (pandas, polars, psycopg2) are only reached through ``feature_layer.extras.require``,
whose error names the extra to install. (The clean-venv scenario test proves it for real.)"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from functools import cache
from importlib.metadata import packages_distributions as _packages_distributions
from pathlib import Path

import pytest

from feature_layer.extras import EXTRAS, MissingExtraError, require

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "feature_layer"


packages_distributions = cache(_packages_distributions)


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirement_names(requirements: list[str]) -> set[str]:
    return {_normal(re.match(r"[A-Za-z0-9._-]+", r).group(0)) for r in requirements}


def _pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def _type_checking_lines(tree: ast.Module) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                lines.update(range(child.lineno, (child.end_lineno or child.lineno) + 1))
    return lines


@cache
def _imports() -> list[tuple[str, int, str, bool]]:
    """(file, line, top-level module, under TYPE_CHECKING) for every import in the package."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        typing_only = _type_checking_lines(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top in sys.stdlib_module_names or top in {"feature_layer", "__future__"}:
                    continue
                found.append((str(path.relative_to(REPO)), node.lineno, top, node.lineno in typing_only))
    return found


def test_the_scan_sees_the_package_imports() -> None:
    modules = {top for _, _, top, _ in _imports()}
    assert {"numpy", "pyarrow", "sqlglot", "duckdb", "click", "pandas"} <= modules


def test_every_runtime_import_is_a_declared_dependency() -> None:
    declared = _requirement_names(_pyproject()["project"]["dependencies"])
    distributions = packages_distributions()
    missing = []
    for where, line, top, typing_only in _imports():
        if top in EXTRAS or typing_only:
            continue
        owners = {_normal(d) for d in distributions.get(top, [])}
        assert owners, f"{where}:{line} imports {top!r}, which no installed distribution provides"
        if not owners & declared:
            missing.append(f"{where}:{line} imports {top} (from {', '.join(sorted(owners))})")
    assert not missing, "undeclared runtime imports; add them to pyproject.toml dependencies:\n" + "\n".join(missing)


def test_optional_modules_are_imported_only_for_type_checking() -> None:
    direct = [f"{where}:{line} imports {top}" for where, line, top, typing_only in _imports()
              if top in EXTRAS and not typing_only]
    assert not direct, "use feature_layer.extras.require(...) instead:\n" + "\n".join(direct)


def test_each_optional_module_has_its_extra() -> None:
    extras = _pyproject()["project"]["optional-dependencies"]
    for module, extra in EXTRAS.items():
        assert extra in extras, f"{module}: extra {extra!r} missing from pyproject.toml"
        names = _requirement_names(extras[extra])
        owners = {_normal(d) for d in packages_distributions().get(module, [])}
        assert owners & names or (module == "psycopg2" and "dbt-postgres" in names), (module, extra)


def test_a_missing_extra_names_the_pip_line() -> None:
    with pytest.raises(MissingExtraError) as raised:
        require("feature_layer_no_such_module", "Exporting to nowhere")
    message = str(raised.value)
    assert "Exporting to nowhere needs feature_layer_no_such_module" in message
    assert "pip install 'feature_layer[feature_layer_no_such_module]'" in message
