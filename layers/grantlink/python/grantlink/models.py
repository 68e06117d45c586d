"""API models (camelCase JSON), domain records, and the DynamoDB item mapping.

One model per boundary: `*Request`/`*Out` are what the API accepts and returns, `ShareLink` is the domain
record, and `link_to_item`/`link_from_item` are the only places that know the item layout.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import IntEnum, StrEnum
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, SecretStr, field_serializer

from grantlink import clock
from grantlink.config import settings

CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")
PRODUCTION = "production"  # the environment of every link and credential that names none
TOKEN_KINDS = ("oauth2", "client_credentials")  # credentials holding an access token grantlink renews
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
    # defer_build: a model builds its validator and serializer when first used, so each function pays only for
    # the API models it uses (every function imports this module; most use a few of its models).
    model_config = ConfigDict(extra="forbid", populate_by_name=True, defer_build=True)


# --- API in -----------------------------------------------------------------------------------------------


def _parsable_url(value: str) -> str:
    """urllib raises on a port that is not a number from 0 to 65535 and on a broken [IPv6] host: such a URL is
    malformed (a 400 here, not a ValueError later when its origin is checked)."""
    try:
        urlsplit(value).port  # noqa: B018 - the property parses the port
    except ValueError:
        raise ValueError("must be a URL with a valid host and port") from None
    return value


RedirectUrl = Annotated[str, Field(max_length=2048, pattern=r"^https?://[^\s]+$"), AfterValidator(_parsable_url)]


MAX_TAGS = 10
TAG_KEY = re.compile(r"[A-Za-z0-9_.-]{1,64}")
MAX_TAG_VALUE = 256
EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")


def _printable(value: str) -> str:
    if not value.isprintable():
        raise ValueError("must be printable characters only")
    return value


def _email(value: str) -> str:
    if not EMAIL.fullmatch(value) or not value.isprintable():
        raise ValueError("must be an e-mail address")
    return value


def _tags(value: dict[str, str]) -> dict[str, str]:
    """At most 10 tags; keys 1–64 of [A-Za-z0-9_.-] (no `:`, so the filter `tag=key:value` is never ambiguous);
    values up to 256 printable characters. The messages never repeat the input (a key may be what is wrong)."""
    if len(value) > MAX_TAGS:
        raise ValueError(f"at most {MAX_TAGS} tags")
    for key, item in value.items():
        if not TAG_KEY.fullmatch(key):
            raise ValueError("each key is 1–64 characters of A-Z a-z 0-9 _ . -")
        if len(item) > MAX_TAG_VALUE or not item.isprintable():
            raise ValueError(f"each value is at most {MAX_TAG_VALUE} printable characters")
    return value


EndUserId = Annotated[str, Field(min_length=1, max_length=128), AfterValidator(_printable), AfterValidator(_not_blank)]
Tags = Annotated[dict[str, str], AfterValidator(_tags)]


class EndUser(ApiModel):
    """Who, at the tenant, the credential belongs to: copied from the link to the credential, shown in every
    answer and event about them, and a filter of GET /credentials (`endUserId`)."""

    id: EndUserId = Field(description="The tenant's own id for its end user: 1–128 printable characters.")
    email: Annotated[str, Field(max_length=254), AfterValidator(_email)] | None = None
    displayName: Annotated[str, Field(min_length=1, max_length=200), AfterValidator(_printable)] | None = None


class LinkOptions(ApiModel):
    expiresInHours: int | None = Field(
        None, ge=1, le=48, description="Validity in hours, 48 at most (the default and the ceiling)."
    )
    redirectUrl: RedirectUrl | None = Field(
        None,
        description="Where the customer's browser goes after connecting (303 with `status` and `credentialId`). "
        "Its origin must be on the tenant's redirect allow-list.",
    )
    webhookUrl: RedirectUrl | None = Field(
        None,
        description="Events about this link (`share.*`) also go here, signed with the tenant's webhook secret. Its "
        "origin must be on the tenant's redirect allow-list, it must pass the outbound guard, and the tenant must "
        "have a webhook registered (`PUT /webhooks`).",
    )
    endUser: EndUser | None = Field(
        None,
        description="The tenant's end user this connection is for; copied to the credential. On reauthorize: "
        "omitted keeps the credential's, null removes it.",
    )
    tags: Tags | None = Field(
        None,
        description="Up to 10 tags (keys 1–64 of A-Z a-z 0-9 _ . -, values up to 256 characters); copied to the "
        "credential. On reauthorize: omitted keeps the credential's, {} or null removes them.",
    )
    scopes: list[Annotated[str, Field(pattern=r"^[!-~]+$", max_length=200)]] | None = Field(
        None,
        max_length=50,
        description="OAuth 2.0 partners only: the scopes to ask for, narrowing or extending the partner's defaults; "
        "each must be one the partner declares (`scopes` or `optionalScopes` of GET /partners/{id}). Omitted: the "
        "OAuth app's scopes, else the partner's defaults. On reauthorize, omitted keeps the credential's requested "
        "scopes when the partner declares them all (else the app's, else the defaults, apply again).",
    )


class CreateLinkRequest(LinkOptions):
    partnerId: int = Field(gt=0, le=2**31 - 1, description="The partner (app) the customer will connect.")
    title: Annotated[Title, AfterValidator(_not_blank)] = Field(description="Shown to the customer; 1–200 characters.")
    environment: str = Field(
        PRODUCTION,
        pattern=r"^[a-z][a-z0-9_-]{1,30}$",
        description="The partner environment (e.g. sandbox), one of the partner's `environments`; the credential "
        "keeps it and its tests, token calls and proxied calls use that environment's URLs.",
    )


class ReauthorizeRequest(LinkOptions):
    """Options for the reauthorize link; the partner and title come from the credential."""


class PatchCredentialRequest(ApiModel):
    title: Annotated[Title, AfterValidator(_not_blank)] | None = None
    enabled: bool | None = Field(None, description="false disables the credential; true reactivates it.")


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
    failedTests: int = Field(0, description="Failed connection tests on the connect page since the token was issued.")
    locked: bool = Field(
        False,
        description="Too many failed connection tests (`GRANTLINK_LINK_MAX_FAILED_TESTS`): the link refuses submits "
        "until it is regenerated (PUT).",
    )
    endUser: EndUser | None = Field(None, description="The end user the link (and its credential) is for.")
    tags: dict[str, str] = Field(default_factory=dict, description="The link's tags, copied to its credential.")
    webhookUrl: str | None = Field(None, description="Where this link's events also go, if it has its own.")
    environment: str = Field("production", description="The partner environment the credential will be for.")
    scopes: list[str] | None = Field(
        None, description="The scopes the link asks for; null means the partner's (or the OAuth app's) defaults."
    )


class ListMeta(ApiModel):
    page: int
    totalPages: int
    totalItemsCount: int
    nextCursor: str | None


class LinkListMeta(ApiModel):
    page: int
    totalPages: int | None = Field(description="null when `totalItemsCount` is null.")
    totalItemsCount: int | None = Field(
        description="How many links match: exact without filters and by `status` (counters kept with every write). "
        "null with an `environment` filter: follow `nextCursor` until it is null instead."
    )
    nextCursor: str | None


class CredentialListMeta(ApiModel):
    page: int
    totalPages: int | None = Field(description="null when `totalItemsCount` is null.")
    totalItemsCount: int | None = Field(
        description="How many credentials match: exact without filters, by partner and/or state, and by `endUserId` "
        "alone (counters kept with every write). null when a `tag` or `environment` filter, or `endUserId` with "
        "another filter, is used: counting them would mean reading every match; follow `nextCursor` until it is "
        "null instead."
    )
    nextCursor: str | None


class ShareLinkEnvelope(ApiModel):
    success: Literal[True] = True
    data: ShareLinkOut


class ShareLinkListEnvelope(ApiModel):
    success: Literal[True] = True
    data: list[ShareLinkOut]
    meta: LinkListMeta


class CredentialState(StrEnum):
    ACTIVE = "active"
    REAUTHORIZATION_REQUIRED = "reauthorization_required"
    DISABLED = "disabled"


class CredentialOut(ApiModel):
    id: str
    partnerId: int
    title: str
    authType: str
    state: CredentialState
    dateCreated: str
    dateUpdated: str
    hint: str | None = Field(description="A masked hint of the secret (its last 4 characters), or null if short.")
    lastTest: dict[str, Any] | None = None
    accessExpiresAt: str | None = Field(None, description="When the OAuth access token expires.")
    lastRefreshedAt: str | None = Field(None, description="When grantlink last refreshed the OAuth token.")
    refreshFailures: int = Field(0, description="Failed refresh attempts since the last success.")
    endUser: EndUser | None = Field(None, description="The end user, from the link that made or reauthorized it.")
    tags: dict[str, str] = Field(default_factory=dict, description="The tags, from that link.")
    environment: str = Field("production", description="The partner environment (e.g. production, sandbox).")
    requestedScopes: list[str] | None = Field(None, description="The scopes asked for (OAuth 2.0 kinds).")
    grantedScopes: list[str] | None = Field(
        None, description="The scopes the provider granted, from its token response (else the scopes asked for)."
    )
    missingScopes: list[str] = Field(
        default_factory=list, description="Scopes asked for but not granted: non-empty means the grant was narrowed."
    )
    scopesNarrowed: bool = Field(False, description="The provider granted fewer scopes than were asked for.")


class CredentialEnvelope(ApiModel):
    success: Literal[True] = True
    data: CredentialOut


class CredentialListEnvelope(ApiModel):
    success: Literal[True] = True
    data: list[CredentialOut]
    meta: CredentialListMeta


class SecretOut(ApiModel):
    id: str
    partnerId: int
    authType: str
    fields: dict[str, str] = Field(description="The values the customer entered (api_key, basic) or the OAuth tokens.")


class SecretEnvelope(ApiModel):
    success: Literal[True] = True
    data: SecretOut


class TokenOut(ApiModel):
    """The current OAuth access token of a credential (GET /credentials/{id}/token)."""

    credentialId: str
    accessToken: SecretStr = Field(description="The access token, fresh: refreshed first when it was due.")
    tokenType: str = Field(description="As the partner issued it, usually `Bearer`.")
    expiresAt: str | None = Field(None, description="When the access token expires (ISO 8601), or null if unknown.")

    @field_serializer("accessToken", when_used="json")
    def _reveal(self, value: SecretStr) -> str:
        """Masked in reprs and logs; the token itself only in the JSON answer."""
        return value.get_secret_value()


class TokenEnvelope(ApiModel):
    success: Literal[True] = True
    data: TokenOut


class AuditEntryOut(ApiModel):
    at: str
    action: str
    actor: str
    details: dict[str, Any] = Field(default_factory=dict)


TestCategory = Literal[
    "ok",
    "invalid_credentials",
    "insufficient_permissions",
    "rate_limited",
    "provider_unavailable",
    "timeout",
    "network_error",
    "unexpected_response",
]


class TestResultOut(ApiModel):
    ok: bool
    category: TestCategory
    httpStatus: int | None
    latencyMs: int
    message: str = Field(description="For humans; never the secret or the provider's raw answer.")
    accountName: str | None = Field(description="Which account the credential belongs to, where the partner says.")
    testedAt: str


class TestResultEnvelope(ApiModel):
    success: Literal[True] = True
    data: TestResultOut


class CursorMeta(ApiModel):
    page: int
    nextCursor: str | None


class AuditListEnvelope(ApiModel):
    success: Literal[True] = True
    data: list[AuditEntryOut]
    meta: CursorMeta


class Deleted(ApiModel):
    id: str
    deleted: Literal[True] = True


class DeletedEnvelope(ApiModel):
    success: Literal[True] = True
    data: Deleted


ClientId = Annotated[str, Field(min_length=1, max_length=512, pattern=r"^[\x21-\x7e]+$")]
Scope = Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[\x21-\x7e]+$")]


class OAuthAppRequest(ApiModel):
    clientId: ClientId
    clientSecret: SecretStr = Field(min_length=1, max_length=4096, description="Stored encrypted; never returned.")
    scopes: list[Scope] | None = Field(None, max_length=50, description="Overrides the partner's default scopes.")


class OAuthAppOut(ApiModel):
    partnerId: int
    clientId: str
    scopes: list[str] | None
    redirectUri: str = Field(description="Register this redirect URI with the partner.")
    dateUpdated: str = Field(
        description="When the tenant last set its app; for the operator's default, when that configuration was made."
    )
    source: Literal["tenant", "operator"] = Field(
        description="`tenant`: the tenant's own app (PUT; DELETE removes it). `operator`: the operator's default "
        "from configuration, used while the tenant has no app of its own (DELETE does not remove it)."
    )


class OAuthAppEnvelope(ApiModel):
    success: Literal[True] = True
    data: OAuthAppOut


class PartnerField(ApiModel):
    name: str
    label: str
    help: str
    secret: bool
    pattern: str | None
    required: bool
    placeholder: str | None = None
    example: str | None = None
    prefix: str | None = Field(None, description="Text shown before the input, e.g. https://")
    suffix: str | None = Field(None, description="Text shown after the input, e.g. .zendesk.com")


class PartnerEnvironment(ApiModel):
    name: str = Field(description="What a link names in `environment`, e.g. production or sandbox.")
    label: str


class PartnerOut(ApiModel):
    id: int
    slug: str
    name: str
    authType: Literal["api_key", "basic", "oauth2", "oauth1", "client_credentials"]
    category: str | None
    fields: list[PartnerField]
    docsUrl: str
    description: str
    environments: list[PartnerEnvironment] = Field(description="The environments a link may name; production first.")
    scopes: list[str] = Field(description="The scopes a link asks for when it names none (OAuth 2.0 kinds).")
    optionalScopes: list[str] = Field(description="Further scopes a link may ask for.")


class PartnerEnvelope(ApiModel):
    success: Literal[True] = True
    data: PartnerOut


class PartnerListEnvelope(ApiModel):
    success: Literal[True] = True
    data: list[PartnerOut]
    meta: ListMeta


class ErrorProblem(ApiModel):
    field: str = Field(description="The field (or query parameter, header, `body`) that is wrong.")
    problem: str = Field(description="The rule it breaks; never the input.")


class ErrorDetail(ApiModel):
    code: str = Field(description="Stable, machine-readable error code.")
    message: str = Field(description="For humans; never contains a secret.")
    details: list[ErrorProblem] | None = Field(
        default=None,
        description="Each problem: for `validation_error`, and for `scope_not_allowed` (the scopes refused).",
    )


class ErrorEnvelope(ApiModel):
    success: Literal[False] = False
    error: ErrorDetail


# --- Domain -----------------------------------------------------------------------------------------------


@dataclass
class Caller:
    """Who is calling a management route: the tenant, the scopes of its API key and the key's short id."""

    tenant_id: str
    scopes: frozenset[str] = field(default_factory=frozenset)
    key_id: str = ""

    @property
    def actor(self) -> str:
        return f"apikey:{self.key_id}" if self.key_id else "apikey"


