"""Private redis-server instances for the online-store tests (never the shared one on :6379).

``RedisServer`` starts ``redis-server`` on a free port in a temporary directory and can be
stopped and restarted on the same port (the fault tests do). A missing binary FAILS the test
with the install command, it never skips.

Fixtures (import them into a test module with ``from tests.redis_helpers import *``):

``redis_server``   one private server per test session (xdist worker); tests use unique namespaces
``private_redis``  a fresh server for one test, free to stop and restart
``redis_online``   a ``RedisOnlineStore`` on ``redis_server`` with a unique namespace
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

__all__ = ["RedisServer", "private_redis", "redis_binary", "redis_online", "redis_server", "service_env"]

INSTALL_HINT = (
    "redis-server is not installed, and the online-store tests need a real one. "
    "Install it with `sudo apt-get install redis-server` (or `make system-deps`), then rerun."
)


def service_env() -> dict[str, str]:
    """The environment for a service process: without libfaketime, which redis-server cannot run
    under (the suite's run "a year ahead" fakes the test process's clock, never the services')."""
    return {k: v for k, v in os.environ.items() if k != "LD_PRELOAD" and not k.startswith("FAKETIME")}


def redis_binary() -> str:
    found = shutil.which("redis-server") or (
        "/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists() else None
    )
    if not found:
        pytest.fail(INSTALL_HINT, pytrace=False)
    return found


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RedisServer:
    """A redis-server process we own: start, stop (SIGKILL-like abrupt or clean), restart."""

    def __init__(self, directory: Path, *, port: int | None = None, extra: tuple[str, ...] = ()) -> None:
        self.binary = redis_binary()
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self.port = port or _free_port()
        self.extra = extra
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        """A client with short backoff (redis-py's default waits seconds before giving up)."""
        from redis.backoff import ExponentialBackoff
        from redis.retry import Retry

        return redis.Redis(
            host="127.0.0.1", port=self.port, socket_timeout=2, retry=Retry(ExponentialBackoff(cap=0.1, base=0.01), 2)
        )

    def start(self) -> RedisServer:
        args = [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.directory),
            "--daemonize",
            "no",
            "--protected-mode",
            "no",
            *self.extra,
        ]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=service_env())
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if self.client().ping():
                    return self
            except redis.RedisError:
                time.sleep(0.02)
            if self.process.poll() is not None:
                break
        raise RuntimeError(f"redis-server did not start on port {self.port}")

    def stop(self, *, kill: bool = True) -> None:
        if self.process is not None and self.process.poll() is None:
            if kill:
                self.process.kill()
            else:
                self.process.terminate()
            self.process.wait(10)
        self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.stop()


@pytest.fixture
def redis_online(redis_server: RedisServer) -> Iterator[object]:
    from feature_layer.online.redis_store import RedisOnlineStore

    store = RedisOnlineStore(redis_server.client(), f"t{uuid.uuid4().hex[:8]}", retries=2)
    yield store
    store.close()


def make_parts(
    engine: object,
    online: object,
    state: object,
    views: list,
    services: list | None = None,
    *,
    clock: object | None = None,
) -> object:
    """Real ``Parts`` over the given engine, online store and state store, with a registry of ``views``.

    Lets the online tests build small views in DuckDB without a dbt project; the end-to-end
    tests use the real ``FeatureStore`` on the built example project.
    """
    from feature_layer.parts import Parts
    from feature_layer.registry.registry import Registry

    registry = Registry(
        entities={},
        views={v.name: v for v in views},
        services={s.name: s for s in services or []},
        nodes={},
        parent_map={},
        child_map={},
    )
    return Parts.of(registry=registry, engine=engine, online=online, state=state, clock=clock)


__all__ += ["make_parts"]


# ---------------------------------------------------------------------------------------------
# Redis Cluster: 3 primaries + 3 replicas from redis-server in cluster mode
# ---------------------------------------------------------------------------------------------

CLI_HINT = (
    "redis-cli is not installed, and the Redis Cluster tests need it to create the cluster. "
    "Install it with `sudo apt-get install redis-tools redis-server` (or `make system-deps`), then rerun."
)


def _cluster_ports(count: int) -> list[int]:
    """Free ports whose cluster-bus port (port + 10000) is free too."""
    ports: list[int] = []
    while len(ports) < count:
        port = _free_port()
        if port + 10000 > 65535 or port in ports:
            continue
        try:
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", port + 10000))
        except OSError:
            continue
        ports.append(port)
    return ports


