"""API models (camelCase JSON), domain records, and the DynamoDB item mapping.

One model per boundary: `*Request`/`*Out` are what the API accepts and returns, `ShareLink` is the domain
record, and `link_to_item`/`link_from_item` are the only places that know the item layout.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from enum import IntEnum
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from grantlink import clock

CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")
MAX_TITLE = 200


def _no_control_chars(value: str) -> str:
    if CONTROL_CHARS.search(value):
        raise ValueError("must not contain control characters")
    return value


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be blank")
    return value


Title = Annotated[str, Field(min_length=1, max_length=MAX_TITLE), AfterValidator(_no_control_chars)]


class LinkStatus(IntEnum):
    WAITING = 0
    GRANTED = 1
    WAITING_FOR_OAUTH = 2
    REVOKED = 3


class ApiModel(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


# --- API in -----------------------------------------------------------------------------------------------


class CreateLinkRequest(ApiModel):
    partnerId: int = Field(gt=0, le=2**31 - 1, description="The partner (app) the customer will connect.")
    title: Annotated[Title, AfterValidator(_not_blank)] = Field(description="Shown to the customer; 1–200 characters.")
    expiresInHours: int | None = Field(
        None, ge=1, le=48, description="Validity in hours, 48 at most (the default and the ceiling)."
    )


# --- API out ----------------------------------------------------------------------------------------------


class ShareLinkOut(ApiModel):
    id: str
    partnerId: int
    token: str | None = Field(description="The raw one-time token: only in the answers to create and PUT.")
    status: LinkStatus = Field(description="0 waiting, 1 access granted, 2 waiting for OAuth, 3 token revoked.")
    credentialId: str | None
    title: str
    dateCreated: str
    expiresAt: str
    expired: bool
    link: str | None = Field(description="The URL to send to the customer: only when `token` is present.")


class ListMeta(ApiModel):
    page: int
    totalPages: int
    totalItemsCount: int
    nextCursor: str | None


class ShareLinkEnvelope(ApiModel):
    success: Literal[True] = True
    data: ShareLinkOut


class ShareLinkListEnvelope(ApiModel):
    success: Literal[True] = True
    data: list[ShareLinkOut]
    meta: ListMeta


class ErrorDetail(ApiModel):
    code: str = Field(description="Stable, machine-readable error code.")
    message: str = Field(description="For humans; never contains a secret.")


class ErrorEnvelope(ApiModel):
    success: Literal[False] = False
    error: ErrorDetail


# --- Domain -----------------------------------------------------------------------------------------------


@dataclass
class Caller:
    """Who is calling a management route: the tenant and the scopes of its API key."""

    tenant_id: str
    scopes: frozenset[str] = field(default_factory=frozenset)


@dataclass
class ShareLink:
    id: str
    tenant_id: str
    partner_id: int
    title: str
    status: LinkStatus
    token_hash: str
    created_at: datetime
    expires_at: datetime
    credential_id: str | None = None
    bound_credential_id: str | None = None  # set on reauthorize links: completing one replaces this secret
    version: int = 1

    def is_expired(self, at: datetime | None = None) -> bool:
        """Only links still waiting can expire; the application checks this, never TTL (DESIGN.md)."""
        moment = at or clock.now()
        return self.status in (LinkStatus.WAITING, LinkStatus.WAITING_FOR_OAUTH) and moment >= self.expires_at

    def to_out(self, token: str | None, connect_base: str) -> ShareLinkOut:
        return ShareLinkOut(
            id=self.id,
            partnerId=self.partner_id,
            token=token,
            status=self.status,
            credentialId=self.credential_id,
            title=self.title,
            dateCreated=clock.iso(self.created_at),
            expiresAt=clock.iso(self.expires_at),
            expired=self.is_expired(),
            link=link_url(connect_base, self.id, token) if token else None,
        )


def link_url(base: str, link_id: str, token: str) -> str:
    """The URL the customer opens: always from configuration, never from the request's Host (T6)."""
    return f"{base}/connect?id={link_id}&token={token}"


# --- DynamoDB item mapping --------------------------------------------------------------------------------


def link_key(link_id: str) -> dict[str, str]:
    return {"pk": f"SHARE#{link_id}", "sk": "SHARE"}


def tenant_links_pk(tenant_id: str) -> str:
    return f"TENANT#{tenant_id}#SHARE"


def tenant_links_by_status_pk(tenant_id: str, status: int) -> str:
    return f"TENANT#{tenant_id}#SHARE#S{status}"


def listing_sk(created_at: datetime, item_id: str) -> str:
    return f"{clock.iso(created_at)}#{item_id}"


def link_to_item(link: ShareLink, ttl: int | None) -> dict[str, Any]:
    item: dict[str, Any] = {
        **link_key(link.id),
        "type": "share",
        "id": link.id,
        "tenantId": link.tenant_id,
        "partnerId": link.partner_id,
        "title": link.title,
        "status": int(link.status),
        "tokenHash": link.token_hash,
        "dateCreated": clock.iso(link.created_at),
        "expiresAt": clock.iso(link.expires_at),
        "version": link.version,
        "gsi1pk": tenant_links_pk(link.tenant_id),
        "gsi1sk": listing_sk(link.created_at, link.id),
        "gsi2pk": tenant_links_by_status_pk(link.tenant_id, int(link.status)),
        "gsi2sk": listing_sk(link.created_at, link.id),
    }
    if link.credential_id:
        item["credentialId"] = link.credential_id
    if link.bound_credential_id:
        item["boundCredentialId"] = link.bound_credential_id
    if ttl is not None:
        item["ttl"] = ttl
    return item


def link_from_item(item: dict[str, Any]) -> ShareLink:
    return ShareLink(
        id=item["id"],
        tenant_id=item["tenantId"],
        partner_id=int(item["partnerId"]),
        title=item["title"],
        status=LinkStatus(int(item["status"])),
        token_hash=item["tokenHash"],
        created_at=clock.parse_iso(item["dateCreated"]),
        expires_at=clock.parse_iso(item["expiresAt"]),
        credential_id=item.get("credentialId"),
        bound_credential_id=item.get("boundCredentialId"),
        version=int(item.get("version", 1)),
    )
