"""The local stand-ins for EventBridge Scheduler and Lambda's SQS event source, and a printer for bus events.

Every `GRANTLINK_SWEEP_INTERVAL_SECONDS` (60 by default; 0 turns the timer off) the runner invokes the function
that has a `ScheduleV2` event, with the event that schedule's `Input` describes, then drains the queue that feeds
the function with an `SQS` event the way Lambda does: up to `BatchSize` records per invocation, the messages not
reported in `batchItemFailures` deleted, the others left to reappear after the visibility timeout (and to move to
the dead-letter queue after `maxReceiveCount` receives). `POST /_local/sweep` runs the same thing once.
"""

from __future__ import annotations

import base64
import json
import re
import sys
import threading
import traceback
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from infra.local.gateway import LambdaContext
from infra.local.template import FunctionSpec, Resolver, event_sources

SWEEP_INTERVAL_VARIABLE = "GRANTLINK_SWEEP_INTERVAL_SECONDS"
DEFAULT_SWEEP_INTERVAL = 60.0
MAX_BATCHES = 100  # one drain's bound: a worker that keeps failing its records cannot keep the runner busy
EVENT_PATTERN = {"source": ["grantlink"]}
LINK_TOKEN = re.compile(r"([?&]token=)[^&#\s\"]+")
# A schedule without an `Input`: an EventBridge-style scheduled event.
DEFAULT_INPUT = json.dumps(
    {
        "id": "<aws.scheduler.execution-id>",
        "time": "<aws.scheduler.scheduled-time>",
        "source": "aws.scheduler",
        "detail-type": "Scheduled Event",
        "detail": {},
    }
)
Invoke = Callable[[dict[str, Any], Any], Any]  # a handler: (event, context) -> result


@dataclass(frozen=True)
class Drained:
    processed: int  # handled and deleted
    failed: int  # reported (or crashed) and left on the queue for a retry


