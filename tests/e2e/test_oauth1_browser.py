"""The OAuth 1.0a connect flow in headless Chromium, against the real local stack and its demo OAuth 1.0a provider
(demo-oauth1, partner 9004): the connect page's button, the provider's consent page, and back.

The browser follows every redirect itself: the form POST's 303 to the provider's authorize page, the consent
form's 302 back to /oauth/callback, and the callback's 303 to the clean done page.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Page, expect

from tests.e2e.conftest import PageLog
from tests.stack import auth, http, url

LINKS = "/credentials/grant-access-sharing"
DEMO_OAUTH1 = 9004
pytestmark = pytest.mark.browser


def test_connect_approve_at_the_provider_and_land_on_the_success_page(
    stack: dict[str, Any], page: Page, page_log: PageLog, artifacts: Path
) -> None:
    """Given a 9004 link created over the API
    When a customer opens it in Chromium, clicks "Connect Demo (OAuth 1.0a)" and presses Approve on the provider's
    page
    Then they land on the Connected page at /connect/done (no oauth_token or verifier in the address), the
    redirects were 303 → 302 → 303, the page's form-action CSP let the form go to the provider, nothing went
    wrong in the page, and over the API the link is used and its credential is listed with authType oauth1."""
    answer = http.post(url(stack, LINKS), json={"partnerId": DEMO_OAUTH1, "title": "OAuth 1.0a browser"},
                       headers=auth(stack))  # fmt: skip
    assert answer.status_code == 201, answer.text
    link = answer.json()["data"]
    redirects: list[tuple[int, str]] = []
    page.on("response", lambda r: redirects.append((r.status, r.url)) if 300 <= r.status < 400 else None)

    opened = page.goto(link["link"])
    assert opened is not None and opened.status == 200
    expect(page.get_by_role("heading", level=1)).to_have_text("Connect Demo (OAuth 1.0a)")
    form_action = opened.headers["content-security-policy"].split("form-action", 1)[1].split(";", 1)[0]
    assert stack["oauth1Url"] in form_action.split()

    page.get_by_role("button", name="Connect Demo (OAuth 1.0a)").click()
    expect(page.get_by_role("heading", level=1)).to_have_text(
        "Allow grantlink-demo-oauth1 to access your demo account?"
    )
    done_url = url(stack, f"/connect/done?partner={DEMO_OAUTH1}")
    with page.expect_response(lambda r: r.url == done_url) as landed:
        page.get_by_role("button", name="Approve").click()
    page.wait_for_load_state()

    assert landed.value.status == 200 and page.url == done_url
    expect(page.get_by_role("heading", level=1)).to_have_text("Connected")
    expect(page.get_by_text("Demo (OAuth 1.0a) is now connected")).to_be_visible()
    page.screenshot(path=artifacts / "oauth1-connected.png", full_page=True)
    provider = urlsplit(stack["oauth1Url"]).netloc
    hops = [(status, urlsplit(address).netloc == provider, urlsplit(address).path) for status, address in redirects]
    assert hops == [
        (303, False, "/connect/oauth/start"),
        (302, True, "/oauth/authorize"),
        (303, False, "/oauth/callback"),
    ], redirects
    assert page_log.problems() == [], page_log
    assert page_log.failed_statuses() == [], page_log.failed_loads

    used = http.get(url(stack, f"{LINKS}/{link['id']}"), headers=auth(stack)).json()["data"]
    assert used["status"] == 1 and used["credentialId"], used
    listed = http.get(url(stack, "/credentials"), params={"partnerId": DEMO_OAUTH1}, headers=auth(stack)).json()
    assert {"id": used["credentialId"], "authType": "oauth1"} in [
        {"id": c["id"], "authType": c["authType"]} for c in listed["data"]
    ]
