"""Every flow grantlink has, driven the way a client, a customer and the schedule drive them — through the
function handlers with API Gateway events, moto and the fake OAuth partner underneath — noting every secret
value that crosses them. O11 (test_oauth_client.py) looks for each in the logs; K1/T2 (test_keys.py) in the
tables.
"""

from __future__ import annotations

import json
import os
import secrets
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import parse_qs, parse_qsl, urlsplit

import requests
from werkzeug import Request, Response

from grantlink import config, providers, tenants
from infra.local.oauth1_server import OAuth1Server
from tests.helpers import call, event, invoke, proxy_event, reroute, run_connection_test, run_jobs, token_event
from tests.unit.client_credentials_fakes import FakeClientCredentialsServer
from tests.unit.oauth_fakes import PARTNER_ID, FakeAuthorizationServer, expire_access_token

APIKEY_PARTNER, BASIC_PARTNER, OAUTH_PARTNER = 9001, 9002, PARTNER_ID
OAUTH1_PARTNER = 9004  # the demo partner, on a provider started for the sweep
OAUTH1_CALLBACK = "http://127.0.0.1:9/oauth/callback"
DEMO_OAUTH_PARTNER = 9003  # the demo partner, for its sandbox environment (faked beside the others)
CLIENT_CREDENTIALS_PARTNER = 9005  # the demo partner; its token endpoint is faked beside the others
KINDS = {
    "API key",
    "link token",
    "submitted api_key",
    "submitted password",
    "OAuth client secret",
    "authorization code",
    "state",
    "code_verifier",
    "access token",
    "refresh token",
    "webhook secret",
    "OAuth 1.0a consumer secret",
    "request token",
    "request token secret",
    "oauth verifier",
    "token secret",
    "customer client secret",
}


class Secrets:
    """The secret values a run saw, by kind."""

    def __init__(self) -> None:
        self.by_kind: dict[str, set[str]] = defaultdict(set)

    def saw(self, kind: str, value: str) -> str:
        assert kind in KINDS, kind
        assert len(value) >= 12, (kind, value)  # long enough that a match is never a coincidence
        self.by_kind[kind].add(value)
        return value

    def values(self, *kinds: str) -> list[tuple[str, str]]:
        """(kind, value) for these kinds, or for every kind."""
        return [(kind, value) for kind in sorted(kinds or self.by_kind) for value in sorted(self.by_kind[kind])]

    def found_in(self, text: str, *kinds: str) -> list[str]:
        """`kind: value` for every value of these kinds (or of any kind) that appears in `text`."""
        return [f"{kind}: {value}" for kind, value in self.values(*kinds) if value in text]


def new_secret(prefix: str) -> str:
    """A value no log line or stored byte could contain by chance."""
    return f"{prefix}-{secrets.token_urlsafe(18)}"


class Client:
    """One tenant calling the API with its key, as API Gateway delivers the calls after the authorizer."""

    def __init__(self, seen: Secrets) -> None:
        self.seen = seen
        self.tenant_id, self.key = tenants.create_tenant("security sweep")
        seen.saw("API key", self.key)
        evt = event("authorizer")
        evt["headers"]["authorization"] = f"Bearer {self.key}"
        evt["identitySource"] = [f"Bearer {self.key}"]
        answer = call("authorizer", evt)
        assert answer["isAuthorized"] and answer["context"]["tenantId"] == self.tenant_id, answer
        self.scopes = answer["context"]["scopes"]

    def event(self, name: str, **changes: Any) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {self.key}", **changes.pop("headers", {})}
        return event(name, tenant=self.tenant_id, scopes=self.scopes, headers=headers, **changes)

    def api(self, function: str, evt: dict[str, Any], expect: int = 200) -> dict[str, Any]:
        status, body, _ = invoke(function, evt)
        assert status == expect, (function, evt["routeKey"], status, body)
        return body

    def new_link(self, partner: int, **headers: str) -> dict[str, Any]:
        body = {"partnerId": partner, "title": f"sweep {partner}"}
        data = self.api("share_links", self.event("create_link", body=body, headers=headers), 201)["data"]
        self.seen.saw("link token", data["token"])
        return data


