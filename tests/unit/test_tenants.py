"""Tenants, API keys and the authorizer."""

from __future__ import annotations

import json
import re
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
    key_id = answer["context"]["keyId"]
    assert answer == {
        "isAuthorized": True,
        "context": {"tenantId": tenant_id, "scopes": "credentials:read links:write", "keyId": key_id},
    }
    assert re.fullmatch(r"key_[0-9a-f]{12}", key_id) and key_id not in (key, tenants.hash_key(key))


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


# --- the audit trail names the API key that acted, never the key -------------------------------------------------


def as_key(key: str, name: str, credential_id: str, **changes: Any) -> dict[str, Any]:
    """tests/events/<name>.json for `credential_id`, with the authorizer's real answer for `key` as its context."""
    from tests.helpers import event

    evt = event(name, path_id=credential_id, **changes)
    evt["headers"]["authorization"] = f"Bearer {key}"
    evt["requestContext"]["authorizer"] = {"lambda": authorize(f"Bearer {key}")["context"]}
    return evt


def test_audit_entries_name_the_key_that_acted(aws_env: Any, table_items: Any) -> None:
    """Given a tenant with two API keys and a credential,
    when one key renames the credential and the other reads its secret,
    then the audit trail names each key by its own key id, and neither key nor its hash appears in the trail,
    the authorizer's answer or the table."""
    from tests.helpers import connected, invoke

    tenant_id, first = tenants.create_tenant("acme")
    second_id, second = tenants.add_key(tenant_id)
    first_id = authorize(f"Bearer {first}")["context"]["keyId"]
    credential_id = connected(tenant=tenant_id)
    renamed, _, _ = invoke("credentials", as_key(first, "update_credential", credential_id, body={"title": "CRM"}))
    read, _, _ = invoke("credentials", as_key(second, "read_secret", credential_id))
    status, trail, _ = invoke("credentials", as_key(first, "list_audit", credential_id))
    assert (renamed, read, status) == (200, 200, 200)
    actors = {entry["action"]: entry["actor"] for entry in trail["data"]}
    assert actors == {"created": "customer", "updated": f"apikey:{first_id}", "secret_read": f"apikey:{second_id}"}
    assert first_id != second_id
    answers = json.dumps([trail, authorize(f"Bearer {first}"), authorize(f"Bearer {second}")])
    stored = json.dumps(table_items(), default=str)
    for key in (first, second):
        assert key not in answers and key not in stored
        assert tenants.hash_key(key)[:12] not in answers  # new keys are named by a random id, not by their hash


def test_a_key_made_before_key_ids_is_named_by_a_prefix_of_its_hash(aws_env: Any) -> None:
    """Given an API key stored without a key id (made by an older version), when it authenticates, then its key id is
    `key_` + the first 12 hex digits of its SHA-256: stable, and no help in finding the key."""
    from grantlink.store import default as default_store

    key = tenants.KEY_PREFIX + "A" * 43
    default_store().put_tenant_with_key(
        {"tenantId": "tnt_old", "name": "old"},
        tenants.hash_key(key),
        {"tenantId": "tnt_old", "scopes": ["links:write"]},
    )
    assert authorize(f"Bearer {key}")["context"]["keyId"] == "key_" + tenants.hash_key(key)[:12]


OLDER_SCOPES = ["links:write", "credentials:read", "credentials:write", "credentials:secret"]


@pytest.mark.parametrize(
    ("stored", "proxy"),
    [(OLDER_SCOPES, True), (OLDER_SCOPES[:3], False), (["credentials:read", "credentials:secret"], False)],
)
def test_a_full_access_key_made_before_the_proxy_scope_gets_it(aws_env: Any, stored: list[str], proxy: bool) -> None:
    """Given an API key stored before `credentials:proxy` existed, when it authenticates, then it carries that scope
    exactly when it holds all four older scopes (it was a full-access key); a restricted key stays restricted."""
    from grantlink.store import default as default_store

    key = tenants.KEY_PREFIX + "B" * 43
    default_store().put_tenant_with_key(
        {"tenantId": "tnt_old", "name": "old"}, tenants.hash_key(key), {"tenantId": "tnt_old", "scopes": stored}
    )
    scopes = authorize(f"Bearer {key}")["context"]["scopes"].split()
    assert set(scopes) == set(stored) | ({"credentials:proxy"} if proxy else set())


def test_a_new_tenant_gets_every_scope_the_proxy_included(aws_env: Any) -> None:
    """Given a tenant made with the default scopes, then its key may use the proxy."""
    _, key = tenants.create_tenant("acme")
    assert "credentials:proxy" in authorize(f"Bearer {key}")["context"]["scopes"].split()


def test_a_key_is_only_added_to_a_tenant_that_exists(aws_env: Any, table_items: Any) -> None:
    """Given no tenant tnt_nobody, when a key is added to it, then a 404 and nothing is written."""
    before = table_items()
    with pytest.raises(errors.NotFound):
        tenants.add_key("tnt_nobody")
    assert table_items() == before
