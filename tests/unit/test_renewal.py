"""Expiry and renewal: the due index, the sweep, the worker, and the events. The rows of SECURITY.md they prove
(R1–R3, and O6/O8 through the jobs) are in tests/security/test_jobs.py and test_oauth_client.py; the sweep and
worker drivers are in tests/helpers.py."""

from __future__ import annotations

import json
import threading
from datetime import timedelta
from typing import Any

from werkzeug import Request, Response

from grantlink import clock, connect, links, renewal
from grantlink.models import Caller, CreateLinkRequest, CredentialState
from grantlink.store import default as default_store
from tests.helpers import FrozenClock, due_items, new_link, run_jobs
from tests.unit.oauth_fakes import A, FakeAuthorizationServer, connected_credential, expire_access_token


def kinds(delivered_events: Any) -> list[str]:
    return [e["detail-type"] for e in delivered_events()]


def test_only_items_that_need_attention_are_in_the_due_index(provider_server: FakeAuthorizationServer) -> None:
    waiting, _ = new_link()
    used, used_token = new_link()
    connect.submit(used.id, used_token, {"apiKey": "sk_live_verysecretvalue_1234"})
    revoked, _ = new_link()
    links.revoke_link(A, revoked.id)
    oauth_credential = connected_credential(provider_server)
    keys = {i["pk"]["S"]: i["dueAt"]["S"] for i in due_items({"env": {"GRANTLINK_TABLE": default_store().table}})}
    assert f"SHARE#{waiting.id}" in keys and keys[f"SHARE#{waiting.id}"] == clock.iso(waiting.expires_at)
    assert f"SHARE#{used.id}" not in keys  # a granted link is kept; a revoked one is due at its clean-up time
    assert keys[f"SHARE#{revoked.id}"] == clock.iso(revoked.expires_at + timedelta(days=30))
    credential = default_store().get_credential(oauth_credential)
    assert credential and credential.access_expires_at
    assert keys[f"CRED#{oauth_credential}"] == clock.iso(credential.access_expires_at - timedelta(seconds=900))
    assert not any(k.startswith("CRED#") and k != f"CRED#{oauth_credential}" for k in keys)  # the API-key one


def test_a_due_token_is_refreshed_by_the_jobs(
    aws_env: Any, provider_server: FakeAuthorizationServer, delivered_events: Any, clock: FrozenClock
) -> None:
    credential_id = connected_credential(provider_server)
    before = default_store().get_credential(credential_id)
    assert before and before.access_expires_at
    clock.advance(minutes=50)  # the hour-long token now expires within 15 minutes
    answer = run_jobs(aws_env)
    assert answer == {"batchItemFailures": []}
    after = default_store().get_credential(credential_id)
    assert after and after.last_refreshed_at == clock().replace(microsecond=0)
    assert after.access_expires_at and after.access_expires_at > before.access_expires_at
    assert provider_server.calls[-1]["grant_type"] == "refresh_token"
    refreshed = [e for e in delivered_events() if e["detail-type"] == "credential.refreshed"]
    assert len(refreshed) == 1 and refreshed[0]["detail"]["credentialId"] == credential_id


class RotatingServer(FakeAuthorizationServer):
    """A provider that invalidates a refresh token the moment it is used (strict rotation)."""

    def __init__(self, server: Any) -> None:
        self.valid: set[str] = set()
        super().__init__(server)

    def token(self, request: Request) -> Response:
        form = dict(request.form)
        if form.get("grant_type") == "refresh_token":
            with self.lock:
                if form["refresh_token"] not in self.valid:
                    self.calls.append(form)
                    return Response(json.dumps({"error": "invalid_grant"}), 400, content_type="application/json")
                self.valid.discard(form["refresh_token"])
        answer = super().token(request)
        self.valid.add(json.loads(answer.get_data())["refresh_token"])
        return answer


