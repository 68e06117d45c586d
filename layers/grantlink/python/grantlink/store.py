"""Every DynamoDB access. AWS errors are translated here, once: callers see domain errors only.

Each conditional write names what it protects in a comment. Items are mapped by `grantlink.models`.
"""

from __future__ import annotations

import contextlib
import re
import secrets
from dataclasses import replace
from typing import Any

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import BotoCoreError, ClientError

from grantlink import aws, errors
from grantlink.config import settings
from grantlink.models import (
    PRODUCTION,
    Credential,
    LinkStatus,
    ShareLink,
    credential_from_item,
    credential_key,
    credential_to_item,
    end_user_stats_kind,
    link_from_item,
    link_key,
    link_to_item,
    tag_item,
    tenant_credentials_by_end_user_pk,
    tenant_credentials_by_partner_pk,
    tenant_credentials_by_state_pk,
    tenant_credentials_by_tag_pk,
    tenant_credentials_pk,
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
    # Access to the table or to its KMS key refused (IAM, the key policy, a disabled, pending-deletion or deleted
    # key, expired or unknown credentials): a clean 503 with nothing written, and an error log for the operator.
    "AccessDeniedException",
    "KMSAccessDeniedException",
    "KMSDisabledException",
    "KMSInvalidStateException",
    "KMSNotFoundException",
    "KMSThrottlingException",
    "UnrecognizedClientException",
    "ExpiredTokenException",
}


