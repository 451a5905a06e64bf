"""Which layout of a view the online store actually holds, and what lookups read with it.

A view's layout (``encoding.view_layout``: join keys, key types, features and their types,
fingerprinted) follows its declaration, so a routine change — a column marked ``feature:
false``, a new column, a type now known from catalog.json — changes the layout the registry
*wants* at once, while the store still holds the values of the layout last materialized. Each
successful materialization therefore records the layout it completed as the view's *active*
layout, in the store itself (marker ``layout:<view>``, written in the same atomic commit as the
watermark marker). Lookups read with the active layout: a feature it still has is served with
its value, a feature it lacks (new, or with another type) is None and reported, a feature
removed from the declaration can no longer be asked for. ``layout_state`` tells the server's
``/healthz``, the UI and ``online-status`` whether a view is stale (its wanted layout is not
the active one) and which features are missing until the next materialization.

When a run completes a new layout the old one is *retired*, not deleted: servers refresh their
view of the active layout every ``REFRESH_SECONDS``, so its keys stay readable until a later run
that starts ``RETIRE_GRACE_SECONDS`` after the switch deletes them.

The layout fingerprint says how values are *encoded*; the marker also records the view's *data*
fingerprint (``sql_fingerprint``: its compiled SQL, normalized), as SQLMesh separates a data hash
from a metadata hash. A SQL edit that keeps every column and type leaves the layout alone but
changes the data fingerprint: ``materialize`` then rewrites every value of the view (a forced full
refresh, so values computed by the old SQL never stand as current), and until it has, ``layout_state``
reports the view stale (``sql_changed``). Editing a description changes neither.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from feature_layer.online.encoding import Slot, ViewLayout, slot_kind, view_layout

REFRESH_SECONDS = 1.0
"""How long a lookup plan trusts the active layout it read before reading the marker again."""
RETIRE_GRACE_SECONDS = 30.0
"""How long a replaced layout's keys are kept (lookups still reading it must have refreshed)."""


@dataclass(frozen=True)
class LayoutState:
    """The layout a view is served with (``active``, None when never materialized) against the one
    its declaration needs (``wanted``); ``stale`` when they differ, with the declared features the
    active layout cannot serve (they are None in lookups until the next materialization)."""

    active: str | None
    wanted: str
    stale: bool
    missing_features: tuple[str, ...]
    sql_changed: bool = False
    """The view's compiled SQL differs from the SQL its online values were computed with."""


@dataclass(frozen=True)
class ActiveLayout:
    """The view's layout as recorded by the last successful materialization (the marker's content)."""

    fingerprint: str
    join_keys: tuple[str, ...]
    key_types: tuple[str, ...]
    slots: tuple[tuple[str, str], ...]  # (feature, logical type) in slot order
    retired: tuple[tuple[str, float], ...] = ()  # (fingerprint, unix time it was replaced)
    sql: str | None = None
    """The data fingerprint (``sql_fingerprint``) of the SQL the values were computed with; None
    when unknown (a marker written before it was recorded, or a manifest without compiled SQL)."""
    sql_dialect: str | None = None
    """The dialect ``sql`` was normalized in."""


_SPACE = re.compile(r"\s+")


@functools.lru_cache(maxsize=1024)
def normalized_sql(sql: str, dialect: str | None) -> str:
    """``sql`` with formatting, comments and table qualifiers (database, schema) removed.

    Qualifiers go so that the same model compiled for another target (production's schema, a
    developer's) has the same data fingerprint; SQL sqlglot cannot read is compared as text with
    whitespace collapsed.
    """
    import sqlglot
    from sqlglot import exp

    try:
        trees = [t for t in sqlglot.parse(sql, read=dialect) if t is not None]
    except (sqlglot.errors.SqlglotError, ValueError):
        return _SPACE.sub(" ", sql).strip()
    for tree in trees:
        for table in tree.find_all(exp.Table):
            table.set("db", None)
            table.set("catalog", None)
    return ";".join(t.sql(dialect=dialect, comments=False) for t in trees)


def sql_fingerprint(view: Any, dialect: str | None) -> str | None:
    """The data fingerprint of ``view``: a hash of its normalized compiled SQL (None without one:
    after ``dbt parse`` alone the manifest has no compiled SQL, and nothing is claimed changed)."""
    sql = getattr(view, "compiled_sql", None)
    if not sql:
        return None
    return hashlib.blake2s(normalized_sql(sql, dialect).encode(), digest_size=8).hexdigest()


def sql_changed(active: ActiveLayout | None, layout: ViewLayout, current: str | None) -> bool:
    """True when the store holds ``layout``'s values computed by other SQL than ``current``."""
    return (
        active is not None
        and active.fingerprint == layout.fingerprint
        and active.sql is not None
        and current is not None
        and active.sql != current
    )


def recorded_sql(active: ActiveLayout | None, layout: ViewLayout, current: str | None) -> str | None:
    """The data fingerprint to record with ``layout``: ``current``, or (when the manifest has no
    compiled SQL) the one recorded before for the same layout."""
    if current is not None:
        return current
    return active.sql if active is not None and active.fingerprint == layout.fingerprint else None


def marker_name(view: str) -> str:
    return f"layout:{view}"


