"""`python -m infra.local`: run the embedded local stack until Ctrl-C (or SIGTERM)."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from pathlib import Path

from infra.local.stack import LocalStack, sam_env_path, write_state

DEFAULT_STATE = Path(".local/stack.json")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "3000")), help="API port (0: any)")
    parser.add_argument("--aws-port", type=int, default=int(os.environ.get("AWS_PORT", "0")), help="moto port")
    parser.add_argument("--state-file", type=Path, default=DEFAULT_STATE, help="where to write URLs and the key")
    args = parser.parse_args()
    stack = LocalStack(port=args.port, aws_port=args.aws_port)
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    signal.signal(signal.SIGINT, lambda *_: stopping.set())
    stack.start()
    write_state(stack, args.state_file)
    print(f"grantlink local stack is up\n  API URL:      {stack.api_url}", flush=True)
    print(f"  API key:      {stack.api_key}", flush=True)
    print(f"  AWS endpoint: {stack.aws_endpoint}", flush=True)
    print(f"  OAuth server: {stack.oauth_url} (demo-oauth, partner 9003)", flush=True)
    print(f"  Sandbox:      {stack.sandbox_oauth_url} (demo-oauth's sandbox environment)", flush=True)
    print(f"  OAuth 1.0a:   {stack.oauth1_url} (demo-oauth1, partner 9004)", flush=True)
    every = f"every {stack.jobs.interval:g} s" if stack.jobs.interval > 0 else "timer off"
    print(f"  Renewals:     {every}; POST {stack.api_url}/_local/sweep runs them now", flush=True)
    print(f"  Webhooks:     sent from this process by the delivery function; PUT /webhooks with url "
          f"{stack.api_url}/_local/webhook-sink, then GET it to see what arrived", flush=True)  # fmt: skip
    print(f"  OpenAPI:      {stack.api_url}/docs\n  (Ctrl-C stops it)", flush=True)
    stopping.wait()
    stack.stop()
    args.state_file.unlink(missing_ok=True)
    sam_env_path(args.state_file).unlink(missing_ok=True)
    print("stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
