"""Statistics of what is served (each entity's latest value as of the materialization), of the
last training set built, and the PSI between them: the dbt-built example, materialized with the
clock pinned, checked against plain SQL and numpy references."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from server_helpers import EXAMPLE_NOW, materialized_copy, open_store
from starlette.testclient import TestClient

from feature_layer.online.statistics import (
    BINS,
    PSI_THRESHOLD,
    TRAINING_PREFIX,
    axis_ticks,
    bin_edges,
    drift,
    position,
    training_statistics,
)
from feature_layer.registry.model import Feature

RATE = "merchant_risk_features.chargeback_rate_30d"
CATEGORY = "merchant_risk_features.category"


@pytest.fixture(scope="module")
def project(built_example_project: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return materialized_copy(built_example_project, tmp_path_factory.mktemp("served_stats") / "project")


@pytest.fixture(scope="module")
def store(project: Path):
    s = open_store(project)
    yield s
    s.close()


def served_values(store, column: str) -> list:
    """The reference: merchants' latest row as of EXAMPLE_NOW, newer than the 2-day TTL (plain SQL)."""
    now = EXAMPLE_NOW.replace(tzinfo=None).isoformat(sep=" ")
    sql = (f"select {column} from (select *, row_number() over (partition by merchant_id order by as_of desc) rn "
           f"from merchant_risk_features where as_of <= timestamp '{now}') "
           f"where rn = 1 and as_of > timestamp '{now}' - interval 2 day")
    return store.offline_engine().fetch_arrow(sql).column(0).to_pylist()


def test_materialized_statistics_describe_each_entitys_served_value(store):
    stats = store.state.get_statistics(RATE)
    values = served_values(store, "chargeback_rate_30d")
    present = [v for v in values if v is not None]
    assert stats["rows"] == len(values) and stats["nulls"] == len(values) - len(present)
    total_rows = store.offline_engine().fetch_arrow("select count(*) from merchant_risk_features").column(0)[0].as_py()
    assert stats["rows"] < total_rows  # one row per merchant, not every day of its history
    assert stats["min"] == pytest.approx(min(present)) and stats["max"] == pytest.approx(max(present))
    assert stats["scope"] == "served" and stats["as_of"] == EXAMPLE_NOW.isoformat()
    assert "latest value per entity" in stats["scope_label"] and "TTL" in stats["scope_label"]
    lo, hi, mean = min(present), max(present), float(np.mean(present))
    expected_scale = "log" if (mean - lo) / (hi - lo) < 0.2 else "linear"
    assert stats["histogram"]["scale"] == stats["axis"]["scale"] == expected_scale
    counts = [0] * BINS
    for v in present:  # the same binning, recomputed in Python
        counts[min(int(math.floor(position(v, lo, hi, expected_scale) * BINS + 1e-9)), BINS - 1)] += 1
    assert stats["histogram"]["counts"] == counts
    assert stats["histogram"]["edges"] == pytest.approx(bin_edges(lo, hi, expected_scale))
    ticks = stats["axis"]["ticks"]
    assert ticks[0]["position"] == 0 and ticks[-1]["position"] == 1 and len(ticks) >= 3
    assert [t["position"] for t in ticks] == sorted(t["position"] for t in ticks)


def test_strings_and_booleans_have_their_top_served_values(store):
    stats = store.state.get_statistics(CATEGORY)
    values = [v for v in served_values(store, "category") if v is not None]
    expected = sorted(((values.count(v), v) for v in set(values)), key=lambda p: (-p[0], p[1]))
    assert [(t["count"], t["value"]) for t in stats["top_values"]] == expected[:len(stats["top_values"])]
    assert stats["top_values"][0]["share"] == pytest.approx(expected[0][0] / len(values), abs=1e-6)
    flag = store.state.get_statistics("merchant_risk_features.had_fraud_30d")
    assert {t["value"] for t in flag["top_values"]} <= {True, False} and flag["top_values"]


