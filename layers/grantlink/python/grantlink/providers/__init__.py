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

AuthType = Literal["api_key", "basic", "oauth2", "oauth1", "client_credentials"]
AUTH_TYPES: tuple[str, ...] = ("api_key", "basic", "oauth2", "oauth1", "client_credentials")
Category = Literal[
    "crm", "support", "dev_tools", "finance", "marketing", "storage", "communication", "productivity", "ecommerce",
    "ai", "analytics", "hr",
]  # fmt: skip
PRODUCTION = "production"
# Token-request parameters a catalogue may not set: the grant's own, which grantlink sends itself.
_RESERVED_TOKEN_PARAMS = frozenset(
    {"grant_type", "code", "redirect_uri", "client_id", "client_secret", "code_verifier", "refresh_token", "scope"}
)
_RESERVED_OAUTH1_PARAMS = frozenset({"oauth_token", "oauth_callback", "oauth_verifier"})
# Shared hosting suffixes: a provider's own domain is never one of these (anyone can have a host under them).
SHARED_SUFFIXES = frozenset(
    {"com", "net", "org", "io", "co", "amazonaws.com", "herokuapp.com", "github.io", "vercel.app", "netlify.app",
     "azurewebsites.net", "cloudfront.net", "appspot.com", "web.app", "firebaseapp.com", "pages.dev"}
)  # fmt: skip


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
    example: Annotated[str, Field(min_length=1, max_length=100)] | None = None
    prefix: Annotated[str, Field(min_length=1, max_length=60)] | None = None
    suffix: Annotated[str, Field(min_length=1, max_length=60)] | None = None

    @model_validator(mode="after")
    def _example_fits(self) -> FormField:
        if self.example is not None and not self.accepts(self.example):
            raise ValueError(f"the example of field {self.name!r} does not match its pattern")
        return self

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
    password: Annotated[str, Field(max_length=500)]  # may be empty: an API key as the username (Chargebee, Recurly)


class OAuth1Auth(_Model):
    """The request is signed with OAuth 1.0a (the tenant's consumer key and the customer's access token)."""

    in_: Literal["oauth1"] = Field(alias="in")


Auth = Annotated[BearerAuth | HeaderAuth | QueryAuth | BasicAuth | OAuth1Auth, Field(discriminator="in_")]
Scope = Annotated[str, Field(pattern=r"^\S+$", max_length=200)]
Params = dict[Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]+$", max_length=60)], Annotated[str, Field(max_length=500)]]


def _allowed_scopes(scopes: list[str], optional: list[str]) -> list[str]:
    """What a link may ask for: the defaults, then the optional ones not already among them."""
    return [*scopes, *[scope for scope in optional if scope not in scopes]]


def _reserved(params: dict[str, str], reserved: frozenset[str], what: str) -> None:
    if clash := sorted(reserved & params.keys()):
        raise ValueError(f"{what} may not set {', '.join(clash)}")


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
    optional_scopes: list[Scope] = []
    extra_token_params: Params = {}
    extra_refresh_params: Params = {}

    @property
    def allowed_scopes(self) -> list[str]:
        return _allowed_scopes(self.scopes, self.optional_scopes)

    @model_validator(mode="after")
    def _no_reserved_params(self) -> OAuth:
        _reserved(self.extra_authorize_params, _RESERVED_AUTHORIZE_PARAMS, "extraAuthorizeParams")
        _reserved(self.extra_token_params, _RESERVED_TOKEN_PARAMS, "extraTokenParams")
        _reserved(self.extra_refresh_params, _RESERVED_TOKEN_PARAMS, "extraRefreshParams")
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


class OAuth1(_Model):
    """Three-legged OAuth 1.0a (RFC 5849): request token, the customer's authorization, access token."""

    request_token_url: Url
    authorize_url: Url
    access_token_url: Url
    signature_method: Literal["HMAC-SHA1", "HMAC-SHA256", "RSA-SHA1"]
    extra_authorize_params: Params = {}

    @model_validator(mode="after")
    def _no_reserved_params(self) -> OAuth1:
        _reserved(self.extra_authorize_params, _RESERVED_OAUTH1_PARAMS, "extraAuthorizeParams")
        return self


