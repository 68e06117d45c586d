"""End-user identity on links and credentials (issue 13): `endUser` and `tags` are validated, copied from the link
to the credential on every auth path, shown in the API and in events, and `GET /credentials` filters on them
through their own indexes (never a Scan). Also the events that spare the tenant polling: share.waiting_for_oauth,
share.revoked, credential.recovered and credential.disabled."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qs, urlsplit

import boto3
import pytest

from grantlink import connect, connections, links, oauth, renewal
from grantlink.models import Caller, CreateLinkRequest, PatchCredentialRequest, ReauthorizeRequest
from grantlink.store import Store
from grantlink.store import default as default_store
from tests.helpers import SECRET, FrozenClock, create_link, creds
from tests.unit.oauth_fakes import PARTNER_ID, REDIRECT, FakeAuthorizationServer, expire_access_token, finish

A = Caller("tnt_a", frozenset({"links:write", "credentials:read", "credentials:write", "credentials:secret"}))
B = Caller("tnt_b", frozenset({"links:write", "credentials:read", "credentials:write"}))
ADA = {"id": "user-42", "email": "ada@example.com", "displayName": "Ada Lovelace"}
TAGS = {"env": "prod", "team": "growth"}


def link_for(caller: Caller = A, partner: int = 9001, **fields: Any) -> tuple[links.ShareLink, str]:
    return links.create_link(caller, CreateLinkRequest(**{"partnerId": partner, "title": "ACME CRM", **fields}))


def connect_for(caller: Caller = A, partner: int = 9001, **fields: Any) -> str:
    """A credential made through a link carrying `fields` (endUser, tags); returns its id."""
    link, token = link_for(caller, partner, **fields)
    values = {"apiKey": SECRET} if partner == 9001 else {"username": "ada", "password": SECRET}
    return connect.submit(link.id, token, values).credential.id


def listed(caller: Caller = A, **filters: Any) -> list[str]:
    page, _ = connections.list_credentials(caller, None, None, 100, None, **filters)
    return [c.id for c in page]


def details(delivered_events: Any, kind: str) -> list[dict[str, Any]]:
    return [e["detail"] for e in delivered_events() if e["detail-type"] == kind]


# --- validation -------------------------------------------------------------------------------------------------

BAD = {
    "eleven tags": {"tags": {f"k{n}": "v" for n in range(11)}},
    "a 65-character key": {"tags": {"k" * 65: "v"}},
    "a key with a control character": {"tags": {"e\x07nv": "v"}},
    "a key with a colon": {"tags": {"a:b": "v"}},
    "a 257-character value": {"tags": {"env": "v" * 257}},
    "a value with a control character": {"tags": {"env": "pr\nod"}},
    "a value that is not a string": {"tags": {"env": 3}},
    "an end user without an id": {"endUser": {"email": "ada@example.com"}},
    "an empty end user id": {"endUser": {"id": ""}},
    "a 129-character end user id": {"endUser": {"id": "u" * 129}},
    "an end user id with a control character": {"endUser": {"id": "user\x00"}},
    "a bad e-mail": {"endUser": {"id": "u", "email": "not-an-address"}},
    "a 201-character display name": {"endUser": {"id": "u", "displayName": "n" * 201}},
    "an unknown end user field": {"endUser": {"id": "u", "phone": "1"}},
}


@pytest.mark.parametrize("extra", BAD.values(), ids=BAD.keys())
def test_bad_end_users_and_tags_are_a_400_that_writes_nothing(aws_env: Any, table_items: Any, extra: Any) -> None:
    """Given a link body with a bad endUser or tags, when it is POSTed, then the answer is the 400 validation
    envelope naming the field (never echoing the input), and the table is unchanged."""
    status, body, _ = create_link({"partnerId": 9001, "title": "CRM", **extra})
    assert status == 400 and body["success"] is False and body["error"]["code"] == "validation_error"
    assert {d["field"].split(".")[0] for d in body["error"]["details"]} <= {"endUser", "tags"}
    assert "e\x07nv" not in json.dumps(body) and "a:b" not in body["error"]["message"]
    assert table_items() == []


def test_ten_tags_and_a_full_end_user_are_accepted_and_shown(aws_env: Any) -> None:
    """Given ten tags and an end user with every field, the link is created and its answer shows them."""
    tags = {f"k.{n}-_X": "v" * 256 for n in range(10)}
    status, body, _ = create_link({"partnerId": 9001, "title": "CRM", "endUser": ADA, "tags": tags})
    assert status == 201
    assert body["data"]["endUser"] == ADA and body["data"]["tags"] == tags


# --- copied to the credential -----------------------------------------------------------------------------------


@pytest.mark.parametrize("partner", [9001, 9002], ids=["api key", "basic"])
def test_the_form_paths_copy_identity_to_the_credential(aws_env: Any, partner: int) -> None:
    """Given a link with endUser and tags, when the customer submits the form (API key or login), then the
    credential carries them and GET /credentials/{id} and the link's GET show them."""
    link, token = link_for(partner=partner, endUser=ADA, tags=TAGS)
    values = {"apiKey": SECRET} if partner == 9001 else {"username": "ada", "password": SECRET}
    credential_id = connect.submit(link.id, token, values).credential.id
    status, body, _ = creds("get_credential", credential_id)
    assert status == 200 and (body["data"]["endUser"], body["data"]["tags"]) == (ADA, TAGS)
    shown = links.get_link(A, link.id).to_out(None, "https://x").model_dump(mode="json")
    assert (shown["endUser"], shown["tags"]) == (ADA, TAGS)


