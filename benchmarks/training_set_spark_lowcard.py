"""Spark training set on the low-cardinality workload: the default formulation vs forced ``carry``.

The PostgreSQL benchmark's low-cardinality workload (``training_set_postgres.low_cardinality_tables``:
3 airports × ~12,900 weather rows, 336,776 flights as entity rows, TTL 3 h), as Parquet tables of a
local Spark (``local[2]``, the Spark benchmark's settings). The default formulation joins a view
with a TTL by range (keys + a TTL-wide time bucket, ``feature_layer/sql/range_join.py``); forced
``carry`` runs the union + one sort per key. Each contender runs twice (the first warms up);
both must return the same rows.

    python -m benchmarks.training_set_spark_lowcard [--fraction 0.1]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from benchmarks.training_set_postgres import LOW, _view, low_cardinality_tables
from benchmarks.training_set_spark import CONF

DB = "fl_bench_lowcard"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fraction", type=float, default=1.0, help="keep the first fraction of the flights")
    args = parser.parse_args(argv)
    from feature_layer.offline.spark import SparkEngine
    from feature_layer.offline.training_set import build_training_set
    from feature_layer.registry.model import Relation

    folder = Path(tempfile.mkdtemp(prefix="fl_bench_lowcard_"))
    engine = SparkEngine(conf={**CONF, "spark.sql.warehouse.dir": str(folder / "warehouse")})
    try:
        weather, flights = low_cardinality_tables()
        flights = flights.slice(0, int(flights.num_rows * args.fraction))
        engine.execute(f"CREATE DATABASE IF NOT EXISTS {DB}")
        for name, table in (("weather", weather), ("flights", flights)):
            engine.register_arrow(f"__stage_{name}", table)
            engine.execute(f"CREATE TABLE {DB}.{name} USING parquet AS SELECT * FROM __stage_{name}")
            engine.unregister(f"__stage_{name}")
        view = replace(_view(LOW), relation=Relation(None, DB, "weather"))
        results = {}
        for strategy in (None, "carry"):
            for run in ("warm-up", "timed"):
                began = time.perf_counter()
                training = build_training_set(engine, f"{DB}.flights", [(view, list(view.features))], strategy=strategy)
                out = training.to_arrow().sort_by("row_id")
                print(f"{strategy or 'default (range join)'} {run}: {time.perf_counter() - began:.2f} s, "
                      f"{out.num_rows:,} rows, {out.num_rows - out.column('temp').null_count:,} with features", flush=True)
            results[strategy] = out
        if not results[None].equals(results["carry"]):
            raise SystemExit("the two formulations disagree")
        print(f"{weather.num_rows:,} weather rows, {flights.num_rows:,} flights; identical results")
    finally:
        engine.close()
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
