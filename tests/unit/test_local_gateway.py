"""The local stack's API Gateway stand-in: routing like API Gateway, and loud failures on drift."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from infra.local import gateway, template
from infra.local.template import FunctionSpec, RouteSpec


def spec(name: str, handler: str = "app.lambda_handler") -> FunctionSpec:
    return FunctionSpec(logical_id=f"{name}Function", name=name, handler=handler, timeout=3, environment={}, events={})


def test_a_template_function_without_its_handler_file_fails_loudly() -> None:
    with pytest.raises(RuntimeError, match="does not exist"):
        gateway.load_handler(spec("no_such_function"))


def test_a_handler_module_without_the_named_handler_fails_loudly() -> None:
    with pytest.raises(RuntimeError, match="has no handler"):
        gateway.load_handler(spec("share_links", "app.not_there"))


def test_a_handler_folder_missing_from_the_template_fails_loudly(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "functions" / "orphan").mkdir(parents=True)
    (tmp_path / "functions" / "orphan" / "app.py").write_text("def lambda_handler(e, c): return {}\n")
    monkeypatch.setattr(gateway, "ROOT", tmp_path)
    with pytest.raises(RuntimeError, match="orphan"):
        gateway.check_every_function_is_declared([])


def test_literal_routes_win_over_variables_and_unmatched_requests_go_to_default() -> None:
    routes = [
        RouteSpec("GET", "/credentials/{id}", "Creds", True),
        RouteSpec("GET", "/credentials/grant-access-sharing", "Links", True),
        RouteSpec("ANY", "$default", "Links", False),
    ]
    gw = gateway.Gateway(routes, {}, {}, ("Auth", {}), 0)
    assert gw.match("GET", "/credentials/grant-access-sharing")[0].function == "Links"  # type: ignore[union-attr]
    route, params = gw.match("GET", "/credentials/crd_1")
    assert route is not None and route.function == "Creds" and params == {"id": "crd_1"}
    assert gw.match("POST", "/nowhere")[0].path == "$default"  # type: ignore[union-attr]


def test_every_template_route_has_a_function_spec() -> None:
    tpl = template.load()
    names = {f.logical_id for f in template.functions(tpl)}
    assert {r.function for r in template.http_routes(tpl)} <= names


def test_concurrent_requests_get_separate_environments() -> None:
    """Lambda never gives one environment two requests at once: a busy environment makes a new one."""
    share_links = next(s for s in template.functions(template.load()) if s.name == "share_links")
    first = gateway.load_handler(share_links)
    environments = gateway.Environments(share_links, first)
    seen: list[Any] = []

    def inner(event: dict[str, Any], context: Any) -> None:
        seen.append(environments._take())  # taken while the first is still busy

    environments._idle = [inner]
    environments.invoke({}, None)
    assert seen and seen[0] is not inner and seen[0] is not first
