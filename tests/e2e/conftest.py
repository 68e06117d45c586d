"""Browser fixtures: the real local stack (from tests/integration) and headless Chromium through Playwright.

Chromium is Debian's (/usr/bin/chromium); Playwright's own browsers are never downloaded.
Every page records console errors and Content-Security-Policy violations so a test can assert there are none.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, sync_playwright

from tests.stack import ROOT

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORT = {"width": 1280, "height": 800}
ARTIFACTS = ROOT / "test-artifacts"

# Runs in every document before the page's own content, through DevTools (so the page's CSP does not apply
# to it), and reports each `securitypolicyviolation` event to Python as it happens (and counts them in the page).
_REPORT_CSP_VIOLATIONS = """
window.__cspViolationCount = 0;
document.addEventListener("securitypolicyviolation", (e) => {
  window.__cspViolationCount += 1;
  window.__reportCspViolation(`${e.effectiveDirective} blocked ${e.blockedURI || "inline"} on ${e.documentURI}`);
});
"""


# Chrome logs every response with a 4xx/5xx status as a console error, even a page's own document. The pages
# answer 400 and 410 on purpose, so these are kept apart, and tests assert the exact statuses they expect.
_FAILED_LOAD = re.compile(r"Failed to load resource: the server responded with a status of (\d{3})\b")


@dataclass
class PageLog:
    """What went wrong in the browser while a test ran."""

    console_errors: list[str] = field(default_factory=list)  # Chrome logs CSP violations here too
    csp_violations: list[str] = field(default_factory=list)  # from `securitypolicyviolation` events
    page_errors: list[str] = field(default_factory=list)  # uncaught exceptions (there is no script at all)
    failed_loads: list[tuple[int, str]] = field(default_factory=list)  # (status, url), e.g. a 410 page

    def problems(self) -> list[str]:
        """Console errors (other than HTTP error statuses), CSP violations and uncaught page errors."""
        return [*self.console_errors, *self.csp_violations, *self.page_errors]

    def failed_statuses(self) -> list[int]:
        return [status for status, _ in self.failed_loads]


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    playwright = sync_playwright().start()
    try:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()
    finally:
        playwright.stop()


@pytest.fixture
def page_log() -> PageLog:
    return PageLog()


@pytest.fixture
def page(browser: Browser, page_log: PageLog) -> Iterator[Page]:
    """A page in a fresh context (no cookies, no cache) at 1280x800, recording into `page_log`."""
    context = browser.new_context(viewport=VIEWPORT)  # type: ignore[arg-type]
    context.set_default_timeout(10_000)
    context.expose_binding("__reportCspViolation", lambda _source, text: page_log.csp_violations.append(text))
    context.add_init_script(_REPORT_CSP_VIOLATIONS)
    page = context.new_page()

    def on_console(message: ConsoleMessage) -> None:
        if message.type != "error":
            return
        where = message.location.get("url", "")
        if failed := _FAILED_LOAD.match(message.text):
            page_log.failed_loads.append((int(failed[1]), where))
        else:
            page_log.console_errors.append(f"{message.text} ({where})")

    page.on("console", on_console)
    page.on("pageerror", lambda error: page_log.page_errors.append(str(error)))
    try:
        yield page
    finally:
        context.close()


@pytest.fixture(scope="session")
def artifacts() -> Path:
    """test-artifacts/ (git-ignored): screenshots for people to look at."""
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS
