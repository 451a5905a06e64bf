"""The registry: entities, feature views, features and services, with their dbt lineage.

Derived entirely from dbt artifacts (``target/manifest.json``, ``catalog.json``) and the
entity declarations in ``dbt_project.yml``; nothing here is written back.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from feature_layer.config import Settings
from feature_layer.dbt.artifacts import DbtNode, Manifest, load_manifest
from feature_layer.dbt.checks import check_artifacts
from feature_layer.errors import (
    BrokenDeclarationError,
    ConfigError,
    DeclarationError,
    UnknownFeatureError,
    ValidationIssue,
    plural,
)
from feature_layer.registry.declarations import (
    META_KEY,
    build_declarations,
    close_matches,
    dropped_blocks,
    near_miss_keys,
)
from feature_layer.registry.model import Entity, Feature, FeatureService, FeatureView

if TYPE_CHECKING:
    from feature_layer.registry.search import SearchHit


ADAPTER_DIALECTS = {"databricks": "databricks", "spark": "spark", "sqlserver": "tsql", "fabric": "tsql",
                    "athena": "athena", "redshift": "redshift", "postgres": "postgres", "duckdb": "duckdb"}


def artifact_stamp(settings: Settings) -> tuple[float, float]:
    """Modification times of manifest and catalog: a cheap 'has dbt rewritten them?' check."""

    def mtime(path: Path) -> float:
        try:
            return path.stat().st_mtime_ns / 1e9
        except FileNotFoundError:
            return 0.0

    return mtime(settings.manifest_path), mtime(settings.catalog_path)


def read_entity_declarations(project_dir: Path) -> tuple[Any, str, list[ValidationIssue]]:
    """``vars: feature_layer: entities:`` from dbt_project.yml (raw, validated later), and a
    misspelt ``vars`` block (``feature-layer:``) as an issue rather than silently no entities."""
    path = project_dir / "dbt_project.yml"
    try:
        project = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"Cannot read {path}: {exc}", fix="make dbt_project.yml valid YAML.") from exc
    variables = project.get("vars") if isinstance(project, dict) else None
    variables = variables if isinstance(variables, dict) else {}
    block = variables.get(META_KEY) or {}
    issues = [] if META_KEY in variables else [
        ValidationIssue(code="misspelt-block", message=f"vars has a {key!r} block, which feature_layer does not read. "
                        f"Did you mean {META_KEY!r}?", fix=f"rename `{key}:` to `{META_KEY}:` under `vars:`.",
                        file=path.name) for key in near_miss_keys(variables)]
    return (block.get("entities") if isinstance(block, dict) else None), str(path.name), issues


_BLOCK_KEY_IN_TEXT = re.compile(r"""(?<![\w-])["']?feature.?layers?["']?\s*:(?=\s|$)""", re.IGNORECASE | re.MULTILINE)
_BLOCK_KEY = re.compile(r"feature.?layers?", re.IGNORECASE)


def _kept_blocks(node: DbtNode) -> int:
    """How many ``feature_layer``-like keys of ``node`` survived into the manifest."""
    def count(mapping: dict[str, Any]) -> int:
        return sum(1 for k in mapping if _BLOCK_KEY.fullmatch(str(k))) if mapping else 0

    return (count(node.meta) + count(node.config) + sum(count(c.meta) + count(c.extra) for c in node.columns.values()))


def read_dropped_blocks(project_dir: Path, manifest: Manifest) -> dict[str, list[ValidationIssue]]:
    """Blocks dbt dropped from the project's own properties files (see ``dropped_blocks``).

    A file is parsed only when it names more ``feature_layer`` keys than the manifest kept
    for the nodes it documents, so a project without such a mistake pays one read and one
    regex per properties file (the YAML parse of a large file costs seconds).
    """
    by_file: dict[str, dict[str, DbtNode]] = {}
    kept: dict[str, int] = {}
    for node in manifest.nodes.values():
        own = not manifest.project_name or node.package_name == manifest.project_name
        path = node.yaml_path if node.resource_type in {"model", "snapshot"} else (
            node.file_path if node.resource_type == "exposure" else None)
        if own and path:
            if node.resource_type != "exposure":
                by_file.setdefault(path, {})[node.name] = node
            kept[path] = kept.get(path, 0) + _kept_blocks(node)
    found: dict[str, list[ValidationIssue]] = {}
    for relative, nodes in by_file.items():
        try:
            text = (project_dir / relative).read_text()
            if len(_BLOCK_KEY_IN_TEXT.findall(text)) <= kept.get(relative, 0):
                continue
            parsed = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))  # noqa: S506 - a safe loader
        except (OSError, UnicodeDecodeError, yaml.YAMLError):
            continue  # dbt parsed it; a file changed or gone since is the staleness check's concern
        for unique_id, issues in dropped_blocks(parsed, nodes).items():
            found.setdefault(unique_id, []).extend(issues)
    return found


