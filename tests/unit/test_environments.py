"""Environments and scopes per link (grantlink.links, grantlink.oauth, grantlink.connect): what a link may name, the
scopes a flow asks for, the environment's URLs at the callback, the scopes a provider granted, and the list filters.
A fake OAuth partner on 127.0.0.1 with a production and a sandbox token endpoint stands in for the provider."""

from __future__ import annotations

import json
import threading
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from grantlink import connect, connections, errors, links, oauth, providers
from grantlink.models import CreateLinkRequest, LinkStatus, OAuthAppRequest, ReauthorizeRequest
from grantlink.providers import Provider
from grantlink.store import default as default_store
from tests.helpers import FrozenClock
from tests.unit.oauth_fakes import REDIRECT, A

OAUTH_PARTNER, KEY_PARTNER = 7788, 7789
DEFAULTS, OPTIONAL = ["read", "profile"], ["write", "admin"]


class TokenEndpoint:
    """One token endpoint of the fake partner: records each request's form, answers with `scope` (None: omitted)."""

    def __init__(self, server: HTTPServer, path: str) -> None:
        self.calls: list[dict[str, str]] = []
        self.scope: Any = None
        self.lock = threading.Lock()
        server.expect_request(path, method="POST").respond_with_handler(self.answer)

    def answer(self, request: Request) -> Response:
        with self.lock:
            self.calls.append({k: v[0] for k, v in parse_qs(request.get_data(as_text=True)).items()})
            number = len(self.calls)
        body: dict[str, Any] = {"access_token": f"at-{number}", "token_type": "Bearer", "expires_in": 3600}
        body["refresh_token"] = f"rt-{number}"
        if self.scope is not None:
            body["scope"] = self.scope
        return Response(json.dumps(body), 200, content_type="application/json")


class FakePartner:
    def __init__(self, server: HTTPServer) -> None:
        self.base = server.url_for("").rstrip("/")
        self.production = TokenEndpoint(server, "/token")
        self.sandbox = TokenEndpoint(server, "/sandbox/token")


def _partners(base: str) -> list[Provider]:
    common = {"docsUrl": base, "description": "A fake partner for tests.", "baseUrl": base}
    oauth_partner = {
        **common, "id": OAUTH_PARTNER, "slug": "fake-env-oauth", "name": "Fake Env", "authType": "oauth2", "fields": [],
        "auth": {"in": "bearer", "value": "{accessToken}"},
        "test": {"method": "GET", "path": "/me", "expectStatus": [200]},
        "oauth": {"authorizeUrl": f"{base}/authorize", "tokenUrl": f"{base}/token", "scopes": DEFAULTS,
                  "optionalScopes": OPTIONAL, "pkce": True, "issuer": base, "clientAuth": "basic"},
        "environments": [
            {"name": "production", "label": "Production"},
            {"name": "sandbox", "label": "Sandbox", "baseUrl": f"{base}/sandbox",
             "authorizeUrl": f"{base}/sandbox/auth", "tokenUrl": f"{base}/sandbox/token", "issuer": f"{base}/sandbox"},
        ],
    }  # fmt: skip
    key_partner = {
        **common, "id": KEY_PARTNER, "slug": "fake-env-key", "name": "Fake Key", "authType": "api_key",
        "fields": [{"name": "apiKey", "label": "API key", "help": "h", "secret": True, "pattern": None,
                    "required": True}],
        "auth": {"in": "header", "header": "X-Api-Key", "value": "{apiKey}"},
        "test": {"method": "GET", "path": "/_demo/apikey/me", "expectStatus": [200]},
        "environments": [{"name": "production", "label": "Production"}, {"name": "test", "label": "Test mode"}],
    }  # fmt: skip
    return [Provider.model_validate(p, context={"allow_http": True}) for p in (oauth_partner, key_partner)]


