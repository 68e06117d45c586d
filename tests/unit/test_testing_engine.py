"""The connection-test engine: one catalogue-declared request against a real HTTP server, sorted into categories."""

from __future__ import annotations

import base64
import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from email.utils import format_datetime
from types import SimpleNamespace
from typing import Any

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from grantlink import config, errors, testing
from grantlink.providers import Provider
from grantlink.testing import CATEGORIES, NOT_ALLOWED, CheckResult, check_credential
from tests.helpers import FrozenClock

SECRET = "sk_test_Zx9kQ-never-log-me"
PUBLIC_IP = "93.184.215.14"


@pytest.fixture(autouse=True)
def env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("GRANTLINK_TABLE", "grantlink-test")
    for name in ("ALLOW_PRIVATE_TARGETS", "TEST_CONNECT_TIMEOUT", "TEST_READ_TIMEOUT"):
        monkeypatch.delenv(f"GRANTLINK_{name}", raising=False)
    config.reset()
    yield
    config.reset()


@pytest.fixture(autouse=True)
def no_secret_in_logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """Every test runs with DEBUG logging captured; none may log the secret anywhere in a record."""
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="grantlink")
    yield caplog
    # The fake provider's own access log (werkzeug) prints query strings; it is the provider, not us.
    records = caplog.get_records("setup") + caplog.get_records("call")
    ours = [record for record in records if not record.name.startswith("werkzeug")]
    assert not [record for record in ours if SECRET in json.dumps(vars(record), default=str)]


def make_provider(base_url: str, **changes: Any) -> Provider:
    """A provider whose test request goes to `base_url`; `changes` replace top-level keys (camelCase)."""
    document: dict[str, Any] = {
        "id": 501,
        "slug": "acme",
        "name": "Acme",
        "authType": "api_key",
        "docsUrl": "https://docs.acme.test/auth",
        "description": "A provider for tests.",
        "fields": [field("apiKey", secret=True)],
        "baseUrl": base_url,
        "auth": {"in": "header", "header": "X-Api-Key", "value": "{apiKey}"},
        "test": {"method": "GET", "path": "/me", "expectStatus": [200], "accountName": "account.name"},
    }
    document.update(changes)
    return Provider.model_validate(document, context={"allow_http": True})


def field(name: str, *, secret: bool = False, pattern: str | None = None) -> dict[str, Any]:
    return {
        "name": name,
        "label": name.title(),
        "help": "Help.",
        "secret": secret,
        "pattern": pattern,
        "required": True,
    }


def check(provider: Provider, values: dict[str, str] | None = None, **options: Any) -> CheckResult:
    """check_credential with the local server allowed; the secret never appears in what comes back."""
    options.setdefault("allow_private", True)
    result = check_credential(provider, {"apiKey": SECRET} if values is None else values, **options)
    assert SECRET not in json.dumps(result.to_api())
    assert result.category in CATEGORIES
    return result


@pytest.fixture
def base(httpserver: HTTPServer) -> str:
    return httpserver.url_for("").rstrip("/")


@pytest.fixture
def acme(base: str) -> Provider:
    return make_provider(base)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def resolve_to(monkeypatch: pytest.MonkeyPatch, *addresses: str) -> None:
    def getaddrinfo(host: str, port: int, *args: Any, **kwargs: Any) -> list[Any]:
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port)) for address in addresses]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