@dataclass
class Credential:
    id: str
    tenant_id: str
    partner_id: int
    title: str
    auth_type: str
    state: CredentialState
    secret: bytes  # the Encryption SDK message; never plaintext
    created_at: datetime
    updated_at: datetime
    hint: str | None = None
    last_test: dict[str, Any] | None = None
    access_expires_at: datetime | None = None
    last_refreshed_at: datetime | None = None
    refresh_failures: int = 0
    refreshable: bool = False  # an OAuth credential holding a refresh token
    failing_since: datetime | None = None  # first of the current run of failed refreshes
    retry_at: datetime | None = None  # after a failed refresh: when to try again
    expiry_warned: bool = False  # credential.expiring was emitted
    version: int = 1
    secret_id: str = ""  # names the sealed secret now stored; a kept rotated token says which one it replaces
    lease_owner: str | None = None  # the refresh lease, as read; only the lease writes keep or drop it
    lease_until: str | None = None
    end_user: dict[str, str] | None = None  # EndUser as JSON (id, email, displayName), from the link
    tags: dict[str, str] = field(default_factory=dict)
    environment: str = PRODUCTION  # the partner environment: its URLs are used for tests, tokens and the proxy
    requested_scopes: list[str] | None = None  # OAuth 2.0 kinds: what was asked for
    granted_scopes: list[str] | None = None  # what the provider granted (its token response's scope)

    def identity(self) -> dict[str, Any]:
        """`endUser` and `tags`, as every event about the credential carries them."""
        return identity(self.end_user, self.tags)

    @property
    def missing_scopes(self) -> list[str]:
        """Scopes asked for but not granted (empty when either is unknown)."""
        if self.requested_scopes is None or self.granted_scopes is None:
            return []
        return [scope for scope in self.requested_scopes if scope not in self.granted_scopes]

    def due_at(self) -> datetime | None:
        """When the renewal jobs should next look at this credential, or None (then it is not in the due index)."""
        if self.state != CredentialState.ACTIVE or self.auth_type not in TOKEN_KINDS or self.access_expires_at is None:
            return None
        if self.refreshable:
            return self.retry_at or self.access_expires_at - timedelta(seconds=settings().renew_before_seconds)
        if self.expiry_warned:
            return None
        return self.access_expires_at - timedelta(seconds=settings().warn_before_seconds)

    def to_out(self) -> CredentialOut:
        return CredentialOut(
            id=self.id,
            partnerId=self.partner_id,
            title=self.title,
            authType=self.auth_type,
            state=self.state,
            dateCreated=clock.iso(self.created_at),
            dateUpdated=clock.iso(self.updated_at),
            hint=self.hint,
            lastTest=self.last_test,
            accessExpiresAt=clock.iso(self.access_expires_at) if self.access_expires_at else None,
            lastRefreshedAt=clock.iso(self.last_refreshed_at) if self.last_refreshed_at else None,
            refreshFailures=self.refresh_failures,
            endUser=EndUser.model_validate(self.end_user) if self.end_user else None,
            tags=dict(self.tags),
            environment=self.environment,
            requestedScopes=self.requested_scopes,
            grantedScopes=self.granted_scopes,
            missingScopes=self.missing_scopes,
            scopesNarrowed=bool(self.missing_scopes),
        )


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
    redirect_url: str | None = None
    oauth_flow: str | None = None  # SHA-256 of the state of the OAuth flow in progress (status 2)
    last_error: str | None = None  # why the last OAuth attempt did not finish, shown when the link is reopened
    expiry_notified: bool = False  # share.expired was emitted
    version: int = 1
    failed_tests: int = 0  # failed connection tests on the connect page for the current token
    cleanup_at: datetime | None = None  # when grantlink deletes the link (and drops it from the counters)
    end_user: dict[str, str] | None = None  # copied to the credential when the link completes
    tags: dict[str, str] = field(default_factory=dict)
    webhook_url: str | None = None  # events about this link also go here (signed with the tenant's secret)
    environment: str = PRODUCTION  # the partner environment the credential will be for
    scopes: list[str] | None = None  # OAuth 2.0 kinds: the scopes to ask for (None: the defaults)

    def identity(self) -> dict[str, Any]:
        """`endUser` and `tags`, as every event about the link carries them."""
        return identity(self.end_user, self.tags)

    def is_locked(self) -> bool:
        """A waiting link whose token failed too many connection tests: only a PUT (new token) unlocks it."""
        waiting = self.status in (LinkStatus.WAITING, LinkStatus.WAITING_FOR_OAUTH)
        return waiting and self.failed_tests >= settings().link_max_failed_tests

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
            failedTests=self.failed_tests,
            locked=self.is_locked(),
            endUser=EndUser.model_validate(self.end_user) if self.end_user else None,
            tags=dict(self.tags),
            webhookUrl=self.webhook_url,
            environment=self.environment,
            scopes=self.scopes,
        )


