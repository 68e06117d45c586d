// The local stack's OAuth 2.0 authorization server for the demo-oauth partner: oauth2-mock-server (npm,
// pinned in package-lock.json), bound to 127.0.0.1. It auto-approves every authorization request.
//
// Two additions make it behave like a careful real provider:
//   - the authorization response carries `iss` (RFC 9207), so the client's mix-up defence is exercised;
//   - --token-ttl sets `expires_in`, so renewal can be watched within minutes;
//   - every access token carries a unique `jti`, so a refreshed token always differs from the one it replaces;
//   - the token response's `scope` is what was asked for (at /authorize for a code, in the request for a refresh
//     or client credentials, else the grant's) minus the scopes it never grants (--refuse-scopes, "demo:write"
//     by default), so a grant narrower than requested can be watched.
// Options for testing against a strict provider (both off by default):
//   - --strict: refresh tokens rotate on every use, a replayed one revokes the whole grant, unknown ones and
//     unissued codes answer invalid_grant, access tokens expire after --token-ttl (strict_provider.mjs);
//   - --cert <pem> --key <pem>: serve https with that certificate (e.g. one signed by a private CA).
// It prints one JSON line {"issuer": "..."} when it is listening, then one line per token request
// {"event": "token", "grantType": "...", "status": 200} (never a token; in strict mode also the outcome, the
// grant, its generation and revocation, and the issued access token's id), one {"event": "userinfo"} per /userinfo
// call, and stops on SIGTERM or SIGINT.
import { randomUUID } from "node:crypto";

import { OAuth2Server } from "oauth2-mock-server";

import { installStrictProvider } from "./strict_provider.mjs";

function option(name, fallback) {
  const at = process.argv.indexOf(name);
  return at >= 0 && process.argv[at + 1] !== undefined ? process.argv[at + 1] : fallback;
}

const port = Number(option("--port", "0"));
const tokenTtl = Number(option("--token-ttl", "3600"));
const cert = option("--cert", undefined);
const key = option("--key", undefined);
const refused = new Set(option("--refuse-scopes", "demo:write").split(/\s+/).filter(Boolean));
const server = new OAuth2Server(key, cert);
await server.issuer.keys.generate("RS256");
await server.start(port, "127.0.0.1");
server.issuer.url = `${cert ? "https" : "http"}://127.0.0.1:${server.address().port}`;
// Registered first, so the listeners below see its verdict.
const strict = process.argv.includes("--strict") ? installStrictProvider(server.service, { tokenTtl }) : undefined;
if (!strict) {
  // Every access token is unique, as a real provider's are: without a `jti`, two tokens signed in the same second
  // are the same string, and a refresh could not replace a token the partner has revoked. (Strict mode sets its own.)
  server.service.on("beforeTokenSigning", (token) => {
    token.payload.jti = randomUUID();
  });
}

// Scopes as this server grants them: code -> scope asked for at /authorize; refresh token -> its grant's scope.
const scopesAsked = new Map();
const grantScopes = new Map();
server.service.on("beforeAuthorizeRedirect", (redirect, req) => {
  redirect.url.searchParams.set("iss", server.issuer.url);
  const code = redirect.url.searchParams.get("code");
  if (code) scopesAsked.set(code, String(req.query.scope ?? ""));
});

function grantedScope(body) {
  let asked = body.scope;
  if (body.grant_type === "authorization_code") asked = scopesAsked.get(body.code);
  else if (asked === undefined && body.grant_type === "refresh_token") asked = grantScopes.get(body.refresh_token);
  return String(asked ?? "").split(/\s+/).filter((scope) => scope && !refused.has(scope)).join(" ");
}
server.service.on("beforeTokenSigning", (token, req) => {
  if (token.payload.scope !== undefined) token.payload.scope = grantedScope(req.body); // the access token's claim
});
// The client credentials grant mints for any client, except one whose secret starts with "revoked-": a customer's
// machine client revoked at the provider (invalid_client, as RFC 6749 section 5.2 says), to show a refusal.
function revokedClient(req) {
  if (req.body.grant_type !== "client_credentials") return false;
  const basic = /^Basic (.+)$/i.exec(req.headers.authorization ?? "");
  const secret = basic ? Buffer.from(basic[1], "base64").toString().split(":").slice(1).join(":") : req.body.client_secret;
  return decodeURIComponent(String(secret ?? "")).startsWith("revoked-");
}
server.service.on("beforeResponse", (response, req) => {
  if (revokedClient(req)) {
    response.statusCode = 401;
    response.body = { error: "invalid_client", error_description: "Client authentication failed." };
  }
  if (response.statusCode === 200 && response.body.access_token) {
    response.body.expires_in = tokenTtl;
    response.body.scope = grantedScope(req.body);
    if (response.body.refresh_token) grantScopes.set(response.body.refresh_token, response.body.scope);
  }
  if (req.body.grant_type === "authorization_code") scopesAsked.delete(req.body.code);
  const report = { event: "token", grantType: req.body.grant_type, status: response.statusCode };
  console.log(JSON.stringify({ ...report, ...strict?.report(req) }));
});

// One line per /userinfo call too (the demo partners' connection test), so a test can tell which server it reached.
server.service.on("beforeUserinfo", () => {
  console.log(JSON.stringify({ event: "userinfo" }));
});

const stop = async () => {
  await server.stop();
  process.exit(0);
};
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
console.log(JSON.stringify({ issuer: server.issuer.url }));