class NoNetwork:
    """A session that fails the test if a request is ever sent."""

    def request(self, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError("no request may be sent")


# --- ok ---------------------------------------------------------------------------------------------------


def test_ok_reads_the_account_name_from_a_nested_path(
    httpserver: HTTPServer, acme: Provider, clock: FrozenClock
) -> None:
    # Given a provider that accepts the key and names the account
    httpserver.expect_request("/me", headers={"X-Api-Key": SECRET}).respond_with_json({"account": {"name": "Acme Ltd"}})

    # When the credential is tested
    result = check(acme)

    # Then it is ok, with the account name, and the camelCase view carries every field
    api = result.to_api()
    assert api == {
        "ok": True,
        "category": "ok",
        "httpStatus": 200,
        "latencyMs": result.latency_ms,
        "message": "Acme accepted these credentials.",
        "accountName": "Acme Ltd",
        "testedAt": "2026-11-22T10:00:00Z",
    }
    assert 0 <= result.latency_ms < 2000
    request, _ = httpserver.log[0]
    assert request.headers["Accept"] == "application/json"
    assert request.headers["User-Agent"] == "grantlink/0.1"


def test_ok_reads_the_account_name_through_a_list_index(httpserver: HTTPServer, base: str) -> None:
    provider = make_provider(
        base,
        auth={"in": "bearer", "value": "{apiKey}"},
        test={"method": "GET", "path": "/connections", "accountName": "0.tenantName"},
    )
    httpserver.expect_request("/connections").respond_with_json([{"tenantName": "Org One"}, {"tenantName": "Two"}])

    result = check(provider)

    assert (result.category, result.account_name) == ("ok", "Org One")
    assert httpserver.log[0][0].headers["Authorization"] == f"Bearer {SECRET}"


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"account": {"name": 12345}}, "12345"),
        ({"account": {"name": "x" * 500}}, "x" * 200),
        ({"account": {}}, None),
        ({"account": {"name": None}}, None),
        ({"account": {"name": {"first": "A"}}}, None),
        ([], None),
    ],
)
def test_account_name_is_a_short_string_or_none(
    httpserver: HTTPServer, acme: Provider, body: Any, expected: str | None
) -> None:
    httpserver.expect_request("/me").respond_with_json(body)

    result = check(acme)

    assert (result.category, result.account_name) == ("ok", expected)


def test_ok_without_an_account_path_does_not_need_json(httpserver: HTTPServer, base: str) -> None:
    provider = make_provider(base, test={"method": "GET", "path": "/me", "expectStatus": [200, 204]})
    httpserver.expect_request("/me").respond_with_data("", status=204)

    result = check(provider)

    assert (result.ok, result.category, result.http_status, result.account_name) == (True, "ok", 204, None)


# --- where the credential goes ----------------------------------------------------------------------------


def test_query_auth_puts_the_key_in_the_declared_parameter(httpserver: HTTPServer, base: str) -> None:
    provider = make_provider(base, auth={"in": "query", "param": "api_key", "value": "{apiKey}"})
    httpserver.expect_request("/me", query_string={"api_key": SECRET}).respond_with_json({"account": {"name": "Q"}})

    assert check(provider).account_name == "Q"
    assert "X-Api-Key" not in httpserver.log[0][0].headers


def test_basic_auth_renders_username_and_password_templates(httpserver: HTTPServer, base: str) -> None:
    provider = make_provider(
        base,
        authType="basic",
        fields=[field("email"), field("apiToken", secret=True)],
        auth={"in": "basic", "username": "{email}/token", "password": "{apiToken}"},
    )
    httpserver.expect_request("/me").respond_with_json({"account": {"name": "Z"}})

    result = check(provider, {"email": "agent@acme.test", "apiToken": SECRET})

    assert result.ok
    scheme, encoded = httpserver.log[0][0].headers["Authorization"].split(" ")
    assert (scheme, base64.b64decode(encoded).decode()) == ("Basic", f"agent@acme.test/token:{SECRET}")


def test_a_value_cannot_inject_another_placeholder(httpserver: HTTPServer, base: str) -> None:
    provider = make_provider(
        base,
        fields=[field("account"), field("apiKey", secret=True)],
        auth={"in": "header", "header": "X-Auth", "value": "{account}:{apiKey}"},
    )
    httpserver.expect_request("/me").respond_with_json({"account": {"name": "Z"}})

    check(provider, {"account": "{apiKey}", "apiKey": SECRET})

    assert httpserver.log[0][0].headers["X-Auth"] == f"{{apiKey}}:{SECRET}"


def test_header_template_and_declared_headers_and_json_body_are_sent(httpserver: HTTPServer, base: str) -> None:
    provider = make_provider(
        base,
        auth={"in": "header", "header": "Authorization", "value": "Token token={apiKey}"},
        test={
            "method": "POST",
            "path": "/graphql",
            "headers": {"Acme-Version": "2026-01-01"},
            "body": {"query": "{ viewer { name } }"},
            "accountName": "data.viewer.name",
        },
    )
    httpserver.expect_request(
        "/graphql",
        method="POST",
        headers={"Authorization": f"Token token={SECRET}", "Acme-Version": "2026-01-01"},
        json={"query": "{ viewer { name } }"},
    ).respond_with_json({"data": {"viewer": {"name": "Ada"}}})

    assert check(provider).account_name == "Ada"


