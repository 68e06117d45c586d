"""Read template.yaml: CloudFormation tags, a small intrinsic-function resolver, functions and routes.

The local stack and the tests take every name, key schema, environment variable and route from here, so
the template stays the one source of truth.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "template.yaml"


# libyaml's parser where PyYAML was built with it (it is, from PyPI wheels): the pure-Python one takes ~0.4 s
# for this template, and the tests and the local stack read it often.
class _CfnLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    pass


def _tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
    if suffix == "Ref":
        return {"Ref": value}
    if suffix == "GetAtt" and isinstance(value, str):
        value = value.split(".", 1)
    return {f"Fn::{suffix}": value}


_CfnLoader.add_multi_constructor("!", _tag)


def load(path: Path = TEMPLATE) -> dict[str, Any]:
    """The parsed template (a fresh copy each time: callers may change theirs). Parsed once per file version."""
    stat = path.stat()
    key = (str(path), stat.st_mtime_ns, stat.st_size)
    if key not in _parsed:
        _parsed[key] = yaml.load(path.read_text(), Loader=_CfnLoader)  # noqa: S506 - a SafeLoader subclass
    return copy.deepcopy(_parsed[key])


_parsed: dict[tuple[str, int, int], dict[str, Any]] = {}


@dataclass
class Resolver:
    """Resolves Ref, GetAtt, Sub, If, Equals, Not and Join against known physical names and attributes."""

    template: dict[str, Any]
    refs: dict[str, Any] = field(default_factory=dict)
    attrs: dict[str, dict[str, Any]] = field(default_factory=dict)

    def resolve(self, value: Any) -> Any:
        if isinstance(value, list):
            return [self.resolve(v) for v in value]
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            ((name, arg),) = value.items()
            handler = _INTRINSICS.get(name)
            if handler:
                return handler(self, arg)
        return {k: self.resolve(v) for k, v in value.items()}

    def ref(self, name: str) -> Any:
        if name in self.refs:
            return self.refs[name]
        raise KeyError(f"template.yaml refers to {name!r}, which the local stack does not provide")

    def condition(self, name: str) -> bool:
        return bool(self.resolve(self.template.get("Conditions", {})[name]))

    def sub(self, arg: Any) -> str:
        text, extra = (arg, {}) if isinstance(arg, str) else (arg[0], self.resolve(arg[1]))

        def one(match: re.Match[str]) -> str:
            name = match.group(1)
            if name in extra:
                return str(extra[name])
            if "." in name:
                resource, attribute = name.split(".", 1)
                return str(self.attrs[resource][attribute])
            return str(self.ref(name))

        return re.sub(r"\$\{([^!][^}]*)\}", one, text)


_INTRINSICS = {
    "Ref": lambda r, a: r.ref(a),
    "Fn::GetAtt": lambda r, a: r.attrs[a[0]][a[1]],
    "Fn::Sub": lambda r, a: r.sub(a),
    "Fn::If": lambda r, a: r.resolve(a[1] if r.condition(a[0]) else a[2]),
    "Fn::Equals": lambda r, a: r.resolve(a[0]) == r.resolve(a[1]),
    "Fn::Not": lambda r, a: not r.resolve(a[0]),
    "Fn::Join": lambda r, a: a[0].join(str(x) for x in r.resolve(a[1])),
}


@dataclass(frozen=True)
class FunctionSpec:
    logical_id: str
    name: str  # the folder under functions/
    handler: str
    timeout: int
    environment: dict[str, Any]
    events: dict[str, Any]


@dataclass(frozen=True)
class RouteSpec:
    method: str  # ANY for $default
    path: str  # $default for the catch-all
    function: str  # logical id
    authorized: bool

    @property
    def key(self) -> str:
        return "$default" if self.path == "$default" else f"{self.method} {self.path}"


def resources(template: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in template["Resources"].items() if v["Type"] == kind}


def functions(template: dict[str, Any]) -> list[FunctionSpec]:
    glob = template.get("Globals", {}).get("Function", {})
    specs = []
    for logical_id, res in resources(template, "AWS::Serverless::Function").items():
        props = res["Properties"]
        env = {**glob.get("Environment", {}).get("Variables", {}), **props.get("Environment", {}).get("Variables", {})}
        specs.append(
            FunctionSpec(
                logical_id=logical_id,
                name=Path(props["CodeUri"]).name,
                handler=props.get("Handler", glob.get("Handler", "")),
                timeout=int(props.get("Timeout", glob.get("Timeout", 3))),
                environment=env,
                events=props.get("Events", {}),
            )
        )
    return specs


def http_routes(template: dict[str, Any]) -> list[RouteSpec]:
    api = next(iter(resources(template, "AWS::Serverless::HttpApi").values()))
    default_auth = api["Properties"].get("Auth", {}).get("DefaultAuthorizer")
    routes = []
    for fn in functions(template):
        for event in fn.events.values():
            if event["Type"] != "HttpApi":
                continue
            props = event.get("Properties", {})
            auth = props.get("Auth", {}).get("Authorizer", default_auth)
            routes.append(
                RouteSpec(
                    method=str(props.get("Method", "ANY")).upper(),
                    path=props.get("Path", "$default"),
                    function=fn.logical_id,
                    authorized=bool(auth) and auth != "NONE",
                )
            )
    return routes


def event_sources(template: dict[str, Any], kind: str) -> list[tuple[FunctionSpec, str, dict[str, Any]]]:
    """(function, event name, event properties) for every event of one SAM type (ScheduleV2, SQS, ...)."""
    return [
        (fn, name, event.get("Properties", {}))
        for fn in functions(template)
        for name, event in fn.events.items()
        if event["Type"] == kind
    ]


def authorizer(template: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """(authorizer function logical id, its Identity settings) of the HTTP API's default authorizer."""
    auth = next(iter(resources(template, "AWS::Serverless::HttpApi").values()))["Properties"]["Auth"]
    spec = auth["Authorizers"][auth["DefaultAuthorizer"]]
    return spec["FunctionArn"]["Fn::GetAtt"][0], spec.get("Identity", {})
