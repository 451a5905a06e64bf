"""docs/redis_acl.md, run as written against a real redis-server with ACL users: the materializer
user materializes the example project, the server user serves every value it wrote and can
neither write a key nor run the write script."""

from __future__ import annotations

import re
from pathlib import Path

import orjson
import pytest
import redis
from server_helpers import open_store
from starlette.testclient import TestClient

from feature_layer.errors import FeatureLayerError
from feature_layer.server.app import create_app
from feature_layer.server.responses import json_default
from tests.redis_helpers import RedisServer, private_redis  # noqa: F401

DOC = Path(__file__).resolve().parents[1] / "docs" / "redis_acl.md"
NAMESPACE = "feature_layer"  # the example project's name
PASSWORDS = {"<materializer-password>": "mat-secret-0123", "<server-password>": "srv-secret-0123"}
ENTITIES = [{"user_id": u, "merchant_id": m} for u, m in ((1, 1), (2, 3), (7, 5), (40, 2))]


def acl_commands() -> list[list[str]]:
    text = DOC.read_text()
    lines = re.findall(r"^ACL SETUSER .+$", text, flags=re.MULTILINE)
    assert len(lines) == 3, lines
    out = []
    for line in lines:
        line = line.replace("<namespace>", NAMESPACE)
        for placeholder, value in PASSWORDS.items():
            line = line.replace(placeholder, value)
        out.append(line.split())
    return out


def store_as(project: Path, server: RedisServer, user: str, password: str):
    return open_store(project, online_store={"url": server.url, "username": user, "password": password})


def test_each_role_can_do_its_job_and_nothing_more(built_example_project: Path, tmp_path: Path,
                                                   private_redis: RedisServer) -> None:  # noqa: F811
    import shutil

    admin = private_redis.client()
    for command in acl_commands()[:2]:  # the default user stays on until the test is done with it
        admin.execute_command(*command)
    project = tmp_path / "project"
    shutil.copytree(built_example_project, project, ignore=shutil.ignore_patterns(".feature_layer", "logs"))

    materializer = store_as(project, private_redis, "fl_materializer", PASSWORDS["<materializer-password>"])
    try:
        materializer.materialize()
        features = list(materializer.registry.services["fraud_model_v1"].features)
        written = materializer.get_online_features(features=features, entity_rows=ENTITIES).to_dict()
    finally:
        materializer.close()
    assert sum(v is not None for k, col in written.items() if k not in ("user_id", "merchant_id") for v in col) > 20

    admin.execute_command(*acl_commands()[2])  # default off: only the two users remain
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(host="127.0.0.1", port=private_redis.port).ping()

    server = store_as(project, private_redis, "fl_server", PASSWORDS["<server-password>"])
    try:
        with TestClient(create_app(server, reload_interval=None)) as client:
            served = client.post("/v1/online-features", json={"features": features, "entity_rows": ENTITIES})
            assert served.status_code == 200, served.text
            assert served.json() == orjson.loads(orjson.dumps(written, default=json_default))
            health = client.get("/healthz")
            assert health.status_code == 200 and health.json()["online_store"]["status"] == "ok", health.json()
        with pytest.raises(FeatureLayerError) as refused:
            server.materialize(["user_profile_features"])
        assert "NOPERM" in str(refused.value) or "permission" in str(refused.value).lower()
    finally:
        server.close()

    reader = redis.Redis(host="127.0.0.1", port=private_redis.port, username="fl_server",
                         password=PASSWORDS["<server-password>"])
    with pytest.raises(redis.exceptions.NoPermissionError):
        reader.scan(0)  # the reader never lists keys
    with pytest.raises(redis.exceptions.NoPermissionError):
        reader.set(f"fl1:{NAMESPACE}:x", b"1")
    with pytest.raises(redis.exceptions.NoPermissionError):
        reader.unlink(f"fl1:{NAMESPACE}:__markers__:user_profile_features")
    with pytest.raises(redis.exceptions.NoPermissionError):
        reader.script_load("return 1")
    with pytest.raises(redis.exceptions.NoPermissionError):
        reader.get("fl1:another_project:x")  # another namespace is invisible
    writer = redis.Redis(host="127.0.0.1", port=private_redis.port, username="fl_materializer",
                         password=PASSWORDS["<materializer-password>"])
    with pytest.raises(redis.exceptions.NoPermissionError):
        writer.set("fl1:another_project:x", b"1")
    with pytest.raises(redis.exceptions.NoPermissionError):
        writer.flushall()