SINGLE_WRITES = {"Put": "put_item", "Update": "update_item", "Delete": "delete_item"}


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
            if code.startswith("KMS") or code in ("AccessDeniedException", "UnrecognizedClientException"):
                logger.error("dynamodb access refused", extra={"operation": operation, "code": code})
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
        """One TransactWriteItems call; each action is {"Put"|"Update"|...: {...}} without TableName. A single
        Put, Update or Delete goes as the plain conditional write it is: same condition, same ConditionFailed,
        half the write capacity of a one-action transaction."""
        if len(actions) == 1:
            ((kind, body),) = actions[0].items()
            if kind in SINGLE_WRITES:
                self._call(SINGLE_WRITES[kind], TableName=self.table, **body)
                return
        items = [{kind: {"TableName": self.table, **body} for kind, body in action.items()} for action in actions]
        self._call("transact_write_items", TransactItems=items)

    def query_page(
        self,
        index: str,
        key_name: str,
        key_value: str,
        limit: int,
        start: dict[str, Any] | None,
        equals: dict[str, Any] | None = None,
        absent: tuple[str, ...] = (),
    ) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
        """One Query call on an index, newest first; returns the items and the LastEvaluatedKey. `equals` filters
        the page (a FilterExpression: the page still reads at most `limit` items); a dotted name is a map path.
        `absent` names attributes the items must not have (a default that is not written, e.g. production)."""
        names, values = {"#k": key_name}, {":v": key_value}
        kwargs: dict[str, Any] = {
            "TableName": self.table,
            "IndexName": index,
            "KeyConditionExpression": "#k = :v",
            "ScanIndexForward": False,
            "Limit": limit,
        }
        if equals:
            paths = [k.split(".", 1) for k in equals]  # "tags.env": the path tags → env (a tag key may hold dots)
            names.update({f"#f{i}_{j}": part for i, path in enumerate(paths) for j, part in enumerate(path)})
            values.update({f":f{i}": v for i, v in enumerate(equals.values())})
            kwargs["FilterExpression"] = " AND ".join(
                ".".join(f"#f{i}_{j}" for j in range(len(path))) + f" = :f{i}" for i, path in enumerate(paths)
            )
        if absent:
            names.update({f"#a{i}": name for i, name in enumerate(absent)})
            missing = " AND ".join(f"attribute_not_exists(#a{i})" for i in range(len(absent)))
            kwargs["FilterExpression"] = " AND ".join(filter(None, (kwargs.get("FilterExpression"), missing)))
        kwargs.update(ExpressionAttributeNames=names, ExpressionAttributeValues=serialize(values))
        if start:
            kwargs["ExclusiveStartKey"] = serialize(start)
        answer = self._call("query", **kwargs)
        last = answer.get("LastEvaluatedKey")
        return [deserialize(i) for i in answer.get("Items", [])], deserialize(last) if last else None

    def due_page(
        self, shard: int, until: str, start: dict[str, Any] | None, limit: int = 500
    ) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
        """One Query of the sparse due index: the keys of items in `shard` due at or before `until`."""
        kwargs: dict[str, Any] = {
            "TableName": self.table,
            "IndexName": "due",
            "KeyConditionExpression": "duePk = :s AND dueAt <= :u",
            "ExpressionAttributeValues": serialize({":s": f"DUE#{shard}", ":u": until}),
            "Limit": limit,
            "ReturnConsumedCapacity": "TOTAL",
        }
        if start:
            kwargs["ExclusiveStartKey"] = serialize(start)
        answer = self._call("query", **kwargs)
        last = answer.get("LastEvaluatedKey")
        return [deserialize(i) for i in answer.get("Items", [])], deserialize(last) if last else None

    # --- share links --------------------------------------------------------------------------------------

    def put_new_link(self, link: ShareLink, ttl: int, *also: dict[str, Any]) -> None:
        """The new link and its counters (and `also`, e.g. an audit entry) in one transaction."""
        self.transact(
            # Protects: a (vanishingly unlikely) id collision never overwrites another link.
            {"Put": {"Item": serialize(link_to_item(link, ttl)), "ConditionExpression": "attribute_not_exists(pk)"}},
            stats_update(link.tenant_id, "SHARE", {"total": 1, f"s{int(link.status)}": 1}),
            *also,
        )

    def get_link(self, link_id: str) -> ShareLink | None:
        item = self.get_item(link_key(link_id))
        return link_from_item(item) if item and item.get("type") == "share" else None

    def replace_link_state(self, before: ShareLink, after: ShareLink, ttl: int | None) -> None:
        """Write `after` over `before` if nobody changed the link in between (optimistic, by version)."""
        self.transact(*self.link_write(before, after, ttl))

    def list_links(
        self,
        tenant_id: str,
        status: LinkStatus | None,
        limit: int,
        start: dict[str, Any] | None,
        *,
        environment: str | None = None,
    ) -> tuple[list[ShareLink], dict[str, Any] | None]:
        """One Query: by status (gsi2), else all (gsi1); an environment is a filter on the page."""
        equals, absent = environment_filter(environment)
        if status is None:
            key, index = tenant_links_pk(tenant_id), "gsi1"
        else:
            key, index = tenant_links_by_status_pk(tenant_id, status), "gsi2"
        items, last = self.query_page(index, f"{index}pk", key, limit, start, equals=equals, absent=absent)
        return [link_from_item(i) for i in items], last

    def stats(self, tenant_id: str, kind: str) -> dict[str, int]:
        item = self.get_item({"pk": f"TENANT#{tenant_id}", "sk": f"STATS#{kind}"}, consistent=False) or {}
        return {k: int(v) for k, v in item.items() if k not in ("pk", "sk")}

    def delete_link(self, link: ShareLink) -> None:
        """Delete a link at its clean-up time and take it out of the tenant's counters, in one transaction."""
        self.transact(
            {
                "Delete": {
                    "Key": serialize(link_key(link.id)),
                    # Protects: only the link as read is deleted (not one regenerated or consumed meanwhile), once,
                    # so the counters drop exactly once.
                    "ConditionExpression": "#v = :v AND tenantId = :t",
                    "ExpressionAttributeNames": {"#v": "version"},
                    "ExpressionAttributeValues": serialize({":v": link.version, ":t": link.tenant_id}),
                }
            },
            stats_update(link.tenant_id, "SHARE", {"total": -1, f"s{int(link.status)}": -1}),
        )

    def count_failed_test(self, link_id: str, token_hash: str, cap: int) -> int:
        """Add one failed connection test to a waiting link; returns the new count. ConditionFailed when the
        link's token changed, it stopped waiting, or it already holds `cap` failures. (The version is left alone:
        a concurrent successful submit still consumes the link; the full-item writes that follow a stale read
        either end the link or reset the count.)"""
        answer = self._call(
            "update_item",
            TableName=self.table,
            Key=serialize(link_key(link_id)),
            UpdateExpression="ADD failedTests :one",
            # Protects: the cap under concurrent submits (the ADD is atomic, the count never passes `cap`), and a
            # failure of an old token never counts against the token a PUT issued meanwhile.
            ConditionExpression=(
                "tokenHash = :h AND #s IN (:w, :o) AND (attribute_not_exists(failedTests) OR failedTests < :cap)"
            ),
            ExpressionAttributeNames={"#s": "status"},
            ExpressionAttributeValues=serialize(
                {
                    ":one": 1,
                    ":h": token_hash,
                    ":w": int(LinkStatus.WAITING),
                    ":o": int(LinkStatus.WAITING_FOR_OAUTH),
                    ":cap": cap,
                }
            ),
            ReturnValues="UPDATED_NEW",
        )
        return int(answer["Attributes"]["failedTests"]["N"])

    def link_write(self, before: ShareLink, after: ShareLink, ttl: int | None) -> list[dict[str, Any]]:
        """The actions that replace `before` with `after`, guarded by version, with the status counters."""
        actions = [_put(link_to_item(after, ttl), "#v = :v AND tenantId = :t", before.version, before.tenant_id)]
        if before.status != after.status:
            actions.append(
                stats_update(before.tenant_id, "SHARE", {f"s{int(before.status)}": -1, f"s{int(after.status)}": 1})
            )
        return actions

    # --- credentials --------------------------------------------------------------------------------------

    def get_credential(self, credential_id: str) -> Credential | None:
        item = self.get_item(credential_key(credential_id))
        return credential_from_item(item) if item and item.get("type") == "credential" else None

    def credential_write(self, before: Credential | None, after: Credential) -> list[dict[str, Any]]:
        """Create `after`, or replace `before` whole (a new secret from the connect page or an OAuth grant) if its
        version is unchanged; keeps the tenant's counters right. Replacing drops any refresh lease: a refresh in
        flight then keeps its token aside (`put_kept_token`) instead of overwriting the new grant."""
        item = {**credential_to_item(after), "secretId": new_secret_id()}
        identity = _identity_writes(before, after)
        if before is None:
            # Protects: a new credential id never overwrites an existing credential.
            put = {"Put": {"Item": serialize(item), "ConditionExpression": "attribute_not_exists(pk)"}}
            counters = stats_update(after.tenant_id, "CRED", {"total": 1, **credential_counters(after, 1)})
            return [put, counters, *identity]
        put = _put(item, "#v = :v AND tenantId = :t", before.version, before.tenant_id)
        return [put, *_counters(before, after), *identity]

    def credential_update(self, before: Credential, after: Credential) -> list[dict[str, Any]]:
        """Change a credential's metadata (title, state, test result, back-off…) in place: only the attributes
        that differ are set or removed, so the sealed secret and the refresh lease are never touched."""
        if after.secret != before.secret or after.secret_id != before.secret_id:
            raise ValueError("a metadata update never changes the secret")
        # Protects: the change was computed from the current item (version), of this tenant.
        return [_diff_update(before, after, "#version = :v AND tenantId = :t", ()), *_counters(before, after)]

    def refreshed_write(
        self, before: Credential, after: Credential, owner: str, *, drop_kept: bool
    ) -> list[dict[str, Any]]:
        """Store a refreshed secret and drop the lease, only while `owner` still holds it (`before` is the item as
        re-read under the lease, so metadata written meanwhile is kept); `drop_kept` deletes a kept token."""
        after = replace(after, secret_id=new_secret_id())
        # Protects: only the lease holder stores what its token call returned, over the item it last read.
        condition = "leaseOwner = :o AND #version = :v AND tenantId = :t"
        actions = [_diff_update(before, after, condition, ("leaseOwner", "leaseUntil"), o=owner)]
        if drop_kept:
            actions.append({"Delete": {"Key": serialize(kept_token_key(before.id))}})
        return [*actions, *_counters(before, after)]

    def credential_delete(self, cred: Credential) -> list[dict[str, Any]]:
        return [
            {
                "Delete": {
                    "Key": serialize(credential_key(cred.id)),
                    # Protects: a credential changed since it was read is not deleted from under its writer.
                    "ConditionExpression": "#v = :v AND tenantId = :t",
                    "ExpressionAttributeNames": {"#v": "version"},
                    "ExpressionAttributeValues": serialize({":v": cred.version, ":t": cred.tenant_id}),
                }
            },
            stats_update(cred.tenant_id, "CRED", {"total": -1, **credential_counters(cred, -1)}),
            *_identity_writes(cred, None),
        ]

    def list_credentials(
        self,
        tenant_id: str,
        partner_id: int | None,
        state: str | None,
        limit: int,
        start: dict[str, Any] | None,
        *,
        end_user_id: str | None = None,
        tag: tuple[str, str] | None = None,
        environment: str | None = None,
    ) -> tuple[list[Credential], dict[str, Any] | None]:
        """One Query: by end user (gsi4), else by tag (the `tags` index, then one BatchGetItem of the page), else by
        partner (gsi3), else by state (gsi2), else all (gsi1). Filters beyond the index's own are a FilterExpression
        (or, after a tag query, the same test on the items read), so a page still reads at most `limit` items."""
        env_equals, absent = environment_filter(environment)
        if end_user_id is not None:
            equals = {"partnerId": partner_id, "state": state, **({f"tags.{tag[0]}": tag[1]} if tag else {})}
            equals = {k: v for k, v in {**equals, **(env_equals or {})}.items() if v is not None}
            key = tenant_credentials_by_end_user_pk(tenant_id, end_user_id)
            items, last = self.query_page("gsi4", "gsi4pk", key, limit, start, equals=equals or None, absent=absent)
            return [credential_from_item(i) for i in items], last
        if tag is not None:
            found, last = self._list_by_tag(tenant_id, tag, partner_id, state, limit, start)
            return [c for c in found if environment is None or c.environment == environment], last
        if partner_id is not None:
            index, key = "gsi3", tenant_credentials_by_partner_pk(tenant_id, partner_id)
        elif state is not None:
            index, key = "gsi2", tenant_credentials_by_state_pk(tenant_id, state)
        else:
            index, key = "gsi1", tenant_credentials_pk(tenant_id)
        extra = {"state": state} if partner_id is not None and state is not None else {}
        items, last = self.query_page(
            index, f"{index}pk", key, limit, start, equals={**extra, **(env_equals or {})} or None, absent=absent
        )
        return [credential_from_item(i) for i in items], last

    def _list_by_tag(
        self,
        tenant_id: str,
        tag: tuple[str, str],
        partner_id: int | None,
        state: str | None,
        limit: int,
        start: dict[str, Any] | None,
    ) -> tuple[list[Credential], dict[str, Any] | None]:
        """A page of the sparse tag index (keys only), then the credentials it names in one BatchGetItem. A tag
        item and its credential are written in one transaction; the credential is checked again all the same."""
        key = tenant_credentials_by_tag_pk(tenant_id, *tag)
        keys, last = self.query_page("tags", "tagPk", key, limit, start)
        found = self.get_many([{"pk": k["pk"], "sk": "CRED"} for k in keys])
        wanted = []
        for item in found:
            cred = credential_from_item(item)
            if cred.tenant_id != tenant_id or cred.tags.get(tag[0]) != tag[1]:
                continue
            if (partner_id is None or cred.partner_id == partner_id) and (state is None or str(cred.state) == state):
                wanted.append(cred)
        return wanted, last

    def get_many(self, keys: list[dict[str, str]]) -> list[dict[str, Any]]:
        """BatchGetItem (consistent) of up to 100 keys, unprocessed keys retried; the items found, in `keys` order."""
        found: dict[tuple[str, str], dict[str, Any]] = {}
        pending = [serialize(k) for k in keys]
        for _ in range(5):
            if not pending:
                break
            answer = self._call("batch_get_item", RequestItems={self.table: {"Keys": pending, "ConsistentRead": True}})
            for raw in answer.get("Responses", {}).get(self.table, []):
                item = deserialize(raw)
                found[(item["pk"], item["sk"])] = item
            pending = answer.get("UnprocessedKeys", {}).get(self.table, {}).get("Keys", [])
        if pending:
            raise errors.ServiceUnavailable()
        return [found[(k["pk"], k["sk"])] for k in keys if (k["pk"], k["sk"]) in found]

    def put_audit(self, item: dict[str, Any]) -> dict[str, Any]:
        return {"Put": {"Item": serialize(item)}}

    def list_audit(
        self, credential_id: str, limit: int, start: dict[str, Any] | None
    ) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
        kwargs: dict[str, Any] = {
            "TableName": self.table,
            "KeyConditionExpression": "pk = :pk AND begins_with(sk, :a)",
            "ExpressionAttributeValues": serialize({":pk": f"CRED#{credential_id}", ":a": "AUDIT#"}),
            "ScanIndexForward": False,
            "Limit": limit,
        }
        if start:
            kwargs["ExclusiveStartKey"] = serialize(start)
        answer = self._call("query", **kwargs)
        last = answer.get("LastEvaluatedKey")
        return [deserialize(i) for i in answer.get("Items", [])], deserialize(last) if last else None

    def take_lease(self, credential_id: str, owner: str, until: str, now: str) -> Credential | None:
        """Single-flight refresh: the credential as it stands once this caller holds its refresh lease (the
        write returns it, so no re-read is needed), or None if someone else holds it or it is gone."""
        try:
            answer = self._call(
                "update_item",
                TableName=self.table,
                Key=serialize(credential_key(credential_id)),
                UpdateExpression="SET leaseOwner = :o, leaseUntil = :u",
                # Protects: one refresher at a time; a lease whose holder died expires at leaseUntil.
                ConditionExpression="attribute_exists(pk) AND (attribute_not_exists(leaseUntil) OR leaseUntil < :now)",
                ExpressionAttributeValues=serialize({":o": owner, ":u": until, ":now": now}),
                ReturnValues="ALL_NEW",
            )
        except ConditionFailed:
            return None
        return credential_from_item(deserialize(answer["Attributes"]))

    def put_kept_token(self, item: dict[str, Any]) -> None:
        """Keep a refreshed secret (already sealed) that could not be stored on the credential."""
        self._call("put_item", TableName=self.table, Item=serialize({**item, **kept_token_key(item["credentialId"])}))

    def get_kept_token(self, credential_id: str) -> dict[str, Any] | None:
        return self.get_item(kept_token_key(credential_id))

    def release_lease(self, credential_id: str, owner: str) -> None:
        # Suppressed: the lease had already expired and been taken over, or the item was rewritten.
        with contextlib.suppress(ConditionFailed):
            self._call(
                "update_item",
                TableName=self.table,
                Key=serialize(credential_key(credential_id)),
                UpdateExpression="REMOVE leaseOwner, leaseUntil",
                # Protects: only the holder releases its own lease.
                ConditionExpression="leaseOwner = :o",
                ExpressionAttributeValues=serialize({":o": owner}),
            )

    # --- OAuth apps and flows -----------------------------------------------------------------------------

    def get_oauth_app(self, tenant_id: str, partner_id: int) -> dict[str, Any] | None:
        return self.get_item(oauth_app_key(tenant_id, partner_id))

    def put_oauth_app(self, item: dict[str, Any]) -> None:
        self._call("put_item", TableName=self.table, Item=serialize(item))

    def delete_oauth_app(self, tenant_id: str, partner_id: int) -> bool:
        answer = self._call(
            "delete_item",
            TableName=self.table,
            Key=serialize(oauth_app_key(tenant_id, partner_id)),
            ReturnValues="ALL_OLD",
        )
        return "Attributes" in answer

    def consume_flow(self, state_hash: str, now: str, kind: str = "oauth2") -> dict[str, Any] | None:
        """Delete and return the OAuth flow of this kind (`oauth2`, `oauth1`) for this state (or request token),
        once; None if unknown, used, expired or of the other kind (which is left as it was)."""
        # OAuth 2.0 flow records carry no `kind` (those written before OAuth 1.0a existed included).
        of_kind = "attribute_not_exists(kind) OR kind = :k" if kind == "oauth2" else "kind = :k"
        try:
            answer = self._call(
                "delete_item",
                TableName=self.table,
                Key=serialize(flow_key(state_hash)),
                # Protects: single use, the application's own 10-minute expiry (TTL deletes late), and the flow's
                # kind: an OAuth 1.0a request token presented as an OAuth 2.0 state (or the reverse) spends nothing.
                ConditionExpression=f"attribute_exists(pk) AND expiresAt > :now AND ({of_kind})",
                ExpressionAttributeValues=serialize({":now": now, ":k": kind}),
                ReturnValues="ALL_OLD",
            )
        except ConditionFailed:
            return None
        return deserialize(answer["Attributes"])

    # --- tenants and API keys -----------------------------------------------------------------------------

    def get_tenant(self, tenant_id: str) -> dict[str, Any] | None:
        return self.get_item({"pk": f"TENANT#{tenant_id}", "sk": "TENANT"}, consistent=False)

    def set_tenant_attribute(self, tenant_id: str, name: str, value: Any) -> None:
        self._call(
            "update_item",
            TableName=self.table,
            Key=serialize({"pk": f"TENANT#{tenant_id}", "sk": "TENANT"}),
            UpdateExpression="SET #n = :v",
            # Protects: only an existing tenant is changed; a typo in the id does not create a tenant.
            ConditionExpression="attribute_exists(pk)",
            ExpressionAttributeNames={"#n": name},
            ExpressionAttributeValues=serialize({":v": value}),
        )

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

    def put_api_key(self, tenant_id: str, key_hash: str, key_item: dict[str, Any]) -> None:
        """Another key for an existing tenant; ConditionFailed when there is no such tenant."""
        self.transact(
            # Protects: keys are only added to tenants that exist.
            {
                "ConditionCheck": {
                    "Key": serialize({"pk": f"TENANT#{tenant_id}", "sk": "TENANT"}),
                    "ConditionExpression": "attribute_exists(pk)",
                }
            },
            # Protects: a key hash is never reused.
            {
                "Put": {
                    "Item": serialize({"pk": f"APIKEY#{key_hash}", "sk": "APIKEY", **key_item}),
                    "ConditionExpression": "attribute_not_exists(pk)",
                }
            },
        )

    def get_api_key(self, key_hash: str) -> dict[str, Any] | None:
        return self.get_item({"pk": f"APIKEY#{key_hash}", "sk": "APIKEY"}, consistent=False)


