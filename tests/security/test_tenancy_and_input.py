"""SECURITY.md "Tenancy and input" (M1–M4): tenants see each other's links and credentials as not found (404,
not 403), scopes are enforced, and bad input gets a clear 4xx JSON error and changes nothing — through the use
cases and handlers against moto, and M1 also over HTTP against the local stack (`integration`).

M4 (no 5xx from any generated input) is proved by schemathesis over openapi.json against the local stack in
tests/fuzz/test_api_fuzz.py (`make fuzz`: it needs its own harness); what it found is kept here as fast
handler-level regressions.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from grantlink import errors, links
from grantlink.models import Caller, ErrorEnvelope, LinkStatus
from grantlink.store import default as default_store
from infra import openapi
from tests.helpers import (
    ALL_SCOPES,
    call,
    connected,
    create_link,
    creds,
    event,
    invoke,
    new_link,
    proxy_event,
    run_connection_test,
    token_event,
)
from tests.stack import LINKS, auth, http, new_tenant, url

A, B = Caller("tnt_a", frozenset({"links:write"})), Caller("tnt_b", frozenset({"links:write"}))
NOT_UTF8 = b'{"title": "\xff\xfe"}'


# --- M1: tenants are isolated -----------------------------------------------------------------------------------


@pytest.mark.parametrize("operation", ["get", "regenerate", "revoke"])
def test_m1_another_tenants_link_is_not_found(aws_env: Any, operation: str) -> None:
    """M1: tenant B gets 404 (not 403) on A's link, and A's link is unchanged."""
    link, token = new_link(caller=A)
    call = {"get": links.get_link, "regenerate": links.regenerate_link, "revoke": links.revoke_link}[operation]
    with pytest.raises(errors.NotFound):
        call(B, link.id)
    assert links.token_matches(token, links.get_link(A, link.id).token_hash)


def test_m1_listing_shows_only_the_callers_links(aws_env: Any) -> None:
    """M1: tenant A's list holds its own links only, and its total counts only them."""
    mine = {new_link(caller=A)[0].id for _ in range(3)}
    new_link(caller=B)
    page, meta = links.list_links(A, None, 20, None)
    assert {link.id for link in page} == mine
    assert meta.totalItemsCount == 3


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
    cid = connected("tnt_a")
    status, answer, _ = creds(name, cid, tenant="tnt_b", **extra)
    assert (status, answer["error"]["code"]) == (404, "credential_not_found")
    _, still, _ = creds("get_credential", cid)
    assert still["data"]["title"] == "ACME CRM"
    assert creds("list_credentials", tenant="tnt_b")[1]["data"] == []


@pytest.mark.parametrize("route", ["proxy", "token"])
def test_m1_another_tenants_credential_is_not_found_by_the_proxy_or_the_token_route(aws_env: Any, route: str) -> None:
    """M1: tenant B, holding every scope, gets 404 (not 403) when it proxies through A's credential or asks for its
    token; A's audit trail records nothing of it."""
    cid = connected("tnt_a")
    scopes = ALL_SCOPES + " credentials:proxy"
    if route == "proxy":
        status, answer, _ = invoke("proxy", proxy_event(cid, "v1/me", "POST", tenant="tnt_b", scopes=scopes, body={}))
    else:
        status, answer, _ = invoke("credentials", token_event(cid, force=True, tenant="tnt_b", scopes=scopes))
    assert (status, answer["error"]["code"]) == (404, "credential_not_found")
    trail = creds("list_audit", cid)[1]["data"]
    assert not [e for e in trail if e["action"] in ("proxied", "token_read")], trail


def test_m1_m2_tenancy_and_scope(aws_env: Any) -> None:
    """M1, M2: a connection test of A's credential is a 404 for tenant B and a 403 for a key without
    credentials:write; A's own key with it gets the test."""
    credential_id = connected()
    assert run_connection_test(credential_id, tenant="tnt_b")[0] == 404
    assert run_connection_test(credential_id, scopes="credentials:read")[0] == 403
    assert run_connection_test(credential_id)[0] == 200


