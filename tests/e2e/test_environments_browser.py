"""A sandbox link in headless Chromium, against the real local stack and its second oauth2-mock-server (demo-oauth's
sandbox environment): the page says it is a sandbox and what access is asked for, and the form goes to the
sandbox's authorization server (allowed by the page's form-action CSP) and back."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Page, expect

from tests.e2e.conftest import PageLog
from tests.stack import LINKS, auth, http, url

DEMO_OAUTH = 9003
pytestmark = pytest.mark.browser


def test_a_sandbox_link_says_so_and_connects_through_the_sandbox_server(
    stack: dict[str, Any], page: Page, page_log: PageLog, artifacts: Path
) -> None:
    """Given a demo-oauth link for the sandbox environment asking for openid, profile and demo:write,
    when a customer opens it in Chromium and clicks "Connect Demo (OAuth)",
    then the page shows a Sandbox badge, says a Sandbox account is being connected and lists the three scopes;
    the browser goes through the sandbox server's /authorize (the form-action CSP allows its origin: no CSP
    violation) to the Connected page; and over the API the credential is a sandbox one missing demo:write."""
    scopes = ["openid", "profile", "demo:write"]
    body = {"partnerId": DEMO_OAUTH, "title": "Sandbox browser", "environment": "sandbox", "scopes": scopes}
    answer = http.post(url(stack, LINKS), json=body, headers=auth(stack))
    assert answer.status_code == 201, answer.text
    link = answer.json()["data"]
    hops: list[str] = []
    page.on("response", lambda r: hops.append(urlsplit(r.url).netloc) if 300 <= r.status < 400 else None)

    opened = page.goto(link["link"])
    assert opened is not None and opened.status == 200
    expect(page.locator(".badge")).to_have_text("Sandbox")
    expect(page.get_by_text("You are connecting a Sandbox account of Demo (OAuth)")).to_be_visible()
    expect(page.get_by_role("list", name="Access asked for").get_by_role("listitem")).to_have_text(scopes)
    page.screenshot(path=artifacts / "sandbox-connect.png", full_page=True)

    done_url = url(stack, f"/connect/done?partner={DEMO_OAUTH}")
    with page.expect_response(lambda r: r.url == done_url):
        page.get_by_role("button", name="Connect Demo (OAuth)").click()
    page.wait_for_load_state()
    expect(page.get_by_role("heading", level=1)).to_have_text("Connected")
    assert urlsplit(stack["sandboxOAuthIssuer"]).netloc in hops, hops
    assert urlsplit(stack["oauthIssuer"]).netloc not in hops, hops
    assert page_log.problems() == [], page_log

    used = http.get(url(stack, f"{LINKS}/{link['id']}"), headers=auth(stack)).json()["data"]
    shown = http.get(url(stack, f"/credentials/{used['credentialId']}"), headers=auth(stack)).json()["data"]
    assert shown["environment"] == "sandbox" and shown["missingScopes"] == ["demo:write"], shown
