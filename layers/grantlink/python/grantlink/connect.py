"""The customer's side of a link: open it, fill in the partner's form, and connect (use cases).

Opening never consumes. Submitting validates the fields, encrypts the secret, then consumes the link and
writes the credential in one transaction that re-checks the token hash, the status and the expiry, so of
any number of concurrent submits exactly one wins. Every way a link can be unusable — unknown, used,
revoked, expired — raises the same `Gone`, so the outside world cannot tell them apart (SECURITY.md T3).
"""

from __future__ import annotations

import json
import re
import secrets
from dataclasses import dataclass, field, replace
from typing import Any, NoReturn
from urllib.parse import urlencode

from grantlink import audit, clock, crypto, errors, providers
from grantlink.links import LINK_ID_PREFIX, token_matches
from grantlink.models import Credential, CredentialState, LinkStatus, ShareLink
from grantlink.providers import Provider
from grantlink.store import ConditionFailed, Store, serialize
from grantlink.store import default as default_store

CREDENTIAL_ID_PREFIX = "crd_"
MAX_FIELD_LENGTH = 4096
CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
PURPOSE = "credential"


@dataclass
class OpenedLink:
    link: ShareLink
    provider: Provider


@dataclass
class Connected:
    link: ShareLink
    credential: Credential
    provider: Provider
    redirect_to: str | None


@dataclass
class InvalidForm(Exception):
    """Field problems to show on the re-rendered form; the link is untouched."""

    errors: dict[str, str]
    values: dict[str, str] = field(default_factory=dict)
    form_error: str | None = None
    opened: OpenedLink | None = None


def new_credential_id() -> str:
    return CREDENTIAL_ID_PREFIX + secrets.token_hex(10)


def open_link(link_id: str, token: str, store: Store | None = None) -> OpenedLink:
    """A usable link and its partner, or `errors.Gone`. Reads one item; changes nothing."""
    link = (store or default_store()).get_link(link_id) if _plausible(link_id, token) else None
    usable = (
        link is not None
        and token_matches(token, link.token_hash)
        and link.status in (LinkStatus.WAITING, LinkStatus.WAITING_FOR_OAUTH)
        and not link.is_expired()
    )
    provider = providers.find(link.partner_id) if usable and link else None
    if not usable or link is None or provider is None:
        raise errors.Gone()
    provider = provider.in_environment(link.environment)  # the sandbox's URLs for a sandbox link
    if link.is_locked():
        raise errors.LinkLocked()  # only with this link's own token: says nothing about any other link
    return OpenedLink(link, provider)


def _plausible(link_id: str, token: str) -> bool:
    return link_id.startswith(LINK_ID_PREFIX) and len(link_id) <= 64 and 0 < len(token) <= 128


def validate_fields(provider: Provider, form: dict[str, str]) -> dict[str, str]:
    """The submitted values by field name, or `InvalidForm` with a human message per bad field."""
    values, problems = {}, {}
    for spec in provider.fields:
        value = form.get(spec.name, "").strip()
        if not value:
            if spec.required:
                problems[spec.name] = f"Enter your {spec.label}."
            continue
        if len(value) > MAX_FIELD_LENGTH or CONTROL.search(value):
            problems[spec.name] = f"{spec.label} is not valid: check you copied only the value."
        elif not spec.accepts(value):
            problems[spec.name] = f"{spec.label} does not look right: check you copied all of it."
        values[spec.name] = value
    if problems:
        shown = {k: v for k, v in values.items() if not (provider.field(k) and provider.field(k).secret)}  # type: ignore[union-attr]
        raise InvalidForm(problems, shown)
    return values


def _test_before_accepting(opened: OpenedLink, token: str, values: dict[str, str], store: Store) -> dict[str, Any]:
    """Run the partner's test with what the customer typed. A failure is counted on the link and shown on the
    form; the failure that reaches `GRANTLINK_LINK_MAX_FAILED_TESTS` locks the link (`errors.LinkLocked`)."""
    from grantlink import testing

    result = testing.check_credential(opened.provider, values)
    if not result.ok:
        refuse(opened, token, values, store, result.message)
    return result.to_api()


