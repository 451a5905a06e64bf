"""Helpers for the server, UI, search and lineage tests.

The server tests run the real ``FeatureStore`` (real registry, lookup, embedded SQLite or
Redis online store, state store, DuckDB warehouse) over the dbt-built example project,
materialized with the clock pinned to the data's end (``materialized_copy``, ``open_store``).

``build_registry`` is a small registry of the real types (``FeatureView``, ``DbtNode`` ...)
over hand-written compiled SQL, for the pure search and column-lineage tests only.
"""

from __future__ import annotations

import socket
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from feature_layer.dbt.artifacts import DbtNode
from feature_layer.registry.model import Entity, Feature, FeatureService, FeatureView, Relation
from feature_layer.registry.registry import Registry

DB = "memory"

# The SQL of each model as dbt would compile it (fully qualified relations).
COMPILED = {
    "stg_transactions": f"""select txn_id, user_id, merchant_id, amount, ts as event_ts, country = 'US' as is_domestic
from "{DB}"."raw"."transactions" """,
    "user_txn_features": f"""with daily as (
    select user_id, date_trunc('day', event_ts) as day, count(*) as n, sum(amount) as total
    from "{DB}"."main"."stg_transactions" group by 1, 2
)
select user_id, day + interval 1 day as event_ts,
       sum(n) over w as txn_count_7d,
       sum(total) over w as amount_sum_7d,
       sum(total) over w / nullif(sum(n) over w, 0) as avg_amount_7d
from daily
window w as (partition by user_id order by day range between interval 6 days preceding and current row)""",
    "merchant_risk": f"""select s.merchant_id, max(s.event_ts) as event_ts,
       count(c.txn_id)::double / count(*) as chargeback_rate,
       avg(case when s.is_domestic then 0 else 1 end) as foreign_share
from "{DB}"."main"."stg_transactions" s left join "{DB}"."raw"."chargebacks" c on c.txn_id = s.txn_id
group by s.merchant_id""",
}

TYPES = {
    "source.fraud.raw.transactions": {"txn_id": "BIGINT", "user_id": "BIGINT", "merchant_id": "BIGINT",
                                      "amount": "DOUBLE", "ts": "TIMESTAMP", "country": "VARCHAR"},
    "source.fraud.raw.chargebacks": {"txn_id": "BIGINT", "reported_at": "TIMESTAMP"},
    "model.fraud.stg_transactions": {"txn_id": "BIGINT", "user_id": "BIGINT", "merchant_id": "BIGINT",
                                     "amount": "DOUBLE", "event_ts": "TIMESTAMP", "is_domestic": "BOOLEAN"},
    "model.fraud.user_txn_features": {"user_id": "BIGINT", "event_ts": "TIMESTAMP", "txn_count_7d": "HUGEINT",
                                      "amount_sum_7d": "DOUBLE", "avg_amount_7d": "DOUBLE"},
    "model.fraud.merchant_risk": {"merchant_id": "BIGINT", "event_ts": "TIMESTAMP", "chargeback_rate": "DOUBLE",
                                  "foreign_share": "DOUBLE"},
}


def _node(uid: str, resource_type: str, schema: str, identifier: str, *, depends_on: tuple[str, ...] = (),
          description: str = "", compiled: str | None = None, file_path: str = "") -> DbtNode:
    return DbtNode(unique_id=uid, name=uid.rsplit(".", 1)[-1], resource_type=resource_type,
                   package_name="fraud", file_path=file_path, description=description,
                   relation=Relation(DB, schema, identifier), catalog_types=dict(TYPES[uid]),
                   raw_sql=compiled or "", compiled_sql=compiled, depends_on=depends_on)


def build_nodes() -> dict[str, DbtNode]:
    nodes = {
        "source.fraud.raw.transactions": _node("source.fraud.raw.transactions", "source", "raw", "transactions",
                                               description="Card transactions as the payment switch logs them.",
                                               file_path="models/sources.yml"),
        "source.fraud.raw.chargebacks": _node("source.fraud.raw.chargebacks", "source", "raw", "chargebacks",
                                              description="Chargebacks reported by issuers.",
                                              file_path="models/sources.yml"),
        "model.fraud.stg_transactions": _node("model.fraud.stg_transactions", "model", "main", "stg_transactions",
                                              depends_on=("source.fraud.raw.transactions",),
                                              compiled=COMPILED["stg_transactions"],
                                              file_path="models/staging/stg_transactions.sql"),
        "model.fraud.user_txn_features": _node("model.fraud.user_txn_features", "model", "main", "user_txn_features",
                                               depends_on=("model.fraud.stg_transactions",),
                                               compiled=COMPILED["user_txn_features"],
                                               description="Rolling 7-day spend per card holder.",
                                               file_path="models/features/user_txn_features.sql"),
        "model.fraud.merchant_risk": _node("model.fraud.merchant_risk", "model", "main", "merchant_risk",
                                           depends_on=("model.fraud.stg_transactions", "source.fraud.raw.chargebacks"),
                                           compiled=COMPILED["merchant_risk"],
                                           file_path="models/features/merchant_risk.sql"),
    }
    nodes["exposure.fraud.fraud_model_v1"] = DbtNode(
        unique_id="exposure.fraud.fraud_model_v1", name="fraud_model_v1", resource_type="exposure",
        depends_on=("model.fraud.user_txn_features", "model.fraud.merchant_risk"), exposure_type="ml",
        owner="risk-ml@example.com", file_path="models/exposures.yml")
    return nodes


