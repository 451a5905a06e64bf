"""Ranked feature search: tiers, filters, every word must match, and speed over 10,000 features."""

from __future__ import annotations

import gc
import time
from dataclasses import dataclass
from datetime import timedelta

from hypothesis import given, settings
from hypothesis import strategies as st
from server_helpers import build_registry

from feature_layer.registry.model import Feature, FeatureView, Relation
from feature_layer.registry.search import SearchHit, index_for, search

ADJECTIVES = ["amount", "count", "avg", "max", "min", "ratio", "share", "velocity", "distinct", "first"]
SUBJECTS = ["txn", "merchant", "card", "device", "login", "chargeback", "refund", "country", "ip", "email"]
WINDOWS = ["1h", "24h", "7d", "30d", "90d"]


@dataclass
class GeneratedRegistry:
    views: dict[str, FeatureView]


def generated_registry(n_features: int = 10_000, per_view: int = 25) -> GeneratedRegistry:
    """A registry of ``n_features`` features with realistic names, tags and descriptions."""
    views: dict[str, FeatureView] = {}
    entities = ["user", "merchant", "card", "device"]
    i = 0
    v = 0
    while i < n_features:
        entity = entities[v % len(entities)]
        name = f"{entity}_{SUBJECTS[v % len(SUBJECTS)]}_features_{v}"
        features = []
        for _ in range(min(per_view, n_features - i)):
            adj = ADJECTIVES[i % len(ADJECTIVES)]
            subj = SUBJECTS[(i // 10) % len(SUBJECTS)]
            window = WINDOWS[(i // 100) % len(WINDOWS)]
            features.append(Feature(
                name=f"{subj}_{adj}_{window}_{i}", view=name, dtype="float64",
                description=f"The {adj} of {subj} events per {entity} over the last {window}.",
                tags=(subj, f"team{i % 7}"),
            ))
            i += 1
        views[name] = FeatureView(
            name=name, unique_id=f"model.gen.{name}", entities=(entity,), join_keys=(f"{entity}_id",),
            event_time="ts", features=tuple(features), relation=Relation(None, "main", name),
            ttl=timedelta(days=1), owner=f"team{v % 5}@example.com", tags=("generated",),
            description=f"Generated view {v}.",
        )
        v += 1
    return GeneratedRegistry(views)


def refs(hits: list[SearchHit]) -> list[str]:
    return [h.feature.ref for h in hits]


def test_name_match_outranks_tag_and_entity_which_outrank_description():
    registry = build_registry()
    hits = search(registry, "risk")
    # merchant_risk is a view name (rank 45) ahead of owners containing "risk" (rank 20)
    assert set(refs(hits)[:2]) == {"merchant_risk.chargeback_rate", "merchant_risk.foreign_share"}
    assert hits[0].matched == ("view",)
    spent = search(registry, "spent")
    assert refs(spent) == ["user_txn_features.amount_sum_7d"]
    assert spent[0].matched == ("description",)
    by_tag = search(registry, "velocity")
    assert set(refs(by_tag)) == {"user_txn_features.txn_count_7d", "user_txn_features.amount_sum_7d"}
    assert all(h.matched == ("tag",) for h in by_tag)


def test_exact_name_beats_prefix_beats_substring():
    registry = build_registry()
    assert refs(search(registry, "amount_sum_7d"))[0] == "user_txn_features.amount_sum_7d"
    hits = search(registry, "amount")
    assert refs(hits) == ["user_txn_features.amount_sum_7d", "user_txn_features.avg_amount_7d"]
    assert hits[0].score > hits[1].score  # prefix of the name beats a word inside it


def test_every_word_must_match_somewhere():
    registry = build_registry()
    assert refs(search(registry, "amount spend")) == ["user_txn_features.amount_sum_7d", "user_txn_features.avg_amount_7d"]
    assert search(registry, "amount merchant") == []
    assert refs(search(registry, "charge merchant")) == ["merchant_risk.chargeback_rate"]


def test_filters_are_exact_and_combine_with_text():
    registry = build_registry()
    assert set(refs(search(registry, "", entity="merchant"))) == {"merchant_risk.chargeback_rate", "merchant_risk.foreign_share"}
    assert refs(search(registry, "", tag="spend")) == ["user_txn_features.amount_sum_7d", "user_txn_features.avg_amount_7d"]
    assert refs(search(registry, "count", owner="RISK-ANALYTICS@example.com")) == ["user_txn_features.txn_count_7d"]
    assert refs(search(registry, "", view="merchant_risk", tag="risk")) == ["merchant_risk.chargeback_rate", "merchant_risk.foreign_share"]
    assert search(registry, "", entity="nobody") == []
    assert len(search(registry, "")) == 5  # no text, no filter: everything, by ref


def test_search_is_case_insensitive_and_limit_applies():
    registry = build_registry()
    assert refs(search(registry, "AMOUNT")) == refs(search(registry, "amount"))
    assert len(search(registry, "", limit=2)) == 2


def test_index_is_reused_per_registry_and_rebuilt_for_a_new_one():
    first = build_registry()
    assert index_for(first) is index_for(first)
    second = build_registry()
    assert index_for(second) is not index_for(first)


@settings(max_examples=60, deadline=None)
@given(st.text(alphabet="abcdefghijklmnopqrstuvwxyz_ 0123456789", max_size=12))
def test_every_hit_contains_each_word_and_scores_never_increase(text):
    registry = build_registry()
    hits = search(registry, text, limit=None)
    words = [w for w in text.lower().replace(",", " ").split() if w]
    for hit in hits:
        view = registry.views[hit.feature.view]
        haystack = " ".join([hit.feature.ref, " ".join(hit.feature.tags), " ".join(view.tags), " ".join(view.entities),
                             view.owner or "", hit.feature.description, view.description]).lower()
        assert all(w in haystack for w in words)
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


def test_search_over_10000_features_takes_under_50ms():
    registry = generated_registry(10_000)
    index_for(registry)  # built once per registry, as the server does on load and reload
    queries = ["amount", "txn count", "chargeback 30d", "merchant", "velocity", "refund_ratio", "zzz", "of", "team3"]
    gc.collect()
    worst = 0.0
    for q in queries:
        best = float("inf")
        for _ in range(3):  # best of three: a busy CI machine should not fail the test, a slow search should
            start = time.perf_counter()
            hits = search(registry, q)
            best = min(best, time.perf_counter() - start)
        worst = max(worst, best)
        assert len(hits) <= 50
    assert refs(search(registry, "chargeback_ratio_30d_"))[0].split(".")[1].startswith("chargeback_ratio_30d_")
    assert worst < 0.05, f"slowest query took {worst * 1000:.1f} ms"
