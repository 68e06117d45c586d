"""template.yaml: it lints, SAM transforms it, and it agrees with the code (routes, functions, pins). Its
assertions for SECURITY.md R4 (DLQs, retries, reserved concurrency, throttles, alarms) and R1 (the sweep's
idempotency key) are in tests/security/test_jobs.py."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

from grantlink import routes
from infra.local import template
from tests.helpers import resource_properties as props

ROOT = Path(__file__).resolve().parents[2]
TPL = template.load()


def test_cfn_lint_is_clean() -> None:
    cfn_lint = Path(sys.executable).with_name("cfn-lint")
    result = subprocess.run([str(cfn_lint), str(ROOT / "template.yaml")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture(scope="module")
def cloudformation() -> dict[str, Any]:
    """template.yaml after aws-sam-translator (code URIs stand in for what `sam package` uploads)."""
    from samtranslator.translator.transform import transform

    packaged = template.load()
    for resource in packaged["Resources"].values():
        for key in ("CodeUri", "ContentUri"):
            if key in resource.get("Properties", {}):
                resource["Properties"][key] = f"s3://bucket/{resource['Properties'][key]}"

    class NoManagedPolicies:
        def load(self) -> dict[str, str]:
            return {}

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AWS_DEFAULT_REGION", "us-east-1")
        return dict(transform(packaged, {}, NoManagedPolicies()))


def test_sam_translator_transforms_it(cloudformation: dict[str, Any]) -> None:
    """aws-sam-translator turns it into plain CloudFormation."""
    output = cloudformation
    kinds = {r["Type"] for r in output["Resources"].values()}
    assert {"AWS::ApiGatewayV2::Api", "AWS::Lambda::Function", "AWS::Lambda::LayerVersion"} <= kinds
    api = next(r for r in output["Resources"].values() if r["Type"] == "AWS::ApiGatewayV2::Api")
    scheme = api["Properties"]["Body"]["components"]["securitySchemes"]["TenantKey"]["x-amazon-apigateway-authorizer"]
    assert scheme["enableSimpleResponses"] is True
    assert scheme["identitySource"] == ["$request.header.Authorization"]
    assert scheme["authorizerPayloadFormatVersion"] == "2.0"


def test_every_template_route_is_in_the_route_table_and_back() -> None:
    """routes.py (scopes, 405 detection) and template.yaml (API Gateway) declare the same routes."""
    functions = {f.logical_id: f.name for f in template.functions(TPL)}
    declared = {(r.key, functions[r.function], r.authorized) for r in template.http_routes(TPL)}
    in_code = {(r.key, r.function, not r.public) for r in (*routes.ROUTES, routes.DEFAULT_ROUTE)}
    assert declared == in_code


def test_every_route_needs_a_known_scope_or_is_public() -> None:
    from grantlink.tenants import SCOPES

    for route in routes.ROUTES:
        assert route.public or route.scope in (*SCOPES, None), route


def test_every_function_has_a_handler_and_every_handler_a_function() -> None:
    from infra.local.gateway import check_every_function_is_declared, load_handler

    specs = template.functions(TPL)
    check_every_function_is_declared(specs)
    for spec in specs:
        assert callable(load_handler(spec))


def test_globals_pin_runtime_architecture_tracing_and_powertools() -> None:
    glob = TPL["Globals"]["Function"]
    assert (glob["Runtime"], glob["Architectures"], glob["Tracing"]) == ("python3.12", ["arm64"], "Active")
    variables = glob["Environment"]["Variables"]
    assert variables["POWERTOOLS_SERVICE_NAME"] == "grantlink"
    assert "POWERTOOLS_LOG_LEVEL" in variables


def test_table_has_the_designed_keys_indexes_ttl_pitr_and_sse() -> None:
    table = props("Table")
    assert [k["AttributeName"] for k in table["KeySchema"]] == ["pk", "sk"]
    indexes = {i["IndexName"]: i for i in table["GlobalSecondaryIndexes"]}
    assert set(indexes) == {"gsi1", "gsi2", "gsi3", "gsi4", "tags", "due"}
    assert [k["AttributeName"] for k in indexes["due"]["KeySchema"]] == ["duePk", "dueAt"]
    assert [k["AttributeName"] for k in indexes["gsi4"]["KeySchema"]] == ["gsi4pk", "gsi4sk"]
    assert [k["AttributeName"] for k in indexes["tags"]["KeySchema"]] == ["tagPk", "tagSk"]
    assert table["BillingMode"] == "PAY_PER_REQUEST"
    assert table["TimeToLiveSpecification"] == {"AttributeName": "ttl", "Enabled": True}
    assert table["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"] is True
    assert table["SSESpecification"]["KMSMasterKeyId"] == {"Ref": "Key"}


def test_key_rotates_and_its_policy_requires_an_encryption_context() -> None:
    key = props("Key")
    assert key["EnableKeyRotation"] is True
    deny = [s for s in key["KeyPolicy"]["Statement"] if s["Effect"] == "Deny"]
    assert deny and deny[0]["Condition"] == {"Null": {"kms:EncryptionContextKeys": "true"}}
    assert {"kms:Decrypt", "kms:GenerateDataKey", "kms:Encrypt"} <= set(deny[0]["Action"])
    assert props("KeyAlias")["TargetKeyId"] == {"Ref": "Key"}


def test_outputs_name_the_api_the_table_and_the_key() -> None:
    assert {"ApiUrl", "TableName", "KeyArn"} <= set(TPL["Outputs"])


def test_no_function_policy_grants_a_wildcard_action() -> None:
    for spec in template.resources(TPL, "AWS::Serverless::Function").values():
        for policy in spec["Properties"].get("Policies", []):
            for statement in policy.get("Statement", []) if isinstance(policy, dict) else []:
                actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
                assert not any(a == "*" or a.endswith(":*") for a in actions), statement


# Where the layer runs: Lambda's python3.12 on Linux (arm64), for evaluating dependency markers.
LAMBDA_MARKERS = {
    "python_version": "3.12",
    "python_full_version": "3.12.0",
    "sys_platform": "linux",
    "platform_system": "Linux",
    "os_name": "posix",
    "platform_machine": "aarch64",
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
}


def runtime_closure(pins: list[str]) -> dict[str, str]:
    """Every distribution the pins need on Lambda (extras and markers followed), by canonical name, at the version
    installed in this environment."""
    from importlib import metadata

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    found: dict[str, str] = {}
    todo = [(Requirement(pin), "") for pin in pins]
    done: set[tuple[str, frozenset[str]]] = set()
    while todo:
        requirement, extra = todo.pop()
        if requirement.marker and not requirement.marker.evaluate({**LAMBDA_MARKERS, "extra": extra}):
            continue
        if (key := (canonicalize_name(requirement.name), frozenset(requirement.extras))) in done:
            continue
        done.add(key)
        distribution = metadata.distribution(requirement.name)
        found[key[0]] = distribution.version
        for needed in map(Requirement, distribution.requires or []):
            todo += [(needed, e) for e in ("", *requirement.extras)]
    return found


def test_layer_requirements_pin_the_whole_runtime_closure_as_installed() -> None:
    """SAM builds the layer from requirements.txt: it pins pyproject's runtime dependencies exactly as pyproject
    does, and every distribution they need on python3.12/Linux at the version the tests ran against — nothing
    else (no dev dependency), nothing left for pip to choose at build time."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    pinned = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    lines = (ROOT / "layers/grantlink/requirements.txt").read_text().splitlines()
    layer = [Requirement(line) for line in lines if line.strip() and not line.startswith("#")]
    assert all(re.search(r"==\d", p) for p in pinned)
    assert set(pinned) <= {str(r) for r in layer}  # the top-level pins, extras included, as pyproject has them
    versions = {canonicalize_name(r.name): str(r.specifier) for r in layer}
    assert len(versions) == len(layer)  # each once
    assert versions == {name: f"=={version}" for name, version in runtime_closure(pinned).items()}


