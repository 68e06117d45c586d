"""SECURITY.md "Jobs" (R1–R4): the renewal sweep and worker — idempotent runs, partial batch failure, provider
timeouts — against moto and the fake OAuth partner, and the template's DLQs, retries, reserved concurrency,
throttles and alarms (R4, read from template.yaml). tests/integration/test_renewal_http.py runs the jobs in the
local stack; tests/unit/test_local_jobs.py covers the local stand-in for the schedule and the SQS event source.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from grantlink import config, renewal
from grantlink.store import default as default_store
from infra.local import template
from infra.local.gateway import LambdaContext
from tests.helpers import function, queued, work
from tests.helpers import resource_properties as props
from tests.unit.oauth_fakes import FakeAuthorizationServer, connected_credential, expire_access_token

TPL = template.load()


def only_event(kind: str) -> tuple[str, dict[str, Any]]:
    """(function logical id, event properties) of the template's one event of this SAM type."""
    ((function, _, properties),) = template.event_sources(TPL, kind)
    return function.logical_id, properties


# --- R1–R3: the sweep and the worker ------------------------------------------------------------------------


def test_r1_the_same_schedule_event_twice_queues_once(aws_env: Any, provider_server: FakeAuthorizationServer) -> None:
    """R1: Scheduler delivering one event twice → one sweep; and duplicate messages → one refresh."""
    credential_id = connected_credential(provider_server)
    expire_access_token(credential_id)
    sweep = function("expiry_sweep").lambda_handler
    event = {"id": "schedule-event-1", "time": "2026-11-22T10:00:00Z", "source": "aws.scheduler"}
    first = sweep(event, LambdaContext("sweep", 60))
    second = sweep(event, LambdaContext("sweep", 60))
    assert first == second and first["queued"] >= 1
    messages = queued(aws_env)
    assert len(messages) == first["queued"]
    calls = len(provider_server.calls)
    work(messages + messages)  # every message delivered twice
    assert len(provider_server.calls) - calls == 1


def test_r2_one_bad_record_fails_alone(aws_env: Any, provider_server: FakeAuthorizationServer) -> None:
    """R2: a batch of a good message and a broken one → only the broken one's id is reported as failed, and the
    good one is processed."""
    credential_id = connected_credential(provider_server)
    expire_access_token(credential_id)
    renewal.sweep()
    good = queued(aws_env)
    bad = {"MessageId": "bad-1", "ReceiptHandle": "r", "Body": "{not json"}
    answer = work([*good, bad])
    assert answer == {"batchItemFailures": [{"itemIdentifier": "bad-1"}]}
    assert default_store().get_credential(credential_id).last_refreshed_at  # type: ignore[union-attr]


