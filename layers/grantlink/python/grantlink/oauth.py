"""OAuth 2.0 through the link: tenants' OAuth apps, the authorization-code flow with PKCE, and fresh tokens
(use cases). The client side of RFC 9700.

- Which OAuth client is used (the tenant's own, else the operator's default from configuration) is decided by
  `app_for` (grantlink.oauth_apps), everywhere: link creation, start, callback and refresh.
- Start (`POST /connect/oauth/start`) stores a single-use flow record — the hash of `state`, the PKCE
  verifier, the expected issuer — and sets the link to status 2, in one transaction.
- The callback consumes the flow record first (a missing, wrong, expired or reused state never reaches the
  token endpoint), checks `iss` (RFC 9207), exchanges the code with the stored `code_verifier`, encrypts the
  tokens, and grants the link and writes the credential in one transaction.
- `fresh_values` refreshes single-flight: a lease taken with a conditional write, then a re-read.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import re
import secrets
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote

from grantlink import audit, clock, crypto, errors, events, providers
from grantlink.config import settings
from grantlink.connect import (
    PURPOSE,
    OpenedLink,
    completion,
    new_credential_id,
    open_link,
    validate_fields,
    with_result,
)
from grantlink.models import (
    TOKEN_KINDS,
    Caller,
    Credential,
    CredentialState,
    LinkStatus,
    OAuthAppOut,
    OAuthAppRequest,
    ShareLink,
    link_key,
    tenant_links_by_status_pk,
)
from grantlink.oauth_apps import OAuthApp, app_for, secret_problem, tenant_app
from grantlink.observability import logger, metrics, trace_http
from grantlink.providers import Provider
from grantlink.store import ConditionFailed, Store, flow_key, oauth_app_key, serialize, update
from grantlink.store import default as default_store

APP_PURPOSE = "oauth-app"
# The refresh lease outlasts the worst refresh: the token call's overall deadline (≤ 25 s), the key fetch before it
# and the write's retries after it, so no second caller can present the refresh token while the first still may.
LEASE_SECONDS = 60
WAIT_FOR_REFRESH_SECONDS = 8.0
WRITE_ATTEMPTS = 4  # storing a refreshed secret: tries before the tokens are kept aside
WRITE_BACKOFF_SECONDS = 0.25
KEPT_TOKEN_DAYS = 30
KEPT_ASIDE_METRIC = "RefreshedTokensKeptAside"  # template.yaml alarms on it
AUTH_ERRORS = {"invalid_grant", "invalid_client", "unauthorized_client"}
APP_ERRORS = {"invalid_client", "unauthorized_client"}  # the tenant's OAuth app is refused, not the user's grant
APP_REFUSED_REPORT_SECONDS = 86400


# --- tenants' OAuth apps ----------------------------------------------------------------------------------


def _oauth_partner(partner_id: int) -> Provider:
    provider = providers.find(partner_id)
    if provider is None:
        raise errors.NotFound("No such partner.", code="partner_not_found")
    if not provider.uses_oauth_app:  # OAuth 2.0 code flow (a client) or OAuth 1.0a (a consumer)
        raise errors.UnprocessableEntity(f"{provider.name} does not use OAuth.", code="not_an_oauth_partner")
    return provider


def _app_context(tenant_id: str, partner_id: int) -> dict[str, str]:
    return crypto.context_for(tenant_id, f"oauthapp-{partner_id}", APP_PURPOSE)


def put_app(
    caller: Caller, partner_id: int, request: OAuthAppRequest, redirect_uri: str, store: Store | None = None
) -> OAuthAppOut:
    """Set the tenant's own OAuth client (an OAuth 1.0a partner's consumer) for a partner; the secret is
    envelope-encrypted. An RSA-SHA1 partner's consumer secret is the PEM RSA private key (422 if it is not one)."""
    provider = _oauth_partner(partner_id)
    if problem := secret_problem(provider, request.clientSecret.get_secret_value()):
        raise errors.UnprocessableEntity(f"The clientSecret {problem}.", code="invalid_consumer_key")
    secret = request.clientSecret.get_secret_value().encode()
    item = {
        **oauth_app_key(caller.tenant_id, partner_id),
        "type": "oauthapp",
        "tenantId": caller.tenant_id,
        "partnerId": partner_id,
        "clientId": request.clientId,
        "clientSecret": crypto.default().encrypt(secret, _app_context(caller.tenant_id, partner_id)),
        "scopes": request.scopes,
        "dateUpdated": clock.iso(clock.now()),
    }
    store = store or default_store()
    # The new app has not been refused: a refusal of it is reported again (report_app_refused).
    store.transact(
        {"Put": {"Item": serialize(item)}},
        {"Delete": {"Key": serialize(app_refused_key(caller.tenant_id, partner_id))}},
    )
    return _app_out(tenant_app(item), redirect_uri)


def get_app(caller: Caller, partner_id: int, redirect_uri: str, store: Store | None = None) -> OAuthAppOut:
    """The app the tenant's links use: its own (`source: tenant`), else the operator's default (`operator`)."""
    _oauth_partner(partner_id)
    app = app_for(caller.tenant_id, partner_id, store or default_store())
    if app is None:
        raise errors.NotFound("No OAuth app is set for this partner.", code="oauth_app_not_found")
    return _app_out(app, redirect_uri)


def delete_app(caller: Caller, partner_id: int, store: Store | None = None) -> None:
    """Remove the tenant's own app only (the operator's default is configuration, not the tenant's)."""
    _oauth_partner(partner_id)
    if not (store or default_store()).delete_oauth_app(caller.tenant_id, partner_id):
        raise errors.NotFound("No OAuth app is set for this partner.", code="oauth_app_not_found")


