"""The authenticated proxy's use case (grantlink.proxy.forward, issue 11), in process: moto for AWS, a fake
partner on 127.0.0.1 (pytest-httpserver) that records what arrives. The HTTP route over it is tested elsewhere."""

from __future__ import annotations

import gzip
import json
import logging
import re
import threading
import time
from typing import Any

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from grantlink import config, connect, connections, errors, oauth, placement, providers, proxy
from grantlink.models import Caller, CreateLinkRequest, PatchCredentialRequest
from grantlink.providers import Provider
from grantlink.store import default as default_store
from tests.unit.oauth_fakes import A as OAUTH_TENANT
from tests.unit.oauth_fakes import FakeAuthorizationServer, connected_credential

A = Caller("tnt_a", frozenset({"links:write", "credentials:proxy"}), key_id="key_a")
B = Caller("tnt_b", frozenset({"links:write", "credentials:proxy"}))
KEY = "sk_proxy_secret_value_0001"
AUTHS = {
    "bearer": {"in": "bearer", "value": "{apiKey}"},
    "header": {"in": "header", "header": "X-Api-Key", "value": "{apiKey}"},
    "query": {"in": "query", "param": "api_key", "value": "{apiKey}"},
    "basic": {"in": "basic", "username": "{user}", "password": "{apiKey}"},
}
PARTNERS = {"bearer": 8801, "header": 8802, "query": 8803, "basic": 8804, "tuned": 8805}
TUNED = {
    "headers": {"X-Version": "7"},
    "forwardHeaders": ["X-Extra"],
    "retry": {"statuses": [429, 503], "maxAttempts": 3, "maxWaitSeconds": 2},
}


class FakePartner:
    """Every request under /api/ is recorded; the answer is what the test sets (a list is answered in turn)."""

    def __init__(self, server: HTTPServer) -> None:
        self.seen: list[Request] = []
        self.replies: list[Response] = []
        self.hold: threading.Event | None = None
        server.expect_request(re.compile(r"^/api/.*")).respond_with_handler(self.answer)

    def answer(self, request: Request) -> Response:
        if request.path == "/api/me":  # the connection test at connect time
            return Response(json.dumps({"name": "acct"}), 200, content_type="application/json")
        request.get_data()
        self.seen.append(request)
        if self.hold is not None:
            self.hold.wait(5)
        if len(self.replies) > 1:
            return self.replies.pop(0)
        return self.replies[0] if self.replies else Response(b'{"ok":true}', 200, content_type="application/json")


@pytest.fixture
def partner(httpserver: HTTPServer, aws_env: Any, monkeypatch: pytest.MonkeyPatch) -> FakePartner:
    base = httpserver.url_for("/api").rstrip("/")
    made = {PARTNERS[name]: _partner(PARTNERS[name], base, AUTHS.get(name, AUTHS["bearer"])) for name in PARTNERS}
    made[PARTNERS["tuned"]] = _partner(PARTNERS["tuned"], base, AUTHS["bearer"], proxy=TUNED)
    real = providers.find
    monkeypatch.setattr(providers, "find", lambda pid: made.get(pid) or real(pid))
    monkeypatch.setattr(providers, "get", lambda pid: made.get(pid) or real(pid))
    return FakePartner(httpserver)


def _partner(partner_id: int, base: str, auth: dict[str, str], **extra: Any) -> Provider:
    return Provider.model_validate(
        {
            "id": partner_id, "slug": f"fake-{partner_id}", "name": "Fake API", "authType": "api_key",
            "docsUrl": base, "description": "A fake partner.", "baseUrl": base, "auth": auth,
            "fields": [
                {"name": "user", "label": "User", "help": "Login.", "secret": False, "pattern": None, "required": True},
                {"name": "apiKey", "label": "Key", "help": "Key.", "secret": True, "pattern": None, "required": True},
            ],
            "test": {"method": "GET", "path": "/me", "expectStatus": [200]},
            **extra,
        },
        context={"allow_http": True},
    )  # fmt: skip


def connected(kind: str = "bearer", caller: Caller = A) -> str:
    from grantlink import links

    link, token = links.create_link(caller, CreateLinkRequest(partnerId=PARTNERS[kind], title="Fake"))
    return connect.submit(link.id, token, {"user": "ada", "apiKey": KEY}).credential.id


def forward(credential_id: str, path: str = "v1/things", caller: Caller = A, **kwargs: Any) -> proxy.ProxyAnswer:
    call: dict[str, Any] = {"method": "GET", "query": [], "headers": {}, "body": b""} | kwargs
    return proxy.forward(caller, credential_id, call["method"], path, call["query"], call["headers"], call["body"])


