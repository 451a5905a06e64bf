"""Optional dependencies (the pip extras), imported on first use with an error that names
the extra to install instead of a bare ``No module named …``."""

from __future__ import annotations

import importlib
from types import ModuleType

from feature_layer.errors import FeatureLayerError

EXTRAS = {"pandas": "pandas", "polars": "polars", "psycopg2": "postgres", "pyspark": "spark"}
"""Importable module → the feature_layer extra that installs it."""
_PACKAGES = {"psycopg2": "dbt-postgres", "pyspark": "pyspark dbt-spark[session]"}


class MissingExtraError(FeatureLayerError):
    """An optional dependency is needed for what was asked and is not installed."""


def require(module: str, needed_for: str) -> ModuleType:
    """Import ``module`` (one of :data:`EXTRAS`), or say which extra installs it.

    >>> require("json", "reading JSON").__name__
    'json'
    >>> require("no_such_module_xyz", "a demo")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    feature_layer.extras.MissingExtraError: ...
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        extra = EXTRAS.get(module.split(".")[0], module)
        raise MissingExtraError(
            f"{needed_for} needs {module}, which is not installed ({exc}).",
            fix=f"pip install 'feature_layer[{extra}]' (or pip install {_PACKAGES.get(module, module)}).",
        ) from None
