"""A small stand-in for API Gateway (HTTP API, payload 2.0): routes from template.yaml, the Lambda
authorizer with its cache, and the handlers called in-process.

It behaves as API Gateway does where our code can tell the difference: the most specific route wins,
unmatched requests go to `$default`, a missing identity header is a 401 without calling the authorizer,
a denied caller is a 403, and the authorizer's answer is cached per Authorization header.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import re
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any
from urllib.parse import parse_qsl

from infra.local.template import ROOT, FunctionSpec, RouteSpec

# Like API Gateway HTTP APIs: JSON and text arrive as text; everything else (forms too) as base64.
TEXT_TYPES = re.compile(r"^(text/|application/(json|xml|javascript)|.*\+json)", re.I)
Handler = Callable[[dict[str, Any], Any], Any]


@dataclass
class LambdaContext:
    function_name: str
    timeout_seconds: int
    memory_limit_in_mb: int = 512
    aws_request_id: str = ""
    log_group_name: str = "/aws/lambda/local"
    log_stream_name: str = "local"

    def __post_init__(self) -> None:
        self.aws_request_id = str(uuid.uuid4())
        self.invoked_function_arn = f"arn:aws:lambda:us-east-1:123456789012:function:{self.function_name}"
        self.function_version = "$LATEST"
        self._deadline = time.monotonic() + self.timeout_seconds

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


def load_module(spec: FunctionSpec, instance: int = 0) -> ModuleType:
    """Import functions/<name>/<module>.py once per `instance`, under a unique module name."""
    module_name = spec.handler.rpartition(".")[0]
    path = ROOT / "functions" / spec.name / f"{module_name}.py"
    if not path.is_file():
        raise RuntimeError(f"template.yaml names {spec.logical_id} → {path}, which does not exist")
    unique = f"grantlink_fn_{spec.name}" + (f"_{instance}" if instance else "")
    if unique in sys.modules:
        return sys.modules[unique]
    loaded = importlib.util.spec_from_file_location(unique, path)
    assert loaded and loaded.loader
    module = importlib.util.module_from_spec(loaded)
    sys.modules[unique] = module
    loaded.loader.exec_module(module)
    return module


def load_handler(spec: FunctionSpec, instance: int = 0) -> Handler:
    """The handler a function's `Handler:` names (in its own module instance: its own "execution environment")."""
    attribute = spec.handler.rpartition(".")[2]
    module = load_module(spec, instance)
    handler = getattr(module, attribute, None)
    if not callable(handler):
        raise RuntimeError(f"{module.__file__} has no handler {attribute!r}")
    return handler


def check_every_function_is_declared(specs: list[FunctionSpec]) -> None:
    declared = {s.name for s in specs}
    on_disk = {p.parent.name for p in (ROOT / "functions").glob("*/app.py")}
    if on_disk - declared:
        raise RuntimeError(f"handlers without a function in template.yaml: {sorted(on_disk - declared)}")


@dataclass
class Request:
    method: str
    path: str
    query: str
    headers: dict[str, str]  # lower-case names
    body: bytes
    source_ip: str


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    cookies: list[str]
    body: bytes


def _compile(path: str) -> re.Pattern[str]:
    pattern = re.sub(r"\\\{([^/}]+?)\\\+\\\}", r"(?P<\1>.+)", re.escape(path))
    pattern = re.sub(r"\\\{([^/}]+)\\\}", r"(?P<\1>[^/]+)", pattern)
    return re.compile(f"^{pattern}$")


class Environments:
    """Lambda runs one request at a time per execution environment and adds environments under load. Each
    environment here is its own import of the handler module (its own resolver, its own per-request state),
    handed to one request at a time, so concurrent requests never share a Powertools resolver."""

    def __init__(self, spec: FunctionSpec, first: Handler) -> None:
        self.spec = spec
        self._idle: list[Handler] = [first]
        self._count = 1
        self._lock = threading.Lock()

    def invoke(self, event: dict[str, Any], context: Any) -> Any:
        handler = self._take()
        try:
            return handler(event, context)
        finally:
            with self._lock:
                self._idle.append(handler)

    def _take(self) -> Handler:
        with self._lock:
            if self._idle:
                return self._idle.pop()
            self._count += 1
            instance = self._count
        return load_handler(self.spec, instance)


