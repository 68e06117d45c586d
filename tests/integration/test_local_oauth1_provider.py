"""The local stack runs the demo OAuth 1.0a provider (infra/local/oauth1_server.py) for the demo-oauth1 partner:
its URL is in the state file, the demo consumer is registered, and /_local/oauth1-stats counts its calls."""

from __future__ import annotations

from typing import Any

from requests_oauthlib import OAuth1Session

from infra.local.stack import DEMO_OAUTH1_CONSUMER, DEMO_OAUTH1_SECRET
from tests.stack import http, url

pytestmark = __import__("pytest").mark.integration


def test_the_stack_serves_the_demo_oauth1_provider(stack: dict[str, Any]) -> None:
    """Given the running local stack
    When the demo consumer does the three-legged dance against the state file's oauth1Url
    Then /api/me answers the demo account, and /_local/oauth1-stats counted each step."""
    provider = stack["oauth1Url"]
    assert provider.startswith("http://127.0.0.1:")
    session = OAuth1Session(DEMO_OAUTH1_CONSUMER, DEMO_OAUTH1_SECRET, callback_uri="http://127.0.0.1:9/callback")
    token = session.fetch_request_token(f"{provider}/oauth/request_token", timeout=10)["oauth_token"]
    approved = http.get(
        f"{provider}/oauth/authorize", params={"oauth_token": token, "auto": "approve"}, allow_redirects=False
    )
    session.parse_authorization_response(approved.headers["location"])
    session.fetch_access_token(f"{provider}/oauth/access_token", timeout=10)
    assert session.get(f"{provider}/api/me", timeout=10).json()["username"] == "demo-user"
    stats = http.get(url(stack, "/_local/oauth1-stats")).json()
    assert all(stats[step] >= 1 for step in ("requestToken", "authorize", "accessToken", "resource")), stats
