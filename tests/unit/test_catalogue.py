"""Catalogue v2: every real provider's URLs are well-formed and on the provider's own domains, and the new kinds
(OAuth 1.0a, client credentials), environments and scopes are declared consistently."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from pydantic import ValidationError

from grantlink import config, errors, providers
from grantlink.providers import SHARED_SUFFIXES, Provider

PACKAGE = Path(providers.__file__).parent
CATALOGUE_FILES = sorted((PACKAGE / "catalogue").glob("*.json"))
PLACEHOLDER = re.compile(r"\{(\w+)\}")
HOST = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)+$")


@pytest.fixture(autouse=True)
def env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("GRANTLINK_TABLE", "grantlink-test")
    monkeypatch.setenv("GRANTLINK_CONNECT_BASE_URL", "https://connect.example.com")
    for name in ("LOCAL_DEMO", "EXTRA_PROVIDERS"):
        monkeypatch.delenv(f"GRANTLINK_{name}", raising=False)
    config.reset()
    providers.reset()
    yield
    config.reset()
    providers.reset()


def load(path: Path) -> Provider:
    return Provider.model_validate(json.loads(path.read_text()))


def rendered(provider: Provider, template: str) -> str:
    """The URL with each {field} filled in with the field's example (a URL placeholder must have one)."""

    def example(match: re.Match[str]) -> str:
        field = provider.field(match.group(1))
        assert field is not None and field.example, f"{provider.slug}: {{{match.group(1)}}} needs a field example"
        return field.example

    return PLACEHOLDER.sub(example, template)


def on_domains(host: str, domains: list[str]) -> bool:
    return any(host == domain or host.endswith("." + domain) for domain in domains)


def provider_urls(provider: Provider) -> list[str]:
    """The URLs a credential of this provider is sent to: base, test, OAuth endpoints, in every environment."""
    urls: list[str] = []
    for name in provider.environment_names:
        variant = provider.in_environment(name)
        urls += [variant.base_url, variant.base_url.rstrip("/") + variant.test.path]
        if variant.oauth:
            urls += [variant.oauth.authorize_url, variant.oauth.token_url]
        if variant.oauth1:
            urls += [variant.oauth1.request_token_url, variant.oauth1.authorize_url, variant.oauth1.access_token_url]
        if variant.client_credentials:
            urls.append(variant.client_credentials.token_url)
    if provider.proxy and provider.proxy.base_url and not provider.proxy.base_url.startswith("{"):
        urls.append(provider.proxy.base_url)
    return urls


@pytest.mark.parametrize("path", CATALOGUE_FILES, ids=lambda path: path.stem)
def test_every_url_is_well_formed_and_on_the_providers_own_domain(path: Path) -> None:
    """Given a catalogue entry, when its test request and OAuth URLs are rendered with the fields' examples, then
    each is an https URL with a valid host, no credentials, query-free endpoints, on one of the entry's domains."""
    provider = load(path)

    assert provider.category is not None and provider.domains, "the built-in catalogue names category and domains"
    assert not set(provider.domains) & SHARED_SUFFIXES, provider.domains
    for template in provider_urls(provider):
        url = rendered(provider, template)
        parts = urlsplit(url)
        assert parts.scheme == "https", url
        assert parts.hostname and HOST.fullmatch(parts.hostname), url
        assert parts.username is None and parts.password is None and not parts.fragment, url
        assert " " not in url and "{" not in url, url
        assert on_domains(parts.hostname, provider.domains), f"{url} is not on {provider.domains}"


@pytest.mark.parametrize("path", CATALOGUE_FILES, ids=lambda path: path.stem)
def test_every_entry_points_at_its_documentation_and_names_its_filename(path: Path) -> None:
    """Given a catalogue entry, then its file is named after its slug and its docsUrl is an https page."""
    provider = load(path)

    assert path.stem == provider.slug
    assert urlsplit(provider.docs_url).scheme == "https"


def test_ids_are_unique_across_the_catalogue() -> None:
    """Given every catalogue file, when their ids are listed, then none repeats and none is in the demo range."""
    ids = [load(path).id for path in CATALOGUE_FILES]

    assert len(ids) == len(set(ids))
    assert all(0 < partner_id < 9000 for partner_id in ids)


