"""The one outbound door: every call grantlink makes to a partner's host goes through this module.

The rules, in one place (README, "Outbound calls"):
- https only; plain http only when the operator allows private targets (`GRANTLINK_ALLOW_PRIVATE_TARGETS`,
  the local stack's demo partners on http://127.0.0.1).
- The host is resolved once and refused when any of its addresses is private, loopback, link-local,
  multicast, reserved or unspecified (unless private targets are allowed). The connection then goes to the
  address that was checked, while TLS SNI, the Host header and certificate verification keep the hostname:
  a second, different DNS answer (DNS rebinding) cannot move the call elsewhere.
- Redirects are never followed: a 3xx is the answer.
- Connect and read timeouts, and an overall deadline that bounds everything, the body included: a watchdog
  closes the socket at the deadline, and the body is read as it arrives, each wait bounded by what is left.
- At most `Limits.max_body` bytes of body after decoding (`MAX_BODY_BYTES` unless the call sets its own): a
  gzip or deflate body is decoded as it is read, so the cap bounds what grantlink holds, not what travelled.
- TLS is verified against `GRANTLINK_CA_BUNDLE`, else `REQUESTS_CA_BUNDLE`, else the bundled CAs. Nothing else
  comes from the environment: no proxies, no ~/.netrc credentials.
- A call that gets no answer raises `OutboundError`, whose `kind` each caller puts into its own words.

One session, one call: sessions are built per call and closed after it. Importing this module imports
requests, so import it inside the functions that call a partner and keep cold starts of the rest small.
"""

from __future__ import annotations

import contextlib
import functools
import ipaddress
import os
import socket
import threading
import time
from collections.abc import Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TypeVar
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import DecodeError, MaxRetryError, NameResolutionError, ReadTimeoutError
from urllib3.exceptions import HTTPError as Urllib3Error
from urllib3.response import HTTPResponse

from grantlink import config
from grantlink.observability import logger, trace_http

if TYPE_CHECKING:
    from requests_oauthlib import OAuth1Session, OAuth2Session

MAX_BODY_BYTES = 256 * 1024
DEFAULT_CONNECT_TIMEOUT = 3.0
DEFAULT_READ_TIMEOUT = 10.0
DEFAULT_TOKEN_DEADLINE = 12.0  # with the writes after it, inside every refreshing function's timeout
CHUNK = 16 * 1024

Kind = Literal[
    "not_allowed",  # the scheme or an address of the host is not allowed
    "no_address",  # the host name does not resolve
    "connect_timeout",
    "read_timeout",
    "deadline",  # the overall deadline passed (a slow trickle, a stalled handshake)
    "tls",  # no secure connection: an untrusted certificate, a handshake failure, an unreadable CA bundle
    "connect",  # refused, reset or cut short
    "undecodable",  # a body whose Content-Encoding cannot be decoded
    "too_large",  # a body over the cap, where the caller needs all of it
    "redirected",  # a 3xx where the caller needs an answer (token endpoints)
]


class OutboundError(Exception):
    """A partner call that produced no usable answer; `kind` says why (never the URL or a value)."""

    def __init__(self, kind: Kind) -> None:
        super().__init__(kind)
        self.kind: Kind = kind


@dataclass(frozen=True)
class Limits:
    connect: float
    read: float
    deadline: float  # seconds for the whole call: connect, TLS, request, answer and body
    allow_private: bool
    verify: bool | str  # True (the bundled CAs) or the path of a PEM CA bundle
    max_body: int = MAX_BODY_BYTES


@dataclass(frozen=True)
class Answer:
    status: int
    headers: Mapping[str, str]
    body: bytes | None  # None when not asked for, or longer than the cap
    header_list: tuple[tuple[str, str], ...] = ()  # every header as sent, repeated names kept apart
    decoded: bool = False  # the body was read through its Content-Encoding (gzip, deflate): its length changed


def limits(
    *,
    allow_private: bool | None = None,
    connect: float | None = None,
    read: float | None = None,
    deadline: float | None = None,
    max_body: int = MAX_BODY_BYTES,
) -> Limits:
    """The configured limits, each overridable; the deadline defaults to connect + read."""
    # getattr: tests may stand a partial settings object in for config.settings().
    conf = config.settings()
    allow = bool(getattr(conf, "allow_private_targets", False)) if allow_private is None else allow_private
    connect = float(getattr(conf, "test_connect_timeout", DEFAULT_CONNECT_TIMEOUT)) if connect is None else connect
    read = float(getattr(conf, "test_read_timeout", DEFAULT_READ_TIMEOUT)) if read is None else read
    deadline = connect + read if deadline is None else deadline
    return Limits(min(connect, deadline), min(read, deadline), deadline, allow, ca_bundle(conf), max_body)


