"""Share links: the Albato-compatible `/credentials/grant-access-sharing` API."""

from typing import Annotated, Any

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.depends import Depends
from aws_lambda_powertools.event_handler.openapi.params import Header, Path, Query
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from grantlink import api, idempotency, links
from grantlink.models import (
    Caller,
    CreateLinkRequest,
    LinkStatus,
    ShareLinkEnvelope,
    ShareLinkListEnvelope,
    link_url,
)
from grantlink.observability import logger, metrics, tracer
from grantlink.routes import LINKS

app = api.build_resolver()
Tenant = Annotated[Caller, Depends(api.current_caller)]
Base = Annotated[str, Depends(api.connect_base)]
LinkId = Annotated[str, Path(max_length=64)]
ONE = api.success_response(200, ShareLinkEnvelope, "The share link.")
IDEMPOTENCY = (
    "Optional, 1–255 printable ASCII characters. A repeat with the same key and body within the idempotency window "
    "(an hour by default) returns the first answer, without the token, instead of creating another link; the same "
    "key with another body is a 422, and a repeat while the first is still running a 409."
)


@app.post(
    LINKS,
    summary="Create a share link",
    responses=api.success_response(201, ShareLinkEnvelope, "Created; `token` and `link` are shown only now.")
    | api.error_responses(400, 401, 403, 409, 413, 415, 422, 503),
)
def create_link(
    body: CreateLinkRequest,
    caller: Tenant,
    base: Base,
    key: Annotated[
        str | None, Header(alias="Idempotency-Key", pattern=idempotency.KEY_PATTERN, description=IDEMPOTENCY)
    ] = None,
) -> Response[ShareLinkEnvelope]:
    if key is None:
        link, token = links.create_link(caller, body)
        return api.ok(link.to_out(token, base), 201)
    fresh: dict[str, str] = {}

    def create_once() -> dict[str, Any]:
        link, fresh["token"] = links.create_link(caller, body)
        return link.to_out(None, base).model_dump(mode="json")

    stored = idempotency.run_once(caller.tenant_id, "create_link", key, body.model_dump(), create_once)
    replayed = "token" not in fresh
    data = (
        stored
        if replayed
        else {**stored, "token": fresh["token"], "link": link_url(base, stored["id"], fresh["token"])}
    )
    return api.ok(data, 201, headers={"Idempotent-Replayed": str(replayed).lower()})


@app.get(
    LINKS,
    summary="List share links, newest first",
    responses=api.success_response(200, ShareLinkListEnvelope, "One page.") | api.error_responses(400, 401, 403, 503),
)
def list_links(
    caller: Tenant,
    base: Base,
    perPage: Annotated[int, Query(ge=1, le=100)] = 20,
    status: Annotated[LinkStatus | None, Query()] = None,
    cursor: Annotated[str | None, Query(max_length=2048)] = None,
    environment: Annotated[
        str | None,
        Query(pattern=r"^[a-z][a-z0-9_-]{1,30}$", description="Only those of this partner environment, e.g. sandbox."),
    ] = None,
) -> Response[ShareLinkListEnvelope]:
    page, meta = links.list_links(caller, status, perPage, cursor, environment=environment)
    return api.ok([link.to_out(None, base) for link in page], meta=meta)


@app.get(LINKS + "/<id>", summary="Get a share link", responses=ONE | api.error_responses(400, 401, 403, 404, 503))
def get_link(id: LinkId, caller: Tenant, base: Base) -> Response[ShareLinkEnvelope]:
    return api.ok(links.get_link(caller, id).to_out(None, base))


@app.put(
    LINKS + "/<id>",
    summary="Regenerate a share link's token (status 0, new expiry, old token dead)",
    responses=ONE | api.error_responses(400, 401, 403, 404, 409, 503),
)
def regenerate_link(id: LinkId, caller: Tenant, base: Base) -> Response[ShareLinkEnvelope]:
    link, token = links.regenerate_link(caller, id)
    return api.ok(link.to_out(token, base))


@app.delete(
    LINKS + "/<id>",
    summary="Revoke a share link (status 3, token dead)",
    responses=ONE | api.error_responses(400, 401, 403, 404, 409, 503),
)
def revoke_link(id: LinkId, caller: Tenant, base: Base) -> Response[ShareLinkEnvelope]:
    return api.ok(links.revoke_link(caller, id).to_out(None, base))


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP, clear_state=True)
@tracer.capture_lambda_handler(capture_response=False, capture_error=False)  # responses hold secrets and tokens
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    idempotency.register_context(context)
    return api.handle(app, event, context)
