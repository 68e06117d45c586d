"""OAuth 1.0a through the link (grantlink.oauth1) against the demo OAuth 1.0a provider (infra/local/oauth1_server.py,
oauthlib's server endpoints over real HTTP on 127.0.0.1), with moto underneath: the three-legged flow, its
refusals, encrypted storage, and signed connection tests and proxied calls that the provider verifies."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
import requests

from grantlink import config, connections, crypto, errors, links, oauth, oauth1, providers, proxy
from grantlink.models import Caller, CreateLinkRequest, CredentialState, LinkStatus, OAuthAppRequest
from grantlink.store import default as default_store
from infra.local.oauth1_server import DEFAULT_USER, OAuth1Server, new_rsa_consumer_key, user_id
from tests.unit.oauth_fakes import A
from tests.unit.test_oauth1_server import Clock  # the provider's clock for request-token expiry

PARTNER = 9004  # demo-oauth1 (providers/demo.json)
RSA_PARTNER = 9104  # the same provider signing with RSA-SHA1 (made here)
CONSUMER, CONSUMER_SECRET = "grantlink-demo-oauth1", "demo-consumer-secret"
RSA_CONSUMER = "grantlink-demo-oauth1-rsa"
CALLBACK = "http://127.0.0.1:3000/oauth/callback"  # the provider accepts local callbacks only
TTL = 120.0


@pytest.fixture(scope="module")
def rsa_keys() -> tuple[str, str]:
    return new_rsa_consumer_key()


@pytest.fixture
def provider_clock() -> Clock:
    return Clock()


@pytest.fixture
def server(
    aws_env: dict[str, Any], monkeypatch: pytest.MonkeyPatch, provider_clock: Clock, rsa_keys: tuple[str, str]
) -> Iterator[OAuth1Server]:
    """The provider, partner 9004 pointing at it, and tenant A's consumer for it."""
    provider = OAuth1Server(
        {CONSUMER: CONSUMER_SECRET}, {RSA_CONSUMER: rsa_keys[1]}, request_token_ttl=TTL, clock=provider_clock
    )
    provider.start()
    monkeypatch.setenv("GRANTLINK_DEMO_OAUTH1_URL", provider.url)
    config.reset()
    providers.reset()
    put_consumer(CONSUMER, CONSUMER_SECRET)
    yield provider
    provider.stop()


def put_consumer(key: str, secret: str, partner: int = PARTNER) -> None:
    oauth.put_app(A, partner, OAuthAppRequest.model_validate({"clientId": key, "clientSecret": secret}), CALLBACK)


def started(partner: int = PARTNER) -> tuple[links.ShareLink, str, str]:
    """A link for the partner, started: the link, its token and the authorize URL."""
    link, token = links.create_link(A, CreateLinkRequest(partnerId=partner, title="Demo account"))
    return link, token, oauth1.start(link.id, token, {}, CALLBACK)


def decide(server: OAuth1Server, authorize_url: str, decision: str = "approve") -> dict[str, str]:
    """The customer presses Approve (or Deny) on the provider's page: the callback's query parameters."""
    token = dict(parse_qsl(urlsplit(authorize_url).query))["oauth_token"]
    form = {"oauth_token": token, "user": DEFAULT_USER, "decision": decision}
    answer = requests.post(f"{server.url}/oauth/authorize", data=form, allow_redirects=False, timeout=5)
    assert answer.status_code == 302, answer.text
    location = answer.headers["location"]
    assert location.startswith(CALLBACK)
    return dict(parse_qsl(urlsplit(location).query))


def connected(server: OAuth1Server, partner: int = PARTNER) -> str:
    link, _, url = started(partner)
    assert oauth1.callback(decide(server, url)).connected
    return links.get_link(A, link.id).credential_id or ""


def issued(server: OAuth1Server) -> tuple[str, str]:
    """The access token the provider issued last, and its secret."""
    with server.validator.grants.lock:
        token, record = list(server.validator.grants.access_tokens.items())[-1]
    return token, record.secret