def token_limits() -> Limits:
    """Limits of an OAuth token or refresh call: the overall deadline is `GRANTLINK_TOKEN_DEADLINE_SECONDS`."""
    return limits(deadline=float(getattr(config.settings(), "token_deadline_seconds", DEFAULT_TOKEN_DEADLINE)))


def ca_bundle(conf: Any = None) -> bool | str:
    """What partner certificates are verified against: GRANTLINK_CA_BUNDLE, else REQUESTS_CA_BUNDLE, else the
    CAs requests ships (certifi). Sessions here ignore the environment, so this is read explicitly."""
    conf = conf or config.settings()
    return str(getattr(conf, "ca_bundle", "") or getattr(conf, "requests_ca_bundle", "") or "") or True


# --- where a call may go ----------------------------------------------------------------------------------


def check(url: str, limits: Limits) -> str | None:
    """Raise `OutboundError` (`not_allowed`, `no_address`) when `url` may not be called; else return the
    checked address to connect to (None when private targets are allowed and the client resolves)."""
    parts = urlsplit(url)
    if parts.scheme != "https" and not (limits.allow_private and parts.scheme == "http"):
        raise OutboundError("not_allowed")
    if limits.allow_private:
        return None
    try:
        found = socket.getaddrinfo(parts.hostname or "", parts.port or 443, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError, ValueError) as exc:
        raise OutboundError("no_address") from exc
    addresses = [str(info[4][0]) for info in found]
    if not addresses or not all(public(address) for address in addresses):
        raise OutboundError("not_allowed")
    return addresses[0]


def public(address: str) -> bool:
    """True for a global unicast address (IPv4 inside IPv6 judged as IPv4)."""
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and (embedded := ip.ipv4_mapped or ip.sixtofour):
        ip = embedded
    special = ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_multicast
    return ip.is_global and not (special or ip.is_reserved or ip.is_unspecified)


# --- calling ----------------------------------------------------------------------------------------------


def send(
    method: str,
    url: str,
    limits: Limits,
    *,
    headers: Mapping[str, str] | None = None,
    params: Mapping[str, str] | Sequence[tuple[str, str]] | None = None,
    json: Any = None,
    data: bytes | None = None,
    read_body: bool = True,
    session: Any = None,
    auth: requests.auth.AuthBase | None = None,
) -> Answer:
    """Call `url` under `limits` and return the answer, whatever its status; raise `OutboundError` when there
    is none. `json` or `data` is the body. `auth` signs the request as sent (OAuth 1.0a: `oauth1_signer`).
    `session` is for tests: one handed in is used as it is, after the same check."""
    own = session is None
    client = session or guarded_session(limits)
    if not own:
        check(url, limits)
    deadline = time.monotonic() + limits.deadline
    try:
        with client.request(
            method, url, headers=headers, params=params, json=json, data=data, auth=auth,
            timeout=(limits.connect, limits.read), verify=limits.verify, allow_redirects=False, stream=True,
        ) as response:  # fmt: skip
            body = _read(response, limits, deadline) if read_body else None
            listed = tuple((str(name), str(value)) for name, value in response.raw.headers.items())
            return Answer(response.status_code, response.headers, body, listed, _decodes(response))
    except requests.RequestException as exc:
        raise OutboundError(_kind(exc, deadline)) from exc
    finally:
        if own:
            client.close()


class GuardedSession(requests.Session):
    """A requests session bound to `Limits`: every request it sends is checked and pinned, never follows a
    redirect, uses the limits' timeouts and CA bundle, and (unless streamed) has its body read under the cap
    and the deadline. For libraries that drive a session themselves (requests-oauthlib)."""

    limits: Limits

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        limits = self.limits
        stream = kwargs.pop("stream", False)
        kwargs.update(allow_redirects=False, timeout=(limits.connect, limits.read), verify=limits.verify)
        deadline = time.monotonic() + limits.deadline
        token = _DEADLINE.set(deadline)
        try:
            response = super().send(request, stream=True, **kwargs)
        except requests.RequestException as exc:
            raise OutboundError(_kind(exc, deadline)) from exc
        finally:
            _DEADLINE.reset(token)
        if not stream:
            with response:
                body = _read(response, limits, deadline)
            if body is None:
                raise OutboundError("too_large")
            response._content = body  # the body as read under the limits, for response.json()/.text
        return response


