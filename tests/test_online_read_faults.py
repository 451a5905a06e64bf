# ruff: noqa: F811  (pytest fixtures imported from tests.redis_helpers are used as arguments)
"""RedisOnlineStore.read gives its pooled connection back whatever goes wrong."""

from __future__ import annotations

import pytest

from feature_layer.online.redis_store import RedisOnlineStore
from tests.redis_helpers import RedisServer, redis_server  # noqa: F401


def _broken(*args: object, **kwargs: object) -> None:
    raise ValueError("malformed reply")


@pytest.mark.parametrize(
    ("where", "keys"),
    [("parse", [b"a", b"b"]), ("send", [b"a", b"b"]), ("send", [b"a"])],
    ids=["mget-parse", "mget-send", "get-send"],
)
def test_a_non_redis_error_during_a_read_does_not_leak_the_connection(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch, where: str, keys: list[bytes]
) -> None:
    client = redis_server.client()
    pool = client.connection_pool
    pool.max_connections = 1  # a leaked connection would make the next read fail "Too many connections"
    store = RedisOnlineStore(client, "leak")
    assert store.read(keys) == [None] * len(keys)
    conn = pool.get_connection()
    pool.release(conn)
    if where == "parse":  # the reply parser (hiredis, through redis-py's public read_response) fails
        monkeypatch.setattr(conn, "read_response", _broken)
    else:
        monkeypatch.setattr(conn, "send_packed_command", _broken)
    for _ in range(3):
        with pytest.raises(ValueError, match="malformed"):
            store.read(keys)
    assert not pool._in_use_connections
    monkeypatch.undo()
    assert store.read([b"a", b"b"]) == [None, None]
    assert store.read([b"a"]) == [None]
    assert not pool._in_use_connections
