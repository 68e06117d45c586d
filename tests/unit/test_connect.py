"""The customer's side of a link (grantlink.connect) against moto: open, validate, consume once, encrypt. The rows
of SECURITY.md it proves (T3, T4, K1, K5, D3, O9) are in tests/security."""

from __future__ import annotations

from typing import Any

import pytest

from grantlink import connect, links
from grantlink.models import Caller, CredentialState, LinkStatus
from grantlink.store import default as default_store
from tests.helpers import SECRET, new_link

A = Caller("tnt_a", frozenset({"links:write"}))
APIKEY, BASIC = 9001, 9002


def test_submit_creates_an_active_credential_and_grants_the_link(aws_env: Any) -> None:
    link, token = new_link()
    done = connect.submit(link.id, token, {"apiKey": SECRET})
    stored = links.get_link(A, link.id)
    assert (stored.status, stored.credential_id, stored.token_hash) == (LinkStatus.GRANTED, done.credential.id, "")
    credential = default_store().get_credential(done.credential.id)
    assert credential is not None
    assert (credential.state, credential.partner_id, credential.title) == (CredentialState.ACTIVE, APIKEY, "ACME CRM")
    assert credential.hint == "…1234"


@pytest.mark.parametrize(
    ("form", "field", "message"),
    [
        ({}, "apiKey", "Enter your API key."),
        ({"apiKey": "   "}, "apiKey", "Enter your API key."),
        ({"apiKey": "x" * 5000}, "apiKey", "API key is not valid: check you copied only the value."),
        ({"apiKey": "abc\x00def"}, "apiKey", "API key is not valid: check you copied only the value."),
    ],
)
def test_invalid_fields_leave_the_link_untouched(aws_env: Any, form: dict, field: str, message: str) -> None:
    link, token = new_link()
    with pytest.raises(connect.InvalidForm) as raised:
        connect.submit(link.id, token, form)
    assert raised.value.errors == {field: message}
    assert links.get_link(A, link.id).status == LinkStatus.WAITING
    assert connect.open_link(link.id, token)


def test_secret_values_are_never_echoed_back_on_errors(aws_env: Any) -> None:
    link, token = new_link(BASIC)
    with pytest.raises(connect.InvalidForm) as raised:
        connect.submit(link.id, token, {"username": "ada", "password": ""})
    assert raised.value.values == {"username": "ada"}


def test_a_reauthorize_link_replaces_the_secret_and_keeps_the_id(aws_env: Any) -> None:
    from grantlink import connections
    from grantlink.models import ReauthorizeRequest

    link, token = new_link()
    original = connect.submit(link.id, token, {"apiKey": SECRET}).credential
    again, again_token = connections.reauthorize(A, original.id, ReauthorizeRequest.model_validate({}))
    assert again.bound_credential_id == original.id
    replaced = connect.submit(again.id, again_token, {"apiKey": "sk_live_brand_new_key_9999"}).credential
    assert replaced.id == original.id
    assert connections.read_secret(A, original.id).fields == {"apiKey": "sk_live_brand_new_key_9999"}
    _, meta = connections.list_credentials(A, None, None, 20, None)
    assert meta.totalItemsCount == 1


# --- the redirect after connecting must get past the page's own CSP ---------------------------------------------


def _allow_redirects_to(*origins: str) -> None:
    """Tenant A exists and may redirect to these origins."""
    from grantlink import tenants

    default_store().put_tenant_with_key({"tenantId": "tnt_a", "name": "a"}, "unused", {"tenantId": "tnt_a"})
    tenants.set_redirect_origins("tnt_a", origins)


def _form_action(answer: dict[str, Any]) -> str:
    csp = answer["headers"]["Content-Security-Policy"]
    return next(part.strip() for part in csp.split(";") if part.strip().startswith("form-action"))


def test_the_form_of_a_link_with_a_redirect_may_end_at_the_redirect_origin(aws_env: Any) -> None:
    """Given a link whose redirectUrl is on the tenant's allow-list,
    when its connect form is served, and served again with a problem (400),
    then the CSP's form-action admits that origin (Chrome checks the 303 after the POST against it), no other."""
    from tests.helpers import call, event

    _allow_redirects_to("https://app.example.com")
    link, token = new_link(redirectUrl="https://app.example.com/connected?from=grantlink")
    shown = call("connect_page", event("connect_get", query={"id": link.id, "token": token}))
    again = call("connect_page", event("connect_post", form={"id": link.id, "token": token, "f_apiKey": ""}))
    assert (shown["statusCode"], again["statusCode"]) == (200, 400)
    assert _form_action(shown) == _form_action(again) == "form-action 'self' https://app.example.com"


def test_the_form_of_a_link_without_a_redirect_posts_only_to_itself(aws_env: Any) -> None:
    """Given a link without redirectUrl, when its form is served, then form-action is 'self' alone."""
    from tests.helpers import call, event

    link, token = new_link()
    shown = call("connect_page", event("connect_get", query={"id": link.id, "token": token}))
    assert _form_action(shown) == "form-action 'self'"


# --- failed connection tests are capped per link -----------------------------------------------------------------

BAD_KEY = "bad-key-0000"  # the demo partner refuses keys starting with "bad"


