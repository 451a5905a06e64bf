"""Access control: tokens in feature_layer.yml (SHA-256 only), scopes checked on every route of the
real server over the materialized example project (real lookup, embedded SQLite store)."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from server_helpers import materialized_copy, open_store
from starlette.routing import Mount, Route
from starlette.testclient import TestClient

from feature_layer.access import auth_settings_from, token_hash
from feature_layer.errors import ConfigError
from feature_layer.server.app import create_app
from feature_layer.server.auth import required_scope

CLI = str(Path(sys.executable).parent / "feature-layer")
AMOUNT = "user_transaction_features.amount"
RATE = "merchant_risk_features.chargeback_rate_30d"
SERVICE = "fraud_model_v1"
ALL_FIXED = ["registry:read", "metrics:read", "push"]
TOKENS = {  # name -> (token, scopes)
    "everything": ("tok-everything-0123456789", ["online:*", *ALL_FIXED]),
    "registry": ("tok-registry-0123456789", ["registry:read"]),
    "metrics": ("tok-metrics-0123456789", ["metrics:read"]),
    "push": ("tok-push-0123456789", ["push"]),
    "online": ("tok-online-0123456789", ["online:*"]),
    "view": ("tok-view-0123456789", ["online:views/user_transaction_features"]),
    "service": ("tok-service-0123456789", [f"online:services/{SERVICE}"]),
    "nothing-online": ("tok-no-online-0123456789", ALL_FIXED),
}


def auth_block() -> dict:
    return {"tokens": [{"name": n, "sha256": token_hash(t), "scopes": s} for n, (t, s) in TOKENS.items()]}


@pytest.fixture(scope="module")
def project(built_example_project: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = materialized_copy(built_example_project, tmp_path_factory.mktemp("auth") / "project")
    # writes on, so POST /v1/push answers past the access check (422 for an empty body) with the push scope
    (root / "feature_layer.yml").write_text(yaml.safe_dump({"auth": auth_block(), "server": {"accept_writes": True}}))
    return root


@pytest.fixture(scope="module")
def client(project: Path):
    store = open_store(project)
    with TestClient(create_app(store, reload_interval=None)) as c:
        yield c
    store.close()


def bearer(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[name][0]}"}


PARAMS = {"name": AMOUNT}
ENTITY_PARAMS = {"/v1/entities/{name}": "user", "/v1/views/{name}": "user_transaction_features"}
ONLINE_BODY = {"features": [AMOUNT], "entity_rows": [{"user_id": 1}]}


def concrete(path: str) -> str:
    if path in ENTITY_PARAMS:
        return path.replace("{name}", ENTITY_PARAMS[path])
    out = path
    while "{" in out:
        start, end = out.index("{"), out.index("}")
        out = out[:start] + PARAMS.get(out[start + 1:end], "x") + out[end + 1:]
    return out


def every_route(app) -> list[tuple[str, str]]:
    """(method, concrete path) of every route of the app, the static mount included."""
    out = []
    for route in app.routes:
        if isinstance(route, Mount):
            out.append(("GET", route.path + "/app.js"))
            continue
        assert isinstance(route, Route)
        for method in sorted(route.methods - {"HEAD"}):
            out.append((method, concrete(route.path)))
    return out


def call(client: TestClient, method: str, path: str, headers: dict[str, str] | None = None):
    if method == "POST":
        body = ONLINE_BODY if path == "/v1/online-features" else {}
        return client.request(method, path, json=body, headers=headers or {})
    return client.request(method, path, headers=headers or {})


def token_for(scope: str) -> str:
    return {"online": "online", "registry:read": "registry", "metrics:read": "metrics", "push": "push"}[scope]


def test_every_route_is_refused_without_its_scope_and_served_with_it(client, caplog):
    routes = every_route(client.app)
    assert len(routes) >= 12  # every route of server/app.py, whoever adds more
    checked = 0
    for method, path in routes:
        needed = required_scope(method, path)
        if needed is None:
            assert path in ("/", "/healthz") or path.startswith("/static/")
            assert call(client, method, path).status_code == 200, path
            continue
        checked += 1
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="feature_layer.audit"):
            missing = call(client, method, path)
            assert missing.status_code == 401, (method, path)
            assert missing.headers["www-authenticate"].startswith("Bearer")
            error = missing.json()["error"]
            assert error["type"] == "UnauthorizedError" and "Authorization: Bearer" in error["fix"]
            assert call(client, method, path, {"Authorization": "Bearer not-a-token-at-all"}).status_code == 401
            assert call(client, method, path, {"Authorization": "Basic dXNlcjpwYXNz"}).status_code == 401
            others = [n for n, (_, scopes) in TOKENS.items()
                      if not any(s == needed or s.startswith(needed + ":") for s in scopes)]
            assert len(others) >= 4
            for other in others:
                refused = call(client, method, path, bearer(other))
                assert refused.status_code == 403, (method, path, other)
                assert needed.split(":")[0] in refused.json()["error"]["message"], refused.json()
        audit = [r.getMessage() for r in caplog.records if r.name == "feature_layer.audit"]
        assert len(audit) == 3 + len(others), audit  # one line per denied request
        assert all(f"path={path}" in line for line in audit)
        assert not any(t in line for line in audit for t, _ in TOKENS.values())  # never the token itself
        for allowed in (token_for(needed), "everything"):
            served = call(client, method, path, bearer(allowed))
            assert served.status_code not in (401, 403), (method, path, allowed, served.text)
    assert checked >= 9


def test_online_scopes_are_checked_per_view_and_service_on_the_fast_path(client, caplog):
    def lookup(token: str, **body):
        return client.post("/v1/online-features", json={"entity_rows": [{"user_id": 1, "merchant_id": 1}], **body},
                           headers=bearer(token))

    ok = lookup("view", features=[AMOUNT, "user_transaction_features.is_online"])
    assert ok.status_code == 200 and ok.json()[AMOUNT.split(".")[1]]
    assert lookup("view", features=["user_transaction_features.*"]).status_code == 200
    with caplog.at_level(logging.WARNING, logger="feature_layer.audit"):
        denied = lookup("view", features=[AMOUNT, RATE])
    assert denied.status_code == 403
    error = denied.json()["error"]
    assert error["type"] == "ForbiddenError" and "merchant_risk_features" in error["message"]
    assert "online:views/merchant_risk_features" in error["fix"]
    assert any("token=view" in r.getMessage() and "merchant_risk_features" in r.getMessage() for r in caplog.records)
    # a view token learns nothing about which features exist elsewhere: 403 before 404
    assert lookup("view", features=["no_such_view.x"]).status_code == 403
    assert lookup("view", service=SERVICE).status_code == 403
    # a service token: through the service, or any feature the service lists, nothing else
    assert lookup("service", service=SERVICE).status_code == 200
    assert lookup("service", features=[AMOUNT, RATE]).status_code == 200
    assert lookup("service", features=["user_profile_features.*"]).status_code == 200
    assert lookup("service", features=["user_transaction_features.card_present"]).status_code in (403, 404)
    assert lookup("online", features=[RATE]).status_code == 200
    assert lookup("nothing-online", features=[AMOUNT]).status_code == 403


def test_the_same_values_with_auth_as_without(client, project, built_example_project, tmp_path):
    with_auth = client.post("/v1/online-features", json=ONLINE_BODY, headers=bearer("view")).json()
    plain = materialized_copy(built_example_project, tmp_path / "plain")
    store = open_store(plain)
    try:
        with TestClient(create_app(store, reload_interval=None)) as c:
            without = c.post("/v1/online-features", json=ONLINE_BODY)  # no auth block: served as before
            assert without.status_code == 200
            assert c.get("/metrics").status_code == 200
    finally:
        store.close()
    assert with_auth == without.json()


@pytest.mark.parametrize(("block", "words"), [
    ({"tokens": []}, "non-empty list"),
    ({"tokens": [{"name": "a", "token": "secret", "scopes": ["push"]}]}, "never the token itself"),
    ({"tokens": [{"name": "a", "sha256": "abc", "scopes": ["push"]}]}, "64 hex digits"),
    ({"tokens": [{"name": "a", "sha256": "0" * 64, "scopes": ["online:everything"]}]}, "unknown scope"),
    ({"tokens": [{"name": "a", "sha256": "0" * 64}]}, "no list of scopes"),
    ({"tokens": [{"name": "a", "sha256": "0" * 64, "scopes": ["push"]},
                 {"name": "a", "sha256": "1" * 64, "scopes": ["push"]}]}, "share a name"),
    ({"users": []}, "one key, `tokens`"),
])
def test_bad_auth_blocks_are_refused_with_the_fix(block, words):
    with pytest.raises(ConfigError) as err:
        auth_settings_from(block, Path("feature_layer.yml"))
    assert words in str(err.value) and err.value.fix


def test_authentication_compares_every_digest_in_constant_time():
    settings = auth_settings_from(auth_block(), Path("feature_layer.yml"))
    assert settings is not None
    assert settings.authenticate(TOKENS["push"][0]).name == "push"
    assert settings.authenticate(TOKENS["push"][0] + "x") is None
    assert settings.authenticate("") is None
    source = Path(__file__).resolve().parents[1] / "feature_layer" / "access.py"
    text = source.read_text()
    assert "hmac.compare_digest(digest, grant.digest)" in text and "return grant" not in text


def test_token_hash_command_reads_stdin(tmp_path):
    out = subprocess.run([CLI, "token", "hash"], input=b"  my-long-secret-token\n",
                         capture_output=True, check=True)
    assert out.stdout.decode().strip() == token_hash("my-long-secret-token")
    short = subprocess.run([CLI, "token", "hash"], input=b"abc",
                           capture_output=True)
    assert short.returncode == 1 and b"16" in short.stderr
    new = subprocess.run([CLI, "token", "new", "--name", "svc"],
                         capture_output=True, check=True)
    token = new.stderr.decode().rsplit(" ", 1)[-1].strip()
    entry = yaml.safe_load(new.stdout)[0]
    assert entry["name"] == "svc" and entry["sha256"] == token_hash(token)
    assert auth_settings_from({"tokens": [entry]}, tmp_path).authenticate(token).name == "svc"
