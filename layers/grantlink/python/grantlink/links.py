"""Share links: the Albato-compatible one-time connection links (use cases).

Tokens are 256-bit values from `secrets`; only their SHA-256 is stored and comparisons are constant-time.
Validity is enforced here, from `expiresAt`, never by TTL (DynamoDB deletes expired items days late).
"""

from __future__ import annotations

import hashlib
import hmac
import math
import secrets
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import replace
from datetime import timedelta
from typing import Any

from grantlink import clock, errors, events, oauth_apps, pagination, providers, tenants, webhooks
from grantlink.config import settings
from grantlink.models import (
    PRODUCTION,
    Caller,
    CreateLinkRequest,
    Credential,
    LinkListMeta,
    LinkOptions,
    LinkStatus,
    ShareLink,
    end_user_dict,
)
from grantlink.providers import Provider
from grantlink.store import ConditionFailed, Store
from grantlink.store import default as default_store

LINK_ID_PREFIX = "lnk_"
TOKEN_BYTES = 32


def new_token() -> tuple[str, str]:
    """A fresh link token and its hash. Only the hash is ever stored."""
    token = secrets.token_urlsafe(TOKEN_BYTES)
    return token, hash_token(token)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def token_matches(token: str, token_hash: str) -> bool:
    return bool(token_hash) and hmac.compare_digest(hash_token(token), token_hash)


def new_link_id() -> str:
    return LINK_ID_PREFIX + secrets.token_hex(10)


def _lifetime(requested_hours: int | None) -> timedelta:
    ceiling = settings().link_ttl_hours
    return timedelta(hours=min(requested_hours or ceiling, ceiling))


def cleanup_ttl(link: ShareLink) -> int:
    """When grantlink deletes a link that was never used (waiting, expired or revoked): its expiry plus the
    retention period. The renewal worker deletes it then and drops it from the tenant's counters in the same
    transaction, so the list and its totals always agree; DynamoDB's TTL (set a week later) is only a backstop.
    A granted link is kept: it records where its credential came from."""
    return int((link.expires_at + timedelta(days=settings().link_retention_days)).timestamp())


def create_link(caller: Caller, request: CreateLinkRequest, store: Store | None = None) -> tuple[ShareLink, str]:
    """Create a waiting link for `request.partnerId`; returns the link and its raw token (shown once)."""
    return issue_link(caller, request.partnerId, request.title, request, store)


def issue_link(
    caller: Caller,
    partner_id: int,
    title: str,
    options: LinkOptions,
    store: Store | None = None,
    bound_credential_id: str | None = None,
    also: Callable[[ShareLink], dict[str, Any] | list[dict[str, Any]]] | None = None,
    keep_from: Credential | None = None,
) -> tuple[ShareLink, str]:
    """A new waiting link. A reauthorize link is bound to an existing credential (`bound_credential_id`):
    completing it replaces that credential's secret and keeps its id. `also` builds one more write from the
    new link (an audit entry), or several, to go in the link's own transaction. The link carries the end user
    and tags its credential gets: those of `options`, or, where `options` leaves them out, `keep_from`'s; its
    environment is `options.environment` (a reauthorize link's is the credential's), and its scopes `options.scopes`
    (on reauthorize, left out: the credential's requested scopes). Every check is made before anything is written."""
    store = store or default_store()
    provider = providers.find(partner_id)
    if provider is None:
        raise errors.UnprocessableEntity(f"Unknown partner {partner_id}.", code="unknown_partner")
    environment = _environment(provider, options, keep_from)
    scopes = _scopes(provider, options, keep_from)
    if provider.uses_oauth_app and oauth_apps.app_for(caller.tenant_id, partner_id, store) is None:
        raise errors.UnprocessableEntity(
            f"Set an OAuth app for {provider.name} first (PUT /partners/{partner_id}/oauth-app).",
            code="oauth_app_missing",
        )
    redirect = tenants.check_redirect(caller.tenant_id, options.redirectUrl, store) if options.redirectUrl else None
    hook = webhooks.check_link_url(caller.tenant_id, options.webhookUrl, store) if options.webhookUrl else None
    token, token_hash = new_token()
    created = clock.now().replace(microsecond=0)
    link = ShareLink(
        id=new_link_id(),
        tenant_id=caller.tenant_id,
        partner_id=partner_id,
        title=title,
        status=LinkStatus.WAITING,
        token_hash=token_hash,
        created_at=created,
        expires_at=created + _lifetime(options.expiresInHours),
        bound_credential_id=bound_credential_id,
        credential_id=bound_credential_id,
        redirect_url=redirect,
        webhook_url=hook,
        environment=environment,
        scopes=scopes,
        **_identity(options, keep_from),
    )
    more = also(link) if also else []
    store.put_new_link(link, cleanup_ttl(link), *(more if isinstance(more, list) else [more]))
    return link, token


