"""Webhooks over real HTTP against the local stack: real events (a link completed on the connect page, a credential
deleted) go from the bus through the webhook queue to the delivery function, which sends them signed to the stack's
own receiver, `/_local/webhook-sink` (private targets are allowed locally); the README's code verifies them."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import pytest

from tests.stack import FORM_SECRET, auth, http, new_link, new_tenant, submit, url
from tests.unit.test_webhooks import readme_verify

pytestmark = pytest.mark.integration

ARRIVES_WITHIN = 20.0  # seconds: the local stack polls the webhook queue every second


def register(stack: dict[str, Any], key: str) -> tuple[str, str]:
    """Point the tenant's webhook at a box of its own in the stack's sink; returns (box, the signing secret)."""
    box = uuid.uuid4().hex
    answer = http.put(url(stack, "/webhooks"), json={"url": sink(stack, box)}, headers=auth(stack, key))
    assert answer.status_code == 201, answer.text
    return box, str(answer.json()["data"]["secret"])


def sink(stack: dict[str, Any], box: str) -> str:
    return url(stack, f"/_local/webhook-sink?box={box}")


def received(stack: dict[str, Any], box: str) -> list[dict[str, Any]]:
    answer = http.get(sink(stack, box))
    assert answer.status_code == 200
    return list(answer.json()["deliveries"])


def wait_for(stack: dict[str, Any], box: str, *types: str) -> list[dict[str, Any]]:
    """The box's deliveries once one of each event type has arrived (bounded: fails after ARRIVES_WITHIN)."""
    deadline = time.monotonic() + ARRIVES_WITHIN
    while True:
        got = received(stack, box)
        if set(types) <= {json.loads(d["body"])["type"] for d in got}:
            return got
        assert time.monotonic() < deadline, f"waited for {types}, got {[json.loads(d['body'])['type'] for d in got]}"
        time.sleep(0.2)


def connected(stack: dict[str, Any], key: str) -> tuple[dict[str, Any], str]:
    """A link completed on the connect page (share.completed); returns the link and the credential's id."""
    link = new_link(stack, key=key)
    assert submit(stack, link, apiKey=FORM_SECRET).status_code == 200
    shown = http.get(url(stack, f"/credentials/grant-access-sharing/{link['id']}"), headers=auth(stack, key))
    return link, str(shown.json()["data"]["credentialId"])


def deliveries(stack: dict[str, Any], key: str) -> list[dict[str, Any]]:
    answer = http.get(url(stack, "/webhooks/deliveries"), headers=auth(stack, key))
    assert answer.status_code == 200, answer.text
    return list(answer.json()["data"])


def settled(stack: dict[str, Any], key: str) -> list[dict[str, Any]]:
    """The tenant's deliveries once none is pending (bounded): the receiver has the request a moment before the
    delivery function records its answer."""
    deadline = time.monotonic() + ARRIVES_WITHIN
    while True:
        listed = deliveries(stack, key)
        if all(d["status"] != "pending" for d in listed):
            return listed
        assert time.monotonic() < deadline, listed
        time.sleep(0.2)


def test_real_events_arrive_signed_and_are_listed_as_delivered(stack: dict[str, Any]) -> None:
    """Given a tenant whose webhook points at the stack's sink, when a customer completes a link and the tenant then
    deletes the credential, then the sink receives share.completed and credential.deleted, each once, about that
    credential, each verified by the README's code with the secret PUT /webhooks showed (and not with another), and
    GET /webhooks/deliveries lists both as delivered with the same ids."""
    key = new_tenant(stack, "webhooks-http")
    box, secret = register(stack, key)
    link, credential_id = connected(stack, key)
    assert http.delete(url(stack, f"/credentials/{credential_id}"), headers=auth(stack, key)).status_code == 200
    got = wait_for(stack, box, "share.completed", "credential.deleted")
    verify = readme_verify()
    bodies = [json.loads(d["body"]) for d in got]
    assert sorted(b["type"] for b in bodies) == ["credential.deleted", "share.completed"]
    assert all(b["credentialId"] == credential_id for b in bodies)
    assert next(b for b in bodies if b["type"] == "share.completed")["linkId"] == link["id"]
    for delivery in got:
        assert delivery["headers"]["webhook-id"] == json.loads(delivery["body"])["eventId"]
        assert verify(secret, delivery["headers"], delivery["body"].encode())
        assert not verify("whsec_" + "A" * 43 + "=", delivery["headers"], delivery["body"].encode())
    listed = {d["id"]: d for d in settled(stack, key)}
    assert set(listed) == {d["headers"]["webhook-id"] for d in got}
    assert {(d["status"], d["attempts"], d["lastStatus"]) for d in listed.values()} == {("delivered", 1, 200)}


def test_each_tenant_receives_and_lists_only_its_own_events(stack: dict[str, Any]) -> None:
    """Given tenants A and B, each with a webhook to a box of its own, when each completes a link, then A's box holds
    only A's event and B's only B's, and each tenant's GET /webhooks/deliveries lists only its own delivery; a third
    tenant without a webhook lists none."""
    key_a, key_b, key_c = (new_tenant(stack, f"webhooks-{n}") for n in "abc")
    (box_a, _), (box_b, _) = register(stack, key_a), register(stack, key_b)
    _, credential_a = connected(stack, key_a)
    _, credential_b = connected(stack, key_b)
    wait_for(stack, box_a, "share.completed"), wait_for(stack, box_b, "share.completed")
    listed_a, listed_b = settled(stack, key_a), settled(stack, key_b)  # both delivered: nothing more is coming
    got_a, got_b = received(stack, box_a), received(stack, box_b)
    assert [json.loads(d["body"])["credentialId"] for d in got_a] == [credential_a]
    assert [json.loads(d["body"])["credentialId"] for d in got_b] == [credential_b]
    assert [d["id"] for d in listed_a] == [got_a[0]["headers"]["webhook-id"]]
    assert [d["id"] for d in listed_b] == [got_b[0]["headers"]["webhook-id"]]
    assert deliveries(stack, key_c) == []
