"""Domain events on the EventBridge bus: what a tenant routes to its own systems (never a secret).

Every event has `source: "grantlink"`, a `detail-type` such as `credential.test_failed`, and a detail with a
unique `eventId` (consumers de-duplicate on it), the `tenantId`, the time, and the ids and reasons of the event.
Events about a link or a credential also carry its `endUser` (or null) and `tags` (an object, maybe empty).
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from grantlink import aws, clock
from grantlink.config import settings
from grantlink.observability import logger, metrics

SOURCE = "grantlink"
KINDS = (
    "share.completed",
    "share.expired",
    "share.waiting_for_oauth",
    "share.revoked",
    "credential.refreshed",
    "credential.recovered",
    "credential.refresh_failed",
    "credential.reauthorization_required",
    "credential.expiring",
    "credential.test_failed",
    "credential.deleted",
    "credential.disabled",
    "oauth_app.invalid",
)


def detail(kind: str, tenant_id: str, **fields: Any) -> dict[str, Any]:
    if kind not in KINDS:
        raise ValueError(f"unknown event kind {kind!r}")
    return {"eventId": str(uuid.uuid4()), "type": kind, "tenantId": tenant_id, "time": clock.iso(clock.now()), **fields}


def emit(kind: str, tenant_id: str, **fields: Any) -> dict[str, Any]:
    """Put one event on the bus. The change it reports is already stored, so a failure here is logged and
    counted (metric EventsNotDelivered) rather than turned into an error for a caller whose work succeeded."""
    body = detail(kind, tenant_id, **fields)
    deliver(body)
    return body


def deliver(body: dict[str, Any]) -> bool:
    """Put one event (a `detail`) on the bus; False, logged and counted, if the bus did not take it."""
    kind = body["type"]
    entry = {"Source": SOURCE, "DetailType": kind, "Detail": json.dumps(body), "EventBusName": settings().event_bus}
    try:
        answer = aws.client("events").put_events(Entries=[entry])
        failed = answer.get("FailedEntryCount", 0)
    except (ClientError, BotoCoreError):
        failed = 1
    if failed:
        logger.error("event not delivered", extra={"kind": kind, "event_id": body["eventId"]})
        metrics.add_metric(name="EventsNotDelivered", unit="Count", value=1)
    return not failed
