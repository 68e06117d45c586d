"""OAuth 2.0 client credentials (grantlink.client_credentials, issue 12): the customer types a client id and secret
into the connect page, grantlink mints tokens with them and mints again before expiry, against a fake partner on
127.0.0.1 (tests/unit/client_credentials_fakes.py) and moto."""

from __future__ import annotations

import json
import logging
import threading
from datetime import timedelta
from typing import Any

import pytest
from pytest_httpserver import HTTPServer

from grantlink import config, connect, connections, errors, links, oauth
from grantlink.models import CredentialState, LinkStatus, ReauthorizeRequest
from grantlink.store import default as default_store
from tests.helpers import ALL_SCOPES, FrozenClock, event, invoke, proxy_event, run_jobs, token_event
from tests.unit.client_credentials_fakes import (
    CLIENT_ID,
    CLIENT_SECRET,
    A,
    FakeClientCredentialsServer,
    cc_partner,
    connect_cc,
)

PROXY_SCOPES = ALL_SCOPES + " credentials:proxy"


@pytest.fixture
def partner(httpserver: HTTPServer, aws_env: Any, monkeypatch: pytest.MonkeyPatch) -> FakeClientCredentialsServer:
    """The fake partner (HTTP Basic client authentication, default scope `read`) and its token endpoint."""
    cc_partner(httpserver, monkeypatch)
    return FakeClientCredentialsServer(httpserver)


def stored(credential_id: str) -> Any:
    credential = default_store().get_credential(credential_id)
    assert credential is not None
    return credential


def due_now(clock: FrozenClock, credential_id: str) -> None:
    """Move the clock to the moment the credential's token is due for renewal (GRANTLINK_RENEW_BEFORE_SECONDS)."""
    expires = stored(credential_id).access_expires_at
    assert expires is not None
    clock.moment = expires - timedelta(seconds=config.settings().renew_before_seconds - 1)


# --- connecting -------------------------------------------------------------------------------------------------


def test_connecting_mints_a_token_with_http_basic_and_the_default_scopes(
    partner: FakeClientCredentialsServer, clock: FrozenClock
) -> None:
    """Given a partner that takes HTTP Basic client authentication, when the customer submits a client id and
    secret, then one client_credentials token request carries them in the Authorization header (not the body) with
    the partner's default scope, the partner's test runs with the minted token, and the credential is a renewable
    client_credentials one that expires with the token, whose hint is the secret's end."""
    done = connect_cc()
    (call,) = partner.calls
    assert call["basic"] == (CLIENT_ID, CLIENT_SECRET)
    assert call["form"] == {"grant_type": "client_credentials", "scope": "read"}
    credential = stored(done.credential.id)
    assert (credential.auth_type, credential.state, credential.refreshable) == (
        "client_credentials",
        CredentialState.ACTIVE,
        True,
    )
    assert credential.access_expires_at == clock.moment + timedelta(seconds=3600)
    assert (credential.requested_scopes, credential.granted_scopes) == (["read"], ["read"])
    assert credential.hint == "…" + CLIENT_SECRET[-4:]
    assert credential.last_test and credential.last_test["ok"] and credential.last_test["accountName"] == "Machine app"
    assert links.get_link(A, done.link.id).status == LinkStatus.GRANTED


