"""`python -m bench [coldstart] [calls] [overhead] [renewal] [proxy] [webhooks] [--small]`: run the named benchmarks
(all by default) and rewrite their sections of bench/RESULTS.md; the sections not run are kept as they were."""

from __future__ import annotations

import datetime
import os
import platform
import re
import sys
from collections.abc import Callable
from pathlib import Path

from bench import calls, coldstart, overhead, proxy, renewal, webhooks

RESULTS = Path(__file__).with_name("RESULTS.md")
# Each benchmark, in the order of the file, with the heading its section starts with.
SECTIONS: dict[str, tuple[str, Callable[..., str]]] = {
    "coldstart": ("## Cold start", coldstart.run),
    "calls": ("## AWS calls", calls.run),
    "overhead": ("## Warm overhead", overhead.run),
    "renewal": ("## Renewal", renewal.run),
    "proxy": ("## Proxy", proxy.run),
    "webhooks": ("## Webhooks", webhooks.run),
}
HEADER = (
    "# Benchmark results\n\n"
    "Written by `make bench` (`python -m bench [coldstart] [calls] [overhead] [renewal] [proxy] [webhooks]`: a run "
    "rewrites only the sections it runs, and each section says where and when it ran). moto stands in for DynamoDB, "
    "KMS, SQS, EventBridge and Secrets Manager (in process); the renewal throughput's OAuth server is the local "
    "`oauth2-mock-server`. Quote ratios and counts, not absolute times: this machine is shared and noisy."
)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    small = "--small" in args  # a quick run for checking the benchmarks themselves
    chosen = [a for a in args if a != "--small"] or list(SECTIONS)
    unknown = [name for name in chosen if name not in SECTIONS]
    if unknown:
        print(f"unknown benchmark(s): {', '.join(unknown)}; choose from {', '.join(SECTIONS)}", file=sys.stderr)
        return 2
    sections = existing_sections(RESULTS.read_text()) if RESULTS.exists() else {}
    for name in chosen:
        sections[name] = _stamped(SECTIONS[name][1](small=small))
    body = "\n\n".join(sections[name] for name in SECTIONS if name in sections)
    RESULTS.write_text(f"{HEADER}\n\n{body}\n")
    print(RESULTS.read_text())
    return 0


def existing_sections(text: str) -> dict[str, str]:
    """The file's sections by benchmark name (a section runs from its heading to the next benchmark's)."""
    found: dict[str, list[str]] = {}
    current = None
    for chunk in re.split(r"(?m)^(?=## )", text)[1:]:
        current = next((name for name, (heading, _) in SECTIONS.items() if chunk.startswith(heading)), current)
        if current is not None:
            found.setdefault(current, []).append(chunk.strip())
    return {name: "\n\n".join(chunks) for name, chunks in found.items()}


def _stamped(section: str) -> str:
    """The section with where and when it ran under its first heading."""
    heading, _, rest = section.strip().partition("\n")
    stamp = (
        f"_Run on {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC._"
    )
    return f"{heading}\n\n{stamp}\n\n{rest.strip()}"


if __name__ == "__main__":
    raise SystemExit(main())
