"""OAuth 2.0 client credentials over real HTTP against the local stack (issue 12): the demo partner 9005
(`demo-client-credentials`), whose token endpoint is the stack's oauth2-mock-server, which mints
client_credentials tokens for any client. The customer submits a client id and secret on the connect page; the
token endpoint, the proxy and the renewal jobs then mint tokens with them."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from infra.local.extras import mask
from tests.oauth_http import CLIENT_CREDENTIALS, connect_client_credentials, saw, settled, token, token_requests
from tests.stack import auth, http, start_stack, stop_stack, url

pytestmark = pytest.mark.integration

SECRET = "demo-machine-secret-0123456789"


@pytest.fixture(scope="module")
def short_ttl_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A local stack whose demo tokens live 60 s, inside the 900 s renewal window: a client credentials token is due
    as soon as it is minted. No timer: POST /_local/sweep runs the jobs."""
    folder = tmp_path_factory.mktemp("cc-short-ttl")
    process = start_stack(
        folder / "s.json", folder / "s.log", {"GRANTLINK_DEMO_TOKEN_TTL": "60", "GRANTLINK_RENEW_BEFORE_SECONDS": "900"}
    )
    try:
        state = json.loads((folder / "s.json").read_text())
        state.update(stateFile=str(folder / "s.json"), log=str(folder / "s.log"))
        yield state
    finally:
        stop_stack(process)


def metadata(stack: dict[str, Any], credential_id: str) -> dict[str, Any]:
    answer = http.get(url(stack, f"/credentials/{credential_id}"), headers=auth(stack))
    assert answer.status_code == 200, answer.text
    return dict(answer.json()["data"])


def refreshed_events(stack: dict[str, Any], credential_id: str) -> list[dict[str, Any]]:
    """The `credential.refreshed` events the stack printed for this credential."""
    lines = Path(stack["log"]).read_text(errors="replace").splitlines()
    printed = [json.loads(line)["event"] for line in lines if line.startswith("{") and '"local": "event"' in line]
    return [
        e
        for e in printed
        if e["detail-type"] == "credential.refreshed" and e["detail"]["credentialId"] == credential_id
    ]


def test_the_connect_form_mints_a_token_and_makes_a_client_credentials_credential(stack: dict[str, Any]) -> None:
    """Given a 9005 link, when the customer submits a client id and secret on the connect page, then the demo server
    counts one client_credentials grant and the credential is a renewable client_credentials one, tested OK, with
    the scope it asked for granted and a hint of the secret (never the secret)."""
    before = token_requests(stack, CLIENT_CREDENTIALS)
    _, credential_id = connect_client_credentials(stack, SECRET)
    assert settled(stack, CLIENT_CREDENTIALS, before + 1) == before + 1
    data = metadata(stack, credential_id)
    assert data["authType"] == "client_credentials" and data["state"] == "active"
    assert data["accessExpiresAt"] and data["lastTest"]["ok"] and data["hint"] == "…" + SECRET[-4:]
    assert data["requestedScopes"] == ["demo:read"] and data["grantedScopes"] == ["demo:read"]
    assert SECRET not in json.dumps(data)


def test_the_token_endpoint_and_the_proxy_use_the_minted_token(stack: dict[str, Any]) -> None:
    """Given a connected 9005 credential, when the tenant reads GET /credentials/{id}/token, then it gets the
    minted bearer token and its expiry; a proxied call reaches the partner with that very token; and the secret
    endpoint shows the client id and secret beside it."""
    _, credential_id = connect_client_credentials(stack, SECRET)
    minted = token(stack, credential_id)
    assert minted.status_code == 200, minted.text
    data = minted.json()["data"]
    assert data["tokenType"].lower() == "bearer" and data["expiresAt"]
    proxied = http.get(url(stack, f"/credentials/{credential_id}/proxy/v1/me"), headers=auth(stack))
    assert proxied.status_code == 200, proxied.text
    assert proxied.json()["auth"] == {"kind": "bearer", "value": mask(data["accessToken"])}
    fields = http.get(url(stack, f"/credentials/{credential_id}/secret"), headers=auth(stack)).json()["data"]["fields"]
    assert fields["clientSecret"] == SECRET and fields["accessToken"] == data["accessToken"]