class ClientCredentials(_Model):
    """The OAuth 2.0 client credentials grant (RFC 6749 section 4.4): the customer's own client id and secret,
    typed into the connect page; grantlink mints access tokens with them and mints again before expiry."""

    token_url: Url
    scopes: list[Scope]
    optional_scopes: list[Scope] = []
    scope_separator: Literal[" ", ","] = " "
    client_auth: Literal["basic", "body"]
    client_id_field: Annotated[str, Field(pattern=r"^[a-z][a-zA-Z0-9_]*$", max_length=40)]
    client_secret_field: Annotated[str, Field(pattern=r"^[a-z][a-zA-Z0-9_]*$", max_length=40)]
    extra_token_params: Params = {}

    @property
    def allowed_scopes(self) -> list[str]:
        return _allowed_scopes(self.scopes, self.optional_scopes)

    @model_validator(mode="after")
    def _no_reserved_params(self) -> ClientCredentials:
        _reserved(self.extra_token_params, _RESERVED_TOKEN_PARAMS, "extraTokenParams")
        return self


class Environment(_Model):
    """A separate deployment of the provider (a sandbox, a test mode): its own URLs, each replacing the
    default for credentials of this environment. `production` is the default environment."""

    name: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_-]{1,30}$")]
    label: Annotated[str, _text(80)]
    base_url: Url | None = None
    authorize_url: Url | None = None
    token_url: Url | None = None
    request_token_url: Url | None = None
    access_token_url: Url | None = None
    issuer: Url | None = None  # OAuth 2.0: its own authorization server's `iss` (RFC 9207), if the provider has one
    proxy_base_url: ProxyUrl | None = None  # where this environment's proxied calls go, when `proxy.baseUrl` is set

    def urls(self) -> list[str]:
        return [
            url
            for url in (
                self.base_url,
                self.authorize_url,
                self.token_url,
                self.request_token_url,
                self.access_token_url,
                self.issuer,
            )
            if url
        ]


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
    category: Category | None = None  # required of the built-in catalogue (a test), optional for operators' own
    domains: Annotated[list[Hostname], Field(max_length=5)] = []  # ditto: the provider's own registrable domains
    docs_url: Url
    description: Annotated[str, _text(300)]
    fields: Annotated[list[FormField], Field(max_length=10)]
    base_url: Url
    auth: Auth
    test: CheckRequest
    oauth: OAuth | None = None
    oauth1: OAuth1 | None = None
    client_credentials: ClientCredentials | None = None
    environments: Annotated[list[Environment], Field(max_length=5)] = []
    proxy: ProxySettings | None = None

    @property
    def environment_names(self) -> list[str]:
        """The environments a link may name; `production` only, unless the provider declares more."""
        return [env.name for env in self.environments] or [PRODUCTION]

    def environment(self, name: str) -> Environment | None:
        return next((env for env in self.environments if env.name == name), None)

    def in_environment(self, name: str | None) -> Provider:
        """This provider with the URLs of environment `name` (None: production) in place of the defaults, so
        the connect page, tests, token calls and the proxy of a sandbox credential use the sandbox's URLs."""
        env = self.environment(name or PRODUCTION)
        if env is None:
            if (name or PRODUCTION) != PRODUCTION:
                raise errors.UnprocessableEntity(
                    f"{self.name} has no {name!r} environment.", code="environment_not_supported"
                )
            return self
        changes: dict[str, Any] = {}
        if env.base_url:
            changes["base_url"] = env.base_url
        if self.oauth and (env.authorize_url or env.token_url or env.issuer):
            urls = (("authorize_url", env.authorize_url), ("token_url", env.token_url), ("issuer", env.issuer))
            changes["oauth"] = self.oauth.model_copy(update={k: v for k, v in urls if v})
        if env.proxy_base_url:
            changes["proxy"] = (self.proxy or ProxySettings()).model_copy(update={"base_url": env.proxy_base_url})
        if self.client_credentials and env.token_url:
            changes["client_credentials"] = self.client_credentials.model_copy(update={"token_url": env.token_url})
        if self.oauth1 and (env.request_token_url or env.authorize_url or env.access_token_url):
            urls = (
                ("request_token_url", env.request_token_url),
                ("authorize_url", env.authorize_url),
                ("access_token_url", env.access_token_url),
            )
            changes["oauth1"] = self.oauth1.model_copy(update={k: v for k, v in urls if v})
        return self.model_copy(update=changes) if changes else self

    @property
    def _scoped_grant(self) -> OAuth | ClientCredentials | None:
        """The OAuth 2.0 grant that takes scopes (code flow or client credentials), if the provider has one."""
        return self.oauth or self.client_credentials

    @property
    def default_scopes(self) -> list[str]:
        """The scopes a link asks for when it names none (OAuth 2.0 kinds; empty otherwise)."""
        grant = self._scoped_grant
        return list(grant.scopes) if grant else []

    @property
    def allowed_scopes(self) -> list[str] | None:
        """The scopes a link may name, or None when the provider takes no scopes through grantlink."""
        grant = self._scoped_grant
        return grant.allowed_scopes if grant else None

    @property
    def scope_separator(self) -> str:
        grant = self._scoped_grant
        return grant.scope_separator if grant else " "

    @property
    def uses_oauth_app(self) -> bool:
        """OAuth 2.0 code flow and OAuth 1.0a use the tenant's OAuth app (client or consumer)."""
        return self.auth_type in ("oauth2", "oauth1")

    @property
    def has_access_token(self) -> bool:
        """Credentials of this kind hold an access token that grantlink renews (refresh or re-mint)."""
        return self.auth_type in ("oauth2", "client_credentials")

    @property
    def proxy_base_url(self) -> str:
        """The proxy's base URL template: `proxy.baseUrl`, else `baseUrl`."""
        return (self.proxy.base_url if self.proxy else None) or self.base_url

    def public_view(self) -> dict[str, Any]:
        """What the connect page and the partners API may show: no auth, test or OAuth internals."""
        view = self.model_dump(
            by_alias=True, include={"id", "slug", "name", "auth_type", "category", "docs_url", "description"}
        )
        view["fields"] = [field.model_dump(by_alias=True) for field in self.fields]
        view["environments"] = [{"name": env.name, "label": env.label} for env in self.environments] or [
            {"name": PRODUCTION, "label": "Production"}
        ]
        view["scopes"] = self.default_scopes
        view["optionalScopes"] = [s for s in self.allowed_scopes or [] if s not in self.default_scopes]
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
                if self.field(name) is None and not (name == "accessToken" and self.has_access_token):
                    raise ValueError(f"placeholder {{{name}}} in {template!r} is not a declared field")
        return self

    def _check_auth_type(self) -> None:
        blocks = {"oauth2": self.oauth, "oauth1": self.oauth1, "client_credentials": self.client_credentials}
        for kind, block in blocks.items():
            name = {"oauth2": "oauth", "oauth1": "oauth1", "client_credentials": "clientCredentials"}[kind]
            if (self.auth_type == kind) != (block is not None):
                raise ValueError(f"{name} is required for {kind} providers and forbidden otherwise")
        if self.auth_type in ("oauth2", "oauth1") and any(field.secret for field in self.fields):
            raise ValueError(f"{self.auth_type} providers may only declare non-secret fields")
        if self.auth_type in ("api_key", "basic", "client_credentials") and not any(f.secret for f in self.fields):
            raise ValueError(f"{self.auth_type} providers need at least one secret field")
        if (self.auth_type == "oauth1") != isinstance(self.auth, OAuth1Auth):
            raise ValueError('auth {"in": "oauth1"} is for oauth1 providers, and oauth1 providers use it')
        if cc := self.client_credentials:
            id_field, secret_field = self.field(cc.client_id_field), self.field(cc.client_secret_field)
            if id_field is None or secret_field is None or not secret_field.secret:
                raise ValueError("clientCredentials names a client id field and a secret client secret field")
            if not (id_field.required and secret_field.required):
                raise ValueError("the client id and client secret fields must be required")
        self._check_environments()

    def _check_environments(self) -> None:
        names = [env.name for env in self.environments]
        if names and PRODUCTION not in names:
            raise ValueError("environments must include production")
        if len(set(names)) != len(names):
            raise ValueError("environment names must be unique")
        for env in self.environments:
            if (env.authorize_url or env.token_url) and not (self.oauth or self.client_credentials or self.oauth1):
                raise ValueError(f"environment {env.name!r} sets OAuth URLs for a provider without OAuth")
            if env.token_url and self.oauth1:
                raise ValueError(f"environment {env.name!r}: oauth1 providers have no tokenUrl")
            own_server = env.authorize_url or env.token_url
            if self.oauth and self.oauth.issuer and own_server and not env.issuer:
                raise ValueError(
                    f"environment {env.name!r} has its own authorization server: name its issuer, or every callback "
                    "would fail the issuer check"
                )
            if env.issuer and not (self.oauth and self.oauth.issuer):
                raise ValueError(f"environment {env.name!r}: an issuer is for OAuth 2.0 providers that declare one")
            if (env.request_token_url or env.access_token_url) and not self.oauth1:
                raise ValueError(f"environment {env.name!r}: requestTokenUrl/accessTokenUrl are for oauth1")
            if env.proxy_base_url:
                self._check_proxy_base_url(env.proxy_base_url)
            own_proxy = self.proxy is not None and self.proxy.base_url and not self.proxy.base_url.startswith("{")
            if own_proxy and env.base_url and not env.proxy_base_url:
                raise ValueError(
                    f"environment {env.name!r} has its own baseUrl: give it a proxyBaseUrl too, or its credentials "
                    "would be proxied to the default proxy.baseUrl"
                )

    def all_urls(self) -> list[str]:
        """Every URL template in the entry: docs, base, test, OAuth and environments (for checks)."""
        return [self.docs_url, *self._url_templates()]

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
        oauth, oauth1, cc = self.oauth, self.oauth1, self.client_credentials
        urls = [self.base_url, self.test.path]
        if oauth:
            urls += [oauth.authorize_url, oauth.token_url, *([oauth.issuer] if oauth.issuer else [])]
        if oauth1:
            urls += [oauth1.request_token_url, oauth1.authorize_url, oauth1.access_token_url]
        if cc:
            urls.append(cc.token_url)
        for env in self.environments:
            urls += env.urls()
        return urls

    def _credential_templates(self) -> list[str]:
        auth = self.auth
        if isinstance(auth, OAuth1Auth):
            values: list[str] = []
        else:
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


