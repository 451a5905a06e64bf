"""Project settings: where the warehouse is, which online store to use, where state lives.

Settings come from three places, later ones winning: defaults, an optional
``feature_layer.yml`` at the project root, and environment variables
(``FEATURE_LAYER_TARGET``, ``FEATURE_LAYER_ONLINE_STORE``). The warehouse connection is read
from the dbt profile the project already has, so there is one source of truth for it.
Unknown keys are refused, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from feature_layer.access import AuthSettings, auth_settings_from
from feature_layer.errors import ConfigError
from feature_layer.offline.kinds import _is_file_path, duckdb_path  # noqa: F401 - re-exported

CONFIG_FILE = "feature_layer.yml"


@dataclass(frozen=True)
class WarehouseSettings:
    """A warehouse connection taken from the dbt profile's target."""

    type: str
    target: str
    path: Path | None = None
    host: str | None = None
    port: int | None = None
    user: str | None = None
    password: str | None = None
    dbname: str | None = None
    schema: str | None = None
    project_dir: Path | None = None
    """Relative paths in the warehouse (dbt-duckdb views over Parquet) resolve against it."""
    profile_path: str | None = None
    """The DuckDB ``path`` as written in profiles.yml (rendered), for messages."""
    database: str | None = None
    """The database dbt compiles relations into: dbname (PostgreSQL), the file's stem or the
    profile's ``database`` (DuckDB). A manifest built for another target names another one."""
    options: dict[str, str] = field(default_factory=dict)
    """Engine settings of the target (Spark: its ``server_side_parameters``)."""
    engine: str = ""
    """The engine kind that serves the target (``offline.kinds``); empty: the adapter type's."""
    memory_limit: int | None = None
    """``offline.memory_limit`` in bytes, for engines that take one (None: the engine's default)."""
    profile: dict[str, Any] = field(default_factory=dict, repr=False)
    """The rendered profile output (secrets included, so never printed): the generic engine's credentials."""
    profiles_file: Path | None = None
    """The profiles.yml the target came from (the generic engine renders it again with dbt's own renderer)."""
    profile_name: str | None = None


@dataclass(frozen=True)
class OnlineStoreSettings:
    """Which online store to use. ``sqlite`` is the zero-setup embedded default."""

    type: str = "sqlite"
    path: Path | None = None
    url: str | None = None
    username: str | None = None
    password: str | None = None
    socket_timeout: float = 5.0
    retries: int = 3
    batch_size: int = 5000
    connect_timeout: float = 2.0
    """Seconds to open a connection, TLS handshake included (a plain port never answers one)."""
    ssl_ca_certs: Path | None = None
    """TLS: the CA bundle that signed the server's certificate (``rediss://`` only)."""
    ssl_certfile: Path | None = None
    """TLS: this client's certificate, for servers that require client certificates."""
    ssl_keyfile: Path | None = None
    """TLS: the private key of ``ssl_certfile``."""
    startup_nodes: tuple[str, ...] = ()
    """Redis Cluster: ``host:port`` of nodes to discover the cluster from (any one reachable suffices)."""
    failover_timeout: float = 20.0
    """Redis Cluster: seconds a write waits for a replica to take over from a failed primary."""
    tls: bool = False
    """Redis Cluster: every node over TLS (``rediss+cluster://`` or ``tls: true``; single Redis:
    the ``rediss://`` URL says it)."""


@dataclass(frozen=True)
class OfflineSettings:
    """``offline:`` in feature_layer.yml: how the warehouse is queried."""

    engine: str = "auto"
    """``auto``: the adapter's native engine where there is one, else the generic dbt-adapter
    engine; ``generic``: the dbt adapter's connection for every target."""
    memory_limit: int | None = None
    """Bytes the warehouse engine may use (DuckDB ``memory_limit``, PostgreSQL's ``work_mem`` split,
    Spark driver memory, the generic engine's fetched chunks: README "Memory budget"); None: the
    engine's default (half the machine, at most 2 GiB, on the embedded DuckDB)."""


