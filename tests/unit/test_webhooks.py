"""Webhooks through their handlers, with moto underneath and a real receiver on 127.0.0.1 (pytest-httpserver):
events go to the bus, the template's rule routes them to the webhook queue, the delivery function sends them over
real HTTP; retries run through the sweep and the renewal worker on a frozen clock."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import boto3
import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from grantlink import clock, config, events, webhooks
from infra.local.gateway import LambdaContext
from tests.helpers import ALL_SCOPES, FrozenClock, connected, event, function, invoke, reroute, run_jobs

A, B = "tnt_a", "tnt_b"
README = Path(__file__).parents[2] / "README.md"


def readme_verify() -> Any:
    """The README's verification example, executed as written."""
    (code,) = [b for b in re.findall(r"```python\n(.*?)```", README.read_text(), re.S) if "def verify" in b]
    assert len(code.strip().splitlines()) <= 10
    namespace: dict[str, Any] = {}
    exec(code, namespace)  # noqa: S102 - our own README
    return namespace["verify"]


class Receiver:
    """A webhook receiver on the test's HTTP server: answers with `statuses` in turn (the last one repeats)."""

    def __init__(self, server: HTTPServer, path: str, *statuses: int) -> None:
        self.statuses, self.got = list(statuses or (200,)), []
        self.url = server.url_for(path)
        server.expect_request(path, method="POST").respond_with_handler(self.answer)

    def answer(self, request: Request) -> Response:
        self.got.append({"headers": {k.lower(): v for k, v in request.headers.items()}, "body": request.get_data()})
        status = self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]
        return Response("ok", status)

    def ids(self) -> list[str]:
        return [g["headers"]["webhook-id"] for g in self.got]


def hooks(route: str, tenant: str = A, scopes: str = ALL_SCOPES, **changes: Any) -> tuple[int, dict[str, Any]]:
    """One webhook API route ("PUT /webhooks", …) through the webhooks handler."""
    path = route.split(" ", 1)[1]
    if "path_id" in changes:
        path = path.replace("{id}", changes.pop("path_id"))
    evt = reroute(event("get_credential", tenant=tenant, scopes=scopes, **changes), route, path)
    evt["pathParameters"] = None
    status, body, _ = invoke("webhooks", evt)
    return status, body


def register(receiver: Receiver, tenant: str = A) -> str:
    status, body = hooks("PUT /webhooks", tenant, body={"url": receiver.url})
    assert status == 201, body
    return str(body["data"]["secret"])


def deliver(aws_env: dict[str, Any], one_at_a_time: bool = False) -> list[dict[str, Any]]:
    """The delivery function on what the webhook queue holds (the bus's rule put it there); the messages."""
    sqs, url = boto3.client("sqs"), aws_env["resolver"].ref("WebhookQueue")
    messages: list[dict[str, Any]] = []
    while batch := sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", []):
        messages += batch
        sqs.delete_message_batch(
            QueueUrl=url, Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(batch)]
        )
    for group in [[m] for m in messages] if one_at_a_time else [messages] if messages else []:
        assert handle(group) == {"batchItemFailures": []}
    return messages


def handle(messages: list[dict[str, Any]]) -> dict[str, Any]:
    records = [
        {"messageId": m["MessageId"], "receiptHandle": m["ReceiptHandle"], "body": m["Body"], "attributes": {},
         "messageAttributes": {}, "md5OfBody": "", "eventSource": "aws:sqs", "eventSourceARN": "q",
         "awsRegion": "us-east-1"}
        for m in messages
    ]  # fmt: skip
    return function("webhook_delivery").lambda_handler({"Records": records}, LambdaContext("delivery", 60))


def deliveries(tenant: str = A, **query: Any) -> list[dict[str, Any]]:
    status, body = hooks("GET /webhooks/deliveries", tenant, query=query)
    assert status == 200, body
    return list(body["data"])


def dead_letters(aws_env: dict[str, Any]) -> list[dict[str, Any]]:
    sqs, url = boto3.client("sqs"), aws_env["resolver"].ref("WebhookDeadLetterQueue")
    return [
        json.loads(m["Body"]) for m in sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
    ]


def emit(tenant: str = A) -> dict[str, Any]:
    return events.emit("credential.refreshed", tenant, credentialId="cred_1", partnerId=7777, accessExpiresAt=None)


def test_a_delivery_is_signed_as_the_readme_says(aws_env: Any, httpserver: HTTPServer) -> None:
    """Given a registered endpoint, when an event reaches the bus, then the receiver gets its detail once, and the
    README's verification code accepts the signature with the secret shown at registration (and refuses a
    tampered body or another secret)."""
    receiver = Receiver(httpserver, "/hooks")
    secret = register(receiver)
    detail = emit()
    deliver(aws_env)
    (got,) = receiver.got
    assert json.loads(got["body"]) == detail and got["headers"]["webhook-id"] == detail["eventId"]
    verify = readme_verify()
    assert verify(secret, got["headers"], got["body"])
    assert not verify(secret, got["headers"], got["body"] + b" ")
    assert not verify(webhooks.new_secret(), got["headers"], got["body"])
    (listed,) = deliveries()
    assert (listed["status"], listed["attempts"], listed["lastStatus"], listed["type"]) == (
        "delivered", 1, 200, "credential.refreshed")  # fmt: skip


