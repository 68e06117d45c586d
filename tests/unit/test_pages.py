"""The public connect pages (grantlink.pages): structure, accessibility, escaping and security headers.
What SECURITY.md asks of them (O10 no third-party resources and strict headers, T3 one gone page) is proved in
tests/security."""

from __future__ import annotations

import base64
import hashlib
import html
import re
from collections.abc import Callable
from dataclasses import replace

import pytest

from grantlink import pages
from tests.html_pages import API_KEY, DOMAIN, Page, every_page, form

HOSTILE = "<script>alert(1)</script>\"'><img src=x onerror=alert(1)>&amp;"


def element_text(source: str, ident: str) -> str:
    """The text inside the element with id `ident`."""
    match = re.search(rf'<(\w+) [^>]*id="{re.escape(ident)}"[^>]*>(.*?)</\1>', source, re.S)
    assert match, ident
    return " ".join(Page(match.group(2)).body_text().split())


@pytest.mark.parametrize("text", every_page())
def test_every_page_is_a_complete_html5_document(text: str) -> None:
    """Given any page, when parsed, then it is one balanced HTML5 document with charset, viewport, title,
    one <main> and one <h1>."""
    page = Page(text)
    assert text.startswith("<!doctype html>\n")
    assert page.all("html") == [{"lang": "en"}]
    assert {"charset": "utf-8"} in page.all("meta")
    assert {"name": "viewport", "content": "width=device-width, initial-scale=1"} in page.all("meta")
    assert page.title()
    assert len(page.all("main")) == 1 and len(page.all("h1")) == 1
    assert page.open == [] and page.unbalanced == []


@pytest.mark.parametrize("text", every_page())
def test_every_page_has_exactly_one_style_whose_text_is_the_stylesheet(text: str) -> None:
    """Given any page, then its only CSS is one <style> whose text is STYLESHEET, byte for byte."""
    page = Page(text)
    assert page.styles == [pages.STYLESHEET]
    assert len(page.all("style")) == 1 and page.all("link") == []


def test_form_page_says_what_the_customer_is_doing() -> None:
    """Given a link, when its form is rendered, then the title, heading and text name the partner, the link
    title and what is granted, and say the credentials travel and rest encrypted and the link works once."""
    page = Page(form())
    assert page.title() == "Connect Pipedrive – CRM for ACME"
    text = page.body_text()
    assert "Connect Pipedrive" in text and "CRM for ACME" in text and "Read and write your deals." in text
    assert "sent encrypted and stored encrypted" in text and "works once" in text


def test_form_posts_the_link_id_and_token_to_connect() -> None:
    """Given a credential form, then it posts to /connect without browser validation and carries id and token
    as hidden inputs."""
    page = Page(form())
    assert page.all("form") == [{"method": "post", "action": "/connect", "novalidate": ""}]
    hidden = [attrs for attrs in page.all("input") if attrs.get("type") == "hidden"]
    assert hidden == [
        {"type": "hidden", "name": "id", "value": "lnk_123"},
        {"type": "hidden", "name": "token", "value": "tok_abc"},
    ]


def test_every_input_has_a_label_and_is_named_after_its_field() -> None:
    """Given fields, then each becomes an input whose id and name are input_name(field), with a label for it."""
    page = Page(form())
    inputs = page.visible_inputs()
    assert [attrs["name"] for attrs in inputs] == ["f_apiKey", "f_subdomain"]
    assert all(attrs["id"] == attrs["name"] for attrs in inputs)
    assert {attrs["for"] for attrs in page.all("label")} == {attrs["id"] for attrs in inputs}
    assert pages.input_name("apiKey") == "f_apiKey"


def test_inputs_do_not_autocorrect_and_mark_what_is_required() -> None:
    """Given a secret required field and a plain optional one, then the secret is a new-password input, the other
    plain text; neither autocorrects; only the required one is `required`; both say so in their label."""
    secret, plain = Page(form()).visible_inputs()
    assert (secret["type"], secret["autocomplete"]) == ("password", "new-password")
    assert (plain["type"], plain["autocomplete"]) == ("text", "off")
    for attrs in (secret, plain):
        assert attrs["spellcheck"] == "false" and attrs["autocapitalize"] == "off"
    assert "required" in secret and "required" not in plain
    assert secret["placeholder"] == "pk_live_…"
    text = Page(form()).body_text()
    assert "API key (required)" in text and "Subdomain (optional)" in text


def test_a_secret_value_is_never_echoed_but_other_values_are() -> None:
    """Given a failed submit whose views carry values (a secret one by mistake), then the secret input stays
    empty and the plain one is re-filled."""
    text = form(fields=[replace(API_KEY, value="sk_live_SECRET"), replace(DOMAIN, value="acme")])
    secret, plain = Page(text).visible_inputs()
    assert "value" not in secret and "sk_live_SECRET" not in text
    assert plain["value"] == "acme"


