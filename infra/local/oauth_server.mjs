// The local stack's OAuth 2.0 authorization server for the demo-oauth partner: oauth2-mock-server (npm,
// pinned in package-lock.json), bound to 127.0.0.1. It auto-approves every authorization request.
//
// Two additions make it behave like a careful real provider:
//   - the authorization response carries `iss` (RFC 9207), so the client's mix-up defence is exercised;
//   - --token-ttl sets `expires_in`, so renewal can be watched within minutes.
// It prints one JSON line {"issuer": "..."} when it is listening, then one line per token request
// {"event": "token", "grantType": "...", "status": 200} (never a token), and stops on SIGTERM or SIGINT.
import { OAuth2Server } from "oauth2-mock-server";

function option(name, fallback) {
  const at = process.argv.indexOf(name);
  return at >= 0 && process.argv[at + 1] !== undefined ? process.argv[at + 1] : fallback;
}

const port = Number(option("--port", "0"));
const tokenTtl = Number(option("--token-ttl", "3600"));
const server = new OAuth2Server();
await server.issuer.keys.generate("RS256");
await server.start(port, "127.0.0.1");
server.issuer.url = `http://127.0.0.1:${server.address().port}`;

server.service.on("beforeAuthorizeRedirect", (redirect) => {
  redirect.url.searchParams.set("iss", server.issuer.url);
});
server.service.on("beforeResponse", (response, req) => {
  if (response.statusCode === 200 && response.body.access_token) {
    response.body.expires_in = tokenTtl;
  }
  console.log(JSON.stringify({ event: "token", grantType: req.body.grant_type, status: response.statusCode }));
});

const stop = async () => {
  await server.stop();
  process.exit(0);
};
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
console.log(JSON.stringify({ issuer: server.issuer.url }));
