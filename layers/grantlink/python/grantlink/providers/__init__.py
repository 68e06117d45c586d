"""The partner catalogue: declarative provider files, validated and loaded once per process.

Real providers live in `catalogue/<slug>.json`, one file each. The local stack's demo partners live in
`demo.json` and load only when `settings().local_demo` is true. Operators add their own through a JSON list
named by `settings().extra_providers`. `schema.json` documents the file format; at runtime the pydantic
models below are the validator (the layer ships without `jsonschema`), and a unit test keeps the two in step.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, model_validator
from pydantic.alias_generators import to_camel

from grantlink import config, errors

_HERE = Path(__file__).parent
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
# A field used inside a URL must reject every one of these, so user input cannot leave its URL segment.
_UNSAFE_URL_VALUES = ("", "a/b", "a\\b", "a?b", "a#b", "a@b", "a:b", "a%2fb", "a.b", "a b", "a\nb")
_RESERVED_AUTHORIZE_PARAMS = frozenset(
    {"client_id", "redirect_uri", "response_type", "scope", "state", "code_challenge", "code_challenge_method"}
)
# A token-response field that is a whole origin (Salesforce's instance_url) must be refused in these shapes.
_UNSAFE_ORIGINS = (
    "", "http://a.example", "https://a.example/", "https://a.example/x", "https://u@a.example",
    "https://a.example?x", "https://a.example#x", "https://a.example\\x", "//a.example", "javascript:x",
    "https://a.example ", "https://a.example\n", "https://127.0.0.1", "https://a.example:1",
)  # fmt: skip
# Token-response fields that are secrets or already kept under their own names: never metadata.
_TOKEN_FIELDS = frozenset({"access_token", "refresh_token", "id_token", "token_type", "expires_in", "scope"})
_TOKEN_VALUES = frozenset({"accessToken", "refreshToken", "tokenType", "scope", "expiresAt"})
# Request headers a catalogue may not let callers forward: credentials, routing and framing.
_UNFORWARDABLE = re.compile(
    r"^(authorization|proxy-.*|cookie|host|x-forwarded-.*|forwarded|connection|keep-alive|te|trailer|"
    r"transfer-encoding|upgrade|content-length|x-amz-.*|x-api-key)$",
    re.I,
)

AuthType = Literal["api_key", "basic", "oauth2"]


class CatalogueError(ValueError):
    """A provider file is missing, unreadable or invalid: an operator's mistake, fatal at load time."""


def _url(value: str, info: ValidationInfo) -> str:
    # Only the demo partners, which point at the local stack, may use plain http.
    scheme = "https?" if (info.context or {}).get("allow_http") else "https"
    if not re.fullmatch(rf"{scheme}://\S+", value):
        raise ValueError(f"must be an {scheme.rstrip('?')} URL")
    return value


def _regex(value: str) -> str:
    try:
        re.compile(value)
    except re.error as exc:
        raise ValueError(f"not a valid regular expression: {exc}") from exc
    return value


def _text(max_length: int) -> Any:
    return Field(min_length=1, max_length=max_length)


def _proxy_url(value: str, info: ValidationInfo) -> str:
    # A proxy base URL may start with a token-metadata placeholder that is a whole origin ({instanceUrl}).
    if not re.fullmatch(r"\{[a-z][a-zA-Z0-9_]*\}(/\S*)?", value):
        _url(value, info)
    if "?" in value or "#" in value:
        raise ValueError("must not hold a query or a fragment")
    return value


Url = Annotated[str, AfterValidator(_url)]
ProxyUrl = Annotated[str, Field(max_length=500), AfterValidator(_proxy_url)]
Hostname = Annotated[
    str, Field(pattern=r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)+$", max_length=253)
]
Template = Annotated[str, _text(500)]
HeaderName = Annotated[str, Field(pattern=r"^[A-Za-z0-9-]+$")]
DottedPath = Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$")]


class _Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, extra="forbid", frozen=True, strict=True)


class FormField(_Model):
    """One input on the connect page."""

    name: Annotated[str, Field(pattern=r"^[a-z][a-zA-Z0-9_]*$", max_length=40)]
    label: Annotated[str, _text(80)]
    help: Annotated[str, _text(300)]
    secret: bool
    pattern: Annotated[str, Field(min_length=1), AfterValidator(_regex)] | None
    required: bool
    placeholder: Annotated[str, Field(max_length=100)] | None = None

    def accepts(self, value: str) -> bool:
        """True when `value` matches the whole pattern (or there is no pattern)."""
        return self.pattern is None or re.fullmatch(self.pattern, value) is not None