@pytest.fixture
def partner(httpserver: HTTPServer, aws_env: Any, monkeypatch: pytest.MonkeyPatch) -> FakePartner:
    """The fake partners 7788 (OAuth 2.0, production and sandbox) and 7789 (API key, production and test mode),
    and tenant A's OAuth app for 7788 (no scopes of its own)."""
    fake = FakePartner(httpserver)
    ours = {p.id: p for p in _partners(fake.base)}
    real_find = providers.find
    monkeypatch.setattr(providers, "find", lambda pid: ours.get(pid) or real_find(pid))
    monkeypatch.setattr(providers, "get", lambda pid: ours[pid] if pid in ours else real_find(pid))
    set_app(None)
    return fake


def set_app(scopes: list[str] | None) -> None:
    app = {"clientId": "client-1", "clientSecret": "client-secret-value", "scopes": scopes}
    oauth.put_app(A, OAUTH_PARTNER, OAuthAppRequest.model_validate(app), REDIRECT)


def create(**body: Any) -> tuple[links.ShareLink, str]:
    return links.create_link(A, CreateLinkRequest.model_validate({"partnerId": OAUTH_PARTNER, "title": "t", **body}))


def begin(link: links.ShareLink, token: str) -> dict[str, str]:
    """Start the flow; the authorize URL's query, one value per name."""
    url = oauth.start(link.id, token, {}, REDIRECT)
    return {"url": url, **{k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}}


def complete(started: dict[str, str], issuer: str) -> str:
    """The provider's callback for a started flow; returns the new credential's id."""
    assert oauth.callback({"code": "c", "state": started["state"], "iss": issuer}, REDIRECT).connected
    return str(default_store().get_link(started["linkId"]).credential_id)  # type: ignore[union-attr]


def connected(partner: FakePartner, sandbox: bool = False, **body: Any) -> str:
    link, token = create(**({"environment": "sandbox"} if sandbox else {}), **body)
    started = {**begin(link, token), "linkId": link.id}
    return complete(started, f"{partner.base}/sandbox" if sandbox else partner.base)


def link_count(table_items: Any) -> int:
    return sum(1 for item in table_items() if item["pk"]["S"].startswith("SHARE#"))


# --- link creation ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"environment": "staging"}, "environment_not_supported"),
        ({"partnerId": KEY_PARTNER, "environment": "sandbox"}, "environment_not_supported"),
        ({"partnerId": KEY_PARTNER, "scopes": ["read"]}, "scopes_not_supported"),
        ({"scopes": ["read", "delete"]}, "scope_not_allowed"),
        ({"scopes": ["read", "read"]}, "duplicate_scope"),
        ({"scopes": []}, "scopes_empty"),
    ],
)
def test_a_link_naming_what_the_partner_lacks_is_refused_and_nothing_is_written(
    partner: FakePartner, table_items: Any, body: dict[str, Any], code: str
) -> None:
    """Given a link request naming an environment the partner does not declare, scopes for a partner without
    scopes, a scope it does not allow, one twice, or none, then it is a 422 with that code and no link is written."""
    with pytest.raises(errors.UnprocessableEntity) as refused:
        create(**body)
    assert refused.value.code == code
    assert link_count(table_items) == 0


def test_the_refused_scopes_are_named_and_nothing_else_is_echoed(partner: FakePartner) -> None:
    """Given scopes of which two are not allowed, then the problems name exactly those two, one each."""
    with pytest.raises(errors.UnprocessableEntity) as refused:
        create(scopes=["read", "delete", "write", "root"])
    assert refused.value.body()["error"]["details"] == [
        {"field": "scopes", "problem": "delete is not a scope Fake Env allows"},
        {"field": "scopes", "problem": "root is not a scope Fake Env allows"},
    ]


