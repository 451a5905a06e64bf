"""``feature-layer serve`` as users start it: a real process, one worker and several."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("workers", [1, 2])
def test_serve_starts_the_api_and_the_ui(built_example_project: Path, tmp_path: Path, workers: int):
    project = tmp_path / "p"
    shutil.copytree(built_example_project, project, ignore=shutil.ignore_patterns(".feature_layer", "logs"))
    port = _free_port()
    cmd = [sys.executable, "-c", "from feature_layer.cli import main; main()", "--project-dir", str(project),
           "serve", "--port", str(port), "--workers", str(workers), "--log-level", "warning"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, proc.stderr.read().decode()
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "feature-layer serve did not start"
            time.sleep(0.1)
        assert httpx.get(f"{url}/healthz").json()["features"] > 20
        assert "<title>feature_layer" in httpx.get(f"{url}/").text
        hits = httpx.get(f"{url}/v1/features", params={"q": "amount"}).json()["features"]
        assert hits[0]["name"].startswith("amount")
        response = httpx.post(f"{url}/v1/online-features",
                              json={"features": ["user_profile_features.country"], "entity_rows": [{"user_id": 1}]})
        assert response.status_code == 200 and list(response.json()) == ["user_id", "country"]
        stats = httpx.get(f"{url}/v1/features/merchant_risk_features.txn_count_30d/statistics", timeout=30)
        assert stats.status_code == 200 and stats.json()["statistics"]["source"] == "on-demand"
        # the server let go of the warehouse file: dbt (another process) can write to it again
        import duckdb

        duckdb.connect(str(project / "target" / "feature_layer.duckdb")).close()
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_serve_fails_with_the_fix_when_the_project_is_not_built(tmp_path: Path):
    (tmp_path / "dbt_project.yml").write_text("name: empty\nversion: '1.0'\nconfig-version: 2\nprofile: empty\n")
    result = subprocess.run([sys.executable, "-c", "from feature_layer.cli import main; main()", "--project-dir",
                             str(tmp_path), "serve", "--port", str(_free_port())], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 1
    assert "dbt parse" in result.stderr


@pytest.mark.parametrize("workers", [1, 2])
def test_serve_lookup_deadline_bounds_lookups_on_a_hung_online_store(parsed_example_project: Path, workers: int):
    import os

    from server_helpers import SilentListener

    with SilentListener() as silent:
        port = _free_port()
        env = dict(os.environ, FEATURE_LAYER_ONLINE_STORE=f"redis://127.0.0.1:{silent.port}/0")
        cmd = [sys.executable, "-c", "from feature_layer.cli import main; main()", "--project-dir",
               str(parsed_example_project), "serve", "--port", str(port), "--workers", str(workers),
               "--log-level", "warning", "--reload-interval", "0", "--lookup-deadline", "0.3"]
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 30
            while True:
                assert proc.poll() is None, proc.stderr.read().decode()
                try:
                    if httpx.get(f"{url}/healthz", timeout=3).status_code in (200, 503):
                        break
                except httpx.HTTPError:
                    pass
                assert time.monotonic() < deadline, "feature-layer serve did not start"
                time.sleep(0.1)
            start = time.monotonic()
            response = httpx.post(f"{url}/v1/online-features", timeout=60,
                                  json={"features": ["user_profile_features.country"], "entity_rows": [{"user_id": 1}]})
            assert response.status_code == 504, response.text
            assert time.monotonic() - start < 2.0
            assert "within 0.3 s" in response.json()["error"]["message"]
            health = httpx.get(f"{url}/healthz", timeout=5)  # answered at once, and honestly
            assert health.status_code == 503 and health.json()["online_store"]["status"] == "unreachable"
        finally:
            silent.__exit__(None, None, None)  # the stuck lookups see the connection close and end
            proc.terminate()
            proc.wait(timeout=20)


def test_serve_starts_cold_with_a_broken_view_and_reports_it_degraded(built_example_project: Path, tmp_path: Path):
    import json

    project = tmp_path / "p"
    shutil.copytree(built_example_project, project, ignore=shutil.ignore_patterns(".feature_layer", "logs"))
    manifest = project / "target" / "manifest.json"
    raw = json.loads(manifest.read_text())
    node = next(n for n in raw["nodes"].values() if n.get("name") == "user_merchant_features")
    node["config"]["meta"]["feature_layer"]["ttl"] = "soon"  # unparseable
    manifest.write_text(json.dumps(raw))
    port = _free_port()
    cmd = [sys.executable, "-c", "from feature_layer.cli import main; main()", "--project-dir", str(project),
           "serve", "--port", str(port), "--log-level", "warning", "--reload-interval", "0"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, proc.stderr.read().decode()
            try:
                health = httpx.get(f"{url}/healthz", timeout=3)
                break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "feature-layer serve did not start"
            time.sleep(0.1)
        assert health.status_code == 200 and health.json()["status"] == "degraded", health.text
        assert list(health.json()["broken_views"]) == ["user_merchant_features"]
        assert httpx.get(f"{url}/v1/views/user_profile_features").status_code == 200
        assert httpx.get(f"{url}/v1/views/user_merchant_features").status_code == 404
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=20)
    assert "user_merchant_features" in err.decode() and "not served" in err.decode()


def _start_serve(project: Path, *extra: str) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    cmd = [sys.executable, "-c", "from feature_layer.cli import main; main()", "--project-dir", str(project),
           "serve", "--port", str(port), "--log-level", "warning", "--reload-interval", "0", *extra]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        assert proc.poll() is None, proc.stderr.read().decode()
        try:
            httpx.get(f"{url}/healthz", timeout=3)
            return proc, url
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, "feature-layer serve did not start"
        time.sleep(0.1)


def _read_until_closed(sock: socket.socket, limit: float) -> tuple[bytes, float]:
    """Everything the server sends until it closes the connection, and when it closed (s)."""
    start = time.monotonic()
    sock.settimeout(limit)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except (TimeoutError, ConnectionResetError):
        pass
    return data, time.monotonic() - start


def test_slow_idle_and_oversized_clients_are_cut_off(parsed_example_project: Path):
    proc, url = _start_serve(parsed_example_project, "--header-timeout", "1", "--keep-alive-timeout", "1",
                             "--max-header-bytes", "8192")
    port = int(url.rsplit(":", 1)[1])
    try:
        # an idle connection that never sends a byte: 408 after the header timeout, then closed
        idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(20)]
        # a slowloris: one byte every 0.2 s, never finishing its headers
        slow = socket.create_connection(("127.0.0.1", port))
        start = time.monotonic()
        request = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 100
        sent = 0
        slow.settimeout(0.2)
        closed_after = None
        while time.monotonic() - start < 15:
            try:
                slow.send(request[sent % len(request):][:1])
                sent += 1
                if slow.recv(65536) == b"":
                    closed_after = time.monotonic() - start
                    break
            except TimeoutError:
                continue
            except (BrokenPipeError, ConnectionResetError):
                closed_after = time.monotonic() - start
                break
            else:
                closed_after = time.monotonic() - start  # it answered (the 408) and will close
                break
        assert closed_after is not None and closed_after < 10, "a 1-byte-per-0.2-s client was never cut off"
        for sock in idle:
            data, _ = _read_until_closed(sock, 10)
            assert data.startswith(b"HTTP/1.1 408"), data[:80]
            sock.close()
        slow.close()
        # a 200 KB header: 431, closed
        big = socket.create_connection(("127.0.0.1", port))
        big.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 200_000 + b"\r\n\r\n")
        data, _ = _read_until_closed(big, 10)
        assert data.startswith(b"HTTP/1.1 431"), data[:80]
        big.close()
        # an idle keep-alive connection is closed after the keep-alive timeout
        kept = socket.create_connection(("127.0.0.1", port))
        kept.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        data, seconds = _read_until_closed(kept, 10)
        assert data.startswith(b"HTTP/1.1 200") and seconds < 8, (data[:80], seconds)
        kept.close()
        # and normal clients are served as before, headers of a usual size included
        response = httpx.get(f"{url}/v1/features", params={"q": "amount"}, headers={"x-pad": "p" * 4000})
        assert response.status_code == 200 and response.json()["total"] > 0
    finally:
        proc.terminate()
        proc.wait(timeout=20)
