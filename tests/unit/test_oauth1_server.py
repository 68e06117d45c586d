"""The demo OAuth 1.0a provider (infra/local/oauth1_server.py) over real HTTP on 127.0.0.1, with
requests-oauthlib's OAuth1Session and OAuth1 as the consumer: the three-legged dance and every refusal."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, parse_qsl, urlsplit

import pytest
import requests
from requests_oauthlib import OAuth1, OAuth1Session

from infra.local.oauth1_server import DEFAULT_USER, OAuth1Server, new_rsa_consumer_key, user_id
from tests.tls import make_ca_and_cert, server_context

CONSUMER, SECRET = "grantlink-demo-oauth1", "demo-consumer-secret"
RSA_CONSUMER = "grantlink-demo-oauth1-rsa"
CALLBACK = "http://127.0.0.1:8080/oauth1/callback"
TTL = 60.0


class Clock:
    """The provider's clock for request-token expiry; a test moves it instead of sleeping."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture(scope="module")
def rsa_key() -> tuple[str, str]:
    return new_rsa_consumer_key()


@pytest.fixture(scope="module")
def clock() -> Clock:
    return Clock()


@pytest.fixture(scope="module")
def provider(rsa_key: tuple[str, str], clock: Clock) -> Iterator[OAuth1Server]:
    server = OAuth1Server({CONSUMER: SECRET}, {RSA_CONSUMER: rsa_key[1]}, request_token_ttl=TTL, clock=clock)
    server.start()
    yield server
    server.stop()


def consumer(**overrides: Any) -> OAuth1Session:
    options: dict[str, Any] = {"client_key": CONSUMER, "client_secret": SECRET, "callback_uri": CALLBACK}
    return OAuth1Session(**{**options, **overrides})


def approve(provider: OAuth1Server, token: str, user: str = DEFAULT_USER) -> str:
    """The user presses Approve on the consent page: answers the callback URL the provider redirects to."""
    form = {"oauth_token": token, "user": user, "decision": "approve"}
    answer = requests.post(f"{provider.url}/oauth/authorize", data=form, allow_redirects=False, timeout=5)
    assert answer.status_code == 302, answer.text
    return str(answer.headers["location"])


def authorized(provider: OAuth1Server, session: OAuth1Session, user: str = DEFAULT_USER) -> dict[str, str]:
    """Request token and approval: the session now holds the request token and its verifier."""
    token = session.fetch_request_token(f"{provider.url}/oauth/request_token")
    return dict(session.parse_authorization_response(approve(provider, token["oauth_token"], user)))


def connected(provider: OAuth1Server, user: str = DEFAULT_USER, **overrides: Any) -> tuple[OAuth1Session, dict]:
    """The whole dance: a session signed with the access token, and the access token answer."""
    session = consumer(**overrides)
    authorized(provider, session, user)
    return session, dict(session.fetch_access_token(f"{provider.url}/oauth/access_token"))


def problem(answer: requests.Response) -> str:
    if answer.headers["content-type"].startswith("application/json"):
        return str(answer.json()["oauth_problem"])
    return dict(parse_qsl(answer.text))["oauth_problem"]


def signed(key: str = CONSUMER, secret: str = SECRET, **options: Any) -> OAuth1:
    return OAuth1(key, client_secret=secret, **options)


def test_the_three_legged_dance_reaches_the_account_that_approved(provider: OAuth1Server) -> None:
    """Given a consumer with the right key and secret (HMAC-SHA1)
    When it gets a request token, alice approves and it exchanges the verifier
    Then the answer names alice (screen_name, user_id) and /api/me, signed with the access token, is alice's."""
    session, access = connected(provider, user="alice")
    assert (access["screen_name"], access["user_id"]) == ("alice", user_id("alice"))
    me = session.get(f"{provider.url}/api/me", timeout=5)
    assert me.status_code == 200
    assert me.json() == {"id": user_id("alice"), "username": "alice"}


