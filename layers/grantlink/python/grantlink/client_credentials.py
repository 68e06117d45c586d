"""OAuth 2.0 client credentials (RFC 6749 section 4.4): the customer types its own client id and secret into the
connect page; grantlink mints access tokens with them, and mints a new one before each expires (the grant has no
refresh token: the client id and secret are the grant).

- `mint` is the token request, through the outbound door (`outbound.token_session`: the URL guard, DNS pinning,
  no redirects, the token call's overall deadline, the CA bundle): `grant_type=client_credentials` at the partner's
  token URL (in the credential's environment), the link's scopes else the partner's defaults joined with its
  separator, the catalogue's `extraTokenParams`, and the client authenticated as `clientAuth` says (HTTP Basic, or
  `client_id` and `client_secret` in the body).
- The partner refusing the client (`invalid_client`, `unauthorized_client`, `invalid_scope`, `invalid_grant`, or a
  401 without an error code) raises `MintRefused`: only a person with a new client id and secret can fix that. Any
  other failure is `errors.ServiceUnavailable` (try again).
- At the connect page (`mint_for_link`) a refusal is a failed connection test (counted on the link, shown on the
  form); in the jobs and on demand (`grantlink.oauth.refresh`) it sends the credential to
  `reauthorization_required`.
- What is sealed: the form's fields (the client id and secret) and the token (`accessToken`, `tokenType`,
  `expiresAt`, `scope`); never a refresh token.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from grantlink import clock, errors
from grantlink.models import Credential
from grantlink.observability import logger
from grantlink.providers import ClientCredentials, Provider

if TYPE_CHECKING:
    from grantlink.connect import OpenedLink
    from grantlink.store import Store

KIND = "client_credentials"
# The partner refuses the client itself: a new client id and secret (or a link asking for other scopes) is needed.
REFUSALS = frozenset({"invalid_client", "unauthorized_client", "invalid_scope", "invalid_grant"})


class MintRefused(Exception):
    """The partner refused the client id and secret (or the scopes asked for); `reason` is its error code."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Minted:
    """A token minted for a credential: the values to seal and the scopes asked for and granted."""

    values: dict[str, Any]
    requested: list[str]
    granted: list[str]

    def credential_changes(self) -> dict[str, Any]:
        """What a credential of this kind carries beside its sealed values (for `dataclasses.replace`)."""
        expires = self.values.get("expiresAt")
        return {
            "access_expires_at": clock.parse_iso(expires) if expires else None,
            "refreshable": True,  # renewed by minting again: no refresh token needed
            "requested_scopes": self.requested,
            "granted_scopes": self.granted,
        }


def grant_of(provider: Provider) -> ClientCredentials:
    if provider.client_credentials is None:
        raise errors.GrantlinkError(f"Partner {provider.slug} does not use OAuth client credentials.")
    return provider.client_credentials


def requested_scopes(provider: Provider, asked: list[str] | None) -> list[str]:
    """The scopes a token is minted for: those the link (or the credential) asked for, else the partner's defaults."""
    return list(asked) if asked is not None else list(grant_of(provider).scopes)


def mint(provider: Provider, fields: Mapping[str, str], scopes: list[str]) -> dict[str, Any]:
    """One token request with the customer's client id and secret; the partner's token response.
    Raises `MintRefused` when the partner refuses the client, `errors.ServiceUnavailable` for anything else."""
    from oauthlib.oauth2 import BackendApplicationClient
    from oauthlib.oauth2.rfc6749.errors import OAuth2Error

    from grantlink import outbound
    from grantlink.oauth import _allow_local_http, _render

    grant = grant_of(provider)
    client_id, secret = fields[grant.client_id_field], fields[grant.client_secret_field]
    client = BackendApplicationClient(client_id, scope=grant.scope_separator.join(scopes) or None)
    statuses: list[int] = []
    _allow_local_http()
    try:
        with outbound.token_session(outbound.token_limits(), client_id, client=client) as session:
            session.register_compliance_hook("access_token_response", _noting(statuses))
            token = session.fetch_token(
                # A {field} in the token URL (Microsoft's {tenantId}) is a pattern-checked, non-secret form field.
                _render(
                    grant.token_url, {k: v for k, v in fields.items() if (f := provider.field(k)) and not f.secret}
                ),
                client_secret=secret,
                include_client_id=True if grant.client_auth == "body" else None,  # else HTTP Basic
                **grant.extra_token_params,
            )
    except OAuth2Error as exc:
        if exc.error in REFUSALS or statuses == [401]:
            raise MintRefused(exc.error if exc.error in REFUSALS else "invalid_client") from exc
        raise errors.ServiceUnavailable(f"{provider.name} did not issue a token; try again shortly.") from exc
    except Exception as exc:
        logger.warning(
            "client credentials token call failed", extra={"partner": provider.slug, "error": type(exc).__name__}
        )
        raise errors.ServiceUnavailable(
            f"{provider.name} did not answer the token request; try again shortly."
        ) from exc
    return dict(token)


def _noting(statuses: list[int]) -> Any:
    def note(response: Any) -> Any:
        statuses.append(int(response.status_code))
        return response

    return note


def minted(provider: Provider, fields: Mapping[str, str], asked: list[str] | None) -> Minted:
    """Mint a token and return what a credential of this kind seals: its fields (client id and secret) and the
    token, without any refresh token the partner may have sent."""
    from grantlink.oauth import granted_scopes

    requested = requested_scopes(provider, asked)
    token = mint(provider, fields, requested)
    granted = granted_scopes(token, requested) or []
    expires_in = token.get("expires_in")
    values = {
        **{name: value for name, value in fields.items() if provider.field(name)},
        "accessToken": token["access_token"],
        "tokenType": token.get("token_type") or "Bearer",
        "expiresAt": clock.iso(clock.now() + timedelta(seconds=int(expires_in))) if expires_in else None,
        "scope": " ".join(granted) or None,
    }
    return Minted({k: v for k, v in values.items() if v is not None}, requested, granted)


def mint_for_link(opened: OpenedLink, link_token: str, fields: dict[str, str], store: Store) -> Minted:
    """Mint the first token on the connect page. A refusal is a failed connection test: counted on the link (the
    lock cap applies) and shown on the form; a partner that does not answer asks the customer to try again."""
    from grantlink import connect

    provider = opened.provider
    try:
        return minted(provider, fields, opened.link.scopes)
    except MintRefused as exc:
        message = (
            f"{provider.name} refused the permissions this link asks for."
            if exc.reason == "invalid_scope"
            else f"{provider.name} refused this client id and secret: check you copied both."
        )
        connect.refuse(opened, link_token, fields, store, message)
    except errors.ServiceUnavailable as exc:
        problem = connect.InvalidForm({}, values=connect.shown_values(provider, fields))
        problem.form_error = f"{provider.name} did not answer. Nothing was saved: try again in a moment."
        raise problem from exc


def reminted(provider: Provider, values: Mapping[str, Any], credential: Credential) -> dict[str, Any]:
    """The credential's values with a new token, minted for the scopes it was connected with (`MintRefused`,
    `errors.ServiceUnavailable` as `mint`)."""
    fields = {name: str(value) for name, value in values.items() if provider.field(name)}
    return minted(provider, fields, credential.requested_scopes).values