@dataclass(frozen=True)
class LineageNode:
    """One node of a model-level lineage tree."""

    unique_id: str
    name: str
    resource_type: str
    file_path: str
    children: tuple[LineageNode, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "unique_id": self.unique_id,
            "name": self.name,
            "resource_type": self.resource_type,
            "file_path": self.file_path,
            "children": [c.to_dict() for c in self.children],
        }


@dataclass(frozen=True)
class Lineage:
    """Where a feature comes from (upstream to sources) and where it goes (exposures)."""

    feature: str
    upstream: LineageNode
    downstream: tuple[LineageNode, ...]
    services: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "feature": self.feature,
            "upstream": self.upstream.to_dict(),
            "downstream": [d.to_dict() for d in self.downstream],
            "services": list(self.services),
        }


@dataclass
class Registry:
    """Everything declared in one dbt project, looked up by name."""

    entities: dict[str, Entity]
    views: dict[str, FeatureView]
    services: dict[str, FeatureService]
    nodes: dict[str, DbtNode]
    parent_map: dict[str, tuple[str, ...]]
    child_map: dict[str, tuple[str, ...]]
    project_name: str = ""
    dbt_version: str = ""
    adapter_type: str = ""
    issues: list[ValidationIssue] = field(default_factory=list)
    broken_views: dict[str, list[ValidationIssue]] = field(default_factory=dict)
    """Feature views left out because their declaration is invalid (lenient load), by name."""
    broken_services: dict[str, list[ValidationIssue]] = field(default_factory=dict)
    """Feature services left out: a bad reference, or a feature view they use is broken."""
    _features: dict[str, Feature] = field(default_factory=dict, repr=False)
    _search_index: Any = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self._features = {f.ref: f for v in self.views.values() for f in v.features}

    # -- construction ---------------------------------------------------------------
    @classmethod
    def from_manifest(cls, manifest: Manifest, raw_entities: Any, entities_source: str = "dbt_project.yml",
                      *, strict: bool = True, project_issues: Sequence[ValidationIssue] = (),
                      dropped: dict[str, list[ValidationIssue]] | None = None) -> Registry:
        declared = build_declarations(manifest, raw_entities, entities_source,
                                      ADAPTER_DIALECTS.get(manifest.adapter_type, manifest.adapter_type or "duckdb"),
                                      dropped)
        declared.issues[:0] = project_issues
        if strict and declared.issues:
            raise DeclarationError(declared.issues)
        return cls(
            entities=declared.entities,
            views=declared.views,
            services=declared.services,
            nodes=manifest.nodes,
            parent_map=manifest.parent_map,
            child_map=manifest.child_map,
            project_name=manifest.project_name,
            dbt_version=manifest.dbt_version,
            adapter_type=manifest.adapter_type,
            issues=declared.issues,
            broken_views=declared.broken_views,
            broken_services=declared.broken_services,
        )

    @classmethod
    def load(cls, settings: Settings, *, strict: bool = True) -> Registry:
        """Read the project's artifacts; ``strict`` raises on any invalid declaration.

        ``strict=False`` keeps every valid view and service and lists the rest in
        ``broken_views`` / ``broken_services``: one bad declaration degrades only itself,
        and asking for a broken one by name raises its own issues.
        """
        manifest = load_manifest(settings.manifest_path, settings.catalog_path)
        check_artifacts(settings, manifest)  # stale artifacts warn; another target's manifest raises
        raw_entities, source, project_issues = read_entity_declarations(settings.project_dir)
        return cls.from_manifest(manifest, raw_entities, source, strict=strict, project_issues=project_issues,
                                 dropped=read_dropped_blocks(settings.project_dir, manifest))

    @property
    def degraded(self) -> bool:
        """True when a lenient load left out a feature view or service."""
        return bool(self.broken_views or self.broken_services)

    def degraded_message(self) -> str | None:
        """One line naming what a lenient load left out (None when nothing was)."""
        parts = []
        if self.broken_views:
            parts.append(f"{plural(len(self.broken_views), 'invalid feature view')} left out: "
                         f"{', '.join(sorted(self.broken_views))}")
        if self.broken_services:
            parts.append(f"{plural(len(self.broken_services), 'feature service')} left out: "
                         f"{', '.join(sorted(self.broken_services))}")
        if not parts:
            return None
        return "; ".join(parts) + " (run `feature-layer validate` for the problems and their fixes)."

    def _broken(self, kind: str, name: str, issues: list[ValidationIssue]) -> BrokenDeclarationError:
        return BrokenDeclarationError(
            issues, headline=f"{kind} {name!r} is invalid, so it was left out of the registry "
            f"({plural(len(issues), 'problem')}):")

    @property
    def dialect(self) -> str:
        """The sqlglot dialect of the warehouse dbt compiled for (compiled SQL is in it)."""
        return ADAPTER_DIALECTS.get(self.adapter_type, self.adapter_type or "duckdb")

    # -- lookups --------------------------------------------------------------------
    def entity(self, name: str) -> Entity:
        try:
            return self.entities[name]
        except KeyError:
            raise UnknownFeatureError(
                f"Entity {name!r} does not exist.{close_matches(name, self.entities)}",
                fix=f"use one of: {', '.join(sorted(self.entities)) or '(none declared)'}.",
            ) from None

    def view(self, name: str) -> FeatureView:
        try:
            return self.views[name]
        except KeyError:
            if name in self.broken_views:
                raise self._broken("Feature view", name, self.broken_views[name]) from None
            raise UnknownFeatureError(
                f"Feature view {name!r} does not exist.{close_matches(name, self.views)}",
                fix="run `feature-layer features` to list feature views, or `dbt parse` if you just added it.",
            ) from None

    def service(self, name: str) -> FeatureService:
        try:
            return self.services[name]
        except KeyError:
            if name in self.broken_services:
                raise self._broken("Feature service", name, self.broken_services[name]) from None
            raise UnknownFeatureError(
                f"Feature service {name!r} does not exist.{close_matches(name, self.services)}",
                fix=f"use one of: {', '.join(sorted(self.services)) or '(none declared)'} "
                "(exposures of type ml with meta.feature_layer.features).",
            ) from None

    def feature(self, ref: str) -> Feature:
        """The feature ``view.name``; unknown names suggest close matches."""
        found = self._features.get(ref)
        if found is not None:
            return found
        view_name, dot, name = ref.partition(".")
        if not dot:
            raise UnknownFeatureError(
                f"{ref!r} is not a feature reference.{close_matches(ref, self._features)}",
                fix="write features as `view.feature`, e.g. `feature-layer features` lists them.",
            )
        view = self.view(view_name)
        raise UnknownFeatureError(
            f"Feature {ref!r} does not exist.{close_matches(name, view.feature_names)}",
            fix=f"use one of {view_name}'s features: {', '.join(view.feature_names)}.",
        )

    def resolve(self, refs: Sequence[str] | str) -> dict[str, list[Feature]]:
        """Group feature references by view in request order, expanding ``view.*``."""
        if isinstance(refs, str):
            refs = [refs]
        if not refs:
            raise UnknownFeatureError("No features were requested.", fix="pass features=['view.feature', …] or a service.")
        grouped: dict[str, list[Feature]] = {}
        for ref in refs:
            if not isinstance(ref, str):
                raise UnknownFeatureError(f"Feature reference {ref!r} is not a string.", fix="write `view.feature`.")
            view_name, dot, name = ref.partition(".")
            if dot and name == "*":
                chosen = list(self.view(view_name).features)
            else:
                chosen = [self.feature(ref)]
            bucket = grouped.setdefault(chosen[0].view if chosen else view_name, [])
            for feature in chosen:
                if feature not in bucket:
                    bucket.append(feature)
        return grouped

    def features(
        self,
        *,
        entity: str | None = None,
        tag: str | None = None,
        owner: str | None = None,
        view: str | None = None,
    ) -> list[Feature]:
        """All features, optionally filtered; sorted by view then column order."""
        if entity is not None:
            self.entity(entity)
        if view is not None:
            self.view(view)
        out = []
        for v in sorted(self.views.values(), key=lambda v: v.name):
            if entity and entity not in v.entities:
                continue
            if owner and (v.owner or "").lower() != owner.lower():
                continue
            if view and v.name != view:
                continue
            for f in v.features:
                if tag and tag not in v.tags and tag not in f.tags:
                    continue
                out.append(f)
        return out

    def services_using(self, ref: str) -> list[FeatureService]:
        return [s for s in self.services.values() if ref in s.features]

    def search(
        self,
        text: str,
        *,
        entity: str | None = None,
        tag: str | None = None,
        owner: str | None = None,
        view: str | None = None,
        limit: int = 50,
    ) -> list[SearchHit]:
        """Ranked search: name matches first, then tags and entities, then descriptions."""
        from feature_layer.registry.search import search

        return search(self, text, entity=entity, tag=tag, owner=owner, view=view, limit=limit)

    # -- lineage --------------------------------------------------------------------
    def node(self, unique_id: str) -> DbtNode:
        return self.nodes[unique_id]

    def parents(self, unique_id: str) -> tuple[str, ...]:
        return self.parent_map.get(unique_id, ())

    def children(self, unique_id: str) -> tuple[str, ...]:
        return self.child_map.get(unique_id, ())

    def _tree(self, unique_id: str, step: Any, seen: frozenset[str] = frozenset()) -> LineageNode:
        node = self.nodes.get(unique_id)
        kids: Iterable[str] = () if unique_id in seen else step(unique_id)
        return LineageNode(
            unique_id=unique_id,
            name=node.name if node else unique_id,
            resource_type=node.resource_type if node else "unknown",
            file_path=node.file_path if node else "",
            children=tuple(self._tree(k, step, seen | {unique_id}) for k in sorted(kids)),
        )

    def lineage(self, ref: str) -> Lineage:
        """Model-level lineage of a feature (or a whole view): upstream to sources, downstream to exposures."""
        view_name = ref.partition(".")[0]
        if "." in ref and not ref.endswith(".*"):
            self.feature(ref)
        view = self.view(view_name)
        services = [s.name for s in self.services.values()
                    if ref in s.features or (ref.endswith(".*") or "." not in ref) and any(
                        f.startswith(view.name + ".") for f in s.features)]
        downstream = tuple(self._tree(c, self.children) for c in sorted(self.children(view.unique_id)))
        return Lineage(
            feature=ref,
            upstream=self._tree(view.unique_id, self.parents),
            downstream=downstream,
            services=tuple(services),
        )

    def column_lineage(self, ref: str) -> Any:
        """Column-level lineage of a feature, from raw source columns to the ML exposures."""
        from feature_layer.registry.column_lineage import column_lineage

        return column_lineage(self, ref)

    def summary(self) -> dict[str, int]:
        return {
            "entities": len(self.entities),
            "feature_views": len(self.views),
            "features": len(self._features),
            "feature_services": len(self.services),
            "models": sum(1 for n in self.nodes.values() if n.resource_type == "model"),
        }