def proxied(client: Client, credential_id: str, path: str, method: str = "GET", **changes: Any) -> dict[str, Any]:
    """ANY /credentials/{id}/proxy/{path+} through the proxy handler; the partner's JSON answer (a 200)."""
    headers = {"Authorization": f"Bearer {client.key}", **changes.pop("headers", {})}
    evt = proxy_event(credential_id, path, method, tenant=client.tenant_id, scopes=client.scopes, headers=headers,
                      **changes)  # fmt: skip
    return client.api("proxy", evt)


def token(client: Client, credential_id: str, force: bool = False) -> dict[str, Any]:
    """GET /credentials/{id}/token[?forceRefresh=true] through the credentials handler; its `data`."""
    headers = {"Authorization": f"Bearer {client.key}"}
    evt = token_event(credential_id, force, tenant=client.tenant_id, scopes=client.scopes, headers=headers)
    return client.api("credentials", evt)["data"]


def page(evt: dict[str, Any], expect: int, function: str = "connect_page") -> dict[str, Any]:
    """A public page's handler on `evt`; its raw response, whose status must be `expect`."""
    answer = call(function, evt)
    assert answer["statusCode"] == expect, (evt["routeKey"], answer["statusCode"], answer.get("body", "")[:500])
    return answer


def connect_with_form(link: dict[str, Any], **fields: str) -> None:
    """The customer opens the link (GET /connect) and submits the form (POST /connect)."""
    page(event("connect_get", query={"id": link["id"], "token": link["token"]}), 200)
    form = {"id": link["id"], "token": link["token"], **{f"f_{k}": v for k, v in fields.items()}}
    done = page(event("connect_post", form=form), 200)
    assert "Connected" in done["body"]


def connect_with_oauth(seen: Secrets, provider: FakeAuthorizationServer, link: dict[str, Any]) -> None:
    """The customer opens the link, presses the button (POST /connect/oauth/start), approves at the partner and
    comes back (GET /oauth/callback)."""
    page(event("connect_get", query={"id": link["id"], "token": link["token"]}), 200)
    start = reroute(
        event("connect_post", form={"id": link["id"], "token": link["token"]}),
        "POST /connect/oauth/start",
        "/connect/oauth/start",
    )
    authorize = parse_qs(urlsplit(page(start, 303, "oauth_callback")["headers"]["Location"]).query)
    state = seen.saw("state", authorize["state"][0])
    code = seen.saw("authorization code", new_secret("code"))
    issuer = providers.find(OAUTH_PARTNER).oauth.issuer  # type: ignore[union-attr]
    back = reroute(
        event("connect_get", query={"code": code, "state": state, "iss": issuer}),
        "GET /oauth/callback",
        "/oauth/callback",
    )
    page(back, 303, "oauth_callback")
    exchange = provider.calls[-1]
    assert exchange["grant_type"] == "authorization_code" and exchange["code"] == code
    seen.saw("code_verifier", exchange["code_verifier"])


def webhook(client: Client, route: str, expect: int = 200, path: str = "", **changes: Any) -> dict[str, Any]:
    """One webhook API route ("PUT /webhooks", …) through the webhooks handler, as this client."""
    evt = reroute(client.event("get_credential", **changes), route, path or route.split(" ", 1)[1])
    evt["pathParameters"] = None
    return client.api("webhooks", evt, expect)["data"]


def register_webhook(client: Client, provider: FakeAuthorizationServer) -> str:
    """The tenant's webhook, on a receiver beside the fake partner; every event from here on is delivered to it."""
    provider.server.expect_request("/webhook-receiver", method="POST").respond_with_data("ok")
    url = provider.server.url_for("/webhook-receiver")
    client.seen.saw("webhook secret", webhook(client, "PUT /webhooks", 201, body={"url": url})["secret"])
    return url


