"""OAuth 2.0 through the link over real HTTP: the local stack, its oauth2-mock-server, redirects walked by hand.

The mock authorization server (partner 9003, `demo-oauth`) auto-approves and adds `iss`; the stack counts the
token requests it reports at GET /_local/oauth-stats. That count is updated by a thread reading the mock's
output, a moment after the token call itself, so counts are read with a bounded poll, and "no token call
happened" is proved with a barrier: a later flow that makes exactly one call must move the count by exactly one.
"""

from __future__ import annotations

import html
import json
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from hashlib import sha256
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import boto3
import pytest
import requests

from tests.stack import http, start_stack, stop_stack, url

pytestmark = pytest.mark.integration
LINKS = "/credentials/grant-access-sharing"
DEMO_OAUTH = 9003
CODE, REFRESH = "authorization_code", "refresh_token"
CLIENT_SECRET = "demo-client-secret"  # the demo tenant's OAuth app for 9003 (infra/local/stack.py)
COUNT_SETTLES_WITHIN = 5.0  # seconds for the stack's reader thread to count a token call already made

# Every secret-ish value a test saw, by the log file of the stack it came from (O11 searches for each).
SEEN: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
KINDS = {"link token", "state", "code_verifier", "authorization code", "access token", "API key", "client secret"}


def auth(stack: dict[str, Any]) -> dict[str, str]:
    return {"Authorization": f"Bearer {stack['apiKey']}"}


def saw(stack: dict[str, Any], kind: str, value: str) -> None:
    SEEN[stack["log"]][kind].add(value)


def query(address: str) -> dict[str, str]:
    """The query of a URL, one value per name (a repeated name fails the test)."""
    parsed = parse_qs(urlsplit(address).query, keep_blank_values=True)
    assert all(len(v) == 1 for v in parsed.values()), address
    return {k: v[0] for k, v in parsed.items()}


def text(response: requests.Response) -> str:
    return html.unescape(response.text)


def new_link(stack: dict[str, Any], title: str = "OAuth HTTP test") -> dict[str, Any]:
    answer = http.post(url(stack, LINKS), json={"partnerId": DEMO_OAUTH, "title": title}, headers=auth(stack))
    assert answer.status_code == 201, answer.text
    link = answer.json()["data"]
    saw(stack, "link token", link["token"])
    return link


def link_status(stack: dict[str, Any], link_id: str) -> dict[str, Any]:
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
    answer = http.get(url(stack, f"/credentials/{credential_id}/secret"), headers=auth(stack))
    if answer.status_code == 200:
        saw(stack, "access token", answer.json()["data"]["fields"]["accessToken"])
    return answer


def connect(stack: dict[str, Any], title: str = "OAuth HTTP test") -> tuple[dict[str, Any], str]:
    """A whole flow, redirects walked by hand; returns (the link, the new credential's id)."""
    link = new_link(stack, title)
    callback = approve(stack, start(stack, link).headers["Location"])
    answer = http.get(callback, allow_redirects=False)
    assert answer.status_code == 303, (answer.status_code, answer.text)
    assert answer.headers["Location"] == url(stack, f"/connect/done?partner={DEMO_OAUTH}")
    used = link_status(stack, link["id"])
    assert used["status"] == 1 and used["credentialId"], used
    return link, used["credentialId"]


def token_requests(stack: dict[str, Any], grant: str) -> int:
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


# --- 1. the whole flow ---------------------------------------------------------------------------------------


