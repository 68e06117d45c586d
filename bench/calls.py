"""AWS calls per operation: every route and job through its real handler, against moto, counted.

Counting patches `botocore.client.BaseClient._make_api_call`, which every client goes through: ours
(`grantlink.aws`), Powertools' idempotency client and the Encryption SDK's own KMS client. One count is one API
call (retries happen inside it). Partner HTTP calls are not AWS calls; they are counted apart, at
`requests.Session.send` (the connection test and the OAuth token requests both use requests).

Warm: each operation runs once uncounted (clients built, the cursor secret read, the catalogue loaded), then
once more, counted, on fresh state where it consumes something (a link, an OAuth flow, a due credential).
The partners are local: the demo partners' account endpoints (`infra.local.extras`) and a fake OAuth partner
(`tests.unit.oauth_fakes`) on one HTTP server on 127.0.0.1.

Each operation states what it was measured to make when its excess was explained from the code (`expected`);
a row whose measurement differs is flagged, so the explanations cannot silently go stale.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import os
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any
from unittest import mock
from urllib.parse import urlsplit

import boto3
import pytest
import requests
from botocore.client import BaseClient
from botocore.exceptions import ClientError
from moto import mock_aws
from pytest_httpserver import HTTPServer

from infra.local import moto_atomic, resources, template
from infra.local.gateway import LambdaContext
from tests.helpers import ALL_SCOPES, event, function

TENANT = "tnt_a"  # tenant A of tests/unit/oauth_fakes.py, whose OAuth app the fake partner sets up
APIKEY_PARTNER = 9001  # demo-apikey: its account endpoint is infra.local.extras.demo_apikey_me
KEY = "demo-key-bench-1234"
DUE = 12  # credentials due when the sweep runs


@dataclass
class Calls:
    aws: Counter[str] = field(default_factory=Counter)  # API calls by operation name
    refused: Counter[str] = field(default_factory=Counter)  # of those, answered with an error (a failed condition)
    actions: list[int] = field(default_factory=list)  # the number of actions in each TransactWriteItems
    http: list[str] = field(default_factory=list)  # outgoing HTTP requests: "METHOD /path"

    def listing(self) -> str:
        parts = []
        for operation, count in sorted(self.aws.items(), key=lambda i: (-i[1], i[0])):
            notes = [f"{self.refused[operation]} refused"] if self.refused[operation] else []
            if operation == "TransactWriteItems":
                notes.append(" + ".join(map(str, self.actions)) + (" actions" if self.actions != [1] else " action"))
            parts.append(f"{count} {operation}" + (f" ({'; '.join(notes)})" if notes else ""))
        return " + ".join(parts) or "none"


@contextmanager
def counting() -> Iterator[Calls]:
    """Count every AWS API call (by operation name) and every outgoing HTTP request made inside the block."""
    calls = Calls()
    real_call, real_send = BaseClient._make_api_call, requests.Session.send  # type: ignore[attr-defined]

    def api_call(client: Any, operation: str, params: Any) -> Any:
        calls.aws[operation] += 1
        if operation == "TransactWriteItems":
            calls.actions.append(len(params.get("TransactItems", [])))
        try:
            return real_call(client, operation, params)
        except ClientError:
            calls.refused[operation] += 1
            raise

    def send(session: Any, request: Any, **kwargs: Any) -> Any:
        calls.http.append(f"{request.method} {urlsplit(request.url).path}")
        return real_send(session, request, **kwargs)

    with (
        mock.patch.object(BaseClient, "_make_api_call", api_call),
        mock.patch.object(requests.Session, "send", send),
    ):
        yield calls


@dataclass
class Operation:
    name: str
    function: str
    prepare: Callable[[], dict[str, Any]]  # fresh state and the event for one run (not counted)
    status: int | None  # the expected statusCode (None: not an HTTP function)
    expected: dict[str, int]  # what it was measured to make when the excess below was written
    minimum: str
    minimum_calls: int
    excess: str = ""
    http_note: str = ""
    check: Callable[[Any], bool] | None = None  # for the jobs and the authorizer: did it do its work?


def invoke(op: Operation, evt: dict[str, Any]) -> Any:
    """Call the operation's handler; a wrong status (or a job that did nothing) fails the benchmark."""
    # 60 s, the worker's timeout in template.yaml: it starts no record with under 30 s left.
    context = LambdaContext(function_name=op.function, timeout_seconds=60)
    answer = function(op.function).lambda_handler(evt, context)
    if op.status is not None and answer.get("statusCode") != op.status:
        raise AssertionError(f"{op.name}: status {answer.get('statusCode')}, expected {op.status}: {answer}")
    if op.check is not None and not op.check(answer):
        raise AssertionError(f"{op.name}: {answer}")
    return answer


