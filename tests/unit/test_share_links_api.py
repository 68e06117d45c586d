"""The share_links function end to end through its handler (API Gateway v2 events from tests/events). The rows of
SECURITY.md it also exercises (T6, M3, D4, D5) are proved in tests/security."""

from __future__ import annotations

from typing import Any

import pytest

from tests.helpers import create_link as create
from tests.helpers import event, invoke
from tests.unit.conftest import CONNECT

FN = "share_links"


def test_create_answers_201_in_the_albato_envelope(aws_env: Any) -> None:
    status, body, headers = create()
    assert status == 201 and body["success"] is True
    data = body["data"]
    assert set(data) == {
        "id", "partnerId", "token", "status", "credentialId", "title", "dateCreated", "expiresAt", "expired", "link",
        "failedTests", "locked", "endUser", "tags", "webhookUrl", "environment", "scopes",
    }  # fmt: skip
    assert (data["status"], data["partnerId"], data["credentialId"], data["expired"]) == (0, 9001, None, False)
    assert data["link"] == f"{CONNECT}/connect?id={data['id']}&token={data['token']}"
    assert headers["Cache-Control"] == "no-store"


def test_the_token_is_shown_on_create_and_put_only(aws_env: Any) -> None:
    _, created, _ = create()
    link_id = created["data"]["id"]
    for name in ("get_link", "revoke_link"):
        status, body, _ = invoke(FN, event(name, tenant="tnt_a", path_id=link_id))
        assert status == 200 and body["data"]["token"] is None and body["data"]["link"] is None
    _, listed, _ = invoke(FN, event("list_links", tenant="tnt_a"))
    assert [d["token"] for d in listed["data"]] == [None]


def test_put_regenerates_and_returns_the_new_token(aws_env: Any) -> None:
    _, created, _ = create()
    status, body, _ = invoke(FN, event("regenerate_link", tenant="tnt_a", path_id=created["data"]["id"]))
    assert status == 200
    assert body["data"]["token"] and body["data"]["token"] != created["data"]["token"]
    assert body["data"]["status"] == 0


def test_delete_revokes_with_status_3(aws_env: Any) -> None:
    _, created, _ = create()
    status, body, _ = invoke(FN, event("revoke_link", tenant="tnt_a", path_id=created["data"]["id"]))
    assert (status, body["data"]["status"]) == (200, 3)
    status, body, _ = invoke(FN, event("regenerate_link", tenant="tnt_a", path_id=created["data"]["id"]))
    assert (status, body["error"]["code"]) == (409, "link_revoked")


@pytest.mark.parametrize(
    ("changes", "status", "code"),
    [
        ({"tenant": None}, 401, "unauthorized"),
        ({"tenant": ""}, 401, "unauthorized"),
        ({"tenant": "tnt_a", "scopes": "credentials:read"}, 403, "forbidden"),
    ],
)
def test_authentication_comes_before_validation(aws_env: Any, changes: dict, status: int, code: str) -> None:
    """No key → 401, a key without links:write → 403: even for a body that would also be invalid."""
    got, body, _ = invoke(FN, event("create_link", body="{not json", **changes))
    assert (got, body["success"], body["error"]["code"]) == (status, False, code)


def test_unknown_ids_are_404(aws_env: Any) -> None:
    for link_id in ("lnk_00000000000000000000", "nonsense", "x" * 64):
        status, answer, _ = invoke(FN, event("get_link", tenant="tnt_a", path_id=link_id))
        assert (status, answer["error"]["code"]) == (404, "link_not_found")


def test_unknown_routes_and_methods_get_the_envelope(aws_env: Any) -> None:
    """$default: an unknown path is a 404, a known path with another method a 405 with Allow."""
    unknown = event("list_links", tenant=None)
    unknown.update(routeKey="$default", rawPath="/nowhere")
    unknown["requestContext"].update(
        routeKey="$default", http={**unknown["requestContext"]["http"], "path": "/nowhere"}
    )
    status, answer, _ = invoke(FN, unknown)
    assert (status, answer["error"]["code"]) == (404, "route_not_found")
    wrong = event("list_links", tenant=None)
    wrong["routeKey"] = wrong["requestContext"]["routeKey"] = "$default"
    wrong["requestContext"]["http"]["method"] = "PUT"
    status, answer, headers = invoke(FN, wrong)
    assert (status, answer["error"]["code"]) == (405, "method_not_allowed")
    # /credentials/grant-access-sharing is also matched by the template /credentials/{id}
    assert headers["Allow"] == "DELETE, GET, PATCH, POST"


def test_idempotency_key_replays_the_first_result_without_the_token(aws_env: Any) -> None:
    """The same Idempotency-Key twice → one link; the replay says so and carries no token (it was shown once)."""
    key = {"Idempotency-Key": "order-42"}
    s1, first, h1 = create(headers=key)
    s2, second, h2 = create(headers=key)
    assert (s1, s2) == (201, 201)
    assert first["data"]["id"] == second["data"]["id"]
    assert first["data"]["token"] and second["data"]["token"] is None
    assert (h1["Idempotent-Replayed"], h2["Idempotent-Replayed"]) == ("false", "true")
    _, listed, _ = invoke(FN, event("list_links", tenant="tnt_a"))
    assert len(listed["data"]) == 1


def test_idempotency_key_with_another_body_is_a_422(aws_env: Any) -> None:
    create(headers={"Idempotency-Key": "k1"})
    status, answer, _ = create({"partnerId": 9001, "title": "other"}, headers={"Idempotency-Key": "k1"})
    assert (status, answer["error"]["code"]) == (422, "idempotency_key_reused")


@pytest.mark.parametrize("key", ["x" * 256, "has space", "tab\there", "é-non-ascii"])
def test_invalid_idempotency_key_is_a_400(aws_env: Any, table_items: Any, key: str) -> None:
    """Outside the documented shape (1–255 printable ASCII characters): a 400 naming the header; nothing written."""
    status, answer, _ = create(headers={"Idempotency-Key": key})
    assert (status, answer["error"]["code"]) == (400, "invalid_idempotency_key")
    assert table_items() == []


def test_the_longest_and_oddest_valid_idempotency_key_is_accepted(aws_env: Any) -> None:
    key = "~!" + "x" * 252 + "}"
    assert len(key) == 255
    assert create(headers={"Idempotency-Key": key})[0] == 201


def test_get_shows_failed_tests_and_locked_and_put_unlocks(aws_env: Any) -> None:
    """Given a link whose token failed ten connection tests on the connect page,
    when the tenant GETs it, then it shows `failedTests: 10` and `locked: true`;
    when the tenant PUTs it, then the new token starts at `failedTests: 0`, `locked: false`."""
    from grantlink import connect, errors

    _, created, _ = create()
    link_id, token = created["data"]["id"], created["data"]["token"]
    for _ in range(10):
        with pytest.raises((connect.InvalidForm, errors.LinkLocked)):
            connect.submit(link_id, token, {"apiKey": "bad-key-0000"})
    _, shown, _ = invoke(FN, event("get_link", tenant="tnt_a", path_id=link_id))
    assert (shown["data"]["failedTests"], shown["data"]["locked"], shown["data"]["status"]) == (10, True, 0)
    _, listed, _ = invoke(FN, event("list_links", tenant="tnt_a"))
    assert listed["data"][0]["locked"] is True
    status, regenerated, _ = invoke(FN, event("regenerate_link", tenant="tnt_a", path_id=link_id))
    assert status == 200 and (regenerated["data"]["failedTests"], regenerated["data"]["locked"]) == (0, False)
