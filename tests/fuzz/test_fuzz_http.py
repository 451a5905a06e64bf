"""Fuzzing the HTTP API in process (starlette's TestClient over httpx): request bodies for
``POST /v1/online-features`` (plausible shapes with hostile leaves, raw bytes, odd JSON) and the
paths and query strings of every GET endpoint.

Oracle: no unhandled exception (the test client re-raises it), no 500, and every answer that
is not a success carries a JSON error with a message.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from conftest import clean_project_env
from hypothesis import given
from hypothesis import strategies as st

from feature_layer.client import FeatureStore
from tests.fuzz.fuzz_harness import Refused, check, examples, fuzz_project
from tests.fuzz.strategies import NASTY_TEXT, NUMBERS, SCALARS, TEXT, json_values, mapping, maybe, mostly

REFS = ["user_profile_features.country", "user_profile_features.*", "merchant_risk_features.category",
        "user_merchant_features.txn_count_30d", "user_transaction_features.amount_sum_24h", "nope.x", "x", ""]
KEY_VALUES = mostly(st.integers(0, 60), st.one_of(SCALARS, st.just(123456789012345678901234567890),
                                                  st.lists(st.integers(), max_size=2), st.just({"a": 1})), 3)
ROW = mapping({"user_id": maybe(KEY_VALUES), "merchant_id": maybe(KEY_VALUES)})
GOOD_REFS = st.lists(st.sampled_from(REFS[:5]), min_size=1, max_size=3)
ROWS = st.lists(st.fixed_dictionaries({"user_id": KEY_VALUES, "merchant_id": KEY_VALUES}), min_size=1, max_size=3)
PLAUSIBLE = st.one_of(
    st.fixed_dictionaries({"features": maybe(GOOD_REFS), "entity_rows": maybe(ROWS)},
                          optional={"include_event_times": maybe(st.booleans())}),
    st.fixed_dictionaries({"features": maybe(GOOD_REFS), "entities": maybe(st.fixed_dictionaries({
        "user_id": st.lists(KEY_VALUES, min_size=2, max_size=2), "merchant_id": st.lists(KEY_VALUES, min_size=2,
                                                                                         max_size=2)}))}),
    st.fixed_dictionaries({"service": maybe(st.just("fraud_model_v1")), "entity_rows": maybe(ROWS)}),
)
ONLINE_BODY = mostly(PLAUSIBLE, st.one_of(
    mapping({
        "features": maybe(st.lists(st.sampled_from(REFS), max_size=4)),
        "service": maybe(st.sampled_from(["fraud_model_v1", "nope", ""])),
        "entity_rows": maybe(st.lists(ROW, max_size=4)),
        "entities": maybe(st.fixed_dictionaries({}, optional={"user_id": st.lists(KEY_VALUES, max_size=4),
                                                              "merchant_id": st.lists(KEY_VALUES, max_size=4)})),
        "include_event_times": maybe(st.booleans()),
    }),
    json_values(6),
), 2)
RAW_BODIES = st.one_of(
    st.binary(max_size=40),
    st.sampled_from([b"", b"{", b"[" * 5000 + b"]" * 5000, b'{"features": NaN}', b"\xef\xbb\xbf{}", b"null",
                     b'{"features": ["a"], "features": ["b"]}', b'{"entities": {"user_id": [1e400]}}',
                     b'{"features":["user_profile_features.country"],"entities":{"user_id":[99999999999999999999]}}',
                     b'{"features":["user_profile_features.country"],"entity_rows":[{"user_id":-0.0}]}',
                     "{\"features\": [\"\ud800\"]}".encode("utf-8", "surrogatepass")]),
)
NAMES = mostly(st.sampled_from(REFS + ["user", "merchant", "user_profile_features", "fraud_model_v1"]),
               st.one_of(NASTY_TEXT, TEXT), 2)
GET_PATHS = st.one_of(
    st.builds(lambda q: f"/v1/features?{q}", st.lists(st.tuples(
        st.sampled_from(["q", "entity", "tag", "owner", "view", "limit", "x", ""]),
        st.one_of(TEXT, NUMBERS.map(str))), max_size=3).map(
            lambda pairs: "&".join(f"{quote(k)}={quote(v, safe='')}" for k, v in pairs))),
    st.builds(lambda t, n: t.format(quote(n, safe="")), st.sampled_from([
        "/v1/features/{}", "/v1/features/{}/statistics", "/v1/features/{}/statistics?refresh=1",
        "/v1/lineage/{}", "/v1/entities/{}", "/v1/views/{}", "/static/{}", "/{}", "/v1/{}"]), NAMES),
    st.sampled_from(["/v1/catalog", "/healthz", "/healthz?level=deep", "/healthz?level=x", "/metrics", "/",
                     "/v1/features?limit=0", "/v1/features?limit=-1", "/v1/features?limit=99999999999999999999",
                     "/v1/online-features", "/static/../pyproject.toml", "/%00", "/v1/features/%2e%2e"]),
)


@pytest.fixture(scope="module")
def client(built_example_project: Path, tmp_path_factory: pytest.TempPathFactory):
    from starlette.testclient import TestClient

    from feature_layer.server.app import create_app

    project = fuzz_project(built_example_project, tmp_path_factory)
    with clean_project_env():
        store = FeatureStore(project, target="duckdb")
        with TestClient(create_app(store, reload_interval=None), raise_server_exceptions=True) as test_client:
            yield test_client
        store.close()


def _judge(response: Any) -> None:
    if response.status_code >= 500 and response.status_code not in (503, 504):
        raise AssertionError(f"HTTP {response.status_code}: {response.text[:500]}")
    if response.status_code >= 400 and response.request.method == "HEAD":
        raise Refused(f"HEAD: {response.status_code}")  # a HEAD answer has no body to check
    if response.status_code >= 400:
        error = response.json().get("error") or {}
        if not error.get("message"):
            raise AssertionError(f"HTTP {response.status_code} without an error message: {response.text[:500]}")
        raise Refused(error["message"])


@given(body=st.one_of(ONLINE_BODY.map(lambda b: json.dumps(b, allow_nan=True).encode()), RAW_BODIES),
       content_type=mostly(st.just("application/json"), st.sampled_from(["text/plain", "", "application/x-www-form-urlencoded",
                                                                          "application/json; charset=latin-1"]), 4))
@examples(sample=40, full=1500)
def test_online_feature_bodies_get_an_answer_or_a_4xx(client, body: bytes, content_type: str) -> None:
    check("HTTP bodies", lambda: _judge(client.post("/v1/online-features", content=body,
                                                    headers={"content-type": content_type})),
          lambda: f"POST /v1/online-features {body[:2000]!r} ({content_type})")


@given(path=GET_PATHS, method=mostly(st.just("GET"), st.sampled_from(["POST", "PUT", "DELETE", "HEAD", "OPTIONS"]), 5))
@examples(sample=30, full=1000)
def test_every_get_endpoint_answers_or_refuses(client, path: str, method: str) -> None:
    check("HTTP bodies", lambda: _judge(client.request(method, path)), lambda: f"{method} {path}")
