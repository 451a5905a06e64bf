# ruff: noqa: F811  (pytest fixtures imported from tests.redis_helpers are used as arguments)
"""Late data whose created-at is not monotonic, backfills with --start, and data freshness."""

from __future__ import annotations

import sqlite3
from datetime import timedelta
from pathlib import Path

from feature_layer.online.materialize import materialize
from feature_layer.state import StateStore
from tests.redis_helpers import RedisServer, make_parts, redis_server  # noqa: F401
from tests.test_materialize import BASE, END, engine, load_events, lookup, make_view, redis_store, state  # noqa: F401


def test_a_late_row_created_before_the_watermark_is_still_read(redis_server: RedisServer, engine, state) -> None:  # noqa: ANN001
    load_events(engine, users=3)  # latest per user: day 2, created 30 s after the event
    store = make_parts(engine, redis_store(redis_server), state, [make_view()])
    materialize(store, end=END)
    watermark = state.watermark("user_stats")
    # User 0's newest event, created 12 s *before* the created-at watermark (by the source's
    # clock) but loaded into the warehouse only now.
    engine.execute(
        "INSERT INTO main.events VALUES (0, TIMESTAMP '2025-01-03 00:00:05', TIMESTAMP '2025-01-03 00:00:20', -1, 'late', 0)"
    )
    assert watermark.created_at.replace(tzinfo=None) > BASE.replace(tzinfo=None) + timedelta(days=2, seconds=20)
    materialize(store, end=END)
    assert lookup(store, [0, 1, 2])["label"] == ["late", "u1-2", "u2-2"]  # what a training set says now


def test_a_backfill_with_start_does_not_move_the_created_at_watermark_past_unread_rows(
    redis_server: RedisServer,
    engine,
    state,  # noqa: ANN001
) -> None:
    load_events(engine, users=3)
    store = make_parts(engine, redis_store(redis_server), state, [make_view()])
    materialize(store, end=BASE + timedelta(days=10))
    before = state.watermark("user_stats")
    assert before is not None and before.created_at is not None
    # A late row for day 0 (before the backfill window), created far after the watermark.
    engine.execute(
        "INSERT INTO main.events VALUES (1, TIMESTAMP '2025-01-05', TIMESTAMP '2025-01-20', -2, 'late-day4', 1)"
    )
    materialize(store, start=BASE + timedelta(days=6), end=END)  # the window [day 6, END] misses it
    after = state.watermark("user_stats")
    assert after.event_time == END and after.created_at == before.created_at
    materialize(store, end=END)  # the next incremental run still reads the late row
    assert lookup(store, [1])["label"] == ["late-day4"]


def test_the_newest_event_time_materialized_is_recorded(redis_server: RedisServer, engine, state) -> None:  # noqa: ANN001
    load_events(engine, users=5)  # newest event: day 2 + 4 s
    store = make_parts(engine, redis_store(redis_server), state, [make_view()])
    newest = BASE + timedelta(days=2, seconds=4)
    result = materialize(store, end=END)
    assert result["user_stats"].newest_event_time == newest
    assert state.newest_event_time("user_stats") == newest
    assert state.last_materialized("user_stats")[0] == END  # the watermark is the run's end
    materialize(store, end=END + timedelta(days=1), late_lookback=timedelta(0))  # no new rows
    assert state.last_materialized("user_stats")[0] == END + timedelta(days=1)
    assert state.newest_event_time("user_stats") == newest  # the data did not get fresher
    engine.execute("INSERT INTO main.events VALUES (9, TIMESTAMP '2025-01-20', TIMESTAMP '2025-01-20', 1, 'n', 9)")
    materialize(store, end=END + timedelta(days=1))
    assert state.newest_event_time("user_stats") == BASE + timedelta(days=19)
    assert state.newest_event_time("never_materialized") is None


def test_a_state_file_from_before_newest_event_time_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    db = sqlite3.connect(path)
    db.execute(
        "CREATE TABLE watermarks (view TEXT PRIMARY KEY, layout TEXT NOT NULL, event_time_us INTEGER NOT NULL,"
        " created_us INTEGER, wall_time_us INTEGER NOT NULL, rows_written INTEGER NOT NULL DEFAULT 0,"
        " entities INTEGER NOT NULL DEFAULT 0)"
    )
    db.execute("INSERT INTO watermarks VALUES ('v', 'abcd', 1000000, NULL, 2000000, 3, 4)")
    db.commit()
    db.close()
    with StateStore(path) as migrated:
        assert migrated.newest_event_time("v") is None and migrated.view_state("v").entities == 4
        from feature_layer.sql.latest import Watermark

        migrated.set_watermark("v", Watermark(END), layout="abcd", newest_event_time=BASE)
        assert migrated.newest_event_time("v") == BASE
    StateStore(path).close()  # reopening an already migrated file
