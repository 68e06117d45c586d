"""The hosted connect page in headless Chromium, against the real local stack.

The page has no JavaScript; Playwright's JS evaluation is used only to measure and to read focus.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from playwright.sync_api import Page, Response, expect

from tests.e2e.conftest import PageLog
from tests.stack import ROOT, http, url

LINKS = "/credentials/grant-access-sharing"
DEMO_APIKEY, DEMO_BASIC = 9001, 9002
PHONE = {"width": 360, "height": 740}
pytestmark = pytest.mark.browser


def auth(stack: dict[str, Any]) -> dict[str, str]:
    return {"Authorization": f"Bearer {stack['apiKey']}"}


def new_link(stack: dict[str, Any], partner_id: int, title: str) -> dict[str, Any]:
    """A fresh share link over the API, as a tenant's backend would create it."""
    answer = http.post(url(stack, LINKS), json={"partnerId": partner_id, "title": title}, headers=auth(stack))
    assert answer.status_code == 201, answer.text
    return answer.json()["data"]


def open_page(page: Page, address: str) -> Response:
    response = page.goto(address)
    assert response is not None
    return response


def submit(page: Page, button: str) -> Response:
    """Click the submit button and return the answer to the form's POST (the browser follows nothing else)."""
    with page.expect_response(lambda r: r.request.method == "POST" and "/connect" in r.url) as answer:
        page.get_by_role("button", name=button).click()
    page.wait_for_load_state()
    return answer.value


def assert_clean(page_log: PageLog, *statuses: int) -> None:
    """No console error, CSP violation or page error; and only these (deliberate) HTTP error statuses."""
    assert page_log.problems() == []
    assert page_log.failed_statuses() == list(statuses), page_log.failed_loads


def active_element(page: Page) -> str:
    """The focused element's name, or its tag for an element without one."""
    return page.evaluate("document.activeElement.name || document.activeElement.tagName.toLowerCase()")


def test_the_readme_flow_connects_and_stores_the_secret(
    stack: dict[str, Any], page: Page, page_log: PageLog, artifacts: Path
) -> None:
    """Given a link for the demo API-key partner created over the API,
    when a customer opens it in Chromium, types a key into the labelled field and clicks Connect,
    then they see the success page, the link is used, and the API returns the very key they typed."""
    link = new_link(stack, DEMO_APIKEY, "Browser test")

    assert open_page(page, link["link"]).status == 200
    expect(page).to_have_title("Connect Demo (API key) – Browser test")
    expect(page.get_by_role("heading", level=1)).to_have_text("Connect Demo (API key)")
    expect(page.get_by_text("Browser test", exact=True)).to_be_visible()
    key_input = page.get_by_label("API key")
    expect(key_input).to_have_attribute("type", "password")
    expect(key_input).to_have_attribute("autocomplete", "new-password")
    key_input.fill("demo-key-1234567890")
    page.screenshot(path=artifacts / "connect-form.png", full_page=True)

    assert submit(page, "Connect Demo (API key)").status == 200
    expect(page.get_by_role("heading", level=1)).to_have_text("Connected")
    expect(page.get_by_text("Demo (API key) is now connected")).to_be_visible()
    expect(page.get_by_text("Browser test", exact=True)).to_be_visible()
    page.screenshot(path=artifacts / "connect-success.png", full_page=True)

    used = http.get(url(stack, f"{LINKS}/{link['id']}"), headers=auth(stack)).json()["data"]
    assert used["status"] == 1 and used["credentialId"]
    secret = http.get(url(stack, f"/credentials/{used['credentialId']}/secret"), headers=auth(stack))
    assert secret.status_code == 200, secret.text
    assert secret.json()["data"]["fields"]["apiKey"] == "demo-key-1234567890"
    assert_clean(page_log)


