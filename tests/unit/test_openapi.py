"""The OpenAPI document is generated from the resolvers; the committed copy must be fresh."""

from __future__ import annotations

import json

from grantlink import idempotency, routes
from infra import openapi


def test_committed_openapi_json_is_fresh() -> None:
    assert openapi.OUTPUT.read_text() == openapi.render(), "openapi.json is stale: run `make openapi`"


def test_every_route_is_documented_with_its_error_responses() -> None:
    doc = json.loads(openapi.OUTPUT.read_text())
    for route in routes.ROUTES:
        operation = doc["paths"][route.path][route.method.lower()]
        if route.public:
            assert operation["security"] == [], route.key
            continue
        expected = {"401", "403"} if route.scope else {"401"}
        assert expected <= set(operation["responses"]), route.key
        # The function's envelope for an unknown key, or API Gateway's own answer to a missing header.
        assert operation["responses"]["401"]["content"]["application/json"]["schema"] == {
            "oneOf": [{"$ref": "#/components/schemas/ErrorEnvelope"}, {"$ref": "#/components/schemas/GatewayMessage"}]
        }
    assert doc["components"]["securitySchemes"]["tenantKey"]["scheme"] == "bearer"


def test_every_route_documents_the_throttles_429() -> None:
    doc = json.loads(openapi.OUTPUT.read_text())
    for route in routes.ROUTES:
        answer = doc["paths"][route.path][route.method.lower()]["responses"]["429"]
        assert answer["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/GatewayMessage"}
    assert doc["components"]["schemas"]["GatewayMessage"]["required"] == ["message"]


def test_the_idempotency_key_header_documents_the_shape_the_route_enforces() -> None:
    doc = json.loads(openapi.OUTPUT.read_text())
    (header,) = doc["paths"]["/credentials/grant-access-sharing"]["post"]["parameters"]
    assert header["in"] == "header" and header["name"].lower() == "idempotency-key"
    assert {"pattern": idempotency.KEY_PATTERN, "type": "string"} in header["schema"]["anyOf"]


def test_page_routes_document_html_for_every_answer() -> None:
    """The public pages answer a person: every documented answer is HTML, the 413 included."""
    doc = json.loads(openapi.OUTPUT.read_text())
    for path in ("/connect", "/connect/done", "/connect/oauth/start", "/oauth/callback"):
        for method, operation in doc["paths"][path].items():
            for status, answer in operation["responses"].items():
                if status != "429":  # API Gateway's throttle answers JSON whatever the route
                    assert list(answer["content"]) == ["text/html"], (method, path, status)
