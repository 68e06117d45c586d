"""The local stack's queues (provisioned from template.yaml in moto) and its job runner: the stand-in for the
schedule and for Lambda's SQS event source, driven here by fake handlers (R2's partial batch shape)."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest

from infra.local import jobs, template


@pytest.fixture
def sqs(aws_env: dict[str, Any]) -> Any:
    return boto3.client("sqs")


@pytest.fixture
def queue(aws_env: dict[str, Any]) -> tuple[str, str]:
    """(URL, ARN) of the renewal queue."""
    resolver = aws_env["resolver"]
    return resolver.ref("RenewalQueue"), resolver.attrs["RenewalQueue"]["Arn"]


def source(sqs: Any, queue: tuple[str, str], worker: jobs.Invoke) -> jobs.QueueSource:
    return jobs.QueueSource(sqs=sqs, queue_url=queue[0], queue_arn=queue[1], worker=worker)


def send(sqs: Any, queue: tuple[str, str], *bodies: str) -> None:
    for body in bodies:
        sqs.send_message(QueueUrl=queue[0], MessageBody=body)


def visible_bodies(sqs: Any, queue: tuple[str, str]) -> list[str]:
    """What a consumer would receive now (and leaves visible again at once)."""
    answer = sqs.receive_message(QueueUrl=queue[0], MaxNumberOfMessages=10, VisibilityTimeout=0)
    return sorted(m["Body"] for m in answer.get("Messages", []))


def failing(*bad_bodies: str) -> tuple[jobs.Invoke, list[dict[str, Any]]]:
    """A worker that reports the records with these bodies as failed; and the events it was given."""
    seen: list[dict[str, Any]] = []

    def worker(event: dict[str, Any], context: Any) -> dict[str, Any]:
        seen.append(event)
        failed = [r["messageId"] for r in event["Records"] if r["body"] in bad_bodies]
        return {"batchItemFailures": [{"itemIdentifier": m} for m in failed]}

    return worker, seen


# --- provisioned from the template --------------------------------------------------------------------------------


def test_the_renewal_queue_redrives_to_its_dead_letter_queue(
    sqs: Any, queue: tuple[str, str], aws_env: dict[str, Any]
) -> None:
    attributes = sqs.get_queue_attributes(QueueUrl=queue[0], AttributeNames=["All"])["Attributes"]
    redrive = json.loads(attributes["RedrivePolicy"])
    assert redrive["deadLetterTargetArn"] == aws_env["resolver"].attrs["RenewalDeadLetterQueue"]["Arn"]
    assert int(redrive["maxReceiveCount"]) == 5
    dead_letters = aws_env["resolver"].ref("RenewalDeadLetterQueue")
    retention = sqs.get_queue_attributes(QueueUrl=dead_letters, AttributeNames=["MessageRetentionPeriod"])
    assert retention["Attributes"]["MessageRetentionPeriod"] == str(14 * 24 * 3600)


def test_the_sweep_dead_letter_queue_exists(sqs: Any, aws_env: dict[str, Any]) -> None:
    assert sqs.get_queue_url(QueueName="unit-SweepDeadLetterQueue")["QueueUrl"] == aws_env["resolver"].ref(
        "SweepDeadLetterQueue"
    )


def test_functions_are_given_the_renewal_queue_url(queue: tuple[str, str], aws_env: dict[str, Any]) -> None:
    assert aws_env["env"]["GRANTLINK_RENEWAL_QUEUE_URL"] == queue[0]


# --- the SQS event source ---------------------------------------------------------------------------------------


def test_a_reported_record_stays_on_the_queue_and_the_others_are_deleted(sqs: Any, queue: tuple[str, str]) -> None:
    """Given three messages and a worker that fails one, when a batch is delivered, then only that one is kept
    and it comes back (here at once: visibility 0 instead of waiting out the timeout)."""
    send(sqs, queue, "ok-1", "bad", "ok-2")
    worker, _ = failing("bad")
    drained = source(sqs, queue, worker).drain(max_batches=1, visibility_timeout=0)
    assert drained == jobs.Drained(processed=2, failed=1)
    assert visible_bodies(sqs, queue) == ["bad"]


def test_the_worker_gets_the_records_in_lambdas_sqs_shape(sqs: Any, queue: tuple[str, str]) -> None:
    sqs.send_message(
        QueueUrl=queue[0],
        MessageBody='{"pk": "CRED#crd_1"}',
        MessageAttributes={"kind": {"DataType": "String", "StringValue": "cred"}},
    )
    worker, seen = failing()
    source(sqs, queue, worker).drain()
    (record,) = seen[0]["Records"]
    assert record["body"] == '{"pk": "CRED#crd_1"}'
    assert (record["eventSource"], record["eventSourceARN"], record["awsRegion"]) == ("aws:sqs", queue[1], "us-east-1")
    assert record["messageId"] and record["receiptHandle"] and record["md5OfBody"]
    assert record["attributes"]["ApproximateReceiveCount"] == "1"
    assert record["messageAttributes"]["kind"] == {
        "stringValue": "cred", "stringListValues": [], "binaryListValues": [], "dataType": "String"
    }  # fmt: skip


def test_a_crashed_worker_fails_its_whole_batch(sqs: Any, queue: tuple[str, str]) -> None:
    send(sqs, queue, "a", "b")

    def crash(event: dict[str, Any], context: Any) -> None:
        raise RuntimeError("boom")

    assert source(sqs, queue, crash).drain(max_batches=1, visibility_timeout=0) == jobs.Drained(0, 2)
    assert visible_bodies(sqs, queue) == ["a", "b"]


@pytest.mark.parametrize(
    ("answer", "failed"),
    [
        (None, set()),
        ({}, set()),
        ({"batchItemFailures": []}, set()),
        ({"batchItemFailures": [{"itemIdentifier": "m2"}]}, {"m2"}),
        ({"batchItemFailures": [{"itemIdentifier": "not-in-batch"}]}, {"m1", "m2"}),
        ({"batchItemFailures": [{"itemIdentifier": ""}]}, {"m1", "m2"}),
        ({"batchItemFailures": [{}]}, {"m1", "m2"}),
        ("not an object", {"m1", "m2"}),
    ],
)
def test_partial_batch_answers_are_read_as_lambda_reads_them(answer: Any, failed: set[str]) -> None:
    assert jobs.reported_failures(answer, {"m1", "m2"}) == failed


def test_a_drain_delivers_batches_until_the_queue_is_empty(sqs: Any, queue: tuple[str, str]) -> None:
    send(sqs, queue, *(f"m{n}" for n in range(23)))
    worker, seen = failing()
    assert source(sqs, queue, worker).drain() == jobs.Drained(processed=23, failed=0)
    assert all(len(event["Records"]) <= 10 for event in seen) and len(seen) >= 3
    assert visible_bodies(sqs, queue) == []


def test_a_drain_ends_when_only_failed_messages_remain(sqs: Any, queue: tuple[str, str]) -> None:
    """Failed messages are invisible for the queue's visibility timeout, so the drain does not spin on them."""
    send(sqs, queue, "bad-1", "bad-2")
    worker, seen = failing("bad-1", "bad-2")
    assert source(sqs, queue, worker).drain() == jobs.Drained(processed=0, failed=2)
    assert len(seen) == 1


