"""Turn dbt nodes plus entity declarations into registry objects, collecting every problem.

Pure: no file or network access. Each check adds a ``ValidationIssue`` naming the model,
its file and the fix, and building carries on, so a user sees all problems in one pass.
"""

from __future__ import annotations

import difflib
import functools
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from feature_layer.dbt.artifacts import DbtNode, Manifest
from feature_layer.durations import parse_duration
from feature_layer.errors import ValidationIssue
from feature_layer.freshness import PERIODS, FreshnessSla
from feature_layer.registry.columns import CATALOG, SQL, YAML, ModelColumns, model_columns
from feature_layer.registry.model import Entity, Feature, FeatureService, FeatureView
from feature_layer.types import LOGICAL_TYPES, logical_type

META_KEY = "feature_layer"
VIEW_KEYS = {"entities", "entity", "event_time", "created_at", "ttl", "online", "owner", "tags", "description", "features",
             "freshness"}
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
        yaml_file=node.yaml_path if node and node.yaml_path != node.file_path else None,
    )


def _unknown_keys(keys: list[str]) -> str:
    return f"{'an unknown key' if len(keys) == 1 else 'unknown keys'} {', '.join(keys)}"


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
            issues.append(_issue("unknown-key", f"entity {name!r} has {_unknown_keys(unknown)}.",
                                 f"use only {', '.join(sorted(ENTITY_KEYS))}.", file=source))
        keys = _string_list(spec.get("join_keys"))
        if not keys:
            issues.append(_issue("entity-join-keys", f"entity {name!r} has no join_keys.",
                                 f"add `join_keys: [{name}_id]` to entity {name!r}.", file=source))
            continue
        entities[str(name)] = Entity(name=str(name), join_keys=tuple(keys), description=str(spec.get("description") or ""))
    return entities, issues


_MAYBE_BLOCK = re.compile(r"feat|layer", re.IGNORECASE)


@functools.lru_cache(maxsize=4096)
def _is_near_miss(text: str) -> bool:
    if text == META_KEY or abs(len(text) - len(META_KEY)) > 4 or not _MAYBE_BLOCK.search(text):
        return False
    if re.sub(r"[^a-z]", "", text.lower()) == "featurelayer":
        return True
    return difflib.SequenceMatcher(None, text.lower(), META_KEY).ratio() >= 0.85


def near_miss_keys(keys: Iterable[Any]) -> list[str]:
    """Keys that look like ``feature_layer`` but are not (``feature-layer``, ``featureLayer``, ``feature_layers``)."""
    if not keys:
        return []
    try:
        text = "\n".join(keys)  # one regex per mapping, not per key: registry load stays fast
    except TypeError:
        keys = [str(k) for k in keys]
        text = "\n".join(keys)
    if not _MAYBE_BLOCK.search(text):
        return []
    return [str(k) for k in keys if _is_near_miss(str(k))]


def _block_keys(mapping: Mapping[Any, Any]) -> list[str]:
    """``feature_layer`` itself and its near misses among ``mapping``'s keys."""
    return ([META_KEY] if META_KEY in mapping else []) + near_miss_keys(mapping)


def misplaced_blocks(node: DbtNode) -> list[ValidationIssue]:
    """A ``feature_layer`` block dbt keeps but feature_layer does not read: near-miss names, wrong level."""
    issues = []
    kind = "exposure" if node.resource_type == "exposure" else "model"
    if META_KEY not in node.meta:
        for key in near_miss_keys(node.meta):
            issues.append(_issue("misspelt-block", f"the {kind}'s meta has a {key!r} block, which feature_layer does not "
                                 f"read. Did you mean {META_KEY!r}?",
                                 f"rename `{key}:` to `{META_KEY}:` under the {kind}'s `config: meta:`.", node))
        for key in _block_keys(node.config):
            issues.append(_issue("misplaced-block", f"the {kind} has `{key}:` directly under `config:`, which "
                                 f"feature_layer does not read (it reads `config: meta: {META_KEY}:`).",
                                 f"move the block under `config: meta:` and name it `{META_KEY}:`.", node))
    return issues


