"""What X-Ray traces, as deployed (`Tracing: Active`): AWS calls from init, partner HTTP once a module that
calls partners needs it — and nothing loaded at init that a function does not use."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LAYER = ROOT / "layers" / "grantlink" / "python"

CHILD = """
import json, sys
from grantlink import observability
import botocore.client
def traced(function):  # X-Ray patches with wrapt; functools.wraps also sets __wrapped__, so check the type
    return "FunctionWrapper" in type(function).__name__
report = {"requests_at_init": "requests" in sys.modules,
          "botocore_traced": traced(botocore.client.BaseClient._make_api_call)}
import requests
report["requests_traced_before"] = traced(requests.Session.request)
observability.trace_http()
observability.trace_http()
report["requests_traced_after"] = traced(requests.Session.request)
report["wrapped_once"] = traced(requests.Session.request) and not traced(requests.Session.request.__wrapped__)
print(json.dumps(report))
"""


def run_child(tmp_path: Path, **env: str) -> dict[str, bool]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("POWERTOOLS_", "AWS_LAMBDA", "LAMBDA_"))}
    lambda_env = {"LAMBDA_TASK_ROOT": str(tmp_path), "AWS_LAMBDA_FUNCTION_NAME": "grantlink-test"}
    done = subprocess.run(
        [sys.executable, "-c", CHILD],
        env={**base, **lambda_env, "PYTHONPATH": str(LAYER), **env},
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_with_tracing_on_aws_calls_are_traced_from_init_and_partner_http_once_asked(tmp_path: Path) -> None:
    report = run_child(tmp_path)
    assert report == {
        "requests_at_init": False,  # patch_all() would import it in every function
        "botocore_traced": True,
        "requests_traced_before": False,
        "requests_traced_after": True,
        "wrapped_once": True,
    }


def test_with_tracing_off_nothing_is_patched(tmp_path: Path) -> None:
    report = run_child(tmp_path, POWERTOOLS_TRACE_DISABLED="true")
    assert report["botocore_traced"] is False and report["requests_traced_after"] is False
