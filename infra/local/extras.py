"""Local-only endpoints beside the API: the OpenAPI document, Swagger UI, a health check, and the demo partners'
own endpoints (their account pages, and the echo that their proxy base URLs point at)."""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from collections.abc import Callable
from functools import cache
from pathlib import Path
from urllib.parse import parse_qsl

from infra.local.gateway import Reply, Request


@cache
def _openapi() -> bytes:
    from infra import openapi

    return json.dumps(openapi.document(), indent=2).encode()


def openapi_json(_: Request) -> Reply:
    return Reply(200, {"content-type": "application/json"}, [], _openapi())


def swagger(_: Request) -> Reply:
    from aws_lambda_powertools.event_handler.openapi import swagger_ui
    from aws_lambda_powertools.event_handler.openapi.swagger_ui.html import generate_swagger_html

    assets = Path(swagger_ui.__file__).parent
    html = generate_swagger_html(
        spec=_openapi().decode(),
        swagger_js=(assets / "swagger-ui-bundle.min.js").read_text(),
        swagger_css=(assets / "swagger-ui.min.css").read_text(),
        swagger_base_url="",
        oauth2_config=None,
    )
    return Reply(200, {"content-type": "text/html; charset=utf-8"}, [], html.encode())


def health(_: Request) -> Reply:
    return Reply(200, {"content-type": "application/json"}, [], b'{"ok":true}')


def _json(status: int, body: dict[str, object]) -> Reply:
    return Reply(status, {"content-type": "application/json"}, [], json.dumps(body).encode())


def demo_apikey_me(request: Request) -> Reply:
    """demo-apikey's account endpoint: any key works except one starting with `bad`."""
    key = request.headers.get("x-api-key", "")
    if not key or key.startswith("bad"):
        return _json(401, {"error": "invalid_api_key", "message": "The API key is not valid."})
    return _json(200, {"account": {"name": f"Demo account …{key[-4:]}", "plan": "free"}})


def demo_basic_me(request: Request) -> Reply:
    """demo-basic's account endpoint: any username and password except a password starting with `bad`."""
    scheme, _, encoded = request.headers.get("authorization", "").partition(" ")
    try:
        username, _, password = base64.b64decode(encoded).decode().partition(":")
    except (ValueError, UnicodeDecodeError):
        username, password = "", ""
    if scheme.lower() != "basic" or not username or password.startswith("bad"):
        return _json(401, {"error": "invalid_login", "message": "Wrong username or password."})
    return _json(200, {"account": {"name": username}})


ECHO = "/_demo/echo/"
# Query parameters that carry a credential for query-style partners: the echo masks them like the auth headers.
SECRET_PARAMETERS = frozenset({"api_key", "apikey", "key", "token", "access_token"})
_revoked: set[str] = set()  # SHA-256 of the bearer tokens POST /_demo/oauth/revoke revoked
_revoked_lock = threading.Lock()


def mask(value: str) -> str:
    """Enough to tell which credential arrived, never the credential: its first 4 characters and its length."""
    return f"{value[:4]}…({len(value)} chars)"


def demo_echo(request: Request) -> Reply:
    """Any method on /_demo/echo/<anything>: the demo partners' API, where their proxy base URLs point. It answers
    what arrived: method, path, query and headers, and which credential (its kind and a masked value). A bearer token
    revoked at /_demo/oauth/revoke gets a 401, as a provider answers a token it no longer honours.
    /_demo/echo/raw answers the request's own body and Content-Type instead, byte for byte."""
    auth = _auth_of(request)
    if auth.get("kind") == "bearer" and _is_revoked(request.headers["authorization"].partition(" ")[2].strip()):
        body = {"error": "invalid_token", "message": "This access token was revoked."}
        return Reply(401, {"content-type": "application/json", "www-authenticate": 'Bearer error="invalid_token"'}, [],
                     json.dumps(body).encode())  # fmt: skip
    if request.path.rstrip("/").endswith("/raw"):
        content_type = request.headers.get("content-type", "application/octet-stream")
        return Reply(200, {"content-type": content_type}, [], request.body)
    hidden = {"authorization", "x-api-key", "cookie"}
    return _json(
        200,
        {
            "method": request.method,
            "path": request.path,
            "query": [[k, mask(v) if k.lower() in SECRET_PARAMETERS else v] for k, v in _query(request)],
            "auth": auth,
            "headers": {k: v for k, v in sorted(request.headers.items()) if k not in hidden},
            "bodyBytes": len(request.body),
            "bodySha256": hashlib.sha256(request.body).hexdigest(),
        },
    )


def _query(request: Request) -> list[tuple[str, str]]:
    return parse_qsl(request.query, keep_blank_values=True)


def _auth_of(request: Request) -> dict[str, str]:
    """The credential that arrived, by kind, masked: bearer, basic (the username shown), an API key header, or a
    query parameter; `none` when nothing did."""
    scheme, _, credentials = request.headers.get("authorization", "").strip().partition(" ")
    if scheme.lower() == "bearer":
        return {"kind": "bearer", "value": mask(credentials.strip())}
    if scheme.lower() == "basic":
        try:
            username, _, password = base64.b64decode(credentials).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return {"kind": "basic", "value": mask(credentials)}
        return {"kind": "basic", "username": username, "value": mask(password)}
    if "x-api-key" in request.headers:
        return {"kind": "header", "name": "X-Api-Key", "value": mask(request.headers["x-api-key"])}
    for name, value in _query(request):
        if name.lower() in SECRET_PARAMETERS:
            return {"kind": "query", "name": name, "value": mask(value)}
    return {"kind": "other", "value": mask(scheme)} if scheme else {"kind": "none"}


def demo_revoke(request: Request) -> Reply:
    """POST /_demo/oauth/revoke with form `token=<access token>` (RFC 7009's shape): the echo refuses that token from
    now on. Only its SHA-256 is kept."""
    if request.method != "POST":
        return Reply(405, {"content-type": "application/json", "allow": "POST"}, [], b'{"message":"POST only"}')
    token = dict(parse_qsl(request.body.decode(errors="replace"))).get("token", "")
    if not token:
        return _json(400, {"error": "invalid_request", "message": "Send token=<access token>."})
    with _revoked_lock:
        _revoked.add(hashlib.sha256(token.encode()).hexdigest())
    return Reply(200, {"content-type": "application/json"}, [], b"{}")


def _is_revoked(token: str) -> bool:
    with _revoked_lock:
        return hashlib.sha256(token.encode()).hexdigest() in _revoked


def endpoints() -> dict[str, Callable[[Request], Reply]]:
    return {
        "/openapi.json": openapi_json,
        "/docs": swagger,
        "/_local/health": health,
        "/_demo/apikey/me": demo_apikey_me,
        "/_demo/basic/me": demo_basic_me,
        "/_demo/oauth/revoke": demo_revoke,
    }


def prefixed(path: str) -> Callable[[Request], Reply] | None:
    """The local endpoint that serves a whole subtree (the echo), if `path` is in one."""
    return demo_echo if path.startswith(ECHO) else None
