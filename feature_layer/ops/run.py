"""``feature-layer run``: the whole pipeline an orchestrator schedules, with one JSON report.

Steps, in order (each timed, each with a status in the report):

1. ``dbt_build``   ``dbt build`` with the selection passed through (``--select``, ``--exclude``,
                   ``--full-refresh``); dbt's own log goes to stderr so stdout stays the report's;
2. ``dbt_docs``    ``dbt docs generate`` (catalog.json: the warehouse's real column types), unless
                   ``docs=False``;
3. ``validate``    every declaration; invalid views are reported and left out (the run fails);
4. ``materialize`` the online views dbt built in this run (all online views without a selection),
                   one at a time so one view's failure does not hide the others' results;
5. ``statistics``  feature statistics of the materialized views (when read in full, or older than
                   a day; ``statistics="always"|"never"``); a failure is a warning, never fatal;
6. ``freshness``   each checked view against its freshness SLA (``feature_layer.ops.sla``);
7. ``verify``      with ``verify=True``: online values against the training-set SQL (``ops.verify``).

A failed step skips the steps that need it (a failed build skips everything after it; a failed
view is left out of the later steps). The exit code is ``EXIT_FAILED`` (1) when any step failed,
``EXIT_STALE`` (3) when everything ran but a view is past its SLA's ``error_after`` (or every
value past its TTL), else ``EXIT_OK`` (0). The report's shape is docs/run_report.schema.json.
"""

from __future__ import annotations

import contextlib
import sys
import time
import traceback
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from feature_layer.clock import SystemClock
from feature_layer.errors import FeatureLayerError, FeatureLayerWarning, InputError, plural
from feature_layer.parts import Parts

REPORT_VERSION = 1
EXIT_OK, EXIT_FAILED, EXIT_STALE = 0, 1, 3
StepStatus = Literal["ok", "warn", "stale", "failed", "skipped"]
STEPS = ("dbt_build", "dbt_docs", "validate", "materialize", "statistics", "freshness", "verify")
STATISTICS_POLICIES = ("auto", "always", "never")
STATISTICS_MAX_AGE_SECONDS = 24 * 3600


@dataclass(frozen=True)
class RunOptions:
    """What to run: the dbt selection (passed through), refresh, statistics and verify settings."""

    select: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    full_refresh: bool = False
    docs: bool = True
    statistics: str = "auto"
    verify: bool = False
    verify_sample: int = 100
    verify_threshold: float = 0.0

    def __post_init__(self) -> None:
        if self.statistics not in STATISTICS_POLICIES:
            raise InputError(f"statistics={self.statistics!r} is not one of {', '.join(STATISTICS_POLICIES)}.",
                             fix="pass --statistics auto, always or never.")

    def to_dict(self) -> dict[str, Any]:
        return {"select": list(self.select), "exclude": list(self.exclude), "full_refresh": self.full_refresh,
                "docs": self.docs, "statistics": self.statistics, "verify": self.verify,
                "verify_sample": self.verify_sample, "verify_threshold": self.verify_threshold}


@dataclass
class StepReport:
    """One step: status, when it started, how long it took, rows it handled, what it found."""

    name: str
    status: StepStatus = "skipped"
    started_at: str | None = None
    seconds: float = 0.0
    rows: int | None = None
    summary: str = ""
    error: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "status": self.status, "started_at": self.started_at, "seconds": self.seconds,
                "rows": self.rows, "summary": self.summary, "error": self.error, "details": self.details}