def test_the_whole_flow_connects_and_keeps_the_token_secret_only_sealed(server: OAuth1Server, table_items: Any) -> None:
    """Given a link for an OAuth 1.0a partner
    When the customer starts, approves at the provider, and comes back with the verifier
    Then the link waits (2) in between, then is granted with an oauth1 credential whose sealed secret holds the
    access token, its secret and the account (user_id, screen_name); no token, token secret, request-token secret
    or consumer secret is in the table in plaintext."""
    link, _, url = started()
    assert links.get_link(A, link.id).status == LinkStatus.WAITING_FOR_OAUTH
    assert url.startswith(f"{server.url}/oauth/authorize?oauth_token=")
    with server.validator.grants.lock:
        request_secret = next(iter(server.validator.grants.request_tokens.values())).secret

    outcome = oauth1.callback(decide(server, url))

    assert outcome.connected and outcome.redirect_to is None
    granted = links.get_link(A, link.id)
    assert granted.status == LinkStatus.GRANTED and granted.credential_id
    credential = default_store().get_credential(granted.credential_id)
    assert credential and credential.auth_type == "oauth1" and credential.environment == "production"
    token, token_secret = issued(server)
    context = crypto.context_for(credential.tenant_id, credential.id, "credential")
    sealed = json.loads(crypto.default().decrypt(bytes(credential.secret), context))
    assert sealed == {
        "v": 1,
        "authType": "oauth1",
        "fields": {
            "oauthToken": token,
            "oauthTokenSecret": token_secret,
            "screenName": DEFAULT_USER,
            "userId": user_id(DEFAULT_USER),
        },
    }
    dump = json.dumps(table_items(), default=str)
    for value in (token, token_secret, request_secret, CONSUMER_SECRET):
        assert value not in dump
    assert not [item for item in table_items() if item["pk"]["S"].startswith("OAUTH#")]  # the flow is spent


def test_the_secret_endpoint_returns_the_token_and_its_secret(server: OAuth1Server) -> None:
    """Given a connected OAuth 1.0a credential
    When the tenant reads its secret
    Then it gets oauthToken and oauthTokenSecret (and the account), never the consumer secret."""
    credential_id = connected(server)
    shown = connections.read_secret(A, credential_id)
    token, token_secret = issued(server)
    assert shown.authType == "oauth1"
    assert shown.fields["oauthToken"] == token and shown.fields["oauthTokenSecret"] == token_secret
    assert CONSUMER_SECRET not in json.dumps(shown.fields)


def test_the_token_endpoint_says_oauth1_tokens_do_not_expire(server: OAuth1Server) -> None:
    """Given a connected OAuth 1.0a credential
    When the tenant asks for its access token (GET /credentials/{id}/token)
    Then it is a 409 not_an_oauth_credential saying OAuth 1.0a tokens do not expire."""
    credential_id = connected(server)
    with pytest.raises(errors.Conflict) as refused:
        connections.current_token(A, credential_id)
    assert refused.value.code == "not_an_oauth_credential" and "do not expire" in refused.value.message


def test_a_wrong_consumer_secret_leaves_the_link_waiting_with_the_reason(server: OAuth1Server) -> None:
    """Given the tenant's consumer secret is wrong
    When the customer starts
    Then the provider refuses the signature, the customer is told, the link stays at 0 with the reason, and no
    credential or flow is written."""
    put_consumer(CONSUMER, "not-the-consumer-secret")
    link, token = links.create_link(A, CreateLinkRequest(partnerId=PARTNER, title="Demo account"))

    with pytest.raises(errors.BadRequest) as refused:
        oauth1.start(link.id, token, {}, CALLBACK)

    assert refused.value.code == "oauth1_refused" and "bad_signature" in refused.value.message
    assert server.stats()["refusals"] == {"bad_signature": 1}
    back = links.get_link(A, link.id)
    assert back.status == LinkStatus.WAITING and "refused (bad_signature)" in (back.last_error or "")
    assert connections.list_credentials(A, None, None, 20, None)[1].totalItemsCount == 0


def test_a_replayed_callback_is_refused_before_the_provider_is_called(server: OAuth1Server) -> None:
    """Given a flow that has completed
    When the same callback (request token and verifier) arrives again
    Then it is refused (bad_oauth_token) without any call to the provider's access-token endpoint."""
    _, _, url = started()
    params = decide(server, url)
    assert oauth1.callback(params).connected
    calls = server.stats()["accessToken"]

    with pytest.raises(errors.BadRequest) as refused:
        oauth1.callback(params)

    assert refused.value.code == "bad_oauth_token"
    assert server.stats()["accessToken"] == calls == 1


