"""The OAuth connect flow in headless Chromium, against the real local stack and its oauth2-mock-server.

The browser follows every redirect itself: the connect page's form POST, the 303 to the mock's /authorize
(which approves at once), its 302 back to /oauth/callback, and the callback's 303 to the clean done page.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Page, Response, expect

from tests.e2e.conftest import PageLog
from tests.stack import http, url

LINKS = "/credentials/grant-access-sharing"
DEMO_OAUTH = 9003
pytestmark = pytest.mark.browser


def auth(stack: dict[str, Any]) -> dict[str, str]:
    return {"Authorization": f"Bearer {stack['apiKey']}"}


def test_the_oauth_button_connects_and_lands_on_a_clean_url(
    stack: dict[str, Any], page: Page, page_log: PageLog, artifacts: Path
) -> None:
    """O10. Given a 9003 link created over the API,
    when a customer opens it in Chromium and clicks "Connect Demo (OAuth)" (the mock approves at once),
    then they land on the Connected page at {apiUrl}/connect/done?partner=9003, and no address the page ever
    showed carried a code or state; the redirects were 303 → 302 → 303; the form-action CSP let the form go to
    the authorization server: no console error, CSP violation or page error; and over the API the link is used
    and the secret holds an access token."""
    answer = http.post(url(stack, LINKS), json={"partnerId": DEMO_OAUTH, "title": "OAuth browser"}, headers=auth(stack))
    assert answer.status_code == 201, answer.text
    link = answer.json()["data"]
    redirects: list[tuple[int, str]] = []
    committed: list[str] = []  # every URL the address bar showed
    page.on("response", lambda r: redirects.append((r.status, r.url)) if 300 <= r.status < 400 else None)
    page.on("framenavigated", lambda frame: committed.append(frame.url) if frame == page.main_frame else None)

    opened = page.goto(link["link"])
    assert opened is not None and opened.status == 200
    expect(page).to_have_title("Connect Demo (OAuth) – OAuth browser")
    expect(page.get_by_role("heading", level=1)).to_have_text("Connect Demo (OAuth)")
    form_action = opened.headers["content-security-policy"].split("form-action", 1)[1].split(";", 1)[0]
    assert stack["oauthIssuer"] in form_action.split()  # the mock's origin is allowed as a form target

    done_url = url(stack, f"/connect/done?partner={DEMO_OAUTH}")
    with page.expect_response(lambda r: r.url == done_url) as landed:
        page.get_by_role("button", name="Connect Demo (OAuth)").click()
    page.wait_for_load_state()
    done: Response = landed.value
    assert done.status == 200
    assert page.url == done_url
    assert "code=" not in page.url and "state=" not in page.url
    expect(page.get_by_role("heading", level=1)).to_have_text("Connected")
    expect(page.get_by_text("Demo (OAuth) is now connected")).to_be_visible()
    page.screenshot(path=artifacts / "oauth-connected.png", full_page=True)

    issuer = urlsplit(stack["oauthIssuer"]).netloc
    hops = [(status, urlsplit(address).netloc == issuer, urlsplit(address).path) for status, address in redirects]
    assert hops == [
        (303, False, "/connect/oauth/start"),
        (302, True, "/authorize"),
        (303, False, "/oauth/callback"),
    ], redirects
    assert committed == [link["link"], done_url]  # the callback URL never reached the address bar or history
    assert page_log.problems() == [], page_log
    assert page_log.failed_statuses() == [], page_log.failed_loads

    used = http.get(url(stack, f"{LINKS}/{link['id']}"), headers=auth(stack)).json()["data"]
    assert used["status"] == 1 and used["credentialId"], used
    revealed = http.get(url(stack, f"/credentials/{used['credentialId']}/secret"), headers=auth(stack))
    assert revealed.status_code == 200, revealed.text
    assert revealed.json()["data"]["fields"]["accessToken"]
