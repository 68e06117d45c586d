"""Expiry and renewal (use cases): the sweep that finds what is due, and the work done for each item.

The sweep reads only the sparse due index (`duePk = DUE#<shard>`, `dueAt`), so its cost grows with what is due,
not with the table, and sends each due key to the renewal queue. The worker re-reads every item and acts only if
it is still due: running the sweep twice for one moment, or receiving a message twice, does nothing twice.

- OAuth credentials with a refresh token: refreshed `GRANTLINK_RENEW_BEFORE_SECONDS` before expiry, under the
  same single-flight lease as the secret endpoint. `invalid_grant` → `reauthorization_required` (once, with an
  event carrying a reauthorize link). Transient failures back off exponentially and are counted; failures that
  span `GRANTLINK_REFRESH_GIVE_UP_SECONDS` end in `reauthorization_required` too.
- Credentials that cannot refresh themselves get one `credential.expiring`, `GRANTLINK_WARN_BEFORE_SECONDS` ahead.
- Links past their expiry at status 0 or 2 get one `share.expired`.
"""

from __future__ import annotations

import base64
import json
from dataclasses import replace
from datetime import timedelta
from typing import Any

from grantlink import aws, clock, errors
from grantlink.config import settings
from grantlink.models import Credential, CredentialState
from grantlink.observability import logger
from grantlink.store import ConditionFailed, Store
from grantlink.store import default as default_store

# The worker's parts (events, links, oauth: the Encryption SDK path, the partner calls) are imported by the worker's
# functions, so the sweep's function, which only reads the due index and queues, does not load them at cold start.

# The worker runs a batch's records several at once and starts none it cannot finish: a refresh needs at most the
# token call's deadline (≤ 25 s) plus the key fetch and the write's retries, so 30 s before the function's timeout
# (60 s in template.yaml) it stops taking records and reports the rest failed for SQS to deliver again.
WORKER_CONCURRENCY = 5
RECORD_RESERVE_SECONDS = 30
BACKOFF_FIRST_SECONDS = 60
BACKOFF_MAX_SECONDS = 3600
SQS_BATCH = 10


def sweep(store: Store | None = None, sqs: Any = None) -> dict[str, int]:
    """Queue every item due within the window; returns counts (queued, items read, capacity consumed).
    Messages go in batches of ten across the shards, so a sweep sends ceil(due / 10) batches."""
    store, sqs = store or default_store(), sqs or aws.client("sqs")
    until = clock.iso(clock.now() + timedelta(seconds=settings().sweep_window_seconds))
    queued, pending = 0, []
    for shard in range(settings().due_shards):
        start: dict[str, Any] | None = None
        while True:
            keys, start = store.due_page(shard, until, start)
            pending.extend(keys)
            queued += _enqueue(sqs, pending, whole_batches_only=True)
            if not start:
                break
    queued += _enqueue(sqs, pending, whole_batches_only=False)
    logger.info("sweep", extra={"queued": queued})
    return {"queued": queued}


def _enqueue(sqs: Any, pending: list[dict[str, Any]], *, whole_batches_only: bool) -> int:
    """Send `pending` keys in batches of ten (keeping a short last batch back if asked); returns how many went."""
    sent = 0
    while len(pending) >= SQS_BATCH or (pending and not whole_batches_only):
        batch = pending[:SQS_BATCH]
        entries = [
            {"Id": str(n), "MessageBody": json.dumps({"pk": k["pk"], "sk": k["sk"], "dueAt": k["dueAt"]})}
            for n, k in enumerate(batch)
        ]
        answer = sqs.send_message_batch(QueueUrl=settings().renewal_queue_url, Entries=entries)
        if answer.get("Failed"):
            raise errors.ServiceUnavailable(f"{len(answer['Failed'])} renewal messages were not queued")
        del pending[: len(batch)]
        sent += len(batch)
    return sent


def process(message: dict[str, Any], store: Store | None = None) -> str:
    """Do what one due item needs; returns what happened. Raises on a failure worth retrying."""
    store = store or default_store()
    pk = str(message.get("pk", ""))
    kind, _, item_id = pk.partition("#")
    if kind == "SHARE":
        return expire_link(item_id, store)
    if kind == "CRED" and isinstance(message.get("kept"), dict):
        return _store_kept_token(message["kept"], store)
    if kind == "CRED":
        return renew_credential(item_id, store)
    if kind == "OUTBOX":
        from grantlink import outbox

        return outbox.resend(item_id, store)
    if kind == "DELIVERY":
        from grantlink import webhooks

        return webhooks.attempt_due(item_id, store)
    raise ValueError("not a renewal message")


def queue_kept_token(item: dict[str, Any], sqs: Any = None) -> None:
    """The last place refreshed tokens can wait when the table cannot be written: a renewal message (the
    secret is the sealed ciphertext, base64) that the worker writes to the table as the kept token."""
    kept = {**item, "secret": base64.b64encode(item["secret"]).decode()}
    body = json.dumps({"pk": f"CRED#{item['credentialId']}", "sk": "KEPT", "kept": kept})
    (sqs or aws.client("sqs")).send_message(QueueUrl=settings().renewal_queue_url, MessageBody=body)


def _store_kept_token(kept: dict[str, Any], store: Store) -> str:
    store.put_kept_token({**kept, "secret": base64.b64decode(kept["secret"])})
    return "token_kept"