def test_a_training_set_records_its_statistics_and_the_api_shows_drift(store):
    labels = store.offline_engine().fetch_arrow(
        "select user_id, merchant_id, occurred_at, is_fraud from fraud_training_labels order by transaction_id")
    table = store.get_training_set(labels, [RATE, CATEGORY], timestamp_column="occurred_at").to_arrow()
    recorded = store.state.get_statistics(TRAINING_PREFIX + RATE)
    present = np.array([v for v in table.column("chargeback_rate_30d").to_pylist() if v is not None])
    assert recorded["rows"] == table.num_rows and recorded["scope"] == "training"
    assert recorded["min"] == pytest.approx(present.min()) and recorded["mean"] == pytest.approx(present.mean())
    assert recorded["quantiles"] == pytest.approx(list(np.quantile(present, np.linspace(0, 1, 101))))
    assert store.state.get_statistics(TRAINING_PREFIX + CATEGORY)["categories"]

    from feature_layer.server.app import create_app

    with TestClient(create_app(store, reload_interval=None)) as client:
        body = client.get(f"/v1/features/{RATE}/statistics").json()
    assert set(body) == {"feature", "statistics", "training", "drift"}
    served, training, psi = body["statistics"], body["training"], body["drift"]
    assert served["scope"] == "served" and training["scope"] == "training" and training["source"] == "training"
    assert "quantiles" not in training and training["histogram_kind"] == "bins" and training["axis"]["ticks"]
    assert served["histogram_kind"] == "bins" and sum(b["count"] for b in served["histogram"]) == served["rows"] - \
        served["nulls"]
    # the reference PSI: training shares of the served bins counted from the raw training values
    edges = [b["lo"] for b in served["histogram"]] + [served["histogram"][-1]["hi"]]
    inner = np.asarray(edges[1:-1])
    t_counts = np.bincount(np.searchsorted(inner, present, side="right"), minlength=len(edges) - 1)
    t_null = recorded["nulls"] / recorded["rows"]
    s_null = served["nulls"] / served["rows"]
    s = [s_null] + [(1 - s_null) * b["count"] / (served["rows"] - served["nulls"]) for b in served["histogram"]]
    t = [t_null] + [(1 - t_null) * c / len(present) for c in t_counts]
    reference = sum((max(a, 1e-4) - max(b, 1e-4)) * math.log(max(a, 1e-4) / max(b, 1e-4)) for a, b in zip(s, t, strict=True))
    assert psi["psi"] == pytest.approx(reference, abs=0.05)  # quantile interpolation vs exact counts
    assert psi["drifted"] == (psi["psi"] > PSI_THRESHOLD) and psi["threshold"] == 0.2 and "ln" in psi["method"]
    assert [b["label"] for b in psi["bins"]][0] == "null" and len(psi["bins"]) == BINS + 1


def _stats(values, dtype="float64", served=True):
    import pyarrow as pa

    feature = Feature("x", "v", dtype)
    stats = training_statistics(pa.table({"x": values}), [(feature, "x")],
                                now=EXAMPLE_NOW)["v.x"]
    if served:
        stats.pop("quantiles", None)
        if "categories" in stats:
            stats["top_values"] = stats.pop("categories")
    return stats


def test_psi_is_small_for_the_same_distribution_and_flagged_for_a_shift():
    rng = np.random.default_rng(3)
    base = list(rng.lognormal(3, 1, 5000))
    same = drift(_stats(list(rng.lognormal(3, 1, 5000))), _stats(base, served=False))
    assert same is not None and same["psi"] < 0.05 and not same["drifted"]
    shifted = drift(_stats(list(rng.lognormal(4, 1, 5000))), _stats(base, served=False))
    assert shifted["psi"] > PSI_THRESHOLD and shifted["drifted"]
    nulls = drift(_stats(base[:2500] + [None] * 2500), _stats(base, served=False))
    assert nulls["drifted"] and nulls["bins"][0]["serving"] == pytest.approx(0.5)
    colours = drift(_stats(["red"] * 80 + ["blue"] * 20, "string"), _stats(["red"] * 20 + ["blue"] * 80, "string",
                                                                            served=False))
    assert colours["drifted"] and {b["label"] for b in colours["bins"]} == {"null", "red", "blue", "other"}
    assert drift(None, _stats(base, served=False)) is None


@settings(max_examples=40, deadline=None)
@given(st.floats(-1e6, 1e6), st.floats(1e-3, 1e7), st.sampled_from(["linear", "log"]))
def test_axis_ticks_are_inside_the_range_in_order_with_both_ends(lo, width, scale):
    hi = lo + width
    ticks = axis_ticks(lo, hi, scale)
    assert ticks[0]["value"] == lo and ticks[0]["position"] == 0
    assert all(lo - 1e-9 * abs(lo) <= t["value"] <= hi + 1e-9 * abs(hi) for t in ticks)
    positions = [t["position"] for t in ticks]
    assert positions == sorted(positions) and all(0 <= p <= 1 for p in positions) and len(ticks) >= 2
    edges = bin_edges(lo, hi, scale)
    assert edges[0] == lo and edges[-1] == hi and all(a <= b for a, b in zip(edges, edges[1:], strict=False))
