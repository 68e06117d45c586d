"""boto3 clients, built lazily once per process and reused across warm invocations.

Everything that talks to AWS takes an optional client; when none is given it asks here. The endpoint and
credentials come from the usual environment (the local stack sets AWS_ENDPOINT_URL).
"""

from __future__ import annotations

from functools import cache
from typing import Any

import boto3
from botocore.config import Config

# Short timeouts and standard retries: a slow dependency must not eat the Lambda's whole budget.
CLIENT_CONFIG = Config(connect_timeout=2, read_timeout=5, retries={"mode": "standard", "max_attempts": 3})


@cache
def client(service: str) -> Any:
    return boto3.session.Session().client(service, config=CLIENT_CONFIG)  # type: ignore[call-overload]


def reset() -> None:
    client.cache_clear()
