"""OAuth 2.0 through the link over real HTTP, walked by hand against the local stack and its oauth2-mock-server
(partner 9003, `demo-oauth`): shared by tests/integration and tests/security.

The mock auto-approves and adds `iss`; the stack counts the token requests it reports at GET /_local/oauth-stats.
That count is updated by a thread reading the mock's output, a moment after the token call itself, so counts are
read with a bounded poll (`settled`), and "no token call happened" is proved with a barrier: a later flow that
makes exactly one call must move the count by exactly one.

Every secret-ish value a helper sees (link tokens, states, PKCE verifiers, codes, access tokens) is noted in SEEN,
by the log file of the stack it came from, so that O11 can look for each in that log.
"""

from __future__ import annotations

import html
import threading
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from hashlib import sha256
from typing import Any
from urllib.parse import parse_qs, urlsplit

import boto3
import requests

from tests.stack import LINKS, auth, http, url

DEMO_OAUTH = 9003
CODE, REFRESH = "authorization_code", "refresh_token"
CLIENT_SECRET = "demo-client-secret"  # the demo tenant's OAuth app for 9003 (infra/local/stack.py)
COUNT_SETTLES_WITHIN = 5.0  # seconds for the stack's reader thread to count a token call already made

# Every secret-ish value a test saw, by the log file of the stack it came from (O11 searches for each).
SEEN: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
KINDS = {"link token", "state", "code_verifier", "authorization code", "access token", "API key", "client secret"}


def saw(stack: dict[str, Any], kind: str, value: str) -> None:
    """Note a secret-ish value seen on `stack`, for O11 to look for in that stack's log."""
    SEEN[stack["log"]][kind].add(value)


def query(address: str) -> dict[str, str]:
    """The query of a URL, one value per name (a repeated name fails the test)."""
    parsed = parse_qs(urlsplit(address).query, keep_blank_values=True)
    assert all(len(v) == 1 for v in parsed.values()), address
    return {k: v[0] for k, v in parsed.items()}


def text(response: requests.Response) -> str:
    """A page's text with its HTML entities resolved."""
    return html.unescape(response.text)


def new_oauth_link(stack: dict[str, Any], title: str = "OAuth HTTP test", **options: Any) -> dict[str, Any]:
    """POST a share link for the demo OAuth partner (9003) as the demo tenant, with `options` (environment, scopes,
    ...) in its body; its token is noted for O11."""
    body = {"partnerId": DEMO_OAUTH, "title": title, **options}
    answer = http.post(url(stack, LINKS), json=body, headers=auth(stack))
    assert answer.status_code == 201, answer.text
    link = answer.json()["data"]
    saw(stack, "link token", link["token"])
    return link


def link_status(stack: dict[str, Any], link_id: str) -> dict[str, Any]:
    """GET the link as the demo tenant; its `data`."""
    answer = http.get(url(stack, f"{LINKS}/{link_id}"), headers=auth(stack))
    assert answer.status_code == 200, answer.text
    return answer.json()["data"]


def start(stack: dict[str, Any], link: dict[str, Any], headers: dict[str, str] | None = None) -> requests.Response:
    """POST the OAuth form, as the connect page's button does; the 303 is not followed."""
    form = {"id": link["id"], "token": link["token"]}
    answer = http.post(url(stack, "/connect/oauth/start"), data=form, headers=headers, allow_redirects=False)
    assert answer.status_code == 303, (answer.status_code, answer.text)
    state = query(answer.headers["Location"])["state"]
    saw(stack, "state", state)
    saw(stack, "code_verifier", stored_verifier(stack, state))
    return answer


def approve(stack: dict[str, Any], authorize_url: str) -> str:
    """Follow the 303 to the mock's /authorize (it approves at once); returns the callback URL it sends back."""
    answer = http.get(authorize_url, allow_redirects=False)
    assert answer.status_code == 302, (answer.status_code, answer.text)
    callback = answer.headers["Location"]
    saw(stack, "authorization code", query(callback)["code"])
    return callback


def stored_verifier(stack: dict[str, Any], state: str) -> str:
    """The flow's PKCE verifier, read from the table (it never crosses HTTP to us), so O11 can look for it."""
    dynamodb = boto3.client(
        "dynamodb",
        endpoint_url=stack["awsEndpoint"],
        region_name="us-east-1",
        aws_access_key_id="local",
        aws_secret_access_key="local",
    )
    key = {"pk": {"S": f"OAUTH#{sha256(state.encode()).hexdigest()}"}, "sk": {"S": "OAUTH"}}
    item = dynamodb.get_item(TableName=stack["table"], Key=key, ConsistentRead=True).get("Item")
    assert item is not None, "no flow record for this state"
    return str(item["verifier"]["S"])