_S = TypeVar("_S", bound=GuardedSession)


def guarded_session(limits: Limits) -> GuardedSession:
    """A `GuardedSession` for one call."""
    return _guard(GuardedSession(), limits)


def token_session(limits: Limits, client_id: str, **kwargs: Any) -> OAuth2Session:
    """An OAuth2Session for one token call through the door. A 3xx from a token endpoint is not an answer
    (`OutboundError("redirected")`): its body must never be parsed as tokens or as an OAuth error."""
    session = _guard(_token_session_class()(client_id, **kwargs), limits)
    session.register_compliance_hook("access_token_response", _refuse_redirect)
    session.register_compliance_hook("refresh_token_response", _refuse_redirect)
    return session


def oauth1_session(limits: Limits, client_key: str, **kwargs: Any) -> OAuth1Session:
    """An OAuth1Session for one OAuth 1.0a token call (request token, access token) through the door; `kwargs`
    are OAuth1Session's (secrets, token, verifier, callback, signature method). A 3xx is not an answer."""
    return _guard(_oauth1_session_class()(client_key, **kwargs), limits)


def oauth1_signer(client_key: str, **kwargs: Any) -> requests.auth.AuthBase:
    """requests-oauthlib's OAuth1 request signer, for `send(auth=...)`: it signs each request as sent, a
    form-encoded body included (RFC 5849 section 3.4.1.3), so a retry is signed afresh."""
    from requests_oauthlib import OAuth1

    return OAuth1(client_key, **kwargs)


@functools.cache
def _oauth1_session_class() -> type[Any]:
    from requests_oauthlib import OAuth1Session

    class GuardedOAuth1Session(OAuth1Session, GuardedSession):
        """OAuth1Session's token logic on GuardedSession's transport; a redirect is never parsed as tokens."""

        def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
            return _refuse_redirect(super().send(request, **kwargs))

    return GuardedOAuth1Session


@functools.cache
def _token_session_class() -> type[Any]:
    from requests_oauthlib import OAuth2Session

    class GuardedOAuth2Session(OAuth2Session, GuardedSession):
        """OAuth2Session's token logic on GuardedSession's transport."""

    return GuardedOAuth2Session


def _guard(session: _S, limits: Limits) -> _S:
    trace_http()
    session.limits = limits
    session.trust_env = False  # no proxies, CA bundle or ~/.netrc credentials from the environment
    session.verify = limits.verify
    adapter = _PinnedAdapter(limits)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session


def _refuse_redirect(response: requests.Response) -> requests.Response:
    if 300 <= response.status_code < 400:
        raise OutboundError("redirected")
    return response


# --- reading ----------------------------------------------------------------------------------------------


def _read(response: requests.Response, limits: Limits, deadline: float) -> bytes | None:
    """The body, decoded, as it arrives; None past `limits.max_body` (the rest is not read)."""
    chunks, size = [], 0
    while chunk := _read_some(response, limits, deadline):
        size += len(chunk)
        if size > limits.max_body:
            return None
        chunks.append(chunk)
    if time.monotonic() >= deadline:  # the watchdog's close looks like the end of a body without a length
        raise OutboundError("deadline")
    return b"".join(chunks)


def _decodes(response: requests.Response) -> bool:
    """True when the body is read decoded: every Content-Encoding named is one urllib3 decodes."""
    codings = [c.strip().lower() for c in response.headers.get("Content-Encoding", "").split(",") if c.strip()]
    return bool(codings) and all(c in HTTPResponse.CONTENT_DECODERS for c in codings)


