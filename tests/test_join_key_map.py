"""Join-key mapping (``join_key_map``): a view read under other entity columns, both uses in one
training set, checked against the brute-force reference (tests/offline_helpers), and the same
mapping online (Python, HTTP, CLI) on the materialized example project."""

from __future__ import annotations

import json
import math
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pytest
from click.testing import CliRunner
from server_helpers import EXAMPLE_NOW, materialized_copy, open_store
from sqlglot import exp
from starlette.testclient import TestClient

from feature_layer.cli import main as cli
from feature_layer.errors import InputError
from feature_layer.server.app import create_app
from tests.offline_helpers import ViewData, reference_training_set

PROFILE = ["user_profile_features.country", "user_profile_features.is_verified", "user_profile_features.age_at_signup"]
TXN = ["user_transaction_features.amount_avg_7d", "user_transaction_features.txn_count_24h"]
BOTH = {"user_profile_features": [{}, {"user_id": "payee_id"}],
        "user_transaction_features": [{}, {"user_id": "payee_id"}]}


@pytest.fixture(scope="module")
def project(built_example_project: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return materialized_copy(built_example_project, tmp_path_factory.mktemp("jkm") / "project")


@pytest.fixture(scope="module")
def store(project: Path):
    s = open_store(project)
    yield s
    s.close()


def view_rows(store, name: str) -> list[dict]:
    view = store.registry.views[name]
    table = exp.Table(this=exp.to_identifier(view.relation.identifier, quoted=True),
                      db=exp.to_identifier(view.relation.schema, quoted=True))
    rows = store.offline_engine().fetch_arrow(exp.select("*").from_(table)).to_pylist()
    return [{k: v.replace(tzinfo=UTC) if isinstance(v, datetime) and v.tzinfo is None else v for k, v in r.items()}
            for r in rows]  # naive timestamps are UTC by convention


def entity_rows(store, n: int = 150) -> list[dict]:
    users = sorted({r["user_id"] for r in view_rows(store, "user_profile_features")})
    rng = random.Random(13)
    start = EXAMPLE_NOW - timedelta(days=60)
    return [{"user_id": rng.choice(users), "payee_id": rng.choice(users + [10**9]),
             "event_timestamp": start + timedelta(seconds=rng.randrange(60 * 86400))} for _ in range(n)]


def close(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)
    return a == b


def test_both_uses_in_one_training_set_equal_the_brute_force(store):
    rows = entity_rows(store)
    registry = store.registry
    got = store.get_training_set(pa.Table.from_pylist(rows), features=PROFILE + TXN, join_key_map=BOTH).to_arrow()
    names = [r.split(".")[1] for r in PROFILE + TXN]
    assert got.column_names == ["user_id", "payee_id", "event_timestamp", *names[:3], *(f"{n}__payee_id" for n in names[:3]),
                                *names[3:], *(f"{n}__payee_id" for n in names[3:])]
    data = [ViewData(registry.views[v], view_rows(store, v), [registry.feature(r) for r in refs])
            for v, refs in (("user_profile_features", PROFILE), ("user_transaction_features", TXN))]
    plain = reference_training_set(rows, data, "event_timestamp")
    as_payee = reference_training_set([{**r, "user_id": r["payee_id"]} for r in rows], data, "event_timestamp")
    table = got.to_pylist()
    hits = 0
    for mine, ref, ref_payee in zip(table, plain, as_payee, strict=True):
        for name in names:
            assert close(mine[name], ref[name]), (name, mine, ref)
            assert close(mine[f"{name}__payee_id"], ref_payee[name]), (name, mine, ref_payee)
            hits += ref_payee[name] is not None
    assert hits > 100  # the mapped use found values, not only nulls
    full = store.get_training_set(pa.Table.from_pylist(rows[:5]), features=PROFILE[:1], full_feature_names=True,
                                  join_key_map={"user_profile_features": [{}, {"user_id": "payee_id"}]})
    assert full.columns[-2:] == ("user_profile_features__country", "user_profile_features__country__payee_id")
    sql = full.sql()
    assert '"user_id" AS "payee_id"' in sql


def test_a_mapped_use_alone_and_bad_maps(store):
    rows = entity_rows(store, 20)
    only = store.get_training_set(pa.Table.from_pylist(rows), features=PROFILE[:1],
                                  join_key_map={"user_profile_features": {"user_id": "payee_id"}})
    assert only.columns == ("user_id", "payee_id", "event_timestamp", "country__payee_id")
    for bad, words in (({"no_view": {"user_id": "x"}}, "does not exist"),
                       ({"user_profile_features": {"merchant_id": "x"}}, "not a join key"),
                       ({"user_profile_features": {"user_id": "country"}}, "also a column"),
                       ({"user_profile_features": [{}, {}]}, "same use twice"),
                       ({"merchant_risk_features": {"merchant_id": "x"}}, "no feature of"),
                       ({"user_profile_features": "payee_id"}, "join key: entity column")):
        with pytest.raises(InputError) as err:
            store.get_training_set(pa.Table.from_pylist(rows), features=PROFILE[:1], join_key_map=bad)
        assert words in str(err.value) and err.value.fix
    with pytest.raises(InputError, match="payee_id"):
        store.get_training_set(pa.Table.from_pylist([{k: v for k, v in r.items() if k != "payee_id"} for r in rows]),
                               features=PROFILE[:1], join_key_map={"user_profile_features": {"user_id": "payee_id"}})


def test_online_lookup_maps_keys_in_python_http_and_cli(store, project):
    users = [r["user_id"] for r in entity_rows(store, 8)]
    payees = list(reversed(users))
    rows = [{"user_id": u, "payee_id": p} for u, p in zip(users, payees, strict=True)]
    got = store.get_online_features(PROFILE + TXN, rows, join_key_map=BOTH).to_dict()
    plain = store.get_online_features(PROFILE + TXN, [{"user_id": u} for u in users]).to_dict()
    as_payee = store.get_online_features(PROFILE + TXN, [{"user_id": p} for p in payees]).to_dict()
    assert got["user_id"] == users and got["payee_id"] == payees
    for ref in PROFILE + TXN:
        name = ref.split(".")[1]
        assert got[name] == plain[name]
        assert got[f"{name}__payee_id"] == as_payee[name]
    assert any(v is not None for v in got["country__payee_id"])
    columnar = store.get_online_features(PROFILE[:1], pa.Table.from_pylist(rows),
                                         join_key_map={"user_profile_features": {"user_id": "payee_id"}},
                                         include_event_times=True).to_dict()
    assert list(columnar) == ["payee_id", "country__payee_id", "country__payee_id__event_time"]  # only what it reads
    assert columnar["country__payee_id"] == as_payee["country"]

    with TestClient(create_app(store, reload_interval=None)) as client:
        body = {"features": PROFILE + TXN, "entity_rows": rows, "join_key_map": BOTH}
        served = client.post("/v1/online-features", json=body)
        assert served.status_code == 200, served.text
        assert served.json()["country__payee_id"] == as_payee["country"]
        bad = client.post("/v1/online-features", json={**body, "join_key_map": {"user_profile_features": {"x": "y"}}})
        assert bad.status_code == 422 and bad.json()["error"]["field"] == "join_key_map"

    out = CliRunner().invoke(cli, ["--project-dir", str(project), "online-get", PROFILE[0], "--rows", json.dumps(rows),
                                   "--join-key-map", json.dumps({"user_profile_features": {"user_id": "payee_id"}}),
                                   "--json"])
    assert out.exit_code == 0, out.output
    assert [r["country__payee_id"] for r in json.loads(out.output)] == as_payee["country"]
    sql = CliRunner().invoke(cli, ["--project-dir", str(project), "sql", "training-set", "-f", PROFILE[0],
                                   "--entity-table", "main.fraud_training_labels", "--timestamp-column",
                                   "occurred_at", "--join-key-map",
                                   json.dumps({"user_profile_features": [{}, {"user_id": "merchant_id"}]})])
    assert sql.exit_code == 0, sql.output
    assert '"user_id" AS "merchant_id"' in sql.output and '"country__merchant_id"' in sql.output
    refused = CliRunner().invoke(cli, ["--project-dir", str(project), "online-get", PROFILE[0], "--rows",
                                       json.dumps(rows), "--join-key-map", "{not json"])
    assert refused.exit_code == 1 and "not valid JSON" in refused.output
