"""The operator's default OAuth app per partner, from configuration (grantlink.oauth_apps): a Secrets Manager
secret named by GRANTLINK_DEFAULT_OAUTH_APPS_SECRET, used wherever an app is needed (link creation, start,
callback, refresh) while the tenant has no app of its own — the tenant's own app always wins — shown by
GET /partners/{id}/oauth-app with `source`, never removed by DELETE, never logged, never written to the table.

Driven against moto (aws_env) and the fake OAuth partner 7777 (provider_server), whose client authentication is
HTTP Basic: the client id and secret a token request carried are read from its Authorization header."""

from __future__ import annotations

import base64
import json
import logging
import sys
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import boto3
import pytest

from grantlink import aws, config, connections, errors, links, oauth, oauth_apps, observability
from grantlink.models import CreateLinkRequest, LinkStatus, OAuthAppRequest
from tests.helpers import event, invoke
from tests.unit.oauth_fakes import (
    CLIENT_SECRET,
    PARTNER_ID,
    REDIRECT,
    A,
    FakeAuthorizationServer,
    expire_access_token,
    finish,
)

SECRET_NAME = "grantlink/default-oauth-apps"
OPERATOR_CLIENT = "operator-client-7777"
OPERATOR_SECRET = "operator-client-secret-QmF5c2lkZQ"
OPERATOR_APPS = {str(PARTNER_ID): {"clientId": OPERATOR_CLIENT, "clientSecret": OPERATOR_SECRET, "scopes": ["read"]}}
SECRETS = (OPERATOR_SECRET, base64.b64encode(f"{OPERATOR_CLIENT}:{OPERATOR_SECRET}".encode()).decode())


# --- fixtures and helpers -----------------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def fresh_operator_apps() -> Iterator[None]:
    """Each test reads the operator's apps anew (a new process would), and leaves nothing cached behind."""
    oauth_apps.reset()
    yield
    oauth_apps.reset()