def audited(credential_id: str) -> list[dict[str, Any]]:
    items, _ = default_store().list_audit(credential_id, 50, None)
    return [item for item in items if item["action"] == "proxied"]


def everything(answer: proxy.ProxyAnswer) -> str:
    return answer.body.decode("latin-1") + json.dumps(answer.headers)


# --- the credential goes where the catalogue says, and nowhere else ---------------------------------------


@pytest.mark.parametrize(
    ("kind", "where"),
    [
        ("bearer", lambda r: r.headers.get("Authorization") == f"Bearer {KEY}"),
        ("header", lambda r: r.headers.get("X-Api-Key") == KEY and "Authorization" not in r.headers),
        ("query", lambda r: r.args.getlist("api_key") == [KEY] and "Authorization" not in r.headers),
        ("basic", lambda r: r.authorization is not None and (r.authorization.username, r.authorization.password)
         == ("ada", KEY)),
    ],
)  # fmt: skip
def test_each_auth_placement_is_injected_and_never_returned(partner: FakePartner, kind: str, where: Any) -> None:
    """Given a credential of each auth placement, when a call is proxied, then the partner receives the secret
    exactly where the catalogue declares it, and the caller's answer holds no trace of it."""
    credential_id = connected(kind)
    partner.seen.clear()
    answer = forward(credential_id, "v1/things", query=[("page", "2")])
    (request,) = partner.seen
    assert where(request) and request.path == "/api/v1/things" and request.args["page"] == "2"
    assert answer.status == 200 and answer.body == b'{"ok":true}'
    assert KEY not in everything(answer)


def test_the_callers_own_credentials_and_routing_headers_never_reach_the_partner(partner: FakePartner) -> None:
    """Given a caller sending its own Authorization, Cookie, X-Forwarded-For and unknown headers, when proxied,
    then only allow-listed headers and the catalogue's defaults arrive, with the stored credential."""
    credential_id = connected("tuned")
    partner.seen.clear()
    sent = {
        "Authorization": "Bearer the-callers-own", "Cookie": "session=1", "X-Forwarded-For": "10.0.0.1",
        "X-Random": "no", "Accept": "application/json", "X-Request-Id": "req-1", "x-extra": "yes",
    }  # fmt: skip
    forward(credential_id, headers=sent)
    (request,) = partner.seen
    assert request.headers["Authorization"] == f"Bearer {KEY}"
    assert request.headers["Accept"] == "application/json" and request.headers["X-Request-Id"] == "req-1"
    assert request.headers["X-Extra"] == "yes" and request.headers["X-Version"] == "7"
    assert not {"Cookie", "X-Forwarded-For", "X-Random"} & set(request.headers.keys())


def test_a_callers_query_cannot_replace_the_query_credential(partner: FakePartner) -> None:
    """Given a query-param partner, when the caller sends its own api_key param, then the partner gets only ours."""
    credential_id = connected("query")
    partner.seen.clear()
    forward(credential_id, query=[("api_key", "mine"), ("a", "1"), ("a", "2")])
    (request,) = partner.seen
    assert request.args.getlist("api_key") == [KEY] and request.args.getlist("a") == ["1", "2"]


def test_method_and_body_are_forwarded(partner: FakePartner) -> None:
    """Given a POST with a JSON body, when proxied, then the partner receives the same method, type and body."""
    credential_id = connected()
    partner.seen.clear()
    forward(credential_id, method="post", headers={"Content-Type": "application/json"}, body=b'{"x":1}')
    (request,) = partner.seen
    assert (request.method, request.content_type, request.get_data()) == ("POST", "application/json", b'{"x":1}')


# --- the path cannot leave the partner ---------------------------------------------------------------------

TRAVERSALS = [
    "../admin", "v1/../../admin", "v1/..;/admin", "%2e%2e/admin", "v1/%2E%2E/admin", "%252e%252e/admin",
    "v1%2Fadmin", "v1%2fadmin", "v1%5cadmin", "v1\\admin", "ada@evil.example/x", "v1/%40evil", "//evil.example/x",
    "///evil.example/x", "%2F%2Fevil.example/x", "http://evil.example/x", "https:evil.example", "v1/a\x00b",
    "v1/%0d%0aX-Injected:%201", "",
]  # fmt: skip