def _read_some(response: requests.Response, limits: Limits, deadline: float) -> bytes:
    left = deadline - time.monotonic()
    if left <= 0:
        raise OutboundError("deadline")
    connection = getattr(response.raw, "connection", None)
    if connection is not None and connection.sock is not None:
        connection.sock.settimeout(min(limits.read, left))  # one wait never outlasts the deadline
    try:
        return bytes(response.raw.read1(CHUNK, decode_content=True))
    except ReadTimeoutError as exc:
        raise OutboundError("deadline" if time.monotonic() >= deadline else "read_timeout") from exc
    except DecodeError as exc:
        raise OutboundError("undecodable") from exc
    except (Urllib3Error, OSError) as exc:
        raise OutboundError("deadline" if time.monotonic() >= deadline else "connect") from exc


def _kind(exc: Exception, deadline: float) -> Kind:
    if time.monotonic() >= deadline:
        return "deadline"
    if isinstance(exc, requests.ConnectTimeout):
        return "connect_timeout"
    if isinstance(exc, requests.Timeout) or _reason(exc, ReadTimeoutError):
        return "read_timeout"
    if isinstance(exc, requests.exceptions.SSLError):
        return "tls"
    if _reason(exc, NameResolutionError):
        return "no_address"
    if isinstance(exc, requests.exceptions.ContentDecodingError):
        return "undecodable"
    return "connect"


def _reason(exc: Exception, kind: type[Exception]) -> bool:
    """True when requests wraps an urllib3 error of this kind (directly or in a MaxRetryError)."""
    cause = exc.args[0] if exc.args else None
    if isinstance(cause, MaxRetryError):
        cause = cause.reason
    return isinstance(cause, kind)


# --- connecting: pinned to the checked address, under the deadline -----------------------------------------

_DEADLINE: ContextVar[float | None] = ContextVar("grantlink_outbound_deadline", default=None)


class _PinnedAdapter(HTTPAdapter):
    """Checks each request's URL, then connects to the address that was checked."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.pins: dict[str, str] = {}
        super().__init__()

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _HTTPPool, "https": _HTTPSPool}

    def send(self, request: requests.PreparedRequest, *args: Any, **kwargs: Any) -> requests.Response:
        verify = self.limits.verify
        if isinstance(verify, str) and not os.path.exists(verify):
            logger.error("the configured CA bundle does not exist", extra={"caBundle": verify})
            raise OutboundError("tls")
        url = str(request.url or "")
        address = check(url, self.limits)
        if address is not None:
            parts = urlsplit(url)
            self.pins[parts.hostname or ""] = address
            request.headers["Host"] = parts.netloc.rpartition("@")[2]
        return super().send(request, *args, **kwargs)

    def build_connection_pool_key_attributes(
        self, request: requests.PreparedRequest, verify: Any, cert: Any = None
    ) -> Any:
        host_params, pool_kwargs = super().build_connection_pool_key_attributes(request, verify, cert)
        address = self.pins.get(host_params["host"])
        if address is None:
            return host_params, pool_kwargs
        # The socket goes to the checked address; SNI and the certificate check use the name.
        return {**host_params, "host": address}, {**pool_kwargs, "server_hostname": host_params["host"]}


class _Watched:
    """A urllib3 connection whose socket is shut down when the call's overall deadline passes."""

    sock: socket.socket | None
    _watchdog: threading.Timer | None = None
    _closed = False

    def connect(self) -> None:
        self._closed = False  # urllib3 may reconnect a connection it closed
        deadline = _DEADLINE.get()
        if deadline is not None:
            self._arm(deadline - time.monotonic())
        super().connect()  # type: ignore[misc]

    def close(self) -> None:
        self._closed = True
        if self._watchdog is not None:
            self._watchdog.cancel()
        super().close()  # type: ignore[misc]

    def _arm(self, seconds: float) -> None:
        self._watchdog = threading.Timer(max(seconds, 0.0), self._expire)
        self._watchdog.daemon = True
        self._watchdog.start()

    def _expire(self) -> None:
        sock = self.sock
        if self._closed:
            return
        if sock is None:  # still connecting (bounded by the connect timeout): look again shortly
            self._arm(0.05)
            return
        logger.debug("outbound deadline reached; closing the connection")
        with contextlib.suppress(OSError):  # already closed
            sock.shutdown(socket.SHUT_RDWR)


class _HTTPConnection(_Watched, HTTPConnection):
    pass


class _HTTPSConnection(_Watched, HTTPSConnection):
    pass


class _HTTPPool(HTTPConnectionPool):
    ConnectionCls = _HTTPConnection


class _HTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _HTTPSConnection
