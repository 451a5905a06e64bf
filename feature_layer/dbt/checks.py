"""Can the artifacts be trusted? Checked every time the registry is loaded.

- Project files (the model paths, ``dbt_project.yml``) changed after ``manifest.json`` was
  written: the registry would describe the project as it was. One warning: run `dbt parse`.
- ``catalog.json`` is older than the manifest, or lacks columns the manifest declares: the
  manifest's columns are used (see ``artifacts._agrees``). One warning: run `dbt docs generate`.
- The manifest was built for another target than the one requested (another adapter, or
  another database): every query would go to the wrong place. An error naming both.

Warnings go through Python's ``warnings`` as :class:`~feature_layer.errors.FeatureLayerWarning`;
the CLI prints each as one line.
"""

from __future__ import annotations

import os
import warnings
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from feature_layer.errors import ConfigError, FeatureLayerWarning, ManifestError

if TYPE_CHECKING:
    from feature_layer.config import Settings, WarehouseSettings
    from feature_layer.dbt.artifacts import Manifest

_PROJECT_SUFFIXES = {".sql", ".yml", ".yaml", ".py", ".md", ".csv"}
_BUILT_TYPES = {"model", "seed", "snapshot"}


class StaleArtifactWarning(FeatureLayerWarning):
    """dbt's artifacts are older than the project files or than each other."""


def check_artifacts(settings: Settings, manifest: Manifest) -> None:
    """Warn about stale artifacts; raise when the manifest belongs to another target."""
    check_target(settings, manifest)
    for message in stale_artifact_messages(settings, manifest):
        warnings.warn(message, StaleArtifactWarning, stacklevel=2)


def stale_artifact_messages(settings: Settings, manifest: Manifest) -> list[str]:
    messages = []
    newer = newest_project_file(settings.project_dir)
    written = _mtime(manifest.path)
    if newer is not None and written is not None and newer[1] > written:
        shown = newer[0].relative_to(settings.project_dir)
        messages.append(f"{shown} changed after {_shown(settings, manifest.path)} was written: the registry may be "
                        "out of date; run `dbt parse` (or `dbt build`).")
    catalog = manifest.catalog
    if catalog is None:
        return messages
    if catalog.disagreeing:
        names = ", ".join(uid.rsplit(".", 1)[-1] for uid in catalog.disagreeing[:5])
        more = f" and {len(catalog.disagreeing) - 5} more" if len(catalog.disagreeing) > 5 else ""
        messages.append(f"{_shown(settings, catalog.path)} lacks columns the manifest declares for {names}{more}: "
                        "using the manifest's columns; run `dbt docs generate`.")
    elif _older(catalog.generated_at, manifest.generated_at, catalog.path, manifest.path) and (
        catalog.invocation_id != manifest.invocation_id
    ):
        messages.append(f"{_shown(settings, catalog.path)} is older than {_shown(settings, manifest.path)}: column "
                        "types may be out of date; run `dbt docs generate`.")
    return messages


def newest_project_file(project_dir: Path) -> tuple[Path, float] | None:
    """The most recently modified of ``dbt_project.yml`` and the files under the model paths."""
    best: tuple[Path, float] | None = None
    for path in (project_dir / "dbt_project.yml", *_model_files(project_dir)):
        mtime = _mtime(path)
        if mtime is not None and (best is None or mtime > best[1]):
            best = (path, mtime)
    return best


def _model_files(project_dir: Path) -> list[Path]:
    files = []
    for folder in _model_paths(project_dir):
        root = project_dir / folder
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            files += [Path(dirpath) / f for f in filenames if Path(f).suffix in _PROJECT_SUFFIXES]
    return files


def _model_paths(project_dir: Path) -> list[str]:
    try:
        project = yaml.safe_load((project_dir / "dbt_project.yml").read_text()) or {}
    except (OSError, yaml.YAMLError):
        return ["models"]
    paths = project.get("model-paths") if isinstance(project, dict) else None
    return [str(p) for p in paths] if isinstance(paths, list) and paths else ["models"]


def _mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except OSError:
        return None


def _older(catalog_at: str, manifest_at: str, catalog_path: Path, manifest_path: Path) -> bool:
    """Compare dbt's own ``generated_at`` stamps (file times as a fallback)."""
    try:
        return datetime.fromisoformat(catalog_at) < datetime.fromisoformat(manifest_at)
    except ValueError:
        catalog_mtime, manifest_mtime = _mtime(catalog_path), _mtime(manifest_path)
        return catalog_mtime is not None and manifest_mtime is not None and catalog_mtime < manifest_mtime


def _shown(settings: Settings, path: Path) -> str:
    try:
        return str(path.relative_to(settings.project_dir))
    except ValueError:
        return str(path)


# -- target ------------------------------------------------------------------------------


def check_target(settings: Settings, manifest: Manifest) -> None:
    """Refuse a manifest compiled for another adapter or database than the requested target.

    The manifest records its adapter (``metadata.adapter_type``) and each node's database;
    they must match the profile's target. A profile that cannot be read is not checked here:
    the commands that need the warehouse report it.
    """
    from feature_layer.config import warehouse_settings

    try:
        warehouse = warehouse_settings(settings)
    except ConfigError:
        return
    built = manifest.adapter_type
    if built and built != warehouse.type:
        raise _wrong_target(settings, manifest, warehouse, f"the {built} adapter")
    databases = _built_databases(manifest)
    expected = (warehouse.database or "").lower()
    if expected and databases and expected not in databases:
        raise _wrong_target(settings, manifest, warehouse, f"database {', '.join(sorted(databases))}")


def _built_databases(manifest: Manifest) -> set[str]:
    """Databases of the project's own models, seeds and snapshots (packages may differ)."""
    return {
        node.relation.database.lower()
        for node in manifest.nodes.values()
        if node.resource_type in _BUILT_TYPES and node.package_name == manifest.project_name
        and node.enabled and node.relation is not None and node.relation.database
    }


def _wrong_target(settings: Settings, manifest: Manifest, warehouse: WarehouseSettings, built: str) -> ManifestError:
    wanted = f"{warehouse.type}" + (f", database {warehouse.database}" if warehouse.database else "")
    return ManifestError(
        f"{_shown(settings, manifest.path)} was compiled for {built}, but target {warehouse.target!r} "
        f"is {wanted}: its relations would be looked up in the wrong warehouse.",
        fix=f"run `dbt parse --target {warehouse.target}` (or `dbt build --target {warehouse.target}`) in "
        f"{settings.project_dir}, or pass the --target the manifest was built for.",
    )
