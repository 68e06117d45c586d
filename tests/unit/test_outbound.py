"""The one outbound door (grantlink.outbound) and the OAuth token calls that now go through it (issue 10).

Real servers on 127.0.0.1: a plain http pytest-httpserver, and an https one whose certificate a private CA made
at test time signs (tests/tls.py).
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import SecretStr
from pytest_httpserver import HTTPServer
from werkzeug import Response

from grantlink import config, errors, oauth, outbound
from grantlink.oauth_apps import OAuthApp
from grantlink.providers import Provider
from tests.tls import TLSFiles, https_server, make_ca_and_cert

TOKENS = {"access_token": "access-2", "refresh_token": "refresh-2", "token_type": "Bearer", "expires_in": 3600}
APP = OAuthApp(
    source="operator", partner_id=7801, client_id="client-1", scopes=None, date_updated="2026-01-01T00:00:00Z",
    operator_secret=SecretStr("client-secret"),
)  # fmt: skip


@pytest.fixture(autouse=True)
def env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("GRANTLINK_TABLE", "grantlink-test")
    for name in ("CA_BUNDLE", "ALLOW_PRIVATE_TARGETS", "TOKEN_DEADLINE_SECONDS", "TEST_READ_TIMEOUT"):
        monkeypatch.delenv(f"GRANTLINK_{name}", raising=False)
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    config.reset()
    yield
    config.reset()


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TLSFiles:
    return make_ca_and_cert(tmp_path_factory.mktemp("private-ca"), hosts=("127.0.0.1", "localhost", "rebind.test"))


@pytest.fixture
def secure(tls: TLSFiles) -> Iterator[HTTPServer]:
    with https_server(tls) as server:
        yield server


def settings(monkeypatch: pytest.MonkeyPatch, **values: str) -> None:
    for name, value in values.items():
        monkeypatch.setenv(f"GRANTLINK_{name}", value)
    config.reset()


def partner(token_url: str) -> Provider:
    return Provider.model_validate(
        {
            "id": APP.partner_id, "slug": "strict", "name": "Strict", "authType": "oauth2",
            "docsUrl": "https://docs.strict.test", "description": "An OAuth partner.", "fields": [],
            "baseUrl": "https://api.strict.test", "auth": {"in": "bearer", "value": "{accessToken}"},
            "test": {"method": "GET", "path": "/me", "expectStatus": [200]},
            "oauth": {"authorizeUrl": "https://auth.strict.test/authorize", "tokenUrl": token_url, "scopes": ["read"],
                      "pkce": True, "clientAuth": "basic"},
        },
        context={"allow_http": True},
    )  # fmt: skip


def refresh(token_url: str) -> dict[str, Any]:
    return oauth._refresh_call(partner(token_url), APP, {"refreshToken": "refresh-1"})


# --- the CA bundle ----------------------------------------------------------------------------------------


def test_a_refresh_against_a_private_ca_token_endpoint_works_with_the_bundle(
    secure: HTTPServer, tls: TLSFiles, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Given a token endpoint on https signed by a private CA and GRANTLINK_CA_BUNDLE naming that CA,
    when a refresh is made,
    then it succeeds with the endpoint's tokens."""
    settings(monkeypatch, CA_BUNDLE=str(tls.ca_cert), ALLOW_PRIVATE_TARGETS="true")
    secure.expect_request("/token", method="POST").respond_with_json(TOKENS)

    token = refresh(secure.url_for("/token"))

    assert (token["access_token"], token["refresh_token"]) == ("access-2", "refresh-2")


# --- redirects --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [302, 307])
def test_a_redirect_from_the_token_endpoint_is_not_followed_and_is_transient(
    secure: HTTPServer, httpserver: HTTPServer, tls: TLSFiles, monkeypatch: pytest.MonkeyPatch, status: int
) -> None:
    """Given a token endpoint that answers a redirect (with a token-looking body) to another server that would
    hand out tokens,
    when a refresh is made,
    then the other server sees no request and the refresh is a transient failure (not tokens, not a refusal)."""
    settings(monkeypatch, CA_BUNDLE=str(tls.ca_cert), ALLOW_PRIVATE_TARGETS="true")
    httpserver.expect_request("/elsewhere").respond_with_json(TOKENS)
    moved = Response(json.dumps(TOKENS), status, headers={"Location": httpserver.url_for("/elsewhere")})
    secure.expect_request("/token", method="POST").respond_with_response(moved)

    with pytest.raises(errors.ServiceUnavailable):
        refresh(secure.url_for("/token"))

    assert httpserver.log == []
    assert len(secure.log) == 1


