"""Audit entries: who did what to a credential, and when. Never a secret.

Stored beside the credential (`CRED#<id>` / `AUDIT#<time>#<n>`) with a TTL for retention, and written in
the same transaction as the change they describe where there is one.
"""

from __future__ import annotations

import itertools
import secrets
from datetime import timedelta
from typing import Any

from grantlink import clock
from grantlink.config import settings
from grantlink.models import AuditEntryOut

CUSTOMER = "customer"  # the end customer, through the connect page
_sequence = itertools.count()  # orders entries written within one clock tick by this process


def entry(credential_id: str, action: str, actor: str, **details: Any) -> dict[str, Any]:
    """The item for one audit entry (put it in the change's own transaction)."""
    now = clock.now()
    at = clock.iso(now)
    return {
        "pk": f"CRED#{credential_id}",
        "sk": f"AUDIT#{now.strftime('%Y-%m-%dT%H:%M:%S.%fZ')}#{next(_sequence):010d}{secrets.token_hex(2)}",
        "type": "audit",
        "at": at,
        "action": action,
        "actor": actor,
        "details": {k: v for k, v in details.items() if v is not None},
        "ttl": int((now + timedelta(days=settings().audit_retention_days)).timestamp()),
    }


def to_out(item: dict[str, Any]) -> AuditEntryOut:
    return AuditEntryOut(at=item["at"], action=item["action"], actor=item["actor"], details=item.get("details", {}))
