"""The select list read from SQL names the columns the warehouse really creates.

Oracle: the engine itself. Random select lists (aliases in any case, quoted or not, stars,
unaliased expressions, CTEs and UNIONs) run on DuckDB and PostgreSQL with ``LIMIT 0``; when
``select_list`` says the list is complete it must equal the engine's column names exactly, and
when it says incomplete, every name it does give must be one of them.
"""

from __future__ import annotations

import duckdb
import psycopg2
import pytest
from conftest import require_postgres
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from feature_layer.registry.columns import select_list

BASE = "(select 1 as a, 2 as b, 3 as c) as t"
IDENT = st.text(alphabet="deyDEY_", min_size=1, max_size=4).filter(lambda s: not s.startswith("_"))
KINDS = ["column", "qualified", "alias", "quoted_alias", "expression", "star", "bare_expr"]


def projection(kind: str, column: str, alias: str) -> str:
    return {
        "column": column,
        "qualified": f"t.{column}",
        "alias": f"{column} as {alias}",
        "quoted_alias": f'{column} + 1 as "{alias}"',
        "expression": f"{column} * 2 as {alias}",
        "star": "*" if alias[0] in "dD" else "t.*",
        "bare_expr": f"{column} + 1",
    }[kind]


@st.composite
def query(draw: st.DrawFn) -> str:
    """A select list whose names are mostly distinct (aliases unique ignoring case, columns unique)."""
    kinds = draw(st.lists(st.sampled_from(KINDS), min_size=1, max_size=3))
    columns = draw(st.permutations(["a", "b", "c"]))
    aliases = draw(st.lists(IDENT, min_size=3, max_size=3, unique_by=str.lower))
    parts = [projection(k, c, a) for k, c, a in zip(kinds, columns, aliases, strict=False)]
    body = f"select {', '.join(parts)} from {BASE}"
    shape = draw(st.sampled_from(["plain", "cte", "union"]))
    if shape == "cte":
        return f"with t as (select 1 as a, 2 as b, 3 as c) {body.replace(BASE, 't')}"
    if shape == "union":
        return f"{body} union all {body}"
    return body


def _unique(names: list[str]) -> bool:
    return len({n.lower() for n in names}) == len(names)


def check(names_from_engine: list[str], sql: str, dialect: str) -> None:
    result = select_list(sql, dialect)
    assert result is not None, sql
    names, complete = result
    if complete:
        assert names == names_from_engine, sql
    else:
        assert set(names) <= set(names_from_engine), sql


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(query())
def test_select_list_matches_duckdb(sql: str) -> None:
    with duckdb.connect() as conn:
        names = conn.sql(sql + " limit 0").columns
    if not _unique(names):
        return  # duplicate output names: the engine renames them, the model could not be a table
    check(list(names), sql, "duckdb")


@pytest.fixture(scope="module")
def pg_cursor():  # noqa: ANN201
    conn = psycopg2.connect(require_postgres())
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            yield cur
    finally:
        conn.close()


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(sql=query())
def test_select_list_matches_postgres(pg_cursor, sql: str) -> None:  # noqa: ANN001
    pg_cursor.execute(sql + " limit 0")
    names = [d.name for d in pg_cursor.description]
    if not _unique(names):
        return
    check(names, sql, "postgres")