def identity(end_user: dict[str, str] | None, tags: dict[str, str]) -> dict[str, Any]:
    return {"endUser": dict(end_user) if end_user else None, "tags": dict(tags)}


def end_user_dict(end_user: EndUser | None) -> dict[str, str] | None:
    """The domain form of an EndUser: its set fields only."""
    return end_user.model_dump(exclude_none=True) if end_user else None


def link_url(base: str, link_id: str, token: str) -> str:
    """The URL the customer opens: always from configuration, never from the request's Host (T6)."""
    return f"{base}/connect?id={link_id}&token={token}"


# --- DynamoDB item mapping --------------------------------------------------------------------------------


def due_shard(item_id: str) -> int:
    return int(hashlib.sha256(item_id.encode()).hexdigest()[:8], 16) % settings().due_shards


def due_keys(item_id: str, at: datetime) -> dict[str, str]:
    """The sparse due index's keys: only items that need attention carry them."""
    return {"duePk": f"DUE#{due_shard(item_id)}", "dueAt": clock.iso(at)}


LINK_TTL_BACKSTOP_SECONDS = 7 * 86400  # DynamoDB's TTL: a week after grantlink's own clean-up of a link


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
    if link.redirect_url:
        item["redirectUrl"] = link.redirect_url
    if link.webhook_url:
        item["webhookUrl"] = link.webhook_url
    if link.oauth_flow:
        item["oauthFlow"] = link.oauth_flow
    if link.last_error:
        item["lastError"] = link.last_error
    if link.failed_tests:
        item["failedTests"] = link.failed_tests
    if link.expiry_notified:
        item["expiryNotified"] = True
    if link.end_user:
        item["endUser"] = link.end_user
    if link.tags:
        item["tags"] = link.tags
    if link.environment != PRODUCTION:
        item["environment"] = link.environment
    if link.scopes is not None:
        item["scopes"] = link.scopes
    waiting = link.status in (LinkStatus.WAITING, LinkStatus.WAITING_FOR_OAUTH)
    if waiting and not link.expiry_notified:
        item.update(due_keys(link.id, link.expires_at))  # the sweep emits share.expired at expiresAt
    if ttl is not None and link.status != LinkStatus.GRANTED:
        # `ttl` is when grantlink deletes the link itself (the due index brings it to the worker then, which drops
        # it from the counters in the same transaction); DynamoDB's TTL is only a late backstop after that.
        cleanup = datetime.fromtimestamp(ttl, UTC)
        item["cleanupAt"] = clock.iso(cleanup)
        item["ttl"] = ttl + LINK_TTL_BACKSTOP_SECONDS
        if not (waiting and not link.expiry_notified):
            item.update(due_keys(link.id, cleanup))
    return item


