"""Access tokens for the feature server: who may read which online features, the registry, push.

Declared in ``feature_layer.yml`` (only the SHA-256 of each token is stored; ``feature-layer
token hash`` prints it from a token read on stdin)::

    auth:
      tokens:
        - name: ml-service
          sha256: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
          scopes: [online:views/user_transaction_features, online:services/fraud_model, registry:read]

Scopes (docs/access_control.md):

``online:*``                    online lookups of any feature
``online:views/<view>``         online lookups of the features of one feature view
``online:services/<service>``   online lookups through one feature service (``service=``), or of
                                features that service lists
``registry:read``               the registry: features, views, entities, catalog, lineage,
                                statistics, search, the OpenAPI document
``metrics:read``                ``GET /metrics``
``push``                        ``POST /v1/push`` (streaming pushes)

Pure: no IO, no HTTP. ``feature_layer.server.auth`` applies it to requests.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from feature_layer.errors import ConfigError

ONLINE_ANY = "online:*"
REGISTRY_READ = "registry:read"
METRICS_READ = "metrics:read"
PUSH = "push"
_FIXED_SCOPES = (ONLINE_ANY, REGISTRY_READ, METRICS_READ, PUSH)
_ONLINE_SCOPE = re.compile(r"online:(views|services)/([A-Za-z0-9_@.\-]+)")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_TOKEN_KEYS = {"name", "sha256", "scopes"}
SCOPES_HELP = ("online:*, online:views/<view>, online:services/<service>, registry:read, metrics:read, push")


def token_hash(token: str | bytes) -> str:
    """The hex SHA-256 of a token, as ``feature_layer.yml`` stores it (surrounding whitespace ignored)."""
    raw = token.encode() if isinstance(token, str) else token
    return hashlib.sha256(raw.strip()).hexdigest()


@dataclass(frozen=True)
class Grant:
    """What one token may do."""

    name: str
    digest: bytes
    """The SHA-256 of the token (32 bytes)."""
    scopes: frozenset[str]
    views: frozenset[str] = frozenset()
    """Feature views whose features it may look up online (``online:views/<view>``)."""
    services: frozenset[str] = frozenset()
    """Feature services it may look up through (``online:services/<service>``)."""

    any_online: bool = False
    """Holds ``online:*`` (set from ``scopes``)."""
    some_online: bool = False
    """Holds any online scope at all (the fine-grained check needs the request body)."""

    def __post_init__(self) -> None:  # plain attributes: read on every request
        object.__setattr__(self, "any_online", ONLINE_ANY in self.scopes)
        object.__setattr__(self, "some_online", self.any_online or bool(self.views or self.services))

    def allows(self, scope: str) -> bool:
        return scope in self.scopes


@dataclass(frozen=True)
class AuthSettings:
    """The ``auth`` block of ``feature_layer.yml``: the tokens the server accepts."""

    grants: tuple[Grant, ...]

    def authenticate(self, token: str | bytes) -> Grant | None:
        """The grant of ``token``, or None. Compares the token's SHA-256 with every stored digest
        using ``hmac.compare_digest`` and no early exit: the time taken does not depend on which
        token matched, or on how much of a digest did."""
        digest = hashlib.sha256(token.encode() if isinstance(token, str) else token).digest()
        found = None
        for grant in self.grants:
            if hmac.compare_digest(digest, grant.digest):
                found = grant
        return found


def _scopes_of(name: str, raw: Any, source: Path) -> tuple[frozenset[str], frozenset[str], frozenset[str]]:
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list) or not raw or not all(isinstance(s, str) for s in raw):
        raise ConfigError(f"auth token {name!r} in {source} has no list of scopes.",
                          fix=f"write `scopes: [registry:read, online:views/<view>]`; scopes: {SCOPES_HELP}.")
    fixed, views, services = set(), set(), set()
    for scope in raw:
        match = _ONLINE_SCOPE.fullmatch(scope)
        if match:
            (views if match.group(1) == "views" else services).add(match.group(2))
        elif scope in _FIXED_SCOPES:
            fixed.add(scope)
        else:
            raise ConfigError(f"auth token {name!r} in {source} has an unknown scope {scope!r}.",
                              fix=f"use one of: {SCOPES_HELP}.")
    return frozenset(fixed), frozenset(views), frozenset(services)


def auth_settings_from(raw: Any, source: Path) -> AuthSettings | None:
    """The ``auth`` block, validated (None when absent: the server then accepts every request)."""
    if raw is None:
        return None
    if not isinstance(raw, dict) or set(raw) - {"tokens"}:
        raise ConfigError(f"auth in {source} must be a mapping with one key, `tokens`.",
                          fix="write `auth: {tokens: [{name: ml-service, sha256: <hex>, scopes: [registry:read]}]}`.")
    tokens = raw.get("tokens")
    if not isinstance(tokens, list) or not tokens:
        raise ConfigError(f"auth.tokens in {source} must be a non-empty list.",
                          fix="list at least one token, or remove the `auth` block to serve without tokens.")
    grants: list[Grant] = []
    for index, entry in enumerate(tokens):
        where = f"auth.tokens[{index}] in {source}"
        if not isinstance(entry, dict):
            raise ConfigError(f"{where} must be a mapping.", fix="write `{name: ..., sha256: ..., scopes: [...]}`.")
        unknown = sorted(map(str, set(entry) - _TOKEN_KEYS))
        if unknown:
            fix = "store the token's SHA-256 (`feature-layer token hash`), never the token itself." \
                if "token" in unknown else "use only name, sha256, scopes."
            raise ConfigError(f"{where} has unknown key(s) {', '.join(unknown)}.", fix=fix)
        name = entry.get("name")
        if not isinstance(name, str) or not name:
            raise ConfigError(f"{where} has no name.", fix="give each token a name (it appears in the audit log).")
        digest = entry.get("sha256")
        if not isinstance(digest, str) or not _HEX64.fullmatch(digest.strip().lower()):
            raise ConfigError(f"auth token {name!r} in {source}: sha256 must be 64 hex digits.",
                              fix="run `feature-layer token hash` and paste its output (the token comes on stdin).")
        fixed, views, services = _scopes_of(name, entry.get("scopes"), source)
        grant = Grant(name=name, digest=bytes.fromhex(digest.strip().lower()), scopes=fixed, views=views,
                      services=services)
        for other in grants:
            if other.name == name or other.digest == grant.digest:
                raise ConfigError(f"auth tokens {other.name!r} and {name!r} in {source} share a "
                                  f"{'name' if other.name == name else 'token'}.",
                                  fix="give every token its own name and its own secret.")
        grants.append(grant)
    return AuthSettings(tuple(grants))


def online_denial(grant: Grant, refs: Iterable[str], service: str | None,
                  service_features: dict[str, tuple[str, ...]]) -> str | None:
    """Why ``grant`` may not look these features up (None: it may).

    ``refs``: the requested ``view.feature`` references (a service's, when ``service``);
    ``service_features``: each service's features, for ``online:services/<name>`` grants.
    """
    if grant.any_online:
        return None
    if service is not None:
        if service in grant.services:
            return None
        return f"service {service!r}"
    granted: set[str] | None = None
    for ref in refs:
        view = ref.partition(".")[0]
        if view in grant.views:
            continue
        if granted is None:
            granted = {r for s in grant.services for r in service_features.get(s, ())}
        if ref not in granted:
            return f"feature view {view!r}"
    return None