def test_the_oauth_path_copies_identity_to_the_credential(provider_server: FakeAuthorizationServer) -> None:
    """Given an OAuth link with endUser and tags, when the flow completes, then the credential carries them."""
    link, token = link_for(partner=PARTNER_ID, endUser=ADA, tags=TAGS)
    query = parse_qs(urlsplit(oauth.start(link.id, token, {}, REDIRECT)).query)
    assert finish(query).connected
    credential = connections.get_credential(A, links.get_link(A, link.id).credential_id or "")
    assert (credential.end_user, credential.tags) == (ADA, TAGS)


def test_a_link_without_identity_makes_a_credential_without_it(aws_env: Any) -> None:
    credential = connections.get_credential(A, connect_for())
    out = credential.to_out().model_dump(mode="json")
    assert (out["endUser"], out["tags"]) == (None, {})


def test_reauthorize_keeps_the_identity_unless_it_is_given(aws_env: Any) -> None:
    """Given a credential of ADA tagged TAGS, a reauthorize without endUser/tags keeps them; one that sets them
    replaces them when it completes (tags {} removes every tag), keeping the credential id."""
    credential_id = connect_for(endUser=ADA, tags=TAGS)
    kept, token = connections.reauthorize(A, credential_id, ReauthorizeRequest.model_validate({}))
    assert (kept.end_user, kept.tags) == (ADA, TAGS)
    connect.submit(kept.id, token, {"apiKey": "sk_live_another_value_5678"})
    assert connections.get_credential(A, credential_id).tags == TAGS
    changed, token = connections.reauthorize(
        A, credential_id, ReauthorizeRequest.model_validate({"endUser": {"id": "user-7"}, "tags": {}})
    )
    connect.submit(changed.id, token, {"apiKey": "sk_live_a_third_value_9012"})
    after = connections.get_credential(A, credential_id)
    assert (after.end_user, after.tags) == ({"id": "user-7"}, {})


def test_several_credentials_per_end_user_and_partner_are_allowed(aws_env: Any) -> None:
    first, second = connect_for(endUser=ADA), connect_for(endUser=ADA)
    assert first != second
    assert sorted(listed(end_user_id="user-42")) == sorted([first, second])


# --- filters: exactly the right items, through indexes, never a Scan --------------------------------------------


def _counting_store() -> tuple[Store, list[str]]:
    calls: list[str] = []
    client = boto3.client("dynamodb")
    client.meta.events.register("before-call.dynamodb.*", lambda model, **_: calls.append(model.name))
    return Store(client), calls


