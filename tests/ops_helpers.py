"""Helpers for the ops tests (ops1): the real CLI in-process, the report schema, corrupting a value."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SCHEMA = REPO / "docs" / "run_report.schema.json"


class Done:
    """Exit code, stdout and stderr of one CLI invocation."""

    def __init__(self, result: Any) -> None:
        self.returncode, self.stdout, self.stderr = result.exit_code, result.stdout, result.stderr
        self.exception = result.exception

    def json(self) -> Any:
        return json.loads(self.stdout)


def cli(project: Path, now: datetime, *args: str) -> Done:
    """``feature-layer --project-dir project ARGS`` in-process (click's runner), the clock pinned
    by FEATURE_LAYER_NOW (dbt runs in-process anyway: feature_layer.dbt.runner)."""
    from click.testing import CliRunner

    from feature_layer.cli import main

    result = CliRunner().invoke(main, ["--project-dir", str(project), *args],
                                env={"FEATURE_LAYER_NOW": now.isoformat()})
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"feature-layer {' '.join(args)} crashed: {result.exception!r}\n{result.stderr}")
    return Done(result)


def _date_time(value: object) -> bool:
    """RFC 3339 date-time with an offset (jsonschema checks the format only with an extra package)."""
    if not isinstance(value, str):
        return True
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return False
    return "T" in value and parsed.tzinfo is not None


def validate_report(report: dict[str, Any]) -> None:
    """Fail unless ``report`` matches docs/run_report.schema.json (jsonschema, draft 2020-12; every
    ``date-time`` checked as an ISO-8601 time with its UTC offset)."""
    import jsonschema

    schema = json.loads(SCHEMA.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    checker = jsonschema.FormatChecker()
    checker.checks("date-time")(_date_time)
    validator = jsonschema.Draft202012Validator(schema, format_checker=checker)
    assert list(validator.iter_errors({"started_at": "yesterday"} | {k: v for k, v in report.items()
                                                                     if k != "started_at"})), \
        "the validator must refuse a report whose time is not a date-time"
    errors = sorted(validator.iter_errors(report), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors[:10])


def corrupt_online_value(store: Any, view_name: str, feature: str, key: dict[str, Any], now: datetime,
                         value: Any) -> Any:
    """Write ``value`` as ``feature`` of entity ``key`` into the real online store (forced, same
    event time), through the store's own writer; returns the value it replaced."""
    import pyarrow.compute as pc

    from feature_layer.clock import epoch_us
    from feature_layer.online.encoding import encode_batch, view_layout
    from feature_layer.sql.latest import CREATED_ALIAS, EVENT_ALIAS, latest_values

    view = store.registry.view(view_name)
    engine = store.offline_engine()
    online = store.online_store()
    rows = engine.fetch_arrow(latest_values(view, end=now, dialect=engine.dialect))
    mask = None
    for name, wanted in key.items():
        this = pc.equal(rows[name], wanted)
        mask = this if mask is None else pc.and_(mask, this)
    row = rows.filter(mask)
    assert row.num_rows == 1, f"entity {key} has {row.num_rows} latest rows in {view_name}"
    before = row[feature][0].as_py()
    index = row.schema.get_field_index(feature)
    row = row.set_column(index, feature, __import__("pyarrow").array([value], type=row.schema.field(index).type))
    layout = view_layout(view, online.namespace)
    encoded = encode_batch(layout, row, event_column=EVENT_ALIAS,
                           created_column=CREATED_ALIAS if view.created_at else None,
                           now_us=epoch_us(store.clock))
    assert len(encoded) == 1, "the corrupted value must not be expired"
    with online.writer(ttl_us=layout.ttl_us, force=True) as writer:
        writer.write(encoded)
    return before
