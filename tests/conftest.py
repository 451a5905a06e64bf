"""Shared fixtures: the example fraud project, built for real with dbt.

``built_example_project``   the example project copied into a temporary directory, 10k rows
                            of demo data generated, ``dbt build`` + ``dbt docs generate`` run
                            on DuckDB; returns the project Path (target/manifest.json,
                            target/catalog.json, target/feature_layer.duckdb).
``parsed_example_project``  the same copy after ``dbt parse`` only (fast; no data, no build).
``postgres_example_project`` the same project built on the ``postgres`` target in a fresh,
                            uniquely named schema that is dropped at teardown. Fails (never
                            skips) when PostgreSQL is not reachable on 127.0.0.1:5432.
``fixture_now``             the end of the built example data (the newest event time of its
                            online views, UTC): the "now" every test pins the clock to, via
                            ``FeatureStore(..., clock=FixedClock(fixture_now))`` or
                            ``FEATURE_LAYER_NOW`` (``now_env``) for the CLI and subprocesses,
                            so no test depends on today's date.
"""

from __future__ import annotations

import os
import shutil
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FIXTURES_DIR = Path(__file__).resolve().parent / "fixtures"
EXAMPLE_FILES = ("dbt_project.yml", "profiles.yml")
EXAMPLE_DIRS = ("models", "macros")
EXAMPLE_ROWS = 10_000
EXAMPLE_SEED = 7
PG_HOST, PG_PORT, PG_USER = "127.0.0.1", 5432, "postgres"
PG_DATABASE = "test"
_PROJECT_ENV = (
    "FEATURE_LAYER_DUCKDB_PATH",
    "FEATURE_LAYER_DATA_DIR",
    "FEATURE_LAYER_PG_DB",
    "FEATURE_LAYER_PG_SCHEMA",
    "FEATURE_LAYER_PG_RAW_SCHEMA",
    "DBT_PROFILES_DIR",
    "DBT_TARGET_PATH",
)


LONGEST_GROUPS = ("spark", "stream", "ops_run", "browser", "redis-cluster", "year_ahead", "stream-table")
"""xdist groups by how long they run, longest first (``--durations``: spark ~270 s on one worker,
stream ~100 s, the others 20-60 s)."""


def _group(item: pytest.Item) -> str | None:
    mark = item.get_closest_marker("xdist_group")
    if mark is None:
        return None
    return mark.args[0] if mark.args else mark.kwargs.get("name")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The longest xdist groups first. ``make test`` runs ``--dist loadgroup --no-loadscope-reorder``,
    which hands out work in this order: a long group started last (the Spark group sorts late by
    name and by test count) would run alone on one worker at the end and add its whole length to the
    suite's wall time."""
    rank = {name: i for i, name in enumerate(LONGEST_GROUPS)}
    items.sort(key=lambda item: rank.get(_group(item) or "", len(rank)))  # stable: the rest keep their order


def copy_example_project(dest: Path) -> Path:
    """Copy the example dbt project (project file, profiles, models, macros) into ``dest``."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in EXAMPLE_FILES:
        shutil.copy2(REPO / name, dest / name)
    for name in EXAMPLE_DIRS:
        shutil.copytree(REPO / name, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
    return dest


def replace_in_file(path: Path, old: str, new: str) -> None:
    """Replace ``old`` by ``new`` in ``path``; fail loudly when ``old`` is not there."""
    text = path.read_text()
    if old not in text:
        raise AssertionError(f"{path} no longer contains {old!r}; update tests/conftest.py to match it.")
    path.write_text(text.replace(old, new))


@contextmanager
def clean_project_env(**values: str) -> Iterator[None]:
    """Run with the project's environment variables unset (or set to ``values``)."""
    saved = {key: os.environ.get(key) for key in (*_PROJECT_ENV, *values)}
    for key in _PROJECT_ENV:
        os.environ.pop(key, None)
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture(scope="session")
def parsed_example_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example project after ``dbt parse`` (target/manifest.json, no warehouse)."""
    from feature_layer.dbt.runner import run_dbt

    project = copy_example_project(tmp_path_factory.mktemp("parsed_example_project"))
    with clean_project_env():
        run_dbt(["parse"], project, target="duckdb", quiet=True)
    return project


@pytest.fixture(scope="session")
def built_example_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example project built on DuckDB with 10k rows of demo data, plus its catalog."""
    from feature_layer.dbt.runner import run_dbt
    from feature_layer.demo.data import generate_demo_data

    project = copy_example_project(tmp_path_factory.mktemp("built_example_project"))
    generate_demo_data(project / "data" / "raw", rows=EXAMPLE_ROWS, seed=EXAMPLE_SEED)
    with clean_project_env():
        run_dbt(["build"], project, target="duckdb", quiet=True)
        run_dbt(["docs", "generate"], project, target="duckdb", quiet=True)
    return project


def data_end(project: Path) -> datetime:
    """The newest event time of ``project``'s online views in its warehouse, UTC-aware."""
    from sqlglot import exp

    from feature_layer.client import FeatureStore
    from feature_layer.sql.names import relation_table

    with clean_project_env(), FeatureStore(project) as store:
        views = [v for v in store.registry.views.values() if v.online]
        engine = store.offline_engine()
        newest = [
            engine.fetch_arrow(
                exp.select(exp.func("max", exp.column(v.event_time, quoted=True))).from_(relation_table(v))
            ).column(0)[0].as_py()
            for v in views
        ]
    found = [t for t in newest if t is not None]
    if not views or not found:
        raise AssertionError(f"{project} has no online view with data: the example project changed.")
    latest = max(t if isinstance(t, datetime) else datetime(t.year, t.month, t.day) for t in found)
    return latest.replace(tzinfo=UTC) if latest.tzinfo is None else latest.astimezone(UTC)