def test_the_end_user_filter_lists_exactly_their_credentials_with_a_total(aws_env: Any, clock: FrozenClock) -> None:
    """Given credentials of two end users and one without, when filtered by endUserId, then exactly that user's
    are listed, newest first, counted exactly, with one Query and one counter read: no Scan."""
    ada = [connect_for(endUser=ADA)]
    clock.advance(seconds=1)
    connect_for(endUser={"id": "someone-else"})
    connect_for()
    clock.advance(seconds=1)
    ada.append(connect_for(partner=9002, endUser=ADA))
    store, calls = _counting_store()
    page, meta = connections.list_credentials(A, None, None, 20, None, store, end_user_id="user-42")
    assert [c.id for c in page] == list(reversed(ada))
    assert (meta.totalItemsCount, meta.totalPages) == (2, 1)
    assert sorted(calls) == ["GetItem", "Query"]


def test_the_tag_filter_lists_exactly_the_tagged_credentials(aws_env: Any, clock: FrozenClock) -> None:
    """Given credentials tagged env=prod, env=dev and untagged, when filtered by tag env:prod, then exactly the
    env=prod ones are listed through the tag index (one Query, one BatchGetItem: no Scan) and the total is null."""
    prod = connect_for(tags={"env": "prod"})
    clock.advance(seconds=1)
    connect_for(tags={"env": "dev"})
    connect_for()
    clock.advance(seconds=1)
    prod_too = connect_for(tags={"env": "prod", "team": "x"})
    store, calls = _counting_store()
    page, meta = connections.list_credentials(A, None, None, 20, None, store, tag="env:prod")
    assert [c.id for c in page] == [prod_too, prod]
    assert (meta.totalItemsCount, meta.totalPages) == (None, None)
    assert sorted(calls) == ["BatchGetItem", "Query"]


def test_filters_combine_on_the_most_selective_index(aws_env: Any) -> None:
    """endUserId with tag and partnerId: the end user's index with the rest as a filter — only the one match."""
    match = connect_for(partner=9002, endUser=ADA, tags={"env": "prod"})
    connect_for(partner=9001, endUser=ADA, tags={"env": "prod"})
    connect_for(partner=9002, endUser=ADA, tags={"env": "dev"})
    anonymous = connect_for(partner=9002, tags={"env": "prod"})
    store, calls = _counting_store()
    page, meta = connections.list_credentials(A, 9002, None, 20, None, store, end_user_id="user-42", tag="env:prod")
    assert [c.id for c in page] == [match] and meta.totalItemsCount is None
    assert calls == ["Query"]
    by_tag, _ = connections.list_credentials(A, 9002, None, 20, None, tag="env:prod")
    assert {c.id for c in by_tag} == {match, anonymous}


def test_another_tenants_end_user_and_tags_list_nothing(aws_env: Any) -> None:
    """Given tenant B's credential for end user user-42 tagged env=prod, tenant A's filters return none of it."""
    connect_for(B, endUser=ADA, tags={"env": "prod"})
    assert listed(end_user_id="user-42") == [] and listed(tag="env:prod") == []
    _, meta = connections.list_credentials(A, None, None, 20, None, end_user_id="user-42")
    assert meta.totalItemsCount == 0


def test_tag_pages_follow_the_cursor_and_the_cursor_is_bound_to_the_filter(aws_env: Any, clock: FrozenClock) -> None:
    """Five tagged credentials, two a page: three pages, newest first, no repeats; the cursor of the tag listing is
    refused for another tag."""
    made = []
    for _ in range(5):
        made.append(connect_for(tags={"env": "prod"}))
        clock.advance(seconds=1)
    seen, cursor = [], None
    while True:
        page, meta = connections.list_credentials(A, None, None, 2, cursor, tag="env:prod")
        seen += [c.id for c in page]
        cursor = meta.nextCursor
        if not cursor:
            break
    assert seen == list(reversed(made))
    _, meta = connections.list_credentials(A, None, None, 2, None, tag="env:prod")
    with pytest.raises(connections.errors.BadRequest):
        connections.list_credentials(A, None, None, 2, meta.nextCursor, tag="env:dev")


