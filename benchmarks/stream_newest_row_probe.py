"""The newest-row pass (#11) on real micro-batches: the view SQL stage with and without it.

    python -m benchmarks.stream_newest_row_probe [--users 1000000] [--history 2] [--batches 60] [--warm 400]

Set-up as ``benchmarks.stream_profile`` (the example project, ``--history`` demo payments per card
holder, ``dbt build``, both streamed views materialized into a private redis-server), then the
consumer's pipeline in this process is handed ``--warm`` batches of ``--batch`` payments to grow the
buffer, then ``--batches`` more. After each of those the stage that runs each view's SQL over the
batch's input and picks each entity's latest row (the pipeline's ``_latest`` query, plus filling the
view's input from the batch's history where it has its own) is timed on the same input, interleaved,
in the same DuckDB connection: through the newest-row pass (what the pipeline runs), over the view's
SQL as dbt runs it (windows for every input row), and, for views keyed like the buffer that the
pipeline gives a horizon input, through the pass over the touched entities' whole history. The results are compared (same rows; doubles to 1e-12 relative).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa

from benchmarks.stream import REPO, setup
from benchmarks.stream_profile import payment_batch, population


def _chain_sql(pipeline: object, suffix: str, *, newest: bool, input_table: str | None = None) -> dict[str, str]:
    """Each view's latest-row query over its local views (defined here under ``suffix``): through the
    newest-row pass or over the SQL as dbt runs it, reading ``input_table`` (default: the view's input)."""
    from feature_layer.registry.model import Relation
    from feature_layer.sql.latest import latest_values
    from feature_layer.stream.newest import newest_rows
    from feature_layer.stream.pipeline import _FAR_END, _q
    from feature_layer.stream.plan import local_name, rewrite_model

    out = {}
    for i, plan in enumerate(pipeline.plans):  # type: ignore[attr-defined]
        source = input_table or pipeline._inputs[plan.view.name]  # type: ignore[attr-defined]
        for node in plan.models:
            tree = rewrite_model(plan, node, source, f"_{i}{suffix}")
            if newest and node is plan.models[-1]:
                tree = newest_rows(tree, plan.keys, plan.view.event_time)
            pipeline.con.execute(f"CREATE TEMP VIEW {_q(local_name(node) + f'_{i}{suffix}')} AS {tree.sql('duckdb')}")  # type: ignore[attr-defined]
        name = local_name(plan.models[-1]) + f"_{i}{suffix}"
        local = replace(plan.view, relation=Relation(database=None, schema="", identifier=name))
        out[plan.view.name] = latest_values(local, end=_FAR_END, dialect="duckdb").sql(dialect="duckdb")
    return out


def _same(a: pa.Table, b: pa.Table, keys: list[str]) -> bool:
    """Same rows, per entity; doubles to the consistency tests' tolerance (``tests.stream_helpers``)."""
    from tests.stream_helpers import _same_row

    ra, rb = (t.sort_by([(k, "ascending") for k in keys]).to_pylist() for t in (a, b))
    return len(ra) == len(rb) and all(_same_row(x, y) for x, y in zip(ra, rb, strict=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--history", type=int, default=2)
    parser.add_argument("--batch", type=int, default=5_000)
    parser.add_argument("--warm", type=int, default=400, help="batches before the timed ones (grow the buffer)")
    parser.add_argument("--batches", type=int, default=60)
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="bench-stream-newest-"))
    project, server, _ = setup(base, args.history * args.users, users=args.users)
    sys.path.insert(0, str(REPO))
    from feature_layer.client import FeatureStore
    from feature_layer.stream.consumer import open_consumer
    from tests.conftest import clean_project_env

    with clean_project_env():
        store = FeatureStore(project)
        users, merchants, first = population(store)
        start = datetime.now(UTC).replace(tzinfo=None, microsecond=0)
        pipeline = open_consumer(store, log_seconds=1e9).pipeline
        print(f"newest-row pass per view (None: applies): {pipeline.newest_rows}", flush=True)
        from feature_layer.stream.pipeline import HISTORY

        windows = _chain_sql(pipeline, "_all_rows", newest=False)
        from_history = _chain_sql(pipeline, "_from_history", newest=True, input_table=HISTORY)
        rng = np.random.default_rng(7)
        times: dict[str, list[float]] = {}
        for b in range(args.warm + args.batches):
            events = payment_batch(rng, users, merchants, first, start, b * args.batch, args.batch, pipeline.schema,
                                   online_share=0.3)
            pipeline.process(events, [f"{b}-0", f"{b}-{args.batch - 1}"])
            if b < args.warm:
                continue
            for plan in pipeline.plans:
                name = plan.view.name
                fills = pipeline._inputs[name] != HISTORY
                contenders = [("newest-row pass (the pipeline)", pipeline._latest[name], fills),
                              ("windows over every row", windows[name], fills),
                              ("newest-row pass over the whole history", from_history[name], False)]
                if set(plan.keys) != set(pipeline.keys) or not fills:  # other keys: __fl_hist holds other
                    contenders.pop()  # entities too; no fill: the pipeline already reads __fl_hist
                if b % 2:
                    contenders.reverse()
                results = {}
                for label, sql, fill in contenders:
                    began = time.perf_counter()
                    if fill:  # the view's input (horizon) is filled per batch: part of the stage
                        pipeline._fill_input(plan, pipeline._inputs[name], events, whole=True)
                    results[label] = pipeline.con.sql(sql).to_arrow_table()
                    times.setdefault(f"{name}: {label}", []).append(time.perf_counter() - began)
                first_result, *others = results.values()
                for other in others:
                    assert _same(first_result, other, list(plan.keys)), f"{name}: formulations differ on batch {b}"
        rows = pipeline.con.execute(f"SELECT count(*) FROM {pipeline._inputs[pipeline.plans[0].view.name]}").fetchall()
        print(f"{args.users:,} card ids, history {args.history}/card, {args.warm} warm-up batches of {args.batch:,}, "
              f"buffer {pipeline.buffered:,} rows; last input of {pipeline.plans[0].view.name}: {rows[0][0]:,} rows")
        for label, ts in times.items():
            print(f"  {label}: median {statistics.median(ts) * 1000:.1f} ms, p90 "
                  f"{sorted(ts)[int(len(ts) * 0.9)] * 1000:.1f} ms over {len(ts)} batches")
        pipeline.close()
        store.close()
    server.stop()


if __name__ == "__main__":
    main()
