"""HTML plumbing for the public connect pages: the resolver, page responses and form parsing.

Every page goes out with the strict headers from `pages.security_headers()` (CSP without scripts,
no-referrer, no-store, no framing). Errors become pages, never JSON: the customer is a person in a browser.
"""

from __future__ import annotations

from typing import Any, cast
from urllib.parse import parse_qsl, urlsplit

from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response
from aws_lambda_powertools.event_handler.openapi.types import OpenAPIResponse
from aws_lambda_powertools.utilities.data_classes import APIGatewayProxyEventV2

from grantlink import api, errors, pages, tenants
from grantlink.connect import InvalidForm, OpenedLink
from grantlink.observability import logger
from grantlink.providers import PRODUCTION

MAX_FORM_FIELDS = 50
RETRY = "Open the link you were sent again to retry."
FIELD_PREFIX = "f_"


PAGE_DESCRIPTIONS = {
    200: "The page (HTML).",
    303: "Connected: on to the tenant's allow-listed redirect URL with `status` and `credentialId`.",
    400: "The form again, with each problem next to its field; the link is untouched.",
    410: "One and the same page for unknown, used, revoked and expired links.",
    413: "The form is larger than the limit.",
    423: "The link failed too many connection tests; it accepts no more until the tenant regenerates it.",
    503: "A dependency is unavailable; nothing was changed; try again.",
}


def page_responses(*statuses: int) -> dict[int, OpenAPIResponse]:
    """OpenAPI `responses` for HTML routes."""
    html = {"text/html": {"schema": {"type": "string"}}}
    return {s: cast(OpenAPIResponse, {"description": PAGE_DESCRIPTIONS[s], "content": html}) for s in statuses}


def page(status: int, body: str, headers: dict[str, str] | None = None, form_action: tuple[str, ...] = ()) -> Response:
    all_headers = {**pages.security_headers(form_action_origins=form_action), **(headers or {})}
    return Response(status, all_headers.pop("Content-Type"), body, headers=all_headers)


def redirect(location: str) -> Response:
    """A 303 See Other: the browser GETs `location` with no form body and no referrer."""
    headers = pages.security_headers()
    headers.pop("Content-Type")
    return Response(303, "text/plain; charset=utf-8", "", headers={**headers, "Location": location})


def build_page_resolver() -> APIGatewayHttpResolver:
    app = APIGatewayHttpResolver()
    app.exception_handler(errors.Gone)(lambda _: page(410, pages.gone_page()))
    app.exception_handler(errors.LinkLocked)(lambda _: page(423, pages.locked_page()))
    app.exception_handler(errors.GrantlinkError)(_error_page)
    app.exception_handler(Exception)(_unexpected)
    return app


def refusal_page(exc: errors.GrantlinkError) -> dict[str, Any]:
    """`api.handle`'s refusal (e.g. a form over the size limit) as an error page, in Lambda's answer shape."""
    response = _error_page(exc)
    return {
        "statusCode": response.status_code,
        "headers": dict(response.headers),
        "body": response.body,
        "isBase64Encoded": False,
    }


def _error_page(exc: errors.GrantlinkError) -> Response:
    if exc.status >= 500:
        heading, message = "Something went wrong", "We could not finish this just now. Please try again in a minute."
    else:
        heading, message = "We could not do that", exc.message
    return page(exc.status, pages.message_page(heading=heading, message=message))


def _unexpected(exc: Exception) -> Response:
    logger.exception("unhandled error on a page", extra={"error": type(exc).__name__})
    return _error_page(errors.GrantlinkError())


def form_fields(event: APIGatewayProxyEventV2) -> dict[str, str]:
    """The urlencoded form (API Gateway may base64 it); the first value of each name; bounded.

    A body that is not UTF-8 or has more than MAX_FORM_FIELDS fields is not our form (the page sends a handful of
    fields, in UTF-8): it reads as an empty form — no link — so the customer gets the 410 page, not a 500."""
    try:
        pairs = parse_qsl(event.decoded_body or "", keep_blank_values=True, max_num_fields=MAX_FORM_FIELDS)
    except ValueError:  # UnicodeDecodeError is a ValueError; so is "Max number of fields exceeded"
        return {}
    form: dict[str, str] = {}
    for name, value in pairs:
        form.setdefault(name, value)
    return form


def split_form(form: dict[str, str]) -> tuple[str, str, dict[str, str]]:
    """(link id, token, the partner's fields by name)."""
    fields = {k[len(FIELD_PREFIX) :]: v for k, v in form.items() if k.startswith(FIELD_PREFIX)}
    return form.get("id", ""), form.get("token", ""), fields


def oauth_redirect_uri(app: APIGatewayHttpResolver) -> str:
    return api.redirect_uri_for_api(app.current_event.request_context.api_id)


def done_url(app: APIGatewayHttpResolver, partner_id: int) -> str:
    """The clean page the browser lands on after the OAuth callback: no code, no state."""
    return f"{api.base_for_api(app.current_event.request_context.api_id)}/connect/done?partner={partner_id}"


def form_action_origins(opened: OpenedLink) -> tuple[str, ...]:
    """Where the form's POST may end up, which Chrome checks against the page's form-action, redirects included:
    the partner's authorization server (the authorize URL may carry a per-customer host: then *.domain), and the
    origin of the tenant's allow-listed `redirectUrl`, where the 303 after an API-key or Basic connect goes."""
    origins = []
    grant = opened.provider.oauth or opened.provider.oauth1
    if grant is not None:
        parts = urlsplit(grant.authorize_url)
        host = parts.netloc
        if "{" in host:
            host = "*." + host.split("}", 1)[1].lstrip(".")
        origins.append(f"{parts.scheme}://{host}")
    if opened.link.redirect_url:
        origin = tenants.normalize_origin(opened.link.redirect_url)  # allow-listed at creation: a plain origin
        if pages.is_origin(origin):
            origins.append(origin)
    return tuple(dict.fromkeys(origins))


def show_form(opened: OpenedLink, token: str, problem: InvalidForm | None = None, status: int = 200) -> Response:
    notice = None
    if opened.link.last_error:
        notice = f"Your last attempt did not finish: {opened.link.last_error}. You can try again."
    return page(status, form_page(opened, token, problem, notice), form_action=form_action_origins(opened))


def form_page(opened: OpenedLink, token: str, problem: InvalidForm | None = None, notice: str | None = None) -> str:
    provider = opened.provider
    views = [
        pages.FieldView(
            name=f.name,
            label=f.label,
            help=f.help,
            secret=f.secret,
            required=f.required,
            placeholder=f.placeholder or f.example,  # a realistic example shows the shape expected
            value="" if f.secret or problem is None else problem.values.get(f.name, ""),
            error=problem.errors.get(f.name) if problem else None,
            prefix=f.prefix,
            suffix=f.suffix,
        )
        for f in provider.fields
    ]
    environment = provider.environment(opened.link.environment)
    from grantlink import oauth

    scopes = oauth.asked_scopes(opened)
    return pages.form_page(
        link_id=opened.link.id,
        token=token,
        link_title=opened.link.title,
        partner_name=provider.name,
        description=provider.description,
        fields=views,
        form_error=problem.form_error if problem else None,
        notice=notice,
        oauth=provider.uses_oauth_app,  # OAuth 2.0 and OAuth 1.0a: the same "Connect with" button
        environment_label=environment.label if environment and environment.name != PRODUCTION else None,
        scopes=scopes,
    )
