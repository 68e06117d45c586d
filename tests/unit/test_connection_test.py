"""Connection tests through the API (POST /credentials/{id}/test) and on connect (issue: connection test). Their
tenancy and scope (M1, M2) are proved in tests/security/test_tenancy_and_input.py."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from grantlink import connect, links, providers
from grantlink.models import Caller, CreateLinkRequest, LinkStatus
from grantlink.providers import Provider
from tests.helpers import event, invoke
from tests.helpers import run_connection_test as run_test

A = Caller("tnt_a", frozenset({"links:write"}))
PARTNER_ID = 8888
KEY = "live-key-abcdefgh-1234"


class FakeProvider:
    """A partner whose account endpoint answers what the test says."""

    def __init__(self, server: HTTPServer) -> None:
        self.status, self.body, self.seen = 200, {"user": {"email": "ada@example.com"}}, []
        server.expect_request("/v1/me").respond_with_handler(self.me)

    def me(self, request: Request) -> Response:
        self.seen.append(request.headers.get("Authorization"))
        return Response(json.dumps(self.body), self.status, content_type="application/json")


@pytest.fixture
def fake(httpserver: HTTPServer, aws_env: Any, monkeypatch: pytest.MonkeyPatch) -> FakeProvider:
    base = httpserver.url_for("").rstrip("/")
    partner = Provider.model_validate(
        {
            "id": PARTNER_ID, "slug": "fake-crm", "name": "Fake CRM", "authType": "api_key", "docsUrl": base,
            "description": "Read access to a fake CRM.", "baseUrl": base,
            "fields": [{"name": "apiKey", "label": "API key", "help": "From settings.", "secret": True,
                        "pattern": None, "required": True}],
            "auth": {"in": "bearer", "value": "{apiKey}"},
            "test": {"method": "GET", "path": "/v1/me", "expectStatus": [200], "accountName": "user.email"},
        },
        context={"allow_http": True},
    )  # fmt: skip
    real = providers.find
    monkeypatch.setattr(providers, "find", lambda pid: partner if pid == PARTNER_ID else real(pid))
    monkeypatch.setattr(providers, "get", lambda pid: partner if pid == PARTNER_ID else real(pid))
    return FakeProvider(httpserver)


def connected(partner: int = PARTNER_ID, key: str = KEY) -> str:
    link, token = links.create_link(A, CreateLinkRequest(partnerId=partner, title="CRM"))
    return connect.submit(link.id, token, {"apiKey": key}).credential.id


def credential(credential_id: str) -> dict[str, Any]:
    return invoke("credentials", event("get_credential", tenant="tnt_a", path_id=credential_id))[1]["data"]


def test_a_demo_apikey_credential_tests_ok_with_its_account_name(aws_env: Any) -> None:
    """The issue's "done when": demo-apikey says ok, with the account name, and keeps it as lastTest."""
    credential_id = connected(9001, "demo-key-4242")
    status, body = run_test(credential_id)
    result = body["data"]
    assert status == 200 and result["ok"] is True and result["category"] == "ok"
    assert result["accountName"] == "Demo account …4242" and result["httpStatus"] == 200
    assert set(result) == {"ok", "category", "httpStatus", "latencyMs", "message", "accountName", "testedAt"}
    assert credential(credential_id)["lastTest"] == result


def test_a_key_starting_with_bad_is_refused_at_connect_and_the_link_still_works(aws_env: Any) -> None:
    link, token = links.create_link(A, CreateLinkRequest(partnerId=9001, title="CRM"))
    with pytest.raises(connect.InvalidForm) as raised:
        connect.submit(link.id, token, {"apiKey": "bad-key-0000"})
    assert "refused these credentials" in (raised.value.form_error or "")
    assert links.get_link(A, link.id).status == LinkStatus.WAITING
    done = connect.submit(link.id, token, {"apiKey": "good-key-0000"})
    assert done.credential.last_test and done.credential.last_test["ok"] is True


def test_the_connect_page_shows_the_test_failure_on_the_form(aws_env: Any) -> None:
    from tests.helpers import call

    link, token = links.create_link(A, CreateLinkRequest(partnerId=9001, title="CRM"))
    page = call("connect_page", event("connect_post", form={"id": link.id, "token": token, "f_apiKey": "bad-1"}))
    assert page["statusCode"] == 400 and "There is a problem" in page["body"] and "bad-1" not in page["body"]


def test_invalid_credentials_require_reauthorization_and_emit_an_event(
    fake: FakeProvider, delivered_events: Any
) -> None:
    credential_id = connected()
    assert fake.seen == [f"Bearer {KEY}"]  # the connect-time test
    fake.status, fake.body = 401, {"error": "unauthorized"}
    status, body = run_test(credential_id)
    assert status == 200 and body["data"]["category"] == "invalid_credentials" and not body["data"]["ok"]
    assert credential(credential_id)["state"] == "reauthorization_required"
    (sent,) = [e for e in delivered_events() if e["detail-type"] == "credential.test_failed"]
    detail = sent["detail"]
    assert detail["credentialId"] == credential_id and detail["category"] == "invalid_credentials"
    assert detail["tenantId"] == "tnt_a" and detail["eventId"] and KEY not in json.dumps(sent)
    # The same path as a refused refresh: the tenant is told with a ready-to-send reauthorize link, and the test
    # result that found it is kept.
    (required,) = [e for e in delivered_events() if e["detail-type"] == "credential.reauthorization_required"]
    assert required["detail"]["credentialId"] == credential_id and required["detail"]["reauthorizeLink"]
    assert credential(credential_id)["lastTest"]["category"] == "invalid_credentials"


@pytest.mark.parametrize(("status", "category"), [(503, "provider_unavailable"), (429, "rate_limited")])
def test_transient_failures_do_not_change_the_state(fake: FakeProvider, status: int, category: str) -> None:
    credential_id = connected()
    fake.status = status
    _, body = run_test(credential_id)
    assert body["data"]["category"] == category
    assert credential(credential_id)["state"] == "active"
    assert credential(credential_id)["lastTest"]["category"] == category


def test_a_test_is_audited(fake: FakeProvider) -> None:
    credential_id = connected()
    run_test(credential_id)
    trail = invoke("credentials", event("list_audit", tenant="tnt_a", path_id=credential_id))[1]["data"]
    assert trail[0]["action"] == "tested" and trail[0]["details"] == {"category": "ok"}


def test_a_disabled_credential_is_not_tested(fake: FakeProvider) -> None:
    credential_id = connected()
    invoke("credentials", event("update_credential", tenant="tnt_a", path_id=credential_id, body={"enabled": False}))
    status, body = run_test(credential_id)
    assert (status, body["error"]["code"]) == (409, "credential_disabled")
