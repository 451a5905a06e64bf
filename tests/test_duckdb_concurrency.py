"""Several processes on one DuckDB file, as on the default target: reads run side by side.

DuckDB lets many processes read a file but only one hold it for writing. Engines open the
file read-only and take the write lock only for the statement that writes (``to_table``), so
materializations of different views run at once, the same view meets the documented
``MaterializationConflictError`` (the lease), and a real lock conflict names the process
holding the file instead of surfacing DuckDB's raw lock error.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pytest

from feature_layer.client import FeatureStore
from feature_layer.errors import WarehouseError
from feature_layer.offline.engine import DuckDBEngine

END = "2025-12-01T00:00:00+00:00"
"""The built fixture's data ends on 2025-12-01: materialize as of then."""
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def project(built_example_project: Path, tmp_path: Path) -> Path:
    dest = tmp_path / "project"
    shutil.copytree(built_example_project, dest, ignore=shutil.ignore_patterns(".feature_layer"))
    return dest


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("FEATURE_LAYER_ONLINE_STORE", None)
    return env


def _cli(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from feature_layer.cli import main; main()", "--project-dir", str(project), *args],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=300,
        cwd=REPO,
    )


PAUSED_MATERIALIZER = textwrap.dedent(
    """
    import sys, time
    from datetime import datetime
    from pathlib import Path
    from feature_layer.client import FeatureStore
    from feature_layer.online.materialize import materialize_view

    project, view_name, ready, go = sys.argv[1:5]
    store = FeatureStore(project)
    view = store.registry.view(view_name)

    def pause(rows):  # after the first batch: the stream, the file and the lease are held
        if not Path(ready).exists():
            Path(ready).write_text("ready")
            deadline = time.monotonic() + 120
            while not Path(go).exists() and time.monotonic() < deadline:
                time.sleep(0.05)

    result = materialize_view(
        view, engine=store.offline_engine(), online=store.online_store(), state=store.state,
        end=datetime.fromisoformat(sys.argv[5]), on_rows=pause, batch_rows=200, statistics=False,
    )
    print("entities", result.entities)
    store.close()
    """
)


