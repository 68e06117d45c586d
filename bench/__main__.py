"""`python -m bench`: run every benchmark and write bench/RESULTS.md."""

from __future__ import annotations

import datetime
import os
import platform
import sys
from pathlib import Path

from bench import renewal

RESULTS = Path(__file__).with_name("RESULTS.md")


def main() -> int:
    small = "--small" in sys.argv  # a quick run for checking the benchmark itself
    sections = [renewal.run(small=small)]
    header = (
        "# Benchmark results\n\n"
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
        f"run {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC with `make bench`. "
        "moto stands in for DynamoDB, KMS and SQS (in process); the OAuth server is the local "
        "`oauth2-mock-server`. Quote ratios and counts, not absolute times: this machine is shared and noisy.\n"
    )
    RESULTS.write_text(header + "\n".join(sections))
    print(RESULTS.read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