@pytest.fixture
def configure(aws_env: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> Callable[[Any], str]:
    """Store `document` (a dict as JSON, or a string as is) as the operator's secret in moto and point
    GRANTLINK_DEFAULT_OAUTH_APPS_SECRET at it; returns the secret's ARN."""

    def store(document: Any) -> str:
        text = document if isinstance(document, str) else json.dumps(document)
        arn = str(boto3.client("secretsmanager").create_secret(Name=SECRET_NAME, SecretString=text)["ARN"])
        monkeypatch.setenv("GRANTLINK_DEFAULT_OAUTH_APPS_SECRET", arn)
        config.reset()
        return arn

    return store


@pytest.fixture
def secret_reads(aws_env: dict[str, Any]) -> list[str]:
    """Every GetSecretValue grantlink makes, by SecretId (a hook on grantlink's own Secrets Manager client)."""
    reads: list[str] = []
    aws.client("secretsmanager").meta.events.register(
        "before-parameter-build.secrets-manager.GetSecretValue", lambda params, **_: reads.append(params["SecretId"])
    )
    return reads


def no_tenant_app() -> None:
    """provider_server gave tenant A its own app for 7777: remove it, so only the operator's default is left."""
    oauth.delete_app(A, PARTNER_ID)


def basic_client(request: Any) -> tuple[str, str]:
    """(client id, client secret) from a token request's HTTP Basic Authorization header."""
    scheme, _, encoded = request.headers.get("Authorization", "").partition(" ")
    assert scheme == "Basic", request.headers
    client_id, _, secret = base64.b64decode(encoded).decode().partition(":")
    return client_id, secret


def token_requests(server: FakeAuthorizationServer) -> list[tuple[str, tuple[str, str]]]:
    """(grant type, (client id, client secret)) of every token request the fake partner received, in order."""
    return [
        (parse_qs(request.get_data(as_text=True))["grant_type"][0], basic_client(request))
        for request, _ in server.server.log
        if request.path == "/token"
    ]


def api_link(partner: int = PARTNER_ID) -> tuple[int, dict[str, Any]]:
    """POST /credentials/grant-access-sharing through the share_links handler, as tenant A."""
    body = {"partnerId": partner, "title": "Fake CRM"}
    status, answer, _ = invoke("share_links", event("create_link", tenant=A.tenant_id, body=body))
    return status, answer


def oauth_app_api(method: str, partner: int = PARTNER_ID, body: Any = None) -> tuple[int, dict[str, Any]]:
    """GET, PUT or DELETE /partners/{id}/oauth-app through the partners handler, as tenant A."""
    changes: dict[str, Any] = {"tenant": A.tenant_id, "path_id": str(partner)}
    if body is not None:
        changes["body"] = body
    evt = event("get_partner", **changes)
    path = f"/partners/{partner}/oauth-app"
    evt["routeKey"] = evt["requestContext"]["routeKey"] = f"{method} /partners/{{id}}/oauth-app"
    evt["rawPath"] = evt["requestContext"]["http"]["path"] = path
    evt["requestContext"]["http"]["method"] = method
    status, answer, _ = invoke("partners", evt)
    return status, answer


def start(link_id: str, token: str) -> dict[str, list[str]]:
    """POST /connect/oauth/start's use case: the authorize URL's query."""
    return parse_qs(urlsplit(oauth.start(link_id, token, {}, REDIRECT)).query)


def connect_through_the_api() -> tuple[str, dict[str, list[str]]]:
    """A link made through the API, started and finished; returns (the credential id, the authorize query)."""
    status, body = api_link()
    assert status == 201, body
    query = start(body["data"]["id"], body["data"]["token"])
    assert finish(query).connected
    credential_id = links.get_link(A, body["data"]["id"]).credential_id
    assert credential_id
    return credential_id, query


def dump(items: Any) -> str:
    return json.dumps(items, default=str)


# --- the operator's app in use ------------------------------------------------------------------------------------


def test_a_tenant_without_its_own_app_connects_with_the_operators_app(
    provider_server: FakeAuthorizationServer, configure: Callable[[Any], str], table_items: Any
) -> None:
    no_tenant_app()
    configure(OPERATOR_APPS)
    credential_id, query = connect_through_the_api()
    assert query["client_id"] == [OPERATOR_CLIENT] and query["scope"] == ["read"]  # the operator's scopes
    assert token_requests(provider_server) == [("authorization_code", (OPERATOR_CLIENT, OPERATOR_SECRET))]
    assert connections.read_secret(A, credential_id).fields["accessToken"] == "access-1"
    assert OPERATOR_SECRET not in dump(table_items())  # used as read from Secrets Manager, never stored


def test_refresh_uses_the_operators_app_too(
    provider_server: FakeAuthorizationServer, configure: Callable[[Any], str]
) -> None:
    no_tenant_app()
    configure(OPERATOR_APPS)
    credential_id, _ = connect_through_the_api()
    expire_access_token(credential_id)
    assert connections.read_secret(A, credential_id).fields["accessToken"] == "access-2"
    assert token_requests(provider_server)[-1] == ("refresh_token", (OPERATOR_CLIENT, OPERATOR_SECRET))


def test_the_tenants_own_app_wins_and_secrets_manager_is_not_even_asked(
    provider_server: FakeAuthorizationServer, configure: Callable[[Any], str], secret_reads: list[str]
) -> None:
    configure(OPERATOR_APPS)  # tenant A keeps the app provider_server set: client-1 / CLIENT_SECRET
    credential_id, query = connect_through_the_api()
    expire_access_token(credential_id)
    connections.read_secret(A, credential_id)
    assert query["client_id"] == ["client-1"] and query["scope"] == ["read write"]  # the partner's own scopes
    assert token_requests(provider_server) == [
        ("authorization_code", ("client-1", CLIENT_SECRET)),
        ("refresh_token", ("client-1", CLIENT_SECRET)),
    ]
    assert secret_reads == []


def test_the_secret_is_read_once_per_process(
    provider_server: FakeAuthorizationServer, configure: Callable[[Any], str], secret_reads: list[str]
) -> None:
    """Link creation, GET, start, callback and refresh all need the operator's app: one GetSecretValue in all."""
    no_tenant_app()
    arn = configure(OPERATOR_APPS)
    credential_id, _ = connect_through_the_api()
    assert oauth_app_api("GET")[0] == 200
    expire_access_token(credential_id)
    connections.read_secret(A, credential_id)
    assert secret_reads == [arn]


def test_the_feature_off_is_todays_behaviour(provider_server: FakeAuthorizationServer, aws_env: Any) -> None:
    """No GRANTLINK_DEFAULT_OAUTH_APPS_SECRET (the template's default is empty): a tenant without an app gets the
    422 it always got, and GET the 404."""
    assert aws_env["env"]["GRANTLINK_DEFAULT_OAUTH_APPS_SECRET"] == ""
    no_tenant_app()
    status, body = api_link()
    assert (status, body["error"]["code"]) == (422, "oauth_app_missing")
    status, body = oauth_app_api("GET")
    assert (status, body["error"]["code"]) == (404, "oauth_app_not_found")


def test_a_partner_the_operator_did_not_configure_still_needs_the_tenants_app(
    provider_server: FakeAuthorizationServer, configure: Callable[[Any], str]
) -> None:
    no_tenant_app()
    configure({})  # the feature on, no default for 7777
    status, body = api_link()
    assert (status, body["error"]["code"]) == (422, "oauth_app_missing")


# --- the API: GET shows the source, DELETE only the tenant's own ------------------------------------------------


def test_get_shows_the_operators_default_then_the_tenants_own_never_a_secret(
    provider_server: FakeAuthorizationServer, configure: Callable[[Any], str]
) -> None:
    no_tenant_app()
    configure(OPERATOR_APPS)
    status, body = oauth_app_api("GET")
    assert status == 200, body
    shown = body["data"]
    assert (shown["source"], shown["clientId"], shown["scopes"], shown["partnerId"]) == (
        "operator", OPERATOR_CLIENT, ["read"], PARTNER_ID
    )  # fmt: skip
    assert shown["redirectUri"].endswith("/oauth/callback") and shown["dateUpdated"]
    assert "clientSecret" not in shown and not any(s in dump(body) for s in SECRETS)

    status, body = oauth_app_api("PUT", body={"clientId": "tenant-own", "clientSecret": "tenant-own-secret"})
    assert (status, body["data"]["source"], body["data"]["clientId"]) == (200, "tenant", "tenant-own")
    status, body = oauth_app_api("GET")
    assert (status, body["data"]["source"], body["data"]["clientId"]) == (200, "tenant", "tenant-own")
    assert "tenant-own-secret" not in dump(body)


def test_delete_removes_only_the_tenants_own_app(
    provider_server: FakeAuthorizationServer, configure: Callable[[Any], str]
) -> None:
    configure(OPERATOR_APPS)
    assert oauth_app_api("GET")[1]["data"]["source"] == "tenant"
    assert oauth_app_api("DELETE")[0] == 200  # the tenant's own: removed …
    assert oauth_app_api("GET")[1]["data"]["source"] == "operator"  # … and the default shows through
    status, body = oauth_app_api("DELETE")  # only the default left: nothing of the tenant's to delete
    assert (status, body["error"]["code"]) == (404, "oauth_app_not_found")
    assert oauth_app_api("GET")[1]["data"]["source"] == "operator"  # and the default is still there


def test_put_after_the_default_makes_the_tenants_app_win_in_the_flow(
    provider_server: FakeAuthorizationServer, configure: Callable[[Any], str]
) -> None:
    no_tenant_app()
    configure(OPERATOR_APPS)
    oauth.put_app(A, PARTNER_ID, OAuthAppRequest.model_validate({"clientId": "c2", "clientSecret": "s2"}), REDIRECT)
    connect_through_the_api()
    assert token_requests(provider_server) == [("authorization_code", ("c2", "s2"))]


# --- a broken configuration: a clean 503, nothing written, the problem logged (never the secret) ----------------

MALFORMED = {
    "not JSON": "{" + OPERATOR_SECRET,
    "not an object": json.dumps([OPERATOR_APPS]),
    "no clientSecret": {str(PARTNER_ID): {"clientId": OPERATOR_CLIENT}},
    "a mistyped field": {str(PARTNER_ID): {"clientId": OPERATOR_CLIENT, "clientSecrte": OPERATOR_SECRET}},
    "the secret as a key": {OPERATOR_SECRET: {"clientId": OPERATOR_CLIENT, "clientSecret": OPERATOR_SECRET}},
    "scopes not a list": {str(PARTNER_ID): {**OPERATOR_APPS[str(PARTNER_ID)], "scopes": "read"}},
    "an unknown partner": {**OPERATOR_APPS, "424242": {"clientId": "x", "clientSecret": OPERATOR_SECRET}},
    "a non-OAuth partner": {**OPERATOR_APPS, "9001": {"clientId": "x", "clientSecret": OPERATOR_SECRET}},
}


@pytest.mark.parametrize("document", MALFORMED.values(), ids=MALFORMED.keys())
def test_a_malformed_secret_is_a_clean_503_with_nothing_written_and_a_logged_reason(
    provider_server: FakeAuthorizationServer,
    configure: Callable[[Any], str],
    table_items: Any,
    caplog: pytest.LogCaptureFixture,
    document: Any,
) -> None:
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger=observability.SERVICE)
    no_tenant_app()
    configure(document)
    before = table_items()
    status, body = api_link()
    assert (status, body["error"]["code"]) == (503, "service_unavailable"), body
    assert table_items() == before
    status, body = oauth_app_api("GET")
    assert (status, body["error"]["code"]) == (503, "service_unavailable"), body
    refusals = [r for r in caplog.records if "GRANTLINK_DEFAULT_OAUTH_APPS_SECRET is not a valid" in r.getMessage()]
    assert refusals and all(r.levelno == logging.ERROR and r.problems for r in refusals)  # type: ignore[attr-defined]
    logged = caplog.text + "\n".join(dump(vars(r)) for r in caplog.records)
    assert not any(s in logged for s in SECRETS)
    assert not any(s in dump(body) for s in SECRETS)


