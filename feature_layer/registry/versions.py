"""dbt model versions as feature views: ``view@v2.feature``, the unpinned ``view`` the latest.

A dbt model with ``versions:`` is several nodes of one name (``model.pkg.txn.v1``,
``model.pkg.txn.v2``), each its own relation (``txn_v1``, ``txn_v2``). Each version with a
``feature_layer`` block becomes the feature view ``<name>@v<version>``, and the latest version
is also the view ``<name>``, exactly as an unpinned ``ref('txn')`` is the latest in dbt. So a
model keeps reading ``txn.amount`` (the latest, whatever it is) or pins ``txn@v1.amount`` while
it migrates; every one of them is materialized side by side, under its own name.

Why ``@``: a reference is ``view.feature`` everywhere (Python, CLI, HTTP, exposures' meta), split
on its one dot; ``txn.v2.amount`` would make every reference ambiguous (is ``v2`` the feature?),
while ``txn@v2.amount`` keeps the split and reads as "txn at version 2".
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from feature_layer.dbt.artifacts import DbtNode
from feature_layer.errors import ValidationIssue
from feature_layer.registry.model import FeatureView

SEPARATOR = "@v"


def versioned_name(name: str, version: str) -> str:
    return f"{name}{SEPARATOR}{version}"


def base_name(view_name: str) -> str:
    """``txn@v2`` → ``txn`` (an unversioned name is returned as is)."""
    return view_name.split(SEPARATOR, 1)[0]


def version_order(version: str) -> tuple[Any, ...]:
    """Numeric versions in numeric order (``2`` before ``10``), then text."""
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in re.split(r"[._-]", version))


def renamed(view: FeatureView, name: str) -> FeatureView:
    """``view`` under another name: its features are addressed ``name.feature``."""
    return dataclasses.replace(view, name=name, features=tuple(dataclasses.replace(f, view=name) for f in view.features))


def add_versioned_views(
    name: str,
    nodes: Sequence[DbtNode],
    build: Callable[[DbtNode], FeatureView | None],
    views: dict[str, FeatureView],
    broken: dict[str, list[ValidationIssue]],
    issues: list[ValidationIssue],
    dropped: Mapping[str, list[ValidationIssue]],
) -> None:
    """Register every version of model ``name`` as ``name@vN``, and the latest also as ``name``.

    ``build`` validates one node into a view (adding its issues to ``issues``); a version that
    fails is a broken view under its versioned name (and under ``name`` when it is the latest).
    """
    for node in sorted(nodes, key=lambda n: version_order(n.version or "")):
        start = len(issues)
        issues.extend(dropped.get(node.unique_id, []))
        view = build(node)
        version = node.version or ""
        latest = node.latest_version or max((n.version or "" for n in nodes), key=version_order)
        pinned = versioned_name(name, version)
        if view is None or len(issues) > start:
            broken[pinned] = issues[start:]
            if version == latest:
                broken[name] = issues[start:]
            continue
        view = dataclasses.replace(view, version=version, latest_version=latest)
        views[pinned] = renamed(view, pinned)
        if version == latest:
            views[name] = view


def version_info(registry: Any, view: FeatureView) -> dict[str, Any] | None:
    """What the API and the UI show about a view's versions (None: not a versioned model).

    ``{"model": "txn", "version": "2", "latest_version": "2", "is_latest": true,
    "pinned": false, "views": ["txn@v1", "txn@v2"], "default": "txn"}``: ``pinned`` is true for
    ``txn@v2``, false for the unpinned default ``txn``; ``views`` lists every version's view.
    """
    if view.version is None:
        return None
    model = base_name(view.name)
    siblings = sorted((v for v in registry.views.values()
                       if v.version is not None and SEPARATOR in v.name and base_name(v.name) == model),
                      key=lambda v: version_order(v.version or ""))
    return {
        "model": model,
        "version": view.version,
        "latest_version": view.latest_version,
        "is_latest": view.version == view.latest_version,
        "pinned": SEPARATOR in view.name,
        "views": [v.name for v in siblings],
        "default": model if model in registry.views else None,
    }
