"""``demo-data`` and ``demo``: the example project end to end, for a first look."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import click

from feature_layer.cli.base import Context, handle_errors, main, render_table
from feature_layer.cli.registry_cmds import describe_counts
from feature_layer.config import warehouse_settings
from feature_layer.durations import format_duration

DEMO_SERVICE = "fraud_model_v1"


@main.command("demo-data")
@click.option("--rows", type=click.IntRange(min=1), default=100_000, show_default=True,
              help="Number of card transactions to generate (10k to 10M+).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("data/raw"), show_default=True,
              help="Folder for the Parquet files.")
@click.option("--seed", type=int, default=7, show_default=True, help="Same seed, same data.")
@handle_errors
def demo_data(rows: int, out: Path, seed: int) -> None:
    """Generate the example project's raw data (users, merchants, transactions, chargebacks)."""
    from feature_layer.demo.data import generate_demo_data

    start = time.perf_counter()
    paths = generate_demo_data(out, rows=rows, seed=seed)
    took = time.perf_counter() - start
    for name, path in paths.items():
        click.echo(f"{name:<14} {path}  ({path.stat().st_size / 1e6:.1f} MB)")
    click.echo(f"Generated {rows:,} transactions in {took:.1f}s.")


def _preview(table: Any, max_cols: int) -> str:
    """A few rows as pandas prints them (the demo runs with the dev extras installed)."""
    from feature_layer.extras import require

    require("pandas", "The demo's table preview")
    return table.to_pandas().to_string(max_cols=max_cols, max_colwidth=18)


def _step(title: str) -> None:
    click.echo()
    click.secho(f"==> {title}", bold=True, fg="cyan")


@main.command()
@click.option("--rows", type=click.IntRange(min=1000), default=50_000, show_default=True,
              help="Transactions to generate for the example.")
@click.option("--skip-dbt", is_flag=True, help="Reuse the warehouse built by an earlier run.")
@click.option("--no-stream", is_flag=True, help="Leave out the stream part (it starts a private redis-server).")
@click.pass_obj
@handle_errors
def demo(ctx: Context, rows: int, skip_dbt: bool, no_stream: bool) -> None:
    """Run the example end to end: data → dbt build → registry → training set → online store."""
    from feature_layer.dbt.runner import run_dbt
    from feature_layer.demo.data import generate_demo_data

    project = ctx.project_dir.resolve()
    # relative to the project, as the sources read it (macros/examples.sql: project_file)
    data_dir = project / os.environ.get("FEATURE_LAYER_DATA_DIR", "data/raw")
    if not skip_dbt:
        _step(f"Generating {rows:,} card transactions into {data_dir}")
        for landed in data_dir.glob("transactions.stream-*.parquet"):  # an earlier demo's streamed payments
            landed.unlink()
        # Data ending today, so the online store serves values within their TTL.
        generate_demo_data(data_dir, rows=rows, end=ctx.store.clock.now().date())
        warehouse = warehouse_settings(ctx.store.settings)
        if warehouse.type == "postgres":
            from feature_layer.demo.data import load_demo_data_into_postgres

            raw_schema = os.environ.get("FEATURE_LAYER_PG_RAW_SCHEMA", "raw")
            dsn = (f"host={warehouse.host} port={warehouse.port} user={warehouse.user} dbname={warehouse.dbname}"
                   + (f" password={warehouse.password}" if warehouse.password else ""))
            counts = load_demo_data_into_postgres(data_dir, dsn, schema=raw_schema)
            click.echo(f"Loaded {sum(counts.values()):,} raw rows into PostgreSQL schema {raw_schema!r}.")
        _step("dbt build (models + data tests), then dbt docs generate (column types)")
        run_dbt(["build"], project, target=ctx.target, quiet=True)
        run_dbt(["docs", "generate"], project, target=ctx.target, quiet=True)
        click.echo("dbt build passed.")

    store = ctx.store
    registry = store.registry
    _step("Registry")
    summary = registry.summary()
    click.echo(describe_counts(summary))
    render_table(
        ["feature view", "entities", "features", "ttl", "owner"],
        [(v.name, ", ".join(v.entities), len(v.features), format_duration(v.ttl) if v.ttl else "-", v.owner or "-")
         for v in sorted(registry.views.values(), key=lambda v: v.name)],
    )
    hits = registry.search("amount")[:5]
    click.echo("search 'amount' → " + ", ".join(h.feature.ref for h in hits))

    service = registry.service(DEMO_SERVICE)
    _step(f"Training set for ML exposure {service.name!r} ({len(service.features)} features)")
    engine = store.offline_engine()
    labels = engine.fetch_arrow(_labels_query(store))
    start = time.perf_counter()
    training = store.get_training_set(labels, service=service.name, full_feature_names=True,
                                      timestamp_column="occurred_at")
    table = training.to_arrow()
    click.echo(f"{table.num_rows:,} rows x {table.num_columns} columns in {time.perf_counter() - start:.2f}s")
    click.echo(_preview(table.slice(0, 5), max_cols=10))

    _step(f"Materializing online features into {store.settings.online_store.type}")
    result = store.materialize(progress=True)
    render_table(
        ["feature view", "entities", "written", "kept newer", "expired (ttl)", "seconds"],
        [(v.view, f"{v.entities:,}", f"{v.rows_written:,}", f"{v.kept_newer:,}", f"{v.expired:,}", f"{v.seconds:.2f}")
         for v in result.views],
    )
    recent = labels.slice(max(0, labels.num_rows - 3))  # the latest payments: their features are fresh
    rows_in = [{"user_id": r["user_id"], "merchant_id": r["merchant_id"]} for r in recent.to_pylist()]
    _step(f"Online lookup for {rows_in}")
    response = store.get_online_features(service=service.name, entity_rows=rows_in)
    click.echo(_preview(response.to_arrow(), max_cols=12))
    if not no_stream:  # stream: the same SQL over each micro-batch of payments (feature_layer/demo/stream_demo.py)
        from feature_layer.demo.stream_demo import run_stream_demo

        _step("Streaming 300 payments through user_transaction_features and user_merchant_features (same SQL)")
        run_stream_demo(store, click.echo, events=300)
    _step("Next")
    click.echo("feature-layer search velocity | feature-layer lineage user_transaction_features.txn_count_24h "
               "| feature-layer serve")


def _labels_query(store) -> str:  # noqa: ANN001 - FeatureStore
    """The example's label table: recent transactions with their fraud label."""
    import sqlglot.expressions as exp

    from feature_layer.sql.names import quoted_table

    node = next(n for n in store.registry.nodes.values() if n.name == "fraud_training_labels")
    table = quoted_table(node.relation)
    latest = (exp.select("user_id", "merchant_id", "occurred_at", "is_fraud").from_(table)
              .order_by(exp.column("occurred_at").desc()).limit(5000).subquery("latest"))
    query = exp.select("*").from_(latest).order_by("occurred_at")
    return query.sql(dialect=store.offline_engine().dialect)
