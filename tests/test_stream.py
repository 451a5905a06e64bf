"""Stream pipelines with the batch SQL (issue #11), against real redis-server processes and a real
``dbt build`` of the example project.

The reference is always the batch path over the same events: after streaming, ``dbt build``
(which reads the raw file plus every event file the stream landed) and a full ``materialize``
into a second store; every online value of both streamed views, with its event time, must be
equal for every entity of the rebuilt warehouse. Each fault case streams its own payments on
top of the state the previous tests left, and must end in that batch state too.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pyarrow as pa
import pytest

from tests.redis_helpers import RedisServer
from tests.stream_helpers import (
    STREAM_VIEWS,
    StreamProject,
    batch_reference,
    build_stream_project,
    compare,
    consumer_process,
    payments,
    produce,
    run_consumer,
    wait_until,
)

pytestmark = [pytest.mark.redis, pytest.mark.xdist_group("stream")]


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StreamProject]:
    base = tmp_path_factory.mktemp("stream")
    stream_redis = RedisServer(base / "stream-redis").start()
    online_redis = RedisServer(base / "online-redis").start()
    try:
        built = build_stream_project(base / "project", stream_redis, online_redis)
        built.write_config("payments")
        with built.store() as store:  # the deployment the stream runs on top of: batch values online
            store.materialize(select=list(STREAM_VIEWS))
        yield built
    finally:
        stream_redis.stop()
        online_redis.stop()


def _assert_batch_state(project: StreamProject, tmp_path: Path) -> dict[str, int]:
    with batch_reference(project, tmp_path) as batch, project.store() as streamed:
        return compare(streamed, batch, project)


def test_streamed_values_equal_dbt_build_for_both_views(project: StreamProject, tmp_path: Path) -> None:
    project.write_config("payments-clean")
    events = payments(project, 1500, seed=1, first_id=1_000_000_000)
    produce(project.stream_redis.client(), "payments-clean", events.sort_by("occurred_at"))
    counters = run_consumer(project)
    assert counters.events == 1500 and counters.new == 1500 and counters.rejected == 0
    assert counters.values_written > 0
    landed = sorted((project.path / "data" / "raw").glob("transactions.stream-*.parquet"))
    assert landed and sum(pa.parquet.read_metadata(p).num_rows for p in landed) >= 1500
    compared = _assert_batch_state(project, tmp_path)
    assert compared["user_transaction_features"] >= 100 and compared["user_merchant_features"] >= 300


def test_duplicates_out_of_order_and_malformed_events_end_in_the_batch_state(
    project: StreamProject, tmp_path: Path
) -> None:
    import pyarrow.parquet as pq

    project.write_config("payments-faults")
    client = project.stream_redis.client()
    events = payments(project, 1200, seed=2, first_id=2_000_000_000, spread=timedelta(days=20))
    shuffled = events.take(pa.array(__import__("numpy").random.default_rng(5).permutation(events.num_rows)))
    produce(client, "payments-faults", shuffled.slice(0, 600))
    bad = [
        {"transaction_id": "2100000001", "user_id": "not-a-number", "merchant_id": "1", "occurred_at": "2026-01-01"},
        {"transaction_id": "2100000002", "user_id": "1", "merchant_id": "1", "amount": "12", "colour": "red",
         "occurred_at": "2026-01-01"},
        {"transaction_id": "2100000003", "merchant_id": "1", "occurred_at": "2026-01-01"},
        {"transaction_id": "2100000004", "user_id": "1", "merchant_id": "1", "occurred_at": "yesterday"},
        {"transaction_id": "2100000005", "user_id": "1", "merchant_id": "1", "is_online": "perhaps",
         "occurred_at": "2026-01-01"},
        {"transaction_id": "2100000006", "user_id": "1", "merchant_id": "1", "occurred_at": "2999-01-01"},
    ]
    for entry in bad:
        client.xadd("payments-faults", entry)
    produce(client, "payments-faults", shuffled.slice(600))
    produce(client, "payments-faults", shuffled.slice(0, 300))  # redelivered by a producer retry
    counters = run_consumer(project)
    assert counters.rejected == len(bad)
    assert counters.duplicates == 300 and counters.new == 1200
    dead = client.xrange("payments-faults:dead-letter")
    reasons = {json.loads(f[b"event"])["transaction_id"]: f[b"reason"].decode() for _, f in dead}
    assert "not an integer" in reasons["2100000001"]
    assert "unknown field(s) colour" in reasons["2100000002"]
    assert "user_id" in reasons["2100000003"] and "missing" in reasons["2100000003"]
    assert "not an ISO 8601 timestamp" in reasons["2100000004"]
    assert "not true or false" in reasons["2100000005"]
    assert "in the future" in reasons["2100000006"]
    landed = pq.read_table(sorted((project.path / "data" / "raw").glob("transactions.stream-*.parquet")))
    ids = landed.column("transaction_id").to_pylist()
    assert len(ids) == len(set(ids)), "an event was landed twice"
    assert not set(ids) & {int(k) for k in reasons}, "a rejected event was landed"
    _assert_batch_state(project, tmp_path)


def test_consumer_killed_mid_batch_resumes_into_the_batch_state(project: StreamProject, tmp_path: Path) -> None:
    project.write_config("payments-kill")
    client = project.stream_redis.client()
    events = payments(project, 2000, seed=3, first_id=3_000_000_000)
    produce(client, "payments-kill", events)
    pending = 0
    for _ in range(3):  # kill -9 while a read is in flight (read, not acknowledged); retried if it just acked
        first = consumer_process(project)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            groups = client.xinfo_groups("payments-kill") if client.exists("payments-kill") else []
            if groups and groups[0]["pending"] > 0:
                break
            time.sleep(0.005)
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        pending = client.xpending("payments-kill", "feature_layer")["pending"]
        if pending:
            break
    assert pending > 0, "the consumer was never killed mid-batch (nothing pending): the test proves nothing"
    second = consumer_process(project, "--until-idle", "1")
    out, _ = second.communicate(timeout=120)
    assert second.returncode == 0, out.decode()
    assert b"claimed" in out, out.decode()
    assert client.xpending("payments-kill", "feature_layer")["pending"] == 0
    _assert_batch_state(project, tmp_path)


def _metrics_text(worker: object) -> str:
    """GET /metrics of ``feature-layer stream --metrics-port`` (the same server, on a free port)."""
    import socket
    import urllib.request

    from feature_layer.cli.stream_cmds import _serve_metrics

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = _serve_metrics(worker, port)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
            return response.read().decode()
    finally:
        server.shutdown()
        server.server_close()


def test_redis_restart_mid_stream_is_survived(project: StreamProject, tmp_path: Path) -> None:
    import threading

    from feature_layer.stream.consumer import open_consumer

    project.write_config("payments-restart")
    events = payments(project, 1000, seed=4, first_id=4_000_000_000)
    produce(project.stream_redis.client(), "payments-restart", events.slice(0, 500))
    with project.store() as store:
        worker = open_consumer(store, list(STREAM_VIEWS), consumer="test", log_seconds=60)
        thread = threading.Thread(target=worker.run, kwargs={"until_idle": 4.0})
        thread.start()
        wait_until(lambda: worker.counters.events >= 500, 30, poll=0.02)
        project.stream_redis.restart()  # no persistence: the stream and its group are gone
        produce(project.stream_redis.client(), "payments-restart", events.slice(500))
        thread.join(60)
        worker.pipeline.close()
        metrics = _metrics_text(worker)
    assert not thread.is_alive()
    assert worker.counters.events == 1000 and worker.counters.reconnects >= 1
    assert "feature_layer_stream_events_total 1000" in metrics and "feature_layer_stream_reconnects_total" in metrics
    _assert_batch_state(project, tmp_path)


@pytest.mark.parametrize("newest_rows", [True, False], ids=["newest-row pass", "horizon and windows"])
def test_lag_reads_the_row_before_the_lookback_and_equals_dbt_build(project: StreamProject, tmp_path: Path,
                                                                   newest_rows: bool) -> None:
    """New card holders whose previous payments are 60 and 90 days before the new one: the 30-day
    horizon holds only the new payment, so seconds_since_previous_txn must come from the row just
    before the horizon (dbt's uniqueness test on (user_id, occurred_at) rules out ties here). Both
    ways the consumer computes it: the newest-row pass over whole histories (the default), and the
    view's SQL as dbt runs it over the horizon plus the row before it (``streams.newest_rows: false``)."""
    import yaml

    stream = f"payments-preceding-{newest_rows}"
    project.write_config(stream)
    config = project.path / "feature_layer.yml"
    settings = yaml.safe_load(config.read_text())
    settings["streams"]["raw.transactions"]["newest_rows"] = newest_rows
    config.write_text(yaml.safe_dump(settings))
    client = project.stream_redis.client()
    now = project.now.replace(tzinfo=None)
    users = [10_900_001, 10_900_002, 10_900_003] if newest_rows else [10_910_001, 10_910_002, 10_910_003]
    first_id = 7_000_000_000 if newest_rows else 7_200_000_000

    def batch(days: list[float], first_id: int) -> pa.Table:
        rows = [(u, now - timedelta(days=d)) for u in users for d in days]
        return pa.table({
            "transaction_id": pa.array(range(first_id, first_id + len(rows)), pa.int64()),
            "user_id": pa.array([u for u, _ in rows], pa.int64()),
            "merchant_id": pa.array([1] * len(rows), pa.int64()),
            "amount": pa.array([10.0 + i for i in range(len(rows))]),
            "currency": pa.array(["EUR"] * len(rows)),
            "is_online": pa.array([i % 2 == 0 for i in range(len(rows))]),
            "occurred_at": pa.array([t for _, t in rows], pa.timestamp("us")),
            "created_at": pa.array([t for _, t in rows], pa.timestamp("us")),
        })

    produce(client, stream, batch([90, 60], first_id))
    run_consumer(project)
    produce(client, stream, batch([1 / 24], first_id + 100_000_000))
    try:
        counters = run_consumer(project)
    finally:
        project.write_config("payments")
    assert counters.new == len(users)
    with project.store() as store:
        got = store.get_online_features(["user_transaction_features.seconds_since_previous_txn",
                                         "user_transaction_features.txn_count_7d"],
                                        [{"user_id": u} for u in users]).to_arrow().to_pylist()
    expected = (timedelta(days=60) - timedelta(hours=1)).total_seconds()
    assert [r["seconds_since_previous_txn"] for r in got] == [pytest.approx(expected)] * len(users)
    assert [r["txn_count_7d"] for r in got] == [1] * len(users)
    _assert_batch_state(project, tmp_path)


def test_a_lag_behind_a_where_needs_the_whole_history(project: StreamProject) -> None:
    """A filter on the path (here a WHERE in the staging model) makes "the row before" a filtered row:
    the plan reads whole histories again; without the filter, the 30-day lookback and one row."""
    from dataclasses import replace

    from feature_layer.stream.plan import plan_stream

    with project.store() as store:
        registry = store.registry
        view = registry.view("user_transaction_features")
        plan, _ = plan_stream(registry, view, registry.dialect)
        assert plan is not None and plan.lookback == timedelta(days=30) and plan.preceding_rows == 1
        staging = next(n for n in registry.nodes.values() if n.name == "stg_transactions")
        filtered = replace(staging, compiled_sql=staging.compiled_sql + " where amount > 0")
        registry.nodes[staging.unique_id] = filtered
        try:
            plan, issues = plan_stream(registry, view, registry.dialect)
        finally:
            registry.nodes[staging.unique_id] = staging
    assert plan is not None and not issues
    assert plan.lookback is None and plan.preceding_rows == 0


def test_a_range_window_behind_a_where_needs_the_whole_history(project: StreamProject) -> None:
    """Without lag(), the view needs its 30-day windows only — until a filter on the path may leave an
    entity's latest output row older than the horizon: then whole histories again."""
    from dataclasses import replace

    from feature_layer.stream.plan import plan_stream

    with project.store() as store:
        registry = store.registry
        view = registry.view("user_transaction_features")
        node = registry.nodes[view.unique_id]
        lag = "lag(occurred_at) over (partition by user_id order by occurred_at)"
        assert lag in node.compiled_sql
        staging = next(n for n in registry.nodes.values() if n.name == "stg_transactions")
        registry.nodes[view.unique_id] = replace(node, compiled_sql=node.compiled_sql.replace(lag, "occurred_at"))
        try:
            plain, _ = plan_stream(registry, view, registry.dialect)
            registry.nodes[staging.unique_id] = replace(staging, compiled_sql=staging.compiled_sql + " where amount > 0")
            filtered, issues = plan_stream(registry, view, registry.dialect)
        finally:
            registry.nodes[view.unique_id] = node
            registry.nodes[staging.unique_id] = staging
    assert plain is not None and plain.lookback == timedelta(days=30) and plain.preceding_rows == 0
    assert filtered is not None and not issues and filtered.lookback is None


def _private_landing(project: StreamProject, tmp_path: Path) -> Path:
    """A copy of the source's files: a test driving a pipeline by hand (one view, a changed plan, a
    failing landing) lands there, never where the shared project's dbt build reads."""
    import shutil

    raw = tmp_path / "raw"
    raw.mkdir()
    for file in (project.path / "data" / "raw").glob("transactions*.parquet"):
        shutil.copy(file, raw / file.name)
    return raw


def _private_store(project: StreamProject, tmp_path: Path) -> object:
    """The project with its own online store (SQLite in ``tmp_path``), for the same tests."""
    return project.store(online_store={"type": "sqlite", "path": str(tmp_path / "private-online.sqlite")})


def test_events_older_than_the_lookback_are_landed_for_batch_not_streamed(project: StreamProject,
                                                                           tmp_path: Path) -> None:
    from dataclasses import replace

    from feature_layer.stream.landing import FileEventLog
    from feature_layer.stream.pipeline import StreamPipeline
    from feature_layer.stream.plan import plan_stream

    raw = _private_landing(project, tmp_path)
    with _private_store(project, tmp_path) as store:
        registry = store.registry
        plan, issues = plan_stream(registry, registry.view("user_transaction_features"), registry.dialect)
        assert plan is not None, issues
        bounded = replace(plan, lookback=timedelta(hours=1), preceding_rows=0)  # as if it needed one hour, no lag
        pipeline = StreamPipeline([bounded], FileEventLog(raw / "transactions*.parquet"), store.online_store())
        try:
            events = payments(project, 40, seed=6, first_id=6_000_000_000, spread=timedelta(minutes=10))
            pipeline.process(events.cast(pipeline.schema), [f"{i}-0" for i in range(40)])
            old = payments(project, 5, seed=7, first_id=6_100_000_000, spread=timedelta(minutes=1))
            old = old.set_column(6, "occurred_at", pa.compute.subtract(old.column("occurred_at"),
                                                                       pa.scalar(timedelta(days=2))))
            outcome = pipeline.process(old.cast(pipeline.schema), [f"{i}-1" for i in range(5)])
        finally:
            pipeline.close()
    assert outcome.late == 5 and outcome.written == 0
    assert outcome.new == 5 and outcome.landed is not None  # the next dbt build includes them


def test_a_view_that_is_not_per_entity_is_refused_naming_the_construct(project: StreamProject) -> None:
    from dataclasses import replace

    from feature_layer.stream.declaration import StreamSpec
    from feature_layer.stream.plan import plan_stream

    with project.store() as store:
        registry = store.registry
        plans = {name: plan_stream(registry, registry.view(name), registry.dialect) for name in STREAM_VIEWS}
        assert all(plan is not None and not issues for plan, issues in plans.values())
        transactions = plans["user_transaction_features"][0]
        assert transactions.lookback == timedelta(days=30) and transactions.preceding_rows == 1  # 30d windows + lag()
        assert transactions.describe_lookback() == "30 days, 0:00:00 + 1 preceding row"
        merchants = plans["user_merchant_features"][0]
        assert merchants.lookback is None and merchants.preceding_rows == 0  # window=none: the whole history
        assert registry.view("merchant_risk_features").stream is None
        risky = replace(registry.view("merchant_risk_features"),
                        stream=StreamSpec("raw.transactions", "transaction_id"))
        plan, issues = plan_stream(registry, risky, registry.dialect)
    assert plan is None
    text = "\n".join(i.render() for i in issues)
    assert "MAX(DATE_TRUNC('DAY', occurred_at))" in text and "without GROUP BY merchant_id" in text
    assert "CTE `bounds`" in text and "CTE `days`" in text  # the day spine, named
    assert all(i.unique_id == "model.feature_layer.merchant_risk_features" for i in issues)


def test_stream_command_refuses_a_view_that_cannot_stream(project: StreamProject) -> None:
    done = subprocess.run(project.stream_command("--select", "user_profile_features", "--until-idle", "0.2"),
                          env=project.env(), capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "declares no stream" in done.stderr and "Traceback" not in done.stderr


# --- push: values computed elsewhere (into user_profile_features, which no stream test compares) ----------


def _profile(user_id: int, signup: str, country: str = "FR", **extra: object) -> dict[str, object]:
    row: dict[str, object] = {"user_id": user_id, "signup_at": signup, "signed_up_at": signup, "country": country,
                              "is_verified": True, "birth_year": 1990, "age_at_signup": 35}
    row.update(extra)
    return row


def test_push_writes_online_never_older_and_to_the_offline_log(project: StreamProject) -> None:
    import pyarrow.parquet as pq

    features = ["user_profile_features.country", "user_profile_features.birth_year"]
    with project.store() as store:
        first = store.push("user_profile_features", [_profile(77_000_001, "2025-12-18T10:00:00Z", "DE"),
                                                     _profile(77_000_002, "2025-12-18T11:00:00+01:00", "IT")])
        assert (first.rows, first.written, first.kept_newer) == (2, 2, 0)
        older = store.push("user_profile_features", [_profile(77_000_001, "2025-12-01T00:00:00Z", "ES")])
        assert (older.written, older.kept_newer) == (0, 1)
        got = store.get_online_features(features, [{"user_id": 77_000_001}, {"user_id": 77_000_002}]).to_dict()
    assert got["country"] == ["DE", "IT"] and got["birth_year"] == [1990, 1990]
    assert first.offline_log is not None and older.offline_log is not None
    logged = pq.read_table(first.offline_log)
    assert logged.column("user_id").to_pylist() == [77_000_001, 77_000_002]
    assert logged.column("signup_at").to_pylist()[1].hour == 10  # +01:00 stored as UTC


@pytest.mark.parametrize(("rows", "message"), [
    ([], "non-empty list"),
    ([_profile(1, "2025-12-18T10:00:00Z", colour="red")], "unknown column(s) colour"),
    ([{"user_id": 1, "signup_at": "2025-12-18T10:00:00Z"}], "lacks signed_up_at"),
    ([_profile(1, "2025-12-18T10:00:00Z", birth_year="1990")], "rows[0].birth_year is '1990'"),
    ([_profile(1, "2025-12-18T10:00:00Z"), _profile(2, "last tuesday")], "rows[1].signup_at is 'last tuesday'"),
    ([_profile(None, "2025-12-18T10:00:00Z")], "rows[0].user_id is None"),  # type: ignore[arg-type]
    ([_profile(1, "2025-12-18T10:00:00Z", is_verified=1)], "but the feature is bool"),
])
def test_push_refuses_rows_that_do_not_fit_the_view(project: StreamProject, rows: list, message: str) -> None:
    from feature_layer.stream.push import PushError

    with project.store() as store, pytest.raises(PushError) as caught:
        store.push("user_profile_features", rows)
    assert message in str(caught.value) and caught.value.fix


def test_http_push_is_disabled_unless_the_server_accepts_writes(
    project: StreamProject, monkeypatch: pytest.MonkeyPatch
) -> None:
    from starlette.testclient import TestClient

    from feature_layer.server.app import create_app

    body = {"view": "user_profile_features", "rows": [_profile(77_000_010, "2025-12-18T12:00:00Z", "NL")]}
    monkeypatch.delenv("FEATURE_LAYER_ACCEPT_WRITES", raising=False)
    with project.store() as store, TestClient(create_app(store, reload_interval=None)) as client:
        refused = client.post("/v1/push", json=body)
    assert refused.status_code == 403 and "accept_writes" in refused.json()["error"]["fix"]
    monkeypatch.setenv("FEATURE_LAYER_ACCEPT_WRITES", "1")
    with project.store() as store, TestClient(create_app(store, reload_interval=None)) as client:
        done = client.post("/v1/push", json=body)
        unknown = client.post("/v1/push", json={"view": "user_profile_featurez", "rows": body["rows"]})
        extra = client.post("/v1/push", json={**body, "mode": "fast"})
        typed = client.post("/v1/push", json={"view": "user_profile_features",
                                              "rows": [_profile(77_000_011, "2025-12-18T12:00:00Z", country=5)]})
        not_json = client.post("/v1/push", content=b"{", headers={"content-type": "application/json"})
        got = client.post("/v1/online-features", json={"features": ["user_profile_features.country"],
                                                       "entity_rows": [{"user_id": 77_000_010}]})
    assert done.status_code == 200 and done.json()["written"] == 1
    assert got.json()["country"] == ["NL"]
    assert unknown.status_code == 404 and "Did you mean" in unknown.json()["error"]["message"]
    assert extra.status_code == 422 and extra.json()["error"]["field"] == "mode"
    assert typed.status_code == 422 and "rows[0].country" in typed.json()["error"]["message"]
    assert not_json.status_code == 422


def test_validate_names_a_declared_stream_that_cannot_stream(project: StreamProject) -> None:
    from dataclasses import replace

    from feature_layer.dbt.artifacts import load_manifest
    from feature_layer.registry.declarations import build_declarations
    from feature_layer.registry.registry import read_entity_declarations

    manifest = load_manifest(project.path / "target" / "manifest.json")
    uid = "model.feature_layer.merchant_risk_features"
    node = manifest.nodes[uid]
    block = {**node.meta["feature_layer"], "stream": {"source": "raw.transactions", "event_id": "transaction_id"}}
    manifest.nodes[uid] = replace(node, meta={**node.meta, "feature_layer": block})
    entities, source, _ = read_entity_declarations(project.path)
    declared = build_declarations(manifest, entities, source)
    codes = {(i.unique_id, i.code) for i in declared.issues}
    assert (uid, "stream-aggregate") in codes and (uid, "stream-subquery") in codes
    assert all(i.unique_id == uid for i in declared.issues), [i.render() for i in declared.issues]
    bad = {**block, "stream": {"source": "raw.transactions", "event_id": "transaction_id", "lookback": "1h"}}
    manifest.nodes[uid] = replace(node, meta={**node.meta, "feature_layer": {**block, **bad}})
    utf = manifest.nodes["model.feature_layer.user_transaction_features"]
    manifest.nodes[utf.unique_id] = replace(utf, meta={**utf.meta, "feature_layer": {
        **utf.meta["feature_layer"], "stream": {"source": "raw.transactions", "event_id": "transaction_id",
                                                "lookback": "1h"}}})
    declared = build_declarations(manifest, entities, source)
    short = [i for i in declared.issues if i.unique_id == utf.unique_id]
    assert [i.code for i in short] == ["stream-lookback"] and "30 days, 0:00:00 and the 1 row(s) before" in \
        short[0].message


def test_a_failed_landing_acknowledges_nothing_and_the_retry_lands_the_events(project: StreamProject,
                                                                               tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    from feature_layer.errors import StreamError
    from feature_layer.stream.landing import FileEventLog
    from feature_layer.stream.pipeline import StreamPipeline
    from feature_layer.stream.plan import plan_stream

    raw = _private_landing(project, tmp_path)
    with _private_store(project, tmp_path) as store:
        registry = store.registry
        plan, _ = plan_stream(registry, registry.view("user_transaction_features"), registry.dialect)
        assert plan is not None
        pipeline = StreamPipeline([plan], FileEventLog(raw / "transactions*.parquet"), store.online_store())
        try:
            first = payments(project, 30, seed=8, first_id=8_000_000_000, new_users=0)
            pipeline.process(first.cast(pipeline.schema), ["8-0", "8-1"])
            second = first.set_column(0, "transaction_id", pa.array(range(8_100_000_000, 8_100_000_030)))
            moved = raw.with_name("raw-away")
            raw.rename(moved)  # the landing folder disappears (a lost mount): the write fails
            try:
                with pytest.raises(StreamError, match="Could not land 30 events"):
                    pipeline.process(second.cast(pipeline.schema), ["9-0", "9-1"])
            finally:
                moved.rename(raw)
            retried = pipeline.process(second.cast(pipeline.schema), ["9-0", "9-1"])
        finally:
            pipeline.close()
    assert retried.new == 30 and retried.duplicates == 0 and retried.landed is not None
    assert sorted(pq.read_table(retried.landed).column("transaction_id").to_pylist()) == list(
        range(8_100_000_000, 8_100_000_030))


def test_event_log_history_is_every_landed_row_of_the_keys(project: StreamProject) -> None:
    """``FileEventLog.history`` (the pipeline's only way to read history) against a brute-force read of
    every file of the glob with pyarrow."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from feature_layer.stream.landing import FileEventLog
    from feature_layer.stream.plan import plan_stream

    with project.store() as store:
        plan, _ = plan_stream(store.registry, store.registry.view("user_transaction_features"), store.registry.dialect)
        assert plan is not None
        event_log = FileEventLog(plan.source.location, project.path)
    everything = pa.concat_tables([pq.read_table(f).cast(event_log.schema()) for f in event_log.files()])
    users = everything.column("user_id").unique().slice(0, 7)
    keys = pa.table({"user_id": pa.concat_arrays([users, pa.array([-1], users.type)])})  # -1: no history
    want = everything.filter(pc.is_in(everything.column("user_id"), users)).sort_by("transaction_id")
    got = event_log.history(keys).sort_by("transaction_id")
    assert got.num_rows > 7 and got.schema == event_log.schema() and got.equals(want)
    assert event_log.history(None).num_rows == everything.num_rows == event_log.row_count()
    assert event_log.history(keys.slice(0, 0)).num_rows == 0


# --- the consumer's read-ahead (the next read runs in a thread while a batch computes) ----------------


def _group(client: object, stream: str) -> dict[str, int]:
    info = client.xinfo_groups(stream)[0]  # type: ignore[attr-defined]
    return {"read": int(info["entries-read"]), "pending": int(info["pending"])}


def test_read_ahead_entries_are_processed_before_run_returns(project: StreamProject) -> None:
    """stop() while a read-ahead is in flight: run() returns only after processing (and acking) every
    entry delivered to it, so nothing it read stays pending in the group."""
    import threading

    from feature_layer.stream.consumer import open_consumer

    project.write_config("payments-ahead")
    client = project.stream_redis.client()
    produce(client, "payments-ahead", payments(project, 4000, seed=9, first_id=9_000_000_000))
    with project.store() as store:
        worker = open_consumer(store, list(STREAM_VIEWS), consumer="test", log_seconds=60)
        thread = threading.Thread(target=worker.run)
        try:
            thread.start()
            wait_until(lambda: worker.counters.events >= 800, 60)
        finally:
            worker.stop()
            thread.join(60)
            worker.pipeline.close()
    group = _group(client, "payments-ahead")
    assert not thread.is_alive()
    assert 800 <= group["read"] < 4000, "stopped after the stream was drained: the test proves nothing"
    assert group["pending"] == 0, "entries delivered to the consumer (read ahead) were left unprocessed"
    assert worker.counters.events == group["read"] and worker.counters.new == group["read"]


def test_a_lost_connection_drops_the_read_ahead_and_acks_nothing_unwritten(project: StreamProject,
                                                                        tmp_path: Path) -> None:
    """The stream's Redis dies (kill -9, append-only file: the stream survives) while batches compute
    and the next read is in flight: the read-ahead is dropped, its entries are claimed again after
    reconnecting, every event is computed once as new, none is left pending, and the online state is
    the batch state."""
    import threading

    import pyarrow.parquet as pq
    import yaml

    from feature_layer.stream.consumer import open_consumer

    durable = RedisServer(tmp_path / "durable-redis", extra=("--appendonly", "yes", "--appendfsync", "always")).start()
    try:
        (project.path / "feature_layer.yml").write_text(yaml.safe_dump({
            "online_store": {"type": "redis", "url": project.online_redis.url},
            "streams": {"raw.transactions": {"url": durable.url, "stream": "payments-lost", "block_ms": 50,
                                             "batch_size": 200}}}))
        events = payments(project, 2000, seed=10, first_id=9_500_000_000)
        produce(durable.client(), "payments-lost", events.slice(0, 1000))
        with project.store() as store:
            worker = open_consumer(store, list(STREAM_VIEWS), consumer="test", log_seconds=60)
            thread = threading.Thread(target=worker.run, kwargs={"until_idle": 3.0})
            try:
                thread.start()
                wait_until(lambda: worker.counters.events >= 300, 60)
                durable.stop()  # mid-stream: a batch computing, the next read in its thread
                time.sleep(0.5)
                durable.start()
                produce(durable.client(), "payments-lost", events.slice(1000))
                thread.join(120)
            finally:
                worker.stop()
                thread.join(60)
                worker.pipeline.close()
        group = _group(durable.client(), "payments-lost")
    finally:
        durable.stop()
        project.write_config("payments")
    assert not thread.is_alive()
    assert worker.counters.reconnects >= 1, "the connection was never lost: the test proves nothing"
    # an entry processed before its XACK was lost is claimed again and found a duplicate (landed once)
    assert group["pending"] == 0 and worker.counters.new + worker.counters.duplicates == worker.counters.events
    landed = pq.read_table(sorted((project.path / "data" / "raw").glob("transactions.stream-*.parquet")))
    ids = landed.column("transaction_id").to_pylist()
    assert len(ids) == len(set(ids)) and set(range(9_500_000_000, 9_500_002_000)) <= set(ids)
    _assert_batch_state(project, tmp_path)


def test_the_history_buffer_is_a_private_database_file_removed_at_close(project: StreamProject,
                                                                        tmp_path: Path) -> None:
    """The buffer is stored in a DuckDB file of the pipeline's own temporary folder (compressed when
    DuckDB checkpoints, so the consumer holds only its cache), the per-batch tables are TEMP; close
    removes the folder."""
    from feature_layer.stream.landing import FileEventLog
    from feature_layer.stream.pipeline import BUFFER, HISTORY, StreamPipeline
    from feature_layer.stream.plan import plan_stream

    raw = _private_landing(project, tmp_path)
    with _private_store(project, tmp_path) as store:
        registry = store.registry
        plan, issues = plan_stream(registry, registry.view("user_transaction_features"), registry.dialect)
        assert plan is not None, issues
        pipeline = StreamPipeline([plan], FileEventLog(raw / "transactions*.parquet"), store.online_store())
        folder = Path(pipeline._spill.name)
        try:
            events = payments(project, 30, seed=8, first_id=6_200_000_000)
            assert pipeline.process(events.cast(pipeline.schema), [f"{i}-0" for i in range(30)]).new == 30
            tables = dict(pipeline.con.execute(
                "SELECT table_name, temporary FROM duckdb_tables() WHERE table_name LIKE '__fl_%'").fetchall())
            (database,) = pipeline.con.execute("SELECT path FROM duckdb_databases() WHERE database_name = "
                                               "current_database()").fetchall()[0]
            rows = pipeline.con.execute(f"SELECT count(*) FROM {BUFFER}").fetchall()[0][0]
        finally:
            pipeline.close()
    assert Path(database).parent == folder and Path(database).name == "buffer.duckdb"
    assert tables[BUFFER] is False and tables[HISTORY] is True
    assert rows == pipeline.buffered and rows > 30  # the event log's history, plus the new events
    assert not folder.exists()


def test_both_example_views_run_the_newest_row_pass(project: StreamProject, tmp_path: Path) -> None:
    """The consistency tests above prove the pass equal to dbt build only if it runs: both example
    views' windows are computed for each entity's newest rows (``stream.newest``), not every row."""
    from feature_layer.stream.landing import FileEventLog
    from feature_layer.stream.pipeline import StreamPipeline
    from feature_layer.stream.plan import plan_stream

    raw = _private_landing(project, tmp_path)
    with _private_store(project, tmp_path) as store:
        registry = store.registry
        plans = [plan_stream(registry, registry.view(v), registry.dialect)[0] for v in STREAM_VIEWS]
        pipeline = StreamPipeline(plans, FileEventLog(raw / "transactions*.parquet"), store.online_store())
        try:
            assert pipeline.newest_rows == dict.fromkeys(STREAM_VIEWS)
            views = dict(pipeline.con.execute("SELECT view_name, sql FROM duckdb_views() WHERE temporary").fetchall())
        finally:
            pipeline.close()
    last = {v: sql for v, sql in views.items() if v.startswith(("__fl_m_user_transaction_features",
                                                                 "__fl_m_user_merchant_features"))}
    assert len(last) == 2 and all("ARG_MAX_NULL" in sql or "__fl_na" in sql for sql in last.values()), last


def test_a_history_buffer_smaller_than_the_event_log_evicts_and_still_equals_dbt_build(
    project: StreamProject, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """``buffer_rows`` far below the event log: histories are read per entity on first touch, the least
    recently used entities are evicted and read again when they come back — same values as dbt build."""
    import logging

    import yaml

    (project.path / "feature_layer.yml").write_text(yaml.safe_dump({
        "online_store": {"type": "redis", "url": project.online_redis.url},
        "streams": {"raw.transactions": {"url": project.stream_redis.url, "stream": "payments-small-buffer",
                                         "block_ms": 50, "batch_size": 150, "buffer_rows": 400}}}))
    try:
        produce(project.stream_redis.client(), "payments-small-buffer",
                payments(project, 1500, seed=12, first_id=9_800_000_000))
        with caplog.at_level(logging.INFO, logger="feature_layer.stream"):
            counters = run_consumer(project)
    finally:
        project.write_config("payments")
    assert counters.new == 1500
    assert any("evicted" in r.getMessage() for r in caplog.records), "nothing was evicted: the test proves nothing"
    _assert_batch_state(project, tmp_path)


@pytest.mark.parametrize("preceding", [0, 1, 2])
@pytest.mark.parametrize("subset", [False, True])
def test_a_view_input_is_the_horizon_and_the_rows_before_it_by_rank(
    project: StreamProject, preceding: int, subset: bool
) -> None:
    """``horizon_sql`` against a brute-force reference in Python, over random histories with tied and
    missing event times: per entity the rows within the lookback of its newest time, plus the rows
    before that horizon whose rank (ties equal) is at most ``preceding``."""
    from dataclasses import replace
    from datetime import datetime

    import duckdb
    import numpy as np

    from feature_layer.stream.pipeline import HISTORY, horizon_sql
    from feature_layer.stream.plan import plan_stream

    with project.store() as store:
        registry = store.registry
        plan, _ = plan_stream(registry, registry.view("user_transaction_features"), registry.dialect)
    assert plan is not None
    plan = replace(plan, lookback=timedelta(days=3), preceding_rows=preceding)
    rng = np.random.default_rng(preceding * 10 + subset)
    start = datetime(2026, 1, 1)
    rows = []
    for user in range(60):
        times = rng.choice(np.arange(0, 24 * 20, 6), rng.integers(1, 12))  # hours, from a coarse grid: ties
        rows += [(user, None if rng.random() < 0.08 else start + timedelta(hours=int(h))) for h in times]
    rows += [(99, None), (99, None)]  # an entity without any event time
    history = pa.table({"transaction_id": pa.array(range(len(rows)), pa.int64()),
                        "user_id": pa.array([u for u, _ in rows], pa.int64()),
                        "occurred_at": pa.array([t for _, t in rows], pa.timestamp("us"))})
    wanted_users = set(range(0, 60, 3)) | {99} if subset else set(range(60)) | {99}
    con = duckdb.connect()
    con.register("__fl_rows", history)
    con.execute(f"CREATE TABLE {HISTORY} AS SELECT * FROM __fl_rows")
    semi = None
    if subset:
        con.register("__fl_affected", pa.table({"user_id": pa.array(sorted(wanted_users), pa.int64())}))
        semi = f"FROM {HISTORY} AS b SEMI JOIN __fl_affected AS a ON b.user_id = a.user_id"
    got = sorted(r[0] for r in con.execute(f"SELECT transaction_id FROM ({horizon_sql(plan, semi)})").fetchall())

    want = []
    for user in wanted_users:
        mine = [(i, t) for i, (u, t) in enumerate(rows) if u == user]
        known = [t for _, t in mine if t is not None]
        newest = max(known) if known else None
        for i, t in mine:
            if newest is not None and t is not None and t >= newest - plan.lookback:
                want.append(i)
                continue
            if t is None:  # rank 1 among the rows without a horizon verdict (all tied)
                if preceding >= 1:
                    want.append(i)
                continue
            before = [x for _, x in mine if x is not None and x < newest - plan.lookback]
            if 1 + sum(1 for x in before if x > t) <= preceding:
                want.append(i)
    assert got == sorted(want)
    assert any(t is None for _, t in rows) and len(want) < len(rows)
