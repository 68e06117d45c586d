"""The share-link API over real HTTP against the embedded local stack. The rows of SECURITY.md proved over HTTP
(M1 tenant isolation, O9 the redirect allow-list) are in tests/security."""

from __future__ import annotations

import json
import re
import signal
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from infra.local import template
from tests.stack import LINKS, ROOT, http, new_tenant, start_stack, url

pytestmark = __import__("pytest").mark.integration


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_the_link_lifecycle_over_http(stack: dict[str, Any]) -> None:
    """Create, read, list, regenerate, revoke — the README's curl walkthrough."""
    headers = auth(stack["apiKey"])
    created = http.post(url(stack, LINKS), json={"partnerId": 9001, "title": "Walkthrough"}, headers=headers)
    assert created.status_code == 201
    link = created.json()["data"]
    assert link["link"] == f"{stack['apiUrl']}/connect?id={link['id']}&token={link['token']}"
    got = http.get(url(stack, f"{LINKS}/{link['id']}"), headers=headers).json()["data"]
    assert (got["status"], got["token"]) == (0, None)
    listed = http.get(url(stack, LINKS), params={"perPage": 100}, headers=headers).json()
    assert link["id"] in [d["id"] for d in listed["data"]] and listed["meta"]["page"] == 1
    regenerated = http.put(url(stack, f"{LINKS}/{link['id']}"), headers=headers).json()["data"]
    assert regenerated["token"] != link["token"] and regenerated["status"] == 0
    revoked = http.delete(url(stack, f"{LINKS}/{link['id']}"), headers=headers).json()["data"]
    assert revoked["status"] == 3


def test_every_template_route_is_served(stack: dict[str, Any]) -> None:
    """Each route in template.yaml reaches its function: management routes answer JSON (never
    `route_not_found`), public pages answer HTML."""
    headers = auth(stack["apiKey"])
    for route in template.http_routes(template.load()):
        if route.path == "$default":
            continue
        path = re.sub(r"\{[^}]+\}", "lnk_00000000000000000000", route.path)
        method = "GET" if route.method == "ANY" else route.method  # ANY: the proxy, which takes every method
        answer = http.request(method, url(stack, path), headers=headers, json={})
        if route.authorized:
            assert answer.headers["content-type"].startswith("application/json"), route.key
            assert answer.json().get("error", {}).get("code") != "route_not_found", route.key
        else:
            assert answer.headers["content-type"].startswith("text/html"), route.key


def test_missing_and_unknown_keys_are_401_json(stack: dict[str, Any]) -> None:
    missing = http.get(url(stack, LINKS))
    assert missing.status_code == 401 and missing.json() == {"message": "Unauthorized"}  # API Gateway's own answer
    unknown = http.get(url(stack, LINKS), headers=auth("glk_" + "x" * 43))
    assert unknown.status_code == 401
    assert unknown.json() == {
        "success": False,
        "error": {"code": "unauthorized", "message": "A valid API key is required."},
    }


def test_a_key_without_the_scope_is_403_and_make_tenant_works(stack: dict[str, Any]) -> None:
    reader = new_tenant(stack, "reader", "credentials:read")
    answer = http.post(url(stack, LINKS), json={"partnerId": 9001, "title": "x"}, headers=auth(reader))
    assert answer.status_code == 403 and answer.json()["error"]["code"] == "forbidden"
    writer = new_tenant(stack, "writer", "links:write")
    assert http.get(url(stack, LINKS), headers=auth(writer)).status_code == 200


def test_unknown_routes_methods_and_bad_bodies_get_the_envelope(stack: dict[str, Any]) -> None:
    headers = auth(stack["apiKey"])
    nowhere = http.get(url(stack, "/nowhere"), headers=headers)
    assert (nowhere.status_code, nowhere.json()["error"]["code"]) == (404, "route_not_found")
    put = http.put(url(stack, LINKS), headers=headers)
    assert (put.status_code, put.headers["allow"]) == (405, "DELETE, GET, PATCH, POST")
    bad = http.post(url(stack, LINKS), data="{oops", headers={**headers, "content-type": "application/json"})
    assert (bad.status_code, bad.json()["error"]["code"]) == (400, "malformed_json")
    huge = http.post(url(stack, LINKS), json={"partnerId": 9001, "title": "x", "p": "y" * 70_000}, headers=headers)
    assert huge.status_code == 413


def test_idempotent_create_over_http(stack: dict[str, Any]) -> None:
    headers = {**auth(stack["apiKey"]), "Idempotency-Key": "http-retry-1"}
    body = {"partnerId": 9001, "title": "retry me"}
    first, second = (http.post(url(stack, LINKS), json=body, headers=headers) for _ in range(2))
    assert first.json()["data"]["id"] == second.json()["data"]["id"]
    assert second.headers["idempotent-replayed"] == "true"


def test_concurrent_creates_all_succeed_and_are_counted(stack: dict[str, Any]) -> None:
    key = new_tenant(stack, "busy")
    with ThreadPoolExecutor(max_workers=10) as pool:
        answers = list(
            pool.map(
                lambda i: http.post(url(stack, LINKS), json={"partnerId": 9001, "title": f"n{i}"}, headers=auth(key)),
                range(20),
            )
        )
    assert [a.status_code for a in answers] == [201] * 20, [a.text for a in answers if a.status_code != 201]
    meta = http.get(url(stack, LINKS), params={"perPage": 7}, headers=auth(key)).json()["meta"]
    assert (meta["totalItemsCount"], meta["totalPages"]) == (20, 3)


def test_openapi_and_swagger_ui_are_served(stack: dict[str, Any]) -> None:
    served = http.get(url(stack, "/openapi.json")).json()
    assert served == json.loads((ROOT / "openapi.json").read_text())
    docs = http.get(url(stack, "/docs"))
    assert docs.status_code == 200 and "swagger" in docs.text.lower()


def test_ctrl_c_stops_the_stack_cleanly(tmp_path: Path) -> None:
    """SIGINT (Ctrl-C) stops it with exit code 0 and removes its state file."""
    process = start_stack(tmp_path / "s.json", tmp_path / "s.log")
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=15) == 0
    assert not (tmp_path / "s.json").exists()
    assert "stopped" in (tmp_path / "s.log").read_text()


def test_sam_env_file_points_sam_local_at_the_stack(stack: dict[str, Any]) -> None:
    """Where a container engine exists, `sam local invoke --env-vars .local/sam-env.json` uses this stack."""
    parameters = json.loads((Path(stack["stateFile"]).with_name("sam-env.json")).read_text())["Parameters"]
    assert parameters["AWS_ENDPOINT_URL"] == stack["awsEndpoint"]
    assert parameters["GRANTLINK_TABLE"] == stack["table"]
