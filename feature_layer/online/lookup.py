"""Online lookup: latest feature values for a batch of entities, in one round trip.

A request (features or a service) compiles once into a ``LookupPlan`` — per view its layout,
key prefix and the slots to decode — cached per registry. Executing a plan builds every key
of every view for every entity row, reads them all with one ``MGET`` (any batch size, any
number of views), and decodes each view's values vectorised (numpy for large batches, one
``struct.unpack`` per value for small ones). Values whose event time is older than the view's
TTL, as of now, come back as None: the lookup serves what a training set built now would.

Output column names are the feature names; a name requested from two views (or equal to a
join key) is qualified as ``view__feature``. With ``include_event_times`` each feature gets a
``<name>__event_time`` column (the event time of the value served).

Values are read with each view's *active* layout — the one its last materialization completed
(``layouts.py``) — not necessarily the one its current declaration wants: after a declaration
change, the features the active layout still has keep their values, and the others are None and
listed in ``OnlineResponse.missing_features`` until the next materialization.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from feature_layer.errors import InputError, OnlineStoreError, UnknownFeatureError
from feature_layer.online.encoding import (
    ViewLayout,
    arrow_type,
    decode_values,
    entity_key,
    from_micros,
    key_column,
    key_text,
    python_value,
    view_layout,
)
from feature_layer.online.layouts import ActiveLayout, ActiveLayouts, serving_layout
from feature_layer.online.store import OnlineStore
from feature_layer.parts import Parts


@dataclass(frozen=True)
class _ViewPlan:
    layout: ViewLayout
    outputs: tuple[tuple[str, int, str], ...]  # (output name, slot index, logical dtype)


@dataclass(frozen=True)
class _Served:
    """A view plan resolved against the active layout: read with ``layout`` (None: read nothing);
    outputs whose slot is None are served as null."""

    layout: ViewLayout | None
    outputs: tuple[tuple[str, int | None, str], ...]
    missing: tuple[str, ...]


def _serve(plan: _ViewPlan, active: ActiveLayout | None) -> _Served:
    layout, served = serving_layout(plan.layout, active)
    names = {s.index: s.name for s in plan.layout.slots}
    outputs = tuple((out, served.get(names[slot]), dtype) for out, slot, dtype in plan.outputs)
    missing = tuple(names[slot] for out, slot, _dtype in plan.outputs if served.get(names[slot]) is None)
    return _Served(layout, outputs, missing)


class _Column:
    """One output column: raw decoded values + validity, converted only when asked for."""

    __slots__ = ("dtype", "values", "valid")

    def __init__(self, dtype: str, values: Any, valid: Any) -> None:
        self.dtype = dtype
        self.values = values
        self.valid = valid

    def to_list(self) -> list[Any]:
        values, valid, dtype = self.values, self.valid, self.dtype
        if isinstance(values, np.ndarray):
            out = values.tolist()
            if not valid.all():
                for i in np.flatnonzero(~valid).tolist():
                    out[i] = None
        else:
            out = list(values)
        if dtype in ("timestamp", "date", "bool"):
            out = [python_value(dtype, v) for v in out]
        return out

    def to_arrow(self) -> pa.Array:
        target = arrow_type(self.dtype)
        values, valid = self.values, self.valid
        if isinstance(values, np.ndarray):
            mask = ~np.asarray(valid, dtype=bool)
            if self.dtype == "timestamp":
                return pa.array(values.astype(np.int64), type=pa.int64(), mask=mask).cast(target)
            if self.dtype == "date":
                return pa.array(values.astype(np.int32), type=pa.int32(), mask=mask).cast(target)
            if self.dtype == "bool":
                return pa.array(values.astype(bool), type=pa.bool_(), mask=mask)
            return pa.array(values, type=target, mask=mask)
        if self.dtype == "timestamp":
            return pa.array(values, type=pa.int64()).cast(target)
        if self.dtype == "date":
            return pa.array(values, type=pa.int32()).cast(target)
        if self.dtype == "bool":
            return pa.array([None if v is None else bool(v) for v in values], type=pa.bool_())
        return pa.array(values, type=target)


class OnlineResponse:
    """Columnar lookup result: entity key columns, then feature columns (None = missing/expired)."""

    def __init__(
        self,
        entity_columns: dict[str, Any],
        feature_columns: dict[str, _Column],
        missing_features: dict[str, tuple[str, ...]] | None = None,
    ) -> None:
        self._entities = entity_columns
        self._features = feature_columns
        self.missing_features = missing_features or {}
        """Per view, the requested features its materialized (active) layout does not hold yet:
        served as None until the view is materialized with its current declaration."""

    @property
    def columns(self) -> list[str]:
        return [*self._entities, *self._features]

    def __len__(self) -> int:
        for values in self._entities.values():
            return len(values)
        return 0

    def to_dict(self) -> dict[str, list[Any]]:
        out: dict[str, list[Any]] = {}
        for name, values in self._entities.items():
            out[name] = values.to_pylist() if isinstance(values, (pa.Array, pa.ChunkedArray)) else list(values)
        for name, column in self._features.items():
            out[name] = column.to_list()
        return out

    def to_rows(self) -> list[dict[str, Any]]:
        columns = self.to_dict()
        return [dict(zip(columns, row, strict=False)) for row in zip(*columns.values(), strict=False)]

    def to_arrow(self) -> pa.Table:
        arrays: dict[str, Any] = {}
        for name, values in self._entities.items():
            arrays[name] = values if isinstance(values, (pa.Array, pa.ChunkedArray)) else pa.array(list(values))
        for name, column in self._features.items():
            arrays[name] = column.to_arrow()
        return pa.table(arrays)

    def to_pandas(self) -> Any:
        from feature_layer.extras import require

        require("pandas", "OnlineResponse.to_pandas()")
        return self.to_arrow().to_pandas()

    def __repr__(self) -> str:
        return f"OnlineResponse({len(self)} rows, columns={self.columns})"


class LookupPlan:
    """A compiled request: which keys to read and how to decode them into named columns."""

    def __init__(self, views: list[_ViewPlan]) -> None:
        self.views = views
        self._active = ActiveLayouts()
        self._served: list[_Served] = [_serve(plan, None) for plan in views]
        join_keys: list[str] = []
        for plan in views:
            for key in plan.layout.join_keys:
                if key not in join_keys:
                    join_keys.append(key)
        self.join_keys = tuple(join_keys)

    @classmethod
    def build(cls, registry: Any, namespace: str, features: Sequence[str] | None, service: str | None) -> LookupPlan:
        if service is not None and features:
            raise InputError("Pass either features or a service, not both.", fix="drop one of the two arguments.")
        if service is not None:
            refs: Sequence[str] = registry.service(service).features
        elif features:
            refs = [features] if isinstance(features, str) else list(features)
        else:
            raise UnknownFeatureError(
                "No features were requested.", fix="pass features=['view.feature', …] or service=…."
            )
        grouped = registry.resolve(refs)
        views = {name: registry.view(name) for name in grouped}
        join_keys = {k for v in views.values() for k in v.join_keys}
        counts: dict[str, int] = {}
        for feats in grouped.values():
            for f in feats:
                counts[f.name] = counts.get(f.name, 0) + 1
        plans: list[_ViewPlan] = []
        for name, feats in grouped.items():
            view = views[name]
            if not view.online:
                raise InputError(
                    f"Feature view {name!r} is declared `online: false`; its features are not in the online store.",
                    fix=f"set `online: true` on {view.file_path or name} and run `feature-layer materialize`, "
                    "or read these features with get_training_set.",
                )
            layout = view_layout(view, namespace)
            index = {s.name: s for s in layout.slots}
            outputs = []
            for f in feats:
                out = f.name if counts[f.name] == 1 and f.name not in join_keys else f"{name}__{f.name}"
                slot = index[f.name]
                outputs.append((out, slot.index, slot.dtype))
            plans.append(_ViewPlan(layout, tuple(outputs)))
        return cls(plans)

    # -- keys --------------------------------------------------------------------------------
    def _entity_columns(self, entity_rows: Any) -> tuple[int, dict[str, Any], bool]:
        """(row count, {join key: column}, columnar?) from any accepted entity-rows shape."""
        if entity_rows is None:
            raise InputError(
                "No entity rows were given.",
                fix=f"pass entity_rows=[{{{', '.join(repr(k) + ': …' for k in self.join_keys)}}}].",
            )
        if isinstance(entity_rows, Mapping):
            return self._from_mapping(entity_rows)
        if type(entity_rows).__module__.startswith("polars"):
            from feature_layer.offline.entity import polars_to_arrow

            entity_rows = polars_to_arrow(entity_rows)
        if isinstance(entity_rows, (pa.Table, pa.RecordBatch)):
            missing = [k for k in self.join_keys if k not in entity_rows.schema.names]
            self._raise_missing(missing, entity_rows.schema.names)
            _refuse_duplicates(entity_rows.schema.names, self.join_keys)
            return entity_rows.num_rows, {k: _decoded(entity_rows.column(k)) for k in self.join_keys}, True
        if hasattr(entity_rows, "columns") and hasattr(entity_rows, "to_dict") and not isinstance(entity_rows, list):
            missing = [k for k in self.join_keys if k not in entity_rows.columns]
            self._raise_missing(missing, list(entity_rows.columns))
            _refuse_duplicates(list(entity_rows.columns), self.join_keys)
            table = _arrow_from_pandas(entity_rows[list(self.join_keys)])
            return table.num_rows, {k: _decoded(table.column(k)) for k in self.join_keys}, True
        if isinstance(entity_rows, Sequence) and not isinstance(entity_rows, (str, bytes)):
            try:
                columns = {k: [row[k] for row in entity_rows] for k in self.join_keys}
            except KeyError as exc:
                bad = next(r for r in entity_rows if exc.args[0] not in r)
                raise InputError(
                    f"Entity row {bad!r} has no join key {exc.args[0]!r}.",
                    fix=f"give every entity row the join keys {', '.join(self.join_keys)}.",
                ) from None
            except TypeError:
                bad = next((r for r in entity_rows if not isinstance(r, Mapping)), entity_rows[0])
                raise InputError(
                    f"Entity rows must be mappings of join key to value; got {type(bad).__name__}.",
                    fix="pass a list of dicts, a dict of columns, a pyarrow table or a pandas DataFrame.",
                ) from None
            return len(entity_rows), columns, False
        raise InputError(
            f"Entity rows of type {type(entity_rows).__name__} are not supported.",
            fix="pass a list of dicts, a dict of columns, a pyarrow table or a pandas DataFrame.",
        )

    def _from_mapping(self, mapping: Mapping[str, Any]) -> tuple[int, dict[str, Any], bool]:
        missing = [k for k in self.join_keys if k not in mapping]
        self._raise_missing(missing, list(mapping))
        columns = {}
        n = None
        for k in self.join_keys:
            col = mapping[k]
            if isinstance(col, (str, bytes)) or not hasattr(col, "__len__"):
                raise InputError(
                    f"Column {k!r} of the entity rows is not a list of values.", fix="pass {key: [v1, v2, …]}."
                )
            if n is not None and len(col) != n:
                raise InputError(
                    "The entity-row columns have different lengths.", fix="give every column one value per entity."
                )
            n = len(col)
            columns[k] = (
                col
                if isinstance(col, (pa.Array, pa.ChunkedArray))
                else list(col.tolist() if isinstance(col, np.ndarray) else col)
            )
        return n or 0, columns, False

    def _raise_missing(self, missing: list[str], present: Sequence[str]) -> None:
        if missing:
            raise InputError(
                f"The entity rows have no column {', '.join(repr(m) for m in missing)} "
                f"(they have: {', '.join(map(str, present)) or 'none'}).",
                fix=f"add the join key(s) {', '.join(self.join_keys)} the requested features need.",
            )

    def served(self, online: OnlineStore) -> list[_Served]:
        """The view plans resolved against the store's active layouts (re-read every second or so)."""
        fresh = self._active.current(online, [plan.layout.view for plan in self.views])
        if fresh is not None:
            self._served = [_serve(plan, fresh.get(plan.layout.view)) for plan in self.views]
        return self._served

    def keys(
        self, n: int, columns: dict[str, Any], columnar: bool, layouts: Sequence[ViewLayout] | None = None
    ) -> list[bytes]:
        keys: list[bytes] = []
        for layout in layouts if layouts is not None else [plan.layout for plan in self.views]:
            if columnar:
                table = pa.table({k: columns[k] for k in layout.join_keys})
                _check_key_types(layout, table)
                col = key_column(layout, table)
                if col.null_count:
                    raise InputError(
                        "An entity row has a null join key.", fix="drop rows with null keys before the lookup."
                    )
                keys.extend(col.to_pylist())
                continue
            try:
                if len(layout.join_keys) == 1:
                    prefix = layout.key_prefix
                    kt = layout.key_types[0]
                    values = columns[layout.join_keys[0]]
                    if kt == "int64" and set(map(type, values)) <= {int}:
                        keys.extend(map(prefix.replace(b"%", b"%%").__add__(b"%d").__mod__, values))
                    else:
                        keys.extend([prefix + key_text(v, kt).encode() for v in values])
                else:
                    parts = [columns[k] for k in layout.join_keys]
                    keys.extend([entity_key(layout, values) for values in zip(*parts, strict=False)])
            except (ValueError, TypeError) as exc:
                types = ", ".join(f"{k} ({t})" for k, t in zip(layout.join_keys, layout.key_types, strict=False))
                raise InputError(
                    f"An entity row has a join key of feature view {layout.view!r} that cannot be used: {exc}.",
                    fix=f"give non-null values of the key types: {types}.",
                ) from None
        return keys

    # -- execution ---------------------------------------------------------------------------
    def execute(
        self, online: OnlineStore, entity_rows: Any, *, include_event_times: bool = False, now_us: int | None = None
    ) -> OnlineResponse:
        n, columns, columnar = self._entity_columns(entity_rows)
        served = self.served(online)
        read = [s.layout for s in served if s.layout is not None]
        keys = self.keys(n, columns, columnar, read)
        raw = online.read(keys) if keys else []
        if len(raw) != len(keys):
            raise OnlineStoreError(
                "The online store returned a different number of values than keys asked.", fix="report this as a bug."
            )
        now = online.clock() if now_us is None else now_us
        features: dict[str, _Column] = {}
        missing: dict[str, tuple[str, ...]] = {}
        position = 0
        for plan, serve in zip(self.views, served, strict=True):
            if serve.missing:
                missing[plan.layout.view] = serve.missing
            if serve.layout is None:
                decoded = None
            else:
                decoded = decode_values(serve.layout, raw[position * n : (position + 1) * n], now)
                position += 1
            for name, slot, dtype in serve.outputs:
                if decoded is None or slot is None:
                    features[name] = _Column(dtype, [None] * n, None)
                else:
                    features[name] = _Column(dtype, decoded.columns[slot], decoded.valid[slot])
            if include_event_times:
                if decoded is None:
                    event = _Column("timestamp", [None] * n, None)
                elif isinstance(decoded.event_us, np.ndarray):
                    event = _Column("timestamp", decoded.event_us, decoded.present)
                else:
                    event = _Column("timestamp", decoded.event_us, None)
                for name, _slot, _dtype in serve.outputs:
                    features[f"{name}__event_time"] = event
        return OnlineResponse(columns, features, missing)


