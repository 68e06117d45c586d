"""OAuth 2.0 client credentials through the connect page in headless Chromium, against the real local stack: the
customer types a client id and secret into a plain form (no redirect to the partner); grantlink mints a token."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from tests.e2e.conftest import PageLog
from tests.e2e.test_connect_browser import assert_clean, auth, new_link, open_page, submit
from tests.oauth_http import saw
from tests.stack import LINKS, http, url

DEMO_CLIENT_CREDENTIALS = 9005
pytestmark = pytest.mark.browser


def test_a_customer_connects_with_a_client_id_and_secret(
    stack: dict[str, Any], page: Page, page_log: PageLog, artifacts: Path
) -> None:
    """Given a link for the demo client credentials partner,
    when the customer opens it in Chromium, fills in the client id and the (masked) client secret and clicks Connect,
    then they see the success page without leaving grantlink, and the tenant's token endpoint returns a minted
    bearer token for the new credential, whose secret holds the client secret typed."""
    link = new_link(stack, DEMO_CLIENT_CREDENTIALS, "Machine access")
    assert open_page(page, link["link"]).status == 200
    expect(page.get_by_role("heading", level=1)).to_have_text("Connect Demo (OAuth client credentials)")
    page.get_by_label("Client ID").fill("browser-machine-app")
    secret_input = page.get_by_label("Client secret")
    expect(secret_input).to_have_attribute("type", "password")
    secret_input.fill("browser-machine-secret-42424242")
    page.screenshot(path=artifacts / "client-credentials-form.png", full_page=True)

    answer = submit(page, "Connect Demo (OAuth client credentials)")
    assert answer.status == 200 and answer.url.startswith(stack["apiUrl"])
    expect(page.get_by_role("heading", level=1)).to_have_text("Connected")

    used = http.get(url(stack, f"{LINKS}/{link['id']}"), headers=auth(stack)).json()["data"]
    assert used["status"] == 1 and used["credentialId"]
    token = http.get(url(stack, f"/credentials/{used['credentialId']}/token"), headers=auth(stack))
    assert token.status_code == 200 and token.json()["data"]["tokenType"].lower() == "bearer", token.text
    fields = http.get(url(stack, f"/credentials/{used['credentialId']}/secret"), headers=auth(stack)).json()["data"]
    assert fields["fields"]["clientSecret"] == "browser-machine-secret-42424242"
    saw(stack, "access token", token.json()["data"]["accessToken"])
    saw(stack, "client secret", "browser-machine-secret-42424242")
    assert_clean(page_log)
