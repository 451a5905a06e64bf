"""A dbt-spark target read as feature_layer warehouse settings, and the engine opened from them.

Kept apart from ``spark.py`` so reading settings never imports pyspark. The target's
``server_side_parameters`` are the Spark settings of the session (dbt-spark applies them to
``SparkSession.builder``); feature_layer applies the same ones, so both read one warehouse.

Paths in them may use ``{{ flags.PROJECT_DIR }}`` (dbt's project folder when dbt renders the
profile; the project folder here too) and ``env_var``. The warehouse folder
(``spark.sql.warehouse.dir``) defaults to ``<project>/target/spark/warehouse``; a relative
one is taken from the project folder.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from feature_layer.errors import ConfigError

WAREHOUSE_DIR = "spark.sql.warehouse.dir"
DEFAULT_WAREHOUSE = Path("target") / "spark" / "warehouse"


def _render(value: Any, project_dir: Path) -> Any:
    """``value`` with ``{{ env_var(…) }}`` and ``{{ flags.PROJECT_DIR }}`` rendered, as dbt renders profiles."""
    if isinstance(value, Mapping):
        return {k: _render(v, project_dir) for k, v in value.items()}
    if not isinstance(value, str) or "{{" not in value:
        return value
    import jinja2

    def env_var(name: str, default: str | None = None) -> str:
        if name in os.environ:
            return os.environ[name]
        if default is None:
            raise ConfigError(
                f"The profile value {value!r} needs the environment variable {name}, which is not set.",
                fix=f"export {name}=… or give env_var a default: env_var('{name}', 'default').",
            )
        return default

    flags = {"PROJECT_DIR": str(project_dir)}
    return jinja2.Environment().from_string(value).render(env_var=env_var, flags=flags)


def spark_warehouse_fields(target: str, output: Mapping[str, Any], project_dir: Path) -> dict[str, Any]:
    """Settings for a ``spark`` target of profiles.yml (``method: session``: Spark in this process).

    A ``databricks`` target shares the Spark SQL dialect (``feature-layer sql --dialect
    databricks``) but runs on a remote cluster, which this engine does not reach.
    """
    out = _render(dict(output), project_dir)
    method = out.get("method", "session")
    if method != "session":
        raise ConfigError(
            f"Target {target!r} is a spark target with method {method!r}; feature_layer runs Spark in-process.",
            fix="use `method: session` (pyspark in this process) for the spark target.",
        )
    params = out.get("server_side_parameters") or {}
    if not isinstance(params, Mapping):
        raise ConfigError(
            f"server_side_parameters of target {target!r} must be a mapping of Spark settings.",
            fix="write them as `spark.setting: value` pairs under server_side_parameters in profiles.yml.",
        )
    options = {str(k): str(v) for k, v in params.items()}
    warehouse = Path(options.get(WAREHOUSE_DIR, str(DEFAULT_WAREHOUSE))).expanduser()
    warehouse = warehouse if warehouse.is_absolute() else project_dir / warehouse
    options[WAREHOUSE_DIR] = str(warehouse.resolve())
    return {"type": "spark", "target": target, "schema": out.get("schema"), "project_dir": project_dir,
            "path": warehouse.resolve(), "options": options}
