"""boto3 clients, built lazily once per process and reused across warm invocations.

Everything that talks to AWS takes an optional client; when none is given it asks here. The endpoint and
credentials come from the usual environment (the local stack sets AWS_ENDPOINT_URL).

Every client, and the Encryption SDK's KMS client, comes from one botocore session: botocore caches the
service models and endpoint data it loads per session, so a second client costs a few milliseconds instead
of reloading those files. Client creation is serialised because a session is not thread-safe while it
builds a client (the handlers are single-threaded in Lambda; the local stack runs them on threads).
"""

from __future__ import annotations

import threading
from functools import cache
from typing import Any

import boto3
import botocore.session
from botocore.config import Config

# Short timeouts and standard retries: a slow dependency must not eat the Lambda's whole budget.
CLIENT_CONFIG = Config(connect_timeout=2, read_timeout=5, retries={"mode": "standard", "max_attempts": 3})

creation_lock = threading.RLock()


@cache
def botocore_session() -> botocore.session.Session:
    session = botocore.session.Session()
    session.set_default_client_config(CLIENT_CONFIG)
    return session


@cache
def client(service: str) -> Any:
    with creation_lock:
        return boto3.session.Session(botocore_session=botocore_session()).client(service, config=CLIENT_CONFIG)  # type: ignore[call-overload]


def reset() -> None:
    client.cache_clear()
    botocore_session.cache_clear()
