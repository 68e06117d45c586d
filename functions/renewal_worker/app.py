"""The renewal worker: one SQS batch of due items, several at once; failures are reported per record (partial
batch), and records it has no time left to finish are reported failed before they start (grantlink.batch)."""

import json
from typing import Any

from aws_lambda_powertools.utilities.batch import process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from grantlink import events, links, oauth, renewal  # noqa: F401 - the worker's parts, loaded at init like any handler's
from grantlink.batch import ConcurrentBatchProcessor
from grantlink.observability import logger, metrics, tracer

processor = ConcurrentBatchProcessor(renewal.WORKER_CONCURRENCY, renewal.RECORD_RESERVE_SECONDS)


def handle(record: SQSRecord) -> str:
    processor.time_left_check()
    outcome = renewal.process(json.loads(record.body))
    logger.info("renewal", extra={"outcome": outcome, "message_id": record.message_id})
    return outcome


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler(capture_response=False, capture_error=False)  # responses hold secrets and tokens
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return dict(process_partial_response(event=event, record_handler=handle, processor=processor, context=context))
