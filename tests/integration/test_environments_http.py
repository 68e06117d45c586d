"""Environments and scopes over real HTTP against the local stack: a sandbox link for demo-oauth (9003) runs end to
end against the stack's second oauth2-mock-server (the sandbox), a link asking for a scope the demo servers never
grant shows the narrower grant, bad environments and scopes are refused before anything is written, and the lists
and the partner catalogue filter by environment, auth type and category.

The demo servers report each token and /userinfo call; the stack counts them per server at /_local/oauth-stats
("sandbox" apart). Counts lag the calls by a moment, so they are read with a bounded poll (`counted`), and "the
production server saw nothing" is proved with a barrier: a later production call moves its count by exactly one.
"""

from __future__ import annotations

import re
import time
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.oauth_http import (
    CODE,
    COUNT_SETTLES_WITHIN,
    DEMO_OAUTH,
    REFRESH,
    approve,
    connect,
    link_status,
    query,
    saw,
    settled,
    start,
    text,
    token,
    token_requests,
)
from tests.stack import LINKS, auth, http, url

pytestmark = pytest.mark.integration

DEFAULT_SCOPES = ["openid", "profile", "offline_access"]  # demo-oauth's defaults (providers/demo.json)
REFUSED = "demo:write"  # the demo OAuth servers never grant it (infra/local/oauth_server.mjs)


def stats(stack: dict[str, Any]) -> dict[str, Any]:
    answer = http.get(url(stack, "/_local/oauth-stats"))
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def sandbox_count(stack: dict[str, Any], what: str) -> int:
    """The sandbox server's count: a grant type's token requests, or "userinfo" for /userinfo calls."""
    sandbox = stats(stack)["sandbox"]
    return int(sandbox["userinfoRequests"] if what == "userinfo" else sandbox["tokenRequests"].get(what, 0))


def counted(stack: dict[str, Any], what: str, at_least: int) -> int:
    """The sandbox count once it reaches `at_least` (bounded: the calls were made, only their counting lags)."""
    deadline = time.monotonic() + COUNT_SETTLES_WITHIN
    while (count := sandbox_count(stack, what)) < at_least and time.monotonic() < deadline:
        time.sleep(0.02)
    return count


def new_link(stack: dict[str, Any], **body: Any) -> dict[str, Any]:
    request = {"partnerId": DEMO_OAUTH, "title": "Env test", **body}
    answer = http.post(url(stack, LINKS), json=request, headers=auth(stack))
    assert answer.status_code == 201, answer.text
    link = answer.json()["data"]
    saw(stack, "link token", link["token"])
    return dict(link)


def connect_link(stack: dict[str, Any], link: dict[str, Any]) -> tuple[str, str]:
    """Walk `link` through its OAuth flow; returns (the authorize URL, the new credential's id)."""
    authorize_url = start(stack, link).headers["Location"]
    answer = http.get(approve(stack, authorize_url), allow_redirects=False)
    assert answer.status_code == 303, (answer.status_code, answer.text)
    used = link_status(stack, link["id"])
    assert used["status"] == 1, used
    return authorize_url, str(used["credentialId"])


def credential(stack: dict[str, Any], credential_id: str) -> dict[str, Any]:
    answer = http.get(url(stack, f"/credentials/{credential_id}"), headers=auth(stack))
    assert answer.status_code == 200, answer.text
    return dict(answer.json()["data"])


def link_count(stack: dict[str, Any]) -> int:
    return int(http.get(url(stack, LINKS), headers=auth(stack)).json()["meta"]["totalItemsCount"])


# --- a sandbox link, end to end ----------------------------------------------------------------------------------