@pytest.mark.integration
def test_tenants_are_isolated_over_http(stack: dict[str, Any]) -> None:
    """M1: another tenant's link is a 404 on GET, PUT and DELETE, and is missing from its list."""
    owner = auth(stack)
    other = auth(stack, new_tenant(stack, "other"))
    link = http.post(url(stack, LINKS), json={"partnerId": 9001, "title": "mine"}, headers=owner).json()["data"]
    for method in ("GET", "PUT", "DELETE"):
        answer = http.request(method, url(stack, f"{LINKS}/{link['id']}"), headers=other)
        assert (answer.status_code, answer.json()["error"]["code"]) == (404, "link_not_found")
    listed = http.get(url(stack, LINKS), headers=other).json()["data"]
    assert link["id"] not in [d["id"] for d in listed]
    assert http.get(url(stack, f"{LINKS}/{link['id']}"), headers=owner).json()["data"]["status"] == 0


# --- M2: scopes are enforced ------------------------------------------------------------------------------------


def test_m2_a_key_without_credentials_secret_cannot_read_secrets(aws_env: Any) -> None:
    """M2: without credentials:secret a key cannot read a secret (403); credentials:read alone reads metadata but
    cannot delete."""
    cid = connected()
    scopes = ALL_SCOPES.replace("credentials:secret", "")
    status, answer, _ = invoke("credentials", event("read_secret", tenant="tnt_a", scopes=scopes, path_id=cid))
    assert (status, answer["error"]["code"]) == (403, "forbidden")
    status, _, _ = invoke(
        "credentials", event("get_credential", tenant="tnt_a", scopes="credentials:read", path_id=cid)
    )
    assert status == 200
    status, _, _ = invoke(
        "credentials", event("delete_credential", tenant="tnt_a", scopes="credentials:read", path_id=cid)
    )
    assert status == 403


# --- M3: bad input gets a clear 4xx JSON error and changes nothing ----------------------------------------------


@pytest.mark.parametrize(
    ("body", "code", "field"),
    [
        ("{not json", "malformed_json", None),
        ("[]", "validation_error", "body"),
        ({"partnerId": "nine", "title": "x"}, "validation_error", "partnerId"),
        ({"partnerId": 0, "title": "x"}, "validation_error", "partnerId"),
        ({"partnerId": -5, "title": "x"}, "validation_error", "partnerId"),
        ({"title": "x"}, "validation_error", "partnerId"),
        ({"partnerId": 9001}, "validation_error", "title"),
        ({"partnerId": 9001, "title": "x" * 201}, "validation_error", "title"),
        ({"partnerId": 9001, "title": "   "}, "validation_error", "title"),
        ({"partnerId": 9001, "title": "bad\u0000title"}, "validation_error", "title"),
        ({"partnerId": 9001, "title": "x", "expiresInHours": 49}, "validation_error", "expiresInHours"),
        ({"partnerId": 9001, "title": "x", "expiresInHours": 0}, "validation_error", "expiresInHours"),
        ({"partnerId": 9001, "title": "x", "surprise": 1}, "validation_error", "surprise"),
    ],
)
def test_m3_bad_input_is_a_400_json_error_and_changes_nothing(
    aws_env: Any, table_items: Any, body: Any, code: str, field: str | None
) -> None:
    """M3: malformed JSON, wrong types, out-of-range, blank, over-long, control characters and unknown fields in a
    new link → 400 in the envelope, naming the field; nothing is written."""
    status, answer, _ = create_link(body)
    assert (status, answer["success"], answer["error"]["code"]) == (400, False, code)
    if field:
        assert field in [d["field"] for d in answer["error"]["details"]]
    assert table_items() == []


