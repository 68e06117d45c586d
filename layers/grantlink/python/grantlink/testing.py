"""Connection tests: one request, declared by the catalogue, that proves a credential works.

`check_credential` builds the provider's test request from the catalogue only (never from caller input beyond
field values, which must match their patterns before they reach a URL), applies the credential where the
provider declares it, and sorts the answer into one of `CATEGORIES` with a short message for humans. The
message never holds the secret or the provider's body; one log line per check holds no more than the slug,
category, status and latency.

The call goes through the outbound door (grantlink.outbound), which owns its rules: https only, no private,
loopback, link-local, multicast, reserved or unspecified address unless `allow_private` (the local stack's demo
partners live on http://127.0.0.1), no redirects, connect and read timeouts and a total deadline of their sum,
the CA bundle. This module reads at most `MAX_BODY_BYTES` of body and turns each failure into a category.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, get_args

from grantlink import clock, placement
from grantlink.models import TestCategory
from grantlink.observability import logger
from grantlink.providers import Provider

if TYPE_CHECKING:
    # Imported where a partner is called: the functions that only import this module skip requests.
    import requests.auth

    from grantlink import outbound

CATEGORIES: tuple[str, ...] = get_args(TestCategory)
MAX_BODY_BYTES = 256 * 1024
MAX_ACCOUNT_NAME = 200
USER_AGENT = "grantlink/0.1"
NOT_ALLOWED = "The provider's address is not allowed."
# Error codes a provider puts in a 200 body (Slack's `{"ok": false, "error": ...}`) that we can name.
AUTH_ERRORS = frozenset({"invalid_auth", "not_authed", "token_revoked", "token_expired", "account_inactive"})
PERMISSION_ERRORS = frozenset({"missing_scope", "no_permission"})

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
class _Options:
    """The caller's overrides of the configured limits (None: as configured)."""

    allow_private: bool | None
    connect: float | None
    read: float | None


@dataclass(frozen=True)
class _Call:
    method: str
    url: str
    headers: dict[str, str]
    params: dict[str, str]
    body: dict[str, Any] | None


def check_credential(
    provider: Provider,
    values: Mapping[str, str],
    *,
    allow_private: bool | None = None,
    connect_timeout: float | None = None,
    read_timeout: float | None = None,
    session: Any = None,
    auth: requests.auth.AuthBase | None = None,
) -> CheckResult:
    """Send the provider's test request with these credential values and categorise the answer.

    Raises `BadRequest` (code `invalid_field`) when a value is missing, does not match the pattern of a field
    used in the URL, or cannot be sent in a header; `GrantlinkError` when the catalogue entry is inconsistent.
    Every other failure is a result, not an exception. `session` stands in for the HTTP client in tests. `auth`
    signs the request as it is sent (an OAuth 1.0a credential: grantlink.oauth1.signer).
    """
    call = _build_call(provider, values)
    started = time.monotonic()
    outcome = _send(provider, call, _Options(allow_private, connect_timeout, read_timeout), session, auth)
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


# --- building the request ---------------------------------------------------------------------------------


def _build_call(provider: Provider, values: Mapping[str, str]) -> _Call:
    test = provider.test
    headers = {"Accept": "application/json", "User-Agent": USER_AGENT}
    headers.update({name: placement.render(provider, values, value) for name, value in test.headers.items()})
    params: dict[str, str] = {}
    placement.apply_auth(provider, values, headers, params)
    url = placement.fill_url(provider, values, provider.base_url + test.path)
    return _Call(method=test.method, url=url, headers=headers, params=params, body=test.body)


# --- sending and reading: through the outbound door ------------------------------------------------------


def _send(provider: Provider, call: _Call, options: _Options, session: Any, auth: Any = None) -> _Outcome:
    from grantlink import outbound

    limits = outbound.limits(allow_private=options.allow_private, connect=options.connect, read=options.read)
    limits = replace(limits, max_body=MAX_BODY_BYTES)
    try:
        answer = outbound.send(
            call.method, call.url, limits, headers=call.headers, params=call.params, json=call.body,
            read_body=_needs_body(provider), session=session, auth=auth,
        )  # fmt: skip
    except outbound.OutboundError as exc:
        return _failure(provider, exc.kind, limits)
    return _categorise(provider, answer, _json(answer.body))


def _needs_body(provider: Provider) -> bool:
    return provider.test.account_name is not None or provider.test.error_when is not None


def _json(body: bytes | None) -> Any:
    """The JSON body, or `_NOT_JSON` when there is none, it is not JSON or it is larger than `MAX_BODY_BYTES`."""
    if body is None:
        return _NOT_JSON
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        return _NOT_JSON


def _failure(provider: Provider, kind: str, limits: outbound.Limits) -> _Outcome:
    name = provider.name
    messages = {
        "not_allowed": ("network_error", NOT_ALLOWED),
        "no_address": ("network_error", f"Could not find the address of {name}."),
        "connect_timeout": ("timeout", f"{name} did not accept a connection within {_seconds(limits.connect)}."),
        "read_timeout": ("timeout", f"{name} did not answer within {_seconds(limits.read)}."),
        "deadline": ("timeout", f"{name} did not finish answering within {_seconds(limits.deadline)}."),
        "tls": ("network_error", f"Could not open a secure connection to {name}."),
        "undecodable": ("unexpected_response", f"{name} sent an answer that could not be decoded."),
    }
    category, message = messages.get(kind, ("network_error", f"Could not connect to {name}."))
    return _Outcome(category, message)


def _seconds(value: float) -> str:
    return f"{value:g} second" + ("" if value == 1 else "s")


# --- categorising the answer ------------------------------------------------------------------------------


def _categorise(provider: Provider, answer: outbound.Answer, document: Any) -> _Outcome:
    test, name, status = provider.test, provider.name, answer.status
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
        return _Outcome("rate_limited", _rate_limit_message(name, answer.headers.get("Retry-After")), status)
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
    wait = placement.retry_after_seconds(retry_after)
    later = f"try again in {_seconds(wait)}" if wait is not None else "try again later"
    return f"{name} is limiting requests (HTTP 429); {later}."


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