class BearerAuth(_Model):
    in_: Literal["bearer"] = Field(alias="in")
    value: Template


class HeaderAuth(_Model):
    in_: Literal["header"] = Field(alias="in")
    header: HeaderName
    value: Template


class QueryAuth(_Model):
    in_: Literal["query"] = Field(alias="in")
    param: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]+$")]
    value: Template


class BasicAuth(_Model):
    in_: Literal["basic"] = Field(alias="in")
    username: Template
    password: Template


Auth = Annotated[BearerAuth | HeaderAuth | QueryAuth | BasicAuth, Field(discriminator="in_")]


class ErrorWhen(_Model):
    """The response is a failure when the value at `path` equals `equals`, whatever the status."""

    path: DottedPath
    equals: bool | int | float | str | None


class CheckRequest(_Model):
    """The request that proves a credential works; `path` is appended to the provider's `baseUrl`."""

    method: Literal["GET", "POST"]
    path: Annotated[str, Field(pattern=r"^/\S*$")]
    headers: dict[HeaderName, str] = {}
    body: dict[str, Any] | None = None
    expect_status: Annotated[list[Annotated[int, Field(ge=100, le=599)]], Field(min_length=1)] = [200]
    account_name: DottedPath | None = None
    error_when: ErrorWhen | None = None


class TokenMetadata(_Model):
    """A non-secret token-response field kept with the credential, e.g. Salesforce's `instance_url` as
    `instanceUrl`, usable as a placeholder in the proxy base URL."""

    name: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$", max_length=40)]
    field: Annotated[str, Field(pattern=r"^[a-z][a-zA-Z0-9_]*$", max_length=40)]
    pattern: Annotated[str, Field(min_length=1), AfterValidator(_regex)]


class OAuth(_Model):
    authorize_url: Url
    token_url: Url
    scopes: list[Annotated[str, Field(pattern=r"^\S+$")]]
    scope_separator: Literal[" ", ","] = " "
    extra_authorize_params: dict[str, str] = {}
    pkce: bool = True
    issuer: Url | None = None
    client_auth: Literal["basic", "body"]
    token_metadata: Annotated[list[TokenMetadata], Field(max_length=5)] = []

    @model_validator(mode="after")
    def _no_reserved_params(self) -> OAuth:
        if reserved := sorted(_RESERVED_AUTHORIZE_PARAMS & self.extra_authorize_params.keys()):
            raise ValueError(f"extraAuthorizeParams may not set {', '.join(reserved)}")
        for entry in self.token_metadata:
            if entry.name in _TOKEN_FIELDS or entry.field in _TOKEN_VALUES:
                raise ValueError(
                    f"tokenMetadata may not keep {entry.name!r} as {entry.field!r}: tokens are not metadata"
                )
        if len({entry.field for entry in self.token_metadata}) != len(self.token_metadata):
            raise ValueError("tokenMetadata fields must be unique")
        return self

    def metadata(self, field: str) -> TokenMetadata | None:
        """The token metadata kept under this field name, or None."""
        return next((entry for entry in self.token_metadata if entry.field == field), None)


class ProxyRetry(_Model):
    """Partner answers the proxy retries itself: these statuses, up to `maxAttempts` calls in all, waiting what
    the partner's Retry-After asks up to `maxWaitSeconds` (never past the proxy's deadline)."""

    statuses: Annotated[list[Annotated[int, Field(ge=400, le=599)]], Field(min_length=1, max_length=10)]
    max_attempts: Annotated[int, Field(ge=1, le=3)]
    max_wait_seconds: Annotated[int, Field(ge=0, le=10)]