def expire_link(link_id: str, store: Store) -> str:
    """A waiting link past its expiry gets one `share.expired`. A link that was never used (told about, if it
    expired waiting) is deleted at its clean-up time and leaves the tenant's counters in the same transaction."""
    from grantlink import events, links
    from grantlink.models import LinkStatus

    link = store.get_link(link_id)
    if link is None:
        return "skipped"
    told = link.expiry_notified or not link.is_expired()
    if told and link.status != LinkStatus.GRANTED and link.cleanup_at and link.cleanup_at <= clock.now():
        try:
            store.delete_link(link)
        except ConditionFailed:
            return "skipped"  # changed meanwhile (regenerated, consumed): the next state decides
        return "share_deleted"
    if link.expiry_notified or not link.is_expired():
        return "skipped"
    after = replace(link, expiry_notified=True, version=link.version + 1)
    try:
        store.replace_link_state(link, after, links.cleanup_ttl(link))
    except ConditionFailed:
        return "skipped"  # changed meanwhile (regenerated, revoked, consumed): the next state decides
    events.emit(
        "share.expired",
        link.tenant_id,
        linkId=link.id,
        partnerId=link.partner_id,
        status=int(link.status),
        expiresAt=clock.iso(link.expires_at),
        **link.identity(),
    )
    return "share_expired"


def renew_credential(credential_id: str, store: Store) -> str:
    """Refresh a due credential (or warn that it cannot be). Every outcome moves the credential on: refreshed,
    a terminal state with one event, or a back-off; nothing sends the same item round the queue for ever."""
    from grantlink import oauth

    credential = store.get_credential(credential_id)
    due = credential.due_at() if credential else None
    if credential is None or due is None or due > clock.now():
        return "skipped"  # not due (any more): done already, or changed meanwhile
    if not credential.refreshable:
        return _warn_expiring(credential, store)
    try:
        oauth.refresh(credential, store)
    except errors.GrantlinkError as exc:
        return _after_failed_refresh(credential, store, exc)
    except ConditionFailed:
        return "skipped"  # the credential changed under us; the next sweep sees its new state
    except Exception as exc:  # noqa: BLE001 - an unexpected failure backs off like a transient one
        logger.exception("refresh failed unexpectedly", extra={"credential": credential_id})
        return _record_failure(credential, store, reason=type(exc).__name__)
    return "refreshed"


PERMANENT = {
    "oauth_app_missing": "oauth_app_missing",  # the tenant deleted its OAuth app: nothing can refresh the grant
    "no_refresh_token": "no_refresh_token",
    "decryption_failed": "secret_unreadable",  # the stored secret cannot be decrypted: only a reconnect helps
}


def _after_failed_refresh(credential: Credential, store: Store, exc: errors.GrantlinkError) -> str:
    from grantlink import oauth

    if exc.code == "reauthorization_required":
        return exc.code  # the refresh already moved it and told the tenant
    if exc.code in PERMANENT:
        fresh = store.get_credential(credential.id)
        if fresh is not None and oauth.mark_reauthorization_required(fresh, store, PERMANENT[exc.code]):
            return "reauthorization_required"
        return "skipped"
    if exc.code == "refresh_in_progress":
        return "skipped"  # another caller holds the lease; its outcome is recorded by it
    return _record_failure(credential, store, reason=exc.code, give_up=exc.code != "oauth_app_invalid")


def _warn_expiring(credential: Credential, store: Store) -> str:
    from grantlink import events

    after = replace(credential, expiry_warned=True, version=credential.version + 1)
    try:
        store.transact(*store.credential_update(credential, after))
    except ConditionFailed:
        return "skipped"
    events.emit(
        "credential.expiring",
        credential.tenant_id,
        credentialId=credential.id,
        partnerId=credential.partner_id,
        accessExpiresAt=clock.iso(credential.access_expires_at) if credential.access_expires_at else None,
        reason="no refresh token: a person must reauthorize before it expires",
        **credential.identity(),
    )
    return "expiring"


def _record_failure(credential: Credential, store: Store, *, reason: str, give_up: bool = True) -> str:
    """Count a transient failure and back off exponentially; give up after failures spanning the limit (not for
    a refused OAuth app: that is the tenant's configuration, the grant itself may be fine). `credential` is the
    item as read before the attempt: if it was refreshed since (by another caller), nothing is recorded."""
    from grantlink import events, oauth

    latest = store.get_credential(credential.id)
    if latest is None or latest.state != CredentialState.ACTIVE:
        return "skipped"
    if latest.secret_id != credential.secret_id or latest.last_refreshed_at != credential.last_refreshed_at:
        return "skipped"  # refreshed meanwhile: the failure is not this credential's state any more
    now = clock.now().replace(microsecond=0)
    since = latest.failing_since or now
    failures = latest.refresh_failures + 1
    if give_up and now - since >= timedelta(seconds=settings().refresh_give_up_seconds):
        oauth.mark_reauthorization_required(latest, store, f"refresh failing since {clock.iso(since)}")
        return "reauthorization_required"
    delay = min(BACKOFF_FIRST_SECONDS * 2 ** (failures - 1), BACKOFF_MAX_SECONDS)
    after = replace(
        latest, refresh_failures=failures, failing_since=since, retry_at=now + timedelta(seconds=delay),
        version=latest.version + 1,
    )  # fmt: skip
    try:
        store.transact(*store.credential_update(latest, after))
    except ConditionFailed:
        return "skipped"
    events.emit(
        "credential.refresh_failed",
        credential.tenant_id,
        credentialId=credential.id,
        partnerId=credential.partner_id,
        failures=failures,
        failingSince=clock.iso(since),
        nextAttemptAt=clock.iso(after.retry_at) if after.retry_at else None,
        reason=reason,
        **latest.identity(),
    )
    return "refresh_failed"
