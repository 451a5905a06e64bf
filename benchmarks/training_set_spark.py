"""Spark training sets: feature_layer's generated Spark SQL vs hand-written Spark SQL, same session.

The standard workload (``benchmarks.training_set_postgres.standard_tables``: 1,000,000 feature
rows over 100,000 users, ten float features, created-at = event time + 0–60 s, TTL 30 days;
100,000 entity rows), written as Parquet tables of a local Spark (``local[2]``, the example
project's settings: 4 shuffle partitions, UTC session), read by every contender from those
tables. ``--scale 0.1`` takes a deterministic fraction of both (every tenth user).

Contenders, interleaved (A B C A B C …) after one warm-up run each, each collected to Arrow
with the same ``SparkEngine.fetch_arrow`` (``DataFrame.toArrow``); every one must return the same
rows (content hash) or the run fails:

* ``feature_layer``: ``build_training_set(engine, "<db>.entities", [(view, features)]).to_arrow()``.
* ``hand-written carry-forward``: entity and feature rows in one ``UNION ALL``, one window per key
  carrying the latest feature row forward as a struct (``last(struct, true) OVER (… ROWS
  UNBOUNDED PRECEDING)``), TTL after — one sort, no join back.
* ``hand-written range join + max_by``: join on the key with the time window in the join
  condition, ``max_by(struct(features), struct(event time, created-at))`` per entity row.

    python -m benchmarks.training_set_spark --repeat 3
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from benchmarks.training_set_postgres import STANDARD, STANDARD_FEATURES, _view, standard_tables

DB = "fl_bench_pit_spark"
CONF = {
    "spark.master": "local[2]",
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.shuffle.partitions": "4",
    "spark.ui.enabled": "false",
    "spark.sql.sources.default": "parquet",
    "spark.sql.legacy.createHiveTableByDefault": "false",
    "spark.driver.memory": "2g",
    "spark.ui.showConsoleProgress": "false",
}
FEATS = ", ".join(STANDARD_FEATURES)


def _tables(scale: float):  # noqa: ANN202
    """The standard workload's tables, only the users ``user_id % round(1 / scale) == 0`` kept."""
    features, entities = standard_tables()
    if scale < 1.0:
        step = round(1 / scale)
        features = features.filter(features["user_id"].to_numpy() % step == 0)
        entities = entities.filter(entities["user_id"].to_numpy() % step == 0)
    return features, entities


def load(engine, scale: float) -> tuple[int, int]:  # noqa: ANN001
    features, entities = _tables(scale)
    engine.execute(f"DROP DATABASE IF EXISTS {DB} CASCADE")
    engine.execute(f"CREATE DATABASE {DB}")
    for name, table in (("user_features", features), ("entities", entities)):
        engine.register_arrow(f"__stage_{name}", table)
        engine.execute(f"CREATE TABLE {DB}.{name} USING parquet AS SELECT * FROM __stage_{name}")
        engine.unregister(f"__stage_{name}")
    return features.num_rows, entities.num_rows


def _feature_layer(engine):  # noqa: ANN001, ANN202
    from feature_layer.offline.training_set import build_training_set
    from feature_layer.registry.model import Relation

    view = replace(_view(STANDARD), relation=Relation(None, DB, "user_features"))
    training = build_training_set(engine, f"{DB}.entities", [(view, list(view.features))])
    return training


def carry_forward_sql() -> str:
    """Hand-written: union, carry the latest feature row forward as a struct, TTL after."""
    struct = ", ".join(f"'{f}', {f}" for f in ("event_ts", *STANDARD_FEATURES))
    picked = ",\n       ".join(
        f"CASE WHEN latest.event_ts >= t - INTERVAL 30 DAYS THEN latest.{f} END AS {f}" for f in STANDARD_FEATURES
    )
    return f"""
WITH u AS (
  SELECT user_id, event_ts AS t, 1 AS is_feature, created_ts, named_struct({struct}) AS row,
         CAST(NULL AS BIGINT) AS row_id, CAST(NULL AS BIGINT) AS label
  FROM {DB}.user_features
  UNION ALL
  SELECT user_id, event_timestamp, 0, NULL, NULL, row_id, label FROM {DB}.entities
), carried AS (
  SELECT row_id, user_id, t, label, is_feature,
         last(row, true) OVER (PARTITION BY user_id ORDER BY t, is_feature DESC, created_ts
                               ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS latest
  FROM u
)
SELECT row_id, user_id, t AS event_timestamp, label,
       {picked}
FROM carried WHERE is_feature = 0
ORDER BY row_id"""


def range_join_sql() -> str:
    """Hand-written: join on the key within the TTL window, ``max_by`` the latest row per entity row."""
    fields = ", ".join(f"b.best.{f} AS {f}" for f in STANDARD_FEATURES)
    return f"""
WITH best AS (
  SELECT e.row_id, max_by(struct({", ".join(f"f.{x}" for x in STANDARD_FEATURES)}),
                          struct(f.event_ts, f.created_ts)) AS best
  FROM {DB}.entities AS e
  JOIN {DB}.user_features AS f
    ON f.user_id = e.user_id AND f.event_ts <= e.event_timestamp
   AND f.event_ts >= e.event_timestamp - INTERVAL 30 DAYS
  GROUP BY e.row_id
)
SELECT e.row_id, e.user_id, e.event_timestamp, e.label, {fields}
FROM {DB}.entities AS e LEFT JOIN best AS b ON b.row_id = e.row_id
ORDER BY e.row_id"""


