"""The fresh-token use case (grantlink.connections.current_token, issue 11), in process against the fake OAuth
partner. The route (GET /credentials/{id}/token) is tested over HTTP elsewhere."""

from __future__ import annotations

from typing import Any

import pytest

from grantlink import connections, errors
from grantlink.models import Caller
from grantlink.store import default as default_store
from tests.helpers import connected as connected_apikey
from tests.unit.oauth_fakes import A, FakeAuthorizationServer, connected_credential, expire_access_token


def actions(credential_id: str) -> list[str]:
    items, _ = default_store().list_audit(credential_id, 50, None)
    return [item["action"] for item in items]


def test_a_fresh_token_is_returned_without_a_token_call(provider_server: FakeAuthorizationServer) -> None:
    """Given an OAuth credential whose token is not due, when its token is read, then the stored token and its
    expiry come back, no token call is made, and the read is audited as token_read."""
    credential_id = connected_credential(provider_server)
    calls = len(provider_server.calls)
    token = connections.current_token(A, credential_id)
    assert (token.credentialId, token.accessToken.get_secret_value(), token.tokenType) == (
        credential_id, "access-1", "Bearer",
    )  # fmt: skip
    assert token.expiresAt and len(provider_server.calls) == calls
    assert actions(credential_id).count("token_read") == 1


def test_a_due_token_is_refreshed_first(provider_server: FakeAuthorizationServer) -> None:
    """Given an OAuth credential whose token is due, when its token is read, then it is refreshed first (one
    token call) and the new token comes back."""
    credential_id = connected_credential(provider_server)
    expire_access_token(credential_id)
    calls = len(provider_server.calls)
    assert connections.current_token(A, credential_id).accessToken.get_secret_value() == "access-2"
    assert len(provider_server.calls) == calls + 1


def test_force_refreshes_now(provider_server: FakeAuthorizationServer) -> None:
    """Given a fresh OAuth token, when read with force, then it is refreshed anyway and the audit says forced."""
    credential_id = connected_credential(provider_server)
    assert connections.current_token(A, credential_id, force=True).accessToken.get_secret_value() == "access-2"
    items, _ = default_store().list_audit(credential_id, 50, None)
    (read,) = [item for item in items if item["action"] == "token_read"]
    assert read["details"] == {"forced": True}


def test_the_token_is_masked_until_serialised_as_json(provider_server: FakeAuthorizationServer) -> None:
    """Given a TokenOut, when printed or dumped in Python, then the token is masked; as JSON it is revealed."""
    token = connections.current_token(A, connected_credential(provider_server))
    assert "access-1" not in repr(token) and "access-1" not in str(token.model_dump())
    assert token.model_dump(mode="json")["accessToken"] == "access-1"


def test_a_non_oauth_credential_has_no_token(aws_env: Any) -> None:
    """Given an API-key credential, when its token is read, then 409 not_an_oauth_credential."""
    credential_id = connected_apikey()
    with pytest.raises(errors.Conflict) as raised:
        connections.current_token(Caller("tnt_a"), credential_id)
    assert raised.value.code == "not_an_oauth_credential"
    assert "token_read" not in actions(credential_id)


def test_another_tenants_credential_is_not_found(provider_server: FakeAuthorizationServer) -> None:
    """Given tenant A's OAuth credential, when tenant B reads its token, then 404 credential_not_found."""
    credential_id = connected_credential(provider_server)
    with pytest.raises(errors.NotFound) as raised:
        connections.current_token(Caller("tnt_b"), credential_id)
    assert raised.value.code == "credential_not_found"
