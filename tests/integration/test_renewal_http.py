"""Renewal in the local stack: the jobs refresh a demo-oauth token before anyone asks (issue "done when")."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.oauth_http import connect, token_requests
from tests.stack import auth, http, start_stack, stop_stack, url

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def renewing_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """`GRANTLINK_RENEW_BEFORE_SECONDS=7200 make run`: the window is wider than the demo token's hour, so a
    connected demo-oauth credential is due at once; the timer runs every second."""
    folder = tmp_path_factory.mktemp("renewing")
    extra = {"GRANTLINK_RENEW_BEFORE_SECONDS": "7200", "GRANTLINK_SWEEP_INTERVAL_SECONDS": "1"}
    process = start_stack(folder / "s.json", folder / "s.log", extra_env=extra)
    state = json.loads((folder / "s.json").read_text())
    state.update(stateFile=str(folder / "s.json"), log=str(folder / "s.log"))
    yield state
    stop_stack(process)


def event_lines(stack: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    events = []
    for line in Path(stack["log"]).read_text(errors="replace").splitlines():
        if line.startswith("{") and '"local": "event"' in line:
            events.append(json.loads(line)["event"])
    return [e for e in events if e["detail-type"] == kind]


def test_the_timer_refreshes_a_due_token_within_a_sweep_interval(renewing_stack: dict[str, Any]) -> None:
    """Given a connected demo-oauth credential that is due, when the sweep timer fires, then it is refreshed:
    visible in its metadata (lastRefreshedAt, accessExpiresAt) and as a credential.refreshed event line."""
    _, credential_id = connect(renewing_stack, "renewed by the jobs")
    one = url(renewing_stack, f"/credentials/{credential_id}")

    def observed() -> tuple[dict[str, Any], list[dict[str, Any]]]:
        metadata = http.get(one, headers=auth(renewing_stack)).json()["data"]
        lines = event_lines(renewing_stack, "credential.refreshed")
        return metadata, [e for e in lines if e["detail"]["credentialId"] == credential_id]

    # A bounded wait for the condition: the timer ticks every second and the event printer polls the bus queue.
    deadline = time.monotonic() + 30
    metadata, refreshed = observed()
    while not (metadata["lastRefreshedAt"] and refreshed) and time.monotonic() < deadline:
        time.sleep(0.2)
        metadata, refreshed = observed()
    assert metadata["lastRefreshedAt"] and metadata["accessExpiresAt"] and metadata["refreshFailures"] == 0
    assert refreshed and refreshed[0]["source"] == "grantlink" and refreshed[0]["detail"]["eventId"]
    assert token_requests(renewing_stack, "refresh_token") >= 1


def test_post_local_sweep_runs_the_jobs_now(stack: dict[str, Any]) -> None:
    """The session stack has no timer: POST /_local/sweep runs one sweep and drains the queue at once. A fresh
    demo-oauth credential (1 h token, 15 min window) is not due, so nothing is refreshed."""
    _, credential_id = connect(stack, "not due yet")
    before = token_requests(stack, "refresh_token")
    answer = http.post(url(stack, "/_local/sweep")).json()
    assert set(answer) == {"queued", "processed", "failed"} and answer["failed"] == 0
    assert token_requests(stack, "refresh_token") == before
    assert (
        http.get(url(stack, f"/credentials/{credential_id}"), headers=auth(stack)).json()["data"]["lastRefreshedAt"]
        is None
    )
