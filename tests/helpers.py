"""Shared test helpers: event fixtures, function modules and a frozen clock."""

from __future__ import annotations

import base64
import copy
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urlencode

from infra.local import template
from infra.local.gateway import LambdaContext, load_module

EVENTS = Path(__file__).parent / "events"
ALL_SCOPES = "credentials:read credentials:secret credentials:write links:write"


def event(name: str, **changes: Any) -> dict[str, Any]:
    """A copy of tests/events/<name>.json. `tenant=`/`scopes=` set the authorizer context (None removes it);
    `body=` a dict or string; `headers=` extra headers; `path_id=` the {id} path parameter; `query=` a dict."""
    data = copy.deepcopy(json.loads((EVENTS / f"{name}.json").read_text()))
    context = data["requestContext"]
    if "tenant" in changes or "scopes" in changes:
        if changes.get("tenant") is None and "tenant" in changes:
            context.pop("authorizer", None)
        else:
            context["authorizer"] = {
                "lambda": {"tenantId": changes.get("tenant", "tnt_a"), "scopes": changes.get("scopes", ALL_SCOPES)}
            }
    if "body" in changes:
        body = changes["body"]
        data["body"] = body if isinstance(body, str) else json.dumps(body)
        data["headers"]["content-type"] = "application/json"
        data["isBase64Encoded"] = False
    if "form" in changes:
        encoded = urlencode(changes["form"]).encode()
        data["body"] = base64.b64encode(encoded).decode()  # as API Gateway delivers forms
        data["isBase64Encoded"] = True
        data["headers"]["content-type"] = "application/x-www-form-urlencoded"
    data["headers"].update({k.lower(): v for k, v in changes.get("headers", {}).items()})
    if "path_id" in changes:
        data["pathParameters"] = {"id": changes["path_id"]}
        template = data["routeKey"].split(" ", 1)[1]
        data["rawPath"] = context["http"]["path"] = template.replace("{id}", changes["path_id"])
    if "query" in changes:
        query = changes["query"]
        data["queryStringParameters"] = {k: str(v) for k, v in query.items()} or None
        data["rawQueryString"] = "&".join(f"{k}={v}" for k, v in query.items())
    return data


def function(name: str) -> ModuleType:
    """functions/<name>/app.py, imported once under a unique name."""
    spec = next(s for s in template.functions(template.load()) if s.name == name)
    return load_module(spec)


def call(name: str, evt: dict[str, Any]) -> dict[str, Any]:
    """Call a function's handler; returns its raw API Gateway response."""
    return function(name).lambda_handler(evt, LambdaContext(function_name=name, timeout_seconds=10))


def invoke(name: str, evt: dict[str, Any]) -> tuple[int, dict[str, Any], dict[str, str]]:
    """Call a JSON function's handler; returns (status, JSON body, headers)."""
    result = call(name, evt)
    return result["statusCode"], json.loads(result["body"]), result.get("headers", {})


class FrozenClock:
    def __init__(self, start: datetime) -> None:
        self.moment = start

    def __call__(self) -> datetime:
        return self.moment

    def advance(self, **delta: float) -> None:
        self.moment += timedelta(**delta)


START = datetime(2026, 11, 22, 10, 0, 0, tzinfo=UTC)
