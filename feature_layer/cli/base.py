"""The root click group, shared options and the one error handler."""

from __future__ import annotations

import json
import sys
import warnings
from collections.abc import Callable, Sequence
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar

import click

from feature_layer.errors import FeatureLayerError, FeatureLayerWarning

F = TypeVar("F", bound=Callable[..., Any])


class Context:
    """Options every command shares; the FeatureStore is opened on first use."""

    def __init__(self, project_dir: Path, target: str | None, debug: bool) -> None:
        self.project_dir = project_dir
        self.target = target
        self.debug = debug
        self._store = None
        self._warned = False

    @property
    def store(self):  # noqa: ANN201 - FeatureStore, imported lazily
        if self._store is None:
            from feature_layer.client import FeatureStore

            self._store = FeatureStore(self.project_dir, target=self.target)
        return self._store

    @property
    def registry(self):  # noqa: ANN201 - Registry, imported lazily
        """The store's registry; once per command, a one-line warning naming any view left out."""
        registry = self.store.registry
        message = registry.degraded_message()
        if message and not self._warned:
            self._warned = True
            click.secho(f"Warning: {message}", fg="yellow", err=True)
        return registry


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--project-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=".",
    show_default=True,
    envvar="FEATURE_LAYER_PROJECT_DIR",
    help="Folder of the dbt project.",
)
@click.option("--target", default=None, envvar="FEATURE_LAYER_TARGET", help="dbt target to read (default: the profile's).")
@click.option("--debug", is_flag=True, help="Show full tracebacks.")
@click.version_option(package_name="feature_layer")
@click.pass_context
def main(ctx: click.Context, project_dir: Path, target: str | None, debug: bool) -> None:
    """feature_layer: a SQL-first feature store on dbt."""
    ctx.obj = Context(project_dir, target, debug)


def _echo_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                  file: Any = None, line: str | None = None) -> None:
    """One line on stderr per feature_layer warning; other warnings as Python prints them."""
    if issubclass(category, FeatureLayerWarning):
        click.secho(f"Warning: {message}", fg="yellow", err=True)
    else:
        _show_python_warning(message, category, filename, lineno, file, line)


_show_python_warning = warnings.showwarning


def handle_errors(func: F) -> F:
    """Turn domain errors into a one-line message and exit code 1 (traceback with --debug);
    print feature_layer warnings (stale artifacts, skipped views) as one line each."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("default", FeatureLayerWarning)  # each message once per command
                warnings.showwarning = _echo_warning
                return func(*args, **kwargs)
        except FeatureLayerError as exc:
            ctx = click.get_current_context(silent=True)
            if ctx is not None and isinstance(ctx.find_root().obj, Context) and ctx.find_root().obj.debug:
                raise
            click.secho(f"Error: {exc}", fg="red", err=True)
            sys.exit(1)

    return wrapper  # type: ignore[return-value]


def echo_json(payload: Any) -> None:
    click.echo(json.dumps(payload, indent=2, default=str))


def render_table(columns: Sequence[str], rows: Sequence[Sequence[Any]], title: str | None = None) -> None:
    """Print a readable table (rich), falling back to plain text when not a terminal."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, show_lines=False, header_style="bold")
    for index, column in enumerate(columns):
        # The first column is the name people copy: never wrap it.
        table.add_column(column, overflow="fold", no_wrap=index == 0)
    for row in rows:
        table.add_row(*("" if v is None else str(v) for v in row))
    console = Console()
    if not console.is_terminal:  # piped or captured: wide enough to keep rows on one line
        console = Console(width=200)
    console.print(table)
