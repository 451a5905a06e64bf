"""Search over every object: tokens, stems, typos, field weights, filters, kinds, did-you-mean,
checked against a brute-force reference matcher; and the index built once per registry."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from server_helpers import build_registry

from feature_layer.errors import UnknownFeatureError
from feature_layer.registry.model import Entity, Feature, FeatureService, FeatureView, Relation
from feature_layer.registry.search import (
    KINDS,
    STOPWORDS,
    SearchHit,
    index_for,
    search,
    search_objects,
    stem,
    tokens,
)

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


def titles(registry, query: str, **kwargs) -> list[str]:
    return [f"{m.kind}:{m.title}" for m in search_objects(registry, query, **kwargs).results]


# -- ranking -------------------------------------------------------------------------------

def test_every_kind_of_object_is_found_and_ranked_together_with_its_kind():
    registry = build_registry()
    found = titles(registry, "chargeback")
    # the source named exactly that (by stem, all of its name) and the feature named with it, then the
    # view and the ML model through a column of that name
    assert found[:2] == ["source:raw.chargebacks", "feature:merchant_risk.chargeback_rate"]
    assert set(found[2:]) == {"feature_view:merchant_risk", "ml_model:fraud_model_v1"}
    assert titles(registry, "fraud classifier")[0] == "ml_model:fraud_model_v1"
    assert "entity:user" in titles(registry, "card holder")[:2]  # "A card holder." (and the view's description)
    assert titles(registry, "stg_transactions")[0] == "model:stg_transactions"
    kinds = {m.kind for m in search_objects(registry, "", limit=None).results}
    assert kinds == set(KINDS)
    match = search_objects(registry, "chargeback").results[1]
    assert match.url == "/#/feature/merchant_risk.chargeback_rate" and match.matched == ("name",)


def test_names_come_before_columns_and_tags_before_descriptions():
    registry = build_registry()
    hits = search_objects(registry, "amount").results
    assert [m.title for m in hits][:2] == ["user_txn_features.amount_sum_7d", "user_txn_features.avg_amount_7d"]
    assert all(m.matched == ("columns",) for m in hits[2:]) and hits[1].score > 4 * hits[2].score
    spend = search_objects(registry, "spend", kinds=["feature"]).results
    assert [m.title for m in spend] == ["user_txn_features.amount_sum_7d", "user_txn_features.avg_amount_7d",
                                        "user_txn_features.txn_count_7d"]
    assert spend[0].matched == ("tag",)  # the tag (6) beats the view's description "spend" inherited (2)


def test_field_weights_name_then_tag_then_description_then_columns():
    f = [Feature("alpha_rate", "v", "float64", "plain"), Feature("beta", "v", "float64", "plain", tags=("alpha",)),
         Feature("gamma", "v", "float64", "the alpha of it"), Feature("delta", "v", "float64", "plain")]
    view = FeatureView("v", "model.p.v", ("e",), ("e_id",), "ts", tuple(f), Relation(None, "main", "v"),
                       column_types=(("e_id", "int64"), ("ts", "timestamp"), ("alpha_raw", "float64")))

    class R:
        views = {"v": view}

    order = titles(R(), "alpha")
    assert order[:3] == ["feature:v.alpha_rate", "feature:v.beta", "feature:v.gamma"]
    assert "feature_view:v" in order  # by its column alpha_raw (weight 2), below the description hit
    assert order.index("feature_view:v") > order.index("feature:v.gamma")
    assert "feature:v.delta" not in order


def test_short_word_prefers_the_whole_token_over_a_word_it_is_inside():
    f = [Feature("average_spend", "v", "float64", "Average of spend"), Feature("age", "v", "int64", "Age in years"),
         Feature("page_views", "v", "int64", "Views of a page")]
    view = FeatureView("v", "model.p.v", ("e",), ("e_id",), "ts", tuple(f), Relation(None, "main", "v"))

    class R:
        views = {"v": view}

    hits = search_objects(R(), "age", kinds=["feature"]).results
    assert hits[0].title == "v.age"
    assert [m.title for m in hits].index("v.age") < [m.title for m in hits].index("v.average_spend")
    assert hits[0].score > 3 * max(m.score for m in hits[1:])


def test_stems_and_typos_find_the_word_meant_and_did_you_mean_offers_the_spelling():
    registry = build_registry()
    assert titles(registry, "chargebak")[0] == "feature:merchant_risk.chargeback_rate"  # one typo
    result = search_objects(registry, "chargebak")
    assert result.did_you_mean[0] == "chargeback"  # a typo-only match still offers the spelling
    assert titles(registry, "velocities", kinds=["feature"])[:2]  # the stem of "velocity"
    assert stem("disputed") == stem("dispute") == stem("disputes")
    nothing = search_objects(registry, "velcty")  # two edits in six letters: too far for a match
    assert nothing.results == () and nothing.total == 0
    assert nothing.did_you_mean and nothing.did_you_mean[0] == "velocity"
    assert search_objects(registry, "qqqqqq").did_you_mean == ()  # nothing close: no suggestion
    assert search_objects(registry, "amount").did_you_mean == ()  # found as typed: no suggestion


def test_filters_kinds_and_empty_query():
    registry = build_registry()
    merchant = search_objects(registry, "", filters={"entity": "merchant"}, limit=None).results
    assert {m.kind for m in merchant} == {"feature", "feature_view", "ml_model", "entity"}
    assert all(m.kind != "feature" or m.title.startswith("merchant_risk.") for m in merchant)
    owned = search_objects(registry, "", filters={"owner": "RISK-ML@example.com"}, limit=None).results
    assert [m.title for m in owned] == ["fraud_model_v1"]
    tagged = search_objects(registry, "share", filters={"tag": "risk"}, kinds=["feature"]).results
    assert [m.title for m in tagged][0] == "merchant_risk.foreign_share"
    assert [m.title for m in search_objects(registry, "amount", kinds=["source"]).results] == ["raw.transactions"]
    assert search_objects(registry, "amount", kinds=["entity"]).results == ()
    assert len(search_objects(registry, "", limit=2).results) == 2
    with pytest.raises(UnknownFeatureError, match="Unknown object kind"):
        search_objects(registry, "x", kinds=["table"])


def test_feature_search_api_keeps_its_shape_and_filters():
    registry = build_registry()
    assert refs(search(registry, "amount"))[:2] == ["user_txn_features.amount_sum_7d", "user_txn_features.avg_amount_7d"]
    assert set(refs(search(registry, "", entity="merchant"))) == {"merchant_risk.chargeback_rate",
                                                                   "merchant_risk.foreign_share"}
    assert refs(search(registry, "count", owner="RISK-ANALYTICS@example.com")) == ["user_txn_features.txn_count_7d"]
    assert refs(search(registry, "", view="merchant_risk", tag="risk")) == ["merchant_risk.chargeback_rate",
                                                                             "merchant_risk.foreign_share"]
    assert search(registry, "", entity="nobody") == []
    assert len(search(registry, "")) == 5
    assert refs(search(registry, "AMOUNT")) == refs(search(registry, "amount"))
    assert registry.search("chargeback")[0].feature.ref == "merchant_risk.chargeback_rate"


def test_index_is_reused_per_registry_and_rebuilt_for_a_new_one():
    first = build_registry()
    assert index_for(first) is index_for(first)
    second = build_registry()
    assert index_for(second) is not index_for(first)


# -- an independent reference: brute force over the objects' own text ------------------------

def _osa(a: str, b: str) -> int:
    """Optimal string alignment distance, written out (the reference for rapidfuzz's OSA)."""
    d = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i in range(len(a) + 1):
        d[i][0] = i
    for j in range(len(b) + 1):
        d[0][j] = j
    for i in range(1, len(a) + 1):
        for j in range(1, len(b) + 1):
            cost = 0 if a[i - 1] == b[j - 1] else 1
            d[i][j] = min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost)
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                d[i][j] = min(d[i][j], d[i - 2][j - 2] + 1)
    return d[len(a)][len(b)]


