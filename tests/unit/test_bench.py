"""The benchmark's call counter counts: bench/RESULTS.md cannot silently report an operation as making nothing."""

from __future__ import annotations

from typing import Any

from bench import calls


def operation(name: str) -> calls.Operation:
    return next(op for op in calls.operations() if op.name == name)


def test_getting_a_link_makes_exactly_the_one_read_the_benchmark_reports(aws_env: Any) -> None:
    op = operation("link get")
    measured = calls.measure(op)
    assert dict(measured.aws) == op.expected == {"GetItem": 1}
    assert measured.http == []


def test_the_encryption_sdks_own_kms_client_and_partner_http_are_counted(aws_env: Any) -> None:
    """The SDK builds its KMS client from its own botocore session, not grantlink.aws: it must count too."""
    op = operation("connect submit")
    measured = calls.measure(op)
    assert dict(measured.aws) == op.expected
    assert measured.aws["GenerateDataKey"] == 1 and measured.actions == [5]
    assert measured.http == ["GET /_demo/apikey/me"]
