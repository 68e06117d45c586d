"""Webhooks: the tenant's endpoint (register, read, delete, rotate its signing secret) and its deliveries."""

from typing import Annotated, Any

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.depends import Depends
from aws_lambda_powertools.event_handler.openapi.params import Path, Query
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from grantlink import api, webhooks
from grantlink.models import Caller, Deleted, DeletedEnvelope
from grantlink.observability import logger, metrics, tracer
from grantlink.webhooks import (
    DeliveryEnvelope,
    DeliveryListEnvelope,
    RotateRequest,
    Status,
    WebhookEnvelope,
    WebhookRequest,
)

app = api.build_resolver()
Tenant = Annotated[Caller, Depends(api.current_caller)]
HOOKS = "/webhooks"
ONE = api.success_response(200, WebhookEnvelope, "The endpoint (never the secret).")


@app.put(
    HOOKS,
    summary="Register the webhook endpoint, or change its URL",
    responses=api.success_response(201, WebhookEnvelope, "Registered; `secret` is shown only now.")
    | ONE
    | api.error_responses(400, 401, 403, 409, 413, 415, 503),
)
def put_webhook(body: WebhookRequest, caller: Tenant) -> Response[WebhookEnvelope]:
    endpoint, created = webhooks.put_endpoint(caller, body.url)
    return api.ok(endpoint, 201 if created else 200)


@app.get(HOOKS, summary="The webhook endpoint", responses=ONE | api.error_responses(401, 403, 404, 503))
def get_webhook(caller: Tenant) -> Response[WebhookEnvelope]:
    return api.ok(webhooks.get_endpoint(caller))


@app.delete(
    HOOKS,
    summary="Stop sending webhooks",
    responses=api.success_response(200, DeletedEnvelope, "Deleted.") | api.error_responses(401, 403, 404, 503),
)
def delete_webhook(caller: Tenant) -> Response[DeletedEnvelope]:
    webhooks.delete_endpoint(caller)
    return api.ok(Deleted(id="webhook"))


@app.post(
    HOOKS + "/rotate-secret",
    summary="A new signing secret; the previous one keeps signing for graceSeconds",
    responses=api.success_response(200, WebhookEnvelope, "The new `secret`, shown only now.")
    | api.error_responses(400, 401, 403, 404, 409, 413, 415, 503),
)
def rotate_secret(caller: Tenant, body: RotateRequest | None = None) -> Response[WebhookEnvelope]:
    grace = (body or RotateRequest.model_validate({})).graceSeconds
    return api.ok(webhooks.rotate_secret(caller, grace))


@app.get(
    HOOKS + "/deliveries",
    summary="Webhook deliveries, newest first",
    responses=api.success_response(200, DeliveryListEnvelope, "One page.") | api.error_responses(400, 401, 403, 503),
)
def list_deliveries(
    caller: Tenant,
    perPage: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(max_length=2048)] = None,
    status: Annotated[Status | None, Query()] = None,
) -> Response[DeliveryListEnvelope]:
    page, meta = webhooks.list_deliveries(caller, status, perPage, cursor)
    return api.ok(page, meta=meta)


@app.post(
    HOOKS + "/deliveries/<id>/retry",
    summary="Send a delivery again now (same webhook-id)",
    responses=api.success_response(202, DeliveryEnvelope, "Queued for an attempt now.")
    | api.error_responses(400, 401, 403, 404, 409, 503),
)
def retry_delivery(id: Annotated[str, Path(max_length=64)], caller: Tenant) -> Response[DeliveryEnvelope]:
    return api.ok(webhooks.retry_delivery(caller, id), 202)


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP, clear_state=True)
@tracer.capture_lambda_handler(capture_response=False, capture_error=False)  # answers hold signing secrets
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return api.handle(app, event, context)
