"""Change impact: what deploying the current project does to feature views, ML models and layouts.

``impact(current, state)`` compares the current registry with one built from another manifest
(``--state PATH``: a folder holding ``manifest.json``, e.g. production's ``target/``, as dbt's own
``--state``), view by view:

* ``new`` / ``removed``: the view exists on one side only;
* ``sql``: its data fingerprint differs (``online.layouts.sql_fingerprint``: the compiled SQL with
  formatting, comments and table qualifiers removed, so production's schema names do not count);
  without compiled SQL on a side, dbt's checksum of the model file is compared instead;
* ``declaration``: entities, join keys, event time, created-at, TTL, online or freshness SLA;
* ``schema``: the model's columns or their types (a renamed column is one removed, one added);
* ``metadata``: description, owner or tags only (nothing to rematerialize).

Affected features: every feature of a new or removed view; for a SQL change, the features whose
select-list expression changed when nothing else did (same CTEs, FROM, joins, WHERE, GROUP BY,
windows, and the same keys and timestamps: ``changed_columns``), else every feature of the view;
and the features added, removed or retyped by a schema or declaration change. Affected ML models: the feature services (ML exposures) on either side
that use an affected feature. Invalidated layouts: existing views whose online layout fingerprint
changes (their keys are rewritten under the new layout). A full refresh is needed when values
already online were computed differently: a SQL change, a layout change, or a changed event
time, created-at, TTL or join keys (``materialize`` does it by itself for the first two).

Entity declarations are read from the current ``dbt_project.yml`` for both sides (a manifest does
not keep ``vars``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from feature_layer.errors import InputError
from feature_layer.online.encoding import view_layout
from feature_layer.online.layouts import sql_fingerprint
from feature_layer.registry.model import FeatureView

CHANGE_KINDS = ("new", "removed", "sql", "declaration", "schema", "metadata")
_DECLARATION = ("entities", "join_keys", "event_time", "created_at", "ttl", "online", "freshness")
_REFRESHING = {"entities", "join_keys", "event_time", "created_at", "ttl"}


@dataclass
class ViewChange:
    """How one feature view differs between the state manifest and the current one."""

    view: str
    changes: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    features: dict[str, str] = field(default_factory=dict)
    """Affected feature ref → ``added`` / ``removed`` / ``changed`` / ``retyped``."""
    layout_before: str | None = None
    layout_after: str | None = None
    online: bool = True
    full_refresh: bool = False
    reasons: list[str] = field(default_factory=list)

    @property
    def layout_invalidated(self) -> bool:
        return self.layout_before is not None and self.layout_before != self.layout_after

    def to_dict(self) -> dict[str, Any]:
        return {"view": self.view, "changes": self.changes, "details": self.details,
                "features": dict(sorted(self.features.items())),
                "layout": {"before": self.layout_before, "after": self.layout_after,
                           "invalidated": self.layout_invalidated},
                "online": self.online, "full_refresh": self.full_refresh, "reasons": self.reasons}


@dataclass
class ImpactReport:
    """Every changed view, and what it touches."""

    state: str
    views: list[ViewChange]
    ml_models: list[str]

    @property
    def features(self) -> list[str]:
        return sorted({ref for v in self.views for ref in v.features})

    @property
    def layouts(self) -> list[dict[str, Any]]:
        return [{"view": v.view, "before": v.layout_before, "after": v.layout_after}
                for v in self.views if v.layout_invalidated and v.online]

    @property
    def full_refresh_views(self) -> list[str]:
        return [v.view for v in self.views if v.full_refresh]

    def to_dict(self) -> dict[str, Any]:
        return {"state": self.state, "changed_views": [v.view for v in self.views],
                "views": [v.to_dict() for v in self.views], "features": self.features,
                "ml_models": self.ml_models, "layouts": self.layouts,
                "full_refresh_needed": bool(self.full_refresh_views), "full_refresh_views": self.full_refresh_views}


def state_manifest(path: str | Path) -> Path:
    """``path``'s manifest.json (``path`` may also be the file itself)."""
    given = Path(path)
    manifest = given if given.is_file() else given / "manifest.json"
    if not manifest.is_file():
        raise InputError(f"--state {given} holds no manifest.json.",
                         fix="pass the folder of the manifest to compare with, e.g. a copy of production's target/ "
                             "(as `dbt --state` takes it).")
    return manifest


def load_state_registry(path: str | Path, project_dir: Path) -> Any:
    """The registry of the manifest in ``path`` (its catalog.json too, when there), entities from the project."""
    from feature_layer.dbt.artifacts import load_manifest
    from feature_layer.registry.registry import Registry, read_entity_declarations

    manifest_path = state_manifest(path)
    catalog = manifest_path.parent / "catalog.json"
    manifest = load_manifest(manifest_path, catalog if catalog.is_file() else None)
    raw_entities, source, issues = read_entity_declarations(project_dir)
    return Registry.from_manifest(manifest, raw_entities, source, strict=False, project_issues=issues)


def _declaration(view: FeatureView) -> dict[str, Any]:
    return {key: getattr(view, key) for key in _DECLARATION}


def _data_changed(old: FeatureView, new: FeatureView, old_dialect: str, new_dialect: str) -> bool:
    before, after = sql_fingerprint(old, old_dialect), sql_fingerprint(new, new_dialect)
    if before is not None and after is not None:
        return before != after
    return bool(old.checksum and new.checksum and old.checksum != new.checksum)