def refuse(opened: OpenedLink, token: str, values: dict[str, Any], store: Store, message: str) -> NoReturn:
    """A failed connection test on the connect page (the partner's test, or a refused client credentials mint):
    counted on the link (`errors.LinkLocked` at the cap) and shown on the re-rendered form, secrets not echoed."""
    left = _count_failure(opened.link, token, store)
    warning = f" You can try {left} more time{'s' if left > 1 else ''} with this link." if left <= 3 else ""
    raise InvalidForm({}, values=shown_values(opened.provider, values), form_error=message + warning)


def shown_values(provider: Provider, values: dict[str, Any]) -> dict[str, str]:
    """The values the re-rendered form may show again: the partner's non-secret fields only."""
    return {k: str(v) for k, v in values.items() if (spec := provider.field(k)) is not None and not spec.secret}


def _count_failure(link: ShareLink, token: str, store: Store) -> int:
    """Count one failed test on the link; returns the attempts left, or raises LinkLocked (or Gone) when none are."""
    from grantlink.config import settings
    from grantlink.links import hash_token

    cap = settings().link_max_failed_tests
    try:
        failed = store.count_failed_test(link.id, hash_token(token), cap)
    except ConditionFailed as exc:
        current = store.get_link(link.id)
        if current is not None and token_matches(token, current.token_hash) and current.is_locked():
            raise errors.LinkLocked() from exc  # concurrent submits used the last tries
        raise errors.Gone() from exc  # consumed, regenerated or revoked meanwhile
    if failed >= cap:
        raise errors.LinkLocked()
    return cap - failed


def hint_for(provider: Provider, values: dict[str, str]) -> str | None:
    """The last four characters of the first secret, only when it is long enough not to give it away."""
    secret = next((values[f.name] for f in provider.fields if f.secret and f.name in values), "")
    return f"…{secret[-4:]}" if len(secret) >= 12 else None


def seal(
    tenant_id: str, credential_id: str, auth_type: str, values: dict[str, Any], sealer: crypto.Sealer | None = None
) -> bytes:
    """Encrypt a credential's values under its own encryption context (with `sealer`'s data key fetched
    earlier, when given: see `crypto.Crypto.prepare`)."""
    plaintext = json.dumps({"v": 1, "authType": auth_type, "fields": values}, separators=(",", ":")).encode()
    if sealer is not None:
        return sealer.seal(plaintext)
    return crypto.default().encrypt(plaintext, crypto.context_for(tenant_id, credential_id, PURPOSE))


def submit(link_id: str, token: str, form: dict[str, str], store: Store | None = None) -> Connected:
    """Validate, encrypt, then consume the link and write the credential in one transaction."""
    store = store or default_store()
    opened = open_link(link_id, token, store)
    link, provider = opened.link, opened.provider
    if provider.uses_oauth_app:  # OAuth 2.0 code flow and OAuth 1.0a start at /connect/oauth/start
        raise errors.BadRequest("This partner connects through OAuth.", code="oauth_partner")
    minted = None
    try:
        values = validate_fields(provider, form)
        if provider.client_credentials is not None:  # mint the first token; the test and the seal use it
            from grantlink import client_credentials

            minted = client_credentials.mint_for_link(opened, token, values, store)
            values = minted.values
        first_test = _test_before_accepting(opened, token, values, store)
    except InvalidForm as problem:
        problem.opened = opened
        raise
    before = _bound_credential(link, store)
    now = clock.now().replace(microsecond=0)
    credential_id = before.id if before else new_credential_id()
    after = Credential(
        id=credential_id,
        tenant_id=link.tenant_id,
        partner_id=link.partner_id,
        title=before.title if before else link.title,
        auth_type=provider.auth_type,
        state=CredentialState.ACTIVE,
        secret=seal(link.tenant_id, credential_id, provider.auth_type, values),
        created_at=before.created_at if before else now,
        updated_at=now,
        hint=hint_for(provider, values),
        last_test=first_test,
        version=before.version + 1 if before else 1,
        end_user=link.end_user,  # the link says who it is for; a reauthorize link was issued with the credential's
        tags=dict(link.tags),
        environment=link.environment,
    )
    if minted is not None:
        after = replace(after, **minted.credential_changes())
    granted = consume(link, token, after, before, store)
    return Connected(granted, after, provider, redirect_with_result(granted))