HAND_WRITTEN: dict[str, Callable[[], str]] = {
    "hand-written carry-forward (last struct)": carry_forward_sql,
    "hand-written range join + max_by": range_join_sql,
}


def _digest(table) -> str:  # noqa: ANN001
    import pyarrow as pa

    # Spark tables have no intrinsic order: feature_layer returns a warehouse table's rows in scan
    # order (files are read largest first), the hand-written queries by row_id; compare as sets.
    table = table.select(["row_id", "user_id", "event_timestamp", "label", *STANDARD_FEATURES]).sort_by("row_id")
    table = table.set_column(2, "event_timestamp", table.column(2).cast(pa.timestamp("us")))
    digest = hashlib.sha256()
    for name in table.column_names:
        column = table.column(name).combine_chunks()
        digest.update(column.is_null().to_numpy(zero_copy_only=False).tobytes())
        digest.update(column.fill_null(0).to_numpy(zero_copy_only=False).tobytes())
    return digest.hexdigest()


def run(engine, repeat: int, skip: tuple[str, ...] = ()) -> tuple[list[list[str]], int, int]:  # noqa: ANN001
    contenders: dict[str, Callable[[], object]] = {"feature_layer": lambda: _feature_layer(engine).to_arrow()}
    hand = {name: build for name, build in HAND_WRITTEN.items() if not any(word in name for word in skip)}
    for name, build in hand.items():
        sql = build()
        contenders[name] = lambda sql=sql: engine.fetch_arrow(sql)
    times: dict[str, list[float]] = {name: [] for name in contenders}
    digests: dict[str, set[str]] = {name: set() for name in contenders}
    rows = matched = 0
    for name, go in contenders.items():  # warm-up
        began = time.perf_counter()
        result = go()
        print(f"warm-up {name}: {time.perf_counter() - began:.2f}s", file=sys.stderr)
        digests[name].add(_digest(result))
        rows, matched = result.num_rows, result.num_rows - result.column("f0").null_count
    for _ in range(repeat):
        for name, go in contenders.items():
            began = time.perf_counter()
            result = go()
            times[name].append(time.perf_counter() - began)
            digests[name].add(_digest(result))
            del result
    if len(set().union(*digests.values())) != 1:
        raise SystemExit(f"contenders disagree: {digests}")
    floor_name = min(hand, key=lambda n: statistics.median(times[n]))
    floor = times[floor_name]
    table = [
        [
            name + (" ← floor" if name == floor_name else ""),
            f"{min(ts):.2f}",
            f"{statistics.median(ts):.2f}",
            f"{max(ts):.2f}",
            _ratios([t / f for t, f in zip(ts, floor, strict=True)]),
        ]
        for name, ts in times.items()
    ]
    return table, rows, matched


def _ratios(ratios: list[float]) -> str:
    """Median of the per-round ratios, with their range."""
    return f"{statistics.median(ratios):.2f}× ({min(ratios):.2f}–{max(ratios):.2f}×)"


COLUMNS = ["contender", "best (s)", "median (s)", "worst (s)", "median of per-round ratios to the floor"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per contender, interleaved")
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of the standard workload's users")
    parser.add_argument("--print-sql", action="store_true")
    parser.add_argument("--skip", action="append", default=[], help="leave out hand-written contenders naming this word")
    parser.add_argument("--out", type=Path, help="write the report (markdown) to this file (docs/bench_training_set_spark.md)")
    args = parser.parse_args(argv)
    from benchmarks.common import markdown_table
    from feature_layer.offline.spark import SparkEngine

    before = Path("/proc/loadavg").read_text().strip() if Path("/proc/loadavg").exists() else "?"
    folder = Path(tempfile.mkdtemp(prefix="fl_bench_spark_"))
    started = time.perf_counter()
    engine = SparkEngine(conf={**CONF, "spark.sql.warehouse.dir": str(folder / "warehouse")})
    try:
        n_features, n_entities = load(engine, args.scale)
        print(f"session + load: {time.perf_counter() - started:.1f}s", file=sys.stderr)
        if args.print_sql:
            print(f"-- feature_layer\n{_feature_layer(engine).sql()}\n")
            for name, build in HAND_WRITTEN.items():
                print(f"-- {name}{build()}\n")
            return
        table, rows, matched = run(engine, args.repeat, tuple(args.skip))
        version = engine.session.version
    finally:
        engine.close()
        shutil.rmtree(folder, ignore_errors=True)
    report = markdown_table(COLUMNS, table)
    command = "python -m benchmarks.training_set_spark " + " ".join(argv if argv is not None else sys.argv[1:])
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    text = (
        f"`{command}` — {stamp}, Spark {version}, load average before {before}, {CONF['spark.master']}, "
        f"{os.cpu_count()} CPUs shared, load average after {os.getloadavg()[0]:.1f}; {n_features:,} feature rows, "
        f"{n_entities:,} entity rows → {rows:,} rows out, {matched:,} with features; identical results "
        f"(content hash).\n\n{report}\n"
    )
    print(text)
    if args.out is not None:
        args.out.write_text(f"# Spark training set benchmark\n\n{__doc__.strip()}\n\n## Last run\n\n{text}")


if __name__ == "__main__":
    main()