def _wait_for(path: Path, process: subprocess.Popen[str], seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists():
        if process.poll() is not None:
            pytest.fail(f"the paused materializer exited early: {process.communicate()}")
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail("the paused materializer never reached its first batch")
        time.sleep(0.05)


def test_different_views_materialize_at_once_and_the_same_view_gets_the_conflict_error(
    project: Path, tmp_path: Path
) -> None:
    store = FeatureStore(project)
    paused, other = [v.name for v in store.registry.views.values() if v.online][:2]
    store.close()
    ready, go = tmp_path / "ready", tmp_path / "go"
    first = subprocess.Popen(
        [sys.executable, "-c", PAUSED_MATERIALIZER, str(project), paused, str(ready), str(go), END],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
        cwd=REPO,
    )
    try:
        _wait_for(ready, first)
        # A second process, while the first one streams from the file and holds its lease:
        side_by_side = _cli(project, "materialize", "--select", other, "--end", END, "--json")
        assert side_by_side.returncode == 0, side_by_side.stdout + side_by_side.stderr
        written = json.loads(side_by_side.stdout)["views"]
        assert [v["view"] for v in written] == [other] and written[0]["entities"] > 0
        same = _cli(project, "materialize", "--select", paused, "--end", END, "--no-progress")
        assert same.returncode == 1
        output = same.stdout + same.stderr
        assert f"Feature view {paused!r} is already being materialized (by pid {first.pid}" in output
        assert "To fix this, " in output and "Traceback" not in output and "lock on file" not in output
    finally:
        go.write_text("go")
        out, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    assert int(out.split()[-1]) > 0
    status = _cli(project, "online-status", "--json")
    watermarks = {v["view"]: v["watermark"] for v in json.loads(status.stdout)["views"]}
    assert watermarks[paused] and watermarks[other]


HOLD_FILE = textwrap.dedent(
    """
    import sys, time, duckdb
    con = duckdb.connect(sys.argv[1], read_only=sys.argv[2] == "read")
    print("holding", flush=True)
    sys.stdin.readline()
    con.close()
    """
)


def _holder(path: Path, mode: str) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [sys.executable, "-c", HOLD_FILE, str(path), mode], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert process.stdout is not None and process.stdout.readline().strip() == "holding"
    return process


def _release(process: subprocess.Popen[str]) -> None:
    assert process.stdin is not None
    process.stdin.write("\n")
    process.stdin.flush()
    process.wait(timeout=30)


def _database(tmp_path: Path) -> Path:
    path = tmp_path / "warehouse.duckdb"
    with DuckDBEngine(path, read_only=False) as engine:
        engine.execute("CREATE TABLE events AS SELECT range AS user_id, range * 2 AS x FROM range(10)")
    return path


def test_engines_read_a_file_another_process_reads_and_write_only_for_the_statement(tmp_path: Path) -> None:
    path = _database(tmp_path)
    reader = _holder(path, "read")
    try:
        with DuckDBEngine(path, lock_wait=0.3) as engine:  # reading while another process reads
            assert engine.fetch_arrow("SELECT sum(x) AS s FROM events").column("s").to_pylist() == [90]
            engine.register_arrow("wanted", pa.table({"user_id": [3, 4]}))
            with pytest.raises(WarehouseError) as info:  # a write needs the file to itself
                engine.execute("CREATE TABLE picked AS SELECT e.* FROM events e JOIN wanted USING (user_id)")
            message = str(info.value)
            assert f"process {reader.pid}" in message and "To fix this, wait for that process" in message
            _release(reader)
            # The same engine writes now; its registered Arrow table survives the reopen.
            engine.execute("CREATE TABLE picked AS SELECT e.* FROM events e JOIN wanted USING (user_id)")
            assert engine.fetch_arrow("SELECT x FROM picked ORDER BY x").column("x").to_pylist() == [6, 8]
            assert engine.fetch_arrow("SELECT count(*) AS n FROM wanted").column("n").to_pylist() == [2]
        # Between statements the engine holds only a read lock: another process can read.
        with DuckDBEngine(path) as engine:
            engine.fetch_arrow("SELECT 1")
            other = subprocess.run(
                [sys.executable, "-c", f"import duckdb; print(duckdb.connect({str(path)!r}, read_only=True)"
                 ".sql('SELECT count(*) FROM picked').fetchall()[0][0])"],
                capture_output=True, text=True, timeout=60,
            )
            assert other.stdout.strip() == "2", other.stderr
    finally:
        if reader.poll() is None:
            reader.kill()


def test_a_writer_elsewhere_is_named_with_a_fix_not_a_raw_lock_error(tmp_path: Path) -> None:
    path = _database(tmp_path)
    writer = _holder(path, "write")
    try:
        began = time.monotonic()
        with pytest.raises(WarehouseError) as info:
            DuckDBEngine(path, lock_wait=0.5)
        assert time.monotonic() - began >= 0.5  # it waited for the writer before giving up
        message = str(info.value)
        assert f"process {writer.pid}" in message and "for writing" in message
        assert "To fix this, wait for that process to finish" in message
    finally:
        _release(writer)
    with DuckDBEngine(path, lock_wait=0.5) as engine:
        assert engine.fetch_arrow("SELECT count(*) AS n FROM events").column("n").to_pylist() == [10]


def test_a_missing_database_file_is_never_created(tmp_path: Path) -> None:
    path = tmp_path / "nothing.duckdb"
    with pytest.raises(WarehouseError) as info:
        DuckDBEngine(path, target="dev")
    assert "does not exist" in str(info.value) and "`dbt build --target dev`" in str(info.value)
    assert not path.exists()


def test_materialize_end_is_the_fixture_end() -> None:
    assert datetime.fromisoformat(END) == datetime(2025, 12, 1, tzinfo=UTC)
