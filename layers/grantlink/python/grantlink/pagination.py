"""Opaque, tamper-evident list cursors.

A cursor is base64url(JSON{k: LastEvaluatedKey, p: page}) plus an HMAC-SHA256 over it and the listing's
scope (tenant, collection, filters), so a cursor edited by hand, or taken to another tenant or filter, is
refused with a 400. The HMAC key is a Secrets Manager secret (created by the template), read once per process.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from functools import cache
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from grantlink import aws, errors
from grantlink.config import settings

MAX_CURSOR_LENGTH = 2048


@cache
def _signing_key() -> bytes:
    try:
        secret = aws.client("secretsmanager").get_secret_value(SecretId=settings().cursor_secret_arn)
    except (ClientError, BotoCoreError) as exc:
        raise errors.ServiceUnavailable() from exc
    return hashlib.sha256(secret["SecretString"].encode()).digest()


def reset() -> None:
    _signing_key.cache_clear()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(scope: str, payload: str) -> str:
    return _b64(hmac.new(_signing_key(), f"{scope}\n{payload}".encode(), hashlib.sha256).digest())


def encode(last_key: dict[str, Any] | None, page: int, scope: str) -> str | None:
    """The cursor for the page after `page`, or None when there is no next page."""
    if not last_key:
        return None
    payload = _b64(json.dumps({"k": last_key, "p": page + 1}, separators=(",", ":"), sort_keys=True).encode())
    return f"{payload}.{_mac(scope, payload)}"


def decode(cursor: str | None, scope: str) -> tuple[dict[str, Any] | None, int]:
    """(ExclusiveStartKey, page number) for a cursor; (None, 1) for the first page."""
    if not cursor:
        return None, 1
    invalid = errors.BadRequest("The cursor is not valid for this listing.", code="invalid_cursor")
    payload, _, mac = cursor.partition(".")
    if len(cursor) > MAX_CURSOR_LENGTH or not mac or not hmac.compare_digest(mac, _mac(scope, payload)):
        raise invalid
    try:
        data = json.loads(_unb64(payload))
        key, page = data["k"], int(data["p"])
    except (ValueError, KeyError, TypeError) as exc:
        raise invalid from exc
    if not isinstance(key, dict) or page < 2:
        raise invalid
    return key, page
