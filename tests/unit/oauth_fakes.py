"""A fake OAuth partner for the unit tests: its token endpoint on 127.0.0.1 (pytest-httpserver), and helpers
that walk a link through the OAuth flow."""

from __future__ import annotations

import json
import threading
import time
from urllib.parse import parse_qs, urlsplit

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from grantlink import links, oauth, providers
from grantlink.models import Caller, CreateLinkRequest, OAuthAppRequest
from grantlink.providers import Provider
from grantlink.store import default as default_store

A = Caller("tnt_a", frozenset({"links:write", "credentials:read", "credentials:write", "credentials:secret"}))
PARTNER_ID = 7777
REDIRECT = "https://connect.example.test/oauth/callback"
CLIENT_SECRET = "client-secret-value-xyz"


class FakeAuthorizationServer:
    """The token endpoint of a fake partner: counts calls, records bodies, answers what a test asks."""

    def __init__(self, server: HTTPServer) -> None:
        self.server, self.calls, self.lock = server, [], threading.Lock()
        self.issued: list[dict[str, object]] = []  # every token answer sent
        self.access_token = "access"  # answer n carries "<access_token>-n" …
        self.refresh_token: str | None = "refresh-1"  # … and "<refresh_token>-n" unless None
        self.error: str | None = None
        self.delay = 0.0
        # Strict, like Box, Xero or any OAuth 2.1 server: each refresh token works once, and presenting one that was
        # already used revokes the whole grant (RFC 9700 §4.14.2, refresh token rotation with reuse detection).
        self.strict = False
        self.revoked = False
        self.in_flight = self.most_in_flight = 0
        server.expect_request("/token", method="POST").respond_with_handler(self.token)

    def token(self, request: Request) -> Response:
        form = {k: v[0] for k, v in parse_qs(request.get_data(as_text=True)).items()}
        with self.lock:
            self.calls.append(form)
            number = len(self.calls)
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            time.sleep(self.delay)  # a slow provider, so that concurrent refreshes overlap
            return self._answer(form, number)
        finally:
            with self.lock:
                self.in_flight -= 1

    def latest_refresh_token(self) -> str | None:
        with self.lock:
            issued = [body["refresh_token"] for body in self.issued if "refresh_token" in body]
        return str(issued[-1]) if issued else None

    def _refused_as_strict(self, form: dict[str, str]) -> bool:
        if not self.strict or form.get("grant_type") != "refresh_token":
            return False
        if self.revoked or form.get("refresh_token") != self.latest_refresh_token():
            self.revoked = True  # reuse of a rotated token: the whole grant is gone
            return True
        return False

    def _answer(self, form: dict[str, str], number: int) -> Response:
        if self.error or self._refused_as_strict(form):
            return Response(json.dumps({"error": self.error or "invalid_grant"}), 400, content_type="application/json")
        body = {
            "access_token": f"{self.access_token}-{number}",
            "token_type": "Bearer",
            "expires_in": 3600,
            "scope": "read",
        }
        if self.refresh_token:
            body["refresh_token"] = f"{self.refresh_token}-{number}"
        with self.lock:
            self.issued.append(body)
        return Response(json.dumps(body), 200, content_type="application/json")


def start_flow() -> tuple[links.ShareLink, dict[str, list[str]]]:
    """A link for the fake partner, started: returns the link and the authorize URL's query."""
    link, token = links.create_link(A, CreateLinkRequest(partnerId=PARTNER_ID, title="Fake CRM"))
    url = oauth.start(link.id, token, {}, REDIRECT)
    return link, parse_qs(urlsplit(url).query)


def finish(query: dict[str, list[str]], **params: str) -> oauth.CallbackOutcome:
    issuer = providers.find(PARTNER_ID).oauth.issuer  # type: ignore[union-attr]
    answer = {"code": "code-123", "state": query["state"][0], "iss": issuer or "", **params}
    return oauth.callback({k: v for k, v in answer.items() if v is not None}, REDIRECT)


def connected_credential(server: FakeAuthorizationServer) -> str:
    link, query = start_flow()
    assert finish(query).connected
    return links.get_link(A, link.id).credential_id or ""


def expire_access_token(credential_id: str) -> None:
    """Make the stored token due for refresh (as if an hour had passed)."""
    from dataclasses import replace

    store = default_store()
    credential = store.get_credential(credential_id)
    assert credential and credential.access_expires_at
    moved = replace(credential, access_expires_at=credential.access_expires_at.replace(year=2000))
    store.transact(store.credential_update(credential, replace(moved, version=credential.version + 1))[0])


def fake_partner(httpserver: HTTPServer, monkeypatch: pytest.MonkeyPatch) -> FakeAuthorizationServer:
    """A fake OAuth partner (id 7777) on 127.0.0.1 and tenant A's OAuth app for it."""
    base = httpserver.url_for("").rstrip("/")
    partner = Provider.model_validate(
        {
            "id": PARTNER_ID, "slug": "fake-oauth", "name": "Fake OAuth", "authType": "oauth2", "docsUrl": base,
            "description": "A fake partner for tests.", "fields": [], "baseUrl": base,
            "auth": {"in": "bearer", "value": "{accessToken}"},
            "test": {"method": "GET", "path": "/me", "expectStatus": [200], "accountName": "name"},
            "oauth": {"authorizeUrl": f"{base}/authorize", "tokenUrl": f"{base}/token", "scopes": ["read", "write"],
                      "pkce": True, "issuer": base, "clientAuth": "basic"},
        },
        context={"allow_http": True},
    )  # fmt: skip
    real_find = providers.find
    monkeypatch.setattr(providers, "find", lambda pid: partner if pid == PARTNER_ID else real_find(pid))
    monkeypatch.setattr(providers, "get", lambda pid: partner if pid == PARTNER_ID else real_find(pid))
    monkeypatch.setenv("GRANTLINK_ALLOW_PRIVATE_TARGETS", "true")
    from grantlink import config

    config.reset()
    app = OAuthAppRequest.model_validate({"clientId": "client-1", "clientSecret": CLIENT_SECRET})
    oauth.put_app(A, PARTNER_ID, app, REDIRECT)
    return FakeAuthorizationServer(httpserver)
