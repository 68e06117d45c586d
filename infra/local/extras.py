"""Local-only endpoints beside the API: the OpenAPI document, Swagger UI and a health check."""

from __future__ import annotations

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


def endpoints() -> dict[str, Callable[[Request], Reply]]:
    return {"/openapi.json": openapi_json, "/docs": swagger, "/_local/health": health}