@pytest.fixture(scope="session")
def fixture_now(built_example_project: Path) -> datetime:
    """The end of the built example data: what "now" is in every test on it (never today)."""
    return data_end(built_example_project)


@pytest.fixture
def now_env(fixture_now: datetime, monkeypatch: pytest.MonkeyPatch) -> datetime:
    """``FEATURE_LAYER_NOW`` pinned to ``fixture_now`` for this test (CLI runs, subprocesses)."""
    from feature_layer.clock import NOW_VARIABLE

    monkeypatch.setenv(NOW_VARIABLE, fixture_now.isoformat())
    return fixture_now


# --- PostgreSQL --------------------------------------------------------------------------

POSTGRES_HELP = (
    f"PostgreSQL is not reachable on {PG_HOST}:{PG_PORT} (user {PG_USER}, trust auth). "
    "These tests need it and never skip. Install and start it with:\n"
    "    apt-get install postgresql\n"
    "    pg_ctlcluster 15 main start\n"
    "(or run scripts/system-deps.sh, which does both as root)."
)


def postgres_dsn(database: str = PG_DATABASE) -> str:
    return f"host={PG_HOST} port={PG_PORT} user={PG_USER} dbname={database}"


def require_postgres(database: str = PG_DATABASE) -> str:
    """Return a DSN for ``database`` (created when missing); pytest.fail when PG is down."""
    try:
        with socket.create_connection((PG_HOST, PG_PORT), timeout=2):
            pass
    except OSError as exc:
        pytest.fail(f"{POSTGRES_HELP}\n({exc})", pytrace=False)
    import psycopg2

    try:
        conn = psycopg2.connect(postgres_dsn("postgres"), connect_timeout=5)
    except psycopg2.Error as exc:
        pytest.fail(f"{POSTGRES_HELP}\n({str(exc).strip()})", pytrace=False)
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,))
            if cur.fetchone() is None:
                try:
                    cur.execute(f'CREATE DATABASE "{database}"')
                except psycopg2.errors.DuplicateDatabase:
                    pass  # created concurrently by another test worker
    finally:
        conn.close()
    return postgres_dsn(database)


def drop_postgres_schemas(dsn: str, *schemas: str) -> None:
    import psycopg2

    conn = psycopg2.connect(dsn)
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            for schema in schemas:
                cur.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        conn.close()


@dataclass(frozen=True)
class PostgresExampleProject:
    """The example project built on PostgreSQL; behaves like its Path (``/``, os.fspath).

    Its profiles.yml names ``schema`` literally, so settings read from the copy point at
    the built tables without any environment variable.
    """

    path: Path
    schema: str
    raw_schema: str
    database: str
    dsn: str

    def __truediv__(self, other: str | os.PathLike[str]) -> Path:
        return self.path / other

    def __fspath__(self) -> str:
        return os.fspath(self.path)


@pytest.fixture(scope="session")
def postgres_example_project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresExampleProject]:
    """The example project built with ``--target postgres`` in a fresh schema."""
    from feature_layer.dbt.runner import run_dbt
    from feature_layer.demo.data import generate_demo_data, load_demo_data_into_postgres

    dsn = require_postgres(PG_DATABASE)
    schema = f"fl_test_{uuid.uuid4().hex[:12]}"
    raw_schema = f"{schema}_raw"
    project = copy_example_project(tmp_path_factory.mktemp("postgres_example_project"))
    replace_in_file(project / "profiles.yml", "env_var('FEATURE_LAYER_PG_SCHEMA', 'feature_layer')", f"'{schema}'")
    replace_in_file(
        project / "models" / "example" / "staging" / "sources.yml",
        "env_var('FEATURE_LAYER_PG_RAW_SCHEMA', 'raw')",
        f"'{raw_schema}'",
    )
    generate_demo_data(project / "data" / "raw", rows=EXAMPLE_ROWS, seed=EXAMPLE_SEED)
    try:
        load_demo_data_into_postgres(project / "data" / "raw", dsn, schema=raw_schema)
        with clean_project_env():
            run_dbt(["build"], project, target="postgres", quiet=True)
            run_dbt(["docs", "generate"], project, target="postgres", quiet=True)
        yield PostgresExampleProject(project, schema, raw_schema, PG_DATABASE, dsn)
    finally:
        drop_postgres_schemas(dsn, schema, raw_schema)


# -- the browser tests (ui): one materialized project, one server, one Chromium per session ----
@pytest.fixture(scope="session")
def ui_project(built_example_project: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The built example project materialized with the clock pinned (``server_helpers.EXAMPLE_NOW``)."""
    from server_helpers import materialized_copy

    return materialized_copy(built_example_project, tmp_path_factory.mktemp("ui") / "project")


@pytest.fixture(scope="session")
def ui_server(ui_project: Path) -> Iterator[object]:
    """The real server over ``ui_project`` (``.store`` is its FeatureStore); tests must not change it."""
    from server_helpers import LiveServer, open_store

    from feature_layer.server.app import create_app

    store = open_store(ui_project)
    with LiveServer(create_app(store, reload_interval=None)) as live:
        live.store = store
        yield live
    store.close()


@pytest.fixture(scope="session")
def ui_browser() -> Iterator[object]:
    """Headless Chromium (Debian's, through Playwright); missing, it fails with the install command."""
    from playwright.sync_api import sync_playwright
    from server_helpers import launch_chromium

    with sync_playwright() as p:
        browser = launch_chromium(p)
        yield browser
        browser.close()
