"""Tenants and their API keys.

A key is `glk_` + 32 random bytes (URL-safe base64). Only its SHA-256 is stored, under `APIKEY#<hash>`, with
the tenant id and scopes; the raw key is shown once, when it is created.
"""

from __future__ import annotations

import hashlib
import re
import secrets

from grantlink import clock, errors
from grantlink.models import Caller
from grantlink.store import Store
from grantlink.store import default as default_store

KEY_PREFIX = "glk_"
KEY_SHAPE = re.compile(r"^glk_[A-Za-z0-9_\-]{43}$")
SCOPES = ("links:write", "credentials:read", "credentials:write", "credentials:secret")
TENANT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._\-]{0,63}$")


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def parse_scopes(text: str) -> tuple[str, ...]:
    """Scopes from a comma- or space-separated list; unknown ones are an error, not silently dropped."""
    scopes = tuple(dict.fromkeys(s for s in re.split(r"[,\s]+", text.strip()) if s))
    unknown = [s for s in scopes if s not in SCOPES]
    if unknown:
        raise errors.BadRequest(f"Unknown scope(s): {', '.join(unknown)}. Known: {', '.join(SCOPES)}.")
    return scopes or SCOPES


def create_tenant(name: str, scopes: tuple[str, ...] = SCOPES, store: Store | None = None) -> tuple[str, str]:
    """Create a tenant and its first API key; returns (tenant id, raw key). The key is not stored."""
    if not TENANT_NAME.match(name):
        raise errors.BadRequest("A tenant name is 1–64 letters, digits, spaces, dots, dashes or underscores.")
    tenant_id = "tnt_" + secrets.token_hex(8)
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    created = clock.iso(clock.now())
    (store or default_store()).put_tenant_with_key(
        {"tenantId": tenant_id, "name": name, "createdAt": created, "type": "tenant"},
        hash_key(key),
        {"tenantId": tenant_id, "scopes": list(scopes), "name": f"{name} key", "createdAt": created, "type": "apikey"},
    )
    return tenant_id, key


def authenticate(authorization: str | None, store: Store | None = None) -> Caller | None:
    """The caller behind an `Authorization: Bearer glk_…` header, or None when the key is unknown."""
    scheme, _, key = (authorization or "").strip().partition(" ")
    key = key.strip()
    if scheme.lower() != "bearer" or not KEY_SHAPE.match(key):
        return None
    item = (store or default_store()).get_api_key(hash_key(key))
    if not item:
        return None
    return Caller(tenant_id=item["tenantId"], scopes=frozenset(item.get("scopes", [])))