def _app_out(app: OAuthApp, redirect_uri: str) -> OAuthAppOut:
    return OAuthAppOut(
        partnerId=app.partner_id,
        clientId=app.client_id,
        scopes=app.scopes,
        redirectUri=redirect_uri,
        dateUpdated=app.date_updated,
        source=app.source,
    )


def require_app(tenant_id: str, partner_id: int, store: Store) -> OAuthApp:
    """The app for an OAuth partner (the tenant's, else the operator's), or a 422 telling the tenant to set one."""
    app = app_for(tenant_id, partner_id, store)
    if app is None:
        raise errors.UnprocessableEntity(
            "Set an OAuth app for this partner first (PUT /partners/{id}/oauth-app).", code="oauth_app_missing"
        )
    return app


def _client_secret(app: OAuthApp) -> str:
    """The operator's secret as configured; the tenant's decrypted under its own encryption context."""
    if app.operator_secret is not None:
        return app.operator_secret.get_secret_value()
    assert app.tenant_id is not None and app.sealed_secret is not None
    return crypto.default().decrypt(app.sealed_secret, _app_context(app.tenant_id, app.partner_id)).decode()


# --- the flow ----------------------------------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hash_state(state: str) -> str:
    return hashlib.sha256(state.encode()).hexdigest()


def pkce_pair() -> tuple[str, str]:
    """A fresh (verifier, S256 challenge) for one flow (RFC 7636)."""
    verifier = _b64(secrets.token_bytes(48))  # 64 characters
    return verifier, _b64(hashlib.sha256(verifier.encode()).digest())


def _render(template: str, values: dict[str, str]) -> str:
    """Fill {field} placeholders; the catalogue guarantees they are pattern-checked, non-secret fields."""
    return re.sub(r"\{(\w+)\}", lambda m: quote(values[m.group(1)], safe=""), template)


def start(
    link_id: str,
    token: str,
    form: dict[str, str],
    redirect_uri: str,
    store: Store | None = None,
    *,
    opened: OpenedLink | None = None,
) -> str:
    """Begin the authorization-code flow; returns the partner's authorize URL to 303 the browser to. `opened`:
    the link as the caller has just opened it (the writes re-check it)."""
    store = store or default_store()
    opened, fields, app = prepare_start(link_id, token, form, store, opened, "oauth2")
    provider, link = opened.provider, opened.link
    state, (verifier, challenge) = secrets.token_urlsafe(32), pkce_pair()
    scopes = scopes_for(link, provider, app)
    url = _authorize_url(provider, app, fields, redirect_uri, state, challenge, scopes)
    _begin(store, opened, token, hash_state(state), verifier, fields, {"scopes": scopes})
    events.emit("share.waiting_for_oauth", link.tenant_id, linkId=link.id, partnerId=link.partner_id, **link.identity())
    return url


def scopes_for(link: ShareLink, provider: Provider, app: OAuthApp | None) -> list[str]:
    """The scopes a link asks for: its own, else the tenant's OAuth app's, else the partner's defaults."""
    return list(link.scopes or (app.scopes if app else None) or provider.default_scopes)


def asked_scopes(opened: OpenedLink, store: Store | None = None) -> list[str]:
    """The scopes the connect page says a link asks for (kinds that take scopes; none for others)."""
    link, provider = opened.link, opened.provider
    if provider.allowed_scopes is None:
        return []
    app = app_for(link.tenant_id, link.partner_id, store or default_store()) if provider.oauth else None
    return scopes_for(link, provider, app)


def split_scopes(scope: Any) -> list[str]:
    """A token response's `scope` as a list: a string split at spaces and commas (providers use either), or a list."""
    items = scope if isinstance(scope, list | tuple) else [scope]
    return [part for item in items for part in re.split(r"[\s,]+", str(item)) if part]


# Scopes that ask for a refresh token: providers (Microsoft, for one) leave them out of the `scope` they answer.
OFFLINE_SCOPES = ("offline_access", "offline", "refresh_token")


def granted_scopes(token: dict[str, Any], requested: list[str] | None) -> list[str] | None:
    """What the provider granted: its `scope`, else (RFC 6749 section 5.1: omitted means identical) what was asked.
    A requested offline scope counts as granted when the answer carries a refresh token, which is what it grants."""
    if token.get("scope") is None:
        return list(requested) if requested is not None else None
    granted = split_scopes(token["scope"])
    if token.get("refresh_token"):
        granted += [s for s in requested or [] if s in OFFLINE_SCOPES and s not in granted]
    return granted


def prepare_start(
    link_id: str, token: str, form: dict[str, str], store: Store, opened: OpenedLink | None, kind: str
) -> tuple[OpenedLink, dict[str, str], OAuthApp]:
    """What starting a flow needs: the link (opened now unless `opened`), checked to be for a partner of this
    auth type (`oauth2`, `oauth1`), its form fields validated, and the tenant's (or the operator's) app."""
    opened = opened or open_link(link_id, token, store)
    if opened.provider.auth_type != kind:
        raise errors.BadRequest("This partner does not use this kind of OAuth.", code="not_an_oauth_partner")
    fields = validate_fields(opened.provider, form)
    return opened, fields, require_app(opened.link.tenant_id, opened.link.partner_id, store)