class ProxySettings(_Model):
    """What the authenticated proxy needs beyond `baseUrl` and `auth`."""

    base_url: ProxyUrl | None = None
    allowed_hosts: Annotated[list[Hostname], Field(max_length=10)] = []
    headers: dict[HeaderName, Annotated[str, _text(500)]] = {}
    forward_headers: Annotated[list[HeaderName], Field(max_length=20)] = []
    retry: ProxyRetry | None = None

    @model_validator(mode="after")
    def _forwardable(self) -> ProxySettings:
        if refused := [name for name in [*self.forward_headers, *self.headers] if _UNFORWARDABLE.match(name)]:
            raise ValueError(f"proxy headers may not name {refused[0]!r}")
        return self


class Provider(_Model):
    id: Annotated[int, Field(gt=0)]
    slug: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]{1,62}$")]
    name: Annotated[str, _text(80)]
    auth_type: AuthType
    docs_url: Url
    description: Annotated[str, _text(300)]
    fields: Annotated[list[FormField], Field(max_length=10)]
    base_url: Url
    auth: Auth
    test: CheckRequest
    oauth: OAuth | None = None
    proxy: ProxySettings | None = None

    @property
    def proxy_base_url(self) -> str:
        """The proxy's base URL template: `proxy.baseUrl`, else `baseUrl`."""
        return (self.proxy.base_url if self.proxy else None) or self.base_url

    def public_view(self) -> dict[str, Any]:
        """What the connect page and the partners API may show: no auth, test or OAuth internals."""
        view = self.model_dump(by_alias=True, include={"id", "slug", "name", "auth_type", "docs_url", "description"})
        view["fields"] = [field.model_dump(by_alias=True) for field in self.fields]
        return view

    def field(self, name: str) -> FormField | None:
        return next((field for field in self.fields if field.name == name), None)

    @model_validator(mode="after")
    def _consistent(self) -> Provider:
        self._check_auth_type()
        if len({field.name for field in self.fields}) != len(self.fields):
            raise ValueError("field names must be unique")
        for template in self._url_templates():
            for name in _PLACEHOLDER.findall(template):
                self._check_url_placeholder(name, template)
        if self.proxy and self.proxy.base_url:
            self._check_proxy_base_url(self.proxy.base_url)
        if self.oauth and (clash := [m.field for m in self.oauth.token_metadata if self.field(m.field)]):
            raise ValueError(f"tokenMetadata field {clash[0]!r} is also a form field")
        for template in self._credential_templates():
            for name in _PLACEHOLDER.findall(template):
                if self.field(name) is None and not (name == "accessToken" and self.oauth):
                    raise ValueError(f"placeholder {{{name}}} in {template!r} is not a declared field")
        return self

    def _check_auth_type(self) -> None:
        if (self.auth_type == "oauth2") != (self.oauth is not None):
            raise ValueError("oauth is required for oauth2 providers and forbidden otherwise")
        if self.auth_type == "oauth2" and any(field.secret for field in self.fields):
            raise ValueError("oauth2 providers may only declare non-secret fields")
        if self.auth_type != "oauth2" and not any(field.secret for field in self.fields):
            raise ValueError(f"{self.auth_type} providers need at least one secret field")

    def _check_url_placeholder(self, name: str, template: str) -> None:
        field = self.field(name)
        if field is None or field.secret or field.pattern is None:
            raise ValueError(f"placeholder {{{name}}} in {template!r} must name a non-secret field with a pattern")
        if unsafe := [value for value in _UNSAFE_URL_VALUES if field.accepts(value)]:
            raise ValueError(f"the pattern of field {name!r} is too loose for a URL: it accepts {unsafe[0]!r}")

    def _check_proxy_base_url(self, template: str) -> None:
        """Form fields as in every URL; token metadata as a whole origin at the start, else as a URL segment."""
        for name in _PLACEHOLDER.findall(template):
            metadata = self.oauth.metadata(name) if self.oauth else None
            if metadata is None:
                if template.startswith("{"):
                    raise ValueError(f"only token metadata may be the whole origin of {template!r}")
                self._check_url_placeholder(name, template)
                continue
            at_origin = template.startswith(f"{{{name}}}")
            unsafe_values = _UNSAFE_ORIGINS if at_origin else _UNSAFE_URL_VALUES
            if unsafe := [value for value in unsafe_values if re.fullmatch(metadata.pattern, value)]:
                raise ValueError(
                    f"the pattern of token metadata {name!r} is too loose for a URL: it accepts {unsafe[0]!r}"
                )

    def _url_templates(self) -> list[str]:
        oauth = self.oauth
        urls = [self.base_url, self.test.path]
        if oauth:
            urls += [oauth.authorize_url, oauth.token_url, *([oauth.issuer] if oauth.issuer else [])]
        return urls

    def _credential_templates(self) -> list[str]:
        auth = self.auth
        values = [auth.username, auth.password] if isinstance(auth, BasicAuth) else [auth.value]
        return values + list(self.test.headers.values()) + list(self.proxy.headers.values() if self.proxy else [])