def test_the_catalogue_covers_the_new_kinds_and_sandboxes() -> None:
    """Given the catalogue, then real providers use OAuth 1.0a, client credentials and sandbox environments."""
    catalogue = [load(path) for path in CATALOGUE_FILES]

    assert sum(p.auth_type == "oauth1" for p in catalogue) >= 2
    assert sum(p.auth_type == "client_credentials" for p in catalogue) >= 2
    assert sum(len(p.environment_names) > 1 for p in catalogue) >= 5


# --- the model's rules for the v2 additions ----------------------------------------------------------------


def salesforce() -> dict[str, Any]:
    return json.loads((PACKAGE / "catalogue" / "salesforce.json").read_text())


def oauth1_entry() -> dict[str, Any]:
    return {
        "id": 8001, "slug": "example-oauth1", "name": "Example", "authType": "oauth1", "category": "productivity",
        "domains": ["example.com"], "docsUrl": "https://example.com/docs", "description": "Example.",
        "fields": [], "baseUrl": "https://api.example.com", "auth": {"in": "oauth1"},
        "test": {"method": "GET", "path": "/me"},
        "oauth1": {
            "requestTokenUrl": "https://example.com/oauth/request_token",
            "authorizeUrl": "https://example.com/oauth/authorize",
            "accessTokenUrl": "https://example.com/oauth/access_token",
            "signatureMethod": "HMAC-SHA1",
        },
    }  # fmt: skip


def refused(document: dict[str, Any]) -> str:
    with pytest.raises(ValidationError) as caught:
        Provider.model_validate(document)
    return str(caught.value)


def test_environment_urls_replace_the_defaults_for_that_environment_only() -> None:
    """Given Salesforce's sandbox, when a provider is taken in it, then OAuth and base URLs are test.salesforce.com,
    and production keeps login.salesforce.com."""
    provider = Provider.model_validate(salesforce())

    sandbox, production = provider.in_environment("sandbox"), provider.in_environment(None)

    assert sandbox.oauth and sandbox.oauth.token_url == "https://test.salesforce.com/services/oauth2/token"
    assert sandbox.base_url == "https://test.salesforce.com"
    assert production.oauth and production.oauth.token_url == "https://login.salesforce.com/services/oauth2/token"
    assert provider.environment_names == ["production", "sandbox"]


def test_an_undeclared_environment_is_a_422() -> None:
    """Given a provider without a staging environment, when asked for it, then the error says it is unsupported."""
    with pytest.raises(errors.UnprocessableEntity) as caught:
        Provider.model_validate(salesforce()).in_environment("staging")

    assert caught.value.code == "environment_not_supported"


def test_environments_must_include_production_and_be_unique() -> None:
    """Given environments without production, or twice the same name, then the entry is refused."""
    without = salesforce() | {"environments": [{"name": "sandbox", "label": "Sandbox"}]}
    twice = salesforce() | {
        "environments": [{"name": "production", "label": "P"}, {"name": "production", "label": "Q"}]
    }

    assert "must include production" in refused(without)
    assert "unique" in refused(twice)


def test_an_oauth1_entry_signs_and_has_no_secret_fields() -> None:
    """Given OAuth 1.0a entries, then one with the oauth1 block and auth loads, and one with a bearer auth, a secret
    field or a reserved authorize parameter is refused."""
    assert Provider.model_validate(oauth1_entry()).auth_type == "oauth1"
    bearer = oauth1_entry() | {"auth": {"in": "bearer", "value": "x"}}
    secret = oauth1_entry() | {
        "fields": [{"name": "k", "label": "K", "help": "K.", "secret": True, "pattern": None, "required": True}]
    }
    reserved = copy.deepcopy(oauth1_entry())
    reserved["oauth1"]["extraAuthorizeParams"] = {"oauth_callback": "https://evil.example"}

    assert "oauth1" in refused(bearer)
    assert "non-secret" in refused(secret)
    assert "oauth_callback" in refused(reserved)


def test_client_credentials_name_their_id_and_secret_fields() -> None:
    """Given a client-credentials entry whose secret field is not secret, then it is refused."""
    document = copy.deepcopy(oauth1_entry())
    del document["oauth1"]
    document |= {
        "authType": "client_credentials",
        "auth": {"in": "bearer", "value": "{accessToken}"},
        "fields": [
            {"name": "clientId", "label": "Id", "help": "Id.", "secret": False, "pattern": None, "required": True},
            {"name": "clientSecret", "label": "S", "help": "S.", "secret": True, "pattern": None, "required": True},
        ],
        "clientCredentials": {
            "tokenUrl": "https://example.com/token", "scopes": ["read"], "clientAuth": "basic",
            "clientIdField": "clientId", "clientSecretField": "clientSecret",
        },
    }  # fmt: skip
    assert Provider.model_validate(document).has_access_token
    document["clientCredentials"]["clientSecretField"] = "clientId"
    assert "client secret field" in refused(document)