def webhook_flows(client: Client, aws_env: dict[str, Any], receiver: str) -> None:
    """The delivery function sends the flows' events (signed); then the API: read, rotate (both secrets sign
    during the grace), list the deliveries, retry one (sent again through the queue)."""
    from tests.unit.test_webhooks import deliver

    assert deliver(aws_env)
    assert webhook(client, "GET /webhooks")["url"] == receiver
    client.seen.saw("webhook secret", webhook(client, "POST /webhooks/rotate-secret", body={})["secret"])
    delivered = webhook(client, "GET /webhooks/deliveries")
    assert delivered and {d["status"] for d in delivered} == {"delivered"}, delivered
    path = f"/webhooks/deliveries/{delivered[0]['id']}/retry"
    webhook(client, "POST /webhooks/deliveries/{id}/retry", 202, path)
    assert deliver(aws_env)


def client_credentials_flows(client: Client, provider: FakeAuthorizationServer, aws_env: dict[str, Any]) -> str:
    """OAuth 2.0 client credentials: the customer types a client id and secret into the connect page (a token is
    minted), then the secret and token endpoints, a connection test, the proxy and the jobs each use or mint a
    token; returns the credential's id. Every minted token is noted."""
    partner = FakeClientCredentialsServer(provider.server, prefix="/oauth")  # 9005's token URL: {demoOAuthUrl}/token
    partner.access_token = new_secret("cc-access")
    client_secret = client.seen.saw("customer client secret", new_secret("cc-secret"))
    partner.clients = {"sweep-machine": client_secret}
    link = client.new_link(CLIENT_CREDENTIALS_PARTNER)
    connect_with_form(link, clientId="sweep-machine", clientSecret=client_secret)
    credential_id = client.api("share_links", client.event("get_link", path_id=link["id"]))["data"]["credentialId"]
    client.api("credentials", client.event("read_secret", path_id=credential_id))
    status, tested = run_connection_test(credential_id, client.tenant_id, client.scopes)
    assert status == 200 and tested["data"]["ok"], tested
    assert proxied(client, credential_id, "v1/me")["auth"]["kind"] == "bearer"
    token(client, credential_id, force=True)
    expire_access_token(credential_id)
    assert run_jobs(aws_env) == {"batchItemFailures": []}
    assert partner.token_calls() == 3 and partner.calls[-1]["form"]["grant_type"] == "client_credentials"
    for minted in partner.issued:
        client.seen.saw("access token", minted)
    return credential_id


@contextmanager
def oauth1_provider(consumer: str, secret: str) -> Iterator[OAuth1Server]:
    """The demo OAuth 1.0a provider (infra/local/oauth1_server.py) on 127.0.0.1 as partner 9004, and grantlink's
    callback on a local address (the provider accepts no other); the settings are restored afterwards."""
    server = OAuth1Server({consumer: secret})
    server.start()
    changed = {"GRANTLINK_DEMO_OAUTH1_URL": server.url, "GRANTLINK_OAUTH_REDIRECT_URI": OAUTH1_CALLBACK}
    before = {name: os.environ.get(name) for name in changed}
    os.environ.update(changed)
    config.reset()
    providers.reset()
    try:
        yield server
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        config.reset()
        providers.reset()
        server.stop()


