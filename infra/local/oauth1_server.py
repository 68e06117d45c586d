"""The demo OAuth 1.0a provider (RFC 5849): oauthlib's server-side endpoints behind a small HTTP server.

A real protocol implementation, not a fake that accepts anything: every request is checked for a known consumer,
its signature (HMAC-SHA1, HMAC-SHA256 or RSA-SHA1 with the consumer's public key), the timestamp window and nonce
replay; request tokens are single-use and expire; a verifier is bound to its request token and spent once.
The local stack runs it in-process on 127.0.0.1 as the demo-oauth1 partner; tests start their own.

    POST /oauth/request_token    oauth_callback required (http(s) on 127.0.0.1/localhost only)
    GET  /oauth/authorize        ?oauth_token=…[&user=…][&auto=approve]: the consent page (or straight approval)
    POST /oauth/authorize        the page's form: oauth_token, user, decision=approve|deny
    POST /oauth/access_token     the verifier for token credentials, with screen_name and user_id (as Twitter)
    GET  /api/me                 protected: {"id", "username"}
    ANY  /api/echo/<path>        protected: what arrived (method, path, query, body) and who signed it
    POST /_admin/revoke?user=…   revokes that user's access tokens (a "revoked at the provider" test)
    POST /_admin/expire-request-tokens  ends every outstanding request token (an "expired at the provider" test)

Refusals answer 401 with `oauth_problem=<reason>` (form-encoded at the token endpoints, JSON at the resources);
`stats()` counts calls and refusals by reason. Nothing is printed: no request line (queries carry tokens and
verifiers), no secret.
"""

from __future__ import annotations

import hashlib
import html
import json
import re
import ssl
import sys
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, parse_qsl, urlencode, urlsplit

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from oauthlib.common import add_params_to_uri, generate_token, safe_string_equals
from oauthlib.oauth1 import (
    SIGNATURE_HMAC_SHA1,
    SIGNATURE_HMAC_SHA256,
    SIGNATURE_RSA_SHA1,
    AccessTokenEndpoint,
    AuthorizationEndpoint,
    RequestTokenEndpoint,
    RequestValidator,
    ResourceEndpoint,
)
from oauthlib.oauth1.rfc5849 import errors

LOCAL = "127.0.0.1"
DEFAULT_USER = "demo-user"
LOCAL_CALLBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
USER_PATTERN = re.compile(r"^[A-Za-z0-9_.-]{1,40}$")
KEY_CHARACTERS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")
MAX_BODY = 1 << 20
PAGE_HEADERS = {
    "content-type": "text/html; charset=utf-8",
    "cache-control": "no-store",
    "referrer-policy": "no-referrer",
    # No form-action: browsers apply it to the redirect that follows the form, and the callback is another origin.
    "content-security-policy": "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'",
}


def user_id(user: str) -> str:
    """A stable numeric id for a demo account name (Twitter-style user_id)."""
    return str(int.from_bytes(hashlib.sha256(user.encode()).digest()[:6], "big"))


@dataclass
class _RequestToken:
    client_key: str
    secret: str
    callback: str
    realms: list[str]
    expires_at: float
    verifier: str | None = None
    user: str | None = None
    spent: bool = False  # exchanged for token credentials, or denied


@dataclass
class _AccessToken:
    client_key: str
    secret: str
    user: str
    realms: list[str]


