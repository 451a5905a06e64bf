"""Training/serving consistency: online values against the training-set SQL "as of now".

For each online view (or those selected), ``verify`` samples up to ``sample`` entities that have
a row within the view's TTL of ``now`` (every entity with a row up to ``now`` when the view has
no TTL), builds their offline values with the point-in-time training-set SQL for entity rows
stamped ``now`` — exactly what a training set built now would contain —, reads the same
entities from the online store, and compares feature by feature. Floats agree within a relative
1e-9 (the online encoding is exact; the warehouse may round differently between plans); a
feature of unknown type is compared as text (what the online store serves for it); both sides
null counts as agreement (reported apart as ``both_null``).

The sample is drawn by numpy's seeded generator from the distinct keys in the warehouse, so a
run is reproducible (``seed``); the keys are read as one Arrow column per join key.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

import pyarrow as pa
from sqlglot import exp

from feature_layer.clock import as_utc
from feature_layer.errors import InputError
from feature_layer.parts import Parts
from feature_layer.registry.model import FeatureView
from feature_layer.sql.names import col, relation_table

EXAMPLES = 5
"""Mismatching entities shown per feature."""
REL_TOLERANCE = 1e-9
TIMESTAMP_COLUMN = "event_timestamp"


@dataclass
class FeatureCheck:
    """One feature's comparison over the sampled entities."""

    feature: str
    compared: int = 0
    mismatches: int = 0
    both_null: int = 0
    examples: list[dict[str, Any]] = field(default_factory=list)

    @property
    def mismatch_rate(self) -> float:
        return self.mismatches / self.compared if self.compared else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"feature": self.feature, "compared": self.compared, "mismatches": self.mismatches,
                "mismatch_rate": self.mismatch_rate, "both_null": self.both_null,
                "examples": [{k: _jsonable(v) for k, v in e.items()} for e in self.examples]}


@dataclass
class VerifyReport:
    """Every checked feature, and whether the worst mismatch rate is within ``threshold``."""

    now: datetime
    sample: int
    threshold: float
    entities: dict[str, int] = field(default_factory=dict)
    """Entities sampled per view."""
    features: list[FeatureCheck] = field(default_factory=list)

    @property
    def max_mismatch_rate(self) -> float:
        return max((f.mismatch_rate for f in self.features), default=0.0)

    @property
    def failed(self) -> list[str]:
        """Features whose mismatch rate is above the threshold."""
        return [f.feature for f in self.features if f.mismatch_rate > self.threshold]

    @property
    def ok(self) -> bool:
        return not self.failed

    def to_dict(self) -> dict[str, Any]:
        return {"now": self.now.isoformat(), "sample": self.sample, "threshold": self.threshold, "ok": self.ok,
                "max_mismatch_rate": self.max_mismatch_rate, "failed": self.failed, "entities": self.entities,
                "features": [f.to_dict() for f in self.features]}


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def _ts(value: datetime) -> exp.Expression:
    """A UTC timestamp literal (naive warehouse timestamps are UTC by convention)."""
    naive = as_utc(value).replace(tzinfo=None)
    return exp.cast(exp.Literal.string(naive.isoformat(sep=" ", timespec="microseconds")),
                    exp.DataType.build("timestamp"))


def candidates_sql(view: FeatureView, now: datetime) -> exp.Select:
    """The distinct join keys of ``view`` with a row in [now - ttl, now] (any row up to now without a TTL)."""
    event = col(view.event_time)
    where: exp.Expression = exp.LTE(this=event, expression=_ts(now))
    if view.ttl is not None:
        where = exp.and_(where, exp.GTE(this=event.copy(), expression=_ts(now - view.ttl)))
    keys = [col(k) for k in view.join_keys]
    not_null = [exp.Not(this=exp.Is(this=k.copy(), expression=exp.Null())) for k in keys]
    return (
        exp.select(*keys).distinct().from_(relation_table(view)).where(exp.and_(where, *not_null))
        .order_by(*[k.copy() for k in keys])
    )


