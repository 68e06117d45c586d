"""Fuzz fixtures: the demo tenant's key and a ledger of the share links the fuzzer really created.

The local stack itself is the session fixture `stack` from tests/conftest.py (shared with the integration tests).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.stack import http, url

LINKS = "/credentials/grant-access-sharing"


def demo_headers(stack: dict[str, Any]) -> dict[str, str]:
    return {"Authorization": f"Bearer {stack['apiKey']}"}


def links_total(stack: dict[str, Any]) -> int:
    """The demo tenant's share-link count, as the list endpoint reports it."""
    answer = http.get(url(stack, LINKS), params={"perPage": 1}, headers=demo_headers(stack))
    assert answer.status_code == 200, answer.text
    return int(answer.json()["meta"]["totalItemsCount"])


@dataclass
class LinkLedger:
    """The ids of the links created by 201 answers. A set: an idempotent replay (same id) or a check re-run on the
    same response while Hypothesis shrinks must not count twice; every real creation has a fresh id."""

    created: set[str] = field(default_factory=set)

    def record(self, status: int, body: Any) -> None:
        if status == 201 and isinstance(body, dict) and isinstance(body.get("data"), dict):
            self.created.add(str(body["data"]["id"]))


@pytest.fixture
def link_ledger(stack: dict[str, Any]) -> Iterator[LinkLedger]:
    """SECURITY.md M3 "bad input changes nothing": after the test, the demo tenant has exactly as many more links
    as the 201 answers it was given (the assertion runs at teardown, after every generated request)."""
    before = links_total(stack)
    ledger = LinkLedger()
    yield ledger
    grown = links_total(stack) - before
    assert grown == len(ledger.created), (
        f"the demo tenant's link total grew by {grown}, but only {len(ledger.created)} requests were answered 201"
    )
