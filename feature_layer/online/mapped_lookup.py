"""Online lookups with a join-key map (``feature_layer.registry.join_keys``).

The plain uses are one ordinary lookup; each mapped use is one more, of that view only, with
the entity columns it reads renamed to the view's join keys; the columns are then renamed with
the use's suffix (``country__payee_id``) and merged into one response, in request order. One
round trip per use: a request without a map never comes here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pyarrow as pa

from feature_layer.errors import InputError
from feature_layer.registry.join_keys import MappedView, apply_join_key_map, service_join_key_map

EVENT_SUFFIX = "__event_time"


def uses_join_key_map(registry: Any, service: str | None) -> bool:
    """Does the service's exposure meta declare a join-key map? (the lookup's one extra check)"""
    chosen = registry.services.get(service) if service is not None else None
    return bool(chosen is not None and getattr(chosen, "join_key_map", None))


def _columns(entity_rows: Any, names: Sequence[str]) -> dict[str, Any]:
    """The entity rows' columns ``names``, as a dict of columns (any accepted shape)."""
    if isinstance(entity_rows, Mapping):
        source: Any = entity_rows
        have = list(entity_rows)
    elif isinstance(entity_rows, (pa.Table, pa.RecordBatch)):
        source, have = entity_rows, entity_rows.schema.names
    elif hasattr(entity_rows, "columns") and hasattr(entity_rows, "to_dict") and not isinstance(entity_rows, list):
        source, have = entity_rows, list(entity_rows.columns)
    elif isinstance(entity_rows, Sequence) and not isinstance(entity_rows, (str, bytes)):
        if not all(isinstance(r, Mapping) for r in entity_rows):
            raise InputError("Entity rows must be mappings of join key to value.", fix="pass a list of dicts.")
        have = list(dict.fromkeys(k for r in entity_rows for k in r))
        missing = [n for n in names if any(n not in r for r in entity_rows)]
        if missing:
            raise InputError(f"An entity row has no column {missing[0]!r}, which the join-key map reads.",
                             fix=f"give every entity row the column(s) {', '.join(names)}.")
        return {n: [r[n] for r in entity_rows] for n in names}
    else:
        raise InputError(f"Entity rows of type {type(entity_rows).__name__} are not supported.",
                         fix="pass a list of dicts, a dict of columns, a pyarrow table or a pandas DataFrame.")
    missing = [n for n in names if n not in have]
    if missing:
        raise InputError(f"The entity rows have no column {', '.join(map(repr, missing))} (they have: "
                         f"{', '.join(map(str, have))}).", fix="add the entity columns the join-key map reads.")
    if isinstance(source, (pa.Table, pa.RecordBatch)):
        return {n: source.column(n) for n in names}
    if isinstance(source, Mapping):
        return {n: source[n] for n in names}
    return {n: source[n].tolist() for n in names}


def mapped_lookup(parts: Any, *, features: Sequence[str] | None, service: str | None, entity_rows: Any,
                  include_event_times: bool, join_key_map: Any, lookup: Callable[..., Any],
                  response: Callable[..., Any]) -> Any:
    """The lookup of ``features`` (or a service's) with the uses ``join_key_map`` gives their views.

    ``lookup`` is the plain lookup (``online.lookup.get_online_features``) and ``response`` its
    result type, passed in so this module does not import the lookup back.
    """
    from feature_layer.offline.training_set import resolve_requested

    registry = parts.registry()
    chosen = registry.services.get(service) if service is not None else None
    uses = apply_join_key_map(resolve_requested(registry, features, service),
                              service_join_key_map(chosen, join_key_map, registry.views))
    plain = [f.ref for view, feats in uses if not isinstance(view, MappedView) for f in feats]
    entities: dict[str, Any] = {}
    columns: dict[str, Any] = {}
    missing: dict[str, tuple[str, ...]] = {}

    def merge(response: Any, rename: dict[str, str]) -> None:
        for name, values in response._entities.items():
            entities.setdefault(rename.get(name, name), values)
        for name, column in response._features.items():
            out = rename.get(name, name)
            if out in columns or out in entities:
                raise InputError(f"Output column {out!r} would be produced twice.",
                                 fix="request the feature once per use, or give the uses different entity columns.")
            columns[out] = column
        missing.update(response.missing_features)

    if plain:
        merge(lookup(parts, features=plain, entity_rows=entity_rows, include_event_times=include_event_times), {})
    for view, feats in uses:
        if not isinstance(view, MappedView):
            continue
        given = _columns(entity_rows, view.join_keys)
        rows: Any = {source: given[target] for source, target in zip(view.source_keys, view.join_keys, strict=True)}
        if isinstance(entity_rows, (pa.Table, pa.RecordBatch)):
            rows = pa.table(rows)  # columnar in, columnar lookup (typed keys checked as usual)
        found = lookup(parts, features=[f.ref for f in feats], entity_rows=rows,
                       include_event_times=include_event_times)
        suffix = f"__{view.suffix}"
        rename = {source: target for source, target in zip(view.source_keys, view.join_keys, strict=True)}
        for name in found._features:
            base, event = (name[: -len(EVENT_SUFFIX)], EVENT_SUFFIX) if (
                include_event_times and name.endswith(EVENT_SUFFIX)) else (name, "")
            rename[name] = f"{base}{suffix}{event}"
        merge(found, rename)
    return response(entities, columns, missing)
