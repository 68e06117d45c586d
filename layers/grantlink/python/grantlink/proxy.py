"""The authenticated proxy (use case): call a partner's API with a stored credential injected, so that the
tenant never handles the secret.

`forward` loads the caller's credential, gets values with a fresh access token (the refresh lease of
grantlink.oauth), builds the URL from the catalogue only — the proxy base URL with non-secret fields and token
metadata filled in (grantlink.placement), then the caller's path, checked so that it cannot leave the base URL —
and sends the caller's method, query, body and allow-listed headers through the outbound door (grantlink.outbound:
the private-address guard, no redirects, timeouts and one overall deadline), with the credential placed exactly
where the catalogue's `auth` says. The partner's answer comes back as it is, minus hop-by-hop, cookie and CORS
headers: a 3xx is passed back, never followed; the partner's 4xx/5xx/429 are answers, not errors.

- OAuth: a 401 from the partner refreshes the token once (single-flight) and retries once; a refused refresh
  moves the credential to `reauthorization_required` (409).
- Retries: only those the catalogue's `proxy.retry` asks for, waiting what Retry-After asks up to its cap and
  never past the deadline.
- Every proxied call is audited (`proxied`: method, path without query, status, latency — never a body or a
  header value) and counted (`ProxyCalls`, dimension `partner`).
Errors grantlink makes itself are `GrantlinkError`s with their own codes, so a caller can tell them from the
partner's answers.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote, urlsplit

from grantlink import audit, errors, oauth, oauth1, placement, providers
from grantlink.config import settings
from grantlink.connections import get_credential, require_usable
from grantlink.models import TOKEN_KINDS, Caller, Credential
from grantlink.observability import SERVICE, logger, metrics
from grantlink.providers import Provider
from grantlink.store import Store
from grantlink.store import default as default_store

if TYPE_CHECKING:
    from grantlink import outbound

PROXY_MAX_RESPONSE_BYTES = 5 * 1024 * 1024
MAX_PATH = 2048
USER_AGENT = "grantlink/0.1"
NO_RETRY_AFTER_WAIT = 1  # seconds before a catalogue retry when the partner sent no Retry-After
METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})
# Request headers a caller may forward (lower case); a partner's `proxy.forwardHeaders` add to them.
FORWARDED = frozenset(
    {
        "accept",
        "accept-language",
        "content-type",
        "if-match",
        "if-none-match",
        "if-modified-since",
        "idempotency-key",
        "user-agent",
        "x-request-id",
    }
)
HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "proxy-connection", "te", "trailer", "trailers", "transfer-encoding", "upgrade"}
)
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_LONE_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")
_PATH_SAFE = "/;=,+!$&'()*:-._~%"  # what stays as it is in a sent path; `?`, `#` and the rest are escaped


class PartnerUnreachable(errors.GrantlinkError):
    status, code, default_message = 502, "partner_unreachable", "The partner could not be reached."


class PartnerTimeout(errors.GrantlinkError):
    status, code, default_message = 504, "partner_timeout", "The partner did not answer in time."


class ResponseTooLarge(errors.GrantlinkError):
    status, code = 502, "response_too_large"
    default_message = f"The partner's answer is larger than {PROXY_MAX_RESPONSE_BYTES // (1024 * 1024)} MiB."


@dataclass(frozen=True)
class ProxyAnswer:
    status: int  # the partner's status
    headers: list[tuple[str, str]]  # the partner's end-to-end headers (hop-by-hop, Set-Cookie, CORS stripped)
    body: bytes
    latency_ms: int  # grantlink's whole handling time, reported as X-Grantlink-Latency-Ms


@dataclass(frozen=True)
class _Request:
    """The caller's request, checked: what may be forwarded of it."""

    method: str
    path: str  # relative, escaped as it is sent
    query: list[tuple[str, str]]
    headers: dict[str, str]  # lower-case names
    body: bytes


