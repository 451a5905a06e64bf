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

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from feature_layer.errors import ConfigError

WAREHOUSE_DIR = "spark.sql.warehouse.dir"
DEFAULT_WAREHOUSE = Path("target") / "spark" / "warehouse"


def spark_warehouse_fields(target: str, output: Mapping[str, Any], project_dir: Path) -> dict[str, Any]:
    """Settings for a ``spark`` target of profiles.yml (``method: session``: Spark in this process).

    A ``databricks`` target shares the Spark SQL dialect (``feature-layer sql --dialect
    databricks``) but runs on a remote cluster, which this engine does not reach.
    """
    out = dict(output)  # rendered by config (env_var, flags.PROJECT_DIR)
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