def kept_token_key(credential_id: str) -> dict[str, str]:
    """Where a refreshed secret waits when it could not be written to its credential (see oauth.refresh)."""
    return {"pk": f"CRED#{credential_id}", "sk": "KEPT"}


def new_secret_id() -> str:
    return secrets.token_hex(8)


def _identity_writes(before: Credential | None, after: Credential | None) -> list[dict[str, Any]]:
    """What goes with a credential write or delete: its tag items (one per tag, in the `tags` index) put or
    deleted as the tags change, and the per-end-user counter moved when the end user changes."""
    old = {tag: tag_item(before, *tag) for tag in before.tags.items()} if before else {}
    new = {tag: tag_item(after, *tag) for tag in after.tags.items()} if after else {}
    actions: list[dict[str, Any]] = [{"Put": {"Item": serialize(new[tag])}} for tag in new if tag not in old]
    gone = [{"pk": old[tag]["pk"], "sk": old[tag]["sk"]} for tag in old if tag not in new]
    actions += [{"Delete": {"Key": serialize(key)}} for key in gone]
    before_user = before.end_user["id"] if before and before.end_user else None
    after_user = after.end_user["id"] if after and after.end_user else None
    if before_user != after_user:
        tenant_id = (after or before).tenant_id  # type: ignore[union-attr]
        if before_user:
            actions.append(stats_update(tenant_id, end_user_stats_kind(before_user), {"total": -1}))
        if after_user:
            actions.append(stats_update(tenant_id, end_user_stats_kind(after_user), {"total": 1}))
    return actions


