"""Production commands: run (the pipeline), freshness (SLAs), impact (change impact), verify.

Exit codes an orchestrator can branch on: ``run`` 0 ok, 1 failed, 3 completed with stale views;
``freshness`` 0 pass (warnings included), 1 a view in error (as ``dbt source freshness``);
``verify`` 0 within the threshold, 1 above it; ``impact`` 0 (it only reports).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import click

from feature_layer.cli.base import Context, echo_json, handle_errors, main, render_table
from feature_layer.errors import InputError


def write_report(path: Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` as JSON to ``path`` atomically (a reader never sees half a report)."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        with os.fdopen(fd, "w") as out:
            json.dump(payload, out, indent=2, default=str)
            out.write("\n")
        os.replace(tmp, path)
    except OSError as exc:
        raise InputError(f"Cannot write the report to {path}: {exc.strerror or exc}.",
                         fix="pass --report a path in a writable folder.") from exc


@main.command("run")
@click.option("--select", "-s", multiple=True, metavar="SELECTOR",
              help="dbt selection, passed to `dbt build --select` (repeatable); only the views it builds are materialized.")
@click.option("--exclude", multiple=True, metavar="SELECTOR", help="Passed to `dbt build --exclude` (repeatable).")
@click.option("--full-refresh", is_flag=True, help="Passed to dbt build, and materialize rewrites every value.")
@click.option("--no-docs", is_flag=True, help="Skip `dbt docs generate` (catalog.json keeps its old column types).")
@click.option("--statistics", type=click.Choice(["auto", "always", "never"]), default="auto", show_default=True,
              help="auto: when a view was read in full or its statistics are older than a day.")
@click.option("--verify", "with_verify", is_flag=True, help="Also check online values against the training-set SQL.")
@click.option("--verify-sample", type=click.IntRange(min=1), default=100, show_default=True,
              help="Entities per view for --verify.")
@click.option("--verify-threshold", type=click.FloatRange(0.0, 1.0), default=0.0, show_default=True,
              help="Highest mismatch rate (0-1) --verify accepts.")
@click.option("--json", "as_json", is_flag=True, help="Print the run report as JSON on stdout.")
@click.option("--report", "report_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write the JSON run report to this file.")
@click.pass_obj
@handle_errors
def run_command(obj: Context, select: tuple[str, ...], exclude: tuple[str, ...], full_refresh: bool, no_docs: bool,
                statistics: str, with_verify: bool, verify_sample: int, verify_threshold: float, as_json: bool,
                report_path: Path | None) -> None:
    """dbt build → validate → materialize → statistics → freshness (→ verify), with a JSON report.

    Exit code 0 ok, 1 a step failed, 3 completed with stale views.
    """
    from feature_layer.ops.run import RunOptions, run_pipeline

    options = RunOptions(select=select, exclude=exclude, full_refresh=full_refresh, docs=not no_docs,
                         statistics=statistics, verify=with_verify, verify_sample=verify_sample,
                         verify_threshold=verify_threshold)
    store = obj.store
    try:
        report = run_pipeline(store.parts, store.project_dir, target=obj.target, options=options, quiet=as_json,
                              debug=obj.debug)
    finally:
        store.close()  # the warehouse file is free for the next dbt command, in-process callers too
    payload = report.to_dict()
    if report_path is not None:
        write_report(report_path, payload)
    if as_json:
        echo_json(payload)
    else:
        render_table(["step", "status", "seconds", "rows", "summary"],
                     [(s["name"], s["status"], f"{s['seconds']:.2f}", "" if s["rows"] is None else f"{s['rows']:,}",
                       s["error"] or s["summary"]) for s in payload["steps"]],
                     title=f"feature-layer run: {payload['status']} (exit {payload['exit_code']})")
        for warning in payload["warnings"]:
            click.secho(f"Warning: {warning}", fg="yellow", err=True)
    raise SystemExit(report.exit_code)


@main.command("freshness")
@click.option("--select", "-s", multiple=True, metavar="VIEW", help="Only these feature views (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
@handle_errors
def freshness_command(obj: Context, select: tuple[str, ...], as_json: bool) -> None:
    """Each online view's newest materialized event against its freshness SLA (exit 1 on an error)."""
    from feature_layer.ops.sla import check_freshness

    obj.registry  # noqa: B018 - loads it, warning once about any view left out
    try:
        report = check_freshness(obj.store.parts, list(select) or None)
    finally:
        obj.store.close()
    if as_json:
        echo_json(report.to_dict())
    else:
        render_table(["view", "status", "newest event", "reason"],
                     [(v.view.name, v.status.upper(), v.freshness.newest_event_time or "", v.reason)
                      for v in report.views], title=f"Freshness as of {report.now.isoformat()}: {report.status}")
    raise SystemExit(report.exit_code)


@main.command("impact")
@click.option("--state", "state_path", required=True, type=click.Path(path_type=Path),
              help="Folder of the manifest.json to compare with (e.g. production's target/), as dbt --state.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
@handle_errors
def impact_command(obj: Context, state_path: Path, as_json: bool) -> None:
    """Changed feature views against --state, and the features, ML models and online layouts they affect."""
    from feature_layer.ops.impact import impact, load_state_registry

    current = obj.registry
    state = load_state_registry(state_path, obj.store.project_dir)
    report = impact(current, state, str(state_path))
    if as_json:
        echo_json(report.to_dict())
        return
    if not report.views:
        click.echo("No feature view changed.")
        return
    render_table(["view", "changes", "features affected", "layout", "full refresh"],
                 [(v.view, ", ".join(v.changes), ", ".join(f"{r} ({k})" for r, k in sorted(v.features.items())),
                   f"{v.layout_before} → {v.layout_after}" if v.layout_invalidated else "",
                   "yes" if v.full_refresh else "") for v in report.views], title=f"Impact against {state_path}")
    click.echo(f"ML models affected: {', '.join(report.ml_models) or 'none'}")
    click.echo(f"Full refresh needed: {'yes (' + ', '.join(report.full_refresh_views) + ')' if report.full_refresh_views else 'no'}")


@main.command("verify")
@click.option("--select", "-s", multiple=True, metavar="VIEW", help="Only these feature views (repeatable).")
@click.option("--sample", type=click.IntRange(min=1), default=100, show_default=True, help="Entities per view.")
@click.option("--threshold", type=click.FloatRange(0.0, 1.0), default=0.0, show_default=True,
              help="Highest mismatch rate (0-1) per feature; above it the command exits 1.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the entity sample.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
@handle_errors
def verify_command(obj: Context, select: tuple[str, ...], sample: int, threshold: float, seed: int,
                   as_json: bool) -> None:
    """Online values against the training-set SQL "as of now": mismatch rate per feature, with examples."""
    from feature_layer.ops.verify import verify

    obj.registry  # noqa: B018 - loads it, warning once about any view left out
    try:
        report = verify(obj.store.parts, select=list(select) or None, sample=sample, threshold=threshold, seed=seed)
    finally:
        obj.store.close()
    if as_json:
        echo_json(report.to_dict())
    else:
        render_table(["feature", "compared", "mismatches", "rate", "example"],
                     [(f.feature, f.compared, f.mismatches, f"{f.mismatch_rate:.2%}",
                       json.dumps(f.to_dict()["examples"][0]) if f.examples else "")
                      for f in report.features],
                     title=f"verify as of {report.now.isoformat()}: {'ok' if report.ok else 'MISMATCH'}")
    raise SystemExit(0 if report.ok else 1)
