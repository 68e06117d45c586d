"""OAuth 2.0 through the link (grantlink.oauth) against a fake authorization server on 127.0.0.1:
SECURITY.md O1–O8, O10, O11, plus OAuth apps and the error paths."""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import threading
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from werkzeug import Request, Response

from grantlink import connect, connections, errors, links, oauth, providers
from grantlink.models import Caller, CreateLinkRequest, CredentialState, LinkStatus, OAuthAppRequest
from grantlink.store import default as default_store
from tests.helpers import FrozenClock
from tests.unit.oauth_fakes import (
    CLIENT_SECRET,
    PARTNER_ID,
    REDIRECT,
    A,
    FakeAuthorizationServer,
    connected_credential,
    expire_access_token,
    finish,
    start_flow,
)


def test_the_whole_flow_connects_and_stores_tokens_encrypted(provider_server: Any, table_items: Any) -> None:
    link, query = start_flow()
    assert links.get_link(A, link.id).status == LinkStatus.WAITING_FOR_OAUTH
    outcome = finish(query)
    assert outcome.connected and outcome.redirect_to is None
    granted = links.get_link(A, link.id)
    assert granted.status == LinkStatus.GRANTED and granted.credential_id
    secret = connections.read_secret(A, granted.credential_id)
    assert secret.fields["accessToken"] == "access-1" and "refreshToken" not in secret.fields
    dump = json.dumps(table_items(), default=str)
    assert "access-1" not in dump and "refresh-1-1" not in dump and CLIENT_SECRET not in dump


def test_o2_pkce_s256_with_a_fresh_verifier_per_flow(provider_server: Any, table_items: Any) -> None:
    """O2: the challenge is S256 of the stored verifier; two flows have different ones."""
    _, first = start_flow()
    _, second = start_flow()
    assert first["code_challenge_method"] == ["S256"]
    assert first["code_challenge"] != second["code_challenge"]
    flows = [i for i in table_items() if i["pk"]["S"].startswith("OAUTH#")]
    verifiers = {f["verifier"]["S"] for f in flows}
    challenges = {
        base64.urlsafe_b64encode(hashlib.sha256(v.encode()).digest()).rstrip(b"=").decode() for v in verifiers
    }
    assert challenges == {first["code_challenge"][0], second["code_challenge"][0]}


def test_o3_the_stored_verifier_reaches_the_token_endpoint(provider_server: FakeAuthorizationServer) -> None:
    """O3: the token request carries that flow's code_verifier (passed explicitly to requests-oauthlib)."""
    _, query = start_flow()
    verifier = next(i["verifier"] for i in _flows() if oauth.hash_state(query["state"][0]) in i["pk"])
    finish(query)
    (call,) = provider_server.calls
    assert call["code_verifier"] == verifier and call["grant_type"] == "authorization_code"
    assert call["redirect_uri"] == REDIRECT


def _flows() -> list[dict[str, Any]]:
    from grantlink.store import deserialize

    client = default_store().client
    items = client.scan(TableName=default_store().table)["Items"]
    return [deserialize(i) for i in items if i["pk"]["S"].startswith("OAUTH#")]


def test_o4_the_redirect_uri_comes_from_configuration(provider_server: Any) -> None:
    """O4: whatever calls start, the authorize URL carries the configured redirect_uri."""
    _, query = start_flow()
    assert query["redirect_uri"] == [REDIRECT]


@pytest.mark.parametrize("case", ["missing", "wrong", "reused", "expired"])
def test_o1_bad_state_is_rejected_before_any_token_call(
    provider_server: FakeAuthorizationServer, clock: FrozenClock, case: str
) -> None:
    """O1: missing, wrong, reused or expired state → 4xx, and the token endpoint saw no call for it."""
    _, query = start_flow()
    if case == "reused":
        finish(query)
        before = len(provider_server.calls)
    else:
        before = 0
    state = {"missing": "", "wrong": "not-the-state", "reused": query["state"][0], "expired": query["state"][0]}[case]
    if case == "expired":
        clock.advance(minutes=11)
    with pytest.raises(errors.BadRequest):
        oauth.callback({"code": "c", "state": state} if state else {"code": "c"}, REDIRECT)
    assert len(provider_server.calls) == before


@pytest.mark.parametrize("iss", ["https://evil.example", None])
def test_o5_a_wrong_or_missing_iss_is_rejected(provider_server: FakeAuthorizationServer, iss: str | None) -> None:
    """O5: the partner declares its issuer; a callback with another iss, or none, is refused before the token call."""
    link, query = start_flow()
    outcome = finish(query, iss=iss)  # type: ignore[arg-type]
    assert not outcome.connected and "issuer mismatch" in (outcome.problem or "")
    assert provider_server.calls == []
    assert links.get_link(A, link.id).status == LinkStatus.WAITING


