"""A fake OAuth 2.0 client credentials partner for the unit and security tests: its token endpoint and its API on
127.0.0.1 (pytest-httpserver), checking the client's id and secret the way a real authorization server does
(RFC 6749 sections 2.3.1 and 4.4), and a helper that connects a credential through a link."""

from __future__ import annotations

import base64
import json
import threading
import time
from typing import Any
from urllib.parse import parse_qs

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from grantlink import connect, links, providers
from grantlink.models import Caller, CreateLinkRequest
from grantlink.providers import Provider

CC_PARTNER_ID = 7778
CLIENT_ID = "machine-client-42"
CLIENT_SECRET = "cc-client-secret-0123456789abcdef"
A = Caller("tnt_a", frozenset({"links:write", "credentials:read", "credentials:write", "credentials:secret"}))


class FakeClientCredentialsServer:
    """The partner under `prefix`: `POST <prefix>/token` mints `<access_token>-<n>` for a known client (HTTP Basic
    or in the body) and answers 401 `invalid_client` otherwise, or the `error` a test sets; `GET <prefix>/me` (and
    `/userinfo`, the demo partner 9005's test) accepts a token it minted and has not revoked. Every token request's
    form and how the client authenticated are recorded."""

    def __init__(self, server: HTTPServer, prefix: str = "/cc") -> None:
        self.server, self.lock = server, threading.Lock()
        self.calls: list[dict[str, Any]] = []  # {"form": …, "basic": (id, secret) | None}
        self.clients = {CLIENT_ID: CLIENT_SECRET}
        self.access_token = "cc-access"
        self.expires_in: int | None = 3600
        self.scope: str | None = None  # answered as `scope`; None: the scope asked for, echoed
        self.error: tuple[int, str] | None = None  # (status, error code) to answer instead of a token
        self.delay = 0.0
        self.issued: list[str] = []
        self.revoked: set[str] = set()
        server.expect_request(f"{prefix}/token", method="POST").respond_with_handler(self.token)
        for path in ("/me", "/userinfo"):
            server.expect_request(prefix + path).respond_with_handler(self.me)

    def token(self, request: Request) -> Response:
        form = {k: v[0] for k, v in parse_qs(request.get_data(as_text=True)).items()}
        basic = _basic(request.headers.get("Authorization", ""))
        with self.lock:
            self.calls.append({"form": form, "basic": basic})
            number = len(self.calls)
        time.sleep(self.delay)  # a slow partner, so that concurrent callers overlap
        client_id, secret = basic or (form.get("client_id"), form.get("client_secret"))
        if self.error:
            return _json({"error": self.error[1]}, self.error[0])
        if form.get("grant_type") != "client_credentials":
            return _json({"error": "unsupported_grant_type"}, 400)
        if client_id not in self.clients or self.clients[client_id] != secret:
            return _json({"error": "invalid_client"}, 401)
        body: dict[str, Any] = {"access_token": f"{self.access_token}-{number}", "token_type": "Bearer"}
        if self.expires_in is not None:
            body["expires_in"] = self.expires_in
        if (scope := self.scope if self.scope is not None else form.get("scope")) is not None:
            body["scope"] = scope
        with self.lock:
            self.issued.append(body["access_token"])
        return _json(body, 200)

    def me(self, request: Request) -> Response:
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        with self.lock:
            good = token in self.issued and token not in self.revoked
        answer = {"name": "Machine app", "sub": "machine-app"} if good else {"error": "invalid_token"}
        return _json(answer, 200 if good else 401)

    def token_calls(self) -> int:
        with self.lock:
            return len(self.calls)


def _basic(header: str) -> tuple[str, str] | None:
    if not header.startswith("Basic "):
        return None
    client_id, _, secret = base64.b64decode(header[6:]).decode().partition(":")
    return client_id, secret


def _json(body: dict[str, Any], status: int) -> Response:
    return Response(json.dumps(body), status, content_type="application/json")


def cc_partner(httpserver: HTTPServer, monkeypatch: pytest.MonkeyPatch, **grant: Any) -> Provider:
    """The fake partner (id 7778) in the catalogue; `grant` overrides its `clientCredentials` block."""
    base = httpserver.url_for("/cc").rstrip("/")
    partner = Provider.model_validate(
        {
            "id": CC_PARTNER_ID, "slug": "fake-machine", "name": "Fake Machine API", "authType": "client_credentials",
            "category": "dev_tools", "domains": ["127.0.0.1"], "docsUrl": base,
            "description": "A fake client credentials partner for tests.",
            "fields": [
                {"name": "clientId", "label": "Client ID", "help": "Your app's client id.", "secret": False,
                 "pattern": None, "required": True},
                {"name": "clientSecret", "label": "Client secret", "help": "Your app's secret.", "secret": True,
                 "pattern": None, "required": True},
            ],
            "baseUrl": base, "auth": {"in": "bearer", "value": "{accessToken}"},
            "test": {"method": "GET", "path": "/me", "expectStatus": [200], "accountName": "name"},
            "clientCredentials": {
                "tokenUrl": f"{base}/token", "scopes": ["read"], "optionalScopes": ["write"], "clientAuth": "basic",
                "clientIdField": "clientId", "clientSecretField": "clientSecret", **grant,
            },
        },
        context={"allow_http": True},
    )  # fmt: skip
    real_find = providers.find
    monkeypatch.setattr(providers, "find", lambda pid: partner if pid == CC_PARTNER_ID else real_find(pid))
    monkeypatch.setattr(providers, "get", lambda pid: partner if pid == CC_PARTNER_ID else real_find(pid))
    return partner


def connect_cc(secret: str = CLIENT_SECRET, caller: Caller = A, **link: Any) -> connect.Connected:
    """A link for the fake partner, submitted with the client id and `secret`, as the connect page does."""
    made, token = links.create_link(caller, CreateLinkRequest(partnerId=CC_PARTNER_ID, title="Machine", **link))
    return connect.submit(made.id, token, {"clientId": CLIENT_ID, "clientSecret": secret})