@dataclass
class _Grants:
    """Everything the provider remembers, behind one lock."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    request_tokens: dict[str, _RequestToken] = field(default_factory=dict)
    access_tokens: dict[str, _AccessToken] = field(default_factory=dict)
    revoked: set[str] = field(default_factory=set)
    nonces: dict[tuple[str, str, str, str], int] = field(default_factory=dict)


class Refused(Exception):
    """An authorize-page request the provider will not serve (unknown, expired or spent request token)."""


class DemoValidator(RequestValidator):
    """oauthlib's RequestValidator over in-memory grants. Each failing check notes a reason for the current
    request (per thread: ThreadingHTTPServer serves one request per thread)."""

    enforce_ssl = False  # plain http on 127.0.0.1 (or the optional TLS mode)
    allowed_signature_methods = (SIGNATURE_HMAC_SHA1, SIGNATURE_HMAC_SHA256, SIGNATURE_RSA_SHA1)
    client_key_length = (8, 64)
    nonce_length = (8, 64)

    def __init__(
        self,
        consumers: Mapping[str, str],
        rsa_consumers: Mapping[str, str],
        request_token_ttl: float,
        clock: Callable[[], float],
    ) -> None:
        super().__init__()
        self.consumers, self.rsa_consumers = dict(consumers), dict(rsa_consumers)
        self.request_token_ttl, self.clock = request_token_ttl, clock
        self.grants = _Grants()
        self._local = threading.local()
        self._dummy_secret = generate_token()
        self._dummy_rsa_key = _public_pem(rsa.generate_private_key(public_exponent=65537, key_size=2048))

    @property
    def safe_characters(self) -> set[str]:
        return set(KEY_CHARACTERS)

    # -- the reasons of the current request ------------------------------------------------------------------
    def begin(self) -> None:
        self._local.reasons = []

    def reasons(self) -> list[str]:
        return list(getattr(self._local, "reasons", []))

    def _refuse(self, reason: str) -> bool:
        self._local.reasons = [*self.reasons(), reason]
        return False

    # -- dummies: oauthlib runs every check even for unknown keys, in near constant time ----------------------
    @property
    def dummy_client(self) -> str:
        return "dummy-consumer"

    @property
    def dummy_request_token(self) -> str:
        return "dummy-request-token"

    @property
    def dummy_access_token(self) -> str:
        return "dummy-access-token"

    # -- consumers ----------------------------------------------------------------------------------------
    def validate_client_key(self, client_key: str, request: Any) -> bool:
        return client_key in self.consumers or client_key in self.rsa_consumers or self._refuse("unknown_consumer")

    def get_client_secret(self, client_key: str, request: Any) -> str:
        return self.consumers.get(client_key, self._dummy_secret)  # an RSA consumer's HMAC signature never holds

    def get_rsa_key(self, client_key: str, request: Any) -> str:
        return self.rsa_consumers.get(client_key, self._dummy_rsa_key)

    # -- realms: any ----------------------------------------------------------------------------------------
    def check_realms(self, realms: list[str]) -> bool:
        return True

    def get_default_realms(self, client_key: str, request: Any) -> list[str]:
        return []

    def validate_requested_realms(self, client_key: str, realms: list[str], request: Any) -> bool:
        return True

    def validate_realms(self, client_key: str, token: str, request: Any, uri: Any = None, realms: Any = None) -> bool:
        return True

    def verify_realms(self, token: str, realms: list[str], request: Any) -> bool:
        return True

    def get_realms(self, token: str, request: Any) -> list[str]:
        with self.grants.lock:
            found = self.grants.request_tokens.get(token) or self.grants.access_tokens.get(token)
        return list(found.realms) if found else []

    # -- callback, timestamp and nonce -------------------------------------------------------------------------
    def validate_redirect_uri(self, client_key: str, redirect_uri: str, request: Any) -> bool:
        parts = urlsplit(redirect_uri)
        local = parts.scheme in ("http", "https") and parts.hostname in LOCAL_CALLBACK_HOSTS
        return local or self._refuse("bad_callback")

    def validate_timestamp_and_nonce(
        self,
        client_key: str,
        timestamp: str,
        nonce: str,
        request: Any,
        request_token: str | None = None,
        access_token: str | None = None,
    ) -> bool:
        """A nonce is good once per consumer, timestamp and token. oauthlib has already refused a timestamp
        outside `timestamp_lifetime` (by the real clock), so nonces older than that can be forgotten."""
        key = (client_key, timestamp, nonce, request_token or access_token or "")
        oldest = int(time.time()) - self.timestamp_lifetime
        with self.grants.lock:
            seen = self.grants.nonces
            for old in [k for k, stamp in seen.items() if stamp < oldest]:
                del seen[old]
            if key in seen:
                return self._refuse("replayed_nonce")
            seen[key] = int(timestamp)
        return True

    # -- request tokens and verifiers ------------------------------------------------------------------------
    def save_request_token(self, token: dict[str, str], request: Any) -> None:
        record = _RequestToken(
            client_key=request.client_key,
            secret=token["oauth_token_secret"],
            callback=request.redirect_uri,
            realms=list(request.realms or []),
            expires_at=self.clock() + self.request_token_ttl,
        )
        with self.grants.lock:
            self.grants.request_tokens[token["oauth_token"]] = record

    def _live_request_token(self, token: str) -> _RequestToken | None:
        """The record of a request token still usable (call with the lock held); notes why not otherwise."""
        record = self.grants.request_tokens.get(token)
        if record is None:
            self._refuse("unknown_request_token")
        elif record.spent:
            self._refuse("spent_request_token")
        elif self.clock() >= record.expires_at:
            self._refuse("expired_request_token")
        else:
            return record
        return None

    def verify_request_token(self, token: str, request: Any) -> bool:
        """The authorize step: a live request token not authorized yet."""
        with self.grants.lock:
            record = self._live_request_token(token)
            if record is not None and record.verifier is not None:
                return self._refuse("already_authorized")
        return record is not None

    def get_redirect_uri(self, token: str, request: Any) -> str:
        with self.grants.lock:
            return self.grants.request_tokens[token].callback

    def save_verifier(self, token: str, verifier: dict[str, str], request: Any) -> None:
        with self.grants.lock:
            record = self.grants.request_tokens[token]
            record.verifier, record.user = verifier["oauth_verifier"], request.user

    def get_request_token_secret(self, client_key: str, token: str, request: Any) -> str:
        with self.grants.lock:
            record = self.grants.request_tokens.get(token)
        return record.secret if record and record.client_key == client_key else self._dummy_secret

    def validate_request_token(self, client_key: str, token: str, request: Any) -> bool:
        with self.grants.lock:
            record = self._live_request_token(token)
        if record is None:
            return False
        return record.client_key == client_key or self._refuse("foreign_request_token")

    def validate_verifier(self, client_key: str, token: str, verifier: str, request: Any) -> bool:
        with self.grants.lock:
            record = self.grants.request_tokens.get(token)
            expected = record.verifier if record and record.client_key == client_key else None
        return (expected is not None and safe_string_equals(verifier, expected)) or self._refuse("bad_verifier")

    def spend_request_token(self, client_key: str, token: str) -> str:
        """Marks an authorized request token spent and answers its user: the one atomic step that makes a
        verifier single-use even when two exchanges race past validation."""
        with self.grants.lock:
            record = self.grants.request_tokens.get(token)
            if record is None or record.spent or record.user is None or record.client_key != client_key:
                self._refuse("spent_request_token")
                raise errors.InvalidClientError(description="The request token is spent.", status_code=401)
            record.spent = True
            return record.user

    def invalidate_request_token(self, client_key: str, request_token: str, request: Any) -> None:
        pass  # already spent by spend_request_token; the record stays so a reuse is told apart from a typo

    def deny(self, token: str) -> str:
        """The user said no: the request token is spent; answers the callback to tell the consumer."""
        with self.grants.lock:
            record = self._live_request_token(token)
            if record is None or (record.verifier is not None and not self._refuse("already_authorized")):
                raise Refused(token)
            record.spent = True
            return record.callback

    def consumer_of(self, token: str) -> str:
        with self.grants.lock:
            record = self._live_request_token(token)
            if record is None:
                raise Refused(token)
            return record.client_key

    # -- access tokens --------------------------------------------------------------------------------------
    def save_access_token(self, token: dict[str, str], request: Any) -> None:
        with self.grants.lock:
            user = self.grants.request_tokens[request.resource_owner_key].user
            assert user is not None  # spend_request_token checked it
            record = _AccessToken(request.client_key, token["oauth_token_secret"], user, list(request.realms))
            self.grants.access_tokens[token["oauth_token"]] = record

    def get_access_token_secret(self, client_key: str, token: str, request: Any) -> str:
        with self.grants.lock:
            record = self.grants.access_tokens.get(token)
        return record.secret if record and record.client_key == client_key else self._dummy_secret

    def validate_access_token(self, client_key: str, token: str, request: Any) -> bool:
        with self.grants.lock:
            record, revoked = self.grants.access_tokens.get(token), token in self.grants.revoked
        if record is None:
            return self._refuse("revoked_access_token" if revoked else "unknown_access_token")
        return record.client_key == client_key or self._refuse("foreign_access_token")

    def holder(self, token: str) -> _AccessToken | None:
        with self.grants.lock:
            return self.grants.access_tokens.get(token)

    def expire_request_tokens(self) -> int:
        """Ends the life of every request token not yet exchanged; answers how many there were."""
        now = self.clock()
        with self.grants.lock:
            live = [record for record in self.grants.request_tokens.values() if not record.spent]
            for record in live:
                record.expires_at = min(record.expires_at, now)
        return len(live)

    def revoke(self, user: str) -> int:
        with self.grants.lock:
            tokens = [t for t, record in self.grants.access_tokens.items() if record.user == user]
            for token in tokens:
                del self.grants.access_tokens[token]
            self.grants.revoked.update(tokens)
        return len(tokens)


class _Authorization(AuthorizationEndpoint):
    """Binds the approving demo account to the verifier (oauthlib's hook is `create_verifier`)."""

    def approve(self, uri: str, user: str) -> str:
        headers, _, _ = self.create_authorization_response(uri, credentials={"_user": user})
        return str(headers["Location"])

    def create_verifier(self, request: Any, credentials: dict[str, str]) -> dict[str, str]:
        request.user = credentials.pop("_user")
        return dict(super().create_verifier(request, credentials))


class _AccessTokens(AccessTokenEndpoint):
    """Spends the request token atomically, then answers the account too (screen_name, user_id)."""

    def create_access_token(self, request: Any, credentials: dict[str, str]) -> str:
        user = self.request_validator.spend_request_token(request.client_key, request.resource_owner_key)
        return str(super().create_access_token(request, {**credentials, "screen_name": user, "user_id": user_id(user)}))


@dataclass
class _Answer:
    status: int
    headers: dict[str, str]
    body: bytes


class OAuth1Server:
    """The provider on 127.0.0.1 (a free port unless one is given), served from a daemon thread.
    `clock` drives request-token expiry (tests pass a controllable one); `ssl_context` serves https."""

    def __init__(
        self,
        consumers: Mapping[str, str],
        rsa_consumers: Mapping[str, str] | None = None,
        request_token_ttl: float = 600.0,
        *,
        clock: Callable[[], float] = time.time,
        ssl_context: ssl.SSLContext | None = None,
        port: int = 0,
    ) -> None:
        self.validator = DemoValidator(consumers, rsa_consumers or {}, request_token_ttl, clock)
        self._request_tokens = RequestTokenEndpoint(self.validator)
        self._authorization = _Authorization(self.validator)
        self._access_tokens = _AccessTokens(self.validator)
        self._resources = ResourceEndpoint(self.validator)
        self._ssl_context, self._port = ssl_context, port
        self._counts: Counter[str] = Counter()
        self._refusals: Counter[str] = Counter()
        self._stats_lock = threading.Lock()

    # -- lifecycle ----------------------------------------------------------------------------------------
    def start(self) -> None:
        self._httpd = _HTTPServer((LOCAL, self._port), _handler_class(self))
        if self._ssl_context is not None:  # the handshake happens in the request's thread, not the accept loop
            self._httpd.socket = self._ssl_context.wrap_socket(
                self._httpd.socket, server_side=True, do_handshake_on_connect=False
            )
        self._port = int(self._httpd.server_address[1])
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="oauth1-provider", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=10)

    @property
    def url(self) -> str:
        scheme = "https" if self._ssl_context is not None else "http"
        return f"{scheme}://{LOCAL}:{self._port}"

    def stats(self) -> dict[str, Any]:
        """Calls per endpoint (requestToken, authorize, accessToken, resource) and refusals by reason."""
        with self._stats_lock:
            return {**self._counts, "refusals": dict(self._refusals)}

    def revoke(self, user: str) -> int:
        """Revokes every access token of a demo account; answers how many there were."""
        return self.validator.revoke(user)

    def _note(self, call: str, refusal: str | None = None) -> None:
        with self._stats_lock:
            self._counts[call] += 1
            if refusal:
                self._refusals[refusal] += 1

    # -- routing ------------------------------------------------------------------------------------------
    def answer(self, method: str, uri: str, headers: dict[str, str], body: str) -> _Answer:
        path = urlsplit(uri).path
        self.validator.begin()
        try:
            return self._route(method, uri, path, headers, body)
        except ValueError:  # oauthlib refuses a query or body it cannot decode
            return _json(400, {"error": "invalid_request"})

    def _route(self, method: str, uri: str, path: str, headers: dict[str, str], body: str) -> _Answer:
        if path in ("/oauth/request_token", "/oauth/access_token"):
            return self._token(method, uri, headers, body)
        if path == "/oauth/authorize":
            return self._authorize(method, uri, body)
        if path == "/api/me" or path.startswith("/api/echo/"):
            return self._resource(method, uri, headers, body)
        if path == "/_admin/revoke" and method == "POST":
            user = dict(parse_qsl(urlsplit(uri).query)).get("user", DEFAULT_USER)
            return _json(200, {"user": user, "revoked": self.revoke(user)})
        if path == "/_admin/expire-request-tokens" and method == "POST":
            return _json(200, {"expired": self.validator.expire_request_tokens()})
        return _json(404, {"error": "not_found"})

    def _token(self, method: str, uri: str, headers: dict[str, str], body: str) -> _Answer:
        request_step = urlsplit(uri).path == "/oauth/request_token"
        call = "requestToken" if request_step else "accessToken"
        if method != "POST":
            self._note(call, "method_not_allowed")
            return _json(405, {"error": "method_not_allowed"})
        endpoint = self._request_tokens if request_step else self._access_tokens
        create = endpoint.create_request_token_response if request_step else endpoint.create_access_token_response
        answer_headers, answer_body, status = create(uri, method, body, headers)
        if status == 200:
            self._note(call)
            return _Answer(200, dict(answer_headers), answer_body.encode())
        reason = self._reason(status, answer_body)
        self._note(call, reason)
        form = {"content-type": "application/x-www-form-urlencoded"}
        return _Answer(status, form, (answer_body or urlencode({"oauth_problem": reason})).encode())

    def _reason(self, status: int, form: str | None) -> str:
        """The first check that failed (oauthlib runs them all), the OAuth error of a 400, else the signature."""
        noted = self.validator.reasons()
        if noted:
            return noted[0]
        if status == 400 and form:
            return dict(parse_qsl(form)).get("error", "invalid_request")
        return "bad_signature"

    def _resource(self, method: str, uri: str, headers: dict[str, str], body: str) -> _Answer:
        valid, request = self._resources.validate_protected_resource_request(uri, method, body, headers)
        holder = self.validator.holder(request.resource_owner_key) if valid else None
        if holder is None:
            checked = request is not None and request.validator_log
            reason = self.validator.reasons()[:1] or (["bad_signature"] if checked else ["invalid_request"])
            self._note("resource", reason[0])
            return _json(
                401, {"error": "unauthorized", "oauth_problem": reason[0]}, www_authenticate='OAuth realm="demo"'
            )
        self._note("resource")
        who = {"id": user_id(holder.user), "username": holder.user}
        if urlsplit(uri).path == "/api/me":
            return _json(200, who)
        return _json(200, _echo(method, uri, headers, body, holder.client_key, who))

    # -- the consent page -------------------------------------------------------------------------------------
    def _authorize(self, method: str, uri: str, body: str) -> _Answer:
        if method not in ("GET", "POST"):
            self._note("authorize", "method_not_allowed")
            return _json(405, {"error": "method_not_allowed"})
        values = dict(parse_qsl(urlsplit(uri).query)) if method == "GET" else dict(parse_qsl(body))
        token, user = values.get("oauth_token", ""), values.get("user") or DEFAULT_USER
        decision = values.get("auto") if method == "GET" else values.get("decision")
        if not USER_PATTERN.match(user):
            self._note("authorize", "bad_user")
            return _page(400, "Unknown demo account", "<p>Demo account names are letters, digits, . _ and -.</p>")
        try:
            return self._decide(uri, token, user, decision)
        except (Refused, errors.OAuth1Error):
            reason = (self.validator.reasons() or ["unknown_request_token"])[0]
            self._note("authorize", reason)
            return _page(400, "This request cannot be authorized", "<p>It is unknown, expired or already used.</p>")

    def _decide(self, uri: str, token: str, user: str, decision: str | None) -> _Answer:
        if decision == "approve":
            base = uri.split("?", 1)[0]
            location = self._authorization.approve(f"{base}?{urlencode({'oauth_token': token})}", user)
        elif decision == "deny":
            location = add_params_to_uri(self.validator.deny(token), [("denied", token)])
        else:
            self._note("authorize")
            return _consent_page(self.validator.consumer_of(token), token, user)
        self._note("authorize")
        return _Answer(302, {"location": location, "cache-control": "no-store", "content-length": "0"}, b"")