def all_providers() -> list[Provider]:
    """Every partner, sorted by id."""
    return list(_catalogue().values())


def find(partner_id: int) -> Provider | None:
    """The partner with this id, or None."""
    return _catalogue().get(partner_id)


def get(partner_id: int) -> Provider:
    """The partner with this id; raises NotFound (code partner_not_found) when there is none."""
    provider = find(partner_id)
    if provider is None:
        raise errors.NotFound("Unknown partner.", code="partner_not_found")
    return provider


def search(auth_type: str | None = None, q: str | None = None) -> list[Provider]:
    """Partners of this auth type whose name or slug contains `q` (case-insensitive), sorted by id."""
    needle = (q or "").strip().lower()
    return [
        provider
        for provider in all_providers()
        if (auth_type is None or provider.auth_type == auth_type)
        and (needle in provider.name.lower() or needle in provider.slug)
    ]


def reset() -> None:
    """Forget the loaded catalogue (tests call this after changing settings)."""
    _catalogue.cache_clear()


@lru_cache(maxsize=1)
def _catalogue() -> dict[int, Provider]:
    found: dict[int, Provider] = {}
    for path in sorted((_HERE / "catalogue").glob("*.json")):
        _add(found, [_parse(_read(path), path)], path)
    conf = config.settings()
    if conf.local_demo:
        _add(found, _demo_providers(conf), _HERE / "demo.json")
    if conf.extra_providers:
        path = Path(conf.extra_providers)
        if not path.is_file():
            raise CatalogueError(f"GRANTLINK_EXTRA_PROVIDERS names {path}, which is not a file")
        _add(found, _parse_list(_read(path), path), path)
    return dict(sorted(found.items()))


def _add(found: dict[int, Provider], providers: list[Provider], path: Path) -> None:
    slugs = {provider.slug for provider in found.values()}
    for provider in providers:
        if provider.id in found or provider.slug in slugs:
            raise CatalogueError(
                f"{path}: partner {provider.id} ({provider.slug}) reuses the id or slug of an existing partner"
            )
        found[provider.id] = provider
        slugs.add(provider.slug)


def _demo_providers(conf: config.Settings) -> list[Provider]:
    if not (conf.demo_base_url and conf.demo_oauth_url):
        raise CatalogueError("GRANTLINK_LOCAL_DEMO needs GRANTLINK_DEMO_BASE_URL and GRANTLINK_DEMO_OAUTH_URL")
    urls = {"{demoBaseUrl}": conf.demo_base_url.rstrip("/"), "{demoOAuthUrl}": conf.demo_oauth_url.rstrip("/")}
    path = _HERE / "demo.json"
    return _parse_list(_substitute(_read(path), urls), path, allow_http=True)


def _substitute(document: Any, replacements: dict[str, str]) -> Any:
    if isinstance(document, str):
        for placeholder, value in replacements.items():
            document = document.replace(placeholder, value)
        return document
    if isinstance(document, list):
        return [_substitute(item, replacements) for item in document]
    if isinstance(document, dict):
        return {key: _substitute(value, replacements) for key, value in document.items()}
    return document


def _read(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CatalogueError(f"{path}: cannot read provider file: {exc}") from exc


def _parse_list(document: Any, path: Path, *, allow_http: bool = False) -> list[Provider]:
    if not isinstance(document, list):
        raise CatalogueError(f"{path}: expected a JSON list of providers")
    return [_parse(item, path, allow_http=allow_http) for item in document]


def _parse(document: Any, path: Path, *, allow_http: bool = False) -> Provider:
    try:
        return Provider.model_validate(document, context={"allow_http": allow_http})
    except ValidationError as exc:
        partner_id = document.get("id") if isinstance(document, dict) else None
        raise CatalogueError(f"{path}: partner {partner_id} is invalid: {exc}") from exc