# --- failures the provider reports ------------------------------------------------------------------------


def test_401_is_invalid_credentials(httpserver: HTTPServer, acme: Provider) -> None:
    httpserver.expect_request("/me").respond_with_json({"message": f"bad key {SECRET}"}, status=401)

    result = check(acme)

    assert (result.ok, result.category, result.http_status) == (False, "invalid_credentials", 401)
    assert result.message == "Acme refused these credentials (HTTP 401)."
    assert result.account_name is None


@pytest.fixture
def slack_like(base: str) -> Provider:
    return make_provider(
        base,
        auth={"in": "bearer", "value": "{apiKey}"},
        test={
            "method": "GET",
            "path": "/auth.test",
            "errorWhen": {"path": "ok", "equals": False},
            "accountName": "team",
        },
    )


@pytest.mark.parametrize(
    ("error", "category"),
    [
        ("invalid_auth", "invalid_credentials"),
        ("token_revoked", "invalid_credentials"),
        ("missing_scope", "insufficient_permissions"),
        ("ratelimited_or_who_knows", "unexpected_response"),
    ],
)
def test_an_error_in_a_200_body_is_a_failure(
    httpserver: HTTPServer, slack_like: Provider, error: str, category: str
) -> None:
    httpserver.expect_request("/auth.test").respond_with_json({"ok": False, "error": error, "detail": "raw text"})

    result = check(slack_like)

    assert (result.ok, result.category, result.http_status, result.account_name) == (False, category, 200, None)
    assert "raw text" not in result.message
    assert (error in result.message) == (category != "unexpected_response")


def test_error_when_not_matching_is_ok(httpserver: HTTPServer, slack_like: Provider) -> None:
    httpserver.expect_request("/auth.test").respond_with_json({"ok": True, "team": "Workspace"})

    result = check(slack_like)

    assert (result.category, result.account_name) == ("ok", "Workspace")


def test_error_when_false_does_not_match_zero(httpserver: HTTPServer, slack_like: Provider) -> None:
    httpserver.expect_request("/auth.test").respond_with_json({"ok": 0, "team": "Workspace"})

    assert check(slack_like).category == "ok"


def test_403_is_insufficient_permissions(httpserver: HTTPServer, acme: Provider) -> None:
    httpserver.expect_request("/me").respond_with_data("forbidden", status=403)

    result = check(acme)

    assert (result.category, result.http_status) == ("insufficient_permissions", 403)


def test_429_is_rate_limited_and_says_when_to_retry(httpserver: HTTPServer, acme: Provider) -> None:
    httpserver.expect_request("/me").respond_with_data("slow down", status=429, headers={"Retry-After": "30"})

    result = check(acme)

    assert (result.category, result.http_status) == ("rate_limited", 429)
    assert "30 seconds" in result.message


def test_retry_after_as_an_http_date(httpserver: HTTPServer, acme: Provider, clock: FrozenClock) -> None:
    when = format_datetime(clock.moment + timedelta(minutes=2), usegmt=True)
    httpserver.expect_request("/me").respond_with_data("", status=429, headers={"Retry-After": when})

    assert "120 seconds" in check(acme).message


def test_429_without_retry_after(httpserver: HTTPServer, acme: Provider) -> None:
    httpserver.expect_request("/me").respond_with_data("", status=429)

    assert check(acme).message == "Acme is limiting requests (HTTP 429); try again later."


def test_5xx_is_provider_unavailable(httpserver: HTTPServer, acme: Provider) -> None:
    httpserver.expect_request("/me").respond_with_data("down", status=503)

    result = check(acme)

    assert (result.category, result.http_status) == ("provider_unavailable", 503)
    assert result.message == "Acme is unavailable right now (HTTP 503)."


# --- failures on the way ----------------------------------------------------------------------------------


