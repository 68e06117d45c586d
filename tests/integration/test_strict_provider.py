"""OAuth against a strict provider, over https with a private CA (issue 10).

The local stack's demo OAuth server runs in strict mode (infra/local/strict_provider.mjs): every refresh rotates
the refresh token, presenting a used one again revokes the whole grant (reuse detection), unknown tokens and codes
answer `invalid_grant`, and access tokens live 60 s — inside the 900 s renewal window, so every read of the
secret and every sweep must refresh first. It is served over https with a certificate signed by a CA made for
this module, which the stack trusts only through its environment.

The server reports each token request's outcome and each grant's state (rotations so far, revoked or not, the id
of the newest access token) at GET /_local/oauth-stats, counted by a reader thread a moment after the call, so
tests read it with a bounded poll. A grant's generation is the number of rotations the provider accepted: a
refresh that presented anything but the newest refresh token would have revoked the grant instead.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import pytest
import requests

from tests.oauth_http import link_status, new_oauth_link, query, secret, secrets_at_once, start
from tests.stack import auth, http, start_stack, stop_stack, url
from tests.tls import TLSFiles, make_ca_and_cert

pytestmark = pytest.mark.integration

TOKEN_TTL = 60  # seconds an access token lives at the strict provider
RENEW_BEFORE = 900  # the renewal window: wider than TOKEN_TTL, so every credential is always due
REFRESHES = 5  # consecutive refreshes a credential must survive
SETTLES_WITHIN = 5.0  # seconds for the stack's reader thread to report a token call already made
CLIENT = "strict-test-client"
REDIRECT = "http://127.0.0.1:9/callback"  # never called: the test reads the code from the Location header


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TLSFiles:
    return make_ca_and_cert(tmp_path_factory.mktemp("strict-ca"))


@pytest.fixture(scope="module")
def strict_stack(tmp_path_factory: pytest.TempPathFactory, tls: TLSFiles) -> Iterator[dict[str, Any]]:
    """A local stack whose demo-oauth partner (9003) is the strict provider on https; the stack trusts the
    private CA only through GRANTLINK_CA_BUNDLE, the setting an operator with a private CA uses."""
    folder = tmp_path_factory.mktemp("strict-stack")
    state_file, log_file = folder / "stack.json", folder / "stack.log"
    extra = {
        "GRANTLINK_DEMO_OAUTH_STRICT": "true",
        "GRANTLINK_DEMO_OAUTH_TLS_CERT": str(tls.cert),
        "GRANTLINK_DEMO_OAUTH_TLS_KEY": str(tls.key),
        "GRANTLINK_DEMO_TOKEN_TTL": str(TOKEN_TTL),
        "GRANTLINK_RENEW_BEFORE_SECONDS": str(RENEW_BEFORE),
        "GRANTLINK_CA_BUNDLE": str(tls.ca_cert),
    }
    process = start_stack(state_file, log_file, extra)
    try:
        state = json.loads(state_file.read_text())
        state.update(stateFile=str(state_file), log=str(log_file), caBundle=str(tls.ca_cert))
        yield state
    finally:
        stop_stack(process)


# --- helpers -----------------------------------------------------------------------------------------------------


def provider_stats(stack: dict[str, Any]) -> dict[str, Any]:
    answer = http.get(url(stack, "/_local/oauth-stats"))
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def reported(stack: dict[str, Any], until: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """The provider's stats once `until` holds (bounded): calls already made are only reported a moment later."""
    deadline = time.monotonic() + SETTLES_WITHIN
    while not until(stats := provider_stats(stack)) and time.monotonic() < deadline:
        time.sleep(0.02)
    return stats


def grant_state(stack: dict[str, Any], grant: str, generation: int) -> dict[str, Any]:
    """The grant's state once the provider has reported `generation` rotations (or a revocation) of it."""

    def seen(stats: dict[str, Any]) -> bool:
        state = stats["grants"].get(grant, {})
        return bool(state.get("revoked")) or state.get("generation", -1) >= generation

    return dict(reported(stack, seen)["grants"][grant])


