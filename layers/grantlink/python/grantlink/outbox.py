"""Events the tenant must get even if the bus fails right after the change they report (use case).

The change and an outbox record are written in one transaction; the event goes to the bus right after and the
record is deleted. If the bus did not take it (or the function died in between), the record sits in the sparse
due index, so the sweep queues it and the worker sends it again — with the same `eventId`, so consumers that
de-duplicate see it once. An outbox record never holds a secret: a reauthorize link's raw token is not stored
(only its hash is, on the link), so a resend issues the link a fresh token first.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from grantlink import clock, events
from grantlink.models import Caller, LinkStatus, due_keys, link_url
from grantlink.observability import logger
from grantlink.store import Store, serialize

RETRY_AFTER_SECONDS = 120  # the sweep runs every 5 minutes: a failed send is retried by its next run
KEEP_DAYS = 7


def outbox_key(event_id: str) -> dict[str, str]:
    return {"pk": f"OUTBOX#{event_id}", "sk": "OUTBOX"}


def put(body: dict[str, Any], link_id: str | None = None) -> dict[str, Any]:
    """The transaction action that records `body` (an `events.detail`) as owed to the tenant."""
    now = clock.now()
    item = {
        **outbox_key(body["eventId"]),
        "type": "outbox",
        "tenantId": body["tenantId"],
        "detail": json.dumps(body),
        "linkId": link_id,
        "ttl": int((now + timedelta(days=KEEP_DAYS)).timestamp()),
        **due_keys(body["eventId"], now + timedelta(seconds=RETRY_AFTER_SECONDS)),
    }
    # Protects: an event id is recorded once.
    return {"Put": {"Item": serialize(item), "ConditionExpression": "attribute_not_exists(pk)"}}


def send(body: dict[str, Any], store: Store) -> bool:
    """Put the recorded event on the bus and, once it is there, forget the record."""
    if not events.deliver(body):
        return False
    try:
        store.transact({"Delete": {"Key": serialize(outbox_key(body["eventId"]))}})
    except Exception:  # noqa: BLE001 - the event went out; a record left behind is sent again, same eventId
        logger.warning("outbox record not deleted", extra={"event_id": body["eventId"]})
    return True


def resend(event_id: str, store: Store) -> str:
    """The worker's part: send an owed event again (a reauthorize link gets a fresh token first)."""
    from grantlink import links

    item = store.get_item(outbox_key(event_id))
    if item is None:
        return "skipped"  # sent meanwhile
    body = json.loads(item["detail"])
    link = store.get_link(item["linkId"]) if item.get("linkId") else None
    if link is not None and link.status == LinkStatus.WAITING and not link.is_expired():
        try:
            link, token = links.regenerate_link(Caller(link.tenant_id), link.id, store)
            body.update(reauthorizeLinkId=link.id, reauthorizeLink=link_url(links.connect_base(), link.id, token))
            body.update(reauthorizeLinkExpiresAt=clock.iso(link.expires_at))
        except Exception as exc:  # noqa: BLE001 - the event still goes out, without a link
            logger.warning("reauthorize link not renewed", extra={"event_id": event_id, "error": type(exc).__name__})
    return "event_sent" if send(body, store) else "event_pending"