def test_the_request_token_answer_confirms_the_callback(provider: OAuth1Server) -> None:
    """Given a request-token call with a local callback
    Then the form-encoded answer carries a token, its secret and oauth_callback_confirmed=true."""
    answer = requests.post(f"{provider.url}/oauth/request_token", auth=signed(callback_uri=CALLBACK), timeout=5)
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "application/x-www-form-urlencoded"
    form = dict(parse_qsl(answer.text))
    assert form["oauth_callback_confirmed"] == "true" and form["oauth_token"] and form["oauth_token_secret"]


def test_hmac_sha256_signatures_work(provider: OAuth1Server) -> None:
    """Given a consumer signing with HMAC-SHA256 Then the dance completes and /api/me answers."""
    session, _ = connected(provider, signature_method="HMAC-SHA256")
    assert session.get(f"{provider.url}/api/me", timeout=5).json()["username"] == DEFAULT_USER


def test_rsa_sha1_signatures_are_checked_with_the_consumer_s_public_key(
    provider: OAuth1Server, rsa_key: tuple[str, str]
) -> None:
    """Given the RSA consumer signing with its private key (RSA-SHA1)
    Then the dance completes, and /api/me answers with the consumer's access token."""
    session, _ = connected(
        provider, client_key=RSA_CONSUMER, client_secret=None, rsa_key=rsa_key[0], signature_method="RSA-SHA1"
    )
    assert session.get(f"{provider.url}/api/me", timeout=5).status_code == 200


def test_an_rsa_signature_from_another_key_is_refused(provider: OAuth1Server) -> None:
    """Given a request signed for the RSA consumer with a key that is not its own Then it is refused (401)."""
    stranger = new_rsa_consumer_key()[0]
    auth = OAuth1(RSA_CONSUMER, rsa_key=stranger, signature_method="RSA-SHA1", callback_uri=CALLBACK)
    answer = requests.post(f"{provider.url}/oauth/request_token", auth=auth, timeout=5)
    assert (answer.status_code, problem(answer)) == (401, "bad_signature")


def test_an_hmac_signature_for_the_rsa_consumer_is_refused(provider: OAuth1Server) -> None:
    """Given the RSA consumer's key used with HMAC-SHA1 (it has no shared secret) Then it is refused (401)."""
    answer = requests.post(
        f"{provider.url}/oauth/request_token", auth=signed(RSA_CONSUMER, "", callback_uri=CALLBACK), timeout=5
    )
    assert (answer.status_code, problem(answer)) == (401, "bad_signature")


def test_a_wrong_consumer_secret_is_refused_at_every_endpoint(provider: OAuth1Server) -> None:
    """Given the right consumer key with a wrong secret
    Then the request-token, access-token and protected-resource endpoints each answer 401 bad_signature."""
    wrong = "not-the-consumer-secret"
    request_token = requests.post(
        f"{provider.url}/oauth/request_token", auth=signed(secret=wrong, callback_uri=CALLBACK), timeout=5
    )
    assert (request_token.status_code, problem(request_token)) == (401, "bad_signature")
    session = consumer()
    granted = authorized(provider, session)
    exchange = requests.post(
        f"{provider.url}/oauth/access_token",
        auth=signed(
            secret=wrong,
            resource_owner_key=granted["oauth_token"],
            resource_owner_secret=session.auth.client.resource_owner_secret,
            verifier=granted["oauth_verifier"],
        ),
        timeout=5,
    )
    assert (exchange.status_code, problem(exchange)) == (401, "bad_signature")
    _, access = connected(provider)
    me = requests.get(
        f"{provider.url}/api/me",
        auth=signed(
            secret=wrong, resource_owner_key=access["oauth_token"], resource_owner_secret=access["oauth_token_secret"]
        ),
        timeout=5,
    )
    assert (me.status_code, problem(me)) == (401, "bad_signature")


