"""Credentials: list, read, rename/disable, delete, read the secret or the current OAuth token, reauthorize, audit."""

from typing import Annotated, Any

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.depends import Depends
from aws_lambda_powertools.event_handler.openapi.params import Path, Query
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from grantlink import api, audit, connections
from grantlink.models import (
    AuditListEnvelope,
    Caller,
    CredentialEnvelope,
    CredentialListEnvelope,
    CredentialState,
    Deleted,
    DeletedEnvelope,
    PatchCredentialRequest,
    ReauthorizeRequest,
    SecretEnvelope,
    ShareLinkEnvelope,
    TokenEnvelope,
)
from grantlink.observability import logger, metrics, tracer

app = api.build_resolver()
Tenant = Annotated[Caller, Depends(api.current_caller)]
Base = Annotated[str, Depends(api.connect_base)]
CredentialId = Annotated[str, Path(max_length=64)]
CREDS = "/credentials"
ONE = api.success_response(200, CredentialEnvelope, "The credential's metadata (never the secret).")


@app.get(
    CREDS,
    summary="List credentials, newest first",
    responses=api.success_response(200, CredentialListEnvelope, "One page.") | api.error_responses(400, 401, 403, 503),
)
def list_credentials(
    caller: Tenant,
    perPage: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(max_length=2048)] = None,
    partnerId: Annotated[int | None, Query(gt=0, le=2**31 - 1)] = None,
    state: Annotated[CredentialState | None, Query()] = None,
    endUserId: Annotated[
        str | None, Query(min_length=1, max_length=128, description="Only this end user's credentials.")
    ] = None,
    tag: Annotated[
        str | None,
        Query(max_length=321, description="`key:value`: only credentials with this tag (one tag filter a request)."),
    ] = None,
    environment: Annotated[
        str | None,
        Query(pattern=r"^[a-z][a-z0-9_-]{1,30}$", description="Only those of this partner environment, e.g. sandbox."),
    ] = None,
) -> Response[CredentialListEnvelope]:
    page, meta = connections.list_credentials(
        caller, partnerId, state, perPage, cursor, end_user_id=endUserId, tag=tag, environment=environment
    )
    return api.ok([c.to_out() for c in page], meta=meta)


@app.get(CREDS + "/<id>", summary="Get a credential", responses=ONE | api.error_responses(400, 401, 403, 404, 503))
def get_credential(id: CredentialId, caller: Tenant) -> Response[CredentialEnvelope]:
    return api.ok(connections.get_credential(caller, id).to_out())


@app.patch(
    CREDS + "/<id>",
    summary="Rename, disable or reactivate a credential",
    responses=ONE | api.error_responses(400, 401, 403, 404, 409, 413, 415, 503),
)
def update_credential(id: CredentialId, body: PatchCredentialRequest, caller: Tenant) -> Response[CredentialEnvelope]:
    return api.ok(connections.update_credential(caller, id, body).to_out())


@app.delete(
    CREDS + "/<id>",
    summary="Delete a credential and its ciphertext",
    responses=api.success_response(200, DeletedEnvelope, "Deleted; it is a 404 from now on.")
    | api.error_responses(400, 401, 403, 404, 409, 503),
)
def delete_credential(id: CredentialId, caller: Tenant) -> Response[DeletedEnvelope]:
    connections.delete_credential(caller, id)
    return api.ok(Deleted(id=id))


@app.get(
    CREDS + "/<id>/secret",
    summary="Read the secret (scope credentials:secret; audited)",
    responses=api.success_response(200, SecretEnvelope, "The decrypted values.")
    | api.error_responses(400, 401, 403, 404, 409, 503),
)
def read_secret(id: CredentialId, caller: Tenant) -> Response[SecretEnvelope]:
    return api.ok(connections.read_secret(caller, id))


@app.get(
    CREDS + "/<id>/token",
    summary="The current OAuth access token, refreshed first when due (scope credentials:secret; audited)",
    responses=api.success_response(200, TokenEnvelope, "The access token and its expiry.")
    | api.error_responses(400, 401, 403, 404, 409, 503),
)
def read_token(
    id: CredentialId,
    caller: Tenant,
    forceRefresh: Annotated[bool, Query(description="Refresh now, even if the token is not due yet.")] = False,
) -> Response[TokenEnvelope]:
    return api.ok(connections.current_token(caller, id, force=forceRefresh))


@app.post(
    CREDS + "/<id>/reauthorize",
    summary="Create a share link that replaces this credential's secret, keeping its id",
    responses=api.success_response(201, ShareLinkEnvelope, "The new link; `token` and `link` are shown only now.")
    | api.error_responses(400, 401, 403, 404, 413, 415, 422, 503),
)
def reauthorize(
    id: CredentialId, caller: Tenant, base: Base, body: ReauthorizeRequest | None = None
) -> Response[ShareLinkEnvelope]:
    link, token = connections.reauthorize(caller, id, body or ReauthorizeRequest.model_validate({}))
    return api.ok(link.to_out(token, base), 201)


@app.get(
    CREDS + "/<id>/audit",
    summary="The credential's audit trail, newest first",
    responses=api.success_response(200, AuditListEnvelope, "One page.") | api.error_responses(400, 401, 403, 404, 503),
)
def list_audit(
    id: CredentialId,
    caller: Tenant,
    perPage: Annotated[int, Query(ge=1, le=100)] = 50,
    cursor: Annotated[str | None, Query(max_length=2048)] = None,
) -> Response[AuditListEnvelope]:
    items, meta = connections.list_audit(caller, id, perPage, cursor)
    return api.ok([audit.to_out(i) for i in items], meta=meta)


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP, clear_state=True)
@tracer.capture_lambda_handler(capture_response=False, capture_error=False)  # responses hold secrets and tokens
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return api.handle(app, event, context)
