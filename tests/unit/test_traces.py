"""No secret leaves through X-Ray: with tracing on as deployed (tests/xray.py records every document the X-Ray
daemon would receive), the handlers whose answers carry secrets run, and no secret is in any trace document.

Powertools' `capture_lambda_handler` stores a handler's whole response (and its exceptions) as trace metadata
unless told not to; the X-Ray SDK's own requests patch stores exception messages, which requests fills with the
whole URL, query string included. tests/security/test_oauth_client.py runs every flow under the same recording
(O11).
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
import urllib3

from tests.helpers import SECRET, call, connected, create_link, creds, event, invoke, reroute
from tests.xray import recording_traces

PIPEDRIVE = 5  # a catalogue partner that takes its API key in the query string (api_token=…)


@pytest.fixture
def traces(aws_env: dict[str, Any]) -> Iterator[list[str]]:
    with recording_traces() as documents:
        yield documents


def traced(documents: list[str]) -> str:
    """Every document as one text, after checking that tracing really was on (a handler subsegment and an AWS
    call subsegment were sent), so that a search in it cannot pass by finding nothing at all."""
    parsed = [json.loads(d) for d in documents]
    names = {d.get("name") for d in parsed} | {s.get("name") for d in parsed for s in d.get("subsegments", [])}
    assert "## lambda_handler" in names, names
    assert {"dynamodb", "DynamoDB"} & names, names
    return "\n".join(documents)


def test_a_secret_read_puts_no_secret_into_the_trace(traces: list[str]) -> None:
    """Given a credential whose secret is SECRET,
    when GET /credentials/{id}/secret answers it with tracing on,
    then the answer holds the secret and no trace document does."""
    credential_id = connected()
    status, body, _ = creds("read_secret", credential_id)
    assert (status, body["data"]["fields"]) == (200, {"apiKey": SECRET})
    assert SECRET not in traced(traces)


def test_creating_and_regenerating_a_link_put_no_link_token_into_the_trace(traces: list[str]) -> None:
    """Given tracing on,
    when a link is created (POST) and regenerated (PUT), both answering the raw token,
    then neither token, nor the link URL carrying it, is in any trace document."""
    status, created, _ = create_link()
    assert status == 201
    regenerated = invoke("share_links", event("regenerate_link", tenant="tnt_a", path_id=created["data"]["id"]))
    assert regenerated[0] == 200
    text = traced(traces)
    for data in (created["data"], regenerated[1]["data"]):
        assert data["token"] not in text and data["link"] not in text


def test_the_connect_page_and_the_oauth_start_put_no_token_or_state_into_the_trace(
    traces: list[str], provider_server: Any
) -> None:
    """Given a link for an OAuth partner and tracing on,
    when the customer opens the connect page (HTML with the token in its form) and presses the button (a 303
    whose Location carries the OAuth state),
    then neither the link token nor the state is in any trace document."""
    from tests.unit.oauth_fakes import PARTNER_ID

    _, created, _ = create_link({"partnerId": PARTNER_ID, "title": "Fake CRM"})
    link_id, token = created["data"]["id"], created["data"]["token"]
    opened = call("connect_page", event("connect_get", query={"id": link_id, "token": token}))
    assert opened["statusCode"] == 200 and token in opened["body"]
    start = reroute(
        event("connect_post", form={"id": link_id, "token": token}), "POST /connect/oauth/start", "/connect/oauth/start"
    )
    started = call("oauth_callback", start)
    assert started["statusCode"] == 303
    state = parse_qs(urlsplit(started["headers"]["Location"]).query)["state"][0]
    text = traced(traces)
    assert token not in text and state not in text


def _pipedrive_link() -> tuple[str, str]:
    _, created, _ = create_link({"partnerId": PIPEDRIVE, "title": "Pipedrive"})
    return created["data"]["id"], created["data"]["token"]


def test_a_query_string_api_key_stays_out_of_the_traced_partner_call(
    traces: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Given a partner that takes its API key in the query string, answering 200,
    when the customer connects through the form with tracing on,
    then the partner call is traced (its host is in a subsegment) but its URL there has no query string: the key
    is in no trace document."""
    sent: list[str] = []

    def answer(adapter: Any, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        sent.append(request.url or "")
        response = requests.Response()
        body = io.BytesIO(b'{"data": {"company_name": "ACME"}}')
        response.status_code, response.raw = 200, urllib3.HTTPResponse(body=body, preload_content=False)
        response.headers["Content-Type"] = "application/json"
        response.request, response.url = request, request.url or ""
        return response

    monkeypatch.setattr(requests.adapters.HTTPAdapter, "send", answer)
    key = "pdKey0123456789abcdefSECRET"
    link_id, token = _pipedrive_link()
    done = call("connect_page", event("connect_post", form={"id": link_id, "token": token, "f_apiToken": key}))
    assert done["statusCode"] in (200, 303), done["body"][:300]
    assert sent and f"api_token={key}" in sent[0]  # the key really went in the query string
    text = traced(traces)
    assert "api.pipedrive.com" in text and key not in text


def test_a_failed_partner_call_puts_no_query_string_api_key_into_the_trace(
    traces: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Given a partner that takes its API key in the query string and refuses connections,
    when the customer submits the form with tracing on,
    then the failure is traced as a fault, but requests' error message — which names the URL, key included — is
    in no trace document."""

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise ConnectionRefusedError(111, "Connection refused")

    monkeypatch.setattr("urllib3.util.connection.create_connection", refuse)
    key = "pdKeyABCDEFGHIJ0123456789SECRET"
    link_id, token = _pipedrive_link()
    failed = call("connect_page", event("connect_post", form={"id": link_id, "token": token, "f_apiToken": key}))
    assert failed["statusCode"] == 400
    text = traced(traces)
    partner = [s for d in map(json.loads, traces) for s in [d, *d.get("subsegments", [])]
               if s.get("name") == "api.pipedrive.com"]  # fmt: skip
    assert partner and all(s.get("fault") for s in partner)
    assert key not in text
