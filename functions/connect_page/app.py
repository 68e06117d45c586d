"""The hosted connect page (public): the customer opens the link, fills in the form, and connects."""

from typing import Any

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from grantlink import api, connect, pages, providers, web
from grantlink.observability import logger, metrics, tracer

app = web.build_page_resolver()


@app.get(
    "/connect", summary="The connect page for a link (never consumes it)", responses=web.page_responses(200, 410, 423)
)
def show() -> Response[str]:
    link_id = app.current_event.get_query_string_value("id", "") or ""
    token = app.current_event.get_query_string_value("token", "") or ""
    return web.show_form(connect.open_link(link_id, token), token)


@app.post(
    "/connect",
    summary="Submit the connect form (consumes the link once)",
    responses=web.page_responses(200, 303, 400, 410, 413, 423, 503),
)
def submit() -> Response[str]:
    link_id, token, fields = web.split_form(web.form_fields(app.current_event))
    try:
        done = connect.submit(link_id, token, fields)
    except connect.InvalidForm as problem:
        assert problem.opened is not None
        return web.show_form(problem.opened, token, problem, status=400)
    if done.redirect_to:
        return web.redirect(done.redirect_to)
    return web.page(200, pages.success_page(partner_name=done.provider.name, link_title=done.link.title))


@app.get(
    "/connect/done", summary="Where the browser lands after connecting through OAuth", responses=web.page_responses(200)
)
def done() -> Response[str]:
    partner = app.current_event.get_query_string_value("partner", "") or ""
    provider = providers.find(int(partner)) if partner.isascii() and partner.isdigit() and len(partner) < 10 else None
    return web.page(200, pages.success_page(partner_name=provider.name if provider else "Your account"))


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP, clear_state=True)
@tracer.capture_lambda_handler(capture_response=False, capture_error=False)  # responses hold secrets and tokens
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return api.handle(app, event, context, refuse=web.refusal_page)
