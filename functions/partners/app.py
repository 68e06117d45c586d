"""The partner catalogue: which apps can be connected, and what each asks the customer for."""

import math
from typing import Annotated, Any, Literal

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.depends import Depends
from aws_lambda_powertools.event_handler.openapi.params import Path, Query
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from grantlink import api, errors, oauth, providers
from grantlink.models import (
    Caller,
    Deleted,
    DeletedEnvelope,
    ListMeta,
    OAuthAppEnvelope,
    OAuthAppRequest,
    PartnerEnvelope,
    PartnerListEnvelope,
)
from grantlink.observability import logger, metrics, tracer
from grantlink.providers import Category

app = api.build_resolver()
Tenant = Annotated[Caller, Depends(api.current_caller)]
Redirect = Annotated[str, Depends(api.oauth_redirect_uri)]


@app.get(
    "/partners",
    summary="List partners (filter by auth type, environment and category; search by name)",
    responses=api.success_response(200, PartnerListEnvelope, "One page.") | api.error_responses(400, 401, 503),
)
def list_partners(
    authType: Annotated[Literal["api_key", "basic", "oauth2", "oauth1", "client_credentials"] | None, Query()] = None,
    q: Annotated[str | None, Query(max_length=80)] = None,
    environment: Annotated[
        str | None,
        Query(pattern=r"^[a-z][a-z0-9_-]{1,30}$", description="Only partners with this environment, e.g. sandbox."),
    ] = None,
    category: Annotated[Category | None, Query(description="Only partners of this category.")] = None,
    page: Annotated[int, Query(ge=1, le=10_000)] = 1,
    perPage: Annotated[int, Query(ge=1, le=100)] = 50,
) -> Response[PartnerListEnvelope]:
    found = providers.search(authType, q, environment=environment, category=category)
    shown = found[(page - 1) * perPage : page * perPage]
    meta = ListMeta(
        page=page, totalPages=max(1, math.ceil(len(found) / perPage)), totalItemsCount=len(found), nextCursor=None
    )
    return api.ok([p.public_view() for p in shown], meta=meta)


@app.get(
    "/partners/<id>",
    summary="Get a partner",
    responses=api.success_response(200, PartnerEnvelope, "The partner.") | api.error_responses(400, 401, 404),
)
def get_partner(id: Annotated[str, Path(max_length=20)]) -> Response[PartnerEnvelope]:
    provider = providers.find(int(id)) if id.isascii() and id.isdigit() else None
    if provider is None:
        raise errors.NotFound("No such partner.", code="partner_not_found")
    return api.ok(provider.public_view())


PartnerId = Annotated[int, Path(gt=0, le=2**31 - 1)]
APP = api.success_response(200, OAuthAppEnvelope, "The tenant's OAuth app for this partner (never the secret).")
USED_APP = api.success_response(
    200,
    OAuthAppEnvelope,
    "The OAuth app this tenant's links use (never the secret): its own (`source: tenant`), else the operator's "
    "default (`source: operator`).",
)


@app.put(
    "/partners/<id>/oauth-app",
    summary="Set your own OAuth client for a partner (the secret is stored encrypted)",
    responses=APP | api.error_responses(400, 401, 403, 404, 413, 415, 422, 503),
)
def put_oauth_app(
    id: PartnerId, body: OAuthAppRequest, caller: Tenant, redirect: Redirect
) -> Response[OAuthAppEnvelope]:
    return api.ok(oauth.put_app(caller, id, body, redirect))


@app.get(
    "/partners/<id>/oauth-app",
    summary="The OAuth client your links use for a partner: yours, else the operator's default",
    responses=USED_APP | api.error_responses(400, 401, 403, 404, 422, 503),
)
def get_oauth_app(id: PartnerId, caller: Tenant, redirect: Redirect) -> Response[OAuthAppEnvelope]:
    return api.ok(oauth.get_app(caller, id, redirect))


@app.delete(
    "/partners/<id>/oauth-app",
    summary="Remove your own OAuth client for a partner (never the operator's default)",
    responses=api.success_response(200, DeletedEnvelope, "Removed.")
    | api.error_responses(400, 401, 403, 404, 422, 503),
)
def delete_oauth_app(id: PartnerId, caller: Tenant) -> Response[DeletedEnvelope]:
    oauth.delete_app(caller, id)
    return api.ok(Deleted(id=str(id)))


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP, clear_state=True)
@tracer.capture_lambda_handler(capture_response=False, capture_error=False)  # responses hold secrets and tokens
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return api.handle(app, event, context)