def _counters(before: Credential, after: Credential) -> list[dict[str, Any]]:
    deltas = _merge(credential_counters(before, -1), credential_counters(after, 1))
    return [stats_update(before.tenant_id, "CRED", deltas)] if deltas else []


def _diff_update(
    before: Credential, after: Credential, condition: str, also_remove: tuple[str, ...], **values: Any
) -> dict[str, Any]:
    """An Update that turns `before`'s item into `after`'s: SET what changed, REMOVE what went."""
    old, new = credential_to_item(before), credential_to_item(after)
    sets = {k: v for k, v in new.items() if old.get(k) != v}
    removes = tuple(k for k in old if k not in new) + also_remove
    return update(credential_key(before.id), sets, removes, condition, v=before.version, t=before.tenant_id, **values)


def environment_filter(environment: str | None) -> tuple[dict[str, str] | None, tuple[str, ...]]:
    """(`equals`, `absent`) for `query_page`: production is the environment an item names by having none."""
    if environment is None:
        return None, ()
    return (None, ("environment",)) if environment == PRODUCTION else ({"environment": environment}, ())


def oauth_app_key(tenant_id: str, partner_id: int) -> dict[str, str]:
    return {"pk": f"TENANT#{tenant_id}", "sk": f"OAUTHAPP#{partner_id}"}


