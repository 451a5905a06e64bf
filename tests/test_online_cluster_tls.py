# ruff: noqa: F811  (pytest fixtures imported from other test modules are used as arguments)
"""``rediss+cluster://``: a Redis Cluster that only speaks TLS (client port and cluster bus),
started by the test from ``redis-server`` (3 primaries, no replicas: seconds to start) with a
throwaway CA. Materialized values read back through it equal a plain single Redis's; an
untrusted certificate and a plain-text URL against TLS ports fail with the fix.
"""

from __future__ import annotations

import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from feature_layer.config import OnlineStoreSettings, online_settings_from
from feature_layer.errors import ConfigError, OnlineStoreError
from feature_layer.online.backends import connect_online_store
from feature_layer.online.cluster_store import RedisClusterOnlineStore
from feature_layer.online.lookup import get_online_features
from feature_layer.online.materialize import materialize_view
from feature_layer.state import StateStore
from tests.redis_helpers import _cluster_ports, make_parts, redis_binary, redis_server, service_env  # noqa: F401
from tests.test_materialize import END, engine, load_events, make_view, redis_store  # noqa: F401

pytestmark = [pytest.mark.redis, pytest.mark.xdist_group("redis-cluster")]


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_test_ca(folder: Path) -> None:
    """ca.crt/ca.key and a server.crt/server.key for 127.0.0.1 signed by it, in ``folder``."""
    if not shutil.which("openssl"):
        pytest.fail("The TLS tests need the openssl command: apt-get install openssl", pytrace=False)
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt",
             "-days", "2", "-subj", "/CN=feature-layer-test-ca", cwd=folder)
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
             "-subj", "/CN=127.0.0.1", cwd=folder)
    (folder / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
             "-out", "server.crt", "-days", "2", "-extfile", "ext.cnf", cwd=folder)


