"""Tenants and their API keys.

A key is `glk_` + 32 random bytes (URL-safe base64). Only its SHA-256 is stored, under `APIKEY#<hash>`, with
the tenant id, scopes and a short public key id (`key_` + 12 random hex digits) that names the key in the audit
trail; the raw key is shown once, when it is created. A tenant may hold several keys (`add_key`).
"""

from __future__ import annotations

import hashlib
import re
import secrets
from urllib.parse import urlsplit

from grantlink import clock, errors
from grantlink.models import Caller
from grantlink.store import ConditionFailed, Store
from grantlink.store import default as default_store

KEY_PREFIX = "glk_"
KEY_ID_PREFIX = "key_"
KEY_SHAPE = re.compile(r"^glk_[A-Za-z0-9_\-]{43}$")
SCOPES = ("links:write", "credentials:read", "credentials:write", "credentials:secret", "credentials:proxy")
# Keys made before `credentials:proxy` existed: one holding every scope of its time was a full-access key, and
# still is (it gets the proxy too); a key restricted to some of them stays restricted.
FULL_ACCESS_BEFORE_PROXY = frozenset(SCOPES[:4])
TENANT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._\-]{0,63}$")


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key_id() -> str:
    """A key's public name: random, so it says nothing about the key itself."""
    return KEY_ID_PREFIX + secrets.token_hex(6)


def key_id_of(item: dict, key_hash: str) -> str:
    """The key id stored with the key; for keys made before key ids existed, a prefix of the key's hash (48 of
    its 256 bits: it names the key without helping anyone find it)."""
    return str(item.get("keyId") or KEY_ID_PREFIX + key_hash[:12])


def parse_scopes(text: str) -> tuple[str, ...]:
    """Scopes from a comma- or space-separated list; unknown ones are an error, not silently dropped."""
    scopes = tuple(dict.fromkeys(s for s in re.split(r"[,\s]+", text.strip()) if s))
    unknown = [s for s in scopes if s not in SCOPES]
    if unknown:
        raise errors.BadRequest(f"Unknown scope(s): {', '.join(unknown)}. Known: {', '.join(SCOPES)}.")
    return scopes or SCOPES


def create_tenant(
    name: str, scopes: tuple[str, ...] = SCOPES, redirect_origins: tuple[str, ...] = (), store: Store | None = None
) -> tuple[str, str]:
    """Create a tenant and its first API key; returns (tenant id, raw key). The key is not stored."""
    if not TENANT_NAME.match(name):
        raise errors.BadRequest("A tenant name is 1–64 letters, digits, spaces, dots, dashes or underscores.")
    origins = [normalize_origin(o) for o in redirect_origins]
    tenant_id = "tnt_" + secrets.token_hex(8)
    key, item = _new_key(tenant_id, scopes, f"{name} key")
    (store or default_store()).put_tenant_with_key(
        {
            "tenantId": tenant_id,
            "name": name,
            "createdAt": item["createdAt"],
            "type": "tenant",
            "redirectOrigins": origins,
        },
        hash_key(key),
        item,
    )
    return tenant_id, key


def add_key(tenant_id: str, scopes: tuple[str, ...] = SCOPES, store: Store | None = None) -> tuple[str, str]:
    """Another API key for an existing tenant (say, one per backend service, or to rotate keys); returns (key id,
    raw key). The key is not stored; the audit trail names its key id."""
    key, item = _new_key(tenant_id, scopes, "")
    try:
        (store or default_store()).put_api_key(tenant_id, hash_key(key), item)
    except ConditionFailed as exc:
        raise errors.NotFound(f"No tenant {tenant_id}.") from exc
    return item["keyId"], key


def _new_key(tenant_id: str, scopes: tuple[str, ...], name: str) -> tuple[str, dict]:
    key_id = new_key_id()
    item = {"tenantId": tenant_id, "keyId": key_id, "scopes": list(scopes), "name": name or key_id,
            "createdAt": clock.iso(clock.now()), "type": "apikey"}  # fmt: skip
    return KEY_PREFIX + secrets.token_urlsafe(32), item


def authenticate(authorization: str | None, store: Store | None = None) -> Caller | None:
    """The caller behind an `Authorization: Bearer glk_…` header, or None when the key is unknown."""
    scheme, _, key = (authorization or "").strip().partition(" ")
    key = key.strip()
    if scheme.lower() != "bearer" or not KEY_SHAPE.match(key):
        return None
    key_hash = hash_key(key)
    item = (store or default_store()).get_api_key(key_hash)
    if not item:
        return None
    scopes = effective_scopes(item.get("scopes", []))
    return Caller(tenant_id=item["tenantId"], scopes=scopes, key_id=key_id_of(item, key_hash))


def effective_scopes(stored: list[str]) -> frozenset[str]:
    """A key's stored scopes, plus `credentials:proxy` for a full-access key made before that scope existed."""
    scopes = frozenset(stored)
    return scopes | {"credentials:proxy"} if scopes >= FULL_ACCESS_BEFORE_PROXY else scopes


def normalize_origin(url: str) -> str:
    """`scheme://host[:port]` of an https URL (http only for loopback), or BadRequest. No user info, no
    backslashes: the usual ways to make one origin look like another are refused outright."""
    parts = urlsplit(url.strip())
    try:
        port = parts.port  # urllib raises on a port that is not a number from 0 to 65535
    except ValueError as exc:
        raise errors.BadRequest(f"{url!r} has an invalid port.") from exc
    loopback = parts.hostname in ("127.0.0.1", "localhost")
    if (
        parts.scheme not in ("https", "http")
        or (parts.scheme == "http" and not loopback)
        or not parts.hostname
        or parts.username is not None
        or "\\" in url
    ):
        raise errors.BadRequest(f"{url!r} is not an https URL (http is allowed for 127.0.0.1 and localhost only).")
    default_port = {"https": 443, "http": 80}[parts.scheme]
    shown_port = f":{port}" if port and port != default_port else ""
    return f"{parts.scheme}://{parts.hostname.lower()}{shown_port}"


def check_redirect(tenant_id: str, url: str, store: Store | None = None) -> str:
    """`url` if its origin is on the tenant's allow-list; otherwise a 422 (never an open redirect, O9)."""
    try:
        origin = normalize_origin(url)
    except errors.BadRequest as exc:
        raise errors.UnprocessableEntity(exc.message, code="redirect_not_allowed") from exc
    tenant = (store or default_store()).get_tenant(tenant_id) or {}
    if origin not in tenant.get("redirectOrigins", []):
        raise errors.UnprocessableEntity(
            f"{origin} is not on this tenant's redirect allow-list.", code="redirect_not_allowed"
        )
    return url


def set_redirect_origins(tenant_id: str, origins: tuple[str, ...], store: Store | None = None) -> list[str]:
    """Replace a tenant's redirect allow-list (origins such as https://app.example.com)."""
    normalized = [normalize_origin(o) for o in origins]
    try:
        (store or default_store()).set_tenant_attribute(tenant_id, "redirectOrigins", normalized)
    except ConditionFailed as exc:
        raise errors.NotFound(f"No tenant {tenant_id}.") from exc
    return normalized