def test_access_denied_puts_the_link_back_with_the_reason(provider_server: Any) -> None:
    link, query = start_flow()
    token_less = {
        "error": "access_denied",
        "error_description": "The user said no <script>",
        "state": query["state"][0],
    }
    outcome = oauth.callback(token_less, REDIRECT)
    assert not outcome.connected
    back = links.get_link(A, link.id)
    assert back.status == LinkStatus.WAITING and back.last_error == "access_denied: The user said no script"
    assert provider_server.calls == []


def test_a_refused_code_exchange_puts_the_link_back(provider_server: FakeAuthorizationServer) -> None:
    provider_server.error = "invalid_grant"
    link, query = start_flow()
    outcome = finish(query)
    assert not outcome.connected and "refused" in (outcome.problem or "")
    assert links.get_link(A, link.id).status == LinkStatus.WAITING


def test_a_link_for_an_oauth_partner_needs_an_app(provider_server: Any) -> None:
    oauth.delete_app(A, PARTNER_ID)
    with pytest.raises(errors.UnprocessableEntity) as raised:
        links.create_link(A, CreateLinkRequest(partnerId=PARTNER_ID, title="x"))
    assert raised.value.code == "oauth_app_missing"


def test_oauth_apps_never_return_the_secret(provider_server: Any, table_items: Any) -> None:
    shown = oauth.get_app(A, PARTNER_ID, REDIRECT).model_dump()
    assert shown["clientId"] == "client-1" and shown["redirectUri"] == REDIRECT
    assert CLIENT_SECRET not in json.dumps(shown) and CLIENT_SECRET not in json.dumps(table_items(), default=str)
    with pytest.raises(errors.NotFound):
        oauth.get_app(Caller("tnt_b"), PARTNER_ID, REDIRECT)
    with pytest.raises(errors.UnprocessableEntity):
        oauth.put_app(A, 9001, OAuthAppRequest.model_validate({"clientId": "x", "clientSecret": "y"}), REDIRECT)