def test_a_missing_field_re_renders_the_form_without_javascript(
    stack: dict[str, Any], page: Page, page_log: PageLog
) -> None:
    """Given a fresh username-and-password link,
    when the customer submits with the password empty (the browser does not validate: `novalidate`),
    then the server answers 400 with the form again: a focused error summary whose link leads to the password,
    the error next to the password, the username kept, the password empty; and the link still connects once
    the password is filled in."""
    link = new_link(stack, DEMO_BASIC, "Validation test")
    open_page(page, link["link"])
    page.get_by_label("Username").fill("alice")

    assert submit(page, "Connect Demo (username and password)").status == 400
    expect(page).to_have_title("Error: Connect Demo (username and password) – Validation test")
    summary = page.get_by_role("alert")
    expect(summary).to_contain_text("There is a problem")
    expect(summary).to_be_focused()  # `autofocus`: a screen reader starts at the problem, no script needed
    summary_link = summary.get_by_role("link", name="Enter your Password.")
    expect(summary_link).to_have_attribute("href", "#f_password")
    password = page.get_by_label("Password")
    expect(password).to_have_attribute("aria-invalid", "true")
    expect(password).to_have_attribute("aria-describedby", "f_password-help f_password-error")
    expect(page.locator("#f_password-error")).to_have_text("Error: Enter your Password.")
    expect(password).to_have_value("")
    expect(page.get_by_label("Username")).to_have_value("alice")
    expect(page.get_by_label("Username")).not_to_have_attribute("aria-invalid", "true")
    summary_link.click()
    expect(password).to_be_focused()

    password.fill("correct horse battery staple")
    assert submit(page, "Connect Demo (username and password)").status == 200
    expect(page.get_by_role("heading", level=1)).to_have_text("Connected")
    expect(page.get_by_text("Demo (username and password) is now connected")).to_be_visible()
    assert_clean(page_log, 400)


def test_the_form_fits_a_phone(stack: dict[str, Any], page: Page, page_log: PageLog, artifacts: Path) -> None:
    """Given a 360x740 viewport (a small phone),
    when the connect form is shown, and again when it comes back with an error,
    then nothing scrolls sideways and the button is a comfortable touch target (at least 44px tall)."""
    page.set_viewport_size(PHONE)  # type: ignore[arg-type]
    link = new_link(stack, DEMO_BASIC, "A rather long title for a phone screen, to see that it wraps nicely")
    open_page(page, link["link"])
    button = page.get_by_role("button", name="Connect Demo (username and password)")
    expect(button).to_be_visible()
    page.screenshot(path=artifacts / "connect-phone.png", full_page=True)
    for state in ("form", "form with errors"):
        assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"], state
        box = button.bounding_box()
        assert box is not None and box["height"] >= 44 and box["width"] <= PHONE["width"], (state, box)
        for field in page.locator("input:not([type=hidden])").all():
            field_box = field.bounding_box()
            assert field_box is not None and field_box["height"] >= 44, (state, field_box)
        if state == "form":
            assert submit(page, "Connect Demo (username and password)").status == 400
            expect(page.get_by_role("alert")).to_be_visible()
    assert_clean(page_log, 400)


def test_tab_reaches_the_fields_before_the_button(stack: dict[str, Any], page: Page, page_log: PageLog) -> None:
    """Given a fresh username-and-password form,
    when a keyboard user presses Tab from the start of the page,
    then focus goes to the username, then the password, then the Connect button, in that order."""
    link = new_link(stack, DEMO_BASIC, "Keyboard test")
    open_page(page, link["link"])
    assert active_element(page) == "body"

    order = []
    for _ in range(3):
        page.keyboard.press("Tab")
        order.append(active_element(page))
    assert order == ["f_username", "f_password", "button"]
    expect(page.get_by_role("button", name="Connect Demo (username and password)")).to_be_focused()
    assert_clean(page_log)


def test_a_used_link_looks_exactly_like_an_unknown_one(stack: dict[str, Any], page: Page, page_log: PageLog) -> None:
    """Given a link that has been used and an id that never existed,
    when each is opened in the browser,
    then both answer 410 with the very same "no longer valid" page (nothing tells them apart)."""
    link = new_link(stack, DEMO_APIKEY, "Used link test")
    open_page(page, link["link"])
    page.get_by_label("API key").fill("demo-key-used-0001")
    assert submit(page, "Connect Demo (API key)").status == 200

    used = open_page(page, link["link"])
    expect(page.get_by_role("heading", level=1)).to_have_text("This link is no longer valid")
    used_html = page.content()
    unknown = open_page(page, url(stack, f"/connect?id=lnk_{'0' * 20}&token={link['token']}"))
    expect(page.get_by_role("heading", level=1)).to_have_text("This link is no longer valid")

    assert (used.status, unknown.status) == (410, 410)
    assert page.content() == used_html
    expect(page.get_by_role("textbox")).to_have_count(0)
    assert_clean(page_log, 410, 410)


def test_no_console_errors_or_csp_violations_on_any_page(stack: dict[str, Any], page: Page, page_log: PageLog) -> None:
    """Given the strict CSP (no scripts; the one inline stylesheet allowed by its sha256 hash),
    when the form, the form with errors, the success page and the gone page are shown,
    then the stylesheet is applied and Chrome reports no console error and no CSP violation."""
    link = new_link(stack, DEMO_APIKEY, "CSP test")
    csp = open_page(page, link["link"]).headers["content-security-policy"]
    assert "'unsafe-inline'" not in csp and "script-src" not in csp
    assert submit(page, "Connect Demo (API key)").status == 400  # the form with errors
    page.get_by_label("API key").fill("demo-key-csp-0001")
    assert submit(page, "Connect Demo (API key)").status == 200  # success
    assert open_page(page, link["link"]).status == 410  # gone

    # The inline stylesheet really applied (a blocked one would leave Chrome's default 8px body margin).
    assert page.evaluate("getComputedStyle(document.body).margin") == "0px"
    assert_clean(page_log, 400, 410)