def test_token_parameters_may_not_override_the_grant() -> None:
    """Given extraTokenParams or extraRefreshParams naming a grant parameter, then the entry is refused."""
    for key in ("extraTokenParams", "extraRefreshParams"):
        document = salesforce()
        document["oauth"][key] = {"grant_type": "password"}
        assert "grant_type" in refused(document)


def test_an_example_must_match_its_fields_pattern() -> None:
    """Given a field whose example breaks its own pattern, then the entry is refused."""
    document = json.loads((PACKAGE / "catalogue" / "jira.json").read_text())
    document["fields"][0]["example"] = "not a site!"

    assert "example" in refused(document)


def test_scopes_a_link_may_name_are_the_defaults_then_the_optional_ones() -> None:
    """Given an OAuth entry with optional scopes, then allowed scopes list the defaults first, without repeats."""
    document = salesforce()
    document["oauth"]["optionalScopes"] = ["full", "api"]

    provider = Provider.model_validate(document)

    assert provider.default_scopes == ["api", "refresh_token", "openid"]
    assert provider.allowed_scopes == ["api", "refresh_token", "openid", "full"]


def test_an_environment_with_its_own_base_url_proxies_to_its_own_proxy_base_url() -> None:
    """Given an entry with a proxy.baseUrl and a sandbox with its own baseUrl, then the sandbox must name its own
    proxyBaseUrl (else sandbox credentials would be proxied to production's API), and a provider taken in the
    sandbox proxies there while production keeps the default."""
    document = json.loads((PACKAGE / "catalogue" / "notion.json").read_text())
    document["proxy"] = {"baseUrl": "https://api.notion.com/v1"}
    document["environments"] = [
        {"name": "production", "label": "Production"},
        {"name": "sandbox", "label": "Sandbox", "baseUrl": "https://sandbox.notion.com"},
    ]
    assert "proxyBaseUrl" in refused(document)

    document["environments"][1]["proxyBaseUrl"] = "https://sandbox.notion.com/v1"
    provider = Provider.model_validate(document)

    assert provider.in_environment("sandbox").proxy_base_url == "https://sandbox.notion.com/v1"
    assert provider.in_environment("production").proxy_base_url == "https://api.notion.com/v1"


def test_client_credentials_fields_must_be_required() -> None:
    """Given a client-credentials entry whose client id field is optional, then it is refused (a mint needs both)."""
    document = json.loads((PACKAGE / "catalogue" / "paypal.json").read_text())
    document["fields"][0]["required"] = False

    assert "must be required" in refused(document)


def test_an_environment_with_its_own_authorization_server_names_its_issuer() -> None:
    """Given an OAuth entry that declares an issuer and a sandbox with its own token URL but no issuer, then it is
    refused: the sandbox's callbacks would all fail the RFC 9207 issuer check against production's issuer."""
    document = salesforce()
    document["oauth"]["issuer"] = "https://login.salesforce.com"

    assert "name its issuer" in refused(document)

    document["environments"][1]["issuer"] = "https://test.salesforce.com"
    assert Provider.model_validate(document).in_environment("sandbox").oauth.issuer == "https://test.salesforce.com"  # type: ignore[union-attr]


def test_basic_auth_may_take_an_api_key_as_the_username_and_no_password() -> None:
    """Given a Basic entry whose password is empty (Chargebee, Recurly: the API key is the username), when the
    credential is placed in a request, then the Authorization header is Basic base64("<key>:")."""
    import base64

    from grantlink import placement

    document = json.loads((PACKAGE / "catalogue" / "jira.json").read_text())
    document["auth"] = {"in": "basic", "username": "{apiToken}", "password": ""}
    provider = Provider.model_validate(document)
    headers: dict[str, str] = {}

    placement.apply_auth(provider, {"apiToken": "key_live_123"}, headers, {})

    assert headers["Authorization"] == "Basic " + base64.b64encode(b"key_live_123:").decode()