def link_from_item(item: dict[str, Any]) -> ShareLink:
    return ShareLink(
        id=item["id"],
        tenant_id=item["tenantId"],
        partner_id=int(item["partnerId"]),
        title=item["title"],
        status=LinkStatus(int(item["status"])),
        token_hash=item.get("tokenHash", ""),
        created_at=clock.parse_iso(item["dateCreated"]),
        expires_at=clock.parse_iso(item["expiresAt"]),
        credential_id=item.get("credentialId"),
        bound_credential_id=item.get("boundCredentialId"),
        redirect_url=item.get("redirectUrl"),
        webhook_url=item.get("webhookUrl"),
        oauth_flow=item.get("oauthFlow"),
        last_error=item.get("lastError"),
        expiry_notified=bool(item.get("expiryNotified", False)),
        version=int(item.get("version", 1)),
        failed_tests=int(item.get("failedTests", 0)),
        cleanup_at=clock.parse_iso(item["cleanupAt"]) if item.get("cleanupAt") else None,
        end_user=dict(item["endUser"]) if item.get("endUser") else None,
        tags=dict(item.get("tags") or {}),
        environment=str(item.get("environment") or PRODUCTION),
        scopes=[str(s) for s in item["scopes"]] if item.get("scopes") is not None else None,
    )


