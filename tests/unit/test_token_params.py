"""Catalogue v2's per-provider token quirks: `oauth.extraTokenParams` go with the code exchange and
`oauth.extraRefreshParams` with every refresh, beside (never instead of) the grant's own parameters."""

from __future__ import annotations

import pytest

from grantlink import oauth, providers
from grantlink.store import default as default_store
from tests.unit.oauth_fakes import PARTNER_ID, FakeAuthorizationServer, connected_credential, expire_access_token


@pytest.fixture
def quirky(provider_server: FakeAuthorizationServer, monkeypatch: pytest.MonkeyPatch) -> FakeAuthorizationServer:
    """The fake partner, declaring an audience for the code exchange and a resource for refreshes."""
    partner = providers.get(PARTNER_ID)
    assert partner.oauth is not None
    quirks = {"extra_token_params": {"audience": "api.example"}, "extra_refresh_params": {"resource": "crm"}}
    changed = partner.model_copy(update={"oauth": partner.oauth.model_copy(update=quirks)})
    real = providers.find
    monkeypatch.setattr(providers, "find", lambda pid: changed if pid == PARTNER_ID else real(pid))
    monkeypatch.setattr(providers, "get", lambda pid: changed if pid == PARTNER_ID else real(pid))
    return provider_server


def test_the_code_exchange_carries_the_extra_token_parameters(quirky: FakeAuthorizationServer) -> None:
    """Given a partner with extraTokenParams, when a customer connects, then the token request holds them and the
    grant's own parameters, and no refresh parameter."""
    connected_credential(quirky)

    exchange = quirky.calls[0]
    assert exchange["grant_type"] == "authorization_code" and exchange["audience"] == "api.example"
    assert "code_verifier" in exchange and "resource" not in exchange


def test_every_refresh_carries_the_extra_refresh_parameters(quirky: FakeAuthorizationServer) -> None:
    """Given a connected credential of that partner, when its token is refreshed, then the refresh request holds
    extraRefreshParams beside the refresh token, and not the code exchange's parameters."""
    credential_id = connected_credential(quirky)
    expire_access_token(credential_id)
    credential = default_store().get_credential(credential_id)
    assert credential is not None

    oauth.fresh_values(credential)

    refresh = quirky.calls[-1]
    assert refresh["grant_type"] == "refresh_token" and refresh["resource"] == "crm"
    assert refresh["refresh_token"] == "refresh-1-1" and "audience" not in refresh
