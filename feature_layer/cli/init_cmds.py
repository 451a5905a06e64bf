"""``init``: make an existing dbt project a feature project.

Adds the ``vars: feature_layer: entities:`` block to ``dbt_project.yml`` (as text, so the
file's comments and layout stay as they were) and writes an annotated example feature
view (SQL + YAML) that builds on any warehouse. Nothing is ever overwritten: an existing
entity block or example file stops the command before anything is written.
"""

from __future__ import annotations

import os
import re
import uuid
from pathlib import Path
from typing import Any

import click
import yaml

from feature_layer.cli.base import Context, handle_errors, main
from feature_layer.errors import ConfigError

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _refuse_bad_name(kind: str, value: str) -> None:
    if not _NAME.match(value):
        raise ConfigError(f"{kind} {value!r} is not a plain name.",
                          fix=f"use letters, digits and underscores for the {kind} (e.g. customer_id).")


def _read_project(path: Path) -> tuple[str, dict[str, Any]]:
    if not path.is_file():
        raise ConfigError(f"{path.parent} is not a dbt project (no dbt_project.yml).",
                          fix="run `feature-layer init` in your dbt project's folder, or pass --project-dir.")
    text = path.read_text()
    try:
        parsed = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}", fix="correct dbt_project.yml first (`dbt parse`).") from exc
    if not isinstance(parsed, dict) or "name" not in parsed:
        raise ConfigError(f"{path} does not look like a dbt project file (no `name:`).",
                          fix="run `feature-layer init` in a dbt project (`dbt init` creates one).")
    return text, parsed


def entity_block(entity: str, join_keys: list[str], indent: str) -> list[str]:
    """The ``feature_layer:`` block (under ``vars:``), indented by ``indent`` per level."""
    keys = ", ".join(join_keys)
    return [
        f"{indent}feature_layer:",
        f"{indent * 2}# Entities are declared once; feature views name them in meta.feature_layer.entities.",
        f"{indent * 2}# A composite key lists several columns: join_keys: [customer_id, store_id].",
        f"{indent * 2}entities:",
        f"{indent * 3}{entity}:",
        f"{indent * 4}join_keys: [{keys}]",
        f'{indent * 4}description: "One {entity} (edit me)"',
    ]


def _vars_line(lines: list[str]) -> int | None:
    for index, line in enumerate(lines):
        if re.match(r"^vars\s*:", line):
            return index
    return None


def add_entity_block(text: str, parsed: dict[str, Any], entity: str, join_keys: list[str], source: Path) -> str:
    """``text`` with the entity block added under ``vars:`` (created when absent)."""
    current_vars = parsed.get("vars")
    if isinstance(current_vars, dict) and "feature_layer" in current_vars:
        raise ConfigError(
            f"{source} already has a `vars: feature_layer:` block; init does not change it.",
            fix="edit its `entities:` by hand (see the README, 'Declaring features').",
        )
    if current_vars is not None and not isinstance(current_vars, dict):
        raise ConfigError(f"`vars` in {source} is not a mapping.", fix="make `vars:` a mapping, then run init again.")
    lines = text.splitlines()
    at = _vars_line(lines)
    if at is None:
        block = ["", "vars:", *entity_block(entity, join_keys, "  ")]
        return text.rstrip("\n") + "\n" + "\n".join(block) + "\n"
    if lines[at].split(":", 1)[1].split("#", 1)[0].strip():
        raise ConfigError(
            f"`vars:` in {source} is written inline ({lines[at].strip()!r}); init only adds to a block.",
            fix="write vars as an indented block (one `key: value` per line), then run init again.",
        )
    indent = _child_indent(lines, at) or "  "
    lines[at + 1:at + 1] = entity_block(entity, join_keys, indent)
    return "\n".join(lines) + "\n"


def _child_indent(lines: list[str], at: int) -> str | None:
    for line in lines[at + 1:]:
        if line.strip() and not line.lstrip().startswith("#"):
            indent = line[: len(line) - len(line.lstrip())]
            return indent or None
    return None


def _check_edit(before: dict[str, Any], after_text: str, entity: str, join_keys: list[str], source: Path) -> None:
    """The edited file must parse to the same project plus the new block, nothing else."""
    try:
        after = yaml.safe_load(after_text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"Adding the entity block would make {source} invalid YAML ({exc}).",
                          fix="add the block by hand (see the README, 'Use it in your own dbt project').") from exc
    added = (after.get("vars") or {}).get("feature_layer") if isinstance(after, dict) else None
    expected_vars = {**(before.get("vars") or {}), "feature_layer": added}
    same_rest = {k: v for k, v in after.items() if k != "vars"} == {k: v for k, v in before.items() if k != "vars"}
    if not (same_rest and after.get("vars") == expected_vars
            and (added or {}).get("entities") == {entity: {"join_keys": join_keys,
                                                            "description": f"One {entity} (edit me)"}}):
        raise ConfigError(f"{source} has a layout init cannot edit safely; nothing was written.",
                          fix="add the block by hand (see the README, 'Use it in your own dbt project').")


