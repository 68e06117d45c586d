"""The connect pages, parsed: an HTML parser that collects tags, text and styles, and one of every kind of page
(shared by tests/unit/test_pages.py and tests/security)."""

from __future__ import annotations

import re
from dataclasses import replace
from html.parser import HTMLParser
from typing import Any

from grantlink import pages
from grantlink.pages import FieldView

VOID = {"meta", "input", "br", "hr", "img", "link"}
API_KEY = FieldView("apiKey", "API key", "Settings → API.", secret=True, required=True, placeholder="pk_live_…")
DOMAIN = FieldView("subdomain", "Subdomain", "The part before .example.com.", secret=False, required=False)


class Page(HTMLParser):
    """Collects every start tag with its attributes, the visible text and the `<style>` contents of a page."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.source = text
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.text: list[str] = []
        self.styles: list[str] = []
        self.open: list[str] = []
        self.unbalanced: list[str] = []
        self.feed(text)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, {name: value or "" for name, value in attrs}))
        if tag not in VOID:
            self.open.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if not self.open or self.open.pop() != tag:
            self.unbalanced.append(tag)

    def handle_data(self, data: str) -> None:
        if self.open and self.open[-1] == "style":
            self.styles.append(data)
        elif not self.open or self.open[-1] != "title":
            self.text.append(data)

    def all(self, tag: str) -> list[dict[str, str]]:
        return [attrs for name, attrs in self.tags if name == tag]

    def ids(self) -> set[str]:
        return {attrs["id"] for _, attrs in self.tags if "id" in attrs}

    def visible_inputs(self) -> list[dict[str, str]]:
        return [attrs for attrs in self.all("input") if attrs.get("type") != "hidden"]

    def title(self) -> str:
        match = re.search(r"<title>(.*?)</title>", self.source, re.S)
        assert match
        return match.group(1)

    def body_text(self) -> str:
        return " ".join("".join(self.text).split())


def form(**changes: Any) -> str:
    """The credential form for a made-up link and partner; `changes` override form_page's arguments."""
    arguments: dict[str, Any] = {
        "link_id": "lnk_123",
        "token": "tok_abc",
        "link_title": "CRM for ACME",
        "partner_name": "Pipedrive",
        "description": "Read and write your deals.",
        "fields": [API_KEY, DOMAIN],
    }
    return pages.form_page(**{**arguments, **changes})


def every_page() -> list[str]:
    """One of every page the connect flow shows: forms (plain, with errors, OAuth), gone, locked, success, message."""
    with_errors = [replace(API_KEY, error="Enter your API key"), replace(DOMAIN, value="acme", error="Too long")]
    return [
        form(),
        form(fields=with_errors, form_error="Pipedrive said no.", notice="You cancelled."),
        form(oauth=True, fields=[DOMAIN]),
        pages.gone_page(),
        pages.locked_page(),
        pages.success_page(partner_name="Pipedrive", link_title="CRM for ACME", account_name="ACME Ltd"),
        pages.message_page(heading="Please try again", message="Something went wrong on our side."),
    ]
