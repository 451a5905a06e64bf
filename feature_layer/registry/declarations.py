"""Turn dbt nodes plus entity declarations into registry objects, collecting every problem.

Pure: no file or network access. Each check adds a ``ValidationIssue`` naming the model,
its file and the fix, and building carries on, so a user sees all problems in one pass.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from feature_layer.dbt.artifacts import DbtNode, Manifest
from feature_layer.durations import parse_duration
from feature_layer.errors import ValidationIssue
from feature_layer.registry.model import Entity, Feature, FeatureService, FeatureView
from feature_layer.types import LOGICAL_TYPES, logical_type

META_KEY = "feature_layer"
VIEW_KEYS = {"entities", "entity", "event_time", "created_at", "ttl", "online", "owner", "tags", "description", "features"}
ENTITY_KEYS = {"join_keys", "description"}
SERVICE_KEYS = {"features", "description"}
COLUMN_KEYS = {"feature", "dtype", "tags"}
USABLE_TYPES = tuple(t for t in LOGICAL_TYPES if t != "unknown")


@dataclass
class Declarations:
    """What a manifest declares: objects that passed validation, and every issue found."""

    entities: dict[str, Entity] = field(default_factory=dict)
    views: dict[str, FeatureView] = field(default_factory=dict)
    services: dict[str, FeatureService] = field(default_factory=dict)
    issues: list[ValidationIssue] = field(default_factory=list)
    broken_views: dict[str, list[ValidationIssue]] = field(default_factory=dict)
    """Models declared as feature views but left out, by model name, with their own issues."""
    broken_services: dict[str, list[ValidationIssue]] = field(default_factory=dict)
    """ML exposures left out (a bad reference, or a feature view that is itself broken)."""


def close_matches(word: str, candidates: Iterable[str]) -> str:
    """A ``did you mean`` suffix for error messages ('' when nothing is close)."""
    found = difflib.get_close_matches(word, list(candidates), n=3, cutoff=0.6)
    return f" Did you mean {', '.join(repr(f) for f in found)}?" if found else ""


def _issue(code: str, message: str, fix: str, node: DbtNode | None = None, file: str | None = None) -> ValidationIssue:
    return ValidationIssue(
        code=code,
        message=message,
        fix=fix,
        unique_id=node.unique_id if node else None,
        file=node.file_path if node else file,
    )


def _string_list(value: Any) -> list[str] | None:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    return None


def parse_entities(raw: Any, source: str) -> tuple[dict[str, Entity], list[ValidationIssue]]:
    """Entities from ``vars: feature_layer: entities:`` in dbt_project.yml."""
    issues: list[ValidationIssue] = []
    entities: dict[str, Entity] = {}
    if raw is None:
        return entities, issues
    if not isinstance(raw, Mapping):
        issues.append(_issue("entity-format", "entities must be a mapping of name → {join_keys, description}.",
                             "write `entities: {user: {join_keys: [user_id]}}` under vars.feature_layer.", file=source))
        return entities, issues
    for name, spec in raw.items():
        if isinstance(spec, (str, list)):
            spec = {"join_keys": spec}
        if not isinstance(spec, Mapping):
            issues.append(_issue("entity-format", f"entity {name!r} must be a mapping.",
                                 f"write `{name}: {{join_keys: [{name}_id]}}`.", file=source))
            continue
        unknown = sorted(set(spec) - ENTITY_KEYS)
        if unknown:
            issues.append(_issue("unknown-key", f"entity {name!r} has unknown key(s) {', '.join(unknown)}.",
                                 f"use only {', '.join(sorted(ENTITY_KEYS))}.", file=source))
        keys = _string_list(spec.get("join_keys"))
        if not keys:
            issues.append(_issue("entity-join-keys", f"entity {name!r} has no join_keys.",
                                 f"add `join_keys: [{name}_id]` to entity {name!r}.", file=source))
            continue
        entities[str(name)] = Entity(name=str(name), join_keys=tuple(keys), description=str(spec.get("description") or ""))
    return entities, issues


def _model_columns(node: DbtNode) -> dict[str, str | None]:
    """Known columns of a model: the catalog (real table) when present, else schema.yml."""
    if node.catalog_types:
        return dict(node.catalog_types)
    return {name: col.data_type for name, col in node.columns.items()}


def _view_from_node(node: DbtNode, entities: Mapping[str, Entity], issues: list[ValidationIssue]) -> FeatureView | None:
    block = node.meta.get(META_KEY)
    if not isinstance(block, Mapping):
        issues.append(_issue("meta-format", f"meta.{META_KEY} must be a mapping, got {type(block).__name__}.",
                             f"write `meta: {{{META_KEY}: {{entities: [...], event_time: ...}}}}` in the model's config.", node))
        return None
    start = len(issues)
    unknown = sorted(set(block) - VIEW_KEYS)
    if unknown:
        hint = "".join(close_matches(k, VIEW_KEYS) for k in unknown)
        issues.append(_issue("unknown-key", f"meta.{META_KEY} has unknown key(s) {', '.join(unknown)}.{hint}",
                             f"use only {', '.join(sorted(VIEW_KEYS))}.", node))
    entity_names = _string_list(block.get("entities", block.get("entity")))
    if not entity_names:
        issues.append(_issue("missing-entity", "the feature view names no entity.",
                             f"add `entities: [<name>]` to meta.{META_KEY}; declared entities: {', '.join(entities) or '(none)'}.", node))
        entity_names = []
    for name in entity_names:
        if name not in entities:
            issues.append(_issue("unknown-entity", f"entity {name!r} is not declared.{close_matches(name, entities)}",
                                 f"declare it under vars.feature_layer.entities in dbt_project.yml, or use one of: "
                                 f"{', '.join(entities) or '(none)'}.", node))
    columns = _model_columns(node)
    if not columns:
        issues.append(_issue("no-columns", "no columns are known for this model.",
                             "list its columns in the model's schema.yml, or run `dbt docs generate` to write catalog.json.", node))
    join_keys: list[str] = []
    for name in entity_names:
        for key in entities[name].join_keys if name in entities else ():
            if key not in join_keys:
                join_keys.append(key)
            if columns and key.lower() not in columns:
                issues.append(_issue("join-key-missing", f"join key {key!r} of entity {name!r} is not a column of the model.",
                                     f"select {key!r} in the model, or use an entity whose keys the model has.", node))
    event_time = block.get("event_time") or node.config.get("event_time")
    if not event_time:
        issues.append(_issue("missing-event-time", "the feature view has no event-time column.",
                             f"set `event_time: <column>` in meta.{META_KEY} or dbt's `event_time` model config.", node))
    elif columns and str(event_time).lower() not in columns:
        issues.append(_issue("event-time-not-in-model", f"event-time column {event_time!r} is not in the model."
                             f"{close_matches(str(event_time).lower(), columns)}",
                             "name an existing timestamp column, or select it in the model.", node))
    for role, name in (("event-time", event_time), ("created-at", block.get("created_at"))):
        sql_type = columns.get(str(name).lower()) if name else None
        if sql_type and logical_type(sql_type) not in {"timestamp", "date", "unknown"}:
            issues.append(_issue(f"{role}-type", f"{role} column {name!r} has type {sql_type}, not a timestamp.",
                                 f"cast it in the model, e.g. `cast({name} as timestamp) as {name}`.", node))
    created_at = block.get("created_at")
    if created_at and columns and str(created_at).lower() not in columns:
        issues.append(_issue("created-at-not-in-model", f"created-at column {created_at!r} is not in the model."
                             f"{close_matches(str(created_at).lower(), columns)}",
                             "name an existing timestamp column, or remove `created_at`.", node))
    ttl = None
    if block.get("ttl") not in (None, "", "none"):
        try:
            ttl = parse_duration(block["ttl"])
        except ValueError as exc:
            issues.append(_issue("bad-ttl", f"ttl {block['ttl']!r} cannot be parsed: {exc}.",
                                 "write a duration such as `30d`, `12h`, `1w` or `1d12h`, or leave ttl out for no limit.", node))
    online = block.get("online", True)
    if not isinstance(online, bool):
        issues.append(_issue("bad-online", f"online must be true or false, got {online!r}.", "write `online: true` or `online: false`.", node))
    tags = _string_list(block.get("tags", [])) if block.get("tags") is not None else []
    if tags is None:
        issues.append(_issue("bad-tags", "tags must be a list of strings.", "write `tags: [fraud, velocity]`.", node))
        tags = []
    features = _features(node, block, columns, join_keys, event_time, created_at, issues)
    if len(issues) > start:
        return None
    column_types = tuple((node.columns[c].name if c in node.columns else c, logical_type(t)) for c, t in columns.items())
    return FeatureView(
        name=node.name,
        unique_id=node.unique_id,
        entities=tuple(entity_names),
        join_keys=tuple(join_keys),
        event_time=str(event_time),
        created_at=str(created_at) if created_at else None,
        ttl=ttl,
        online=online,
        owner=str(block["owner"]) if block.get("owner") else None,
        tags=tuple(tags) + tuple(t for t in node.tags if t not in tags),
        description=str(block.get("description") or node.description),
        features=tuple(features),
        relation=node.relation,  # type: ignore[arg-type]
        column_types=column_types,
        file_path=node.file_path,
        checksum=node.checksum,
        raw_sql=node.raw_sql,
        compiled_sql=node.compiled_sql,
        depends_on=node.depends_on,
        materialized=str(node.config.get("materialized", "")),
    )


def _features(
    node: DbtNode,
    block: Mapping[str, Any],
    columns: Mapping[str, str | None],
    join_keys: list[str],
    event_time: Any,
    created_at: Any,
    issues: list[ValidationIssue],
) -> list[Feature]:
    """Columns that are features: the explicit list, else marked columns, else all non-key columns."""
    reserved = {k.lower() for k in join_keys} | {str(event_time).lower(), str(created_at).lower()}
    flags: dict[str, bool] = {}
    overrides: dict[str, dict[str, Any]] = {}
    for name, col in node.columns.items():
        spec = col.meta.get(META_KEY)
        if spec is None:
            continue
        if not isinstance(spec, Mapping) or set(spec) - COLUMN_KEYS:
            issues.append(_issue("column-meta", f"column {col.name!r} has malformed meta.{META_KEY}.",
                                 f"use a mapping with keys {', '.join(sorted(COLUMN_KEYS))}.", node))
            continue
        if "feature" in spec:
            if not isinstance(spec["feature"], bool):
                issues.append(_issue("column-meta", f"column {col.name!r}: feature must be true or false, "
                                     f"got {spec['feature']!r}.", "write `feature: true` or `feature: false`.", node))
                continue
            flags[name] = spec["feature"]
        if "dtype" in spec and spec["dtype"] not in USABLE_TYPES:
            issues.append(_issue("bad-dtype", f"column {col.name!r} has dtype {spec['dtype']!r}.{close_matches(str(spec['dtype']), USABLE_TYPES)}",
                                 f"use one of: {', '.join(USABLE_TYPES)}.", node))
            continue
        if "tags" in spec and _string_list(spec["tags"]) is None:
            issues.append(_issue("bad-tags", f"column {col.name!r}: tags must be a list of strings.",
                                 "write `tags: [fraud, velocity]`.", node))
            continue
        overrides[name] = dict(spec)
    explicit = block.get("features")
    if explicit is not None:
        names = _string_list(explicit)
        if names is None:
            issues.append(_issue("bad-features", "features must be a list of column names.", "write `features: [col_a, col_b]`.", node))
            return []
        lowered = [n.lower() for n in names]
    elif any(flags.values()):
        lowered = [n for n, on in flags.items() if on]
    else:
        lowered = [c for c in columns if c not in reserved and flags.get(c, True)]
    seen: set[str] = set()
    features: list[Feature] = []
    for name in lowered:
        if name in seen:
            issues.append(_issue("duplicate-feature", f"feature {name!r} is listed twice.", "list each feature once.", node))
            continue
        seen.add(name)
        if columns and name not in columns:
            issues.append(_issue("feature-not-in-model", f"feature {name!r} is not a column of the model."
                                 f"{close_matches(name, columns)}", "select it in the model or remove it from the list.", node))
            continue
        if name in reserved:
            issues.append(_issue("feature-is-key", f"{name!r} is a join key or timestamp, so it cannot be a feature.",
                                 "remove it from the feature list.", node))
            continue
        col = node.columns.get(name)
        sql_type = columns.get(name) or (col.data_type if col else None)
        dtype = str(overrides.get(name, {}).get("dtype") or logical_type(sql_type))
        features.append(Feature(
            name=col.name if col else name,
            view=node.name,
            dtype=dtype,
            description=col.description if col else "",
            sql_type=sql_type,
            tags=tuple(_string_list(overrides.get(name, {}).get("tags")) or (col.tags if col else ())),
        ))
    if not features:
        issues.append(_issue("no-features", "the feature view has no feature columns.",
                             "select at least one column besides the join keys and timestamps.", node))
    return features


def _service_from_node(node: DbtNode, views: Mapping[str, FeatureView], broken_views: Mapping[str, Any],
                       issues: list[ValidationIssue]) -> FeatureService | None:
    block = node.meta.get(META_KEY)
    if not isinstance(block, Mapping):
        issues.append(_issue("meta-format", f"meta.{META_KEY} of the exposure must be a mapping.",
                             f"write `meta: {{{META_KEY}: {{features: [view.feature, view.*]}}}}`.", node))
        return None
    unknown = sorted(set(block) - SERVICE_KEYS)
    if unknown:
        issues.append(_issue("unknown-key", f"meta.{META_KEY} has unknown key(s) {', '.join(unknown)}.",
                             f"use only {', '.join(sorted(SERVICE_KEYS))}.", node))
    refs = _string_list(block.get("features"))
    if not refs:
        issues.append(_issue("service-no-features", "the ML exposure lists no features.",
                             f"add `features: [view.feature, view.*]` to meta.{META_KEY}.", node))
        return None
    resolved: list[str] = []
    broken_refs: set[str] = set()
    ok = True
    for ref in refs:
        view_name, dot, feature_name = ref.partition(".")
        if not dot or not feature_name:
            issues.append(_issue("bad-feature-ref", f"{ref!r} is not a feature reference.",
                                 "write `view.feature` or `view.*`.", node))
            ok = False
            continue
        view = views.get(view_name)
        if view is None:
            if view_name in broken_views:
                if view_name in broken_refs:
                    ok = False
                    continue
                broken_refs.add(view_name)
                issues.append(_issue("service-uses-broken-view", f"{ref!r} is in feature view {view_name!r}, "
                                     "which is invalid and left out, so this service is left out too.",
                                     f"fix the problems reported for feature view {view_name!r} "
                                     "(`feature-layer validate` lists them).", node))
            else:
                issues.append(_issue("unknown-feature", f"feature view {view_name!r} (in {ref!r}) does not exist."
                                     f"{close_matches(view_name, views)}",
                                     "use a model with a meta.feature_layer block, or fix the name.", node))
            ok = False
            continue
        names = view.feature_names if feature_name == "*" else (feature_name,)
        for name in names:
            if name not in view.feature_names:
                issues.append(_issue("unknown-feature", f"feature {ref!r} does not exist."
                                     f"{close_matches(name, view.feature_names)}",
                                     f"use one of {view_name}'s features: {', '.join(view.feature_names)}.", node))
                ok = False
                continue
            full = f"{view_name}.{name}"
            if full not in resolved:
                resolved.append(full)
    if not ok:
        return None
    return FeatureService(
        name=node.name,
        unique_id=node.unique_id,
        features=tuple(resolved),
        description=str(block.get("description") or node.description),
        owner=node.owner,
        file_path=node.file_path,
        depends_on=node.depends_on,
        tags=node.tags,
    )


def build_declarations(manifest: Manifest, raw_entities: Any, entities_source: str) -> Declarations:
    """Validate every declaration in ``manifest``; return the good objects and all issues."""
    out = Declarations()
    out.entities, out.issues = parse_entities(raw_entities, entities_source)
    candidates = [n for n in manifest.nodes.values()
                  if n.resource_type in {"model", "snapshot"} and n.enabled and META_KEY in n.meta]
    by_name: dict[str, list[DbtNode]] = {}
    for node in candidates:
        by_name.setdefault(node.name, []).append(node)
    for name, nodes in by_name.items():
        start = len(out.issues)
        if len(nodes) > 1:
            for node in nodes:
                out.issues.append(_issue("duplicate-view", f"feature view name {name!r} is used by "
                                         f"{', '.join(n.unique_id for n in nodes)}.",
                                         "rename one model (feature views are addressed by model name).", node))
            out.broken_views[name] = out.issues[start:]
            continue
        view = _view_from_node(nodes[0], out.entities, out.issues)
        if view is not None:
            out.views[view.name] = view
        else:
            out.broken_views[name] = out.issues[start:]
    for node in manifest.nodes.values():
        if node.resource_type != "exposure" or META_KEY not in node.meta:
            continue
        if node.exposure_type != "ml":
            out.issues.append(_issue("service-not-ml", f"exposure has meta.{META_KEY} but type {node.exposure_type!r}.",
                                     "set `type: ml` on the exposure (feature services are ML exposures), "
                                     f"or remove its meta.{META_KEY} block.", node))
            continue
        start = len(out.issues)
        service = _service_from_node(node, out.views, out.broken_views, out.issues)
        if service is not None:
            out.services[service.name] = service
        else:
            out.broken_services[node.name] = out.issues[start:]
    return out
