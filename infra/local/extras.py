"""Local-only endpoints beside the API: the OpenAPI document, Swagger UI and a health check."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from functools import cache
from pathlib import Path

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


def endpoints() -> dict[str, Callable[[Request], Reply]]:
    return {
        "/openapi.json": openapi_json,
        "/docs": swagger,
        "/_local/health": health,
        "/_demo/apikey/me": demo_apikey_me,
        "/_demo/basic/me": demo_basic_me,
    }
