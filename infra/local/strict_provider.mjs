// Strict mode for the local OAuth server (oauth_server.mjs --strict): real grant state on top of
// oauth2-mock-server's hooks, behaving like a careful OAuth 2.1 provider (RFC 9700 §4.14.2):
//   - a code is accepted once, and only if /authorize issued it; each accepted code starts a grant;
//   - every refresh rotates the refresh token: the new one is returned, the presented one is dead;
//   - presenting a dead refresh token again is taken as theft: the whole grant is revoked, so every token
//     of it, the newest refresh token included, answers `invalid_grant` from then on (reuse detection);
//     a code used twice revokes the grant it started, too (RFC 6749 §4.1.2) — with PKCE the mock itself
//     refuses a replayed code first (`invalid_request`, its challenge is gone), before any hook runs;
//   - unknown refresh tokens answer `invalid_grant`;
//   - access tokens live `tokenTtl` seconds (their `exp`, not only `expires_in`) and carry a unique `jti`
//     and the `grant_id` they belong to, so a client's stored token can be matched to what was issued.
// `report(req)` describes what one token request did (never a token): the grant, its generation (how many
// rotations it has had), whether it is revoked, and the id of the access token just issued.
import { randomUUID } from "node:crypto";

const INVALID_GRANT = { error: "invalid_grant", error_description: "The grant is invalid, expired or revoked." };

export function installStrictProvider(service, { tokenTtl }) {
  const codes = new Map(); // code -> null (issued, unused) | grant id (used once)
  const refreshTokens = new Map(); // refresh token -> grant id (every one ever issued, live or dead)
  const grants = new Map(); // grant id -> { current, generation, revoked }
  const outcomes = new WeakMap(); // request -> what it did (see report)
  let grantCount = 0;

  service.on("beforeAuthorizeRedirect", (redirect) => {
    const code = redirect.url.searchParams.get("code");
    if (code) codes.set(code, null);
  });

  service.on("beforeTokenSigning", (token, req) => {
    const seen = outcomes.get(req) ?? { grant: grantOf(req) };
    token.payload.exp = token.payload.iat + tokenTtl;
    token.payload.jti = randomUUID();
    token.payload.grant_id = seen.grant;
    if (seen.accessTokenId === undefined) seen.accessTokenId = token.payload.jti; // the first token signed
    outcomes.set(req, seen);
  });

  service.on("beforeResponse", (response, req) => {
    if (response.statusCode !== 200) return;
    const seen = outcomes.get(req) ?? {};
    const verdict = decide(req.body, seen.grant);
    if (verdict.outcome === "issued" || verdict.outcome === "rotated") {
      const grant = grants.get(seen.grant);
      grant.current = response.body.refresh_token;
      refreshTokens.set(grant.current, seen.grant);
    } else {
      response.statusCode = 400;
      response.body = INVALID_GRANT;
      delete seen.accessTokenId;
    }
    outcomes.set(req, { ...seen, ...verdict });
  });

  function grantOf(req) {
    if (req.body.grant_type === "refresh_token") return refreshTokens.get(req.body.refresh_token);
    return req.body.grant_type === "authorization_code" ? `grant-${++grantCount}` : undefined;
  }

  function decide(body, grantId) {
    if (body.grant_type === "authorization_code") return exchange(body.code, grantId);
    if (body.grant_type === "refresh_token") return rotate(body.refresh_token, grantId);
    return { outcome: "unsupported_grant" };
  }

  function exchange(code, grantId) {
    if (!codes.has(code)) return { outcome: "unknown_code" };
    const earlier = codes.get(code);
    if (earlier !== null) return revoke(earlier, "code_replayed");
    codes.set(code, grantId);
    grants.set(grantId, { current: undefined, generation: 0, revoked: false });
    return { outcome: "issued" };
  }

  function rotate(presented, grantId) {
    const grant = grants.get(grantId);
    if (grant === undefined) return { outcome: "unknown_token" };
    if (grant.revoked) return { outcome: "grant_revoked" };
    if (presented !== grant.current) return revoke(grantId, "replayed");
    grant.generation += 1;
    return { outcome: "rotated" };
  }

  function revoke(grantId, outcome) {
    grants.get(grantId).revoked = true;
    return { outcome, revokedGrant: grantId };
  }

  return {
    report(req) {
      const seen = outcomes.get(req);
      if (seen === undefined) return {};
      const grant = grants.get(seen.grant);
      const state = grant ? { grant: seen.grant, generation: grant.generation, revoked: grant.revoked } : {};
      const issued = seen.accessTokenId ? { accessTokenId: seen.accessTokenId } : {};
      const revoked = seen.revokedGrant ? { revokedGrant: seen.revokedGrant } : {};
      return { outcome: seen.outcome, ...state, ...issued, ...revoked };
    },
  };
}