def example_files(entity: str, join_keys: list[str], view: str) -> dict[str, str]:
    """The example feature view: a model that builds anywhere (inline rows) and its YAML."""
    keys = ", ".join(join_keys)
    rows = []
    for index, spend in enumerate(("120.5", "35.0", "80.25", "12.0")):
        entity_no, day = index % 2 + 1, index // 2 + 1
        values = [f"cast({entity_no * 10 + i} as bigint)" for i in range(len(join_keys))]
        rows.append(f"    ({', '.join(values)}, cast('2025-01-0{day} 00:00:00' as timestamp), {index + 1},"
                    f" cast({spend} as double precision))")
    sql = "\n".join([
        "{#-",
        f"    An example feature view written by `feature-layer init`: features of the entity `{entity}`.",
        "    A feature view is an ordinary dbt model with one row per entity and event time; its",
        "    declaration (entity, event time, TTL) is in the YAML file next to it.",
        "",
        "    Replace the inline rows with your own data, e.g.",
        f"        select {keys}, order_date as event_at, count(*) as orders_7d, sum(amount) as spend_7d",
        "        from {{ ref('orders') }} ...",
        "    and keep windows point-in-time safe: a row at time t must only use data up to t",
        "    ({{ feature_layer.rolling_agg(...) }} does that when the feature_layer dbt package is installed).",
        "-#}",
        "",
        "select *",
        "from (values",
        ",\n".join(rows),
        f") as t({keys}, event_at, orders_7d, spend_7d)",
        "",
    ])
    columns = "".join(
        f"      - name: {key}\n        description: Join key of entity `{entity}`.\n        data_type: bigint\n"
        for key in join_keys
    )
    yml = f"""version: 2

# Written by `feature-layer init`. `dbt build`, then `feature-layer validate` and
# `feature-layer features` show this view; delete both files when you have your own.
models:
  - name: {view}
    description: Example features of each {entity} (replace with your own).
    config:
      materialized: table
      meta:
        feature_layer:
          entities: [{entity}]        # declared in dbt_project.yml under vars.feature_layer.entities
          event_time: event_at        # when each row's values became true
          # ttl: 30d                  # optional: older values are not served (s, m, h, d, w units)
          online: true                # materialize to the online store
          owner: you@example.com
          tags: [example]
    columns:
{columns}      - name: event_at
        description: When the values were computed (the event time).
        data_type: timestamp
      - name: orders_7d
        description: Orders in the 7 days up to event_at.
        data_type: integer
      - name: spend_7d
        description: Amount spent in the 7 days up to event_at.
        data_type: double
"""
    return {f"{view}.sql": sql, f"{view}.yml": yml}


def _write_new(path: Path, content: str) -> None:
    """Write a file that must not exist yet (exclusive create)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("x") as handle:
        handle.write(content)


def _replace(path: Path, content: str) -> None:
    """Replace a file atomically: a failure leaves the old one untouched."""
    temp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        temp.write_text(content)
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)


def _model_dir(project_dir: Path, parsed: dict[str, Any], folder: str | None) -> Path:
    if folder:
        return project_dir / folder
    paths = parsed.get("model-paths") or ["models"]
    return project_dir / str(paths[0]) / "feature_layer"


@main.command()
@click.option("--entity", default="customer", show_default=True, help="Name of the first entity.")
@click.option("--join-key", "join_keys", multiple=True, metavar="COLUMN",
              help="Its join key column (repeat for a composite key; default: <entity>_id).")
@click.option("--models-dir", default=None, metavar="DIR",
              help="Folder for the example view, relative to the project (default: models/feature_layer).")
@click.pass_obj
@handle_errors
def init(ctx: Context, entity: str, join_keys: tuple[str, ...], models_dir: str | None) -> None:
    """Add feature_layer to an existing dbt project: the entity block and an example view."""
    project_dir = ctx.project_dir.resolve()
    keys = list(join_keys) or [f"{entity}_id"]
    _refuse_bad_name("entity", entity)
    for key in keys:
        _refuse_bad_name("join key", key)
    source = project_dir / "dbt_project.yml"
    text, parsed = _read_project(source)
    edited = add_entity_block(text, parsed, entity, keys, source)
    _check_edit(parsed, edited, entity, keys, source)
    folder = _model_dir(project_dir, parsed, models_dir)
    files = {folder / name: content for name, content in example_files(entity, keys, f"{entity}_features_example").items()}
    existing = [str(path) for path in files if path.exists()]
    if existing:
        raise ConfigError(f"{', '.join(existing)} already exist(s); init never overwrites a file.",
                          fix="move them away, or pass --models-dir to write the example elsewhere.")
    written: list[Path] = []
    try:
        for path, content in files.items():
            _write_new(path, content)
            written.append(path)
    except OSError as exc:
        for path in written:
            path.unlink(missing_ok=True)
        raise ConfigError(f"Could not write {exc.filename}: {exc.strerror}.", fix="check the folder's permissions.") from exc
    _replace(source, edited)
    click.echo(f"Added entity {entity!r} (join keys: {', '.join(keys)}) to {source}.")
    for path in files:
        click.echo(f"Wrote {path}")
    click.echo("Next: `dbt build`, then `feature-layer validate` and `feature-layer features`.")
