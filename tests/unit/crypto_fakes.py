"""A KMS that counts calls and fails on demand, for the grantlink.crypto tests (tests/unit/test_crypto.py and
tests/security/test_keys.py); their fixtures (`bare_aws`, `key_arn`, `kms_session`, `kms`, `crypt`) live in
tests/unit/conftest.py.

moto does not enforce key state or policy, so KMS failures (K5) are injected with a botocore `before-call`
hook on the session that the code under test uses; the same hook counts KMS calls.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import boto3
import botocore.session
from botocore.awsrequest import AWSResponse
from botocore.compat import HTTPHeaders

from grantlink import crypto

PLAINTEXT = b"sk_live_correct-horse-battery-staple"
CONTEXT = crypto.context_for("tenant-a", "cred-1", "credential")


class FakeKms:
    """Counts the KMS calls made through one botocore session and answers chosen operations with an error."""

    def __init__(self, session: botocore.session.Session) -> None:
        self.calls: Counter[str] = Counter()
        self.faults: dict[str, str | Exception] = {}
        self.data_keys: list[bytes] = []
        # Clients copy the session's hooks when they are created: register before the first KMS call.
        session.register("before-call.kms", self._before_call)  # type: ignore[arg-type]  # may return a response
        session.register("after-call.kms.GenerateDataKey", self._after_generate)

    def fail(self, operation: str, error: str | Exception) -> None:
        """Answer `operation` with a KMS error code (an HTTP 400 response) or raise `error` before sending."""
        self.faults[operation] = error

    def _before_call(self, **kwargs: Any) -> tuple[AWSResponse, dict] | None:
        operation = kwargs["model"].name
        self.calls[operation] += 1
        fault = self.faults.get(operation)
        if isinstance(fault, Exception):
            raise fault
        if fault:
            parsed = {"Error": {"Code": fault, "Message": "injected"}, "ResponseMetadata": {"HTTPStatusCode": 400}}
            return AWSResponse("https://kms.us-east-1.amazonaws.com/", 400, HTTPHeaders(), None), parsed
        return None

    def _after_generate(self, **kwargs: Any) -> None:
        if "Plaintext" in kwargs["parsed"]:
            self.data_keys.append(kwargs["parsed"]["Plaintext"])


def new_key() -> str:
    """A new KMS key in moto; its ARN."""
    return boto3.client("kms", region_name="us-east-1").create_key()["KeyMetadata"]["Arn"]
