"""The authenticated proxy: any method on /credentials/{id}/proxy/{path+} goes to the credential's partner with the
credential injected, and the partner's answer comes back as it is (plus X-Grantlink-Latency-Ms)."""

import base64
import re
from typing import Annotated, Any
from urllib.parse import parse_qsl

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.depends import Depends
from aws_lambda_powertools.event_handler.openapi.params import Path
from aws_lambda_powertools.event_handler.openapi.types import OpenAPIResponse
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from grantlink import api, proxy, routes
from grantlink.models import Caller
from grantlink.observability import logger, metrics, tracer

app = api.build_resolver()
Tenant = Annotated[Caller, Depends(api.current_caller)]
PROXY = "/credentials/<id>/proxy/<path>"
# The partner's path as the caller sent it (still percent-encoded): the layer judges `..`, `%2F` and the like itself.
PARTNER_PATH = re.compile(r"/credentials/[^/]+/proxy(/.*)$")
TEXT = re.compile(r"^(text/|application/([\w.+-]*\+)?(json|xml|javascript|x-www-form-urlencoded))", re.I)
PARTNERS_ANSWER: dict[int, OpenAPIResponse] = {
    200: {
        "description": (
            "The partner's answer, whatever its status (a 3xx is passed back, never followed; a 429 keeps its "
            "Retry-After): its end-to-end headers (hop-by-hop, Set-Cookie and CORS headers removed) and its body as "
            "they are, plus `X-Grantlink-Latency-Ms`. Errors grantlink makes itself are the JSON error envelope."
        ),
        "headers": {"X-Grantlink-Latency-Ms": {"description": "grantlink's whole handling time, in milliseconds"}},
        "content": {"*/*": {"schema": {}}},
    }
}


@app.route(
    PROXY,
    method=[m for m in routes.ANY_METHODS if m != "HEAD"],
    summary="Call the partner's API with this credential (scope credentials:proxy; any method; audited)",
    description=(
        "`path` is the rest of the URL, slashes included (`/credentials/{id}/proxy/v1/me?x=1` calls the partner's "
        "`/v1/me?x=1`). It must stay on the partner's origin: `..`, encoded slashes, backslashes, `@` or an "
        "absolute URL are a 400 `invalid_proxy_path`."
    ),
    responses=PARTNERS_ANSWER | api.error_responses(400, 401, 403, 404, 409, 413, 502, 503, 504),
)
@app.route(PROXY, method="HEAD", include_in_schema=False)  # API Gateway's ANY covers HEAD; its answer has no body
def forward(id: Annotated[str, Path(max_length=64)], path: Annotated[str, Path(min_length=1)], caller: Tenant):
    # No return annotation on purpose: with one, Powertools would validate and re-serialize the partner's body.
    event = app.current_event
    found = PARTNER_PATH.match(event.raw_path)
    answer = proxy.forward(
        caller,
        id,
        event.request_context.http.method,
        found.group(1) if found else "/" + path,
        parse_qsl(event.raw_query_string, keep_blank_values=True),  # repeated names stay repeated, in order
        event.headers,
        base64.b64decode(event.body or "") if event.is_base64_encoded else (event.body or "").encode(),
    )
    return partner_response(answer)


def partner_response(answer: proxy.ProxyAnswer) -> Response:
    """The partner's status, headers and body: text as text, anything else as bytes (Powertools sends base64)."""
    headers: dict[str, list[str]] = {}
    for name, value in answer.headers:
        headers.setdefault(name.lower(), []).append(value)  # lower-case: Powertools never re-serializes the body
    headers["x-grantlink-latency-ms"] = [str(answer.latency_ms)]
    return Response(answer.status, None, _text_or_bytes(answer.body, headers.get("content-type", [""])[0]), headers)


def _text_or_bytes(body: bytes, content_type: str) -> str | bytes:
    if not TEXT.match(content_type):
        return body
    try:
        return body.decode()
    except UnicodeDecodeError:  # text that is not UTF-8 goes back byte for byte
        return body


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP, clear_state=True)
@tracer.capture_lambda_handler(capture_response=False, capture_error=False)  # a partner's answer may hold anything
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return api.handle(app, event, context)


api.greedy_tail(app, PROXY)
