"""The renewal worker never loops for ever (issue 10): every outcome moves a due credential on — refreshed, a
terminal state with one event, or a back-off — and the tenant is told even when the bus fails at that moment.
Also: a batch's records run concurrently and none starts without time to finish."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest

from grantlink import oauth, renewal
from grantlink.models import CredentialState, OAuthAppRequest
from grantlink.store import default as default_store
from tests.helpers import FrozenClock, due_items, queued, run_jobs
from tests.unit.oauth_fakes import (
    PARTNER_ID,
    REDIRECT,
    A,
    FakeAuthorizationServer,
    connected_credential,
    expire_access_token,
)


def kinds(delivered_events: Any) -> list[str]:
    return [e["detail-type"] for e in delivered_events()]


def due_keys(aws_env: Any) -> set[str]:
    return {item["pk"]["S"] for item in due_items(aws_env)}


def state(credential_id: str) -> Any:
    credential = default_store().get_credential(credential_id)
    assert credential is not None
    return credential


def test_a_deleted_oauth_app_ends_in_reauthorization_required_once(
    aws_env: Any, provider_server: FakeAuthorizationServer, delivered_events: Any
) -> None:
    """Given a due credential whose tenant deleted the partner's OAuth app, when the jobs run twice,
    then it needs reauthorization (reason oauth_app_missing), the tenant is told once, and nothing is due any more."""
    credential_id = connected_credential(provider_server)
    expire_access_token(credential_id)
    oauth.delete_app(A, PARTNER_ID)
    assert run_jobs(aws_env) == {"batchItemFailures": []}
    assert run_jobs(aws_env) == {"batchItemFailures": []}
    assert state(credential_id).state == CredentialState.REAUTHORIZATION_REQUIRED
    (told,) = [e["detail"] for e in delivered_events() if e["detail-type"] == "credential.reauthorization_required"]
    assert told["reason"] == "oauth_app_missing" and told["reauthorizeLink"] is None
    assert f"CRED#{credential_id}" not in due_keys(aws_env)
    assert [c["grant_type"] for c in provider_server.calls] == ["authorization_code"]


def test_an_unreadable_secret_ends_in_reauthorization_required(
    aws_env: Any, provider_server: FakeAuthorizationServer, delivered_events: Any
) -> None:
    """Given a due credential whose stored ciphertext no longer decrypts, when the jobs run,
    then it needs reauthorization (secret_unreadable) instead of failing the message until the DLQ."""
    credential_id = connected_credential(provider_server)
    expire_access_token(credential_id)
    store = default_store()
    credential = state(credential_id)
    flipped = bytearray(credential.secret)
    flipped[-5] ^= 0xFF
    store.client.update_item(
        TableName=store.table,
        Key={"pk": {"S": f"CRED#{credential_id}"}, "sk": {"S": "CRED"}},
        UpdateExpression="SET secret = :s",
        ExpressionAttributeValues={":s": {"B": bytes(flipped)}},
    )
    assert run_jobs(aws_env) == {"batchItemFailures": []}
    assert state(credential_id).state == CredentialState.REAUTHORIZATION_REQUIRED
    (told,) = [e["detail"] for e in delivered_events() if e["detail-type"] == "credential.reauthorization_required"]
    assert told["reason"] == "secret_unreadable" and told["reauthorizeLink"]
    assert f"CRED#{credential_id}" not in due_keys(aws_env)


def test_a_refused_oauth_app_backs_off_every_credential_and_tells_the_tenant_once(
    aws_env: Any, provider_server: FakeAuthorizationServer, delivered_events: Any, clock: FrozenClock
) -> None:
    """Given two due credentials of one partner, when the partner answers invalid_client (the tenant's app, not the
    users' grants), then both stay active and back off, one oauth_app.invalid event is sent, and a day of failures
    does not mass-move them to reauthorization_required."""
    first, second = connected_credential(provider_server), connected_credential(provider_server)
    for credential_id in (first, second):
        expire_access_token(credential_id)
    provider_server.error = "invalid_client"
    assert run_jobs(aws_env) == {"batchItemFailures": []}
    for credential_id in (first, second):
        credential = state(credential_id)
        assert credential.state == CredentialState.ACTIVE and credential.retry_at and credential.refresh_failures == 1
    assert kinds(delivered_events).count("oauth_app.invalid") == 1
    (told,) = [e["detail"] for e in delivered_events() if e["detail-type"] == "oauth_app.invalid"]
    assert told["partnerId"] == PARTNER_ID and told["error"] == "invalid_client"
    for _ in range(3):
        clock.advance(hours=9)
        run_jobs(aws_env)
    assert state(first).state == CredentialState.ACTIVE and state(second).state == CredentialState.ACTIVE
    assert "credential.reauthorization_required" not in kinds(delivered_events)


def test_replacing_the_refused_app_reports_a_new_refusal_again(
    aws_env: Any, provider_server: FakeAuthorizationServer, delivered_events: Any
) -> None:
    """Given an app already reported as refused, when the tenant replaces it and the new one is refused too,
    then the tenant is told again."""
    credential_id = connected_credential(provider_server)
    expire_access_token(credential_id)
    provider_server.error = "unauthorized_client"
    run_jobs(aws_env)
    oauth.put_app(A, PARTNER_ID, OAuthAppRequest.model_validate({"clientId": "c2", "clientSecret": "s2"}), REDIRECT)
    with pytest.raises(oauth.errors.Conflict) as refused:
        oauth.refresh(state(credential_id), default_store())
    assert refused.value.code == "oauth_app_invalid"
    assert kinds(delivered_events).count("oauth_app.invalid") == 2


def test_the_tenant_is_told_even_if_the_bus_fails_when_the_grant_is_refused(
    aws_env: Any,
    provider_server: FakeAuthorizationServer,
    delivered_events: Any,
    clock: FrozenClock,
    monkeypatch: pytest.MonkeyPatch,
    table_items: Any,
) -> None:
    """Given a refresh refused with invalid_grant while EventBridge is failing, when the bus is back and the jobs
    run, then the event arrives once, with its original eventId and a reauthorize link that opens."""
    from grantlink import connect, events

    credential_id = connected_credential(provider_server)
    expire_access_token(credential_id)
    provider_server.error = "invalid_grant"
    real = events.deliver
    monkeypatch.setattr(events, "deliver", lambda body: False)
    assert renewal.renew_credential(credential_id, default_store()) == "reauthorization_required"
    (owed,) = [i for i in table_items() if i["pk"]["S"].startswith("OUTBOX#")]
    assert "token=" not in json.dumps(owed)  # no raw link token is stored
    monkeypatch.setattr(events, "deliver", real)
    clock.advance(minutes=3)
    assert run_jobs(aws_env) == {"batchItemFailures": []}
    (told,) = [e["detail"] for e in delivered_events() if e["detail-type"] == "credential.reauthorization_required"]
    assert told["eventId"] == owed["pk"]["S"].removeprefix("OUTBOX#") and told["credentialId"] == credential_id
    link_id, token = told["reauthorizeLinkId"], told["reauthorizeLink"].rpartition("token=")[2]
    assert connect.open_link(link_id, token, default_store()).link.bound_credential_id == credential_id
    assert not [i for i in table_items() if i["pk"]["S"].startswith("OUTBOX#")]
    assert run_jobs(aws_env) == {"batchItemFailures": []}
    assert kinds(delivered_events).count("credential.reauthorization_required") == 1


def test_an_unexpected_failure_backs_off_instead_of_failing_the_message(
    aws_env: Any, provider_server: FakeAuthorizationServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Given a refresh that fails in a way nobody planned for, when the worker handles it,
    then the credential backs off (it is not due again at once) and the message succeeds."""
    credential_id = connected_credential(provider_server)
    expire_access_token(credential_id)

    def broken(*args: Any) -> dict[str, Any]:
        raise KeyError("surprise")

    monkeypatch.setattr(oauth, "_refresh_call", broken)
    assert run_jobs(aws_env) == {"batchItemFailures": []}
    credential = state(credential_id)
    assert credential.refresh_failures == 1 and credential.retry_at is not None
    assert run_jobs(aws_env) == {"batchItemFailures": []} and credential.refresh_failures == 1


def test_a_batch_is_refreshed_concurrently(
    aws_env: Any, provider_server: FakeAuthorizationServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Given three due credentials and a slow partner, when the worker takes them in one batch,
    then their token calls overlap (a batch of slow partners fits the function's timeout)."""
    ids = [connected_credential(provider_server) for _ in range(3)]
    for credential_id in ids:
        expire_access_token(credential_id)
    real, lock, in_flight, most = oauth._refresh_call, threading.Lock(), [0], [0]

    def slow_partner(*args: Any) -> dict[str, Any]:  # the fake's server answers one request at a time
        with lock:
            in_flight[0] += 1
            most[0] = max(most[0], in_flight[0])
        try:
            time.sleep(0.3)
            return real(*args)
        finally:
            with lock:
                in_flight[0] -= 1

    monkeypatch.setattr(oauth, "_refresh_call", slow_partner)
    assert run_jobs(aws_env) == {"batchItemFailures": []}
    assert most[0] >= 2
    assert all(state(i).last_refreshed_at for i in ids)


def test_records_without_time_to_finish_are_reported_failed_unstarted(
    aws_env: Any, provider_server: FakeAuthorizationServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Given a batch arriving with less time left than a refresh may need, when the worker runs,
    then every record is reported failed for SQS to deliver again, and no partner is called."""
    from infra.local.gateway import LambdaContext
    from tests.helpers import function

    credential_id = connected_credential(provider_server)
    expire_access_token(credential_id)
    renewal.sweep()
    messages = queued(aws_env)
    calls = len(provider_server.calls)
    short = LambdaContext("worker", int(renewal.RECORD_RESERVE_SECONDS) - 5)
    answer = function("renewal_worker").lambda_handler({"Records": sqs_records(messages)}, short)
    assert answer == {"batchItemFailures": [{"itemIdentifier": m["MessageId"]} for m in messages]}
    assert len(provider_server.calls) == calls


def sqs_records(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {"messageId": m["MessageId"], "receiptHandle": m["ReceiptHandle"], "body": m["Body"], "attributes": {},
         "messageAttributes": {}, "md5OfBody": "", "eventSource": "aws:sqs", "eventSourceARN": "q", "awsRegion": "x"}
        for m in messages
    ]  # fmt: skip