def test_a_sandbox_link_connects_tests_and_refreshes_against_the_sandbox_server(stack: dict[str, Any]) -> None:
    """Given a demo-oauth link created with environment "sandbox",
    when the customer opens it, connects, and the tenant tests and force-refreshes the credential,
    then the page says Sandbox; the authorize URL and `iss` are the sandbox server's; the code exchange, the
    connection test's /userinfo and the refresh are counted by the sandbox server; the credential says sandbox;
    and the production server saw none of it (a production flow afterwards moves its counts by exactly one)."""
    production_codes, production_refreshes = token_requests(stack, CODE), token_requests(stack, REFRESH)
    production_userinfo = int(stats(stack)["userinfoRequests"])
    sandbox_codes, sandbox_refreshes = sandbox_count(stack, CODE), sandbox_count(stack, REFRESH)
    sandbox_userinfo = sandbox_count(stack, "userinfo")
    link = new_link(stack, environment="sandbox")
    assert link["environment"] == "sandbox"

    page = text(http.get(link["link"]))
    assert '<p class="badge">Sandbox</p>' in page
    assert "You are connecting a Sandbox account of Demo (OAuth)" in " ".join(re.sub(r"<[^>]+>", "", page).split())

    authorize_url, credential_id = connect_link(stack, link)
    sandbox = urlsplit(stack["sandboxOAuthIssuer"])
    assert urlsplit(authorize_url)[:3] == (sandbox.scheme, sandbox.netloc, "/authorize")
    assert counted(stack, CODE, sandbox_codes + 1) == sandbox_codes + 1
    shown = credential(stack, credential_id)
    assert shown["environment"] == "sandbox" and shown["authType"] == "oauth2"

    tested = http.post(url(stack, f"/credentials/{credential_id}/test"), headers=auth(stack))
    assert tested.status_code == 200 and tested.json()["data"]["ok"] is True, tested.text
    assert counted(stack, "userinfo", sandbox_userinfo + 1) == sandbox_userinfo + 1
    assert token(stack, credential_id, force=True).status_code == 200
    assert counted(stack, REFRESH, sandbox_refreshes + 1) == sandbox_refreshes + 1
    proxied = http.get(url(stack, f"/credentials/{credential_id}/proxy/v1/contacts"), headers=auth(stack))
    assert proxied.status_code == 200 and proxied.json()["path"] == "/_demo/echo/demo-oauth-sandbox/v1/contacts"

    _, production_credential = connect(stack, "Production barrier")  # one production code exchange
    assert settled(stack, CODE, production_codes + 1) == production_codes + 1
    assert token(stack, production_credential, force=True).status_code == 200  # one production refresh
    assert settled(stack, REFRESH, production_refreshes + 1) == production_refreshes + 1
    assert int(stats(stack)["userinfoRequests"]) == production_userinfo


# --- scopes ------------------------------------------------------------------------------------------------------


def test_a_grant_narrower_than_requested_is_shown_on_the_credential(stack: dict[str, Any]) -> None:
    """Given a link asking for the defaults plus demo:write, which the demo server never grants,
    when the customer connects,
    then the authorize URL asks for all four, and the credential shows requestedScopes (the four), grantedScopes
    (without demo:write), missingScopes ["demo:write"] and scopesNarrowed true."""
    asked = [*DEFAULT_SCOPES, REFUSED]
    link = new_link(stack, scopes=asked)
    assert link["scopes"] == asked
    page = text(http.get(link["link"]))
    assert all(f"<li><code>{scope}</code></li>" in page for scope in asked)

    authorize_url, credential_id = connect_link(stack, link)
    assert query(authorize_url)["scope"].split(" ") == asked
    shown = credential(stack, credential_id)
    assert shown["requestedScopes"] == asked
    assert shown["grantedScopes"] == DEFAULT_SCOPES
    assert shown["missingScopes"] == [REFUSED] and shown["scopesNarrowed"] is True


def test_a_full_grant_is_not_flagged(stack: dict[str, Any]) -> None:
    """Given a link narrowed to openid and email (both granted), when the customer connects,
    then requested and granted scopes are the same two, nothing is missing and the grant is not flagged."""
    link = new_link(stack, scopes=["openid", "email"])
    _, credential_id = connect_link(stack, link)
    shown = credential(stack, credential_id)
    assert shown["requestedScopes"] == shown["grantedScopes"] == ["openid", "email"]
    assert shown["missingScopes"] == [] and shown["scopesNarrowed"] is False


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"environment": "staging"}, "environment_not_supported"),
        ({"scopes": ["openid", "admin:all"]}, "scope_not_allowed"),
        ({"scopes": ["openid", "openid"]}, "duplicate_scope"),
        ({"partnerId": 9001, "scopes": ["read"]}, "scopes_not_supported"),
        ({"partnerId": 9001, "environment": "sandbox"}, "environment_not_supported"),
    ],
)
def test_bad_environments_and_scopes_are_refused_and_nothing_is_written(
    stack: dict[str, Any], body: dict[str, Any], code: str
) -> None:
    """Given a link request with an environment the partner lacks or scopes it does not allow,
    then it is a 422 with that code, and the tenant has no more links than before."""
    before = link_count(stack)
    answer = http.post(
        url(stack, LINKS), json={"partnerId": DEMO_OAUTH, "title": "Refused", **body}, headers=auth(stack)
    )
    assert answer.status_code == 422, answer.text
    assert answer.json()["error"]["code"] == code
    assert link_count(stack) == before