@pytest.mark.parametrize("path", TRAVERSALS)
def test_a_path_that_could_leave_the_partners_base_url_is_a_400_and_nothing_is_sent(
    partner: FakePartner, path: str
) -> None:
    """Given a path with traversal, an encoded slash, a backslash, `@`, a scheme or `//`, when proxied, then it
    is refused with invalid_proxy_path and the partner sees no request."""
    credential_id = connected()
    partner.seen.clear()
    with pytest.raises(errors.BadRequest) as refused:
        forward(credential_id, path)
    assert refused.value.code == "invalid_proxy_path" and partner.seen == []


def test_question_marks_and_hashes_in_the_path_stay_in_the_path(partner: FakePartner) -> None:
    """Given `?` and `#` in the path, when proxied, then they are escaped: neither starts a query or fragment."""
    credential_id = connected()
    partner.seen.clear()
    forward(credential_id, "v1/a?b#c")
    (request,) = partner.seen
    assert request.path == "/api/v1/a?b#c" and dict(request.args) == {}


def test_a_salesforce_proxy_base_comes_from_checked_token_metadata(aws_env: Any) -> None:
    """Given Salesforce's catalogue entry, when its instance URL is kept from a token answer, then the proxy base
    is that origin; an origin the pattern refuses never becomes a URL."""
    salesforce = providers.get(15)
    token = {"access_token": "t", "instance_url": "https://acme.my.salesforce.com"}
    values = oauth.token_values(token, None, {}, salesforce)
    assert values["instanceUrl"] == "https://acme.my.salesforce.com"
    refreshed = oauth.token_values({"access_token": "t2"}, values, {}, salesforce)
    assert refreshed["instanceUrl"] == "https://acme.my.salesforce.com"  # a refresh without it keeps it
    assert placement.fill_url(salesforce, values, salesforce.proxy_base_url) == "https://acme.my.salesforce.com"
    for evil in ("https://evil.example", "https://acme.my.salesforce.com@evil.example", "http://x.salesforce.com"):
        with pytest.raises(errors.BadRequest):
            placement.fill_url(salesforce, {"instanceUrl": evil}, salesforce.proxy_base_url)
        kept = oauth.token_values({"access_token": "t", "instance_url": evil}, None, {}, salesforce)
        assert "instanceUrl" not in kept


# --- the partner's answer ----------------------------------------------------------------------------------


def test_a_redirect_is_passed_back_and_not_followed(partner: FakePartner, httpserver: HTTPServer) -> None:
    """Given a partner answering 302, when proxied, then the 302 and its Location come back; nothing follows it."""
    credential_id = connected()
    partner.seen.clear()
    partner.replies = [Response(b"", 302, headers={"Location": httpserver.url_for("/api/elsewhere")})]
    answer = forward(credential_id)
    assert answer.status == 302 and ("Location", httpserver.url_for("/api/elsewhere")) in answer.headers
    assert [r.path for r in partner.seen] == ["/api/v1/things"]


def test_hop_by_hop_cookie_and_cors_headers_are_stripped(partner: FakePartner) -> None:
    """Given a partner answer with Set-Cookie, CORS, Keep-Alive and Proxy-* headers, when proxied, then only its
    end-to-end headers come back (repeated ones kept apart)."""
    credential_id = connected()
    headers = [
        ("Set-Cookie", "a=1"), ("Set-Cookie", "b=2"), ("Access-Control-Allow-Origin", "*"), ("Keep-Alive", "5"),
        ("Proxy-Authenticate", "Basic"), ("Link", "<a>; rel=next"), ("Link", "<b>; rel=last"), ("X-Partner", "kept"),
    ]  # fmt: skip
    partner.replies = [Response(b"{}", 200, headers=headers, content_type="application/json")]
    names = [name.lower() for name, _ in forward(credential_id).headers]
    assert names.count("link") == 2 and "x-partner" in names and "content-type" in names
    assert not {"set-cookie", "access-control-allow-origin", "keep-alive", "proxy-authenticate"} & set(names)


def test_a_compressed_answer_comes_back_decoded_without_its_encoding_headers(partner: FakePartner) -> None:
    """Given a gzip-encoded partner answer, when proxied, then the body is decoded and Content-Encoding and the
    compressed Content-Length are not passed on."""
    credential_id = connected()
    packed = gzip.compress(b'{"big":"' + b"x" * 1000 + b'"}')
    partner.replies = [Response(packed, 200, headers={"Content-Encoding": "gzip"}, content_type="application/json")]
    answer = forward(credential_id)
    assert answer.body == b'{"big":"' + b"x" * 1000 + b'"}'
    assert not {"content-encoding", "content-length"} & {name.lower() for name, _ in answer.headers}