def _partner_calls(httpserver: Any) -> int:
    return sum(1 for request, _ in httpserver.log if request.path == "/_demo/apikey/me")


def _fail(link_id: str, token: str) -> type[Exception]:
    """Submit a key the partner refuses; returns the kind of refusal (InvalidForm, or LinkLocked at the cap)."""
    from grantlink import errors

    try:
        connect.submit(link_id, token, {"apiKey": BAD_KEY})
    except (connect.InvalidForm, errors.LinkLocked) as refused:
        return type(refused)
    raise AssertionError("the partner accepted a bad key")


def test_the_tenth_failed_test_locks_the_link_and_the_eleventh_never_reaches_the_partner(
    aws_env: Any, httpserver: Any
) -> None:
    """Given a waiting link, when ten submits fail the partner's test, then the first nine re-show the form, the
    tenth says the link is locked, and an eleventh submit (even a good key) is refused without calling the partner."""
    from grantlink import errors

    link, token = new_link()
    outcomes = [_fail(link.id, token) for _ in range(10)]
    assert outcomes == [connect.InvalidForm] * 9 + [errors.LinkLocked]
    assert _partner_calls(httpserver) == 10
    with pytest.raises(errors.LinkLocked):
        connect.submit(link.id, token, {"apiKey": SECRET})
    with pytest.raises(errors.LinkLocked):
        connect.open_link(link.id, token)
    assert _partner_calls(httpserver) == 10
    stored = links.get_link(A, link.id)
    assert (stored.status, stored.failed_tests, stored.is_locked()) == (LinkStatus.WAITING, 10, True)


def test_the_last_tries_are_announced_on_the_form(aws_env: Any) -> None:
    """Given a link with seven failed tests, when the eighth fails, then the form says two tries are left."""
    link, token = new_link()
    for _ in range(7):
        _fail(link.id, token)
    with pytest.raises(connect.InvalidForm) as raised:
        connect.submit(link.id, token, {"apiKey": BAD_KEY})
    assert (raised.value.form_error or "").endswith("You can try 2 more times with this link.")


def test_regenerating_a_locked_link_unlocks_it_with_a_fresh_count(aws_env: Any) -> None:
    """Given a locked link, when the tenant regenerates it (PUT), then the new token connects (the old one is
    dead) and the count starts again from zero."""
    from grantlink import errors

    link, token = new_link()
    for _ in range(10):
        _fail(link.id, token)
    fresh, new_token = links.regenerate_link(A, link.id)
    assert (fresh.failed_tests, fresh.is_locked()) == (0, False)
    with pytest.raises(errors.Gone):
        connect.open_link(link.id, token)
    assert connect.submit(link.id, new_token, {"apiKey": SECRET}).link.status == LinkStatus.GRANTED


def test_concurrent_failures_are_each_counted_once(aws_env: Any) -> None:
    """Given a waiting link, when eight submits fail at the same time, then the link counts exactly eight failures
    (one atomic conditional update each, no lost update)."""
    from concurrent.futures import ThreadPoolExecutor

    link, token = new_link()
    with ThreadPoolExecutor(max_workers=8) as pool:
        outcomes = list(pool.map(lambda _: _fail(link.id, token), range(8)))
    assert outcomes == [connect.InvalidForm] * 8
    assert links.get_link(A, link.id).failed_tests == 8


def test_concurrent_failures_never_count_past_the_cap(aws_env: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Given a cap of three, when eight submits fail at the same time, then the count stops at three and every
    submit past it is told the link is locked."""
    from concurrent.futures import ThreadPoolExecutor

    from grantlink import config, errors

    monkeypatch.setenv("GRANTLINK_LINK_MAX_FAILED_TESTS", "3")
    config.reset()
    link, token = new_link()
    with ThreadPoolExecutor(max_workers=8) as pool:
        outcomes = list(pool.map(lambda _: _fail(link.id, token), range(8)))
    assert outcomes.count(connect.InvalidForm) == 2 and outcomes.count(errors.LinkLocked) == 6
    assert links.get_link(A, link.id).failed_tests == 3


def test_a_locked_link_shows_the_locked_page_and_other_links_look_as_before(aws_env: Any) -> None:
    """Given a locked link, when its page is opened or posted, then a 423 page says it is locked and who can
    help; an unknown link, or the locked link with a wrong token, still gets the one 410 page."""
    from tests.helpers import call, event

    link, token = new_link()
    for _ in range(10):
        _fail(link.id, token)
    opened = call("connect_page", event("connect_get", query={"id": link.id, "token": token}))
    posted = call("connect_page", event("connect_post", form={"id": link.id, "token": token, "f_apiKey": SECRET}))
    assert opened["statusCode"] == posted["statusCode"] == 423
    assert "This link is locked" in opened["body"] and "Ask whoever sent you this link" in opened["body"]
    assert opened["body"] == posted["body"]
    wrong = call("connect_page", event("connect_get", query={"id": link.id, "token": "x" * 43}))
    unknown = call("connect_page", event("connect_get", query={"id": "lnk_" + "0" * 20, "token": token}))
    assert wrong["statusCode"] == unknown["statusCode"] == 410 and wrong["body"] == unknown["body"]