def _identity(options: LinkOptions, keep_from: Credential | None) -> dict[str, Any]:
    """Given (even as null) replaces; left out keeps the credential's (on reauthorize), else none."""
    end_user, tags = end_user_dict(options.endUser), dict(options.tags or {})
    if keep_from is not None:
        end_user = end_user if "endUser" in options.model_fields_set else keep_from.end_user
        tags = tags if "tags" in options.model_fields_set else dict(keep_from.tags)
    return {"end_user": end_user, "tags": tags}


def _environment(provider: Provider, options: LinkOptions, keep_from: Credential | None) -> str:
    """The link's environment: the credential's on reauthorize, else the request's; one the partner declares."""
    name = keep_from.environment if keep_from is not None else getattr(options, "environment", PRODUCTION)
    provider.in_environment(name)  # 422 environment_not_supported
    return name


def _scopes(provider: Provider, options: LinkOptions, keep_from: Credential | None) -> list[str] | None:
    """The scopes the link asks for (None: the OAuth app's, else the partner's defaults). On reauthorize, left out
    keeps what the credential asked for when the partner still allows all of it (else None: the app's scopes, else
    the defaults, apply again); given, even null, replaces."""
    if keep_from is not None and "scopes" not in options.model_fields_set:
        asked = keep_from.requested_scopes or []
        allowed = provider.allowed_scopes or []
        # Scopes the catalogue does not declare came from the tenant's OAuth app: then let the app's (current)
        # scopes apply again (None), rather than pin a narrower list on the link.
        return list(asked) if asked and all(scope in allowed for scope in asked) else None
    return check_scopes(provider, options.scopes)


def check_scopes(provider: Provider, scopes: list[str] | None) -> list[str] | None:
    """`scopes` if the partner takes scopes and allows each of them (once); else a 422 naming the problem."""
    if scopes is None:
        return None
    allowed = provider.allowed_scopes
    if not allowed:  # a kind without scopes, or a partner that declares none (its app's settings decide)
        raise errors.UnprocessableEntity(f"{provider.name} takes no scopes.", code="scopes_not_supported")
    if not scopes:
        raise errors.UnprocessableEntity(
            "Name at least one scope, or leave scopes out for the defaults.", code="scopes_empty"
        )
    if repeated := sorted({scope for scope in scopes if scopes.count(scope) > 1}):
        raise errors.UnprocessableEntity(
            f"Each scope may be named once: {', '.join(repeated)}.",
            code="duplicate_scope",
            details=[{"field": "scopes", "problem": f"{scope} is named more than once"} for scope in repeated],
        )
    if refused := [scope for scope in scopes if scope not in allowed]:
        raise errors.UnprocessableEntity(
            f"{provider.name} does not allow {', '.join(refused)}; it allows {', '.join(allowed)}.",
            code="scope_not_allowed",
            details=[
                {"field": "scopes", "problem": f"{scope} is not a scope {provider.name} allows"} for scope in refused
            ],
        )
    return list(scopes)


_connect_base: ContextVar[str] = ContextVar("connect_base", default="")


