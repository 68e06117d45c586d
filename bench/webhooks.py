"""Webhook delivery: throughput to a local receiver, and the AWS calls each event adds.

moto stands in for DynamoDB, KMS, SQS and EventBridge in process (bench/calls.py's environment); the receiver is a
real HTTP server on 127.0.0.1 answering 200. Events are emitted to the bus (the template's rule puts them on the
webhook queue), then the delivery function's handler runs on batches of ten, as Lambda's SQS poller would: the
throughput is events signed, sent and recorded per second by one warm function instance. The AWS calls are counted
at `BaseClient._make_api_call` for one event's first attempt; producers add none (the rule does the routing).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import boto3

from bench import calls
from bench.calls import TENANT, counting
from infra.local.gateway import LambdaContext
from tests.helpers import ALL_SCOPES, event, function, invoke, reroute

EVENTS, SMALL_EVENTS = 200, 20


def run(small: bool = False) -> str:
    count = SMALL_EVENTS if small else EVENTS
    with calls.environment() as server:
        received: list[int] = []
        server.expect_request("/hooks", method="POST").respond_with_handler(lambda _: _ok(received))
        _register(server.url_for("/hooks"))
        seconds, _ = _deliver(count)
        _, counted = _deliver(1, count_calls=True)
    assert len(received) == count + 1, len(received)
    per_second = count / seconds
    return "\n".join(
        [
            "## Webhooks",
            "",
            f"{count} events emitted to the bus, then delivered by the warm delivery function in batches of ten to a "
            "receiver on 127.0.0.1 (each signed, sent over HTTP and recorded):",
            "",
            "| events | seconds | events per second |",
            "| --- | --- | --- |",
            f"| {count} | {seconds:.2f} | {per_second:.0f} |",
            "",
            f"AWS calls the delivery function makes per event (first attempt, delivered): {counted.listing()}. "
            "Producers add no call (their PutEvents is the one they made before; the rule routes it), and SQS's "
            "receive and delete are Lambda's. A retry adds 1 UpdateItem (the lease) and a Decrypt of the stored body; "
            "the sweep's due-index read is shared.",
        ]
    )


def _ok(received: list[int]) -> Any:
    from werkzeug import Response

    received.append(1)
    return Response("ok", 200)


def _register(url: str) -> None:
    evt = reroute(event("get_credential", tenant=TENANT, scopes=ALL_SCOPES, body={"url": url}), "PUT /webhooks",
                  "/webhooks")  # fmt: skip
    evt["pathParameters"] = None
    status, body, _ = invoke("webhooks", evt)
    assert status == 201, body


def _deliver(count: int, count_calls: bool = False) -> tuple[float, calls.Calls]:
    """Emit `count` events (not timed), then time the delivery function draining the webhook queue."""
    from grantlink import config, events

    for _ in range(count):
        events.emit("credential.refreshed", TENANT, credentialId="cred_bench", partnerId=9001, accessExpiresAt=None)
    sqs, url = boto3.client("sqs"), config.settings().webhook_queue_url
    messages: list[dict[str, Any]] = []
    while batch := sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", []):
        messages += [dict(m) for m in batch]
    handler = function("webhook_delivery").lambda_handler
    started, counter = time.perf_counter(), calls.Calls()
    for at in range(0, len(messages), 10):
        records = [
            {"messageId": m["MessageId"], "receiptHandle": m["ReceiptHandle"], "body": m["Body"], "attributes": {},
             "messageAttributes": {}, "md5OfBody": "", "eventSource": "aws:sqs", "eventSourceARN": "q",
             "awsRegion": "us-east-1"}
            for m in messages[at : at + 10]
        ]  # fmt: skip
        with counting() if count_calls else _nothing() as counted:
            assert handler({"Records": records}, LambdaContext("delivery", 60)) == {"batchItemFailures": []}
        counter = counted or counter
    return time.perf_counter() - started, counter


@contextmanager
def _nothing() -> Iterator[None]:
    yield
