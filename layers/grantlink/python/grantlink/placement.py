"""Where a credential's values go in a request to its partner: URL placeholders and the catalogue's `auth`.

Shared by connection tests (grantlink.testing) and the proxy (grantlink.proxy), so that both put a credential
exactly where the catalogue declares and fill URLs under the same rules:
- a `{field}` in a URL must name a non-secret field with a pattern (or, in a proxy base URL, a declared
  token-response metadata field); the value must match the whole pattern before it reaches the URL, and
  form-field values are percent-encoded so they cannot leave their segment;
- a value sent in a header must not hold control characters, surrounding spaces or non-Latin-1 text;
- every template is filled in one pass, so a value cannot smuggle in another placeholder.
Nothing here logs or returns a value in an error message.
"""

from __future__ import annotations

import base64
import math
import re
from collections.abc import Mapping
from email.utils import parsedate_to_datetime
from urllib.parse import quote

from grantlink import clock, errors
from grantlink.providers import BasicAuth, BearerAuth, HeaderAuth, OAuth1Auth, Provider

PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
_UNSENDABLE = re.compile(r"[\x00-\x1f\x7f]")


def fill_url(provider: Provider, values: Mapping[str, str], template: str) -> str:
    """`template` with each {name} replaced by its checked value: form fields percent-encoded, token metadata
    (a whole origin such as Salesforce's instance URL) as it is, once it matches its declared pattern."""
    return PLACEHOLDER.sub(lambda match: url_value(provider, values, match[1]), template)


def url_value(provider: Provider, values: Mapping[str, str], name: str) -> str:
    metadata = provider.oauth.metadata(name) if provider.oauth else None
    if metadata is not None:
        value = value_of(values, name)
        if re.fullmatch(metadata.pattern, value) is None:
            raise errors.BadRequest(f"The stored {name} is not valid.", code="invalid_field")
        return value
    field = provider.field(name)
    if field is None or field.secret or field.pattern is None:
        raise errors.GrantlinkError(f"Partner {provider.slug} uses {{{name}}} in a URL without a safe field.")
    value = value_of(values, name)
    if not field.accepts(value):
        raise errors.BadRequest(f"{field.label} is not valid.", code="invalid_field")
    return quote(value, safe="")


def apply_auth(provider: Provider, values: Mapping[str, str], headers: dict[str, str], params: dict[str, str]) -> None:
    """Put the credential where the catalogue's `auth` says: a bearer or named header, Basic, or a query param.
    OAuth 1.0a puts nothing here: the request is signed as it is sent (grantlink.oauth1.signer)."""
    auth = provider.auth
    if isinstance(auth, OAuth1Auth):
        return
    if isinstance(auth, BasicAuth):
        pair = f"{render(provider, values, auth.username, header=False)}:"
        pair += render(provider, values, auth.password, header=False)
        headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode("ascii")
    elif isinstance(auth, BearerAuth):
        headers["Authorization"] = "Bearer " + render(provider, values, auth.value)
    elif isinstance(auth, HeaderAuth):
        headers[auth.header] = render(provider, values, auth.value)
    else:
        params[auth.param] = render(provider, values, auth.value, header=False)


def auth_names(provider: Provider) -> tuple[set[str], set[str]]:
    """The header names (lower case) and query parameters the credential occupies."""
    auth = provider.auth
    if isinstance(auth, (BasicAuth, BearerAuth, OAuth1Auth)):  # OAuth 1.0a: the signature's Authorization header
        return {"authorization"}, set()
    if isinstance(auth, HeaderAuth):
        return {auth.header.lower()}, set()
    return set(), {auth.param}


def render(provider: Provider, values: Mapping[str, str], template: str, *, header: bool = True) -> str:
    """`template` with every {name} replaced in one pass, so a value cannot smuggle in another placeholder."""
    return PLACEHOLDER.sub(lambda match: _credential_value(provider, values, match[1], header), template)


def _credential_value(provider: Provider, values: Mapping[str, str], name: str, header: bool) -> str:
    if provider.field(name) is None and not (name == "accessToken" and provider.has_access_token):
        raise errors.GrantlinkError(f"Partner {provider.slug} uses an unknown placeholder {{{name}}}.")
    value = value_of(values, name)
    if header and not sendable(value):
        raise errors.BadRequest(f"The {name} value contains characters that cannot be sent.", code="invalid_field")
    return value


def sendable(value: str) -> bool:
    """True when `value` can be sent as a header value as it is."""
    return not (_UNSENDABLE.search(value) or value != value.strip() or _not_latin1(value))


def value_of(values: Mapping[str, str], name: str) -> str:
    value = values.get(name)
    if not isinstance(value, str):
        raise errors.BadRequest(f"The {name} value is missing.", code="invalid_field")
    return value


def _not_latin1(value: str) -> bool:
    try:
        value.encode("latin-1")
    except UnicodeEncodeError:
        return True
    return False


def retry_after_seconds(value: str | None) -> int | None:
    """Retry-After as whole seconds from now: delta-seconds or an HTTP date (RFC 9110); None when unreadable."""
    value = (value or "").strip()
    if re.fullmatch(r"[0-9]{1,9}", value):
        return int(value)
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if moment.tzinfo is None:
        return None
    return max(0, math.ceil((moment - clock.now()).total_seconds()))