def test_a_link_keeps_its_environment_and_scopes_and_regenerating_keeps_them(partner: FakePartner) -> None:
    """Given a sandbox link narrowed to read and extended with write, when it is regenerated,
    then both the link and its API view still say sandbox and [read, write]."""
    link, _ = create(environment="sandbox", scopes=["read", "write"])
    again, _ = links.regenerate_link(A, link.id)
    for shown in (links.get_link(A, link.id), again):
        assert (shown.environment, shown.scopes) == ("sandbox", ["read", "write"])
    assert again.to_out(None, "https://x").environment == "sandbox"


def test_reauthorize_takes_the_credentials_environment_and_requested_scopes(partner: FakePartner) -> None:
    """Given a sandbox credential that asked for [read, admin], when it is reauthorized without scopes,
    then the link is for sandbox and asks for [read, admin]; with scopes given, it asks for those."""
    credential_id = connected(partner, sandbox=True, scopes=["read", "admin"])
    kept, _ = connections.reauthorize(A, credential_id, ReauthorizeRequest.model_validate({}))
    assert (kept.environment, kept.scopes) == ("sandbox", ["read", "admin"])
    narrowed, _ = connections.reauthorize(A, credential_id, ReauthorizeRequest.model_validate({"scopes": ["read"]}))
    assert (narrowed.environment, narrowed.scopes) == ("sandbox", ["read"])


def test_reauthorize_lets_the_tenant_apps_scopes_apply_again_when_they_were_what_was_asked(
    partner: FakePartner,
) -> None:
    """Given a credential connected with the tenant app's scopes, one of which the catalogue does not declare, when it
    is reauthorized without scopes, then the link pins no scopes and its flow asks for the app's scopes again (not
    the catalogue-allowed part of them)."""
    set_app(["read", "custom:admin"])
    credential_id = connected(partner)
    assert default_store().get_credential(credential_id).requested_scopes == ["read", "custom:admin"]  # type: ignore[union-attr]

    link, token = connections.reauthorize(A, credential_id, ReauthorizeRequest.model_validate({}))

    assert link.scopes is None
    assert begin(link, token)["scope"] == "read custom:admin"


def test_scopes_for_a_partner_that_declares_none_are_not_supported(partner: FakePartner) -> None:
    """Given an OAuth partner whose catalogue entry declares no scopes (its app's settings decide), when a link names
    scopes, then the answer is 422 scopes_not_supported and nothing is written."""
    bare = providers.get(OAUTH_PARTNER)
    assert bare.oauth is not None
    empty = bare.model_copy(update={"oauth": bare.oauth.model_copy(update={"scopes": [], "optional_scopes": []})})

    with pytest.raises(errors.UnprocessableEntity) as refused:
        links.check_scopes(empty, ["read"])

    assert refused.value.code == "scopes_not_supported"


def test_a_reauthorize_body_cannot_name_an_environment() -> None:
    """Given a reauthorize body with `environment`, then it does not validate (the credential's is used)."""
    with pytest.raises(ValueError, match="environment"):
        ReauthorizeRequest.model_validate({"environment": "production"})


# --- the flow --------------------------------------------------------------------------------------------------


def test_the_scopes_asked_for_are_the_links_else_the_apps_else_the_defaults(partner: FakePartner) -> None:
    """Given the same partner, when flows start for a link with scopes, then a link without (app with scopes),
    then a link without (app without scopes), then the authorize URL asks for the link's, the app's, the defaults."""
    assert begin(*create(scopes=["read", "admin"]))["scope"] == "read admin"
    set_app(["profile"])
    assert begin(*create())["scope"] == "profile"
    set_app(None)
    assert begin(*create())["scope"] == "read profile"


def test_the_flow_record_carries_the_environment_and_the_requested_scopes(
    partner: FakePartner, table_items: Any
) -> None:
    """Given a sandbox link asking for [read, write], when the flow starts, then its authorize URL is the sandbox's
    and the flow record says sandbox and [read, write]."""
    started = begin(*create(environment="sandbox", scopes=["read", "write"]))
    assert started["url"].startswith(f"{partner.base}/sandbox/auth?")
    flow = next(item for item in table_items() if item["pk"]["S"].startswith("OAUTH#"))
    assert flow["environment"]["S"] == "sandbox"
    assert [s["S"] for s in flow["scopes"]["L"]] == ["read", "write"]


