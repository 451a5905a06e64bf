"""PostgreSQL training sets: feature_layer's window formulation vs the best hand-written query.

Two workloads, both loaded into PostgreSQL (127.0.0.1:5432, schema fl_bench_pit_pg), each
feature table indexed on (key, event time):

* ``low_cardinality`` (issue 10): flights and weather — a key with 3 values (the origin
  airport), 13,140 weather rows per airport (one every 40 minutes over a year, a few gaps and
  nulls), 336,776 flight rows as entity rows, TTL 3 hours, seven float features.
* ``standard`` (issue 3): 1,000,000 feature rows over 100,000 users, ten float features,
  created-at = event time + 0–60 s, TTL 30 days; 100,000 entity rows.

Every contender reads the entity rows from a warehouse table and fetches its result through the
same ``PostgresEngine.fetch_arrow`` (``COPY … TO STDOUT``), so the comparison is the SQL only.
The floor is the fastest hand-written query in the same run; every contender must return the
same rows (content hash) or the run fails.

    python -m benchmarks.training_set_postgres --repeat 5
    PGOPTIONS='-c work_mem=64MB' python -m benchmarks.training_set_postgres --repeat 5

(``PGOPTIONS`` is libpq's documented way to set server settings for a session; it applies to
every contender alike.)
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

SCHEMA = "fl_bench_pit_pg"
SEED = 20130101
AIRPORTS = ("EWR", "JFK", "LGA")
WEATHER = ("temp", "dewp", "humid", "wind_speed", "precip", "pressure", "visib")
N_FLIGHTS = 336_776
WEATHER_STEP_MIN = 40
STANDARD_FEATURES = tuple(f"f{i}" for i in range(10))


@dataclass(frozen=True)
class Workload:
    name: str
    key: str
    event_time: str
    created_at: str | None
    features: tuple[str, ...]
    ttl: timedelta
    feature_table: str
    entity_table: str
    entity_ts: str
    description: str


LOW = Workload(
    "low_cardinality", "origin", "time_hour", None, WEATHER, timedelta(hours=3), "weather", "flights", "sched_at",
    "3 airports × 13,140 weather rows (every 40 min over 2013, ~2 % gaps, 1 % null humidity); "
    "336,776 flights as entity rows; TTL 3 h; 7 float features",
)
STANDARD = Workload(
    "standard", "user_id", "event_ts", "created_ts", STANDARD_FEATURES, timedelta(days=30), "user_features",
    "entities", "event_timestamp",
    "100,000 users, 1,000,000 feature rows (10 float features, created-at = event + 0–60 s); "
    "100,000 entity rows; TTL 30 days",
)
WORKLOADS = {w.name: w for w in (LOW, STANDARD)}


def _engine():
    from feature_layer.offline.engine import PostgresEngine

    return PostgresEngine(host="127.0.0.1", port=5432, user="postgres", dbname="postgres", schema=SCHEMA)


def _us(year: int, month: int, day: int) -> int:
    import datetime as dt

    return int(dt.datetime(year, month, day, tzinfo=dt.UTC).timestamp() * 1_000_000)


def _load(engine, name: str, table, index: tuple[str, str] | None) -> None:  # noqa: ANN001
    """Load ``table``; index it on ``index`` (feature tables: ``set_indexes``, per ``--index``)."""
    engine.register_arrow("__staged", table)
    engine.execute(f"CREATE TABLE {SCHEMA}.{name} AS SELECT * FROM __staged")
    engine.unregister("__staged")
    if index is not None:
        engine.execute(f"CREATE INDEX ON {SCHEMA}.{name} ({index[0]}, {index[1]})")
    engine.execute(f"ANALYZE {SCHEMA}.{name}")


def low_cardinality_tables():  # noqa: ANN201
    """(weather rows, flight rows) of the low-cardinality workload as Arrow tables (also the Spark benchmark's)."""
    import numpy as np
    import pyarrow as pa

    rng = np.random.default_rng(SEED)
    start, end = _us(2013, 1, 1), _us(2014, 1, 1)
    step = WEATHER_STEP_MIN * 60 * 1_000_000
    grid = np.arange(start, end, step)
    origin, times = [], []
    for airport in AIRPORTS:
        jitter = rng.integers(0, 5 * 60 * 1_000_000, grid.size)  # unique per airport: < one step
        keep = rng.random(grid.size) > 0.02
        origin += [airport] * int(keep.sum())
        times.append((grid + jitter)[keep])
    at = np.concatenate(times)
    columns = {"origin": pa.array(origin), "time_hour": pa.array(at, pa.int64()).cast(pa.timestamp("us"))}
    for name in WEATHER:
        values = rng.normal(50, 20, at.size)
        mask = rng.random(at.size) < (0.01 if name == "humid" else 0.0)
        columns[name] = pa.array(values, mask=mask)
    flights = pa.table(
        {
            "row_id": pa.array(np.arange(N_FLIGHTS)),
            "origin": pa.array(rng.choice(np.array(AIRPORTS), N_FLIGHTS)),
            "sched_at": pa.array(rng.integers(start, end, N_FLIGHTS), pa.int64()).cast(pa.timestamp("us")),
            "delayed": pa.array(rng.integers(0, 2, N_FLIGHTS)),
        }
    )
    return pa.table(columns), flights


def generate_low_cardinality(engine) -> None:  # noqa: ANN001
    weather, flights = low_cardinality_tables()
    _load(engine, "weather", weather, None)
    _load(engine, "flights", flights, ("origin", "sched_at"))


def standard_tables():  # noqa: ANN201
    """(feature rows, entity rows) of the standard workload as Arrow tables (also the Spark benchmark's)."""
    import numpy as np
    import pyarrow as pa

    rng = np.random.default_rng(SEED + 1)
    rows = 1_000_000
    event = rng.integers(_us(2025, 1, 1), _us(2026, 1, 1), rows)
    columns = {
        "user_id": pa.array(rng.integers(0, 100_000, rows)),
        "event_ts": pa.array(event, pa.int64()).cast(pa.timestamp("us")),
        "created_ts": pa.array(event + rng.integers(0, 60_000_001, rows), pa.int64()).cast(pa.timestamp("us")),
    }
    for name in STANDARD_FEATURES:
        columns[name] = pa.array(rng.standard_normal(rows))
    n = 100_000
    entities = pa.table(
        {
            "row_id": pa.array(np.arange(n)),
            "user_id": pa.array(rng.integers(0, 100_000, n)),
            "event_timestamp": pa.array(rng.integers(_us(2025, 2, 1), _us(2026, 2, 1), n), pa.int64()).cast(
                pa.timestamp("us")
            ),
            "label": pa.array(rng.integers(0, 2, n)),
        }
    )
    return pa.table(columns), entities


def generate_standard(engine) -> None:  # noqa: ANN001
    features, entities = standard_tables()
    _load(engine, "user_features", features, None)
    _load(engine, "entities", entities, ("user_id", "event_timestamp"))


# ----------------------------------------------------------------------------- contenders


def _view(w: Workload):
    from feature_layer.registry.model import Feature, FeatureView, Relation

    timestamps = ((w.event_time, "timestamp"),) + (((w.created_at, "timestamp"),) if w.created_at else ())
    return FeatureView(
        name=w.feature_table,
        unique_id=f"model.bench.{w.feature_table}",
        entities=("e",),
        join_keys=(w.key,),
        event_time=w.event_time,
        created_at=w.created_at,
        ttl=w.ttl,
        features=tuple(Feature(f, w.feature_table, "float64") for f in w.features),
        relation=Relation(None, SCHEMA, w.feature_table),
        column_types=((w.key, "string" if w is LOW else "int64"), *timestamps, *((f, "float64") for f in w.features)),
    )


def feature_layer_sql(engine, w: Workload) -> str:  # noqa: ANN001
    """The query ``get_training_set`` runs for this workload (what the timed contender executes)."""
    from feature_layer.offline.training_set import build_training_set

    view = _view(w)
    training = build_training_set(engine, f"{SCHEMA}.{w.entity_table}", [(view, list(view.features))])
    return training.sql("postgres")


def _feature_layer(engine, w: Workload):  # noqa: ANN001, ANN202
    from feature_layer.offline.training_set import build_training_set

    view = _view(w)
    training = build_training_set(engine, f"{SCHEMA}.{w.entity_table}", [(view, list(view.features))])
    return training.to_arrow()


def _ttl(w: Workload) -> str:
    hours = int(w.ttl.total_seconds() // 3600)
    return f"INTERVAL '{hours} hours'"


def _tie_break(w: Workload, table: str, desc: bool) -> str:
    direction = "DESC NULLS LAST" if desc else "ASC NULLS FIRST"
    return f", {table}.{w.created_at} {direction}" if w.created_at else ""


def carry_forward_sql(w: Workload) -> str:
    """Hand-written: number the feature rows per key, union with the entity rows, carry the
    latest number forward with ``max(…) OVER``, join back on it, TTL after (issue 10's query)."""
    feats = ", ".join(f"f.{f}" for f in w.features)
    entity_cols = _entity_columns(w)
    return f"""
WITH numbered AS (
  SELECT f.{w.key}, f.{w.event_time}, {feats},
         row_number() OVER (PARTITION BY f.{w.key} ORDER BY f.{w.event_time}{_tie_break(w, 'f', False)}) AS k
  FROM {SCHEMA}.{w.feature_table} AS f
), events AS (
  SELECT {w.key}, {w.event_time} AS t, k, NULL::bigint AS row_id FROM numbered
  UNION ALL
  SELECT {w.key}, {w.entity_ts}, NULL, row_id FROM {SCHEMA}.{w.entity_table}
), carried AS (
  SELECT row_id, {w.key}, t,
         max(k) OVER (PARTITION BY {w.key} ORDER BY t, k NULLS LAST ROWS UNBOUNDED PRECEDING) AS k
  FROM events
)
SELECT {entity_cols}, {feats}
FROM carried AS c
JOIN {SCHEMA}.{w.entity_table} AS e ON e.row_id = c.row_id
LEFT JOIN numbered AS f ON f.{w.key} = c.{w.key} AND f.k = c.k AND f.{w.event_time} >= c.t - {_ttl(w)}
ORDER BY e.row_id"""


def lateral_sql(w: Workload) -> str:
    """Hand-written: per entity row, the latest feature row within the TTL through the
    (key, event time) index (``LEFT JOIN LATERAL … ORDER BY … DESC LIMIT 1``)."""
    feats = ", ".join(f"f.{f}" for f in w.features)
    return f"""
SELECT {_entity_columns(w)}, {feats}
FROM {SCHEMA}.{w.entity_table} AS e
LEFT JOIN LATERAL (
  SELECT {", ".join(w.features)} FROM {SCHEMA}.{w.feature_table} AS x
  WHERE x.{w.key} = e.{w.key} AND x.{w.event_time} <= e.{w.entity_ts}
    AND x.{w.event_time} >= e.{w.entity_ts} - {_ttl(w)}
  ORDER BY x.{w.event_time} DESC{_tie_break(w, 'x', True)}
  LIMIT 1
) AS f ON TRUE
ORDER BY e.row_id"""


def _entity_columns(w: Workload) -> str:
    rest = "e.delayed" if w is LOW else "e.label"
    return f"e.row_id, e.{w.key}, e.{w.entity_ts}, {rest}" if w is LOW else f"e.row_id, e.{w.key}, e.{w.entity_ts}, {rest}"


HAND_WRITTEN: dict[str, Callable[[Workload], str]] = {
    "hand-written carry-forward (window)": carry_forward_sql,
    "hand-written LATERAL + index": lateral_sql,
}


def _digest(table) -> str:  # noqa: ANN001
    digest = hashlib.sha256()
    for name in table.column_names:
        column = table.column(name).combine_chunks()
        digest.update(column.is_null().to_numpy(zero_copy_only=False).tobytes())
        filled = column.fill_null("" if column.type == "string" else 0)
        digest.update(str(filled.to_pylist()[:: max(1, len(filled) // 5000)]).encode())
        if column.type != "string":
            digest.update(filled.to_numpy(zero_copy_only=False).tobytes())
    return digest.hexdigest()


def _reorder(table, w: Workload):  # noqa: ANN001, ANN202
    """Our result in the hand-written column order (row_id first, as the entity table has it)."""
    first = ["row_id", w.key, w.entity_ts, "delayed" if w is LOW else "label"]
    return table.select(first + list(w.features))


INDEX_MODES = ("natural", "plain", "none")


def set_indexes(engine, mode: str) -> None:  # noqa: ANN001
    """Re-create the feature tables' (key, time) indexes: ``natural`` (weather's unique — one
    observation per airport and time — the user features' plain), ``plain`` (both plain) or
    ``none`` (no index on either feature table: LATERAL would scan per entity row)."""
    for w in (LOW, STANDARD):
        engine.execute(f"DROP INDEX IF EXISTS {SCHEMA}.{w.feature_table}_key_time")
        if mode != "none":
            kind = "UNIQUE INDEX" if mode == "natural" and w is LOW else "INDEX"
            engine.execute(
                f"CREATE {kind} {w.feature_table}_key_time ON {SCHEMA}.{w.feature_table} ({w.key}, {w.event_time})"
            )
        engine.execute(f"ANALYZE {SCHEMA}.{w.feature_table}")


def run_workload(engine, w: Workload, repeat: int, index: str = "natural") -> tuple[list[list[str]], list[str]]:  # noqa: ANN001
    contenders: dict[str, Callable[[], object]] = {"feature_layer": lambda: _reorder(_feature_layer(engine, w), w)}
    for name, build in HAND_WRITTEN.items():
        if index == "none" and build is lateral_sql:
            continue  # without an index every probe scans the feature table: hours, not a floor
        sql = build(w)
        contenders[name] = lambda sql=sql: engine.fetch_arrow(sql)
    times: dict[str, list[float]] = {name: [] for name in contenders}
    digests: dict[str, set[str]] = {name: set() for name in contenders}
    rows = matched = 0
    for name, run in contenders.items():  # warm-up: caches and plans alike for everyone
        result = run()
        digests[name].add(_digest(result))
        rows, matched = result.num_rows, result.num_rows - result.column(w.features[0]).null_count
    for _ in range(repeat):  # interleaved, so load from other users of the machine hits all alike
        for name, run in contenders.items():
            began = time.perf_counter()
            result = run()
            times[name].append(time.perf_counter() - began)
            digests[name].add(_digest(result))
            del result
    every = set().union(*digests.values())
    if len(every) != 1:
        raise SystemExit(f"{w.name}: contenders disagree: {digests}")
    hand = [n for n in contenders if n != "feature_layer"]
    floor_name = min(hand, key=lambda n: statistics.median(times[n]))
    # Per round, the floor is the fastest hand-written query of that round (the strictest floor).
    floors = [min(times[n][i] for n in hand) for i in range(repeat)]
    table = []
    for name, ts in times.items():
        ratios = [t / f for t, f in zip(ts, floors, strict=True)]
        table.append(
            [
                w.name,
                name + (" ← floor" if name == floor_name else ""),
                f"{rows:,}",
                f"{matched:,}",
                f"{min(ts):.3f}",
                f"{statistics.median(ts):.3f}",
                f"{max(ts):.3f}",
                f"{statistics.median(ratios):.2f}×",
                f"{min(ratios):.2f}–{max(ratios):.2f}×",
            ]
        )
    notes = [f"{w.name}: every contender returns the identical training set (content hash), {rows:,} rows."]
    return table, notes


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workload", nargs="+", choices=list(WORKLOADS), default=list(WORKLOADS))
    parser.add_argument("--repeat", type=int, default=5, help="timed runs per contender, interleaved")
    parser.add_argument("--keep", action="store_true", help="keep (and reuse) the loaded tables")
    parser.add_argument("--out", type=Path, help="write the report (markdown) into this file's PostgreSQL section")
    parser.add_argument("--index", choices=INDEX_MODES, default="natural",
                        help="feature-table indexes: natural (weather unique, user features plain), plain, none")
    parser.add_argument("--print-sql", action="store_true", help="print every contender's SQL and exit")
    args = parser.parse_args(argv)
    from benchmarks.common import markdown_table

    engine = _engine()
    loaded = engine.fetch_arrow(
        f"SELECT count(*) AS n FROM information_schema.tables WHERE table_schema = '{SCHEMA}'"
    ).column("n")[0].as_py()
    if not (args.keep and loaded == 4):
        started = time.perf_counter()
        engine.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
        engine.execute(f"CREATE SCHEMA {SCHEMA}")
        generate_low_cardinality(engine)
        generate_standard(engine)
        print(f"loaded in {time.perf_counter() - started:.1f}s", file=sys.stderr)
    set_indexes(engine, args.index)
    settings = engine.fetch_arrow(
        "SELECT current_setting('work_mem') AS work_mem, current_setting('max_parallel_workers_per_gather') AS par, "
        "version() AS v"
    ).to_pylist()[0]
    if args.print_sql:
        for name in args.workload:
            w = WORKLOADS[name]
            print(f"-- {name}: feature_layer\n{feature_layer_sql(engine, w)}\n")
            for contender, build in HAND_WRITTEN.items():
                print(f"-- {name}: {contender}{build(w)}\n")
        return
    table, notes = [], []
    load_before = _loadavg()
    for name in args.workload:
        rows, more = run_workload(engine, WORKLOADS[name], args.repeat, args.index)
        table += rows
        notes += more
        print(markdown_table(COLUMNS, rows), file=sys.stderr)
    if not args.keep:
        engine.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
    engine.close()
    report = markdown_table(COLUMNS, table)
    load = f"{load_before} before, {_loadavg()} after (1, 5, 15 min)"
    print(report)
    print(f"load average: {load}", file=sys.stderr)
    if args.out:
        command = "python -m benchmarks.training_set_postgres " + " ".join(argv if argv is not None else sys.argv[1:])
        if os.environ.get("PGOPTIONS"):
            command = f"PGOPTIONS='{os.environ['PGOPTIONS']}' {command}"
        section = render(command, report, notes, settings, args.workload, load)
        write_section(args.out, section)
        print(f"wrote {args.out}", file=sys.stderr)


COLUMNS = ["workload", "contender", "rows out", "rows with features", "best (s)", "median (s)", "worst (s)",
           "median of per-round ratios", "per-round range"]
BEGIN, END = "<!-- postgres-training-set:begin -->", "<!-- postgres-training-set:end -->"


def render(command: str, table: str, notes: list[str], settings: dict, workloads: list[str], load: str) -> str:
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    described = "\n".join(f"- `{n}`: {WORKLOADS[n].description}." for n in workloads)
    return f"""{BEGIN}
## Training sets on PostgreSQL (window formulation) vs the best hand-written query

Generated by `{command}` on {when} ({os.cpu_count()} CPUs shared with other developers' test runs,
{settings['v'].split(' on ')[0]}, work_mem {settings['work_mem']},
max_parallel_workers_per_gather {settings['par']}).

{table}

{chr(10).join(f"- {n}" for n in notes)}

**Workloads** (generated deterministically with numpy, loaded into schema `{SCHEMA}`, each table
indexed on (key, time) and analyzed):
{described}

**Contenders**, interleaved (each timed run of each contender in turn, after one warm-up run
each), all reading the entity rows from the warehouse table and fetching the result through the
same `PostgresEngine.fetch_arrow` (`COPY … TO STDOUT`):
- `feature_layer`: `build_training_set(engine, "{SCHEMA}.<entity table>", [(view, features)]).to_arrow()`
  — the generated SQL (`python -m benchmarks.training_set_postgres --print-sql` prints it) plus
  the zero-row type query, the catalog reads (indexes, NOT NULL, plain heap) and the null check of
  the entity timestamp on the returned rows.
- `hand-written carry-forward (window)`: what an expert writes (issue 10): number the feature
  rows per key, union them with the entity rows, carry the latest number forward with
  `max(k) OVER (PARTITION BY key ORDER BY t, k NULLS LAST ROWS UNBOUNDED PRECEDING)`, join back,
  TTL after. For the low-cardinality workload:

  ```sql
{_indent(carry_forward_sql(LOW))}
  ```
- `hand-written LATERAL + index`: per entity row, an index probe for the latest row within the
  TTL:

  ```sql
{_indent(lateral_sql(LOW))}
  ```

Each round times every contender once; a contender's per-round ratio is its time over the
fastest hand-written query of that round (the floor), and the table gives the median of those
ratios and their range; "← floor" marks the hand-written query with the lower median. The
spread (best … worst) shows the noise of the shared machine; load average {load}.
{END}
"""


def _loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


def _indent(sql: str) -> str:
    return "\n".join("  " + line for line in sql.strip().splitlines())


def write_section(path: Path, section: str) -> None:
    text = path.read_text() if path.exists() else ""
    if BEGIN in text and END in text:
        before, rest = text.split(BEGIN, 1)
        after = rest.split(END, 1)[1]
        text = before + section.rstrip("\n") + after
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text)


if __name__ == "__main__":
    main()
