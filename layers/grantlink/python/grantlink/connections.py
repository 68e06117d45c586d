"""Credentials ("connections") for the tenant: list, read, rename, disable, delete, read the secret,
reauthorize, and the audit trail (use cases).

Another tenant's credential is a 404, never a 403. Reading the secret is the only way a secret leaves,
and it is audited.
"""

from __future__ import annotations

import json
import math
from dataclasses import replace
from typing import Any

from pydantic import SecretStr

from grantlink import audit, clock, errors, events, links, oauth, oauth1, pagination, providers, testing
from grantlink.connect import CREDENTIAL_ID_PREFIX
from grantlink.models import (
    TAG_KEY,
    TOKEN_KINDS,
    Caller,
    Credential,
    CredentialListMeta,
    CredentialState,
    CursorMeta,
    PatchCredentialRequest,
    ReauthorizeRequest,
    SecretOut,
    ShareLink,
    TokenOut,
    end_user_stats_kind,
)
from grantlink.store import ConditionFailed, Store
from grantlink.store import default as default_store
from grantlink.testing import CheckResult


def get_credential(caller: Caller, credential_id: str, store: Store | None = None) -> Credential:
    """The caller's credential, or NotFound (also for another tenant's)."""
    plausible = credential_id.startswith(CREDENTIAL_ID_PREFIX) and len(credential_id) <= 64
    credential = (store or default_store()).get_credential(credential_id) if plausible else None
    if credential is None or credential.tenant_id != caller.tenant_id:
        raise errors.NotFound("No such credential.", code="credential_not_found")
    return credential


def list_credentials(
    caller: Caller,
    partner_id: int | None,
    state: CredentialState | None,
    per_page: int,
    cursor: str | None,
    store: Store | None = None,
    *,
    end_user_id: str | None = None,
    tag: str | None = None,
    environment: str | None = None,
) -> tuple[list[Credential], CredentialListMeta]:
    """One page, newest first: one Query (a tag filter adds one BatchGetItem of the page) plus, where a counter
    says how many match, one read of it. Never a Scan: end users and tags have their own indexes. With a filter
    the index does not cover, a page may hold fewer than `per_page` items (even none) and still have a next one."""
    store = store or default_store()
    state_name = str(state) if state else None
    tag_pair = parse_tag_filter(tag) if tag is not None else None
    if end_user_id is not None and not (0 < len(end_user_id) <= 128 and end_user_id.isprintable()):
        raise errors.BadRequest("endUserId is 1–128 printable characters.", code="invalid_end_user_id")
    scope = f"{caller.tenant_id}|CRED|{partner_id or ''}|{state_name or ''}|{per_page}"
    if end_user_id is not None or tag_pair is not None:
        scope += "|" + json.dumps([end_user_id, tag_pair])
    if environment is not None:
        scope += f"|env:{environment}"
    start, page = pagination.decode(cursor, scope)
    found, last = store.list_credentials(
        caller.tenant_id,
        partner_id,
        state_name,
        per_page,
        start,
        end_user_id=end_user_id,
        tag=tag_pair,
        environment=environment,
    )
    # No counter keeps credentials by environment: with that filter the totals are unknown (null).
    total = (
        None
        if environment is not None
        else _total(store, caller.tenant_id, partner_id, state_name, end_user_id, tag_pair)
    )
    meta = CredentialListMeta(
        page=page,
        totalPages=None if total is None else max(1, math.ceil(total / per_page)),
        totalItemsCount=total,
        nextCursor=pagination.encode(last, page, scope),
    )
    return found, meta


def parse_tag_filter(tag: str) -> tuple[str, str]:
    """`key:value` → (key, value), split at the first `:` (a tag key never holds one)."""
    key, colon, value = tag.partition(":")
    if not colon or not TAG_KEY.fullmatch(key) or len(value) > 256 or not value.isprintable():
        raise errors.BadRequest("The tag filter is `key:value` with a valid tag key and value.", code="invalid_tag")
    return key, value


def _total(
    store: Store,
    tenant_id: str,
    partner_id: int | None,
    state: str | None,
    end_user_id: str | None,
    tag: tuple[str, str] | None,
) -> int | None:
    """The count of every match where a counter keeps it; None (unknown) for tag filters and combined end-user ones."""
    if tag is not None or (end_user_id is not None and (partner_id is not None or state is not None)):
        return None
    if end_user_id is not None:
        return store.stats(tenant_id, end_user_stats_kind(end_user_id)).get("total", 0)
    return store.stats(tenant_id, "CRED").get(_counter(partner_id, state), 0)


