"""A rotated refresh token is never lost (issue 10): failures and concurrent writers *between* the token call and
the write that stores its answer, against a partner that rotates refresh tokens on every use and revokes the whole
grant when an old one is presented again (the strict mode of tests/unit/oauth_fakes.py).

Each test lets something land right after the partner answered (the token call returned, nothing stored yet),
then checks the credential still works: the next refresh presents the newest refresh token, the grant is not
revoked, and the credential stays active."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import replace
from typing import Any

import pytest
from botocore.client import BaseClient
from botocore.exceptions import ClientError

from grantlink import connections, oauth, renewal, testing
from grantlink.models import CredentialState, PatchCredentialRequest
from grantlink.store import default as default_store
from tests.helpers import FrozenClock, queued, work
from tests.unit.oauth_fakes import A, FakeAuthorizationServer, connected_credential, expire_access_token


@pytest.fixture
def strict(provider_server: FakeAuthorizationServer, monkeypatch: pytest.MonkeyPatch) -> FakeAuthorizationServer:
    """The fake partner in strict rotation mode, and write retries without waiting."""
    provider_server.strict = True
    monkeypatch.setattr(oauth, "WRITE_BACKOFF_SECONDS", 0.0)
    return provider_server


def after_token_call(monkeypatch: pytest.MonkeyPatch, action: Callable[[], None]) -> None:
    """Run `action` once, right after the partner answers a refresh and before grantlink stores the answer."""
    real = oauth._refresh_call
    done: list[bool] = []

    def refresh_then_act(*args: Any) -> dict[str, Any]:
        token = real(*args)
        if not done:
            done.append(True)
            action()
        return token

    monkeypatch.setattr(oauth, "_refresh_call", refresh_then_act)


@contextmanager
def failing(service: str, code: str, operations: set[str] | None = None) -> Iterator[list[str]]:
    """Every call to `service` (or to its `operations`) fails with `code` while inside; yields the calls refused."""
    real = BaseClient._make_api_call
    refused: list[str] = []

    def call(self: BaseClient, operation: str, params: dict[str, Any]) -> Any:
        if self.meta.service_model.service_name == service and (operations is None or operation in operations):
            refused.append(operation)
            raise ClientError({"Error": {"Code": code, "Message": "injected"}}, operation)
        return real(self, operation, params)

    BaseClient._make_api_call = call  # type: ignore[method-assign]
    try:
        yield refused
    finally:
        BaseClient._make_api_call = real  # type: ignore[method-assign]


def refresh_now(credential_id: str) -> dict[str, Any]:
    credential = default_store().get_credential(credential_id)
    assert credential is not None
    return oauth.refresh(credential, default_store())


def assert_next_refresh_uses_the_rotated_token(server: FakeAuthorizationServer, credential_id: str) -> None:
    """The next refresh that calls the partner presents the newest refresh token it issued (the first refresh may
    only store tokens that were kept aside and are still fresh), and the credential keeps working."""
    for _ in range(2):
        calls, newest = len(server.calls), server.latest_refresh_token()
        expire_access_token(credential_id)
        values = refresh_now(credential_id)
        if len(server.calls) > calls:
            break
    assert len(server.calls) == calls + 1 and server.calls[-1]["refresh_token"] == newest, "a retired token was sent"
    assert not server.revoked
    assert values["accessToken"] == server.issued[-1]["access_token"]
    credential = default_store().get_credential(credential_id)
    assert credential is not None and credential.state == CredentialState.ACTIVE
    assert oauth.open_values(credential)["refreshToken"] == server.latest_refresh_token()


def test_a_patch_between_the_token_call_and_the_write_keeps_both(
    strict: FakeAuthorizationServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Given a due credential, when a PATCH renames it while its refresh is in flight,
    then the rename and the rotated tokens are both stored, and the next refresh uses the rotated token."""
    credential_id = connected_credential(strict)
    expire_access_token(credential_id)
    rename = PatchCredentialRequest.model_validate({"title": "Renamed meanwhile"})
    after_token_call(monkeypatch, lambda: connections.update_credential(A, credential_id, rename))
    refresh_now(credential_id)
    credential = default_store().get_credential(credential_id)
    assert credential is not None and credential.title == "Renamed meanwhile"
    assert oauth.open_values(credential)["refreshToken"] == strict.latest_refresh_token()
    assert_next_refresh_uses_the_rotated_token(strict, credential_id)