@dataclass(frozen=True)
class _Call:
    method: str
    url: str
    headers: dict[str, str]
    params: list[tuple[str, str]]
    body: bytes | None
    auth: Any = None  # an OAuth 1.0a credential's signer (requests' AuthBase)


def forward(
    caller: Caller,
    credential_id: str,
    method: str,
    path: str,
    query: list[tuple[str, str]],
    headers: Mapping[str, str],
    body: bytes,
    store: Store | None = None,
) -> ProxyAnswer:
    """Forward one call to the credential's partner with the credential injected, and return its answer.

    Raises NotFound `credential_not_found` (also for another tenant's), Conflict `credential_disabled` or
    `reauthorization_required`, BadRequest `invalid_proxy_path` / `invalid_proxy_header`, MethodNotAllowed,
    PayloadTooLarge, `PartnerUnreachable`, `PartnerTimeout` and `ResponseTooLarge`; every partner answer,
    whatever its status, is a `ProxyAnswer`."""
    started = time.monotonic()
    deadline = started + settings().proxy_deadline_seconds
    request = _checked(method, path, query, headers, body)
    store = store or default_store()
    credential = require_usable(get_credential(caller, credential_id, store))
    provider = providers.in_environment(credential.partner_id, credential.environment)
    status: int | None = None
    failure: str | None = None
    try:
        answer = _call(credential, provider, request, store, deadline)
        status = answer.status
    except errors.GrantlinkError as exc:
        failure = exc.code
        raise
    finally:
        latency_ms = round((time.monotonic() - started) * 1000)
        _record(store, caller, credential, provider, request, status, failure, latency_ms)
    return ProxyAnswer(status, _end_to_end(answer), answer.body or b"", latency_ms)


# --- the caller's request ---------------------------------------------------------------------------------


def _checked(method: str, path: str, query: list[tuple[str, str]], headers: Mapping[str, str], body: bytes) -> _Request:
    method = method.upper()
    if method not in METHODS:
        raise errors.MethodNotAllowed("The proxy does not forward this method.")
    if len(body) > settings().max_body_bytes:
        raise errors.PayloadTooLarge()
    lowered = {name.lower(): value for name, value in headers.items()}
    return _Request(method, safe_path(path), list(query), lowered, body)


def safe_path(path: str) -> str:
    """The caller's path relative to the partner's base URL, escaped as it is sent; BadRequest
    `invalid_proxy_path` when it could leave the base URL: `..` segments (also percent-encoded, once or more),
    encoded slashes or backslashes, backslashes, `@`, a scheme or `//` at the start, control characters."""
    raw = path[1:] if path.startswith("/") else path
    if not raw or len(raw) > MAX_PATH:
        raise _invalid_path()
    layers, text = [raw], raw
    for _ in range(3):  # judged as every decoding would see it: %252e%252e is `..` to a partner that decodes twice
        decoded = unquote(text, errors="strict") if _decodable(text) else None
        if decoded is None:
            raise _invalid_path()
        if decoded == text:
            break
        if decoded.count("/") != text.count("/"):
            raise _invalid_path()  # an encoded slash
        layers.append(decoded)
        text = decoded
    else:
        raise _invalid_path()
    if not all(_plain(layer) for layer in layers):
        raise _invalid_path()
    return quote(_LONE_PERCENT.sub("%25", raw), safe=_PATH_SAFE)


def _decodable(text: str) -> bool:
    try:
        unquote(text, errors="strict")
    except UnicodeDecodeError:
        return False
    return True


def _plain(layer: str) -> bool:
    if "\\" in layer or "@" in layer or _CONTROL.search(layer) or layer.startswith("/") or _SCHEME.match(layer):
        return False
    return all(segment.split(";", 1)[0] != ".." for segment in layer.split("/"))


def _invalid_path() -> errors.BadRequest:
    return errors.BadRequest(
        "The proxied path must be a relative path on the partner's API: no `..`, encoded slashes, backslashes, "
        "`@`, scheme or leading `//`.",
        code="invalid_proxy_path",
    )


# --- calling the partner ----------------------------------------------------------------------------------