class Gateway:
    def __init__(
        self,
        routes: list[RouteSpec],
        handlers: dict[str, Handler],
        specs: dict[str, FunctionSpec],
        authorizer: tuple[str, dict[str, Any]],
        cache_seconds: int,
        api_id: str = "local",
    ) -> None:
        self.routes = [(r, _compile(r.path)) for r in routes if r.path != "$default"]
        self.default = next((r for r in routes if r.path == "$default"), None)
        self.environments = {lid: Environments(specs[lid], handler) for lid, handler in handlers.items()}
        self.specs = specs
        self.authorizer_id, identity = authorizer
        self.identity_headers = [h.lower() for h in identity.get("Headers", [])]
        self.cache_seconds = cache_seconds
        self.api_id = api_id
        self._cache: dict[tuple[str, ...], tuple[float, dict[str, Any]]] = {}
        self._lock = threading.Lock()

    def match(self, method: str, path: str) -> tuple[RouteSpec | None, dict[str, str]]:
        # API Gateway prefers literal paths over ones with variables; sort so fewer variables wins.
        candidates = []
        for route, regex in self.routes:
            found = regex.match(path)
            if found and route.method in (method, "ANY"):
                candidates.append((route.path.count("{"), route.method == "ANY", route, found.groupdict()))
        if candidates:
            _, _, route, params = sorted(candidates, key=lambda c: (c[0], c[1]))[0]
            return route, params
        return self.default, {}

    def handle(self, request: Request) -> Reply:
        route, params = self.match(request.method, request.path)
        if route is None:
            return _json(404, {"message": "Not Found"})
        event = self._event(request, route, params)
        if route.authorized:
            verdict = self._authorize(request, event)
            if verdict is not None and not isinstance(verdict, dict):
                return verdict
            event["requestContext"]["authorizer"] = {"lambda": verdict or {}}
        return self._invoke(route.function, event)

    def _authorize(self, request: Request, event: dict[str, Any]) -> dict[str, Any] | Reply:
        identity = tuple(request.headers.get(h, "") for h in self.identity_headers)
        if any(not value for value in identity):
            return _json(401, {"message": "Unauthorized"})
        with self._lock:
            cached = self._cache.get(identity)
        if cached and cached[0] > time.monotonic():
            answer = cached[1]
        else:
            auth_event = {**event, "type": "REQUEST", "identitySource": list(identity)}
            auth_event["routeArn"] = (
                f"arn:aws:execute-api:us-east-1:123456789012:{self.api_id}/$default/{request.method}{request.path}"
            )
            answer = self.environments[self.authorizer_id].invoke(auth_event, self._context(self.authorizer_id))
            if self.cache_seconds:
                with self._lock:
                    self._cache[identity] = (time.monotonic() + self.cache_seconds, answer)
        if not answer.get("isAuthorized"):
            return _json(403, {"message": "Forbidden"})
        return dict(answer.get("context") or {})

    def _context(self, logical_id: str) -> LambdaContext:
        return LambdaContext(function_name=logical_id, timeout_seconds=self.specs[logical_id].timeout)

    def _invoke(self, logical_id: str, event: dict[str, Any]) -> Reply:
        try:
            result = self.environments[logical_id].invoke(event, self._context(logical_id))
        except Exception:  # noqa: BLE001 - API Gateway turns a crashed function into a bare 500
            import traceback

            traceback.print_exc()
            return _json(500, {"message": "Internal Server Error"})
        return _reply(result)

    def _event(self, request: Request, route: RouteSpec, params: dict[str, str]) -> dict[str, Any]:
        text = TEXT_TYPES.match(request.headers.get("content-type", "text/plain"))
        try:
            body = request.body.decode() if text else None
        except UnicodeDecodeError:
            body = None
        encoded = body is None and bool(request.body)
        query: dict[str, list[str]] = {}
        for key, value in parse_qsl(request.query, keep_blank_values=True):
            query.setdefault(key, []).append(value)
        now = time.time()
        event: dict[str, Any] = {
            "version": "2.0",
            "routeKey": route.key,
            "rawPath": request.path,
            "rawQueryString": request.query,
            "headers": {k: v for k, v in request.headers.items() if k != "cookie"},
            "requestContext": {
                "accountId": "123456789012",
                "apiId": self.api_id,
                "domainName": request.headers.get("host", "127.0.0.1"),
                "domainPrefix": "local",
                "http": {
                    "method": request.method,
                    "path": request.path,
                    "protocol": "HTTP/1.1",
                    "sourceIp": request.source_ip,
                    "userAgent": request.headers.get("user-agent", ""),
                },
                "requestId": str(uuid.uuid4()),
                "routeKey": route.key,
                "stage": "$default",
                "time": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(now)),
                "timeEpoch": int(now * 1000),
            },
            "isBase64Encoded": encoded,
        }
        if "cookie" in request.headers:
            event["cookies"] = [c.strip() for c in request.headers["cookie"].split(";") if c.strip()]
        if query:
            event["queryStringParameters"] = {k: ",".join(v) for k, v in query.items()}
        if params:
            event["pathParameters"] = params
        if request.body:
            event["body"] = base64.b64encode(request.body).decode() if encoded else body
        return event


def _json(status: int, body: dict[str, Any]) -> Reply:
    return Reply(status, {"content-type": "application/json"}, [], json.dumps(body).encode())


def _reply(result: Any) -> Reply:
    if not (isinstance(result, dict) and "statusCode" in result):
        # Payload 2.0: anything else is a 200 with the value as a JSON body.
        return Reply(200, {"content-type": "application/json"}, [], json.dumps(result).encode())
    headers = {k.lower(): str(v) for k, v in (result.get("headers") or {}).items()}
    for key, values in (result.get("multiValueHeaders") or {}).items():
        headers[key.lower()] = ", ".join(str(v) for v in values)
    raw = result.get("body") or ""
    if not isinstance(raw, str):
        raw = json.dumps(raw)
    body = base64.b64decode(raw) if result.get("isBase64Encoded") else raw.encode()
    return Reply(int(result["statusCode"]), headers, list(result.get("cookies") or []), body)