@dataclass
class QueueSource:
    """Lambda's SQS event source mapping with `ReportBatchItemFailures`, for one queue and one function."""

    sqs: Any
    queue_url: str
    queue_arn: str
    worker: Invoke
    function_name: str = "worker"
    timeout: int = 60
    batch_size: int = 10

    def drain(
        self,
        max_batches: int = MAX_BATCHES,
        visibility_timeout: int | None = None,
        stopping: threading.Event | None = None,
    ) -> Drained:
        """Deliver batches until a receive comes back empty (failed messages stay invisible meanwhile)."""
        processed = failed = 0
        for _ in range(max_batches):
            messages = [] if stopping and stopping.is_set() else self._receive(visibility_timeout)
            if not messages:
                break
            succeeded, failures = self._deliver(messages)
            self._delete(succeeded)
            processed, failed = processed + len(succeeded), failed + len(failures)
        return Drained(processed, failed)

    def _receive(self, visibility_timeout: int | None) -> list[dict[str, Any]]:
        kwargs: dict[str, Any] = {
            "QueueUrl": self.queue_url,
            "MaxNumberOfMessages": self.batch_size,
            "MessageSystemAttributeNames": ["All"],
            "MessageAttributeNames": ["All"],
        }
        if visibility_timeout is not None:
            kwargs["VisibilityTimeout"] = visibility_timeout
        return list(self.sqs.receive_message(**kwargs).get("Messages", []))

    def _deliver(self, messages: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        context = LambdaContext(function_name=self.function_name, timeout_seconds=self.timeout)
        try:
            result = self.worker(sqs_event(messages, self.queue_arn), context)
        except Exception:  # noqa: BLE001 - as in Lambda, a crashed invocation fails its whole batch
            traceback.print_exc()
            return [], messages
        failing = reported_failures(result, {m["MessageId"] for m in messages})
        succeeded = [m for m in messages if m["MessageId"] not in failing]
        return succeeded, [m for m in messages if m["MessageId"] in failing]

    def _delete(self, messages: list[dict[str, Any]]) -> None:
        if not messages:
            return
        entries = [{"Id": str(n), "ReceiptHandle": m["ReceiptHandle"]} for n, m in enumerate(messages)]
        answer = self.sqs.delete_message_batch(QueueUrl=self.queue_url, Entries=entries)
        if answer.get("Failed"):
            _log("WARNING", "renewal messages not deleted", failed=len(answer["Failed"]))


def reported_failures(result: Any, batch: set[str]) -> set[str]:
    """The message ids a partial batch response fails. Like Lambda: no answer, or an empty list, fails none; an
    answer that is not an object, or names an id that is empty or not in the batch, fails the whole batch."""
    if result is None:
        return set()
    if not isinstance(result, dict):
        return set(batch)
    failures = result.get("batchItemFailures") or []
    reported = {f.get("itemIdentifier") if isinstance(f, dict) else None for f in failures}
    return {str(r) for r in reported} if reported <= batch else set(batch)


def sqs_event(messages: list[dict[str, Any]], queue_arn: str) -> dict[str, Any]:
    """The event Lambda's SQS poller hands a function, built from ReceiveMessage's answer."""
    region = queue_arn.split(":")[3]
    return {"Records": [_record(m, queue_arn, region) for m in messages]}


def _record(message: dict[str, Any], queue_arn: str, region: str) -> dict[str, Any]:
    record = {
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": message["Body"],
        "attributes": dict(message.get("Attributes", {})),
        "messageAttributes": {k: _attribute(v) for k, v in message.get("MessageAttributes", {}).items()},
        "md5OfBody": message["MD5OfBody"],
        "eventSource": "aws:sqs",
        "eventSourceARN": queue_arn,
        "awsRegion": region,
    }
    if "MD5OfMessageAttributes" in message:
        record["md5OfMessageAttributes"] = message["MD5OfMessageAttributes"]
    return record


def _attribute(value: dict[str, Any]) -> dict[str, Any]:
    converted: dict[str, Any] = {"stringListValues": [], "binaryListValues": [], "dataType": value["DataType"]}
    if "StringValue" in value:
        converted["stringValue"] = value["StringValue"]
    if "BinaryValue" in value:
        converted["binaryValue"] = base64.b64encode(value["BinaryValue"]).decode()
    return converted


def scheduler_event(schedule_input: str | None, schedule_arn: str, now: datetime | None = None) -> dict[str, Any]:
    """What EventBridge Scheduler sends: the schedule's `Input` with its context attributes filled in. The time
    keeps milliseconds so two local runs within one second are two runs (the sweep's idempotency key)."""
    moment = (now or datetime.now(timezone.utc)).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    values = {
        "scheduled-time": moment,
        "execution-id": uuid.uuid4().hex[:16],
        "schedule-arn": schedule_arn,
        "attempt-number": "1",
    }
    filled = re.sub(r"<aws\.scheduler\.([a-z-]+)>", lambda m: values[m.group(1)], schedule_input or DEFAULT_INPUT)
    return dict(json.loads(filled))


class JobRunner:
    """The sweep, then a drain of the renewal queue; on a timer, or once on demand. Runs never overlap. The other
    SQS-fed functions' queues (`others`: the webhook queue) are drained after each run, and every second by
    `poll_others` (Lambda polls them continuously)."""

    def __init__(
        self, sweep: Callable[[], Any], source: QueueSource, interval: float, others: tuple[QueueSource, ...] = ()
    ) -> None:
        self.sweep = sweep
        self.source = source
        self.interval = interval
        self.others = others
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    def run_once(self) -> dict[str, int]:
        with self._lock:
            answer = self.sweep()
            queued = int(answer.get("queued", 0)) if isinstance(answer, dict) else 0
            drained = self.source.drain(stopping=self.stopping)
            processed, failed = drained.processed, drained.failed
            for other in self.others:
                more = other.drain(stopping=self.stopping)
                processed, failed = processed + more.processed, failed + more.failed
        counts = {"queued": queued, "processed": processed, "failed": failed}
        if any(counts.values()):
            _log("INFO", "renewal run", **counts)
        return counts

    def start(self, *others: Callable[[], None]) -> None:
        """The timer (unless the interval is 0) and any other loops that should stop with it."""
        for loop in [*others, self._timer] if self.interval > 0 else others:
            thread = threading.Thread(target=loop, name="local-jobs", daemon=True)
            thread.start()
            self._threads.append(thread)

    def poll_others(self) -> None:
        """Drain the other queues every second until the runner stops."""
        while not self.stopping.wait(1):
            for other in self.others:
                try:
                    other.drain(stopping=self.stopping)
                except Exception:  # noqa: BLE001 - moto stopping under us; anything else is reported
                    if not self.stopping.is_set():
                        _log("ERROR", "queue drain failed", traceback=traceback.format_exc())

    def stop(self, timeout: float = 10) -> None:
        self.stopping.set()
        for thread in self._threads:
            thread.join(timeout)

    def _timer(self) -> None:
        while not self.stopping.wait(self.interval):
            try:
                self.run_once()
            except Exception:  # noqa: BLE001 - a failed run is reported; the next one is due on time regardless
                _log("ERROR", "renewal run failed", traceback=traceback.format_exc())


@dataclass
class EventPrinter:
    """Every event on the stack's bus as one JSON line on stdout: a rule sends them to a local queue."""

    sqs: Any
    queue_url: str
    stopping: threading.Event = field(default_factory=threading.Event)

    @classmethod
    def create(cls, sqs: Any, events: Any, bus: str, name: str, stopping: threading.Event) -> EventPrinter:
        url = sqs.create_queue(QueueName=name)["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        events.put_rule(Name=name, EventBusName=bus, EventPattern=json.dumps(EVENT_PATTERN))
        events.put_targets(Rule=name, EventBusName=bus, Targets=[{"Id": "local-events", "Arn": arn}])
        return cls(sqs, url, stopping)

    def poll_once(self, wait_seconds: int = 1) -> int:
        messages = self.sqs.receive_message(
            QueueUrl=self.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=wait_seconds
        ).get("Messages", [])
        for message in messages:
            event = printable(json.loads(message["Body"]))
            say({"level": "INFO", "local": "event", "event": event})
            self.sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=message["ReceiptHandle"])
        return len(messages)

    def loop(self) -> None:
        while not self.stopping.is_set():
            try:
                self.poll_once()
            except Exception:  # noqa: BLE001 - moto stopping under us ends the loop; anything else is reported
                if not self.stopping.is_set():
                    _log("ERROR", "event printer failed", traceback=traceback.format_exc())
                    self.stopping.wait(1)


def printable(event: dict[str, Any]) -> dict[str, Any]:
    """The event with link tokens (a reauthorize link carries one) and secret-looking values masked: the local
    stack's log holds no secret (SECURITY.md O11). The link's id is still there to look it up."""
    from grantlink.observability import MASK, redact, redact_text

    text = LINK_TOKEN.sub(rf"\g<1>{MASK}", redact_text(json.dumps(redact(event))))
    return dict(json.loads(text))


def from_template(
    tpl: dict[str, Any],
    resolver: Resolver,
    handlers: Mapping[str, Invoke],
    sqs: Any,
    interval: float,
) -> JobRunner:
    """The runner for the template's one ScheduleV2 function, the SQS-fed function it feeds (the renewal worker)
    and every other SQS-fed function (the webhook delivery); `handlers` by logical id."""
    sweeper, event_name, schedule = _only(tpl, "ScheduleV2")
    swept = _swept_queue(tpl, sweeper)
    feeds = event_sources(tpl, "SQS")
    (worker, _, feed), *_more = [f for f in feeds if f[2]["Queue"]["Fn::GetAtt"][0] == swept]
    region, account, stack = (resolver.ref(f"AWS::{n}") for n in ("Region", "AccountId", "StackName"))
    schedule_arn = f"arn:aws:scheduler:{region}:{account}:schedule/default/{stack}-{event_name}"

    def sweep() -> Any:
        return _call(handlers, sweeper, scheduler_event(schedule.get("Input"), schedule_arn))

    source = _source(sqs, resolver, worker, feed, handlers)
    others = tuple(
        _source(sqs, resolver, spec, props, handlers)
        for spec, _, props in feeds
        if spec.logical_id != worker.logical_id and spec.logical_id in handlers
    )
    return JobRunner(sweep, source, interval, others)


def _swept_queue(tpl: dict[str, Any], sweeper: FunctionSpec) -> str:
    """The queue the scheduled function sends to (its SQSSendMessagePolicy): the renewal queue."""
    for policy in tpl["Resources"][sweeper.logical_id]["Properties"].get("Policies", []):
        if isinstance(policy, dict) and "SQSSendMessagePolicy" in policy:
            return str(policy["SQSSendMessagePolicy"]["QueueName"]["Fn::GetAtt"][0])
    raise RuntimeError(f"{sweeper.logical_id} sends to no queue")


def _source(
    sqs: Any, resolver: Resolver, spec: FunctionSpec, feed: dict[str, Any], handlers: Mapping[str, Invoke]
) -> QueueSource:
    queue = feed["Queue"]["Fn::GetAtt"][0]
    return QueueSource(
        sqs=sqs,
        queue_url=resolver.ref(queue),
        queue_arn=resolver.attrs[queue]["Arn"],
        worker=handlers[spec.logical_id],
        function_name=spec.logical_id,
        timeout=spec.timeout,
        batch_size=int(feed.get("BatchSize", 10)),
    )


def _only(tpl: dict[str, Any], kind: str) -> tuple[FunctionSpec, str, dict[str, Any]]:
    found = event_sources(tpl, kind)
    if len(found) != 1:
        raise RuntimeError(f"the local stack runs one function with a {kind} event; template.yaml has {len(found)}")
    return found[0]


def _call(handlers: Mapping[str, Invoke], spec: FunctionSpec, event: dict[str, Any]) -> Any:
    return handlers[spec.logical_id](event, LambdaContext(function_name=spec.logical_id, timeout_seconds=spec.timeout))


def _log(level: str, message: str, **fields: Any) -> None:
    say({"level": level, "local": "jobs", "message": message, **fields})


_say_lock = threading.Lock()


def say(record: Mapping[str, Any]) -> None:
    """Print one JSON log line in a single write, so lines from the stack's threads never interleave
    (print() writes the text and the newline separately)."""
    line = json.dumps(record) + "\n"
    with _say_lock:
        sys.stdout.write(line)
        sys.stdout.flush()