def test_o6_concurrent_refreshes_make_one_token_call(provider_server: FakeAuthorizationServer) -> None:
    """O6: eight readers of an expiring token at once → one refresh call; all get the new token."""
    credential_id = connected_credential(provider_server)
    expire_access_token(credential_id)
    provider_server.delay = 0.5
    before = len(provider_server.calls)
    results: list[str] = []

    def read() -> None:
        results.append(connections.read_secret(A, credential_id).fields["accessToken"])

    threads = [threading.Thread(target=read) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(provider_server.calls) - before == 1
    assert provider_server.calls[-1]["grant_type"] == "refresh_token"
    assert results == [f"access-{before + 1}"] * 8


def test_o7_a_rotated_refresh_token_is_saved_and_a_missing_one_keeps_the_old(
    provider_server: FakeAuthorizationServer,
) -> None:
    credential_id = connected_credential(provider_server)  # refresh token: refresh-1-1
    expire_access_token(credential_id)
    connections.read_secret(A, credential_id)
    assert provider_server.calls[-1]["refresh_token"] == "refresh-1-1"
    stored = oauth.open_values(default_store().get_credential(credential_id))  # type: ignore[arg-type]
    assert stored["refreshToken"] == "refresh-1-2"  # rotated
    provider_server.refresh_token = None  # the next answer carries none
    expire_access_token(credential_id)
    connections.read_secret(A, credential_id)
    stored = oauth.open_values(default_store().get_credential(credential_id))  # type: ignore[arg-type]
    assert stored["refreshToken"] == "refresh-1-2" and stored["accessToken"] == "access-3"


def test_o8_invalid_grant_requires_reauthorization_once_and_stops_calling(
    provider_server: FakeAuthorizationServer,
) -> None:
    credential_id = connected_credential(provider_server)
    expire_access_token(credential_id)
    provider_server.error = "invalid_grant"
    before = len(provider_server.calls)
    for _ in range(3):
        with pytest.raises(errors.Conflict) as raised:
            connections.read_secret(A, credential_id)
        assert raised.value.code == "reauthorization_required"
    assert len(provider_server.calls) - before == 1
    credential = default_store().get_credential(credential_id)
    assert credential and credential.state == CredentialState.REAUTHORIZATION_REQUIRED
    actions = [e["action"] for e in connections.list_audit(A, credential_id, 50, None)[0]]
    assert actions.count("reauthorization_required") == 1


def test_reauthorize_an_oauth_credential_keeps_its_id(provider_server: FakeAuthorizationServer) -> None:
    from grantlink.models import ReauthorizeRequest

    credential_id = connected_credential(provider_server)
    link, token = connections.reauthorize(A, credential_id, ReauthorizeRequest.model_validate({}))
    query = parse_qs(urlsplit(oauth.start(link.id, token, {}, REDIRECT)).query)
    assert finish(query).connected
    assert links.get_link(A, link.id).credential_id == credential_id
    assert connections.read_secret(A, credential_id).fields["accessToken"] == f"access-{len(provider_server.calls)}"
    assert connections.list_credentials(A, None, None, 20, None)[1].totalItemsCount == 1


def test_o11_no_secret_reaches_any_log_even_at_debug(
    provider_server: FakeAuthorizationServer, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    """O11: every logger at DEBUG through a whole flow, a refresh and a secret read: no code, token, verifier,
    state or client secret appears (botocore and oauthlib are pinned to WARNING)."""
    caplog.set_level(logging.DEBUG)
    logging.getLogger().setLevel(logging.DEBUG)
    link, query = start_flow()
    state = query["state"][0]
    verifier = next(i["verifier"] for i in _flows() if oauth.hash_state(state) in i["pk"])
    finish(query, code="the-authorization-code")
    credential_id = links.get_link(A, link.id).credential_id or ""
    expire_access_token(credential_id)
    connections.read_secret(A, credential_id)
    text = caplog.text + capsys.readouterr().out
    for secret in ("the-authorization-code", state, verifier, CLIENT_SECRET, "access-1", "access-2", "refresh-1-1"):
        assert secret not in text, secret


def test_the_connect_page_for_an_oauth_partner_allows_its_authorization_server(provider_server: Any) -> None:
    """O10 and CSP: the page's form-action admits the partner's authorize origin (Chrome checks redirects)."""
    from tests.helpers import call, event

    link, token = links.create_link(A, CreateLinkRequest(partnerId=PARTNER_ID, title="Fake CRM"))
    page = call("connect_page", event("connect_get", query={"id": link.id, "token": token}))
    origin = providers.find(PARTNER_ID).base_url  # type: ignore[union-attr]
    assert f"form-action 'self' {origin}" in page["headers"]["Content-Security-Policy"]
    assert 'action="/connect/oauth/start"' in page["body"]


def test_o10_the_callback_303s_to_a_clean_url_with_strict_headers(provider_server: Any) -> None:
    from tests.helpers import call, event

    _, query = start_flow()
    evt = event(
        "connect_get", query={"code": "c", "state": query["state"][0], "iss": providers.find(PARTNER_ID).oauth.issuer}
    )  # type: ignore[union-attr]
    evt["routeKey"] = evt["requestContext"]["routeKey"] = "GET /oauth/callback"
    evt["rawPath"] = evt["requestContext"]["http"]["path"] = "/oauth/callback"
    answer = call("oauth_callback", evt)
    headers = answer["headers"]
    assert answer["statusCode"] == 303
    assert headers["Location"] == f"https://connect.example.test/connect/done?partner={PARTNER_ID}"
    assert headers["Referrer-Policy"] == "no-referrer" and headers["Cache-Control"] == "no-store"


def test_link_tokens_still_gate_the_start(provider_server: Any) -> None:
    link, _ = links.create_link(A, CreateLinkRequest(partnerId=PARTNER_ID, title="x"))
    with pytest.raises(errors.Gone):
        oauth.start(link.id, "not-the-token", {}, REDIRECT)
    with pytest.raises(errors.Gone):
        connect.open_link(link.id, "not-the-token")


def test_a_connection_test_refreshes_an_expiring_token_first(provider_server: FakeAuthorizationServer) -> None:
    """The test engine sends a fresh access token: an expiring one is refreshed first (same single-flight path)."""
    seen: list[str | None] = []

    def me(request: Request) -> Response:
        seen.append(request.headers.get("Authorization"))
        return Response(json.dumps({"name": "Ada"}), 200, content_type="application/json")

    provider_server.server.expect_request("/me").respond_with_handler(me)
    credential_id = connected_credential(provider_server)
    expire_access_token(credential_id)
    result = connections.test_credential(A, credential_id)
    assert result.ok and result.account_name == "Ada"
    assert provider_server.calls[-1]["grant_type"] == "refresh_token"
    assert seen == [f"Bearer access-{len(provider_server.calls)}"]
    stored = default_store().get_credential(credential_id)
    assert stored and stored.last_test and stored.last_test["ok"] and stored.last_refreshed_at
