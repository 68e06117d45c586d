"""`Idempotency-Key` support on creating routes (Powertools Idempotency), scoped to the tenant.

The record's key is the hash of (tenant id, route, the client's key); the body is checked too, so the same
key with a different body is a 422. The stored result never holds a secret: callers pass a function whose
return value is safe to keep (e.g. a link without its token) and hand the secret back through `Secrets`.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import Any

from grantlink import aws, errors
from grantlink.config import settings

KEY_PATTERN = r"^[\x21-\x7e]{1,255}$"  # checked by the route's validation, and so in the OpenAPI document


@cache
def _machinery() -> tuple[Any, Any]:
    from aws_lambda_powertools.utilities.idempotency import DynamoDBPersistenceLayer, IdempotencyConfig

    persistence = DynamoDBPersistenceLayer(table_name=settings().idempotency_table, boto3_client=aws.client("dynamodb"))
    config = IdempotencyConfig(
        event_key_jmespath="[tenantId, operation, key]",
        payload_validation_jmespath="body",
        expires_after_seconds=settings().idempotency_ttl_seconds,
        raise_on_no_idempotency_key=True,
    )
    return persistence, config


def reset() -> None:
    _machinery.cache_clear()


_lambda_context: list[Any] = [None]


def register_context(context: Any) -> None:
    """Remember the invocation's Lambda context: Powertools guards in-progress records with its deadline."""
    _lambda_context[0] = context if hasattr(context, "get_remaining_time_in_millis") else None


def run_once(tenant_id: str, operation: str, key: str, body: Any, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run `fn` once per (tenant, operation, key); a repeat returns the first run's stored result."""
    from aws_lambda_powertools.utilities.idempotency import idempotent_function
    from aws_lambda_powertools.utilities.idempotency.exceptions import (
        IdempotencyAlreadyInProgressError,
        IdempotencyPersistenceLayerError,
        IdempotencyValidationError,
    )

    persistence, config = _machinery()
    if _lambda_context[0] is not None:
        config.register_lambda_context(_lambda_context[0])

    @idempotent_function(data_keyword_argument="request", config=config, persistence_store=persistence)
    def _once(request: dict[str, Any]) -> dict[str, Any]:
        return fn()

    try:
        return _once(request={"tenantId": tenant_id, "operation": operation, "key": key, "body": body})
    except IdempotencyValidationError as exc:
        raise errors.UnprocessableEntity(
            "This Idempotency-Key was used with a different body.", code="idempotency_key_reused"
        ) from exc
    except IdempotencyAlreadyInProgressError as exc:
        raise errors.Conflict(
            "A request with this Idempotency-Key is in progress.", code="idempotency_in_progress"
        ) from exc
    except IdempotencyPersistenceLayerError as exc:
        raise errors.ServiceUnavailable() from exc