_PLANS: dict[tuple[int, str, tuple[str, ...] | str | None, str | None], tuple[Any, LookupPlan]] = {}


def lookup_plan(registry: Any, namespace: str, features: Sequence[str] | str | None, service: str | None) -> LookupPlan:
    """The compiled plan for a request, cached per registry object (a reloaded registry recompiles)."""
    feats = features if isinstance(features, str) or features is None else tuple(features)
    key = (id(registry), namespace, feats, service)
    hit = _PLANS.get(key)
    if hit is not None and hit[0] is registry:
        return hit[1]
    plan = LookupPlan.build(registry, namespace, features, service)
    if len(_PLANS) > 256:
        _PLANS.clear()
    _PLANS[key] = (registry, plan)
    return plan


def get_online_features(
    parts: Parts,
    *,
    features: Sequence[str] | None = None,
    service: str | None = None,
    entity_rows: Any = None,
    include_event_times: bool = False,
) -> OnlineResponse:
    """Latest values of ``features`` (or a ``service``'s) for each entity row, one round trip.

    ``entity_rows``: a list of dicts, a dict of columns, a pyarrow table or a pandas DataFrame
    holding the join keys of the requested views. Missing and expired values are None.
    """
    online = parts.online()
    plan = lookup_plan(parts.registry(), online.namespace, features, service)
    return plan.execute(online, entity_rows, include_event_times=include_event_times)