def test_the_reason_names_the_partner_and_the_field(
    provider_server: FakeAuthorizationServer, configure: Callable[[Any], str], caplog: pytest.LogCaptureFixture
) -> None:
    configure({**MALFORMED["no clientSecret"], "9001": {"clientId": "x", "clientSecret": "y"}})
    with pytest.raises(errors.ServiceUnavailable):
        oauth_apps.operator_app(PARTNER_ID)
    unknown = {"424242": {"clientId": "x", "clientSecret": "y"}}
    boto3.client("secretsmanager").put_secret_value(SecretId=SECRET_NAME, SecretString=json.dumps(unknown))
    with pytest.raises(errors.ServiceUnavailable):
        oauth_apps.operator_app(PARTNER_ID)
    problems = [r.problems for r in caplog.records if hasattr(r, "problems")]
    assert problems == [["7777.clientSecret: missing"], ["424242: no such partner"]]


def test_a_missing_secret_is_a_503_and_a_fixed_one_is_used_without_a_restart(
    provider_server: FakeAuthorizationServer, aws_env: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failed read is not cached: once the operator creates (or fixes) the secret, the next request uses it."""
    no_tenant_app()
    monkeypatch.setenv("GRANTLINK_DEFAULT_OAUTH_APPS_SECRET", SECRET_NAME)  # a name works as well as an ARN
    config.reset()
    status, body = api_link()
    assert (status, body["error"]["code"]) == (503, "service_unavailable")
    boto3.client("secretsmanager").create_secret(Name=SECRET_NAME, SecretString=json.dumps(OPERATOR_APPS))
    status, body = api_link()
    assert status == 201, body


def test_a_malformed_secret_leaves_tenants_with_their_own_app_alone(
    provider_server: FakeAuthorizationServer, configure: Callable[[Any], str]
) -> None:
    """The configuration is only read for a tenant without its own app: a broken one cannot break the rest."""
    configure("not json")
    link, token = links.create_link(A, CreateLinkRequest(partnerId=PARTNER_ID, title="x"))
    assert finish(start(link.id, token)).connected
    assert links.get_link(A, link.id).status == LinkStatus.GRANTED


# --- the secret never reaches a log or the table -----------------------------------------------------------------


def test_the_operators_secret_is_never_logged_nor_stored(
    provider_server: FakeAuthorizationServer,
    configure: Callable[[Any], str],
    table_items: Any,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """At DEBUG (POWERTOOLS_LOG_LEVEL, the grantlink logger and the root logger), a whole flow with the operator's
    app — link, GET, start, callback, refresh, a connection test — leaves its client secret in no log record, on
    neither stdout nor stderr, and nowhere in the table."""
    monkeypatch.setenv("POWERTOOLS_LOG_LEVEL", "DEBUG")
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger=observability.SERVICE)
    for handler in logging.getLogger(observability.SERVICE).handlers:  # Powertools' own JSON lines, to capfd
        if isinstance(handler, logging.StreamHandler):
            monkeypatch.setattr(handler, "stream", sys.stdout)
    no_tenant_app()
    configure(OPERATOR_APPS)
    credential_id, _ = connect_through_the_api()
    assert oauth_app_api("GET")[0] == 200
    expire_access_token(credential_id)
    connections.read_secret(A, credential_id)
    provider_server.server.expect_request("/me").respond_with_json({"name": "Ada"})
    expire_access_token(credential_id)
    assert connections.test_credential(A, credential_id).ok
    written = capfd.readouterr()
    assert "operator OAuth apps loaded" in written.out + caplog.text  # DEBUG and INFO lines were really captured
    everything = "\n".join([written.out, written.err, caplog.text, *(dump(vars(r)) for r in caplog.records)])
    assert not any(s in everything for s in SECRETS)
    assert [grant for grant, client in token_requests(provider_server) if client[0] == OPERATOR_CLIENT] == [
        "authorization_code", "refresh_token", "refresh_token"
    ]  # fmt: skip
    assert not any(s in dump(table_items()) for s in SECRETS)


def test_the_app_objects_never_show_a_secret() -> None:
    app = oauth_apps.OAuthApp(
        source="operator",
        partner_id=PARTNER_ID,
        client_id=OPERATOR_CLIENT,
        scopes=None,
        date_updated="2026-11-22T10:00:00Z",
        operator_secret=OAuthAppRequest.model_validate(
            {"clientId": OPERATOR_CLIENT, "clientSecret": OPERATOR_SECRET}
        ).clientSecret,
    )
    assert OPERATOR_SECRET not in repr(app) and OPERATOR_SECRET not in str(app)