def credential_key(credential_id: str) -> dict[str, str]:
    return {"pk": f"CRED#{credential_id}", "sk": "CRED"}


def tenant_credentials_pk(tenant_id: str) -> str:
    return f"TENANT#{tenant_id}#CRED"


def tenant_credentials_by_state_pk(tenant_id: str, state: str) -> str:
    return f"TENANT#{tenant_id}#CRED#S#{state}"


def tenant_credentials_by_partner_pk(tenant_id: str, partner_id: int) -> str:
    return f"TENANT#{tenant_id}#CRED#P#{partner_id}"


def tenant_credentials_by_end_user_pk(tenant_id: str, end_user_id: str) -> str:
    return f"TENANT#{tenant_id}#EU#{end_user_id}"


def end_user_stats_kind(end_user_id: str) -> str:
    """The counter item (`TENANT#<t>` / `STATS#<kind>`) of one end user's credentials."""
    return f"CRED#EU#{end_user_id}"


def tag_item(cred: Credential, key: str, value: str) -> dict[str, Any]:
    """One item per tag of a credential, in the sparse `tags` index (`tagPk = TENANT#<t>#TAG#<key>=<value>`),
    written and deleted in the credential's own transactions. The sort key hashes the pair (a value may be 1 KB)."""
    pair = f"{key}={value}"
    return {
        "pk": f"CRED#{cred.id}",
        "sk": "TAG#" + hashlib.sha256(pair.encode()).hexdigest(),
        "type": "credential_tag",
        "tenantId": cred.tenant_id,
        "credentialId": cred.id,
        "tagPk": tenant_credentials_by_tag_pk(cred.tenant_id, key, value),
        "tagSk": listing_sk(cred.created_at, cred.id),
    }