def test_every_function_turns_off_tracer_response_and_error_capture() -> None:
    """Powertools' capture_lambda_handler stores a handler's whole answer (a decrypted secret, a link token, the
    connect page, an OAuth state) and its exceptions in X-Ray unless told not to: every function's environment
    says "false" to both (and tests/unit/test_traces.py proves the decorators hold it outside the template)."""
    resolver = template.Resolver(TPL, refs=dict.fromkeys(TPL["Parameters"], "") | dict.fromkeys(TPL["Resources"], "x"))
    for spec in template.functions(TPL):
        environment = {k: v for k, v in spec.environment.items() if k.startswith("POWERTOOLS_TRACER_")}
        assert resolver.resolve(environment) == {
            "POWERTOOLS_TRACER_CAPTURE_RESPONSE": "false",
            "POWERTOOLS_TRACER_CAPTURE_ERROR": "false",
        }, spec.logical_id


def test_no_url_hard_codes_the_aws_partition_domain() -> None:
    """URLs and service names use ${AWS::URLSuffix}: amazonaws.com is wrong in the China partitions."""
    text = (ROOT / "template.yaml").read_text()
    assert "amazonaws.com" not in text.lower()
    assert "${AWS::URLSuffix}" in text


def test_every_fed_queue_s_visibility_is_at_least_six_worker_timeouts() -> None:
    """Lambda's advice for an SQS event source (the renewal worker's, the webhook delivery's), computed from each
    function's effective timeout (its own or Globals')."""
    feeds = template.event_sources(TPL, "SQS")
    assert len(feeds) >= 2
    for worker, _, feed in feeds:
        queue = feed["Queue"]["Fn::GetAtt"][0]
        assert props(queue)["VisibilityTimeout"] >= 6 * worker.timeout, worker.logical_id