def secret(stack: dict[str, Any], credential_id: str) -> requests.Response:
    """GET the credential's secret as the demo tenant; the access token it shows is noted for O11."""
    answer = http.get(url(stack, f"/credentials/{credential_id}/secret"), headers=auth(stack))
    if answer.status_code == 200:
        saw(stack, "access token", answer.json()["data"]["fields"]["accessToken"])
    return answer


def token(stack: dict[str, Any], credential_id: str, force: bool = False, key: str | None = None) -> requests.Response:
    """GET the credential's current access token (`forceRefresh=true` when `force`); the token is noted for O11."""
    params = {"forceRefresh": "true"} if force else {}
    answer = http.get(url(stack, f"/credentials/{credential_id}/token"), params=params, headers=auth(stack, key))
    if answer.status_code == 200:
        saw(stack, "access token", answer.json()["data"]["accessToken"])
    return answer


def secrets_at_once(stack: dict[str, Any], credential_id: str, count: int = 10) -> list[requests.Response]:
    """`count` GET /credentials/{id}/secret released together (a barrier), their answers in order."""
    ready = threading.Barrier(count)

    def read(_: int) -> requests.Response:
        ready.wait(timeout=10)
        return secret(stack, credential_id)

    with ThreadPoolExecutor(max_workers=count) as pool:
        return list(pool.map(read, range(count)))


def connect(stack: dict[str, Any], title: str = "OAuth HTTP test", **options: Any) -> tuple[dict[str, Any], str]:
    """A whole flow, redirects walked by hand, for a link with `options`; returns (the link, the credential's id)."""
    link = new_oauth_link(stack, title, **options)
    callback = approve(stack, start(stack, link).headers["Location"])
    answer = http.get(callback, allow_redirects=False)
    assert answer.status_code == 303, (answer.status_code, answer.text)
    assert answer.headers["Location"] == url(stack, f"/connect/done?partner={DEMO_OAUTH}")
    used = link_status(stack, link["id"])
    assert used["status"] == 1 and used["credentialId"], used
    return link, used["credentialId"]


def token_requests(stack: dict[str, Any], grant: str) -> int:
    """How many token requests of this grant type the stack's mock authorization server has counted so far."""
    answer = http.get(url(stack, "/_local/oauth-stats"))
    assert answer.status_code == 200, answer.text
    return int(answer.json()["tokenRequests"].get(grant, 0))


def settled(stack: dict[str, Any], grant: str, at_least: int) -> int:
    """The token-request count once it reaches `at_least` (bounded): the calls were made before the HTTP
    answers we already have, only their counting lags. Returns the count, which may be higher."""
    deadline = time.monotonic() + COUNT_SETTLES_WITHIN
    while (count := token_requests(stack, grant)) < at_least and time.monotonic() < deadline:
        time.sleep(0.02)
    return count


# --- OAuth 2.0 client credentials (partner 9005, `demo-client-credentials`) --------------------------------------

DEMO_CLIENT_CREDENTIALS = 9005
CLIENT_CREDENTIALS = "client_credentials"


def connect_client_credentials(
    stack: dict[str, Any], client_secret: str, title: str = "Client credentials HTTP test"
) -> tuple[dict[str, Any], str]:
    """A 9005 link, its connect form submitted with a client id and `client_secret` (the demo server mints a token
    for any client); returns (the link, the new credential's id). The secret and the link token are noted for O11."""
    answer = http.post(url(stack, LINKS), json={"partnerId": DEMO_CLIENT_CREDENTIALS, "title": title},
                       headers=auth(stack))  # fmt: skip
    assert answer.status_code == 201, answer.text
    link = answer.json()["data"]
    saw(stack, "link token", link["token"])
    saw(stack, "client secret", client_secret)
    form = {"id": link["id"], "token": link["token"], "f_clientId": "demo-machine-app", "f_clientSecret": client_secret}
    done = http.post(url(stack, "/connect"), data=form, allow_redirects=False)
    assert done.status_code == 200 and "Connected" in done.text, (done.status_code, done.text[:500])
    used = link_status(stack, link["id"])
    assert used["status"] == 1 and used["credentialId"], used
    return link, used["credentialId"]
