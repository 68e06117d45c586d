"""The authenticated proxy and the token endpoint over real HTTP, against the local stack: its demo partners' echo
(`/_demo/echo/…`, where their proxy base URLs point: it answers which credential arrived, masked) and its
oauth2-mock-server for the OAuth partner (9003). The helpers are in tests/stack.py and tests/oauth_http.py."""

from __future__ import annotations

from http.client import HTTPConnection
from typing import Any
from urllib.parse import urlsplit

import pytest

from infra.local.extras import mask
from tests.oauth_http import REFRESH, saw, settled, token, token_requests
from tests.oauth_http import connect as connect_oauth
from tests.stack import FORM_SECRET, auth, http, new_link, new_tenant, submit, url

pytestmark = pytest.mark.integration

OLDER_SCOPES = "links:write,credentials:read,credentials:write,credentials:secret"
PASSWORD = "demo-password-7890-abcdef"


def connected(stack: dict[str, Any], partner: int, key: str | None = None) -> str:
    """A credential for a demo partner, made through its link as a customer would; returns its id."""
    if partner == 9003:
        return connect_oauth(stack, "Proxy test")[1]
    link = new_link(stack, partner, key)
    fields = {"apiKey": FORM_SECRET} if partner == 9001 else {"username": "ada", "password": PASSWORD}
    assert submit(stack, link, **fields).status_code in (200, 303)
    answer = http.get(url(stack, f"/credentials/grant-access-sharing/{link['id']}"), headers=auth(stack, key))
    return str(answer.json()["data"]["credentialId"])


def proxy(stack: dict[str, Any], credential_id: str, path: str, key: str | None = None, **kwargs: Any) -> Any:
    method = kwargs.pop("method", "GET")
    target = url(stack, f"/credentials/{credential_id}/proxy/{path}")
    return http.request(method, target, headers={**auth(stack, key), **kwargs.pop("headers", {})}, **kwargs)


def raw_get(stack: dict[str, Any], path: str, key: str) -> tuple[int, bytes]:
    """GET a path exactly as written (requests would normalize `..` and encodings away)."""
    connection = HTTPConnection(urlsplit(stack["apiUrl"]).netloc, timeout=30)
    try:
        connection.request("GET", path, headers={"Authorization": f"Bearer {key}"})
        answer = connection.getresponse()
        return answer.status, answer.read()
    finally:
        connection.close()


@pytest.mark.parametrize(("partner", "kind"), [(9001, "header"), (9002, "basic"), (9003, "bearer")])
def test_each_demo_partners_credential_is_injected_and_never_shown(
    stack: dict[str, Any], partner: int, kind: str
) -> None:
    """Given a credential for each demo partner (an API key header, a login, an OAuth access token),
    when the tenant calls POST …/proxy/v1/things?a=1&a=2 with a JSON body and an Accept header,
    then the partner's echo saw the method, its own path under the proxy base URL, the repeated query in order, the
    body, the allowed header, and the credential of the catalogue's kind (masked by the echo); the tenant's API key
    never reached the partner, the answer carries X-Grantlink-Latency-Ms, and never the raw secret."""
    credential_id = connected(stack, partner)
    secret = {9001: FORM_SECRET, 9002: PASSWORD}.get(partner) or token(stack, credential_id).json()["data"][
        "accessToken"
    ]
    answer = proxy(stack, credential_id, "v1/things?a=1&a=2", method="POST", json={"n": 1},
                   headers={"Accept": "application/json", "X-Not-Forwarded": "no"})  # fmt: skip
    assert answer.status_code == 200, answer.text
    echoed = answer.json()
    slug = {9001: "demo-apikey", 9002: "demo-basic", 9003: "demo-oauth"}[partner]
    assert (echoed["method"], echoed["path"]) == ("POST", f"/_demo/echo/{slug}/v1/things")
    assert echoed["query"] == [["a", "1"], ["a", "2"]]
    assert echoed["bodyBytes"] == len(b'{"n": 1}')
    assert echoed["auth"]["kind"] == kind and echoed["auth"]["value"] == mask(secret)
    assert echoed["headers"]["accept"] == "application/json" and "x-not-forwarded" not in echoed["headers"]
    assert stack["apiKey"] not in answer.text and stack["apiKey"][:8] not in str(echoed["auth"])
    assert secret not in answer.text
    assert int(answer.headers["X-Grantlink-Latency-Ms"]) >= 0


def test_a_binary_body_goes_and_comes_back_byte_for_byte(stack: dict[str, Any]) -> None:
    """Given a demo partner that answers a request's own body (/_demo/echo/…/raw), when a tenant sends bytes that are
    not UTF-8, then it gets the same bytes back with the partner's Content-Type."""
    credential_id = connected(stack, 9001)
    payload = bytes(range(256))
    answer = proxy(stack, credential_id, "raw", method="PUT", data=payload, headers={"Content-Type": "image/png"})
    assert answer.status_code == 200, answer.text
    assert (answer.content, answer.headers["content-type"]) == (payload, "image/png")