def _authorize_url(
    provider: Provider,
    app: OAuthApp,
    fields: dict[str, str],
    redirect_uri: str,
    state: str,
    challenge: str,
    scopes: list[str],
) -> str:
    from requests_oauthlib import OAuth2Session

    trace_http()
    oauth = provider.oauth
    assert oauth is not None
    _allow_local_http()
    session = OAuth2Session(app.client_id, redirect_uri=redirect_uri, scope=oauth.scope_separator.join(scopes))
    extra = dict(oauth.extra_authorize_params)
    if oauth.pkce:
        extra.update(code_challenge=challenge, code_challenge_method="S256")
    url, _ = session.authorization_url(_render(oauth.authorize_url, fields), state=state, **extra)
    return str(url)


def _begin(
    store: Store,
    opened: OpenedLink,
    token: str,
    state_hash: str,
    verifier: str | None,
    fields: dict,
    extra: dict[str, Any] | None = None,
) -> None:
    """The single-use flow record (keyed by the hash of the state, or of an OAuth 1.0a request token, with the
    kind's own `extra` values) and the link to status 2, in one transaction."""
    from grantlink.links import hash_token

    link, provider = opened.link, opened.provider
    now = clock.now()
    expires = now + timedelta(seconds=settings().oauth_flow_ttl_seconds)
    flow = {
        **flow_key(state_hash),
        "type": "oauthflow",
        "linkId": link.id,
        "linkVersion": link.version + 1,
        "tenantId": link.tenant_id,
        "partnerId": link.partner_id,
        "title": link.title,
        "verifier": verifier,
        "issuer": _render(provider.oauth.issuer, fields) if provider.oauth and provider.oauth.issuer else None,
        "fields": fields,
        "boundCredentialId": link.bound_credential_id,
        "redirectUrl": link.redirect_url,
        "endUser": link.end_user,  # what the credential will carry (copied from the link)
        "tags": link.tags or None,
        "environment": link.environment,  # the credential's (the callback takes the partner in it)
        **(extra or {}),
        "expiresAt": clock.iso(expires),
        "ttl": int(expires.timestamp()) + 3600,
    }
    waiting = replace(
        link, status=LinkStatus.WAITING_FOR_OAUTH, oauth_flow=state_hash, last_error=None, version=link.version + 1
    )
    link_update = update(
        link_key(link.id),
        {"status": int(waiting.status), "oauthFlow": state_hash, "version": waiting.version,
         "gsi2pk": tenant_links_by_status_pk(link.tenant_id, int(waiting.status))},
        ("lastError",),
        # Protects: the token still matches, the link still waits, has not expired, and was not changed since read.
        "tokenHash = :h AND #status IN (:w, :o) AND expiresAt > :now AND #version = :v",
        h=hash_token(token), w=0, o=2, now=clock.iso(now), v=link.version,
    )  # fmt: skip
    actions = [{"Put": {"Item": serialize(flow), "ConditionExpression": "attribute_not_exists(pk)"}}, link_update]
    actions += store.link_write(link, waiting, None)[1:]
    try:
        store.transact(*actions)
    except ConditionFailed as exc:
        raise errors.Gone() from exc


@dataclass
class CallbackOutcome:
    connected: bool
    partner_id: int
    partner_name: str
    redirect_to: str | None = None  # where to 303 the browser (a clean URL: no code, no state)
    problem: str | None = None  # for the page when not connected


def callback(params: dict[str, str], redirect_uri: str, store: Store | None = None) -> CallbackOutcome:
    """Finish the flow. Every rejection happens before any token call (SECURITY.md O1, O5)."""
    store = store or default_store()
    state = params.get("state", "")
    if not state or len(state) > 512:
        raise errors.BadRequest("This sign-in is incomplete. Open your link again to retry.", code="missing_state")
    flow = store.consume_flow(hash_state(state), clock.iso(clock.now()))
    if flow is None:
        raise errors.BadRequest("This sign-in has expired or was already used. Open your link again.", code="bad_state")
    provider = providers.in_environment(int(flow["partnerId"]), flow.get("environment"))  # the sandbox's token URL
    if params.get("error"):
        reason = _clean(params["error"]) + (
            f": {_clean(params['error_description'])}" if params.get("error_description") else ""
        )
        return _abandon(store, flow, provider, reason)
    if flow.get("issuer") and params.get("iss") != flow["issuer"]:
        logger.warning("oauth issuer mismatch", extra={"partner": provider.slug, "iss_present": "iss" in params})
        return _abandon(store, flow, provider, "the answer did not come from the expected server (issuer mismatch)")
    if not params.get("code"):
        return _abandon(store, flow, provider, "no authorization code was returned")
    return _finish(store, flow, provider, params["code"], redirect_uri)


def _clean(text: str) -> str:
    return re.sub(r"[^\w .,:;()'/-]", "", text)[:200]


def _abandon(store: Store, flow: dict[str, Any], provider: Provider, reason: str) -> CallbackOutcome:
    """Put the link back to status 0 with the reason, shown when the customer reopens it."""
    link_id, tenant_id = flow["linkId"], flow["tenantId"]
    back = update(
        link_key(link_id),
        {"status": 0, "lastError": reason, "gsi2pk": tenant_links_by_status_pk(tenant_id, 0),
         "version": int(flow["linkVersion"]) + 1},
        ("oauthFlow",),
        # Protects: only the flow that set status 2 may undo it, and only if nothing changed the link since.
        "#status = :two AND oauthFlow = :sh AND #version = :v",
        two=2, sh=flow["pk"].removeprefix("OAUTH#"), v=int(flow["linkVersion"]),
    )  # fmt: skip
    from grantlink.store import stats_update

    with contextlib.suppress(ConditionFailed):  # the link moved on (revoked, regenerated): nothing to undo
        store.transact(back, stats_update(tenant_id, "SHARE", {"s2": -1, "s0": 1}))
    return CallbackOutcome(False, provider.id, provider.name, problem=f"{provider.name} did not connect: {reason}.")


