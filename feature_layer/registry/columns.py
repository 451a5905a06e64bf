"""Which columns a model has, from the best source at hand: catalog, schema.yml, or its SQL.

Validation must not claim a column is missing when it only is undocumented. The sources, in
order: ``catalog.json`` (the real table: complete, spelled as the warehouse has it); then the
model's SQL select list read with sqlglot (complete unless it selects ``*`` or an unnamed
expression), with types from the YAML ``columns:``; then the YAML ``columns:`` alone. Pure: no IO.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from sqlglot import exp
from sqlglot.dialects.dialect import Dialect, NormalizationStrategy
from sqlglot.errors import SqlglotError

from feature_layer.dbt.artifacts import DbtNode

CATALOG = "catalog.json"
SQL = "the model's SQL"
YAML = "schema.yml"

_JINJA_EXPR = re.compile(r"\{\{.*?\}\}", re.DOTALL)
_JINJA_COMMENT = re.compile(r"\{#.*?#\}", re.DOTALL)
_JINJA_CONFIG = re.compile(r"\{\{-?\s*config\s*\(.*?\)\s*-?\}\}", re.DOTALL)
_JINJA_TAG = re.compile(r"\{%-?\s*(\w+).*?-?%\}", re.DOTALL)
_PLACEHOLDER = "__feature_layer_jinja__"


@dataclass(frozen=True)
class ModelColumns:
    """A model's known columns, by lower-cased name, in model order."""

    types: dict[str, str | None]
    """Column → SQL type (None when only the name is known)."""
    names: dict[str, str]
    """Column → its spelling in the warehouse (or the YAML's, when that is all there is)."""
    source: str
    """Where the names came from: ``catalog.json``, ``the model's SQL`` or ``schema.yml``."""
    complete: bool
    """True when every column is known, so a name not listed is really missing."""
    exact: frozenset[str] = frozenset()
    """Columns whose spelling is the warehouse's (catalog or SQL), so a case difference is real."""

    def __contains__(self, name: object) -> bool:
        return str(name).lower() in self.types

    def __bool__(self) -> bool:
        return bool(self.types)

    def spelling(self, name: str) -> str:
        return self.names.get(name.lower(), name)


@functools.lru_cache(maxsize=32)
def _dialect(name: str) -> Dialect:
    """One Dialect instance per name (sqlglot.parse builds one per call: a third of a small parse)."""
    return Dialect.get_or_raise(name or None)


def _normalized(identifier: exp.Identifier, dialect: str) -> str:
    """The column name the warehouse creates for an identifier (unquoted names fold per dialect)."""
    name = identifier.name
    if identifier.quoted:
        return name
    try:
        strategy = _dialect(dialect).normalization_strategy
    except (ValueError, SqlglotError):
        return name
    if strategy is NormalizationStrategy.LOWERCASE:
        return name.lower()
    if strategy is NormalizationStrategy.UPPERCASE:
        return name.upper()
    return name


def _outermost_select(tree: exp.Expression | None) -> exp.Select | None:
    while isinstance(tree, (exp.SetOperation, exp.Subquery)):
        tree = tree.left if isinstance(tree, exp.SetOperation) else tree.this  # a UNION is named by its left arm
    return tree if isinstance(tree, exp.Select) else None


def select_list(sql: str | None, dialect: str) -> tuple[list[str], bool] | None:
    """Output column names of ``sql`` and whether they are all of them; None if it cannot be read.

    ``*``, ``t.*``, DuckDB's ``COLUMNS(...)`` and unaliased expressions (whose names each
    engine invents) make the list incomplete rather than wrong.

    >>> select_list("select a, b as B, 1 as c, * from t", "postgres")
    (['a', 'b', 'c'], False)
    >>> select_list("with x as (select 1 as k) select k, \\"V\\" from x", "duckdb")
    (['k', 'V'], True)
    """
    if not sql or not sql.strip():
        return None
    try:
        statements = [s for s in _dialect(dialect).parse(sql) if s is not None]
    except (SqlglotError, ValueError):
        return None
    select = _outermost_select(statements[-1] if statements else None)
    if select is None:
        return None
    names: list[str] = []
    complete = True
    for projection in select.expressions:
        if isinstance(projection, exp.Alias):
            identifier = projection.args.get("alias")
        elif isinstance(projection, exp.Column) and isinstance(projection.this, exp.Identifier):
            identifier = projection.this
        else:
            identifier = None
        if not isinstance(identifier, exp.Identifier) or _PLACEHOLDER in identifier.name:
            complete = False
            continue
        names.append(_normalized(identifier, dialect))
    return names, complete


def _sql_of(node: DbtNode) -> tuple[str | None, bool]:
    """The model's SQL and whether its select list can be trusted to be whole.

    Compiled SQL when dbt wrote it (``dbt compile``/``run``/``build``). After ``dbt parse``
    alone, the raw SQL with ``config()`` dropped, ``{{ … }}`` replaced by a placeholder name
    and ``{% … %}`` tags removed; with ``if``/``for`` tags both branches are read, so the
    names found are kept but the list is not claimed whole.
    """
    if node.compiled_sql:
        return node.compiled_sql, True
    raw = _JINJA_CONFIG.sub("", _JINJA_COMMENT.sub("", node.raw_sql or ""))
    if not raw.strip():
        return None, False
    branches = {tag.group(1) for tag in _JINJA_TAG.finditer(raw)} & {"if", "for", "elif", "else", "call", "macro"}
    return _JINJA_EXPR.sub(_PLACEHOLDER, _JINJA_TAG.sub(" ", raw)), not branches


def model_columns(node: DbtNode, dialect: str = "duckdb") -> ModelColumns:
    """The columns of ``node``: the catalog when present, else its SQL select list, else schema.yml."""
    declared = {name: col.data_type for name, col in node.columns.items()}
    if node.catalog_types:
        names = {n.lower(): n for n in node.catalog_names} or {n: n for n in node.catalog_types}
        return ModelColumns(dict(node.catalog_types), names, CATALOG, complete=True, exact=frozenset(names))
    sql, whole = _sql_of(node)
    selected = select_list(sql, dialect)
    if selected is None:
        spelled = {name: col.name for name, col in node.columns.items()}
        return ModelColumns(declared, spelled, YAML, complete=bool(declared))
    sql_names, complete = selected[0], selected[1] and whole
    types: dict[str, str | None] = {}
    names: dict[str, str] = {}
    for name in sql_names:
        types[name.lower()] = declared.get(name.lower())
        names.setdefault(name.lower(), name)
    exact = frozenset(n.lower() for n in sql_names)
    if not complete:  # what the SQL does not name, the YAML may
        for lowered, col in node.columns.items():
            if lowered not in types:
                types[lowered], names[lowered] = col.data_type, col.name
    return ModelColumns(types, names, SQL, complete=complete, exact=exact)