def test_a_redirect_from_the_token_endpoint_fails_the_code_exchange(
    secure: HTTPServer, httpserver: HTTPServer, tls: TLSFiles, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Given a token endpoint that redirects the authorization-code exchange elsewhere,
    when the code is exchanged,
    then the exchange fails as a redirect and the other server sees nothing (the code is not replayed there)."""
    settings(monkeypatch, CA_BUNDLE=str(tls.ca_cert), ALLOW_PRIVATE_TARGETS="true")
    httpserver.expect_request("/elsewhere").respond_with_json(TOKENS)
    moved = Response("", 307, headers={"Location": httpserver.url_for("/elsewhere")})
    secure.expect_request("/token", method="POST").respond_with_response(moved)

    with pytest.raises(outbound.OutboundError) as failure:
        oauth.exchange_code(partner(secure.url_for("/token")), APP, "code-1", "v" * 43, "https://cb.test/cb", {})

    assert failure.value.kind == "redirected"
    assert httpserver.log == []


# --- private addresses ------------------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_a_token_url_on_a_private_address_is_refused_before_any_request(
    secure: HTTPServer, tls: TLSFiles, monkeypatch: pytest.MonkeyPatch, host: str
) -> None:
    """Given private targets are not allowed and a token URL whose host is (or resolves to) loopback, on a
    server the client would otherwise trust,
    when a refresh is made,
    then it is a transient failure and the server never receives a request."""
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(tls.ca_cert))
    settings(monkeypatch, ALLOW_PRIVATE_TARGETS="false")
    secure.expect_request("/token", method="POST").respond_with_json(TOKENS)

    with pytest.raises(errors.ServiceUnavailable) as failure:
        refresh(f"https://{host}:{secure.port}/token")

    assert isinstance(failure.value.__cause__, outbound.OutboundError)
    assert failure.value.__cause__.kind == "not_allowed"
    assert secure.log == []


# --- the overall deadline ---------------------------------------------------------------------------------


def test_a_token_endpoint_trickling_its_body_ends_within_the_deadline(
    httpserver: HTTPServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Given a token endpoint that sends a byte of body every 50 ms for 10 s (each wait far under the read
    timeout) and a token deadline of 1 s,
    when a refresh is made,
    then it fails as transient well before the endpoint would have finished."""
    settings(monkeypatch, ALLOW_PRIVATE_TARGETS="true", TOKEN_DEADLINE_SECONDS="1", TEST_READ_TIMEOUT="0.5")

    def trickle() -> Iterator[bytes]:
        for _ in range(200):
            yield b" "
            time.sleep(0.05)  # the slow partner's pace, not a wait in the test
        yield json.dumps(TOKENS).encode()

    httpserver.expect_request("/token").respond_with_response(Response(trickle(), content_type="application/json"))
    started = time.monotonic()

    with pytest.raises(errors.ServiceUnavailable) as failure:
        refresh(httpserver.url_for("/token"))

    assert time.monotonic() - started < 2.5
    assert getattr(failure.value.__cause__, "kind", None) == "deadline"


def test_a_partner_trickling_its_headers_is_cut_at_the_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Given a server that accepts the request and then sends its status line a byte every 50 ms (each wait far
    under the read timeout),
    when a call is sent with a 1 s deadline,
    then it ends as a deadline failure in well under the time the headers would take."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        import threading

        def serve() -> None:
            connection, _ = listener.accept()
            with connection:
                connection.recv(65536)
                for byte in b"HTTP/1.1 200 OK\r\nX-Slow: " + b"a" * 200:
                    try:
                        connection.sendall(bytes([byte]))
                    except OSError:
                        return
                    time.sleep(0.05)  # the slow partner's pace, not a wait in the test

        threading.Thread(target=serve, daemon=True).start()
        limits = outbound.limits(allow_private=True, connect=0.5, read=0.5, deadline=1.0)
        started = time.monotonic()

        with pytest.raises(outbound.OutboundError) as failure:
            outbound.send("GET", f"http://127.0.0.1:{port}/", limits)

    assert failure.value.kind == "deadline"
    assert time.monotonic() - started < 2.5


# --- DNS rebinding ----------------------------------------------------------------------------------------


def test_the_connection_goes_to_the_address_that_was_checked(
    secure: HTTPServer, tls: TLSFiles, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Given a host name whose first DNS answer passed the guard and whose later answers fail (a rebinding
    DNS server would answer differently), with the server's certificate valid only for that name,
    when a call is sent,
    then it reaches the checked address, with SNI, Host and certificate verification for the name."""
    answers: list[str] = []
    real_getaddrinfo = socket.getaddrinfo

    def resolve_once(host: str, port: int, *args: Any, **kwargs: Any) -> list[Any]:
        if host != "rebind.test":
            return real_getaddrinfo(host, port, *args, **kwargs)  # an address literal: nothing to look up
        answers.append(host)
        if len(answers) > 1:
            raise socket.gaierror(socket.EAI_NONAME, "a second answer would go elsewhere")
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]

    monkeypatch.setattr(socket, "getaddrinfo", resolve_once)
    monkeypatch.setattr(outbound, "public", lambda address: True)  # let the test's 127.0.0.1 stand for a public one
    secure.expect_request("/me", headers={"Host": f"rebind.test:{secure.port}"}).respond_with_json({"ok": True})
    limits = outbound.limits(allow_private=False, connect=1.0, read=2.0)
    limits = outbound.Limits(limits.connect, limits.read, limits.deadline, False, str(tls.ca_cert))

    answer = outbound.send("GET", f"https://rebind.test:{secure.port}/me", limits)

    assert (answer.status, json.loads(answer.body or b"")) == (200, {"ok": True})
    assert answers == ["rebind.test"]


def test_the_refresh_lease_outlasts_the_longest_token_deadline_allowed() -> None:
    """Given the largest GRANTLINK_TOKEN_DEADLINE_SECONDS the settings accept,
    then the refresh lease is longer, so no token call can outlive the lease that guards it."""
    allowed = config.Settings.model_fields["token_deadline_seconds"].metadata
    longest = max(float(getattr(rule, "le", 0)) for rule in allowed)

    assert longest > 0
    assert longest < oauth.LEASE_SECONDS
