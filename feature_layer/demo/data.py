"""Deterministic raw data for the example card-payment fraud project.

The generator writes four Parquet files (users, merchants, transactions, chargebacks) that
the example dbt project reads as sources. Everything is vectorised with numpy and written in
fixed-size chunks through ``pyarrow.parquet.ParquetWriter``, so ten million transactions take
seconds and memory stays bounded by one chunk. Every random stream is seeded from
``(seed, table, chunk)``, so the same ``seed`` and ``rows`` always give byte-identical files.

Fraud is not uniform: online payments, large amounts, new and unverified accounts, risky
merchant categories, foreign currencies and a hidden per-user risk make a chargeback more
likely, so a model trained on the example features has something to learn.

All timestamps fall in 2025 and are naive UTC with microsecond precision.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from datetime import date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from feature_layer.errors import InputError, WarehouseError

TABLES = ("users", "merchants", "transactions", "chargebacks")
CHUNK_ROWS = 500_000
"""Rows per generated chunk; fixed so output never depends on anything but seed and rows."""

MAX_ROWS = 1_000_000_000

_US = 1_000_000
_DAY_US = 86_400 * _US
_YEAR_START = np.datetime64("2025-01-01T00:00:00", "us").astype(np.int64)
_SIGNUP_END = np.datetime64("2025-10-31T00:00:00", "us").astype(np.int64)
_MERCHANT_END = np.datetime64("2025-02-01T00:00:00", "us").astype(np.int64)
_TXN_END = np.datetime64("2025-12-01T00:00:00", "us").astype(np.int64)
"""Transactions end on Dec 1st so every chargeback (reported within 30 days) is in 2025."""

_COUNTRIES = np.array(["US", "GB", "DE", "FR", "NL", "ES", "BR", "IN"])
_COUNTRY_P = np.array([0.35, 0.15, 0.12, 0.1, 0.08, 0.08, 0.07, 0.05])
_CURRENCY_OF = {
    "US": "USD", "GB": "GBP", "DE": "EUR", "FR": "EUR", "NL": "EUR", "ES": "EUR",
    "BR": "BRL", "IN": "INR",
}  # fmt: skip
_CURRENCIES = np.array(sorted(set(_CURRENCY_OF.values())))
_COUNTRY_CURRENCY = np.array([np.searchsorted(_CURRENCIES, _CURRENCY_OF[c]) for c in _COUNTRIES], dtype=np.int64)

_CATEGORIES = np.array(
    ["grocery", "restaurants", "fuel", "travel", "electronics", "digital_goods", "fashion", "gambling"]
)
_CATEGORY_P = np.array([0.24, 0.2, 0.12, 0.08, 0.1, 0.12, 0.1, 0.04])
_CATEGORY_ONLINE_P = np.array([0.1, 0.15, 0.02, 0.7, 0.6, 0.98, 0.55, 0.9])
_CATEGORY_AMOUNT_MU = np.array([3.5, 3.3, 3.8, 5.6, 5.2, 2.8, 4.3, 4.0])
_CATEGORY_RISK = np.array([-0.6, -0.5, -0.4, 0.6, 0.8, 0.9, 0.2, 1.2])

_FRAUD_REASONS = np.array(["fraud", "stolen_card"])
_OTHER_REASONS = np.array(["product_not_received", "duplicate_charge"])
FRAUD_REASONS = tuple(str(r) for r in _FRAUD_REASONS)
"""Chargeback reasons that count as fraud (the training label)."""

_FRAUD_INTERCEPT = -6.9
_DISPUTE_P = 0.002


def _rng(seed: int, table: int, chunk: int = 0) -> np.random.Generator:
    return np.random.default_rng([seed, table, chunk])


def _timestamps(micros: np.ndarray, shift: int = 0) -> pa.Array:
    return pa.array((micros + shift).astype("datetime64[us]"), type=pa.timestamp("us"))


def _sizes(rows: int) -> tuple[int, int]:
    return max(100, rows // 20), max(20, rows // 200)


def _validate(out_dir: Any, rows: Any, seed: Any) -> Path:
    if isinstance(rows, bool) or not isinstance(rows, (int, np.integer)):
        raise InputError(
            f"rows must be an integer number of transactions, got {rows!r}.",
            fix="pass rows as an int, e.g. generate_demo_data(out_dir, rows=10_000).",
        )
    if not 1 <= rows <= MAX_ROWS:
        raise InputError(
            f"rows must be between 1 and {MAX_ROWS:,}, got {rows:,}.",
            fix="pass rows >= 1 (10_000 is a good size for trying things out).",
        )
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InputError(
            f"seed must be a non-negative integer, got {seed!r}.",
            fix="pass seed as an int >= 0, e.g. seed=7.",
        )
    if not isinstance(out_dir, (str, Path)):
        raise InputError(
            f"out_dir must be a path, got {type(out_dir).__name__}.",
            fix="pass a pathlib.Path or a string naming a directory.",
        )
    path = Path(out_dir)
    if path.exists() and not path.is_dir():
        raise InputError(
            f"out_dir {path} exists and is not a directory.",
            fix="pass a directory path (it is created when missing).",
        )
    return path


def _weights_cdf(weights: np.ndarray) -> np.ndarray:
    cdf = np.cumsum(weights)
    return cdf / cdf[-1]


def _users(n: int, seed: int) -> dict[str, np.ndarray]:
    rng = _rng(seed, 1)
    country = rng.choice(len(_COUNTRIES), size=n, p=_COUNTRY_P)
    return {
        "user_id": np.arange(1, n + 1, dtype=np.int64),
        "signup_at": rng.integers(_YEAR_START, _SIGNUP_END, size=n, dtype=np.int64),
        "country": country,
        "birth_year": rng.integers(1950, 2008, size=n).astype(np.int32),
        "is_verified": rng.random(n) < 0.8,
        # hidden, never written: how active and how risky each card holder is
        "activity": rng.lognormal(0.0, 1.0, size=n),
        "risk": rng.normal(0.0, 0.8, size=n),
    }


def _merchants(n: int, seed: int) -> dict[str, np.ndarray]:
    rng = _rng(seed, 2)
    category = rng.choice(len(_CATEGORIES), size=n, p=_CATEGORY_P)
    return {
        "merchant_id": np.arange(1, n + 1, dtype=np.int64),
        "category": category,
        "country": rng.choice(len(_COUNTRIES), size=n, p=_COUNTRY_P),
        "created_at": rng.integers(_YEAR_START, _MERCHANT_END, size=n, dtype=np.int64),
        "popularity": rng.lognormal(0.0, 1.2, size=n),
    }


def _transaction_chunks(
    rows: int, seed: int, users: dict[str, np.ndarray], merchants: dict[str, np.ndarray], shift: int = 0
) -> Iterator[tuple[pa.RecordBatch, pa.RecordBatch]]:
    """Yield (transactions, chargebacks) batches, one pair per chunk of CHUNK_ROWS."""
    n_users = len(users["user_id"])
    n_merchants = len(merchants["merchant_id"])
    user_cdf = _weights_cdf(users["activity"])
    merchant_cdf = _weights_cdf(merchants["popularity"])
    for chunk, start in enumerate(range(0, rows, CHUNK_ROWS)):
        n = min(CHUNK_ROWS, rows - start)
        rng = _rng(seed, 3, chunk)
        txn_id = np.arange(start + 1, start + n + 1, dtype=np.int64)
        u = np.minimum(np.searchsorted(user_cdf, rng.random(n), side="right"), n_users - 1)
        # card holders return to a few favourite merchants half of the time
        favourite = (u.astype(np.int64) * 2_654_435_761 + rng.integers(0, 3, n) * 40_503) % n_merchants
        anywhere = np.minimum(np.searchsorted(merchant_cdf, rng.random(n), side="right"), n_merchants - 1)
        m = np.where(rng.random(n) < 0.5, favourite, anywhere)

        category = merchants["category"][m]
        user_country = users["country"][u]
        is_online = rng.random(n) < _CATEGORY_ONLINE_P[category]
        amount = np.round(np.exp(rng.normal(_CATEGORY_AMOUNT_MU[category], 0.9)), 2)
        amount = np.maximum(amount, 0.5)
        currency = _COUNTRY_CURRENCY[user_country]
        foreign = rng.random(n) < 0.05
        currency = np.where(foreign, rng.integers(0, len(_CURRENCIES), n), currency)

        lo = np.maximum(users["signup_at"][u], merchants["created_at"][m])
        occurred = lo + (rng.random(n) ** 0.8 * (_TXN_END - lo)).astype(np.int64)
        # the microsecond part comes from the id: no two transactions of one card holder
        # share a timestamp (for up to a million rows; astronomically unlikely above)
        occurred = occurred // _US * _US + txn_id % _US
        created = occurred + rng.integers(0, 61, n) * _US

        account_age_days = (occurred - users["signup_at"][u]) / _DAY_US
        logit = (
            _FRAUD_INTERCEPT
            + 1.3 * is_online
            + 0.7 * np.log1p(amount / 100.0)
            + 1.2 * (amount > 500)
            + 1.5 * (account_age_days < 7)
            + 0.7 * ~users["is_verified"][u]
            + 0.9 * (currency != _COUNTRY_CURRENCY[user_country])
            + _CATEGORY_RISK[category]
            + users["risk"][u]
        )
        is_fraud = rng.random(n) < 1.0 / (1.0 + np.exp(-logit))
        disputed = ~is_fraud & (rng.random(n) < _DISPUTE_P)
        reason = np.where(
            is_fraud,
            _FRAUD_REASONS[rng.integers(0, len(_FRAUD_REASONS), n)],
            _OTHER_REASONS[rng.integers(0, len(_OTHER_REASONS), n)],
        )
        reported = occurred + rng.integers(_DAY_US, 30 * _DAY_US, n)
        has_chargeback = is_fraud | disputed

        transactions = pa.record_batch(
            {
                "transaction_id": pa.array(txn_id, pa.int64()),
                "user_id": pa.array(users["user_id"][u], pa.int64()),
                "merchant_id": pa.array(merchants["merchant_id"][m], pa.int64()),
                "amount": pa.array(amount, pa.float64()),
                "currency": pa.array(_CURRENCIES[currency], pa.string()),
                "is_online": pa.array(is_online, pa.bool_()),
                "occurred_at": _timestamps(occurred, shift),
                "created_at": _timestamps(created, shift),
            }
        )
        chargebacks = pa.record_batch(
            {
                "transaction_id": pa.array(txn_id[has_chargeback], pa.int64()),
                "reported_at": _timestamps(reported[has_chargeback], shift),
                "reason": pa.array(reason[has_chargeback], pa.string()),
            }
        )
        yield transactions, chargebacks


TRANSACTIONS_SCHEMA = pa.schema(
    [
        ("transaction_id", pa.int64()),
        ("user_id", pa.int64()),
        ("merchant_id", pa.int64()),
        ("amount", pa.float64()),
        ("currency", pa.string()),
        ("is_online", pa.bool_()),
        ("occurred_at", pa.timestamp("us")),
        ("created_at", pa.timestamp("us")),
    ]
)
CHARGEBACKS_SCHEMA = pa.schema(
    [("transaction_id", pa.int64()), ("reported_at", pa.timestamp("us")), ("reason", pa.string())]
)
USERS_SCHEMA = pa.schema(
    [
        ("user_id", pa.int64()),
        ("signup_at", pa.timestamp("us")),
        ("country", pa.string()),
        ("birth_year", pa.int32()),
        ("is_verified", pa.bool_()),
    ]
)
MERCHANTS_SCHEMA = pa.schema(
    [
        ("merchant_id", pa.int64()),
        ("category", pa.string()),
        ("country", pa.string()),
        ("created_at", pa.timestamp("us")),
    ]
)
SCHEMAS = {
    "users": USERS_SCHEMA,
    "merchants": MERCHANTS_SCHEMA,
    "transactions": TRANSACTIONS_SCHEMA,
    "chargebacks": CHARGEBACKS_SCHEMA,
}


def _writer(path: Path, schema: pa.Schema) -> pq.ParquetWriter:
    # nothing time- or host-dependent is written: the same input gives the same bytes
    return pq.ParquetWriter(path, schema, compression="zstd", write_statistics=True)


def generate_demo_data(
    out_dir: Path, rows: int = 10_000, seed: int = 7, *, end: date | None = None, users: int | None = None
) -> dict[str, Path]:
    """Write users, merchants, transactions and chargebacks Parquet files into ``out_dir``.

    ``rows`` is the number of transactions; there are about rows/20 users (at least 100;
    ``users`` sets the number instead) and rows/200 merchants (at least 20). The same ``seed``,
    ``rows`` and ``users`` always produce identical files. Returns the path of each file by table name.

    ``end`` moves every timestamp by whole days so the last payment falls on that date
    instead of 2025-12-01 (the demo passes today, so TTLs have not expired what it serves;
    chargebacks may then be reported up to 30 days after ``end``).

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     sorted(generate_demo_data(Path(tmp) / "raw", rows=1_000))
    ['chargebacks', 'merchants', 'transactions', 'users']
    """
    out = _validate(out_dir, rows, seed)
    rows, seed = int(rows), int(seed)
    shift = 0
    if end is not None:
        if not isinstance(end, date):
            raise InputError(f"end must be a date, got {end!r}.", fix="pass datetime.date(2026, 1, 1) or leave it out.")
        day = end.date() if isinstance(end, datetime) else end
        shift = (day - date(2025, 12, 1)).days * 86_400_000_000  # the last payment lands on `end`
    out.mkdir(parents=True, exist_ok=True)
    n_users, n_merchants = _sizes(rows)
    if users is not None:
        if isinstance(users, bool) or not isinstance(users, (int, np.integer)) or not 1 <= users <= MAX_ROWS:
            raise InputError(f"users must be an integer number of card holders between 1 and {MAX_ROWS:,}, got {users!r}.",
                             fix="pass users as an int, e.g. users=100_000, or leave it out (about rows/20).")
        n_users = int(users)
    users = _users(n_users, seed)
    merchants = _merchants(n_merchants, seed)
    paths = {name: out / f"{name}.parquet" for name in TABLES}

    users_table = pa.table(
        {
            "user_id": pa.array(users["user_id"], pa.int64()),
            "signup_at": _timestamps(users["signup_at"], shift),
            "country": pa.array(_COUNTRIES[users["country"]], pa.string()),
            "birth_year": pa.array(users["birth_year"], pa.int32()),
            "is_verified": pa.array(users["is_verified"], pa.bool_()),
        },
        schema=USERS_SCHEMA,
    )
    merchants_table = pa.table(
        {
            "merchant_id": pa.array(merchants["merchant_id"], pa.int64()),
            "category": pa.array(_CATEGORIES[merchants["category"]], pa.string()),
            "country": pa.array(_COUNTRIES[merchants["country"]], pa.string()),
            "created_at": _timestamps(merchants["created_at"], shift),
        },
        schema=MERCHANTS_SCHEMA,
    )
    for name, table in (("users", users_table), ("merchants", merchants_table)):
        with _writer(paths[name], table.schema) as writer:
            writer.write_table(table, row_group_size=CHUNK_ROWS)

    with (
        _writer(paths["transactions"], TRANSACTIONS_SCHEMA) as txn_writer,
        _writer(paths["chargebacks"], CHARGEBACKS_SCHEMA) as cb_writer,
    ):
        for transactions, chargebacks in _transaction_chunks(rows, seed, users, merchants, shift):
            txn_writer.write_batch(transactions, row_group_size=CHUNK_ROWS)
            cb_writer.write_batch(chargebacks, row_group_size=CHUNK_ROWS)
    return paths


_PG_TYPES = {
    pa.int64(): "BIGINT",
    pa.int32(): "INTEGER",
    pa.float64(): "DOUBLE PRECISION",
    pa.string(): "TEXT",
    pa.bool_(): "BOOLEAN",
    pa.timestamp("us"): "TIMESTAMP",
}


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def load_demo_data_into_postgres(data_dir: Path, dsn: str, schema: str = "raw") -> dict[str, int]:
    """Create (or replace) the raw tables in PostgreSQL from the Parquet files in ``data_dir``.

    Lets the same dbt project build on the ``postgres`` target, whose sources live in
    ``schema``. Data is streamed batch by batch through ``COPY ... FROM STDIN`` as CSV.
    Returns the number of rows loaded per table.
    """
    import pyarrow.csv as pacsv

    from feature_layer.extras import require

    psycopg2 = require("psycopg2", "Loading the demo data into PostgreSQL")  # shipped with dbt-postgres

    data = Path(data_dir)
    missing = [name for name in TABLES if not (data / f"{name}.parquet").is_file()]
    if missing:
        raise InputError(
            f"{data} lacks {', '.join(m + '.parquet' for m in missing)}.",
            fix="generate the files first with feature_layer.demo.data.generate_demo_data(data_dir).",
        )
    try:
        conn = psycopg2.connect(dsn)
    except psycopg2.Error as exc:
        raise WarehouseError(
            f"Could not connect to PostgreSQL with {dsn!r}: {str(exc).strip()}",
            fix="start PostgreSQL (`pg_ctlcluster 15 main start`) and check the DSN.",
        ) from exc
    counts: dict[str, int] = {}
    try:
        with conn, conn.cursor() as cur:
            cur.execute(f"CREATE SCHEMA IF NOT EXISTS {_quote_ident(schema)}")
            for name in TABLES:
                parquet = pq.ParquetFile(data / f"{name}.parquet")
                arrow_schema = parquet.schema_arrow
                table = f"{_quote_ident(schema)}.{_quote_ident(name)}"
                columns = ", ".join(f"{_quote_ident(f.name)} {_PG_TYPES.get(f.type, 'TEXT')}" for f in arrow_schema)
                cur.execute(f"DROP TABLE IF EXISTS {table}")
                cur.execute(f"CREATE TABLE {table} ({columns})")
                counts[name] = 0
                for batch in parquet.iter_batches(batch_size=200_000):
                    buffer = io.BytesIO()
                    pacsv.write_csv(batch, buffer, write_options=pacsv.WriteOptions(include_header=False))
                    buffer.seek(0)
                    cur.copy_expert(f"COPY {table} FROM STDIN WITH (FORMAT csv)", buffer)
                    counts[name] += batch.num_rows
                cur.execute(f"ANALYZE {table}")
    except psycopg2.Error as exc:
        raise WarehouseError(
            f"Loading demo data into PostgreSQL schema {schema!r} failed: {str(exc).strip()}",
            fix="check that the user may create schemas and tables in the database of the DSN.",
        ) from exc
    finally:
        conn.close()
    return counts