def in_environment(partner_id: int, environment: str | None) -> Provider:
    """The partner with this id, with the URLs of `environment` (a link's or a credential's; None: production)."""
    return get(partner_id).in_environment(environment)


def search(
    auth_type: str | None = None, q: str | None = None, environment: str | None = None, category: str | None = None
) -> list[Provider]:
    """Partners of this auth type, category and environment whose name or slug contains `q`
    (case-insensitive), sorted by id."""
    needle = (q or "").strip().lower()
    return [
        provider
        for provider in all_providers()
        if (auth_type is None or provider.auth_type == auth_type)
        and (category is None or provider.category == category)
        and (environment is None or environment in provider.environment_names)
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
    urls = {
        "{demoBaseUrl}": conf.demo_base_url.rstrip("/"),
        "{demoOAuthUrl}": conf.demo_oauth_url.rstrip("/"),
        # Optional demo servers: without them their partners' URLs stay unfilled and the entry is left out.
        "{demoOAuth1Url}": conf.demo_oauth1_url.rstrip("/"),
        "{demoSandboxOAuthUrl}": conf.demo_sandbox_oauth_url.rstrip("/"),
    }
    path = _HERE / "demo.json"
    document = _read(path)
    missing = [placeholder for placeholder, value in urls.items() if not value]
    if isinstance(document, list):
        document = [_without(entry, missing) for entry in document]
        document = [entry for entry in document if not any(m in json.dumps(entry) for m in missing)]
    return _parse_list(_substitute(document, urls), path, allow_http=True)


def _without(entry: Any, missing: list[str]) -> Any:
    """A demo entry without the environments whose server is not running (a missing placeholder)."""
    if not isinstance(entry, dict) or not isinstance(entry.get("environments"), list):
        return entry
    kept = [env for env in entry["environments"] if not any(m in json.dumps(env) for m in missing)]
    return {**entry, "environments": kept if len(kept) > 1 else []}


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