def test_changed_tags_and_deleted_credentials_leave_the_filters(aws_env: Any) -> None:
    """A reauthorize that changes the tags and end user moves the credential between filters and counters; a
    delete takes it out of them, tag items included."""
    credential_id = connect_for(endUser=ADA, tags={"env": "prod"})
    link, token = connections.reauthorize(
        A, credential_id, ReauthorizeRequest.model_validate({"endUser": {"id": "user-7"}, "tags": {"env": "dev"}})
    )
    connect.submit(link.id, token, {"apiKey": "sk_live_another_value_5678"})
    assert listed(tag="env:prod") == [] and listed(tag="env:dev") == [credential_id]
    assert listed(end_user_id="user-42") == [] and listed(end_user_id="user-7") == [credential_id]
    assert connections.list_credentials(A, None, None, 20, None, end_user_id="user-42")[1].totalItemsCount == 0
    connections.delete_credential(A, credential_id)
    assert listed(tag="env:dev") == [] and listed(end_user_id="user-7") == []
    assert connections.list_credentials(A, None, None, 20, None, end_user_id="user-7")[1].totalItemsCount == 0
    assert default_store().get_item({"pk": f"CRED#{credential_id}", "sk": "CRED"}) is None


@pytest.mark.parametrize("query", [{"tag": "no-colon"}, {"tag": "bad key:v"}, {"endUserId": "a\x01b"}])
def test_a_bad_filter_is_a_400(aws_env: Any, query: dict[str, str]) -> None:
    status, body, _ = creds("list_credentials", query=query)
    assert status == 400 and body["success"] is False


def test_the_api_filters_and_shows_identity(aws_env: Any) -> None:
    """GET /credentials?endUserId=…&tag=… through the handler: the match, with its endUser and tags."""
    match = connect_for(endUser=ADA, tags=TAGS)
    connect_for(endUser=ADA)
    status, body, _ = creds("list_credentials", query={"endUserId": "user-42", "tag": "team:growth"})
    assert status == 200 and [c["id"] for c in body["data"]] == [match]
    assert (body["data"][0]["endUser"], body["data"][0]["tags"]) == (ADA, TAGS)
    assert body["meta"]["totalItemsCount"] is None


# --- events ---------------------------------------------------------------------------------------------------


def test_share_completed_and_credential_deleted_carry_the_identity(aws_env: Any, delivered_events: Any) -> None:
    credential_id = connect_for(endUser=ADA, tags=TAGS)
    connections.delete_credential(A, credential_id)
    for kind in ("share.completed", "credential.deleted"):
        (detail,) = details(delivered_events, kind)
        assert (detail["endUser"], detail["tags"]) == (ADA, TAGS) and detail["credentialId"] == credential_id


def test_starting_oauth_emits_share_waiting_for_oauth(
    provider_server: FakeAuthorizationServer, delivered_events: Any
) -> None:
    """Given an OAuth link, when the customer starts the flow (status 2), then share.waiting_for_oauth is emitted
    once with the link, partner and identity, and no secret (no token, state or verifier)."""
    link, token = link_for(partner=PARTNER_ID, endUser=ADA, tags=TAGS)
    url = oauth.start(link.id, token, {}, REDIRECT)
    (detail,) = details(delivered_events, "share.waiting_for_oauth")
    assert (detail["linkId"], detail["partnerId"], detail["endUser"], detail["tags"]) == (
        link.id, PARTNER_ID, ADA, TAGS,
    )  # fmt: skip
    state = parse_qs(urlsplit(url).query)["state"][0]
    assert token not in json.dumps(detail) and state not in json.dumps(detail)


