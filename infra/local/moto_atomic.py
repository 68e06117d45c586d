"""Make moto's DynamoDB as atomic as DynamoDB is.

DynamoDB evaluates a conditional write or a transaction atomically; moto, serving requests on threads,
checks the condition and applies the write as separate steps, so two concurrent consumes of one link could
both pass (seen: 25 concurrent submits made 3 credentials). Serialising the item-level operations behind
one lock restores the guarantee the application relies on. The lock also covers the request handler,
because moto turns the stored item into the response after the backend call returns: a concurrent update
of that item then fails with "dictionary changed size during iteration". Used by the local stack, the
unit tests and the benchmarks.
"""

from __future__ import annotations

import functools
import threading
from typing import Any

from moto.dynamodb.models import DynamoDBBackend
from moto.dynamodb.responses import DynamoHandler

OPERATIONS = (
    "put_item",
    "update_item",
    "delete_item",
    "get_item",
    "query",
    "scan",
    "batch_get_item",
    "batch_write_item",
    "transact_get_items",
    "transact_write_items",
)
_lock = threading.RLock()


def install() -> None:
    """Idempotent: wrap each operation once."""
    targets = [(DynamoDBBackend, name) for name in OPERATIONS] + [(DynamoHandler, "call_action")]
    for owner, name in targets:
        original = getattr(owner, name)
        if getattr(original, "_grantlink_atomic", False):
            continue
        setattr(owner, name, _serialised(original))


def _serialised(method: Any) -> Any:
    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with _lock:
            return method(*args, **kwargs)

    wrapper._grantlink_atomic = True  # type: ignore[attr-defined]
    return wrapper