def claims(access_token: str) -> dict[str, Any]:
    """The JWT's payload (the signature is the provider's business; we only read what it says it issued)."""
    payload = access_token.split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))))


def token_call(stack: dict[str, Any], **form: str) -> requests.Response:
    """POST the strict provider's token endpoint directly, trusting only the private CA."""
    body = {"client_id": CLIENT, **form}
    return http.post(f"{stack['oauthIssuer']}/token", data=body, verify=stack["caBundle"])


def authorization_code(stack: dict[str, Any]) -> str:
    """A code from the strict provider's /authorize (it approves at once), asked for directly, without PKCE."""
    params = {"response_type": "code", "client_id": CLIENT, "redirect_uri": REDIRECT, "state": "s" * 43}
    authorized = http.get(
        f"{stack['oauthIssuer']}/authorize", params=params, verify=stack["caBundle"], allow_redirects=False
    )
    assert authorized.status_code == 302, authorized.text
    return query(authorized.headers["Location"])["code"]


def exchange(stack: dict[str, Any], code: str) -> requests.Response:
    return token_call(stack, grant_type="authorization_code", code=code, redirect_uri=REDIRECT)


def new_grant(stack: dict[str, Any]) -> dict[str, Any]:
    """Authorize and exchange the code at the strict provider directly: a new grant's token answer."""
    answer = exchange(stack, authorization_code(stack))
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def refresh(stack: dict[str, Any], refresh_token: str) -> requests.Response:
    return token_call(stack, grant_type="refresh_token", refresh_token=refresh_token)


def connect(stack: dict[str, Any], title: str) -> tuple[str, str]:
    """Connect a 9003 credential through a link, the browser's leg to the provider trusting the private CA;
    returns (credential id, the provider's grant id for it)."""
    before = set(provider_stats(stack)["grants"])
    link = new_oauth_link(stack, title)
    authorize_url = start(stack, link).headers["Location"]
    answer = http.get(authorize_url, verify=stack["caBundle"], allow_redirects=False)
    assert answer.status_code == 302, answer.text
    done = http.get(answer.headers["Location"], allow_redirects=False)
    assert done.status_code == 303, (done.status_code, done.text)
    credential_id = link_status(stack, link["id"])["credentialId"]
    assert credential_id, "the link was not granted"
    grants = set(reported(stack, lambda s: len(set(s["grants"]) - before) > 0)["grants"]) - before
    assert len(grants) == 1, grants
    return credential_id, grants.pop()


def metadata(stack: dict[str, Any], credential_id: str) -> dict[str, Any]:
    answer = http.get(url(stack, f"/credentials/{credential_id}"), headers=auth(stack))
    assert answer.status_code == 200, answer.text
    return dict(answer.json()["data"])


def sweep(stack: dict[str, Any]) -> dict[str, Any]:
    answer = http.post(url(stack, "/_local/sweep"))
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


# --- (a) the provider is strict ----------------------------------------------------------------------------------


def test_every_refresh_rotates_the_refresh_token_and_issues_a_short_lived_access_token(
    strict_stack: dict[str, Any],
) -> None:
    """Given a grant from a code exchange at the strict provider,
    when it is refreshed twice, each time with the newest refresh token,
    then each answer carries a refresh token never seen before and a new access token that lives 60 s
    (`expires_in` and the JWT's `exp`), and the provider reports two rotations of a grant still valid."""
    first = new_grant(strict_stack)
    grant = claims(first["access_token"])["grant_id"]
    refresh_tokens, access_ids = [first["refresh_token"]], [claims(first["access_token"])["jti"]]

    for _ in range(2):
        answer = refresh(strict_stack, refresh_tokens[-1])
        assert answer.status_code == 200, answer.text
        body = answer.json()
        issued = claims(body["access_token"])
        assert body["refresh_token"] not in refresh_tokens
        assert body["expires_in"] == TOKEN_TTL and issued["exp"] - issued["iat"] == TOKEN_TTL
        assert issued["grant_id"] == grant and issued["jti"] not in access_ids
        refresh_tokens.append(body["refresh_token"])
        access_ids.append(issued["jti"])

    assert grant_state(strict_stack, grant, 2) == {"generation": 2, "revoked": False, "accessTokenId": access_ids[-1]}


