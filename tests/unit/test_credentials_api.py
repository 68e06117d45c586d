"""The credentials, partners and connect_page functions through their handlers (moto underneath)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from grantlink import connect, links
from grantlink.models import Caller, CreateLinkRequest
from tests.helpers import ALL_SCOPES, call, event, invoke

A, B = "tnt_a", "tnt_b"
SECRET = "sk_live_verysecretvalue_1234"


def connected(tenant: str = A, partner: int = 9001, title: str = "ACME CRM") -> str:
    """A credential made the way a customer makes one; returns its id."""
    link, token = links.create_link(Caller(tenant), CreateLinkRequest(partnerId=partner, title=title))
    values = {"apiKey": SECRET} if partner == 9001 else {"username": "ada", "password": SECRET}
    return connect.submit(link.id, token, values).credential.id


def creds(name: str, credential_id: str = "", tenant: str = A, **changes: Any) -> tuple[int, dict, dict]:
    if credential_id:
        changes["path_id"] = credential_id
    return invoke("credentials", event(name, tenant=tenant, **changes))


def test_list_get_rename_disable_enable_and_delete(aws_env: Any) -> None:
    """The README's curl walkthrough, through the handler."""
    cid = connected()
    status, listed, _ = creds("list_credentials")
    assert status == 200 and [c["id"] for c in listed["data"]] == [cid] and listed["meta"]["totalItemsCount"] == 1
    status, got, _ = creds("get_credential", cid)
    assert got["data"]["state"] == "active" and got["data"]["hint"] == "…1234" and "secret" not in got["data"]
    status, renamed, _ = creds("update_credential", cid, body={"title": "Main CRM"})
    assert (status, renamed["data"]["title"]) == (200, "Main CRM")
    _, disabled, _ = creds("update_credential", cid, body={"enabled": False})
    assert disabled["data"]["state"] == "disabled"
    status, locked, _ = creds("read_secret", cid)
    assert (status, locked["error"]["code"]) == (409, "credential_disabled")
    _, enabled, _ = creds("update_credential", cid, body={"enabled": True})
    assert enabled["data"]["state"] == "active"
    status, deleted, _ = creds("delete_credential", cid)
    assert (status, deleted["data"]) == (200, {"id": cid, "deleted": True})
    assert creds("get_credential", cid)[0] == 404
    assert creds("list_credentials")[1]["meta"]["totalItemsCount"] == 0


def test_delete_destroys_the_ciphertext(aws_env: Any, table_items: Any) -> None:
    cid = connected()
    ciphertext = next(i for i in table_items() if i["pk"]["S"] == f"CRED#{cid}" and i["sk"]["S"] == "CRED")["secret"]
    creds("delete_credential", cid)
    assert json.dumps(ciphertext, default=str) not in json.dumps(table_items(), default=str)


def test_secret_read_returns_the_values_and_is_audited(aws_env: Any) -> None:
    cid = connected(partner=9002)
    status, secret, _ = creds("read_secret", cid)
    assert status == 200
    assert secret["data"] == {
        "id": cid,
        "partnerId": 9002,
        "authType": "basic",
        "fields": {"username": "ada", "password": SECRET},
    }
    _, trail, _ = creds("list_audit", cid)
    assert [e["action"] for e in trail["data"]] == ["secret_read", "created"]
    assert trail["data"][0]["actor"].startswith("apikey")
    assert SECRET not in json.dumps(trail)


def test_m2_a_key_without_credentials_secret_cannot_read_secrets(aws_env: Any) -> None:
    cid = connected()
    scopes = ALL_SCOPES.replace("credentials:secret", "")
    status, answer, _ = invoke("credentials", event("read_secret", tenant=A, scopes=scopes, path_id=cid))
    assert (status, answer["error"]["code"]) == (403, "forbidden")
    status, _, _ = invoke("credentials", event("get_credential", tenant=A, scopes="credentials:read", path_id=cid))
    assert status == 200
    status, _, _ = invoke("credentials", event("delete_credential", tenant=A, scopes="credentials:read", path_id=cid))
    assert status == 403


@pytest.mark.parametrize(
    ("name", "extra"),
    [
        ("get_credential", {}),
        ("update_credential", {"body": {"title": "stolen"}}),
        ("delete_credential", {}),
        ("read_secret", {}),
        ("reauthorize", {"body": {}}),
        ("list_audit", {}),
    ],
)
def test_m1_another_tenants_credential_is_not_found(aws_env: Any, name: str, extra: dict) -> None:
    """M1: tenant B gets 404 (not 403) on every route of A's credential, and nothing changes."""
    cid = connected(A)
    status, answer, _ = creds(name, cid, tenant=B, **extra)
    assert (status, answer["error"]["code"]) == (404, "credential_not_found")
    _, still, _ = creds("get_credential", cid)
    assert still["data"]["title"] == "ACME CRM"
    assert creds("list_credentials", tenant=B)[1]["data"] == []


def test_list_filters_by_partner_and_state_with_totals(aws_env: Any) -> None:
    apikey = [connected(partner=9001) for _ in range(2)]
    basic = connected(partner=9002)
    creds("update_credential", apikey[0], body={"enabled": False})

    def ids(**query: Any) -> tuple[set[str], int]:
        _, body, _ = creds("list_credentials", query=query)
        return {c["id"] for c in body["data"]}, body["meta"]["totalItemsCount"]

    assert ids(partnerId=9001) == (set(apikey), 2)
    assert ids(state="disabled") == ({apikey[0]}, 1)
    assert ids(partnerId=9001, state="active") == ({apikey[1]}, 1)
    assert ids(partnerId=9002, state="active") == ({basic}, 1)
    assert ids() == ({*apikey, basic}, 3)


