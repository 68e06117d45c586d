"""Cold start of each function against its floor.

A cold start here is a fresh `python -c` that imports the function's handler module by path (as
`infra.local.gateway.load_module` does, and as Lambda does with the layer on `sys.path`) with the environment
the template gives it plus the variables the Lambda runtime sets (LAMBDA_TASK_ROOT, AWS_LAMBDA_FUNCTION_NAME,
AWS_EXECUTION_ENV, …), so that Powertools and the X-Ray SDK behave as deployed. That matters: without
LAMBDA_TASK_ROOT the X-Ray SDK believes it runs on a server and builds a sampling client (two botocore clients,
some 300 ms) that it never builds in Lambda. Its floor is a fresh process, in the same environment, that does
only what any handler for the same work must: import boto3 and create the clients the function uses, import
pydantic, and import the Powertools resolver. Both are wall times seen from the parent (interpreter start
included in both), median of N runs, interleaved so that the machine's noise falls on all of them alike. Each
command runs once untimed first, so .pyc files exist (Lambda's read-only layer compiles nothing: there the
cost of a missing .pyc would be paid every time).

Measurements per function:
- init: imports plus module init, as the issue defines it, as deployed (`Tracing: Active`, so the Powertools
  Tracer loads the X-Ray SDK and patches botocore and requests); no AWS client is created at import (lazy);
- tracing off: the same with POWERTOOLS_TRACE_DISABLED=true (what a deployment without tracing would pay);
- init + clients: then the boto3 clients the floor creates, built the way the code builds them on first use
  (`grantlink.aws.client`, and the Encryption SDK's KMS client from the same botocore session), so it is like
  for like with the floor.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any

import boto3
from moto import mock_aws

from infra.local import resources, template

RUNS = 15
TARGET = 1.2
LAYER = str(template.ROOT / "layers" / "grantlink" / "python")
# The clients each function uses (from the issue): DynamoDB for all; KMS where secrets are sealed or opened;
# SQS for the sweep; EventBridge where events are emitted; Secrets Manager where list cursors are signed.
CLIENTS = {
    "authorizer": ("dynamodb",),
    "connect_page": ("dynamodb", "kms", "events"),
    "connection_test": ("dynamodb", "kms", "events"),
    "credentials": ("dynamodb", "kms", "events", "secretsmanager"),
    "expiry_sweep": ("dynamodb", "sqs"),
    "oauth_callback": ("dynamodb", "kms", "events"),
    "partners": ("dynamodb", "kms"),
    "renewal_worker": ("dynamodb", "kms", "events"),
    "share_links": ("dynamodb", "secretsmanager"),
}
XRAY = "aws_xray_sdk.core"
HEAVY = ("aws_encryption_sdk", "requests_oauthlib")  # should load lazily, and only where used
ALSO = ("requests", "oauthlib", "cryptography", "aws_xray_sdk")  # worth knowing about

# The child: record which module's body imported each watched module (the chain of `<module>` frames), import
# the handler by path, optionally create the clients, and print what it saw.
CHILD = """
import importlib.util, json, sys
args = json.loads(sys.argv[1])
sys.path.insert(0, args["layer"])
chains = {}
class Spy:
    def find_spec(self, name, path=None, target=None):
        if name in args["watch"] and name not in chains:
            frame, chain = sys._getframe(1), []
            while frame:
                if frame.f_code.co_name == "<module>":
                    chain.append(frame.f_globals.get("__name__", "?"))
                frame = frame.f_back
            chains[name] = [n for n in reversed(chain) if n != "__main__"]
        return None
if args["spy"]:
    sys.meta_path.insert(0, Spy())
if args["path"]:
    spec = importlib.util.spec_from_file_location(args["module"], args["path"])
    module = importlib.util.module_from_spec(spec)
    sys.modules[args["module"]] = module
    spec.loader.exec_module(module)
    for service in args["clients"]:
        from grantlink import aws, crypto
        if service == "kms":
            crypto.default().botocore_session.create_client("kms")
        else:
            aws.client(service)
