"""Every row of SECURITY.md has a test that names it (in its name, `test_o7_…`, or its docstring, `O7: …`),
so a reader can find the proof of any row — and a new row without a test fails here."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SECURITY = ROOT.parent / "shared" / "SECURITY.md"


def rows() -> list[str]:
    return re.findall(r"^\| ([A-Z]\d+) \|", SECURITY.read_text(), flags=re.M)


def test_every_security_row_is_named_by_a_test() -> None:
    tests = "\n".join(p.read_text() for p in (ROOT / "tests").rglob("test_*.py") if p.name != Path(__file__).name)
    ids = rows()
    assert len(ids) >= 30, "SECURITY.md was not found or changed shape"
    missing = [i for i in ids if not re.search(rf"(\b{i}\b|def test_{i.lower()}_)", tests)]
    assert missing == []