def test_a_rotating_refresh_token_survives_two_concurrent_renewals(
    httpserver: Any, provider_server: FakeAuthorizationServer, delivered_events: Any
) -> None:
    httpserver.clear()
    rotating = RotatingServer(httpserver)
    credential_id = connected_credential(rotating)
    expire_access_token(credential_id)
    rotating.delay = 0.4
    threads = [
        threading.Thread(target=renewal.renew_credential, args=(credential_id, default_store())) for _ in range(2)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    credential = default_store().get_credential(credential_id)
    assert credential and credential.state == CredentialState.ACTIVE
    assert [c["grant_type"] for c in rotating.calls] == ["authorization_code", "refresh_token"]
    assert "credential.reauthorization_required" not in kinds(delivered_events)


def test_transient_failures_back_off_and_finally_require_reauthorization(
    aws_env: Any, provider_server: FakeAuthorizationServer, delivered_events: Any, clock: FrozenClock
) -> None:
    credential_id = connected_credential(provider_server)
    expire_access_token(credential_id)
    provider_server.error = "temporarily_unavailable"
    assert renewal.renew_credential(credential_id, default_store()) == "refresh_failed"
    first = default_store().get_credential(credential_id)
    assert (
        first
        and first.refresh_failures == 1
        and first.retry_at == clock().replace(microsecond=0) + timedelta(seconds=60)
    )
    assert renewal.renew_credential(credential_id, default_store()) == "skipped"  # not due until retry_at
    clock.advance(seconds=61)
    assert renewal.renew_credential(credential_id, default_store()) == "refresh_failed"
    second = default_store().get_credential(credential_id)
    assert (
        second
        and second.refresh_failures == 2
        and second.retry_at == clock().replace(microsecond=0) + timedelta(seconds=120)
    )
    assert second.to_out().refreshFailures == 2
    clock.advance(hours=24)
    assert renewal.renew_credential(credential_id, default_store()) == "reauthorization_required"
    assert kinds(delivered_events).count("credential.refresh_failed") == 2
    assert kinds(delivered_events).count("credential.reauthorization_required") == 1


def test_a_credential_without_a_refresh_token_warns_once(
    aws_env: Any, provider_server: FakeAuthorizationServer, delivered_events: Any, clock: FrozenClock
) -> None:
    provider_server.refresh_token = None
    credential_id = connected_credential(provider_server)
    credential = default_store().get_credential(credential_id)
    assert credential and not credential.refreshable and credential.access_expires_at
    assert credential.due_at() == credential.access_expires_at - timedelta(hours=72)
    clock.advance(minutes=1)
    for _ in range(2):
        run_jobs(aws_env)
    assert kinds(delivered_events).count("credential.expiring") == 1


def test_an_expired_link_emits_share_expired_once(aws_env: Any, delivered_events: Any, clock: FrozenClock) -> None:
    link, _ = links.create_link(Caller("tnt_a"), CreateLinkRequest(partnerId=9001, title="late", expiresInHours=1))
    clock.advance(minutes=59)
    run_jobs(aws_env)
    assert "share.expired" not in kinds(delivered_events)
    clock.advance(minutes=1)
    for _ in range(2):
        run_jobs(aws_env)
    expired = [e for e in delivered_events() if e["detail-type"] == "share.expired"]
    assert len(expired) == 1 and expired[0]["detail"]["linkId"] == link.id
    due = {i["pk"]["S"]: i["dueAt"]["S"] for i in due_items(aws_env)}
    cleanup = link.expires_at + timedelta(days=30)
    assert due[f"SHARE#{link.id}"] == cleanup.strftime("%Y-%m-%dT%H:%M:%SZ")  # next: its clean-up


def test_share_completed_and_credential_deleted_events(aws_env: Any, delivered_events: Any) -> None:
    from grantlink import connections

    link, token = links.create_link(Caller("tnt_a"), CreateLinkRequest(partnerId=9001, title="x"))
    credential_id = connect.submit(link.id, token, {"apiKey": "demo-key-123456789"}).credential.id
    connections.delete_credential(Caller("tnt_a"), credential_id)
    seen = {e["detail-type"]: e["detail"] for e in delivered_events()}
    assert seen["share.completed"]["linkId"] == link.id and seen["share.completed"]["credentialId"] == credential_id
    assert seen["credential.deleted"]["credentialId"] == credential_id
    assert all(detail["eventId"] and detail["tenantId"] == "tnt_a" for detail in seen.values())


def test_the_sweep_sends_batches_of_ten_across_shards_and_queues_every_due_item(
    aws_env: Any, clock: FrozenClock
) -> None:
    """23 links due, spread over the due index's shards: every one is queued once, in ceil(23 / 10) = 3
    SendMessageBatch calls (not one short batch per shard)."""
    import boto3

    from tests.helpers import queued

    ids = {new_link(expiresInHours=1)[0].id for _ in range(23)}
    shards = {i["duePk"]["S"] for i in due_items(aws_env)}
    assert len(shards) > 1  # the links really landed in several shards
    clock.advance(hours=1)
    sqs = boto3.client("sqs")
    batches: list[int] = []
    send = sqs.send_message_batch

    def counted(**kwargs: Any) -> Any:
        batches.append(len(kwargs["Entries"]))
        return send(**kwargs)

    sqs.send_message_batch = counted  # type: ignore[method-assign]
    assert renewal.sweep(sqs=sqs) == {"queued": 23}
    assert batches == [10, 10, 3]
    assert sorted(json.loads(m["Body"])["pk"] for m in queued(aws_env)) == sorted(f"SHARE#{i}" for i in ids)
