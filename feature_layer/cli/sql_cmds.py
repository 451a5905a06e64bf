"""``feature-layer sql …``: print the SQL feature_layer would run, for analysts to read or reuse."""

from __future__ import annotations

import click

from feature_layer.cli.base import Context, handle_errors, main
from feature_layer.errors import FeatureLayerError, InputError


@main.group()
def sql() -> None:
    """Print generated SQL (point-in-time training sets) for any sqlglot dialect."""


JOIN_KEY_MAP_HELP = ('Views read under other entity columns, as JSON: \'{"user_profile_features": '
                     '[{}, {"user_id": "payee_id"}]}\' (a mapped use\'s columns end in __payee_id).')


def join_key_map_json(text: str | None) -> object:
    """``--join-key-map`` parsed (validated later, against the registry)."""
    import json

    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError as exc:
        raise InputError(f"--join-key-map is not valid JSON: {exc}.",
                         fix='write --join-key-map \'{"view": {"join_key": "entity_column"}}\'.') from None


def _split(values: tuple[str, ...]) -> list[str]:
    return [part.strip() for value in values for part in value.split(",") if part.strip()]


@sql.command("training-set")
@click.option("--features", "-f", "features", multiple=True, help="view.feature or view.* (repeat or comma-separate).")
@click.option("--service", help="A feature service (dbt exposure of type ml) instead of --features.")
@click.option("--entity-table", required=True, help="Warehouse table (or schema.table) holding the entity rows.")
@click.option("--dialect", default=None, help="SQL dialect to print (default: the target's engine).")
@click.option(
    "--timestamp-column", default="event_timestamp", show_default=True, help="Entity column with each row's as-of time."
)
@click.option(
    "--entity-columns",
    multiple=True,
    help="Entity columns to return (default: read from the warehouse, else join keys and timestamp).",
)
@click.option("--full-feature-names", is_flag=True, help="Name feature columns view__feature.")
@click.option("--join-key-map", "join_key_map", default=None, metavar="JSON", help=JOIN_KEY_MAP_HELP)
@click.option(
    "--strategy", type=click.Choice(["asof", "window"]), default=None, help="Force a formulation (default: per dialect)."
)
@click.pass_obj
@handle_errors
def training_set(
    ctx: Context,
    features: tuple[str, ...],
    service: str | None,
    entity_table: str,
    dialect: str | None,
    timestamp_column: str,
    entity_columns: tuple[str, ...],
    full_feature_names: bool,
    join_key_map: str | None,
    strategy: str | None,
) -> None:
    """Print the point-in-time-correct training-set query for an entity table."""
    from sqlglot import exp

    from feature_layer.offline.entity import warehouse_source
    from feature_layer.offline.training_set import resolve_requested
    from feature_layer.sql.dialects import capabilities
    from feature_layer.sql.point_in_time import EntitySpine, plan_outputs, training_set_sql

    store = ctx.store
    ctx.registry  # noqa: B018 - loads it, warning once about any view left out
    requested = resolve_requested(store.registry, _split(features) or None, service)
    from feature_layer.registry.join_keys import with_join_key_map

    requested = with_join_key_map(store.registry, requested, service, join_key_map_json(join_key_map))
    engine_dialect = _target_dialect(ctx)
    dialect = capabilities(dialect or engine_dialect).name
    source = warehouse_source(entity_table, dialect)
    if not isinstance(source, exp.Table):
        raise InputError(f"--entity-table {entity_table!r} is not a table name.", fix="pass `table` or `schema.table`.")

    columns: tuple[str, ...] | None = tuple(_split(entity_columns)) or None
    naive = aware = False
    tz_views: set[str] = set()
    types_known = True
    # The warehouse's own types: the entity columns, and which timestamps are time-zone-aware
    # (the SQL converts those explicitly, so it gives the same rows in any session time zone).
    import pyarrow as pa

    from feature_layer.offline.training_set import warehouse_types

    try:
        engine = store.offline_engine()
        schema = engine.schema_of(exp.select("*").from_(warehouse_source(entity_table, engine.dialect)))
        if columns is None and dialect == engine_dialect:
            columns = tuple(schema.names)
        if timestamp_column in schema.names:
            ts_type = schema.field(timestamp_column).type
            naive = pa.types.is_timestamp(ts_type) and ts_type.tz is None
            aware = pa.types.is_timestamp(ts_type) and ts_type.tz is not None
    except FeatureLayerError as exc:
        types_known = False
        if columns is None:
            click.secho(f"Note: could not read {entity_table}'s columns ({exc.message.splitlines()[0]}); "
                        "returning only join keys and the timestamp. Pass --entity-columns to list them.",
                        fg="yellow", err=True)
    conversions: dict = {}
    try:  # and which features need a cast to their logical type, as the Python training set does
        tz_views, conversions, _ = warehouse_types(store.offline_engine(), requested)
    except FeatureLayerError:
        types_known = False
    if columns is not None and timestamp_column not in columns:
        raise InputError(
            f"Entity table {entity_table} has no column {timestamp_column!r} (columns: {', '.join(columns)}).",
            fix="pass --timestamp-column naming the as-of time column.",
        )
    spine = EntitySpine(source=source, timestamp=timestamp_column, columns=columns, naive_utc=naive, tz_aware=aware)
    outputs = plan_outputs(
        requested, entity_columns=columns or (), full_feature_names=full_feature_names, tz_aware_views=tz_views,
        conversions=conversions,
    )
    header = ""
    if not types_known:
        header = (
            "-- Some column types could not be read from the warehouse: this query treats timestamps as\n"
            "-- naive UTC and returns features in the warehouse's types (no casts to their logical types).\n"
            "-- If any timestamp is time-zone-aware, run it in a UTC session (SET TIME ZONE 'UTC').\n"
        )
    click.echo(header + training_set_sql(spine, outputs, dialect, strategy=strategy) + ";")


def _target_dialect(ctx: Context) -> str:
    from feature_layer.config import warehouse_settings
    from feature_layer.sql.dialects import dialect_for_adapter

    # An unknown --target is a mistake to report, not a reason to guess a dialect.
    return dialect_for_adapter(warehouse_settings(ctx.store.settings).type)  # engines: sqlserver → tsql, …