def oauth1_flows(client: Client) -> str:
    """OAuth 1.0a: the tenant's consumer (PUT oauth-app), the connect page's button (request token), the
    customer's approval at the provider, the callback (verifier → access token), then the secret read, a connection
    test and proxied calls (GET, and POST with a form body), all signed; returns the credential's id. Every token,
    secret and verifier the provider issued is noted."""
    consumer_secret = client.seen.saw("OAuth 1.0a consumer secret", new_secret("consumer-secret"))
    with oauth1_provider("sweep-consumer", consumer_secret) as server:
        app = {"clientId": "sweep-consumer", "clientSecret": consumer_secret}
        path = f"/partners/{OAUTH1_PARTNER}/oauth-app"
        client.api("partners", reroute(client.event("get_partner", body=app), "PUT /partners/{id}/oauth-app", path))
        link = client.new_link(OAUTH1_PARTNER)
        page(event("connect_get", query={"id": link["id"], "token": link["token"]}), 200)
        start = reroute(event("connect_post", form={"id": link["id"], "token": link["token"]}),
                        "POST /connect/oauth/start", "/connect/oauth/start")  # fmt: skip
        authorize = page(start, 303, "oauth_callback")["headers"]["Location"]
        request_token = client.seen.saw("request token", parse_qs(urlsplit(authorize).query)["oauth_token"][0])
        form = {"oauth_token": request_token, "decision": "approve"}
        approved = requests.post(f"{server.url}/oauth/authorize", data=form, allow_redirects=False, timeout=10)
        back = dict(parse_qsl(urlsplit(approved.headers["location"]).query))
        client.seen.saw("oauth verifier", back["oauth_verifier"])
        page(reroute(event("connect_get", query=back), "GET /oauth/callback", "/oauth/callback"), 303, "oauth_callback")
        credential_id = client.api("share_links", client.event("get_link", path_id=link["id"]))["data"]["credentialId"]
        client.api("credentials", client.event("read_secret", path_id=credential_id))
        status, tested = run_connection_test(credential_id, client.tenant_id, client.scopes)
        assert status == 200 and tested["data"]["ok"], tested
        assert proxied(client, credential_id, "boards", query={"filter": "open"})["user"]["username"] == "demo-user"
        form_body = {"headers": {"Content-Type": "application/x-www-form-urlencoded"}, "body": "name=card"}
        assert proxied(client, credential_id, "cards", "POST", **form_body)["body"] == "name=card"
        with server.validator.grants.lock:
            grants = server.validator.grants
            for record in grants.request_tokens.values():
                client.seen.saw("request token secret", record.secret)
            for token_value, access in grants.access_tokens.items():
                client.seen.saw("access token", token_value)
                client.seen.saw("token secret", access.secret)
        assert server.stats()["refusals"] == {}, server.stats()
    return str(credential_id)


@contextmanager
def demo_sandbox(url: str) -> Iterator[None]:
    """demo-oauth (9003) with its sandbox environment on `url` (GRANTLINK_DEMO_SANDBOX_OAUTH_URL); restored after."""
    before = os.environ.get("GRANTLINK_DEMO_SANDBOX_OAUTH_URL")
    os.environ["GRANTLINK_DEMO_SANDBOX_OAUTH_URL"] = url
    config.reset()
    providers.reset()
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("GRANTLINK_DEMO_SANDBOX_OAUTH_URL", None)
        else:
            os.environ["GRANTLINK_DEMO_SANDBOX_OAUTH_URL"] = before
        config.reset()
        providers.reset()


def environment_flows(client: Client, provider: FakeAuthorizationServer) -> str:
    """A sandbox link for demo-oauth (9003) asking for a scope beyond its defaults: the page, start, the callback
    (the code goes to the sandbox's token endpoint, faked beside the others, which grants fewer scopes), the
    credential read and a forced refresh, also at the sandbox; returns the credential's id. Every token is noted."""
    sandbox = provider.server.url_for("/sandbox").rstrip("/")
    issued: list[dict[str, str]] = []

    def token_endpoint(request: Request) -> Response:
        answer = {"access_token": new_secret("sandbox-access"), "refresh_token": new_secret("sandbox-refresh")}
        issued.append(answer)
        body = {**answer, "token_type": "Bearer", "expires_in": 3600, "scope": "openid profile"}
        return Response(json.dumps(body), 200, content_type="application/json")

    provider.server.expect_request("/sandbox/token", method="POST").respond_with_handler(token_endpoint)
    with demo_sandbox(sandbox):
        app = {"clientId": "sweep-demo", "clientSecret": client.seen.saw("OAuth client secret", new_secret("demo"))}
        path = f"/partners/{DEMO_OAUTH_PARTNER}/oauth-app"
        client.api("partners", reroute(client.event("get_partner", body=app), "PUT /partners/{id}/oauth-app", path))
        body = {"partnerId": DEMO_OAUTH_PARTNER, "title": "sweep sandbox", "environment": "sandbox",
                "scopes": ["openid", "profile", "demo:write"]}  # fmt: skip
        link = client.api("share_links", client.event("create_link", body=body), 201)["data"]
        client.seen.saw("link token", link["token"])
        shown = page(event("connect_get", query={"id": link["id"], "token": link["token"]}), 200)
        assert "Sandbox" in shown["body"]
        start = reroute(event("connect_post", form={"id": link["id"], "token": link["token"]}),
                        "POST /connect/oauth/start", "/connect/oauth/start")  # fmt: skip
        authorize = page(start, 303, "oauth_callback")["headers"]["Location"]
        assert authorize.startswith(f"{sandbox}/authorize?")
        state = client.seen.saw("state", parse_qs(urlsplit(authorize).query)["state"][0])
        code = client.seen.saw("authorization code", new_secret("sandbox-code"))
        back = reroute(event("connect_get", query={"code": code, "state": state, "iss": sandbox}),
                       "GET /oauth/callback", "/oauth/callback")  # fmt: skip
        page(back, 303, "oauth_callback")
        credential_id = client.api("share_links", client.event("get_link", path_id=link["id"]))["data"]["credentialId"]
        shown = client.api("credentials", client.event("get_credential", path_id=credential_id))["data"]
        assert shown["environment"] == "sandbox" and shown["missingScopes"] == ["demo:write"], shown
        token(client, credential_id, force=True)
    assert len(issued) == 2  # the code exchange and the refresh, both at the sandbox
    for answer in issued:
        client.seen.saw("access token", answer["access_token"])
        client.seen.saw("refresh token", answer["refresh_token"])
    return str(credential_id)