else:
    import boto3
    for service in args["clients"]:
        boto3.client(service)
    import pydantic
    from aws_lambda_powertools.event_handler import APIGatewayHttpResolver
    for name in args["extra"]:
        importlib.import_module(name)
print(json.dumps({"loaded": [m for m in args["watch"] if m in sys.modules], "chains": chains}))
"""


def environments() -> dict[str, dict[str, str]]:
    """Each function's environment from the template (resolved against moto: dummy values, no AWS call at
    import), plus what the Lambda runtime itself sets."""
    drop = ("AWS_ENDPOINT_URL", "AWS_PROFILE", "AWS_SESSION_TOKEN", "POWERTOOLS_TRACE_DISABLED")
    base = {k: v for k, v in os.environ.items() if k not in drop}
    base.update(resources.LOCAL_ENVIRONMENT)
    tpl = template.load()
    with mock_aws():
        resolver = resources.provision(tpl, lambda s: boto3.client(s, region_name=resources.REGION), "bench")  # type: ignore[call-overload]
        resolved = {spec.name: resolver.resolve(spec.environment) for spec in template.functions(tpl)}
    return {
        name: base | {k: "" if v is None else str(v) for k, v in env.items()} | _runtime_variables(name)
        for name, env in resolved.items()
    }


def _runtime_variables(name: str) -> dict[str, str]:
    return {
        "LAMBDA_TASK_ROOT": str(template.ROOT / "functions" / name),
        "AWS_LAMBDA_FUNCTION_NAME": f"grantlink-{name}",
        "AWS_EXECUTION_ENV": "AWS_Lambda_python3.12",
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "_HANDLER": "app.lambda_handler",
    }


def _command(name: str | None, clients: tuple[str, ...], spy: bool = False, extra: tuple[str, ...] = ()) -> list[str]:
    path = str(template.ROOT / "functions" / name / "app.py") if name else ""
    args = {"layer": LAYER, "path": path, "module": f"grantlink_fn_{name}", "clients": list(clients),
            "watch": [*HEAVY, *ALSO], "spy": spy, "extra": list(extra)}  # fmt: skip
    return [sys.executable, "-c", CHILD, json.dumps(args)]


def _run(command: list[str], env: dict[str, str]) -> tuple[float, dict[str, Any]]:
    started = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False, cwd="/")
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"cold start child failed:\n{done.stderr[-3000:]}")
    return seconds, json.loads(done.stdout.strip().splitlines()[-1])


def measure(runs: int = RUNS) -> dict[str, Any]:
    """Median wall ms of every variant, plus what each function loads at init and why."""
    envs = environments()
    names = sorted(CLIENTS)
    untraced = {n: {**envs[n], "POWERTOOLS_TRACE_DISABLED": "true"} for n in names}
    variants: dict[tuple[str, str], tuple[list[str], dict[str, str]]] = {}
    for name in names:
        variants[(name, "init")] = (_command(name, ()), envs[name])
        variants[(name, "untraced")] = (_command(name, ()), untraced[name])
        variants[(name, "clients")] = (_command(name, CLIENTS[name]), envs[name])
    for clients in sorted(set(CLIENTS.values())):
        variants[(",".join(clients), "floor")] = (_command(None, clients), envs[names[0]])
    # What the X-Ray SDK adds to a floor: every function imports it (the Powertools Tracer), the floor does not.
    variants[("dynamodb", "floor+xray")] = (_command(None, ("dynamodb",), extra=(XRAY,)), envs[names[0]])
    seen = {name: _run(_command(name, (), spy=True), envs[name])[1] for name in names}  # also warms the .pyc
    for command, env in variants.values():
        _run(command, env)
    times: dict[tuple[str, str], list[float]] = {key: [] for key in variants}
    for _ in range(runs):
        for key, (command, env) in variants.items():
            times[key].append(_run(command, env)[0])
    medians = {key: statistics.median(values) * 1000 for key, values in times.items()}
    return {"runs": runs, "names": names, "medians": medians, "seen": seen}


def run(small: bool = False) -> str:
    return _report(measure(3 if small else RUNS))


def _chain(chain: list[str], module: str) -> str:
    shown = [n.removeprefix("grantlink_fn_") + "/app.py" if n.startswith("grantlink_fn_") else n for n in chain]
    return " → ".join([*shown, module])


def _report(result: dict[str, Any]) -> str:
    medians, seen = result["medians"], result["seen"]
    xray = medians[("dynamodb", "floor+xray")] - medians[("dynamodb", "floor")]
    rows, over, eager = [], [], []
    for name in result["names"]:
        floor = medians[(",".join(CLIENTS[name]), "floor")]
        init, untraced, clients = (medians[(name, v)] for v in ("init", "untraced", "clients"))
        loaded = seen[name]["loaded"]
        heavy = ["yes" if m in loaded else "no" for m in HEAVY]
        also = ", ".join(m for m in ALSO if m in loaded) or "—"
        rows.append(
            f"| {name} | {', '.join(CLIENTS[name])} | {floor:.0f} | {init:.0f} | **{init / floor:.2f}×** | "
            f"{untraced / floor:.2f}× | {clients / floor:.2f}× | {(init - xray) / floor:.2f}× | {heavy[0]} | "
            f"{heavy[1]} | {also} |"
        )
        if init / floor > TARGET:
            over.append(name)
        eager += [f"- {name}: `{_chain(seen[name]['chains'][m], m)}`" for m in HEAVY if m in loaded]
    added = [medians[(n, "clients")] - medians[(n, "init")] for n in result["names"]]
    floor_one = medians[("dynamodb", "floor")]
    per_client = (medians[(",".join(CLIENTS["credentials"]), "floor")] - floor_one) / 3
    importers = sorted({c[-1] for s in seen.values() for m, c in s["chains"].items() if m == "aws_xray_sdk" and c})
    verdict = (
        f"Over the {TARGET}× target: {', '.join(over)}." if over else f"Every function is within {TARGET}× its floor."
    )
    lines = [
        "## Cold start: each function against its floor\n",
        f"Median wall time of a fresh process (ms, {result['runs']} runs each, interleaved; interpreter start "
        "included in both; .pyc files present), in the template's environment plus the variables the Lambda "
        "runtime sets (LAMBDA_TASK_ROOT, AWS_LAMBDA_FUNCTION_NAME, …), so Powertools and the X-Ray SDK behave as "
        "deployed. **init** = import the handler by path, as deployed with `Tracing: Active` (what the issue asks; "
        "our clients are lazy, so none is created). **tracing off** = the same with POWERTOOLS_TRACE_DISABLED. "
        "**+ clients** = init, then create the floor's clients the way the code does on first use. **− X-Ray** = "
        f"init less what importing the X-Ray SDK adds to a floor ({xray:.0f} ms, measured the same way). Floor = "
        f"`import boto3` + those clients + pydantic + `APIGatewayHttpResolver`. Target ≤ {TARGET}× (init / floor).\n",
        "| function | floor clients | floor ms | init ms | init / floor | tracing off / floor | + clients / floor "
        "| − X-Ray / floor | aws_encryption_sdk at init | requests_oauthlib at init | also at init |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | :---: | :---: | --- |",
        *rows,
        "",
        verdict,
        "",
        "aws_encryption_sdk and requests_oauthlib at module init: "
        + (
            "neither, in any function: both load inside the functions that use them, on first use." if not eager else ""
        ),
        *eager,
        "",
        f"Creating the clients adds {min(added):.0f}–{max(added):.0f} ms to init; in the floor each client after "
        f"the first costs about {per_client:.0f} ms (the 4-client floor less the 1-client floor, over 3). Every "
        "client, the Encryption SDK's KMS client included, comes from one botocore session (`grantlink.aws`), so "
        "botocore loads its endpoint and model files once per process.",
        "",
        "The X-Ray SDK, which the floor does not load, is imported at init by "
        + (", ".join(f"`{m}`" for m in importers) or "nothing")
        + " (the Powertools `Tracer`, which loads it even with tracing off, and with tracing on patches botocore "
        "and requests only).",
        "",
    ]
    return "\n".join(lines)
