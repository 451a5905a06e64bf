"""Probe for the next stream lever (#11, not built): the newest row per card, windows vs aggregates.

    python -m benchmarks.stream_newest_row_probe [--cards 5000] [--rows-per-card 7]

A micro-batch keeps only each entity's newest output row, but the view's SQL computes its windows
for every history row. This times, on DuckDB with 1 thread, ``user_transaction_features``' nine
windows (RANGE frames of 1 h … 30 d, ``lag``) over the cards' rows, then the newest row picked,
against the same values as aggregates with FILTERs relative to each card's newest event time (what
a "newest-row" rewrite pass would generate). Ties at the newest time are not treated here, so the
two are not claimed equal row for row: this sizes the lever, it does not implement it.
"""

from __future__ import annotations

import argparse
import statistics
import time

import duckdb
import numpy as np
import pyarrow as pa


def _window(agg: str, column: str, width: str) -> str:
    return (f"{agg}({column}) OVER (PARTITION BY user_id ORDER BY occurred_at RANGE BETWEEN INTERVAL '{width}' "
            "- INTERVAL '1 microsecond' PRECEDING AND CURRENT ROW)")


WINDOWS = f"""SELECT user_id, arg_max(struct_pack(c1, c24, c7, s24, a7, m30, o24, r, lagt), occurred_at) FROM (
 SELECT user_id, occurred_at, {_window('count', '*', '1 hour')} c1, {_window('count', '*', '24 hours')} c24,
  {_window('count', '*', '7 days')} c7, {_window('sum', 'amount', '24 hours')} s24, {_window('avg', 'amount', '7 days')} a7,
  {_window('max', 'amount', '30 days')} m30, {_window('sum', 'case when is_online then 1 else 0 end', '24 hours')} o24,
  amount / {_window('avg', 'amount', '30 days')} r,
  lag(occurred_at) OVER (PARTITION BY user_id ORDER BY occurred_at) lagt FROM t) GROUP BY user_id"""

AGGREGATES = """WITH n AS (SELECT user_id, max(occurred_at) tn FROM t GROUP BY user_id),
 x AS (SELECT t.*, n.tn FROM t JOIN n USING (user_id))
 SELECT user_id, struct_pack(
  c1 := count(*) FILTER (WHERE occurred_at > tn - INTERVAL 1 hour),
  c24 := count(*) FILTER (WHERE occurred_at > tn - INTERVAL 24 hours),
  c7 := count(*) FILTER (WHERE occurred_at > tn - INTERVAL 7 days),
  s24 := sum(amount) FILTER (WHERE occurred_at > tn - INTERVAL 24 hours),
  a7 := avg(amount) FILTER (WHERE occurred_at > tn - INTERVAL 7 days),
  m30 := max(amount) FILTER (WHERE occurred_at > tn - INTERVAL 30 days),
  o24 := sum(case when is_online then 1 else 0 end) FILTER (WHERE occurred_at > tn - INTERVAL 24 hours),
  r := arg_max(amount, occurred_at) / avg(amount) FILTER (WHERE occurred_at > tn - INTERVAL 30 days),
  lagt := max(occurred_at) FILTER (WHERE occurred_at < tn)) FROM x GROUP BY user_id"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cards", type=int, default=5000)
    parser.add_argument("--rows-per-card", type=int, default=7)
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args()
    rng = np.random.default_rng(1)
    n = args.cards * args.rows_per_card
    start = np.datetime64("2026-12-01T00:00:00")
    table = pa.table({
        "user_id": np.repeat(np.arange(args.cards), args.rows_per_card),
        "occurred_at": start + rng.integers(0, 40 * 86400 * 10**6, n).astype("timedelta64[us]"),
        "amount": rng.gamma(2.0, 30.0, n),
        "is_online": rng.random(n) < 0.3,
    })
    con = duckdb.connect()
    con.execute("SET threads = 1")
    con.register("t", table)
    times: dict[str, list[float]] = {"windows over every row": [], "aggregates for the newest row": []}
    for _ in range(args.repeat):  # interleaved
        for name, sql in zip(times, (WINDOWS, AGGREGATES), strict=True):
            began = time.perf_counter()
            con.sql(sql).to_arrow_table()
            times[name].append(time.perf_counter() - began)
    for name, ts in times.items():
        print(f"{name}: {n:,} rows, {args.cards:,} cards: median {statistics.median(ts) * 1000:.1f} ms")


if __name__ == "__main__":
    main()
