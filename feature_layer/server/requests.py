"""Request parsing and validation: bounded bodies, strict keys, errors that name the field.

Kept apart from the handlers so the checks are plain functions, testable without HTTP.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from pydantic import ValidationError
from starlette.requests import Request
from starlette.types import Receive

from feature_layer.errors import InputError, UnknownFeatureError
from feature_layer.registry.declarations import close_matches
from feature_layer.server.models import OnlineFeaturesRequest

ONLINE_KEYS = ("features", "service", "entity_rows", "entities", "include_event_times", "join_key_map")
_SCALARS = (str, int, float, bool, type(None))
# JSON numbers beyond int64 (orjson parses those past 2**64 as floats) can match no key exactly.
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
_TWO_63 = float(2**63)  # a float at ±2**63 is a rounded out-of-range literal: -9223372036854775809 parses to it


class RequestFieldError(InputError):
    """One field of a request is missing or malformed (HTTP 422)."""

    def __init__(self, field: str, message: str, *, fix: str) -> None:
        self.field = field
        super().__init__(message, fix=fix)


class RequestTooLargeError(InputError):
    """A request body is larger than the server accepts (HTTP 413)."""

    def __init__(self, limit: int) -> None:
        self.field = "body"
        super().__init__(f"The request body is larger than {limit} bytes.",
                         fix="split the entity rows over several requests.")


def unknown_feature(field: str, message: str, fix: str) -> UnknownFeatureError:
    exc = UnknownFeatureError(message, fix=fix)
    exc.field = field  # type: ignore[attr-defined]
    return exc


async def read_body(headers: Iterable[tuple[bytes, bytes]], receive: Receive, limit: int) -> bytes:
    """The raw request body, refusing anything over ``limit`` bytes before reading it all
    (a too-large Content-Length at once; a chunked upload as soon as it passes the limit)."""
    for name, value in headers:
        if name == b"content-length":
            try:
                if int(value) > limit:
                    raise RequestTooLargeError(limit)
            except ValueError:
                raise RequestFieldError("Content-Length", "Content-Length is not a number.",
                                        fix="send a valid Content-Length header.") from None
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise RequestFieldError("body", "The client disconnected before sending the body.",
                                    fix="send the whole request body.")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise RequestTooLargeError(limit)
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def parse_json_body(body: bytes) -> Any:
    """The parsed JSON body; an empty or malformed body is a 4xx naming the fix."""
    if not body:
        raise RequestFieldError("body", "The request body is empty.",
                                fix='send JSON such as {"features": ["view.feature"], "entity_rows": [{"user_id": 1}]}.')
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise RequestFieldError("body", f"The request body is not valid JSON ({exc}).",
                                fix="send a JSON object with Content-Type: application/json.") from None


async def read_json_body(request: Request, limit: int) -> Any:
    """The JSON body of a starlette request (same limits and errors as the raw-ASGI fast path)."""
    return parse_json_body(await read_body(request.scope["headers"], request.receive, limit))


@dataclass(frozen=True)
class OnlineRequest:
    features: list[str] | None
    service: str | None
    entity_rows: list[dict[str, Any]]
    include_event_times: bool
    join_key_map: dict[str, Any] | None = None
    """Validated (``registry.join_keys.parse_join_key_map``); None for most requests."""


def parse_online_request(payload: Any, registry: Any, refs: frozenset[str], *, max_rows: int,
                         max_features: int) -> OnlineRequest:
    """Validate a ``POST /v1/online-features`` body: its structure with the declared model
    (``models.OnlineFeaturesRequest``, the one ``/openapi.json`` describes), then the server's
    limits and the registry (features and service exist).

    A body the model refuses is re-checked field by field to word the error (the field, what
    is wrong, the fix); the hot path, a valid body, pays for the model and membership checks only.
    """
    try:
        request = OnlineFeaturesRequest.model_validate(payload)
    except ValidationError as exc:
        check_online_request(payload, registry, refs, max_rows=max_rows, max_features=max_features)
        raise _from_model_error(exc) from None
    features = request.features
    if features is not None and (len(features) > max_features or not all(ref in refs for ref in features)):
        features = _features(features, registry, refs, max_features)  # `view.*`, or a worded error
    service = request.service
    if service is not None and service not in registry.services:
        raise unknown_feature("service", f"Feature service {service!r} does not exist."
                              f"{close_matches(service, registry.services)}",
                              fix=f"use one of: {', '.join(sorted(registry.services)) or '(none declared)'}.")
    rows = request.entity_rows
    if rows is None or len(rows) > max_rows:
        rows = _entity_rows(payload, max_rows)  # columnar entities as rows, or the row limit's error
    join_key_map = _join_key_map(request.join_key_map, registry) if request.join_key_map is not None else None
    return OnlineRequest(features, service, rows, request.include_event_times, join_key_map)


def _join_key_map(raw: Any, registry: Any) -> dict[str, Any]:
    from feature_layer.registry.join_keys import parse_join_key_map

    try:
        return parse_join_key_map(raw, registry.views)
    except InputError as exc:
        raise RequestFieldError("join_key_map", exc.message, fix=exc.fix or "") from None


def _field_of(loc: tuple[Any, ...]) -> str:
    """A pydantic error location as the API names fields: ``entity_rows[3].user_id``, ``entities.user_id[2]``."""
    if not loc:
        return "body"
    head = str(loc[0])
    if head == "entity_rows" and len(loc) >= 3:
        return f"entity_rows[{loc[1]}].{loc[2]}"
    if head == "entities" and len(loc) >= 3:
        return f"entities.{loc[1]}[{loc[2]}]"
    if head in ("entity_rows", "features") and len(loc) >= 2:
        return f"{head}[{loc[1]}]"
    if head == "entities" and len(loc) == 2:
        return f"entities.{loc[1]}"
    return head


def _from_model_error(exc: ValidationError) -> RequestFieldError:
    first = exc.errors(include_url=False)[0]
    field = _field_of(tuple(first.get("loc", ())))
    message = str(first.get("msg", "invalid")).removeprefix("Value error, ")
    return RequestFieldError(field, f"{field}: {message}.",
                             fix="see GET /openapi.json for the request schema (OnlineFeaturesRequest).")


def check_online_request(payload: Any, registry: Any, refs: frozenset[str], *, max_rows: int,
                         max_features: int) -> OnlineRequest:
    """The request checked field by field, each error worded with the field and the fix."""
    if not isinstance(payload, dict):
        raise RequestFieldError("body", f"The body must be a JSON object, not {type(payload).__name__}.",
                                fix='send {"features": [...], "entity_rows": [{...}]}.')
    unknown = [k for k in payload if k not in ONLINE_KEYS]
    if unknown:
        raise RequestFieldError(unknown[0], f"Unknown field {unknown[0]!r}.{close_matches(unknown[0], ONLINE_KEYS)}",
                                fix=f"use only: {', '.join(ONLINE_KEYS)}.")
    nulls = [k for k in ONLINE_KEYS if k in payload and payload[k] is None]
    if nulls:
        raise RequestFieldError(nulls[0], f"`{nulls[0]}` is null.", fix=f"leave `{nulls[0]}` out, or give it a value.")
    features = payload.get("features")
    service = payload.get("service")
    if (features is None) == (service is None):
        raise RequestFieldError("features", "Give exactly one of `features` and `service`.",
                                fix='pass "features": ["view.feature", ...] or "service": "<ml exposure name>".')
    if features is not None:
        _features(features, None, refs, max_features)  # the structure first, the registry after it
    if service is not None and not isinstance(service, str):
        raise RequestFieldError("service", "`service` must be a string.", fix='pass "service": "fraud_model_v1".')
    rows = _entity_rows(payload, max_rows)
    include = payload.get("include_event_times", False)
    if not isinstance(include, bool):
        raise RequestFieldError("include_event_times", "`include_event_times` must be true or false.",
                                fix='pass "include_event_times": true.')
    if features is not None:
        features = _features(features, registry, refs, max_features)
    if service is not None and service not in registry.services:
        raise unknown_feature("service", f"Feature service {service!r} does not exist."
                              f"{close_matches(service, registry.services)}",
                              fix=f"use one of: {', '.join(sorted(registry.services)) or '(none declared)'}.")
    return OnlineRequest(features, service, rows, include)


def _features(features: Any, registry: Any | None, refs: frozenset[str], max_features: int) -> list[str]:
    """``features`` checked (each one known to ``registry``; None: the shape only)."""
    if not isinstance(features, list) or not features:
        raise RequestFieldError("features", "`features` must be a non-empty list of `view.feature` strings.",
                                fix='pass "features": ["user_txn_features.amount_sum_7d"].')
    if len(features) > max_features:
        raise RequestFieldError("features", f"{len(features)} features requested; at most {max_features} per request.",
                                fix="request fewer features, or use a feature service.")
    for i, ref in enumerate(features):
        if not isinstance(ref, str):
            raise RequestFieldError(f"features[{i}]", f"features[{i}] is {type(ref).__name__}, not a string.",
                                    fix="write each feature as `view.feature`.")
        if ref in refs:
            continue
        view_name, dot, name = ref.partition(".")
        if not dot:
            raise RequestFieldError(f"features[{i}]", f"{ref!r} is not a feature reference.",
                                    fix="write `view.feature` (or `view.*`).")
        if registry is None or (name == "*" and view_name in registry.views):
            continue  # registry None: the structure only
        if view_name not in registry.views:
            raise unknown_feature(f"features[{i}]", f"Feature view {view_name!r} does not exist."
                                  f"{close_matches(view_name, registry.views)}",
                                  fix="GET /v1/features lists every feature.")
        names = registry.views[view_name].feature_names
        raise unknown_feature(f"features[{i}]", f"Feature {ref!r} does not exist.{close_matches(name, names)}",
                              fix=f"use one of {view_name}'s features: {', '.join(names)}.")
    return features


def _entity_rows(payload: Mapping[str, Any], max_rows: int) -> list[dict[str, Any]]:
    rows = payload.get("entity_rows")
    columns = payload.get("entities")
    if (rows is None) == (columns is None):
        raise RequestFieldError("entity_rows", "Give exactly one of `entity_rows` and `entities`.",
                                fix='pass "entity_rows": [{"user_id": 1}] (or columnar "entities": {"user_id": [1]}).')
    if columns is not None:
        if not isinstance(columns, dict) or not columns:
            raise RequestFieldError("entities", "`entities` must be an object of join key → list of values.",
                                    fix='pass "entities": {"user_id": [1, 2]}.')
        lengths = set()
        for key, values in columns.items():
            if not isinstance(values, list):
                raise RequestFieldError(f"entities.{key}", f"entities.{key} must be a list.",
                                        fix=f'pass "entities": {{"{key}": [1, 2]}}.')
            lengths.add(len(values))
        if len(lengths) != 1:
            raise RequestFieldError("entities", "The lists in `entities` have different lengths.",
                                    fix="give every join key one value per entity.")
        n = lengths.pop()
        rows = [{k: v[i] for k, v in columns.items()} for i in range(min(n, max_rows + 1))]
        field = "entities"
    else:
        field = "entity_rows"
    if not isinstance(rows, list) or not rows:
        raise RequestFieldError(field, f"`{field}` must be a non-empty list.", fix='pass "entity_rows": [{"user_id": 1}].')
    if len(rows) > max_rows:
        raise RequestFieldError(field, f"More than {max_rows} entity rows in one request.",
                                fix=f"send at most {max_rows} rows per request.")
    def cell(i: int, key: str) -> str:
        return f"entities.{key}[{i}]" if columns is not None else f"entity_rows[{i}].{key}"

    for i, row in enumerate(rows):
        if not isinstance(row, dict) or not row:
            raise RequestFieldError(f"{field}[{i}]", f"{field}[{i}] must be a non-empty object of join key → value.",
                                    fix='write each row as {"user_id": 1}.')
        for key, value in row.items():
            if not isinstance(value, _SCALARS):
                raise RequestFieldError(cell(i, key), f"{cell(i, key)} is a {type(value).__name__}; "
                                        "join key values must be strings, numbers or booleans.",
                                        fix=f'write "{key}": 1 or "{key}": "abc".')
            if (type(value) is int and not INT64_MIN <= value <= INT64_MAX) or \
                    (type(value) is float and not -_TWO_63 < value < _TWO_63):
                raise RequestFieldError(cell(i, key), f"{cell(i, key)} = {value!r} is outside the 64-bit integer "
                                        "range of join keys.",
                                        fix=f"pass a value from {INT64_MIN} to {INT64_MAX}, or a string key as a "
                                        "JSON string.")
    return rows


def query_params(request: Request, allowed: tuple[str, ...], max_chars: int) -> dict[str, str]:
    """The query string as a dict, refusing unknown or overlong parameters."""
    out: dict[str, str] = {}
    for key, value in request.query_params.multi_items():
        if key not in allowed:
            raise RequestFieldError(key, f"Unknown query parameter {key!r}.{close_matches(key, allowed)}",
                                    fix=f"use only: {', '.join(allowed)}.")
        if len(value) > max_chars:
            raise RequestFieldError(key, f"Query parameter {key!r} is longer than {max_chars} characters.",
                                    fix="shorten it.")
        if value != "":
            out[key] = value
    return out


def int_param(params: Mapping[str, str], key: str, default: int, low: int, high: int) -> int:
    raw = params.get(key)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise RequestFieldError(key, f"{key}={raw!r} is not an integer.", fix=f"pass {key}={default}.") from None
    if not low <= value <= high:
        raise RequestFieldError(key, f"{key}={value} is out of range.", fix=f"pass a value from {low} to {high}.")
    return value