def test_the_callback_of_a_sandbox_link_uses_the_sandbox_token_url(partner: FakePartner) -> None:
    """Given a sandbox link, when the provider calls back with the sandbox issuer,
    then the code goes to the sandbox token endpoint (production's sees nothing) and the credential says sandbox."""
    credential_id = connected(partner, sandbox=True)
    assert len(partner.sandbox.calls) == 1 and partner.sandbox.calls[0]["grant_type"] == "authorization_code"
    assert partner.production.calls == []
    assert connections.get_credential(A, credential_id).environment == "sandbox"


def test_a_sandbox_callback_with_the_production_issuer_is_refused(partner: FakePartner) -> None:
    """Given a sandbox link, when the answer says it came from the production issuer, then no token call is made
    (RFC 9207: each environment's authorization server has its own issuer)."""
    link, token = create(environment="sandbox")
    started = begin(link, token)
    outcome = oauth.callback({"code": "c", "state": started["state"], "iss": partner.base}, REDIRECT)
    assert not outcome.connected and partner.sandbox.calls == partner.production.calls == []


@pytest.mark.parametrize(
    ("answered", "granted"),
    [
        (None, ["read", "write"]),  # RFC 6749 section 5.1: omitted means identical to what was asked
        ("read", ["read"]),
        ("read,write", ["read", "write"]),
        ("write read", ["write", "read"]),
        (["read"], ["read"]),
    ],
)
def test_the_granted_scopes_come_from_the_token_response(partner: FakePartner, answered: Any, granted: list) -> None:
    """Given a link asking for [read, write], when the token response's scope is absent, a string (spaces or
    commas) or a list, then the credential's grantedScopes are what it says (absent: what was asked)."""
    partner.production.scope = answered
    out = connections.get_credential(A, connected(partner, scopes=["read", "write"])).to_out()
    assert out.requestedScopes == ["read", "write"] and out.grantedScopes == granted
    assert out.scopesNarrowed is (granted == ["read"])


def test_a_narrower_grant_is_flagged_on_the_credential_and_in_share_completed(
    partner: FakePartner, delivered_events: Any
) -> None:
    """Given a sandbox link asking for [read, profile, write], when the provider grants only read and profile,
    then the credential misses [write] and is flagged, and share.completed says sandbox, the granted scopes
    and the missing ones."""
    partner.sandbox.scope = "read profile"
    credential_id = connected(partner, sandbox=True, scopes=["read", "profile", "write"])
    out = connections.get_credential(A, credential_id).to_out()
    assert out.missingScopes == ["write"] and out.scopesNarrowed is True
    completed = [e["detail"] for e in delivered_events() if e["detail-type"] == "share.completed"]
    assert completed[-1]["environment"] == "sandbox"
    assert completed[-1]["grantedScopes"] == ["read", "profile"] and completed[-1]["missingScopes"] == ["write"]


def test_a_refresh_naming_scopes_updates_the_granted_ones_and_one_without_keeps_them(partner: FakePartner) -> None:
    """Given a credential granted [read, profile], when a refresh answers scope "read", then it was granted [read];
    when a later refresh names no scope, then [read] stays."""
    credential_id = connected(partner)
    partner.production.scope = "read"
    oauth.fresh_values(connections.get_credential(A, credential_id), force=True)
    assert connections.get_credential(A, credential_id).granted_scopes == ["read"]
    partner.production.scope = None
    oauth.fresh_values(connections.get_credential(A, credential_id), force=True)
    assert connections.get_credential(A, credential_id).granted_scopes == ["read"]
    assert [c["grant_type"] for c in partner.production.calls] == [
        "authorization_code",
        "refresh_token",
        "refresh_token",
    ]