def test_a_slow_provider_times_out_at_the_read_timeout(httpserver: HTTPServer, acme: Provider) -> None:
    release = threading.Event()

    def slow(request: Request) -> Response:
        release.wait(5)  # the fake provider stalls until the test is done with it
        return Response("{}", content_type="application/json")

    httpserver.expect_request("/me").respond_with_handler(slow)
    started = time.monotonic()
    try:
        result = check(acme, read_timeout=0.5)
    finally:
        release.set()

    assert time.monotonic() - started < 2
    assert (result.category, result.http_status) == ("timeout", None)
    assert result.message == "Acme did not answer within 0.5 seconds."


def test_a_closed_port_is_a_network_error() -> None:
    provider = make_provider(f"http://127.0.0.1:{closed_port()}")

    result = check(provider)

    assert (result.ok, result.category, result.http_status) == (False, "network_error", None)
    assert result.message == "Could not connect to Acme."


def test_a_loopback_address_is_refused_unless_private_targets_are_allowed(httpserver: HTTPServer) -> None:
    provider = make_provider(f"https://127.0.0.1:{httpserver.port}")

    result = check(provider, allow_private=False)

    assert (result.category, result.message) == ("network_error", NOT_ALLOWED)
    assert httpserver.log == []


def test_a_name_that_resolves_to_loopback_is_refused(httpserver: HTTPServer) -> None:
    provider = make_provider(f"https://localhost:{httpserver.port}")

    assert check(provider, allow_private=False).message == NOT_ALLOWED
    assert httpserver.log == []


UNSAFE_ADDRESSES = ["10.0.0.7", "169.254.169.254", "::1", "::ffff:127.0.0.1", "0.0.0.0", "100.64.0.1", "224.0.0.1"]  # noqa: S104


@pytest.mark.parametrize("private", UNSAFE_ADDRESSES)
def test_any_private_address_among_the_resolved_ones_is_refused(monkeypatch: pytest.MonkeyPatch, private: str) -> None:
    resolve_to(monkeypatch, PUBLIC_IP, private)
    provider = make_provider("https://api.acme.test")

    result = check(provider, allow_private=False, session=NoNetwork())

    assert (result.category, result.message) == ("network_error", NOT_ALLOWED)


def test_plain_http_is_refused_even_to_a_public_address(monkeypatch: pytest.MonkeyPatch) -> None:
    resolve_to(monkeypatch, PUBLIC_IP)
    provider = make_provider("http://api.acme.test")

    result = check(provider, allow_private=False, session=NoNetwork())

    assert (result.category, result.message) == ("network_error", NOT_ALLOWED)


def test_an_unknown_host_is_a_network_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args: Any, **kwargs: Any) -> Any:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", fail)

    result = check(make_provider("https://api.acme.test"), allow_private=False, session=NoNetwork())

    assert (result.category, result.message) == ("network_error", "Could not find the address of Acme.")


def test_private_targets_default_to_refused_and_follow_the_settings(
    httpserver: HTTPServer, acme: Provider, monkeypatch: pytest.MonkeyPatch
) -> None:
    httpserver.expect_request("/me").respond_with_json({"account": {"name": "Local"}})
    assert check_credential(acme, {"apiKey": SECRET}).message == NOT_ALLOWED

    conf = SimpleNamespace(allow_private_targets=True, test_connect_timeout=1.0, test_read_timeout=1.0)
    with monkeypatch.context() as patch:
        patch.setattr(config, "settings", lambda: conf)
        assert check_credential(acme, {"apiKey": SECRET}).account_name == "Local"


# --- unexpected answers -----------------------------------------------------------------------------------


def test_an_unknown_4xx_is_unexpected(httpserver: HTTPServer, acme: Provider) -> None:
    httpserver.expect_request("/me").respond_with_data("I'm a teapot", status=418)

    result = check(acme)

    assert (result.category, result.http_status) == ("unexpected_response", 418)
    assert "teapot" not in result.message


def test_redirects_are_not_followed(httpserver: HTTPServer, acme: Provider) -> None:
    httpserver.expect_request("/me").respond_with_data("", status=302, headers={"Location": "/elsewhere"})
    httpserver.expect_request("/elsewhere").respond_with_json({"account": {"name": "Elsewhere"}})

    result = check(acme)

    assert (result.category, result.http_status, result.account_name) == ("unexpected_response", 302, None)
    assert [request.path for request, _ in httpserver.log] == ["/me"]


