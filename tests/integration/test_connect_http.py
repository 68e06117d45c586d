"""The connect page and the credentials API over real HTTP against the local stack. The rows of SECURITY.md
proved over HTTP (D1, T3, T4, O10) are in tests/security."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest

from tests.stack import FORM_SECRET, LINKS, ROOT, auth, http, new_link, new_tenant, new_tenant_and_id, submit, url

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


def test_ten_failed_tests_lock_a_link_until_it_is_regenerated(stack: dict[str, Any]) -> None:
    """Given a link, when ten submits carry a key the partner refuses, then nine re-show the form (400) and the tenth
    answers the locked page (423); an eleventh submit, even with a good key, is refused the same way; the API shows
    the link `locked` with `failedTests: 10`; after a PUT the new token connects."""
    key = new_tenant(stack, "locking")
    link = new_link(stack, key=key)
    statuses = [submit(stack, link, apiKey=f"bad-key-{n}").status_code for n in range(10)]
    assert statuses == [400] * 9 + [423]
    refused = submit(stack, link, apiKey=FORM_SECRET)
    assert refused.status_code == 423 and "This link is locked" in refused.text
    one = url(stack, f"{LINKS}/{link['id']}")
    shown = http.get(one, headers=auth(stack, key)).json()["data"]
    assert (shown["status"], shown["failedTests"], shown["locked"]) == (0, 10, True)
    regenerated = http.put(one, headers=auth(stack, key)).json()["data"]
    assert (regenerated["failedTests"], regenerated["locked"]) == (0, False)
    assert submit(stack, regenerated, apiKey=FORM_SECRET).status_code == 200


def test_the_audit_trail_names_each_api_key_of_a_tenant(stack: dict[str, Any]) -> None:
    """Given a tenant with a second key added the way `make key TENANT=…` does, when one key renames a credential
    and the other reads its secret, then the audit trail names two different key ids and neither key."""
    tenant_id, first = new_tenant_and_id(stack, "two keys")
    added = subprocess.run(
        [sys.executable, "-m", "infra.scripts.tenant", "--tenant-id", tenant_id, "--add-key",
         "--state-file", stack["stateFile"]],
        cwd=ROOT, capture_output=True, text=True, check=True,
    )  # fmt: skip
    said = dict(line.split(":", 1) for line in added.stdout.splitlines() if ":" in line)
    second_id, second = said["Key id"].strip(), said["API key"].strip()
    link = new_link(stack, key=first)
    assert submit(stack, link, apiKey=FORM_SECRET).status_code == 200
    credential_id = http.get(url(stack, f"{LINKS}/{link['id']}"), headers=auth(stack, first)).json()["data"][
        "credentialId"
    ]
    one = url(stack, f"/credentials/{credential_id}")
    assert http.patch(one, json={"title": "Renamed"}, headers=auth(stack, first)).status_code == 200
    assert http.get(f"{one}/secret", headers=auth(stack, second)).status_code == 200
    trail = http.get(f"{one}/audit", headers=auth(stack, second))
    actors = {e["action"]: e["actor"] for e in trail.json()["data"]}
    assert actors["secret_read"] == f"apikey:{second_id}"
    assert actors["updated"].startswith("apikey:key_") and actors["updated"] != actors["secret_read"]
    assert first not in trail.text and second not in trail.text
