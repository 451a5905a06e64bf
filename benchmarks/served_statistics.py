"""Served-statistics benchmark: one view of 1,000,000 rows over 100,000 entities on DuckDB.

Times ``feature_layer.online.statistics.compute`` (statistics of each entity's latest value:
one streamed query, then Arrow) interleaved (A B C A B C …) with two floors measured in the
same run: the materializer's own latest-per-entity query alone (what reading the served rows
costs anyway) and one plain aggregate over every row (what the old every-row statistics cost).

    python -m benchmarks.served_statistics [--rows 1000000] [--entities 100000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import statistics
import time
from datetime import UTC, datetime, timedelta

from feature_layer.offline.engine import DuckDBEngine
from feature_layer.online import statistics as served
from feature_layer.registry.model import Feature, FeatureView, Relation
from feature_layer.sql.latest import latest_values


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--entities", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    engine = DuckDBEngine(":memory:")
    engine.execute(f"""CREATE TABLE main.events AS SELECT (i % {args.entities})::BIGINT AS user_id,
      TIMESTAMP '2025-01-01' + INTERVAL (i // {args.entities}) DAY + INTERVAL (i % 1000) SECOND AS ts,
      random() * 1000 AS x, exp(random() * 8) AS y, 'c' || (i % 17)::VARCHAR AS label, (i % 3 = 0) AS flag
      FROM range({args.rows}) t(i)""")
    features = (Feature("x", "v", "float64"), Feature("y", "v", "float64"), Feature("label", "v", "string"),
                Feature("flag", "v", "bool"))
    view = FeatureView("v", "model.p.v", ("user",), ("user_id",), "ts", features, Relation(None, "main", "events"),
                       ttl=timedelta(days=30))
    end = datetime(2025, 2, 1, tzinfo=UTC)
    every_row = "select count(*), count(x), min(x), max(x), avg(x), count(y), min(y), max(y), avg(y), " \
                "approx_count_distinct(label), approx_count_distinct(flag) from main.events"
    times: dict[str, list[float]] = {"compute": [], "latest": [], "every_row": []}
    for _ in range(args.repeat):
        for name, run in (("compute", lambda: served.compute(engine, view, end=end)),
                          ("latest", lambda: engine.fetch_arrow(latest_values(view, end=end))),
                          ("every_row", lambda: engine.fetch_arrow(every_row))):
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"### Served statistics, {args.rows:,} rows / {args.entities:,} entities, 4 features, {args.repeat} runs\n")
    print("| what | median s | ratio to the latest-per-entity query |")
    print("|---|---|---|")
    for name, label in (("compute", "statistics of what is served (compute)"),
                        ("latest", "floor: the latest-per-entity query alone"),
                        ("every_row", "floor: one aggregate over every row (the old scope)")):
        print(f"| {label} | {med[name]:.3f} | {med[name] / med['latest']:.2f}x |")


if __name__ == "__main__":
    main()