@pytest.mark.parametrize(
    "path",
    [
        "../../secret",
        "v1/../../../credentials",
        "a/%2e%2e/%2e%2e/x",
        "%252e%252e/x",
        "a%2Fb",
        "..%2f..%2fx",
        "%5c..%5cx",
        "a\\..\\b",
        "@evil.example/x",
        "http:%2F%2Fevil.example/x",
        "https://evil.example/x",
        "/evil.example/x",
    ],
)
def test_path_traversal_never_leaves_the_partners_origin(stack: dict[str, Any], path: str) -> None:
    """Given a credential, when the proxied path tries to climb out of the partner's base URL or to name another
    host (`..`, encoded once or twice, encoded slashes or backslashes, `@`, an absolute URL, a leading `//`),
    then grantlink answers 400 `invalid_proxy_path` itself: nothing is sent."""
    credential_id = connected(stack, 9001)
    status, body = raw_get(stack, f"/credentials/{credential_id}/proxy/{path}", stack["apiKey"])
    assert (status, b'"invalid_proxy_path"' in body) == (400, True), body


@pytest.mark.parametrize("route", ["proxy/v1/me", "token"])
def test_another_tenants_credential_is_not_found(stack: dict[str, Any], route: str) -> None:
    """M1 over HTTP: another tenant (every scope) gets 404 `credential_not_found` from the proxy and the token
    endpoint for the demo tenant's credential."""
    credential_id = connected(stack, 9003)
    other = new_tenant(stack, "proxy-other")
    answer = http.get(url(stack, f"/credentials/{credential_id}/{route}"), headers=auth(stack, other))
    assert (answer.status_code, answer.json()["error"]["code"]) == (404, "credential_not_found")


def test_a_disabled_credential_is_a_409(stack: dict[str, Any]) -> None:
    """Given a disabled credential, when the tenant proxies through it, then 409 `credential_disabled`; once it is
    enabled again, the call goes through."""
    credential_id = connected(stack, 9001)
    patch = url(stack, f"/credentials/{credential_id}")
    assert http.patch(patch, json={"enabled": False}, headers=auth(stack)).status_code == 200
    answer = proxy(stack, credential_id, "v1/me")
    assert (answer.status_code, answer.json()["error"]["code"]) == (409, "credential_disabled")
    assert http.patch(patch, json={"enabled": True}, headers=auth(stack)).status_code == 200
    assert proxy(stack, credential_id, "v1/me").status_code == 200


def test_a_key_without_the_proxy_scope_is_refused(stack: dict[str, Any]) -> None:
    """M2: a key made with only some of the older scopes does not get credentials:proxy: 403 `forbidden`."""
    key = new_tenant(stack, "proxy-restricted", "links:write,credentials:read,credentials:write")
    credential_id = connected(stack, 9001, key)
    answer = proxy(stack, credential_id, "v1/me", key)
    assert (answer.status_code, answer.json()["error"]["code"]) == (403, "forbidden")


def test_a_full_access_key_from_before_the_proxy_scope_may_use_it(stack: dict[str, Any]) -> None:
    """Given a key made with exactly the four scopes that existed before the proxy (a full-access key then), when it
    calls the proxy, then the authorizer grants it credentials:proxy and the call goes through."""
    key = new_tenant(stack, "proxy-old-key", OLDER_SCOPES)
    credential_id = connected(stack, 9001, key)
    answer = proxy(stack, credential_id, "v1/me", key)
    assert answer.status_code == 200 and answer.json()["auth"]["kind"] == "header", answer.text


def test_the_token_endpoint_refreshes_on_demand_and_is_audited(stack: dict[str, Any]) -> None:
    """Given an OAuth credential, when the tenant reads its token, then reads it twice with forceRefresh=true,
    then the first is the stored token, each forced read is a new token from one more refresh_token call, and the
    audit trail records the three reads (`token_read`)."""
    credential_id = connected(stack, 9003)
    first = token(stack, credential_id).json()["data"]
    before = token_requests(stack, REFRESH)
    forced = [token(stack, credential_id, force=True).json()["data"] for _ in range(2)]
    assert settled(stack, REFRESH, before + 2) == before + 2
    assert len({first["accessToken"], *(f["accessToken"] for f in forced)}) == 3
    assert all(f["tokenType"].lower() == "bearer" and f["expiresAt"] for f in forced)
    trail = http.get(url(stack, f"/credentials/{credential_id}/audit"), headers=auth(stack)).json()["data"]
    assert [e["action"] for e in trail].count("token_read") == 3


def test_a_revoked_token_is_refreshed_once_and_the_call_retried(stack: dict[str, Any]) -> None:
    """Given an OAuth credential whose access token the partner has revoked (the echo answers it 401),
    when the tenant proxies a call, then grantlink refreshes once, retries once with the new token and the tenant
    gets the partner's 200; the token endpoint now shows the new token, which the partner accepts."""
    credential_id = connected(stack, 9003)
    stale = token(stack, credential_id).json()["data"]["accessToken"]
    assert http.post(url(stack, "/_demo/oauth/revoke"), data={"token": stale}).status_code == 200
    direct = http.get(url(stack, "/_demo/echo/demo-oauth/v1/me"), headers={"Authorization": f"Bearer {stale}"})
    assert direct.status_code == 401  # the partner really refuses it now
    before = token_requests(stack, REFRESH)
    answer = proxy(stack, credential_id, "v1/me")
    assert answer.status_code == 200 and answer.json()["auth"]["kind"] == "bearer", answer.text
    assert settled(stack, REFRESH, before + 1) == before + 1
    fresh = token(stack, credential_id).json()["data"]["accessToken"]
    assert fresh != stale and answer.json()["auth"]["value"] == mask(fresh)
    saw(stack, "access token", stale)
