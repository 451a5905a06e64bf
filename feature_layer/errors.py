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


def plural(count: int, noun: str, many: str | None = None) -> str:
    """``1 feature view``, ``2 feature views``, ``1 entity``, ``3 entities``: counts in messages.

    >>> plural(1, "entity"), plural(3, "entity"), plural(2, "match", "matches")
    ('1 entity', '3 entities', '2 matches')
    """
    if count == 1:
        return f"{count:,} {noun}"
    if many is None:
        many = noun[:-1] + "ies" if noun.endswith("y") and noun[-2:-1] not in "aeiou" else noun + "s"
    return f"{count:,} {many}"


class FeatureLayerWarning(UserWarning):
    """Something a user should act on that does not stop the command (stale artifacts, a
    skipped view). Raised with ``warnings.warn``; the CLI prints each as one line."""


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
    yaml_file: str | None = None
    """The model's properties file (schema.yml), when it has one: where most declarations live."""

    def render(self) -> str:
        files = ", ".join(f for f in (self.file, self.yaml_file) if f)
        where = f"{self.unique_id} ({files})" if self.unique_id else (self.file or "project")
        return f"[{self.code}] {where}: {self.message}\n    To fix this, {self.fix}"


class DeclarationError(FeatureLayerError):
    """One or more feature declarations are invalid; all problems found in one pass."""

    def __init__(self, issues: list[ValidationIssue], headline: str | None = None) -> None:
        self.issues = list(issues)
        lines = [headline or f"{plural(len(self.issues), 'problem')} in feature declarations:"]
        lines += [issue.render() for issue in self.issues]
        super().__init__("\n".join(lines))


class BrokenDeclarationError(DeclarationError):
    """A feature view or service was asked for by name, but its declaration is invalid (lenient load)."""


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


class StreamError(FeatureLayerError):
    """A feature view cannot stream (its SQL is not per entity, no connection configured), or
    the stream's events cannot be read or landed (feature_layer.stream)."""