def run_every_flow(
    provider: FakeAuthorizationServer, aws_env: dict[str, Any], delivered_events: Any
) -> tuple[Secrets, dict[str, str]]:
    """Run every flow once; returns what it saw and the ids of the credentials it left (apikey, basic, oauth,
    client_credentials)."""
    seen = Secrets()
    provider.access_token = new_secret("access")
    provider.refresh_token = new_secret("refresh")

    # A tenant and its API key, through the authorizer; its own OAuth client for the fake partner.
    client = Client(seen)
    receiver = register_webhook(client, provider)
    app = {"clientId": "sweep-client", "clientSecret": seen.saw("OAuth client secret", new_secret("client-secret"))}
    oauth_app = f"/partners/{OAUTH_PARTNER}/oauth-app"
    client.api("partners", reroute(client.event("get_partner", body=app), "PUT /partners/{id}/oauth-app", oauth_app))
    client.api("partners", reroute(client.event("get_partner"), "GET /partners/{id}/oauth-app", oauth_app))

    # Share links: create (with an Idempotency-Key, so the idempotency table has a record), get, list, put, delete.
    link = client.new_link(APIKEY_PARTNER, **{"Idempotency-Key": "sweep-order-1"})
    client.api("share_links", client.event("get_link", path_id=link["id"]))
    client.api("share_links", client.event("list_links"))
    again = client.api("share_links", client.event("regenerate_link", path_id=link["id"]))["data"]
    seen.saw("link token", again["token"])
    client.api("share_links", client.event("revoke_link", path_id=link["id"]))

    # The connect page, GET and POST, for an API-key partner and a basic-auth one.
    ids = {}
    for partner, kind, fields in (
        (APIKEY_PARTNER, "submitted api_key", ("apiKey",)),
        (BASIC_PARTNER, "submitted password", ("username", "password")),
    ):
        link = client.new_link(partner)
        values = {name: seen.saw(kind, new_secret("sk_live")) if name != "username" else "ada" for name in fields}
        connect_with_form(link, **values)
        ids[kind] = client.api("share_links", client.event("get_link", path_id=link["id"]))["data"]["credentialId"]
    apikey, basic = ids["submitted api_key"], ids["submitted password"]

    # The credentials API: list, get, secret, rename, audit, test, reauthorize (and connect again), delete.
    client.api("credentials", client.event("list_credentials"))
    for credential_id in (apikey, basic):
        client.api("credentials", client.event("get_credential", path_id=credential_id))
        client.api("credentials", client.event("read_secret", path_id=credential_id))
        client.api("credentials", client.event("update_credential", path_id=credential_id, body={"title": "renamed"}))
        client.api("credentials", client.event("list_audit", path_id=credential_id))
        assert run_connection_test(credential_id, client.tenant_id, client.scopes)[0] == 200
    bound = client.api("credentials", client.event("reauthorize", path_id=apikey, body={}), 201)["data"]
    seen.saw("link token", bound["token"])
    replaced = seen.saw("submitted api_key", new_secret("sk_live"))
    connect_with_form(bound, apiKey=replaced)
    shown = client.api("credentials", client.event("read_secret", path_id=apikey))["data"]["fields"]
    assert shown == {"apiKey": replaced}
    throwaway = client.new_link(APIKEY_PARTNER)
    connect_with_form(throwaway, apiKey=seen.saw("submitted api_key", new_secret("sk_live")))
    gone = client.api("share_links", client.event("get_link", path_id=throwaway["id"]))["data"]["credentialId"]
    client.api("credentials", client.event("delete_credential", path_id=gone))

    # OAuth: start, callback, a secret read, a connection test (the access token goes to the partner), and a read
    # that refreshes first.
    provider.server.expect_request("/me").respond_with_json({"name": "Ada"})
    oauth_link = client.new_link(OAUTH_PARTNER)
    connect_with_oauth(seen, provider, oauth_link)
    oauth_credential = client.api("share_links", client.event("get_link", path_id=oauth_link["id"]))["data"][
        "credentialId"
    ]
    client.api("credentials", client.event("read_secret", path_id=oauth_credential))
    status, tested = run_connection_test(oauth_credential, client.tenant_id, client.scopes)
    assert status == 200 and tested["data"]["ok"], tested
    expire_access_token(oauth_credential)
    client.api("credentials", client.event("read_secret", path_id=oauth_credential))
    assert provider.calls[-1]["grant_type"] == "refresh_token"

    # The proxy: an API key and a login injected for the demo partners' echo, an OAuth token (refreshed first when
    # due) for the fake partner; and the token endpoint, as it is and refreshed on demand.
    for credential_id, kind in ((apikey, "header"), (basic, "basic")):
        echoed = proxied(client, credential_id, "v1/me", "POST", body={"note": "hello"}, query={"page": "2"})
        assert echoed["auth"]["kind"] == kind and echoed["query"] == [["page", "2"]], echoed
    assert proxied(client, oauth_credential, "me") == {"name": "Ada"}
    expire_access_token(oauth_credential)
    assert proxied(client, oauth_credential, "me") == {"name": "Ada"}
    assert provider.calls[-1]["grant_type"] == "refresh_token"
    seen.saw("access token", token(client, oauth_credential)["accessToken"])
    seen.saw("access token", token(client, oauth_credential, force=True)["accessToken"])
    assert provider.calls[-1]["grant_type"] == "refresh_token"

    # The jobs: the sweep and the worker refresh a due token; then the partner refuses the refresh token, and the
    # worker asks for reauthorization with a new link (whose token only the tenant's event carries).
    expire_access_token(oauth_credential)
    assert run_jobs(aws_env) == {"batchItemFailures": []}
    assert provider.calls[-1]["grant_type"] == "refresh_token"
    provider.error = "invalid_grant"
    expire_access_token(oauth_credential)
    assert run_jobs(aws_env) == {"batchItemFailures": []}
    provider.error = None
    (required,) = [e for e in delivered_events() if e["detail-type"] == "credential.reauthorization_required"]
    seen.saw("link token", parse_qs(urlsplit(required["detail"]["reauthorizeLink"]).query)["token"][0])

    client_credentials = client_credentials_flows(client, provider, aws_env)
    oauth1_credential = oauth1_flows(client)
    sandbox_credential = environment_flows(client, provider)
    webhook_flows(client, aws_env, receiver)

    for answer in provider.issued:
        seen.saw("access token", str(answer["access_token"]))
        seen.saw("refresh token", str(answer["refresh_token"]))
    assert set(seen.by_kind) == KINDS, sorted(KINDS - set(seen.by_kind))  # every kind was collected
    ids = {"apikey": apikey, "basic": basic, "oauth": oauth_credential, "client_credentials": client_credentials}
    ids["oauth1"] = oauth1_credential
    ids["sandbox"] = sandbox_credential
    return seen, ids
