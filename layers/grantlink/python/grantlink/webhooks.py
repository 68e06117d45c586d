"""Webhooks (use cases): a tenant's endpoint, its signing secrets, and the delivery of every domain event to it.

Every event on the stack's bus also reaches the tenant's endpoint (an EventBridge rule feeds the webhook queue;
`on_event` runs for each), signed the Standard Webhooks way: `webhook-id` (the event's id, the same on every
retry), `webhook-timestamp` (Unix seconds) and `webhook-signature: v1,<base64 HMAC-SHA256(key, id.timestamp.body)>`
where the key is the base64 part of the `whsec_` secret. During a rotation's grace period both secrets sign
(`v1,<new> v1,<old>`).

Items (one endpoint per tenant; one delivery per event):
- `TENANT#<t>` / `WEBHOOK`: url, createdAt, the sealed secret (`grantlink.crypto`, purpose `webhook`, bound to
  the secret's own id) and the previous one until `previousUntil`; the circuit breaker's consecutive `failures`
  and `openUntil`.
- `DELIVERY#<eventId>` / `DELIVERY`: status (pending, delivered, failed), attempts and their history, the next
  attempt (`dueAt` in the sparse due index, so retries span 24 h and more), the sealed body (an event may carry
  a reauthorize link), the lease of the attempt in flight. Listed per tenant through gsi1, newest first.
- `DELIVERY#<eventId>.link` / `DELIVERY`: the same event to the link's own `webhookUrl` (`url` on the item), when
  the event's `linkId` names a link that has one. Same `webhook-id` (the event's id), same tenant secret; the
  tenant endpoint's circuit breaker neither holds nor counts it.

A 2xx is delivered. Network errors, timeouts, 429 and 5xx are retried on `SCHEDULE` until `GIVE_UP_SECONDS` have
passed since the first attempt; then the delivery fails and the event goes to the webhook dead-letter queue.
Any other answer is final (failed, no retry). After `BREAKER_THRESHOLD` failures in a row the endpoint is open for
`BREAKER_COOLDOWN_SECONDS`: its deliveries wait without a call, so one dead endpoint slows nobody else.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import uuid
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any, Literal

from pydantic import Field

from grantlink import aws, clock, crypto, errors, pagination
from grantlink.config import settings
from grantlink.models import ApiModel, Caller, CursorMeta, due_keys, listing_sk
from grantlink.observability import logger, metrics
from grantlink.store import ConditionFailed, Store, serialize, update
from grantlink.store import default as default_store

SECRET_PREFIX = "whsec_"  # noqa: S105 - the prefix, not a secret
PURPOSE = "webhook"
SCHEDULE = (30, 120, 600, 1800, 3600, 7200, 14400, 28800)  # seconds after each failed attempt; the last repeats
GIVE_UP_SECONDS = 86400  # retry until at least this long after the first attempt
BREAKER_THRESHOLD = 5
BREAKER_COOLDOWN_SECONDS = 300
DEFAULT_GRACE_SECONDS = 86400
LEASE_SECONDS = 60  # longer than one attempt (the call's 10 s deadline and the writes around it)
CALL_DEADLINE_SECONDS = 10.0
HISTORY = 20  # attempts kept on a delivery, newest last
RETENTION_DAYS = 30
Status = Literal["pending", "delivered", "failed"]


# --- API models ---------------------------------------------------------------------------------------------


class WebhookRequest(ApiModel):
    url: str = Field(min_length=9, max_length=2048, pattern=r"^[\x21-\x7e]+$", description="An https URL.")


class RotateRequest(ApiModel):
    graceSeconds: int = Field(
        DEFAULT_GRACE_SECONDS, ge=0, le=7 * 86400, description="How long the previous secret keeps signing."
    )


class WebhookOut(ApiModel):
    url: str
    createdAt: str
    secret: str | None = Field(
        None, description="The signing secret (`whsec_…`): only in the answer that created it, never again."
    )
    previousSecretUntil: str | None = Field(None, description="Until then the previous secret signs too.")


class WebhookEnvelope(ApiModel):
    success: Literal[True] = True
    data: WebhookOut


class AttemptOut(ApiModel):
    at: str
    status: int | None = Field(None, description="The receiver's HTTP status, when it answered.")
    error: str | None = Field(None, description="Why there was no answer (`connect`, `read_timeout`, …).")


class DeliveryOut(ApiModel):
    id: str = Field(description="The event's `eventId`; `<eventId>.link` for its copy to a link's `webhookUrl`.")
    eventId: str = Field(description="Sent as `webhook-id`.")
    url: str | None = Field(None, description="A link's `webhookUrl` it went to; null: the tenant's endpoint.")
    type: str
    status: Status
    attempts: int
    lastStatus: int | None
    lastError: str | None
    nextAttemptAt: str | None
    createdAt: str
    deliveredAt: str | None
    history: list[AttemptOut]


class DeliveryEnvelope(ApiModel):
    success: Literal[True] = True
    data: DeliveryOut


class DeliveryListEnvelope(ApiModel):
    success: Literal[True] = True
    data: list[DeliveryOut]
    meta: CursorMeta


# --- the endpoint ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Endpoint:
    tenant_id: str
    url: str
    created_at: str
    secret: bytes
    secret_id: str
    version: int
    previous: bytes | None = None
    previous_id: str | None = None
    previous_until: str | None = None
    failures: int = 0
    open_until: str | None = None

    def out(self, secret: str | None = None) -> WebhookOut:
        now = clock.iso(clock.now())
        grace = self.previous_until if self.previous_until and self.previous_until > now else None
        return WebhookOut(url=self.url, createdAt=self.created_at, secret=secret, previousSecretUntil=grace)


def endpoint_key(tenant_id: str) -> dict[str, str]:
    return {"pk": f"TENANT#{tenant_id}", "sk": "WEBHOOK"}


def _endpoint_from(item: dict[str, Any]) -> Endpoint:
    return Endpoint(
        tenant_id=item["tenantId"],
        url=item["url"],
        created_at=item["createdAt"],
        secret=bytes(item["secret"]),
        secret_id=item["secretId"],
        version=int(item["version"]),
        previous=bytes(item["previousSecret"]) if item.get("previousSecret") else None,
        previous_id=item.get("previousSecretId"),
        previous_until=item.get("previousUntil"),
        failures=int(item.get("failures", 0)),
        open_until=item.get("openUntil"),
    )


def find_endpoint(tenant_id: str, store: Store | None = None) -> Endpoint | None:
    item = (store or default_store()).get_item(endpoint_key(tenant_id))
    return _endpoint_from(item) if item else None


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def _seal(tenant_id: str, record_id: str, plaintext: bytes) -> bytes:
    return crypto.default().encrypt(plaintext, crypto.context_for(tenant_id, record_id, PURPOSE))


def _open(tenant_id: str, record_id: str, ciphertext: bytes) -> bytes:
    return crypto.default().decrypt(ciphertext, crypto.context_for(tenant_id, record_id, PURPOSE))


def check_url(url: str) -> None:
    """The outbound door's rules, at registration: https (http only where private targets are allowed) and no
    private, loopback or otherwise special address. Checked again at every delivery."""
    from grantlink import outbound

    try:
        outbound.check(url, outbound.limits())
    except outbound.OutboundError as exc:
        message = "The webhook URL must be https and resolve to public addresses only."
        raise errors.BadRequest(message, code="webhook_url_not_allowed") from exc


def check_link_url(tenant_id: str, url: str, store: Store | None = None) -> str:
    """A link's own `webhookUrl`, checked like its `redirectUrl` (the origin on the tenant's redirect allow-list)
    and by the outbound door's rules; the tenant's endpoint must exist, since its secret signs the link's
    deliveries. Every refusal is a 422."""
    from grantlink import tenants

    try:
        tenants.check_redirect(tenant_id, url, store)
        check_url(url)
    except (errors.UnprocessableEntity, errors.BadRequest) as exc:
        raise errors.UnprocessableEntity(f"webhookUrl: {exc.message}", code="webhook_url_not_allowed") from exc
    if find_endpoint(tenant_id, store) is None:
        message = "A link's webhookUrl is signed with the tenant's webhook secret: register one first (PUT /webhooks)."
        raise errors.UnprocessableEntity(message, code="webhook_not_configured")
    return url


def put_endpoint(caller: Caller, url: str, store: Store | None = None) -> tuple[WebhookOut, bool]:
    """Register the tenant's endpoint (created: a new secret, shown in this answer only) or change its URL (the
    secret stays, and is not shown). Returns the endpoint and whether it was created."""
    store = store or default_store()
    check_url(url)
    current = find_endpoint(caller.tenant_id, store)
    if current is not None:
        action = update(endpoint_key(caller.tenant_id), {"url": url, "version": current.version + 1}, (),
                        "#version = :v", v=current.version)  # fmt: skip
        # Protects: a concurrent rotation or URL change is not overwritten (optimistic, by version).
        _write(store, action)
        return WebhookOut(url=url, createdAt=current.created_at, secret=None, previousSecretUntil=None), False
    secret, secret_id = new_secret(), uuid.uuid4().hex
    item = {
        **endpoint_key(caller.tenant_id), "type": "webhook", "tenantId": caller.tenant_id, "url": url,
        "createdAt": clock.iso(clock.now()), "secret": _seal(caller.tenant_id, secret_id, secret.encode()),
        "secretId": secret_id, "version": 1, "failures": 0,
    }  # fmt: skip
    # Protects: two concurrent first PUTs make one endpoint (the loser's secret would never sign anything).
    _write(store, {"Put": {"Item": serialize(item), "ConditionExpression": "attribute_not_exists(pk)"}})
    return WebhookOut(url=url, createdAt=str(item["createdAt"]), secret=secret, previousSecretUntil=None), True


def get_endpoint(caller: Caller, store: Store | None = None) -> WebhookOut:
    endpoint = find_endpoint(caller.tenant_id, store)
    if endpoint is None:
        raise errors.NotFound("No webhook is registered.")
    return endpoint.out()


def delete_endpoint(caller: Caller, store: Store | None = None) -> None:
    """Stop sending webhooks. Deliveries still pending find no endpoint and end as failed."""
    store = store or default_store()
    if find_endpoint(caller.tenant_id, store) is None:
        raise errors.NotFound("No webhook is registered.")
    store.transact({"Delete": {"Key": serialize(endpoint_key(caller.tenant_id))}})


def rotate_secret(caller: Caller, grace_seconds: int, store: Store | None = None) -> WebhookOut:
    """A new signing secret, shown in this answer only; the current one keeps signing beside it for
    `grace_seconds` (both signatures are sent), so receivers can switch without missing a delivery."""
    store = store or default_store()
    current = find_endpoint(caller.tenant_id, store)
    if current is None:
        raise errors.NotFound("No webhook is registered.")
    secret, secret_id = new_secret(), uuid.uuid4().hex
    until = clock.iso(clock.now() + timedelta(seconds=grace_seconds))
    sets = {
        "secret": _seal(caller.tenant_id, secret_id, secret.encode()), "secretId": secret_id,
        "previousSecret": current.secret, "previousSecretId": current.secret_id, "previousUntil": until,
        "version": current.version + 1,
    }  # fmt: skip
    # Protects: two rotations at once cannot both keep the same "previous" secret and lose the other's new one.
    _write(store, update(endpoint_key(caller.tenant_id), sets, (), "#version = :v", v=current.version))
    return WebhookOut(url=current.url, createdAt=current.created_at, secret=secret, previousSecretUntil=until)


def _write(store: Store, action: dict[str, Any]) -> None:
    try:
        store.transact(action)
    except ConditionFailed as exc:
        raise errors.Conflict("The webhook changed meanwhile; try again.", code="webhook_changed") from exc


# --- signing --------------------------------------------------------------------------------------------------


def sign(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """One Standard Webhooks signature: `v1,` + base64 HMAC-SHA256 of `id.timestamp.body` under the secret's key."""
    key = base64.b64decode(secret.removeprefix(SECRET_PREFIX))
    mac = hmac.new(key, f"{message_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def signing_secrets(endpoint: Endpoint) -> list[str]:
    """The secrets that sign now: the current one, and the previous one during its grace period."""
    found = [_open(endpoint.tenant_id, endpoint.secret_id, endpoint.secret).decode()]
    in_grace = endpoint.previous_until and endpoint.previous_until > clock.iso(clock.now())
    if in_grace and endpoint.previous and endpoint.previous_id:
        found.append(_open(endpoint.tenant_id, endpoint.previous_id, endpoint.previous).decode())
    return found


def headers_for(endpoint: Endpoint, message_id: str, body: bytes) -> dict[str, str]:
    timestamp = int(clock.now().timestamp())
    signature = " ".join(sign(s, message_id, timestamp, body) for s in signing_secrets(endpoint))
    return {
        "content-type": "application/json",
        "user-agent": "grantlink-webhooks",
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature,
    }


# --- deliveries: items ----------------------------------------------------------------------------------------


def delivery_key(delivery_id: str) -> dict[str, str]:
    return {"pk": f"DELIVERY#{delivery_id}", "sk": "DELIVERY"}


def tenant_deliveries_pk(tenant_id: str) -> str:
    return f"TENANT#{tenant_id}#DELIVERY"


def delivery_out(item: dict[str, Any]) -> DeliveryOut:
    history = [AttemptOut(**a) for a in item.get("history", [])]
    return DeliveryOut(
        id=item["id"], eventId=item.get("eventId", item["id"]), url=item.get("url"), type=item["eventType"],
        status=item["status"],
        attempts=int(item.get("attempts", 0)), lastStatus=history[-1].status if history else None,
        lastError=history[-1].error if history else None,
        nextAttemptAt=item.get("dueAt") if item["status"] == "pending" else None,
        createdAt=item["createdAt"], deliveredAt=item.get("deliveredAt"), history=history,
    )  # fmt: skip


def _new_delivery(detail: dict[str, Any], body: bytes, owner: str, url: str | None = None) -> dict[str, Any]:
    now = clock.now().replace(microsecond=0)
    tenant_id, event_id = str(detail["tenantId"]), str(detail["eventId"])
    delivery_id = link_delivery_id(event_id) if url else event_id
    return {
        **delivery_key(delivery_id), "type": "webhook_delivery", "id": delivery_id, "tenantId": tenant_id,
        "eventId": event_id, **({"url": url} if url else {}),
        "eventType": str(detail.get("type", "")), "status": "pending", "attempts": 0, "history": [],
        "createdAt": clock.iso(now), "startedAt": clock.iso(now),
        "body": _seal(tenant_id, delivery_id, body), "leaseOwner": owner,
        "leaseUntil": clock.iso(now + timedelta(seconds=LEASE_SECONDS)),
        "gsi1pk": tenant_deliveries_pk(tenant_id), "gsi1sk": listing_sk(now, delivery_id),
        "ttl": int((now + timedelta(days=RETENTION_DAYS)).timestamp()),
        # A backstop: if this attempt never finishes (the function dies), the sweep tries again after the lease.
        **due_keys(delivery_id, now + timedelta(seconds=LEASE_SECONDS)),
    }  # fmt: skip


def _claim(store: Store, delivery_id: str, owner: str) -> dict[str, Any] | None:
    """The pending delivery, once this caller holds its attempt lease; None if it is not due, done, or taken."""
    now = clock.now()
    try:
        answer = store._call(
            "update_item", TableName=store.table, Key=serialize(delivery_key(delivery_id)),
            UpdateExpression="SET leaseOwner = :o, leaseUntil = :u",
            # Protects: one attempt at a time, only of a pending delivery whose time has come; a lease whose holder
            # died expires. A redelivered queue message for a delivered event therefore does nothing.
            ConditionExpression="#s = :pending AND dueAt <= :now AND (attribute_not_exists(leaseUntil) OR "
            "leaseUntil < :now)",
            ExpressionAttributeNames={"#s": "status"},
            ExpressionAttributeValues=serialize({
                ":o": owner, ":u": clock.iso(now + timedelta(seconds=LEASE_SECONDS)), ":pending": "pending",
                ":now": clock.iso(now),
            }),
            ReturnValues="ALL_NEW",
        )  # fmt: skip
    except ConditionFailed:
        return None
    from grantlink.store import deserialize

    return deserialize(answer["Attributes"])


def _record(store: Store, item: dict[str, Any], owner: str, sets: dict[str, Any], removes: tuple[str, ...]) -> None:
    """Write an attempt's outcome and give the lease back; only while this caller still holds the lease."""
    action = update(delivery_key(item["id"]), sets, ("leaseOwner", "leaseUntil", *removes), "leaseOwner = :o",
                    o=owner)  # fmt: skip
    try:
        # Protects: an attempt whose lease expired and was taken over does not overwrite the newer attempt's outcome.
        store.transact(action)
    except ConditionFailed:
        logger.warning("webhook lease lost before its outcome was written", extra={"delivery": item["id"]})


# --- deliveries: attempts -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    status: int | None = None
    error: str | None = None

    @property
    def delivered(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    @property
    def retryable(self) -> bool:
        """Network errors, timeouts, 429 and 5xx; not a URL the outbound guard refuses (that will not change)."""
        if self.status is None:
            return self.error != "not_allowed"
        return self.status == 429 or self.status >= 500

    def entry(self) -> dict[str, Any]:
        found: dict[str, Any] = {"at": clock.iso(clock.now())}
        return found | ({"status": self.status} if self.status is not None else {"error": self.error})


def on_event(detail: dict[str, Any], store: Store | None = None) -> str:
    """Deliver one bus event to its tenant's endpoint and, when the event is about a link with its own
    `webhookUrl`, to that URL too: the first attempts; returns what happened (comma-separated, the endpoint's
    first). A redelivered message for an event already delivered (or scheduled, or in flight) does nothing."""
    store = store or default_store()
    tenant_id, event_id = detail.get("tenantId"), detail.get("eventId")
    if not tenant_id or not event_id:
        return "not_an_event"
    endpoint = find_endpoint(str(tenant_id), store)
    if endpoint is None:
        return "no_endpoint"
    body = json.dumps(detail, separators=(",", ":")).encode()
    link_url = _link_webhook_url(detail, store)
    targets: list[str | None] = [None, link_url] if link_url else [None]
    return ",".join(_first_attempt(store, detail, body, endpoint, url) for url in targets)


def _first_attempt(store: Store, detail: dict[str, Any], body: bytes, endpoint: Endpoint, url: str | None) -> str:
    owner = uuid.uuid4().hex
    item = _new_delivery(detail, body, owner, url)
    try:
        # Protects: exactly one delivery per event and target; a second copy of the message finds it and stops here.
        store.transact({"Put": {"Item": serialize(item), "ConditionExpression": "attribute_not_exists(pk)"}})
    except ConditionFailed:
        return attempt_due(item["id"], store)
    return _attempt(store, item, _aimed(endpoint, item), body, owner)


def link_delivery_id(event_id: str) -> str:
    return f"{event_id}.link"


def _link_webhook_url(detail: dict[str, Any], store: Store) -> str | None:
    """The `webhookUrl` of the tenant's link the event is about (its `linkId`), if that link has one."""
    link_id = detail.get("linkId")
    link = store.get_link(link_id) if isinstance(link_id, str) and link_id else None
    return link.webhook_url if link is not None and link.tenant_id == detail["tenantId"] else None


def _aimed(endpoint: Endpoint, item: dict[str, Any]) -> Endpoint:
    """The endpoint a delivery goes to: the tenant's, or (same secrets) its link's `webhookUrl`, which the
    tenant endpoint's breaker does not hold."""
    return replace(endpoint, url=item["url"], failures=0, open_until=None) if item.get("url") else endpoint


def attempt_due(delivery_id: str, store: Store | None = None) -> str:
    """The next attempt of a pending delivery whose time has come (the due index, a manual retry, a redelivered
    message); "skipped" if it is not due, is done, or another attempt holds it."""
    store = store or default_store()
    owner = uuid.uuid4().hex
    item = _claim(store, delivery_id, owner)
    if item is None:
        return "skipped"
    endpoint = find_endpoint(item["tenantId"], store)
    if endpoint is None:
        _record(store, item, owner, {"status": "failed", **_logged(item, Outcome(error="no_endpoint"))}, _DUE)
        return "failed"
    body = _open(item["tenantId"], item["id"], bytes(item["body"]))
    return _attempt(store, item, _aimed(endpoint, item), body, owner)


_DUE = ("duePk", "dueAt")


def _attempt(store: Store, item: dict[str, Any], endpoint: Endpoint, body: bytes, owner: str) -> str:
    now = clock.iso(clock.now())
    if endpoint.open_until and endpoint.open_until > now:  # the breaker is open: wait, without a call
        return _after_failure(store, item, owner, Outcome(error="circuit_open"), counted=False,
                              not_before=endpoint.open_until)  # fmt: skip
    outcome = send(endpoint, str(item.get("eventId", item["id"])), body)
    metrics.add_metric(name="WebhookAttempts", unit="Count", value=1)
    if outcome.delivered:
        sets = {"status": "delivered", "deliveredAt": now, **_logged(item, outcome)}
        _record(store, item, owner, sets, _DUE)
        if endpoint.failures:
            _breaker(store, endpoint.tenant_id, success=True)
        return "delivered"
    if not outcome.retryable:
        _record(store, item, owner, {"status": "failed", **_logged(item, outcome)}, _DUE)
        return "failed"
    if not item.get("url"):  # a link's own URL does not count against the tenant's endpoint
        _breaker(store, endpoint.tenant_id, success=False)
    return _after_failure(store, item, owner, outcome, counted=True)


def _after_failure(
    store: Store, item: dict[str, Any], owner: str, outcome: Outcome, *, counted: bool, not_before: str = ""
) -> str:
    """Schedule the next attempt, or give up once the schedule has run for `GIVE_UP_SECONDS`: failed, and the
    event to the webhook dead-letter queue."""
    now = clock.now().replace(microsecond=0)
    logged = _logged(item, outcome, counted=counted)
    if now - clock.parse_iso(item["startedAt"]) >= timedelta(seconds=GIVE_UP_SECONDS):
        dead_letter(item)
        _record(store, item, owner, {"status": "failed", **logged}, _DUE)
        return "dead_lettered"
    delay = SCHEDULE[min(max(int(logged["attempts"]) - 1, 0), len(SCHEDULE) - 1)]
    at = not_before or clock.iso(now + timedelta(seconds=delay))
    _record(store, item, owner, {**logged, **due_keys(item["id"], clock.parse_iso(at))}, ())
    return "retry_scheduled" if counted else "circuit_open"


def _logged(item: dict[str, Any], outcome: Outcome, counted: bool = True) -> dict[str, Any]:
    attempts = int(item.get("attempts", 0)) + (1 if counted else 0)
    return {"attempts": attempts, "history": [*item.get("history", []), outcome.entry()][-HISTORY:]}


def _breaker(store: Store, tenant_id: str, *, success: bool) -> None:
    """Count a failure in a row (opening the breaker at the threshold, again at each failed probe), or reset."""
    key = serialize(endpoint_key(tenant_id))
    try:
        if success:
            store._call("update_item", TableName=store.table, Key=key, UpdateExpression="SET failures = :z REMOVE "
                        "openUntil", ConditionExpression="attribute_exists(pk)",  # Protects: a deleted endpoint
                        ExpressionAttributeValues=serialize({":z": 0}))  # fmt: skip
            return
        answer = store._call(
            "update_item", TableName=store.table, Key=key, UpdateExpression="ADD failures :one",
            ConditionExpression="attribute_exists(pk)",  # Protects: a deleted endpoint is not brought back
            ExpressionAttributeValues=serialize({":one": 1}), ReturnValues="UPDATED_NEW",
        )  # fmt: skip
        if int(answer["Attributes"]["failures"]["N"]) >= BREAKER_THRESHOLD:
            until = clock.iso(clock.now() + timedelta(seconds=BREAKER_COOLDOWN_SECONDS))
            store.transact(update(endpoint_key(tenant_id), {"openUntil": until}, (), "attribute_exists(pk)"))
            logger.warning("webhook endpoint circuit open", extra={"tenant": tenant_id, "until": until})
    except ConditionFailed:
        return


def send(endpoint: Endpoint, delivery_id: str, body: bytes) -> Outcome:
    """One signed POST through the outbound door (its private-address guard applies at every delivery)."""
    from grantlink import outbound

    limits = outbound.limits(deadline=CALL_DEADLINE_SECONDS, max_body=4096)
    try:
        answer = outbound.send("POST", endpoint.url, limits, headers=headers_for(endpoint, delivery_id, body),
                               data=body, read_body=False)  # fmt: skip
    except outbound.OutboundError as exc:
        return Outcome(error=exc.kind)
    return Outcome(status=answer.status)


def dead_letter(item: dict[str, Any], sqs: Any = None) -> None:
    """The event of a delivery that failed its whole schedule, to the webhook dead-letter queue (for the
    operator to inspect or replay; the queue is encrypted)."""
    body = json.loads(_open(item["tenantId"], item["id"], bytes(item["body"])))
    message = {"deliveryId": item["id"], "tenantId": item["tenantId"], "reason": "schedule_exhausted", "event": body}
    (sqs or aws.client("sqs")).send_message(QueueUrl=settings().webhook_dlq_url, MessageBody=json.dumps(message))
    metrics.add_metric(name="WebhooksDeadLettered", unit="Count", value=1)


# --- deliveries: the API ---------------------------------------------------------------------------------------


def list_deliveries(
    caller: Caller, status: Status | None, per_page: int, cursor: str | None, store: Store | None = None
) -> tuple[list[DeliveryOut], CursorMeta]:
    """The tenant's deliveries, newest first (another tenant's are never in the index it reads)."""
    store = store or default_store()
    scope = f"{caller.tenant_id}|DELIVERY|{status or ''}|{per_page}"
    start, page = pagination.decode(cursor, scope)
    equals = {"status": status} if status else None
    items, last = store.query_page("gsi1", "gsi1pk", tenant_deliveries_pk(caller.tenant_id), per_page, start, equals)
    return [delivery_out(i) for i in items], CursorMeta(page=page, nextCursor=pagination.encode(last, page, scope))


def retry_delivery(caller: Caller, delivery_id: str, store: Store | None = None, sqs: Any = None) -> DeliveryOut:
    """Send a delivery again now, whatever its status (a replay keeps its `webhook-id`): it is pending again with
    a fresh schedule, and the webhook queue gets it at once (the due index too, should that message be lost)."""
    store = store or default_store()
    item = store.get_item(delivery_key(delivery_id))
    if not item or item.get("tenantId") != caller.tenant_id or item.get("type") != "webhook_delivery":
        raise errors.NotFound("No such delivery.")
    if find_endpoint(caller.tenant_id, store) is None:
        raise errors.Conflict("No webhook is registered.", code="no_webhook")
    now = clock.iso(clock.now())
    sets = {"status": "pending", "startedAt": now, **due_keys(delivery_id, clock.now())}
    action = update(delivery_key(delivery_id), sets, ("deliveredAt",),
                    "tenantId = :t AND (attribute_not_exists(leaseUntil) OR leaseUntil < :now)",
                    t=caller.tenant_id, now=now)  # fmt: skip
    try:
        # Protects: a delivery with an attempt in flight is not sent twice at once.
        store.transact(action)
    except ConditionFailed as exc:
        raise errors.Conflict("An attempt is in flight; try again shortly.", code="delivery_in_progress") from exc
    message = json.dumps({"deliveryId": delivery_id})
    (sqs or aws.client("sqs")).send_message(QueueUrl=settings().webhook_queue_url, MessageBody=message)
    return delivery_out({**item, **sets})


def process_message(message: dict[str, Any], store: Store | None = None) -> str:
    """One webhook queue message: an EventBridge event from the bus, or a delivery to attempt now."""
    if "deliveryId" in message:
        return attempt_due(str(message["deliveryId"]), store)
    detail = message.get("detail")
    return on_event(detail, store) if isinstance(detail, dict) else "not_an_event"