def _word_matches(word: str, token: str) -> bool:
    if word == token or stem(word) == stem(token):
        return True
    if len(word) >= 2 and token.startswith(word):
        return True
    if len(word) >= 4 and word.isalpha() and token.isalpha():
        if _osa(word, token) <= (2 if len(word) >= 8 else 1):
            return True
    return len(word) >= 3 and word in token


def _feature_text(view: FeatureView, feature: Feature) -> list[str]:
    return tokens(" ".join([feature.name, view.name, " ".join(feature.tags), " ".join(view.tags),
                            view.owner or "", " ".join(view.entities), feature.description, view.description]))


SMALL = generated_registry(300, per_view=20)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from(
    ["amount", "amont", "count", "cnt", "merchant", "merchnt", "velocity", "of", "the", "card", "cards", "7d",
     "team3", "refunds", "shar", "devic", "30", "events", "user", "xyz", "chargeback", "chargebak", "ratios"]),
    min_size=1, max_size=3))
def test_features_found_are_exactly_those_where_every_word_matches_brute_force(words):
    query = " ".join(words)
    found = {h.feature.ref for h in search(SMALL, query, limit=None)}
    required = [w for w in dict.fromkeys(words) if w not in STOPWORDS] or list(dict.fromkeys(words))
    expected = set()
    for view in SMALL.views.values():
        for feature in view.features:
            text = _feature_text(view, feature)
            if all(any(_word_matches(w, t) for t in text) for w in required):
                expected.add(feature.ref)
    assert found == expected, query
    hits = search(SMALL, query, limit=None)
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


def test_search_over_10000_features_answers_from_the_prebuilt_index_bounded(monkeypatch):
    """The behaviour behind the speed figure (measured by ``python -m benchmarks.search``,
    never asserted in a timed test): built once, reused by every query, bounded by the limit."""
    from feature_layer.registry import search as search_mod

    registry = generated_registry(10_000)
    index = index_for(registry)
    monkeypatch.setattr(search_mod.SearchIndex, "__init__",
                        lambda self, *a, **k: pytest.fail("the index was rebuilt for a query"))
    for q in ["amount", "txn count", "chargebak 30d", "merchant", "velocity", "refund_ratio", "zzz", "of", "team3"]:
        result = search_objects(registry, q)
        assert len(result.results) <= 50 and result.total >= len(result.results)
        assert index.query(q, limit=None).total == result.total


def test_ml_models_are_found_by_the_features_they_use_and_their_owner():
    registry = build_registry()
    service = FeatureService("churn_model", "exposure.p.churn_model", ("user_txn_features.txn_count_7d",),
                             description="Predicts churn.", owner="growth@example.com")
    registry.services["churn_model"] = service
    registry.entities.setdefault("user", Entity("user", ("user_id",)))
    assert titles(registry, "growth", kinds=["ml_model"]) == ["ml_model:churn_model"]
    assert "ml_model:churn_model" in titles(registry, "txn_count_7d", kinds=["ml_model"])