def _misplaced_column_blocks(node: DbtNode) -> list[ValidationIssue]:
    """Column-level ``feature_layer`` blocks that are misspelt or outside the column's meta."""
    issues = []
    for col in node.columns.values():
        if META_KEY not in col.meta:
            for key in near_miss_keys(col.meta):
                issues.append(_issue("misspelt-block", f"column {col.name!r} has a meta block {key!r}, which "
                                     f"feature_layer does not read. Did you mean {META_KEY!r}?",
                                     f"rename `{key}:` to `{META_KEY}:` under the column's `config: meta:`.", node))
        for key in _block_keys(col.extra):
            issues.append(_issue("misplaced-block", f"column {col.name!r} has `{key}:` outside its meta, which "
                                 "feature_layer does not read (dbt keeps it as an unknown column property).",
                                 f"move it under the column's `config: meta: {META_KEY}:`, e.g. "
                                 f"`- name: {col.name}` / `config: {{meta: {{{META_KEY}: {{...}}}}}}`.", node))
    return issues


_READ_FROM = {CATALOG: "catalog.json lists", SQL: "the model's SQL selects",
              YAML: "the model's `columns:` in schema.yml list (no catalog.json, and the SQL could not be read)"}


def _not_found(cols: ModelColumns, name: str) -> str:
    shown = ", ".join(list(cols.names.values())[:12]) + (", …" if len(cols.names) > 12 else "")
    return f" ({_READ_FROM[cols.source]}: {shown or 'nothing'}).{close_matches(name.lower(), cols.types)}"


def _source_fix(cols: ModelColumns) -> str:
    if cols.source == CATALOG:
        return "; catalog.json is the warehouse table as of the last `dbt docs generate`, so run it again after `dbt build`"
    if cols.source == YAML:
        return "; or list it under the model's `columns:`, or run `dbt compile` so the compiled SQL can be read"
    return ""


@dataclass(frozen=True)
class _Role:
    """What a declared column name is for, in words for messages."""

    label: str  # "join key 'user_id' of entity 'user'"
    code: str  # issue code when the column is missing
    fix: str  # fix when it is missing
    where: str  # where the name is written, for the case fix


def _column_check(node: DbtNode, cols: ModelColumns, name: str, role: _Role, issues: list[ValidationIssue]) -> bool:
    """Is ``name`` a column, spelled exactly as the warehouse has it? Unknown (``select *``) counts as yes.

    Names must match exactly: PostgreSQL (like most warehouses) treats quoted names as
    case-sensitive and the generated SQL quotes every name, so ``User_ID`` is not ``user_id``.
    """
    lowered = name.lower()
    if lowered in cols.types:
        actual = cols.spelling(lowered)
        if lowered in cols.exact and actual != name:
            issues.append(_issue("name-case", f"{role.label} matches the model's column {actual!r} only when case "
                                 "is ignored; generated SQL quotes names, and PostgreSQL (like most warehouses) "
                                 "compares quoted names case-sensitively, so it would fail there.",
                                 f"spell it {actual!r} in {role.where} (or alias the column `as \"{name}\"` "
                                 "in the model).", node))
            return False
        return True
    if cols.complete:
        issues.append(_issue(role.code, f"{role.label} is not a column of the model{_not_found(cols, name)}",
                             role.fix + _source_fix(cols) + ".", node))
        return False
    return True


def _entity_names(node: DbtNode, block: Mapping[str, Any], entities: Mapping[str, Entity],
                  issues: list[ValidationIssue]) -> list[str]:
    entity_names = _string_list(block.get("entities", block.get("entity")))
    if not entity_names:
        issues.append(_issue("missing-entity", "the feature view names no entity.",
                             f"add `entities: [<name>]` to meta.{META_KEY}; declared entities: {', '.join(entities) or '(none)'}.", node))
        return []
    for name in entity_names:
        if name not in entities:
            issues.append(_issue("unknown-entity", f"entity {name!r} is not declared.{close_matches(name, entities)}",
                                 f"declare it under vars.feature_layer.entities in dbt_project.yml, or use one of: "
                                 f"{', '.join(entities) or '(none)'}.", node))
    return entity_names


def _join_keys(node: DbtNode, entity_names: list[str], entities: Mapping[str, Entity], cols: ModelColumns,
               issues: list[ValidationIssue]) -> list[str]:
    join_keys: list[str] = []
    for name in entity_names:
        for key in entities[name].join_keys if name in entities else ():
            if key not in join_keys:
                join_keys.append(key)
            _column_check(node, cols, key, _Role(
                f"join key {key!r} of entity {name!r}", "join-key-missing",
                f"select {key!r} in the model, or use an entity whose keys the model has",
                f"the join_keys of entity {name!r} (vars.feature_layer.entities in dbt_project.yml)"), issues)
    return join_keys