def set_connect_base(base: str) -> None:
    """Where links point for this invocation (the API functions set it per request from the API id)."""
    _connect_base.set(base)


def connect_base() -> str:
    """Configured > set for this request > the API URL the template gives the jobs."""
    return settings().connect_base_url.rstrip("/") or _connect_base.get() or settings().api_url.rstrip("/")


def get_link(caller: Caller, link_id: str, store: Store | None = None) -> ShareLink:
    """The caller's link, or NotFound — also for another tenant's link (never 403: ids are not confirmed)."""
    link = (store or default_store()).get_link(link_id) if link_id.startswith(LINK_ID_PREFIX) else None
    if link is None or link.tenant_id != caller.tenant_id:
        raise errors.NotFound("No such share link.", code="link_not_found")
    return link


def regenerate_link(caller: Caller, link_id: str, store: Store | None = None) -> tuple[ShareLink, str]:
    """PUT: a new token, status 0 and a fresh full lifetime; the old token is dead at once."""
    store = store or default_store()
    before = get_link(caller, link_id, store)
    if before.status == LinkStatus.REVOKED:
        raise errors.Conflict("This link was revoked; create a new one.", code="link_revoked")
    token, token_hash = new_token()
    now = clock.now().replace(microsecond=0)
    after = replace(
        before,
        status=LinkStatus.WAITING,
        token_hash=token_hash,
        expires_at=now + _lifetime(None),
        credential_id=before.bound_credential_id,
        expiry_notified=False,
        last_error=None,
        failed_tests=0,  # a new token starts with a clean slate (this is how a locked link is unlocked)
        version=before.version + 1,
    )
    _write(store, before, after, cleanup_ttl(after))
    return after, token


def revoke_link(caller: Caller, link_id: str, store: Store | None = None) -> ShareLink:
    """DELETE: status 3 and the token hash erased, so no token can ever match again. Repeating it is harmless."""
    store = store or default_store()
    before = get_link(caller, link_id, store)
    if before.status == LinkStatus.REVOKED:
        return before
    after = replace(before, status=LinkStatus.REVOKED, token_hash="", version=before.version + 1)
    _write(store, before, after, cleanup_ttl(after))
    events.emit(
        "share.revoked",
        after.tenant_id,
        linkId=after.id,
        partnerId=after.partner_id,
        credentialId=after.bound_credential_id,
        **after.identity(),
    )
    return after


def _write(store: Store, before: ShareLink, after: ShareLink, ttl: int | None) -> None:
    try:
        store.replace_link_state(before, after, ttl)
    except ConditionFailed as exc:
        raise errors.Conflict("The link changed at the same time; try again.", code="concurrent_update") from exc


def list_links(
    caller: Caller,
    status: LinkStatus | None,
    per_page: int,
    cursor: str | None,
    store: Store | None = None,
    *,
    environment: str | None = None,
) -> tuple[list[ShareLink], LinkListMeta]:
    """One page, newest first: one Query for the page plus one read of the tenant's counters. An environment
    filter is a filter on the page (no counter keeps it: the totals are null, and a page may hold fewer than
    `per_page` links, even none, and still have a next one)."""
    store = store or default_store()
    scope = f"{caller.tenant_id}|SHARE|{'' if status is None else int(status)}|{per_page}"
    if environment is not None:
        scope += f"|{environment}"
    start, page = pagination.decode(cursor, scope)
    links, last = store.list_links(caller.tenant_id, status, per_page, start, environment=environment)
    if environment is not None:
        return links, LinkListMeta(
            page=page, totalPages=None, totalItemsCount=None, nextCursor=pagination.encode(last, page, scope)
        )
    counters = store.stats(caller.tenant_id, "SHARE")
    total = counters.get("total" if status is None else f"s{int(status)}", 0)
    meta = LinkListMeta(
        page=page,
        totalPages=max(1, math.ceil(total / per_page)),
        totalItemsCount=total,
        nextCursor=pagination.encode(last, page, scope) if links else None,
    )
    return links, meta
