"""Webhook delivery: one SQS batch of bus events (or manual retries), several at once; each is signed and sent to
its tenant's endpoint. Failures are reported per record (partial batch); retries after a failed attempt go through
the due index, not through this queue."""

import json
from typing import Any

from aws_lambda_powertools.utilities.batch import process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from grantlink import outbound, webhooks  # noqa: F401 - the function's parts, loaded at init like any handler's
from grantlink.batch import ConcurrentBatchProcessor
from grantlink.observability import logger, metrics, tracer

# Ten records at once: a slow endpoint holds one slot for at most its 10 s deadline; 20 s before the timeout no
# new record starts (SQS delivers it again).
processor = ConcurrentBatchProcessor(concurrency=10, reserve_seconds=20)


def handle(record: SQSRecord) -> str:
    processor.time_left_check()
    outcome = webhooks.process_message(json.loads(record.body))
    logger.info("webhook", extra={"outcome": outcome, "message_id": record.message_id})
    return outcome


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler(capture_response=False, capture_error=False)
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return dict(process_partial_response(event=event, record_handler=handle, processor=processor, context=context))