def test_an_unknown_request_token_is_refused_before_the_provider_is_called(server: OAuth1Server) -> None:
    """Given a started flow
    When a callback names a request token grantlink never issued
    Then it is refused, the provider is not called, and the real flow still waits."""
    link, _, _ = started()
    with pytest.raises(errors.BadRequest):
        oauth1.callback({"oauth_token": "forged-request-token", "oauth_verifier": "forged-verifier"})
    assert "accessToken" not in server.stats()
    assert links.get_link(A, link.id).status == LinkStatus.WAITING_FOR_OAUTH


def test_a_request_token_expired_at_the_provider_puts_the_link_back(
    server: OAuth1Server, provider_clock: Clock
) -> None:
    """Given an approved flow whose request token then expires at the provider
    When the customer comes back with the verifier
    Then the provider refuses the exchange, the link is back at 0 with the reason, and no credential exists."""
    link, _, url = started()
    params = decide(server, url)
    provider_clock.advance(TTL + 1)

    outcome = oauth1.callback(params)

    assert not outcome.connected and "expired_request_token" in (outcome.problem or "")
    back = links.get_link(A, link.id)
    assert back.status == LinkStatus.WAITING and "expired_request_token" in (back.last_error or "")
    assert server.stats()["refusals"] == {"expired_request_token": 1}
    assert connections.list_credentials(A, None, None, 20, None)[1].totalItemsCount == 0


def test_a_flow_past_grantlinks_own_expiry_is_refused_before_the_provider_is_called(
    server: OAuth1Server, clock: Any
) -> None:
    """Given an approved flow whose flow record has expired (GRANTLINK_OAUTH_FLOW_TTL_SECONDS)
    When the customer comes back
    Then the callback is refused without calling the provider."""
    _, _, url = started()
    params = decide(server, url)
    clock.advance(seconds=config.settings().oauth_flow_ttl_seconds + 1)
    with pytest.raises(errors.BadRequest) as refused:
        oauth1.callback(params)
    assert refused.value.code == "bad_oauth_token" and "accessToken" not in server.stats()


def test_a_denial_puts_the_link_back_with_the_reason(server: OAuth1Server) -> None:
    """Given a started flow
    When the customer presses Deny at the provider
    Then the link is back at 0 with "access was denied", and the provider's token endpoint is never called."""
    link, _, url = started()
    params = decide(server, url, "deny")
    assert "denied" in params and "oauth_verifier" not in params

    outcome = oauth1.callback(params)

    assert not outcome.connected and "denied" in (outcome.problem or "")
    back = links.get_link(A, link.id)
    assert back.status == LinkStatus.WAITING and back.last_error == "access was denied"
    assert "accessToken" not in server.stats()


def test_a_connection_test_is_signed_and_verified_by_the_provider(server: OAuth1Server) -> None:
    """Given a connected OAuth 1.0a credential
    When it is tested
    Then the provider verifies the signature (consumer and token) and the account name comes back."""
    credential_id = connected(server)
    result = connections.test_credential(A, credential_id)
    assert result.ok and result.account_name == DEFAULT_USER, result
    assert server.stats().get("refusals") == {}


def test_a_token_revoked_at_the_provider_makes_the_test_ask_for_reauthorization(server: OAuth1Server) -> None:
    """Given a connected credential whose access token the provider then revokes
    When it is tested
    Then the test says invalid_credentials and the credential moves to reauthorization_required."""
    credential_id = connected(server)
    assert server.revoke(DEFAULT_USER) == 1

    result = connections.test_credential(A, credential_id)

    assert result.category == "invalid_credentials" and result.http_status == 401
    stored = default_store().get_credential(credential_id)
    assert stored and stored.state == CredentialState.REAUTHORIZATION_REQUIRED


