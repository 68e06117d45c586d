"""Unit-test fixtures: moto (mock_aws) with the tables, key and secret that template.yaml declares; and a bare
moto KMS for the grantlink.crypto tests. tests/security/conftest.py makes all of them available there too."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import boto3
import botocore.session
import pytest
from moto import mock_aws
from pytest_httpserver import HTTPServer

from infra.local import moto_atomic, resources, template
from tests.helpers import START, FrozenClock
from tests.unit.crypto_fakes import FakeKms, new_key

if TYPE_CHECKING:
    from grantlink.crypto import Crypto

CONNECT = "https://connect.example.test"


def _reset_caches() -> None:
    from grantlink import aws, config, idempotency, pagination, providers, store

    config.reset()
    aws.reset()
    pagination.reset()
    idempotency.reset()
    providers.reset()
    store._default = None
    try:
        from grantlink import crypto

        crypto.reset()
    except ImportError:  # pragma: no cover - crypto arrives with its own work
        pass


@pytest.fixture
def demo_partners(httpserver: HTTPServer) -> str:
    """The demo partners' account endpoints (the local stack's own handlers) on a real server on 127.0.0.1."""
    from werkzeug import Request as WerkzeugRequest
    from werkzeug import Response

    from infra.local import extras
    from infra.local.gateway import Request

    def adapt(handler: Any) -> Any:
        def serve(request: WerkzeugRequest) -> Response:
            headers = {k.lower(): v for k, v in request.headers.items()}
            ours = Request(request.method, request.path, request.query_string.decode(), headers, request.get_data(), "")
            reply = handler(ours)
            return Response(reply.body, reply.status, headers=reply.headers)

        return serve

    for path, handler in extras.endpoints().items():
        if path.startswith("/_demo/"):
            httpserver.expect_request(path).respond_with_handler(adapt(handler))
    echo = re.compile("^" + re.escape(extras.ECHO))  # the demo partners' proxy base URLs
    httpserver.expect_request(echo).respond_with_handler(adapt(extras.demo_echo))
    return httpserver.url_for("").rstrip("/")


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch, demo_partners: str) -> Iterator[dict[str, Any]]:
    """moto with the template's resources; the environment every function gets. mock_aws does not intercept
    when AWS_ENDPOINT_URL is set, so it is removed here."""
    for name in ("AWS_ENDPOINT_URL", "AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", resources.REGION)
    monkeypatch.setenv("AWS_REGION", resources.REGION)
    monkeypatch.setenv("POWERTOOLS_TRACE_DISABLED", "true")
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "true")
    moto_atomic.install()
    with mock_aws():
        tpl = template.load()
        resolver = resources.provision(tpl, lambda s: boto3.client(s, region_name=resources.REGION), "unit")
        env = resources.function_environment(tpl, resolver)
        env.update(GRANTLINK_CONNECT_BASE_URL=CONNECT, GRANTLINK_LOCAL_DEMO="true")
        env.update(GRANTLINK_DEMO_BASE_URL=demo_partners, GRANTLINK_DEMO_OAUTH_URL=f"{demo_partners}/oauth")
        env.update(GRANTLINK_ALLOW_PRIVATE_TARGETS="true")
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        _reset_caches()
        yield {"env": env, "resolver": resolver}
    _reset_caches()


@pytest.fixture
def dynamodb(aws_env: dict[str, Any]) -> Any:
    return boto3.client("dynamodb", region_name=resources.REGION)


@pytest.fixture
def table_items(dynamodb: Any, aws_env: dict[str, Any]) -> Any:
    """A function returning every item in the main table (a Scan: tests only)."""

    def scan() -> list[dict[str, Any]]:
        pages = dynamodb.get_paginator("scan").paginate(TableName=aws_env["env"]["GRANTLINK_TABLE"])
        return [item for page in pages for item in page["Items"]]

    return scan


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FrozenClock:
    frozen = FrozenClock(START)
    monkeypatch.setattr("grantlink.clock.now", frozen)
    return frozen


@pytest.fixture
def delivered_events(aws_env: dict[str, Any]) -> Any:
    """A function returning the events delivered to the bus so far (a rule routes them to an SQS queue)."""
    import json

    events, sqs = boto3.client("events"), boto3.client("sqs")
    queue = sqs.create_queue(QueueName="delivered-events")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    bus = aws_env["env"]["GRANTLINK_EVENT_BUS"]
    events.put_rule(Name="everything", EventBusName=bus, EventPattern=json.dumps({"source": ["grantlink"]}))
    events.put_targets(Rule="everything", EventBusName=bus, Targets=[{"Id": "q", "Arn": arn}])
    seen: list[dict[str, Any]] = []

    def read() -> list[dict[str, Any]]:
        while True:
            batch = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10).get("Messages", [])
            if not batch:
                return seen
            seen.extend(json.loads(m["Body"]) for m in batch)
            sqs.delete_message_batch(
                QueueUrl=queue,
                Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(batch)],
            )

    return read


@pytest.fixture
def provider_server(httpserver: HTTPServer, aws_env: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> Any:
    """A fake OAuth partner (id 7777) on 127.0.0.1, and tenant A's OAuth app for it."""
    from tests.unit.oauth_fakes import fake_partner

    return fake_partner(httpserver, monkeypatch)


# --- grantlink.crypto against a bare moto KMS (no template resources) ------------------------------------------


@pytest.fixture
def bare_aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # mock_aws does not intercept requests to an explicitly configured endpoint.
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_KMS", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.setenv(name, "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    with mock_aws():
        yield


@pytest.fixture
def key_arn(bare_aws: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A KMS key configured as grantlink's key."""
    from grantlink import config, crypto

    arn = new_key()
    monkeypatch.setenv("GRANTLINK_KMS_KEY_ID", arn)
    monkeypatch.setenv("GRANTLINK_TABLE", "t")
    monkeypatch.setenv("GRANTLINK_CONNECT_BASE_URL", "http://x")
    config.reset()
    crypto.reset()
    yield arn
    config.reset()
    crypto.reset()


@pytest.fixture
def kms_session(bare_aws: None) -> botocore.session.Session:
    """The botocore session the Crypto under test uses (its hooks see every KMS call)."""
    return botocore.session.Session()


@pytest.fixture
def kms(kms_session: botocore.session.Session) -> FakeKms:
    return FakeKms(kms_session)


@pytest.fixture
def crypt(key_arn: str, kms_session: botocore.session.Session, kms: FakeKms) -> Crypto:
    """A grantlink.crypto.Crypto under `key_arn`, on `kms_session`."""
    from grantlink import crypto

    return crypto.Crypto(botocore_session=kms_session)