class TLSCluster:
    """Three TLS-only cluster primaries (``tls-cluster yes``: the bus is TLS too)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.ca = folder / "ca.crt"
        self.ports = _cluster_ports(3)
        self.processes: list[subprocess.Popen[bytes]] = []

    def _client(self, port: int) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=port, ssl=True, ssl_ca_certs=str(self.ca), socket_timeout=2)

    def start(self) -> TLSCluster:
        make_test_ca(self.folder)
        for port in self.ports:
            node = self.folder / str(port)
            node.mkdir()
            self.processes.append(subprocess.Popen(
                [redis_binary(), "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1", "--save", "",
                 "--appendonly", "no", "--dir", str(node), "--cluster-enabled", "yes",
                 "--cluster-config-file", str(node / "nodes.conf"), "--cluster-node-timeout", "1000",
                 "--tls-cluster", "yes", "--tls-replication", "yes", "--tls-auth-clients", "no",
                 "--tls-cert-file", str(self.folder / "server.crt"), "--tls-key-file", str(self.folder / "server.key"),
                 "--tls-ca-cert-file", str(self.ca)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=service_env()))
        for port in self.ports:
            self._wait(lambda p=port: self._client(p).ping(), f"redis-server did not start with TLS on {port}")
        cli = shutil.which("redis-cli")
        if not cli:
            pytest.fail("redis-cli is needed to create the cluster: apt-get install redis-tools", pytrace=False)
        subprocess.run([cli, "--tls", "--cacert", str(self.ca), "--cluster", "create",
                        *(f"127.0.0.1:{p}" for p in self.ports), "--cluster-yes"],
                       check=True, capture_output=True, env=service_env(), timeout=30)
        self._wait(self._ok, "the TLS cluster did not reach cluster_state:ok")
        return self

    def _ok(self) -> bool:
        return all(b"cluster_state:ok" in self._client(p).execute_command("CLUSTER", "INFO") for p in self.ports)

    @staticmethod
    def _wait(check: object, message: str, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if check():  # type: ignore[operator]
                    return
            except (redis.RedisError, OSError):
                pass
            time.sleep(0.05)
        raise RuntimeError(message)

    def stop(self) -> None:
        for process in self.processes:
            process.kill()
            process.wait(10)


@pytest.fixture(scope="module")
def tls_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TLSCluster]:
    cluster = TLSCluster(tmp_path_factory.mktemp("tls-cluster")).start()
    yield cluster
    cluster.stop()


def _settings(url: str, folder: Path) -> OnlineStoreSettings:
    settings = online_settings_from({"type": "redis-cluster", "url": url, "connect_timeout": 0.5,
                                     "socket_timeout": 1.0, "retries": 1}, folder, folder / "feature_layer.yml")
    return settings


def test_materialize_and_look_up_through_a_tls_cluster_equal_a_single_redis(
    tls_cluster: TLSCluster, redis_server, engine, tmp_path: Path  # noqa: ANN001
) -> None:
    url = f"rediss+cluster://127.0.0.1:{tls_cluster.ports[0]}?ssl_ca_certs={tls_cluster.ca}"
    settings = _settings(url, tmp_path)
    assert settings.tls and settings.ssl_ca_certs == tls_cluster.ca
    clustered = connect_online_store(settings, f"t{uuid.uuid4().hex[:8]}")
    assert isinstance(clustered, RedisClusterOnlineStore)
    single = redis_store(redis_server)
    clustered.clock = single.clock
    load_events(engine, users=500, per_user=2)
    view = make_view()
    for online in (single, clustered):
        materialize_view(view, engine=engine, online=online, state=StateStore(tmp_path / f"{online.namespace}.sqlite"),
                         end=END, statistics=False, batch_rows=200)
    # every primary got a share, over TLS
    shares = [tls_cluster._client(p).dbsize() for p in tls_cluster.ports]
    assert min(shares) > 0, shares
    rows = {"user_id": [*range(0, 500, 3), 900, -1]}
    feats = ["user_stats.x", "user_stats.label"]
    want = get_online_features(make_parts(None, single, None, [view]), features=feats, entity_rows=rows).to_dict()
    got = get_online_features(make_parts(None, clustered, None, [view]), features=feats, entity_rows=rows).to_dict()
    assert got == want and sum(v is not None for v in got["x"]) > 100
    clustered.close()


def test_an_untrusted_certificate_or_a_plain_url_fails_with_the_tls_fix(tls_cluster: TLSCluster, tmp_path: Path) -> None:
    untrusted = _settings(f"rediss+cluster://127.0.0.1:{tls_cluster.ports[0]}", tmp_path)
    with pytest.raises(OnlineStoreError, match="CERTIFICATE_VERIFY_FAILED") as caught:
        connect_online_store(untrusted, "x")
    assert "ssl_ca_certs" in caught.value.fix
    started = time.monotonic()
    plain = _settings(f"redis+cluster://127.0.0.1:{tls_cluster.ports[0]}", tmp_path)
    with pytest.raises(OnlineStoreError, match="Could not reach the Redis Cluster"):
        connect_online_store(plain, "x")
    assert time.monotonic() - started < 20  # bounded by the timeouts, never a hang


def test_tls_cluster_settings_reuse_the_single_redis_tls_rules(tmp_path: Path) -> None:
    source = tmp_path / "feature_layer.yml"
    (tmp_path / "certs").mkdir()
    (tmp_path / "certs" / "ca.crt").write_text("pem")
    got = online_settings_from({"type": "redis-cluster", "url": "rediss+cluster://u:p@h1:1,h2:2",
                                "ssl_ca_certs": "certs/ca.crt"}, tmp_path, source)
    assert (got.tls, got.startup_nodes, got.username, got.ssl_ca_certs) == (
        True, ("h1:1", "h2:2"), "u", (tmp_path / "certs" / "ca.crt").resolve())
    by_flag = online_settings_from({"type": "redis-cluster", "startup_nodes": ["h:1"], "tls": True}, tmp_path, source)
    assert by_flag.tls and by_flag.ssl_ca_certs is None
    for bad, message in [
        ({"type": "redis-cluster", "url": "redis+cluster://h:1", "ssl_ca_certs": "certs/ca.crt"}, "not rediss\\+cluster://"),
        ("redis+cluster://h:1?ssl_ca_certs=certs/ca.crt", "is a TLS setting"),
        ("rediss+cluster://h:1?ssl_ca_certs=certs/missing.crt", "not a file"),
        ({"type": "redis-cluster", "startup_nodes": ["h:1"], "tls": "yes"}, "not true or false"),
    ]:
        with pytest.raises(ConfigError, match=message) as caught:
            online_settings_from(bad, tmp_path, source)
        assert caught.value.fix
    with pytest.raises(ConfigError, match="not rediss://"):  # the single-node rule, from the same function
        online_settings_from({"type": "redis", "url": "redis://h:1/0", "ssl_ca_certs": "certs/ca.crt"}, tmp_path, source)
