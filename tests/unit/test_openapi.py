"""The OpenAPI document is generated from the resolvers; the committed copy must be fresh."""

from __future__ import annotations

import json
from typing import Any

from grantlink import idempotency, routes
from infra import openapi


def _operations(doc: dict[str, Any]) -> list[tuple[routes.Route, dict[str, Any]]]:
    """(route, operation) for every documented operation of every route; a route without one fails."""
    found = []
    for route in routes.ROUTES:
        documented = openapi.operations(doc, route.path, route.method)
        assert documented, f"{route.key} is not in openapi.json"
        found += [(route, operation) for operation in documented]
    return found


def test_committed_openapi_json_is_fresh() -> None:
    assert openapi.OUTPUT.read_text() == openapi.render(), "openapi.json is stale: run `make openapi`"


def test_every_route_is_documented_with_its_error_responses() -> None:
    doc = json.loads(openapi.OUTPUT.read_text())
    for route, operation in _operations(doc):
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
    for _, operation in _operations(doc):
        answer = operation["responses"]["429"]
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


def test_the_proxy_documents_every_method_and_the_errors_grantlink_makes_itself() -> None:
    """Given the proxy route (API Gateway's ANY on /credentials/{id}/proxy/{path+}),
    then openapi.json documents it for every method a client uses, each with the partner's answer and grantlink's
    own errors: a bad path (400), another tenant's or no credential (404), disabled or awaiting reauthorization
    (409), too large a body (413), an unreachable partner or too large an answer (502) and the deadline (504)."""
    doc = json.loads(openapi.OUTPUT.read_text())
    item = doc["paths"]["/credentials/{id}/proxy/{path}"]
    assert set(item) == {"get", "post", "put", "patch", "delete", "options"}
    for operation in item.values():
        assert {"200", "400", "401", "403", "404", "409", "413", "502", "504"} <= set(operation["responses"])
        assert {p["name"] for p in operation["parameters"] if p["in"] == "path"} == {"id", "path"}