def _consent_page(consumer: str, token: str, user: str) -> _Answer:
    app, who = html.escape(consumer), html.escape(user)
    hidden = (
        f'<input type="hidden" name="oauth_token" value="{html.escape(token)}">'
        f'<input type="hidden" name="user" value="{who}">'
    )
    content = (
        f"<p>Signed in as <b>{who}</b>.</p>"
        f'<form method="post" action="/oauth/authorize">{hidden}'
        '<button type="submit" name="decision" value="approve">Approve</button> '
        '<button type="submit" name="decision" value="deny">Deny</button></form>'
    )
    return _page(200, f"Allow {app} to access your demo account?", content)


def _page(status: int, title: str, content: str) -> _Answer:
    document = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{title}</title><style>body{{font-family:sans-serif;max-width:32rem;margin:3rem auto}}</style>"
        f"</head><body><h1>{title}</h1>{content}</body></html>"
    )
    return _Answer(status, dict(PAGE_HEADERS), document.encode())


def _echo(method: str, uri: str, headers: dict[str, str], body: str, consumer: str, who: dict[str, str]) -> Any:
    parts = urlsplit(uri)
    query = {k: v for k, v in parse_qs(parts.query, keep_blank_values=True).items() if not k.startswith("oauth_")}
    return {
        "method": method,
        "path": parts.path.removeprefix("/api/echo"),
        "query": query,
        "contentType": headers.get("content-type", ""),
        "body": body,
        "consumer": consumer,
        "user": who,
    }