def exchange_code(provider: Provider, app: OAuthApp, code: str, verifier: str, redirect_uri: str, fields: dict) -> dict:
    """The token request, with the stored `code_verifier` passed explicitly (O3), through the outbound door
    (R3): the URL checked before the call, no redirect followed, the token call's overall deadline, the CA bundle."""
    from grantlink import outbound

    oauth = provider.oauth
    assert oauth is not None
    _allow_local_http()
    kwargs: dict[str, Any] = {"code_verifier": verifier} if oauth.pkce else {}
    with outbound.token_session(outbound.token_limits(), app.client_id, redirect_uri=redirect_uri) as session:
        token = session.fetch_token(
            _render(oauth.token_url, fields),
            code=code,
            client_secret=_client_secret(app),
            include_client_id=True if oauth.client_auth == "body" else None,
            **oauth.extra_token_params,  # the catalogue's quirks (never a grant parameter: the model refuses them)
            **kwargs,
        )
    return dict(token)


def _finish(store: Store, flow: dict[str, Any], provider: Provider, code: str, redirect_uri: str) -> CallbackOutcome:
    fields = dict(flow.get("fields") or {})

    def exchange(app: OAuthApp, before: Credential | None) -> Credential:
        token = exchange_code(provider, app, code, flow["verifier"], redirect_uri, fields)
        return _credential_from_token(flow, provider, token, fields, before)

    return complete(store, flow, provider, exchange)


def complete(
    store: Store,
    flow: dict[str, Any],
    provider: Provider,
    exchange: Callable[[OAuthApp, Credential | None], Credential],
) -> CallbackOutcome:
    """Finish a consumed flow: the link must still wait for it, then `exchange` (the partner's token call with
    the tenant's app, returning the credential to write; `before` is the one a reauthorize link replaces), then
    the grant. A partner failure puts the link back to status 0 with the reason, never a 500."""
    _require_grantable(store, flow)  # before the code or verifier is spent: a revoked or expired link gets nothing
    before = _bound(store, flow)
    try:
        credential = exchange(require_app(flow["tenantId"], provider.id, store), before)
    except errors.GrantlinkError:
        raise
    except Exception as exc:  # noqa: BLE001 - any provider failure ends this attempt with a reason, never a 500
        logger.warning("oauth token exchange failed", extra={"partner": provider.slug, "error": type(exc).__name__})
        return _abandon(store, flow, provider, _token_error_reason(exc))
    _grant(store, flow, credential, before)
    link_redirect = flow.get("redirectUrl")
    if link_redirect:
        return CallbackOutcome(True, provider.id, provider.name, with_result(link_redirect, 1, credential.id))
    return CallbackOutcome(True, provider.id, provider.name)


def _require_grantable(store: Store, flow: dict[str, Any]) -> None:
    """The link still waits for this very flow, unchanged and unexpired (the grant's write checks it again)."""
    link = store.get_link(flow["linkId"])
    if (
        link is None
        or link.status != LinkStatus.WAITING_FOR_OAUTH
        or link.oauth_flow != flow["pk"].removeprefix("OAUTH#")
        or link.version != int(flow["linkVersion"])
        or link.is_expired()
    ):
        raise errors.Gone()


def _token_error_reason(exc: Exception) -> str:
    name = getattr(exc, "error", None)
    return f"the token request was refused ({_clean(str(name))})" if name else "the token request failed"


def _bound(store: Store, flow: dict[str, Any]) -> Credential | None:
    bound = flow.get("boundCredentialId")
    if not bound:
        return None
    credential = store.get_credential(bound)
    if credential is None or credential.tenant_id != flow["tenantId"]:
        raise errors.Gone()
    return credential


def token_values(
    token: dict[str, Any], previous: dict[str, Any] | None, fields: dict[str, str], provider: Provider | None = None
) -> dict[str, Any]:
    """What is sealed for an OAuth credential. A response without a refresh token keeps the old one (O7); the
    provider's token metadata (`oauth.tokenMetadata`, e.g. Salesforce's instance_url) is kept the same way."""
    expires_in = token.get("expires_in")
    expires_at = clock.iso(clock.now() + timedelta(seconds=int(expires_in))) if expires_in else None
    refresh = token.get("refresh_token") or (previous or {}).get("refreshToken")
    values = {
        **fields,
        **_token_metadata(provider, token, previous),
        "accessToken": token["access_token"],
        "tokenType": token.get("token_type", "Bearer"),
        "scope": " ".join(token["scope"]) if isinstance(token.get("scope"), list) else token.get("scope"),
        "expiresAt": expires_at,
        "refreshToken": refresh,
    }
    return {k: v for k, v in values.items() if v is not None}


def _token_metadata(
    provider: Provider | None, token: dict[str, Any], previous: dict[str, Any] | None
) -> dict[str, str]:
    """The declared non-secret token-response fields that match their pattern, else what was kept before."""
    kept: dict[str, str] = {}
    for entry in provider.oauth.token_metadata if provider and provider.oauth else []:
        value = token.get(entry.name)
        if isinstance(value, str) and re.fullmatch(entry.pattern, value):
            kept[entry.field] = value
        elif isinstance((previous or {}).get(entry.field), str):
            kept[entry.field] = str((previous or {})[entry.field])
        elif value is not None:
            logger.warning("token metadata does not match its pattern; not kept", extra={"field": entry.field})
    return kept


