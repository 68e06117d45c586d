"""SECURITY.md "OAuth client" (O1–O11): the client grantlink is towards partners' authorization servers, and the
pages and logs around it.

In-process tests run the use cases and handlers against moto and a fake partner on 127.0.0.1
(tests/unit/oauth_fakes.py); the `integration` ones walk the flow over real HTTP against the local stack and its
oauth2-mock-server (helpers in tests/oauth_http.py). Further proof lives in tests/e2e/test_oauth_browser.py
(O10 in a real browser: the 303 to a clean URL, no console or CSP errors).
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import pytest

from grantlink import connect, connections, errors, links, oauth, observability, pages, providers, renewal
from grantlink.models import CreateLinkRequest, CredentialState, LinkStatus
from grantlink.store import default as default_store
from infra.local import jobs
from tests.helpers import SECRET, FrozenClock, call, due_items, event, new_link, run_jobs
from tests.html_pages import Page, every_page
from tests.oauth_http import (
    CLIENT_SECRET,
    CODE,
    DEMO_OAUTH,
    KINDS,
    REFRESH,
    SEEN,
    approve,
    connect_client_credentials,
    link_status,
    new_oauth_link,
    query,
    saw,
    secret,
    secrets_at_once,
    settled,
    start,
    text,
    token,
    token_requests,
)
from tests.oauth_http import (
    connect as connect_over_http,
)
from tests.security.flows import run_every_flow
from tests.stack import LINKS, ROOT, auth, http, new_tenant_and_id, start_stack, stop_stack, url
from tests.stack import new_link as new_link_over_http
from tests.unit.oauth_fakes import (
    PARTNER_ID,
    REDIRECT,
    A,
    FakeAuthorizationServer,
    connected_credential,
    expire_access_token,
    finish,
    start_flow,
)
from tests.xray import recording_traces


def _flows() -> list[dict[str, Any]]:
    """The OAuth flow records (OAUTH#…) in the table, deserialized."""
    from grantlink.store import deserialize

    client = default_store().client
    items = client.scan(TableName=default_store().table)["Items"]
    return [deserialize(i) for i in items if i["pk"]["S"].startswith("OAUTH#")]


def allow_redirects_to(*origins: str) -> None:
    """Tenant A exists and allows these redirect origins."""
    from grantlink import tenants

    default_store().put_tenant_with_key({"tenantId": "tnt_a", "name": "a"}, "unused", {"tenantId": "tnt_a"})
    tenants.set_redirect_origins("tnt_a", origins)


# --- O1–O5: the authorization code flow -------------------------------------------------------------------------


@pytest.mark.parametrize("case", ["missing", "wrong", "reused", "expired"])
def test_o1_bad_state_is_rejected_before_any_token_call(
    provider_server: FakeAuthorizationServer, clock: FrozenClock, case: str
) -> None:
    """O1: missing, wrong, reused or expired state → 4xx, and the token endpoint saw no call for it."""
    _, query = start_flow()
    if case == "reused":
        finish(query)
        before = len(provider_server.calls)
    else:
        before = 0
    state = {"missing": "", "wrong": "not-the-state", "reused": query["state"][0], "expired": query["state"][0]}[case]
    if case == "expired":
        clock.advance(minutes=11)
    with pytest.raises(errors.BadRequest):
        oauth.callback({"code": "c", "state": state} if state else {"code": "c"}, REDIRECT)
    assert len(provider_server.calls) == before


def test_o2_pkce_s256_with_a_fresh_verifier_per_flow(provider_server: Any, table_items: Any) -> None:
    """O2: the challenge is S256 of the stored verifier; two flows have different ones."""
    _, first = start_flow()
    _, second = start_flow()
    assert first["code_challenge_method"] == ["S256"]
    assert first["code_challenge"] != second["code_challenge"]
    flows = [i for i in table_items() if i["pk"]["S"].startswith("OAUTH#")]
    verifiers = {f["verifier"]["S"] for f in flows}
    challenges = {
        base64.urlsafe_b64encode(hashlib.sha256(v.encode()).digest()).rstrip(b"=").decode() for v in verifiers
    }
    assert challenges == {first["code_challenge"][0], second["code_challenge"][0]}


def test_o3_the_stored_verifier_reaches_the_token_endpoint(provider_server: FakeAuthorizationServer) -> None:
    """O3: the token request carries that flow's code_verifier (passed explicitly to requests-oauthlib)."""
    _, query = start_flow()
    verifier = next(i["verifier"] for i in _flows() if oauth.hash_state(query["state"][0]) in i["pk"])
    finish(query)
    (call,) = provider_server.calls
    assert call["code_verifier"] == verifier and call["grant_type"] == "authorization_code"
    assert call["redirect_uri"] == REDIRECT


def test_o4_the_redirect_uri_comes_from_configuration(provider_server: Any) -> None:
    """O4: whatever calls start, the authorize URL carries the configured redirect_uri."""
    _, query = start_flow()
    assert query["redirect_uri"] == [REDIRECT]


@pytest.mark.parametrize("iss", ["https://evil.example", None])
def test_o5_a_wrong_or_missing_iss_is_rejected(provider_server: FakeAuthorizationServer, iss: str | None) -> None:
    """O5: the partner declares its issuer; a callback with another iss, or none, is refused before the token call."""
    link, query = start_flow()
    outcome = finish(query, iss=iss)  # type: ignore[arg-type]
    assert not outcome.connected and "issuer mismatch" in (outcome.problem or "")
    assert provider_server.calls == []
    assert links.get_link(A, link.id).status == LinkStatus.WAITING


# --- O6–O8: refresh ---------------------------------------------------------------------------------------------


def test_o6_concurrent_refreshes_make_one_token_call(provider_server: FakeAuthorizationServer) -> None:
    """O6: eight readers of an expiring token at once → one refresh call; all get the new token."""
    credential_id = connected_credential(provider_server)
    expire_access_token(credential_id)
    provider_server.delay = 0.5
    before = len(provider_server.calls)
    results: list[str] = []

    def read() -> None:
        results.append(connections.read_secret(A, credential_id).fields["accessToken"])

    threads = [threading.Thread(target=read) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(provider_server.calls) - before == 1
    assert provider_server.calls[-1]["grant_type"] == "refresh_token"
    assert results == [f"access-{before + 1}"] * 8


def test_o6_concurrent_renewals_of_one_credential_make_one_call(provider_server: FakeAuthorizationServer) -> None:
    """O6: four renewal workers on one due credential at once → one refresh call."""
    credential_id = connected_credential(provider_server)
    expire_access_token(credential_id)
    provider_server.delay = 0.4
    calls = len(provider_server.calls)
    outcomes: list[str] = []
    threads = [
        threading.Thread(target=lambda: outcomes.append(renewal.renew_credential(credential_id, default_store())))
        for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(provider_server.calls) - calls == 1
    assert outcomes.count("refreshed") >= 1 and len(outcomes) == 4


def test_o7_a_rotated_refresh_token_is_saved_and_a_missing_one_keeps_the_old(
    provider_server: FakeAuthorizationServer,
) -> None:
    """O7: the provider's rotated refresh token is what is stored; an answer without one keeps the old one."""
    credential_id = connected_credential(provider_server)  # refresh token: refresh-1-1
    expire_access_token(credential_id)
    connections.read_secret(A, credential_id)
    assert provider_server.calls[-1]["refresh_token"] == "refresh-1-1"
    stored = oauth.open_values(default_store().get_credential(credential_id))  # type: ignore[arg-type]
    assert stored["refreshToken"] == "refresh-1-2"  # rotated
    provider_server.refresh_token = None  # the next answer carries none
    expire_access_token(credential_id)
    connections.read_secret(A, credential_id)
    stored = oauth.open_values(default_store().get_credential(credential_id))  # type: ignore[arg-type]
    assert stored["refreshToken"] == "refresh-1-2" and stored["accessToken"] == "access-3"


def test_o8_invalid_grant_requires_reauthorization_once_and_stops_calling(
    provider_server: FakeAuthorizationServer,
) -> None:
    """O8: invalid_grant on a read → reauthorization_required, one state change, and no further token calls."""
    credential_id = connected_credential(provider_server)
    expire_access_token(credential_id)
    provider_server.error = "invalid_grant"
    before = len(provider_server.calls)
    for _ in range(3):
        with pytest.raises(errors.Conflict) as raised:
            connections.read_secret(A, credential_id)
        assert raised.value.code == "reauthorization_required"
    assert len(provider_server.calls) - before == 1
    credential = default_store().get_credential(credential_id)
    assert credential and credential.state == CredentialState.REAUTHORIZATION_REQUIRED
    actions = [e["action"] for e in connections.list_audit(A, credential_id, 50, None)[0]]
    assert actions.count("reauthorization_required") == 1


def test_o8_invalid_grant_makes_one_state_change_and_one_event(
    aws_env: Any, provider_server: FakeAuthorizationServer, delivered_events: Any
) -> None:
    """O8: invalid_grant in the renewal jobs, three runs → one refresh call, one state change, one event with a
    reauthorize link, and the credential leaves the due index."""
    credential_id = connected_credential(provider_server)
    expire_access_token(credential_id)
    provider_server.error = "invalid_grant"
    for _ in range(3):
        run_jobs(aws_env)
    credential = default_store().get_credential(credential_id)
    assert credential and credential.state == CredentialState.REAUTHORIZATION_REQUIRED
    assert [c["grant_type"] for c in provider_server.calls].count("refresh_token") == 1
    required = [e for e in delivered_events() if e["detail-type"] == "credential.reauthorization_required"]
    assert len(required) == 1
    detail = required[0]["detail"]
    assert detail["reauthorizeLink"].startswith("https://connect.example.test/connect?id=lnk_")
    link = links.get_link(A, detail["reauthorizeLinkId"])
    assert link.bound_credential_id == credential_id and link.status == LinkStatus.WAITING
    assert credential_id not in {i["pk"]["S"].removeprefix("CRED#") for i in due_items(aws_env)}


# --- O9: no open redirect ---------------------------------------------------------------------------------------


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
    """O9: a return URL whose origin is not exactly an allow-listed one is refused, and nothing is written."""
    allow_redirects_to("https://app.example.com")
    before = len(table_items())
    with pytest.raises((errors.UnprocessableEntity, ValueError)):
        new_link(redirectUrl=url)
    assert len(table_items()) == before


# --- O10: the pages around the flow -------------------------------------------------------------------------------


@pytest.mark.parametrize("text", every_page())
def test_no_page_carries_script_handlers_or_third_party_urls(text: str) -> None:
    """O10: given any page, then there is no script, no on* attribute, no style attribute and no absolute URL;
    every href/action stays on this origin."""
    page = Page(text)
    assert "<script" not in text.lower()
    assert not [name for _, attrs in page.tags for name in attrs if name.startswith("on") or name == "style"]
    assert not re.search(r"https?://|//[a-z]", text, re.I)
    targets = [attrs[key] for _, attrs in page.tags for key in ("href", "src", "action") if key in attrs]
    assert all(target.startswith(("/connect", "#")) for target in targets)


def test_security_headers_are_exactly_the_agreed_set() -> None:
    """O10: given the headers, then they are these and only these."""
    headers = pages.security_headers()
    assert headers.pop("Content-Security-Policy")
    assert headers == {
        "Content-Type": "text/html; charset=utf-8",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-store",
        "Pragma": "no-cache",
        "X-Frame-Options": "DENY",
        "X-Content-Type-Options": "nosniff",
        "Cross-Origin-Opener-Policy": "same-origin",
    }


def test_the_connect_page_for_an_oauth_partner_allows_its_authorization_server(provider_server: Any) -> None:
    """O10 and CSP: the page's form-action admits the partner's authorize origin (Chrome checks redirects)."""
    link, token = links.create_link(A, CreateLinkRequest(partnerId=PARTNER_ID, title="Fake CRM"))
    page = call("connect_page", event("connect_get", query={"id": link.id, "token": token}))
    origin = providers.find(PARTNER_ID).base_url  # type: ignore[union-attr]
    assert f"form-action 'self' {origin}" in page["headers"]["Content-Security-Policy"]
    assert 'action="/connect/oauth/start"' in page["body"]


def test_o10_the_callback_303s_to_a_clean_url_with_strict_headers(provider_server: Any) -> None:
    """O10: the callback (which carries code and state) answers 303 to a clean URL, with no-referrer and
    no-store."""
    _, query = start_flow()
    evt = event(
        "connect_get", query={"code": "c", "state": query["state"][0], "iss": providers.find(PARTNER_ID).oauth.issuer}
    )  # type: ignore[union-attr]
    evt["routeKey"] = evt["requestContext"]["routeKey"] = "GET /oauth/callback"
    evt["rawPath"] = evt["requestContext"]["http"]["path"] = "/oauth/callback"
    answer = call("oauth_callback", evt)
    headers = answer["headers"]
    assert answer["statusCode"] == 303
    assert headers["Location"] == f"https://connect.example.test/connect/done?partner={PARTNER_ID}"
    assert headers["Referrer-Policy"] == "no-referrer" and headers["Cache-Control"] == "no-store"


# --- O11: no secret in any log ------------------------------------------------------------------------------------

# The loggers grantlink.observability pins to WARNING. Two of them print secrets if someone turns them up to DEBUG
# (found by the sweep below): that is why they are pinned, and why the pin must hold whatever the service's log
# level is. The others are quiet even at DEBUG, which the sweep proves by turning them up.
MUST_STAY_PINNED = {
    "botocore": "botocore at DEBUG prints DynamoDB and EventBridge request and response bodies: the pending OAuth "
    "flow item's code_verifier (stored until the callback) and the reauthorization event's link, token included",
    "requests_oauthlib": "requests-oauthlib at DEBUG prints the token request and its answer: the authorization "
    "code, code_verifier and client secret, and the access and refresh tokens",
    "oauthlib": "oauthlib's OAuth 1.0a client at DEBUG prints each signature base string: the request token, the "
    "verifier and the access token (oauth_token) of every signed call",
}
QUIET_AT_DEBUG = tuple(name for name in observability.NOISY_LOGGERS if name not in MUST_STAY_PINNED)


def test_o11_the_loggers_that_would_print_secrets_stay_pinned_when_the_service_logs_at_debug(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """O11: with the service at DEBUG (POWERTOOLS_LOG_LEVEL, the root logger), botocore and requests-oauthlib —
    and every other library grantlink pins — still log nothing below WARNING."""
    monkeypatch.setenv("POWERTOOLS_LOG_LEVEL", "DEBUG")
    root = logging.getLogger()
    monkeypatch.setattr(root, "level", logging.DEBUG)
    observability.pin_noisy_loggers()
    from aws_lambda_powertools import Logger

    Logger(service="o11-check")  # a Powertools logger built at DEBUG does not unpin them
    assert set(MUST_STAY_PINNED) <= set(observability.NOISY_LOGGERS)
    for name in observability.NOISY_LOGGERS:
        assert logging.getLogger(name).getEffectiveLevel() == logging.WARNING, name
    for name in ("botocore.endpoint", "botocore.parsers", "requests_oauthlib.oauth2_session", "oauthlib.oauth2"):
        assert not logging.getLogger(name).isEnabledFor(logging.INFO), name


@pytest.mark.parametrize(
    "turned_up",
    [
        pytest.param((), id="pinned-loggers-as-pinned"),
        pytest.param(QUIET_AT_DEBUG, id="+".join(QUIET_AT_DEBUG) + "-at-debug"),
    ],
)
def test_o11_no_secret_reaches_any_log_even_at_debug(
    provider_server: FakeAuthorizationServer,
    aws_env: Any,
    delivered_events: Any,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    turned_up: tuple[str, ...],
) -> None:
    """O11: with POWERTOOLS_LOG_LEVEL, the grantlink logger and the root logger at DEBUG (and, case by case, the
    loggers grantlink pins to WARNING turned up too), every flow runs — API key through the authorizer, share
    links, the connect page for API-key and basic partners, the credentials API, a connection test, an OAuth
    client, start, callback and refresh, the renewal sweep and worker, a reauthorization — and nothing written to
    stdout or stderr, nor any log record, holds the API key, a link token, a submitted api_key or password, the
    OAuth client secret, the authorization code, state or code_verifier, or an access or refresh token. Nor does
    any X-Ray trace document (tests/xray.py: handler, AWS call and partner call subsegments, as deployed)."""
    monkeypatch.setenv("POWERTOOLS_LOG_LEVEL", "DEBUG")
    caplog.set_level(logging.DEBUG)  # the root logger; restored afterwards
    caplog.set_level(logging.DEBUG, logger=observability.SERVICE)
    for name in turned_up:
        caplog.set_level(logging.DEBUG, logger=name)
    for handler in logging.getLogger(observability.SERVICE).handlers:  # Powertools' own JSON lines, to capfd
        if isinstance(handler, logging.StreamHandler):
            monkeypatch.setattr(handler, "stream", sys.stdout)

    with recording_traces() as traces:  # X-Ray on, as deployed: every document it would send to the daemon
        seen, _ = run_every_flow(provider_server, aws_env, delivered_events)

    written = capfd.readouterr()
    records = [(record.name, f"{record.getMessage()} {vars(record)!r}") for record in caplog.records]
    emitted = {name.split(".")[0] for name, _ in records}
    assert {observability.SERVICE, "aws_lambda_powertools"} <= emitted  # DEBUG was really on …
    assert not turned_up or emitted & set(turned_up)  # … for the loggers turned up too
    assert f'"service":"{observability.SERVICE}"' in written.out.replace(" ", "")  # and the JSON lines captured
    everything = "\n".join([written.out, written.err, caplog.text, *(line for _, line in records)])
    leaks = seen.found_in(everything)
    sources = {leak: sorted({name for name, line in records if leak.split(": ", 1)[1] in line}) for leak in leaks}
    assert leaks == [], f"secrets in the logs (kind: value → loggers): {sources}"
    traced = "\n".join(traces)  # handler, AWS call and partner call subsegments were all sent …
    assert all(f'"{part}"' in traced for part in ("## lambda_handler", "aws", "remote")), traced[:500]
    assert seen.found_in(traced) == [], "secrets in the X-Ray trace documents"  # … and hold no secret


def test_printed_events_carry_no_link_token() -> None:
    """O11: a reauthorization event carries a ready-to-send link; the log shows its id, never its token."""
    link = "http://127.0.0.1:3000/connect?id=lnk_1&token=Xk3secretsecretsecret"
    event = {"detail-type": "credential.reauthorization_required", "detail": {"reauthorizeLink": link}}
    shown = jobs.printable(event)["detail"]["reauthorizeLink"]
    assert shown == "http://127.0.0.1:3000/connect?id=lnk_1&token=***"


# --- over HTTP against the local stack --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def short_ttl_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A second local stack whose access tokens live 60 s, inside the 900 s renewal window: every read of the
    secret has to refresh first."""
    folder = tmp_path_factory.mktemp("short-ttl-stack")
    state_file, log_file = folder / "stack.json", folder / "stack.log"
    process = start_stack(
        state_file, log_file, {"GRANTLINK_DEMO_TOKEN_TTL": "60", "GRANTLINK_RENEW_BEFORE_SECONDS": "900"}
    )
    try:
        state = json.loads(state_file.read_text())
        state.update(stateFile=str(state_file), log=str(log_file))
        yield state
    finally:
        stop_stack(process)


@pytest.mark.integration
def test_o1_replayed_missing_and_made_up_state_are_refused_before_any_token_call(stack: dict[str, Any]) -> None:
    """O1: given a flow completed once (one code exchange),
    when the very same callback URL is replayed, and callbacks come without state and with a made-up state,
    then each answers a 400 page, and the token endpoint saw none of them: a later flow that makes exactly one
    code exchange moves the count by exactly one."""
    before = token_requests(stack, CODE)
    link = new_oauth_link(stack, "O1 replay")
    callback_url = approve(stack, start(stack, link).headers["Location"])
    assert http.get(callback_url, allow_redirects=False).status_code == 303
    after_first = settled(stack, CODE, before + 1)
    assert after_first == before + 1

    back = query(callback_url)
    replayed = http.get(callback_url, allow_redirects=False)
    no_state = http.get(
        url(stack, "/oauth/callback?" + urlencode({"code": back["code"], "iss": back["iss"]})), allow_redirects=False
    )
    made_up = http.get(
        url(stack, "/oauth/callback?" + urlencode({**back, "state": "x" * 43})), allow_redirects=False
    )  # fmt: skip
    for answer in (replayed, no_state, made_up):
        assert answer.status_code == 400, (answer.status_code, answer.text)
        assert "Location" not in answer.headers
        assert answer.headers["Cache-Control"] == "no-store"
    assert "already used" in text(replayed)
    assert "incomplete" in text(no_state)
    assert "already used" in text(made_up)
    assert token_requests(stack, CODE) == after_first
    assert link_status(stack, link["id"])["status"] == 1  # the replay changed nothing

    connect_over_http(stack, "O1 barrier")  # exactly one more code exchange, counted after the three rejections
    assert settled(stack, CODE, after_first + 1) == after_first + 1


@pytest.mark.integration
def test_o4_a_forged_host_does_not_change_the_redirect_uri(stack: dict[str, Any]) -> None:
    """O4: given a 9003 link,
    when the OAuth form is posted with `Host: evil.example` and `X-Forwarded-Host`/`X-Forwarded-Proto` headers,
    then the authorize URL's redirect_uri is still the configured {apiUrl}/oauth/callback; and a callback sent
    with the same forged headers still lands on {apiUrl}/connect/done."""
    forged = {"Host": "evil.example", "X-Forwarded-Host": "evil.example", "X-Forwarded-Proto": "https"}
    link = new_oauth_link(stack, "O4 forged host")

    started = start(stack, link, headers=forged)
    location = started.headers["Location"]
    assert query(location)["redirect_uri"] == url(stack, "/oauth/callback")
    assert "evil.example" not in location
    assert urlsplit(location).netloc == urlsplit(stack["oauthIssuer"]).netloc

    callback_url = approve(stack, location)
    assert callback_url.startswith(url(stack, "/oauth/callback?"))
    callback = http.get(callback_url, headers=forged, allow_redirects=False)
    assert callback.status_code == 303, callback.text
    assert callback.headers["Location"] == url(stack, f"/connect/done?partner={DEMO_OAUTH}")


@pytest.mark.integration
def test_o6_ten_concurrent_reads_make_one_refresh(short_ttl_stack: dict[str, Any]) -> None:
    """O6: given a 9003 credential whose access token expires in 60 s (renewal window 900 s),
    when 10 GET /credentials/{id}/secret are fired at once,
    then all 10 answer 200 with the same access token and the token endpoint saw exactly ONE refresh_token
    request (one "refreshed" audit entry); and one more read then makes exactly one more refresh."""
    stack = short_ttl_stack
    _, credential_id = connect_over_http(stack, "O6 single flight")
    meta = http.get(url(stack, f"/credentials/{credential_id}"), headers=auth(stack)).json()["data"]
    assert meta["accessExpiresAt"] and meta["lastRefreshedAt"] is None
    before = token_requests(stack, REFRESH)

    answers = secrets_at_once(stack, credential_id)
    assert [a.status_code for a in answers] == [200] * 10, [(a.status_code, a.text) for a in answers]
    tokens = {a.json()["data"]["fields"]["accessToken"] for a in answers}
    assert len(tokens) == 1 and next(iter(tokens))
    assert all("refreshToken" not in a.json()["data"]["fields"] for a in answers)
    after_burst = settled(stack, REFRESH, before + 1)
    assert after_burst == before + 1, f"{after_burst - before} refresh_token requests for 10 concurrent reads"
    audit = http.get(url(stack, f"/credentials/{credential_id}/audit"), headers=auth(stack)).json()["data"]
    assert [e["action"] for e in audit].count("refreshed") == 1

    again = secret(stack, credential_id)
    assert again.status_code == 200, again.text
    assert again.json()["data"]["fields"]["accessToken"]
    assert settled(stack, REFRESH, after_burst + 1) == after_burst + 1  # also proves the burst made only one
    refreshed = http.get(url(stack, f"/credentials/{credential_id}"), headers=auth(stack)).json()["data"]
    assert refreshed["lastRefreshedAt"] and refreshed["state"] == "active"


@pytest.mark.integration
def test_redirect_allow_list_is_managed_with_make_redirects(stack: dict[str, Any]) -> None:
    """O9 over HTTP: a redirect is refused until the tenant allows its origin (`make redirects`); then the
    customer lands there with status and credentialId."""
    tenant_id, key = new_tenant_and_id(stack, "redirecting")
    body = {"partnerId": 9001, "title": "r", "redirectUrl": "https://app.example.com/done"}
    refused = http.post(url(stack, LINKS), json=body, headers=auth(stack, key))
    assert (refused.status_code, refused.json()["error"]["code"]) == (422, "redirect_not_allowed")
    subprocess.run(
        [sys.executable, "-m", "infra.scripts.tenant", "--tenant-id", tenant_id, "--redirects",
         "https://app.example.com", "--state-file", stack["stateFile"]],
        cwd=ROOT, check=True, capture_output=True,
    )  # fmt: skip
    link = http.post(url(stack, LINKS), json=body, headers=auth(stack, key)).json()["data"]
    form = {"id": link["id"], "token": link["token"], "f_apiKey": "k-123"}
    done = http.post(url(stack, "/connect"), data=form, allow_redirects=False)
    assert done.status_code == 303
    assert done.headers["location"].startswith("https://app.example.com/done?status=1&credentialId=crd_")


@pytest.mark.integration
def test_o10_pages_send_strict_headers(stack: dict[str, Any]) -> None:
    """O10 over HTTP: the connect page sends no-referrer, no-store, DENY and a CSP without 'unsafe-inline', and
    loads nothing from another origin."""
    page = http.get(new_link_over_http(stack)["link"])
    headers = page.headers
    assert headers["referrer-policy"] == "no-referrer"
    assert headers["cache-control"] == "no-store"
    assert headers["x-frame-options"] == "DENY"
    policy = headers["content-security-policy"]
    assert "default-src 'none'" in policy and "frame-ancestors 'none'" in policy and "unsafe-inline" not in policy
    assert "http" not in page.text.split("<body", 1)[1].replace(stack["apiUrl"], "")


@pytest.mark.integration
def test_o11_no_secret_reaches_the_stack_logs(stack: dict[str, Any], short_ttl_stack: dict[str, Any]) -> None:
    """O11: given full flows on both stacks (and on the short-TTL one, a read that refreshes), plus whatever the
    tests before it saw (link tokens, states, PKCE verifiers, codes, access tokens: tests/oauth_http.py notes
    them),
    when each stack's whole log (its stdout and stderr) is read,
    then none of those values appears, nor the OAuth client secret, nor a customer's client secret (client
    credentials), nor the stack's API key — except the demo key in the start-up banner (`API key: …`), which
    `make run` prints on purpose for the developer."""
    for each in (stack, short_ttl_stack):
        _, credential_id = connect_over_http(each, "O11 logs")
        # A sandbox link (the second demo OAuth server), asking for a scope that server does not grant; refreshed.
        _, sandboxed = connect_over_http(each, "O11 sandbox", environment="sandbox", scopes=["openid", "demo:write"])
        assert token(each, sandboxed, force=True).status_code == 200
        assert secret(each, credential_id).status_code == 200  # on the short-TTL stack: a refresh
        assert token(each, credential_id, force=True).status_code == 200  # the token endpoint, refreshing
        proxied = http.get(url(each, f"/credentials/{credential_id}/proxy/v1/me"), headers=auth(each))
        assert proxied.status_code == 200 and proxied.json()["auth"]["kind"] == "bearer", proxied.text
        # OAuth 2.0 client credentials: the customer's client secret typed into the form, a token minted on demand.
        _, machine = connect_client_credentials(each, "o11-machine-secret-" + Path(each["log"]).parent.name)
        assert token(each, machine, force=True).status_code == 200
        saw(each, "API key", each["apiKey"])
        saw(each, "client secret", CLIENT_SECRET)
    assert settled(short_ttl_stack, REFRESH, 1) >= 1

    leaks = []
    for each in (stack, short_ttl_stack):
        log_file = Path(each["log"])
        banner = f"  API key:      {each['apiKey']}"
        lines = [line for line in log_file.read_text(errors="replace").splitlines() if line != banner]
        seen = SEEN[each["log"]]
        assert set(seen) == KINDS, sorted(seen)  # every kind was collected: the search is not vacuous
        for kind, values in sorted(seen.items()):
            assert all(len(v) >= 8 for v in values), kind  # long enough that a match is not a coincidence
            found = {v: next((line for line in lines if v in line), None) for v in values}
            if hits := [line for line in found.values() if line is not None]:
                leaks.append(f"{kind}: {len(hits)} of {len(values)} in {log_file.parent.name}, e.g. {hits[0][:240]}")
    assert leaks == [], "secrets in the stack logs:\n" + "\n".join(leaks)
