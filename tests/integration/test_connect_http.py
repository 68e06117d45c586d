"""The connect page and the credentials API over real HTTP against the local stack. The rows of SECURITY.md
proved over HTTP (D1, T3, T4, O10) are in tests/security."""

from __future__ import annotations

from typing import Any

import pytest

from tests.stack import FORM_SECRET, LINKS, auth, http, new_link, new_tenant, submit, url

pytestmark = pytest.mark.integration


def test_the_credential_lifecycle_over_http(stack: dict[str, Any]) -> None:
    """Connect, then list, rename, disable, read the secret of, reauthorize and delete the credential."""
    key = new_tenant(stack, "lifecycle")
    link = new_link(stack, key=key)
    assert submit(stack, link, apiKey=FORM_SECRET).status_code == 200
    credential_id = http.get(url(stack, f"{LINKS}/{link['id']}"), headers=auth(stack, key)).json()["data"][
        "credentialId"
    ]
    one = url(stack, f"/credentials/{credential_id}")
    assert http.patch(one, json={"title": "Renamed"}, headers=auth(stack, key)).json()["data"]["title"] == "Renamed"
    assert http.patch(one, json={"enabled": False}, headers=auth(stack, key)).json()["data"]["state"] == "disabled"
    assert http.patch(one, json={"enabled": True}, headers=auth(stack, key)).json()["data"]["state"] == "active"
    secret = http.get(f"{one}/secret", headers=auth(stack, key)).json()["data"]["fields"]
    assert secret == {"apiKey": FORM_SECRET}
    again = http.post(f"{one}/reauthorize", json={}, headers=auth(stack, key)).json()["data"]
    assert submit(stack, again, apiKey="a-brand-new-key-000").status_code == 200
    assert http.get(f"{one}/secret", headers=auth(stack, key)).json()["data"]["fields"] == {
        "apiKey": "a-brand-new-key-000"
    }
    actions = [e["action"] for e in http.get(f"{one}/audit", headers=auth(stack, key)).json()["data"]]
    assert actions[:2] == ["secret_read", "reauthorized"] and actions[-1] == "created"
    assert http.delete(one, headers=auth(stack, key)).status_code == 200
    assert http.get(one, headers=auth(stack, key)).status_code == 404


def test_demo_apikey_refuses_keys_starting_with_bad(stack: dict[str, Any]) -> None:
    """The local stack's demo provider: any key works except one starting with `bad`."""
    good = http.get(url(stack, "/_demo/apikey/me"), headers={"X-Api-Key": "good-key-1234"})
    assert good.status_code == 200 and good.json()["account"]["name"].endswith("1234")
    assert http.get(url(stack, "/_demo/apikey/me"), headers={"X-Api-Key": "bad-key"}).status_code == 401
