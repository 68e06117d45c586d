"""Which OAuth client a tenant uses for a partner: its own, else the operator's default, else none.

- A tenant's own app (`PUT /partners/{id}/oauth-app`) is an item in the table, its client secret
  envelope-encrypted (grantlink.oauth decrypts it when a token call needs it). It always wins.
- The operator's defaults come from configuration: the Secrets Manager secret named by
  `GRANTLINK_DEFAULT_OAUTH_APPS_SECRET` (an ARN or a name; empty turns the feature off), whose SecretString is
  `{"<partnerId>": {"clientId": "...", "clientSecret": "...", "scopes": ["..."]}}` (scopes optional). The client
  secret is used as read from Secrets Manager: it is never written to the table.

The secret is read only when a tenant has no app of its own, once per process, and validated whole: a malformed
document, or an entry for an unknown or non-OAuth partner, is logged (where, never what) and answered with a 503
— never a crash, never silently ignored. A failed read or a rejected document is not cached, so the next request
tries again (an operator's fix takes effect without a cold start; a good document is kept for the process's life).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Any, Literal

from botocore.exceptions import BotoCoreError, ClientError
from cryptography.exceptions import UnsupportedAlgorithm
from pydantic import Field, SecretStr, TypeAdapter, ValidationError

from grantlink import aws, clock, errors, providers
from grantlink.config import settings
from grantlink.models import OAuthAppRequest
from grantlink.observability import logger
from grantlink.store import Store

Source = Literal["tenant", "operator"]
# The document's keys: partner ids as JSON object keys (decimal strings, no sign, no leading zero).
PartnerKey = Annotated[str, Field(pattern=r"^[1-9][0-9]{0,9}$")]
# Each entry is validated exactly as a tenant's own app is (OAuthAppRequest: client id, secret, optional scopes).
_DOCUMENT = TypeAdapter(dict[PartnerKey, OAuthAppRequest])
_FIELDS = frozenset(OAuthAppRequest.model_fields)


@dataclass(frozen=True)
class OAuthApp:
    """An OAuth client for one partner, as the flow and the refresh use it. Neither secret is in its repr."""

    source: Source
    partner_id: int
    client_id: str
    scopes: list[str] | None
    date_updated: str
    tenant_id: str | None = None  # the tenant's own app only (its secret's encryption context)
    sealed_secret: bytes | None = field(default=None, repr=False)  # the tenant's, envelope-encrypted
    operator_secret: SecretStr | None = field(default=None, repr=False)  # the operator's, as configured


def tenant_app(item: dict[str, Any]) -> OAuthApp:
    """A tenant's app from its table item."""
    return OAuthApp(
        source="tenant",
        partner_id=int(item["partnerId"]),
        client_id=item["clientId"],
        scopes=item.get("scopes"),
        date_updated=item["dateUpdated"],
        tenant_id=item["tenantId"],
        sealed_secret=bytes(item["clientSecret"]),
    )


def app_for(tenant_id: str, partner_id: int, store: Store) -> OAuthApp | None:
    """The tenant's own app for this partner if set, else the operator's default, else None.
    One GetItem (as before); Secrets Manager only when the tenant has none, and at most once per process."""
    item = store.get_oauth_app(tenant_id, partner_id)
    if item is not None:
        return tenant_app(item)
    return operator_app(partner_id)


def operator_app(partner_id: int) -> OAuthApp | None:
    """The operator's default app for this partner, or None (also when the feature is off)."""
    secret_id = settings().default_oauth_apps_secret
    if not secret_id:
        return None
    return _operator_apps(secret_id).get(partner_id)


_loaded: dict[str, Mapping[int, OAuthApp]] = {}
_lock = threading.Lock()  # the local stack runs handlers on threads: still one read per process


def _operator_apps(secret_id: str) -> Mapping[int, OAuthApp]:
    apps = _loaded.get(secret_id)
    if apps is None:
        with _lock:
            apps = _loaded.get(secret_id)
            if apps is None:
                apps = _loaded[secret_id] = _load(secret_id)
    return apps


def reset() -> None:
    """Forget the operator's apps read so far (tests; a new process does the same)."""
    with _lock:
        _loaded.clear()


def _load(secret_id: str) -> Mapping[int, OAuthApp]:
    try:
        answer = aws.client("secretsmanager").get_secret_value(SecretId=secret_id)
    except (ClientError, BotoCoreError) as exc:
        code = exc.response.get("Error", {}).get("Code") if isinstance(exc, ClientError) else type(exc).__name__
        logger.error("operator OAuth apps: the secret could not be read", extra={"error": code})
        raise errors.ServiceUnavailable() from exc
    document, problems = _parse(answer.get("SecretString"))
    if problems:
        logger.error(
            "operator OAuth apps: GRANTLINK_DEFAULT_OAUTH_APPS_SECRET is not a valid configuration",
            extra={"problems": problems[:20]},
        )
        raise errors.ServiceUnavailable()  # outside any `except`: no exception holding the document is chained
    created = answer.get("CreatedDate")
    updated = clock.iso(created) if isinstance(created, datetime) else clock.iso(clock.now())
    logger.info("operator OAuth apps loaded", extra={"partners": sorted(int(key) for key in document)})
    return {
        int(key): OAuthApp(
            source="operator",
            partner_id=int(key),
            client_id=entry.clientId,
            scopes=entry.scopes,
            date_updated=updated,
            operator_secret=entry.clientSecret,
        )
        for key, entry in document.items()
    }


def _parse(text: Any) -> tuple[dict[str, OAuthAppRequest], list[str]]:
    """The document and what is wrong with it: where and which rule, never a value."""
    if not isinstance(text, str):
        return {}, ["the secret has no SecretString (a JSON object is expected)"]
    try:
        document = _DOCUMENT.validate_json(text)
    except ValidationError as exc:
        return {}, [f"{_where(e['loc'])}: {e['type']}" for e in exc.errors(include_input=False, include_url=False)]
    problems = []
    for key in document:
        provider = providers.find(int(key))
        if provider is None:
            problems.append(f"{key}: no such partner")
        elif not provider.uses_oauth_app:
            problems.append(f"{key}: {provider.slug} does not use OAuth")
        elif problem := secret_problem(provider, document[key].clientSecret.get_secret_value()):
            problems.append(f"{key}.clientSecret: {problem}")
    return document, problems


def secret_problem(provider: providers.Provider, secret: str) -> str | None:
    """What is wrong with an app's secret for this partner, else None: an RSA-SHA1 OAuth 1.0a partner's consumer
    secret is the consumer's PEM RSA private key, which must load (the words never quote the value)."""
    if provider.oauth1 is None or provider.oauth1.signature_method != "RSA-SHA1":
        return None
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    try:
        key = load_pem_private_key(secret.encode(), password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        return "is not a PEM RSA private key (unencrypted), as RSA-SHA1 partners need"
    if not isinstance(key, rsa.RSAPrivateKey) or key.key_size < 2048:
        return "is not an RSA private key of at least 2048 bits, as RSA-SHA1 partners need"
    return None


def _where(loc: tuple[int | str, ...]) -> str:
    """A validation error's location, naming only partner ids, our field names and list positions: a mistyped
    document must not put a piece of a secret into the log through its keys."""
    parts = []
    for part in loc:
        text = str(part)
        known = isinstance(part, int) or text in _FIELDS or text == "[key]" or (text.isdigit() and len(text) <= 10)
        parts.append(text if known else "?")
    return ".".join(parts) or "(document)"