def test_a_receiver_failing_twice_gets_the_event_exactly_once_more(
    aws_env: Any, httpserver: HTTPServer, clock: FrozenClock
) -> None:
    """Given a receiver that answers 500, then 503, then 200, when the schedule runs (30 s, then 2 min later),
    then it gets the event three times with one webhook-id, and nothing more: not from later sweeps, not from the
    queue delivering the first message again."""
    receiver = Receiver(httpserver, "/hooks", 500, 503, 200)
    register(receiver)
    detail = emit()
    (message,) = deliver(aws_env)
    assert deliveries()[0]["nextAttemptAt"] == clock_iso(clock, 30)
    clock.advance(seconds=30)
    run_jobs(aws_env)
    assert deliveries()[0]["nextAttemptAt"] == clock_iso(clock, 120)
    clock.advance(seconds=120)
    run_jobs(aws_env)
    clock.advance(days=2)
    run_jobs(aws_env)
    assert handle([message]) == {"batchItemFailures": []}  # SQS delivered the event again
    assert receiver.ids() == [detail["eventId"]] * 3
    (listed,) = deliveries()
    assert listed["status"] == "delivered" and [h["status"] for h in listed["history"]] == [500, 503, 200]


def clock_iso(frozen: FrozenClock, seconds: int) -> str:
    from datetime import timedelta

    return clock.iso(frozen.moment + timedelta(seconds=seconds))


@pytest.mark.parametrize("status", [400, 410])
def test_a_4xx_answer_is_final(aws_env: Any, httpserver: HTTPServer, clock: FrozenClock, status: int) -> None:
    """Given a receiver answering 400 or 410, then the delivery fails at once and is never tried again."""
    receiver = Receiver(httpserver, "/hooks", status)
    register(receiver)
    emit()
    deliver(aws_env)
    clock.advance(hours=30)
    run_jobs(aws_env)
    assert len(receiver.got) == 1
    (listed,) = deliveries()
    assert (listed["status"], listed["lastStatus"], listed["nextAttemptAt"]) == ("failed", status, None)
    assert dead_letters(aws_env) == []


def test_a_dead_receiver_s_event_reaches_the_dlq_after_the_whole_schedule(
    aws_env: Any, httpserver: HTTPServer, clock: FrozenClock
) -> None:
    """Given a receiver that always answers 503, when every scheduled attempt runs (the clock moved to each), then
    the delays follow the schedule, nothing is dead-lettered before 24 h, and then the delivery fails and the event
    is in the webhook DLQ, once."""
    receiver = Receiver(httpserver, "/hooks", 503)
    register(receiver)
    detail = emit()
    deliver(aws_env)
    first, delays = clock.moment, []
    while (listed := deliveries()[0])["status"] == "pending":
        assert dead_letters(aws_env) == []
        due = clock_from(listed["nextAttemptAt"])
        delays.append(int((due - clock.moment).total_seconds()))
        clock.moment = due
        run_jobs(aws_env)
    assert delays[:8] == list(webhooks.SCHEDULE) and set(delays[8:]) == {webhooks.SCHEDULE[-1]}
    assert (clock.moment - first).total_seconds() >= webhooks.GIVE_UP_SECONDS
    assert listed["status"] == "failed" and listed["attempts"] == len(receiver.got) == len(delays) + 1
    (dead,) = dead_letters(aws_env)
    assert dead["event"] == detail and dead["deliveryId"] == detail["eventId"]


def clock_from(text: str) -> Any:
    return clock.parse_iso(text)


def test_an_open_circuit_holds_deliveries_without_calling(
    aws_env: Any, httpserver: HTTPServer, clock: FrozenClock
) -> None:
    """Given an endpoint that has failed 5 times in a row, when more events come, then they are scheduled for after
    the cool-down without a call; a healthy tenant's endpoint is served meanwhile."""
    dead, healthy = Receiver(httpserver, "/dead", 503), Receiver(httpserver, "/healthy")
    register(dead, B)
    register(healthy, A)
    for _ in range(webhooks.BREAKER_THRESHOLD + 2):
        emit(B)
    emit(A)
    deliver(aws_env, one_at_a_time=True)
    assert len(dead.got) == webhooks.BREAKER_THRESHOLD and len(healthy.got) == 1
    held = [d for d in deliveries(B) if d["attempts"] == 0]
    assert len(held) == 2 and all(d["history"][-1]["error"] == "circuit_open" for d in held)
    assert {d["nextAttemptAt"] for d in held} == {clock_iso(clock, webhooks.BREAKER_COOLDOWN_SECONDS)}