def test_an_api_key_credential_keeps_its_links_environment(partner: FakePartner, delivered_events: Any) -> None:
    """Given an API-key link for the partner's test mode, when the customer submits a key,
    then the credential says `test`, and share.completed says so (with no scopes: the kind takes none)."""
    request = CreateLinkRequest.model_validate({"partnerId": KEY_PARTNER, "title": "t", "environment": "test"})
    link, token = links.create_link(A, request)
    done = connect.submit(link.id, token, {"apiKey": "demo-key-0042"})
    assert connections.get_credential(A, done.credential.id).environment == "test"
    completed = [e["detail"] for e in delivered_events() if e["detail-type"] == "share.completed"][-1]
    assert completed["environment"] == "test" and "grantedScopes" not in completed


# --- lists -----------------------------------------------------------------------------------------------------


def test_credentials_filter_by_environment_with_unknown_totals(partner: FakePartner) -> None:
    """Given a production and a sandbox credential, when the list filters on each environment,
    then each holds only its own, and the totals are null (no counter keeps environments)."""
    production, sandbox = connected(partner), connected(partner, sandbox=True)
    for environment, expected in (("production", production), ("sandbox", sandbox)):
        found, meta = connections.list_credentials(A, None, None, 20, None, environment=environment)
        assert [c.id for c in found] == [expected] and meta.totalItemsCount is None and meta.totalPages is None
    by_partner, _ = connections.list_credentials(A, OAUTH_PARTNER, None, 20, None, environment="sandbox")
    assert [c.id for c in by_partner] == [sandbox]


def test_the_environment_filter_combines_with_tags_and_end_users(partner: FakePartner) -> None:
    """Given a tagged production and a tagged sandbox credential of one end user, when the list filters on the tag
    (or the end user) and sandbox, then only the sandbox one is listed."""
    who = {"tags": {"team": "a"}, "endUser": {"id": "u1"}}
    connected(partner, **who)
    sandbox = connected(partner, sandbox=True, **who)
    tagged, _ = connections.list_credentials(A, None, None, 20, None, tag="team:a", environment="sandbox")
    assert [c.id for c in tagged] == [sandbox]
    mine, _ = connections.list_credentials(A, None, None, 20, None, end_user_id="u1", environment="sandbox")
    assert [c.id for c in mine] == [sandbox]


def test_links_filter_by_environment_and_the_cursor_is_bound_to_the_filter(
    partner: FakePartner, clock: FrozenClock
) -> None:
    """Given two sandbox links and a production one, a second apart, when the list asks for sandbox one per page,
    then the pages hold the two sandbox links, totals are null, and the cursor does not serve another filter."""
    first, _ = create(environment="sandbox")
    clock.advance(seconds=1)
    create()
    clock.advance(seconds=1)
    second, _ = create(environment="sandbox")
    page, meta = links.list_links(A, None, 1, None, environment="sandbox")
    assert [link.id for link in page] == [second.id] and meta.totalItemsCount is None
    rest, _ = links.list_links(A, LinkStatus.WAITING, 5, None, environment="sandbox")
    assert {link.id for link in rest} == {first.id, second.id}
    with pytest.raises(errors.BadRequest):
        links.list_links(A, None, 1, meta.nextCursor, environment="production")
    unfiltered, all_meta = links.list_links(A, None, 5, None)
    assert len(unfiltered) == 3 and all_meta.totalItemsCount == 3


def test_the_connect_page_says_sandbox_and_lists_the_scopes(partner: FakePartner) -> None:
    """Given a sandbox link asking for [read, write], when the page renders, then it says Sandbox plainly and
    lists both scopes; a production link's page says neither Sandbox nor production."""
    from grantlink import web

    link, token = create(environment="sandbox", scopes=["read", "write"])
    page = web.form_page(connect.open_link(link.id, token), token)
    assert '<p class="badge">Sandbox</p>' in page and "<strong>Sandbox</strong> account of Fake Env" in page
    assert "<li><code>read</code></li>" in page and "<li><code>write</code></li>" in page
    plain_link, plain_token = create()
    plain = web.form_page(connect.open_link(plain_link.id, plain_token), plain_token)
    assert "badge" not in plain.split("</style>")[1] and "<li><code>profile</code></li>" in plain


