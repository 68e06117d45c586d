"""Every AWS call a function makes is allowed on real AWS: by its role (as SAM expands it) and by the key policy.

moto enforces no IAM and no key policy, so a missing permission shows only after a deploy. Here every flow runs
in process against moto (tests/security/flows.py, plus the scheduled sweep and the worker through their
handlers), every API call each handler makes is recorded — service, operation, parameters, and for each
DynamoDB call on a table encrypted with the stack's key, the KMS calls DynamoDB makes for the caller — and a
small policy evaluator decides each one against the function's role statements in the SAM-translated template
and against the key policy, both resolved to the ARNs moto gave the resources.

The evaluator knows what these policies use: Allow/Deny, Action and Resource with `*`/`?` wildcards, and the
condition operators StringEquals, StringLike and Null. Anything else fails loudly rather than guessing.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from unittest import mock

import pytest
from botocore.client import BaseClient
from botocore.exceptions import ClientError

from infra.local import template
from infra.local.gateway import LambdaContext
from infra.local.resources import ACCOUNT
from tests.helpers import create_link, creds, event, function, invoke, queued, reroute, work
from tests.security.flows import run_every_flow
from tests.unit.oauth_fakes import FakeAuthorizationServer, connected_credential, expire_access_token
from tests.unit.test_template import cloudformation  # noqa: F401 - the SAM-translated template (a fixture)

TPL = template.load()
Statement = dict[str, Any]
# IAM actions of the API operations whose names differ from their action (batch forms share the single one).
ACTION_OF = {"SendMessageBatch": "SendMessage", "DeleteMessageBatch": "DeleteMessage"}
TRANSACT_ACTIONS = {
    "Put": "PutItem",
    "Update": "UpdateItem",
    "Delete": "DeleteItem",
    "ConditionCheck": "ConditionCheckItem",
}


@dataclass(frozen=True)
class Request:
    """One authorization request, as IAM and KMS see it."""

    action: str
    resource: str
    context: tuple[tuple[str, Any], ...] = ()  # condition keys and their values

    def value(self, key: str) -> Any:
        return dict(self.context).get(key)

    def __str__(self) -> str:
        return f"{self.action} on {self.resource} {dict(self.context) or ''}".rstrip()


# --- the evaluator -------------------------------------------------------------------------------------------------


def _listed(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _condition_holds(operator: str, expected: dict[str, Any], request: Request) -> bool:
    for key, wanted in expected.items():
        actual = request.value(key)
        if operator == "Null":
            if (actual is None) != (str(wanted).lower() == "true"):
                return False
        elif operator in ("StringEquals", "StringLike"):
            if actual is None:
                return False
            match = (lambda a, w: a == w) if operator == "StringEquals" else fnmatch.fnmatchcase
            if not any(match(str(a), str(w)) for a in _listed(actual) for w in _listed(wanted)):
                return False
        else:
            raise NotImplementedError(f"condition operator {operator} (teach the evaluator)")
    return True


def matches(statement: Statement, request: Request) -> bool:
    """Does this statement apply to the request (action, resource and every condition)?"""
    actions = _listed(statement.get("Action", []))
    if not any(fnmatch.fnmatchcase(request.action.lower(), a.lower()) for a in actions):
        return False
    if not any(fnmatch.fnmatchcase(request.resource, str(r)) for r in _listed(statement.get("Resource", []))):
        return False
    return all(_condition_holds(op, keys, request) for op, keys in statement.get("Condition", {}).items())


def allowed(statements: list[Statement], request: Request) -> bool:
    """IAM's rule: an explicit Deny wins; otherwise some Allow must apply."""
    applying = [s for s in statements if matches(s, request)]
    return any(s["Effect"] == "Allow" for s in applying) and not any(s["Effect"] == "Deny" for s in applying)


def _our_principal(statement: Statement) -> bool:
    """Key policy principals that cover the functions' roles: this account (delegation to IAM) or anyone."""
    principal = statement.get("Principal")
    aws = principal.get("AWS") if isinstance(principal, dict) else principal
    return any(p == "*" or p == f"arn:aws:iam::{ACCOUNT}:root" for p in _listed(aws))


# --- the template, resolved to moto's resources --------------------------------------------------------------------


@dataclass
class Stack:
    resolver: template.Resolver
    roles: dict[str, list[Statement]]  # function logical id → its role's statements
    key_policy: list[Statement]
    table_keys: dict[str, str] = field(default_factory=dict)  # table name → ARN of its SSE key

    def table_arn(self, name: str) -> str:
        return f"arn:aws:dynamodb:{self.resolver.ref('AWS::Region')}:{ACCOUNT}:table/{name}"


