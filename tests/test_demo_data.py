"""The demo data generator: deterministic, sized as documented, coherent, fast."""

from __future__ import annotations

import hashlib
from datetime import date
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from conftest import drop_postgres_schemas, require_postgres

from feature_layer.demo import data as demo
from feature_layer.demo.data import generate_demo_data, load_demo_data_into_postgres
from feature_layer.errors import InputError

EXPECTED_SCHEMAS = {
    "users": [
        ("user_id", pa.int64()),
        ("signup_at", pa.timestamp("us")),
        ("country", pa.string()),
        ("birth_year", pa.int32()),
        ("is_verified", pa.bool_()),
    ],
    "merchants": [
        ("merchant_id", pa.int64()),
        ("category", pa.string()),
        ("country", pa.string()),
        ("created_at", pa.timestamp("us")),
    ],
    "transactions": [
        ("transaction_id", pa.int64()),
        ("user_id", pa.int64()),
        ("merchant_id", pa.int64()),
        ("amount", pa.float64()),
        ("currency", pa.string()),
        ("is_online", pa.bool_()),
        ("occurred_at", pa.timestamp("us")),
        ("created_at", pa.timestamp("us")),
    ],
    "chargebacks": [
        ("transaction_id", pa.int64()),
        ("reported_at", pa.timestamp("us")),
        ("reason", pa.string()),
    ],
}


def _digests(paths: dict[str, Path]) -> dict[str, str]:
    return {name: hashlib.sha256(path.read_bytes()).hexdigest() for name, path in paths.items()}