def test_r3_a_hanging_provider_is_a_timeout_well_inside_the_function_timeout(
    aws_env: Any, provider_server: FakeAuthorizationServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """R3: a provider that hangs (3 s, read timeout 0.5 s) → refresh_failed well inside the function timeout."""
    credential_id = connected_credential(provider_server)
    expire_access_token(credential_id)
    monkeypatch.setenv("GRANTLINK_TEST_READ_TIMEOUT", "0.5")
    config.reset()
    provider_server.delay = 3
    started = time.monotonic()
    assert renewal.renew_credential(credential_id, default_store()) == "refresh_failed"
    assert time.monotonic() - started < 2.5


def test_sweep_event_keys_a_run_by_its_scheduled_time() -> None:
    """R1: the sweep's idempotency key must be the same on every retry of one run. Scheduler's scheduled time is;
    its execution id is not, so it must not pose as the event's `id`."""
    _, schedule = only_event("ScheduleV2")
    sent = json.loads(schedule["Input"])
    assert sent["time"] == "<aws.scheduler.scheduled-time>"
    assert "id" not in sent


# --- R4: failures are retried, parked and alarmed; load is bounded ----------------------------------------------


def test_renewal_queue_redrives_to_its_dead_letter_queue_after_five_receives() -> None:
    """R4: a renewal message received five times goes to a DLQ that keeps it 14 days."""
    assert props("RenewalQueue")["RedrivePolicy"] == {
        "deadLetterTargetArn": {"Fn::GetAtt": ["RenewalDeadLetterQueue", "Arn"]},
        "maxReceiveCount": 5,
    }
    assert props("RenewalDeadLetterQueue")["MessageRetentionPeriod"] == 14 * 24 * 3600


def test_renewal_queue_visibility_outlasts_six_worker_timeouts() -> None:
    """R4: Lambda's advice for SQS sources: a message is not redelivered while a retried invocation may still run."""
    assert props("RenewalQueue")["VisibilityTimeout"] >= 6 * props("RenewalWorkerFunction")["Timeout"]


def test_sweep_schedule_retries_then_dead_letters() -> None:
    """R4: the sweep's schedule retries three times within ten minutes, then dead-letters."""
    function, schedule = only_event("ScheduleV2")
    assert function == "ExpirySweepFunction"
    assert schedule["RetryPolicy"] == {"MaximumRetryAttempts": 3, "MaximumEventAgeInSeconds": 600}
    assert schedule["DeadLetterConfig"] == {"Arn": {"Fn::GetAtt": ["SweepDeadLetterQueue", "Arn"]}}


def renewal_worker_event() -> tuple[str, dict[str, Any]]:
    """(function logical id, event properties) of the SQS event that feeds the renewal queue to its worker (the
    webhook delivery function has an SQS event of its own)."""
    ((function, _, properties),) = [
        source for source in template.event_sources(TPL, "SQS") if source[2]["Queue"]["Fn::GetAtt"][0] == "RenewalQueue"
    ]
    return function.logical_id, properties


def worker_concurrency(reserved: int) -> tuple[int | None, int]:
    """(the worker's reserved concurrency, or None when unreserved; the SQS poller's maximum concurrency) when the
    stack is deployed with WorkerReservedConcurrency=`reserved`."""
    function, feed = renewal_worker_event()
    resolver = template.Resolver(TPL, refs={"WorkerReservedConcurrency": reserved, "AWS::NoValue": None})
    reserved_executions = resolver.resolve(props(function).get("ReservedConcurrentExecutions"))
    return reserved_executions, resolver.resolve(feed["ScalingConfig"]["MaximumConcurrency"])


def test_renewal_worker_concurrency_is_bounded_and_it_reports_batch_item_failures() -> None:
    """R4 (and R2's shape): by default the worker reserves nothing (a reservation fails to deploy in an account at
    the default quota of 10) yet the poller runs at most 5 at once; WorkerReservedConcurrency reserves; the worker
    reports batch item failures, ten at a time."""
    function, feed = renewal_worker_event()
    assert (function, feed["Queue"]) == ("RenewalWorkerFunction", {"Fn::GetAtt": ["RenewalQueue", "Arn"]})
    assert TPL["Parameters"]["WorkerReservedConcurrency"]["Default"] == 0
    assert worker_concurrency(0) == (None, 5)
    assert worker_concurrency(8) == (8, 8)
    assert feed["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert feed["BatchSize"] == 10


@pytest.mark.parametrize("reserved", [0, 2, 5, 50])
def test_queue_poller_never_outruns_the_reserved_concurrency(reserved: int) -> None:
    """R4: a throttled SQS poller returns messages to the queue, where the retries count towards the DLQ."""
    reserved_executions, poller = worker_concurrency(reserved)
    assert reserved_executions is None or poller <= reserved_executions
    assert 2 <= poller <= 1000  # what an SQS event source accepts


def test_http_api_is_throttled() -> None:
    """R4: the HTTP API has a rate and a burst limit."""
    limits = props("HttpApi")["DefaultRouteSettings"]
    assert limits["ThrottlingRateLimit"] > 0 and limits["ThrottlingBurstLimit"] > 0


def alarms(namespace: str, metric: str) -> dict[str, dict[str, Any]]:
    """Alarms on any positive value of one metric, by the logical id of the resource they watch."""
    found = {}
    for alarm in template.resources(TPL, "AWS::CloudWatch::Alarm").values():
        p = alarm["Properties"]
        if (p["Namespace"], p["MetricName"], p["Threshold"], p["ComparisonOperator"]) == (
            namespace, metric, 0, "GreaterThanThreshold"
        ):  # fmt: skip
            value = p["Dimensions"][0]["Value"]
            found[value["Ref"] if "Ref" in value else value["Fn::GetAtt"][0]] = p
    return found


def test_both_dead_letter_queues_have_an_alarm() -> None:
    """R4: a message in either dead-letter queue raises an alarm."""
    watched = alarms("AWS/SQS", "ApproximateNumberOfMessagesVisible")
    assert {"RenewalDeadLetterQueue", "SweepDeadLetterQueue"} <= set(watched)


def test_sweep_and_worker_errors_have_an_alarm() -> None:
    """R4: errors of the sweep or the worker raise an alarm (5-minute periods)."""
    watched = alarms("AWS/Lambda", "Errors")
    assert {"ExpirySweepFunction", "RenewalWorkerFunction"} <= set(watched)
    assert all(alarm["Period"] == 300 for alarm in watched.values())