def _role_statements(output: dict[str, Any], resolver: template.Resolver, role: str) -> list[Statement]:
    resources = output["Resources"]
    documents = [p["PolicyDocument"] for p in resources[role]["Properties"].get("Policies", [])]
    for resource in resources.values():
        attached = resource["Type"] == "AWS::IAM::Policy" and {"Ref": role} in resource["Properties"]["Roles"]
        if attached and ("Condition" not in resource or resolver.condition(resource["Condition"])):
            documents.append(resource["Properties"]["PolicyDocument"])
    return [resolver.resolve(s) for d in documents for s in d["Statement"]]


def stack_of(output: dict[str, Any], resolver: template.Resolver) -> Stack:
    resolver = template.Resolver(output, dict(resolver.refs), dict(resolver.attrs))
    roles = {}
    for logical_id, resource in template.resources(output, "AWS::Lambda::Function").items():
        role = resource["Properties"]["Role"]["Fn::GetAtt"][0]
        roles[logical_id] = _role_statements(output, resolver, role)
    (key_id,) = template.resources(TPL, "AWS::KMS::Key")
    key_policy = resolver.resolve(TPL["Resources"][key_id]["Properties"]["KeyPolicy"])["Statement"]
    stack = Stack(resolver, roles, [s for s in key_policy if _our_principal(s)])
    for logical_id, table in template.resources(TPL, "AWS::DynamoDB::Table").items():
        key = table["Properties"].get("SSESpecification", {}).get("KMSMasterKeyId")
        if key:
            stack.table_keys[resolver.ref(logical_id)] = resolver.attrs[key["Ref"]]["Arn"]
    return stack


# --- recording the calls -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Call:
    function: str  # the function's folder name
    service: str
    operation: str
    params: dict[str, Any]


@contextmanager
def recording_calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Call]]:
    """Every AWS API call made while a function's handler runs, attributed to that function. Handlers run one at a
    time here, so a call from any thread (a worker's pool, the Encryption SDK's client) belongs to the running one."""
    calls: list[Call] = []
    running: list[str] = []
    for spec in template.functions(TPL):
        module = function(spec.name)
        monkeypatch.setattr(module, "lambda_handler", _attributed(module.lambda_handler, spec.name, running))
    real = BaseClient._make_api_call  # type: ignore[attr-defined]

    def api_call(client: Any, operation: str, params: dict[str, Any]) -> Any:
        if running:
            service = client.meta.service_model.service_name
            calls.append(Call(running[-1], service, operation, dict(params)))
        return real(client, operation, params)

    with mock.patch.object(BaseClient, "_make_api_call", api_call):
        yield calls


def _attributed(handler: Any, name: str, running: list[str]) -> Any:
    def run(event: Any, context: Any) -> Any:
        running.append(name)
        try:
            return handler(event, context)
        finally:
            running.pop()

    return run


# --- from an API call to the authorization requests it makes ------------------------------------------------------


def requests_of(call: Call, stack: Stack) -> list[tuple[Request, bool]]:
    """(request, whether the key policy decides it too) for one API call."""
    kinds = {"dynamodb": _dynamodb, "kms": _kms, "sqs": _sqs, "events": _events, "secretsmanager": _secret}
    if call.service not in kinds:
        raise NotImplementedError(f"{call.function} calls {call.service}:{call.operation} (teach requests_of)")
    return kinds[call.service](call, stack)


def _dynamodb(call: Call, stack: Stack) -> list[tuple[Request, bool]]:
    p = call.params
    if call.operation == "TransactWriteItems":
        pairs = [
            (TRANSACT_ACTIONS[kind], body["TableName"]) for item in p["TransactItems"] for kind, body in item.items()
        ]
    elif call.operation in ("BatchWriteItem", "BatchGetItem"):
        single = "GetItem" if call.operation == "BatchGetItem" else "PutItem"
        pairs = [(single, table) for table in p["RequestItems"]]
    else:
        pairs = [(call.operation, p["TableName"])]
    found = []
    for operation, table in pairs:
        arn = stack.table_arn(table) + (f"/index/{p['IndexName']}" if p.get("IndexName") else "")
        found.append((Request(f"dynamodb:{operation}", arn), False))
        if table in stack.table_keys:  # DynamoDB opens and seals the table's data keys for the caller
            found += [(r, True) for r in _through_dynamodb(table, stack)]
    return found