def test_a_429_passes_through_with_its_retry_after(partner: FakePartner) -> None:
    """Given a partner without retry settings answering 429, when proxied, then the 429 and Retry-After come
    back after one call."""
    credential_id = connected()
    partner.seen.clear()
    partner.replies = [Response(b"slow down", 429, headers={"Retry-After": "7"})]
    answer = forward(credential_id)
    assert answer.status == 429 and ("Retry-After", "7") in answer.headers and len(partner.seen) == 1


def test_catalogue_retry_settings_are_honoured(partner: FakePartner, monkeypatch: pytest.MonkeyPatch) -> None:
    """Given `proxy.retry` (503/429, 3 attempts, 2 s cap), when the partner answers 503 then 429 then 200, then
    the proxy calls three times, waiting what Retry-After asks, and returns the 200."""
    waits: list[float] = []
    monkeypatch.setattr(proxy, "pause", waits.append)
    credential_id = connected("tuned")
    partner.seen.clear()
    partner.replies = [
        Response(b"", 503, headers={"Retry-After": "1"}),
        Response(b"", 429, headers={"Retry-After": "2"}),
        Response(b"done", 200),
    ]
    answer = forward(credential_id)
    assert (answer.status, answer.body, len(partner.seen), waits) == (200, b"done", 3, [1, 2])


