"""Registry objects: small, frozen, and free of dbt internals.

Everything downstream (SQL builders, stores, CLI, server) consumes these objects only, so a
change in dbt's manifest schema touches ``feature_layer.dbt`` and nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from feature_layer.freshness import FreshnessSla


@dataclass(frozen=True)
class Entity:
    """A thing features describe (a user, a merchant), identified by its join keys."""

    name: str
    join_keys: tuple[str, ...]
    description: str = ""


@dataclass(frozen=True)
class Feature:
    """One column of a feature view, addressed as ``view.name``."""

    name: str
    view: str
    dtype: str
    description: str = ""
    sql_type: str | None = None
    tags: tuple[str, ...] = ()

    @property
    def ref(self) -> str:
        return f"{self.view}.{self.name}"


@dataclass(frozen=True)
class Relation:
    """Where a dbt model lives in the warehouse."""

    database: str | None
    schema: str
    identifier: str

    def parts(self) -> tuple[str, ...]:
        return tuple(p for p in (self.database, self.schema, self.identifier) if p)


@dataclass(frozen=True)
class FeatureView:
    """A dbt model declared as a source of features for one or more entities."""

    name: str
    unique_id: str
    entities: tuple[str, ...]
    join_keys: tuple[str, ...]
    event_time: str
    features: tuple[Feature, ...]
    relation: Relation
    created_at: str | None = None
    ttl: timedelta | None = None
    online: bool = True
    owner: str | None = None
    tags: tuple[str, ...] = ()
    description: str = ""
    column_types: tuple[tuple[str, str], ...] = ()
    """Every column of the model as (name, logical type), in model order."""
    file_path: str = ""
    checksum: str = ""
    raw_sql: str = ""
    compiled_sql: str | None = None
    depends_on: tuple[str, ...] = ()
    materialized: str = ""
    freshness: FreshnessSla | None = None
    """The view's freshness SLA (``freshness: {warn_after: …, error_after: …}``), None when undeclared."""

    def feature(self, name: str) -> Feature:
        for feature in self.features:
            if feature.name == name:
                return feature
        raise KeyError(name)

    @property
    def feature_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.features)

    def column_type(self, column: str) -> str:
        return dict(self.column_types).get(column, "unknown")


@dataclass(frozen=True)
class FeatureService:
    """The features one ML model uses: a dbt exposure of type ``ml``."""

    name: str
    unique_id: str
    features: tuple[str, ...]
    """Resolved ``view.feature`` references, wildcards expanded."""
    description: str = ""
    owner: str | None = None
    file_path: str = ""
    depends_on: tuple[str, ...] = ()
    tags: tuple[str, ...] = field(default_factory=tuple)