def test_the_full_flow_connects_through_the_mock_and_lands_on_a_clean_url(stack: dict[str, Any]) -> None:
    """Given a 9003 link created with the demo key,
    when the customer opens it, presses "Connect Demo (OAuth)", approves at the mock and comes back,
    then the authorize URL carries state, an S256 challenge, the configured redirect_uri and the client id;
    the callback answers 303 to a clean /connect/done URL with no-referrer and no-store (O10); the link is used;
    and the credential is an active oauth2 one whose secret holds an access token but no refresh token."""
    before = token_requests(stack, CODE)
    link = new_link(stack, "Full flow")

    page = http.get(link["link"])
    assert page.status_code == 200
    body = text(page)
    assert '<form method="post" action="/connect/oauth/start"' in body
    assert '<button type="submit">Connect Demo (OAuth)</button>' in body
    assert link_status(stack, link["id"])["status"] == 0  # opening never consumes

    started = start(stack, link)
    authorize_url = started.headers["Location"]
    issuer = urlsplit(stack["oauthIssuer"])
    parts = urlsplit(authorize_url)
    assert (parts.scheme, parts.netloc, parts.path) == (issuer.scheme, issuer.netloc, "/authorize")
    params = query(authorize_url)
    assert params["response_type"] == "code"
    assert params["client_id"] == "grantlink-demo"
    assert params["redirect_uri"] == url(stack, "/oauth/callback")
    assert params["code_challenge_method"] == "S256"
    assert len(params["code_challenge"]) == 43  # base64url of a SHA-256, unpadded
    assert len(params["state"]) >= 43  # 256 bits
    assert started.headers["Referrer-Policy"] == "no-referrer"
    assert link_status(stack, link["id"])["status"] == 2  # waiting for OAuth

    callback_url = approve(stack, authorize_url)
    assert callback_url.startswith(url(stack, "/oauth/callback?"))
    back = query(callback_url)
    assert back["state"] == params["state"]
    assert back["iss"] == stack["oauthIssuer"]
    assert back["code"]

    callback = http.get(callback_url, allow_redirects=False)
    assert callback.status_code == 303, callback.text
    done_url = callback.headers["Location"]
    assert done_url == url(stack, f"/connect/done?partner={DEMO_OAUTH}")
    assert "code" not in query(done_url) and "state" not in query(done_url)
    assert callback.headers["Referrer-Policy"] == "no-referrer"  # O10
    assert callback.headers["Cache-Control"] == "no-store"  # O10
    assert callback.content == b""  # nothing to load: no third-party resources
    assert settled(stack, CODE, before + 1) == before + 1  # one code exchange

    done = http.get(done_url, allow_redirects=False)
    assert done.status_code == 200
    assert "<h1>Connected</h1>" in text(done)
    assert "Demo (OAuth) is now connected" in text(done)

    used = link_status(stack, link["id"])
    assert used["status"] == 1 and used["credentialId"], used
    assert used["token"] is None and used["link"] is None
    credential_id = used["credentialId"]

    revealed = secret(stack, credential_id)
    assert revealed.status_code == 200, revealed.text
    fields = revealed.json()["data"]["fields"]
    assert isinstance(fields["accessToken"], str) and fields["accessToken"]
    assert "refreshToken" not in fields

    meta = http.get(url(stack, f"/credentials/{credential_id}"), headers=auth(stack))
    assert meta.status_code == 200, meta.text
    data = meta.json()["data"]
    assert (data["authType"], data["state"], data["partnerId"]) == ("oauth2", "active", DEMO_OAUTH)
    assert data["accessExpiresAt"]


# --- 2. O1 -----------------------------------------------------------------------------------------------------


def test_o1_replayed_missing_and_made_up_state_are_refused_before_any_token_call(stack: dict[str, Any]) -> None:
    """O1. Given a flow completed once (one code exchange),
    when the very same callback URL is replayed, and callbacks come without state and with a made-up state,
    then each answers a 400 page, and the token endpoint saw none of them: a later flow that makes exactly one
    code exchange moves the count by exactly one."""
    before = token_requests(stack, CODE)
    link = new_link(stack, "O1 replay")
    callback_url = approve(stack, start(stack, link).headers["Location"])
    assert http.get(callback_url, allow_redirects=False).status_code == 303
    after_first = settled(stack, CODE, before + 1)
    assert after_first == before + 1

    back = query(callback_url)
    replayed = http.get(callback_url, allow_redirects=False)
    no_state = http.get(
        url(stack, "/oauth/callback?" + urlencode({"code": back["code"], "iss": back["iss"]})), allow_redirects=False
    )
    made_up = http.get(
        url(stack, "/oauth/callback?" + urlencode({**back, "state": "x" * 43})), allow_redirects=False
    )  # fmt: skip
    for answer in (replayed, no_state, made_up):
        assert answer.status_code == 400, (answer.status_code, answer.text)
        assert "Location" not in answer.headers
        assert answer.headers["Cache-Control"] == "no-store"
    assert "already used" in text(replayed)
    assert "incomplete" in text(no_state)
    assert "already used" in text(made_up)
    assert token_requests(stack, CODE) == after_first
    assert link_status(stack, link["id"])["status"] == 1  # the replay changed nothing

    connect(stack, "O1 barrier")  # exactly one more code exchange, counted after the three rejections
    assert settled(stack, CODE, after_first + 1) == after_first + 1


