"""The OpenAPI document is generated from the resolvers; the committed copy must be fresh."""

from __future__ import annotations

import json

from grantlink import routes
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
        assert operation["responses"]["401"]["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/ErrorEnvelope"
        }
    assert doc["components"]["securitySchemes"]["tenantKey"]["scheme"] == "bearer"