@dataclass
class RunReport:
    """The run's report: steps, per-view results, warnings, status and exit code."""

    project_dir: str
    target: str | None
    options: RunOptions
    started_at: str
    now: str
    steps: dict[str, StepReport] = field(default_factory=lambda: {name: StepReport(name) for name in STEPS})
    views: dict[str, dict[str, Any]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    finished_at: str | None = None
    seconds: float = 0.0

    @property
    def exit_code(self) -> int:
        statuses = {s.status for s in self.steps.values()}
        if "failed" in statuses:
            return EXIT_FAILED
        return EXIT_STALE if "stale" in statuses else EXIT_OK

    @property
    def status(self) -> str:
        return {EXIT_OK: "ok", EXIT_FAILED: "failed", EXIT_STALE: "stale"}[self.exit_code]

    def view(self, name: str) -> dict[str, Any]:
        return self.views.setdefault(name, {"view": name, "materialize": None, "statistics": None,
                                            "freshness": None, "verify": None})

    def to_dict(self) -> dict[str, Any]:
        return {
            "report_version": REPORT_VERSION,
            "status": self.status,
            "exit_code": self.exit_code,
            "project_dir": self.project_dir,
            "target": self.target,
            "options": self.options.to_dict(),
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "seconds": self.seconds,
            "now": self.now,
            "steps": [self.steps[name].to_dict() for name in STEPS],
            "views": [self.views[name] for name in sorted(self.views)],
            "warnings": list(self.warnings),
        }


def _wall() -> str:
    return SystemClock().now().isoformat()  # bookkeeping: when the run really happened, not the pinned clock


@contextlib.contextmanager
def _step(report: RunReport, name: str, *, debug: bool = False) -> Iterator[StepReport]:
    """Time a step; an error fails it (one line, the traceback only with ``debug``), never the report."""
    step = report.steps[name]
    step.status, step.started_at = "ok", _wall()
    began = time.perf_counter()
    try:
        yield step
    except FeatureLayerError as exc:
        step.status, step.error = "failed", str(exc)
    except Exception as exc:  # noqa: BLE001 - an unexpected error still ends in a report and exit 1
        step.status, step.error = "failed", f"{type(exc).__name__}: {exc}"
        if debug:
            step.details["traceback"] = traceback.format_exc()
    finally:
        step.seconds = round(time.perf_counter() - began, 6)


def _dbt_args(command: Sequence[str], options: RunOptions) -> list[str]:
    args = list(command)
    if options.select:
        args += ["--select", *options.select]
    if options.exclude:
        args += ["--exclude", *options.exclude]
    if options.full_refresh and command[0] == "build":
        args.append("--full-refresh")
    return args


def _dbt_results(result: Any) -> tuple[dict[str, str], int]:
    """Node unique_id → status of a dbt result, and the rows its statements affected."""
    statuses: dict[str, str] = {}
    rows = 0
    for node_result in getattr(result, "results", None) or []:
        node = getattr(node_result, "node", None)
        if node is None:
            continue
        statuses[str(node.unique_id)] = str(getattr(node_result, "status", "")).lower().split(".")[-1]
        affected = getattr(getattr(node_result, "adapter_response", None) or {}, "get", lambda *_: None)("rows_affected")
        if isinstance(affected, int) and affected > 0:
            rows += affected
    return statuses, rows


def _run_dbt(args: list[str], project_dir: Path, target: str | None, quiet: bool) -> Any:
    from feature_layer.dbt.runner import run_dbt

    with contextlib.redirect_stdout(sys.stderr):  # stdout is the report's (--json)
        return run_dbt(args, project_dir, target, quiet=quiet)


def run_pipeline(
    parts: Parts,
    project_dir: Path,
    *,
    target: str | None = None,
    options: RunOptions | None = None,
    quiet: bool = True,
    debug: bool = False,
) -> RunReport:
    """Run every step (module docstring) and return the report; never raises for a failed step."""
    options = options or RunOptions()
    began = time.perf_counter()
    now = parts.clock.now()
    report = RunReport(str(project_dir), target, options, _wall(), now.isoformat())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _run_steps(parts, Path(project_dir), target, options, report, now, quiet=quiet, debug=debug)
    seen = set(report.warnings)
    for w in caught:
        text = str(w.message)
        if text not in seen and issubclass(w.category, FeatureLayerWarning):
            seen.add(text)
            report.warnings.append(text)
    report.finished_at = _wall()
    report.seconds = round(time.perf_counter() - began, 6)
    return report


def _run_steps(parts: Parts, project_dir: Path, target: str | None, options: RunOptions, report: RunReport,
               now: datetime, *, quiet: bool, debug: bool) -> None:
    built: dict[str, str] = {}
    with _step(report, "dbt_build", debug=debug) as step:
        built, rows = _dbt_results(_run_dbt(_dbt_args(["build"], options), project_dir, target, quiet))
        step.rows = rows
        counts: dict[str, int] = {}
        for status in built.values():
            counts[status] = counts.get(status, 0) + 1
        step.details = {"nodes": len(built), "by_status": counts}
        step.summary = f"{len(built)} dbt nodes: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    if report.steps["dbt_build"].status == "failed":
        return
    if options.docs:
        with _step(report, "dbt_docs", debug=debug) as step:
            _run_dbt(["docs", "generate"], project_dir, target, quiet)
            step.summary = "catalog.json written"
        if report.steps["dbt_docs"].status == "failed":
            return
    with _step(report, "validate", debug=debug) as step:
        registry = parts.registry()
        step.details = {"issues": [{"code": i.code, "unique_id": i.unique_id, "file": i.file, "message": i.message,
                                    "fix": i.fix} for i in registry.issues],
                        "broken_views": sorted(registry.broken_views),
                        "broken_services": sorted(registry.broken_services), "summary": registry.summary()}
        if registry.issues:
            step.status = "failed"
            step.error = f"{len(registry.issues)} problem(s) in feature declarations; invalid views left out: " \
                         f"{', '.join(sorted(registry.broken_views)) or 'none'}"
        step.summary = f"{plural(len(registry.views), 'feature view')}, {plural(len(registry.services), 'feature service')} valid"
    if report.steps["validate"].error and not report.steps["validate"].details:
        return  # the registry itself could not be read
    registry = parts.registry()
    chosen = [v for v in registry.views.values() if v.online
              and (not options.select and not options.exclude or built.get(v.unique_id) == "success")]
    done = _materialize(parts, registry, chosen, options, report, now, debug=debug)
    _statistics(parts, done, options, report, now, debug=debug)
    checked = [v.name for v in registry.views.values() if v.online] if not (options.select or options.exclude) \
        else [v.name for v in chosen]
    _freshness(parts, checked, report, debug=debug)
    if options.verify:
        _verify(parts, [v.name for v, _ in done], options, report, debug=debug)


def _materialize(parts: Parts, registry: Any, views: list[Any], options: RunOptions, report: RunReport,
                 now: datetime, *, debug: bool) -> list[Any]:
    from feature_layer.online.materialize import materialize

    done = []
    with _step(report, "materialize", debug=debug) as step:
        failed = []
        for view in sorted(views, key=lambda v: v.name):
            entry = report.view(view.name)
            try:
                result = materialize(parts, select=[view.name], end=now, full_refresh=options.full_refresh,
                                     statistics=False)[view.name]
            except FeatureLayerError as exc:
                entry["materialize"] = {"status": "failed", "error": str(exc)}
                failed.append(view.name)
                continue
            entry["materialize"] = {"status": "ok", "error": None, **_view_result(result)}
            if result.sql_changed:
                report.warnings.append(f"feature view {view.name!r}: its SQL changed since its values were "
                                       "computed, so every value was rewritten (full refresh).")
            done.append((view, result))
        step.rows = sum(r.rows_written for _, r in done)
        step.details = {"views": len(done), "failed": failed, "entities": sum(r.entities for _, r in done)}
        step.summary = f"{plural(len(done), 'view')}, {step.rows:,} values written" + (
            f"; failed: {', '.join(failed)}" if failed else "")
        if failed:
            step.status, step.error = "failed", f"materializing {', '.join(failed)} failed (see views[].materialize)"
        if registry.broken_views:
            step.details["skipped_invalid"] = sorted(registry.broken_views)
    return done


def _view_result(result: Any) -> dict[str, Any]:
    out = result.to_dict()
    keep = ("entities", "rows_written", "kept_newer", "expired", "seconds", "full_refresh", "sql_changed",
            "watermark", "newest_event_time", "incremental_from")
    return {key: out.get(key) for key in keep}


def _statistics(parts: Parts, done: list[Any], options: RunOptions, report: RunReport, now: datetime,
                *, debug: bool) -> None:
    from feature_layer.online import statistics as stats

    if not done:
        return
    with _step(report, "statistics", debug=debug) as step:
        state, computed, failed = parts.state(), [], []
        for view, result in done:
            entry = report.view(view.name)
            if not _statistics_due(state, view, options.statistics, read_everything=result.full_refresh):
                entry["statistics"] = {"status": "current" if view.features else "none", "error": None}
                continue
            t = time.perf_counter()
            try:
                state.save_many_statistics(stats.compute(parts.engine(), view, end=now))
            except Exception as exc:  # noqa: BLE001 - statistics are informational: a warning, never fatal
                entry["statistics"] = {"status": "failed", "error": f"{type(exc).__name__}: {exc}"}
                failed.append(view.name)
                report.warnings.append(f"feature view {view.name!r}: statistics were not updated: {exc}")
                continue
            entry["statistics"] = {"status": "computed", "error": None, "seconds": round(time.perf_counter() - t, 6)}
            computed.append(view.name)
        step.rows = sum(len(v.features) for v, _ in done if v.name in computed)
        step.details = {"computed": computed, "failed": failed}
        step.summary = f"statistics of {plural(len(computed), 'view')} computed" + (f"; failed: {', '.join(failed)}"
                                                                            if failed else "")
        if failed:
            step.status = "warn"


def _statistics_due(state: Any, view: Any, policy: str, *, read_everything: bool) -> bool:
    if not view.features or policy == "never":
        return False
    if policy == "always" or read_everything:
        return True
    previous = state.get_statistics(view.features[0].ref)
    computed = previous.get("computed_at") if previous else None
    if not computed:
        return True
    age = SystemClock().now() - datetime.fromisoformat(computed)  # statistics age is bookkeeping: the real clock
    return age.total_seconds() >= STATISTICS_MAX_AGE_SECONDS


def _freshness(parts: Parts, views: list[str], report: RunReport, *, debug: bool) -> None:
    from feature_layer.ops.sla import check_freshness

    if not views:
        return
    with _step(report, "freshness", debug=debug) as step:
        checked = check_freshness(parts, views)
        for item in checked.views:
            report.view(item.view.name)["freshness"] = item.to_dict()
            if item.status == "warn":
                report.warnings.append(f"feature view {item.view.name!r} freshness warning: {item.reason}")
        step.details = {"stale": checked.stale, "warned": checked.warned, "now": checked.now.isoformat()}
        step.summary = f"{plural(len(checked.views), 'view')} checked: {len(checked.stale)} stale, {len(checked.warned)} warned"
        if checked.stale:
            step.status = "stale"
            step.error = "stale feature views: " + ", ".join(
                f"{v.view.name} ({v.reason})" for v in checked.views if v.status == "error")
        elif checked.warned:
            step.status = "warn"


def _verify(parts: Parts, views: list[str], options: RunOptions, report: RunReport, *, debug: bool) -> None:
    from feature_layer.ops.verify import verify

    if not views:
        return
    with _step(report, "verify", debug=debug) as step:
        result = verify(parts, select=views, sample=options.verify_sample, threshold=options.verify_threshold)
        for name in views:
            report.view(name)["verify"] = {
                "entities": result.entities.get(name, 0),
                "features": [f.to_dict() for f in result.features if f.feature.startswith(name + ".")],
            }
        step.rows = sum(result.entities.values())
        step.details = {"max_mismatch_rate": result.max_mismatch_rate, "failed": result.failed,
                        "threshold": result.threshold}
        step.summary = f"{step.rows} entities compared; worst mismatch rate {result.max_mismatch_rate:.2%}"
        empty = sorted(name for name in views if not result.entities.get(name))
        if empty:
            step.status = "warn"
            report.warnings.append(f"verify compared nothing for {', '.join(empty)}: no entity has a value within "
                                   "the TTL of now.")
        if not result.ok:
            step.status = "failed"
            step.error = f"online values differ from the training-set SQL above the threshold for: " \
                         f"{', '.join(result.failed)}"
