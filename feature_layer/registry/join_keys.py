"""Join-key mapping: one feature view used under other entity columns (Feast's ``join_key_map``).

``join_key_map={"user_profile_features": {"user_id": "payee_id"}}`` reads the view's features
for the user in the entity rows' ``payee_id`` column instead of ``user_id``. A view may be used
several times in one request: a list of mappings, ``{}`` being the plain use::

    join_key_map={"user_profile_features": [{}, {"user_id": "payee_id"}]}

Output columns: the plain use is named as usual (``country``, or ``view__country`` with full
feature names); a mapped use appends ``__`` and the entity columns it reads, in join-key order
(``country__payee_id``; full: ``user_profile_features__country__payee_id``), so both uses sit
side by side in one training set or lookup response. The same block may sit in a feature
service's exposure meta (``meta.feature_layer.join_key_map``); an explicit ``join_key_map``
argument replaces the service's entry for the views it names.

A mapped use is a ``MappedView``: the view with the entity columns as its join keys, the view's
own key columns kept in ``source_keys``. The training-set SQL reads such a view through a
subquery that renames the key columns (``feature_layer.sql.join_key_map``); the online lookup
reads it with the entity columns renamed (``feature_layer.online.mapped_lookup``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from feature_layer.errors import InputError
from feature_layer.registry.model import Feature, FeatureView

JoinKeyMap = dict[str, tuple[dict[str, str], ...]]
"""View name → its uses, each a mapping of the view's join keys to entity columns ({}: plain)."""
SUFFIX_SEPARATOR = "__"


@dataclasses.dataclass(frozen=True)
class MappedView(FeatureView):
    """A feature view read under other key columns (``join_keys`` are the entity columns)."""

    source_keys: tuple[str, ...] = ()
    """The view's own key columns, aligned with ``join_keys``."""
    suffix: str = ""
    """Appended (after ``__``) to each output column name of this use."""
    source_name: str = ""
    """The view's registry name."""


def parse_join_key_map(raw: Any, views: Mapping[str, FeatureView], where: str = "join_key_map") -> JoinKeyMap:
    """Validate a ``join_key_map`` (from an argument, an HTTP body or an exposure's meta)."""
    if raw is None:
        return {}
    example = 'join_key_map={"user_profile_features": {"user_id": "payee_id"}}'
    if not isinstance(raw, Mapping):
        raise InputError(f"{where} must map feature view names to {{join key: entity column}}.", fix=f"write {example}.")
    out: JoinKeyMap = {}
    for view_name, uses in raw.items():
        view = views.get(view_name) if isinstance(view_name, str) else None
        if view is None:
            import difflib

            near = difflib.get_close_matches(str(view_name), list(views), n=3, cutoff=0.6)
            hint = f" Did you mean {', '.join(map(repr, near))}?" if near else ""
            raise InputError(f"{where} names feature view {view_name!r}, which does not exist.{hint}",
                             fix=f"write {example}.")
        listed = list(uses) if isinstance(uses, (list, tuple)) else [uses]
        if not listed:
            raise InputError(f"{where}[{view_name!r}] lists no use.", fix="give a mapping, or a list of them ({} is the plain use).")
        parsed: list[dict[str, str]] = []
        for use in listed:
            if not isinstance(use, Mapping) or not all(isinstance(k, str) and isinstance(v, str) and v
                                                       for k, v in use.items()):
                raise InputError(f"{where}[{view_name!r}] must be {{join key: entity column}} (or a list of them), "
                                 f"got {use!r}.", fix=f"write {example}.")
            unknown = [k for k in use if k not in view.join_keys]
            if unknown:
                raise InputError(f"{where}[{view_name!r}] maps {', '.join(map(repr, unknown))}, not a join key of "
                                 f"feature view {view_name!r} (its join keys: {', '.join(view.join_keys)}).",
                                 fix="map the view's join keys to entity columns.")
            clean = {k: v for k, v in use.items() if k != v}
            own = {view.event_time, view.created_at, *view.feature_names} - {None}
            clash = sorted(v for v in clean.values() if v in own)
            if clash:
                raise InputError(f"{where}[{view_name!r}] maps a join key to {', '.join(map(repr, clash))}, which is "
                                 f"also a column of feature view {view_name!r}.",
                                 fix="rename the entity column (the mapped key is read under that name).")
            if clean in parsed:
                raise InputError(f"{where}[{view_name!r}] lists the same use twice.", fix="list each mapping once.")
            parsed.append(clean)
        out[str(view_name)] = tuple(parsed)
    return out


def suffix_of(view: FeatureView, mapping: Mapping[str, str]) -> str:
    return "_".join(mapping[k] for k in view.join_keys if k in mapping)


def mapped_view(view: FeatureView, mapping: Mapping[str, str]) -> FeatureView:
    """``view`` read with its join keys taken from the entity columns ``mapping`` names."""
    if not mapping:
        return view
    keys = tuple(mapping.get(k, k) for k in view.join_keys)
    suffix = suffix_of(view, mapping)
    renamed = {mapping[k] for k in mapping}
    types = dict(view.column_types)
    column_types = tuple((c, t) for c, t in view.column_types if c not in renamed)
    column_types += tuple((mapping[k], types.get(k, "unknown")) for k in view.join_keys if k in mapping)
    return MappedView(**{f.name: getattr(view, f.name) for f in dataclasses.fields(FeatureView)}
                      | {"name": f"{view.name}{SUFFIX_SEPARATOR}{suffix}", "join_keys": keys,
                         "column_types": column_types},
                      source_keys=view.join_keys, suffix=suffix, source_name=view.name)


def apply_join_key_map(
    requested: Sequence[tuple[FeatureView, Sequence[Feature]]], join_key_map: JoinKeyMap
) -> list[tuple[FeatureView, list[Feature]]]:
    """Each requested (view, features) once per use ``join_key_map`` gives the view (plain: once)."""
    names = {view.name for view, _ in requested}
    missing = sorted(set(join_key_map) - names)
    if missing:
        raise InputError(f"join_key_map names {', '.join(map(repr, missing))}, but no feature of "
                         f"{'that view' if len(missing) == 1 else 'those views'} is requested.",
                         fix="request the view's features too, or drop it from join_key_map.")
    out: list[tuple[FeatureView, list[Feature]]] = []
    for view, features in requested:
        for use in join_key_map.get(view.name, ({},)):
            out.append((mapped_view(view, use), list(features)))
    return out


def output_suffix(view: FeatureView) -> str:
    """``__payee_id`` for a mapped use, '' otherwise (``plan_outputs`` appends it to each name)."""
    return f"{SUFFIX_SEPARATOR}{view.suffix}" if isinstance(view, MappedView) else ""


def service_join_key_map(service: Any, given: Any, views: Mapping[str, FeatureView]) -> JoinKeyMap:
    """The service's own map (exposure meta), with ``given`` replacing its entries view by view."""
    merged: dict[str, Any] = dict(getattr(service, "join_key_map", None) or {}) if service is not None else {}
    merged.update(parse_join_key_map(given, views))
    return {k: tuple(v) for k, v in merged.items()}


def with_join_key_map(
    registry: Any, requested: Sequence[tuple[FeatureView, Sequence[Feature]]], service: str | None, given: Any
) -> list[tuple[FeatureView, list[Feature]]]:
    """``requested`` with the uses of ``given`` (and of the service's own map) applied."""
    chosen = registry.services.get(service) if service is not None else None
    join_key_map = service_join_key_map(chosen, given, registry.views)
    if not join_key_map:
        return [(view, list(features)) for view, features in requested]
    return apply_join_key_map(requested, join_key_map)
