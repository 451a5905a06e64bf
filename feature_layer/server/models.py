"""The HTTP API's request and response shapes, declared once (pydantic): the server validates
request bodies with these models and ``GET /openapi.json`` is generated from them.

The models state the structure (types, sizes, unknown keys refused, join-key values within
int64); what depends on the registry (does the feature exist?) is checked after them, in
``requests.parse_online_request``, which also words every error with the field and the fix.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr, model_validator

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1

JoinKeyValue = Annotated[
    StrictStr | StrictBool | Annotated[StrictInt, Field(ge=INT64_MIN, le=INT64_MAX)]
    | Annotated[StrictFloat, Field(gt=float(INT64_MIN), lt=float(2**63), allow_inf_nan=False)] | None,
    Field(description="A join-key value: a string, an integer within int64, a boolean (or a whole float)."),
]

EXAMPLE = {"features": ["user_transaction_features.amount", "user_profile_features.country"],
           "entity_rows": [{"user_id": 7}]}


class OnlineFeaturesRequest(BaseModel):
    """``POST /v1/online-features``: exactly one of ``features``/``service`` and of ``entity_rows``/``entities``."""

    model_config = ConfigDict(extra="forbid", strict=True, json_schema_extra={
        "allOf": [{"oneOf": [{"required": ["features"]}, {"required": ["service"]}]},
                  {"oneOf": [{"required": ["entity_rows"]}, {"required": ["entities"]}]}],
        "examples": [EXAMPLE],
    })

    features: list[Annotated[StrictStr, Field(pattern=r"\.")]] = Field(
        default=None, min_length=1,  # type: ignore[assignment]
        description="Feature references `view.feature` (or `view.*`).")
    service: StrictStr = Field(default=None, description="A feature service: an ML exposure's name.")  # type: ignore[assignment]
    entity_rows: list[Annotated[dict[str, JoinKeyValue], Field(min_length=1)]] = Field(
        default=None, min_length=1,  # type: ignore[assignment]
        description="One object of join key → value per entity.")
    entities: Annotated[dict[str, Annotated[list[JoinKeyValue], Field(min_length=1)]], Field(min_length=1)] = Field(
        default=None,  # type: ignore[assignment]
        description="Columnar entities: join key → one value per entity (lists of equal length).")
    include_event_times: StrictBool = Field(default=False, description="Also return `<feature>__event_time` columns.")

    @model_validator(mode="after")
    def _exactly_one_of_each(self) -> OnlineFeaturesRequest:
        if (self.features is None) == (self.service is None):
            raise ValueError("give exactly one of `features` and `service`")
        if (self.entity_rows is None) == (self.entities is None):
            raise ValueError("give exactly one of `entity_rows` and `entities`")
        if self.entities is not None and len({len(v) for v in self.entities.values()}) > 1:
            raise ValueError("the lists in `entities` have different lengths")
        return self


class ErrorDetail(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: str = Field(description="The error class, e.g. InputError, UnknownFeatureError, OnlineStoreError.")
    message: str
    field: str | None = Field(description="The request field at fault, e.g. `entity_rows[3].user_id`.")
    fix: str | None = Field(description="What to do about it.")
    request_id: str | None = Field(default=None, description="For 500s: the id to find the server log entry.")


class ErrorResponse(BaseModel):
    """Every error, whatever the status code."""

    model_config = ConfigDict(extra="forbid")

    error: ErrorDetail


class OnlineFeaturesResponse(BaseModel):
    """Columnar: each join key and each feature (and ``<feature>__event_time``) → one value per entity row."""

    model_config = ConfigDict(extra="allow", json_schema_extra={
        "additionalProperties": {"type": "array", "items": {}},
        "examples": [{"user_id": [7], "amount": [376.96], "country": ["IN"]}],
    })


class OnlineStoreHealth(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    status: str = Field(description="ok or unreachable.")
    latency_ms: float | None = None
    error: str | None = None


class HealthResponse(BaseModel):
    """``/healthz``: 200 when ok or degraded, 503 when the online store is unreachable."""

    model_config = ConfigDict(extra="forbid")

    status: str = Field(description="ok, degraded (broken views, stale layouts, a failed reload) or unavailable.")
    problems: list[str]
    online_store: OnlineStoreHealth
    broken_views: dict[str, list[str]]
    stale_layouts: dict[str, dict[str, Any]]
    features: int
    views: int
    registry_loaded_at: str
    reloads: int
    reload_error: str | None


class SearchResponse(BaseModel):
    model_config = ConfigDict(extra="forbid")

    query: str
    total: int
    took_ms: float
    features: list[dict[str, Any]]


class StatisticsResponse(BaseModel):
    model_config = ConfigDict(extra="forbid")

    feature: str
    statistics: dict[str, Any] | None
    training: dict[str, Any] | None = None  # search: the last training set's statistics (server/stats.py)
    drift: dict[str, Any] | None = None  # search: PSI between served and training values


class Document(BaseModel):
    """A JSON object (feature, view, entity, lineage, catalog pages: see docs/ui.md)."""

    model_config = ConfigDict(extra="allow")
