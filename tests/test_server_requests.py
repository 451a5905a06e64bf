"""The declared request model (pydantic, the one /openapi.json describes) and the field-by-field
checks that word the errors accept and refuse exactly the same bodies."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from server_helpers import build_registry

from feature_layer.errors import FeatureLayerError, UnknownFeatureError
from feature_layer.server.models import OnlineFeaturesRequest
from feature_layer.server.requests import RequestFieldError, check_online_request, parse_online_request

REGISTRY = build_registry()
REFS = frozenset(f.ref for v in REGISTRY.views.values() for f in v.features)
LIMITS = {"max_rows": 5, "max_features": 4}

VALUES = st.one_of(st.none(), st.booleans(), st.integers(-(2**64), 2**64), st.text(max_size=3),
                   st.floats(allow_nan=False, allow_infinity=False), st.just(2**63), st.just(-(2**63) - 1),
                   st.lists(st.integers(), max_size=1), st.just({"a": 1}))
KEYS = st.sampled_from(["user_id", "merchant_id", ""])
ROWS = st.lists(st.dictionaries(KEYS, VALUES, max_size=2), max_size=6)
ENTITIES = st.dictionaries(KEYS, st.lists(VALUES, max_size=3), max_size=2)
FIELDS = {
    "features": st.one_of(st.lists(st.sampled_from(sorted(REFS)), max_size=5), st.lists(VALUES, max_size=2),
                          VALUES),
    "service": st.one_of(st.just("fraud_model_v1"), VALUES),
    "entity_rows": st.one_of(ROWS, VALUES),
    "entities": st.one_of(ENTITIES, VALUES),
    "include_event_times": VALUES,
    "entity_row": VALUES,
}
GOOD_VALUES = st.one_of(st.integers(-(2**63), 2**63 - 1), st.text(max_size=3), st.booleans(), st.none())
GOOD_ROWS = st.lists(st.dictionaries(KEYS, GOOD_VALUES, min_size=1, max_size=2), min_size=1, max_size=6)
GOOD_ENTITIES = st.integers(1, 3).flatmap(lambda n: st.dictionaries(
    KEYS, st.lists(GOOD_VALUES, min_size=n, max_size=n), min_size=1, max_size=2))
WHAT = st.one_of(st.fixed_dictionaries({"features": st.lists(st.sampled_from(sorted(REFS)), min_size=1, max_size=5)}),
                 st.fixed_dictionaries({"service": st.just("fraud_model_v1")}))
WHO = st.one_of(st.fixed_dictionaries({"entity_rows": GOOD_ROWS}), st.fixed_dictionaries({"entities": GOOD_ENTITIES}))
PLAUSIBLE = st.tuples(WHAT, WHO, st.fixed_dictionaries({}, optional={"include_event_times": st.booleans()})).map(
    lambda parts: {**parts[0], **parts[1], **parts[2]})
MUTATED = st.tuples(PLAUSIBLE, st.sampled_from(sorted(FIELDS))).flatmap(
    lambda t: FIELDS[t[1]].map(lambda value: {**t[0], t[1]: value}))  # one field replaced, often by nonsense
BODIES = st.one_of(PLAUSIBLE, MUTATED, st.fixed_dictionaries({}, optional=FIELDS), VALUES)


def _model_accepts(body) -> bool:
    try:
        OnlineFeaturesRequest.model_validate(body)
    except ValidationError:
        return False
    return True


def _checks_accept(body) -> bool:
    """The structure is accepted: no error, or only the registry's (an unknown service)."""
    try:
        check_online_request(body, REGISTRY, REFS, max_rows=10**6, max_features=10**6)
    except UnknownFeatureError:
        return True
    except RequestFieldError:
        return False
    return True


@settings(max_examples=400, deadline=None)
@given(BODIES)
def test_the_model_and_the_worded_checks_agree(body):
    assert _model_accepts(body) == _checks_accept(body), body


@settings(max_examples=200, deadline=None)
@given(BODIES)
def test_the_server_parses_a_body_as_the_worded_checks_do(body):
    """parse_online_request (model first, then limits and registry) = the field-by-field checks."""
    try:
        got = parse_online_request(body, REGISTRY, REFS, **LIMITS)
    except FeatureLayerError as exc:
        got = type(exc)
    try:
        want = check_online_request(body, REGISTRY, REFS, **LIMITS)
    except FeatureLayerError as exc:
        want = type(exc)
    assert got == want, body