def measure(op: Operation) -> Calls:
    """Run once warm-up, then once counted."""
    invoke(op, op.prepare())
    evt = op.prepare()
    with counting() as calls:
        invoke(op, evt)
    return calls


# --- events and state ---------------------------------------------------------------------------------------


def _api(name: str, **changes: Any) -> dict[str, Any]:
    return event(name, tenant=TENANT, scopes=ALL_SCOPES, **changes)


def _reroute(evt: dict[str, Any], route_key: str, path: str) -> dict[str, Any]:
    evt["routeKey"] = evt["requestContext"]["routeKey"] = route_key
    evt["rawPath"] = evt["requestContext"]["http"]["path"] = path
    evt["requestContext"]["http"]["method"] = route_key.split(" ", 1)[0]
    return evt


def _link(partner: int = APIKEY_PARTNER) -> tuple[str, str]:
    from grantlink import links
    from grantlink.models import Caller, CreateLinkRequest

    request = CreateLinkRequest.model_validate({"partnerId": partner, "title": "Bench"})
    link, token = links.create_link(Caller(TENANT), request)
    return link.id, token


def _apikey_credential() -> str:
    from grantlink import connect

    link_id, token = _link()
    return connect.submit(link_id, token, {"apiKey": KEY}).credential.id


def _oauth_credential() -> str:
    """A credential connected through the fake OAuth partner (start, then the callback)."""
    from grantlink import links
    from tests.unit.oauth_fakes import A, finish, start_flow

    link, query = start_flow()
    assert finish(query).connected
    return links.get_link(A, link.id).credential_id or ""


def _due_oauth_credential() -> str:
    from tests.unit.oauth_fakes import expire_access_token

    credential_id = _oauth_credential()
    expire_access_token(credential_id)
    return credential_id


def _link_form(**extra: str) -> dict[str, str]:
    link_id, token = _link()
    return {"id": link_id, "token": token, **extra}


def _oauth_start() -> dict[str, Any]:
    from tests.unit.oauth_fakes import PARTNER_ID

    link_id, token = _link(PARTNER_ID)
    evt = event("connect_post", form={"id": link_id, "token": token})
    return _reroute(evt, "POST /connect/oauth/start", "/connect/oauth/start")


def _callback() -> dict[str, Any]:
    from grantlink import providers
    from tests.unit.oauth_fakes import PARTNER_ID, start_flow

    _, query = start_flow()
    issuer = providers.get(PARTNER_ID).oauth.issuer  # type: ignore[union-attr]
    evt = event("connect_get", query={"code": "code-bench", "state": query["state"][0], "iss": issuer})
    return _reroute(evt, "GET /oauth/callback", "/oauth/callback")


def _connect_done() -> dict[str, Any]:
    return _reroute(event("connect_get", query={"partner": APIKEY_PARTNER}), "GET /connect/done", "/connect/done")


def _connection_test() -> dict[str, Any]:
    credential_id = _apikey_credential()
    evt = _api("reauthorize", path_id=credential_id)
    return _reroute(evt, "POST /credentials/{id}/test", f"/credentials/{credential_id}/test")


