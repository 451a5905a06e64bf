"""rediss:// end to end: materialize and look up through a TLS-only redis-server."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import clean_project_env

from feature_layer.client import FeatureStore
from feature_layer.errors import OnlineStoreError
from tests.redis_helpers import redis_binary, service_env


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path]]:
    """A private redis-server that only speaks TLS, with a throwaway CA; yields (port, ca.crt)."""
    if not shutil.which("openssl"):
        pytest.fail("The TLS test needs the openssl command: apt-get install openssl", pytrace=False)
    folder = tmp_path_factory.mktemp("tls")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt",
             "-days", "2", "-subj", "/CN=feature-layer-test-ca", cwd=folder)
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
             "-subj", "/CN=127.0.0.1", cwd=folder)
    (folder / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
             "-out", "server.crt", "-days", "2", "-extfile", "ext.cnf", cwd=folder)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen(
        [redis_binary(), "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(folder), "--tls-cert-file", "server.crt", "--tls-key-file",
         "server.key", "--tls-ca-cert-file", "ca.crt", "--tls-auth-clients", "no"],
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
    yield port, folder / "ca.crt"
    proc.terminate()
    proc.wait(10)


def test_materialize_and_lookup_over_tls(built_example_project: Path, tls_redis: tuple[int, Path]) -> None:
    port, ca = tls_redis
    with clean_project_env():
        store = FeatureStore(built_example_project, online_store=f"rediss://127.0.0.1:{port}/0?ssl_ca_certs={ca}")
        result = store.materialize(["user_profile_features"], full_refresh=True)
        assert result["user_profile_features"].rows_written > 0
        values = store.get_online_features(["user_profile_features.country"], [{"user_id": 1}]).to_dict()
        store.close()
    assert values["country"][0] is not None


def test_an_untrusted_certificate_is_refused_clearly(built_example_project: Path, tls_redis: tuple[int, Path]) -> None:
    port, _ = tls_redis
    with clean_project_env():
        store = FeatureStore(built_example_project, online_store=f"rediss://127.0.0.1:{port}/0")
        with pytest.raises(OnlineStoreError, match="CERTIFICATE_VERIFY_FAILED") as raised:
            store.get_online_features(["user_profile_features.country"], [{"user_id": 1}])
        store.close()
    assert "To fix this" in str(raised.value)