# --- the page's fields -----------------------------------------------------------------------------------------


def test_a_field_shows_its_prefix_and_suffix_around_the_input_and_describes_it_with_them() -> None:
    """Given a field with prefix https:// and suffix .zendesk.com, when the form renders, then the input sits between
    the two texts, and its aria-describedby names both (a screen reader hears what goes around the value)."""
    from grantlink import pages
    from tests.html_pages import DOMAIN, Page, form

    text = form(fields=[replace_field(DOMAIN, prefix="https://", suffix=".zendesk.com")])
    assert '<span class="affix" id="f_subdomain-prefix">https://</span><input' in text
    assert '<span class="affix" id="f_subdomain-suffix">.zendesk.com</span></div>' in text
    (field,) = Page(text).visible_inputs()
    assert field["aria-describedby"].split() == ["f_subdomain-help", "f_subdomain-prefix", "f_subdomain-suffix"]
    assert ".affixed" in pages.STYLESHEET


def test_a_fields_example_is_the_placeholder_when_it_has_none(partner: FakePartner) -> None:
    """Given a partner field with an example and no placeholder, when its connect page renders,
    then the example is the input's placeholder."""
    from grantlink import web
    from tests.html_pages import Page

    link, token = links.create_link(A, CreateLinkRequest.model_validate({"partnerId": KEY_PARTNER, "title": "t"}))
    opened = connect.open_link(link.id, token)
    field = opened.provider.fields[0].model_copy(update={"example": "sk_test_4eC39HqLyjWDarjtT1zdp7dc"})
    opened.provider = opened.provider.model_copy(update={"fields": [field]})
    (shown,) = Page(web.form_page(opened, token)).visible_inputs()
    assert shown["placeholder"] == "sk_test_4eC39HqLyjWDarjtT1zdp7dc"


@pytest.mark.parametrize("slot", ["environment", "scope", "prefix", "suffix"])
def test_markup_in_the_new_slots_stays_inert(slot: str) -> None:
    """Given markup as an environment label, a scope, a prefix or a suffix, then no tag comes of it."""
    from tests.html_pages import DOMAIN, Page, form

    hostile = '"><script>alert(1)</script><img src=x onerror=alert(1)>'
    changes: dict[str, Any] = {
        "environment": {"environment_label": hostile},
        "scope": {"scopes": [hostile]},
        "prefix": {"fields": [replace_field(DOMAIN, prefix=hostile)]},
        "suffix": {"fields": [replace_field(DOMAIN, suffix=hostile)]},
    }[slot]
    page = Page(form(**changes))
    assert page.all("script") == [] and page.all("img") == []
    assert hostile in page.body_text()


def replace_field(field: Any, **changes: Any) -> Any:
    from dataclasses import replace

    return replace(field, **changes)


@pytest.mark.parametrize(
    ("token", "granted"),
    [
        ({"scope": "User.Read openid", "refresh_token": "r"}, ["User.Read", "openid", "offline_access"]),
        ({"scope": "User.Read openid"}, ["User.Read", "openid"]),
    ],
)
def test_an_offline_scope_is_granted_when_a_refresh_token_is(token: dict[str, Any], granted: list[str]) -> None:
    """Given a request for [openid, offline_access, User.Read] and a provider (like Microsoft) that leaves
    offline_access out of the scope it answers, when its answer carries a refresh token, then offline_access counts
    as granted (that is what it grants); without a refresh token, it was not granted."""
    assert oauth.granted_scopes(token, ["openid", "offline_access", "User.Read"]) == granted