def flow_key(state_hash: str) -> dict[str, str]:
    return {"pk": f"OAUTH#{state_hash}", "sk": "OAUTH"}


def update(key: dict[str, Any], sets: dict[str, Any], removes: tuple[str, ...], condition: str, **values: Any) -> dict:
    """An Update action for a transaction: SET each of `sets`, REMOVE each of `removes`, if `condition` holds.
    `values` are the condition's `:name` placeholders (given without the colon)."""
    names = {f"#s{i}": name for i, name in enumerate(sets)} | {f"#r{i}": name for i, name in enumerate(removes)}
    expression = ("SET " + ", ".join(f"#s{i} = :s{i}" for i in range(len(sets)))) if sets else ""
    if removes:
        expression += " REMOVE " + ", ".join(f"#r{i}" for i in range(len(removes)))
    placeholders = {f":s{i}": v for i, v in enumerate(sets.values())} | {f":{k}": v for k, v in values.items()}
    for word in re.findall(r"#(\w+)", condition):
        names[f"#{word}"] = word
    return {
        "Update": {
            "Key": serialize(key),
            "UpdateExpression": expression,
            "ConditionExpression": condition,
            "ExpressionAttributeNames": names,
            "ExpressionAttributeValues": serialize(placeholders),
        }
    }


def credential_counters(cred: Credential, sign: int) -> dict[str, int]:
    """The tenant's credential counters this credential counts in (by state, partner, and both)."""
    state = str(cred.state)
    return {f"s:{state}": sign, f"p:{cred.partner_id}": sign, f"ps:{cred.partner_id}:{state}": sign}


def _merge(*deltas: dict[str, int]) -> dict[str, int]:
    merged: dict[str, int] = {}
    for delta in deltas:
        for name, value in delta.items():
            merged[name] = merged.get(name, 0) + value
    return {k: v for k, v in merged.items() if v}


def _put(item: dict[str, Any], condition: str, version: int, tenant_id: str) -> dict[str, Any]:
    return {
        "Put": {
            "Item": serialize(item),
            # Protects: a concurrent writer's change is never overwritten (optimistic, by version and tenant).
            "ConditionExpression": condition,
            "ExpressionAttributeNames": {"#v": "version"},
            "ExpressionAttributeValues": serialize({":v": version, ":t": tenant_id}),
        }
    }


def stats_update(tenant_id: str, kind: str, deltas: dict[str, int]) -> dict[str, Any]:
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