def _timestamps(node: DbtNode, block: Mapping[str, Any], cols: ModelColumns, issues: list[ValidationIssue]) -> tuple[Any, Any]:
    event_time = block.get("event_time") or node.config.get("event_time")
    created_at = block.get("created_at")
    if not event_time:
        issues.append(_issue("missing-event-time", "the feature view has no event-time column.",
                             f"set `event_time: <column>` in meta.{META_KEY} or dbt's `event_time` model config.", node))
    for role, name, code, fix in (
        ("event-time", event_time, "event-time-not-in-model", "name an existing timestamp column, or select it in the model"),
        ("created-at", created_at, "created-at-not-in-model", "name an existing timestamp column, or remove `created_at`"),
    ):
        if not name:
            continue
        if not isinstance(name, str):
            issues.append(_issue(f"{role}-format", f"{role} must be a column name, got {name!r}.",
                                 f"write `{role.replace('-', '_')}: <column>`.", node))
            continue
        key = role.replace("-", "_")
        if not _column_check(node, cols, name, _Role(f"{role} column {name!r}", code, fix,
                                                     f"`{key}:` of meta.{META_KEY}"), issues):
            continue
        sql_type = cols.types.get(name.lower())
        if sql_type and logical_type(sql_type) not in {"timestamp", "date", "unknown"}:
            issues.append(_issue(f"{role}-type", f"{role} column {name!r} has type {sql_type}, not a timestamp.",
                                 f"cast it in the model, e.g. `cast({name} as timestamp) as {name}`.", node))
    return event_time, created_at


def _ttl(node: DbtNode, raw: Any, issues: list[ValidationIssue]) -> timedelta | None:
    """A TTL with a unit: a bare YAML number (``ttl: 2``) is refused, not read as seconds."""
    if raw in (None, "", "none"):
        return None
    if isinstance(raw, (int, float)) and not isinstance(raw, bool):
        if raw != raw or raw in (float("inf"), float("-inf")):  # .nan, .inf
            issues.append(_issue("bad-ttl", f"ttl {raw!r} is not a duration.",
                                 "leave ttl out for no limit, or write a duration such as `30d` or `12h`.", node))
            return None
        shown = int(raw) if raw == int(raw) else raw
        issues.append(_issue("bad-ttl", f"ttl {shown!r} has no unit (a bare number is ambiguous).",
                             f"write `{shown}h` or `{shown}d` (or `{shown}s` if you mean seconds); units are s, m, h, d, w.", node))
        return None
    try:
        return parse_duration(raw)
    except ValueError as exc:
        issues.append(_issue("bad-ttl", f"ttl {raw!r} cannot be parsed: {exc}.",
                             "write a duration such as `30d`, `12h`, `1w` or `1d12h`, or leave ttl out for no limit.", node))
        return None


_SLA_KEYS = ("warn_after", "error_after")
_SLA_EXAMPLE = "`freshness: {warn_after: {count: 2, period: hour}, error_after: {count: 1, period: day}}`"


def freshness_sla(node: DbtNode, raw: Any, issues: list[ValidationIssue]) -> FreshnessSla | None:
    """The view's freshness SLA in dbt's shape (ops1; ``feature_layer.freshness``), or None.

    ``warn_after`` / ``error_after`` are each ``{count: <positive integer>, period: minute|hour|day}``;
    at least one is given, and a warning threshold is not later than the error one.
    """
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        issues.append(_issue("bad-freshness", f"freshness must be a mapping, got {type(raw).__name__} {raw!r}.",
                             f"write {_SLA_EXAMPLE}, or leave freshness out.", node))
        return None
    before = len(issues)
    unknown = sorted(str(k) for k in set(raw) - set(_SLA_KEYS))
    if unknown:
        hint = "".join(close_matches(k, _SLA_KEYS) for k in unknown)
        issues.append(_issue("bad-freshness", f"freshness has {_unknown_keys(unknown)}.{hint}",
                             f"use only warn_after and error_after, as in {_SLA_EXAMPLE}.", node))
    after = {key: _sla_threshold(node, key, raw.get(key), issues) for key in _SLA_KEYS}
    if len(issues) > before:
        return None
    warn, error = after["warn_after"], after["error_after"]
    if warn is None and error is None:
        issues.append(_issue("bad-freshness", "freshness declares neither warn_after nor error_after.",
                             f"write {_SLA_EXAMPLE}, or leave freshness out.", node))
        return None
    if warn is not None and error is not None and warn > error:
        issues.append(_issue("bad-freshness", f"freshness warn_after ({warn}) is later than error_after ({error}).",
                             "make warn_after shorter than (or equal to) error_after.", node))
        return None
    return FreshnessSla(warn_after=warn, error_after=error)


