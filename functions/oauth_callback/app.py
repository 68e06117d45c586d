"""OAuth through the link (public): start the flow from the connect page, and take the partner's callback —
OAuth 2.0 (grantlink.oauth) or OAuth 1.0a (grantlink.oauth1), on the same two routes."""

from typing import Any

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from grantlink import api, connect, oauth, oauth1, pages, web
from grantlink.observability import logger, metrics, tracer

app = web.build_page_resolver()


@app.post(
    "/connect/oauth/start",
    summary="Start the OAuth flow for a link (303 to the partner)",
    responses=web.page_responses(303, 400, 410, 503),
)
def start() -> Response[str]:
    link_id, token, fields = web.split_form(web.form_fields(app.current_event))
    opened = connect.open_link(link_id, token)
    begin = oauth1.start if opened.provider.auth_type == "oauth1" else oauth.start  # one route, the kind decides
    return web.redirect(begin(link_id, token, fields, web.oauth_redirect_uri(app), opened=opened))


@app.get(
    "/oauth/callback",
    summary="The partner's redirect back (303 to a clean URL; no code or state stays in the address bar)",
    responses=web.page_responses(303, 400, 410, 503),
)
def callback() -> Response[str]:
    params = {k: v for k, v in (app.current_event.query_string_parameters or {}).items() if isinstance(v, str)}
    if oauth1.is_callback(params):  # OAuth 1.0a: oauth_token and oauth_verifier, or denied
        outcome = oauth1.callback(params)
    else:
        outcome = oauth.callback(params, web.oauth_redirect_uri(app))
    if outcome.connected:
        return web.redirect(outcome.redirect_to or web.done_url(app, outcome.partner_id))
    return web.page(400, pages.message_page(heading="Not connected", message=f"{outcome.problem} {web.RETRY}"))


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP, clear_state=True)
@tracer.capture_lambda_handler(capture_response=False, capture_error=False)  # responses hold secrets and tokens
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return api.handle(app, event, context, refuse=web.refusal_page)