def _credential_from_token(
    flow: dict[str, Any], provider: Provider, token: dict, fields: dict, before: Credential | None
) -> Credential:
    values = token_values(token, None, fields, provider)
    credential = flow_credential(flow, provider, "oauth2", values, before)
    requested = [str(scope) for scope in flow["scopes"]] if flow.get("scopes") is not None else None
    return replace(credential, requested_scopes=requested, granted_scopes=granted_scopes(token, requested))


def flow_credential(
    flow: dict[str, Any], provider: Provider, auth_type: str, values: dict[str, Any], before: Credential | None
) -> Credential:
    """The credential a finished flow writes (a new one, or `before` with its secret replaced), `values` sealed."""
    from grantlink.connect import seal

    now = clock.now().replace(microsecond=0)
    credential_id = before.id if before else new_credential_id()
    return Credential(
        id=credential_id,
        tenant_id=flow["tenantId"],
        partner_id=provider.id,
        title=before.title if before else flow["title"],
        auth_type=auth_type,
        state=CredentialState.ACTIVE,
        secret=seal(flow["tenantId"], credential_id, auth_type, values),
        environment=str(flow.get("environment") or providers.PRODUCTION),
        created_at=before.created_at if before else now,
        updated_at=now,
        hint=None,
        access_expires_at=clock.parse_iso(values["expiresAt"]) if "expiresAt" in values else None,
        refreshable="refreshToken" in values,
        version=before.version + 1 if before else 1,
        end_user=dict(flow["endUser"]) if flow.get("endUser") else None,
        tags=dict(flow.get("tags") or {}),
    )


def _grant(store: Store, flow: dict[str, Any], credential: Credential, before: Credential | None) -> None:
    from grantlink.store import stats_update

    state_hash = flow["pk"].removeprefix("OAUTH#")
    granted = update(
        link_key(flow["linkId"]),
        {"status": 1, "credentialId": credential.id, "gsi2pk": tenant_links_by_status_pk(flow["tenantId"], 1),
         "version": int(flow["linkVersion"]) + 1},
        ("tokenHash", "oauthFlow", "ttl", "lastError", "duePk", "dueAt"),
        # Protects: single use — this flow's link still waits for this flow, unchanged, and has not expired.
        "#status = :two AND oauthFlow = :sh AND expiresAt > :now AND #version = :v",
        two=2, sh=state_hash, now=clock.iso(clock.now()), v=int(flow["linkVersion"]),
    )  # fmt: skip
    action = "reauthorized" if before else "created"
    try:
        store.transact(
            granted,
            *store.credential_write(before, credential),
            stats_update(flow["tenantId"], "SHARE", {"s2": -1, "s1": 1}),
            store.put_audit(audit.entry(credential.id, action, audit.CUSTOMER, linkId=flow["linkId"], via="oauth")),
        )
    except ConditionFailed as exc:
        raise errors.Gone() from exc
    events.emit(
        "share.completed",
        flow["tenantId"],
        linkId=flow["linkId"],
        credentialId=credential.id,
        partnerId=credential.partner_id,
        reauthorized=before is not None,
        **completion(credential),
        **credential.identity(),
    )


# --- fresh tokens -------------------------------------------------------------------------------------------


def open_values(credential: Credential) -> dict[str, Any]:
    context = crypto.context_for(credential.tenant_id, credential.id, PURPOSE)
    return dict(json.loads(crypto.default().decrypt(credential.secret, context))["fields"])


def needs_refresh(credential: Credential, at: datetime | None = None) -> bool:
    if credential.auth_type not in TOKEN_KINDS or credential.access_expires_at is None:
        return False
    window = timedelta(seconds=settings().renew_before_seconds)
    return (at or clock.now()) + window >= credential.access_expires_at


def fresh_values(credential: Credential, store: Store | None = None, *, force: bool = False) -> dict[str, Any]:
    """The credential's values with an access token that is not about to expire (refreshing if needed)."""
    store = store or default_store()
    if not (force or needs_refresh(credential)):
        return open_values(credential)
    return refresh(credential, store)


def refresh(credential: Credential, store: Store) -> dict[str, Any]:
    """Refresh under a lease: one token call per credential however many callers ask at once (O6).

    Nothing the partner returns is ever dropped: the data key that seals the new tokens is fetched before the
    token call (a KMS failure afterwards cannot lose them), the write is conditional on still holding the lease
    (metadata written meanwhile by a PATCH, a test result or a back-off is kept, see `Store.credential_update`),
    and is retried; if it still cannot be written, the sealed tokens are kept aside (`_keep`) and the next
    refresh uses them instead of the stored refresh token, which a rotating partner has already retired."""
    owner, now = uuid.uuid4().hex, clock.now()
    until = clock.iso(now + timedelta(seconds=LEASE_SECONDS))
    current = store.take_lease(credential.id, owner, until, clock.iso(now))
    if current is None:
        return _wait_for_refresh(credential, store)
    written = False
    try:
        if current.state == CredentialState.REAUTHORIZATION_REQUIRED:
            raise _reauthorization_required()
        kept = store.get_kept_token(current.id)
        values = _kept_values(kept, current)
        if values is None and _replaced_since(credential, current):
            return open_values(current)  # another caller refreshed between our read and our lease
        written, new_values = _refresh_now(current, store, owner, values, kept)
        return new_values
    finally:
        if not written:
            _release(store, credential.id, owner)