def test_the_proxys_deadline_fits_inside_its_timeout_and_api_gateways() -> None:
    """Given the proxy function, its overall deadline (GRANTLINK_PROXY_DEADLINE_SECONDS) leaves a margin inside the
    function's timeout, which is at most API Gateway's 30-second integration limit: a slow partner ends in our own
    504 `partner_timeout` envelope, never in the function being killed or API Gateway giving up first."""
    (proxy,) = [f for f in template.functions(TPL) if f.name == "proxy"]
    deadline = float(proxy.environment["GRANTLINK_PROXY_DEADLINE_SECONDS"])
    assert deadline + 3 <= proxy.timeout <= 30


def test_the_connect_page_outlives_a_client_credentials_mint_and_the_test_after_it() -> None:
    """Given the connect page function, its timeout covers the worst submit — a client credentials token call (its
    overall deadline) and then the partner's test request (connect + read timeouts) — with a margin for the writes,
    and stays within API Gateway's 30 seconds: a slow partner ends in the form's own message, not a killed function."""
    from grantlink import config

    defaults = config.Settings.model_validate({"GRANTLINK_TABLE": "t"})
    (page,) = [f for f in template.functions(TPL) if f.name == "connect_page"]
    worst = defaults.token_deadline_seconds + defaults.test_connect_timeout + defaults.test_read_timeout
    assert worst + 3 <= page.timeout <= 30


def test_every_queue_is_encrypted() -> None:
    for logical_id, queue in template.resources(TPL, "AWS::SQS::Queue").items():
        assert queue["Properties"].get("SqsManagedSseEnabled") is True, logical_id


def test_no_role_grants_a_wildcard_action_once_sam_expands_the_policy_templates(
    cloudformation: dict[str, Any],
) -> None:
    """`*`, `kms:*`, `dynamodb:*`: nowhere, including what DynamoDBCrudPolicy & co. and the schedule's role become."""
    roles = [r for r in cloudformation["Resources"].values() if r["Type"] == "AWS::IAM::Role"]
    assert roles
    for role in roles:
        for policy in role["Properties"].get("Policies", []):
            for statement in policy["PolicyDocument"]["Statement"]:
                actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
                assert not any(a == "*" or a.endswith(":*") for a in actions), (policy["PolicyName"], statement)
