"""Connection tests to a partner whose https certificate is signed by a private CA (issue 10).

The CA and the server certificate are made at test time (tests/tls.py); the partner is a real https server
on 127.0.0.1.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from pytest_httpserver import HTTPServer

from grantlink import config
from grantlink.providers import Provider
from grantlink.testing import check_credential
from tests.tls import TLSFiles, https_server, make_ca_and_cert

SECRET = "sk_test_private-ca-key"
SECURE_FAILURE = "Could not open a secure connection to Acme."


@pytest.fixture(autouse=True)
def env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("GRANTLINK_TABLE", "grantlink-test")
    for name in ("GRANTLINK_CA_BUNDLE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "GRANTLINK_ALLOW_PRIVATE_TARGETS"):
        monkeypatch.delenv(name, raising=False)
    config.reset()
    yield
    config.reset()


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TLSFiles:
    return make_ca_and_cert(tmp_path_factory.mktemp("private-ca"))


@pytest.fixture
def partner(tls: TLSFiles) -> Iterator[HTTPServer]:
    with https_server(tls) as server:
        server.expect_request("/me", headers={"X-Api-Key": SECRET}).respond_with_json({"account": {"name": "Acme"}})
        yield server


def acme(server: HTTPServer) -> Provider:
    return Provider.model_validate(
        {
            "id": 502, "slug": "acme", "name": "Acme", "authType": "api_key", "docsUrl": "https://docs.acme.test",
            "description": "A partner behind a private CA.",
            "fields": [{"name": "apiKey", "label": "API key", "help": "Help.", "secret": True, "pattern": None,
                        "required": True}],
            "baseUrl": server.url_for("").rstrip("/"),
            "auth": {"in": "header", "header": "X-Api-Key", "value": "{apiKey}"},
            "test": {"method": "GET", "path": "/me", "expectStatus": [200], "accountName": "account.name"},
        }
    )  # fmt: skip


def test_the_configured_ca_bundle_makes_a_private_ca_partner_ok(
    partner: HTTPServer, tls: TLSFiles, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Given GRANTLINK_CA_BUNDLE names the private CA that signed the partner's certificate,
    when a connection test calls the partner over https,
    then the test is ok and reads the account name."""
    monkeypatch.setenv("GRANTLINK_CA_BUNDLE", str(tls.ca_cert))
    config.reset()

    result = check_credential(acme(partner), {"apiKey": SECRET}, allow_private=True)

    assert (result.category, result.account_name) == ("ok", "Acme")


def test_requests_ca_bundle_is_honoured_when_grantlink_ca_bundle_is_unset(
    partner: HTTPServer, tls: TLSFiles, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Given only REQUESTS_CA_BUNDLE names the private CA (as the OAuth token calls already honoured),
    when a connection test calls the partner,
    then it is ok: connection tests and token calls trust the same CAs."""
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(tls.ca_cert))
    config.reset()

    result = check_credential(acme(partner), {"apiKey": SECRET}, allow_private=True)

    assert (result.category, result.account_name) == ("ok", "Acme")


def test_without_a_bundle_a_private_ca_partner_is_a_network_error(partner: HTTPServer) -> None:
    """Given no CA bundle is configured,
    when a connection test calls a partner whose certificate a private CA signed,
    then it is a network_error saying no secure connection could be opened, and no request was served."""
    result = check_credential(acme(partner), {"apiKey": SECRET}, allow_private=True)

    assert (result.category, result.message) == ("network_error", SECURE_FAILURE)
    assert partner.log == []


def test_a_missing_bundle_file_is_a_secure_connection_failure_and_is_logged(
    partner: HTTPServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Given GRANTLINK_CA_BUNDLE names a file that does not exist (an operator's typo),
    when a connection test runs,
    then it is a network_error (not a 500) and an error log names the setting's value for the operator."""
    missing = tmp_path / "nowhere.pem"
    monkeypatch.setenv("GRANTLINK_CA_BUNDLE", str(missing))
    config.reset()
    caplog.set_level(logging.ERROR, logger="grantlink")

    result = check_credential(acme(partner), {"apiKey": SECRET}, allow_private=True)

    assert (result.category, result.message) == ("network_error", SECURE_FAILURE)
    assert any(getattr(record, "caBundle", None) == str(missing) for record in caplog.records)
    assert partner.log == []