@dataclass(frozen=True)
class Settings:
    project_dir: Path
    project: str
    target: str | None
    online_store: OnlineStoreSettings
    state_path: Path
    manifest_path: Path
    catalog_path: Path
    profiles_dir: Path
    extra: dict[str, Any] = field(default_factory=dict)
    offline: OfflineSettings = field(default_factory=OfflineSettings)
    auth: AuthSettings | None = None
    """Access tokens of the feature server (``auth:``; None: every request is served). ops2."""


_TOP_KEYS = {"project", "target", "online_store", "state_path", "target_path", "profiles_dir", "offline",
             "auth", "streams", "server"}
_TLS_KEYS = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile")
_ONLINE_KEYS = {"type", "path", "url", "username", "password", "socket_timeout", "retries", "batch_size",
                "connect_timeout", *_TLS_KEYS}


def _refuse_unknown(section: str, given: dict[str, Any], allowed: set[str], source: Path) -> None:
    unknown = sorted(repr(k) if not isinstance(k, str) else k for k in set(given) - allowed)
    if unknown:
        raise ConfigError(
            f"Unknown key(s) {', '.join(unknown)} in {section} of {source}.",
            fix=f"use only: {', '.join(sorted(allowed))}.",
        )


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        loaded = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}", fix="correct the YAML syntax.") from exc
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path} must hold a mapping at the top level.", fix="write `key: value` pairs.")
    return loaded


def online_settings_from(raw: dict[str, Any] | str | None, project_dir: Path, source: Path) -> OnlineStoreSettings:
    """Build online-store settings from a mapping or a bare URL (``redis://…``, ``sqlite:///…``)."""
    if raw is None:
        return OnlineStoreSettings(type="sqlite", path=project_dir / ".feature_layer" / "online.sqlite")
    if isinstance(raw, str) and raw.startswith(CLUSTER_SCHEMES) or (
        isinstance(raw, dict) and raw.get("type") == "redis-cluster"
    ):
        return cluster_settings_from(raw, source, project_dir)
    if isinstance(raw, str):
        if raw.startswith(("redis://", "rediss://", "unix://")):
            return OnlineStoreSettings(type="redis", url=raw, **_redis_url_tls(raw, {}, project_dir, source))
        if raw.startswith("sqlite:///"):
            return OnlineStoreSettings(type="sqlite", path=(project_dir / raw[len("sqlite:///"):]).resolve())
        raise ConfigError(
            f"Online store {raw!r} (from {source}) is not a recognised URL.",
            fix="use redis://host:port/db, rediss://… for TLS, or sqlite:///path/to/file.sqlite.",
        )
    if not isinstance(raw, dict):
        raise ConfigError(f"online_store in {source} must be a mapping or a URL.", fix="see the README's Configuration section.")
    _refuse_unknown("online_store", raw, _ONLINE_KEYS, source)
    kind = raw.get("type", "redis" if raw.get("url") else "sqlite")
    if not isinstance(kind, str) or kind not in {"redis", "sqlite"}:
        raise ConfigError(f"online_store.type {kind!r} in {source} is not supported.",
                          fix="use `redis`, `redis-cluster` or `sqlite`.")
    if kind == "redis" and not raw.get("url"):
        raise ConfigError(f"online_store in {source} is redis but has no url.", fix="add `url: redis://127.0.0.1:6379/0`.")
    path = raw.get("path")
    for key in ("url", "path", "username", "password", *_TLS_KEYS):
        if raw.get(key) is not None and not isinstance(raw[key], str):
            raise ConfigError(f"online_store.{key} in {source} must be a string, not {raw[key]!r}.",
                              fix=f"quote the value of {key}.")
    if kind == "sqlite" and any(raw.get(k) for k in _TLS_KEYS):
        raise ConfigError(f"online_store in {source} is sqlite but sets TLS options.", fix="remove the ssl_* keys.")
    tls = _redis_url_tls(raw["url"], raw, project_dir, source) if kind == "redis" else {}
    resolved = (project_dir / path).resolve() if path else project_dir / ".feature_layer" / "online.sqlite"
    try:
        settings = OnlineStoreSettings(
            type=kind,
            path=resolved if kind == "sqlite" else None,
            url=raw.get("url"),
            username=raw.get("username"),
            password=raw.get("password"),
            socket_timeout=_number(raw.get("socket_timeout", 5.0), float),
            retries=_number(raw.get("retries", 3), int),
            batch_size=_number(raw.get("batch_size", 5000), int),
            connect_timeout=_number(raw.get("connect_timeout", 2.0), float),
            **tls,
        )
    except (TypeError, ValueError, OverflowError) as exc:
        raise ConfigError(f"online_store in {source} has a bad number: {exc}", fix="use plain numbers.") from exc
    for key, value, low, high in (("socket_timeout", settings.socket_timeout, 0.001, 3600),
                                  ("connect_timeout", settings.connect_timeout, 0.001, 3600),
                                  ("retries", settings.retries, 0, 100),
                                  ("batch_size", settings.batch_size, 1, 1_000_000)):
        if not low <= value <= high:
            raise ConfigError(f"online_store.{key} in {source} is {value}, outside {low}..{high}.",
                              fix=f"set {key} between {low} and {high}.")
    return settings


