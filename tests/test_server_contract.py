"""Contract fuzzing of the HTTP API from its own ``GET /openapi.json`` (schemathesis).

Every operation is called with generated requests, valid and invalid (positive and negative
generation from the schema), against the real server over the materialized example project.
Each response must not be a 5xx and must conform to the document: a declared status code, the
declared content type, a body valid against the declared schema.

``FEATURE_LAYER_FUZZ_EXAMPLES`` sets the examples per operation and mode (default 15 in the
suite, 300 with ``FEATURE_LAYER_FUZZ=full`` as ``make fuzz`` sets it). ``contract_run`` is the reusable entry point.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from server_helpers import materialized_copy, open_store

from feature_layer.server.app import create_app

EXAMPLES_ENV = "FEATURE_LAYER_FUZZ_EXAMPLES"
DEFAULT_EXAMPLES = 15
FULL_EXAMPLES = 300  # FEATURE_LAYER_FUZZ=full (make fuzz): about 3,300 requests


def contract_run(app: Any, examples: int) -> dict[str, Any]:
    """Fuzz every operation of ``app``'s /openapi.json; raise on the first 5xx or schema violation.

    Returns {"operations": {"POST /v1/online-features": {"inputs": n, "statuses": {...}}, ...},
    "inputs": total, "server_errors": 0, "violations": 0}.
    """
    import schemathesis
    from hypothesis.errors import Unsatisfiable
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import (
        content_type_conformance,
        response_schema_conformance,
        status_code_conformance,
    )

    checks = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    report: dict[str, Any] = {"operations": {}, "inputs": 0, "server_errors": 0, "violations": 0}
    for result in schema.get_all_operations():
        operation = result.ok()
        label = f"{operation.method.upper()} {operation.path}"
        statuses: Counter[int] = Counter()
        modes = [schemathesis.GenerationMode.POSITIVE]
        if _has_inputs(operation):  # nothing to make invalid otherwise
            modes.append(schemathesis.GenerationMode.NEGATIVE)
        for strategy in operation.get_strategies_from_examples():  # the document's own examples, always sent
            _fuzz(app, strategy, 1, checks, statuses)
        for mode in modes:
            try:
                _fuzz(app, operation.as_strategy(generation_mode=mode), examples, checks, statuses)
            except Unsatisfiable:
                if mode is not schemathesis.GenerationMode.NEGATIVE:
                    raise  # else: any string is a valid name, so no request is invalid by the schema
        report["operations"][label] = {"inputs": sum(statuses.values()),
                                       "statuses": {str(k): v for k, v in sorted(statuses.items())}}
        report["inputs"] += sum(statuses.values())
        report["server_errors"] += sum(v for k, v in statuses.items() if k >= 500 and label != "GET /healthz")
    return report


def _fuzz(app: Any, strategy: Any, examples: int, checks: list[Any], statuses: Counter[int]) -> None:
    from hypothesis import HealthCheck, Phase, given, settings

    @given(case=strategy)
    @settings(max_examples=examples, deadline=None, database=None, phases=[Phase.explicit, Phase.generate],
              suppress_health_check=list(HealthCheck))
    def call(case: Any) -> None:
        response = case.call(app=app)
        statuses[response.status_code] += 1
        case.validate_response(response, checks=checks)

    call()


def _has_inputs(operation: Any) -> bool:
    definition = operation.definition.raw
    return bool(definition.get("parameters") or definition.get("requestBody"))


@pytest.fixture(scope="module")
def app(built_example_project: Path, tmp_path_factory: pytest.TempPathFactory):
    store = open_store(materialized_copy(built_example_project, tmp_path_factory.mktemp("contract") / "project"))
    yield create_app(store, reload_interval=None)
    store.close()


def test_openapi_describes_every_route_with_the_request_model(app):
    from starlette.testclient import TestClient

    with TestClient(app) as client:
        document = client.get("/openapi.json").json()
        routes = {route.path for route in app.routes if hasattr(route, "methods")}
    assert document["openapi"].startswith("3.")
    assert routes - {"/", "/openapi.json"} <= set(document["paths"]), routes - set(document["paths"])
    request = document["components"]["schemas"]["OnlineFeaturesRequest"]
    assert request["additionalProperties"] is False
    assert set(request["properties"]) == {"features", "service", "entity_rows", "entities", "include_event_times",
                                          "join_key_map"}
    assert request["properties"]["entity_rows"]["maxItems"] == app.state.limits.max_entity_rows


def test_the_api_honours_its_openapi_contract(app):
    """0 responses with a 5xx, 0 responses that violate /openapi.json."""
    examples = int(os.environ.get(EXAMPLES_ENV) or (FULL_EXAMPLES if os.environ.get("FEATURE_LAYER_FUZZ") == "full"
                                                    else DEFAULT_EXAMPLES))
    report = contract_run(app, examples)
    print(json.dumps(report, indent=1))
    assert report["server_errors"] == 0 and report["violations"] == 0
    assert all(op["inputs"] >= 1 for op in report["operations"].values())  # every operation was exercised
    assert report["operations"]["POST /v1/online-features"]["inputs"] >= examples
    online = report["operations"]["POST /v1/online-features"]["statuses"]
    assert online.get("200", 0) > 0 and online.get("422", 0) > 0  # both valid and invalid bodies were sent