def test_a_connection_test_result_between_the_token_call_and_the_write_keeps_both(
    strict: FakeAuthorizationServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Given a due credential, when a connection test's result is written while its refresh is in flight,
    then the result and the rotated tokens are both stored."""
    credential_id = connected_credential(strict)
    expire_access_token(credential_id)
    result = testing.CheckResult(True, "ok", 200, 5, "fine", None, "2026-12-02T00:00:00Z")
    after_token_call(monkeypatch, lambda: connections._record_test(A, None, result, default_store(), credential_id))
    refresh_now(credential_id)
    credential = default_store().get_credential(credential_id)
    assert credential is not None and credential.last_test and credential.last_test["category"] == "ok"
    assert_next_refresh_uses_the_rotated_token(strict, credential_id)


def test_a_back_off_write_between_the_token_call_and_the_write_is_superseded(
    strict: FakeAuthorizationServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Given a due credential, when another worker records a failed attempt while this refresh is in flight,
    then the refresh still stores its tokens, and the back-off it overtook is cleared."""
    credential_id = connected_credential(strict)
    expire_access_token(credential_id)
    seen = default_store().get_credential(credential_id)
    assert seen is not None
    after_token_call(monkeypatch, lambda: renewal._record_failure(seen, default_store(), reason="other worker"))
    refresh_now(credential_id)
    credential = default_store().get_credential(credential_id)
    assert credential is not None and credential.refresh_failures == 0 and credential.retry_at is None
    assert_next_refresh_uses_the_rotated_token(strict, credential_id)


def test_kms_failing_right_after_the_token_call_loses_nothing(
    strict: FakeAuthorizationServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Given a due credential, when KMS starts refusing every call right after the partner answered,
    then the answer is still sealed (with the data key fetched before the call) and stored."""
    credential_id = connected_credential(strict)
    expire_access_token(credential_id)
    with ExitStack() as outages:
        refused: list[str] = []
        after_token_call(
            monkeypatch, lambda: refused.extend(outages.enter_context(failing("kms", "ThrottlingException")))
        )
        refresh_now(credential_id)
    assert refused == [], "sealing the refreshed tokens called KMS after the token call"
    assert_next_refresh_uses_the_rotated_token(strict, credential_id)


def test_dynamodb_refusing_the_write_keeps_the_tokens_beside_the_credential(
    strict: FakeAuthorizationServer, monkeypatch: pytest.MonkeyPatch, table_items: Any, clock: FrozenClock
) -> None:
    """Given a due credential, when DynamoDB throttles every write right after the partner answered,
    then the rotated tokens are kept aside (sealed), and the next refresh uses them."""
    credential_id = connected_credential(strict)
    expire_access_token(credential_id)
    outage = failing("dynamodb", "ProvisionedThroughputExceededException", {"TransactWriteItems", "UpdateItem"})
    after_token_call(monkeypatch, outage.__enter__)
    try:
        values = refresh_now(credential_id)
    finally:
        outage.__exit__(None, None, None)
    assert values["accessToken"] == strict.issued[-1]["access_token"]  # the caller still gets the fresh token
    kept = [i for i in table_items() if i["sk"]["S"] == "KEPT"]
    assert len(kept) == 1 and strict.latest_refresh_token().encode() not in kept[0]["secret"]["B"]
    clock.advance(seconds=oauth.LEASE_SECONDS + 1)  # the lease it could not release runs out
    assert_next_refresh_uses_the_rotated_token(strict, credential_id)
    assert not [i for i in table_items() if i["sk"]["S"] == "KEPT"], "the kept tokens were not cleared once used"


def test_a_table_that_cannot_be_written_at_all_hands_the_tokens_to_the_queue(
    strict: FakeAuthorizationServer, monkeypatch: pytest.MonkeyPatch, aws_env: Any, clock: FrozenClock
) -> None:
    """Given a due credential, when no write to the table succeeds after the partner answered,
    then the sealed tokens go to the renewal queue, the worker stores them, and the next refresh uses them."""
    credential_id = connected_credential(strict)
    expire_access_token(credential_id)
    outage = failing("dynamodb", "InternalServerError", {"TransactWriteItems", "UpdateItem", "PutItem", "GetItem"})
    after_token_call(monkeypatch, outage.__enter__)
    try:
        values = refresh_now(credential_id)
    finally:
        outage.__exit__(None, None, None)
    assert values["accessToken"] == strict.issued[-1]["access_token"]
    messages = queued(aws_env)
    bodies = [json.loads(m["Body"]) for m in messages]
    assert [b["sk"] for b in bodies] == ["KEPT"]
    sealed = base64.b64decode(bodies[0]["kept"]["secret"])
    assert strict.latest_refresh_token().encode() not in sealed  # sealed, never plaintext on the queue
    assert work(messages) == {"batchItemFailures": []}
    clock.advance(seconds=oauth.LEASE_SECONDS + 1)  # the lease it could not release runs out
    assert_next_refresh_uses_the_rotated_token(strict, credential_id)


def test_tokens_kept_aside_are_ignored_after_a_reconnect(
    strict: FakeAuthorizationServer, monkeypatch: pytest.MonkeyPatch, table_items: Any, clock: FrozenClock
) -> None:
    """Given tokens kept aside by a refresh that could not write, when the credential is reconnected meanwhile,
    then the next refresh uses the reconnected grant, not the stale kept tokens."""
    credential_id = connected_credential(strict)
    expire_access_token(credential_id)
    outage = failing("dynamodb", "ProvisionedThroughputExceededException", {"TransactWriteItems", "UpdateItem"})
    after_token_call(monkeypatch, outage.__enter__)
    try:
        refresh_now(credential_id)
    finally:
        outage.__exit__(None, None, None)
    clock.advance(seconds=oauth.LEASE_SECONDS + 1)
    reconnect(credential_id)
    strict.strict = False  # the reconnected grant's refresh token is the one stored now
    refresh_now(credential_id)
    stored = default_store().get_credential(credential_id)
    assert stored is not None
    assert strict.calls[-1]["refresh_token"] != strict.issued[-2].get("refresh_token")
    assert not [i for i in table_items() if i["sk"]["S"] == "KEPT"]


def reconnect(credential_id: str) -> None:
    """A whole-item write of a new secret, as completing a reauthorize link makes (here: the same values)."""
    store = default_store()
    credential = store.get_credential(credential_id)
    assert credential is not None
    store.transact(*store.credential_write(credential, replace(credential, version=credential.version + 1)))


def test_a_waiter_does_not_take_a_metadata_change_for_the_refresh(
    provider_server: FakeAuthorizationServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Given another caller holding the refresh lease, when only the title changes and the holder lets go without
    storing a token, then a waiting caller reports a transient failure instead of returning the expired token."""
    credential_id = connected_credential(provider_server)
    expire_access_token(credential_id)
    credential = default_store().get_credential(credential_id)
    assert credential is not None
    store = default_store()
    assert store.take_lease(credential_id, "holder", "2999-01-01T00:00:00Z", "2000-01-01T00:00:00Z")
    monkeypatch.setattr(oauth, "WAIT_FOR_REFRESH_SECONDS", 2.0)

    def holder_gives_up(seconds: float) -> None:
        connections.update_credential(A, credential_id, PatchCredentialRequest.model_validate({"title": "x"}))
        store.release_lease(credential_id, "holder")

    monkeypatch.setattr(oauth.time, "sleep", holder_gives_up)
    with pytest.raises(oauth.errors.ServiceUnavailable):
        oauth.refresh(credential, store)


def test_a_failure_is_not_stamped_on_a_credential_refreshed_meanwhile(provider_server: FakeAuthorizationServer) -> None:
    """Given a worker whose attempt failed, when another caller refreshed the credential in the meantime,
    then recording the failure changes nothing: no back-off, no failure count."""
    credential_id = connected_credential(provider_server)
    expire_access_token(credential_id)
    seen = default_store().get_credential(credential_id)
    assert seen is not None
    refresh_now(credential_id)
    assert renewal._record_failure(seen, default_store(), reason="timeout") == "skipped"
    credential = default_store().get_credential(credential_id)
    assert credential is not None and credential.refresh_failures == 0 and credential.retry_at is None


def test_kept_tokens_that_do_not_decrypt_do_not_break_the_credential(
    strict: FakeAuthorizationServer, table_items: Any
) -> None:
    """Given a kept-token item whose ciphertext is damaged, when the credential is refreshed,
    then the stored refresh token is used as before, and the damaged item is removed."""
    credential_id = connected_credential(strict)
    credential = default_store().get_credential(credential_id)
    assert credential is not None
    damaged = bytearray(credential.secret)
    damaged[-5] ^= 0xFF
    default_store().put_kept_token(
        {
            "type": "kept_token",
            "credentialId": credential_id,
            "secret": bytes(damaged),
            "replaces": credential.secret_id,
        }
    )
    assert_next_refresh_uses_the_rotated_token(strict, credential_id)
    assert not [i for i in table_items() if i["sk"]["S"] == "KEPT"]


def _timeout(code_uri: str) -> float:
    from tests.helpers import _template

    resources = _template()["Resources"]
    (found,) = [r["Properties"] for r in resources.values() if r["Properties"].get("CodeUri") == code_uri]
    return float(found.get("Timeout", _template()["Globals"]["Function"]["Timeout"]))


@pytest.mark.parametrize(
    ("code_uri", "after_the_refresh"),
    [
        ("functions/credentials", 0.0),  # the secret read: a refresh, then the answer
        ("functions/oauth_callback", 0.0),  # the code exchange (same deadline), then the grant's write
        ("functions/connection_test", "test"),  # a refresh, then the partner's test request
    ],
)
def test_a_function_that_refreshes_outlives_its_worst_refresh(code_uri: str, after_the_refresh: Any) -> None:
    """Given the template's timeouts and the default deadlines, then every function that may call a token endpoint
    has time for the token call, every write retry and whatever follows: Lambda never cuts a refresh off between
    the partner's answer and the write (the tokens would be lost), and the lease outlasts it all."""
    from grantlink import config

    defaults = config.Settings.model_validate({"GRANTLINK_TABLE": "t"})
    backoff = sum(oauth.WRITE_BACKOFF_SECONDS * 2**attempt for attempt in range(oauth.WRITE_ATTEMPTS))
    writes = backoff * 2  # the write's retries, then keeping the tokens aside
    then = defaults.test_connect_timeout + defaults.test_read_timeout if after_the_refresh == "test" else 0.0
    worst = defaults.token_deadline_seconds + writes + then
    assert worst < _timeout(code_uri)
    assert defaults.token_deadline_seconds + writes < oauth.LEASE_SECONDS
    assert defaults.token_deadline_seconds + writes < renewal.RECORD_RESERVE_SECONDS


def test_tokens_kept_aside_raise_an_alarm() -> None:
    """Given the template, then the metric counted when refreshed tokens are kept aside has an alarm on it, in the
    namespace and service dimension Powertools publishes it under."""
    from tests.helpers import _template

    template = _template()
    env = template["Globals"]["Function"]["Environment"]["Variables"]
    (alarm,) = [
        r["Properties"]
        for r in template["Resources"].values()
        if r["Type"] == "AWS::CloudWatch::Alarm" and r["Properties"].get("MetricName") == oauth.KEPT_ASIDE_METRIC
    ]
    assert alarm["Namespace"] == env["POWERTOOLS_METRICS_NAMESPACE"]
    assert alarm["Dimensions"] == [{"Name": "service", "Value": env["POWERTOOLS_SERVICE_NAME"]}]
    assert alarm["Threshold"] == 0 and alarm["ComparisonOperator"] == "GreaterThanThreshold"
