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
