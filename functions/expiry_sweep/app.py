"""The scheduled sweep: find what is due (links to expire, tokens to refresh, warnings to send) and queue it."""

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from grantlink import idempotency, renewal
from grantlink.observability import logger, metrics, tracer


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    idempotency.register_context(context)
    # A schedule event delivered twice (Scheduler retries) queues once (SECURITY.md R1).
    return idempotency.run_once("scheduler", "sweep", str(event.get("id") or event.get("time")), {}, renewal.sweep)
