"""The real local stack in a subprocess, on free ports, stopped by its pid; and HTTP helpers (tenants, links, the
connect form) shared by tests/integration and tests/security."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parents[1]
START_TIMEOUT = 60


def start_stack(state_file: Path, log_file: Path, extra_env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "GRANTLINK_"))}
    env["GRANTLINK_SWEEP_INTERVAL_SECONDS"] = "0"  # no timer: tests run the jobs with POST /_local/sweep
    env.update(extra_env or {})
    with log_file.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "infra.local", "--port", "0", "--state-file", str(state_file)],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + START_TIMEOUT
    while not state_file.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"local stack did not start:\n{log_file.read_text()[-4000:]}")
        time.sleep(0.1)
    return process


def stop_stack(process: subprocess.Popen[bytes]) -> int:
    os.kill(process.pid, signal.SIGTERM)
    try:
        return process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.kill(process.pid, signal.SIGKILL)
        return process.wait()


class Http(requests.Session):
    """requests with a timeout on every call: a hung server fails the test instead of hanging it."""

    def __init__(self) -> None:
        super().__init__()
        adapter = requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=64)
        self.mount("http://", adapter)

    def request(self, *args: Any, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        kwargs.setdefault("timeout", 30)
        return super().request(*args, **kwargs)


http = Http()


def url(stack: dict[str, Any], path: str) -> str:
    return f"{stack['apiUrl']}{path}"


def new_tenant(stack: dict[str, Any], name: str, scopes: str = "") -> str:
    """Create a tenant the way `make tenant` does; returns its API key."""
    return new_tenant_and_id(stack, name, scopes)[1]


def new_tenant_and_id(stack: dict[str, Any], name: str, scopes: str = "") -> tuple[str, str]:
    """Create a tenant the way `make tenant` does; returns (tenant id, API key)."""
    result = subprocess.run(
        [sys.executable, "-m", "infra.scripts.tenant", "--name", name, "--scopes", scopes,
         "--state-file", stack["stateFile"]],
        cwd=ROOT, capture_output=True, text=True, check=True,
    )  # fmt: skip
    said = dict(line.split(":", 1) for line in result.stdout.splitlines() if ":" in line)
    return said["Tenant"].strip(), said["API key"].strip()


# --- the share-link API and the connect page over HTTP ----------------------------------------------------------

LINKS = "/credentials/grant-access-sharing"
FORM_SECRET = "demo-secret-key-123456"  # what the HTTP tests paste into the demo API-key partner's form


def auth(stack: dict[str, Any], key: str | None = None) -> dict[str, str]:
    """The Authorization header for `key`, or for the stack's demo tenant."""
    return {"Authorization": f"Bearer {key or stack['apiKey']}"}


def new_link(stack: dict[str, Any], partner: int = 9001, key: str | None = None) -> dict[str, Any]:
    """POST a share link (as `key`'s tenant, or the demo tenant); returns its `data`, token and link included."""
    answer = http.post(url(stack, LINKS), json={"partnerId": partner, "title": "HTTP test"}, headers=auth(stack, key))
    assert answer.status_code == 201
    return answer.json()["data"]


def submit(stack: dict[str, Any], link: dict[str, Any], **fields: str) -> Any:
    """POST the connect page's form for `link` with these field values; the redirect, if any, is not followed."""
    form = {"id": link["id"], "token": link["token"], **{f"f_{k}": v for k, v in fields.items()}}
    return http.post(url(stack, "/connect"), data=form, allow_redirects=False)
