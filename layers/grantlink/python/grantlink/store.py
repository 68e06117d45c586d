"""Every DynamoDB access. AWS errors are translated here, once: callers see domain errors only.

Each conditional write names what it protects in a comment. Items are mapped by `grantlink.models`.
"""

from __future__ import annotations

from typing import Any

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import BotoCoreError, ClientError

from grantlink import aws, errors
from grantlink.config import settings
from grantlink.models import (
    LinkStatus,
    ShareLink,
    link_from_item,
    link_key,
    link_to_item,
    tenant_links_by_status_pk,
    tenant_links_pk,
)
from grantlink.observability import logger

_ser = TypeSerializer()
_de = TypeDeserializer()
TRANSIENT = {
    "ProvisionedThroughputExceededException",
    "ThrottlingException",
    "RequestLimitExceeded",
    "InternalServerError",
    "ServiceUnavailable",
    "TransactionConflictException",
    "TransactionInProgressException",
    "ResourceNotFoundException",
}


class ConditionFailed(Exception):
    """A conditional write found the item not in the expected state. Use cases decide what that means."""


def serialize(item: dict[str, Any]) -> dict[str, Any]:
    return {k: _ser.serialize(v) for k, v in item.items() if v is not None}


def deserialize(item: dict[str, Any]) -> dict[str, Any]:
    return {k: _de.deserialize(v) for k, v in item.items()}


def _translate(exc: Exception, operation: str) -> Exception:
    if isinstance(exc, ClientError):
        code = exc.response.get("Error", {}).get("Code", "")
        if code == "ConditionalCheckFailedException":
            return ConditionFailed(operation)
        if code == "TransactionCanceledException":
            reasons = [r.get("Code") for r in exc.response.get("CancellationReasons", [])]
            if "ConditionalCheckFailed" in reasons:
                return ConditionFailed(operation)
            if not set(reasons) - {"None", "TransactionConflict", "ThrottlingError", None}:
                return errors.ServiceUnavailable()
        if code in TRANSIENT:
            return errors.ServiceUnavailable()
    elif isinstance(exc, BotoCoreError):
        return errors.ServiceUnavailable()
    logger.error("dynamodb call failed", extra={"operation": operation, "error": type(exc).__name__})
    return errors.GrantlinkError()