def _sla_threshold(node: DbtNode, key: str, raw: Any, issues: list[ValidationIssue]) -> timedelta | None:
    if raw is None:
        return None
    periods = ", ".join(PERIODS)
    if not isinstance(raw, Mapping) or set(raw) - {"count", "period"}:
        issues.append(_issue("bad-freshness", f"freshness {key} must be {{count: N, period: {periods.replace(', ', '|')}}}, "
                             f"got {raw!r}.", f"write `{key}: {{count: 2, period: hour}}`.", node))
        return None
    count, period = raw.get("count"), raw.get("period")
    if isinstance(count, bool) or not isinstance(count, int) or count <= 0:
        issues.append(_issue("bad-freshness", f"freshness {key}.count must be a positive whole number, got {count!r}.",
                             f"write `{key}: {{count: 2, period: hour}}`.", node))
        return None
    if period not in PERIODS:
        hint = close_matches(str(period), PERIODS) if isinstance(period, str) else ""
        issues.append(_issue("bad-freshness", f"freshness {key}.period {period!r} is not one of {periods}.{hint}",
                             f"write `{key}: {{count: {count}, period: hour}}` (minute, hour or day, as in dbt).", node))
        return None
    try:
        return parse_duration(int((PERIODS[period] * count).total_seconds()))
    except ValueError as exc:
        issues.append(_issue("bad-freshness", f"freshness {key} is too long: {exc}.",
                             "use a shorter count.", node))
        return None


def _owner(node: DbtNode, raw: Any, issues: list[ValidationIssue]) -> str | None:
    if raw in (None, ""):
        return None
    if isinstance(raw, str):
        return raw
    example = next((str(raw[k]) for k in ("email", "name") if isinstance(raw, Mapping) and raw.get(k)), "risk-team")
    issues.append(_issue("bad-owner", f"owner must be a team name or an email, got {type(raw).__name__} {raw!r}.",
                         f"write `owner: {example}`.", node))
    return None


def _view_from_node(node: DbtNode, entities: Mapping[str, Entity], issues: list[ValidationIssue],
                    dialect: str = "duckdb") -> FeatureView | None:
    block = node.meta.get(META_KEY)
    if not isinstance(block, Mapping):
        issues.append(_issue("meta-format", f"meta.{META_KEY} must be a mapping, got {type(block).__name__}.",
                             f"write `meta: {{{META_KEY}: {{entities: [...], event_time: ...}}}}` in the model's config.", node))
        return None
    start = len(issues)
    unknown = sorted(set(block) - VIEW_KEYS)
    if unknown:
        hint = "".join(close_matches(k, VIEW_KEYS) for k in unknown)
        issues.append(_issue("unknown-key", f"meta.{META_KEY} has {_unknown_keys(unknown)}.{hint}",
                             f"use only {', '.join(sorted(VIEW_KEYS))}.", node))
    issues.extend(_misplaced_column_blocks(node))
    entity_names = _entity_names(node, block, entities, issues)
    cols = model_columns(node, dialect)
    if not cols:
        why = ("its SQL selects `*` (or unnamed expressions), and there is no catalog.json or `columns:` list"
               if cols.source == SQL else "there is no catalog.json, no `columns:` list, and its SQL could not be read")
        issues.append(_issue("no-columns", f"no columns are known for this model: {why}.",
                             "run `dbt docs generate` after `dbt build` (catalog.json has the real table's columns), "
                             "or list the columns under the model's `columns:` in schema.yml.", node))
    join_keys = _join_keys(node, entity_names, entities, cols, issues)
    event_time, created_at = _timestamps(node, block, cols, issues)
    ttl = _ttl(node, block.get("ttl"), issues)
    sla = freshness_sla(node, block.get("freshness"), issues)
    owner = _owner(node, block.get("owner"), issues)
    online = block.get("online", True)
    if not isinstance(online, bool):
        issues.append(_issue("bad-online", f"online must be true or false, got {online!r}.", "write `online: true` or `online: false`.", node))
    tags = _string_list(block.get("tags", [])) if block.get("tags") is not None else []
    if tags is None:
        issues.append(_issue("bad-tags", "tags must be a list of strings.", "write `tags: [fraud, velocity]`.", node))
        tags = []
    features = _features(node, block, cols, join_keys, event_time, created_at, issues)
    if len(issues) > start:
        return None
    column_types = tuple((cols.spelling(c), logical_type(t)) for c, t in cols.types.items())
    return FeatureView(
        name=node.name,
        unique_id=node.unique_id,
        entities=tuple(entity_names),
        join_keys=tuple(join_keys),
        event_time=str(event_time),
        created_at=str(created_at) if created_at else None,
        ttl=ttl,
        online=online,
        owner=owner,
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
        freshness=sla,
    )


