"""One consumer per stream (the lease) and the consumer's progress on the server's ``/metrics``
(issue #11 item 2), against real redis-server processes, a real consumer and the real server."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from feature_layer.stream.status import LeaseLost, StreamLease, lease_key
from tests.redis_helpers import RedisServer
from tests.stream_helpers import StreamProject, build_stream_project, payments, produce, run_consumer

pytestmark = [pytest.mark.redis, pytest.mark.xdist_group("stream")]


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("lease-redis")).start()
    try:
        yield server
    finally:
        server.stop()


def _lease(server: RedisServer, name: str, lease_ms: int = 800) -> StreamLease:
    client = server.client()
    return StreamLease(lambda: client, "payments-lease", "g", name, lease_ms=lease_ms)


def test_a_second_consumer_waits_for_the_lease_then_refuses_naming_the_holder(redis_server: RedisServer) -> None:
    import threading

    first, second = _lease(redis_server, "first"), _lease(redis_server, "second")
    first.acquire()
    stop = threading.Event()

    def keep_renewing() -> None:  # what the first consumer's run loop does
        while not stop.wait(0.1):
            first.renew(every=0)

    renewer = threading.Thread(target=keep_renewing)
    renewer.start()
    started = time.monotonic()
    try:
        with pytest.raises(LeaseLost) as caught:
            second.acquire()
    finally:
        stop.set()
        renewer.join()
    waited = time.monotonic() - started
    assert "first on" in str(caught.value) and str(os.getpid()) in str(caught.value)
    assert "stop the other `feature-layer stream`" in caught.value.fix
    assert waited >= 0.8  # it waited one lease period for a holder that might have died elsewhere
    first.release()
    second.acquire()  # free now
    second.release()
    assert redis_server.client().get(lease_key("payments-lease", "g")) is None


def test_an_expired_lease_is_taken_and_the_old_holder_learns_it_lost(redis_server: RedisServer) -> None:
    old, new = _lease(redis_server, "old", lease_ms=300), _lease(redis_server, "new", lease_ms=5000)
    old.acquire()
    time.sleep(0.5)  # the old one stopped renewing (paused, partitioned)
    new.acquire()
    with pytest.raises(LeaseLost) as caught:
        old.renew(every=0)
    assert "lost the lease" in str(caught.value) and "new on" in str(caught.value)
    new.renew(every=0)  # the holder renews fine
    redis_server.client().delete(lease_key("payments-lease", "g"))  # Redis restarted without the key
    new.renew(every=0)
    assert json.loads(redis_server.client().get(lease_key("payments-lease", "g")))["consumer"] == "new"
    new.release()


def test_a_dead_holder_on_this_machine_is_taken_over_at_once(redis_server: RedisServer) -> None:
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True)
    stale = {"consumer": "killed", "host": socket.gethostname(), "pid": int(gone.stdout), "token": "x"}
    redis_server.client().set(lease_key("payments-lease", "g"), json.dumps(stale), px=60_000)
    fresh = _lease(redis_server, "fresh", lease_ms=60_000)
    started = time.monotonic()
    fresh.acquire()
    assert time.monotonic() - started < 0.5  # not the 60 s lease period
    assert json.loads(redis_server.client().get(lease_key("payments-lease", "g")))["consumer"] == "fresh"
    fresh.release()


# --- the consumer's status on the server's /metrics ------------------------------------------------------


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StreamProject]:
    base = tmp_path_factory.mktemp("stream-status")
    stream_redis = RedisServer(base / "stream-redis").start()
    online_redis = RedisServer(base / "online-redis").start()
    try:
        built = build_stream_project(base / "project", stream_redis, online_redis)
        built.write_config("payments-status")
        with built.store() as store:
            store.materialize(select=["user_transaction_features", "user_merchant_features"])
        yield built
    finally:
        stream_redis.stop()
        online_redis.stop()


def _metrics(project: StreamProject) -> dict[str, float]:
    from starlette.testclient import TestClient

    from feature_layer.server.app import create_app

    with project.store() as store, TestClient(create_app(store, reload_interval=None)) as client:
        text = client.get("/metrics").text
    out = {}
    for line in text.splitlines():
        if line.startswith("feature_layer_stream_"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def _value(metrics: dict[str, float], name: str) -> float:
    found = [v for k, v in metrics.items() if k.split("{")[0] == name]
    assert len(found) == 1, (name, metrics)
    return found[0]


def test_the_server_metrics_show_the_consumers_progress_lag_and_latency(project: StreamProject) -> None:
    before = _metrics(project)
    assert _value(before, "feature_layer_stream_consumer_running") == 0.0
    events = payments(project, 300, seed=21, first_id=2_100_000_000)
    produce(project.stream_redis.client(), "payments-status", events)
    waiting = _metrics(project)
    assert _value(waiting, "feature_layer_stream_up") == 1.0
    assert _value(waiting, "feature_layer_stream_lag_events") == 300.0  # the group exists; nothing read yet
    counters = run_consumer(project)
    assert counters.events == 300
    after = _metrics(project)
    assert _value(after, "feature_layer_stream_events") == 300.0
    assert _value(after, "feature_layer_stream_events_new") == 300.0
    assert _value(after, "feature_layer_stream_values_written") == float(counters.values_written) > 0
    assert _value(after, "feature_layer_stream_lag_events") == 0.0
    assert _value(after, "feature_layer_stream_pending_events") == 0.0
    assert _value(after, "feature_layer_stream_latency_p99_ms") >= _value(after, "feature_layer_stream_latency_p50_ms") > 0
    assert 'consumer="test"' in next(k for k in after if k.startswith("feature_layer_stream_events{"))


def test_a_stream_redis_that_is_down_shows_as_down(project: StreamProject, tmp_path: Path) -> None:
    original = (project.path / "feature_layer.yml").read_text()
    config = yaml.safe_load(original)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config["streams"]["raw.transactions"]["url"] = f"redis://127.0.0.1:{port}/0"
    (project.path / "feature_layer.yml").write_text(yaml.safe_dump(config))
    try:
        assert _value(_metrics(project), "feature_layer_stream_up") == 0.0
    finally:
        (project.path / "feature_layer.yml").write_text(original)


def test_a_second_consumer_process_refuses_while_one_runs(project: StreamProject) -> None:
    config = yaml.safe_load((project.path / "feature_layer.yml").read_text())
    config["streams"]["raw.transactions"]["lease_seconds"] = 1
    (project.path / "feature_layer.yml").write_text(yaml.safe_dump(config))
    running = subprocess.Popen(project.stream_command("--consumer", "first", "--log-seconds", "0.2"),
                               env=project.env(), stdout=open(project.path / "first.log", "wb"), stderr=subprocess.STDOUT)
    try:
        key = lease_key("payments-status", "feature_layer")
        deadline = time.monotonic() + 60
        while project.stream_redis.client().get(key) is None:
            assert running.poll() is None and time.monotonic() < deadline, (project.path / "first.log").read_text()
            time.sleep(0.2)
        second = subprocess.run(project.stream_command("--consumer", "second"), env=project.env(),
                                capture_output=True, text=True, timeout=120)
    finally:
        running.terminate()
        running.wait(timeout=30)
    assert second.returncode != 0
    assert "Another consumer, first on" in second.stderr and "Traceback" not in second.stderr