def test_help_text_is_referenced_by_aria_describedby() -> None:
    """Given fields with help text, then each input's aria-describedby names an element holding that help."""
    text = form()
    page = Page(text)
    for attrs, field in zip(page.visible_inputs(), (API_KEY, DOMAIN), strict=True):
        (help_id,) = attrs["aria-describedby"].split()
        assert help_id in page.ids()
        assert element_text(text, help_id) == field.help


def test_field_errors_are_shown_next_to_the_field_and_summarised_first() -> None:
    """Given a field error and a form error, then the input is aria-invalid and described by its error, and an
    alert summary at the top of the form states the form error and links to the field."""
    text = form(fields=[replace(API_KEY, error="Enter your API key"), DOMAIN], form_error="Pipedrive said no.")
    page = Page(text)
    secret, plain = page.visible_inputs()
    assert secret["aria-invalid"] == "true" and "aria-invalid" not in plain
    help_id, error_id = secret["aria-describedby"].split()
    assert {help_id, error_id} <= page.ids()
    assert element_text(text, error_id) == "Error: Enter your API key"
    summary = next(attrs for attrs in page.all("div") if attrs.get("role") == "alert")
    assert summary["aria-labelledby"] in page.ids()
    assert [attrs["href"] for attrs in page.all("a")] == ["#f_apiKey"]
    assert "There is a problem" in page.body_text() and "Pipedrive said no." in page.body_text()
    assert page.title().startswith("Error: ")


def test_summary_links_point_at_existing_inputs_and_focus_follows_the_dom() -> None:
    """Given errors on two fields, then the summary links reach both inputs, and the focusable elements come
    in order: summary links, inputs top to bottom, the button."""
    errors = [replace(API_KEY, error="Enter your API key"), replace(DOMAIN, error="Use letters only")]
    page = Page(form(fields=errors))
    links = [attrs["href"] for attrs in page.all("a")]
    assert links == ["#f_apiKey", "#f_subdomain"]
    assert {link[1:] for link in links} <= page.ids()
    focusable = [
        attrs.get("href") or attrs.get("id") or name
        for name, attrs in page.tags
        if name in ("a", "button") or (name == "input" and attrs.get("type") != "hidden")
    ]
    assert focusable == ["#f_apiKey", "#f_subdomain", "f_apiKey", "f_subdomain", "button"]


def test_a_page_without_errors_has_no_summary() -> None:
    """Given no errors, then there is no alert, no aria-invalid input and no "Error:" title."""
    page = Page(form())
    assert not [attrs for _, attrs in page.tags if attrs.get("role") == "alert" or "aria-invalid" in attrs]
    assert not page.title().startswith("Error")


def test_a_notice_is_shown_above_the_form() -> None:
    """Given a notice, then it appears, as a status message, before the form."""
    text = form(notice="Your last attempt was cancelled at Google: access_denied. You can try again.")
    assert 'role="status"' in text
    assert text.index("access_denied") < text.index("<form")


def test_the_button_connects_the_partner() -> None:
    """Given any form, then its one button submits and says "Connect <partner>"."""
    assert re.findall(r"<button[^>]*>([^<]*)</button>", form()) == ["Connect Pipedrive"]
    assert Page(form()).all("button") == [{"type": "submit"}]


def test_oauth_form_starts_the_flow_without_credential_inputs() -> None:
    """Given an OAuth partner with a subdomain extra, then the form posts id, token and the extra to
    /connect/oauth/start, has no password input and says the customer will be sent to the partner."""
    page = Page(form(oauth=True, fields=[API_KEY, DOMAIN]))
    assert page.all("form")[0]["action"] == "/connect/oauth/start"
    assert [attrs["name"] for attrs in page.all("input")] == ["id", "token", "f_subdomain"]
    assert not [attrs for attrs in page.all("input") if attrs.get("type") == "password"]
    assert "sent to Pipedrive to approve access" in page.body_text()
    assert re.findall(r"<button[^>]*>([^<]*)</button>", form(oauth=True)) == ["Connect Pipedrive"]


RENDERERS: dict[str, Callable[[str], str]] = {
    "link_title": lambda v: form(link_title=v),
    "partner_name": lambda v: form(partner_name=v),
    "description": lambda v: form(description=v),
    "notice": lambda v: form(notice=v),
    "form_error": lambda v: form(form_error=v),
    "link_id": lambda v: form(link_id=v),
    "token": lambda v: form(token=v),
    "label": lambda v: form(fields=[replace(DOMAIN, label=v)]),
    "help": lambda v: form(fields=[replace(DOMAIN, help=v)]),
    "placeholder": lambda v: form(fields=[replace(DOMAIN, placeholder=v)]),
    "value": lambda v: form(fields=[replace(DOMAIN, value=v)]),
    "error": lambda v: form(fields=[replace(DOMAIN, error=v)]),
    "oauth partner": lambda v: form(partner_name=v, oauth=True),
    "success partner": lambda v: pages.success_page(partner_name=v, link_title="t"),
    "success title": lambda v: pages.success_page(partner_name="p", link_title=v),
    "success account": lambda v: pages.success_page(partner_name="p", link_title="t", account_name=v),
    "message heading": lambda v: pages.message_page(heading=v, message="m"),
    "message text": lambda v: pages.message_page(heading="h", message=v),
}


