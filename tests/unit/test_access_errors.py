"""A DynamoDB or KMS access error (IAM, the key policy, a disabled or deleted table key, bad credentials) is a clean
503 with nothing written, never a 500. moto enforces neither IAM nor key state, so DynamoDB's answer is stubbed:
every DynamoDB call fails with that error code, as it would on real AWS."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from botocore.client import BaseClient
from botocore.exceptions import ClientError

from tests.helpers import connected, create_link, creds

ACCESS_ERRORS = [
    "AccessDeniedException",  # the role may not call DynamoDB, or may not use the table's key through it
    "KMSAccessDeniedException",  # the key policy refuses DynamoDB's use of the key
    "KMSDisabledException",
    "KMSInvalidStateException",  # e.g. pending deletion
    "KMSNotFoundException",
    "UnrecognizedClientException",  # the function's credentials are not valid
]


@contextmanager
def dynamodb_refusing(code: str) -> Iterator[None]:
    """Inside the block, every DynamoDB call fails with `code` (every other AWS call goes through)."""
    real = BaseClient._make_api_call  # type: ignore[attr-defined]

    def call(client: Any, operation: str, params: dict[str, Any]) -> Any:
        if client.meta.service_model.service_name == "dynamodb":
            raise ClientError({"Error": {"Code": code, "Message": "refused"}}, operation)
        return real(client, operation, params)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(BaseClient, "_make_api_call", call)
        yield


@pytest.mark.parametrize("code", ACCESS_ERRORS)
def test_creating_a_link_when_dynamodb_refuses_access_is_a_503_that_writes_nothing(
    aws_env: Any, table_items: Any, code: str
) -> None:
    """Given DynamoDB answering every call with an access error,
    when a tenant creates a link through the API,
    then the answer is 503 service_unavailable in the envelope, and the table holds what it held before."""
    before = table_items()
    with dynamodb_refusing(code):
        status, body, _ = create_link()
    assert (status, body["success"], body["error"]["code"]) == (503, False, "service_unavailable")
    assert table_items() == before


@pytest.mark.parametrize("code", ["AccessDeniedException", "KMSDisabledException"])
def test_reading_a_secret_when_the_table_key_is_unusable_is_a_503(aws_env: Any, table_items: Any, code: str) -> None:
    """Given a credential, and then DynamoDB refusing access (the role, or the table's key disabled),
    when the tenant reads its secret,
    then the answer is 503, no secret is in it, and nothing was written (no audit entry)."""
    credential_id = connected()
    before = table_items()
    with dynamodb_refusing(code):
        status, body, _ = creds("read_secret", credential_id)
    assert (status, body["error"]["code"]) == (503, "service_unavailable")
    assert "fields" not in str(body)
    assert table_items() == before
