"""Make moto's DynamoDB as atomic as DynamoDB is.

DynamoDB evaluates a conditional write or a transaction atomically; moto, serving requests on threads,
checks the condition and applies the write as separate steps, so two concurrent consumes of one link could
both pass (seen: 25 concurrent submits made 3 credentials). Serialising the item-level operations behind
one lock restores the guarantee the application relies on. Used by the local stack and the unit tests.
"""

from __future__ import annotations

import functools
import threading
from typing import Any

from moto.dynamodb.models import DynamoDBBackend

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
    for name in OPERATIONS:
        original = getattr(DynamoDBBackend, name)
        if getattr(original, "_grantlink_atomic", False):
            continue
        setattr(DynamoDBBackend, name, _serialised(original))


def _serialised(method: Any) -> Any:
    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with _lock:
            return method(*args, **kwargs)

    wrapper._grantlink_atomic = True  # type: ignore[attr-defined]
    return wrapper
