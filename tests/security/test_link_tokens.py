"""SECURITY.md "Link tokens" (T1–T6): 256-bit tokens stored only as hashes, compared in constant time with
uniform errors, never consumed by a GET, expired by the application at 48 h, and links never built from the Host
header. In-process against moto; T3 and T4 also over HTTP against the local stack (`integration`). T2 is also
proved across every flow by the table scan in test_keys.py; tests/e2e/test_connect_browser.py opens links in a
real browser.
"""

from __future__ import annotations

import hashlib
import inspect
import json
from typing import Any

import pytest

from grantlink import connect, errors, links, pages
from grantlink.models import Caller, LinkStatus
from tests.helpers import SECRET, FrozenClock, create_link, new_link
from tests.html_pages import Page
from tests.stack import FORM_SECRET, LINKS, auth, http, submit, url
from tests.stack import new_link as new_link_over_http
from tests.unit.conftest import CONNECT

A = Caller("tnt_a", frozenset({"links:write"}))


def test_t1_tokens_are_256_bit_and_unique() -> None:
    """T1: 10^5 tokens from `secrets` are unique and carry 256 bits (43 URL-safe characters)."""
    tokens = {links.new_token()[0] for _ in range(100_000)}
    assert len(tokens) == 100_000
    assert {len(t) for t in tokens} == {43}


def test_t2_only_the_hash_of_the_token_is_stored(aws_env: Any, table_items: Any) -> None:
    """T2: the stored item holds SHA-256(token), never the token itself."""
    _, token = new_link()
    dump = json.dumps(table_items())
    assert token not in dump
    assert hashlib.sha256(token.encode()).hexdigest() in dump


def test_t3_token_comparison_is_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """T3: tokens are compared with hmac.compare_digest, whatever the input."""
    seen: list[tuple[str, str]] = []
    monkeypatch.setattr(links.hmac, "compare_digest", lambda a, b: seen.append((a, b)) or a == b)
    token, token_hash = links.new_token()
    assert links.token_matches(token, token_hash)
    assert not links.token_matches("x" * 43, token_hash)
    assert len(seen) == 2
    assert not links.token_matches(token, "")  # a revoked link's erased hash matches nothing


def test_t3_unknown_used_revoked_and_expired_links_fail_the_same_way(aws_env: Any, clock: FrozenClock) -> None:
    """T3: every unusable link raises the same Gone (same status, code and message)."""
    used, used_token = new_link()
    connect.submit(used.id, used_token, {"apiKey": SECRET})
    revoked, revoked_token = new_link()
    links.revoke_link(A, revoked.id)
    expired, expired_token = new_link(expiresInHours=1)
    clock.advance(hours=1)
    live, live_token = new_link()
    cases = [
        ("lnk_00000000000000000000", live_token),
        (live.id, "wrong-token"),
        (used.id, used_token),
        (revoked.id, revoked_token),
        (expired.id, expired_token),
        ("", ""),
    ]
    seen = set()
    for link_id, token in cases:
        with pytest.raises(errors.Gone) as raised:
            connect.open_link(link_id, token)
        seen.add((raised.value.status, raised.value.code, raised.value.message))
    assert seen == {(410, "link_unavailable", "This link is no longer valid.")}


def test_gone_page_is_one_and_the_same_for_every_dead_link() -> None:
    """T3: the gone page takes no argument and is byte-identical on every call."""
    assert inspect.signature(pages.gone_page).parameters == {}
    assert pages.gone_page() == pages.gone_page()
    text = Page(pages.gone_page()).body_text()
    assert "This link is no longer valid" in text and "Ask whoever sent you this link for a new one." in text


def test_t4_opening_a_link_never_consumes_it(aws_env: Any) -> None:
    """T4: five opens (mail scanners), then the submit still works, once."""
    link, token = new_link()
    for _ in range(5):
        assert connect.open_link(link.id, token).link.status == LinkStatus.WAITING
    done = connect.submit(link.id, token, {"apiKey": SECRET})
    assert done.link.status == LinkStatus.GRANTED
    with pytest.raises(errors.Gone):
        connect.submit(link.id, token, {"apiKey": SECRET})


def test_t5_the_48_hour_limit_is_enforced_by_the_application(aws_env: Any, clock: FrozenClock) -> None:
    """T5: at 47:59 the link is usable, at 48:00 it is expired (the item is still stored: TTL is only cleanup)."""
    link, _ = new_link()
    clock.advance(hours=47, minutes=59)
    assert links.get_link(A, link.id).is_expired() is False
    clock.advance(minutes=1)
    stored = links.get_link(A, link.id)
    assert stored.is_expired() is True
    assert stored.to_out(None, "https://x").expired is True


def test_t6_a_forged_host_header_does_not_change_the_link(aws_env: Any) -> None:
    """T6: links come from GRANTLINK_CONNECT_BASE_URL, whatever Host and X-Forwarded-Host say."""
    _, body, _ = create_link(headers={"Host": "evil.example", "X-Forwarded-Host": "evil.example"})
    assert body["data"]["link"].startswith(f"{CONNECT}/connect?")


def test_t6_without_a_configured_base_the_api_id_is_used_not_the_host(
    aws_env: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """T6: with no base configured, the link uses the API id API Gateway stamps on the event."""
    from grantlink import config

    monkeypatch.setenv("GRANTLINK_CONNECT_BASE_URL", "")
    config.reset()
    _, body, _ = create_link(headers={"Host": "evil.example"})
    assert body["data"]["link"].startswith("https://local.execute-api.us-east-1.amazonaws.com/connect?id=")


@pytest.mark.integration
def test_t3_unknown_used_and_revoked_links_look_the_same(stack: dict[str, Any]) -> None:
    """T3 over HTTP: a used, a revoked, an unknown and an empty link get the same 410 page, headers and all."""
    used = new_link_over_http(stack)
    submit(stack, used, apiKey=FORM_SECRET)
    revoked = new_link_over_http(stack)
    http.delete(url(stack, f"{LINKS}/{revoked['id']}"), headers=auth(stack))
    answers = [
        http.get(used["link"]),
        http.get(revoked["link"]),
        http.get(url(stack, "/connect?id=lnk_00000000000000000000&token=nope")),
        http.get(url(stack, "/connect")),
    ]
    assert {p.status_code for p in answers} == {410}
    assert len({p.text for p in answers}) == 1
    assert (
        len({tuple(sorted((k, v) for k, v in p.headers.items() if k.lower() not in ("date",))) for p in answers}) == 1
    )


@pytest.mark.integration
def test_t4_five_gets_then_the_post_works_once(stack: dict[str, Any]) -> None:
    """T4 over HTTP: five GETs of the link, then the form's POST works, once."""
    link = new_link_over_http(stack)
    for _ in range(5):
        assert http.get(link["link"]).status_code == 200
    assert submit(stack, link, apiKey=FORM_SECRET).status_code == 200
    assert submit(stack, link, apiKey=FORM_SECRET).status_code == 410
