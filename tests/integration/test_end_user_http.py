"""End-user identity over real HTTP against the local stack: `endUser` and `tags` on a link reach the credential
through the connect page, and `GET /credentials` filters on them, for the caller's tenant only."""

from __future__ import annotations

from typing import Any

import pytest

from tests.stack import FORM_SECRET, LINKS, auth, http, new_tenant, submit, url

pytestmark = pytest.mark.integration

ADA = {"id": "user-42", "email": "ada@example.com", "displayName": "Ada"}


def _connect(stack: dict[str, Any], key: str, **identity: Any) -> str:
    """A link with `identity` (endUser, tags), completed on the connect page; returns the credential id."""
    answer = http.post(
        url(stack, LINKS), json={"partnerId": 9001, "title": "HTTP", **identity}, headers=auth(stack, key)
    )
    assert answer.status_code == 201
    link = answer.json()["data"]
    assert submit(stack, link, apiKey=FORM_SECRET).status_code == 200
    shown = http.get(url(stack, f"{LINKS}/{link['id']}"), headers=auth(stack, key)).json()["data"]
    assert (shown["endUser"], shown["tags"]) == (identity.get("endUser"), identity.get("tags", {}))
    return str(shown["credentialId"])


def _ids(stack: dict[str, Any], key: str, **query: str) -> tuple[list[str], dict[str, Any]]:
    answer = http.get(url(stack, "/credentials"), params=query, headers=auth(stack, key))
    assert answer.status_code == 200
    body = answer.json()
    return [c["id"] for c in body["data"]], body["meta"]


def test_identity_reaches_the_credential_and_the_filters_find_it(stack: dict[str, Any]) -> None:
    """Given tenant A's credentials for end user user-42 (one tagged env=prod) and one for nobody, and tenant B's
    credential for its own user-42, when A lists by endUserId and by tag, then exactly A's matching credentials come
    back with their endUser and tags, with the end user's total; B's never appear."""
    key, other = new_tenant(stack, "end users A"), new_tenant(stack, "end users B")
    tagged = _connect(stack, key, endUser=ADA, tags={"env": "prod"})
    plain = _connect(stack, key, endUser=ADA)
    _connect(stack, key)
    _connect(stack, other, endUser=ADA, tags={"env": "prod"})
    ids, meta = _ids(stack, key, endUserId="user-42")
    assert sorted(ids) == sorted([tagged, plain]) and meta["totalItemsCount"] == 2
    ids, meta = _ids(stack, key, tag="env:prod")
    assert ids == [tagged] and meta["totalItemsCount"] is None
    one = http.get(url(stack, f"/credentials/{tagged}"), headers=auth(stack, key)).json()["data"]
    assert (one["endUser"], one["tags"]) == (ADA, {"env": "prod"})
    assert _ids(stack, other, endUserId="user-42")[0] != [] and tagged not in _ids(stack, other, tag="env:prod")[0]


def test_eleven_tags_are_refused_and_nothing_is_created(stack: dict[str, Any]) -> None:
    key = new_tenant(stack, "end users C")
    body = {"partnerId": 9001, "title": "HTTP", "tags": {f"k{n}": "v" for n in range(11)}}
    answer = http.post(url(stack, LINKS), json=body, headers=auth(stack, key))
    assert answer.status_code == 400 and answer.json()["error"]["code"] == "validation_error"
    listed = http.get(url(stack, LINKS), headers=auth(stack, key)).json()
    assert listed["data"] == [] and listed["meta"]["totalItemsCount"] == 0