def test_a_bad_signature_does_not_spend_the_verifier(provider: OAuth1Server) -> None:
    """Given an exchange refused for its signature
    When the real consumer then exchanges the same verifier Then it gets its token credentials."""
    session = consumer()
    granted = authorized(provider, session)
    forged = signed(
        secret="forged",
        resource_owner_key=granted["oauth_token"],
        resource_owner_secret="x",
        verifier=granted["oauth_verifier"],
    )
    assert requests.post(f"{provider.url}/oauth/access_token", auth=forged, timeout=5).status_code == 401
    assert session.fetch_access_token(f"{provider.url}/oauth/access_token")["oauth_token"]


def test_a_verifier_works_once(provider: OAuth1Server) -> None:
    """Given a verifier already exchanged for token credentials
    When the consumer presents it again Then the provider refuses (401, the request token is spent)."""
    session = consumer()
    granted = authorized(provider, session)
    exchange = signed(
        resource_owner_key=granted["oauth_token"],
        resource_owner_secret=session.auth.client.resource_owner_secret,
        verifier=granted["oauth_verifier"],
    )
    assert requests.post(f"{provider.url}/oauth/access_token", auth=exchange, timeout=5).status_code == 200
    again = requests.post(f"{provider.url}/oauth/access_token", auth=exchange, timeout=5)
    assert (again.status_code, problem(again)) == (401, "spent_request_token")