def test_m3_unknown_partner_is_a_422(aws_env: Any, table_items: Any) -> None:
    """M3: a link for a partner not in the catalogue → 422 unknown_partner; nothing is written."""
    status, answer, _ = create_link({"partnerId": 424242, "title": "x"})
    assert (status, answer["error"]["code"]) == (422, "unknown_partner")
    assert table_items() == []


def test_m3_a_body_over_64_kib_is_a_413(aws_env: Any, table_items: Any) -> None:
    """M3: a body over 64 KiB (and a 1 MB one) → 413; nothing is written."""
    status, answer, _ = create_link({"partnerId": 9001, "title": "x", "pad": "y" * 70_000})
    assert (status, answer["error"]["code"]) == (413, "payload_too_large")
    status, answer, _ = create_link("x" * (1024 * 1024))
    assert status == 413
    assert table_items() == []


@pytest.mark.parametrize("fn", ["connect_page", "oauth_callback"])
def test_m3_a_form_over_64_kib_is_the_413_page_and_the_link_is_untouched(aws_env: Any, fn: str) -> None:
    """M3: the public pages answer an oversized form with an HTML 413 page (with the pages' strict headers), as
    the OpenAPI document says — not the API's JSON — and the link stays usable."""
    link, token = new_link()
    evt = event("connect_post", form={"id": link.id, "token": token, "f_apiKey": "k" * 70_000})
    if fn == "oauth_callback":
        evt["routeKey"] = "POST /connect/oauth/start"
        evt["rawPath"] = evt["requestContext"]["http"]["path"] = "/connect/oauth/start"
    answer = call(fn, evt)
    assert answer["statusCode"] == 413
    assert answer["headers"]["Content-Type"].startswith("text/html")
    assert (
        answer["headers"]["Cache-Control"] == "no-store"
        and "frame-ancestors 'none'" in answer["headers"]["Content-Security-Policy"]
    )
    assert "<!doctype html>" in answer["body"].lower()
    assert default_store().get_link(link.id).status == LinkStatus.WAITING  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"perPage": 0}, "perPage"),
        ({"perPage": 101}, "perPage"),
        ({"status": 7}, "status"),
        ({"perPage": "x"}, "perPage"),
    ],
)
def test_m3_bad_list_parameters_are_400(aws_env: Any, query: dict, field: str) -> None:
    """M3: out-of-range or mistyped list parameters → 400 naming the parameter."""
    status, answer, _ = invoke("share_links", event("list_links", tenant="tnt_a", query=query))
    assert status == 400 and field in [d["field"] for d in answer["error"]["details"]]


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
    """M3: bad credential updates, filters and reauthorize bodies → 400 naming the field; the credential is
    unchanged."""
    cid = connected()
    status, answer, _ = creds(name, cid if name != "list_credentials" else "", **extra)
    assert status == 400 and field in [d["field"] for d in answer["error"]["details"]]
    assert creds("get_credential", cid)[1]["data"]["title"] == "ACME CRM"


# --- M4: what the fuzzer (tests/fuzz) found, as handler-level regressions -----------------------------------------


def binary(evt: dict[str, Any], body: bytes, content_type: str) -> dict[str, Any]:
    """As API Gateway delivers a body that is not text: base64."""
    evt.update(body=base64.b64encode(body).decode(), isBase64Encoded=True)
    evt["headers"]["content-type"] = content_type
    return evt


def links_total() -> int:
    """Tenant A's links, as its list's total says."""
    _, listed, _ = invoke("share_links", event("list_links", tenant="tnt_a"))
    return int(listed["meta"]["totalItemsCount"])


@pytest.mark.parametrize(
    "content_type", ["multipart/form-data", "multipart/form-data; boundary=x", "application/x-www-form-urlencoded"]
)
def test_a_form_body_on_a_json_route_is_a_415_and_changes_nothing(aws_env: Any, content_type: str) -> None:
    """M4 (found by the fuzzer), M3: a form body on a JSON route is a 415 and writes nothing. A multipart
    Content-Type without a boundary was a 500; urlencoded bodies were parsed and their keys echoed."""
    evt = binary(event("create_link", tenant="tnt_a"), b"partnerId=9001&title=x", content_type)
    status, body, _ = invoke("share_links", evt)
    assert (status, body["error"]["code"]) == (415, "unsupported_media_type")
    assert links_total() == 0