def test_proxied_calls_are_signed_query_and_form_body_included(server: OAuth1Server) -> None:
    """Given a connected OAuth 1.0a credential
    When the tenant proxies a GET with a query and a POST with a form body
    Then the provider verifies both signatures (the form body is part of the signature base string) and sees
    what was sent, signed by the tenant's consumer for the customer's account."""
    credential_id = connected(server)
    got = proxy.forward(A, credential_id, "GET", "boards/1", [("filter", "open")], {}, b"")
    form = {"content-type": "application/x-www-form-urlencoded"}
    posted = proxy.forward(A, credential_id, "POST", "cards", [], form, b"name=New+card&pos=top")

    assert got.status == 200 and posted.status == 200, (got.body, posted.body)
    seen_get, seen_post = json.loads(got.body), json.loads(posted.body)
    assert seen_get["path"] == "/boards/1" and seen_get["query"] == {"filter": ["open"]}
    assert seen_post["body"] == "name=New+card&pos=top" and seen_post["consumer"] == CONSUMER
    assert seen_post["user"]["username"] == DEFAULT_USER
    assert server.stats().get("refusals") == {}


@pytest.mark.parametrize("body", ["name=Café".encode(), b"name=a b", b"name=%ZZ"])
def test_a_form_body_that_cannot_be_signed_is_a_400_and_reaches_no_partner(server: OAuth1Server, body: bytes) -> None:
    """Given a connected OAuth 1.0a credential
    When the tenant proxies a form-encoded POST whose body does not decode (raw UTF-8, a space, a bad escape)
    Then the answer is 400 invalid_proxy_body (its signature would cover those parameters), not a 500, and the
    provider sees no call."""
    credential_id = connected(server)
    before = server.stats().get("resource", 0)

    with pytest.raises(errors.BadRequest) as refused:
        proxy.forward(
            A, credential_id, "POST", "cards", [], {"content-type": "application/x-www-form-urlencoded"}, body
        )

    assert refused.value.code == "invalid_proxy_body"
    assert server.stats().get("resource", 0) == before


def test_reauthorizing_replaces_the_tokens_and_keeps_the_id(server: OAuth1Server) -> None:
    """Given a connected OAuth 1.0a credential
    When a reauthorize link for it is completed through the provider
    Then the credential keeps its id with a new secret (a new access token), and there is still one."""
    from grantlink.models import ReauthorizeRequest

    credential_id = connected(server)
    before = default_store().get_credential(credential_id)
    link, token = connections.reauthorize(A, credential_id, ReauthorizeRequest.model_validate({}))

    assert oauth1.callback(decide(server, oauth1.start(link.id, token, {}, CALLBACK))).connected

    after = default_store().get_credential(credential_id)
    assert before and after and after.secret_id != before.secret_id
    assert connections.read_secret(A, credential_id).fields["oauthToken"] == issued(server)[0]
    assert links.get_link(A, link.id).credential_id == credential_id
    assert connections.list_credentials(A, None, None, 20, None)[1].totalItemsCount == 1


def test_the_flow_emits_waiting_and_completed_events(server: OAuth1Server, delivered_events: Any) -> None:
    """Given a link for an OAuth 1.0a partner
    When the flow runs to the end
    Then share.waiting_for_oauth and share.completed are emitted for it, holding no token."""
    link, _, url = started()
    oauth1.callback(decide(server, url))
    seen = delivered_events()
    kinds = [e["detail-type"] for e in seen if e["detail"].get("linkId") == link.id]
    assert kinds == ["share.waiting_for_oauth", "share.completed"]
    assert issued(server)[1] not in json.dumps(seen)


@pytest.fixture
def rsa_partner(server: OAuth1Server, monkeypatch: pytest.MonkeyPatch) -> int:
    """Partner 9104: demo-oauth1 with RSA-SHA1 signatures (the provider knows the RSA consumer's public key)."""
    base = providers.get(PARTNER)
    assert base.oauth1 is not None
    partner = base.model_copy(
        update={"id": RSA_PARTNER, "slug": "demo-oauth1-rsa", "oauth1": base.oauth1.model_copy(
            update={"signature_method": "RSA-SHA1"})}
    )  # fmt: skip
    real_find = providers.find
    monkeypatch.setattr(providers, "find", lambda pid: partner if pid == RSA_PARTNER else real_find(pid))
    monkeypatch.setattr(providers, "get", lambda pid: partner if pid == RSA_PARTNER else real_find(pid))
    return RSA_PARTNER


