"""The credentials, partners and connect_page functions through their handlers (moto underneath). The rows of
SECURITY.md they also exercise (M1–M3 on credentials, K2, K3) are proved in tests/security."""

from __future__ import annotations

import json
from typing import Any

from grantlink import links
from grantlink.models import Caller, CreateLinkRequest
from tests.helpers import SECRET, call, connected, creds, event, invoke

A, B = "tnt_a", "tnt_b"


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
    assert status == 200 and set(one["data"]) == {
        "id", "slug", "name", "authType", "category", "fields", "docsUrl", "description", "environments", "scopes",
        "optionalScopes",
    }  # fmt: skip
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