def marker_value(
    layout: ViewLayout,
    previous: ActiveLayout | None,
    deleted: Sequence[str] = (),
    *,
    legacy: str | None = None,
    sql: str | None = None,
    sql_dialect: str | None = None,
) -> bytes:
    """The marker recording ``layout`` as active; the previous active layout (if another) is retired
    now, retired layouts already deleted (``deleted``) are forgotten. ``legacy``: the layout a
    store without a marker was materialized with (from the state store), retired likewise.
    ``sql``: the data fingerprint the values were computed with (normalized in ``sql_dialect``)."""
    retired = [(fp, at) for fp, at in (previous.retired if previous else ()) if fp not in deleted]
    replaced = previous.fingerprint if previous is not None else legacy
    if replaced is not None and replaced != layout.fingerprint:
        retired.append((replaced, time.time()))
    retired = [(fp, at) for fp, at in retired if fp != layout.fingerprint]
    return json.dumps(
        {
            "fingerprint": layout.fingerprint,
            "join_keys": list(layout.join_keys),
            "key_types": list(layout.key_types),
            "slots": [[s.name, s.dtype] for s in layout.slots],
            "retired": retired,
            "sql": sql,
            "sql_dialect": sql_dialect,
        },
        separators=(",", ":"),
    ).encode()


def parse_marker(raw: bytes | None) -> ActiveLayout | None:
    """The marker's content; None when absent or unreadable (then the wanted layout is read)."""
    if not raw:
        return None
    try:
        data = json.loads(raw)
        return ActiveLayout(
            fingerprint=str(data["fingerprint"]),
            join_keys=tuple(data["join_keys"]),
            key_types=tuple(data["key_types"]),
            slots=tuple((str(name), str(dtype)) for name, dtype in data["slots"]),
            retired=tuple((str(fp), float(at)) for fp, at in data.get("retired", ())),
            sql=str(data["sql"]) if data.get("sql") else None,
            sql_dialect=str(data["sql_dialect"]) if data.get("sql_dialect") else None,
        )
    except (ValueError, KeyError, TypeError):
        return None


def read_marker(online: Any, view: str) -> ActiveLayout | None:
    return parse_marker(online.get_marker(marker_name(view)))


def retired_now_deletable(active: ActiveLayout | None, current: str) -> list[str]:
    """Retired layouts whose grace has passed, when ``current`` is (still) the active one."""
    if active is None or active.fingerprint != current:
        return []
    horizon = time.time() - RETIRE_GRACE_SECONDS
    return [fp for fp, at in active.retired if at <= horizon and fp != current]


def prefix_of(layout: ViewLayout, fingerprint: str) -> bytes:
    """The key prefix of ``layout``'s view under another layout ``fingerprint``."""
    return layout.key_prefix.rsplit(b":", 2)[0] + b":" + fingerprint.encode() + b":"


def serving_layout(wanted: ViewLayout, active: ActiveLayout | None) -> tuple[ViewLayout | None, dict[str, int]]:
    """The layout lookups read with, and the slot of each wanted feature it can serve.

    No marker (a store materialized before markers existed, or never): the wanted layout. A
    marker whose keys differ from the wanted ones: nothing can be served (None).
    """
    if active is None or active.fingerprint == wanted.fingerprint:
        return wanted, {s.name: s.index for s in wanted.slots}
    if active.join_keys != wanted.join_keys or active.key_types != wanted.key_types:
        return None, {}
    slots = tuple(
        Slot(name=name, dtype=dtype, index=i, fixed=slot_kind(dtype)) for i, (name, dtype) in enumerate(active.slots)
    )
    layout = ViewLayout(
        wanted.view, wanted.namespace, wanted.join_keys, wanted.key_types, slots, active.fingerprint, wanted.ttl_us
    )
    have = {s.name: s for s in slots}
    served = {s.name: have[s.name].index for s in wanted.slots if s.name in have and have[s.name].dtype == s.dtype}
    return layout, served


def layout_state(online_store: Any, view: Any) -> LayoutState:
    """Whether ``view`` (a registry FeatureView) is served with the layout its declaration needs."""
    wanted = view_layout(view, online_store.namespace)
    active = read_marker(online_store, view.name)
    if active is None:
        return LayoutState(None, wanted.fingerprint, True, tuple(s.name for s in wanted.slots))
    layout, served = serving_layout(wanted, active)
    missing = tuple(s.name for s in wanted.slots if layout is None or s.name not in served)
    changed = active.sql is not None and sql_changed(active, wanted, sql_fingerprint(view, active.sql_dialect))
    return LayoutState(
        active.fingerprint, wanted.fingerprint, active.fingerprint != wanted.fingerprint or changed, missing, changed
    )


class ActiveLayouts:
    """A lookup plan's view of the active layouts, re-read at most every ``REFRESH_SECONDS``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._until = 0.0
        self._store_id = 0
        self.layouts: dict[str, ActiveLayout | None] = {}

    def current(self, online: Any, views: Sequence[str]) -> dict[str, ActiveLayout | None] | None:
        """None while the cached layouts are fresh; else the re-read ones (the caller re-resolves)."""
        now = time.monotonic()
        if now < self._until and self._store_id == id(online):
            return None
        with self._lock:
            raw = online.get_markers([marker_name(view) for view in views])
            self.layouts = {view: parse_marker(value) for view, value in zip(views, raw, strict=True)}
            self._store_id = id(online)
            self._until = time.monotonic() + REFRESH_SECONDS
            return self.layouts
