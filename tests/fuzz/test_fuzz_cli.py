"""Fuzzing the CLI: every command, with arguments generated from its own click parameters
(flags on or off, option values from plausible pools or hostile text, out-of-range numbers,
unknown choices, stray tokens), run through click's CliRunner on the fuzz project.

Oracle: exit code 0, or a clean exit (1 for a FeatureLayerError, 2 for a usage error) with an
``Error:`` message, never an exception. ``serve`` and ``demo`` (a long-running server, a full
dbt build) are parsed only: their arguments go through click's own parsing and conversion,
which is where generated flags can fail. ``--debug`` is never generated: it shows tracebacks
on purpose.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from feature_layer.cli import main
from tests.fuzz.fuzz_harness import Refused, check, examples, fuzz_project
from tests.fuzz.strategies import NASTY_TEXT, TEXT, mostly

REFS = ["user_profile_features.country", "user_profile_features.*", "merchant_risk_features.category",
        "user_merchant_features.txn_count_30d", "nope.x", "user_profile_features", "*", ".x"]
VIEWS = ["user_profile_features", "merchant_risk_features", "user_merchant_features", "user_transaction_features"]
POOLS: dict[str, st.SearchStrategy[str]] = {
    "features": st.sampled_from(REFS + [",".join(REFS[:2])]),
    "feature": st.sampled_from(REFS),
    "select": st.sampled_from(VIEWS + ["nope"]),
    "view": st.sampled_from(VIEWS + ["nope"]),
    "service": st.sampled_from(["fraud_model_v1", "nope"]),
    "entities": st.sampled_from(["user_id=1", "merchant_id=2", "user_id=", "=1", "user_id", "user_id=abc",
                                 "user_id=1=2", "user_id=99999999999999999999999", "user_id=1.5", "user_id=true"]),
    "rows_json": st.sampled_from(['{"user_id": 1}', '[{"user_id": 1}, {"user_id": 2}]', "[]", "{", "1", '"x"',
                                  '[{"user_id": null}]', '[1]', '{"user_id": [1, 2]}', '{"user_id": 1e400}']),
    "entity": st.sampled_from(["user", "merchant", "user_merchant", "nope"]),
    "tag": st.sampled_from(["fraud", "profile", ""]),
    "owner": st.sampled_from(["identity-team@example.com", "x"]),
    "text": st.sampled_from(["country", "amount", "fraud", "", "*", "user_id"]),
    "entity_table": st.sampled_from(["main.fraud_training_labels", "fraud_training_labels", "nope", "a.b.c.d",
                                     'x"y', "select 1 as user_id", ""]),
    "dialect": st.sampled_from(["duckdb", "postgres", "snowflake", "bigquery", "tsql", "nope", ""]),
    "timestamp_column": st.sampled_from(["occurred_at", "event_timestamp", "nope", ""]),
    "entity_columns": st.sampled_from(["user_id", "merchant_id", "occurred_at", "nope"]),
    "late_lookback": st.sampled_from(["1h", "0s", "30d", "-1h", "1x", "", "99999999999d"]),
    "start": st.sampled_from(["2020-01-01", "2025-06-01T12:00:00Z", "2099-01-01", "1900-01-01", "nope", "",
                              "2020-13-01", "0001-01-01"]),
    "end": st.sampled_from(["2030-01-01", "2026-01-01T00:00:00+05:00", "2099-01-01", "1970-01-01", "x", "",
                            "9999-12-31T23:59:59"]),
    "host": st.sampled_from(["127.0.0.1", "0.0.0.0", "::1", "nope.invalid"]),
    "out": st.sampled_from(["out", "a/b", ".", ""]),
}
INVOKE_ONLY_PARSING = {"serve", "demo", "run", "stream"}  # long-running, or a whole dbt build
# Checks whose non-zero exit is their verdict (stale views, mismatches), printed as a report.
VERDICTS = {"freshness": (1,), "verify": (1,)}
COMMANDS = sorted({*main.commands} - {"sql"}) + ["sql training-set"]


def _command(path: str) -> click.Command:
    command: Any = main
    for part in path.split():
        command = command.commands[part]
    return command


def _value(draw: Any, param: click.Parameter) -> str:
    kind = param.type
    pool = POOLS.get(param.name or "")
    if isinstance(kind, click.Choice):
        plausible: st.SearchStrategy[str] = st.sampled_from(list(kind.choices))
    elif isinstance(kind, (click.IntRange, click.FloatRange)):
        low = kind.min if kind.min is not None else -5
        high = kind.max if kind.max is not None else low + 100
        plausible = st.sampled_from([low, high, low - 1, high + 1, (low + high) // 2]).map(str)
    elif kind is click.INT or isinstance(kind, click.types.IntParamType):
        plausible = st.sampled_from(["0", "1", "-1", "7", "99999999999999999999"])
    elif kind is click.FLOAT or isinstance(kind, click.types.FloatParamType):
        plausible = st.sampled_from(["0", "0.5", "nan", "inf", "-1"])
    elif pool is not None:
        plausible = pool
    else:
        plausible = st.sampled_from(["x", "1"])
    if pool is not None and not isinstance(kind, click.Choice):
        plausible = pool
    if param.name == "rows" and isinstance(kind, click.IntRange):  # demo-data --rows: keep the data small
        plausible = st.sampled_from(["1", "50", "0", "-3", "abc"])
    return draw(mostly(plausible, st.one_of(NASTY_TEXT, TEXT), 5))


@st.composite
def command_lines(draw: Any) -> tuple[str, list[str]]:
    path = draw(st.sampled_from(COMMANDS))
    command = _command(path)
    args: list[str] = []
    for param in command.params:
        if isinstance(param, click.Argument):
            count = 1 if param.nargs == 1 else draw(st.integers(0, 3))
            if param.required or draw(st.booleans()):
                args += [_value(draw, param) for _ in range(count)]
            continue
        if not isinstance(param, click.Option) or param.name in ("help",) or not draw(st.booleans()):
            continue
        flag = draw(st.sampled_from(param.opts))
        if param.is_flag:
            args.append(flag)
        else:
            for _ in range(draw(st.integers(1, 2)) if param.multiple else 1):
                args += [flag, _value(draw, param)]
    if draw(st.integers(0, 9)) == 0:
        args.insert(draw(st.integers(0, len(args))), draw(st.one_of(NASTY_TEXT, st.sampled_from(
            ["--nope", "-x", "--", "--json", "--help", "-h"]))))
    return path, args


@pytest.fixture(scope="module")
def project(built_example_project: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return fuzz_project(built_example_project, tmp_path_factory)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz_cli_cwd")


ENV = {key: None for key in os.environ if key.startswith(("FEATURE_LAYER_", "DBT_"))}


def _run(project: Path, workdir: Path, root: list[str], path: str, args: list[str]) -> None:
    if path in INVOKE_ONLY_PARSING:
        try:
            _command(path).make_context(path, list(args))
        except click.exceptions.Exit:
            return
        except click.ClickException as exc:
            raise Refused(exc.format_message()) from exc
        return
    runner = CliRunner()
    cwd = os.getcwd()
    os.chdir(workdir)  # relative paths in generated arguments land in a scratch folder
    try:
        result = runner.invoke(main, [*root, *path.split(), *args], env=ENV, catch_exceptions=True)
    finally:
        os.chdir(cwd)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    if result.exit_code == 0 or (result.exit_code in VERDICTS.get(path, ()) and result.output.strip()):
        return
    if result.exit_code in (1, 2) and "Error" in result.output:
        raise Refused(result.output[-300:])
    raise AssertionError(f"exit code {result.exit_code} without an error message: {result.output[-1000:]!r}")


@given(line=command_lines(), root=mostly(st.just([]), st.sampled_from([
    ["--target", "duckdb"], ["--target", "nope"], ["--project-dir", "/nonexistent"], ["--project-dir", "."],
    ["--target", ""]]), 6))
@examples(sample=15, full=1000)
def test_every_command_with_generated_flags_exits_cleanly(project: Path, workdir: Path, line, root) -> None:
    path, args = line
    full_root = ["--project-dir", str(project), *root]
    check("CLI flags", lambda: _run(project, workdir, full_root, path, args),
          lambda: f"feature-layer {' '.join(full_root)} {path} {args!r}")
