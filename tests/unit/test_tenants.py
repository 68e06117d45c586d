"""Tenants, API keys and the authorizer."""

from __future__ import annotations

import json
from typing import Any

import pytest

from grantlink import errors, tenants
from infra.local.gateway import LambdaContext
from tests.helpers import event, function


def authorize(authorization: str | None) -> dict[str, Any]:
    evt = event("authorizer")
    if authorization is None:
        evt["headers"].pop("authorization")
    else:
        evt["headers"]["authorization"] = authorization
    return function("authorizer").lambda_handler(evt, LambdaContext("authorizer", 5))


def test_a_key_is_glk_plus_32_random_bytes_and_only_its_hash_is_stored(aws_env: Any, table_items: Any) -> None:
    tenant_id, key = tenants.create_tenant("acme")
    assert key.startswith("glk_") and len(key) == 4 + 43
    dump = json.dumps(table_items())
    assert key not in dump and tenants.hash_key(key) in dump and tenant_id in dump


def test_the_authorizer_passes_tenant_and_scopes_for_a_known_key(aws_env: Any) -> None:
    tenant_id, key = tenants.create_tenant("acme", ("links:write", "credentials:read"))
    answer = authorize(f"Bearer {key}")
    assert answer == {
        "isAuthorized": True,
        "context": {"tenantId": tenant_id, "scopes": "credentials:read links:write"},
    }


@pytest.mark.parametrize(
    "header",
    [None, "", "Bearer", "Bearer glk_unknown", "Basic dXNlcjpwYXNz", "Bearer glk_" + "A" * 43, "glk_" + "A" * 43],
)
def test_unknown_or_malformed_keys_carry_no_tenant(aws_env: Any, header: str | None) -> None:
    """The function then answers 401 in the envelope (see test_share_links_api)."""
    assert authorize(header)["context"]["tenantId"] == ""


def test_the_bearer_scheme_is_case_insensitive(aws_env: Any) -> None:
    tenant_id, key = tenants.create_tenant("acme")
    assert authorize(f"bearer {key}")["context"]["tenantId"] == tenant_id


def test_scopes_are_parsed_strictly() -> None:
    assert tenants.parse_scopes("") == tenants.SCOPES
    assert tenants.parse_scopes("links:write, credentials:read") == ("links:write", "credentials:read")
    with pytest.raises(errors.BadRequest):
        tenants.parse_scopes("links:write,admin:everything")


@pytest.mark.parametrize("name", ["", " lead", "x" * 65, "bad\nname", "<script>"])
def test_tenant_names_are_checked(aws_env: Any, name: str) -> None:
    with pytest.raises(errors.BadRequest):
        tenants.create_tenant(name)


@pytest.mark.parametrize("origin", ["https://app.example.com:99999", "https://app.example.com:port", "ftp://x.example"])
def test_bad_redirect_origins_are_a_clean_400(origin: str) -> None:
    """`make redirects` with a broken origin says so instead of crashing."""
    with pytest.raises(errors.BadRequest):
        tenants.normalize_origin(origin)