def _release(store: Store, credential_id: str, owner: str) -> None:
    """Let go of the lease; if the table refuses, it runs out by itself at `leaseUntil` (never hides the outcome)."""
    try:
        store.release_lease(credential_id, owner)
    except errors.GrantlinkError:
        logger.warning("refresh lease not released; it expires by itself", extra={"credential": credential_id})


def _wait_for_refresh(credential: Credential, store: Store) -> dict[str, Any]:
    """Another caller holds the lease: re-read until it lets go (bounded), then use what it stored. A holder
    that let go without storing a fresh token failed: that is a transient failure here too."""
    deadline = time.monotonic() + WAIT_FOR_REFRESH_SECONDS
    delay = 0.05
    while time.monotonic() < deadline:
        time.sleep(delay)
        current = store.get_credential(credential.id)
        if current is None:
            raise errors.NotFound("No such credential.", code="credential_not_found")
        if not _leased(current):
            if current.state == CredentialState.REAUTHORIZATION_REQUIRED:
                raise _reauthorization_required()
            if _replaced_since(credential, current):
                return open_values(current)
            raise errors.ServiceUnavailable("The partner did not refresh the token; try again shortly.")
        delay = min(delay * 2, 0.5)
    raise errors.ServiceUnavailable("A token refresh is in progress; try again shortly.", code="refresh_in_progress")


def _replaced_since(read: Credential, current: Credential) -> bool:
    """Another caller stored a new secret since `read` was read, and its access token has not expired (it may
    still be inside the renew-before window: a token shorter-lived than the window is always "due")."""
    expires = current.access_expires_at
    return current.secret_id != read.secret_id and (expires is None or expires > clock.now())


def _leased(credential: Credential) -> bool:
    return bool(credential.lease_owner and credential.lease_until and credential.lease_until > clock.iso(clock.now()))


def _reauthorization_required() -> errors.GrantlinkError:
    return errors.Conflict(
        "The partner no longer accepts this credential's grant; reauthorize it.", code="reauthorization_required"
    )


def _kept_values(kept: dict[str, Any] | None, current: Credential) -> dict[str, Any] | None:
    """The values of tokens kept aside by an earlier refresh whose write failed, if they replace the secret
    stored now (a reconnect since then has made them stale)."""
    if kept is None or kept.get("replaces", "") != current.secret_id:
        return None
    context = crypto.context_for(current.tenant_id, current.id, PURPOSE)
    try:
        return dict(json.loads(crypto.default().decrypt(bytes(kept["secret"]), context))["fields"])
    except errors.CryptoError:
        logger.error("kept tokens do not decrypt; ignored", extra={"credential": current.id})
        return None  # the stored secret still works as it did; the refresh deletes the kept item


def _refresh_now(
    current: Credential, store: Store, owner: str, kept_values: dict[str, Any] | None, kept: dict[str, Any] | None
) -> tuple[bool, dict[str, Any]]:
    """The token call and the write; returns (written under the lease, the values now in use)."""
    if kept is not None and kept_values is not None and not _expiring(kept_values):
        # Tokens kept aside by an earlier refresh are still fresh: store them, no token call.
        return _store_refreshed(store, current, owner, bytes(kept["secret"]), kept_values, drop_kept=True), kept_values
    values = kept_values or open_values(current)
    minting = current.auth_type == "client_credentials"  # no refresh token: the client id and secret mint anew
    if not minting and not values.get("refreshToken"):
        raise errors.Conflict("This credential has no refresh token; reauthorize it.", code="no_refresh_token")
    sealer = crypto.default().prepare(crypto.context_for(current.tenant_id, current.id, PURPOSE))
    if minting:
        values = _mint_or_explain(current, store, values)
    else:
        token = _refresh_or_explain(current, store, values)
        provider = providers.in_environment(current.partner_id, current.environment)
        fields = {k: v for k, v in values.items() if provider.field(k)}
        values = token_values(token, values, fields, provider)
    secret = _seal_values(current, values, sealer)
    return _store_refreshed(store, current, owner, secret, values, drop_kept=kept is not None), values


def _seal_values(current: Credential, values: dict[str, Any], sealer: crypto.Sealer) -> bytes:
    from grantlink.connect import seal

    return seal(current.tenant_id, current.id, current.auth_type, values, sealer=sealer)


def _mint_or_explain(current: Credential, store: Store, values: dict[str, Any]) -> dict[str, Any]:
    """Client credentials: a new token minted with the customer's client id and secret. A refusal means the
    customer's client (its secret) was revoked or changed at the partner — not the tenant's OAuth app, which this
    kind does not use: `reauthorization_required`, once, with an event and a reauthorize link."""
    from grantlink import client_credentials

    provider = providers.in_environment(current.partner_id, current.environment)
    try:
        return client_credentials.reminted(provider, values, current)
    except client_credentials.MintRefused as exc:
        mark_reauthorization_required(current, store, exc.reason)
        raise _reauthorization_required() from exc


def _refresh_or_explain(current: Credential, store: Store, values: dict[str, Any]) -> dict[str, Any]:
    """The token call, with a refusal turned into what it means: the grant is gone (`reauthorization_required`,
    once, with an event), or the tenant's OAuth app is refused (`oauth_app_invalid`: the grant may be fine)."""
    app = require_app(current.tenant_id, current.partner_id, store)
    try:
        return _refresh_call(providers.in_environment(current.partner_id, current.environment), app, values)
    except RefreshRefused as exc:
        if exc.reason in APP_ERRORS:
            report_app_refused(current.tenant_id, current.partner_id, exc.reason, store)
            raise errors.Conflict(
                "The partner refused the OAuth app's client credentials; check the app (PUT /partners/{id}/oauth-app).",
                code="oauth_app_invalid",
            ) from exc
        mark_reauthorization_required(current, store, exc.reason)
        raise _reauthorization_required() from exc