def test_during_a_rotation_both_secrets_verify_and_after_it_only_the_new(
    aws_env: Any, httpserver: HTTPServer, clock: FrozenClock
) -> None:
    """Given a secret rotated with a one-hour grace, then a delivery within the hour verifies with either secret,
    and one after it with the new secret only."""
    receiver = Receiver(httpserver, "/hooks")
    old = register(receiver)
    status, rotated = hooks("POST /webhooks/rotate-secret", body={"graceSeconds": 3600})
    new = rotated["data"]["secret"]
    assert status == 200 and new.startswith("whsec_") and new != old
    verify = readme_verify()
    emit()
    deliver(aws_env)
    clock.advance(seconds=3601)
    emit()
    deliver(aws_env)
    during, after = receiver.got
    forever = 10**12  # the frozen clock is not the README code's clock
    assert verify(old, during["headers"], during["body"], forever) and verify(
        new, during["headers"], during["body"], forever
    )
    assert verify(new, after["headers"], after["body"], forever) and not verify(
        old, after["headers"], after["body"], forever
    )


def test_another_tenant_never_receives_lists_or_retries_your_deliveries(aws_env: Any, httpserver: HTTPServer) -> None:
    """Given tenants A and B with endpoints, when A's event is delivered, then B's receiver got nothing, B's list is
    empty, and B's retry of A's delivery is a 404 (not a 403)."""
    mine, theirs = Receiver(httpserver, "/a"), Receiver(httpserver, "/b")
    register(mine, A)
    register(theirs, B)
    detail = emit(A)
    deliver(aws_env)
    assert len(mine.got) == 1 and theirs.got == []
    assert deliveries(B) == [] and [d["id"] for d in deliveries(A)] == [detail["eventId"]]
    status, body = hooks("POST /webhooks/deliveries/{id}/retry", B, path_id=detail["eventId"])
    assert (status, body["error"]["code"]) == (404, "not_found")


def test_a_retry_resends_now_with_the_same_webhook_id(aws_env: Any, httpserver: HTTPServer) -> None:
    """Given a delivery that failed with a 410, when the tenant retries it, then the queue gets it and the receiver
    gets it again with the same webhook-id."""
    receiver = Receiver(httpserver, "/hooks", 410, 200)
    register(receiver)
    detail = emit()
    deliver(aws_env)
    status, body = hooks("POST /webhooks/deliveries/{id}/retry", path_id=detail["eventId"])
    assert (status, body["data"]["status"]) == (202, "pending")
    deliver(aws_env)
    assert receiver.ids() == [detail["eventId"]] * 2
    assert deliveries()[0]["status"] == "delivered"


def test_the_endpoint_api_never_shows_the_secret_again(aws_env: Any, httpserver: HTTPServer) -> None:
    """PUT shows the secret once; GET and a second PUT (a new URL) do not; DELETE removes it; scopes apply."""
    receiver = Receiver(httpserver, "/hooks")
    register(receiver)
    status, got = hooks("GET /webhooks")
    assert status == 200 and got["data"]["url"] == receiver.url and got["data"]["secret"] is None
    status, changed = hooks("PUT /webhooks", body={"url": receiver.url + "?v=2"})
    assert status == 200 and changed["data"]["secret"] is None
    assert hooks("PUT /webhooks", scopes="credentials:read", body={"url": receiver.url})[0] == 403
    assert hooks("DELETE /webhooks")[0] == 200
    assert hooks("GET /webhooks")[0] == 404


@pytest.mark.parametrize("url", ["https://127.0.0.1/hooks", "https://10.0.0.8/hooks", "http://example.com/hooks"])
def test_a_private_or_plain_http_url_is_refused(aws_env: Any, monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    """Given private targets not allowed (as on AWS), a URL to a private address or over plain http is a 400."""
    monkeypatch.setenv("GRANTLINK_ALLOW_PRIVATE_TARGETS", "false")
    config.reset()
    status, body = hooks("PUT /webhooks", body={"url": url})
    assert (status, body["error"]["code"]) == (400, "webhook_url_not_allowed")


def test_a_webhook_body_holds_no_secret(aws_env: Any, httpserver: HTTPServer, table_items: Any) -> None:
    """Given a customer connecting a credential (its events go out), then no webhook body holds the submitted secret
    or a signing secret, and the table holds the signing secret only sealed."""
    from tests.helpers import SECRET

    receiver = Receiver(httpserver, "/hooks")
    secret = register(receiver)
    connected()
    deliver(aws_env)
    assert receiver.got
    for got in receiver.got:
        assert SECRET.encode() not in got["body"] and b"whsec_" not in got["body"] and b"token=" not in got["body"]
    assert secret not in json.dumps(table_items(), default=str)
