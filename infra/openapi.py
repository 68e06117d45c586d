"""The OpenAPI document, generated from the functions' Powertools resolvers (never written by hand).

`make openapi` writes it to openapi.json; a test fails when the committed copy is stale; the local stack
serves it at /openapi.json with Swagger UI at /docs.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

from aws_lambda_powertools.event_handler.openapi.merge import OpenAPIMerge
from aws_lambda_powertools.event_handler.openapi.models import HTTPBearer

from infra.local import template
from infra.local.gateway import load_module

OUTPUT = template.ROOT / "openapi.json"
DESCRIPTION = (
    "Collect customers' app credentials through one-time connection links, keep them encrypted under KMS, "
    "test them and keep OAuth tokens fresh. Management routes take `Authorization: Bearer <tenant API key>`."
)


def document() -> dict[str, Any]:
    merge = OpenAPIMerge(
        title="grantlink",
        version="0.1.0",
        description=DESCRIPTION,
        security_schemes={"tenantKey": HTTPBearer(description="A tenant API key: glk_…")},
        security=[{"tenantKey": []}],
        on_conflict="error",
    )
    tpl = template.load()
    for spec in template.functions(tpl):
        module = load_module(spec)
        if hasattr(module, "app"):
            merge.add_schema(module.app.get_openapi_schema())
    doc = json.loads(merge.get_openapi_json_schema())
    _mark_public_routes(doc, tpl)
    _gateway_answers(doc, tpl)
    return doc


HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


def operations(doc: dict[str, Any], path: str, method: str) -> list[dict[str, Any]]:
    """The documented operations of one route as API Gateway names it: its greedy `{name+}` is `{name}` in OpenAPI,
    and `ANY` stands for every method documented on the path."""
    item = doc.get("paths", {}).get(re.sub(r"\{(\w+)\+\}", r"{\1}", path), {})
    methods = HTTP_METHODS if method == "ANY" else (method.lower(),)
    return [item[m] for m in methods if m in item]


def _mark_public_routes(doc: dict[str, Any], tpl: dict[str, Any]) -> None:
    """Routes without the authorizer say so (`security: []`); the rest inherit the global requirement."""
    for route in template.http_routes(tpl):
        for operation in operations(doc, route.path, route.method):
            if not route.authorized:
                operation["security"] = []


GATEWAY_MESSAGE = {
    "title": "GatewayMessage",
    "description": "An answer from API Gateway itself, before any function runs.",
    "type": "object",
    "properties": {"message": {"type": "string", "title": "Message"}},
    "required": ["message"],
}
GATEWAY_401 = (
    ' A request with no `Authorization` header at all is refused by API Gateway itself: `{"message": "Unauthorized"}`.'
)
GATEWAY_429 = (
    "API Gateway's throttle (the stage's rate and burst limits) refused the request: "
    '`{"message": "Too Many Requests"}`. Retry with backoff.'
)


def _gateway_answers(doc: dict[str, Any], tpl: dict[str, Any]) -> None:
    """What API Gateway answers on its own: 401 on an authorized route without the header (beside the
    function's own 401 envelope for an unknown key), and 429 from the throttle on every route."""
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    schemas["GatewayMessage"] = GATEWAY_MESSAGE
    gateway = {"$ref": "#/components/schemas/GatewayMessage"}
    for route in template.http_routes(tpl):
        for operation in operations(doc, route.path, route.method):
            _gateway_answers_of(operation, route.authorized, gateway)


def _gateway_answers_of(operation: dict[str, Any], authorized: bool, gateway: dict[str, Any]) -> None:
    responses = operation["responses"]
    if authorized and "401" in responses:
        content = responses["401"]["content"]["application/json"]
        content["schema"] = {"oneOf": [content["schema"], gateway]}
        responses["401"]["description"] += GATEWAY_401
    responses["429"] = {"description": GATEWAY_429, "content": {"application/json": {"schema": gateway}}}


def render() -> str:
    return json.dumps(document(), indent=2, sort_keys=True) + "\n"


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        if not OUTPUT.exists() or OUTPUT.read_text() != text:
            print("openapi.json is stale: run `make openapi`", file=sys.stderr)
            return 1
        return 0
    Path(OUTPUT).write_text(text)
    print(f"wrote {OUTPUT.relative_to(template.ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