def sample_entities(engine: Any, view: FeatureView, now: datetime, sample: int, seed: int) -> pa.Table:
    """Up to ``sample`` distinct entities of ``view`` (seeded, reproducible)."""
    import numpy as np

    keys = engine.fetch_arrow(candidates_sql(view, now))
    if keys.num_rows <= sample:
        return keys
    picked = np.sort(np.random.default_rng(seed).choice(keys.num_rows, size=sample, replace=False))
    return keys.take(pa.array(picked))


def _same(offline: Any, online: Any, dtype: str = "") -> bool:
    if offline is None or online is None:
        return offline is None and online is None
    if dtype == "unknown":  # the online store serves such values as text (feature_layer.types)
        return str(offline) == str(online)
    if isinstance(offline, float) or isinstance(online, float):
        try:
            a, b = float(offline), float(online)
        except (TypeError, ValueError):
            return False
        if math.isnan(a) or math.isnan(b):
            return math.isnan(a) and math.isnan(b)
        return math.isclose(a, b, rel_tol=REL_TOLERANCE, abs_tol=1e-12)
    return bool(offline == online)


def verify_view(parts: Parts, view: FeatureView, now: datetime, *, sample: int, seed: int) -> tuple[int, list[FeatureCheck]]:
    """Compare ``view``'s online values with its offline ones for a sample of entities."""
    from feature_layer.offline.training_set import build_training_set
    from feature_layer.online.lookup import get_online_features

    engine = parts.engine()
    entities = sample_entities(engine, view, now, sample, seed)
    checks = [FeatureCheck(f.ref) for f in view.features]
    if entities.num_rows == 0:
        return 0, checks
    stamps = pa.array([now] * entities.num_rows, type=pa.timestamp("us", tz="UTC"))
    entity_df = entities.append_column(TIMESTAMP_COLUMN, stamps)
    refs = [f.ref for f in view.features]
    with build_training_set(engine, entity_df, [(view, list(view.features))],
                            full_feature_names=True, timestamp_column=TIMESTAMP_COLUMN) as training:
        offline = training.to_arrow()
    online = get_online_features(parts, features=refs, entity_rows=entities).to_dict()
    keys = entities.to_pylist()
    for check, feature in zip(checks, view.features, strict=True):
        offline_values = offline.column(f"{view.name}__{feature.name}").to_pylist()
        online_values = online[feature.name]
        for key, a, b in zip(keys, offline_values, online_values, strict=True):
            check.compared += 1
            if a is None and b is None:
                check.both_null += 1
            if not _same(a, b, feature.dtype):
                check.mismatches += 1
                if len(check.examples) < EXAMPLES:
                    check.examples.append({"entity": key, "offline": a, "online": b})
    return entities.num_rows, checks


def verify(
    parts: Parts,
    *,
    select: Sequence[str] | None = None,
    sample: int = 100,
    threshold: float = 0.0,
    seed: int = 0,
    now: datetime | None = None,
) -> VerifyReport:
    """Check the online views (or ``select``) as of ``now`` (default: the clock's); see the module docstring.

    ``threshold``: the highest mismatch rate (a fraction, 0 to 1) a feature may have for the
    report to be ``ok``.
    """
    if isinstance(sample, bool) or not isinstance(sample, int) or sample < 1:
        raise InputError(f"--sample {sample!r} is not a positive number of entities.", fix="pass e.g. --sample 100.")
    if not isinstance(threshold, (int, float)) or not 0.0 <= float(threshold) <= 1.0 or math.isnan(threshold):
        raise InputError(f"--threshold {threshold!r} is not a fraction between 0 and 1.",
                         fix="pass e.g. --threshold 0.01 for at most 1% of values differing.")
    registry = parts.registry()
    when = parts.clock.now() if now is None else now
    if select:
        views = [registry.view(name) for name in select]
        for view in views:
            if not view.online:
                raise InputError(f"Feature view {view.name!r} is declared `online: false`: it has no online values.",
                                 fix="drop it from --select.")
    else:
        views = [v for v in registry.views.values() if v.online]
    report = VerifyReport(now=when, sample=sample, threshold=float(threshold))
    for view in sorted(views, key=lambda v: v.name):
        count, checks = verify_view(parts, view, when, sample=sample, seed=seed)
        report.entities[view.name] = count
        report.features.extend(checks)
    return report
