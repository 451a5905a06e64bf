"""A small, hand-built fraud registry and store for server, UI, search and lineage tests.

The objects are the real registry types (``FeatureView``, ``DbtNode`` ...) with compiled SQL
that runs in DuckDB, so lineage, statistics and lookups are exercised for real without
waiting for ``dbt build``. Tests against the built example project live beside these.
"""

from __future__ import annotations

import socket
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import duckdb
import pyarrow as pa

from feature_layer.clock import clock_from_env
from feature_layer.dbt.artifacts import DbtNode
from feature_layer.errors import InputError, UnknownFeatureError
from feature_layer.registry.model import Entity, Feature, FeatureService, FeatureView, Relation

DB = "memory"

RAW_SQL = """
create schema if not exists raw;
create table raw.transactions as
  select i as txn_id, 1 + (i % 50) as user_id, 100 + (i % 7) as merchant_id,
         round(((i * 37) % 1000) / 7.0, 2)::double as amount,
         timestamp '2026-01-01' + to_seconds(i * 3600) as ts,
         case when i % 13 = 0 then 'FR' else 'US' end as country
  from range(1, 2001) t(i);
create table raw.chargebacks as
  select i as txn_id, timestamp '2026-01-02' + to_seconds(i * 7200) as reported_at from range(1, 2001, 40) t(i);
create table main.stg_transactions as
  select txn_id, user_id, merchant_id, amount, ts as event_ts, country = 'US' as is_domestic from raw.transactions;
create table main.user_txn_features as
  with daily as (
    select user_id, date_trunc('day', event_ts) as day, count(*) as n, sum(amount) as total
    from main.stg_transactions group by 1, 2
  )
  select user_id, day + interval 1 day as event_ts,
         sum(n) over w as txn_count_7d,
         sum(total) over w as amount_sum_7d,
         sum(total) over w / nullif(sum(n) over w, 0) as avg_amount_7d
  from daily
  window w as (partition by user_id order by day range between interval 6 days preceding and current row);
create table main.merchant_risk as
  select s.merchant_id, max(s.event_ts) as event_ts,
         count(c.txn_id)::double / count(*) as chargeback_rate,
         avg(case when s.is_domestic then 0 else 1 end) as foreign_share
  from main.stg_transactions s left join raw.chargebacks c on c.txn_id = s.txn_id
  group by s.merchant_id;
"""

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


@dataclass
class FakeRegistry:
    """The registry surface the server uses, over hand-built objects."""

    entities: dict[str, Entity]
    views: dict[str, FeatureView]
    services: dict[str, FeatureService]
    nodes: dict[str, DbtNode]
    dialect: str = "duckdb"

    def features(self, *, entity: str | None = None, tag: str | None = None, owner: str | None = None,
                 view: str | None = None) -> list[Feature]:
        out = []
        for v in self.views.values():
            if (entity and entity not in v.entities) or (owner and owner != v.owner) or (view and view != v.name):
                continue
            out.extend(f for f in v.features if not tag or tag in f.tags or tag in v.tags)
        return out

    def view(self, name: str) -> FeatureView:
        if name not in self.views:
            raise UnknownFeatureError(f"No feature view {name!r}.", fix="check the name.")
        return self.views[name]

    def entity(self, name: str) -> Entity:
        if name not in self.entities:
            raise UnknownFeatureError(f"No entity {name!r}.", fix="check the name.")
        return self.entities[name]

    def service(self, name: str) -> FeatureService:
        if name not in self.services:
            raise UnknownFeatureError(f"No feature service {name!r}.", fix="check the name.")
        return self.services[name]

    def feature(self, ref: str) -> Feature:
        view_name, _, name = ref.partition(".")
        view = self.view(view_name)
        try:
            return view.feature(name)
        except KeyError:
            raise UnknownFeatureError(f"No feature {ref!r}.", fix="check the name.") from None

    def parents(self, unique_id: str) -> list[str]:
        return list(self.nodes[unique_id].depends_on)

    def children(self, unique_id: str) -> list[str]:
        return [u for u, n in self.nodes.items() if unique_id in n.depends_on]


def build_registry() -> FakeRegistry:
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
    return FakeRegistry(entities, views, services, nodes)


class FakeEngine:
    """``fetch_arrow`` over an in-memory DuckDB holding the raw tables and built models."""

    def __init__(self) -> None:
        self.con = duckdb.connect(":memory:")
        self.con.execute(RAW_SQL)
        self.queries: list[str] = []
        self._lock = threading.Lock()

    def fetch_arrow(self, sql: str) -> pa.Table:
        with self._lock:
            self.queries.append(sql)
            return self.con.sql(sql).to_arrow_table()

    def close(self) -> None:
        self.con.close()


@dataclass
class FakeState:
    watermarks: dict[str, datetime] = field(default_factory=dict)
    statistics: dict[str, dict[str, Any]] = field(default_factory=dict)

    def last_materialized(self, view: str) -> datetime | None:
        return self.watermarks.get(view)

    def get_statistics(self, feature_ref: str) -> dict[str, Any] | None:
        return self.statistics.get(feature_ref)

    def save_statistics(self, feature_ref: str, stats: dict[str, Any]) -> None:
        self.statistics[feature_ref] = stats


@dataclass
class FakeOnlineResponse:
    rows: list[dict[str, Any]]

    def to_dict(self) -> dict[str, list[Any]]:
        keys = list(self.rows[0]) if self.rows else []
        return {k: [r.get(k) for r in self.rows] for k in keys}


class FakeStore:
    """The ``FeatureStore`` surface the server uses; lookups read the latest row in DuckDB."""

    def __init__(self, registry: FakeRegistry | None = None) -> None:
        self._registry = registry or build_registry()
        self.clock = clock_from_env()
        self.engine = FakeEngine()
        self.state = FakeState(watermarks={"user_txn_features": datetime(2026, 3, 25, tzinfo=UTC)})
        self._latest: dict[tuple[str, Any], dict[str, Any]] = {}
        for view in self._registry.views.values():
            key = view.join_keys[0]
            table = self.engine.fetch_arrow(
                f"select * from main.{view.name} qualify row_number() over (partition by {key} order by event_ts desc) = 1"
            ).to_pylist()
            for row in table:
                self._latest[(view.name, row[key])] = row

    @property
    def registry(self) -> FakeRegistry:
        return self._registry

    @registry.setter
    def registry(self, value: FakeRegistry) -> None:
        self._registry = value

    def offline_engine(self) -> FakeEngine:
        return self.engine

    def get_online_features(self, features=None, entity_rows=None, *, service=None, include_event_times=False):
        registry = self.registry
        refs = list(features or registry.service(service).features)
        if not isinstance(entity_rows, list):
            raise InputError("entity_rows must be a list of objects.", fix="pass [{\"user_id\": 1}].")
        out = []
        for row in entity_rows:
            result = dict(row)
            for ref in refs:
                view_name, _, name = ref.partition(".")
                view = registry.view(view_name)
                registry.feature(ref)
                key = view.join_keys[0]
                if key not in row:
                    raise InputError(f"entity row {row!r} lacks join key {key!r} needed by {ref}.",
                                     fix=f"add {key!r} to every entity row.")
                latest = self._latest.get((view_name, row[key]))
                result[name] = latest.get(name) if latest else None
            out.append(result)
        return FakeOnlineResponse(out)

    def close(self) -> None:
        self.engine.close()


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
