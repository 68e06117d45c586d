"""The README's curl walkthrough runs as written against a local stack."""

from __future__ import annotations

import re
import subprocess
from typing import Any

import pytest

from tests.stack import ROOT

pytestmark = pytest.mark.integration


def walkthrough() -> str:
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"<!-- walkthrough -->\n```bash\n(.*?)```", text, flags=re.S)
    assert len(blocks) >= 5, "the README lost its walkthrough blocks"
    return "set -euo pipefail\n" + "\n".join(blocks)


def test_the_readme_walkthrough_runs(stack: dict[str, Any], tmp_path: Any) -> None:
    script = walkthrough().replace("/tmp/", f"{tmp_path}/")
    result = subprocess.run(
        ["bash", "-c", script],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin:/usr/local/bin", "API": stack["apiUrl"], "KEY": stack["apiKey"]},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.split()
    assert lines[0] == "6"  # six demo partners (the first block prints their count)
    assert "reauthorize_link_created" in lines and "created" in lines
    assert "demo-key-0042" in lines and "disabled" in lines and "active" in lines
    assert lines.count("200") == 2 and "404" in lines and "True" in lines
    assert "/_demo/echo/demo-apikey/v1/contacts" in lines and "header" in lines and "400" in lines  # the proxy
    assert any(line.startswith(f"{stack['apiUrl']}/connect?id=lnk_") for line in lines)
