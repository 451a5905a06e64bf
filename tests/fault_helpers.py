"""Real fault injection for the online fault matrix (tests/test_online_fault_matrix.py).

* ``TcpProxy``   a TCP forwarder in front of Redis, the way a service address (a load balancer,
                 a cloud endpoint) moves to a promoted replica on failover: ``switch`` points it
                 at another server and drops every open connection.
* ``TmpfsDisk``  a tiny tmpfs mounted for one test, that ``fill`` fills to the last byte, so
                 SQLite gets a real ENOSPC (``database or disk is full``). Mounting needs root
                 (CAP_SYS_ADMIN); without it the test FAILS with how to run it, it never skips.
* ``MaterializerProcess``  a materialization in a child process, to be killed -9 or stopped
                 with SIGSTOP at a chosen batch (the child stops itself there: deterministic).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


class TcpProxy:
    """Forwards 127.0.0.1:<port> to ``target`` (a port on 127.0.0.1)."""

    def __init__(self, target: int) -> None:
        self.target = target
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._open: list[socket.socket] = []
        self._lock = threading.Lock()
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target), timeout=2)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._open += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def switch(self, target: int) -> None:
        """Point at another server and cut every connection (clients reconnect to the new one)."""
        self.target = target
        with self._lock:
            for s in self._open:
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                    s.close()
            self._open.clear()

    def close(self) -> None:
        self._closed = True
        self._listener.close()
        self.switch(self.target)


MOUNT_HELP = (
    "The disk-full case mounts a tiny tmpfs (a real ENOSPC for SQLite), which needs root "
    "(CAP_SYS_ADMIN). Run the suite as root, as `make test` does in CI, or in a container started with "
    "--cap-add SYS_ADMIN."
)


class TmpfsDisk:
    """A tmpfs of ``size`` bytes mounted at ``path``."""

    def __init__(self, path: Path, size: int) -> None:
        self.path = path
        path.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True, text=True
        )
        if done.returncode != 0:
            pytest.fail(f"{MOUNT_HELP}\nmount said: {done.stderr.strip()}", pytrace=False)
        self.filler = path / "filler"

    def fill(self) -> None:
        """Write a filler file until the disk has not one byte left."""
        fd = os.open(self.filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        try:
            for chunk in (1 << 16, 1 << 12, 1 << 9, 1):
                try:
                    while os.write(fd, b"\0" * chunk) == chunk:
                        pass
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
        finally:
            os.close(fd)

    def free(self) -> None:
        self.filler.unlink(missing_ok=True)

    def unmount(self) -> None:
        subprocess.run(["umount", "-l", str(self.path)], capture_output=True)


_CHILD = r"""
import json, os, signal, sys, time
config = json.loads(sys.argv[1])
sys.path.insert(0, config["repo"])
from datetime import datetime
import redis
from feature_layer.errors import FeatureLayerError
from feature_layer.offline.engine import DuckDBEngine
from feature_layer.online import materialize as materialize_module
from feature_layer.online.encoding import to_micros
from feature_layer.online.redis_store import RedisOnlineStore
from feature_layer.state import StateStore
from tests.test_materialize import load_events, make_view

materialize_module.LEASE_SECONDS = config["lease_seconds"]
engine = DuckDBEngine(":memory:")
load_events(engine, users=config["users"], per_user=config["per_user"])
end = datetime.fromisoformat(config["end"])
online = RedisOnlineStore(redis.Redis(port=config["port"], socket_timeout=5), config["namespace"], batch_size=250)
online.clock = lambda: to_micros(end)
state = StateStore(config["state"])
batches = []

def on_rows(rows):
    batches.append(rows)
    if len(batches) == config["pause_at"]:
        print("PAUSED", flush=True)
        if config["how"] == "stop":
            os.kill(os.getpid(), signal.SIGSTOP)
        else:
            time.sleep(120)  # waiting to be killed

try:
    materialize_module.materialize_view(
        make_view(), engine=engine, online=online, state=state, end=end, full_refresh=config["full_refresh"],
        batch_rows=500, on_rows=on_rows, statistics=False,
    )
    print("OK", flush=True)
except FeatureLayerError as exc:
    print("ERROR", type(exc).__name__, str(exc).replace("\n", " "), flush=True)
    sys.exit(3)
"""


class MaterializerProcess:
    """``materialize_view`` of the standard test view in a child process, pausing at batch ``pause_at``."""

    def __init__(self, **config: object) -> None:
        config = {"repo": str(REPO), "lease_seconds": 60.0, "per_user": 1, "full_refresh": False, **config}
        self.how = config["how"]
        for key in ("end", "state"):
            config[key] = str(config[key]) if key == "state" else config[key].isoformat()  # type: ignore[union-attr]
        self.process = subprocess.Popen(
            [sys.executable, "-c", _CHILD, json.dumps(config)],
            cwd=str(Path(str(config["state"])).parent),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def wait_paused(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        line = self.process.stdout.readline()  # type: ignore[union-attr]
        if line.strip() != "PAUSED":
            rest = self.process.communicate(timeout=max(1, deadline - time.monotonic()))
            raise AssertionError(f"the materializer did not pause: {line!r} {rest!r}")
        if self.how == "stop":
            while _state(self.process.pid) != "T" and time.monotonic() < deadline:
                time.sleep(0.01)

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(10)

    def resume(self) -> tuple[int, str]:
        os.kill(self.process.pid, signal.SIGCONT)
        out, err = self.process.communicate(timeout=60)
        return self.process.returncode, out + err


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "?"
