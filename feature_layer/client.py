"""``FeatureStore``: the one object users hold. It wires settings to the parts and delegates.

It stays small on purpose: training sets live in ``feature_layer.offline``, materialization
and lookup in ``feature_layer.online``, the registry in ``feature_layer.registry``. Those
receive the store's :class:`~feature_layer.parts.Parts` (built once, here), never the store.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from feature_layer.clock import Clock, clock_from_env
from feature_layer.config import Settings, load_settings, online_settings_from, warehouse_settings
from feature_layer.parts import Parts

if TYPE_CHECKING:
    from feature_layer.offline.engine import Engine
    from feature_layer.offline.engines import EngineFactory
    from feature_layer.offline.training_set import TrainingSet
    from feature_layer.online.lookup import OnlineResponse
    from feature_layer.online.materialize import MaterializeResult
    from feature_layer.online.store import OnlineStore
    from feature_layer.registry.registry import Registry
    from feature_layer.state import StateStore


class FeatureStore:
    """Entry point for a dbt feature project: registry, training sets, online features."""

    def __init__(
        self,
        project_dir: str | Path = ".",
        *,
        target: str | None = None,
        online_store: str | dict[str, Any] | None = None,
        clock: Clock | None = None,
    ) -> None:
        """``clock`` tells every part what time it is (materialization's default end, TTL at
        read, freshness); default: ``FEATURE_LAYER_NOW`` when set, else the system clock."""
        settings = load_settings(project_dir, target=target)
        if online_store is not None:
            from dataclasses import replace

            settings = replace(
                settings,
                online_store=online_settings_from(online_store, settings.project_dir, Path("<argument>")),
            )
        self.settings: Settings = settings
        self._registry: Registry | None = None
        self._registry_stamp: tuple[float, float] | None = None
        self._engine: Engine | None = None
        self._engines: EngineFactory | None = None
        self._online: OnlineStore | None = None
        self._state: StateStore | None = None
        self._open_lock = threading.Lock()  # the server's threads may ask for a part at once
        self.parts = Parts(
            registry=lambda: self.registry,
            engine=self.offline_engine,
            online=self.online_store,
            state=lambda: self.state,
            clock=clock_from_env() if clock is None else clock,
            new_engine=self._new_engine,
            push_log=self.settings.project_dir / "data" / "push",
        )
        """The collaborators handed to training sets, materialization, lookups and the server."""

    @property
    def clock(self) -> Clock:
        return self.parts.clock

    @property
    def project_dir(self) -> Path:
        return self.settings.project_dir

    @property
    def registry(self) -> Registry:
        """The registry, re-read when dbt rewrites ``manifest.json`` or ``catalog.json``.

        Loaded leniently: an invalid view is left out (``registry.broken_views``) and asking
        for it raises its issues, so one bad declaration does not block the others."""
        from feature_layer.registry.registry import Registry, artifact_stamp

        stamp = artifact_stamp(self.settings)
        if self._registry is None or stamp != self._registry_stamp:
            self._registry = Registry.load(self.settings, strict=False)
            self._registry_stamp = stamp
        return self._registry

    def offline_engine(self) -> Engine:
        """The warehouse connection of the dbt target (opened once, reused)."""
        if self._engine is None:
            from feature_layer.offline.engines import connect

            self._engine = connect(warehouse_settings(self.settings))
        return self._engine

    def _new_engine(self) -> Engine:
        """Another warehouse engine, owned by the caller: new, or an idle one reused where the
        engine kind's connection is costly (``offline.engines.EngineFactory``)."""
        if self._engines is None:
            from feature_layer.offline.engines import EngineFactory

            with self._open_lock:
                if self._engines is None:
                    self._engines = EngineFactory.for_settings(lambda: warehouse_settings(self.settings))
        return self._engines()

    def online_store(self) -> OnlineStore:
        """The configured online store (embedded SQLite unless Redis is configured)."""
        if self._online is None:
            from feature_layer.online.backends import connect_online_store

            with self._open_lock:
                if self._online is None:
                    self._online = connect_online_store(
                        self.settings.online_store, namespace=self.settings.project, clock=self.clock
                    )
        return self._online

    @property
    def state(self) -> StateStore:
        """Durable state dbt does not know: watermarks, statistics, usage."""
        if self._state is None:
            from feature_layer.state import StateStore

            with self._open_lock:
                if self._state is None:
                    self._state = StateStore(self.settings.state_path)
        return self._state

    def get_training_set(
        self,
        entity_df: Any,
        features: Sequence[str] | None = None,
        *,
        service: str | None = None,
        full_feature_names: bool = False,
        timestamp_column: str | None = None,
        join_key_map: dict[str, Any] | None = None,
    ) -> TrainingSet:
        """Point-in-time-correct features for each row of ``entity_df`` (docs/training_sets.md).

        ``timestamp_column`` names the as-of time column; by default ``event_timestamp``, or
        the entity dataframe's only timestamp column.
        """
        from feature_layer.offline.training_set import get_training_set

        return get_training_set(
            self.parts,
            entity_df,
            features=features,
            service=service,
            full_feature_names=full_feature_names,
            timestamp_column=timestamp_column,
            join_key_map=join_key_map,
        )

    def materialize(
        self,
        select: Sequence[str] | None = None,
        *,
        start: datetime | None = None,
        end: datetime | None = None,
        full_refresh: bool = False,
        progress: bool = False,
        late_lookback: timedelta | None = None,
    ) -> MaterializeResult:
        """Push the latest feature values per entity into the online store.

        ``late_lookback``: how far before the created-at watermark an incremental run looks for
        rows that landed late and out of order (default one hour; see docs/online_store.md).
        """
        from feature_layer.online.materialize import DEFAULT_LATE_LOOKBACK, materialize

        return materialize(
            self.parts,
            select=select,
            start=start,
            end=end,
            full_refresh=full_refresh,
            progress=progress,
            late_lookback=DEFAULT_LATE_LOOKBACK if late_lookback is None else late_lookback,
        )

    def get_online_features(
        self,
        features: Sequence[str] | None = None,
        entity_rows: Any = None,
        *,
        service: str | None = None,
        include_event_times: bool = False,
        join_key_map: dict[str, Any] | None = None,
    ) -> OnlineResponse:
        """Latest values for each entity row, one round trip to the online store (one per use of
        a view read under other entity columns with ``join_key_map``)."""
        from feature_layer.online.lookup import get_online_features

        return get_online_features(
            self.parts,
            features=features,
            service=service,
            entity_rows=entity_rows,
            include_event_times=include_event_times,
            join_key_map=join_key_map,
        )

    def push(self, view: str, rows: Any) -> Any:
        """Write values computed elsewhere for ``view`` (a list of row dicts, an Arrow table or a pandas
        DataFrame with the join keys, the event time and every feature): online with the never-older
        rule, and to the view's offline log under data/push/ (feature_layer.stream.push)."""
        from feature_layer.stream.push import push_rows

        return push_rows(self.parts, view, rows, log_dir=self.parts.push_log)

    def close(self) -> None:
        for part in (self._engine, self._engines, self._online, self._state):
            if part is not None:
                part.close()
        self._engine = self._engines = self._online = self._state = None

    def __enter__(self) -> FeatureStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