# --- 3. O4 -----------------------------------------------------------------------------------------------------


def test_o4_a_forged_host_does_not_change_the_redirect_uri(stack: dict[str, Any]) -> None:
    """O4. Given a 9003 link,
    when the OAuth form is posted with `Host: evil.example` and `X-Forwarded-Host`/`X-Forwarded-Proto` headers,
    then the authorize URL's redirect_uri is still the configured {apiUrl}/oauth/callback; and a callback sent
    with the same forged headers still lands on {apiUrl}/connect/done."""
    forged = {"Host": "evil.example", "X-Forwarded-Host": "evil.example", "X-Forwarded-Proto": "https"}
    link = new_link(stack, "O4 forged host")

    started = start(stack, link, headers=forged)
    location = started.headers["Location"]
    assert query(location)["redirect_uri"] == url(stack, "/oauth/callback")
    assert "evil.example" not in location
    assert urlsplit(location).netloc == urlsplit(stack["oauthIssuer"]).netloc

    callback_url = approve(stack, location)
    assert callback_url.startswith(url(stack, "/oauth/callback?"))
    callback = http.get(callback_url, headers=forged, allow_redirects=False)
    assert callback.status_code == 303, callback.text
    assert callback.headers["Location"] == url(stack, f"/connect/done?partner={DEMO_OAUTH}")


# --- 4. the customer declines ------------------------------------------------------------------------------------


def test_access_denied_puts_the_link_back_with_a_notice_and_it_can_then_connect(stack: dict[str, Any]) -> None:
    """Given a started flow (the link waits for OAuth, status 2),
    when the partner sends the customer back with `error=access_denied` and a description,
    then the callback answers a 400 page saying it did not connect, with no token call; the link is back to
    status 0; reopening it shows "Your last attempt did not finish: access_denied: User declined"; and the flow
    then completes (status 1, one code exchange in all)."""
    before = token_requests(stack, CODE)
    link = new_link(stack, "Declined")
    state = query(start(stack, link).headers["Location"])["state"]
    assert link_status(stack, link["id"])["status"] == 2

    denied = http.get(
        url(stack, "/oauth/callback?" + urlencode(
            {"error": "access_denied", "error_description": "User declined", "state": state}
        )),
        allow_redirects=False,
    )  # fmt: skip
    assert denied.status_code == 400, denied.text
    assert "Location" not in denied.headers
    assert "<h1>Not connected</h1>" in text(denied)
    assert "Demo (OAuth) did not connect: access_denied: User declined." in text(denied)
    back = link_status(stack, link["id"])
    assert (back["status"], back["credentialId"]) == (0, None)

    reopened = http.get(link["link"])
    assert reopened.status_code == 200
    assert "Your last attempt did not finish: access_denied: User declined" in text(reopened)
    assert 'action="/connect/oauth/start"' in text(reopened)

    callback_url = approve(stack, start(stack, link).headers["Location"])
    assert query(callback_url)["state"] != state  # a fresh flow, not the declined one
    finished = http.get(callback_url, allow_redirects=False)
    assert finished.status_code == 303, finished.text
    assert finished.headers["Location"] == url(stack, f"/connect/done?partner={DEMO_OAUTH}")
    used = link_status(stack, link["id"])
    assert used["status"] == 1 and used["credentialId"], used
    assert settled(stack, CODE, before + 1) == before + 1  # the decline made no token call
    assert "did not finish" not in text(http.get(link["link"]))  # the link is used: the uniform 410 page


