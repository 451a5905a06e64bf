"""StateStore: durable watermarks, leases that exclude a second run, statistics."""

from __future__ import annotations

import multiprocessing
import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from feature_layer.errors import MaterializationConflictError
from feature_layer.sql.latest import Watermark
from feature_layer.state import StateStore

T = datetime(2025, 3, 1, 12, 30, tzinfo=UTC)


def test_watermark_survives_reopening_and_is_scoped_to_the_layout(tmp_path: Path) -> None:
    with StateStore(tmp_path / "s.sqlite") as state:
        assert state.watermark("v") is None and state.last_materialized("v") is None
        state.set_watermark("v", Watermark(T, T.replace(hour=13)), layout="abcd", rows_written=5, entities=7)
    with StateStore(tmp_path / "s.sqlite") as state:
        assert state.watermark("v") == Watermark(T, T.replace(hour=13))
        assert state.watermark("v", layout="other") is None
        event_time, wall = state.last_materialized("v")
        assert event_time == T and (datetime.now(UTC) - wall).total_seconds() < 60
        assert state.view_state("v").rows_written == 5


def test_second_lease_on_a_view_is_refused_with_a_clear_message(tmp_path: Path) -> None:
    a, b = StateStore(tmp_path / "s.sqlite"), StateStore(tmp_path / "s.sqlite")
    lease = a.acquire_lease("v")
    with pytest.raises(MaterializationConflictError, match="already being materialized") as info:
        b.acquire_lease("v")
    assert "To fix this, wait" in str(info.value)
    b.acquire_lease("other_view")  # other views are independent
    a.release_lease(lease)
    b.release_lease(b.acquire_lease("v"))


def test_expired_lease_can_be_taken_over(tmp_path: Path) -> None:
    state = StateStore(tmp_path / "s.sqlite")
    state.acquire_lease("v", seconds=-1)
    state.acquire_lease("v")


def _hold_lease(path: str) -> None:
    StateStore(path).acquire_lease("v", seconds=3600)
    os._exit(0)  # die holding it, like a crashed run


def test_lease_of_a_dead_process_on_this_host_is_reclaimed(tmp_path: Path) -> None:
    proc = multiprocessing.get_context("fork").Process(target=_hold_lease, args=(str(tmp_path / "s.sqlite"),))
    proc.start()
    proc.join(10)
    StateStore(tmp_path / "s.sqlite").acquire_lease("v")


def test_statistics_round_trip(tmp_path: Path) -> None:
    state = StateStore(tmp_path / "s.sqlite")
    assert state.get_statistics("v.a") is None
    state.save_statistics("v.a", {"null_pct": 1.5, "histogram": {"counts": [1, 2]}})
    state.save_many_statistics({"v.b": {"distinct": 3}, "v.a": {"null_pct": 0.0}})
    assert state.get_statistics("v.a") == {"null_pct": 0.0}
    assert state.get_statistics("v.b") == {"distinct": 3}


def test_a_lease_taken_over_after_it_expired_cannot_be_renewed_nor_record_a_watermark(tmp_path: Path) -> None:
    import time

    state = StateStore(tmp_path / "s.sqlite")
    first = state.acquire_lease("v", seconds=0.05)
    time.sleep(0.1)
    second = state.acquire_lease("v", seconds=60)  # the first run's lease expired: taken over
    with pytest.raises(MaterializationConflictError, match="lost the materialization lease"):
        state.renew_lease(first)
    with pytest.raises(MaterializationConflictError):
        state.check_lease(first)
    with pytest.raises(MaterializationConflictError):
        state.set_watermark("v", Watermark(T), layout="abcd", lease=first)
    assert state.watermark("v") is None
    state.renew_lease(second)  # the owner renews
    state.set_watermark("v", Watermark(T), layout="abcd", lease=second)
    assert state.watermark("v") == Watermark(T)


def test_fencing_tokens_only_grow_per_view_and_are_scoped_by_the_state_file(tmp_path: Path) -> None:
    state = StateStore(tmp_path / "s.sqlite")
    tokens = []
    for _ in range(3):
        lease = state.acquire_lease("v")
        tokens.append(lease.token)
        state.release_lease(lease)
    assert tokens == [1, 2, 3]  # released leases never hand out a token again
    assert state.acquire_lease("other").token == 1  # per view
    again = StateStore(tmp_path / "s.sqlite")
    assert again.id == state.id and again.acquire_lease("v", owner="x").token == 4  # durable
    assert StateStore(tmp_path / "other.sqlite").id != state.id  # another state file, another scope
    renewed = again.renew_lease(again.acquire_lease("w"))
    assert renewed.token == 1  # renewal keeps the token


def test_sqlite_errors_name_the_file_and_the_fix_and_leave_no_transaction_open(tmp_path: Path) -> None:
    from feature_layer.errors import StateStoreError

    state = StateStore(tmp_path / "s.sqlite")
    state._db.execute("PRAGMA max_page_count = 1")  # the file may not grow: SQLITE_FULL on the next page
    with pytest.raises(StateStoreError, match="disk is full") as info:
        state.save_many_statistics({f"v.f{i}": {"histogram": list(range(500))} for i in range(50)})
    assert str(state.path) in str(info.value) and "To fix this" in str(info.value)
    assert "no transaction is active" not in str(info.value) and not state._db.in_transaction