@pytest.mark.parametrize(("name", "fn"), [("create_link", "share_links"), ("update_credential", "credentials")])
def test_a_body_that_is_not_utf8_is_malformed_json(aws_env: Any, name: str, fn: str) -> None:
    """M4 (found by the fuzzer), M3: a JSON body that is not UTF-8 is a 400 malformed_json, not a 500."""
    evt = binary(event(name, tenant="tnt_a"), NOT_UTF8, "application/json")
    status, body, _ = invoke(fn, evt)
    assert (status, body["error"]["code"]) == (400, "malformed_json")


@pytest.mark.parametrize(
    "form", [NOT_UTF8, "&".join(f"f{i}=1" for i in range(51)).encode()], ids=["not-utf8", "51-fields"]
)
@pytest.mark.parametrize("fn", ["connect_page", "oauth_callback"])
def test_a_form_the_page_cannot_read_is_the_410_page(aws_env: Any, form: bytes, fn: str) -> None:
    """M4 (found by the fuzzer): a form the public pages cannot read (not UTF-8, too many fields) gets the uniform
    410 page, not a 500."""
    evt = binary(event("connect_post"), form, "application/x-www-form-urlencoded")
    if fn == "oauth_callback":
        evt["routeKey"] = "POST /connect/oauth/start"
        evt["rawPath"] = evt["requestContext"]["http"]["path"] = "/connect/oauth/start"
    answer = call(fn, evt)
    assert answer["statusCode"] == 410
    assert answer["headers"]["Content-Type"].startswith("text/html")


def test_validation_details_are_part_of_the_documented_error_envelope(aws_env: Any) -> None:
    """M4 (found by the fuzzer), M3: a 400's `details` are part of the documented error envelope."""
    status, body, _ = invoke("share_links", event("create_link", tenant="tnt_a", body={"partnerId": "x"}))
    assert status == 400 and body["error"]["details"]
    ErrorEnvelope.model_validate(body)  # extra="forbid": `details` used to be undocumented


@pytest.mark.parametrize(
    ("name", "fn", "path_id"),
    [
        ("get_link", "share_links", "x" * 65),
        ("get_credential", "credentials", "x" * 65),
        ("get_partner", "partners", "1" * 21),
    ],
    ids=["link", "credential", "partner"],
)
def test_an_over_long_id_is_a_documented_400(aws_env: Any, name: str, fn: str, path_id: str) -> None:
    """M4 (found by the fuzzer), M3: an over-long path id is a 400 that openapi.json documents."""
    status, body, _ = invoke(fn, event(name, tenant="tnt_a", path_id=path_id))
    assert (status, body["error"]["code"]) == (400, "validation_error")
    method, path = event(name)["routeKey"].split(" ", 1)
    assert "400" in json.loads(openapi.OUTPUT.read_text())["paths"][path][method.lower()]["responses"]


@pytest.mark.parametrize("redirect", ["https://app.example:x", "https://app.example:99999", "https://[app"])
def test_a_redirect_url_urllib_cannot_parse_is_a_400_and_changes_nothing(aws_env: Any, redirect: str) -> None:
    """M4 (found by the fuzzer), M3: a redirect URL whose port urllib cannot read is a 400 and writes nothing.
    The origin check read `.port` of the URL: a port that is not a number was a ValueError, a 500."""
    status, body, _ = create_link({"partnerId": 9001, "title": "x", "redirectUrl": redirect})
    assert (status, body["error"]["code"]) == (400, "validation_error")
    assert body["error"]["details"][0]["field"] == "redirectUrl"
    assert redirect not in body["error"]["message"]
    assert links_total() == 0
