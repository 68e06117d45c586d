"""`make tenant NAME=acme [SCOPES=links:write,credentials:read] [REDIRECTS=https://app.example.com] [STACK=…]`:
create a tenant and print its API key once. `make redirects TENANT=tnt_… REDIRECTS=…` replaces an existing
tenant's redirect allow-list. `make key TENANT=tnt_… [SCOPES=…]` adds another API key to an existing tenant.

Without STACK it talks to the running local stack (found through .local/stack.json, written by `make run`);
with STACK it finds the table in that CloudFormation stack's outputs and uses the usual AWS credentials.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.request
from pathlib import Path

from infra.local.resources import LOCAL_ENVIRONMENT

STATE = Path(".local/stack.json")


def _use_local_stack(state_file: Path) -> None:
    if not state_file.exists():
        raise SystemExit("No local stack is running (no .local/stack.json): start one with `make run`, or pass STACK=…")
    state = json.loads(state_file.read_text())
    try:
        urllib.request.urlopen(f"{state['apiUrl']}/_local/health", timeout=3).read()  # noqa: S310 - loopback
    except OSError as exc:
        raise SystemExit(f"The local stack at {state['apiUrl']} does not answer: start it with `make run`.") from exc
    os.environ.update(LOCAL_ENVIRONMENT, AWS_ENDPOINT_URL=state["awsEndpoint"], GRANTLINK_TABLE=state["table"])


def _use_stack(name: str) -> None:
    import boto3

    stacks = boto3.client("cloudformation").describe_stacks(StackName=name)["Stacks"]
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stacks[0].get("Outputs", [])}
    if "TableName" not in outputs:
        raise SystemExit(f"Stack {name} has no TableName output: is it a grantlink stack?")
    os.environ["GRANTLINK_TABLE"] = outputs["TableName"]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--name", default="")
    parser.add_argument("--scopes", default="")
    parser.add_argument("--redirects", default="", help="allowed redirect origins, comma-separated")
    parser.add_argument("--tenant-id", default="", help="update this tenant's redirect allow-list instead")
    parser.add_argument("--add-key", action="store_true", help="with --tenant-id: add an API key to that tenant")
    parser.add_argument("--stack", default="")
    parser.add_argument("--state-file", type=Path, default=STATE, help="the local stack's state (make run writes it)")
    args = parser.parse_args(argv)
    if args.stack:
        _use_stack(args.stack)
    else:
        _use_local_stack(args.state_file)
    from grantlink import errors, tenants

    origins = tuple(o for o in args.redirects.replace(" ", ",").split(",") if o)
    try:
        if args.tenant_id and args.add_key:
            key_id, key = tenants.add_key(args.tenant_id, tenants.parse_scopes(args.scopes))
            print(f"Key id:  {key_id}")
            print(f"API key: {key}")
            print("(shown once: only its SHA-256 is stored)", file=sys.stderr)
            return 0
        if args.tenant_id:
            allowed = tenants.set_redirect_origins(args.tenant_id, origins)
            print(f"Tenant {args.tenant_id} may now redirect to: {', '.join(allowed) or '(nowhere)'}")
            return 0
        if not args.name:
            raise SystemExit("error: NAME is required")
        tenant_id, key = tenants.create_tenant(args.name, tenants.parse_scopes(args.scopes), origins)
    except errors.GrantlinkError as exc:
        raise SystemExit(f"error: {exc.message}") from exc
    print(f"Tenant:  {tenant_id}")
    print(f"API key: {key}")
    print("(shown once: only its SHA-256 is stored)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