class RedisClusterProcesses:
    """A local Redis Cluster we own: ``primaries`` primaries with one replica each.

    ``cluster-node-timeout`` is short (1 s) so a killed primary fails over in about two seconds;
    nothing is persisted (a killed node that restarts comes back empty and rejoins as a replica).
    """

    def __init__(self, directory: Path, *, primaries: int = 3, node_timeout_ms: int = 1000) -> None:
        self.directory = directory
        self.primaries = primaries
        self.node_timeout_ms = node_timeout_ms
        self.ports = _cluster_ports(primaries * 2)
        self.nodes = [
            RedisServer(
                directory / str(port),
                port=port,
                extra=(
                    "--cluster-enabled", "yes",
                    "--cluster-config-file", str(directory / str(port) / "nodes.conf"),
                    "--cluster-node-timeout", str(node_timeout_ms),
                    "--cluster-replica-validity-factor", "0",
                    "--appendonly", "no",
                ),
            )
            for port in self.ports
        ]

    @property
    def url(self) -> str:
        return f"redis+cluster://127.0.0.1:{self.ports[0]}"

    def start(self) -> RedisClusterProcesses:
        cli = shutil.which("redis-cli")
        if not cli:
            pytest.fail(CLI_HINT, pytrace=False)
        for node in self.nodes:
            node.start()
        addresses = [f"127.0.0.1:{p}" for p in self.ports]
        subprocess.run(
            [cli, "--cluster", "create", *addresses, "--cluster-replicas", "1", "--cluster-yes"],
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=service_env(), timeout=60,
        )
        self.wait_ok()
        return self

    def wait_ok(self, timeout: float = 20.0) -> None:
        """Until every running node says ``cluster_state:ok`` and agrees on ``primaries`` primaries."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if all(self._healthy(node) for node in self.nodes if node.running):
                    return
            except redis.RedisError:
                pass
            time.sleep(0.05)
        raise RuntimeError("the Redis Cluster did not become healthy")

    def _healthy(self, node: RedisServer) -> bool:
        client = node.client()
        try:
            info = client.execute_command("CLUSTER", "INFO")
            text = info.decode() if isinstance(info, bytes) else str(info)
            if "cluster_state:ok" not in text:
                return False
            nodes = client.execute_command("CLUSTER", "NODES")
            text = nodes.decode() if isinstance(nodes, bytes) else str(nodes)
            masters = [line for line in text.splitlines() if "master" in line.split()[2] and "fail" not in line.split()[2]]
            return len([m for m in masters if len(m.split()) > 8]) == self.primaries
        finally:
            client.close()

    def primary_of(self, key: bytes) -> RedisServer:
        """The node that currently serves ``key``'s slot as primary."""
        from redis.crc import key_slot

        slot = key_slot(key)
        for node in self.nodes:
            if not node.running:
                continue
            client = node.client()
            try:
                for start, end, primary, *_ in client.execute_command("CLUSTER", "SLOTS"):
                    if start <= slot <= end:
                        port = int(primary[1])
                        return next(n for n in self.nodes if n.port == port)
            finally:
                client.close()
        raise RuntimeError("no running node knows the cluster's slots")

    def replica_of(self, primary: RedisServer) -> RedisServer:
        """The replica of ``primary`` (each primary has one)."""
        client = primary.client()
        try:
            info = client.info("replication")
        finally:
            client.close()
        port = int(info["slave0"]["port"])
        return next(n for n in self.nodes if n.port == port)

    def primary_nodes(self) -> list[RedisServer]:
        for node in self.nodes:
            if node.running:
                client = node.client()
                try:
                    ports = {int(primary[1]) for _s, _e, primary, *_ in client.execute_command("CLUSTER", "SLOTS")}
                finally:
                    client.close()
                return [n for n in self.nodes if n.port in ports]
        raise RuntimeError("no running node")

    def wait_failover(self, dead: RedisServer, timeout: float = 20.0) -> None:
        """Until a replica of the killed primary ``dead`` serves its slots and the cluster is ok."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if dead.port not in {n.port for n in self.primary_nodes()} and all(
                    self._healthy(n) for n in self.nodes if n.running
                ):
                    return
            except (redis.RedisError, RuntimeError):
                pass
            time.sleep(0.05)
        raise RuntimeError(f"no replica took over from the killed primary on port {dead.port}")

    def heal(self) -> None:
        """Restart every killed node (it rejoins as a replica) and wait for a healthy cluster."""
        for node in self.nodes:
            if not node.running:
                node.start()
        self.wait_ok(timeout=30)

    def flush(self) -> None:
        for node in self.primary_nodes():
            client = node.client()
            try:
                client.flushall()
            finally:
                client.close()

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterProcesses]:
    """One local cluster (3 primaries + 3 replicas) per test session; tests use unique namespaces
    and call ``heal()`` after killing a node."""
    cluster = RedisClusterProcesses(tmp_path_factory.mktemp("redis-cluster")).start()
    yield cluster
    cluster.stop()


__all__ += ["RedisClusterProcesses", "redis_cluster"]