def test_a_revoked_token_is_minted_again_once_and_the_call_retried(stack: dict[str, Any]) -> None:
    """Given a 9005 credential whose access token the partner has revoked (the echo answers it 401), when the tenant
    proxies a call, then grantlink mints one new token with the stored client id and secret, retries once and the
    tenant gets the partner's 200."""
    _, credential_id = connect_client_credentials(stack, SECRET)
    stale = token(stack, credential_id).json()["data"]["accessToken"]
    assert http.post(url(stack, "/_demo/oauth/revoke"), data={"token": stale}).status_code == 200
    before = token_requests(stack, CLIENT_CREDENTIALS)
    answer = http.get(url(stack, f"/credentials/{credential_id}/proxy/v1/me"), headers=auth(stack))
    assert answer.status_code == 200, answer.text
    assert settled(stack, CLIENT_CREDENTIALS, before + 1) == before + 1
    fresh = token(stack, credential_id).json()["data"]["accessToken"]
    assert fresh != stale and answer.json()["auth"]["value"] == mask(fresh)
    saw(stack, "access token", stale)


def test_the_jobs_mint_a_new_token_when_it_is_due(short_ttl_stack: dict[str, Any]) -> None:
    """Given a 9005 credential on a stack whose tokens live 60 s (so it is due at once), when POST /_local/sweep runs
    the sweep and the worker, then the demo server counts exactly one more client_credentials grant, the credential
    shows it was renewed (lastRefreshedAt, a later accessExpiresAt, a `credential.refreshed` event line), and the
    token the tenant reads afterwards is not the one it read before."""
    stack = short_ttl_stack
    _, credential_id = connect_client_credentials(stack, SECRET)
    first = token(stack, credential_id).json()["data"]  # due already: this read mints too
    before_sweep = metadata(stack, credential_id)
    count = settled(stack, CLIENT_CREDENTIALS, 2)
    assert count == 2  # the connect and the read
    swept = http.post(url(stack, "/_local/sweep")).json()
    assert swept["processed"] >= 1 and swept["failed"] == 0, swept
    assert settled(stack, CLIENT_CREDENTIALS, count + 1) == count + 1
    after_sweep = metadata(stack, credential_id)
    assert after_sweep["lastRefreshedAt"] and after_sweep["accessExpiresAt"] >= before_sweep["accessExpiresAt"]
    assert after_sweep["refreshFailures"] == 0 and after_sweep["state"] == "active"
    deadline = time.monotonic() + 10  # the stack prints bus events as its printer polls them: a bounded wait
    while len(refreshed_events(stack, credential_id)) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert len(refreshed_events(stack, credential_id)) >= 2  # the read's mint and the worker's
    assert token(stack, credential_id).json()["data"]["accessToken"] != first["accessToken"]


def test_a_refused_client_secret_is_a_failed_test_on_the_form_and_nothing_is_written(stack: dict[str, Any]) -> None:
    """Given a 9005 link and a machine client the provider has revoked (the demo server refuses secrets starting
    with "revoked-" with invalid_client)
    When the customer submits its id and secret on the connect page
    Then the form comes back saying the partner refused them (the secret not echoed), the link still waits with one
    failed test counted, and no credential exists."""
    answer = http.post(url(stack, "/credentials/grant-access-sharing"), json={"partnerId": 9005, "title": "Refused"},
                       headers=auth(stack))  # fmt: skip
    link = answer.json()["data"]
    secret = "revoked-machine-secret-0123456789"
    form = {"id": link["id"], "token": link["token"], "f_clientId": "demo-machine-app", "f_clientSecret": secret}

    page = http.post(url(stack, "/connect"), data=form, allow_redirects=False)

    assert page.status_code in (400, 422) and "refused this client id and secret" in page.text, page.text[:500]
    assert secret not in page.text and "demo-machine-app" in page.text
    status = http.get(url(stack, f"/credentials/grant-access-sharing/{link['id']}"), headers=auth(stack)).json()["data"]
    assert status["status"] == 0 and status["failedTests"] == 1 and status["credentialId"] is None