# warehouse logical type -> dtypes its values convert to without loss (what materialize's Arrow cast accepts)
_CONVERTS_TO: dict[str, set[str]] = {
    "int64": {"int64", "float64", "decimal", "string"},
    "float64": {"float64", "string"},
    "decimal": {"decimal", "float64", "string"},
    "bool": {"bool", "int64", "float64", "string"},
    "date": {"date", "timestamp", "string"},
    "timestamp": {"timestamp", "string"},
    "string": {"string"},
}
_DECIMAL_SCALE = re.compile(r"\(\s*\d+\s*,\s*(\d+)\s*\)")


def _dtype_fits(sql_type: str, dtype: str) -> bool:
    """Can a ``sql_type`` column be read as ``dtype``? Unknown warehouse types are given the benefit."""
    source = logical_type(sql_type)
    if source == "unknown" or dtype in _CONVERTS_TO.get(source, {dtype}):
        return True
    if source == "decimal" and dtype == "int64":  # DECIMAL(38,0) from integer sums: whole numbers
        scale = _DECIMAL_SCALE.search(sql_type)
        return scale is not None and int(scale.group(1)) == 0
    return False


_CAST_TO = {"int64": "bigint", "float64": "double", "bool": "boolean", "string": "varchar", "timestamp": "timestamp",
            "date": "date", "decimal": "decimal(38, 9)"}


def _column_overrides(node: DbtNode, cols: ModelColumns, issues: list[ValidationIssue]) -> tuple[dict[str, bool], dict[str, dict[str, Any]]]:
    """Per-column ``meta.feature_layer``: the ``feature`` flags and the dtype/tags overrides."""
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
        sql_type = cols.types.get(name) or col.data_type
        if "dtype" in spec and sql_type and not _dtype_fits(sql_type, spec["dtype"]):
            where = "in the warehouse (catalog.json)" if cols.source == CATALOG and cols.types.get(name) else "(its data_type)"
            issues.append(_issue("dtype-mismatch", f"column {col.name!r} is {sql_type} {where}, but its dtype "
                                 f"override is {spec['dtype']!r}: its values do not convert without loss, so "
                                 "materialize would fail.",
                                 f"remove the dtype (it is read as {logical_type(sql_type)!r}), or convert in the model: "
                                 f"`cast({col.name} as {_CAST_TO[spec['dtype']]}) as {col.name}`.", node))
            continue
        if "tags" in spec and _string_list(spec["tags"]) is None:
            issues.append(_issue("bad-tags", f"column {col.name!r}: tags must be a list of strings.",
                                 "write `tags: [fraud, velocity]`.", node))
            continue
        overrides[name] = dict(spec)
    return flags, overrides