__all__ = ["LookupPlan", "OnlineResponse", "from_micros", "get_online_features", "lookup_plan"]


_KEY_TYPES_ACCEPTED = {"int64": {"int64"}, "string": {"string"}, "bool": {"bool"}, "timestamp": {"timestamp", "date"}}


def _check_key_types(layout: Any, table: pa.Table) -> None:
    """Columnar keys must have the view's key types: a mismatch is an error, never a silent miss."""
    from feature_layer.offline.entity import arrow_logical_type

    for name, key_type in zip(layout.join_keys, layout.key_types, strict=False):
        given = arrow_logical_type(table.schema.field(name).type)
        accepted = _KEY_TYPES_ACCEPTED.get(key_type)
        if accepted is not None and given not in accepted and given != "null":
            raise InputError(
                f"Join key {name!r} of feature view {layout.view!r} is {key_type}, but the entity rows give "
                f"{table.schema.field(name).type} ({given}).",
                fix=f"cast {name!r} to {key_type} before the lookup.",
            )


def _refuse_duplicates(names: Sequence[Any], join_keys: Sequence[str]) -> None:
    """A join key given twice is ambiguous: refuse it instead of picking one of the columns."""
    twice = sorted({str(n) for n in names if n in join_keys and list(names).count(n) > 1})
    if twice:
        raise InputError(
            f"The entity rows have the join key column(s) {', '.join(twice)} more than once.",
            fix="keep one column per join key (rename or drop the duplicates).",
        )


def _arrow_from_pandas(frame: Any) -> pa.Table:
    """Join-key columns of a pandas DataFrame as Arrow; mixed-type object columns are an InputError."""
    try:
        return pa.Table.from_pandas(frame, preserve_index=False)
    except (pa.ArrowException, TypeError, ValueError, OverflowError) as exc:
        raise InputError(
            f"The entity rows' join keys cannot be converted to Arrow: {exc}",
            fix="give each join-key column one type (e.g. no mixed numbers and strings in one column).",
        ) from exc


def _decoded(column: Any) -> Any:
    """Dictionary-encoded (categorical) keys looked up by their values."""
    if pa.types.is_dictionary(column.type):
        return column.cast(column.type.value_type)
    return column
