"""Open the warehouse engine of a dbt target, from the one table in ``offline.kinds``.

``connect`` is the only place an engine is opened from settings: the target's adapter type
(or ``offline: {engine: generic}``) picks the row of :data:`~feature_layer.offline.kinds.ENGINE_KINDS`,
whose opener builds the engine, and the engine gets that row's capabilities.

:class:`EngineFactory` is how the rest of the code asks for *another* engine (the server's
short-lived reads, statistics in a thread): by the kind's ``connection_cost``, a new engine per
use (``cheap``: in-process DuckDB, which then also sees the file's newest state) or an idle one
handed out again (``moderate``, ``expensive``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from feature_layer.config import WarehouseSettings, require_warehouse_file
from feature_layer.errors import WarehouseError
from feature_layer.offline.engine import Engine
from feature_layer.offline.kinds import ENGINE_KINDS, NATIVE_KINDS, Capabilities, EngineKind, capabilities_of, kind_for

if TYPE_CHECKING:
    import pyarrow as pa
    from sqlglot import exp

ENGINES = ENGINE_KINDS
"""Engine kind name → :class:`EngineKind` (kept under its old name)."""


def engine_kind(settings: WarehouseSettings) -> EngineKind:
    """The row of the table that serves ``settings`` (its ``engine``, else its adapter type's)."""
    if settings.engine:
        if settings.engine not in ENGINE_KINDS:
            raise WarehouseError(f"Unknown engine kind {settings.engine!r} for target {settings.target!r}.",
                                 fix=f"use one of: {', '.join(sorted(ENGINE_KINDS))}.")
        return ENGINE_KINDS[settings.engine]
    return kind_for(settings.type)


def connect(settings: WarehouseSettings) -> Engine:
    """Open the engine for a dbt target: native for duckdb, postgres and spark, the dbt
    adapter's own connection (generic) for any other adapter whose plugin is installed."""
    require_warehouse_file(settings)  # never let duckdb.connect create an empty database
    kind = engine_kind(settings)
    if kind.name == "generic" and not settings.profile and settings.type not in NATIVE_KINDS:
        # settings made in code, not read from a profile: nothing to build the adapter's credentials from
        from feature_layer.offline.kinds import adapter_plugin_installed

        missing = "" if adapter_plugin_installed(settings.type) else f" (pip install dbt-{settings.type})"
        raise WarehouseError(
            f"Target {settings.target!r} uses adapter {settings.type!r}, which has no native engine; the generic "
            f"engine needs the target's profile to open the dbt adapter's connection{missing}.",
            fix="read the settings from profiles.yml (feature_layer.config.warehouse_settings), or use a "
            f"{', '.join(sorted(NATIVE_KINDS))} target.",
        )
    engine = kind.open(settings)
    engine.capabilities = kind.capabilities_for(settings.type)  # type: ignore[attr-defined]
    return engine


# ----------------------------------------------------------------------------- the factory (pooling)
IDLE_MAX = 4
"""Idle engines a factory keeps (the server's threads rarely need more at once on 2 cores)."""
IDLE_SECONDS = 60.0
"""A ``moderate`` engine idle longer than this is closed, not reused (servers and proxies drop
idle connections; a fresh one costs a round trip, a dead one a failed request)."""


class EngineFactory:
    """New engines for one target, pooled by the kind's ``connection_cost``.

    Calling the factory returns an engine the caller owns and closes; for a pooled kind that
    engine is a lease, and closing it puts the engine back (its registered tables dropped) unless
    a call on it failed or a stream was left unfinished, which closes it for real.
    """

    def __init__(self, opener: Callable[[], Engine], *, capabilities: Capabilities | None = None,
                 idle_max: int = IDLE_MAX, idle_seconds: float = IDLE_SECONDS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._opener = opener
        self._capabilities = capabilities
        self._idle: list[tuple[float, Engine]] = []
        self._lock = threading.Lock()
        self._idle_max = idle_max
        self._idle_seconds = idle_seconds
        self._clock = clock
        self._closed = False
        self.opened = 0
        """Engines opened so far (the tests count reuse by it)."""

    @classmethod
    def for_settings(cls, settings: Callable[[], WarehouseSettings]) -> EngineFactory:
        return cls(lambda: connect(settings()))

    def __call__(self) -> Engine:
        reused = self._take()
        if reused is not None:
            return _Lease(self, reused)
        engine = self._opener()
        self.opened += 1
        caps = self._capabilities or capabilities_of(engine)
        self._capabilities = caps
        return _Lease(self, engine) if caps.pooled else engine

    def _take(self) -> Engine | None:
        expired: list[Engine] = []
        found = None
        with self._lock:
            now = self._clock()
            while self._idle:
                since, engine = self._idle.pop()
                if self._expired(since, now):
                    expired.append(engine)
                else:
                    found = engine
                    break
        for engine in expired:
            engine.close()
        return found

    def _expired(self, since: float, now: float) -> bool:
        caps = self._capabilities
        return caps is not None and caps.connection_cost == "moderate" and now - since > self._idle_seconds

    def _give_back(self, engine: Engine, reusable: bool) -> None:
        if reusable:
            with self._lock:
                if not self._closed and len(self._idle) < self._idle_max:
                    self._idle.append((self._clock(), engine))
                    return
        engine.close()

    @property
    def idle(self) -> int:
        return len(self._idle)

    def close(self) -> None:
        """Close the idle engines (leases still out close theirs when given back)."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for _, engine in idle:
            engine.close()


class _Lease(Engine):
    """An engine lent by an :class:`EngineFactory`: every call goes to the engine; ``close``
    gives it back. Anything else (``capabilities``, ``replace_table``, ``connection``) is the
    engine's own."""

    def __init__(self, factory: EngineFactory, engine: Engine) -> None:
        self._factory = factory
        self._engine: Engine | None = engine
        self.dialect = engine.dialect
        self._registered: set[str] = set()
        self._streams = 0
        self._failed = False

    def __getattr__(self, name: str) -> Any:
        engine = self.__dict__.get("_engine")
        if engine is None:
            raise AttributeError(name)
        return getattr(engine, name)

    def _inner(self) -> Engine:
        if self._engine is None:
            raise WarehouseError("This warehouse engine was closed.", fix="ask the feature store for a new one.")
        return self._engine

    def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        try:
            return getattr(self._inner(), method)(*args, **kwargs)
        except Exception:
            self._failed = True
            raise

    def fetch_arrow(self, sql_or_expression: str | exp.Expression) -> pa.Table:
        return self._call("fetch_arrow", sql_or_expression)

    def stream_arrow(self, sql_or_expression: str | exp.Expression, batch_size: int = 100_000) -> Iterator[pa.RecordBatch]:
        batches = self._call("stream_arrow", sql_or_expression, batch_size=batch_size)
        return self._watched(batches)

    def _watched(self, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        self._streams += 1
        try:
            yield from batches
        except Exception:
            self._failed = True
            raise
        self._streams -= 1  # only a stream read to its end counts as finished

    def execute(self, sql: str | exp.Expression) -> None:
        self._call("execute", sql)

    def schema_of(self, sql_or_expression: str | exp.Expression) -> pa.Schema:
        return self._call("schema_of", sql_or_expression)

    def has_rows(self, query: exp.Select) -> bool:
        return self._call("has_rows", query)

    def register_arrow(self, name: str, table: pa.Table) -> None:
        self._call("register_arrow", name, table)
        self._registered.add(name)

    def unregister(self, name: str) -> None:
        self._call("unregister", name)
        self._registered.discard(name)

    def close(self) -> None:
        engine, self._engine = self._engine, None
        if engine is None:
            return
        reusable = not self._failed and not self._streams
        for name in sorted(self._registered):
            try:
                engine.unregister(name)
            except Exception:  # noqa: BLE001 - a broken engine is closed below, not reused
                reusable = False
        self._factory._give_back(engine, reusable)