def _features(
    node: DbtNode,
    block: Mapping[str, Any],
    cols: ModelColumns,
    join_keys: list[str],
    event_time: Any,
    created_at: Any,
    issues: list[ValidationIssue],
) -> list[Feature]:
    """Columns that are features: the explicit list, else marked columns, else all non-key columns."""
    reserved = {k.lower() for k in join_keys} | {str(event_time).lower(), str(created_at).lower()}
    flags, overrides = _column_overrides(node, cols, issues)
    explicit = block.get("features")
    if explicit is not None:
        names = _string_list(explicit)
        if names is None:
            issues.append(_issue("bad-features", "features must be a list of column names.", "write `features: [col_a, col_b]`.", node))
            return []
        wanted = names
    elif any(flags.values()):
        wanted = [cols.spelling(n) if n in cols else node.columns[n].name for n, on in flags.items() if on]
    else:
        wanted = [cols.spelling(c) for c in cols.types if c not in reserved and flags.get(c, True)]
    seen: set[str] = set()
    features: list[Feature] = []
    for name in wanted:
        lowered = name.lower()
        if lowered in seen:
            issues.append(_issue("duplicate-feature", f"feature {name!r} is listed twice.", "list each feature once.", node))
            continue
        seen.add(lowered)
        if not _column_check(node, cols, name, _Role(f"feature {name!r}", "feature-not-in-model",
                                                     "select it in the model or remove it from the list",
                                                     f"`features:` of meta.{META_KEY}"), issues):
            continue
        if lowered in reserved:
            issues.append(_issue("feature-is-key", f"{name!r} is a join key or timestamp, so it cannot be a feature.",
                                 "remove it from the feature list.", node))
            continue
        col = node.columns.get(lowered)
        sql_type = cols.types.get(lowered) or (col.data_type if col else None)
        override = overrides.get(lowered, {})
        features.append(Feature(
            name=name,
            view=node.name,
            dtype=str(override.get("dtype") or logical_type(sql_type)),
            description=col.description if col else "",
            sql_type=sql_type,
            tags=tuple(_string_list(override.get("tags")) or (col.tags if col else ())),
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
        issues.append(_issue("unknown-key", f"meta.{META_KEY} has {_unknown_keys(unknown)}.",
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


def dropped_blocks(properties: Any, nodes: Mapping[str, DbtNode]) -> dict[str, list[ValidationIssue]]:
    """``feature_layer`` blocks in a properties file (schema.yml) that dbt drops without a word.

    dbt keeps no trace in the manifest of a model-level ``feature_layer:`` (beside ``config:``)
    or of one under a column's ``config:``; only the YAML shows them. ``properties`` is the
    parsed file, ``nodes`` its models by name. Returns issues by the model's unique_id.
    """
    found: dict[str, list[ValidationIssue]] = {}
    entries = [e for kind in ("models", "snapshots") for e in ((properties or {}).get(kind) or [])
               if isinstance(e, Mapping)] if isinstance(properties, Mapping) else []
    for entry in entries:
        node = nodes.get(str(entry.get("name")))
        if node is None:
            continue
        for key in _block_keys(entry):
            found.setdefault(node.unique_id, []).append(_issue(
                "misplaced-block", f"the model has `{key}:` beside `config:` in its properties file, which dbt drops "
                "(the view would silently not exist).", f"move it under the model's `config: meta:` and name it "
                f"`{META_KEY}:`.", node))
        for col in [c for c in entry.get("columns") or [] if isinstance(c, Mapping)]:
            config = col.get("config") if isinstance(col.get("config"), Mapping) else {}
            for key in _block_keys(config):
                found.setdefault(node.unique_id, []).append(_issue(
                    "misplaced-block", f"column {col.get('name')!r} has `{key}:` directly under `config:`, which dbt "
                    "drops.", f"move it under the column's `config: meta:` and name it `{META_KEY}:`.", node))
    return found


def build_declarations(manifest: Manifest, raw_entities: Any, entities_source: str,
                       dialect: str = "duckdb", dropped: Mapping[str, list[ValidationIssue]] | None = None,
                       ) -> Declarations:
    """Validate every declaration in ``manifest``; return the good objects and all issues.

    ``dialect``: the sqlglot dialect of the compiled SQL, whose select list names the columns
    when there is no catalog. ``dropped``: issues found in the properties files by
    ``dropped_blocks`` (blocks dbt dropped), by model unique_id.
    """
    out = Declarations()
    out.entities, out.issues = parse_entities(raw_entities, entities_source)
    dropped = dropped or {}
    models = [n for n in manifest.nodes.values() if n.resource_type in {"model", "snapshot"} and n.enabled]
    misplaced = {n.unique_id: misplaced_blocks(n) + dropped.get(n.unique_id, [])
                 for n in models if META_KEY not in n.meta}
    for node in models:  # a misspelt block is a view that would silently vanish: it is a broken view
        if misplaced.get(node.unique_id):
            out.issues.extend(misplaced[node.unique_id])
            out.broken_views[node.name] = misplaced[node.unique_id]
    candidates = [n for n in models if META_KEY in n.meta]
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
        out.issues.extend(dropped.get(nodes[0].unique_id, []))
        view = _view_from_node(nodes[0], out.entities, out.issues, dialect)
        if view is not None and len(out.issues) == start:
            out.views[view.name] = view
        else:
            out.broken_views[name] = out.issues[start:]
    for node in manifest.nodes.values():
        if node.resource_type == "exposure" and META_KEY not in node.meta and misplaced_blocks(node):
            out.issues.extend(misplaced_blocks(node))
            out.broken_services[node.name] = misplaced_blocks(node)
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
