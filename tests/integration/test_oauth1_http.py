"""OAuth 1.0a through the link over real HTTP: the local stack and its demo OAuth 1.0a provider (demo-oauth1, partner
9004, infra/local/oauth1_server.py), redirects walked by hand. The demo tenant's consumer is seeded by the stack."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import pytest
import requests

from tests.oauth_http import link_status, query, text
from tests.stack import auth, http, new_tenant, url

pytestmark = pytest.mark.integration

DEMO_OAUTH1 = 9004
DEMO_OAUTH1_RSA = 9006  # the same provider, signed with RSA-SHA1
LINKS = "/credentials/grant-access-sharing"


def new_link(stack: dict[str, Any], key: str | None = None, partner: int = DEMO_OAUTH1) -> dict[str, Any]:
    answer = http.post(url(stack, LINKS), json={"partnerId": partner, "title": "Demo 1.0a"}, headers=auth(stack, key))
    assert answer.status_code == 201, answer.text
    return dict(answer.json()["data"])


def press_connect(stack: dict[str, Any], link: dict[str, Any]) -> requests.Response:
    """POST the connect page's form to /connect/oauth/start, as its button does; the 303 is not followed."""
    form = {"id": link["id"], "token": link["token"]}
    return http.post(url(stack, "/connect/oauth/start"), data=form, allow_redirects=False)


def decide(authorize_url: str, decision: str = "approve") -> str:
    """The customer's answer on the provider's page (`auto=` skips the page); returns the callback URL."""
    answer = http.get(authorize_url, params={"auto": decision}, allow_redirects=False)
    assert answer.status_code == 302, (answer.status_code, answer.text)
    return str(answer.headers["location"])


def connect(stack: dict[str, Any]) -> tuple[dict[str, Any], str]:
    link = new_link(stack)
    callback = decide(press_connect(stack, link).headers["Location"])
    back = http.get(callback, allow_redirects=False)
    assert back.status_code == 303, (back.status_code, back.text)
    return link, link_status(stack, link["id"])["credentialId"]


def test_the_full_flow_connects_and_the_credential_is_usable(stack: dict[str, Any]) -> None:
    """Given a 9004 link created with the demo key
    When the customer opens it, presses "Connect Demo (OAuth 1.0a)", approves at the provider and comes back
    Then the authorize URL carries only the request token, the link waits (2) meanwhile, the callback answers 303
    to the clean /connect/done page, and the link holds an oauth1 credential that tests, proxies (signed, verified
    by the provider) and shows its token and token secret on the secret endpoint, but has no refreshable token."""
    link = new_link(stack)
    page = text(http.get(link["link"]))
    assert '<form method="post" action="/connect/oauth/start"' in page
    assert '<button type="submit">Connect Demo (OAuth 1.0a)</button>' in page

    started = press_connect(stack, link)
    assert started.status_code == 303, started.text
    authorize = started.headers["Location"]
    assert authorize.startswith(f"{stack['oauth1Url']}/oauth/authorize?") and list(query(authorize)) == ["oauth_token"]
    assert link_status(stack, link["id"])["status"] == 2

    back = http.get(decide(authorize), allow_redirects=False)
    assert back.status_code == 303 and back.headers["Location"] == url(stack, f"/connect/done?partner={DEMO_OAUTH1}")
    credential_id = link_status(stack, link["id"])["credentialId"]
    shown = http.get(url(stack, f"/credentials/{credential_id}"), headers=auth(stack)).json()["data"]
    assert shown["authType"] == "oauth1" and shown["state"] == "active" and shown["environment"] == "production"

    tested = http.post(url(stack, f"/credentials/{credential_id}/test"), headers=auth(stack)).json()["data"]
    assert tested["ok"] and tested["accountName"] == "demo-user", tested
    echoed = http.post(
        url(stack, f"/credentials/{credential_id}/proxy/cards"),
        params={"list": "todo"},
        data={"name": "New card"},
        headers=auth(stack),
    )
    assert echoed.status_code == 200, echoed.text
    assert echoed.json()["body"] == "name=New+card" and echoed.json()["query"] == {"list": ["todo"]}
    fields = http.get(url(stack, f"/credentials/{credential_id}/secret"), headers=auth(stack)).json()["data"]["fields"]
    assert {"oauthToken", "oauthTokenSecret", "screenName", "userId"} <= set(fields)
    token = http.get(url(stack, f"/credentials/{credential_id}/token"), headers=auth(stack))
    assert token.status_code == 409 and token.json()["error"]["code"] == "not_an_oauth_credential"


def test_a_replayed_callback_is_refused(stack: dict[str, Any]) -> None:
    """Given a flow that completed
    When its callback URL (request token and verifier) is opened again
    Then the answer is a 400 page and the provider's access-token endpoint is not called again."""
    link = new_link(stack)
    callback = decide(press_connect(stack, link).headers["Location"])
    assert http.get(callback, allow_redirects=False).status_code == 303
    calls = http.get(url(stack, "/_local/oauth1-stats")).json()["accessToken"]

    again = http.get(callback, allow_redirects=False)

    assert again.status_code == 400 and "expired or was already used" in text(again)
    assert http.get(url(stack, "/_local/oauth1-stats")).json()["accessToken"] == calls