def test_two_exchanges_racing_past_validation_get_one_token(
    provider: OAuth1Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Given one approved request token and two exchanges of its verifier that both pass validation
    (held at a barrier until both have) When they go on Then exactly one gets token credentials."""
    session = consumer()
    granted = authorized(provider, session)
    secret = session.auth.client.resource_owner_secret
    both_validated = threading.Barrier(2, timeout=5)
    validate = provider.validator.validate_verifier

    def validate_then_wait(*args: Any) -> bool:
        valid = bool(validate(*args))
        both_validated.wait()
        return valid

    monkeypatch.setattr(provider.validator, "validate_verifier", validate_then_wait)

    def exchange(_: int) -> int:
        auth = signed(
            resource_owner_key=granted["oauth_token"], resource_owner_secret=secret, verifier=granted["oauth_verifier"]
        )
        return requests.post(f"{provider.url}/oauth/access_token", auth=auth, timeout=10).status_code

    with ThreadPoolExecutor(max_workers=2) as pool:
        statuses = sorted(pool.map(exchange, range(2)))
    assert statuses == [200, 401]


def test_a_verifier_is_bound_to_its_request_token(provider: OAuth1Server) -> None:
    """Given two approved request tokens When one is exchanged with the other's verifier Then it is refused."""
    first, second = consumer(), consumer()
    one, two = authorized(provider, first), authorized(provider, second)
    crossed = signed(
        resource_owner_key=one["oauth_token"],
        resource_owner_secret=first.auth.client.resource_owner_secret,
        verifier=two["oauth_verifier"],
    )
    answer = requests.post(f"{provider.url}/oauth/access_token", auth=crossed, timeout=5)
    assert (answer.status_code, problem(answer)) == (401, "bad_verifier")


def test_an_expired_request_token_is_refused(provider: OAuth1Server, clock: Clock) -> None:
    """Given an approved request token When the provider's clock passes its lifetime
    Then the exchange is refused (401 expired) and the consent page no longer serves it."""
    session = consumer()
    authorized(provider, session)
    unapproved = consumer().fetch_request_token(f"{provider.url}/oauth/request_token")["oauth_token"]
    clock.advance(TTL + 1)
    answer = requests.post(f"{provider.url}/oauth/access_token", auth=session.auth, timeout=5)
    assert (answer.status_code, problem(answer)) == (401, "expired_request_token")
    page = requests.get(f"{provider.url}/oauth/authorize", params={"oauth_token": unapproved}, timeout=5)
    assert page.status_code == 400


def test_a_request_token_lives_until_its_lifetime(provider: OAuth1Server, clock: Clock) -> None:
    """Given an approved request token When the clock stands just short of its lifetime Then it is exchanged."""
    session = consumer()
    authorized(provider, session)
    clock.advance(TTL - 1)
    assert session.fetch_access_token(f"{provider.url}/oauth/access_token")["oauth_token"]


def test_a_replayed_nonce_is_refused(provider: OAuth1Server) -> None:
    """Given a signed /api/me request that succeeded
    When the very same nonce and timestamp are sent again with the same token Then the replay is refused (401)."""
    _, access = connected(provider)
    fixed = {"nonce": "replayednonce0123456789", "timestamp": str(int(time.time()))}
    auth = signed(resource_owner_key=access["oauth_token"], resource_owner_secret=access["oauth_token_secret"], **fixed)
    assert requests.get(f"{provider.url}/api/me", auth=auth, timeout=5).status_code == 200
    replay = requests.get(f"{provider.url}/api/me", auth=auth, timeout=5)
    assert (replay.status_code, problem(replay)) == (401, "replayed_nonce")


def test_a_replayed_request_token_call_is_refused(provider: OAuth1Server) -> None:
    """Given a request-token call that succeeded When it is replayed byte for byte Then the replay is refused."""
    auth = signed(callback_uri=CALLBACK, nonce="requesttokennonce0123456", timestamp=str(int(time.time())))
    assert requests.post(f"{provider.url}/oauth/request_token", auth=auth, timeout=5).status_code == 200
    replay = requests.post(f"{provider.url}/oauth/request_token", auth=auth, timeout=5)
    assert (replay.status_code, problem(replay)) == (401, "replayed_nonce")


def test_a_stale_timestamp_is_refused(provider: OAuth1Server) -> None:
    """Given a request signed with a timestamp an hour old Then it is refused as invalid (400)."""
    stale = signed(callback_uri=CALLBACK, timestamp=str(int(time.time()) - 3600))
    answer = requests.post(f"{provider.url}/oauth/request_token", auth=stale, timeout=5)
    assert answer.status_code == 400 and dict(parse_qsl(answer.text))["error"] == "invalid_request"


def test_an_unknown_consumer_is_refused(provider: OAuth1Server) -> None:
    """Given a consumer key the provider never registered Then the request token call is refused (401)."""
    answer = requests.post(
        f"{provider.url}/oauth/request_token",
        auth=signed("stranger-consumer", SECRET, callback_uri=CALLBACK),
        timeout=5,
    )
    assert (answer.status_code, problem(answer)) == (401, "unknown_consumer")


@pytest.mark.parametrize(
    "callback", ["https://evil.example.com/cb", "http://10.0.0.1/cb", "oob", "javascript:alert(1)"]
)
def test_a_callback_off_this_machine_is_refused(provider: OAuth1Server, callback: str) -> None:
    """Given a callback that is not http(s) on 127.0.0.1/localhost Then no request token is issued (401)."""
    answer = requests.post(f"{provider.url}/oauth/request_token", auth=signed(callback_uri=callback), timeout=5)
    assert (answer.status_code, problem(answer)) == (401, "bad_callback")


def test_a_request_token_call_without_a_callback_is_refused(provider: OAuth1Server) -> None:
    """Given a request-token call with no oauth_callback Then it is refused as invalid (400)."""
    answer = requests.post(f"{provider.url}/oauth/request_token", auth=signed(), timeout=5)
    assert answer.status_code == 400 and dict(parse_qsl(answer.text))["error"] == "invalid_request"


def test_the_consent_page_asks_and_offers_approve_and_deny(provider: OAuth1Server) -> None:
    """Given a fresh request token When the user opens the authorize URL
    Then the page asks to allow the consumer, posts the token back with Approve or Deny, and is not cached."""
    token = consumer().fetch_request_token(f"{provider.url}/oauth/request_token")["oauth_token"]
    page = requests.get(f"{provider.url}/oauth/authorize", params={"oauth_token": token}, timeout=5)
    assert page.status_code == 200
    assert f"Allow {CONSUMER} to access your demo account?" in page.text
    assert f'name="oauth_token" value="{token}"' in page.text
    assert 'value="approve"' in page.text and 'value="deny"' in page.text
    assert 'method="post" action="/oauth/authorize"' in page.text
    assert page.headers["cache-control"] == "no-store" and page.headers["referrer-policy"] == "no-referrer"


def test_auto_approve_redirects_with_a_verifier(provider: OAuth1Server) -> None:
    """Given ?auto=approve&user=bob on the authorize URL
    Then the provider redirects straight to the callback with the token and a verifier, for bob."""
    session = consumer()
    token = session.fetch_request_token(f"{provider.url}/oauth/request_token")["oauth_token"]
    answer = requests.get(
        f"{provider.url}/oauth/authorize",
        params={"oauth_token": token, "auto": "approve", "user": "bob"},
        allow_redirects=False,
        timeout=5,
    )
    assert answer.status_code == 302 and answer.headers["location"].startswith(CALLBACK + "?")
    query = parse_qs(urlsplit(answer.headers["location"]).query)
    assert query["oauth_token"] == [token] and query["oauth_verifier"]
    session.parse_authorization_response(answer.headers["location"])
    assert session.fetch_access_token(f"{provider.url}/oauth/access_token")["screen_name"] == "bob"


def test_deny_redirects_with_denied_and_kills_the_token(provider: OAuth1Server) -> None:
    """Given a fresh request token When the user presses Deny
    Then the provider redirects to the callback with denied=<token> and no verifier, and the token is dead."""
    token = consumer().fetch_request_token(f"{provider.url}/oauth/request_token")["oauth_token"]
    form = {"oauth_token": token, "decision": "deny"}
    answer = requests.post(f"{provider.url}/oauth/authorize", data=form, allow_redirects=False, timeout=5)
    assert answer.status_code == 302
    assert parse_qs(urlsplit(answer.headers["location"]).query) == {"denied": [token]}
    late = requests.post(
        f"{provider.url}/oauth/authorize", data={**form, "decision": "approve"}, allow_redirects=False, timeout=5
    )
    assert late.status_code == 400


def test_a_request_token_is_approved_once(provider: OAuth1Server) -> None:
    """Given an approved request token When Approve is pressed again Then no second verifier is minted (400)."""
    token = consumer().fetch_request_token(f"{provider.url}/oauth/request_token")["oauth_token"]
    approve(provider, token)
    form = {"oauth_token": token, "decision": "approve"}
    again = requests.post(f"{provider.url}/oauth/authorize", data=form, allow_redirects=False, timeout=5)
    assert again.status_code == 400


def test_each_grant_gets_new_token_credentials(provider: OAuth1Server) -> None:
    """Given the same consumer and account connected twice Then each grant has its own token and secret."""
    _, first = connected(provider, user="carol")
    _, second = connected(provider, user="carol")
    assert first["oauth_token"] != second["oauth_token"]
    assert first["oauth_token_secret"] != second["oauth_token_secret"]


def test_a_revoked_account_s_tokens_stop_working(provider: OAuth1Server) -> None:
    """Given dave and erin connected When dave's access is revoked at the provider (POST /_admin/revoke)
    Then /api/me answers 401 for dave's token and still 200 for erin's."""
    dave, _ = connected(provider, user="dave")
    erin, _ = connected(provider, user="erin")
    revoked = requests.post(f"{provider.url}/_admin/revoke", params={"user": "dave"}, timeout=5)
    assert revoked.json() == {"user": "dave", "revoked": 1}
    refused = dave.get(f"{provider.url}/api/me", timeout=5)
    assert (refused.status_code, problem(refused)) == (401, "revoked_access_token")
    assert refused.headers["www-authenticate"].startswith("OAuth")
    assert erin.get(f"{provider.url}/api/me", timeout=5).status_code == 200


def test_an_unsigned_resource_request_is_401_json(provider: OAuth1Server) -> None:
    """Given /api/me without any OAuth parameters Then it answers 401 JSON."""
    answer = requests.get(f"{provider.url}/api/me", timeout=5)
    assert answer.status_code == 401 and answer.json()["error"] == "unauthorized"


def test_a_request_token_is_no_access_token(provider: OAuth1Server) -> None:
    """Given a consumer holding only an approved request token When it calls /api/me with it Then 401."""
    session = consumer()
    authorized(provider, session)
    answer = session.get(f"{provider.url}/api/me", timeout=5)
    assert (answer.status_code, problem(answer)) == (401, "unknown_access_token")


def test_the_echo_says_what_arrived_and_who_signed_it_but_no_secret(provider: OAuth1Server) -> None:
    """Given a connected consumer When it sends PUT /api/echo/boards/1?fields=name with a JSON body
    Then the echo shows the method, path, query, body, consumer and user, and neither secret."""
    session, access = connected(provider, user="frank")
    answer = session.put(f"{provider.url}/api/echo/boards/1?fields=name", json={"name": "Q4"}, timeout=5)
    assert answer.status_code == 200
    echo = answer.json()
    assert (echo["method"], echo["path"], echo["query"]) == ("PUT", "/boards/1", {"fields": ["name"]})
    assert echo["body"] == '{"name": "Q4"}' and echo["consumer"] == CONSUMER
    assert echo["user"] == {"id": user_id("frank"), "username": "frank"}
    assert SECRET not in answer.text and access["oauth_token_secret"] not in answer.text


def test_the_stats_count_calls_and_refusals_by_reason(provider: OAuth1Server) -> None:
    """Given a full dance and one unknown-consumer call Then the counts grow by exactly those calls."""
    before = provider.stats()
    session, _ = connected(provider)
    session.get(f"{provider.url}/api/me", timeout=5)
    requests.post(
        f"{provider.url}/oauth/request_token", auth=signed("nobody-here", "x", callback_uri=CALLBACK), timeout=5
    )
    after = provider.stats()
    for call, grew in (("requestToken", 2), ("authorize", 1), ("accessToken", 1), ("resource", 1)):
        assert after.get(call, 0) - before.get(call, 0) == grew, call
    grown = after["refusals"].get("unknown_consumer", 0) - before["refusals"].get("unknown_consumer", 0)
    assert grown == 1


def test_nothing_is_printed(provider: OAuth1Server, capfd: pytest.CaptureFixture[str]) -> None:
    """Given a whole dance and a refused call Then the provider wrote nothing to stdout or stderr."""
    session, _ = connected(provider)
    session.get(f"{provider.url}/api/me", timeout=5)
    requests.get(f"{provider.url}/api/me", timeout=5)
    assert capfd.readouterr() == ("", "")


def test_the_provider_serves_https_when_given_a_context(tmp_path: Path) -> None:
    """Given an SSL context When the provider starts Then it serves https and the dance completes over it."""
    files = make_ca_and_cert(tmp_path)
    server = OAuth1Server({CONSUMER: SECRET}, ssl_context=server_context(files))
    server.start()
    try:
        assert server.url.startswith("https://127.0.0.1:")
        session, trust = consumer(), str(files.ca_cert)  # per call: REQUESTS_CA_BUNDLE beats session.verify
        token = session.fetch_request_token(f"{server.url}/oauth/request_token", verify=trust)["oauth_token"]
        location = requests.get(
            f"{server.url}/oauth/authorize",
            params={"oauth_token": token, "auto": "approve"},
            allow_redirects=False,
            verify=trust,
            timeout=5,
        ).headers["location"]
        session.parse_authorization_response(location)
        session.fetch_access_token(f"{server.url}/oauth/access_token", verify=trust)
        assert session.get(f"{server.url}/api/me", verify=trust, timeout=5).status_code == 200
    finally:
        server.stop()