def test_retries_stop_at_max_attempts_and_when_retry_after_exceeds_the_cap(
    partner: FakePartner, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Given `proxy.retry`, when the partner keeps answering 503, then three calls are made in all; when it asks
    to wait longer than the cap, then its 429 comes back at once."""
    waits: list[float] = []
    monkeypatch.setattr(proxy, "pause", waits.append)
    credential_id = connected("tuned")
    partner.seen.clear()
    partner.replies = [Response(b"", 503, headers={"Retry-After": "0"})]
    assert forward(credential_id).status == 503 and len(partner.seen) == 3
    partner.seen.clear()
    partner.replies = [Response(b"", 429, headers={"Retry-After": "60"})]
    assert forward(credential_id).status == 429 and len(partner.seen) == 1 and waits == [0, 0]


def test_a_hanging_partner_ends_in_partner_timeout_within_the_deadline(
    partner: FakePartner, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Given a partner that never answers and a 0.5 s proxy deadline, when proxied, then partner_timeout (504)
    comes well inside a second, and the attempt is audited with that code."""
    credential_id = connected()
    monkeypatch.setenv("GRANTLINK_PROXY_DEADLINE_SECONDS", "0.5")
    config.reset()
    partner.hold = threading.Event()
    started = time.monotonic()
    try:
        with pytest.raises(proxy.PartnerTimeout) as raised:
            forward(credential_id)
    finally:
        partner.hold.set()
    assert time.monotonic() - started < 1.5
    assert (raised.value.status, raised.value.code) == (504, "partner_timeout")
    (entry,) = audited(credential_id)
    assert entry["details"]["error"] == "partner_timeout" and "status" not in entry["details"]


def test_an_answer_over_the_limit_is_refused_cleanly(partner: FakePartner) -> None:
    """Given a partner answering more than PROXY_MAX_RESPONSE_BYTES, when proxied, then response_too_large (502)."""
    credential_id = connected()
    partner.replies = [Response(b"x" * (proxy.PROXY_MAX_RESPONSE_BYTES + 1), 200)]
    with pytest.raises(proxy.ResponseTooLarge) as raised:
        forward(credential_id)
    assert (raised.value.status, raised.value.code) == (502, "response_too_large")


def test_an_unreachable_partner_is_partner_unreachable(partner: FakePartner, monkeypatch: pytest.MonkeyPatch) -> None:
    """Given private targets not allowed (production), when the partner lives on 127.0.0.1, then the guard
    refuses it: partner_unreachable (502), and nothing is sent."""
    credential_id = connected()
    partner.seen.clear()
    monkeypatch.setenv("GRANTLINK_ALLOW_PRIVATE_TARGETS", "false")
    config.reset()
    with pytest.raises(proxy.PartnerUnreachable) as raised:
        forward(credential_id)
    assert (raised.value.status, raised.value.code, partner.seen) == (502, "partner_unreachable", [])


# --- whose credential, in which state ---------------------------------------------------------------------


def test_another_tenants_credential_is_not_found(partner: FakePartner) -> None:
    """Given tenant A's credential, when tenant B proxies through it, then 404 credential_not_found, nothing sent."""
    credential_id = connected()
    partner.seen.clear()
    with pytest.raises(errors.NotFound) as raised:
        forward(credential_id, caller=B)
    assert raised.value.code == "credential_not_found" and partner.seen == []


def test_a_disabled_credential_is_a_conflict(partner: FakePartner) -> None:
    """Given a disabled credential, when proxied, then 409 credential_disabled and nothing is sent."""
    credential_id = connected()
    connections.update_credential(A, credential_id, PatchCredentialRequest(enabled=False))
    partner.seen.clear()
    with pytest.raises(errors.Conflict) as raised:
        forward(credential_id)
    assert raised.value.code == "credential_disabled" and partner.seen == []


def test_a_large_request_body_is_refused(partner: FakePartner) -> None:
    """Given a body over the API's limit, when proxied, then 413 and nothing is sent."""
    credential_id = connected()
    partner.seen.clear()
    with pytest.raises(errors.PayloadTooLarge):
        forward(credential_id, method="POST", body=b"x" * (config.settings().max_body_bytes + 1))
    assert partner.seen == []


# --- OAuth: refresh once on a 401 -------------------------------------------------------------------------


def test_a_401_refreshes_once_and_retries_once(provider_server: FakeAuthorizationServer, partner: FakePartner) -> None:
    """Given an OAuth credential whose token the partner refuses, when proxied, then grantlink refreshes once
    (one token call), retries with the new token, and returns the partner's 200."""
    credential_id = connected_credential(provider_server)
    exchanges = len(provider_server.calls)
    partner.replies = [Response(b"expired", 401), Response(b"fine", 200)]
    answer = forward(credential_id, "api/v1/things", caller=OAUTH_TENANT)
    assert (answer.status, answer.body) == (200, b"fine")
    assert [r.headers["Authorization"] for r in partner.seen] == ["Bearer access-1", "Bearer access-2"]
    assert len(provider_server.calls) == exchanges + 1
    assert provider_server.calls[-1]["grant_type"] == "refresh_token"


def test_a_refused_refresh_after_a_401_requires_reauthorization(
    provider_server: FakeAuthorizationServer, partner: FakePartner
) -> None:
    """Given an OAuth credential whose grant is gone, when the partner answers 401 and the refresh gets
    invalid_grant, then 409 reauthorization_required and the credential is in that state."""
    credential_id = connected_credential(provider_server)
    provider_server.error = "invalid_grant"
    partner.replies = [Response(b"expired", 401)]
    with pytest.raises(errors.Conflict) as raised:
        forward(credential_id, "api/v1/things", caller=OAUTH_TENANT)
    assert raised.value.code == "reauthorization_required" and len(partner.seen) == 1
    assert connections.get_credential(OAUTH_TENANT, credential_id).state == "reauthorization_required"


# --- audit, metric and logs -------------------------------------------------------------------------------


def test_each_call_is_audited_and_counted_without_query_or_secrets(
    partner: FakePartner, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    """Given a proxied call with a query string, when it completes, then one `proxied` audit entry holds the
    method, the path without query, the status and the latency; a ProxyCalls metric names the partner; no log
    line, audit entry or answer holds the secret."""
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="grantlink")
    credential_id = connected("query")
    capsys.readouterr()
    answer = forward(credential_id, "v1/things", query=[("filter", "private-value")], method="DELETE")
    (entry,) = audited(credential_id)
    details = entry["details"]
    assert (entry["actor"], details["method"], details["path"], details["status"]) == (
        "apikey:key_a", "DELETE", "/v1/things", 200,
    )  # fmt: skip
    assert details["latencyMs"] >= 0 and "private-value" not in json.dumps(entry, default=str)
    emitted = [json.loads(line) for line in capsys.readouterr().out.splitlines() if "ProxyCalls" in line]
    assert [(m["partner"], m["ProxyCalls"]) for m in emitted] == [(f"fake-{PARTNERS['query']}", [1.0])]
    # Not ours: werkzeug is the fake partner's access log, `responses` is moto's interceptor (tests only).
    ours = [r for r in caplog.records if r.name not in ("werkzeug", "responses")]
    logged = "\n".join(r.getMessage() for r in ours) + json.dumps([vars(r) for r in ours], default=str)
    assert KEY not in logged and KEY not in everything(answer) and KEY not in json.dumps(entry, default=str)