def test_the_console_and_csp_recorders_catch_a_violation(page: Page, page_log: PageLog) -> None:
    """Given a page whose inline style does not match its CSP hash (served by Playwright, not the product),
    when Chromium loads it,
    then the style is blocked and both recorders see the violation, so the checks above would fail on a real
    one."""
    address = "http://csp-check.invalid/"
    page.route(
        address,
        lambda route: route.fulfill(
            status=200,
            headers={
                "Content-Type": "text/html",
                "Content-Security-Policy": "default-src 'none'; style-src 'sha256-x'",
            },
            body="<!doctype html><title>x</title><style>body{margin:0}</style><p>x</p>",
        ),
    )
    open_page(page, address)
    expect(page.locator("p")).to_have_text("x")
    assert page.evaluate("getComputedStyle(document.body).margin") == "8px"  # the style was blocked
    page.wait_for_function("window.__cspViolationCount > 0")  # the event fires after Chrome logs the violation
    assert any("style-src" in v for v in page_log.csp_violations), page_log
    assert any("Content Security Policy" in e for e in page_log.console_errors), page_log


# --- after connecting, the browser lands on the tenant's page ---------------------------------------------------


class _TenantPage(BaseHTTPRequestHandler):
    """The tenant's own page: answers every GET with a small HTML page and records what was asked for."""

    seen: list[str]

    def do_GET(self) -> None:  # the name http.server calls
        self.seen.append(self.path)
        body = b"<!doctype html><html lang='en'><title>Tenant</title><h1>Back at the tenant</h1></html>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def tenant_site() -> Iterator[tuple[str, list[str]]]:
    """A tenant's web site on 127.0.0.1 (a free port), stopped when the test ends: (its origin, paths asked for)."""
    seen: list[str] = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), type("Handler", (_TenantPage,), {"seen": seen}))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def tenant_allowing(stack: dict[str, Any], origin: str) -> str:
    """A new tenant whose redirect allow-list holds `origin`, made the way `make tenant … REDIRECTS=` does; its key."""
    result = subprocess.run(
        [sys.executable, "-m", "infra.scripts.tenant", "--name", "redirecting shop", "--redirects", origin,
         "--state-file", stack["stateFile"]],
        cwd=ROOT, capture_output=True, text=True, check=True,
    )  # fmt: skip
    return next(line.split(":", 1)[1].strip() for line in result.stdout.splitlines() if line.startswith("API key:"))


def test_after_connecting_the_browser_lands_on_the_tenants_redirect_url(
    stack: dict[str, Any], page: Page, page_log: PageLog, tenant_site: tuple[str, list[str]]
) -> None:
    """Given a link whose redirectUrl is a page of the tenant's (its origin on the tenant's allow-list),
    when the customer connects through the form in Chromium,
    then the POST's 303 is followed to the tenant's page (the page's CSP form-action lets it through) with
    `status=1` and the new `credentialId` in its query, and no CSP violation or console error happened."""
    origin, seen = tenant_site
    key = tenant_allowing(stack, origin)
    created = http.post(
        url(stack, LINKS),
        json={"partnerId": DEMO_APIKEY, "title": "Redirect test", "redirectUrl": f"{origin}/connected?from=grantlink"},
        headers={"Authorization": f"Bearer {key}"},
    )
    assert created.status_code == 201, created.text
    link = created.json()["data"]
    assert open_page(page, link["link"]).status == 200
    page.get_by_label("API key").fill("demo-key-1234567890")

    assert submit(page, "Connect Demo (API key)").status == 303
    expect(page.get_by_role("heading", level=1)).to_have_text("Back at the tenant")
    landed = urlsplit(page.url)
    query = parse_qs(landed.query)
    status = http.get(url(stack, f"{LINKS}/{link['id']}"), headers={"Authorization": f"Bearer {key}"}).json()["data"]
    assert (f"{landed.scheme}://{landed.netloc}", landed.path) == (origin, "/connected")
    assert query == {"from": ["grantlink"], "status": ["1"], "credentialId": [status["credentialId"]]}
    assert status["status"] == 1 and [p for p in seen if p.startswith("/connected")] == [f"/connected?{landed.query}"]
    assert_clean(page_log)