def test_a_replayed_refresh_token_revokes_the_whole_grant(strict_stack: dict[str, Any]) -> None:
    """Given a grant whose first refresh token was used once (rotated to a second one),
    when the first refresh token is presented again,
    then it is refused with invalid_grant, the grant is revoked, and from then on even the newest refresh
    token answers invalid_grant (reuse detection)."""
    first = new_grant(strict_stack)
    grant = claims(first["access_token"])["grant_id"]
    rotated = refresh(strict_stack, first["refresh_token"])
    assert rotated.status_code == 200, rotated.text
    replays_before = provider_stats(strict_stack)["outcomes"].get("replayed", 0)

    replayed = refresh(strict_stack, first["refresh_token"])
    newest = refresh(strict_stack, rotated.json()["refresh_token"])

    for answer in (replayed, newest):
        assert answer.status_code == 400 and answer.json()["error"] == "invalid_grant", answer.text
        assert "access_token" not in answer.json() and "refresh_token" not in answer.json()
    assert grant_state(strict_stack, grant, 2)["revoked"] is True
    stats = reported(strict_stack, lambda s: s["outcomes"].get("grant_revoked", 0) >= 1)
    assert stats["outcomes"]["replayed"] == replays_before + 1


def test_unknown_refresh_tokens_and_codes_are_refused(strict_stack: dict[str, Any]) -> None:
    """Given the strict provider,
    when a made-up refresh token and a made-up authorization code are presented,
    then both answer invalid_grant and no grant is created."""
    grants_before = set(provider_stats(strict_stack)["grants"])

    unknown_token = refresh(strict_stack, "made-up-refresh-token")
    unknown_code = exchange(strict_stack, "made-up-code")

    for answer in (unknown_token, unknown_code):
        assert answer.status_code == 400 and answer.json() == {
            "error": "invalid_grant",
            "error_description": "The grant is invalid, expired or revoked.",
        }, answer.text
    stats = reported(strict_stack, lambda s: s["outcomes"].get("unknown_code", 0) >= 1)
    assert stats["outcomes"]["unknown_token"] >= 1
    assert set(stats["grants"]) == grants_before


def test_a_code_used_twice_is_refused_and_revokes_the_grant_it_started(strict_stack: dict[str, Any]) -> None:
    """Given a code the strict provider issued and that was exchanged once (no PKCE, so the mock's own
    challenge check does not step in first),
    when the same code is exchanged again,
    then it answers invalid_grant and the grant the first exchange started is revoked: its refresh token
    answers invalid_grant too (RFC 6749 §4.1.2)."""
    code = authorization_code(strict_stack)
    first = exchange(strict_stack, code)
    assert first.status_code == 200, first.text

    again = exchange(strict_stack, code)
    refreshed = refresh(strict_stack, first.json()["refresh_token"])

    for answer in (again, refreshed):
        assert answer.status_code == 400 and answer.json()["error"] == "invalid_grant", answer.text
    grant = claims(first.json()["access_token"])["grant_id"]
    assert grant_state(strict_stack, grant, 1)["revoked"] is True


def test_the_provider_is_trusted_only_through_the_private_ca(strict_stack: dict[str, Any]) -> None:
    """Given the strict provider on https with a certificate signed by the module's private CA,
    when a client that trusts only the public CAs connects, then the TLS handshake fails;
    and a client given the private CA gets the provider's answer."""
    issuer = strict_stack["oauthIssuer"]
    assert issuer.startswith("https://127.0.0.1:")

    with pytest.raises(requests.exceptions.SSLError):
        requests.get(f"{issuer}/.well-known/openid-configuration", timeout=10, verify=True)
    trusted = http.get(f"{issuer}/.well-known/openid-configuration", verify=strict_stack["caBundle"])
    assert trusted.status_code == 200 and trusted.json()["issuer"] == issuer