def test_a_denial_puts_the_link_back_and_reopening_says_why(stack: dict[str, Any]) -> None:
    """Given a started flow
    When the customer denies access at the provider
    Then the callback shows "Not connected", the link is back at 0, and reopening it says access was denied."""
    link = new_link(stack)
    callback = decide(press_connect(stack, link).headers["Location"], "deny")
    assert "denied=" in urlsplit(callback).query

    back = http.get(callback, allow_redirects=False)

    assert back.status_code == 400 and "Not connected" in text(back)
    assert link_status(stack, link["id"])["status"] == 0
    assert "access was denied" in text(http.get(link["link"]))


def test_a_wrong_consumer_secret_is_refused_at_the_start_and_shown_on_reopening(stack: dict[str, Any]) -> None:
    """Given a tenant whose consumer for 9004 has the wrong secret (PUT /partners/9004/oauth-app)
    When its customer presses Connect
    Then the provider refuses the signature: a 400 page saying so, the link still at 0, the reason on reopening."""
    key = new_tenant(stack, "oauth1 wrong secret")
    app = {"clientId": "grantlink-demo-oauth1", "clientSecret": "not-the-consumer-secret"}
    put = http.put(url(stack, f"/partners/{DEMO_OAUTH1}/oauth-app"), json=app, headers=auth(stack, key))
    assert put.status_code == 200, put.text
    link = new_link(stack, key)

    started = press_connect(stack, link)

    assert started.status_code == 400 and "bad_signature" in text(started)
    assert link_status_as(stack, link["id"], key)["status"] == 0
    assert "refused (bad_signature)" in text(http.get(link["link"]))


def link_status_as(stack: dict[str, Any], link_id: str, key: str) -> dict[str, Any]:
    answer = http.get(url(stack, f"{LINKS}/{link_id}"), headers=auth(stack, key))
    assert answer.status_code == 200, answer.text
    return dict(answer.json()["data"])


def test_a_request_token_expired_at_the_provider_is_refused_and_the_link_goes_back(stack: dict[str, Any]) -> None:
    """Given a flow the customer approved at the provider
    When the provider's request token expires before the customer comes back (its admin endpoint ends it)
    Then the provider refuses the verifier exchange as expired, the callback shows "Not connected", the link is back
    at 0 with no credential, and reopening it says the token request was refused."""
    link = new_link(stack)
    callback = decide(press_connect(stack, link).headers["Location"])
    before = http.get(url(stack, "/_local/oauth1-stats")).json()["refusals"].get("expired_request_token", 0)
    assert http.post(f"{stack['oauth1Url']}/_admin/expire-request-tokens").json()["expired"] >= 1

    back = http.get(callback, allow_redirects=False)

    assert back.status_code == 400 and "Not connected" in text(back)
    assert http.get(url(stack, "/_local/oauth1-stats")).json()["refusals"]["expired_request_token"] == before + 1
    status = link_status(stack, link["id"])
    assert status["status"] == 0 and status["credentialId"] is None
    assert "refused" in text(http.get(link["link"]))


def test_an_rsa_sha1_partner_connects_tests_and_proxies_signed_with_the_tenants_private_key(
    stack: dict[str, Any],
) -> None:
    """Given demo-oauth1-rsa (RSA-SHA1), whose consumer the demo tenant set with the stack's RSA private key
    When the customer connects, and the tenant tests and proxies through the credential
    Then every step is signed with RSA-SHA1 and verified by the provider with the consumer's public key: the link is
    granted, the test names the account, the proxy's echo names the RSA consumer, and the key is never shown."""
    app = http.get(url(stack, f"/partners/{DEMO_OAUTH1_RSA}/oauth-app"), headers=auth(stack)).json()["data"]
    assert app["clientId"] == "grantlink-demo-oauth1-rsa" and "clientSecret" not in app
    link = new_link(stack, partner=DEMO_OAUTH1_RSA)

    back = http.get(decide(press_connect(stack, link).headers["Location"]), allow_redirects=False)

    assert back.status_code == 303, back.text
    credential_id = link_status(stack, link["id"])["credentialId"]
    tested = http.post(url(stack, f"/credentials/{credential_id}/test"), headers=auth(stack)).json()["data"]
    assert tested["ok"] and tested["accountName"] == "demo-user", tested
    echoed = http.get(url(stack, f"/credentials/{credential_id}/proxy/boards"), headers=auth(stack))
    assert echoed.status_code == 200 and "grantlink-demo-oauth1-rsa" in echoed.text, echoed.text
    assert "PRIVATE KEY" not in echoed.text