@pytest.mark.parametrize(
    ("name", "extra", "field"),
    [
        ("update_credential", {"body": {"title": ""}}, "title"),
        ("update_credential", {"body": {"title": "x" * 201}}, "title"),
        ("update_credential", {"body": {"enabled": "maybe"}}, "enabled"),
        ("update_credential", {"body": {"state": "active"}}, "state"),
        ("list_credentials", {"query": {"state": "sleeping"}}, "state"),
        ("list_credentials", {"query": {"partnerId": "-1"}}, "partnerId"),
        ("reauthorize", {"body": {"expiresInHours": 99}}, "expiresInHours"),
    ],
)
def test_m3_bad_input_is_400_and_changes_nothing(aws_env: Any, name: str, extra: dict, field: str) -> None:
    cid = connected()
    status, answer, _ = creds(name, cid if name != "list_credentials" else "", **extra)
    assert status == 400 and field in [d["field"] for d in answer["error"]["details"]]
    assert creds("get_credential", cid)[1]["data"]["title"] == "ACME CRM"


def test_k2_a_ciphertext_copied_to_another_credential_does_not_decrypt(aws_env: Any, dynamodb: Any) -> None:
    """K2: the encryption context binds tenant and credential; a moved ciphertext is refused, not revealed."""
    first, second = connected(), connected()
    table = aws_env["env"]["GRANTLINK_TABLE"]
    stolen = dynamodb.get_item(TableName=table, Key={"pk": {"S": f"CRED#{first}"}, "sk": {"S": "CRED"}})["Item"][
        "secret"
    ]
    dynamodb.update_item(
        TableName=table,
        Key={"pk": {"S": f"CRED#{second}"}, "sk": {"S": "CRED"}},
        UpdateExpression="SET secret = :s",
        ExpressionAttributeValues={":s": stolen},
    )
    status, answer, _ = creds("read_secret", second)
    assert (status, answer["error"]["code"]) == (500, "decryption_failed")
    assert SECRET not in json.dumps(answer)


def test_k3_a_flipped_byte_is_a_clean_error(aws_env: Any, dynamodb: Any) -> None:
    cid = connected()
    table = aws_env["env"]["GRANTLINK_TABLE"]
    key = {"pk": {"S": f"CRED#{cid}"}, "sk": {"S": "CRED"}}
    blob = bytearray(dynamodb.get_item(TableName=table, Key=key)["Item"]["secret"]["B"])
    blob[-40] ^= 0x01
    dynamodb.update_item(
        TableName=table,
        Key=key,
        UpdateExpression="SET secret = :s",
        ExpressionAttributeValues={":s": {"B": bytes(blob)}},
    )
    status, answer, _ = creds("read_secret", cid)
    assert (status, answer["error"]["code"]) == (500, "decryption_failed")


def test_reauthorize_returns_a_bound_link(aws_env: Any) -> None:
    cid = connected()
    status, answer, _ = creds("reauthorize", cid, body={"expiresInHours": 4})
    assert status == 201
    link = answer["data"]
    assert link["token"] and link["credentialId"] == cid and link["partnerId"] == 9001 and link["status"] == 0
    _, trail, _ = creds("list_audit", cid)
    assert trail["data"][0]["action"] == "reauthorize_link_created"


def test_partners_list_filter_search_and_get(aws_env: Any) -> None:
    status, listed, _ = invoke("partners", event("list_partners", tenant=A, query={"authType": "oauth2"}))
    assert status == 200 and listed["data"] and {p["authType"] for p in listed["data"]} == {"oauth2"}
    _, found, _ = invoke("partners", event("list_partners", tenant=A, query={"q": "strip"}))
    assert [p["slug"] for p in found["data"]] == ["stripe"]
    _, paged, _ = invoke("partners", event("list_partners", tenant=A, query={"perPage": 5, "page": 2}))
    assert len(paged["data"]) == 5 and paged["meta"]["page"] == 2 and paged["meta"]["totalPages"] >= 7
    status, one, _ = invoke("partners", event("get_partner", tenant=A, path_id="9001"))
    assert status == 200 and set(one["data"]) == {"id", "slug", "name", "authType", "fields", "docsUrl", "description"}
    for missing in ("424242", "abc", "-1"):
        assert invoke("partners", event("get_partner", tenant=A, path_id=missing))[0] == 404


def test_the_connect_page_get_post_and_gone(aws_env: Any) -> None:
    """GET renders the form with strict headers; POST (a base64 form, as API Gateway sends it) connects;
    the used link then gets the uniform 410 page."""
    link, token = links.create_link(Caller(A), CreateLinkRequest(partnerId=9001, title="Shop"))
    shown = call("connect_page", event("connect_get", query={"id": link.id, "token": token}))
    headers = shown["headers"]
    assert shown["statusCode"] == 200 and "Connect Demo (API key)" in shown["body"]
    assert headers["Referrer-Policy"] == "no-referrer" and headers["Cache-Control"] == "no-store"
    assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]
    assert "script-src" not in headers["Content-Security-Policy"]
    bad = call("connect_page", event("connect_post", form={"id": link.id, "token": token, "f_apiKey": ""}))
    assert bad["statusCode"] == 400 and "Enter your API key." in bad["body"]
    done = call("connect_page", event("connect_post", form={"id": link.id, "token": token, "f_apiKey": SECRET}))
    assert done["statusCode"] == 200 and "Connected" in done["body"] and SECRET not in done["body"]
    gone = call("connect_page", event("connect_get", query={"id": link.id, "token": token}))
    unknown = call("connect_page", event("connect_get", query={"id": "lnk_x", "token": "y"}))
    assert gone["statusCode"] == unknown["statusCode"] == 410
    assert gone["body"] == unknown["body"]
