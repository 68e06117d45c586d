"""The customer's side of a link (grantlink.connect) against moto: open, validate, consume once, encrypt."""

from __future__ import annotations

import json
from typing import Any

import pytest
from botocore.exceptions import ClientError

from grantlink import connect, crypto, errors, links
from grantlink.models import Caller, CreateLinkRequest, CredentialState, LinkStatus
from grantlink.store import default as default_store
from tests.helpers import FrozenClock

A = Caller("tnt_a", frozenset({"links:write"}))
APIKEY, BASIC = 9001, 9002
SECRET = "sk_live_verysecretvalue_1234"


def new_link(partner: int = APIKEY, **fields: Any) -> tuple[links.ShareLink, str]:
    return links.create_link(A, CreateLinkRequest(partnerId=partner, title="ACME CRM", **fields))


def allow_redirects_to(*origins: str) -> None:
    """Tenant A exists and allows these redirect origins."""
    from grantlink import tenants

    default_store().put_tenant_with_key({"tenantId": "tnt_a", "name": "a"}, "unused", {"tenantId": "tnt_a"})
    tenants.set_redirect_origins("tnt_a", origins)


def test_t4_opening_a_link_never_consumes_it(aws_env: Any) -> None:
    """T4: five opens (mail scanners), then the submit still works, once."""
    link, token = new_link()
    for _ in range(5):
        assert connect.open_link(link.id, token).link.status == LinkStatus.WAITING
    done = connect.submit(link.id, token, {"apiKey": SECRET})
    assert done.link.status == LinkStatus.GRANTED
    with pytest.raises(errors.Gone):
        connect.submit(link.id, token, {"apiKey": SECRET})


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


def test_submit_creates_an_active_credential_and_grants_the_link(aws_env: Any) -> None:
    link, token = new_link()
    done = connect.submit(link.id, token, {"apiKey": SECRET})
    stored = links.get_link(A, link.id)
    assert (stored.status, stored.credential_id, stored.token_hash) == (LinkStatus.GRANTED, done.credential.id, "")
    credential = default_store().get_credential(done.credential.id)
    assert credential is not None
    assert (credential.state, credential.partner_id, credential.title) == (CredentialState.ACTIVE, APIKEY, "ACME CRM")
    assert credential.hint == "…1234"


def test_k1_the_secret_is_stored_only_as_ciphertext(aws_env: Any, table_items: Any) -> None:
    """K1: scan the table: the secret's bytes appear nowhere; the ciphertext decrypts under its context."""
    link, token = new_link(BASIC)
    done = connect.submit(link.id, token, {"username": "ada", "password": SECRET})
    dump = json.dumps(table_items(), default=str)
    assert SECRET not in dump
    raw = bytes(default_store().get_credential(done.credential.id).secret)  # type: ignore[union-attr]
    assert SECRET.encode() not in raw
    plain = crypto.default().decrypt(raw, crypto.context_for("tnt_a", done.credential.id, "credential"))
    assert json.loads(plain)["fields"] == {"username": "ada", "password": SECRET}


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


def test_d3_a_failing_second_condition_leaves_both_items_unchanged(aws_env: Any, table_items: Any) -> None:
    """D3: the credential write fails (its id is taken) → the link is not consumed either."""
    link, token = new_link()
    first, first_token = new_link()
    taken = connect.submit(first.id, first_token, {"apiKey": SECRET}).credential.id
    before = sorted(json.dumps(i, sort_keys=True, default=str) for i in table_items())
    original = connect.new_credential_id
    connect.new_credential_id = lambda: taken  # type: ignore[assignment]
    try:
        with pytest.raises(errors.Gone):
            connect.submit(link.id, token, {"apiKey": "another-secret-value-5678"})
    finally:
        connect.new_credential_id = original  # type: ignore[assignment]
    assert sorted(json.dumps(i, sort_keys=True, default=str) for i in table_items()) == before
    assert connect.open_link(link.id, token).link.status == LinkStatus.WAITING


@pytest.mark.parametrize("code", ["ThrottlingException", "AccessDeniedException", "DisabledException"])
def test_k5_kms_failure_is_a_503_and_nothing_is_written(
    aws_env: Any, table_items: Any, monkeypatch: pytest.MonkeyPatch, code: str
) -> None:
    """K5: KMS throttled / denied / disabled → ServiceUnavailable; the link still waits, no credential."""
    link, token = new_link()
    before = table_items()

    def refuse(*_: Any, **__: Any) -> bytes:
        cause = ClientError({"Error": {"Code": code, "Message": "no"}}, "GenerateDataKey")
        raise errors.ServiceUnavailable() from cause

    monkeypatch.setattr(crypto.Crypto, "encrypt", refuse)
    with pytest.raises(errors.ServiceUnavailable):
        connect.submit(link.id, token, {"apiKey": SECRET})
    assert table_items() == before


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


def test_the_redirect_carries_status_and_credential_id(aws_env: Any) -> None:
    """O9: only allow-listed origins; the customer lands there with status and credentialId."""
    allow_redirects_to("https://app.example.com")
    link, token = new_link(redirectUrl="https://app.example.com/done?x=1")
    done = connect.submit(link.id, token, {"apiKey": SECRET})
    assert done.redirect_to == f"https://app.example.com/done?x=1&status=1&credentialId={done.credential.id}"


@pytest.mark.parametrize(
    "url",
    [
        "https://evil.example.com/done",
        "https://app.example.com.evil.com/",
        "https://app.example.com@evil.com/",
        "http://app.example.com/",
        "https://app.example.com:8443/",
        "javascript:alert(1)",
    ],
)
def test_o9_redirects_off_the_allow_list_are_refused(aws_env: Any, table_items: Any, url: str) -> None:
    allow_redirects_to("https://app.example.com")
    before = len(table_items())
    with pytest.raises((errors.UnprocessableEntity, ValueError)):
        new_link(redirectUrl=url)
    assert len(table_items()) == before
