"""Open the warehouse engine of a dbt target, from the one table in ``offline.kinds``.

``connect`` is the only place an engine is opened from settings: the target's adapter type
(or ``offline: {engine: generic}``) picks the row of :data:`~feature_layer.offline.kinds.ENGINE_KINDS`,
whose opener builds the engine.
"""

from __future__ import annotations

from feature_layer.config import WarehouseSettings, require_warehouse_file
from feature_layer.errors import WarehouseError
from feature_layer.offline.engine import Engine
from feature_layer.offline.kinds import ENGINE_KINDS, NATIVE_KINDS, EngineKind, kind_for

ENGINES = ENGINE_KINDS
"""Engine kind name → :class:`EngineKind` (kept under its old name)."""


def engine_kind(settings: WarehouseSettings) -> EngineKind:
    """The row of the table that serves ``settings`` (its ``engine``, else its adapter type's)."""
    if settings.engine:
        if settings.engine not in ENGINE_KINDS:
            raise WarehouseError(f"Unknown engine kind {settings.engine!r} for target {settings.target!r}.",
                                 fix=f"use one of: {', '.join(sorted(ENGINE_KINDS))}.")
        return ENGINE_KINDS[settings.engine]
    return kind_for(settings.type)


def connect(settings: WarehouseSettings) -> Engine:
    """Open the engine for a dbt target: native for duckdb, postgres and spark, the dbt
    adapter's own connection (generic) for any other adapter whose plugin is installed."""
    require_warehouse_file(settings)  # never let duckdb.connect create an empty database
    kind = engine_kind(settings)
    if kind.name == "generic" and not settings.profile and settings.type not in NATIVE_KINDS:
        # settings made in code, not read from a profile: nothing to build the adapter's credentials from
        from feature_layer.offline.kinds import adapter_plugin_installed

        missing = "" if adapter_plugin_installed(settings.type) else f" (pip install dbt-{settings.type})"
        raise WarehouseError(
            f"Target {settings.target!r} uses adapter {settings.type!r}, which has no native engine; the generic "
            f"engine needs the target's profile to open the dbt adapter's connection{missing}.",
            fix="read the settings from profiles.yml (feature_layer.config.warehouse_settings), or use a "
            f"{', '.join(sorted(NATIVE_KINDS))} target.",
        )
    return kind.open(settings)
