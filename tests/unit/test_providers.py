"""The partner catalogue: provider files, the schema that documents them, the loader and its public API."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from pydantic import ValidationError

from grantlink import config, errors, providers
from grantlink.providers import CatalogueError, Provider

PACKAGE = Path(providers.__file__).parent
CATALOGUE_FILES = sorted((PACKAGE / "catalogue").glob("*.json"))
SCHEMA = json.loads((PACKAGE / "schema.json").read_text())
PLACEHOLDER = re.compile(r"\{(\w+)\}")
DEMO_URLS = {
    "{demoBaseUrl}": "http://localhost:3000",
    "{demoOAuthUrl}": "http://localhost:3001/oauth",
    "{demoOAuth1Url}": "http://localhost:3002",
    "{demoSandboxOAuthUrl}": "http://localhost:3003",
}


@pytest.fixture(autouse=True)
def env(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    monkeypatch.setenv("GRANTLINK_TABLE", "grantlink-test")
    monkeypatch.setenv("GRANTLINK_CONNECT_BASE_URL", "https://connect.example.com")
    for name in (
        "LOCAL_DEMO",
        "EXTRA_PROVIDERS",
        "DEMO_BASE_URL",
        "DEMO_OAUTH_URL",
        "DEMO_OAUTH1_URL",
        "DEMO_SANDBOX_OAUTH_URL",
    ):
        monkeypatch.delenv(f"GRANTLINK_{name}", raising=False)
    config.reset()
    providers.reset()
    yield monkeypatch
    config.reset()
    providers.reset()


@pytest.fixture
def demo(env: pytest.MonkeyPatch) -> None:
    env.setenv("GRANTLINK_LOCAL_DEMO", "true")
    env.setenv("GRANTLINK_DEMO_BASE_URL", DEMO_URLS["{demoBaseUrl}"] + "/")
    env.setenv("GRANTLINK_DEMO_OAUTH_URL", DEMO_URLS["{demoOAuthUrl}"])
    config.reset()


@pytest.fixture
def extra(env: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    path = tmp_path / "extra-providers.json"
    env.setenv("GRANTLINK_EXTRA_PROVIDERS", str(path))
    config.reset()
    return path


def load(path: Path) -> Any:
    return json.loads(path.read_text())


def schema_errors(document: Any) -> list[str]:
    validator = Draft202012Validator(SCHEMA, format_checker=Draft202012Validator.FORMAT_CHECKER)
    return [error.message for error in validator.iter_errors(document)]


def model_accepts(document: Any) -> bool:
    try:
        Provider.model_validate(document)
    except ValidationError:
        return False
    return True


def demo_documents() -> list[dict[str, Any]]:
    text = (PACKAGE / "demo.json").read_text()
    for placeholder, url in DEMO_URLS.items():
        text = text.replace(placeholder, url.replace("http://", "https://"))
    documents: list[dict[str, Any]] = json.loads(text)
    return documents


def custom_partner(**changes: Any) -> dict[str, Any]:
    document = load(PACKAGE / "catalogue" / "stripe.json") | {"id": 500, "slug": "acme", "name": "Acme CRM"}
    return document | changes


def absolute_urls(document: dict[str, Any]) -> list[str]:
    oauth = document.get("oauth") or {}
    urls = [document["docsUrl"], document["baseUrl"], oauth.get("authorizeUrl"), oauth.get("tokenUrl")]
    return [url for url in [*urls, oauth.get("issuer")] if url]


def url_templates(document: dict[str, Any]) -> list[str]:
    return [*absolute_urls(document)[1:], document["test"]["path"]]


# --- the files -------------------------------------------------------------------------------------------


def test_schema_is_a_valid_draft_2020_12_schema() -> None:
    """Given schema.json, when checked against the draft 2020-12 metaschema, then it is valid."""
    assert SCHEMA["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    Draft202012Validator.check_schema(SCHEMA)


@pytest.mark.parametrize("path", CATALOGUE_FILES, ids=lambda path: path.stem)
def test_every_catalogue_file_passes_the_schema_and_the_models(path: Path) -> None:
    """Given a catalogue file, when validated, then schema.json and the pydantic models both accept it."""
    document = load(path)

    assert schema_errors(document) == []
    assert Provider.model_validate(document).slug == path.stem


@pytest.mark.parametrize("document", demo_documents(), ids=lambda document: document["slug"])
def test_demo_partners_pass_the_schema_and_the_models_once_their_urls_are_filled_in(document: dict) -> None:
    """Given a demo partner with its URL placeholders filled in, when validated, then both accept it."""
    assert schema_errors(document) == []
    assert model_accepts(document)


def test_the_catalogue_has_at_least_100_real_providers_of_every_auth_type() -> None:
    """Given the default settings, when the catalogue loads, then it holds 100+ partners of all five auth types,
    across CRM, support, dev tools, finance, marketing, storage and communication."""
    everything = providers.all_providers()

    assert len(everything) >= 100
    assert {provider.auth_type for provider in everything} == set(providers.AUTH_TYPES)
    assert {"crm", "support", "dev_tools", "finance", "marketing", "storage", "communication"} <= {
        provider.category for provider in everything
    }
    assert all(1 <= provider.id < 9000 for provider in everything)


def test_ids_and_slugs_are_unique_across_real_and_demo_partners() -> None:
    """Given every catalogue file and demo partner, when their ids and slugs are listed, then none repeats."""
    documents = [load(path) for path in CATALOGUE_FILES] + demo_documents()
    ids = [document["id"] for document in documents]
    slugs = [document["slug"] for document in documents]

    assert len(set(ids)) == len(ids)
    assert len(set(slugs)) == len(slugs)
    assert sorted(document["id"] for document in demo_documents()) == [9001, 9002, 9003, 9004, 9005, 9006]


@pytest.mark.parametrize("path", CATALOGUE_FILES, ids=lambda path: path.stem)
def test_every_real_url_is_https(path: Path) -> None:
    """Given a catalogue file, when its URLs are listed, then every one is https."""
    document = load(path)

    for url in absolute_urls(document):
        assert url.startswith("https://"), url


@pytest.mark.parametrize("path", CATALOGUE_FILES, ids=lambda path: path.stem)
def test_url_placeholders_name_non_secret_fields_with_strict_patterns(path: Path) -> None:
    """Given a catalogue file, when its URLs hold {field} placeholders, then each field is constrained by a pattern."""
    provider = Provider.model_validate(load(path))

    for template in url_templates(load(path)):
        for name in PLACEHOLDER.findall(template):
            field = provider.field(name)
            assert field is not None, (template, name)
            assert not field.secret, (template, name)
            assert field.pattern, (template, name)
            assert not any(field.accepts(value) for value in ("", "evil.com/", "a/../b", "a?b", "a#b", "a@b"))


def test_catalogue_field_patterns_accept_their_own_examples() -> None:
    """Given the Jira, Twilio and Mailchimp fields, when given realistic values, then their patterns accept them."""
    jira, twilio, mailchimp = providers.get(6), providers.get(8), providers.get(10)

    assert jira.field("site").accepts("acme-corp")  # type: ignore[union-attr]
    assert twilio.field("accountSid").accepts("AC" + "0123456789abcdef" * 2)  # type: ignore[union-attr]
    assert mailchimp.field("apiKey").accepts("0123456789abcdef" * 2 + "-us21")  # type: ignore[union-attr]
    assert not mailchimp.field("dc").accepts("us21.evil.com")  # type: ignore[union-attr]


# --- schema and models agree on broken documents --------------------------------------------------------


def _without(key: str) -> dict[str, Any]:
    document = custom_partner()
    del document[key]
    return document


def _with_test(**changes: Any) -> dict[str, Any]:
    document = custom_partner()
    return document | {"test": document["test"] | changes}


def _with_field(**changes: Any) -> dict[str, Any]:
    document = custom_partner()
    return document | {"fields": [document["fields"][0] | changes]}


def _oauth_provider(**changes: Any) -> dict[str, Any]:
    return copy.deepcopy(load(PACKAGE / "catalogue" / "google.json")) | changes


BROKEN = {
    "id zero": custom_partner(id=0),
    "id as a string": custom_partner(id="500"),
    "uppercase slug": custom_partner(slug="Acme"),
    "missing test": _without("test"),
    "unknown key": custom_partner(colour="blue"),
    "unknown auth type": custom_partner(authType="cookie"),
    "http base URL": custom_partner(baseUrl="http://api.acme.example"),
    "http docs URL": custom_partner(docsUrl="http://docs.acme.example"),
    "auth in a cookie": custom_partner(auth={"in": "cookie", "value": "{apiKey}"}),
    "header auth without a header name": custom_partner(auth={"in": "header", "value": "{apiKey}"}),
    "basic auth with a value": custom_partner(auth={"in": "basic", "username": "u", "password": "p", "value": "v"}),
    "relative test path": _with_test(path="v1/account"),
    "no expected status": _with_test(expectStatus=[]),
    "bad account path": _with_test(accountName="a..b"),
    "secret as a string": _with_field(secret="yes"),
    "field name with a dash": _with_field(name="api-key"),
    "field without a pattern key": {**custom_partner(), "fields": [{"name": "apiKey", "label": "Key", "help": "h"}]},
    "invalid field regex": _with_field(pattern="(unclosed"),
    "api_key with no secret field": _with_field(secret=False),
    "api_key with oauth": custom_partner(oauth=load(PACKAGE / "catalogue" / "google.json")["oauth"]),
    "oauth2 without oauth": _oauth_provider(oauth=None),
    "oauth2 with a secret field": _oauth_provider(fields=custom_partner()["fields"]),
    "oauth overriding redirect_uri": _oauth_provider(
        oauth=load(PACKAGE / "catalogue" / "google.json")["oauth"] | {"extraAuthorizeParams": {"redirect_uri": "x"}}
    ),
    "oauth with an unknown client auth": _oauth_provider(
        oauth=load(PACKAGE / "catalogue" / "google.json")["oauth"] | {"clientAuth": "jwt"}
    ),
}


@pytest.mark.parametrize("document", BROKEN.values(), ids=BROKEN.keys())
def test_broken_documents_are_rejected_by_both_the_schema_and_the_models(document: dict) -> None:
    """Given a deliberately broken provider, when validated, then schema.json and the models both reject it."""
    assert schema_errors(document) != []
    assert not model_accepts(document)


def _with_site_field(pattern: str | None) -> dict[str, Any]:
    site = {"name": "site", "label": "Site", "help": "h", "secret": False, "pattern": pattern, "required": True}
    document = custom_partner(baseUrl="https://{site}.acme.example")
    return document | {"fields": document["fields"] + [site]}


BROKEN_BEYOND_SCHEMA = {
    "placeholder naming no field": custom_partner(baseUrl="https://{region}.acme.example"),
    "placeholder naming a secret field": custom_partner(baseUrl="https://{apiKey}.acme.example"),
    "placeholder field without a pattern": _with_site_field(pattern=None),
    "placeholder field with a loose pattern": _with_site_field(pattern="^.+$"),
    "placeholder field allowing dots": _with_site_field(pattern="^[a-z.]+$"),
    "demo placeholder outside demo.json": custom_partner(baseUrl="https://{demoBaseUrl}"),
    "auth placeholder naming no field": custom_partner(auth={"in": "bearer", "value": "{token}"}),
    "duplicate field names": {**custom_partner(), "fields": custom_partner()["fields"] * 2},
}


@pytest.mark.parametrize("document", BROKEN_BEYOND_SCHEMA.values(), ids=BROKEN_BEYOND_SCHEMA.keys())
def test_the_models_reject_cross_field_mistakes_the_schema_cannot_express(document: dict) -> None:
    """Given a provider whose placeholders or fields do not line up, when validated, then the models reject it."""
    assert not model_accepts(document)


def test_a_placeholder_field_with_a_strict_pattern_is_accepted() -> None:
    """Given a URL placeholder naming a non-secret field with a strict pattern, when validated, then it passes."""
    assert model_accepts(_with_site_field(pattern=r"^[a-z0-9][a-z0-9\-]{0,62}$"))


# --- demo partners ---------------------------------------------------------------------------------------


def test_demo_partners_are_absent_by_default() -> None:
    """Given GRANTLINK_LOCAL_DEMO unset, when the catalogue loads, then no demo partner is listed."""
    assert providers.find(9001) is None
    assert not providers.search(q="demo")


@pytest.mark.usefixtures("demo")
def test_demo_partners_load_with_the_local_stack_urls_when_enabled() -> None:
    """Given GRANTLINK_LOCAL_DEMO=true and demo URLs, when the catalogue loads, then the demo partners use them."""
    apikey, basic, oauth = providers.get(9001), providers.get(9002), providers.get(9003)

    assert [apikey.slug, basic.slug, oauth.slug] == ["demo-apikey", "demo-basic", "demo-oauth"]
    assert apikey.base_url == basic.base_url == "http://localhost:3000"
    assert apikey.test.path == "/_demo/apikey/me"
    assert oauth.oauth is not None
    assert oauth.oauth.authorize_url == "http://localhost:3001/oauth/authorize"
    assert oauth.oauth.token_url == "http://localhost:3001/oauth/token"
    assert oauth.oauth.issuer == "http://localhost:3001/oauth"
    assert [field.name for field in basic.fields if field.secret] == ["password"]


def test_local_demo_without_demo_urls_is_a_clear_error(env: pytest.MonkeyPatch) -> None:
    """Given GRANTLINK_LOCAL_DEMO=true but no demo URLs, when the catalogue loads, then it names what is missing."""
    env.setenv("GRANTLINK_LOCAL_DEMO", "true")
    config.reset()

    with pytest.raises(CatalogueError, match="GRANTLINK_DEMO_BASE_URL"):
        providers.all_providers()


# --- operators' extra partners ---------------------------------------------------------------------------


def test_an_extra_providers_file_adds_a_partner(extra: Path) -> None:
    """Given an extra file with a new partner, when the catalogue loads, then the partner is listed."""
    extra.write_text(json.dumps([custom_partner()]))

    assert providers.get(500).name == "Acme CRM"
    assert providers.find(1) is not None


@pytest.mark.parametrize("clash", [{"id": 1}, {"slug": "stripe"}], ids=["id", "slug"])
def test_an_extra_partner_cannot_replace_an_existing_one(extra: Path, clash: dict) -> None:
    """Given an extra partner reusing an id or slug, when the catalogue loads, then the error names file and id."""
    extra.write_text(json.dumps([custom_partner(**clash)]))

    with pytest.raises(CatalogueError, match=rf"{re.escape(str(extra))}: partner {clash.get('id', 500)} "):
        providers.all_providers()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "is not a file"),
        ("[{", "cannot read provider file"),
        (json.dumps(custom_partner()), "expected a JSON list"),
        (json.dumps([custom_partner(baseUrl="http://api.acme.example")]), "partner 500 is invalid"),
    ],
    ids=["missing", "not JSON", "not a list", "invalid partner"],
)
def test_a_missing_or_invalid_extra_file_is_a_clear_error(extra: Path, content: str | None, message: str) -> None:
    """Given an extra file that is missing or invalid, when the catalogue loads, then the error names the file."""
    if content is not None:
        extra.write_text(content)

    with pytest.raises(CatalogueError, match=message) as raised:
        providers.all_providers()
    assert str(extra) in str(raised.value)


# --- the public API --------------------------------------------------------------------------------------


def test_all_providers_are_sorted_by_id_and_loaded_once() -> None:
    """Given the catalogue, when listed twice, then it is sorted by id and the same objects come back."""
    first, second = providers.all_providers(), providers.all_providers()

    assert [provider.id for provider in first] == sorted(provider.id for provider in first)
    assert all(a is b for a, b in zip(first, second, strict=True))


def test_get_of_an_unknown_partner_raises_not_found() -> None:
    """Given no partner 4242, when it is fetched, then NotFound with code partner_not_found is raised."""
    with pytest.raises(errors.NotFound) as raised:
        providers.get(4242)

    assert raised.value.code == "partner_not_found"
    assert raised.value.status == 404
    assert providers.find(4242) is None


def test_search_filters_by_auth_type() -> None:
    """Given the catalogue, when searched by auth type, then only partners of that type come back."""
    basic = providers.search(auth_type="basic")

    assert {provider.slug for provider in basic} >= {"jira", "zendesk", "twilio"}
    assert all(provider.auth_type == "basic" for provider in basic)


def test_search_matches_name_or_slug_case_insensitively() -> None:
    """Given the catalogue, when searched by text, then names and slugs match regardless of case."""
    assert [provider.slug for provider in providers.search(q="HUB")] == ["github", "hubspot"]
    assert [provider.slug for provider in providers.search(q="quickbooks")] == ["quickbooks"]
    assert [provider.slug for provider in providers.search(auth_type="api_key", q="git")] == ["gitlab"]
    assert len(providers.search()) == len(providers.all_providers())


def test_public_view_shows_the_form_but_no_internals() -> None:
    """Given a partner, when its public view is built, then it holds the form fields in camelCase and nothing else."""
    view = providers.get(6).public_view()

    assert set(view) == {
        "id", "slug", "name", "authType", "category", "fields", "docsUrl", "description", "environments", "scopes",
        "optionalScopes",
    }  # fmt: skip
    assert view["authType"] == "basic"
    assert view["environments"] == [{"name": "production", "label": "Production"}]
    assert view["fields"][0] == {
        "name": "site",
        "label": "Site",
        "help": "The part before .atlassian.net in your Jira address.",
        "secret": False,
        "pattern": r"^[a-zA-Z0-9][a-zA-Z0-9\-]{0,62}$",
        "required": True,
        "placeholder": "your-company",
        "example": "your-company",
        "prefix": None,
        "suffix": None,
    }
    json.dumps(view)