def _expiring(values: dict[str, Any]) -> bool:
    expires = values.get("expiresAt")
    window = timedelta(seconds=settings().renew_before_seconds)
    return expires is None or clock.parse_iso(expires) <= clock.now() + window


def _refreshed(before: Credential, secret: bytes, values: dict[str, Any]) -> Credential:
    now = clock.now().replace(microsecond=0)
    return replace(
        before,
        secret=secret,
        access_expires_at=clock.parse_iso(values["expiresAt"]) if "expiresAt" in values else None,
        last_refreshed_at=now,
        refresh_failures=0,
        failing_since=None,
        retry_at=None,
        refreshable="refreshToken" in values or before.auth_type == "client_credentials",  # minted anew
        # A response that names its scopes says what the new token may do; one that does not keeps the grant's.
        granted_scopes=split_scopes(values["scope"]) if values.get("scope") else before.granted_scopes,
        updated_at=now,
        version=before.version + 1,
    )


def _store_refreshed(
    store: Store, current: Credential, owner: str, secret: bytes, values: dict[str, Any], *, drop_kept: bool
) -> bool:
    """Write the refreshed secret while the lease is ours, over the latest item (re-read after a concurrent
    metadata write), retrying throttles. If it cannot be written, keep it aside; returns whether it was written."""
    before: Credential | None = current
    for attempt in range(WRITE_ATTEMPTS):
        try:
            if before is None:
                before = store.get_credential(current.id)
            if before is None or before.lease_owner != owner:
                break  # deleted, replaced by a reconnect, or the lease expired and was taken over
            after = _refreshed(before, secret, values)
            entry = audit.entry(current.id, "refreshed", "grantlink")
            store.transact(*store.refreshed_write(before, after, owner, drop_kept=drop_kept), store.put_audit(entry))
        except ConditionFailed:
            before = None  # something else was written meanwhile: read it and write over the latest
            continue
        except Exception:  # noqa: BLE001 - throttled, unavailable or worse: retry, then keep the tokens aside
            before = None
            time.sleep(WRITE_BACKOFF_SECONDS * 2**attempt)
            continue
        events.emit(
            "credential.refreshed",
            current.tenant_id,
            credentialId=current.id,
            partnerId=current.partner_id,
            accessExpiresAt=values.get("expiresAt"),
            **before.identity(),
        )
        if before.refresh_failures > 0:  # the item written over had failed refreshes: it works again
            events.emit(
                "credential.recovered",
                current.tenant_id,
                credentialId=current.id,
                partnerId=current.partner_id,
                failures=before.refresh_failures,
                failingSince=clock.iso(before.failing_since) if before.failing_since else None,
                **before.identity(),
            )
        return True
    _keep(store, current, secret, values)
    return False


def _keep(store: Store, current: Credential, secret: bytes, values: dict[str, Any]) -> None:
    """Keep refreshed tokens (sealed) where the next refresh finds them: beside the credential, or, if the table
    cannot be written either, in a renewal message that the worker turns into that item."""
    now = clock.now()
    item = {
        "type": "kept_token",
        "credentialId": current.id,
        "tenantId": current.tenant_id,
        "secret": secret,
        "replaces": current.secret_id,
        "accessExpiresAt": values.get("expiresAt"),
        "keptAt": clock.iso(now),
        "ttl": int((now + timedelta(days=KEPT_TOKEN_DAYS)).timestamp()),
    }
    metrics.add_metric(name=KEPT_ASIDE_METRIC, unit="Count", value=1)
    logger.warning("refreshed tokens not stored on the credential: kept aside", extra={"credential": current.id})
    for attempt in range(WRITE_ATTEMPTS):
        try:
            store.put_kept_token(item)
            return
        except Exception:  # noqa: BLE001 - the table is failing: try again, then hand the item to the queue
            time.sleep(WRITE_BACKOFF_SECONDS * 2**attempt)
    from grantlink import renewal

    renewal.queue_kept_token(item)


