"""Connection test: verify a credential against its partner (Albato's "Test", Make's "Verify")."""

from typing import Annotated, Any

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.depends import Depends
from aws_lambda_powertools.event_handler.openapi.params import Path
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from grantlink import api, connections
from grantlink.models import Caller, TestResultEnvelope
from grantlink.observability import logger, metrics, tracer

app = api.build_resolver()
Tenant = Annotated[Caller, Depends(api.current_caller)]


@app.post(
    "/credentials/<id>/test",
    summary="Test a credential against its partner; the result is kept as lastTest",
    responses=api.success_response(200, TestResultEnvelope, "The result (a failed test is still a 200: see `ok`).")
    | api.error_responses(400, 401, 403, 404, 409, 503),
)
def test_credential(id: Annotated[str, Path(max_length=64)], caller: Tenant) -> Response[TestResultEnvelope]:
    return api.ok(connections.test_credential(caller, id).to_api())


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP, clear_state=True)
@tracer.capture_lambda_handler(capture_response=False, capture_error=False)  # responses hold secrets and tokens
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return api.handle(app, event, context)
