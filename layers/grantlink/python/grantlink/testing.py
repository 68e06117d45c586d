"""Connection tests: one request, declared by the catalogue, that proves a credential works.

`check_credential` builds the provider's test request from the catalogue only (never from caller input beyond
field values, which must match their patterns before they reach a URL), applies the credential where the
provider declares it, and sorts the answer into one of `CATEGORIES` with a short message for humans. The
message never holds the secret or the provider's body; one log line per check holds no more than the slug,
category, status and latency.

Outbound calls are bounded: connect and read timeouts, a total deadline, at most `MAX_BODY_BYTES` of body,
no redirects, https only, and no private, loopback, link-local, multicast, reserved or unspecified address
unless `allow_private` (the local stack's demo partners live on http://127.0.0.1).
"""

from __future__ import annotations

import base64
import ipaddress
import json
import math
import re
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any, get_args
from urllib.parse import quote, urlsplit

from urllib3.exceptions import MaxRetryError, NameResolutionError, ReadTimeoutError

from grantlink import clock, config, errors
from grantlink.models import TestCategory
from grantlink.observability import logger, trace_http
from grantlink.providers import BasicAuth, BearerAuth, HeaderAuth, Provider

if TYPE_CHECKING:
    import requests  # imported where a partner is called: the functions that only import this module skip it

CATEGORIES: tuple[str, ...] = get_args(TestCategory)
DEFAULT_CONNECT_TIMEOUT = 3.0
DEFAULT_READ_TIMEOUT = 10.0
MAX_BODY_BYTES = 256 * 1024
MAX_ACCOUNT_NAME = 200
USER_AGENT = "grantlink/0.1"
NOT_ALLOWED = "The provider's address is not allowed."
# Error codes a provider puts in a 200 body (Slack's `{"ok": false, "error": ...}`) that we can name.
AUTH_ERRORS = frozenset({"invalid_auth", "not_authed", "token_revoked", "token_expired", "account_inactive"})
PERMISSION_ERRORS = frozenset({"missing_scope", "no_permission"})