def _call(
    credential: Credential, provider: Provider, request: _Request, store: Store, deadline: float
) -> outbound.Answer:
    """Send with fresh values; on a 401 for an OAuth credential that can refresh, refresh once and retry once."""
    refreshed_first = oauth.needs_refresh(credential)
    values = oauth.fresh_values(credential, store)
    signer = oauth1.signer(credential, provider, values, store)  # OAuth 1.0a: each attempt signed as it is sent
    answer = _exchange(provider, replace(_build(provider, values, request), auth=signer), deadline)
    if answer.status != 401 or credential.auth_type not in TOKEN_KINDS or not credential.refreshable:
        return answer
    # The token just refused is the one stored now: refresh from the item that holds it (the single-flight
    # lease still lets a concurrent caller's new token win, without a second token call).
    latest = _reread(store, credential) if refreshed_first else credential
    values = oauth.fresh_values(latest, store, force=True)
    return _exchange(provider, _build(provider, values, request), deadline)


def _reread(store: Store, credential: Credential) -> Credential:
    latest = store.get_credential(credential.id)
    if latest is None:
        raise errors.NotFound("No such credential.", code="credential_not_found")
    return latest


def _build(provider: Provider, values: Mapping[str, object], request: _Request) -> _Call:
    strings = {name: str(value) for name, value in values.items()}
    base = placement.fill_url(provider, strings, provider.proxy_base_url).rstrip("/")
    url = f"{base}/{request.path}"
    _stays_on(provider, base, url)
    headers, params = _headers(provider, strings, request), [*request.query]
    auth_params: dict[str, str] = {}
    placement.apply_auth(provider, strings, headers, auth_params)
    params = [(name, value) for name, value in params if name not in auth_params] + list(auth_params.items())
    return _Call(request.method, url, headers, params, request.body or None)


def _stays_on(provider: Provider, base: str, url: str) -> None:
    """The built URL is on the base URL's origin (or a host the catalogue allows), under its path."""
    origin, target = urlsplit(base), urlsplit(url)
    allowed = provider.proxy.allowed_hosts if provider.proxy else []
    same_origin = (target.scheme, target.netloc) == (origin.scheme, origin.netloc)
    listed = target.scheme == "https" and target.hostname in allowed and target.username is None
    if not (same_origin or listed) or not target.path.startswith(origin.path.rstrip("/") + "/"):
        raise _invalid_path()


def _headers(provider: Provider, values: Mapping[str, str], request: _Request) -> dict[str, str]:
    """Catalogue defaults, then the caller's allow-listed headers; never one the credential occupies."""
    settings_ = provider.proxy
    occupied, _ = placement.auth_names(provider)
    allowed = (FORWARDED | {name.lower() for name in (settings_.forward_headers if settings_ else [])}) - occupied
    headers = {"User-Agent": USER_AGENT}
    for name, template in (settings_.headers if settings_ else {}).items():
        headers[name] = placement.render(provider, values, template)
    canonical = {name.lower(): name for name in headers}
    for name, value in request.headers.items():
        if name not in allowed:
            continue
        if not placement.sendable(value):
            raise errors.BadRequest(f"The {name} header cannot be forwarded as it is.", code="invalid_proxy_header")
        headers.pop(canonical.get(name, name), None)
        headers[name] = value
    return headers


def _exchange(provider: Provider, call: _Call, deadline: float) -> outbound.Answer:
    """One call, retried as the catalogue's `proxy.retry` says (Retry-After honoured up to its cap)."""
    retry = provider.proxy.retry if provider.proxy else None
    attempts = retry.max_attempts if retry else 1
    for attempt in range(1, attempts + 1):
        answer = _send(call, deadline)
        if retry is None or answer.status not in retry.statuses or attempt == attempts:
            return answer
        asked = placement.retry_after_seconds(answer.headers.get("Retry-After"))
        wait = NO_RETRY_AFTER_WAIT if asked is None else asked
        if wait > retry.max_wait_seconds or time.monotonic() + wait >= deadline:
            return answer  # the partner asks for longer than we may wait: its answer, with Retry-After, goes back
        pause(wait)
    raise AssertionError("unreachable")  # pragma: no cover - the loop returns on its last attempt