def _json(status: int, document: Any, www_authenticate: str = "") -> _Answer:
    headers = {"content-type": "application/json", "cache-control": "no-store"}
    if www_authenticate:
        headers["www-authenticate"] = www_authenticate
    return _Answer(status, headers, json.dumps(document).encode())


def _public_pem(key: rsa.RSAPrivateKey) -> str:
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return public.decode()


def new_rsa_consumer_key() -> tuple[str, str]:
    """A fresh RSA key for an RSA-SHA1 consumer: (private key PEM for the consumer, public key PEM for us)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return private.decode(), _public_pem(key)


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 64

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], OSError):  # a failed TLS handshake or a reset is the client's business
            super().handle_error(request, client_address)


def _handler_class(server: OAuth1Server) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "grantlink-demo-oauth1"

        def _serve(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            if length > MAX_BODY:
                self._send(_json(413, {"error": "too_large"}))
                return
            body = self.rfile.read(length).decode("utf-8", "replace") if length else ""
            scheme = "https" if server._ssl_context is not None else "http"
            host = self.headers.get("host") or urlsplit(server.url).netloc
            headers = {k.lower(): v for k, v in self.headers.items()}
            try:
                answer = server.answer(self.command, f"{scheme}://{host}{self.path}", headers, body)
            except Exception:  # noqa: BLE001 - answered as a 500 and the traceback shown (it holds no secret)
                traceback.print_exc()
                answer = _json(500, {"error": "server_error"})
            self._send(answer)

        def _send(self, answer: _Answer) -> None:
            self.send_response(answer.status)
            for name, value in answer.headers.items():
                if name != "content-length":
                    self.send_header(name, value)
            self.send_header("content-length", str(len(answer.body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(answer.body)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _serve

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
            pass  # request lines carry oauth_token and oauth_verifier: nothing is printed

    return Handler