def tenant_credentials_by_tag_pk(tenant_id: str, key: str, value: str) -> str:
    return f"TENANT#{tenant_id}#TAG#{key}={value}"


def credential_to_item(cred: Credential) -> dict[str, Any]:
    sort_key = listing_sk(cred.created_at, cred.id)
    item: dict[str, Any] = {
        **credential_key(cred.id),
        "type": "credential",
        "id": cred.id,
        "tenantId": cred.tenant_id,
        "partnerId": cred.partner_id,
        "title": cred.title,
        "authType": cred.auth_type,
        "state": str(cred.state),
        "secret": cred.secret,
        "dateCreated": clock.iso(cred.created_at),
        "dateUpdated": clock.iso(cred.updated_at),
        "version": cred.version,
        "gsi1pk": tenant_credentials_pk(cred.tenant_id),
        "gsi1sk": sort_key,
        "gsi2pk": tenant_credentials_by_state_pk(cred.tenant_id, str(cred.state)),
        "gsi2sk": sort_key,
        "gsi3pk": tenant_credentials_by_partner_pk(cred.tenant_id, cred.partner_id),
        "gsi3sk": sort_key,
    }
    optional = {
        "hint": cred.hint,
        "lastTest": cred.last_test,
        "accessExpiresAt": clock.iso(cred.access_expires_at) if cred.access_expires_at else None,
        "lastRefreshedAt": clock.iso(cred.last_refreshed_at) if cred.last_refreshed_at else None,
        "refreshFailures": cred.refresh_failures or None,
        "refreshable": cred.refreshable or None,
        "failingSince": clock.iso(cred.failing_since) if cred.failing_since else None,
        "retryAt": clock.iso(cred.retry_at) if cred.retry_at else None,
        "expiryWarned": cred.expiry_warned or None,
        "secretId": cred.secret_id or None,
        "endUser": cred.end_user or None,
        "tags": cred.tags or None,
        "environment": cred.environment if cred.environment != PRODUCTION else None,
        "requestedScopes": cred.requested_scopes,
        "grantedScopes": cred.granted_scopes,
    }
    item.update({k: v for k, v in optional.items() if v is not None})
    if cred.end_user:
        item.update(gsi4pk=tenant_credentials_by_end_user_pk(cred.tenant_id, cred.end_user["id"]), gsi4sk=sort_key)
    due = cred.due_at()
    if due is not None:
        item.update(due_keys(cred.id, due))
    return item


