"""What the schemathesis fuzzer (tests/fuzz, SECURITY.md M4) found, kept as fast handler-level tests."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from grantlink.models import ErrorEnvelope
from infra import openapi
from tests.helpers import call, event, invoke

NOT_UTF8 = b'{"title": "\xff\xfe"}'


def binary(evt: dict[str, Any], body: bytes, content_type: str) -> dict[str, Any]:
    """As API Gateway delivers a body that is not text: base64."""
    evt.update(body=base64.b64encode(body).decode(), isBase64Encoded=True)
    evt["headers"]["content-type"] = content_type
    return evt


def links_total() -> int:
    _, listed, _ = invoke("share_links", event("list_links", tenant="tnt_a"))
    return int(listed["meta"]["totalItemsCount"])


@pytest.mark.parametrize(
    "content_type", ["multipart/form-data", "multipart/form-data; boundary=x", "application/x-www-form-urlencoded"]
)
def test_a_form_body_on_a_json_route_is_a_415_and_changes_nothing(aws_env: Any, content_type: str) -> None:
    """A multipart Content-Type without a boundary was a 500; urlencoded bodies were parsed and their keys echoed."""
    evt = binary(event("create_link", tenant="tnt_a"), b"partnerId=9001&title=x", content_type)
    status, body, _ = invoke("share_links", evt)
    assert (status, body["error"]["code"]) == (415, "unsupported_media_type")
    assert links_total() == 0


@pytest.mark.parametrize(("name", "fn"), [("create_link", "share_links"), ("update_credential", "credentials")])
def test_a_body_that_is_not_utf8_is_malformed_json(aws_env: Any, name: str, fn: str) -> None:
    evt = binary(event(name, tenant="tnt_a"), NOT_UTF8, "application/json")
    status, body, _ = invoke(fn, evt)
    assert (status, body["error"]["code"]) == (400, "malformed_json")


@pytest.mark.parametrize(
    "form", [NOT_UTF8, "&".join(f"f{i}=1" for i in range(51)).encode()], ids=["not-utf8", "51-fields"]
)
@pytest.mark.parametrize("fn", ["connect_page", "oauth_callback"])
def test_a_form_the_page_cannot_read_is_the_410_page(aws_env: Any, form: bytes, fn: str) -> None:
    evt = binary(event("connect_post"), form, "application/x-www-form-urlencoded")
    if fn == "oauth_callback":
        evt["routeKey"] = "POST /connect/oauth/start"
        evt["rawPath"] = evt["requestContext"]["http"]["path"] = "/connect/oauth/start"
    answer = call(fn, evt)
    assert answer["statusCode"] == 410
    assert answer["headers"]["Content-Type"].startswith("text/html")


def test_validation_details_are_part_of_the_documented_error_envelope(aws_env: Any) -> None:
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
    status, body, _ = invoke(fn, event(name, tenant="tnt_a", path_id=path_id))
    assert (status, body["error"]["code"]) == (400, "validation_error")
    method, path = event(name)["routeKey"].split(" ", 1)
    assert "400" in json.loads(openapi.OUTPUT.read_text())["paths"][path][method.lower()]["responses"]


@pytest.mark.parametrize("redirect", ["https://app.example:x", "https://app.example:99999", "https://[app"])
def test_a_redirect_url_urllib_cannot_parse_is_a_400_and_changes_nothing(aws_env: Any, redirect: str) -> None:
    """The origin check read `.port` of the URL: a port that is not a number was a ValueError, a 500."""
    status, body, _ = create_link({"partnerId": 9001, "title": "x", "redirectUrl": redirect})
    assert (status, body["error"]["code"]) == (400, "validation_error")
    assert body["error"]["details"][0]["field"] == "redirectUrl"
    assert redirect not in body["error"]["message"]
    assert links_total() == 0


def create_link(body: dict[str, Any]) -> tuple[int, dict[str, Any], dict[str, str]]:
    return invoke("share_links", event("create_link", tenant="tnt_a", body=body))