def test_an_rsa_sha1_partner_takes_a_pem_private_key_and_signs_with_it(
    server: OAuth1Server, rsa_partner: int, rsa_keys: tuple[str, str]
) -> None:
    """Given an RSA-SHA1 partner
    When the tenant sets a consumer secret that is not a PEM RSA private key, then the consumer's private key
    Then the first is refused (422 invalid_consumer_key); with the key, the whole flow and a connection test
    are signed RSA-SHA1 and verified by the provider with the public key."""
    with pytest.raises(errors.UnprocessableEntity) as refused:
        put_consumer(RSA_CONSUMER, "not-a-private-key", rsa_partner)
    assert refused.value.code == "invalid_consumer_key"
    put_consumer(RSA_CONSUMER, rsa_keys[0], rsa_partner)

    credential_id = connected(server, rsa_partner)

    assert connections.test_credential(A, credential_id).ok
    assert server.stats().get("refusals") == {}


def test_oauth_apps_for_oauth1_partners_never_show_the_consumer_secret(server: OAuth1Server, table_items: Any) -> None:
    """Given the tenant's consumer for an OAuth 1.0a partner
    When it is read back
    Then the consumer key and the callback URL show, the secret neither there nor in the table."""
    shown = oauth.get_app(A, PARTNER, CALLBACK).model_dump()
    assert shown["clientId"] == CONSUMER and shown["redirectUri"] == CALLBACK and shown["source"] == "tenant"
    assert CONSUMER_SECRET not in json.dumps(shown) and CONSUMER_SECRET not in json.dumps(table_items(), default=str)
    with pytest.raises(errors.NotFound):
        oauth.get_app(Caller("tnt_b"), PARTNER, CALLBACK)


def operator_consumers(monkeypatch: pytest.MonkeyPatch, document: dict[str, Any]) -> None:
    """The operator's default apps (GRANTLINK_DEFAULT_OAUTH_APPS_SECRET) as `document`, read afresh."""
    import boto3

    from grantlink import oauth_apps

    arn = boto3.client("secretsmanager").create_secret(Name="grantlink/apps", SecretString=json.dumps(document))["ARN"]
    monkeypatch.setenv("GRANTLINK_DEFAULT_OAUTH_APPS_SECRET", arn)
    config.reset()
    oauth_apps.reset()
    monkeypatch.setattr(oauth_apps, "_loaded", {})


def test_the_operators_default_consumer_connects_a_tenant_without_its_own(
    server: OAuth1Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Given the operator's default consumer for 9004 and a tenant with no consumer of its own
    When its customer connects and the credential is tested
    Then both are signed with the operator's consumer, which the provider accepts."""
    oauth.delete_app(A, PARTNER)
    operator_consumers(monkeypatch, {str(PARTNER): {"clientId": CONSUMER, "clientSecret": CONSUMER_SECRET}})
    assert oauth.get_app(A, PARTNER, CALLBACK).source == "operator"

    credential_id = connected(server)

    assert connections.test_credential(A, credential_id).ok
    assert server.stats().get("refusals") == {}


def test_an_operator_default_for_an_rsa_partner_must_hold_a_private_key(
    server: OAuth1Server, rsa_partner: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Given the operator's defaults with a consumer secret for an RSA-SHA1 partner that is no PEM private key
    When an app is needed for that partner
    Then the configuration is refused as a whole (503), naming where, never the value."""
    operator_consumers(monkeypatch, {str(rsa_partner): {"clientId": RSA_CONSUMER, "clientSecret": "not-a-key-value"}})
    with pytest.raises(errors.ServiceUnavailable):
        oauth.get_app(A, rsa_partner, CALLBACK)


def test_a_request_token_presented_as_an_oauth2_state_spends_nothing(server: OAuth1Server) -> None:
    """Given a started OAuth 1.0a flow (its request token is in the customer's authorize URL)
    When someone presents that request token as an OAuth 2.0 `state` at the same callback, with a code
    Then it is refused as an unknown sign-in before any partner call, the link still waits for the customer, and the
    customer's own OAuth 1.0a callback then connects."""
    link, _, url = started()
    request_token = dict(parse_qsl(urlsplit(url).query))["oauth_token"]

    with pytest.raises(errors.BadRequest) as refused:
        oauth.callback({"state": request_token, "code": "forged"}, CALLBACK)

    assert refused.value.code == "bad_state"
    assert links.get_link(A, link.id).status == LinkStatus.WAITING_FOR_OAUTH
    assert oauth1.callback(decide(server, url)).connected
