"""The proxy's cost: its added latency over calling the same partner directly, and its AWS calls per request.

The partner is the local demo partners' echo (`infra.local.extras.demo_echo`, where their proxy base URLs point) on
a real HTTP server on 127.0.0.1; moto stands in for DynamoDB and KMS in process (bench/calls.py's environment).
*Direct* is a `requests` GET to the echo with the API key header; *proxied* is the same GET through the proxy
function's handler (API Gateway event in, the partner's answer out), warm. The added latency is grantlink's own
work: the credential read, the decryption, the URL and header checks, the audit write — and moto's in-process
stand-ins for DynamoDB and KMS, which are slower than the real services from inside a region.

AWS calls are counted at `BaseClient._make_api_call` (bench/calls.py's counter) for one warm proxied call of an API
key credential and of an OAuth credential whose token is fresh; the minimum is 1 read + 1 Decrypt.
"""

from __future__ import annotations

import re
import statistics
import time
from typing import Any

import requests
from pytest_httpserver import HTTPServer

from bench import calls
from bench.calls import KEY, TENANT, counting
from infra.local.gateway import LambdaContext
from tests.helpers import ALL_SCOPES, function, proxy_event

SCOPES = ALL_SCOPES + " credentials:proxy"
ROUNDS, SMALL_ROUNDS = 200, 20
MINIMUM = {"GetItem": 1, "Decrypt": 1}


def run(small: bool = False) -> str:
    rounds = SMALL_ROUNDS if small else ROUNDS
    with calls.environment() as server:
        base = _echo_on(server)
        apikey = calls._apikey_credential()
        oauth = calls._oauth_credential()
        direct = _timed(rounds, lambda: _direct(base))
        proxied = _timed(rounds, lambda: _proxied(apikey))
        counted = {"API key": _counted(apikey), "OAuth, fresh token": _counted(oauth, "me")}
    return _report(rounds, direct, proxied, counted)


def _echo_on(server: HTTPServer) -> str:
    """Serve the echo on bench/calls.py's partner server; returns the server's base URL."""
    from werkzeug import Request as WerkzeugRequest
    from werkzeug import Response

    from infra.local import extras
    from infra.local.gateway import Request

    def serve(request: WerkzeugRequest) -> Response:
        headers = {k.lower(): v for k, v in request.headers.items()}
        ours = Request(request.method, request.path, request.query_string.decode(), headers, request.get_data(), "")
        reply = extras.demo_echo(ours)
        return Response(reply.body, reply.status, headers=reply.headers)

    server.expect_request(re.compile("^" + re.escape(extras.ECHO))).respond_with_handler(serve)
    server.expect_request("/me").respond_with_json({"name": "Ada"})  # the fake OAuth partner's API
    return server.url_for("").rstrip("/")


def _direct(base: str) -> None:
    answer = requests.get(f"{base}/_demo/echo/demo-apikey/v1/me", headers={"X-Api-Key": KEY}, timeout=10)
    assert answer.status_code == 200, answer.text


def _proxied(credential_id: str, path: str = "v1/me") -> dict[str, Any]:
    evt = proxy_event(credential_id, path, tenant=TENANT, scopes=SCOPES)
    answer = function("proxy").lambda_handler(evt, LambdaContext("proxy", 30))
    assert answer["statusCode"] == 200, answer
    return answer


def _timed(rounds: int, call: Any) -> list[float]:
    call()  # warm: connections, clients, the catalogue
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        call()
        times.append((time.perf_counter() - started) * 1000)
    return times


def _counted(credential_id: str, path: str = "v1/me") -> calls.Calls:
    _proxied(credential_id, path)  # warm
    with counting() as counted:
        _proxied(credential_id, path)
    return counted


def _p95(times: list[float]) -> float:
    return sorted(times)[max(0, round(0.95 * len(times)) - 1)]


def _report(rounds: int, direct: list[float], proxied: list[float], counted: dict[str, calls.Calls]) -> str:
    d50, p50 = statistics.median(direct), statistics.median(proxied)
    d95, p95 = _p95(direct), _p95(proxied)
    lines = [
        "## Proxy\n",
        f"{rounds} warm GETs of the demo echo, directly and through the proxy function's handler (bench/proxy.py). "
        "The added latency is grantlink's own work with moto in process standing in for DynamoDB and KMS.\n",
        "| | median | p95 |",
        "| --- | --- | --- |",
        f"| direct call to the partner | {d50:.1f} ms | {d95:.1f} ms |",
        f"| through the proxy | {p50:.1f} ms | {p95:.1f} ms |",
        f"| added by the proxy | {p50 - d50:.1f} ms | {p95 - d95:.1f} ms |",
        f"| ratio proxied / direct | {p50 / d50:.1f}× | {p95 / d95:.1f}× |",
        "",
        "AWS calls per proxied request (warm), against the minimum of 1 read + 1 Decrypt for a fresh token:\n",
        "| credential | calls | measured / minimum | the excess |",
        "| --- | --- | --- | --- |",
    ]
    for name, found in counted.items():
        total = sum(found.aws.values())
        lines.append(f"| {name} | {found.listing()} | {total} / {sum(MINIMUM.values())} | {_excess(found)} |")
    return "\n".join(lines)


def _excess(found: calls.Calls) -> str:
    extra = dict(found.aws)
    for operation, count in MINIMUM.items():
        extra[operation] = extra.get(operation, 0) - count
    extra = {k: v for k, v in extra.items() if v}
    if not extra:
        return "—"
    if extra == {"PutItem": 1}:  # store.transact sends a lone action as a PutItem
        return "the call's audit entry (`proxied`: method, path, status, latency), written once the partner answered"
    return f"(unexplained: {extra})"