CLUSTER_SCHEMES = ("redis+cluster://", "rediss+cluster://")
_CLUSTER_KEYS = {"type", "url", "startup_nodes", "username", "password", "socket_timeout", "retries", "batch_size",
                 "connect_timeout", "failover_timeout", "tls", *_TLS_KEYS}


def cluster_settings_from(raw: dict[str, Any] | str, source: Path, project_dir: Path | None = None) -> OnlineStoreSettings:
    """Redis Cluster settings from ``redis+cluster://[user:password@]host:port[,host:port…]`` (TLS:
    ``rediss+cluster://…[?ssl_ca_certs=…]``) or a mapping ``{type: redis-cluster, startup_nodes:
    [host:port, …] and/or url: …, tls: true, ssl_ca_certs: …, …}``."""
    from urllib.parse import parse_qs, unquote, urlsplit

    fix = ("use `url: redis+cluster://host:port` (several nodes: host1:port1,host2:port2; rediss+cluster:// for "
           "TLS) or `startup_nodes: [host:port, …]`.")
    mapping: dict[str, Any] = {"type": "redis-cluster", "url": raw} if isinstance(raw, str) else dict(raw)
    _refuse_unknown("online_store (redis-cluster)", mapping, _CLUSTER_KEYS, source)
    nodes: list[str] = []
    username, password = mapping.get("username"), mapping.get("password")
    url = mapping.get("url")
    query: dict[str, list[str]] = {}
    tls = mapping.get("tls", False)
    if not isinstance(tls, bool):
        raise ConfigError(f"online_store.tls in {source} is {tls!r}, not true or false.", fix="write `tls: true`.")
    if url is not None:
        if not isinstance(url, str) or not url.startswith(CLUSTER_SCHEMES):
            raise ConfigError(f"online_store.url {url!r} in {source} is not a redis+cluster:// URL.", fix=fix)
        scheme, _, rest = url.partition("://")
        tls = tls or scheme == "rediss+cluster"
        rest, _, query_text = rest.partition("?")
        query = parse_qs(query_text)
        auth, _, hosts = rest.rpartition("@")
        if auth:
            user, _, secret = auth.partition(":")
            username = username or (unquote(user) or None)
            password = password or (unquote(secret) or None)
        hosts = hosts.split("/", 1)[0]
        nodes += [h for h in hosts.split(",") if h]
    files = tls_files(mapping, query, tls=tls, project_dir=project_dir or source.parent, source=source,
                      tls_url="rediss+cluster://host:port")
    given = mapping.get("startup_nodes", [])
    if isinstance(given, str) or not isinstance(given, list):
        raise ConfigError(f"online_store.startup_nodes in {source} must be a list of host:port.", fix=fix)
    nodes += given
    if not nodes:
        raise ConfigError(f"online_store in {source} is redis-cluster but names no node.", fix=fix)
    for node in nodes:
        try:
            parsed = urlsplit(f"//{node}") if isinstance(node, str) else None
            port = parsed.port if parsed else None
        except ValueError:
            port = None
        if parsed is None or not parsed.hostname or port is None or port == 0:
            raise ConfigError(f"The Redis Cluster node {node!r} in {source} is not host:port.", fix=fix)
    for key in ("username", "password"):
        if mapping.get(key) is not None and not isinstance(mapping[key], str):
            raise ConfigError(f"online_store.{key} in {source} must be a string.", fix=f"quote the value of {key}.")
    try:
        settings = OnlineStoreSettings(
            type="redis-cluster",
            url=url,
            startup_nodes=tuple(nodes),
            username=username,
            password=password,
            socket_timeout=_number(mapping.get("socket_timeout", 5.0), float),
            retries=_number(mapping.get("retries", 3), int),
            batch_size=_number(mapping.get("batch_size", 5000), int),
            connect_timeout=_number(mapping.get("connect_timeout", 2.0), float),
            failover_timeout=_number(mapping.get("failover_timeout", 20.0), float),
            tls=tls,
            **files,
        )
    except (TypeError, ValueError, OverflowError) as exc:
        raise ConfigError(f"online_store in {source} has a bad number: {exc}", fix="use plain numbers.") from exc
    for key, value, low, high in (("socket_timeout", settings.socket_timeout, 0.001, 3600),
                                  ("connect_timeout", settings.connect_timeout, 0.001, 3600),
                                  ("failover_timeout", settings.failover_timeout, 0, 3600),
                                  ("retries", settings.retries, 0, 100),
                                  ("batch_size", settings.batch_size, 1, 1_000_000)):
        if not low <= value <= high:
            raise ConfigError(f"online_store.{key} in {source} is {value}, outside {low}..{high}.",
                              fix=f"set {key} between {low} and {high}.")
    return settings


