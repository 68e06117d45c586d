"""A link's own `webhookUrl`: events about that link go there too, signed with the tenant's webhook secret, beside
the tenant's endpoint. Through the handlers with moto underneath and real receivers on 127.0.0.1 (pytest-httpserver),
as in test_webhooks.py, whose helpers these tests reuse."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit

import pytest
from pytest_httpserver import HTTPServer

from grantlink import config, connect, tenants, webhooks
from grantlink.store import default as default_store
from tests.helpers import SECRET, FrozenClock, create_link, run_jobs
from tests.unit.test_webhooks import A, Receiver, deliver, deliveries, emit, readme_verify, register


def allow(*urls: str) -> None:
    """Tenant A exists and its redirect allow-list holds the origins of `urls`."""
    default_store().put_tenant_with_key({"tenantId": A, "name": "a"}, "unused", {"tenantId": A})
    tenants.set_redirect_origins(A, tuple({f"{urlsplit(u).scheme}://{urlsplit(u).netloc}" for u in urls}))


def link_with(webhook_url: str | None) -> tuple[int, dict[str, Any]]:
    """POST /credentials/grant-access-sharing as tenant A, with `webhookUrl` when given."""
    body = {"partnerId": 9001, "title": "ACME CRM", **({"webhookUrl": webhook_url} if webhook_url else {})}
    status, answer, _ = create_link(body)
    return status, answer


def completed(webhook_url: str | None) -> dict[str, Any]:
    """A link (with `webhookUrl` when given) that a customer completed: share.completed is on the bus."""
    status, answer = link_with(webhook_url)
    assert status == 201, answer
    connect.submit(answer["data"]["id"], answer["data"]["token"], {"apiKey": SECRET})
    return dict(answer["data"])


def test_a_link_s_events_reach_its_webhook_url_signed_with_the_tenant_secret(
    aws_env: Any, httpserver: HTTPServer
) -> None:
    """Given tenant A's endpoint and a link carrying its own webhookUrl, when the customer completes it, then both
    receivers get share.completed once, with one webhook-id, verified by the README's code with the tenant's secret;
    the deliveries list shows both (the link's with its url); the link's answer shows its webhookUrl."""
    endpoint, own = Receiver(httpserver, "/hooks"), Receiver(httpserver, "/link-hooks")
    secret = register(endpoint)
    allow(own.url)
    link = completed(own.url)
    deliver(aws_env)
    assert link["webhookUrl"] == own.url
    (to_endpoint,), (to_link,) = endpoint.got, own.got
    assert to_link["body"] == to_endpoint["body"] and json.loads(to_link["body"])["linkId"] == link["id"]
    assert to_link["headers"]["webhook-id"] == to_endpoint["headers"]["webhook-id"]
    assert readme_verify()(secret, to_link["headers"], to_link["body"])
    event_id = to_link["headers"]["webhook-id"]
    listed = {d["id"]: (d["eventId"], d["url"], d["status"]) for d in deliveries()}
    assert listed == {event_id: (event_id, None, "delivered"), f"{event_id}.link": (event_id, own.url, "delivered")}


def test_other_events_do_not_reach_a_link_s_webhook_url(aws_env: Any, httpserver: HTTPServer) -> None:
    """Given a link with its own webhookUrl, when another link (without one) is completed and a credential event
    without a linkId is emitted, then only the tenant's endpoint gets them."""
    endpoint, own = Receiver(httpserver, "/hooks"), Receiver(httpserver, "/link-hooks")
    register(endpoint)
    allow(own.url)
    assert link_with(own.url)[0] == 201
    completed(None)
    emit()
    deliver(aws_env)
    assert len(endpoint.got) == 2 and own.got == []


def test_a_revoked_link_s_event_reaches_its_webhook_url(aws_env: Any, httpserver: HTTPServer) -> None:
    """Given a waiting link with its own webhookUrl, when the tenant revokes it, then share.revoked reaches it."""
    from tests.helpers import event, invoke

    endpoint, own = Receiver(httpserver, "/hooks"), Receiver(httpserver, "/link-hooks")
    register(endpoint)
    allow(own.url)
    link = link_with(own.url)[1]["data"]
    status, _, _ = invoke("share_links", event("revoke_link", tenant=A, path_id=link["id"]))
    assert status == 200
    deliver(aws_env)
    assert [json.loads(g["body"])["type"] for g in own.got] == ["share.revoked"]


def test_a_failing_link_url_is_retried_and_never_opens_the_tenant_s_circuit(
    aws_env: Any, httpserver: HTTPServer, clock: FrozenClock
) -> None:
    """Given a link webhookUrl answering 503 (more times than the breaker's threshold) then 200, when its deliveries
    run their schedule, then each is retried with the same webhook-id until delivered, and the tenant endpoint's
    failure count stays 0 (its own deliveries are never held)."""
    endpoint = Receiver(httpserver, "/hooks")
    own = Receiver(httpserver, "/link-hooks", *[503] * webhooks.BREAKER_THRESHOLD, 200)
    register(endpoint)
    allow(own.url)
    for _ in range(webhooks.BREAKER_THRESHOLD):
        completed(own.url)
    deliver(aws_env, one_at_a_time=True)
    assert len(own.got) == webhooks.BREAKER_THRESHOLD and len(endpoint.got) == webhooks.BREAKER_THRESHOLD
    assert (endpoint_state := webhooks.find_endpoint(A)) is not None and endpoint_state.failures == 0
    clock.advance(seconds=webhooks.SCHEDULE[0])
    run_jobs(aws_env)
    retried = own.got[webhooks.BREAKER_THRESHOLD :]
    assert sorted(g["headers"]["webhook-id"] for g in retried) == sorted(
        g["headers"]["webhook-id"] for g in own.got[: webhooks.BREAKER_THRESHOLD]
    )
    assert {d["status"] for d in deliveries()} == {"delivered"}


def test_a_link_webhook_needs_the_tenant_s_webhook(aws_env: Any, httpserver: HTTPServer) -> None:
    """Given an allow-listed webhookUrl but no webhook registered by the tenant, then the link is refused with 422
    webhook_not_configured (there is no secret to sign with) and not created."""
    own = Receiver(httpserver, "/link-hooks")
    allow(own.url)
    status, answer = link_with(own.url)
    assert (status, answer["error"]["code"]) == (422, "webhook_not_configured")
    assert default_store().list_links(A, None, 10, None)[0] == []


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("https://elsewhere.example.com/hooks", "https://app.example.com"),  # not on the allow-list
        ("https://10.0.0.8/hooks", "https://10.0.0.8"),  # allow-listed, but a private address
    ],
)
def test_a_link_webhook_url_off_the_allow_list_or_private_is_refused(
    aws_env: Any, httpserver: HTTPServer, monkeypatch: pytest.MonkeyPatch, url: str, allowed: str
) -> None:
    """Given the tenant's webhook registered and private targets not allowed (as on AWS), a webhookUrl whose origin
    is not on the redirect allow-list, or that points at a private address, is a 422 webhook_url_not_allowed."""
    register(Receiver(httpserver, "/hooks"))
    monkeypatch.setenv("GRANTLINK_ALLOW_PRIVATE_TARGETS", "false")
    config.reset()
    allow(allowed)
    status, answer = link_with(url)
    assert (status, answer["error"]["code"]) == (422, "webhook_url_not_allowed")