def _through_dynamodb(table: str, stack: Stack) -> list[Request]:
    region, suffix = stack.resolver.ref("AWS::Region"), stack.resolver.ref("AWS::URLSuffix")
    context = (
        ("kms:CallerAccount", ACCOUNT),
        ("kms:ViaService", f"dynamodb.{region}.{suffix}"),
        ("kms:EncryptionContext:aws:dynamodb:tableName", table),
        ("kms:EncryptionContext:aws:dynamodb:subscriberId", ACCOUNT),
        ("kms:EncryptionContextKeys", ["aws:dynamodb:tableName", "aws:dynamodb:subscriberId"]),
    )
    return [Request(f"kms:{op}", stack.table_keys[table], context) for op in ("Decrypt", "GenerateDataKey")]


def _kms(call: Call, stack: Stack) -> list[tuple[Request, bool]]:
    encryption_context = call.params.get("EncryptionContext") or {}
    context: list[tuple[str, Any]] = [("kms:CallerAccount", ACCOUNT)]
    context += [(f"kms:EncryptionContext:{k}", v) for k, v in sorted(encryption_context.items())]
    if encryption_context:
        context.append(("kms:EncryptionContextKeys", sorted(encryption_context)))
    key = call.params.get("KeyId")
    assert key, f"{call.function}: {call.operation} without a KeyId (a strict key provider names its key)"
    return [(Request(f"kms:{call.operation}", key, tuple(context)), True)]


def _sqs(call: Call, stack: Stack) -> list[tuple[Request, bool]]:
    url = call.params["QueueUrl"]
    arn = next(a["Arn"] for a in stack.resolver.attrs.values() if a.get("QueueUrl") == url)
    return [(Request(f"sqs:{ACTION_OF.get(call.operation, call.operation)}", arn), False)]


def _events(call: Call, stack: Stack) -> list[tuple[Request, bool]]:
    region = stack.resolver.ref("AWS::Region")
    buses = {e.get("EventBusName", "default") for e in call.params["Entries"]}
    arns = [b if b.startswith("arn:") else f"arn:aws:events:{region}:{ACCOUNT}:event-bus/{b}" for b in buses]
    return [(Request(f"events:{call.operation}", arn), False) for arn in sorted(arns)]


def _secret(call: Call, stack: Stack) -> list[tuple[Request, bool]]:
    secret = call.params["SecretId"]
    arn = (
        secret
        if secret.startswith("arn:")
        else next(v for v in stack.resolver.refs.values() if str(v).endswith(secret))
    )
    return [(Request(f"secretsmanager:{call.operation}", arn), False)]


def refusals(calls: list[Call], stack: Stack) -> list[str]:
    """Every call the role or the key policy would refuse, once each."""
    logical = {spec.name: spec.logical_id for spec in template.functions(TPL)}
    found = []
    for call in calls:
        for request, by_key in requests_of(call, stack):
            if not allowed(stack.roles[logical[call.function]], request):
                found.append(f"{call.function} ({call.operation}): its role refuses {request}")
            elif by_key and not allowed(stack.key_policy, request):
                found.append(f"{call.function} ({call.operation}): the key policy refuses {request}")
    return sorted(set(found))


# --- the tests -----------------------------------------------------------------------------------------------------