_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
_UNSENDABLE = re.compile(r"[\x00-\x1f\x7f]")
_MISSING = object()
_NOT_JSON = object()


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one connection test."""

    ok: bool
    category: str
    http_status: int | None
    latency_ms: int
    message: str
    account_name: str | None
    tested_at: str

    def to_api(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "category": self.category,
            "httpStatus": self.http_status,
            "latencyMs": self.latency_ms,
            "message": self.message,
            "accountName": self.account_name,
            "testedAt": self.tested_at,
        }


@dataclass(frozen=True)
class _Outcome:
    category: str
    message: str
    http_status: int | None = None
    account_name: str | None = None


@dataclass(frozen=True)
class _Limits:
    connect: float
    read: float
    allow_private: bool


@dataclass(frozen=True)
class _Call:
    method: str
    url: str
    headers: dict[str, str]
    params: dict[str, str]
    body: dict[str, Any] | None


class _DeadlineExceeded(Exception):
    """The provider kept sending past the total deadline."""


def check_credential(
    provider: Provider,
    values: Mapping[str, str],
    *,
    allow_private: bool | None = None,
    connect_timeout: float | None = None,
    read_timeout: float | None = None,
    session: requests.Session | None = None,
) -> CheckResult:
    """Send the provider's test request with these credential values and categorise the answer.

    Raises `BadRequest` (code `invalid_field`) when a value is missing, does not match the pattern of a field
    used in the URL, or cannot be sent in a header; `GrantlinkError` when the catalogue entry is inconsistent.
    Every other failure is a result, not an exception.
    """
    limits = _limits(allow_private, connect_timeout, read_timeout)
    call = _build_call(provider, values)
    started = time.monotonic()
    outcome = _guard(provider, call.url, limits) or _send(provider, call, limits, session)
    result = CheckResult(
        ok=outcome.category == "ok",
        category=outcome.category,
        http_status=outcome.http_status,
        latency_ms=round((time.monotonic() - started) * 1000),
        message=outcome.message,
        account_name=outcome.account_name,
        tested_at=clock.iso(clock.now()),
    )
    logger.info(
        "connection test",
        extra={
            "partner": provider.slug,
            "category": result.category,
            "httpStatus": result.http_status,
            "latencyMs": result.latency_ms,
        },
    )
    return result


def _limits(allow_private: bool | None, connect: float | None, read: float | None) -> _Limits:
    # Read with getattr so the settings model can gain these fields without this module changing.
    if allow_private is None or connect is None or read is None:
        conf = config.settings()
        allow_private = bool(getattr(conf, "allow_private_targets", False)) if allow_private is None else allow_private
        connect = float(getattr(conf, "test_connect_timeout", DEFAULT_CONNECT_TIMEOUT)) if connect is None else connect
        read = float(getattr(conf, "test_read_timeout", DEFAULT_READ_TIMEOUT)) if read is None else read
    return _Limits(connect=connect, read=read, allow_private=allow_private)


# --- building the request ---------------------------------------------------------------------------------


def _build_call(provider: Provider, values: Mapping[str, str]) -> _Call:
    test = provider.test
    headers = {"Accept": "application/json", "User-Agent": USER_AGENT}
    headers.update({name: _render(provider, values, value) for name, value in test.headers.items()})
    params: dict[str, str] = {}
    _apply_auth(provider, values, headers, params)
    url = _PLACEHOLDER.sub(lambda match: _url_value(provider, values, match[1]), provider.base_url + test.path)
    return _Call(method=test.method, url=url, headers=headers, params=params, body=test.body)


def _apply_auth(provider: Provider, values: Mapping[str, str], headers: dict[str, str], params: dict[str, str]) -> None:
    auth = provider.auth
    if isinstance(auth, BasicAuth):
        pair = f"{_render(provider, values, auth.username, header=False)}:"
        pair += _render(provider, values, auth.password, header=False)
        headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode("ascii")
    elif isinstance(auth, BearerAuth):
        headers["Authorization"] = "Bearer " + _render(provider, values, auth.value)
    elif isinstance(auth, HeaderAuth):
        headers[auth.header] = _render(provider, values, auth.value)
    else:
        params[auth.param] = _render(provider, values, auth.value, header=False)


def _render(provider: Provider, values: Mapping[str, str], template: str, *, header: bool = True) -> str:
    """`template` with every {name} replaced in one pass, so a value cannot smuggle in another placeholder."""
    return _PLACEHOLDER.sub(lambda match: _credential_value(provider, values, match[1], header), template)


def _credential_value(provider: Provider, values: Mapping[str, str], name: str, header: bool) -> str:
    if provider.field(name) is None and not (name == "accessToken" and provider.oauth):
        raise errors.GrantlinkError(f"Partner {provider.slug} uses an unknown placeholder {{{name}}}.")
    value = _value(values, name)
    if header and (_UNSENDABLE.search(value) or value != value.strip() or _not_latin1(value)):
        raise errors.BadRequest(f"The {name} value contains characters that cannot be sent.", code="invalid_field")
    return value


def _url_value(provider: Provider, values: Mapping[str, str], name: str) -> str:
    field = provider.field(name)
    if field is None or field.secret or field.pattern is None:
        raise errors.GrantlinkError(f"Partner {provider.slug} uses {{{name}}} in a URL without a safe field.")
    value = _value(values, name)
    if not field.accepts(value):
        raise errors.BadRequest(f"{field.label} is not valid.", code="invalid_field")
    return quote(value, safe="")


def _value(values: Mapping[str, str], name: str) -> str:
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


# --- where it may go --------------------------------------------------------------------------------------


def _guard(provider: Provider, url: str, limits: _Limits) -> _Outcome | None:
    """Why this URL may not be called (an outcome), or None when it may.

    DNS rebinding gap: the host is resolved here and again by the HTTP client when it connects, so a hostile
    DNS server could answer differently the second time. Hosts come only from the catalogue and patterned
    subdomains of providers' own domains, which narrows this to a compromised provider zone; pinning the
    connection to the checked address would close it and is left for later.
    """
    parts = urlsplit(url)
    if parts.scheme != "https" and not (limits.allow_private and parts.scheme == "http"):
        return _Outcome("network_error", NOT_ALLOWED)
    if limits.allow_private:
        return None
    try:
        found = socket.getaddrinfo(parts.hostname or "", parts.port or 443, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError, ValueError):
        return _Outcome("network_error", f"Could not find the address of {provider.name}.")
    if not found or not all(_public(str(info[4][0])) for info in found):
        return _Outcome("network_error", NOT_ALLOWED)
    return None


def _public(address: str) -> bool:
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and (embedded := ip.ipv4_mapped or ip.sixtofour):
        ip = embedded
    special = ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_multicast
    return ip.is_global and not (special or ip.is_reserved or ip.is_unspecified)


# --- sending and reading ----------------------------------------------------------------------------------


def _send(provider: Provider, call: _Call, limits: _Limits, session: requests.Session | None) -> _Outcome:
    import requests

    own = session is None
    trace_http()
    client = session or requests.Session()
    if own:
        client.trust_env = False  # no proxies or ~/.netrc credentials from the environment
    deadline = time.monotonic() + limits.connect + limits.read
    try:
        with client.request(
            call.method,
            call.url,
            headers=call.headers,
            params=call.params,
            json=call.body,
            timeout=(limits.connect, limits.read),
            allow_redirects=False,
            stream=True,
        ) as response:
            document = _read_json(response, deadline) if _needs_body(provider) else _NOT_JSON
            return _categorise(provider, response, document)
    except (requests.RequestException, _DeadlineExceeded) as exc:
        return _failure(provider, exc, limits)
    finally:
        if own:
            client.close()


def _needs_body(provider: Provider) -> bool:
    return provider.test.account_name is not None or provider.test.error_when is not None


def _read_json(response: requests.Response, deadline: float) -> Any:
    """The JSON body, or `_NOT_JSON` when it is not JSON or larger than `MAX_BODY_BYTES`."""
    chunks, size = [], 0
    for chunk in response.iter_content(16 * 1024):
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            return _NOT_JSON
        if time.monotonic() > deadline:
            raise _DeadlineExceeded
        chunks.append(chunk)
    try:
        return json.loads(b"".join(chunks))
    except (ValueError, RecursionError):
        return _NOT_JSON


def _failure(provider: Provider, exc: Exception, limits: _Limits) -> _Outcome:
    import requests

    name = provider.name
    if isinstance(exc, requests.ConnectTimeout):
        return _Outcome("timeout", f"{name} did not accept a connection within {_seconds(limits.connect)}.")
    if isinstance(exc, requests.Timeout) or _reason(exc, ReadTimeoutError):
        return _Outcome("timeout", f"{name} did not answer within {_seconds(limits.read)}.")
    if isinstance(exc, _DeadlineExceeded):
        total = _seconds(limits.connect + limits.read)
        return _Outcome("timeout", f"{name} did not finish answering within {total}.")
    if isinstance(exc, requests.exceptions.SSLError):
        return _Outcome("network_error", f"Could not open a secure connection to {name}.")
    if _reason(exc, NameResolutionError):
        return _Outcome("network_error", f"Could not find the address of {name}.")
    if isinstance(exc, requests.exceptions.ContentDecodingError):
        return _Outcome("unexpected_response", f"{name} sent an answer that could not be decoded.")
    return _Outcome("network_error", f"Could not connect to {name}.")


def _reason(exc: Exception, kind: type[Exception]) -> bool:
    """True when requests wraps an urllib3 error of this kind (directly or in a MaxRetryError)."""
    cause = exc.args[0] if exc.args else None
    if isinstance(cause, MaxRetryError):
        cause = cause.reason
    return isinstance(cause, kind)


def _seconds(value: float) -> str:
    return f"{value:g} second" + ("" if value == 1 else "s")


# --- categorising the answer ------------------------------------------------------------------------------


def _categorise(provider: Provider, response: requests.Response, document: Any) -> _Outcome:
    test, name, status = provider.test, provider.name, response.status_code
    if test.error_when and _equal(_dig(document, test.error_when.path), test.error_when.equals):
        return _reported_error(name, status, document)
    if status in test.expect_status:
        return _success(provider, status, document)
    if status == 401:
        return _Outcome("invalid_credentials", f"{name} refused these credentials (HTTP 401).", status)
    if status == 403:
        message = f"{name} accepted these credentials but they lack the permission the test needs (HTTP 403)."
        return _Outcome("insufficient_permissions", message, status)
    if status == 429:
        return _Outcome("rate_limited", _rate_limit_message(name, response.headers.get("Retry-After")), status)
    if status >= 500:
        return _Outcome("provider_unavailable", f"{name} is unavailable right now (HTTP {status}).", status)
    if 300 <= status < 400:
        message = f"{name} answered with a redirect (HTTP {status}), which the test does not follow."
        return _Outcome("unexpected_response", message, status)
    return _Outcome("unexpected_response", f"{name} gave an unexpected answer (HTTP {status}).", status)


def _success(provider: Provider, status: int, document: Any) -> _Outcome:
    path = provider.test.account_name
    if path is None:
        return _Outcome("ok", f"{provider.name} accepted these credentials.", status)
    if not isinstance(document, (dict, list)):
        message = f"{provider.name} did not answer with the JSON the test expects (HTTP {status})."
        return _Outcome("unexpected_response", message, status)
    account = _account_name(_dig(document, path))
    return _Outcome("ok", f"{provider.name} accepted these credentials.", status, account)


def _reported_error(name: str, status: int, document: Any) -> _Outcome:
    # Only codes we know are repeated back: anything else in the body is the provider's text, not ours.
    code = document.get("error") if isinstance(document, dict) else None
    if code in AUTH_ERRORS:
        return _Outcome("invalid_credentials", f"{name} refused these credentials ({code}).", status)
    if code in PERMISSION_ERRORS:
        message = f"{name} accepted these credentials but they lack a permission the test needs ({code})."
        return _Outcome("insufficient_permissions", message, status)
    return _Outcome("unexpected_response", f"{name} reported an error (HTTP {status}).", status)


def _rate_limit_message(name: str, retry_after: str | None) -> str:
    wait = _retry_after_seconds(retry_after)
    later = f"try again in {_seconds(wait)}" if wait is not None else "try again later"
    return f"{name} is limiting requests (HTTP 429); {later}."


def _retry_after_seconds(value: str | None) -> int | None:
    """Retry-After as whole seconds from now: delta-seconds or an HTTP date (RFC 9110)."""
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


def _dig(document: Any, path: str) -> Any:
    """The value at a dotted path (digit segments index lists), or `_MISSING`."""
    for segment in path.split("."):
        if isinstance(document, dict) and segment in document:
            document = document[segment]
        elif isinstance(document, list) and segment.isdigit() and int(segment) < len(document):
            document = document[int(segment)]
        else:
            return _MISSING
    return document


def _equal(found: Any, expected: Any) -> bool:
    # JSON false is not 0 and true is not 1, whatever Python thinks.
    if isinstance(found, bool) or isinstance(expected, bool):
        return found is expected
    return found is not _MISSING and found == expected


def _account_name(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        return None
    text = str(value).strip()
    return text[:MAX_ACCOUNT_NAME] or None