def test_body_client_auth_sends_the_links_scopes_and_the_extra_parameters(
    httpserver: HTTPServer, aws_env: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Given a partner that wants the client in the body, a comma scope separator and an `audience` parameter,
    when a link asking for `read` and `write` is completed, then the token request's body carries client_id,
    client_secret, `scope=read,write` and the audience, with no Authorization header; and the credential records
    what was asked for and the narrower grant the partner answered."""
    cc_partner(
        httpserver,
        monkeypatch,
        clientAuth="body",
        scopeSeparator=",",
        extraTokenParams={"audience": "https://api.fake.example"},
    )
    partner = FakeClientCredentialsServer(httpserver)
    partner.scope = "read"
    credential = connect_cc(scopes=["read", "write"]).credential
    (call,) = partner.calls
    assert call["basic"] is None
    assert call["form"] == {
        "grant_type": "client_credentials",
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "scope": "read,write",
        "audience": "https://api.fake.example",
    }
    assert (credential.requested_scopes, credential.granted_scopes) == (["read", "write"], ["read"])
    assert credential.to_out().missingScopes == ["write"]


@pytest.mark.parametrize(
    ("status", "error"),
    [(401, "invalid_client"), (400, "unauthorized_client"), (400, "invalid_scope")],
)
def test_a_refusal_is_a_failed_test_on_the_form_and_nothing_is_written(
    partner: FakeClientCredentialsServer, table_items: Any, status: int, error: str
) -> None:
    """Given a partner that refuses the client (or its scopes), when the customer submits the form, then the form
    comes back with the refusal and the client id (never the secret), the link still waits with one failed test
    counted, and no credential was written."""
    partner.error = (status, error)
    link, token = links.create_link(A, links.CreateLinkRequest(partnerId=7778, title="Machine"))
    with pytest.raises(connect.InvalidForm) as raised:
        connect.submit(link.id, token, {"clientId": CLIENT_ID, "clientSecret": CLIENT_SECRET})
    assert "Fake Machine API refused" in (raised.value.form_error or "")
    assert raised.value.values == {"clientId": CLIENT_ID}
    after = links.get_link(A, link.id)
    assert (after.status, after.failed_tests) == (LinkStatus.WAITING, 1)
    assert not [item for item in table_items() if item["pk"]["S"].startswith("CRED#")]


def test_a_wrong_secret_says_so_and_refusals_lock_the_link_at_the_cap(
    partner: FakeClientCredentialsServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Given a link capped at two failed tests, when a wrong client secret is submitted twice, then the first
    answer names the client id and secret as refused, and the second locks the link."""
    monkeypatch.setenv("GRANTLINK_LINK_MAX_FAILED_TESTS", "2")
    config.reset()
    link, token = links.create_link(A, links.CreateLinkRequest(partnerId=7778, title="Machine"))
    wrong = {"clientId": CLIENT_ID, "clientSecret": "not-the-secret-at-all"}
    with pytest.raises(connect.InvalidForm) as raised:
        connect.submit(link.id, token, wrong)
    assert "refused this client id and secret" in (raised.value.form_error or "")
    with pytest.raises(errors.LinkLocked):
        connect.submit(link.id, token, wrong)
    assert links.get_link(A, link.id).failed_tests == 2


def test_a_partner_that_does_not_answer_asks_to_try_again_and_counts_nothing(
    partner: FakeClientCredentialsServer,
) -> None:
    """Given a partner whose token endpoint fails (503), when the customer submits the form, then the form asks to
    try again, no failed test is counted, and a later submit connects."""
    partner.error = (503, "temporarily_unavailable")
    link, token = links.create_link(A, links.CreateLinkRequest(partnerId=7778, title="Machine"))
    form = {"clientId": CLIENT_ID, "clientSecret": CLIENT_SECRET}
    with pytest.raises(connect.InvalidForm) as raised:
        connect.submit(link.id, token, form)
    assert "try again" in (raised.value.form_error or "")
    assert links.get_link(A, link.id).failed_tests == 0
    partner.error = None
    assert connect.submit(link.id, token, form).credential.auth_type == "client_credentials"


# --- minting again ---------------------------------------------------------------------------------------------


def test_the_worker_mints_a_new_token_when_the_old_one_is_due(
    partner: FakeClientCredentialsServer, clock: FrozenClock, aws_env: Any
) -> None:
    """Given a connected credential, when the clock reaches its renewal time and the jobs run, then one more
    client_credentials request is made with the stored client id and secret, the new token is stored with its new
    expiry, and no refresh token is ever stored."""
    credential_id = connect_cc().credential.id
    first = connections.read_secret(A, credential_id).fields["accessToken"]
    due_now(clock, credential_id)
    assert run_jobs(aws_env) == {"batchItemFailures": []}
    assert partner.token_calls() == 2 and partner.calls[-1]["basic"] == (CLIENT_ID, CLIENT_SECRET)
    renewed = stored(credential_id)
    assert renewed.last_refreshed_at == clock.moment.replace(microsecond=0)
    assert renewed.access_expires_at == clock.moment + timedelta(seconds=3600) and renewed.refreshable
    values = oauth.open_values(renewed)
    assert values["accessToken"] != first and values["accessToken"] == partner.issued[-1]
    assert "refreshToken" not in values and values["clientSecret"] == CLIENT_SECRET


def test_concurrent_readers_of_a_due_token_make_one_mint(
    partner: FakeClientCredentialsServer, clock: FrozenClock
) -> None:
    """Given a credential whose token is due and a slow partner, when eight readers ask for its secret at once,
    then one token request is made and all eight get the new token."""
    credential_id = connect_cc().credential.id
    due_now(clock, credential_id)
    partner.delay = 0.5
    results: list[str] = []
    threads = [
        threading.Thread(target=lambda: results.append(connections.read_secret(A, credential_id).fields["accessToken"]))
        for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert partner.token_calls() == 2
    assert results == [partner.issued[-1]] * 8


def test_a_revoked_client_secret_requires_reauthorization_once_with_one_event(
    partner: FakeClientCredentialsServer, clock: FrozenClock, aws_env: Any, delivered_events: Any
) -> None:
    """Given a connected credential whose client secret the customer then revoked at the partner, when the jobs
    re-mint and the partner answers invalid_client, then the credential needs reauthorizing, with one
    `credential.reauthorization_required` event carrying a reauthorize link — not an `oauth_app.invalid` (the
    tenant has no OAuth app here) — and later sweeps make no further token call."""
    credential_id = connect_cc().credential.id
    partner.clients = {}
    due_now(clock, credential_id)
    run_jobs(aws_env)
    clock.advance(hours=2)
    run_jobs(aws_env)
    assert stored(credential_id).state == CredentialState.REAUTHORIZATION_REQUIRED
    assert partner.token_calls() == 2  # the connect, and the one refused re-mint
    seen = delivered_events()
    required = [e["detail"] for e in seen if e["detail-type"] == "credential.reauthorization_required"]
    assert len(required) == 1 and not [e for e in seen if e["detail-type"] == "oauth_app.invalid"]
    assert required[0]["reason"] == "invalid_client" and required[0]["reauthorizeLink"]


def test_a_token_without_an_expiry_is_used_until_the_partner_refuses_it(partner: FakeClientCredentialsServer) -> None:
    """Given a partner whose tokens carry no `expires_in`, when the credential is connected, then it has no expiry
    and is not due; when the partner later revokes the token, a proxied call gets its 401, mints once, retries once
    with the new token and returns the partner's 200."""
    partner.expires_in = None
    credential_id = connect_cc().credential.id
    credential = stored(credential_id)
    assert credential.access_expires_at is None and credential.due_at() is None
    partner.revoked.add(partner.issued[-1])
    status, body, _ = invoke("proxy", proxy_event(credential_id, "me", tenant="tnt_a", scopes=PROXY_SCOPES))
    assert status == 200 and body["name"] == "Machine app"
    assert partner.token_calls() == 2
    assert oauth.open_values(stored(credential_id))["accessToken"] == partner.issued[-1]


def test_the_token_endpoint_returns_the_minted_token_and_mints_on_demand(partner: FakeClientCredentialsServer) -> None:
    """Given a connected credential, when the tenant reads GET /credentials/{id}/token, then it gets the minted token
    and its expiry; with forceRefresh=true a new token is minted."""
    credential_id = connect_cc().credential.id
    status, body, _ = invoke("credentials", token_event(credential_id, tenant="tnt_a"))
    assert status == 200 and body["data"]["accessToken"] == partner.issued[0] and body["data"]["expiresAt"]
    status, body, _ = invoke("credentials", token_event(credential_id, force=True, tenant="tnt_a"))
    assert status == 200 and body["data"]["accessToken"] == partner.issued[1] != partner.issued[0]


def test_a_reauthorize_link_shows_the_form_again_and_replaces_the_secret(partner: FakeClientCredentialsServer) -> None:
    """Given a credential whose client secret was rotated at the partner, when the tenant makes a reauthorize link,
    then the customer gets the client id and secret form again, and submitting the new secret replaces the old one
    in the same credential, which is active again."""
    credential_id = connect_cc().credential.id
    rotated = "cc-client-secret-rotated-987654321"
    partner.clients = {CLIENT_ID: rotated}
    link, token = connections.reauthorize(A, credential_id, ReauthorizeRequest.model_validate({}))
    page = invoke_page(link.id, token)
    assert 'name="f_clientId"' in page and 'name="f_clientSecret"' in page and 'type="password"' in page
    replaced = connect.submit(link.id, token, {"clientId": CLIENT_ID, "clientSecret": rotated}).credential
    assert replaced.id == credential_id
    shown = connections.read_secret(A, credential_id).fields
    assert shown["clientSecret"] == rotated and shown["accessToken"] == partner.issued[-1]


def invoke_page(link_id: str, token: str) -> str:
    from tests.helpers import call

    answer = call("connect_page", event("connect_get", query={"id": link_id, "token": token}))
    assert answer["statusCode"] == 200, answer
    return str(answer["body"])


def test_the_sealed_values_hold_the_secret_and_neither_the_table_nor_the_logs_do(
    partner: FakeClientCredentialsServer, table_items: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Given logging at DEBUG, when a credential is connected and its secret read, then the secret endpoint shows
    the client id and secret and the token, while no table item and no log record holds the client secret or the
    access token."""
    caplog.set_level(logging.DEBUG)
    credential_id = connect_cc().credential.id
    fields = connections.read_secret(A, credential_id).fields
    assert set(fields) == {"clientId", "clientSecret", "accessToken", "tokenType", "expiresAt", "scope"}
    assert fields["clientSecret"] == CLIENT_SECRET and fields["accessToken"] == partner.issued[0]
    stored_bytes = json.dumps(table_items(), default=repr)
    logged = caplog.text + " ".join(repr(vars(record)) for record in caplog.records)
    for secret in (CLIENT_SECRET, partner.issued[0]):
        assert secret not in stored_bytes and secret not in logged


def test_a_field_in_the_token_url_is_filled_in_from_the_form(
    httpserver: HTTPServer, aws_env: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Given a partner whose token URL names a form field (as Microsoft's /{tenantId}/oauth2/v2.0/token does), when
    the customer submits its tenant with the client id and secret, then the token request goes to that tenant's
    token URL and the credential connects."""
    from grantlink import providers
    from grantlink.models import CreateLinkRequest
    from grantlink.providers import FormField
    from tests.unit.client_credentials_fakes import CC_PARTNER_ID

    partner = cc_partner(httpserver, monkeypatch)
    tenant = FormField.model_validate(
        {"name": "tenant", "label": "Tenant", "help": "Your tenant.", "secret": False,
         "pattern": "^[a-z0-9-]{1,40}$", "required": True, "example": "contoso"}
    )  # fmt: skip
    assert partner.client_credentials is not None
    root = httpserver.url_for("").rstrip("/")
    grant = partner.client_credentials.model_copy(update={"token_url": f"{root}/{{tenant}}/token"})
    changed = partner.model_copy(
        update={"fields": [*partner.fields, tenant], "client_credentials": grant, "base_url": f"{root}/contoso"}
    )
    monkeypatch.setattr(providers, "get", lambda pid: changed if pid == CC_PARTNER_ID else None)
    monkeypatch.setattr(providers, "find", lambda pid: changed if pid == CC_PARTNER_ID else None)
    server = FakeClientCredentialsServer(httpserver, prefix="/contoso")
    made, token = links.create_link(A, CreateLinkRequest(partnerId=CC_PARTNER_ID, title="Tenant"))

    done = connect.submit(made.id, token, {"clientId": CLIENT_ID, "clientSecret": CLIENT_SECRET, "tenant": "contoso"})

    assert server.token_calls() == 1 and stored(done.credential.id).state == CredentialState.ACTIVE
