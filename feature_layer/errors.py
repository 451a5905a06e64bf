"""One exception tree for every failure a user can act on.

Each error says what happened and how to fix it. Layers above (CLI, HTTP server) map these
classes to exit codes and status codes; the classes themselves know nothing about either.
"""

from __future__ import annotations

from dataclasses import dataclass


class FeatureLayerError(Exception):
    """Root of every error feature_layer raises on purpose."""

    def __init__(self, message: str, *, fix: str | None = None) -> None:
        self.message = message
        self.fix = fix
        super().__init__(self.__str__())

    def __str__(self) -> str:
        if self.fix:
            return f"{self.message}\nTo fix this, {self.fix}"
        return self.message


class ConfigError(FeatureLayerError):
    """Settings (feature_layer.yml, profiles.yml, environment) are missing or malformed."""


class ManifestError(FeatureLayerError):
    """dbt artifacts are missing, unreadable or from an unsupported dbt version."""


@dataclass(frozen=True)
class ValidationIssue:
    """One problem in a feature declaration, with where it is and how to fix it."""

    code: str
    message: str
    fix: str
    unique_id: str | None = None
    file: str | None = None

    def render(self) -> str:
        where = f"{self.unique_id} ({self.file})" if self.unique_id else (self.file or "project")
        return f"[{self.code}] {where}: {self.message}\n    To fix this, {self.fix}"


class DeclarationError(FeatureLayerError):
    """One or more feature declarations are invalid; all problems found in one pass."""

    def __init__(self, issues: list[ValidationIssue]) -> None:
        self.issues = list(issues)
        lines = [f"{len(self.issues)} problem(s) in feature declarations:"]
        lines += [issue.render() for issue in self.issues]
        super().__init__("\n".join(lines))


class UnknownFeatureError(FeatureLayerError):
    """A feature, view, entity or service name does not exist in the registry."""


class InputError(FeatureLayerError):
    """User-supplied data (entity dataframe, entity rows, request body) is malformed."""


class WarehouseError(FeatureLayerError):
    """The offline warehouse failed to run a query or is unreachable."""


class OnlineStoreError(FeatureLayerError):
    """The online store (Redis or the embedded store) failed or is unreachable."""

    def __init__(self, message: str, *, fix: str | None = None, may_have_evicted: bool = False) -> None:
        super().__init__(message, fix=fix)
        self.may_have_evicted = may_have_evicted
        """The store ran out of memory: keys written before (by any run) may have been evicted."""


class MaterializationConflictError(OnlineStoreError):
    """Another materialization of the same feature view is running."""


class LostWritesError(OnlineStoreError):
    """The online store lost values it had acknowledged during a run (restart from an older
    snapshot, failover to a lagging replica, flush, eviction); the run recorded nothing."""


class StateStoreError(FeatureLayerError):
    """The state store (watermarks, leases, statistics) cannot be read or written (a full disk)."""