def pause(seconds: float) -> None:
    """Wait before a retry (a seam for tests)."""
    time.sleep(seconds)


def _send(call: _Call, deadline: float) -> outbound.Answer:
    from grantlink import outbound

    left = deadline - time.monotonic()
    if left <= 0:
        raise PartnerTimeout()
    limits = outbound.limits(read=left, deadline=left, max_body=PROXY_MAX_RESPONSE_BYTES)
    try:
        answer = outbound.send(
            call.method, call.url, limits, headers=call.headers, params=call.params, data=call.body, auth=call.auth
        )
    except outbound.OutboundError as exc:
        raise _failure(exc.kind) from None  # the exception's chain holds the URL: never attached
    except ValueError:
        if call.auth is None:
            raise
        # An OAuth 1.0a signature covers a form body's parameters: one that does not decode cannot be signed.
        raise errors.BadRequest(
            "A form-encoded body must be valid application/x-www-form-urlencoded to be signed.",
            code="invalid_proxy_body",
        ) from None
    if answer.body is None:
        raise ResponseTooLarge()
    return answer


def _failure(kind: str) -> errors.GrantlinkError:
    if kind in ("connect_timeout", "read_timeout", "deadline"):
        return PartnerTimeout()
    if kind == "not_allowed":
        return PartnerUnreachable("The partner's address is not allowed.")
    if kind == "undecodable":
        return PartnerUnreachable("The partner's answer could not be decoded.", code="undecodable_response")
    return PartnerUnreachable()


# --- the answer -------------------------------------------------------------------------------------------


def _end_to_end(answer: outbound.Answer) -> list[tuple[str, str]]:
    """The partner's headers minus hop-by-hop ones (and those its Connection header names), cookies, CORS, and
    the length and encoding of a body that was decoded on the way in."""
    listed = answer.header_list or tuple(answer.headers.items())
    named = {
        token.strip().lower() for name, value in listed if name.lower() == "connection" for token in value.split(",")
    }
    dropped = HOP_BY_HOP | named | {"set-cookie", "set-cookie2"}
    if answer.decoded:
        dropped |= {"content-encoding", "content-length"}
    return [
        (name, value)
        for name, value in listed
        if name.lower() not in dropped and not name.lower().startswith(("access-control-", "proxy-"))
    ]


def _record(
    store: Store,
    caller: Caller,
    credential: Credential,
    provider: Provider,
    request: _Request,
    status: int | None,
    failure: str | None,
    latency_ms: int,
) -> None:
    """One audit entry, one metric and one log line per proxied call: never a body, a query or a header value."""
    details = {"method": request.method, "path": "/" + request.path[:500], "status": status}
    entry = audit.entry(credential.id, "proxied", caller.actor, **details, error=failure, latencyMs=latency_ms)
    try:
        store.transact(store.put_audit(entry))
    except Exception:  # noqa: BLE001 - the partner has answered (maybe changed something): its answer still goes back
        logger.exception("proxied call not audited", extra={"credential": credential.id, "partner": provider.slug})
    _count(provider)
    logger.info(
        "proxied call",
        extra={"partner": provider.slug, "method": request.method, "httpStatus": status, "error": failure,
               "latencyMs": latency_ms},
    )  # fmt: skip


def _count(provider: Provider) -> None:
    """`ProxyCalls` with the partner as its own dimension: a single metric, so the function's other metrics keep
    their dimensions."""
    from aws_lambda_powertools.metrics import MetricUnit, single_metric

    with single_metric(
        name="ProxyCalls", unit=MetricUnit.Count, value=1, namespace=metrics.namespace,
        default_dimensions={"service": SERVICE},
    ) as metric:  # fmt: skip
        metric.add_dimension(name="partner", value=provider.slug)