def _counter(partner_id: int | None, state: str | None) -> str:
    if partner_id is not None and state is not None:
        return f"ps:{partner_id}:{state}"
    if partner_id is not None:
        return f"p:{partner_id}"
    return f"s:{state}" if state else "total"


def update_credential(
    caller: Caller, credential_id: str, request: PatchCredentialRequest, store: Store | None = None
) -> Credential:
    """Rename, disable (`enabled: false`) or reactivate (`enabled: true`) a credential."""
    store = store or default_store()
    before = get_credential(caller, credential_id, store)
    after = replace(before, title=request.title or before.title, state=_next_state(before.state, request.enabled))
    if after == before:
        return before
    after = replace(after, updated_at=clock.now().replace(microsecond=0), version=before.version + 1)
    changes = {"title": after.title if after.title != before.title else None}
    if after.state != before.state:
        changes["state"] = str(after.state)
    action = "updated" if after.state == before.state else ("disabled" if request.enabled is False else "enabled")
    _write(store, before, after, audit.entry(credential_id, action, caller.actor, **changes))
    if action == "disabled":
        events.emit(
            "credential.disabled",
            caller.tenant_id,
            credentialId=credential_id,
            partnerId=after.partner_id,
            previousState=str(before.state),
            **after.identity(),
        )
    return after


def _next_state(current: CredentialState, enabled: bool | None) -> CredentialState:
    if enabled is False:
        return CredentialState.DISABLED
    if enabled is True and current == CredentialState.DISABLED:
        return CredentialState.ACTIVE
    return current  # reactivating never skips a needed reauthorization


def _write(store: Store, before: Credential, after: Credential, entry: dict[str, Any]) -> None:
    try:
        store.transact(*store.credential_update(before, after), store.put_audit(entry))
    except ConditionFailed as exc:
        raise errors.Conflict("The credential changed at the same time; try again.", code="concurrent_update") from exc


def delete_credential(caller: Caller, credential_id: str, store: Store | None = None) -> None:
    """Delete the credential and with it the only copy of its ciphertext; the audit trail remains until its TTL."""
    store = store or default_store()
    credential = get_credential(caller, credential_id, store)
    try:
        store.transact(
            *store.credential_delete(credential),
            store.put_audit(audit.entry(credential_id, "deleted", caller.actor)),
        )
    except ConditionFailed as exc:
        raise errors.Conflict("The credential changed at the same time; try again.", code="concurrent_update") from exc
    events.emit(
        "credential.deleted",
        caller.tenant_id,
        credentialId=credential_id,
        partnerId=credential.partner_id,
        **credential.identity(),
    )


def require_usable(credential: Credential) -> Credential:
    """The credential, if its secret may be used now: a disabled one keeps it locked, and one whose grant the
    partner refused must be reauthorized first (409 either way)."""
    if credential.state == CredentialState.DISABLED:
        raise errors.Conflict("This credential is disabled; enable it first.", code="credential_disabled")
    if credential.state == CredentialState.REAUTHORIZATION_REQUIRED:
        raise errors.Conflict("This credential needs reauthorizing first.", code="reauthorization_required")
    return credential


def read_secret(caller: Caller, credential_id: str, store: Store | None = None) -> SecretOut:
    """Decrypt and return the credential's values; audited. Disabled credentials keep their secret locked."""
    store = store or default_store()
    credential = get_credential(caller, credential_id, store)
    require_usable(credential)
    values = oauth.fresh_values(credential, store)
    store.transact(store.put_audit(audit.entry(credential_id, "secret_read", caller.actor)))
    return SecretOut(
        id=credential.id,
        partnerId=credential.partner_id,
        authType=credential.auth_type,
        fields=shown(credential, values),
    )


def current_token(caller: Caller, credential_id: str, force: bool = False, store: Store | None = None) -> TokenOut:
    """The OAuth access token and its expiry, refreshed first when due (`force`: refreshed now, single-flight);
    audited (`token_read`) like a secret read. Conflict `not_an_oauth_credential` for API keys and logins."""
    store = store or default_store()
    credential = get_credential(caller, credential_id, store)
    if credential.auth_type == "oauth1":
        raise errors.Conflict(
            "OAuth 1.0a tokens do not expire and are not refreshed: read oauthToken and oauthTokenSecret from "
            "GET /credentials/{id}/secret (requests are signed with them and the consumer), or use the proxy.",
            code="not_an_oauth_credential",
        )
    if credential.auth_type not in TOKEN_KINDS:
        raise errors.Conflict("This credential does not hold an OAuth token.", code="not_an_oauth_credential")
    require_usable(credential)
    values = oauth.fresh_values(credential, store, force=force)
    entry = audit.entry(credential_id, "token_read", caller.actor, forced=True if force else None)
    store.transact(store.put_audit(entry))
    return TokenOut(
        credentialId=credential.id,
        accessToken=SecretStr(str(values["accessToken"])),
        tokenType=str(values.get("tokenType") or "Bearer"),
        expiresAt=values.get("expiresAt"),
    )