class Store:
    """The table. `client` is a boto3 DynamoDB client (injectable); the default is shared and lazy."""

    def __init__(self, client: Any = None, table_name: str | None = None) -> None:
        self._client = client
        self._table = table_name

    @property
    def client(self) -> Any:
        return self._client or aws.client("dynamodb")

    @property
    def table(self) -> str:
        return self._table or settings().table_name

    def _call(self, operation: str, **kwargs: Any) -> dict[str, Any]:
        try:
            return getattr(self.client, operation)(**kwargs)
        except (ClientError, BotoCoreError) as exc:
            raise _translate(exc, operation) from exc

    def get_item(self, key: dict[str, str], consistent: bool = True) -> dict[str, Any] | None:
        answer = self._call("get_item", TableName=self.table, Key=serialize(key), ConsistentRead=consistent)
        return deserialize(answer["Item"]) if "Item" in answer else None

    def transact(self, *actions: dict[str, Any]) -> None:
        """One TransactWriteItems call; each action is {"Put"|"Update"|...: {...}} without TableName."""
        items = [{kind: {"TableName": self.table, **body} for kind, body in action.items()} for action in actions]
        self._call("transact_write_items", TransactItems=items)

    def query_page(
        self, index: str, key_name: str, key_value: str, limit: int, start: dict[str, Any] | None
    ) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
        """One Query call on an index, newest first; returns the items and the LastEvaluatedKey."""
        kwargs: dict[str, Any] = {
            "TableName": self.table,
            "IndexName": index,
            "KeyConditionExpression": "#k = :v",
            "ExpressionAttributeNames": {"#k": key_name},
            "ExpressionAttributeValues": {":v": {"S": key_value}},
            "ScanIndexForward": False,
            "Limit": limit,
        }
        if start:
            kwargs["ExclusiveStartKey"] = serialize(start)
        answer = self._call("query", **kwargs)
        last = answer.get("LastEvaluatedKey")
        return [deserialize(i) for i in answer.get("Items", [])], deserialize(last) if last else None

    # --- share links --------------------------------------------------------------------------------------

    def put_new_link(self, link: ShareLink, ttl: int) -> None:
        self.transact(
            # Protects: a (vanishingly unlikely) id collision never overwrites another link.
            {"Put": {"Item": serialize(link_to_item(link, ttl)), "ConditionExpression": "attribute_not_exists(pk)"}},
            _stats_update(link.tenant_id, "SHARE", {"total": 1, f"s{int(link.status)}": 1}),
        )

    def get_link(self, link_id: str) -> ShareLink | None:
        item = self.get_item(link_key(link_id))
        return link_from_item(item) if item and item.get("type") == "share" else None

    def replace_link_state(self, before: ShareLink, after: ShareLink, ttl: int | None) -> None:
        """Write `after` over `before` if nobody changed the link in between (optimistic, by version)."""
        counters = {} if before.status == after.status else {f"s{int(before.status)}": -1, f"s{int(after.status)}": 1}
        item = link_to_item(after, ttl)
        actions: list[dict[str, Any]] = [
            {
                "Put": {
                    "Item": serialize(item),
                    # Protects: a concurrent consume, regenerate or revoke is never overwritten.
                    "ConditionExpression": "#v = :v AND tenantId = :t",
                    "ExpressionAttributeNames": {"#v": "version"},
                    "ExpressionAttributeValues": serialize({":v": before.version, ":t": before.tenant_id}),
                }
            }
        ]
        if counters:
            actions.append(_stats_update(before.tenant_id, "SHARE", counters))
        self.transact(*actions)

    def list_links(
        self, tenant_id: str, status: LinkStatus | None, limit: int, start: dict[str, Any] | None
    ) -> tuple[list[ShareLink], dict[str, Any] | None]:
        if status is None:
            items, last = self.query_page("gsi1", "gsi1pk", tenant_links_pk(tenant_id), limit, start)
        else:
            items, last = self.query_page("gsi2", "gsi2pk", tenant_links_by_status_pk(tenant_id, status), limit, start)
        return [link_from_item(i) for i in items], last

    def stats(self, tenant_id: str, kind: str) -> dict[str, int]:
        item = self.get_item({"pk": f"TENANT#{tenant_id}", "sk": f"STATS#{kind}"}, consistent=False) or {}
        return {k: int(v) for k, v in item.items() if k not in ("pk", "sk")}

    # --- tenants and API keys -----------------------------------------------------------------------------

    def put_tenant_with_key(self, tenant: dict[str, Any], key_hash: str, key_item: dict[str, Any]) -> None:
        self.transact(
            # Protects: tenant ids and key hashes are never reused.
            {
                "Put": {
                    "Item": serialize({"pk": f"TENANT#{tenant['tenantId']}", "sk": "TENANT", **tenant}),
                    "ConditionExpression": "attribute_not_exists(pk)",
                }
            },
            {
                "Put": {
                    "Item": serialize({"pk": f"APIKEY#{key_hash}", "sk": "APIKEY", **key_item}),
                    "ConditionExpression": "attribute_not_exists(pk)",
                }
            },
        )

    def get_api_key(self, key_hash: str) -> dict[str, Any] | None:
        return self.get_item({"pk": f"APIKEY#{key_hash}", "sk": "APIKEY"}, consistent=False)


def _stats_update(tenant_id: str, kind: str, deltas: dict[str, int]) -> dict[str, Any]:
    names = {f"#c{i}": name for i, name in enumerate(deltas)}
    values = {f":d{i}": delta for i, delta in enumerate(deltas.values())}
    expression = "ADD " + ", ".join(f"#c{i} :d{i}" for i in range(len(deltas)))
    return {
        "Update": {
            "Key": serialize({"pk": f"TENANT#{tenant_id}", "sk": f"STATS#{kind}"}),
            "UpdateExpression": expression,
            "ExpressionAttributeNames": names,
            "ExpressionAttributeValues": serialize(values),
        }
    }


_default: Store | None = None


def default() -> Store:
    global _default
    if _default is None:
        _default = Store()
    return _default