def test_every_aws_call_of_every_flow_is_allowed_by_the_role_and_the_key_policy(
    cloudformation: dict[str, Any],  # noqa: F811
    aws_env: dict[str, Any],
    provider_server: FakeAuthorizationServer,
    delivered_events: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Given the SAM-translated template resolved to moto's resources,
    when every flow runs through the handlers (the security sweep's flows, then the scheduled sweep and the
    worker's refresh through their own handlers) and each AWS call is recorded per function,
    then every call — and every KMS call DynamoDB makes for a table under the stack's key — is allowed by that
    function's role and, for the key, by the key policy."""
    stack = stack_of(cloudformation, aws_env["resolver"])
    with recording_calls(monkeypatch) as calls:
        run_every_flow(provider_server, aws_env, delivered_events)
        _sweep_and_work(provider_server, aws_env)
    used = {c.function for c in calls}
    assert used == {s.name for s in template.functions(TPL)}, used  # every function ran
    assert {"dynamodb", "kms", "sqs", "events", "secretsmanager"} <= {c.service for c in calls}
    assert refusals(calls, stack) == []


def _list_by_end_user_and_tag() -> None:
    """A credential with an end user and a tag, then the credentials list filtered by each (the end-user and tag
    indexes, and the BatchGetItem of a tag page)."""
    from grantlink import connect

    status, made, _ = create_link({"partnerId": 9001, "title": "x", "endUser": {"id": "u-1"}, "tags": {"env": "p"}})
    assert status == 201, made
    connect.submit(made["data"]["id"], made["data"]["token"], {"apiKey": "sk_live_verysecretvalue_1234"})
    for query in ({"endUserId": "u-1"}, {"tag": "env:p"}):
        status, body, _ = creds("list_credentials", query=query)
        assert status == 200 and len(body["data"]) == 1, body


def _sweep_and_work(provider_server: FakeAuthorizationServer, aws_env: dict[str, Any]) -> None:
    """The scheduled sweep through its handler (a due token), the worker on its queue, the page after OAuth, and a
    list page with a next page (its cursor is signed with the cursor secret)."""
    for _ in range(2):
        assert create_link()[0] == 201
    status, listed, _ = invoke("share_links", event("list_links", tenant="tnt_a", query={"perPage": 1}))
    assert status == 200 and listed["meta"]["nextCursor"], listed
    _list_by_end_user_and_tag()
    expire_access_token(connected_credential(provider_server))
    schedule = {"time": "2026-11-22T10:05:00Z", "source": "aws.scheduler", "detail-type": "Scheduled Event"}
    answer = function("expiry_sweep").lambda_handler(schedule, LambdaContext("sweep", 60))
    assert answer["queued"] >= 1, answer
    assert work(queued(aws_env)) == {"batchItemFailures": []}
    done = reroute(event("connect_get", query={"partner": 9001}), "GET /connect/done", "/connect/done")
    assert function("connect_page").lambda_handler(done, LambdaContext("page", 10))["statusCode"] == 200


def test_every_role_that_touches_a_table_can_use_its_key_through_dynamodb(
    cloudformation: dict[str, Any],  # noqa: F811
    aws_env: dict[str, Any],
) -> None:
    """Given a table encrypted with the stack's key, for every function whose role may read or write it,
    DynamoDB's Decrypt and GenerateDataKey for that caller (kms:ViaService dynamodb.<region>.<URL suffix>, its own
    encryption context, never the `purpose` key) are allowed by the role and by the key policy."""
    stack = stack_of(cloudformation, aws_env["resolver"])
    assert stack.table_keys  # the tables are encrypted with the key
    checked = 0
    for function_id, statements in stack.roles.items():
        for table in stack.table_keys:
            touches = any(
                allowed(statements, Request(f"dynamodb:{op}", stack.table_arn(table)))
                for op in ("GetItem", "Query", "PutItem")
            )
            if not touches:
                continue
            checked += 1
            for request in _through_dynamodb(table, stack):
                assert allowed(statements, request), f"{function_id}'s role refuses {request}"
                assert allowed(stack.key_policy, request), f"the key policy refuses {request} ({function_id})"
    assert checked >= len(stack.roles)  # every function touches the main table


def test_the_evaluator_refuses_what_iam_would() -> None:
    """The evaluator itself: a Deny wins, an unmet condition or another resource does not allow, wildcards match."""
    allow = {"Effect": "Allow", "Action": "kms:GenerateDataKey*", "Resource": "arn:aws:kms:*:1:key/k",
             "Condition": {"StringEquals": {"kms:EncryptionContext:purpose": ["credential", "oauth-app"]}}}  # fmt: skip
    deny = {
        "Effect": "Deny",
        "Action": "kms:*",
        "Resource": "*",
        "Condition": {"Null": {"kms:EncryptionContextKeys": "true"}},
    }
    credential = (("kms:EncryptionContext:purpose", "credential"), ("kms:EncryptionContextKeys", ["purpose"]))
    assert allowed([allow, deny], Request("kms:GenerateDataKey", "arn:aws:kms:us-east-1:1:key/k", credential))
    assert not allowed([allow, deny], Request("kms:GenerateDataKey", "arn:aws:kms:us-east-1:1:key/k"))
    assert not allowed([allow], Request("kms:GenerateDataKey", "arn:aws:kms:us-east-1:1:key/other", credential))
    other = (("kms:EncryptionContext:purpose", "cursor"), ("kms:EncryptionContextKeys", ["purpose"]))
    assert not allowed([allow], Request("kms:GenerateDataKey", "arn:aws:kms:us-east-1:1:key/k", other))
    assert not allowed([allow], Request("kms:Decrypt", "arn:aws:kms:us-east-1:1:key/k", credential))
    with pytest.raises(NotImplementedError):
        unknown = {**allow, "Condition": {"NumericLessThan": {"kms:RecipientAttestation:ImageSha384": "1"}}}
        allowed([unknown], Request("kms:GenerateDataKey", "arn:aws:kms:us-east-1:1:key/k", credential))


def test_refreshed_tokens_kept_aside_through_the_renewal_queue_are_allowed(
    cloudformation: dict[str, Any],  # noqa: F811
    aws_env: dict[str, Any],
    provider_server: FakeAuthorizationServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Given a credential due for refresh and a table that refuses every write after the lease (throttled),
    when a secret read refreshes it (the token call rotates the refresh token),
    then the fresh tokens go to the renewal queue (the last place they can wait), and that SendMessage, like every
    other call of the read, is allowed by the credentials function's role."""
    credential_id = connected_credential(provider_server)
    expire_access_token(credential_id)
    monkeypatch.setattr("grantlink.oauth.WRITE_BACKOFF_SECONDS", 0)
    real = BaseClient._make_api_call  # type: ignore[attr-defined]

    def throttled(client: Any, operation: str, params: dict[str, Any]) -> Any:
        if operation in ("TransactWriteItems", "PutItem") and client.meta.service_model.service_name == "dynamodb":
            raise ClientError(
                {"Error": {"Code": "ProvisionedThroughputExceededException", "Message": "slow"}}, operation
            )
        return real(client, operation, params)

    monkeypatch.setattr(BaseClient, "_make_api_call", throttled)
    stack = stack_of(cloudformation, aws_env["resolver"])
    with recording_calls(monkeypatch) as calls:
        creds("read_secret", credential_id)
    assert ("credentials", "sqs", "SendMessage") in {(c.function, c.service, c.operation) for c in calls}
    assert refusals(calls, stack) == []


def test_every_function_that_looks_an_app_up_may_read_the_operators_default_apps(
    cloudformation: dict[str, Any],  # noqa: F811
    aws_env: dict[str, Any],
    provider_server: FakeAuthorizationServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Given the operator's default OAuth apps configured (DefaultOAuthAppsSecretArn set, so the conditional
    read policy exists) and a tenant without an app of its own,
    when it creates a link for an OAuth partner, its customer opens the connect page (which lists the app's scopes)
    and starts the flow, then every call — each function's read of the operator's secret included — is allowed."""
    import json

    import boto3

    from grantlink import config, oauth, oauth_apps
    from tests.security.flows import page
    from tests.unit.oauth_fakes import PARTNER_ID, A

    apps = {str(PARTNER_ID): {"clientId": "operator-client", "clientSecret": "operator-secret", "scopes": ["read"]}}
    arn = str(boto3.client("secretsmanager").create_secret(Name="ops/apps", SecretString=json.dumps(apps))["ARN"])
    monkeypatch.setenv("GRANTLINK_DEFAULT_OAUTH_APPS_SECRET", arn)
    config.reset()
    oauth.delete_app(A, PARTNER_ID)  # the tenant's own: now the operator's applies
    resolver = aws_env["resolver"]
    refs = {**resolver.refs, "DefaultOAuthAppsSecretArn": arn}  # the parameter set: the read policy exists
    stack = stack_of(cloudformation, template.Resolver(cloudformation, refs, dict(resolver.attrs)))
    with recording_calls(monkeypatch) as calls:
        for name in ("share_links", "connect_page", "oauth_callback"):
            oauth_apps.reset()  # each function is its own process: none has read the secret yet
            if name == "share_links":
                status, made, _ = create_link({"partnerId": PARTNER_ID, "title": "Operator app"})
                assert status == 201, made
            elif name == "connect_page":
                form = {"id": made["data"]["id"], "token": made["data"]["token"]}
                shown = page(event("connect_get", query=form), 200)
                assert "read" in shown["body"], shown["body"][:500]  # the operator app's scopes
            else:
                start = reroute(event("connect_post", form=form), "POST /connect/oauth/start", "/connect/oauth/start")
                assert "client_id=operator-client" in page(start, 303, "oauth_callback")["headers"]["Location"]
    reads = {c.function for c in calls if c.operation == "GetSecretValue"}
    assert {"share_links", "connect_page", "oauth_callback"} <= reads, reads
    assert refusals(calls, stack) == []
