"""The gate: every section of SECURITY.md (its `## ` headings) has a module in tests/security, and every row of a
section is named by a test in that module — in the test's name (`test_o7_…`, `test_m1_m2_…`) or its docstring
(`O7: …`) — so a reader finds the proof of any row next to its siblings, and a new row or section without one
fails here."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SECURITY = ROOT.parent / "shared" / "SECURITY.md"
HERE = Path(__file__).parent
MODULES = {
    "OAuth client": "test_oauth_client.py",
    "Keys and ciphertexts": "test_keys.py",
    "Data": "test_data.py",
    "Link tokens": "test_link_tokens.py",
    "Tenancy and input": "test_tenancy_and_input.py",
    "Jobs": "test_jobs.py",
}


def sections() -> dict[str, list[str]]:
    """The row ids of SECURITY.md, by section heading (`## …`), in order."""
    found: dict[str, list[str]] = {}
    heading = None
    for line in SECURITY.read_text().splitlines():
        if line.startswith("## "):
            heading = line[3:].strip()
            found[heading] = []
        elif (row := re.match(r"^\| ([A-Z]\d+) \|", line)) and heading is not None:
            found[heading].append(row.group(1))
    return found


def named_rows(module: Path) -> set[str]:
    """The row ids the module's tests name: in `test_<id>_…` (ids may be chained, `test_m1_m2_…`) or as a word of
    their docstrings."""
    named: set[str] = set()
    for node in ast.walk(ast.parse(module.read_text())):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name.startswith("test_"):
            chained = re.match(r"test_((?:[a-z]\d+_)+)", node.name)
            named |= {i.upper() for i in chained.group(1).split("_") if i} if chained else set()
            named |= set(re.findall(r"\b([A-Z]\d+)\b", ast.get_docstring(node) or ""))
    return named


def test_security_md_has_its_sections_and_rows() -> None:
    found = sections()
    assert sum(len(ids) for ids in found.values()) >= 30, f"{SECURITY} was not found or changed shape"
    assert all(found.values()), f"a section of {SECURITY.name} has no rows: {found}"


def test_every_section_has_a_module_and_every_module_a_section() -> None:
    found = sections()
    unmapped = [heading for heading in found if heading not in MODULES]
    assert unmapped == [], (
        f"SECURITY.md has sections with no module in tests/security: {unmapped}. Add a module for each "
        f"(test_<section>.py) holding the tests that prove its rows, and map it in MODULES in {Path(__file__).name}."
    )
    stale = [heading for heading in MODULES if heading not in found]
    assert stale == [], f"MODULES maps sections SECURITY.md no longer has: {stale}"
    missing = [name for name in MODULES.values() if not (HERE / name).is_file()]
    assert missing == [], f"MODULES names modules that do not exist in tests/security: {missing}"


@pytest.mark.parametrize("heading", list(MODULES))
def test_every_row_of_a_section_is_named_by_a_test_in_its_module(heading: str) -> None:
    rows = sections().get(heading)
    if rows is None:
        pytest.skip(f"SECURITY.md has no section {heading!r} (test_every_section_has_a_module… says so)")
    module = HERE / MODULES[heading]
    unnamed = [row for row in rows if row not in named_rows(module)]
    assert unnamed == [], (
        f"rows of SECURITY.md's {heading!r} named by no test in tests/security/{module.name}: {unnamed} "
        "(name the proving test `test_<id>_…` or start its docstring with `<id>: …`)"
    )
