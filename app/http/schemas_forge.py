"""Pydantic models of the Forge admin answers (SPEC §10), for the OpenAPI document.

Like ``app.http.schemas``: the routes build plain dicts and send them with one msgspec
encode; these models only document the shapes.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from app.http.schemas import TenantAnswer


class InstallationAnswer(BaseModel):
    installation_id: str = Field(description="bare UUID")
    installation_ari: str = Field(description="ari:cloud:ecosystem::installation/<uuid>")
    cloud_id: str | None
    product: str | None
    app_version: str | None
    environment_type: str | None
    state: Literal["installed", "uninstalling"]
    license_active: bool | None
    client_keys: list[str] = Field(
        description="every linked Connect tenant (e.g. a site's Jira and Confluence),"
        " oldest link first; empty when none"
    )
    client_key: str | None = Field(description="the most recently linked tenant, or null")
    installed_at: str = Field(description="RFC 3339, UTC")
    updated_at: str
    last_seen_at: str
    version: int = Field(description="the installation stream's version")


class InstallationsPage(BaseModel):
    installations: list[InstallationAnswer]
    next: str | None = Field(description="pass as ?after= for the next page; null on the last")


class Evidence(BaseModel):
    stream: str
    position: int


class LinkAnswer(BaseModel):
    kind: Literal["connect", "reinstall"]
    client_key: str | None
    installation_id: str
    installation_ari: str
    previous_installation_id: str | None
    previous_installation_ari: str | None
    evidence: Evidence = Field(description="the event that made the link")
    seen_at: str


class LinksAnswer(BaseModel):
    links: list[LinkAnswer]


class ConnectOnlyTenant(BaseModel):
    client_key: str
    base_url: str
    installation_id: str | None = Field(
        description="the installationId its Connect payload named (Forge never sent it), or null"
    )
    installation_ari: str | None


class MigrationAnswer(BaseModel):
    linked: int
    connect_only: list[ConnectOnlyTenant]
    forge_only: list[InstallationAnswer]


class PresumedGoneTenant(TenantAnswer):
    presumed: list[Literal["silent", "uninstalling", "site_refused"]]


class PresumedGoneAnswer(BaseModel):
    tenants: list[PresumedGoneTenant]
    next: str | None = Field(
        default=None, description="pass as ?after= for the next page; null on the last"
    )