def test_revoking_a_link_emits_share_revoked_once(aws_env: Any, delivered_events: Any) -> None:
    link, token = link_for(endUser=ADA, tags=TAGS)
    links.revoke_link(A, link.id)
    links.revoke_link(A, link.id)  # repeating it is harmless, and says nothing new
    (detail,) = details(delivered_events, "share.revoked")
    assert (detail["linkId"], detail["endUser"], detail["tags"]) == (link.id, ADA, TAGS)
    assert token not in json.dumps(detail)


def test_disabling_emits_credential_disabled_and_renaming_does_not(aws_env: Any, delivered_events: Any) -> None:
    credential_id = connect_for(endUser=ADA, tags=TAGS)
    connections.update_credential(A, credential_id, PatchCredentialRequest(title="Renamed"))
    assert details(delivered_events, "credential.disabled") == []
    connections.update_credential(A, credential_id, PatchCredentialRequest(enabled=False))
    connections.update_credential(A, credential_id, PatchCredentialRequest(enabled=False))  # already disabled
    (detail,) = details(delivered_events, "credential.disabled")
    assert (detail["credentialId"], detail["previousState"], detail["endUser"]) == (credential_id, "active", ADA)


def _oauth_credential(server: FakeAuthorizationServer) -> str:
    link, token = link_for(partner=PARTNER_ID, endUser=ADA, tags=TAGS)
    assert finish(parse_qs(urlsplit(oauth.start(link.id, token, {}, REDIRECT)).query)).connected
    return links.get_link(A, link.id).credential_id or ""


def test_a_refresh_after_failed_ones_emits_credential_recovered(
    provider_server: FakeAuthorizationServer, delivered_events: Any, clock: FrozenClock
) -> None:
    """Given an OAuth credential whose refresh failed (refreshFailures 1), when the next refresh succeeds, then
    credential.recovered is emitted once, with the failures it recovered from and the identity, and no token."""
    credential_id = _oauth_credential(provider_server)
    expire_access_token(credential_id)
    provider_server.error = "temporarily_unavailable"
    assert renewal.renew_credential(credential_id, default_store()) == "refresh_failed"
    provider_server.error = None
    clock.advance(seconds=61)
    assert renewal.renew_credential(credential_id, default_store()) == "refreshed"
    (detail,) = details(delivered_events, "credential.recovered")
    assert (detail["credentialId"], detail["failures"], detail["endUser"], detail["tags"]) == (
        credential_id, 1, ADA, TAGS,
    )  # fmt: skip
    assert "access-" not in json.dumps(detail) and "refresh-1" not in json.dumps(detail)
    assert default_store().get_credential(credential_id).refresh_failures == 0  # type: ignore[union-attr]


def test_a_refresh_without_failures_before_is_not_a_recovery(
    provider_server: FakeAuthorizationServer, delivered_events: Any
) -> None:
    credential_id = _oauth_credential(provider_server)
    expire_access_token(credential_id)
    assert renewal.renew_credential(credential_id, default_store()) == "refreshed"
    (refreshed,) = details(delivered_events, "credential.refreshed")
    assert (refreshed["endUser"], refreshed["tags"]) == (ADA, TAGS)
    assert details(delivered_events, "credential.recovered") == []


def test_a_refused_grant_tells_the_identity_and_its_reauthorize_link_keeps_it(
    provider_server: FakeAuthorizationServer, delivered_events: Any
) -> None:
    """Given an OAuth credential of ADA, when the partner refuses its refresh token, then
    credential.reauthorization_required carries the identity and the reauthorize link it sends carries it too, so
    completing that link keeps the credential's end user and tags."""
    credential_id = _oauth_credential(provider_server)
    expire_access_token(credential_id)
    provider_server.error = "invalid_grant"
    assert renewal.renew_credential(credential_id, default_store()) == "reauthorization_required"
    (detail,) = details(delivered_events, "credential.reauthorization_required")
    assert (detail["endUser"], detail["tags"]) == (ADA, TAGS)
    relink = links.get_link(A, detail["reauthorizeLinkId"])
    assert (relink.end_user, relink.tags) == (ADA, TAGS)