# --- (b)-(d) grantlink against the strict provider ---------------------------------------------------------------


def test_a_credential_survives_consecutive_refreshes_by_the_jobs(strict_stack: dict[str, Any]) -> None:
    """Given a demo-oauth credential connected through a link (its access token always due: 60 s < 900 s),
    when the jobs run five times (POST /_local/sweep),
    then each run rotates the grant exactly once, each time presenting the newest refresh token (the grant's
    generation grows by one and it is never revoked), and the credential stays active with five refreshes
    in its audit trail."""
    credential_id, grant = connect(strict_stack, "strict: refreshed by the jobs")

    for run in range(1, REFRESHES + 1):
        assert sweep(strict_stack)["processed"] >= 1
        state = grant_state(strict_stack, grant, run)
        assert (state["generation"], state["revoked"]) == (run, False), f"after sweep {run}: {state}"

    meta = metadata(strict_stack, credential_id)
    assert meta["state"] == "active" and meta["lastRefreshedAt"] and meta["refreshFailures"] == 0
    audit = http.get(url(strict_stack, f"/credentials/{credential_id}/audit"), headers=auth(strict_stack))
    assert [e["action"] for e in audit.json()["data"]].count("refreshed") == REFRESHES


def test_ten_concurrent_reads_of_a_due_credential_make_one_token_call(strict_stack: dict[str, Any]) -> None:
    """Given a demo-oauth credential whose access token is due,
    when 10 GET /credentials/{id}/secret are fired at once,
    then all answer 200 with the same access token, the provider saw exactly one refresh (one rotation, grant
    not revoked; one more read then makes exactly the second), and the credential is still active."""
    credential_id, grant = connect(strict_stack, "strict: ten concurrent reads")
    answers = secrets_at_once(strict_stack, credential_id)

    assert [a.status_code for a in answers] == [200] * 10, [(a.status_code, a.text) for a in answers]
    tokens = {a.json()["data"]["fields"]["accessToken"] for a in answers}
    assert len(tokens) == 1, f"{len(tokens)} different access tokens"
    after_burst = grant_state(strict_stack, grant, 1)
    assert (after_burst["generation"], after_burst["revoked"]) == (1, False), after_burst
    assert claims(tokens.pop())["jti"] == after_burst["accessTokenId"]

    assert secret(strict_stack, credential_id).status_code == 200  # a barrier: its one call is reported after
    again = grant_state(strict_stack, grant, 2)
    assert (again["generation"], again["revoked"]) == (2, False), again
    assert metadata(strict_stack, credential_id)["state"] == "active"


def test_the_secret_is_the_newest_access_token_the_provider_issued(strict_stack: dict[str, Any]) -> None:
    """Given a demo-oauth credential the jobs have refreshed twice,
    when its secret is read (the token is due, so the read refreshes once more),
    then the access token returned is the newest one the provider issued for that grant (its id and grant
    match the provider's latest), it lives 60 s, and its `expiresAt` is the token's own expiry."""
    credential_id, grant = connect(strict_stack, "strict: newest token")
    for run in (1, 2):
        sweep(strict_stack)
        assert grant_state(strict_stack, grant, run)["generation"] == run

    answer = secret(strict_stack, credential_id)

    assert answer.status_code == 200, answer.text
    fields = answer.json()["data"]["fields"]
    issued = claims(fields["accessToken"])
    latest = grant_state(strict_stack, grant, 3)
    assert (latest["generation"], latest["revoked"]) == (3, False), latest
    assert (issued["grant_id"], issued["jti"]) == (grant, latest["accessTokenId"])
    assert issued["exp"] - issued["iat"] == TOKEN_TTL
    expires_at = datetime.fromisoformat(fields["expiresAt"]).timestamp()
    assert abs(expires_at - issued["exp"]) <= 2, (fields["expiresAt"], issued["exp"])
