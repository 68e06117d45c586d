"""HTTP plumbing shared by the API functions: the resolver, the envelope, authentication and errors.

`handle()` runs before Powertools' validation so that an unauthenticated caller gets a 401 (and a key
without the route's scope a 403) before anything about the request body is looked at.
"""

import json
import re
from collections.abc import Callable
from typing import Any, cast

from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response
from aws_lambda_powertools.event_handler.exceptions import NotFoundError
from aws_lambda_powertools.event_handler.middlewares.openapi_validation import OpenAPIRequestValidationMiddleware
from aws_lambda_powertools.event_handler.openapi.exceptions import (
    RequestUnsupportedContentType,
    RequestValidationError,
    ResponseValidationError,
)
from aws_lambda_powertools.event_handler.openapi.types import OpenAPIResponse
from aws_lambda_powertools.event_handler.request import Request
from aws_lambda_powertools.utilities.data_classes import APIGatewayProxyEventV2
from pydantic import BaseModel

from grantlink import errors, routes
from grantlink.config import settings
from grantlink.models import Caller, ErrorEnvelope
from grantlink.observability import logger

JSON = "application/json"
API_HEADERS = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}
ERROR_DESCRIPTIONS = {
    400: "Malformed JSON, wrong types, missing or invalid fields, or a bad cursor.",
    401: "The API key is not known.",
    403: "The API key lacks the scope this route needs.",
    404: "No such resource for this tenant.",
    409: "The resource is not in a state that allows this.",
    413: "The body is larger than the limit (64 KiB by default).",
    415: "The body is not `application/json`.",
    422: "Well-formed but refers to something unknown (e.g. a partner).",
    502: (
        "grantlink could not get a usable answer from the partner (`partner_unreachable`, `response_too_large`): "
        "this envelope, never the partner's own answer."
    ),
    504: "The partner did not answer within the proxy's deadline (`partner_timeout`).",
    503: (
        "A dependency (DynamoDB, KMS, Secrets Manager) is unavailable, or the operator's configuration is invalid; "
        "nothing was changed."
    ),
}