def credential_from_item(item: dict[str, Any]) -> Credential:
    expires, refreshed = item.get("accessExpiresAt"), item.get("lastRefreshedAt")
    failing, retry = item.get("failingSince"), item.get("retryAt")
    return Credential(
        id=item["id"],
        tenant_id=item["tenantId"],
        partner_id=int(item["partnerId"]),
        title=item["title"],
        auth_type=item["authType"],
        state=CredentialState(item["state"]),
        secret=bytes(item["secret"]),
        created_at=clock.parse_iso(item["dateCreated"]),
        updated_at=clock.parse_iso(item["dateUpdated"]),
        hint=item.get("hint"),
        last_test=_plain_numbers(item.get("lastTest")),
        access_expires_at=clock.parse_iso(expires) if expires else None,
        last_refreshed_at=clock.parse_iso(refreshed) if refreshed else None,
        refresh_failures=int(item.get("refreshFailures", 0)),
        refreshable=bool(item.get("refreshable", False)),
        failing_since=clock.parse_iso(failing) if failing else None,
        retry_at=clock.parse_iso(retry) if retry else None,
        expiry_warned=bool(item.get("expiryWarned", False)),
        version=int(item.get("version", 1)),
        secret_id=str(item.get("secretId", "")),
        lease_owner=item.get("leaseOwner"),
        lease_until=item.get("leaseUntil"),
        end_user=dict(item["endUser"]) if item.get("endUser") else None,
        tags=dict(item.get("tags") or {}),
        environment=str(item.get("environment") or PRODUCTION),
        requested_scopes=[str(s) for s in item["requestedScopes"]] if item.get("requestedScopes") is not None else None,
        granted_scopes=[str(s) for s in item["grantedScopes"]] if item.get("grantedScopes") is not None else None,
    )


def _plain_numbers(value: Any) -> Any:
    """DynamoDB returns Decimals; API models want ints and floats."""
    from decimal import Decimal

    if isinstance(value, dict):
        return {k: _plain_numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain_numbers(v) for v in value]
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    return value
