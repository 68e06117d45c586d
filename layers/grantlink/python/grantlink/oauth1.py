"""OAuth 1.0a through the link (RFC 5849, three-legged), with requests-oauthlib (use cases).

- The consumer is the tenant's OAuth app for the partner (`PUT /partners/{id}/oauth-app`: clientId is the consumer
  key, clientSecret the consumer secret, or for RSA-SHA1 partners the PEM RSA private key), else the operator's
  default. It is read when it is used and never copied into a credential.
- Start (`POST /connect/oauth/start`, the same route as OAuth 2.0): a signed request-token call through the
  outbound door with grantlink's callback URL, then the single-use flow record — keyed by the SHA-256 of the
  request token, holding the request-token secret encrypted under its own context — and the link to status 2, in
  one transaction (grantlink.oauth's flow record); 303 to the partner's authorize URL.
- Callback (`GET /oauth/callback` with `oauth_token` and `oauth_verifier`, or `denied`): the flow record is
  consumed first (a missing, unknown, expired or reused request token never reaches the partner), the link must
  still wait for it, then the verifier is exchanged for the access token, sealed with the non-secret fields and
  response fields (user_id, screen_name), and the credential written and the link granted in one transaction.
- Use: `signer` signs each request of a connection test or of the proxy (the signature covers a form body).
OAuth 1.0a access tokens do not expire: there is nothing to refresh; a partner's 401 means the grant is gone.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

from grantlink import clock, crypto, errors, events, oauth, providers
from grantlink.connect import OpenedLink
from grantlink.models import Credential, LinkStatus, link_key
from grantlink.oauth import CallbackOutcome
from grantlink.oauth_apps import OAuthApp
from grantlink.observability import logger
from grantlink.providers import Provider
from grantlink.store import ConditionFailed, Store, update
from grantlink.store import default as default_store

if TYPE_CHECKING:
    from requests.auth import AuthBase

KIND = "oauth1"
FLOW_PURPOSE = "oauth1-flow"  # the request-token secret's encryption context (template.yaml allows it)
MAX_TOKEN = 512
# Token-response parameters kept with the credential (sealed, shown by the secret endpoint): names like user_id
# or screen_name, short printable values; never an oauth_* parameter (tokens, secrets, flags).
RESPONSE_NAME = re.compile(r"[a-z][a-z0-9_]{0,39}")
RESPONSE_VALUE = re.compile(r"[\x20-\x7e]{1,200}")
MAX_RESPONSE_FIELDS = 10


class Refused(Exception):
    """The partner refused a token call; `error` is its `oauth_problem` (or the HTTP status), cleaned."""

    def __init__(self, error: str) -> None:
        super().__init__(error)
        self.error = error


# --- start ---------------------------------------------------------------------------------------------------


def start(
    link_id: str,
    token: str,
    form: dict[str, str],
    callback_uri: str,
    store: Store | None = None,
    *,
    opened: OpenedLink | None = None,
) -> str:
    """Begin the three-legged flow; returns the partner's authorize URL to 303 the browser to. A refused
    request-token call leaves the link waiting (status 0) with the reason, shown when it is reopened."""
    store = store or default_store()
    opened, fields, app = oauth.prepare_start(link_id, token, form, store, opened, KIND)
    provider, link = opened.provider, opened.link
    try:
        request_token, request_secret = _request_token(provider, app, fields, callback_uri)
    except Exception as exc:  # noqa: BLE001 - a partner's refusal or silence is a reason for the customer, not a 500
        reason = _reason(exc, "request token")
        logger.warning("oauth1 request token failed", extra={"partner": provider.slug, "error": type(exc).__name__})
        _note_failure(store, opened, token, reason)
        raise errors.BadRequest(f"{provider.name} did not connect: {reason}.", code="oauth1_refused") from None
    token_hash = oauth.hash_state(request_token)
    sealed = crypto.default().encrypt(request_secret.encode(), _flow_context(link.tenant_id, token_hash))
    oauth._begin(store, opened, token, token_hash, None, fields, {"kind": KIND, "requestTokenSecret": sealed})
    events.emit("share.waiting_for_oauth", link.tenant_id, linkId=link.id, partnerId=link.partner_id, **link.identity())
    return _authorize_url(provider, fields, request_token)


def _request_token(provider: Provider, app: OAuthApp, fields: dict[str, str], callback_uri: str) -> tuple[str, str]:
    from grantlink import outbound

    assert provider.oauth1 is not None
    url = oauth._render(provider.oauth1.request_token_url, fields)
    with outbound.oauth1_session(
        outbound.token_limits(), app.client_id, callback_uri=callback_uri, **_consumer(provider, app)
    ) as session:
        answer = _fetch(lambda: session.fetch_request_token(url))
    if answer.get("oauth_callback_confirmed") != "true":  # RFC 5849 section 2.1: the callback was not taken
        raise Refused("callback_not_confirmed")
    return str(answer["oauth_token"]), str(answer["oauth_token_secret"])


def _authorize_url(provider: Provider, fields: dict[str, str], request_token: str) -> str:
    from oauthlib.common import add_params_to_uri

    assert provider.oauth1 is not None
    params = [("oauth_token", request_token), *provider.oauth1.extra_authorize_params.items()]
    return str(add_params_to_uri(oauth._render(provider.oauth1.authorize_url, fields), params))


def _note_failure(store: Store, opened: OpenedLink, token: str, reason: str) -> None:
    """Keep the reason on the waiting link (shown when the customer reopens it)."""
    from grantlink.links import hash_token

    link = opened.link
    if link.status != LinkStatus.WAITING:
        return  # an earlier start is still pending: its flow record decides
    noted = update(
        link_key(link.id),
        {"lastError": reason, "version": link.version + 1},
        (),
        # Protects: the token still matches and nothing changed the waiting link since it was read.
        "tokenHash = :h AND #status = :w AND #version = :v",
        h=hash_token(token), w=int(LinkStatus.WAITING), v=link.version,
    )  # fmt: skip
    with contextlib.suppress(ConditionFailed):  # consumed, regenerated or changed meanwhile: nothing to note
        store.transact(noted)


# --- callback ------------------------------------------------------------------------------------------------


def is_callback(params: Mapping[str, str]) -> bool:
    """Whether the partner's redirect is an OAuth 1.0a callback (`oauth_token`, or `denied`), not OAuth 2.0's."""
    return "oauth_token" in params or "denied" in params


def callback(params: dict[str, str], store: Store | None = None) -> CallbackOutcome:
    """Finish the flow. Every rejection happens before any token call."""
    store = store or default_store()
    request_token = params.get("oauth_token") or params.get("denied") or ""
    if not request_token or len(request_token) > MAX_TOKEN:
        raise errors.BadRequest(
            "This sign-in is incomplete. Open your link again to retry.", code="missing_oauth_token"
        )
    flow = store.consume_flow(oauth.hash_state(request_token), clock.iso(clock.now()), KIND)
    if flow is None:
        raise errors.BadRequest(
            "This sign-in has expired or was already used. Open your link again.", code="bad_oauth_token"
        )
    provider = providers.in_environment(int(flow["partnerId"]), flow.get("environment"))
    verifier = params.get("oauth_verifier", "")
    if not verifier:
        reason = "access was denied" if "denied" in params else "no verifier was returned"
        return oauth._abandon(store, flow, provider, reason)
    if len(verifier) > MAX_TOKEN:
        return oauth._abandon(store, flow, provider, "the verifier was not valid")
    return oauth.complete(store, flow, provider, _exchange(flow, provider, request_token, verifier))


def _exchange(
    flow: dict[str, Any], provider: Provider, request_token: str, verifier: str
) -> Callable[[OAuthApp, Credential | None], Credential]:
    """The access-token call `oauth.complete` makes with the tenant's app; returns the credential to write."""
    fields = {str(k): str(v) for k, v in (flow.get("fields") or {}).items()}

    def exchange(app: OAuthApp, before: Credential | None) -> Credential:
        secret = _open_request_secret(flow)
        answer = _access_token(provider, app, fields, request_token, secret, verifier)
        values = {
            **_response_fields(answer),
            **fields,  # the customer's form fields win over a response parameter of the same name
            "oauthToken": str(answer["oauth_token"]),
            "oauthTokenSecret": str(answer["oauth_token_secret"]),
        }
        return oauth.flow_credential(flow, provider, KIND, values, before)

    return exchange


