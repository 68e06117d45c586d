"""OAuth 2.0 through the link (grantlink.oauth) against a fake authorization server on 127.0.0.1:
the whole flow, OAuth apps and the error paths. What SECURITY.md asks of the OAuth client (O1–O11) is proved in
tests/security/test_oauth_client.py."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from werkzeug import Request, Response

from grantlink import connect, connections, errors, links, oauth
from grantlink.models import Caller, CreateLinkRequest, LinkStatus, OAuthAppRequest
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


def test_reauthorize_an_oauth_credential_keeps_its_id(provider_server: FakeAuthorizationServer) -> None:
    from grantlink.models import ReauthorizeRequest

    credential_id = connected_credential(provider_server)
    link, token = connections.reauthorize(A, credential_id, ReauthorizeRequest.model_validate({}))
    query = parse_qs(urlsplit(oauth.start(link.id, token, {}, REDIRECT)).query)
    assert finish(query).connected
    assert links.get_link(A, link.id).credential_id == credential_id
    assert connections.read_secret(A, credential_id).fields["accessToken"] == f"access-{len(provider_server.calls)}"
    assert connections.list_credentials(A, None, None, 20, None)[1].totalItemsCount == 1


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


def test_a_callback_for_a_revoked_link_spends_no_code(provider_server: FakeAuthorizationServer) -> None:
    """Given a flow started on a link, when the link is revoked before the partner calls back,
    then the callback is refused before the authorization code is exchanged: the partner issues no tokens."""
    link, query = start_flow()
    links.revoke_link(A, link.id)
    with pytest.raises(errors.Gone):
        finish(query)
    assert provider_server.calls == []


def test_a_callback_after_the_link_expired_spends_no_code(
    provider_server: FakeAuthorizationServer, clock: FrozenClock
) -> None:
    """Given a flow started five minutes before its link expires, when the partner calls back six minutes later
    (the flow itself is still within its ten minutes), then the code is not exchanged."""
    link, token = links.create_link(A, CreateLinkRequest(partnerId=PARTNER_ID, title="Fake CRM"))
    clock.advance(seconds=(link.expires_at - link.created_at).total_seconds() - 300)
    query = parse_qs(urlsplit(oauth.start(link.id, token, {}, REDIRECT)).query)
    clock.advance(minutes=6)
    with pytest.raises(errors.Gone):
        finish(query)
    assert provider_server.calls == []