def _view(name: str, entity: str, key: str, features: list[tuple[str, str, str, tuple[str, ...]]], *,
          owner: str, tags: tuple[str, ...], description: str, ttl: timedelta) -> FeatureView:
    uid = f"model.fraud.{name}"
    types = TYPES[uid]
    from feature_layer.types import logical_type

    return FeatureView(
        name=name, unique_id=uid, entities=(entity,), join_keys=(key,), event_time="event_ts",
        features=tuple(Feature(n, name, logical_type(types[n]), d, types[n], t) for n, _, d, t in features),
        relation=Relation(DB, "main", name), ttl=ttl, online=True, owner=owner, tags=tags,
        description=description, column_types=tuple((c, logical_type(t)) for c, t in types.items()),
        file_path=f"models/features/{name}.sql", raw_sql=COMPILED[name].replace(f'"{DB}"."main".', "{{ ref('")
        .replace('"stg_transactions"', "stg_transactions') }}"), compiled_sql=COMPILED[name],
        depends_on=build_nodes()[uid].depends_on, materialized="table",
    )


def registry_of(entities: dict[str, Entity], views: dict[str, FeatureView], services: dict[str, FeatureService],
                nodes: dict[str, DbtNode]) -> Registry:
    """A real :class:`Registry` over hand-built objects (the graph maps derived from ``nodes``)."""
    parents = {uid: tuple(node.depends_on) for uid, node in nodes.items()}
    children: dict[str, list[str]] = {uid: [] for uid in nodes}
    for uid, deps in parents.items():
        for dep in deps:
            children.setdefault(dep, []).append(uid)
    return Registry(entities=entities, views=views, services=services, nodes=nodes, parent_map=parents,
                    child_map={uid: tuple(kids) for uid, kids in children.items()}, project_name="fraud",
                    adapter_type="duckdb")


def build_registry() -> Registry:
    nodes = build_nodes()
    entities = {
        "user": Entity("user", ("user_id",), "A card holder."),
        "merchant": Entity("merchant", ("merchant_id",), "A merchant accepting card payments."),
    }
    views = {
        "user_txn_features": _view(
            "user_txn_features", "user", "user_id",
            [("txn_count_7d", "", "Number of card transactions in the last 7 days.", ("velocity",)),
             ("amount_sum_7d", "", "Total amount spent in the last 7 days, in euros.", ("velocity", "spend")),
             ("avg_amount_7d", "", "Average transaction amount over the last 7 days.", ("spend",))],
            owner="risk-analytics@example.com", tags=("fraud",), ttl=timedelta(days=2),
            description="Rolling 7-day spend per card holder."),
        "merchant_risk": _view(
            "merchant_risk", "merchant", "merchant_id",
            [("chargeback_rate", "", "Share of the merchant's transactions later charged back.", ("risk",)),
             ("foreign_share", "", "Share of transactions made with foreign cards.", ("risk",))],
            owner="merchant-team@example.com", tags=("fraud",), ttl=timedelta(days=30),
            description="Merchant-level risk signals."),
    }
    services = {
        "fraud_model_v1": FeatureService(
            "fraud_model_v1", "exposure.fraud.fraud_model_v1",
            ("user_txn_features.txn_count_7d", "user_txn_features.amount_sum_7d", "merchant_risk.chargeback_rate"),
            description="Card-not-present fraud classifier.", owner="risk-ml@example.com"),
    }
    return registry_of(entities, views, services, nodes)


# -- the built example project, materialized with the clock pinned to its data ----------------

# Half a day after the example data's newest row (merchant days end 2025-12-02 00:00): TTL'd values are live.
EXAMPLE_NOW = datetime(2025, 12, 2, 12, tzinfo=UTC)


def open_store(project: Path, now: datetime = EXAMPLE_NOW, **kwargs: Any) -> Any:
    """A real FeatureStore over ``project`` with the clock pinned to ``now`` (never today)."""
    from feature_layer import FeatureStore
    from feature_layer.clock import FixedClock

    return FeatureStore(project, clock=FixedClock(now), **kwargs)


def materialized_copy(built_project: Path, dest: Path, select: list[str] | None = None,
                      now: datetime = EXAMPLE_NOW) -> Path:
    """A copy of the built example project with ``select`` (default: every online view)
    materialized into its embedded SQLite store as of ``now``."""
    import shutil

    shutil.copytree(built_project, dest, ignore=shutil.ignore_patterns(".feature_layer", "logs"))
    store = open_store(dest, now)
    try:
        store.materialize(select, end=now)
    finally:
        store.close()
    return dest


class LiveServer:
    """uvicorn serving ``app`` on a free loopback port in a background thread."""

    def __init__(self, app: Any) -> None:
        import socket

        import uvicorn

        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        sock.close()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> LiveServer:
        import time

        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


class SilentListener:
    """A TCP port that accepts connections and never answers (a hung Redis, a black-holed proxy)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.accepted: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted.append(conn)  # held open, never read from, never written to

    def __enter__(self) -> SilentListener:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()
        for conn in self.accepted:
            conn.close()


CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def launch_chromium(playwright: Any) -> Any:
    """Debian's Chromium through Playwright; a missing browser fails loudly (never skips)."""
    import os

    if not os.path.exists(CHROMIUM):
        raise RuntimeError(f"{CHROMIUM} is missing: the browser tests need Debian's Chromium. "
                           "Install it with `apt-get install chromium` (or `make system-deps`).")
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
