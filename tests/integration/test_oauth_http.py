"""OAuth 2.0 through the link over real HTTP: the local stack, its oauth2-mock-server, redirects walked by hand
(the helpers, and how token calls are counted, are in tests/oauth_http.py). The rows of SECURITY.md this also
exercises (O1, O4, O6, O11 over HTTP) are proved in tests/security/test_oauth_client.py.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode, urlsplit

import pytest

from tests.oauth_http import (
    CODE,
    DEMO_OAUTH,
    approve,
    link_status,
    new_oauth_link,
    query,
    secret,
    settled,
    start,
    text,
    token_requests,
)
from tests.stack import auth, http, url

pytestmark = pytest.mark.integration


# --- 1. the whole flow ---------------------------------------------------------------------------------------


def test_the_full_flow_connects_through_the_mock_and_lands_on_a_clean_url(stack: dict[str, Any]) -> None:
    """Given a 9003 link created with the demo key,
    when the customer opens it, presses "Connect Demo (OAuth)", approves at the mock and comes back,
    then the authorize URL carries state, an S256 challenge, the configured redirect_uri and the client id;
    the callback answers 303 to a clean /connect/done URL with no-referrer and no-store (O10); the link is used;
    and the credential is an active oauth2 one whose secret holds an access token but no refresh token."""
    before = token_requests(stack, CODE)
    link = new_oauth_link(stack, "Full flow")

    page = http.get(link["link"])
    assert page.status_code == 200
    body = text(page)
    assert '<form method="post" action="/connect/oauth/start"' in body
    assert '<button type="submit">Connect Demo (OAuth)</button>' in body
    assert link_status(stack, link["id"])["status"] == 0  # opening never consumes

    started = start(stack, link)
    authorize_url = started.headers["Location"]
    issuer = urlsplit(stack["oauthIssuer"])
    parts = urlsplit(authorize_url)
    assert (parts.scheme, parts.netloc, parts.path) == (issuer.scheme, issuer.netloc, "/authorize")
    params = query(authorize_url)
    assert params["response_type"] == "code"
    assert params["client_id"] == "grantlink-demo"
    assert params["redirect_uri"] == url(stack, "/oauth/callback")
    assert params["code_challenge_method"] == "S256"
    assert len(params["code_challenge"]) == 43  # base64url of a SHA-256, unpadded
    assert len(params["state"]) >= 43  # 256 bits
    assert started.headers["Referrer-Policy"] == "no-referrer"
    assert link_status(stack, link["id"])["status"] == 2  # waiting for OAuth

    callback_url = approve(stack, authorize_url)
    assert callback_url.startswith(url(stack, "/oauth/callback?"))
    back = query(callback_url)
    assert back["state"] == params["state"]
    assert back["iss"] == stack["oauthIssuer"]
    assert back["code"]

    callback = http.get(callback_url, allow_redirects=False)
    assert callback.status_code == 303, callback.text
    done_url = callback.headers["Location"]
    assert done_url == url(stack, f"/connect/done?partner={DEMO_OAUTH}")
    assert "code" not in query(done_url) and "state" not in query(done_url)
    assert callback.headers["Referrer-Policy"] == "no-referrer"  # O10
    assert callback.headers["Cache-Control"] == "no-store"  # O10
    assert callback.content == b""  # nothing to load: no third-party resources
    assert settled(stack, CODE, before + 1) == before + 1  # one code exchange

    done = http.get(done_url, allow_redirects=False)
    assert done.status_code == 200
    assert "<h1>Connected</h1>" in text(done)
    assert "Demo (OAuth) is now connected" in text(done)

    used = link_status(stack, link["id"])
    assert used["status"] == 1 and used["credentialId"], used
    assert used["token"] is None and used["link"] is None
    credential_id = used["credentialId"]

    revealed = secret(stack, credential_id)
    assert revealed.status_code == 200, revealed.text
    fields = revealed.json()["data"]["fields"]
    assert isinstance(fields["accessToken"], str) and fields["accessToken"]
    assert "refreshToken" not in fields

    meta = http.get(url(stack, f"/credentials/{credential_id}"), headers=auth(stack))
    assert meta.status_code == 200, meta.text
    data = meta.json()["data"]
    assert (data["authType"], data["state"], data["partnerId"]) == ("oauth2", "active", DEMO_OAUTH)
    assert data["accessExpiresAt"]


# --- 2. O1 -----------------------------------------------------------------------------------------------------


# --- 3. O4 -----------------------------------------------------------------------------------------------------


# --- 2. the customer declines ------------------------------------------------------------------------------------


def test_access_denied_puts_the_link_back_with_a_notice_and_it_can_then_connect(stack: dict[str, Any]) -> None:
    """Given a started flow (the link waits for OAuth, status 2),
    when the partner sends the customer back with `error=access_denied` and a description,
    then the callback answers a 400 page saying it did not connect, with no token call; the link is back to
    status 0; reopening it shows "Your last attempt did not finish: access_denied: User declined"; and the flow
    then completes (status 1, one code exchange in all)."""
    before = token_requests(stack, CODE)
    link = new_oauth_link(stack, "Declined")
    state = query(start(stack, link).headers["Location"])["state"]
    assert link_status(stack, link["id"])["status"] == 2

    denied = http.get(
        url(stack, "/oauth/callback?" + urlencode(
            {"error": "access_denied", "error_description": "User declined", "state": state}
        )),
        allow_redirects=False,
    )  # fmt: skip
    assert denied.status_code == 400, denied.text
    assert "Location" not in denied.headers
    assert "<h1>Not connected</h1>" in text(denied)
    assert "Demo (OAuth) did not connect: access_denied: User declined." in text(denied)
    back = link_status(stack, link["id"])
    assert (back["status"], back["credentialId"]) == (0, None)

    reopened = http.get(link["link"])
    assert reopened.status_code == 200
    assert "Your last attempt did not finish: access_denied: User declined" in text(reopened)
    assert 'action="/connect/oauth/start"' in text(reopened)

    callback_url = approve(stack, start(stack, link).headers["Location"])
    assert query(callback_url)["state"] != state  # a fresh flow, not the declined one
    finished = http.get(callback_url, allow_redirects=False)
    assert finished.status_code == 303, finished.text
    assert finished.headers["Location"] == url(stack, f"/connect/done?partner={DEMO_OAUTH}")
    used = link_status(stack, link["id"])
    assert used["status"] == 1 and used["credentialId"], used
    assert settled(stack, CODE, before + 1) == before + 1  # the decline made no token call
    assert "did not finish" not in text(http.get(link["link"]))  # the link is used: the uniform 410 page


# --- 5. O6 -------------------------------------------------------------------------------------------------------


# --- 6. O11 ------------------------------------------------------------------------------------------------------
