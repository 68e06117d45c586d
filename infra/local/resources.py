"""Create the template's AWS resources (tables, KMS key and alias, secrets, bus, queues) in moto, or any endpoint.

Used by the local stack and by the test fixtures, so the tables the code runs against are the tables
template.yaml declares: same key schemas, indexes and TTL attribute.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable
from typing import Any

from infra.local.template import Resolver, resources

ACCOUNT = "123456789012"
REGION = "us-east-1"
# moto accepts any credentials; these keep boto3 from looking for real ones.
LOCAL_ENVIRONMENT = {
    "AWS_ACCESS_KEY_ID": "local",
    "AWS_SECRET_ACCESS_KEY": "local",
    "AWS_REGION": REGION,
    "AWS_DEFAULT_REGION": REGION,
}


def pseudo_parameters(stack: str, region: str = REGION) -> dict[str, str]:
    return {
        "AWS::StackName": stack,
        "AWS::Region": region,
        "AWS::AccountId": ACCOUNT,
        "AWS::Partition": "aws",
        "AWS::URLSuffix": "amazonaws.com",
    }


def provision(
    template: dict[str, Any],
    client: Callable[[str], Any],
    stack: str = "grantlink-local",
    parameters: dict[str, Any] | None = None,
) -> Resolver:
    """Create every supported resource; returns a resolver that knows their physical names and ARNs."""
    resolver = Resolver(template)
    resolver.refs.update(pseudo_parameters(stack))
    for name, spec in template.get("Parameters", {}).items():
        resolver.refs[name] = (parameters or {}).get(name, spec.get("Default"))
    for logical_id, res in resources(template, "AWS::KMS::Key").items():
        _key(client("kms"), resolver, logical_id, res["Properties"])
    for logical_id, res in resources(template, "AWS::KMS::Alias").items():
        alias = resolver.resolve(res["Properties"]["AliasName"])
        client("kms").create_alias(AliasName=alias, TargetKeyId=resolver.resolve(res["Properties"]["TargetKeyId"]))
        resolver.refs[logical_id] = alias
    for logical_id in resources(template, "AWS::SecretsManager::Secret"):
        answer = client("secretsmanager").create_secret(
            Name=f"{stack}-{logical_id}", SecretString=secrets.token_urlsafe(48)
        )
        resolver.refs[logical_id] = answer["ARN"]
    for logical_id, res in resources(template, "AWS::Events::EventBus").items():
        name = resolver.resolve(res["Properties"]["Name"])
        client("events").create_event_bus(Name=name)
        resolver.refs[logical_id] = name
    for logical_id, res in resources(template, "AWS::DynamoDB::Table").items():
        resolver.refs[logical_id] = name = f"{stack}-{logical_id}"
        resolver.attrs[logical_id] = {"Arn": _table(client("dynamodb"), resolver, name, res["Properties"])}
    # Dead-letter queues first: a redrive policy names its DLQ's ARN.
    queues = sorted(resources(template, "AWS::SQS::Queue").items(), key=lambda q: "RedrivePolicy" in q[1]["Properties"])
    for logical_id, res in queues:
        _queue(client("sqs"), resolver, logical_id, f"{stack}-{logical_id}", res["Properties"])
    for logical_id, res in resources(template, "AWS::Events::Rule").items():
        _rule(client("events"), resolver, logical_id, f"{stack}-{logical_id}", res["Properties"])
    for logical_id in template["Resources"]:
        resolver.refs.setdefault(logical_id, f"{stack}-{logical_id}")
    return resolver


def _rule(events: Any, resolver: Resolver, logical_id: str, name: str, props: dict[str, Any]) -> None:
    """An EventBridge rule and its targets (the webhook queue: every bus event reaches the delivery function)."""
    props = resolver.resolve(props)
    bus = props.get("EventBusName", "default")
    arn = events.put_rule(Name=name, EventBusName=bus, EventPattern=json.dumps(props["EventPattern"]))["RuleArn"]
    targets = [{"Id": t["Id"], "Arn": t["Arn"]} for t in props.get("Targets", [])]
    if targets:
        events.put_targets(Rule=name, EventBusName=bus, Targets=targets)
    resolver.refs[logical_id] = name
    resolver.attrs[logical_id] = {"Arn": arn}


def _key(kms: Any, resolver: Resolver, logical_id: str, props: dict[str, Any]) -> None:
    key = kms.create_key(
        Description=props.get("Description", logical_id), Policy=json.dumps(resolver.resolve(props["KeyPolicy"]))
    )["KeyMetadata"]
    if props.get("EnableKeyRotation"):
        kms.enable_key_rotation(KeyId=key["KeyId"])
    resolver.refs[logical_id] = key["KeyId"]
    resolver.attrs[logical_id] = {"Arn": key["Arn"], "KeyId": key["KeyId"]}


def _table(dynamodb: Any, resolver: Resolver, name: str, props: dict[str, Any]) -> str:
    """Create the table; returns its ARN."""
    props = resolver.resolve(props)
    kwargs: dict[str, Any] = {
        "TableName": name,
        "AttributeDefinitions": props["AttributeDefinitions"],
        "KeySchema": props["KeySchema"],
        "BillingMode": props.get("BillingMode", "PAY_PER_REQUEST"),
    }
    if props.get("GlobalSecondaryIndexes"):
        kwargs["GlobalSecondaryIndexes"] = props["GlobalSecondaryIndexes"]
    sse = props.get("SSESpecification")
    if sse and sse.get("SSEEnabled"):
        kwargs["SSESpecification"] = {"Enabled": True, "SSEType": sse.get("SSEType", "KMS")}
        if sse.get("KMSMasterKeyId"):
            kwargs["SSESpecification"]["KMSMasterKeyId"] = sse["KMSMasterKeyId"]
    arn = str(dynamodb.create_table(**kwargs)["TableDescription"]["TableArn"])
    ttl = props.get("TimeToLiveSpecification")
    if ttl and ttl.get("Enabled"):
        dynamodb.update_time_to_live(
            TableName=name, TimeToLiveSpecification={"AttributeName": ttl["AttributeName"], "Enabled": True}
        )
    if props.get("PointInTimeRecoverySpecification", {}).get("PointInTimeRecoveryEnabled"):
        dynamodb.update_continuous_backups(
            TableName=name, PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": True}
        )
    return arn


def _queue(sqs: Any, resolver: Resolver, logical_id: str, name: str, props: dict[str, Any]) -> None:
    attributes = {}
    for key, value in resolver.resolve(props).items():
        if key in ("QueueName", "Tags"):
            continue
        if isinstance(value, dict):
            attributes[key] = json.dumps(value)
        else:
            attributes[key] = str(value).lower() if isinstance(value, bool) else str(value)
    url = sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    resolver.refs[logical_id] = url
    resolver.attrs[logical_id] = {"Arn": arn, "QueueName": name, "QueueUrl": url}


def function_environment(template: dict[str, Any], resolver: Resolver) -> dict[str, str]:
    """The union of every function's resolved environment; two functions disagreeing is an error."""
    from infra.local.template import functions

    merged: dict[str, str] = {}
    for fn in functions(template):
        for key, value in resolver.resolve(fn.environment).items():
            text = "" if value is None else str(value)
            if merged.setdefault(key, text) != text:
                raise ValueError(f"{fn.logical_id} sets {key} differently from another function")
    return merged