def _oauth_app(method: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    from tests.unit.oauth_fakes import PARTNER_ID

    evt = _api("get_partner", path_id=str(PARTNER_ID), **({"body": body} if body else {}))
    return _reroute(evt, f"{method} /partners/{{id}}/oauth-app", f"/partners/{PARTNER_ID}/oauth-app")


def _put_oauth_app() -> dict[str, Any]:
    from tests.unit.oauth_fakes import CLIENT_SECRET

    return _oauth_app("PUT", {"clientId": "client-1", "clientSecret": CLIENT_SECRET})


def _delete_oauth_app() -> dict[str, Any]:
    _put_oauth_app_directly()  # the previous run deleted it
    return _oauth_app("DELETE")


def _put_oauth_app_directly() -> None:
    from grantlink import oauth
    from grantlink.models import Caller, OAuthAppRequest
    from tests.unit.oauth_fakes import CLIENT_SECRET, PARTNER_ID, REDIRECT

    app = OAuthAppRequest.model_validate({"clientId": "client-1", "clientSecret": CLIENT_SECRET})
    oauth.put_app(Caller(TENANT), PARTNER_ID, app, REDIRECT)


def _sqs(body: dict[str, Any]) -> dict[str, Any]:
    """An SQS event of one message, as Lambda delivers it to the renewal worker."""
    return {
        "Records": [
            {
                "messageId": "m-1",
                "receiptHandle": "r-1",
                "body": json.dumps(body),
                "attributes": {},
                "messageAttributes": {},
                "md5OfBody": "",
                "eventSource": "aws:sqs",
                "awsRegion": resources.REGION,
                "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:renewals",
            }
        ]
    }


def _refresh_message() -> dict[str, Any]:
    credential_id = _due_oauth_credential()
    return _sqs({"pk": f"CRED#{credential_id}", "sk": "CRED", "dueAt": "2000-01-01T00:00:00Z"})


def _expire_message() -> dict[str, Any]:
    """A link whose expiry has passed, and its due message."""
    from grantlink import clock
    from grantlink.store import default

    link = default().get_link(_link()[0])
    assert link is not None
    expired = replace(link, expires_at=link.expires_at.replace(year=2000), version=link.version + 1)
    default().replace_link_state(link, expired, None)
    return _sqs({"pk": f"SHARE#{link.id}", "sk": "SHARE", "dueAt": clock.iso(expired.expires_at)})


def _schedule(number: int | None = None) -> Callable[[], dict[str, Any]]:
    """The scheduler's event: a new scheduled time on every run, or always the same one (a redelivery)."""
    times = itertools.count(1)

    def prepare() -> dict[str, Any]:
        _due_credentials()
        minute = next(times) if number is None else number
        return {"id": f"schedule-{minute}", "time": f"2026-11-22T{minute // 60:02d}:{minute % 60:02d}:00Z"}

    return prepare


def _due_credentials() -> None:
    """DUE credentials with fixed ids, so that the shards they fall in (and the batches) are the same every run."""
    from bench.renewal import _credential
    from grantlink.store import default, serialize

    store = default()
    for index in range(DUE):
        store._call("put_item", TableName=store.table, Item=serialize(_credential(index, True, b"x" * 200)))


def _authorizer() -> Callable[[], dict[str, Any]]:
    """The authorizer's event with one tenant's API key (the tenant is created on the first run)."""
    key: list[str] = []

    def prepare() -> dict[str, Any]:
        from grantlink import tenants

        if not key:
            key.append(tenants.create_tenant("bench")[1])
        return event("authorizer", headers={"authorization": f"Bearer {key[0]}"})

    return prepare


def _known_tenant(answer: Any) -> bool:
    return bool(answer.get("context", {}).get("tenantId"))


def _queued(answer: Any) -> bool:
    return answer.get("queued", 0) >= 1


def _all_done(answer: Any) -> bool:
    return answer == {"batchItemFailures": []}


COUNTERS = (
    "+1 GetItem: the tenant's counters for totalItemsCount / totalPages (and +1 GetSecretValue once per process: "
    "the cursor key)"
)


def operations() -> list[Operation]:
    """Every route and job, the minimum the work needs, and why ours makes more (read from the code)."""
    from tests.unit.oauth_fakes import PARTNER_ID

    def create(partner: int, **changes: Any) -> Callable[[], dict[str, Any]]:
        return lambda: _api("create_link", body={"partnerId": partner, "title": "Bench"}, **changes)

    def on_link(name: str) -> Callable[[], dict[str, Any]]:
        return lambda: _api(name, path_id=_link()[0])

    def on_credential(name: str, make: Callable[[], str] = _apikey_credential) -> Callable[[], dict[str, Any]]:
        return lambda: _api(name, path_id=make())

    def idempotent() -> dict[str, Any]:
        return create(APIKEY_PARTNER, headers={"Idempotency-Key": os.urandom(8).hex()})()

    return [
        # share links
        Operation("link create", "share_links", create(APIKEY_PARTNER), 201, {"TransactWriteItems": 1},
                  "1 write", 1),
        Operation("link create, OAuth partner", "share_links", create(PARTNER_ID), 201,
                  {"GetItem": 1, "TransactWriteItems": 1}, "1 write", 1,
                  "+1 GetItem: checks the tenant has an OAuth app for the partner (a 422 now, not at the customer's "
                  "start)"),
        Operation("link create with Idempotency-Key", "share_links", idempotent, 201,
                  {"PutItem": 1, "TransactWriteItems": 1, "UpdateItem": 1}, "1 write", 1,
                  "+1 PutItem +1 UpdateItem: Powertools' idempotency record (in progress, then completed), where a "
                  "conditional Put of the key in the link's own transaction would do"),
        Operation("link get", "share_links", on_link("get_link"), 200, {"GetItem": 1}, "1 read", 1),
        Operation("link list page", "share_links", lambda: _api("list_links", query={"perPage": 2}), 200,
                  {"Query": 1, "GetItem": 1}, "1 query", 1, COUNTERS),
        Operation("link PUT (regenerate)", "share_links", on_link("regenerate_link"), 200,
                  {"GetItem": 1, "PutItem": 1}, "1 conditional write", 1,
                  "+1 GetItem: reads the link first: its status decides the write (from status 1 or 2 the status "
                  "counters move too, in one transaction with the link) and a revoked link is a 409, not a write; "
                  "the write itself is conditional on the version read"),
        Operation("link DELETE (revoke)", "share_links", on_link("revoke_link"), 200,
                  {"GetItem": 1, "TransactWriteItems": 1, "PutEvents": 1}, "1 conditional write", 1,
                  "+1 GetItem: reads the link first (tenant, version, and its status for the status counters the "
                  "transaction moves); +1 PutEvents: the share.revoked event"),
        # the connect page and OAuth
        Operation("connect page open", "connect_page", lambda: event("connect_get", query=_link_form()), 200,
                  {"GetItem": 1}, "1 read", 1),
        Operation("connect submit", "connect_page", lambda: event("connect_post", form=_link_form(f_apiKey=KEY)),
                  200, {"GetItem": 1, "GenerateDataKey": 1, "TransactWriteItems": 1, "PutEvents": 1},
                  "1 read + 1 GenerateDataKey + 1 transaction", 3, "+1 PutEvents: the share.completed event",
                  "+1 HTTP: the partner's test request, before accepting"),
        Operation("connect done page", "connect_page", _connect_done, 200, {}, "none", 0),
        Operation("OAuth start", "oauth_callback", _oauth_start, 303,
                  {"GetItem": 2, "TransactWriteItems": 1, "PutEvents": 1}, "1 read + 1 transaction", 2,
                  "+1 GetItem: the tenant's OAuth app (client id, scopes) for the authorize URL; +1 PutEvents: the "
                  "share.waiting_for_oauth event"),
        Operation("OAuth callback", "oauth_callback", _callback, 303,
                  {"DeleteItem": 1, "GetItem": 2, "Decrypt": 1, "GenerateDataKey": 1, "TransactWriteItems": 1,
                   "PutEvents": 1},
                  "1 flow consume + 1 GenerateDataKey + 1 transaction", 3,
                  "+1 GetItem +1 Decrypt: the tenant's OAuth app and its client secret, to exchange the code; "
                  "+1 GetItem: the link, checked before the code is spent (a revoked or expired link gets no tokens); "
                  "+1 PutEvents: the share.completed event", "+1 HTTP: the token request"),
        # credentials
        Operation("credentials list page", "credentials", lambda: _api("list_credentials", query={"perPage": 2}),
                  200, {"Query": 1, "GetItem": 1}, "1 query", 1, COUNTERS),
        Operation("credential get", "credentials", on_credential("get_credential"), 200, {"GetItem": 1},
                  "1 read", 1),
        Operation("credential PATCH (rename)", "credentials", on_credential("update_credential"), 200,
                  {"GetItem": 1, "TransactWriteItems": 1}, "1 read + 1 transaction (the change and its audit entry)",
                  2),
        Operation("credential DELETE", "credentials", on_credential("delete_credential"), 200,
                  {"GetItem": 1, "TransactWriteItems": 1, "PutEvents": 1},
                  "1 read + 1 transaction (the counters need the credential's state and partner)", 2,
                  "+1 PutEvents: the credential.deleted event"),
        Operation("secret read", "credentials", on_credential("read_secret"), 200,
                  {"GetItem": 1, "Decrypt": 1, "PutItem": 1}, "1 read + 1 Decrypt", 2,
                  "+1 PutItem: the audit entry for the secret read (every secret read is audited)"),
        Operation("secret read, OAuth token due", "credentials", on_credential("read_secret", _due_oauth_credential),
                  200, {"GetItem": 3, "UpdateItem": 1, "Decrypt": 2, "GenerateDataKey": 1, "TransactWriteItems": 1,
                        "PutItem": 1, "PutEvents": 1},
                  "1 read + the refresh: lease (returns the item), app read, 2 Decrypt, GenerateDataKey, transaction",
                  7, "+1 PutItem: the secret_read audit entry, apart from the refresh's transaction (the refresh is "
                  "shared with the worker and the connection test, which audit differently); +1 GetItem: tokens kept "
                  "aside by an earlier refresh that could not write (a rotated refresh token is never lost); "
                  "+1 PutEvents: credential.refreshed", "+1 HTTP: the refresh request"),
        Operation("credential reauthorize", "credentials", on_credential("reauthorize"), 201,
                  {"GetItem": 1, "TransactWriteItems": 1}, "1 read + 1 transaction (the new link, its counters and "
                  "the audit entry)", 2),
        Operation("credential audit page", "credentials", on_credential("list_audit"), 200,
                  {"GetItem": 1, "Query": 1}, "1 read + 1 query (audit entries carry no tenant id)", 2),
        Operation("connection test", "connection_test", _connection_test, 200,
                  {"GetItem": 1, "Decrypt": 1, "TransactWriteItems": 1}, "1 read + 1 Decrypt + 1 write", 3,
                  "", "+1 HTTP: the partner's test request"),
        # the authorizer and the jobs
        Operation("authorizer (uncached key)", "authorizer", _authorizer(), None, {"GetItem": 1}, "1 read", 1,
                  check=_known_tenant),
        Operation(f"sweep ({DUE} due, 4 shards)", "expiry_sweep", _schedule(), None,
                  {"PutItem": 1, "Query": 4, "SendMessageBatch": 2, "UpdateItem": 1},
                  f"1 query per shard + 1 SendMessageBatch per 10 due ({math.ceil(DUE / 10)})", 4 + math.ceil(DUE / 10),
                  "+1 PutItem +1 UpdateItem: Powertools' idempotency record, so a redelivered schedule queues once "
                  "(R1; the worker re-checks every item anyway)", check=_queued),
        Operation("sweep, the same schedule event again", "expiry_sweep", _schedule(0), None,
                  {"PutItem": 1}, "1 conditional write (the de-duplication)", 1, check=_queued),
        Operation("worker: expire a link", "renewal_worker", _expire_message, None,
                  {"GetItem": 1, "PutItem": 1, "PutEvents": 1}, "1 read + 1 write + 1 PutEvents", 3,
                  check=_all_done),
        Operation("worker: refresh a token", "renewal_worker", _refresh_message, None,
                  {"GetItem": 3, "UpdateItem": 1, "Decrypt": 2, "GenerateDataKey": 1, "TransactWriteItems": 1,
                   "PutEvents": 1},
                  "1 read + lease (returns the item) + app read + 2 Decrypt + GenerateDataKey + transaction + "
                  "PutEvents", 8, "+1 GetItem: tokens kept aside by an earlier refresh that could not write",
                  "+1 HTTP: the refresh request", check=_all_done),
        # partners (last: the DELETE leaves tenant A without its OAuth app)
        Operation("partners list", "partners", lambda: _api("list_partners"), 200, {},
                  "none (the catalogue ships in the layer)", 0),
        Operation("partner get", "partners", lambda: _api("get_partner"), 200, {}, "none", 0),
        Operation("oauth-app PUT", "partners", _put_oauth_app, 200, {"GenerateDataKey": 1, "TransactWriteItems": 1},
                  "1 GenerateDataKey + 1 write", 2, "the write is a 2-action transaction: the app, and clearing a "
                  "refused-app report so a refusal of the new app is reported again"),
        Operation("oauth-app GET", "partners", lambda: _oauth_app("GET"), 200, {"GetItem": 1}, "1 read", 1),
        Operation("oauth-app DELETE", "partners", _delete_oauth_app, 200, {"DeleteItem": 1}, "1 delete", 1),
    ]  # fmt: skip


# --- the environment ----------------------------------------------------------------------------------------


def _demo_server(server: HTTPServer) -> None:
    """The demo partners' account endpoints (the local stack's own handlers) on `server`."""
    from werkzeug import Request as WerkzeugRequest
    from werkzeug import Response

    from infra.local import extras
    from infra.local.gateway import Request

    def adapt(handler: Any) -> Any:
        def serve(request: WerkzeugRequest) -> Response:
            headers = {k.lower(): v for k, v in request.headers.items()}
            reply = handler(Request(request.method, request.path, "", headers, b"", ""))
            return Response(reply.body, reply.status, headers=reply.headers)

        return serve

    for path, handler in extras.endpoints().items():
        if path.startswith("/_demo/"):
            server.expect_request(path).respond_with_handler(adapt(handler))


@contextmanager
def environment() -> Iterator[HTTPServer]:
    """moto with the template's resources, the functions' environment, and the partners on 127.0.0.1 (the server
    they are on is yielded, for a benchmark to add endpoints)."""
    saved = dict(os.environ)
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # not a line per partner request
    server = HTTPServer(host="127.0.0.1", port=0)
    server.start()
    patches = pytest.MonkeyPatch()
    moto_atomic.install()
    try:
        with mock_aws():
            for name in ("AWS_ENDPOINT_URL", "AWS_PROFILE", "AWS_SESSION_TOKEN"):
                os.environ.pop(name, None)
            os.environ.update(resources.LOCAL_ENVIRONMENT)
            tpl = template.load()
            resolver = resources.provision(tpl, lambda s: boto3.client(s, region_name=resources.REGION), "bench")  # type: ignore[call-overload]
            base = server.url_for("").rstrip("/")
            os.environ.update(resources.function_environment(tpl, resolver))
            os.environ.update(
                GRANTLINK_CONNECT_BASE_URL="https://connect.example.test", GRANTLINK_LOCAL_DEMO="true",
                GRANTLINK_DEMO_BASE_URL=base, GRANTLINK_DEMO_OAUTH_URL=f"{base}/oauth",
                GRANTLINK_ALLOW_PRIVATE_TARGETS="true", POWERTOOLS_LOG_LEVEL="WARNING",
                POWERTOOLS_METRICS_DISABLED="true", POWERTOOLS_TRACE_DISABLED="true",
            )  # fmt: skip
            _reset()
            _demo_server(server)
            from tests.unit.oauth_fakes import fake_partner

            fake_partner(server, patches)
            yield server
    finally:
        patches.undo()
        server.clear()
        server.stop()
        os.environ.clear()
        os.environ.update(saved)
        _reset()


def _reset() -> None:
    from grantlink import aws, config, crypto, idempotency, pagination, providers, store

    for module in (config, aws, crypto, pagination, idempotency, providers):
        module.reset()
    store._default = None


# --- the report ---------------------------------------------------------------------------------------------


def _listing(counts: dict[str, int]) -> str:
    return Calls(aws=Counter(counts)).listing()


def run(small: bool = False) -> str:
    with environment():
        for _ in range(3):  # enough items for a second page, so list pages sign a cursor
            _apikey_credential()
        results = [(op, measure(op)) for op in operations()]
    return _report(results)


def _report(results: list[tuple[Operation, Calls]]) -> str:
    rows, stale = [], []
    for op, calls in results:
        measured = dict(calls.aws)
        total = sum(measured.values())
        if measured != op.expected:
            stale.append(
                f"- {op.name}: measured {_listing(measured)}, the explanation was written for {_listing(op.expected)}"
            )
        http = op.http_note or ("; ".join(calls.http) if calls.http else "—")
        if calls.http and not op.http_note:
            http = f"{len(calls.http)} HTTP: " + ", ".join(calls.http)
        excess = op.excess or ("—" if total <= op.minimum_calls else "(unexplained)")
        rows.append(
            f"| {op.name} | {op.function} | {calls.listing()} | {total} / {op.minimum_calls} | {op.minimum} | "
            f"{excess} | {http} |"
        )
    lines = [
        "\n## AWS calls per operation, against the minimum\n",
        "Every route and job through its real handler with moto behind botocore, warm (the second run is counted). "
        "Counted at `BaseClient._make_api_call`, so Powertools' idempotency client and the Encryption SDK's own "
        "KMS client count too; one count is one API call. Partner HTTP calls are listed apart: they are not AWS "
        "calls. *calls* = measured / minimum AWS calls.\n",
        "| operation | function | AWS calls measured | calls | minimum | excess, and why | partner HTTP |",
        "| --- | --- | --- | ---: | --- | --- | --- |",
        *rows,
        "",
    ]
    if stale:
        lines += ["**Changed since the excess was explained** (re-read the code before quoting the row):", *stale, ""]
    return "\n".join(lines)