def json_response(status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
    """A JSON response; Powertools validates `body` against the route's `Response[Model]` and serializes it."""
    return Response(status, JSON, body, headers={**API_HEADERS, **(headers or {})})


def ok(data: Any, status: int = 200, meta: BaseModel | None = None, headers: dict[str, str] | None = None) -> Response:
    """The success envelope `{"success": true, "data": …[, "meta": …]}`."""
    body: dict[str, Any] = {"success": True, "data": _plain(data)}
    if meta is not None:
        body["meta"] = _plain(meta)
    return json_response(status, body, headers)


def _plain(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def error_responses(*statuses: int) -> dict[int, OpenAPIResponse]:
    """OpenAPI `responses` entries for the error statuses a route can answer with."""
    return {s: _described(ERROR_DESCRIPTIONS[s], ErrorEnvelope) for s in statuses}


def success_response(status: int, model: type[BaseModel], description: str) -> dict[int, OpenAPIResponse]:
    return {status: _described(description, model)}


def _described(description: str, model: type[BaseModel]) -> OpenAPIResponse:
    return cast(OpenAPIResponse, {"description": description, "content": {JSON: {"model": model}}})


def _event(request: Request) -> APIGatewayProxyEventV2:
    return cast(APIGatewayProxyEventV2, request.resolved_event)


def connect_base(request: Request) -> str:
    """A `Depends()` provider: where links point. Configured, or else the API's own execute-api URL built
    from the API id that API Gateway stamps on the event. Never from the Host header (SECURITY.md T6)."""
    return base_for_api(_event(request).request_context.api_id)


def base_for_api(api_id: str) -> str:
    """The configured connect base URL, else the execute-api URL of the API with this id."""
    configured = settings().connect_base_url.rstrip("/")
    return configured or f"https://{api_id}.execute-api.{settings().aws_region}.amazonaws.com"


def oauth_redirect_uri(request: Request) -> str:
    """A `Depends()` provider: the OAuth redirect URI — configured, or the connect base + /oauth/callback.
    Never taken from the request (SECURITY.md O4)."""
    return redirect_uri_for_api(_event(request).request_context.api_id)


def redirect_uri_for_api(api_id: str) -> str:
    return settings().oauth_redirect_uri or f"{base_for_api(api_id)}/oauth/callback"


def current_caller(request: Request) -> Caller:
    """A `Depends()` provider: the caller that `handle()` already authenticated."""
    context = _event(request).request_context.authorizer.get_lambda or {}
    scopes = frozenset(str(context.get("scopes", "")).split())
    return Caller(tenant_id=context["tenantId"], scopes=scopes, key_id=str(context.get("keyId", "")))


class JsonBodyValidation(OpenAPIRequestValidationMiddleware):
    """Powertools' request validation, reading JSON bodies only. Powertools also parses urlencoded and multipart
    bodies (a multipart Content-Type without a boundary even escapes as a 500, and form keys end up in the error
    message): the API takes JSON, so any other declared type is a 415 before the body is looked at. A body that is
    not UTF-8 is malformed JSON (Powertools lets its UnicodeDecodeError escape as a 500)."""

    def _get_body(self, app: Any) -> dict[str, Any]:
        content_type = app.current_event.headers.get("content-type", "").strip()
        if content_type and not content_type.lower().startswith(JSON):
            raise RequestUnsupportedContentType("Unsupported content type", errors=[])
        try:
            return super()._get_body(app)
        except UnicodeDecodeError:  # a body that is not UTF-8 is not JSON (RFC 8259): a 400, not a 500
            raise RequestValidationError(
                [{"type": "json_invalid", "loc": ("body",), "msg": "JSON decode error", "input": {}}]
            ) from None


def build_resolver() -> APIGatewayHttpResolver:
    app = APIGatewayHttpResolver(enable_validation=True, response_validation_error_http_code=500)
    app._request_validation_middleware = JsonBodyValidation()
    app.exception_handler(errors.GrantlinkError)(lambda exc: json_response(exc.status, exc.body()))
    app.exception_handler(RequestValidationError)(_validation_failed)
    app.exception_handler(ResponseValidationError)(_unexpected)
    app.exception_handler(RequestUnsupportedContentType)(
        lambda _: json_response(415, errors.error_body("unsupported_media_type", "Send application/json."))
    )
    app.exception_handler(NotFoundError)(lambda _: _no_route(app))
    app.exception_handler(Exception)(_unexpected)
    return app


def greedy_tail(app: APIGatewayHttpResolver, rule: str) -> None:
    """Let the last `<name>` of `rule` take the rest of the path, slashes included, as API Gateway's `{name+}` does
    (Powertools matches one segment per variable). Call it after the routes of `rule` are declared."""
    head, _, name = rule.rpartition("/<")
    pattern = app._compile_regex(head).pattern.removesuffix("$") + f"/(?P<{name.rstrip('>')}>.+)$"
    widened = [r for r in app._dynamic_routes if r.path == rule]
    if not widened:
        raise ValueError(f"no route {rule} to widen")
    for route in widened:
        route.rule = re.compile(pattern)


def _validation_failed(exc: RequestValidationError) -> Response:
    problems = [(_field(e["loc"]), e) for e in exc.errors()]
    if any(e["type"] == "json_invalid" for _, e in problems):
        return json_response(400, errors.error_body("malformed_json", "The request body is not valid JSON."))
    if problems and all(where.lower() == "idempotency-key" for where, _ in problems):
        message = "Idempotency-Key is 1–255 printable ASCII characters."
        return json_response(400, errors.error_body("invalid_idempotency_key", message))
    details = [{"field": where, "problem": _problem(e)} for where, e in problems]
    message = "; ".join(f"{d['field']}: {d['problem']}" for d in details)
    body = errors.error_body("validation_error", message)
    body["error"]["details"] = details
    return json_response(400, body)


def _field(location: tuple[Any, ...] | list[Any]) -> str:
    """`["body", "title"]` → "title", `["query", "perPage"]` → "perPage"; the whole body → "body"."""
    parts = [str(p) for p in location]
    if len(parts) > 1 and parts[0] in ("body", "query", "path", "header"):
        parts = parts[1:]
    return ".".join(parts) or "body"


def _problem(error: dict[str, Any]) -> str:
    # pydantic's messages name the rule, never the input; they are safe to show.
    return str(error.get("msg") or error["type"])


def _no_route(app: APIGatewayHttpResolver) -> Response:
    path = app.current_event.path
    allowed = sorted({m for r in routes.ROUTES if _template_matches(r.path, path) for m in r.methods})
    if allowed:
        return json_response(405, errors.MethodNotAllowed().body(), headers={"Allow": ", ".join(allowed)})
    return json_response(404, errors.error_body("route_not_found", "No such route."))


def _template_matches(template: str, path: str) -> bool:
    pattern = re.sub(r"\{[^/]+\}", "[^/]+", re.sub(r"\{[^/]+\+\}", ".+", template))  # {path+}: the rest
    return re.fullmatch(pattern, path.rstrip("/") or "/") is not None


def _unexpected(exc: Exception) -> Response:
    logger.exception("unhandled error", extra={"error": type(exc).__name__})
    return json_response(500, errors.GrantlinkError().body())


def _raw(error: errors.GrantlinkError) -> dict[str, Any]:
    return {
        "statusCode": error.status,
        "headers": {"Content-Type": JSON, **API_HEADERS},
        "body": json.dumps(error.body(), separators=(",", ":")),
        "isBase64Encoded": False,
    }


def precheck(event: dict[str, Any]) -> None:
    """Size, authentication and scope, in that order, before any parsing. Raises a GrantlinkError."""
    body = event.get("body") or ""
    if len(body) > settings().max_body_bytes * (4 / 3 if event.get("isBase64Encoded") else 1):
        raise errors.PayloadTooLarge()
    route = routes.BY_KEY.get(event.get("routeKey", ""))
    if route is None:
        raise errors.NotFound("No such route.", code="route_not_found")
    if route.public:
        return
    context = (event.get("requestContext", {}).get("authorizer") or {}).get("lambda") or {}
    if not context.get("tenantId"):
        raise errors.Unauthorized()
    if route.scope and route.scope not in str(context.get("scopes", "")).split():
        raise errors.Forbidden(f"This API key lacks the scope {route.scope}.")


def handle(
    app: APIGatewayHttpResolver,
    event: dict[str, Any],
    context: Any,
    refuse: Callable[[errors.GrantlinkError], dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Run the prechecks, then the resolver. A precheck's refusal is the JSON envelope, or what `refuse` makes
    of it (the public pages answer a person in a browser with a page)."""
    try:
        precheck(event)
    except errors.GrantlinkError as exc:
        return (refuse or _raw)(exc)
    from grantlink import links

    links.set_connect_base(base_for_api(event.get("requestContext", {}).get("apiId", "")))
    return app.resolve(event, context)