def _access_token(
    provider: Provider, app: OAuthApp, fields: dict[str, str], request_token: str, secret: str, verifier: str
) -> dict[str, Any]:
    from grantlink import outbound

    assert provider.oauth1 is not None
    url = oauth._render(provider.oauth1.access_token_url, fields)
    with outbound.oauth1_session(
        outbound.token_limits(),
        app.client_id,
        resource_owner_key=request_token,
        resource_owner_secret=secret,
        verifier=verifier,
        **_consumer(provider, app),
    ) as session:
        return _fetch(lambda: session.fetch_access_token(url))


def _fetch(call: Callable[[], Any]) -> dict[str, Any]:
    """A token call; a refusal (HTTP 4xx/5xx) becomes `Refused` with the partner's `oauth_problem`."""
    from requests_oauthlib.oauth1_session import TokenRequestDenied

    try:
        return dict(call())
    except TokenRequestDenied as exc:
        problem = dict(parse_qsl(exc.response.text or "")).get("oauth_problem") if exc.response is not None else None
        raise Refused(oauth._clean(problem or f"HTTP {exc.status_code}")) from None  # the body is the partner's


def _response_fields(answer: Mapping[str, Any]) -> dict[str, str]:
    """The token response's non-secret parameters (user_id → userId, screen_name → screenName)."""
    kept: dict[str, str] = {}
    for name, value in answer.items():
        if name.startswith("oauth_") or not RESPONSE_NAME.fullmatch(name) or not isinstance(value, str):
            continue
        if RESPONSE_VALUE.fullmatch(value) and len(kept) < MAX_RESPONSE_FIELDS:
            kept[re.sub(r"_([a-z0-9])", lambda m: m[1].upper(), name)] = value
    return kept