# --- the runner: the template's schedule, then the queue ----------------------------------------------------------


def test_a_run_invokes_the_templates_sweep_with_a_scheduler_event_then_drains_the_queue(
    sqs: Any, queue: tuple[str, str], aws_env: dict[str, Any]
) -> None:
    sweeps: list[dict[str, Any]] = []

    def sweep(event: dict[str, Any], context: Any) -> dict[str, int]:
        sweeps.append(event)
        send(sqs, queue, "due-1", "due-2", "due-3")
        return {"queued": 3}

    worker, _ = failing("due-2")
    handlers = {"ExpirySweepFunction": sweep, "RenewalWorkerFunction": worker}
    runner = jobs.from_template(template.load(), aws_env["resolver"], handlers, sqs, interval=0)
    assert runner.run_once() == {"queued": 3, "processed": 2, "failed": 1}
    (event,) = sweeps
    assert (event["source"], event["detail-type"]) == ("aws.scheduler", "Scheduled Event")
    assert datetime.fromisoformat(event["time"]).tzinfo is not None
    assert event["detail"]["executionId"] and event["detail"]["attempt"] == "1"


def test_scheduler_events_fill_in_the_schedules_context_attributes() -> None:
    schedule_input = '{"time": "<aws.scheduler.scheduled-time>", "resources": ["<aws.scheduler.schedule-arn>"]}'
    event = jobs.scheduler_event(
        schedule_input, "arn:aws:scheduler:r:1:schedule/default/s", datetime(2026, 1, 2, tzinfo=UTC)
    )
    assert event == {"time": "2026-01-02T00:00:00.000Z", "resources": ["arn:aws:scheduler:r:1:schedule/default/s"]}


def test_stopping_the_runner_ends_its_timer(sqs: Any, queue: tuple[str, str]) -> None:
    ran = threading.Event()

    def sweep() -> dict[str, int]:
        ran.set()
        return {"queued": 0}

    runner = jobs.JobRunner(sweep, source(sqs, queue, failing()[0]), interval=0.01)
    runner.start()
    assert ran.wait(5)
    runner.stop(timeout=5)
    assert not any(thread.is_alive() for thread in runner._threads)


# --- bus events printed ----------------------------------------------------------------------------------------


def test_each_bus_event_is_printed_as_one_json_line(
    sqs: Any, aws_env: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    bus = aws_env["env"]["GRANTLINK_EVENT_BUS"]
    printer = jobs.EventPrinter.create(sqs, boto3.client("events"), bus, "unit-local-events", threading.Event())
    boto3.client("events").put_events(
        Entries=[
            {
                "Source": "grantlink",
                "DetailType": "credential.refreshed",
                "Detail": '{"credentialId": "crd_1"}',
                "EventBusName": bus,
            }
        ]
    )
    assert printer.poll_once(wait_seconds=0) == 1
    (line,) = capsys.readouterr().out.splitlines()
    printed = json.loads(line)
    assert (printed["level"], printed["local"]) == ("INFO", "event")
    assert printed["event"]["detail-type"] == "credential.refreshed"
    assert printed["event"]["detail"] == {"credentialId": "crd_1"}