def compare_view(old: FeatureView | None, new: FeatureView | None, old_dialect: str, new_dialect: str) -> ViewChange:
    """The change of one view (``old``: in the state manifest, ``new``: current; one may be None)."""
    name = (new or old).name  # type: ignore[union-attr]
    change = ViewChange(name)
    change.layout_before = view_layout(old, "").fingerprint if old is not None and old.online else None
    change.layout_after = view_layout(new, "").fingerprint if new is not None and new.online else None
    change.online = bool((new or old).online)  # type: ignore[union-attr]
    if old is None or new is None:
        kind = "new" if old is None else "removed"
        change.changes.append(kind)
        change.features = {f.ref: "added" if old is None else "removed" for f in (new or old).features}  # type: ignore[union-attr]
        if old is not None:
            change.reasons.append("removed: its online keys are no longer read")
        return change
    if _data_changed(old, new, old_dialect, new_dialect):
        change.changes.append("sql")
        columns = changed_columns(old.compiled_sql, new.compiled_sql, new_dialect)
        fixed = {*new.join_keys, new.event_time, new.created_at, *old.join_keys, old.event_time, old.created_at}
        if columns is None or columns & fixed:
            change.features.update({f.ref: "changed" for f in new.features})
            change.details["sql"] = {"columns": "all"}
        else:
            change.details["sql"] = {"columns": sorted(columns)}
            old_names = {f.name for f in old.features}
            change.features.update({f.ref: "changed" for f in new.features if f.name in columns and f.name in old_names})
        change.full_refresh = True
        change.reasons.append("its SQL changed: materialize recomputes every online value")
    before, after = _declaration(old), _declaration(new)
    declared = {key: {"before": _plain(before[key]), "after": _plain(after[key])}
                for key in _DECLARATION if before[key] != after[key]}
    if declared:
        change.changes.append("declaration")
        change.details["declaration"] = declared
        if set(declared) & _REFRESHING:
            change.full_refresh = True
            change.reasons.append(f"its {', '.join(sorted(set(declared) & _REFRESHING))} changed: "
                                  "values online were selected by the old declaration")
    old_cols, new_cols = dict(old.column_types), dict(new.column_types)
    if old_cols != new_cols:
        change.changes.append("schema")
        change.details["schema"] = {
            "added": sorted(set(new_cols) - set(old_cols)),
            "removed": sorted(set(old_cols) - set(new_cols)),
            "retyped": {c: {"before": old_cols[c], "after": new_cols[c]}
                        for c in sorted(set(old_cols) & set(new_cols)) if old_cols[c] != new_cols[c]},
        }
    old_features = {f.name: f.dtype for f in old.features}
    new_features = {f.name: f.dtype for f in new.features}
    for feature in sorted(set(old_features) | set(new_features)):
        ref = f"{name}.{feature}"
        if ref in change.features:
            continue
        if feature not in new_features:
            change.features[ref] = "removed"
        elif feature not in old_features:
            change.features[ref] = "added"
        elif old_features[feature] != new_features[feature]:
            change.features[ref] = "retyped"
    if change.layout_invalidated and change.online:
        change.full_refresh = True
        change.reasons.append("its online layout changed: its keys are rewritten under the new layout")
    if not change.changes and any(getattr(old, k) != getattr(new, k) for k in ("description", "owner", "tags")):
        change.changes.append("metadata")
    return change


def _select_parts(sql: str | None, dialect: str | None) -> tuple[str, dict[str, str]] | None:
    """The outermost SELECT of ``sql`` without its select list (as SQL), and each output column's
    expression; None when it cannot be read that way (no SQL, a parse error, a UNION, ``*``)."""
    import sqlglot
    from sqlglot import exp

    if not sql:
        return None
    try:
        trees = [t for t in sqlglot.parse(sql, read=dialect) if t is not None]
    except (sqlglot.errors.SqlglotError, ValueError):
        return None
    if len(trees) != 1 or not isinstance(trees[0], exp.Select):
        return None
    tree = trees[0].copy()
    for table in tree.find_all(exp.Table):
        table.set("db", None)
        table.set("catalog", None)
    columns: dict[str, str] = {}
    for projection in tree.expressions:
        if isinstance(projection, exp.Star) or projection.find(exp.Star) is not None and not projection.alias:
            return None
        name = projection.alias_or_name
        body = projection.this if isinstance(projection, exp.Alias) else projection
        columns[name] = body.sql(dialect=dialect, comments=False)
    tree.set("expressions", [])
    return tree.sql(dialect=dialect, comments=False), columns


def changed_columns(old_sql: str | None, new_sql: str | None, dialect: str | None) -> set[str] | None:
    """Output columns whose expression differs (or that appear or vanish) when the rest of the query
    is unchanged; None when the rest changed too (then every column may have changed)."""
    before, after = _select_parts(old_sql, dialect), _select_parts(new_sql, dialect)
    if before is None or after is None or before[0] != after[0]:
        return None
    old_cols, new_cols = before[1], after[1]
    return {c for c in set(old_cols) | set(new_cols) if old_cols.get(c) != new_cols.get(c)}


def _plain(value: Any) -> Any:
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if hasattr(value, "total_seconds"):
        return value.total_seconds()
    if hasattr(value, "to_dict"):
        return value.to_dict()
    return str(value)


def impact(current: Any, state: Any, state_path: str = "") -> ImpactReport:
    """Compare the ``current`` registry with the ``state`` one (see the module docstring)."""
    names = sorted(set(current.views) | set(state.views))
    views = []
    for name in names:
        change = compare_view(state.views.get(name), current.views.get(name), state.dialect, current.dialect)
        if change.changes and change.changes != ["metadata"]:
            views.append(change)
    affected = {ref for v in views for ref in v.features}
    models = set()
    for registry in (state, current):
        for service in registry.services.values():
            if affected & set(service.features):
                models.add(service.name)
    for name in current.broken_services:  # a service the change broke (it lists a removed feature)
        if name in state.services and affected & set(state.services[name].features):
            models.add(name)
    return ImpactReport(state=state_path, views=views, ml_models=sorted(models))