def shown(credential: Credential, values: dict[str, Any]) -> dict[str, str]:
    """What the secret endpoint returns: everything for API keys and logins; for OAuth the access token and
    its details, not the refresh token (grantlink keeps the grant fresh itself)."""
    hidden = {"refreshToken"} if credential.auth_type == "oauth2" else set()
    return {k: str(v) for k, v in values.items() if k not in hidden}


def reauthorize(
    caller: Caller, credential_id: str, request: ReauthorizeRequest, store: Store | None = None
) -> tuple[ShareLink, str]:
    """A new share link bound to this credential: completing it replaces the secret, keeping the id."""
    store = store or default_store()
    credential = get_credential(caller, credential_id, store)
    return links.issue_link(
        caller,
        credential.partner_id,
        credential.title,
        request,
        store,
        bound_credential_id=credential.id,
        also=lambda link: store.put_audit(
            audit.entry(credential_id, "reauthorize_link_created", caller.actor, linkId=link.id)
        ),
        keep_from=credential,
    )


def test_credential(caller: Caller, credential_id: str, store: Store | None = None) -> CheckResult:
    """Run the partner's declared test with this credential (refreshing an OAuth token first when it is due),
    keep the result as `lastTest`, audit it, and emit `credential.test_failed` on failure. Invalid credentials
    take the same path as a refused refresh (`oauth.mark_reauthorization_required`: state, reauthorize link and
    event together); transient failures change nothing else."""
    store = store or default_store()
    credential = get_credential(caller, credential_id, store)
    if credential.state == CredentialState.DISABLED:
        raise errors.Conflict("This credential is disabled; enable it first.", code="credential_disabled")
    values = {k: str(v) for k, v in oauth.fresh_values(credential, store).items()}
    provider = providers.in_environment(credential.partner_id, credential.environment)
    signer = oauth1.signer(credential, provider, values, store)  # OAuth 1.0a: the tenant's consumer, at use time
    result = testing.check_credential(provider, values, auth=signer)
    # A refresh just now moved the item on: then the result is written over the item as re-read.
    _record_test(caller, None if oauth.needs_refresh(credential) else credential, result, store, credential_id)
    if not result.ok:
        events.emit(
            "credential.test_failed",
            credential.tenant_id,
            credentialId=credential.id,
            partnerId=credential.partner_id,
            category=result.category,
            httpStatus=result.http_status,
            message=result.message,
            **credential.identity(),
        )
    return result


def _record_test(
    caller: Caller, read: Credential | None, result: CheckResult, store: Store, credential_id: str
) -> None:
    """Store the result on the credential as it stands now (a refresh or another write may have landed while the
    partner answered: then it is re-read): only `lastTest` and, for invalid credentials, the state change — never
    the secret."""
    for _ in range(3):
        latest = read or get_credential(caller, credential_id, store)
        read = None
        entry = audit.entry(credential_id, "tested", caller.actor, category=result.category)
        try:
            if result.category == "invalid_credentials" and latest.state == CredentialState.ACTIVE:
                reason = f"connection test: {result.message}"[:200]
                changes = {"last_test": result.to_api()}
                if oauth.mark_reauthorization_required(latest, store, reason, changes=changes, actor=caller.actor):
                    store.transact(store.put_audit(entry))
                    return
                continue  # moved meanwhile: record on what it became
            after = replace(latest, last_test=result.to_api(), version=latest.version + 1)
            store.transact(*store.credential_update(latest, after), store.put_audit(entry))
            return
        except ConditionFailed:
            continue
    raise errors.Conflict("The credential changed at the same time; try again.", code="concurrent_update")


def list_audit(
    caller: Caller, credential_id: str, per_page: int, cursor: str | None, store: Store | None = None
) -> tuple[list[dict[str, Any]], CursorMeta]:
    """The credential's audit entries, newest first."""
    store = store or default_store()
    get_credential(caller, credential_id, store)
    scope = f"{caller.tenant_id}|AUDIT|{credential_id}|{per_page}"
    start, page = pagination.decode(cursor, scope)
    items, last = store.list_audit(credential_id, per_page, start)
    return items, CursorMeta(page=page, nextCursor=pagination.encode(last, page, scope))