@pytest.fixture(scope="module")
def demo_20k(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return generate_demo_data(tmp_path_factory.mktemp("demo_20k"), rows=20_000, seed=7)


def _sql(paths: dict[str, Path], query: str) -> list[tuple]:
    conn = duckdb.connect()
    try:
        for name, path in paths.items():
            conn.execute(f"create view {name} as select * from read_parquet('{path}')")
        return conn.sql(query).fetchall()
    finally:
        conn.close()


def test_same_seed_writes_identical_files(tmp_path: Path) -> None:
    first = generate_demo_data(tmp_path / "a", rows=5_000, seed=11)
    second = generate_demo_data(tmp_path / "b", rows=5_000, seed=11)
    assert _digests(first) == _digests(second)


def test_another_seed_writes_other_data(tmp_path: Path) -> None:
    first = generate_demo_data(tmp_path / "a", rows=5_000, seed=1)
    second = generate_demo_data(tmp_path / "b", rows=5_000, seed=2)
    assert pq.read_table(first["transactions"]) != pq.read_table(second["transactions"])


def test_files_have_the_documented_schemas(demo_20k: dict[str, Path]) -> None:
    assert sorted(demo_20k) == sorted(EXPECTED_SCHEMAS)
    for name, fields in EXPECTED_SCHEMAS.items():
        assert demo_20k[name].name == f"{name}.parquet"
        schema = pq.read_schema(demo_20k[name])
        assert [(f.name, f.type) for f in schema] == fields, name


@pytest.mark.parametrize(
    ("rows", "users", "merchants"),
    [(1, 100, 20), (1_999, 100, 20), (10_000, 500, 50), (20_000, 1_000, 100)],
)
def test_table_sizes_follow_the_row_count(tmp_path: Path, rows: int, users: int, merchants: int) -> None:
    paths = generate_demo_data(tmp_path, rows=rows)
    counts = {name: pq.ParquetFile(path).metadata.num_rows for name, path in paths.items()}
    assert counts["transactions"] == rows
    assert counts["users"] == users
    assert counts["merchants"] == merchants
    assert counts["chargebacks"] <= rows


def test_users_sets_the_number_of_card_holders_and_their_payments_stay_coherent(tmp_path: Path) -> None:
    paths = generate_demo_data(tmp_path, rows=3_000, users=2_000)
    users = pq.read_table(paths["users"])
    transactions = pq.read_table(paths["transactions"])
    assert users.num_rows == 2_000 and transactions.num_rows == 3_000
    known = set(users.column("user_id").to_pylist())
    paying = set(transactions.column("user_id").to_pylist())
    assert paying <= known and len(paying) > 1_000  # most of the 2,000 pay at least once


@pytest.mark.parametrize("users", [0, -5, 2.5, True, "100"])
def test_users_must_be_a_positive_integer(tmp_path: Path, users: object) -> None:
    with pytest.raises(InputError, match="users must be an integer number of card holders"):
        generate_demo_data(tmp_path, rows=100, users=users)  # type: ignore[arg-type]


def test_chargebacks_hit_one_to_two_percent_of_transactions(demo_20k: dict[str, Path]) -> None:
    [(share, fraud_share)] = _sql(
        demo_20k,
        "select count(*) / 20000.0, count(*) filter (where reason in ('fraud', 'stolen_card')) / 20000.0 "
        "from chargebacks",
    )
    assert 0.008 <= share <= 0.025
    assert 0.006 <= fraud_share <= share


def test_fraud_is_more_likely_online_and_for_new_accounts(demo_20k: dict[str, Path]) -> None:
    rows = dict(
        _sql(
            demo_20k,
            """
            select t.is_online, avg(case when c.reason in ('fraud', 'stolen_card') then 1.0 else 0.0 end)
            from transactions t left join chargebacks c using (transaction_id)
            group by 1
            """,
        )
    )
    assert rows[True] > 2 * rows[False]
    [(new, old)] = _sql(
        demo_20k,
        """
        select
            avg(case when c.reason in ('fraud', 'stolen_card') then 1.0 else 0.0 end)
                filter (where t.occurred_at < u.signup_at + interval 7 day),
            avg(case when c.reason in ('fraud', 'stolen_card') then 1.0 else 0.0 end)
                filter (where t.occurred_at >= u.signup_at + interval 7 day)
        from transactions t join users u using (user_id) left join chargebacks c using (transaction_id)
        """,
    )
    assert new > old


def test_rows_are_coherent_in_time_and_keys(demo_20k: dict[str, Path]) -> None:
    [row] = _sql(
        demo_20k,
        """
        select
            (select count(*) from transactions t left join users u using (user_id) where u.user_id is null),
            (select count(*) from transactions t left join merchants m using (merchant_id) where m.merchant_id is null),
            (select count(*) from transactions t join users u using (user_id) where t.occurred_at < u.signup_at),
            (select count(*) from transactions where created_at < occurred_at
                                                 or created_at > occurred_at + interval 60 second),
            (select count(*) from chargebacks c join transactions t using (transaction_id)
                where c.reported_at < t.occurred_at + interval 1 day),
            (select count(*) - count(distinct transaction_id) from chargebacks),
            (select count(*) - count(distinct transaction_id) from transactions),
            (select count(*) - count(distinct (user_id, occurred_at)) from transactions),
            (select count(*) from transactions where amount <= 0 or amount is null),
            (select min(least(signup_at, occurred_at, t.created_at, reported_at, m.created_at))
               from transactions t join users u using (user_id) join merchants m using (merchant_id)
               left join chargebacks c using (transaction_id)),
            (select max(greatest(signup_at, occurred_at, t.created_at, coalesce(reported_at, t.created_at)))
               from transactions t join users u using (user_id) left join chargebacks c using (transaction_id))
        """,
    )
    *violations, earliest, latest = row
    assert violations == [0] * 9
    assert earliest.year == 2025 and latest.year == 2025


def test_more_rows_than_one_chunk_stay_consistent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(demo, "CHUNK_ROWS", 1_000)
    paths = generate_demo_data(tmp_path, rows=3_500)
    transactions = pq.ParquetFile(paths["transactions"])
    assert transactions.metadata.num_row_groups == 4
    ids = pq.read_table(paths["transactions"], columns=["transaction_id"])["transaction_id"].to_pylist()
    assert ids == list(range(1, 3_501))


def test_end_moves_every_timestamp_by_whole_days_and_nothing_else(tmp_path: Path) -> None:
    base = generate_demo_data(tmp_path / "base", rows=3_000)
    moved = generate_demo_data(tmp_path / "moved", rows=3_000, end=date(2026, 11, 27))
    for name in base:
        a, b = pq.read_table(base[name]), pq.read_table(moved[name])
        assert a.column_names == b.column_names
        for column in a.column_names:
            if pa.types.is_timestamp(a.schema.field(column).type):
                delta = set(pc.subtract(b[column], a[column]).to_pylist())
                assert len(delta) == 1 and next(iter(delta)).total_seconds() % 86_400 == 0
            else:
                assert a[column].equals(b[column])
    last = pc.max(pq.read_table(moved["transactions"])["occurred_at"]).as_py()
    assert last.date() <= date(2026, 11, 27) and (date(2026, 11, 27) - last.date()).days <= 1


def test_end_must_be_a_date(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="end must be a date"):
        generate_demo_data(tmp_path, rows=100, end="2026-01-01")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"rows": 0}, "rows must be between 1"),
        ({"rows": -5}, "rows must be between 1"),
        ({"rows": "10"}, "rows must be an integer"),
        ({"rows": 2.5}, "rows must be an integer"),
        ({"rows": True}, "rows must be an integer"),
        ({"seed": -1}, "seed must be a non-negative integer"),
        ({"seed": "7"}, "seed must be a non-negative integer"),
    ],
)
def test_bad_arguments_raise_input_error_with_a_fix(tmp_path: Path, kwargs: dict, fragment: str) -> None:
    with pytest.raises(InputError) as caught:
        generate_demo_data(tmp_path, **kwargs)
    assert fragment in str(caught.value)
    assert "To fix this" in str(caught.value)
    assert not list(tmp_path.iterdir())


