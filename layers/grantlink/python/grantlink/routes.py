"""Every HTTP route, its function and the scope it needs: the one place to read who may call what.

template.yaml declares the same routes for API Gateway; a test keeps the two in step.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    function: str
    scope: str | None  # None on a management route: any valid key may call it
    public: bool = False  # public routes have no authorizer (the connect page, OAuth callback)

    @property
    def methods(self) -> tuple[str, ...]:
        return ANY_METHODS if self.method == "ANY" else (self.method,)

    @property
    def key(self) -> str:
        return self.path if self.path == "$default" else f"{self.method} {self.path}"


# What API Gateway's `ANY` covers, as far as a function is concerned.
ANY_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")
LINKS = "/credentials/grant-access-sharing"
CRED = "/credentials/{id}"
PROXY = CRED + "/proxy/{path+}"  # every method; `{path+}` is the rest of the path, slashes and all

ROUTES: tuple[Route, ...] = (
    Route("POST", LINKS, "share_links", "links:write"),
    Route("GET", LINKS, "share_links", "links:write"),
    Route("GET", LINKS + "/{id}", "share_links", "links:write"),
    Route("PUT", LINKS + "/{id}", "share_links", "links:write"),
    Route("DELETE", LINKS + "/{id}", "share_links", "links:write"),
    Route("GET", "/credentials", "credentials", "credentials:read"),
    Route("GET", CRED, "credentials", "credentials:read"),
    Route("PATCH", CRED, "credentials", "credentials:write"),
    Route("DELETE", CRED, "credentials", "credentials:write"),
    Route("GET", CRED + "/secret", "credentials", "credentials:secret"),
    Route("POST", CRED + "/reauthorize", "credentials", "credentials:write"),
    Route("GET", CRED + "/audit", "credentials", "credentials:read"),
    Route("GET", CRED + "/token", "credentials", "credentials:secret"),
    Route("ANY", PROXY, "proxy", "credentials:proxy"),
    Route("POST", CRED + "/test", "connection_test", "credentials:write"),
    Route("GET", "/partners", "partners", None),
    Route("GET", "/partners/{id}", "partners", None),
    Route("PUT", "/partners/{id}/oauth-app", "partners", "credentials:write"),
    Route("GET", "/partners/{id}/oauth-app", "partners", "credentials:read"),
    Route("DELETE", "/partners/{id}/oauth-app", "partners", "credentials:write"),
    Route("PUT", "/webhooks", "webhooks", "credentials:write"),
    Route("GET", "/webhooks", "webhooks", "credentials:read"),
    Route("DELETE", "/webhooks", "webhooks", "credentials:write"),
    Route("POST", "/webhooks/rotate-secret", "webhooks", "credentials:write"),
    Route("GET", "/webhooks/deliveries", "webhooks", "credentials:read"),
    Route("POST", "/webhooks/deliveries/{id}/retry", "webhooks", "credentials:write"),  # it sends: a write
    Route("GET", "/connect", "connect_page", None, public=True),
    Route("POST", "/connect", "connect_page", None, public=True),
    Route("GET", "/connect/done", "connect_page", None, public=True),
    Route("POST", "/connect/oauth/start", "oauth_callback", None, public=True),
    Route("GET", "/oauth/callback", "oauth_callback", None, public=True),
)

# Anything API Gateway cannot match goes to `$default`, answered by this function with a 404 or 405 envelope.
DEFAULT_ROUTE = Route("ANY", "$default", "share_links", None, public=True)

BY_KEY = {r.key: r for r in ROUTES} | {"$default": DEFAULT_ROUTE}