def _bound_credential(link: ShareLink, store: Store) -> Credential | None:
    """The credential a reauthorize link replaces; Gone if it was deleted (or moved) meanwhile."""
    if not link.bound_credential_id:
        return None
    credential = store.get_credential(link.bound_credential_id)
    if credential is None or credential.tenant_id != link.tenant_id:
        raise errors.Gone()
    return credential


def consume(link: ShareLink, token: str, credential: Credential, before: Credential | None, store: Store) -> ShareLink:
    """The single-use step: one transaction; losing a race (or a token gone stale) is `Gone`."""
    granted = replace(
        link, status=LinkStatus.GRANTED, credential_id=credential.id, token_hash="", version=link.version + 1
    )
    action = "reauthorized" if before else "created"
    try:
        store.transact(
            _consume_action(link, granted, token),
            *store.credential_write(before, credential),
            store.put_audit(audit.entry(credential.id, action, audit.CUSTOMER, linkId=link.id)),
            *store.link_write(link, granted, None)[1:],  # the status counters; the link itself is above
        )
    except ConditionFailed as exc:
        raise errors.Gone() from exc
    from grantlink import events

    events.emit(
        "share.completed",
        link.tenant_id,
        linkId=link.id,
        credentialId=credential.id,
        partnerId=credential.partner_id,
        reauthorized=before is not None,
        **completion(credential),
        **credential.identity(),
    )
    return granted


def completion(credential: Credential) -> dict[str, Any]:
    """What `share.completed` says of the new credential: its environment and, for kinds that ask for scopes,
    what was granted and what was asked for but not granted (non-empty: a narrower grant)."""
    said: dict[str, Any] = {"environment": credential.environment}
    if credential.requested_scopes is not None:
        said.update(grantedScopes=credential.granted_scopes, missingScopes=credential.missing_scopes)
    return said


def _consume_action(link: ShareLink, granted: ShareLink, token: str) -> dict[str, Any]:
    from grantlink.links import hash_token
    from grantlink.models import link_to_item

    return {
        "Put": {
            "Item": serialize(link_to_item(granted, None)),
            # Protects: single use. The token still matches, the link still waits, it has not expired,
            # and nobody changed it since it was read.
            "ConditionExpression": "tokenHash = :h AND #s IN (:w, :o) AND expiresAt > :now AND #v = :v",
            "ExpressionAttributeNames": {"#s": "status", "#v": "version"},
            "ExpressionAttributeValues": serialize(
                {
                    ":h": hash_token(token),
                    ":w": int(LinkStatus.WAITING),
                    ":o": int(LinkStatus.WAITING_FOR_OAUTH),
                    ":now": clock.iso(clock.now()),
                    ":v": link.version,
                }
            ),
        }
    }


def redirect_with_result(link: ShareLink) -> str | None:
    """The tenant's redirect URL with `status` and `credentialId` appended, if the link has one."""
    if not link.redirect_url:
        return None
    return with_result(link.redirect_url, int(link.status), link.credential_id or "")


def with_result(redirect_url: str, status: int, credential_id: str) -> str:
    """`redirect_url` with `status` and `credentialId` appended to its query."""
    joiner = "&" if "?" in redirect_url else "?"
    return f"{redirect_url}{joiner}{urlencode({'status': status, 'credentialId': credential_id})}"
