# ruff: noqa: F811  (pytest fixtures imported from tests.redis_helpers are used as arguments)
"""Redis connection hygiene: URL and TLS settings checked, TLS failures named, one retry policy,
refused connections fail at once, and an eviction-prone server is warned about once.

Every case runs against a real redis-server (plain or TLS-only, with a throwaway CA made by
openssl); attempts are counted by the server itself (``total_connections_received``).
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import clean_project_env

from feature_layer.client import FeatureStore
from feature_layer.config import load_settings, online_settings_from
from feature_layer.errors import ConfigError, OnlineStoreError
from feature_layer.online.redis_store import RedisOnlineStore
from tests.redis_helpers import RedisServer, private_redis, redis_binary, service_env  # noqa: F401

# Certificates are made on the services' (real) clock and stay valid long enough that a test
# process run "a year ahead" (faketime) still accepts them, and redis-server accepts its client's.
CERT_DAYS = "800"


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, env=service_env())


def _sign(folder: Path, name: str, subject: str, ca: str = "ca") -> None:
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
             "-subj", subject, cwd=folder)
    (folder / f"{name}.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key", "-CAcreateserial",
             "-out", f"{name}.crt", "-days", CERT_DAYS, "-extfile", f"{name}.cnf", cwd=folder)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def mtls_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path]]:
    """A TLS-only redis-server that demands client certificates; yields (port, folder of PEM files)."""
    if not shutil.which("openssl"):
        pytest.fail("These tests need the openssl command: apt-get install openssl", pytrace=False)
    folder = tmp_path_factory.mktemp("mtls")
    for ca in ("ca", "other-ca"):
        _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{ca}.key", "-out", f"{ca}.crt",
                 "-days", CERT_DAYS, "-subj", f"/CN=feature-layer-{ca}", cwd=folder)
    _sign(folder, "server", "/CN=127.0.0.1")
    _sign(folder, "client", "/CN=feature-layer-client")
    port = _free_port()
    proc = subprocess.Popen(
        [redis_binary(), "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(folder), "--tls-cert-file", "server.crt", "--tls-key-file",
         "server.key", "--tls-ca-cert-file", "ca.crt", "--tls-auth-clients", "yes"],
        cwd=folder, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=service_env(),
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.05)
    else:
        proc.kill()
        pytest.fail("redis-server did not start with TLS (Debian's redis-server is built with TLS support).")
    yield port, folder
    proc.terminate()
    proc.wait(10)


def _tls_settings(port: int, folder: Path, **overrides: str) -> dict[str, object]:
    settings: dict[str, object] = {
        "url": f"rediss://127.0.0.1:{port}/0",
        "ssl_ca_certs": str(folder / "ca.crt"),
        "ssl_certfile": str(folder / "client.crt"),
        "ssl_keyfile": str(folder / "client.key"),
        "retries": 5,
    }
    settings.update(overrides)
    return {k: v for k, v in settings.items() if v != ""}


def test_feature_layer_yml_tls_settings_resolve_against_the_project(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("FEATURE_LAYER_ONLINE_STORE", raising=False)
    (tmp_path / "dbt_project.yml").write_text("name: p\nprofile: p\n")
    (tmp_path / "certs").mkdir()
    for name in ("ca.crt", "client.crt", "client.key"):
        (tmp_path / "certs" / name).write_text("PEM\n")
    (tmp_path / "feature_layer.yml").write_text(
        "online_store:\n  url: rediss://cache:6380/3\n  ssl_ca_certs: certs/ca.crt\n"
        "  ssl_certfile: certs/client.crt\n  ssl_keyfile: certs/client.key\n  connect_timeout: 0.5\n"
    )
    online = load_settings(tmp_path).online_store
    assert online.ssl_ca_certs == tmp_path / "certs" / "ca.crt"
    assert online.ssl_certfile == tmp_path / "certs" / "client.crt"
    assert online.ssl_keyfile == tmp_path / "certs" / "client.key"
    assert online.connect_timeout == 0.5
    (tmp_path / "certs" / "ca.crt").unlink()
    with pytest.raises(ConfigError, match=r"ssl_ca_certs .* names .*ca\.crt, which is not a file") as raised:
        load_settings(tmp_path)
    assert "To fix this" in str(raised.value)


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        ("redis://127.0.0.1:6379/notadb", "database 'notadb', which is not a database number"),
        ("redis://127.0.0.1:6379/-1", "database '-1'"),
        ("redis://127.0.0.1:6379/0?db=x", "database 'x'"),
        ("redis://127.0.0.1:99999/0", "not valid"),
        ("redis://127.0.0.1:0/0", "port 0"),
        ({"url": "redis://127.0.0.1/0", "ssl_ca_certs": "ca.crt"}, "TLS setting, but the URL is not rediss://"),
        ({"url": "rediss://127.0.0.1/0", "ssl_ca_certs": "missing.crt"}, "not a file"),
        ("rediss://127.0.0.1/0?ssl_ca_certs=/nonexistent/ca.crt", "not a file"),
        ({"url": "redis://127.0.0.1/0", "connect_timeout": 0}, "connect_timeout .* outside"),
        ({"url": "redis://127.0.0.1/0", "retries": True}, "bad number"),
        ({"url": "redis://127.0.0.1/0", "socket_timeout": ".nan"}, "bad number"),
        ({"url": 6379}, "must be a string"),
        ({"type": "sqlite", "ssl_ca_certs": "x"}, "sqlite but sets TLS"),
    ],
)
def test_bad_redis_urls_and_tls_settings_are_refused(tmp_path: Path, raw: object, words: str) -> None:
    with pytest.raises(ConfigError, match=words) as raised:
        online_settings_from(raw, tmp_path, tmp_path / "feature_layer.yml")
    assert "To fix this" in str(raised.value)


@pytest.mark.parametrize("url", ["redis://127.0.0.1:6379/2", "redis://127.0.0.1:6379", "redis://h/",
                                 "unix:///tmp/redis.sock?db=3", "redis://u:p%40ss@h:1/15"])
def test_good_redis_urls_are_accepted(tmp_path: Path, url: str) -> None:
    assert online_settings_from(url, tmp_path, tmp_path / "x").url == url


def test_materialize_and_lookup_with_a_client_certificate(built_example_project: Path, mtls_redis) -> None:
    port, folder = mtls_redis
    with clean_project_env():
        store = FeatureStore(built_example_project, online_store=_tls_settings(port, folder))
        result = store.materialize(["user_profile_features"], full_refresh=True)
        values = store.get_online_features(["user_profile_features.country"], [{"user_id": 1}]).to_dict()
        store.close()
    assert result["user_profile_features"].rows_written > 0
    assert values["country"][0] is not None


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        ({"ssl_ca_certs": ""}, "CERTIFICATE_VERIFY_FAILED"),  # the system CAs do not know ours
        ({"ssl_certfile": "", "ssl_keyfile": ""}, "TLS"),  # the server demands a client certificate
        ({"ssl_ca_certs": "other-ca.crt"}, "CERTIFICATE_VERIFY_FAILED"),
    ],
)
def test_tls_failures_say_tls_not_unreachable(mtls_redis, tmp_path: Path, overrides: dict, words: str) -> None:
    port, folder = mtls_redis
    fixed = {k: str(folder / v) if v else v for k, v in overrides.items()}
    settings = online_settings_from(_tls_settings(port, folder, **fixed), folder, tmp_path / "x")
    store = RedisOnlineStore.from_settings(settings, "tls")
    with pytest.raises(OnlineStoreError, match=words) as raised:
        store.read([b"a", b"b"])
    store.close()
    message = str(raised.value)
    assert "TLS" in message and "unreachable" not in message and "To fix this" in message


def _connections(admin) -> int:  # noqa: ANN001 - a redis.Redis whose one pooled connection is reused
    return int(admin.info("stats")["total_connections_received"])


def test_rediss_against_a_plain_port_fails_once_and_says_so(private_redis: RedisServer, tmp_path: Path) -> None:
    settings = online_settings_from(
        {"url": f"rediss://127.0.0.1:{private_redis.port}/0", "retries": 20, "connect_timeout": 0.5},
        tmp_path, tmp_path / "x",
    )
    store = RedisOnlineStore.from_settings(settings, "mismatch")
    admin = private_redis.client()
    before = _connections(admin)
    with pytest.raises(OnlineStoreError, match="does not speak TLS on this port") as raised:
        store.read([b"a", b"b"])
    store.close()
    assert "redis://" in str(raised.value).split("To fix this", 1)[1]
    assert _connections(admin) - before == 1  # one attempt: no retries


def test_a_stalled_server_is_retried_exactly_retries_times_not_nested(
    private_redis: RedisServer, tmp_path: Path
) -> None:
    settings = online_settings_from(
        {"url": private_redis.url, "retries": 2, "socket_timeout": 0.2, "connect_timeout": 0.2}, tmp_path, tmp_path / "x"
    )
    store = RedisOnlineStore.from_settings(settings, "stall")
    admin = private_redis.client()
    before = _connections(admin)
    assert private_redis.process is not None
    os.kill(private_redis.process.pid, signal.SIGSTOP)
    try:
        with pytest.raises(OnlineStoreError, match="unreachable"):
            store.read([b"a", b"b"])
    finally:
        os.kill(private_redis.process.pid, signal.SIGCONT)
    store.close()
    time.sleep(0.5)  # the server accepts the queued connections once it runs again
    assert _connections(admin) - before == 3  # 1 attempt + 2 retries (nested retries made 9 or more)


def test_a_refused_connection_is_not_retried(tmp_path: Path) -> None:
    port = _free_port()  # nothing listens there
    settings = online_settings_from({"url": f"redis://127.0.0.1:{port}/0", "retries": 20}, tmp_path, tmp_path / "x")
    store = RedisOnlineStore.from_settings(settings, "refused")
    started = time.monotonic()
    with pytest.raises(OnlineStoreError, match="refused the connection") as raised:
        store.read([b"a"])
    elapsed = time.monotonic() - started
    # 20 retries with backoff would sleep at least 0.1 + 0.2 + 0.4 + 17 * 0.5 s; one attempt takes ms.
    assert elapsed < 3.0, elapsed
    assert "To fix this" in str(raised.value)


def _store_on(server: RedisServer, tmp_path: Path, **extra: object) -> RedisOnlineStore:
    raw = {"url": server.url, **extra}
    return RedisOnlineStore.from_settings(online_settings_from(raw, tmp_path, tmp_path / "x"), "evict")


@pytest.mark.parametrize(
    ("policy", "warned"),
    [("allkeys-lru", "any key"), ("volatile-ttl", "keys with a TTL"), ("noeviction", None)],
)
def test_an_eviction_prone_server_is_warned_about_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, policy: str, warned: str | None
) -> None:
    server = RedisServer(tmp_path / "redis", extra=("--maxmemory", "64mb", "--maxmemory-policy", policy)).start()
    try:
        caplog.set_level(logging.WARNING, logger="feature_layer.online")
        store = _store_on(server, tmp_path)
        for _ in range(3):
            store.read([b"a", b"b"])
            store.ping()
        store.client.connection_pool.disconnect()  # new connections: still no second warning
        store.read([b"a"])
        store.close()
    finally:
        server.stop()
    messages = [r.getMessage() for r in caplog.records if "maxmemory-policy" in r.getMessage()]
    if warned is None:
        assert messages == []
    else:
        assert len(messages) == 1 and warned in messages[0] and policy in messages[0]


def test_no_warning_without_maxmemory_or_when_config_is_denied(
    private_redis: RedisServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    admin = private_redis.client()
    admin.config_set("maxmemory-policy", "allkeys-lru")  # but maxmemory 0: nothing is ever evicted
    caplog.set_level(logging.WARNING, logger="feature_layer.online")
    store = _store_on(private_redis, tmp_path)
    assert store.read([b"a"]) == [None]
    store.close()
    admin.config_set("maxmemory", "64mb")
    admin.acl_setuser("reader", enabled=True, passwords=["+pw"], keys=["*"], commands=["+@all", "-config"])
    store = _store_on(private_redis, tmp_path, username="reader", password="pw")
    assert store.read([b"a", b"b"]) == [None, None]  # CONFIG is denied: the lookup still works
    store.close()
    assert [r for r in caplog.records if "maxmemory" in r.getMessage()] == []