@pytest.mark.parametrize("body", ["<html>Welcome</html>", '"just a string"', "{not json"])
def test_a_200_without_the_json_the_account_path_needs_is_unexpected(
    httpserver: HTTPServer, acme: Provider, body: str
) -> None:
    httpserver.expect_request("/me").respond_with_data(body, content_type="text/html")

    result = check(acme)

    assert (result.category, result.http_status) == ("unexpected_response", 200)
    assert "Welcome" not in result.message


def test_a_body_over_256_kib_is_not_read_to_the_end(httpserver: HTTPServer, acme: Provider) -> None:
    huge = json.dumps({"account": {"name": "Big"}, "padding": "x" * (testing.MAX_BODY_BYTES + 1)})
    httpserver.expect_request("/me").respond_with_data(huge, content_type="application/json")

    assert check(acme).category == "unexpected_response"


# --- bad input and catalogue bugs -------------------------------------------------------------------------


@pytest.fixture
def tenant_url_provider(base: str) -> Provider:
    return make_provider(
        base + "/t/{subdomain}",
        fields=[field("subdomain", pattern="^[a-zA-Z0-9][a-zA-Z0-9\\-]{0,62}$"), field("apiKey", secret=True)],
    )


def test_a_url_value_is_substituted_when_it_matches_its_pattern(
    httpserver: HTTPServer, tenant_url_provider: Provider
) -> None:
    httpserver.expect_request("/t/acme-co/me").respond_with_json({"account": {"name": "Acme Co"}})

    assert check(tenant_url_provider, {"subdomain": "acme-co", "apiKey": SECRET}).account_name == "Acme Co"


@pytest.mark.parametrize("value", ["evil.com/x", "a@b", "a%2fb", "", "acme\n"])
def test_a_url_value_violating_its_pattern_is_refused_before_any_request(
    httpserver: HTTPServer, tenant_url_provider: Provider, value: str
) -> None:
    with pytest.raises(errors.BadRequest) as refused:
        check_credential(tenant_url_provider, {"subdomain": value, "apiKey": SECRET}, allow_private=True)

    assert refused.value.code == "invalid_field"
    assert httpserver.log == []


@pytest.mark.parametrize("value", [f"{SECRET}\r\nX-Evil: 1", f" {SECRET}", "clé-ключ"])
def test_a_credential_that_cannot_be_sent_in_a_header_is_refused(
    httpserver: HTTPServer, acme: Provider, value: str
) -> None:
    with pytest.raises(errors.BadRequest) as refused:
        check_credential(acme, {"apiKey": value}, allow_private=True)

    assert refused.value.code == "invalid_field"
    assert SECRET not in refused.value.message
    assert httpserver.log == []


def test_a_missing_value_is_bad_input(httpserver: HTTPServer, acme: Provider) -> None:
    with pytest.raises(errors.BadRequest) as refused:
        check_credential(acme, {}, allow_private=True)

    assert refused.value.code == "invalid_field"
    assert httpserver.log == []


def test_an_unknown_placeholder_is_a_catalogue_bug(httpserver: HTTPServer, acme: Provider) -> None:
    broken = acme.model_copy(update={"test": acme.test.model_copy(update={"path": "/users/{userId}"})})

    with pytest.raises(errors.GrantlinkError) as failed:
        check_credential(broken, {"apiKey": SECRET, "userId": "1"}, allow_private=True)

    assert not isinstance(failed.value, errors.BadRequest)
    assert failed.value.status == 500
    assert httpserver.log == []


# --- logging ----------------------------------------------------------------------------------------------


def test_one_structured_log_line_per_check(
    httpserver: HTTPServer, acme: Provider, caplog: pytest.LogCaptureFixture
) -> None:
    httpserver.expect_request("/me").respond_with_json({"account": {"name": "Acme Ltd"}}, status=401)

    result = check(acme)

    lines = [record for record in caplog.records if record.name == "grantlink"]
    assert [record.getMessage() for record in lines] == ["connection test"]
    line = vars(lines[0])
    assert (line["partner"], line["category"], line["httpStatus"]) == ("acme", "invalid_credentials", 401)
    assert line["latencyMs"] == result.latency_ms