def _flow_context(tenant_id: str, token_hash: str) -> dict[str, str]:
    return crypto.context_for(tenant_id, f"oauth1flow-{token_hash}", FLOW_PURPOSE)


def _open_request_secret(flow: dict[str, Any]) -> str:
    token_hash = flow["pk"].removeprefix("OAUTH#")
    sealed = bytes(flow["requestTokenSecret"])
    return crypto.default().decrypt(sealed, _flow_context(flow["tenantId"], token_hash)).decode()


def _reason(exc: Exception, step: str) -> str:
    from grantlink import outbound

    if isinstance(exc, Refused):
        return f"the {step} request was refused ({exc.error})"
    if isinstance(exc, outbound.OutboundError):
        return f"the {step} request failed ({exc.kind})"
    return f"the {step} request failed"


# --- use: signing requests -------------------------------------------------------------------------------------


def _consumer(provider: Provider, app: OAuthApp) -> dict[str, Any]:
    """requests-oauthlib's consumer arguments: the secret, or for RSA-SHA1 the private key; the method."""
    assert provider.oauth1 is not None
    method = provider.oauth1.signature_method
    secret = oauth._client_secret(app)
    if method == "RSA-SHA1":
        return {"signature_method": method, "rsa_key": secret}
    return {"signature_method": method, "client_secret": secret}


def signer(credential: Credential, provider: Provider, values: Mapping[str, Any], store: Store) -> AuthBase | None:
    """The signer of an OAuth 1.0a credential's requests (None for other kinds): the tenant's consumer as it is
    now, with the credential's token and token secret; each request is signed as it is sent."""
    if credential.auth_type != KIND or provider.oauth1 is None:
        return None
    from grantlink import outbound

    app = oauth.require_app(credential.tenant_id, credential.partner_id, store)
    return outbound.oauth1_signer(
        app.client_id,
        resource_owner_key=str(values["oauthToken"]),
        resource_owner_secret=str(values["oauthTokenSecret"]),
        **_consumer(provider, app),
    )