class RefreshRefused(Exception):
    """The provider refused the refresh token for good (invalid_grant and kin)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _refresh_call(provider: Provider, app: OAuthApp, values: dict[str, Any]) -> dict[str, Any]:
    """The refresh request through the outbound door: the URL checked before the call, no redirect followed
    (a 3xx is a transient failure), the CA bundle, and an overall deadline (GRANTLINK_TOKEN_DEADLINE_SECONDS,
    at most 25 s) that keeps the worst token call shorter than the refresh lease (LEASE_SECONDS).
    Raises `RefreshRefused` for the OAuth errors in AUTH_ERRORS, `ServiceUnavailable` for anything else."""
    from oauthlib.oauth2.rfc6749.errors import OAuth2Error

    from grantlink import outbound

    oauth = provider.oauth
    assert oauth is not None
    _allow_local_http()
    fields = {k: v for k, v in values.items() if provider.field(k)}
    secret = _client_secret(app)
    body_auth = oauth.client_auth == "body"
    try:
        with outbound.token_session(outbound.token_limits(), app.client_id) as session:
            token = session.refresh_token(
                _render(oauth.token_url, fields),
                refresh_token=values["refreshToken"],
                auth=None if body_auth else (app.client_id, secret),
                **oauth.extra_refresh_params,
                **({"client_id": app.client_id, "client_secret": secret} if body_auth else {}),
            )
    except OAuth2Error as exc:
        if exc.error in AUTH_ERRORS:
            raise RefreshRefused(exc.error) from exc
        raise errors.ServiceUnavailable("The partner did not refresh the token; try again shortly.") from exc
    except Exception as exc:
        raise errors.ServiceUnavailable("The partner did not answer the token refresh; try again shortly.") from exc
    return dict(token)


def mark_reauthorization_required(
    credential: Credential,
    store: Store,
    reason: str,
    *,
    changes: dict[str, Any] | None = None,
    actor: str = "grantlink",
) -> bool:
    """Move the credential to `reauthorization_required` once, and make sure the tenant is told.

    The state change (with `changes`, e.g. the test result that found the credential invalid), a reauthorize
    link bound to the credential, the audit entry and an outbox record are one transaction; the
    `credential.reauthorization_required` event, carrying the ready-to-send link, goes out right after, and the
    outbox resends it if the bus did not take it (grantlink.outbox). Without an OAuth app no link can be made:
    the event then says so. Returns whether this call made the change (a concurrent one may have)."""
    from grantlink import outbox

    for _ in range(WRITE_ATTEMPTS):
        if credential.state == CredentialState.REAUTHORIZATION_REQUIRED:
            return False
        after = replace(
            credential,
            state=CredentialState.REAUTHORIZATION_REQUIRED,
            updated_at=clock.now().replace(microsecond=0),
            version=credential.version + 1,
            **(changes or {}),
        )
        body = events.detail(
            "credential.reauthorization_required",
            credential.tenant_id,
            credentialId=credential.id,
            partnerId=credential.partner_id,
            reason=reason,
            **credential.identity(),
        )
        writes = [
            *store.credential_update(credential, after),
            store.put_audit(audit.entry(credential.id, "reauthorization_required", actor, reason=reason)),
        ]
        try:
            body.update(_reauthorize_link_or_none(credential, store, writes, body))
        except ConditionFailed:
            fresh = store.get_credential(credential.id)
            if fresh is None:
                return False
            credential = fresh  # written meanwhile (a title, a test result): apply the change to the latest
            continue
        outbox.send(body, store)
        return True
    raise errors.Conflict("The credential changed at the same time; try again.", code="concurrent_update")


def _reauthorize_link_or_none(
    credential: Credential, store: Store, writes: list[dict[str, Any]], body: dict[str, Any]
) -> dict[str, Any]:
    """Write `writes`, the outbox record of `body` and a reauthorize link bound to the credential in one
    transaction; returns the event's link fields (none when the partner's OAuth app is gone: no link possible)."""
    from grantlink import links, outbox
    from grantlink.models import ReauthorizeRequest, link_url

    try:
        link, token = links.issue_link(
            Caller(credential.tenant_id),
            credential.partner_id,
            credential.title,
            ReauthorizeRequest.model_validate({}),
            store,
            bound_credential_id=credential.id,
            also=lambda link: [*writes, outbox.put(body, link.id)],
            keep_from=credential,
        )
    except errors.UnprocessableEntity:
        store.transact(*writes, outbox.put(body))
        return {"reauthorizeLinkId": None, "reauthorizeLink": None}
    return {
        "reauthorizeLinkId": link.id,
        "reauthorizeLink": link_url(links.connect_base(), link.id, token),
        "reauthorizeLinkExpiresAt": clock.iso(link.expires_at),
    }


def report_app_refused(tenant_id: str, partner_id: int, error: str, store: Store) -> None:
    """The partner refused the OAuth app itself (`invalid_client`, `unauthorized_client`): that is the tenant's
    configuration, not the end user's grant. One `oauth_app.invalid` event per tenant and partner until the app
    is replaced (PUT oauth-app clears the marker) or a day has passed; no credential changes state."""
    now = clock.now()
    marker = {
        **app_refused_key(tenant_id, partner_id),
        "type": "oauth_app_refused",
        "error": error,
        "reportedAt": clock.iso(now),
        "expiresAt": clock.iso(now + timedelta(seconds=APP_REFUSED_REPORT_SECONDS)),
        "ttl": int((now + timedelta(seconds=APP_REFUSED_REPORT_SECONDS)).timestamp()) + 86400,
    }
    try:
        store.transact(
            # Protects: one report per tenant and partner while the marker lives (checked by time: TTL is late).
            {"Put": {"Item": serialize(marker), "ConditionExpression": "attribute_not_exists(pk) OR expiresAt < :now",
                     "ExpressionAttributeValues": serialize({":now": clock.iso(now)})}}
        )  # fmt: skip
    except ConditionFailed:
        return
    events.emit("oauth_app.invalid", tenant_id, partnerId=partner_id, error=error)


def app_refused_key(tenant_id: str, partner_id: int) -> dict[str, str]:
    return {"pk": f"TENANT#{tenant_id}", "sk": f"APPREFUSED#{partner_id}"}


def _allow_local_http() -> None:
    """oauthlib refuses http token URLs; the local stack's demo server is http on 127.0.0.1 (opted in)."""
    os.environ.setdefault("OAUTHLIB_RELAX_TOKEN_SCOPE", "1")  # providers may grant fewer scopes than asked
    if settings().allow_private_targets:
        os.environ["OAUTHLIB_INSECURE_TRANSPORT"] = "1"