def _number(value: Any, kind: type) -> Any:
    """``kind(value)`` for a number or a numeric string; booleans and fractional integers refused."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f"{value!r} is not a number")
    number = kind(value)
    if kind is int and isinstance(value, float) and value != number:
        raise ValueError(f"{value!r} is not a whole number")
    if kind is float and number != number:  # NaN passes every range check: refuse it here
        raise ValueError(f"{value!r} is not a number")
    return number


def _redis_url_tls(url: str, raw: dict[str, Any], project_dir: Path, source: Path) -> dict[str, Path]:
    """Check a Redis URL (scheme, host, port, db) and resolve its TLS files; ConfigError naming the fix.

    redis-py reads ``redis://host/notadb`` as db 0 and ignores it: refuse it here instead. TLS files
    may come from the settings (``ssl_ca_certs: certs/ca.crt``, relative to the project) or from
    the URL's query (``rediss://…?ssl_ca_certs=/path``); each must be a readable file.
    """
    from urllib.parse import parse_qs, unquote, urlparse

    fix = "use redis://[user:password@]host:port/db (db a number), rediss://… for TLS, or unix:///path.sock?db=0."
    try:
        parsed = urlparse(url)
        port = parsed.port
        query = parse_qs(parsed.query)
    except ValueError as exc:
        raise ConfigError(f"The Redis URL in {source} is not valid: {exc}.", fix=fix) from None
    if parsed.scheme not in {"redis", "rediss", "unix"}:
        raise ConfigError(f"The Redis URL in {source} must start with redis://, rediss:// or unix://.", fix=fix)
    if parsed.scheme != "unix" and port == 0:
        raise ConfigError(f"The Redis URL in {source} has port 0.", fix=fix)
    db_text = query.get("db", [None])[0]
    if db_text is None and parsed.scheme != "unix":
        db_text = unquote(parsed.path).strip("/") or None
    if db_text is not None and not (db_text.isascii() and db_text.isdigit() and int(db_text) < 2**31):
        raise ConfigError(
            f"The Redis URL in {source} names database {db_text!r}, which is not a database number.", fix=fix
        )
    return tls_files(raw, query, tls=parsed.scheme == "rediss", project_dir=project_dir, source=source,
                     tls_url="rediss://host:port/db")


def tls_files(raw: Mapping[str, Any], query: Mapping[str, list[str]], *, tls: bool, project_dir: Path, source: Path,
              tls_url: str) -> dict[str, Path]:
    """The TLS files (``ssl_ca_certs``, ``ssl_certfile``, ``ssl_keyfile``) of a Redis or Redis Cluster
    setting, from the mapping or the URL's query, each resolved against the project and checked to
    be a file; ConfigError when one is given for a connection that is not TLS (``tls_url`` names
    the URL form that is)."""
    files: dict[str, Path] = {}
    for key in _TLS_KEYS:
        given = raw.get(key) or (query.get(key, [None])[0])
        if not given:
            continue
        if not isinstance(given, str):
            raise ConfigError(f"online_store.{key} in {source} must be a string, not {given!r}.",
                              fix=f"quote the value of {key}.")
        if not tls:
            raise ConfigError(
                f"online_store.{key} in {source} is a TLS setting, but the URL is not {tls_url.split('://')[0]}://.",
                fix=f"use a {tls_url} URL for a TLS server, or remove the ssl_* settings.",
            )
        file = (project_dir / given).resolve()
        if not file.is_file():
            raise ConfigError(f"online_store.{key} in {source} names {file}, which is not a file.",
                              fix=f"point {key} at an existing PEM file (relative paths start at the project).")
        files[key] = file
    return files


def load_settings(project_dir: str | Path = ".", *, target: str | None = None) -> Settings:
    """Read settings for the dbt project at ``project_dir``."""
    root = Path(project_dir).resolve()
    if not (root / "dbt_project.yml").exists():
        raise ConfigError(
            f"{root} is not a dbt project (no dbt_project.yml).",
            fix="run from your dbt project's folder or pass --project-dir.",
        )
    source = root / CONFIG_FILE
    raw = _read_yaml(source) if source.exists() else {}
    _refuse_unknown("the top level", raw, _TOP_KEYS, source)
    dbt_project = _read_yaml(root / "dbt_project.yml")
    from_env = os.environ.get("FEATURE_LAYER_ONLINE_STORE")
    online_raw = from_env or _render_env(raw.get("online_store"))
    online_source = Path("the environment variable FEATURE_LAYER_ONLINE_STORE") if from_env else source
    target_path = root / (_text(raw, "target_path", source) or _text(dbt_project, "target-path", root / "dbt_project.yml")
                          or "target")
    profiles_dir = _text(raw, "profiles_dir", source)
    return Settings(
        project_dir=root,
        project=_text(raw, "project", source) or _text(dbt_project, "name", root / "dbt_project.yml") or root.name,
        target=target or os.environ.get("FEATURE_LAYER_TARGET") or _text(raw, "target", source),
        online_store=online_settings_from(online_raw, root, online_source),
        state_path=(root / (_text(raw, "state_path", source) or ".feature_layer/state.sqlite")).resolve(),
        manifest_path=target_path / "manifest.json",
        catalog_path=target_path / "catalog.json",
        profiles_dir=(root / profiles_dir).resolve() if profiles_dir
        else Path(os.environ.get("DBT_PROFILES_DIR", root)),
        auth=auth_settings_from(raw.get("auth"), source),
        offline=offline_settings_from(raw.get("offline"), source),
    )


ENGINE_VARIABLE = "FEATURE_LAYER_ENGINE"
"""``generic`` forces the dbt-adapter engine for every target (as ``offline: {engine: generic}``)."""


def offline_settings_from(raw: Any, source: Path) -> OfflineSettings:
    """``offline:`` of feature_layer.yml (and FEATURE_LAYER_ENGINE), validated."""
    from feature_layer.offline.kinds import ENGINE_CHOICES, parse_memory_limit

    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"`offline` in {source} must be a mapping, not {raw!r}.",
                          fix="write `offline: {memory_limit: 1GB}` (keys: engine, memory_limit).")
    _refuse_unknown("offline", raw, {"engine", "memory_limit"}, source)
    raw = _render_env(raw)
    engine = os.environ.get(ENGINE_VARIABLE) or raw.get("engine") or "auto"
    where = f"the environment variable {ENGINE_VARIABLE}" if os.environ.get(ENGINE_VARIABLE) else f"offline.engine in {source}"
    if engine not in ENGINE_CHOICES:
        raise ConfigError(f"{where} is {engine!r}, which is not an engine choice.",
                          fix=f"use one of: {', '.join(ENGINE_CHOICES)} (generic: the dbt adapter's own connection).")
    limit = raw.get("memory_limit")
    return OfflineSettings(
        engine=engine,
        memory_limit=None if limit is None else parse_memory_limit(limit, f"offline.memory_limit in {source}"),
    )


def _text(raw: dict[str, Any], key: str, source: Path) -> str | None:
    """A setting that must be text (a name or a path): None when absent, ConfigError when not text."""
    value = raw.get(key)
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int)) or "\x00" in str(value):
        raise ConfigError(f"`{key}` in {source} must be a name or a path, not {value!r}.",
                          fix=f"write `{key}: <text>` (quote it if it looks like a number or a list).")
    return str(value)


def _render_env(value: Any, flags: dict[str, str] | None = None) -> Any:
    """Render ``{{ env_var('X', 'default') }}`` in settings and profile values, as dbt does,
    so secrets such as a Redis password stay out of the files. ``flags`` (e.g. ``PROJECT_DIR``
    for a spark target's paths) are available as ``{{ flags.NAME }}``."""
    if isinstance(value, dict):
        return {k: _render_env(v, flags) for k, v in value.items()}
    if isinstance(value, str) and "{{" in value:
        import jinja2

        def env_var(name: str, default: str | None = None) -> str:
            if name in os.environ:
                return os.environ[name]
            if default is None:
                raise ConfigError(
                    f"The setting {value!r} needs the environment variable {name}, which is not set.",
                    fix=f"export {name}=… or give env_var a default: env_var('{name}', 'default').",
                )
            return default

        try:
            return jinja2.Environment().from_string(value).render(env_var=env_var, flags=flags or {})
        except ConfigError:
            raise
        except Exception as exc:  # a template error or what the template itself raised (e.g. 1/0)
            raise ConfigError(f"The setting {value!r} is not a template dbt can render: {exc}",
                              fix="write {{ env_var('NAME') }} or {{ env_var('NAME', 'default') }}, or plain text.") from None
    return value


def warehouse_settings(settings: Settings, dbt_project_profile: str | None = None) -> WarehouseSettings:
    """Read the warehouse connection for ``settings.target`` from the project's profiles.yml."""
    project = _read_yaml(settings.project_dir / "dbt_project.yml")
    profile_name = dbt_project_profile or _text(project, "profile", settings.project_dir / "dbt_project.yml")
    profiles_file = settings.profiles_dir / "profiles.yml"
    if not profiles_file.exists():
        raise ConfigError(f"No profiles.yml in {settings.profiles_dir}.", fix="create one or set DBT_PROFILES_DIR.")
    profiles = _read_yaml(profiles_file)
    profile = profiles.get(profile_name)
    if not isinstance(profile, dict):
        raise ConfigError(
            f"Profile {profile_name!r} (named in dbt_project.yml) is not in {profiles_file}.",
            fix=f"add a `{profile_name}:` profile to profiles.yml.",
        )
    target = settings.target or _render_env(profile.get("target"))
    outputs = profile.get("outputs", {})
    if not isinstance(outputs, dict):
        raise ConfigError(f"`outputs` of profile {profile_name!r} in {profiles_file} is not a mapping.",
                          fix="write `outputs: {<target>: {type: duckdb, path: ...}}`.")
    if not isinstance(target, str) or target not in outputs:
        raise ConfigError(
            f"Target {target!r} is not an output of profile {profile_name!r} in {profiles_file}.",
            fix=f"use one of: {', '.join(map(str, outputs)) or '(none)'}.",
        )
    out = _output_settings(outputs[target], target, profiles_file, {"PROJECT_DIR": str(settings.project_dir)})
    kind = out.get("type")
    if not isinstance(kind, str) or not kind:
        raise ConfigError(f"Output {target!r} in {profiles_file} has no adapter `type`.",
                          fix="add the adapter, e.g. `type: duckdb` (what dbt needs too).")
    from feature_layer.offline.kinds import kind_for

    engine = kind_for(kind, settings.offline.engine)
    fields = engine.read_settings(target, out, settings.project_dir)
    return WarehouseSettings(**fields, engine=engine.name, memory_limit=settings.offline.memory_limit, profile=out,
                             profiles_file=profiles_file, profile_name=profile_name)


def _output_settings(raw: Any, target: str, profiles_file: Path, flags: dict[str, str]) -> dict[str, Any]:
    """One profile output, rendered (``env_var``, ``flags.PROJECT_DIR``), with the fields
    feature_layer reads type-checked."""
    if not isinstance(raw, dict):
        raise ConfigError(f"Output {target!r} in {profiles_file} is not a mapping.",
                          fix=f"write `{target}: {{type: duckdb, path: target/warehouse.duckdb}}`.")
    out = {k: _render_env(v, flags) for k, v in raw.items()}
    for key in ("type", "path", "host", "user", "password", "pass", "dbname", "database", "schema"):
        value = out.get(key)
        if value is not None and (not isinstance(value, (str, int, float)) or isinstance(value, bool)
                                  or "\x00" in str(value)):
            raise ConfigError(f"`{key}` of output {target!r} in {profiles_file} must be text, not {value!r}.",
                              fix=f"write `{key}: <text>`.")
        if value is not None and key in ("path", "host", "user", "dbname", "database", "schema"):
            out[key] = str(value)
    if "port" in out:
        try:
            out["port"] = _number(out["port"], int)
        except (TypeError, ValueError, OverflowError):
            out["port"] = -1
        if not 1 <= out["port"] <= 65535:
            raise ConfigError(f"`port` of output {target!r} in {profiles_file} is {raw.get('port')!r}, not a "
                              "port number.", fix="write a port between 1 and 65535, e.g. `port: 5432`.")
    return out


def require_warehouse_file(warehouse: WarehouseSettings) -> None:
    """Refuse to open a DuckDB file that does not exist: ``duckdb.connect`` would create an
    empty one, and every query would then fail with "table does not exist"."""
    if warehouse.type != "duckdb" or warehouse.path is None:
        return
    written = warehouse.profile_path or str(warehouse.path)
    if not _is_file_path(written) or warehouse.path.name == ":memory:" or warehouse.path.exists():
        return
    project = warehouse.project_dir or warehouse.path.parent
    build = f"`cd {project} && dbt build --target {warehouse.target}`"
    if Path(written).expanduser().is_absolute():
        raise ConfigError(
            f"The DuckDB warehouse {warehouse.path} does not exist (path of target {warehouse.target!r} in "
            "profiles.yml).",
            fix=f"build it first: {build}; or correct the `path` in profiles.yml.",
        )
    elsewhere = Path.cwd() / written
    if elsewhere.resolve() != warehouse.path.resolve() and elsewhere.exists():
        hint = (f" A file {elsewhere} exists: dbt-duckdb resolves a relative path against the directory dbt "
                "ran in, feature_layer against the project folder.")
    else:
        hint = " A relative path is taken from the project folder, where `dbt build` runs by default."
    raise ConfigError(
        f"The DuckDB warehouse {warehouse.path} does not exist (path {written!r} of target "
        f"{warehouse.target!r} in profiles.yml).{hint}",
        fix=f"build it first: {build}; or give an absolute `path` in profiles.yml so dbt and feature_layer "
        "open the same file wherever they run.",
    )


# --- stream: where a view's events arrive (feature_layer.stream) ----------------------------------

_STREAM_KEYS = {"type", "url", "stream", "dead_letter", "group", "consumer", "batch_size", "block_ms",
                "buffer_rows", "max_future", "lease_seconds", "threads", "newest_rows"}


@dataclass(frozen=True)
class StreamConnection:
    """Where the events of one upstream relation arrive: a Redis Stream (room for Kafka, NATS)."""

    source: str
    """The relation as views name it in ``stream.source`` (``raw.transactions``)."""
    url: str
    stream: str
    dead_letter: str
    group: str = "feature_layer"
    consumer: str | None = None
    type: str = "redis"
    batch_size: int = 5000
    """Most events one micro-batch reads."""
    block_ms: int = 100
    """How long one read waits for events (XREADGROUP BLOCK)."""
    buffer_rows: int = 2_000_000
    """Most source rows the consumer keeps in its local history buffer (least recently used evicted)."""
    max_future_seconds: float = 300.0
    """Events further in the future than this (by the clock) are dead-lettered."""
    lease_seconds: float = 15.0
    """How long the one-consumer lease lasts unrenewed (``feature_layer.stream.status``): a second
    consumer waits this long for a killed one on another machine before refusing."""
    threads: int = 1
    """DuckDB threads the consumer computes the views with."""
    newest_rows: bool = True
    """Compute each view's windows for each entity's newest rows only where the newest-row pass
    applies (``feature_layer.stream.newest``); false runs every view's SQL as dbt does."""


def stream_connections(settings: Settings) -> dict[str, StreamConnection]:
    """The ``streams:`` section of feature_layer.yml, by source name; unknown keys refused.

    ``streams: {raw.transactions: {url: redis://…, stream: payments}}``; ``url`` may use
    ``{{ env_var('…') }}``; ``dead_letter`` defaults to ``<stream>:dead-letter``.
    """
    source = settings.project_dir / CONFIG_FILE
    raw = (_read_yaml(source) if source.exists() else {}).get("streams") or {}
    fix = "write `streams: {raw.transactions: {url: redis://127.0.0.1:6379/0, stream: payments}}`."
    if not isinstance(raw, dict):
        raise ConfigError(f"`streams` in {source} must be a mapping of source name to connection.", fix=fix)
    out: dict[str, StreamConnection] = {}
    for name, spec in raw.items():
        if not isinstance(spec, dict):
            raise ConfigError(f"streams.{name} in {source} must be a mapping.", fix=fix)
        _refuse_unknown(f"streams.{name}", spec, _STREAM_KEYS, source)
        kind = str(spec.get("type") or "redis")
        if kind != "redis":
            raise ConfigError(f"streams.{name}.type {kind!r} in {source} is not supported.",
                              fix="use `type: redis` (a Redis Stream); Kafka and NATS JetStream are not built yet.")
        url = _render_env(spec.get("url"))
        if not isinstance(url, str) or not url.startswith(("redis://", "rediss://", "unix://")):
            raise ConfigError(f"streams.{name}.url in {source} must be a redis:// URL, got {url!r}.", fix=fix)
        stream = spec.get("stream")
        if not isinstance(stream, str) or not stream:
            raise ConfigError(f"streams.{name}.stream in {source} must name the Redis Stream, got {stream!r}.", fix=fix)
        numbers = {}
        for key, kind_of, default in (("batch_size", int, 5000), ("block_ms", int, 100),
                                      ("buffer_rows", int, 2_000_000), ("max_future", float, 300.0),
                                      ("lease_seconds", float, 15.0), ("threads", int, 1)):
            value = spec.get(key, default)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise ConfigError(f"streams.{name}.{key} in {source} must be a positive number, got {value!r}.",
                                  fix=f"write `{key}: {default}` or leave it out.")
            numbers[key] = kind_of(value)
        newest = spec.get("newest_rows", True)
        if not isinstance(newest, bool):
            raise ConfigError(f"streams.{name}.newest_rows in {source} must be true or false, got {newest!r}.",
                              fix="write `newest_rows: true` (the default) or `newest_rows: false`.")
        out[str(name)] = StreamConnection(
            source=str(name), url=url, stream=stream,
            dead_letter=str(spec.get("dead_letter") or f"{stream}:dead-letter"),
            group=str(spec.get("group") or "feature_layer"),
            consumer=str(spec["consumer"]) if spec.get("consumer") else None,
            batch_size=numbers["batch_size"], block_ms=numbers["block_ms"], buffer_rows=numbers["buffer_rows"],
            max_future_seconds=numbers["max_future"], lease_seconds=numbers["lease_seconds"],
            threads=numbers["threads"], newest_rows=newest,
        )
    return out


def server_accepts_writes(settings: Settings) -> bool:
    """``server: {accept_writes: true}`` in feature_layer.yml (or FEATURE_LAYER_ACCEPT_WRITES=1):
    whether the HTTP server serves ``POST /v1/push``. Off by default: a read-only server."""
    env = os.environ.get("FEATURE_LAYER_ACCEPT_WRITES")
    if env is not None:
        return env.strip().lower() in {"1", "true", "yes", "on"}
    source = settings.project_dir / CONFIG_FILE
    raw = (_read_yaml(source) if source.exists() else {}).get("server") or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"`server` in {source} must be a mapping.", fix="write `server: {accept_writes: true}`.")
    _refuse_unknown("server", raw, {"accept_writes"}, source)
    value = raw.get("accept_writes", False)
    if not isinstance(value, bool):
        raise ConfigError(f"server.accept_writes in {source} must be true or false, got {value!r}.",
                          fix="write `server: {accept_writes: true}`.")
    return value
