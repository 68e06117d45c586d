"""SECURITY.md "Data" (D1–D5): one consume per link, expiry read by the application, atomic writes, and
idempotency records scoped to the tenant and free of secrets. D1 races real browsers' submits over HTTP against
the local stack (`integration`); the rest run the use cases and handlers against moto.
"""

from __future__ import annotations

import hashlib
import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import boto3
import pytest

from grantlink import connect, errors, links
from grantlink.models import Caller, LinkStatus
from tests.helpers import SECRET, FrozenClock, create_link, new_link
from tests.stack import FORM_SECRET, LINKS, auth, http, new_tenant, submit, url
from tests.stack import new_link as new_link_over_http

A = Caller("tnt_a", frozenset({"links:write"}))


@pytest.mark.integration
def test_d1_concurrent_submits_of_one_link_make_exactly_one_credential(stack: dict[str, Any]) -> None:
    """D1: 25 browsers submit the same link at once: one success, 24 uniform 410s, one credential."""
    key = new_tenant(stack, "racer")
    link = new_link_over_http(stack, key=key)
    with ThreadPoolExecutor(max_workers=25) as pool:
        answers = list(pool.map(lambda i: submit(stack, link, apiKey=f"{FORM_SECRET}-{i}"), range(25)))
    codes = sorted(a.status_code for a in answers)
    assert codes == [200] + [410] * 24
    listed = http.get(url(stack, "/credentials"), headers=auth(stack, key)).json()
    assert listed["meta"]["totalItemsCount"] == 1 and len(listed["data"]) == 1
    assert (
        http.get(url(stack, f"{LINKS}/{link['id']}"), headers=auth(stack, key)).json()["data"]["credentialId"]
        == (listed["data"][0]["id"])
    )


def test_d2_an_expired_item_still_in_the_table_reads_as_expired(
    aws_env: Any, clock: FrozenClock, table_items: Any
) -> None:
    """D2: moto never deletes TTL-expired items; a link far past its ttl is still reported as expired."""
    link, _ = new_link()
    clock.advance(days=60)
    ttl = int(next(i for i in table_items() if i["pk"]["S"] == f"SHARE#{link.id}")["ttl"]["N"])
    assert ttl < clock().timestamp()
    assert links.get_link(A, link.id).to_out(None, "https://x").expired is True


def test_d3_a_failing_second_condition_leaves_both_items_unchanged(aws_env: Any, table_items: Any) -> None:
    """D3: the credential write fails (its id is taken) → the link is not consumed either."""
    link, token = new_link()
    first, first_token = new_link()
    taken = connect.submit(first.id, first_token, {"apiKey": SECRET}).credential.id
    before = sorted(json.dumps(i, sort_keys=True, default=str) for i in table_items())
    original = connect.new_credential_id
    connect.new_credential_id = lambda: taken  # type: ignore[assignment]
    try:
        with pytest.raises(errors.Gone):
            connect.submit(link.id, token, {"apiKey": "another-secret-value-5678"})
    finally:
        connect.new_credential_id = original  # type: ignore[assignment]
    assert sorted(json.dumps(i, sort_keys=True, default=str) for i in table_items()) == before
    assert connect.open_link(link.id, token).link.status == LinkStatus.WAITING


def test_d4_idempotency_keys_are_scoped_to_the_tenant(aws_env: Any) -> None:
    """D4: the same key from two tenants makes two links."""
    key = {"Idempotency-Key": "same-key"}
    _, a, _ = create_link(headers=key, tenant="tnt_a")
    _, b, _ = create_link(headers=key, tenant="tnt_b")
    assert a["data"]["id"] != b["data"]["id"]
    assert a["data"]["token"] and b["data"]["token"]


def test_d5_idempotency_records_hold_no_secret(aws_env: Any) -> None:
    """D5: the stored idempotency record has the link id but neither the token nor its hash."""
    _, created, _ = create_link(headers={"Idempotency-Key": "inspect-me"})
    records = boto3.client("dynamodb").scan(TableName=aws_env["env"]["GRANTLINK_IDEMPOTENCY_TABLE"])["Items"]
    dump = json.dumps(records)
    assert len(records) == 1 and created["data"]["id"] in dump
    assert created["data"]["token"] not in dump
    assert hashlib.sha256(created["data"]["token"].encode()).hexdigest() not in dump
