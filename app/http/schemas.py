"""The admin API's answers: pydantic models that document them in the OpenAPI
document, and the response class that sends them.

The handlers build plain dicts and send them with ``FastJSONResponse`` (one msgspec
encode) instead of letting FastAPI validate and re-encode every nested event: a
200-event history is the hot read of the admin API. The models below are the
contract those dicts follow; ``tests/e2e/test_read_models_e2e.py`` checks answers
against them.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec
from pydantic import BaseModel, Field
from starlette.responses import Response


class FastJSONResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return msgspec.json.encode(content)


class TenantAnswer(BaseModel):
    client_key: str
    base_url: str
    display_url: str | None
    product_type: str | None
    state: Literal["installed", "uninstalled"]
    enabled: bool
    descriptor_version: str | None
    installed_at: str = Field(description="RFC 3339, UTC")
    updated_at: str
    last_seen_at: str
    version: int = Field(description="the tenant stream's version")
    installation_id: str | None = Field(
        default=None, description="the Forge installation its payload names (bare UUID)"
    )
    forgotten_at: str | None = Field(
        default=None,
        description="RFC 3339, UTC: when `ledger forget` destroyed its data key (null: never,"
        " or reinstalled since)",
    )
    forgotten_by: str | None = Field(
        default=None, description="who forgot it: the operator's OS user @ host"
    )
    license_active: bool | None = Field(
        default=None,
        description="the license its site last reported to the ledger's check (null: not yet)",
    )
    site_refused_at: str | None = Field(
        default=None, description="RFC 3339, UTC: since when its site refuses the license check"
    )
    left_at: str | None = Field(
        default=None,
        description="RFC 3339, UTC: since when it is gone (uninstalled or refused by its site)",
    )
    left_position: int | None = Field(
        default=None, description="the log position of the event it left with (evidence)"
    )


class ErasureEvidence(BaseModel):
    stream_id: str
    position: int = Field(description="the log position of the event the tenant left with")
    recorded_at: str


class ErasureDueTenant(TenantAnswer):
    reason: Literal["uninstalled", "site_refused", "uninstalling"]
    gone_since: str = Field(description="RFC 3339, UTC")
    due_at: str = Field(description="RFC 3339, UTC: gone_since + LEDGER_ERASURE_AFTER_DAYS")
    evidence: ErasureEvidence


class ErasureDueAnswer(BaseModel):
    after_days: int | None = Field(
        description="LEDGER_ERASURE_AFTER_DAYS; null: unset, nothing is ever due"
    )
    tenants: list[ErasureDueTenant]
    next: str | None = Field(description="pass as ?after= for the next page; null on the last")


class TenantsPage(BaseModel):
    tenants: list[TenantAnswer]
    next: str | None = Field(description="pass as ?after= for the next page; null on the last")


class EventAnswer(BaseModel):
    position: int
    stream_id: str
    version: int
    type: str
    schema_version: int
    data: dict[str, Any] = Field(description="payload fields; sharedSecret is always '[redacted]'")
    metadata: dict[str, Any]
    recorded_at: str
    hash: str


class EventsAnswer(BaseModel):
    events: list[EventAnswer]


class EventsPage(EventsAnswer):
    next: int | None = Field(description="pass as ?after= for the next page; null on the last")


class DescriptorVersion(BaseModel):
    version: str
    first_seen_at: str
    tenants: int = Field(description="installed tenants on this version now")


class DescriptorsAnswer(BaseModel):
    latest: str | None
    versions: list[DescriptorVersion]
    stragglers: list[TenantAnswer] = Field(
        default=[], description="installed tenants not on the latest version (the first 100)"
    )


class ReimportLink(BaseModel):
    base_url: str
    previous_client_key: str
    client_key: str
    detected_at: str
    kind: Literal["reimport", "url_reused"]


class ReimportsAnswer(BaseModel):
    links: list[ReimportLink]


class RejectionAnswer(BaseModel):
    at: str
    path: str
    reason: str
    status: int
    client_key: str | None = None
    base_url: str | None = None
    remote_addr: str | None = None
    token_sha256: str | None = None
    detail: str | None = None
    count: int = 1  # identical refusals in one window are one row
    last_seen_at: str | None = None
    # The refusals beyond a window's row budget, counted on one row per reason and path:
    # their claimed identity, address, token hash and detail are not kept.
    overflow: bool = False


class RejectionsAnswer(BaseModel):
    rejections: list[RejectionAnswer]


class VerifyAnswer(BaseModel):
    ok: bool
    events: int
    head: str
    first_bad_position: int | None = None
    reason: str | None = None


class ErrorAnswer(BaseModel):
    error: str
    detail: str


ERROR_DESCRIPTIONS: dict[int, str] = {
    400: "a parameter is out of bounds or malformed (bad_parameter)",
    401: "missing or wrong admin token",
    404: "not found",
    429: "too many failed authentications from this address; retry after Retry-After",
    500: "an unexpected error (internal), with a call_id to quote",
    503: "the store is unavailable, or the read models are behind; retry after Retry-After",
}


def documented(model: type[BaseModel], *errors: int) -> dict[str, Any]:
    """Route options: the answer's model in the OpenAPI document, sent by FastJSONResponse.

    Every admin route can answer 400 (its parameters have bounds), 401, 429 (after too
    many failed tokens, app.http.auth_failures) and 503 (the store can be down);
    ``errors`` adds the others it may give.
    """
    responses: dict[int | str, dict[str, Any]] = {200: {"model": model}}
    for status in sorted({400, 401, 429, 503, *errors}):
        responses[status] = {"model": ErrorAnswer, "description": ERROR_DESCRIPTIONS[status]}
    return {"response_class": FastJSONResponse, "responses": responses}


class ErrorBody(BaseModel):
    error: str
    detail: str



class Status(BaseModel):
    status: str

