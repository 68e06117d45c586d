"""The scheduled sweep: find what is due (links to expire, tokens to refresh, warnings to send) and queue it."""

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from grantlink import idempotency, renewal
from grantlink.observability import logger, metrics, tracer


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler(capture_response=False, capture_error=False)  # responses hold secrets and tokens
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    idempotency.register_context(context)
    # One scheduled run delivered twice (Scheduler retries keep its scheduled time) queues once (SECURITY.md R1).
    run = str(event.get("time") or event.get("id") or "")
    if not run:
        return renewal.sweep()  # an ad-hoc invocation without a time: nothing to de-duplicate against
    return idempotency.run_once("scheduler", "sweep", run, {}, renewal.sweep)
