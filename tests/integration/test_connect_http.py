"""The connect page and the credentials API over real HTTP against the local stack."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from tests.stack import http, new_tenant, url

pytestmark = pytest.mark.integration
LINKS = "/credentials/grant-access-sharing"
SECRET = "demo-secret-key-123456"


def auth(stack: dict[str, Any], key: str | None = None) -> dict[str, str]:
    return {"Authorization": f"Bearer {key or stack['apiKey']}"}


def new_link(stack: dict[str, Any], partner: int = 9001, key: str | None = None) -> dict[str, Any]:
    answer = http.post(url(stack, LINKS), json={"partnerId": partner, "title": "HTTP test"}, headers=auth(stack, key))
    assert answer.status_code == 201
    return answer.json()["data"]


def submit(stack: dict[str, Any], link: dict[str, Any], **fields: str) -> Any:
    form = {"id": link["id"], "token": link["token"], **{f"f_{k}": v for k, v in fields.items()}}
    return http.post(url(stack, "/connect"), data=form, allow_redirects=False)


def test_d1_concurrent_submits_of_one_link_make_exactly_one_credential(stack: dict[str, Any]) -> None:
    """D1: 25 browsers submit the same link at once: one success, 24 uniform 410s, one credential."""
    key = new_tenant(stack, "racer")
    link = new_link(stack, key=key)
    with ThreadPoolExecutor(max_workers=25) as pool:
        answers = list(pool.map(lambda i: submit(stack, link, apiKey=f"{SECRET}-{i}"), range(25)))
    codes = sorted(a.status_code for a in answers)
    assert codes == [200] + [410] * 24
    listed = http.get(url(stack, "/credentials"), headers=auth(stack, key)).json()
    assert listed["meta"]["totalItemsCount"] == 1 and len(listed["data"]) == 1
    assert (
        http.get(url(stack, f"{LINKS}/{link['id']}"), headers=auth(stack, key)).json()["data"]["credentialId"]
        == (listed["data"][0]["id"])
    )


def test_t4_five_gets_then_the_post_works_once(stack: dict[str, Any]) -> None:
    link = new_link(stack)
    for _ in range(5):
        assert http.get(link["link"]).status_code == 200
    assert submit(stack, link, apiKey=SECRET).status_code == 200
    assert submit(stack, link, apiKey=SECRET).status_code == 410


def test_t3_unknown_used_and_revoked_links_look_the_same(stack: dict[str, Any]) -> None:
    used = new_link(stack)
    submit(stack, used, apiKey=SECRET)
    revoked = new_link(stack)
    http.delete(url(stack, f"{LINKS}/{revoked['id']}"), headers=auth(stack))
    pages = [
        http.get(used["link"]),
        http.get(revoked["link"]),
        http.get(url(stack, "/connect?id=lnk_00000000000000000000&token=nope")),
        http.get(url(stack, "/connect")),
    ]
    assert {p.status_code for p in pages} == {410}
    assert len({p.text for p in pages}) == 1
    assert len({tuple(sorted((k, v) for k, v in p.headers.items() if k.lower() not in ("date",))) for p in pages}) == 1


def test_o10_pages_send_strict_headers(stack: dict[str, Any]) -> None:
    page = http.get(new_link(stack)["link"])
    headers = page.headers
    assert headers["referrer-policy"] == "no-referrer"
    assert headers["cache-control"] == "no-store"
    assert headers["x-frame-options"] == "DENY"
    policy = headers["content-security-policy"]
    assert "default-src 'none'" in policy and "frame-ancestors 'none'" in policy and "unsafe-inline" not in policy
    assert "http" not in page.text.split("<body", 1)[1].replace(stack["apiUrl"], "")


def test_the_credential_lifecycle_over_http(stack: dict[str, Any]) -> None:
    """Connect, then list, rename, disable, read the secret of, reauthorize and delete the credential."""
    key = new_tenant(stack, "lifecycle")
    link = new_link(stack, key=key)
    assert submit(stack, link, apiKey=SECRET).status_code == 200
    credential_id = http.get(url(stack, f"{LINKS}/{link['id']}"), headers=auth(stack, key)).json()["data"][
        "credentialId"
    ]
    one = url(stack, f"/credentials/{credential_id}")
    assert http.patch(one, json={"title": "Renamed"}, headers=auth(stack, key)).json()["data"]["title"] == "Renamed"
    assert http.patch(one, json={"enabled": False}, headers=auth(stack, key)).json()["data"]["state"] == "disabled"
    assert http.patch(one, json={"enabled": True}, headers=auth(stack, key)).json()["data"]["state"] == "active"
    secret = http.get(f"{one}/secret", headers=auth(stack, key)).json()["data"]["fields"]
    assert secret == {"apiKey": SECRET}
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