def test_out_dir_that_is_a_file_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "file"
    target.write_text("x")
    with pytest.raises(InputError, match="is not a directory"):
        generate_demo_data(target, rows=10)


def test_loading_into_postgres_copies_every_row(demo_20k: dict[str, Path]) -> None:
    import psycopg2

    dsn = require_postgres()
    schema = f"fl_demo_{hashlib.sha1(str(demo_20k).encode()).hexdigest()[:10]}"
    try:
        counts = load_demo_data_into_postgres(demo_20k["users"].parent, dsn, schema=schema)
        counts_again = load_demo_data_into_postgres(demo_20k["users"].parent, dsn, schema=schema)
        assert counts == counts_again  # replaces, never appends
        conn = psycopg2.connect(dsn)
        try:
            with conn.cursor() as cur:
                for name, path in demo_20k.items():
                    cur.execute(f'select count(*) from "{schema}"."{name}"')
                    assert cur.fetchone()[0] == counts[name] == pq.ParquetFile(path).metadata.num_rows
                cur.execute(
                    f"select sum(amount), min(occurred_at), max(created_at), sum(is_online::int) "
                    f'from "{schema}".transactions'
                )
                pg_sum, pg_min, pg_max, pg_online = cur.fetchone()
        finally:
            conn.close()
        [(sum_, min_, max_, online)] = _sql(
            demo_20k,
            "select sum(amount), min(occurred_at), max(created_at), sum(is_online::int) from transactions",
        )
        assert pg_sum == pytest.approx(sum_) and (pg_min, pg_max, pg_online) == (min_, max_, online)
    finally:
        drop_postgres_schemas(dsn, schema)


def test_loading_without_files_names_the_missing_ones(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="users.parquet") as caught:
        load_demo_data_into_postgres(tmp_path, "host=127.0.0.1 dbname=test user=postgres")
    assert "generate_demo_data" in str(caught.value)
