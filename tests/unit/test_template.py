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
    assert set(indexes) == {"gsi1", "gsi2", "gsi3", "due"}
    assert [k["AttributeName"] for k in indexes["due"]["KeySchema"]] == ["duePk", "dueAt"]
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


def test_layer_requirements_match_the_pinned_runtime_dependencies() -> None:
    """SAM builds the layer from requirements.txt; pyproject.toml pins the same versions."""
    pinned = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    lines = (ROOT / "layers/grantlink/requirements.txt").read_text().splitlines()
    assert sorted(line for line in lines if line and not line.startswith("#")) == sorted(pinned)
    assert all(re.search(r"==\d", p) for p in pinned)


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
