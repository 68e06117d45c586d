"""Shared test helpers: event fixtures, function modules, a frozen clock, and the links, credentials, renewal jobs
and template resources that tests in several modules (tests/unit, tests/security) drive."""

from __future__ import annotations

import base64
import copy
import json
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from infra.local import template
from infra.local.gateway import LambdaContext, load_module

if TYPE_CHECKING:
    from grantlink.models import Caller, ShareLink

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


def reroute(evt: dict[str, Any], route_key: str, path: str) -> dict[str, Any]:
    """`evt` sent to another route (for routes with no event file of their own): route key, method and path."""
    evt["routeKey"] = evt["requestContext"]["routeKey"] = route_key
    evt["rawPath"] = evt["requestContext"]["http"]["path"] = path
    evt["requestContext"]["http"]["method"] = route_key.split(" ", 1)[0]
    return evt


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


# --- links, credentials and connection tests, through the use cases and the handlers ----------------------------

SECRET = "sk_live_verysecretvalue_1234"  # what a customer pastes into an API-key partner's form
VALID_LINK = {"partnerId": 9001, "title": "CRM for ACME"}


def new_link(partner: int = 9001, caller: Caller | None = None, **fields: Any) -> tuple[ShareLink, str]:
    """A link made through grantlink.links, by tenant A with links:write unless `caller` says otherwise; returns
    (the link, its token)."""
    from grantlink import links
    from grantlink.models import Caller, CreateLinkRequest

    caller = caller or Caller("tnt_a", frozenset({"links:write"}))
    return links.create_link(caller, CreateLinkRequest(**{"partnerId": partner, "title": "ACME CRM", **fields}))


def connected(tenant: str = "tnt_a", partner: int = 9001, title: str = "ACME CRM") -> str:
    """A credential made the way a customer makes one (9001: apiKey=SECRET, 9002: ada/SECRET); returns its id."""
    from grantlink import connect, links
    from grantlink.models import Caller, CreateLinkRequest

    link, token = links.create_link(Caller(tenant), CreateLinkRequest(partnerId=partner, title=title))
    values = {"apiKey": SECRET} if partner == 9001 else {"username": "ada", "password": SECRET}
    return connect.submit(link.id, token, values).credential.id


def creds(name: str, credential_id: str = "", tenant: str = "tnt_a", **changes: Any) -> tuple[int, dict, dict]:
    """The credentials function on tests/events/<name>.json, for `credential_id` and `tenant`."""
    if credential_id:
        changes["path_id"] = credential_id
    return invoke("credentials", event(name, tenant=tenant, **changes))


def proxy_event(credential_id: str, path: str, method: str = "GET", **changes: Any) -> dict[str, Any]:
    """An API Gateway event for ANY /credentials/{id}/proxy/{path+}: `method` on the partner's `path` (as sent, so
    still percent-encoded); `event()`'s changes apply (tenant, scopes — which need credentials:proxy —, body, …)."""
    evt = event("get_credential", path_id=credential_id, **changes)
    reroute(evt, "ANY /credentials/{id}/proxy/{path+}", f"/credentials/{credential_id}/proxy/{path}")
    evt["requestContext"]["http"]["method"] = method
    evt["pathParameters"] = {"id": credential_id, "path": path}
    return evt


def token_event(credential_id: str, force: bool = False, **changes: Any) -> dict[str, Any]:
    """An API Gateway event for GET /credentials/{id}/token[?forceRefresh=true]."""
    evt = event("read_secret", path_id=credential_id, query={"forceRefresh": "true"} if force else {}, **changes)
    return reroute(evt, "GET /credentials/{id}/token", f"/credentials/{credential_id}/token")


def create_link(body: Any = VALID_LINK, **changes: Any) -> tuple[int, dict[str, Any], dict[str, str]]:
    """POST /credentials/grant-access-sharing through the share_links handler, as tenant A unless told."""
    changes.setdefault("tenant", "tnt_a")
    return invoke("share_links", event("create_link", body=body, **changes))


def run_connection_test(
    credential_id: str, tenant: str = "tnt_a", scopes: str = ALL_SCOPES
) -> tuple[int, dict[str, Any]]:
    """POST /credentials/{id}/test through the connection_test handler."""
    evt = event("reauthorize", tenant=tenant, scopes=scopes, path_id=credential_id)
    reroute(evt, "POST /credentials/{id}/test", f"/credentials/{credential_id}/test")
    status, body, _ = invoke("connection_test", evt)
    return status, body


# --- the renewal jobs: the sweep, the queue and the worker (moto underneath) -------------------------------------


def due_items(aws_env: dict[str, Any]) -> list[dict[str, Any]]:
    """The items in the main table's `due` index, soonest first."""
    import boto3

    client = boto3.client("dynamodb")
    items = client.scan(TableName=aws_env["env"]["GRANTLINK_TABLE"], IndexName="due")["Items"]
    return sorted(items, key=lambda i: i["dueAt"]["S"])


def queued(aws_env: dict[str, Any]) -> list[dict[str, Any]]:
    """Every message on the renewal queue, received and deleted."""
    import boto3

    sqs = boto3.client("sqs")
    url = aws_env["env"]["GRANTLINK_RENEWAL_QUEUE_URL"]
    messages: list[dict[str, Any]] = []
    while batch := sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", []):
        messages += batch
        sqs.delete_message_batch(
            QueueUrl=url, Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(batch)]
        )
    return messages


def work(messages: list[dict[str, Any]]) -> dict[str, Any]:
    """The renewal worker's handler on an SQS event made of these messages."""
    shape = {
        "attributes": {},
        "messageAttributes": {},
        "md5OfBody": "",
        "eventSource": "aws:sqs",
        "awsRegion": "us-east-1",
    }
    records = [
        {
            **shape,
            "messageId": m["MessageId"],
            "receiptHandle": m["ReceiptHandle"],
            "body": m["Body"],
            "eventSourceARN": "q",
        }
        for m in messages
    ]
    return function("renewal_worker").lambda_handler({"Records": records}, LambdaContext("worker", 60))


def run_jobs(aws_env: dict[str, Any]) -> dict[str, Any]:
    """One sweep, then the worker on whatever it queued (Lambda never invokes it with an empty batch)."""
    from grantlink import renewal

    renewal.sweep()
    messages = queued(aws_env)
    return work(messages) if messages else {"batchItemFailures": []}


# --- template.yaml -------------------------------------------------------------------------------------------------


@cache
def _template() -> dict[str, Any]:
    return template.load()


def resource_properties(logical_id: str) -> dict[str, Any]:
    """The Properties of one resource of template.yaml."""
    return _template()["Resources"][logical_id]["Properties"]