def test_a_refused_scope_is_named_in_the_problems(stack: dict[str, Any]) -> None:
    """Given a link asking for a scope demo-oauth does not declare, then the 422's details name that scope."""
    answer = http.post(
        url(stack, LINKS),
        json={"partnerId": DEMO_OAUTH, "title": "Refused", "scopes": ["openid", "admin:all"]},
        headers=auth(stack),
    )
    assert answer.json()["error"]["details"] == [
        {"field": "scopes", "problem": "admin:all is not a scope Demo (OAuth) allows"}
    ]


# --- lists and the catalogue -------------------------------------------------------------------------------------


def test_credentials_and_links_filter_by_environment(stack: dict[str, Any]) -> None:
    """Given a connected sandbox credential and a waiting production link,
    when the lists are asked for environment=sandbox (and production),
    then they hold only that environment's items, with null totals (no counter keeps environments)."""
    _, sandbox_credential = connect_link(stack, new_link(stack, environment="sandbox", title="Filter sandbox"))
    production_link = new_link(stack, title="Filter production")

    found = http.get(url(stack, "/credentials"), params={"environment": "sandbox", "perPage": 100}, headers=auth(stack))
    assert found.status_code == 200, found.text
    assert found.json()["meta"]["totalItemsCount"] is None
    items = found.json()["data"]
    assert sandbox_credential in [c["id"] for c in items] and {c["environment"] for c in items} == {"sandbox"}

    sandbox_links = http.get(url(stack, LINKS), params={"environment": "sandbox", "perPage": 100}, headers=auth(stack))
    assert sandbox_links.status_code == 200 and sandbox_links.json()["meta"]["totalItemsCount"] is None
    assert {link["environment"] for link in sandbox_links.json()["data"]} == {"sandbox"}
    production = http.get(url(stack, LINKS), params={"environment": "production", "perPage": 100}, headers=auth(stack))
    assert production_link["id"] in [link["id"] for link in production.json()["data"]]
    assert {link["environment"] for link in production.json()["data"]} == {"production"}


def partners(stack: dict[str, Any], **params: str) -> list[dict[str, Any]]:
    answer = http.get(url(stack, "/partners"), params={"perPage": "100", **params}, headers=auth(stack))
    assert answer.status_code == 200, answer.text
    assert answer.json()["meta"]["totalItemsCount"] <= 100  # one page holds them all
    return list(answer.json()["data"])


def test_partners_filter_by_auth_type_environment_and_category(stack: dict[str, Any]) -> None:
    """Given the catalogue with the demo partners, when GET /partners filters,
    then oauth1 and client_credentials list only their kind (the demo ones included), environment=sandbox only
    partners declaring a sandbox (demo-oauth and demo-client-credentials among them), category=crm only CRMs,
    and the filters combine."""
    oauth1 = partners(stack, authType="oauth1")
    assert 9004 in [p["id"] for p in oauth1] and {p["authType"] for p in oauth1} == {"oauth1"}
    machine = partners(stack, authType="client_credentials")
    assert 9005 in [p["id"] for p in machine] and {p["authType"] for p in machine} == {"client_credentials"}
    sandboxes = partners(stack, environment="sandbox")
    assert {9003, 9005} <= {p["id"] for p in sandboxes}
    assert all("sandbox" in [e["name"] for e in p["environments"]] for p in sandboxes)
    crm = partners(stack, category="crm")
    assert crm and {p["category"] for p in crm} == {"crm"}
    both = partners(stack, authType="client_credentials", environment="sandbox")
    assert 9005 in [p["id"] for p in both] and all(p["authType"] == "client_credentials" for p in both)


def test_an_unknown_filter_value_is_a_400(stack: dict[str, Any]) -> None:
    """Given an auth type or category that does not exist, or a malformed environment, then GET /partners is a 400."""
    for params in ({"authType": "saml"}, {"category": "games"}, {"environment": "Not An Env"}):
        answer = http.get(url(stack, "/partners"), params=params, headers=auth(stack))
        assert answer.status_code == 400, (params, answer.text)
