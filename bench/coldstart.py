"""Cold start of each function against its floor.

A cold start here is a fresh `python -c` that imports the function's handler module by path (as
`infra.local.gateway.load_module` does, and as Lambda does with the layer on `sys.path`) with the environment
the template gives it. Its floor is a fresh process that does only what any handler for the same work must:
import boto3 and create the clients the function uses, import pydantic, and import the Powertools resolver.
Both are wall times seen from the parent (interpreter start included in both), median of N runs, interleaved
so that the machine's noise falls on all of them alike. Each command runs once untimed first, so .pyc files
exist (Lambda's read-only layer compiles nothing: there the cost of a missing .pyc would be paid every time).

Three measurements per function:
- init: imports plus module init, as the issue defines it (no AWS client is created at import: they are lazy);
- init + clients: then the boto3 clients the floor creates, built the way the code builds them on first use
  (`grantlink.aws.client`, and the Encryption SDK's botocore session for KMS), so it is like for like with
  the floor;
- init, tracing on: as in Lambda with `Tracing: Active` (AWS_LAMBDA_FUNCTION_NAME set), where the Powertools
  Tracer patches botocore, requests and friends for X-Ray at init.
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
    """Each function's environment from the template (resolved against moto: dummy values, no AWS call at import)."""
    base = {k: v for k, v in os.environ.items() if k not in ("AWS_ENDPOINT_URL", "AWS_PROFILE", "AWS_SESSION_TOKEN")}
    base.update(resources.LOCAL_ENVIRONMENT)
    tpl = template.load()
    with mock_aws():
        resolver = resources.provision(tpl, lambda s: boto3.client(s, region_name=resources.REGION), "bench")  # type: ignore[call-overload]
        resolved = {spec.name: resolver.resolve(spec.environment) for spec in template.functions(tpl)}
    return {name: base | {k: "" if v is None else str(v) for k, v in env.items()} for name, env in resolved.items()}


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
    lambda_env = {n: {**envs[n], "AWS_LAMBDA_FUNCTION_NAME": f"grantlink-{n}"} for n in names}
    variants: dict[tuple[str, str], tuple[list[str], dict[str, str]]] = {}
    for name in names:
        variants[(name, "init")] = (_command(name, ()), envs[name])
        variants[(name, "clients")] = (_command(name, CLIENTS[name]), envs[name])
        variants[(name, "tracing")] = (_command(name, ()), lambda_env[name])
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
        init, clients, tracing = (medians[(name, v)] for v in ("init", "clients", "tracing"))
        loaded = seen[name]["loaded"]
        heavy = ["yes" if m in loaded else "no" for m in HEAVY]
        also = ", ".join(m for m in ALSO if m in loaded) or "—"
        rows.append(
            f"| {name} | {', '.join(CLIENTS[name])} | {floor:.0f} | {init:.0f} | **{init / floor:.2f}×** | "
            f"{clients / floor:.2f}× | {tracing / floor:.2f}× | {(init - xray) / floor:.2f}× | {heavy[0]} | "
            f"{heavy[1]} | {also} |"
        )
        if init / floor > TARGET:
            over.append(name)
        eager += [f"- {name}: `{_chain(seen[name]['chains'][m], m)}`" for m in HEAVY if m in loaded]
    added = [medians[(n, "clients")] - medians[(n, "init")] for n in result["names"]]
    per_client = (medians[(",".join(CLIENTS["credentials"]), "floor")] - medians[("dynamodb", "floor")]) / 3
    importers = sorted({c[-1] for s in seen.values() for m, c in s["chains"].items() if m == "aws_xray_sdk" and c})
    verdict = (
        f"Over the {TARGET}× target: {', '.join(over)}." if over else f"Every function is within {TARGET}× its floor."
    )
    lines = [
        "## Cold start: each function against its floor\n",
        f"Median wall time of a fresh process (ms, {result['runs']} runs each, interleaved; interpreter start "
        "included in both; .pyc files present). **init** = import the handler by path with the template's "
        "environment (what the issue asks; our clients are lazy, so none is created). **+ clients** = then create "
        "the floor's clients the way the code does on first use. **tracing on** = init with AWS_LAMBDA_FUNCTION_NAME "
        "set, as in Lambda with `Tracing: Active` (X-Ray patches botocore and requests at init). **− X-Ray** = init "
        f"less what importing the X-Ray SDK adds to a floor ({xray:.0f} ms, measured the same way). Floor = `import "
        f"boto3` + those clients + pydantic + `APIGatewayHttpResolver`. Target ≤ {TARGET}× (init / floor).\n",
        "| function | floor clients | floor ms | init ms | init / floor | + clients / floor | tracing on / floor "
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
        f"Creating the clients adds {min(added):.0f}–{max(added):.0f} ms to init, where an extra client costs the "
        f"floor about {per_client:.0f} ms (the 4-client floor less the 1-client floor, over 3): the floor's clients "
        "share boto3's default session, while "
        "`grantlink.aws.client` builds each client from a new `boto3.session.Session()` and the Encryption SDK's KMS "
        "client comes from `grantlink.crypto`'s own botocore session, so each loads botocore's data files afresh.",
        "",
        "Every function imports the X-Ray SDK at init, which the floor does not: it is imported by "
        + ", ".join(f"`{m}`" for m in importers)
        + ", whose module body builds the Powertools `Tracer()` (it loads the SDK even when tracing is off).",
        "",
    ]
    return "\n".join(lines)