# --- 5. O6 -------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def short_ttl_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A second local stack whose access tokens live 60 s, inside the 900 s renewal window: every read of the
    secret has to refresh first."""
    folder = tmp_path_factory.mktemp("short-ttl-stack")
    state_file, log_file = folder / "stack.json", folder / "stack.log"
    process = start_stack(
        state_file, log_file, {"GRANTLINK_DEMO_TOKEN_TTL": "60", "GRANTLINK_RENEW_BEFORE_SECONDS": "900"}
    )
    try:
        state = json.loads(state_file.read_text())
        state.update(stateFile=str(state_file), log=str(log_file))
        yield state
    finally:
        stop_stack(process)


def test_o6_ten_concurrent_reads_make_one_refresh(short_ttl_stack: dict[str, Any]) -> None:
    """O6. Given a 9003 credential whose access token expires in 60 s (renewal window 900 s),
    when 10 GET /credentials/{id}/secret are fired at once,
    then all 10 answer 200 with the same access token and the token endpoint saw exactly ONE refresh_token
    request (one "refreshed" audit entry); and one more read then makes exactly one more refresh."""
    stack = short_ttl_stack
    _, credential_id = connect(stack, "O6 single flight")
    meta = http.get(url(stack, f"/credentials/{credential_id}"), headers=auth(stack)).json()["data"]
    assert meta["accessExpiresAt"] and meta["lastRefreshedAt"] is None
    before = token_requests(stack, REFRESH)

    ready = threading.Barrier(10)

    def read(_: int) -> requests.Response:
        ready.wait(timeout=10)
        return secret(stack, credential_id)

    with ThreadPoolExecutor(max_workers=10) as pool:
        answers = list(pool.map(read, range(10)))
    assert [a.status_code for a in answers] == [200] * 10, [(a.status_code, a.text) for a in answers]
    tokens = {a.json()["data"]["fields"]["accessToken"] for a in answers}
    assert len(tokens) == 1 and next(iter(tokens))
    assert all("refreshToken" not in a.json()["data"]["fields"] for a in answers)
    after_burst = settled(stack, REFRESH, before + 1)
    assert after_burst == before + 1, f"{after_burst - before} refresh_token requests for 10 concurrent reads"
    audit = http.get(url(stack, f"/credentials/{credential_id}/audit"), headers=auth(stack)).json()["data"]
    assert [e["action"] for e in audit].count("refreshed") == 1

    again = secret(stack, credential_id)
    assert again.status_code == 200, again.text
    assert again.json()["data"]["fields"]["accessToken"]
    assert settled(stack, REFRESH, after_burst + 1) == after_burst + 1  # also proves the burst made only one
    refreshed = http.get(url(stack, f"/credentials/{credential_id}"), headers=auth(stack)).json()["data"]
    assert refreshed["lastRefreshedAt"] and refreshed["state"] == "active"


# --- 6. O11 ------------------------------------------------------------------------------------------------------


def test_o11_no_secret_reaches_the_stack_logs(stack: dict[str, Any], short_ttl_stack: dict[str, Any]) -> None:
    """O11. Given full flows on both stacks (and on the short-TTL one, a read that refreshes), plus whatever the
    tests above saw (link tokens, states, PKCE verifiers, codes, access tokens),
    when each stack's whole log (its stdout and stderr) is read,
    then none of those values appears, nor the OAuth client secret, nor the stack's API key — except the demo
    key in the start-up banner (`API key: …`), which `make run` prints on purpose for the developer."""
    for each in (stack, short_ttl_stack):
        _, credential_id = connect(each, "O11 logs")
        assert secret(each, credential_id).status_code == 200  # on the short-TTL stack: a refresh
        saw(each, "API key", each["apiKey"])
        saw(each, "client secret", CLIENT_SECRET)
    assert settled(short_ttl_stack, REFRESH, 1) >= 1

    leaks = []
    for each in (stack, short_ttl_stack):
        log_file = Path(each["log"])
        banner = f"  API key:      {each['apiKey']}"
        lines = [line for line in log_file.read_text(errors="replace").splitlines() if line != banner]
        seen = SEEN[each["log"]]
        assert set(seen) == KINDS, sorted(seen)  # every kind was collected: the search is not vacuous
        for kind, values in sorted(seen.items()):
            assert all(len(v) >= 8 for v in values), kind  # long enough that a match is not a coincidence
            found = {v: next((line for line in lines if v in line), None) for v in values}
            if hits := [line for line in found.values() if line is not None]:
                leaks.append(f"{kind}: {len(hits)} of {len(values)} in {log_file.parent.name}, e.g. {hits[0][:240]}")
    assert leaks == [], "secrets in the stack logs:\n" + "\n".join(leaks)