@pytest.mark.parametrize("slot", RENDERERS)
def test_hostile_input_is_inert_in_every_slot(slot: str) -> None:
    """Given markup in any outside value, when rendered, then no tag or attribute comes of it: the value
    reads back intact as text or as an attribute value."""
    text = RENDERERS[slot](HOSTILE)
    page = Page(text)
    assert "<script" not in text and "<img" not in text
    assert page.all("script") == [] and page.all("img") == []
    assert not [name for _, attrs in page.tags for name in attrs if name.startswith("on")]
    attribute_values = [value for _, attrs in page.tags for value in attrs.values()]
    assert any(HOSTILE in chunk for chunk in [page.body_text(), html.unescape(page.title()), *attribute_values])


def test_the_field_name_is_escaped_too() -> None:
    """Given a field name with markup (the catalogue forbids it; this is defence in depth), then it stays inert."""
    page = Page(form(fields=[replace(DOMAIN, name='x"><script>')]))
    assert page.all("script") == [] and page.visible_inputs()[0]["name"] == 'f_x"><script>'


def test_success_page_names_the_partner_and_account() -> None:
    """Given a stored credential, then the page says Connected, names partner, account and link title and
    tells the customer they may close the window."""
    page = Page(pages.success_page(partner_name="Pipedrive", link_title="CRM for ACME", account_name="ACME Ltd"))
    text = page.body_text()
    assert "Connected" in text and "CRM for ACME" in text and "You can close this window." in text
    assert "Pipedrive is now connected as ACME Ltd." in text
    bare = Page(pages.success_page(partner_name="Pipedrive", link_title="CRM for ACME")).body_text()
    assert "Pipedrive is now connected." in bare


def test_message_page_shows_heading_and_message() -> None:
    """Given a heading and a message, then the page is titled by the heading and shows both."""
    page = Page(pages.message_page(heading="Please try again", message="Something went wrong."))
    assert page.title() == "Please try again"
    assert page.body_text() == "Please try again Something went wrong."


def test_locked_page_says_the_link_is_locked_and_who_can_help() -> None:
    """Given a link locked by failed tests, then its page says so, that nothing was saved, and to ask the sender for a
    new link; it takes no argument, so it can name nothing about the link or any other."""
    import inspect

    page = Page(pages.locked_page())
    assert inspect.signature(pages.locked_page).parameters == {}
    assert page.title() == "This link is locked"
    assert page.body_text() == (
        "This link is locked Too many attempts to connect with this link failed, so it no longer accepts any. "
        "Nothing was saved. Ask whoever sent you this link for a new one."
    )


def test_csp_allows_exactly_the_stylesheet_and_no_script() -> None:
    """Given the headers, then the CSP allows only the stylesheet, by its SHA-256, no inline or script
    source, no framing, no base URL, and forms only to this origin."""
    digest = base64.b64encode(hashlib.sha256(pages.STYLESHEET.encode()).digest()).decode()
    csp = pages.security_headers()["Content-Security-Policy"]
    assert csp == (
        f"default-src 'none'; style-src 'sha256-{digest}'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    )
    assert "unsafe" not in csp and "script-src" not in csp


def test_form_action_origins_join_the_csp() -> None:
    """Given the authorization servers an OAuth start redirects to, then form-action lists them after 'self'."""
    csp = pages.security_headers(form_action_origins=("https://oauth.pipedrive.com", "http://127.0.0.1:3000"))
    assert "form-action 'self' https://oauth.pipedrive.com http://127.0.0.1:3000;" in csp["Content-Security-Policy"]


@pytest.mark.parametrize("origin", ["https://a.test; script-src *", "https://a.test/x y", "javascript:", "'none'"])
def test_a_value_that_is_not_an_origin_cannot_reach_the_csp(origin: str) -> None:
    """Given something that is not scheme://host[:port], then security_headers refuses it."""
    with pytest.raises(ValueError, match="not an origin"):
        pages.security_headers(form_action_origins=(origin,))


def test_stylesheet_fits_phones_and_keyboards() -> None:
    """Given the stylesheet, then it is one centred column of ~32rem, with full-width 44px inputs and buttons,
    a system font, a visible focus outline and a dark scheme."""
    css = pages.STYLESHEET
    for rule in ("max-width: 32rem", "margin: 0 auto", "width: 100%", "min-height: 44px", "system-ui"):
        assert rule in css
    assert ":focus-visible" in css and "prefers-color-scheme: dark" in css
    assert "url(" not in css and "@import" not in css and "</" not in css
