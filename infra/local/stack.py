"""The embedded local stack: moto on 127.0.0.1, the template's resources, and the API served in-process.

No Docker and no AWS account. `make run` starts it; tests start it as a subprocess on free ports and
stop it by process id.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import ssl
import subprocess
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import boto3

from infra.local import jobs, resources, template
from infra.local.gateway import Gateway, Reply, Request, check_every_function_is_declared, load_handler

LOCAL = "127.0.0.1"
# Where the demo tenant may send customers after connecting (a local app of yours, say).
DEMO_REDIRECTS = ("http://localhost:8080", "http://127.0.0.1:8080")
DEMO_OAUTH_PARTNER = 9003
# The demo OAuth 1.0a partner (demo-oauth1) and its consumers: one HMAC, one RSA-SHA1 (key made at start).
DEMO_OAUTH1_PARTNER = 9004
DEMO_OAUTH1_CONSUMER, DEMO_OAUTH1_SECRET = "grantlink-demo-oauth1", "demo-consumer-secret"
DEMO_OAUTH1_RSA_CONSUMER = "grantlink-demo-oauth1-rsa"
DEMO_OAUTH1_RSA_PARTNER = 9006  # demo-oauth1-rsa: the same provider, signed with RSA-SHA1
# Local override of the renewal queue's visibility timeout (the template's is 6 minutes): a renewal the worker
# reports as failed is retried within seconds, and reaches the dead-letter queue after maxReceiveCount tries.
RENEWAL_VISIBILITY_SECONDS = 5
SINK_LIMIT = 1000  # deliveries /_local/webhook-sink keeps, newest
# Local-only endpoints beside the API: path -> handler(request) -> Reply
Extra = Callable[[Request], Reply]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOCAL, 0))
        return int(sock.getsockname()[1])


@dataclass
class LocalStack:
    port: int = 3000
    aws_port: int = 0
    oauth_port: int = 0
    sandbox_oauth_port: int = 0  # demo-oauth's sandbox environment: a second oauth2-mock-server
    oauth1_port: int = 0
    oauth1_rsa_key: str = field(default="", repr=False)  # PEM: the RSA demo consumer's private key
    stack_name: str = "grantlink-local"
    env: dict[str, str] = field(default_factory=dict)
    api_key: str = ""
    tenant_id: str = ""
    token_requests: dict[str, int] = field(default_factory=dict)
    sandbox_token_requests: dict[str, int] = field(default_factory=dict)  # the sandbox server's, by grant type
    userinfo_requests: dict[str, int] = field(default_factory=dict)  # /userinfo calls: "production", "sandbox"
    # Strict mode only (GRANTLINK_DEMO_OAUTH_STRICT): token requests by outcome, and each grant's last state.
    token_outcomes: dict[str, int] = field(default_factory=dict)
    grants: dict[str, dict[str, Any]] = field(default_factory=dict)
    sink: list[dict[str, Any]] = field(default_factory=list)  # what POST /_local/webhook-sink received
    _stats_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def start(self) -> None:
        from moto.server import ThreadedMotoServer

        from infra.local import moto_atomic

        moto_atomic.install()
        self.aws_port = self.aws_port or free_port()
        self.oauth_port = self.oauth_port or free_port()
        self.sandbox_oauth_port = self.sandbox_oauth_port or free_port()
        self.oauth1_port = self.oauth1_port or free_port()
        logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto's per-request access lines
        self._moto = ThreadedMotoServer(ip_address=LOCAL, port=self.aws_port, verbose=False)
        self._moto.start()
        self._server = _Server((LOCAL, self.port), _handler_class(self))
        self.port = int(self._server.server_address[1])
        chosen = {k: v for k, v in os.environ.items() if k.startswith("GRANTLINK_")}  # the developer's settings
        self._configure_environment()
        tpl = template.load()
        session = boto3.session.Session()
        resolver = resources.provision(tpl, lambda s: session.client(s), self.stack_name)  # type: ignore[call-overload]
        self.env.update(resources.function_environment(tpl, resolver))
        self.env.update(self._local_overrides())
        self.env.update(chosen)  # e.g. GRANTLINK_RENEW_BEFORE_SECONDS=3600 make run: the developer wins
        os.environ.update(self.env)
        self.gateway = _gateway(tpl, resolver)
        self.extras = {
            **_extras(),
            "/_local/oauth-stats": self._oauth_stats,
            "/_local/sweep": self._sweep,
            "/_local/webhook-sink": self._webhook_sink,
        }
        self._start_oauth_server()
        self._start_oauth1_server()
        self._seed_demo_tenant()
        self.jobs = self._start_jobs(tpl, resolver, session)
        threading.Thread(target=self._server.serve_forever, name="api", daemon=True).start()

    @property
    def api_url(self) -> str:
        return f"http://{LOCAL}:{self.port}"

    @property
    def redirect_uri(self) -> str:
        return f"{self.api_url}/oauth/callback"

    @property
    def oauth_url(self) -> str:
        scheme = "https" if os.environ.get("GRANTLINK_DEMO_OAUTH_TLS_CERT") else "http"
        return f"{scheme}://{LOCAL}:{self.oauth_port}"

    @property
    def sandbox_oauth_url(self) -> str:
        scheme = "https" if os.environ.get("GRANTLINK_DEMO_OAUTH_TLS_CERT") else "http"
        return f"{scheme}://{LOCAL}:{self.sandbox_oauth_port}"

    @property
    def oauth1_url(self) -> str:
        scheme = "https" if os.environ.get("GRANTLINK_DEMO_OAUTH_TLS_CERT") else "http"
        return f"{scheme}://{LOCAL}:{self.oauth1_port}"

    @property
    def aws_endpoint(self) -> str:
        return f"http://{LOCAL}:{self.aws_port}"

    def _configure_environment(self) -> None:
        os.environ.update(resources.LOCAL_ENVIRONMENT, AWS_ENDPOINT_URL=self.aws_endpoint)
        os.environ.pop("AWS_PROFILE", None)
        os.environ.pop("AWS_SESSION_TOKEN", None)

    def _local_overrides(self) -> dict[str, str]:
        return {
            "GRANTLINK_CONNECT_BASE_URL": self.api_url,
            "GRANTLINK_API_URL": self.api_url,
            "GRANTLINK_LOCAL_DEMO": "true",
            "GRANTLINK_DEMO_BASE_URL": self.api_url,
            "GRANTLINK_DEMO_OAUTH_URL": self.oauth_url,
            "GRANTLINK_DEMO_SANDBOX_OAUTH_URL": self.sandbox_oauth_url,
            "GRANTLINK_DEMO_OAUTH1_URL": self.oauth1_url,
            "GRANTLINK_ALLOW_PRIVATE_TARGETS": "true",  # the demo partners live on 127.0.0.1
            "POWERTOOLS_TRACE_DISABLED": "true",
            "POWERTOOLS_METRICS_DISABLED": "true",
        }

    def _start_jobs(self, tpl: dict[str, Any], resolver: template.Resolver, session: Any) -> jobs.JobRunner:
        """The sweep on a timer, the renewal queue drained after it, and every bus event printed."""
        handlers = {logical_id: env.invoke for logical_id, env in self.gateway.environments.items()}
        interval = float(os.environ.get(jobs.SWEEP_INTERVAL_VARIABLE, jobs.DEFAULT_SWEEP_INTERVAL))
        runner = jobs.from_template(tpl, resolver, handlers, session.client("sqs"), interval)
        runner.source.sqs.set_queue_attributes(
            QueueUrl=runner.source.queue_url, Attributes={"VisibilityTimeout": str(RENEWAL_VISIBILITY_SECONDS)}
        )
        bus, name = self.env["GRANTLINK_EVENT_BUS"], f"{self.stack_name}-local-events"
        printer = jobs.EventPrinter.create(session.client("sqs"), session.client("events"), bus, name, runner.stopping)
        runner.start(printer.loop, runner.poll_others)
        return runner

    def _sweep(self, request: Request) -> Reply:
        """POST /_local/sweep: one sweep and a drain of the renewal queue, now; answers the counts."""
        if request.method != "POST":
            return _json_reply(405, {"message": "POST only"}, allow="POST")
        try:
            counts: dict[str, Any] = self.jobs.run_once()
        except Exception as exc:  # noqa: BLE001 - reported to the caller and in the log, as a crashed Lambda would be
            traceback.print_exc()
            return _json_reply(500, {"error": type(exc).__name__})
        return _json_reply(200, counts)

    def _webhook_sink(self, request: Request) -> Reply:
        """POST /_local/webhook-sink stores a webhook as it arrived (headers and body; nothing is verified);
        GET lists what arrived, oldest first. Point a tenant's webhook here to watch signed deliveries.
        `?box=<name>` keeps receivers apart (two tenants, two boxes): POST files into that box, GET lists only it;
        a GET without `box` lists every box. The newest SINK_LIMIT deliveries are kept."""
        query = dict(parse_qsl(request.query, keep_blank_values=True))
        box = query.get("box", "")
        if request.method == "GET":
            with self._stats_lock:
                found = [d for d in self.sink if d["box"] == box] if "box" in query else list(self.sink)
            return Reply(200, {"content-type": "application/json"}, [], json.dumps({"deliveries": found}).encode())
        if request.method != "POST":
            return _json_reply(405, {"message": "GET or POST"}, allow="GET, POST")
        received = {k: v for k, v in request.headers.items() if k.startswith("webhook-") or k == "content-type"}
        with self._stats_lock:
            self.sink.append({"box": box, "headers": received, "body": request.body.decode("utf-8", "replace")})
            del self.sink[:-SINK_LIMIT]
        return _json_reply(200, {"received": True})

    def _oauth_stats(self, _: Request) -> Reply:
        with self._stats_lock:
            stats = {
                "tokenRequests": self.token_requests,
                "outcomes": self.token_outcomes,
                "grants": self.grants,
                "userinfoRequests": self.userinfo_requests.get("production", 0),
                "sandbox": {
                    "tokenRequests": self.sandbox_token_requests,
                    "userinfoRequests": self.userinfo_requests.get("sandbox", 0),
                },
            }
            body = json.dumps(stats).encode()
        return Reply(200, {"content-type": "application/json"}, [], body)

    def _start_oauth_server(self) -> None:
        """oauth2-mock-server (npm) on 127.0.0.1, the authorization server of the demo-oauth partner; and a second
        one, never strict, as its sandbox environment (its token requests are counted apart, under "sandbox")."""
        options = _strict_options()
        self._oauth = _node_oauth_server(self.oauth_port, options)
        production = (self._oauth, "production", self.token_requests)
        threading.Thread(target=self._count_token_requests, args=production, name="oauth-log", daemon=True).start()
        self._sandbox_oauth = _node_oauth_server(self.sandbox_oauth_port, [o for o in options if o != "--strict"])
        sandbox = (self._sandbox_oauth, "sandbox", self.sandbox_token_requests)
        threading.Thread(target=self._count_token_requests, args=sandbox, name="sandbox-log", daemon=True).start()

    def _counted_userinfo(self, report: dict[str, Any], server: str) -> bool:
        """A /userinfo line of a demo OAuth server: counted under `server`; True when it was one."""
        if report.get("event") != "userinfo":
            return False
        with self._stats_lock:
            self.userinfo_requests[server] = self.userinfo_requests.get(server, 0) + 1
        return True

    def _start_oauth1_server(self) -> None:
        """The demo-oauth1 partner's provider (infra/local/oauth1_server.py), in this process: an HMAC consumer
        and an RSA-SHA1 one whose key is made now (the private half stays on `oauth1_rsa_key`)."""
        from infra.local.oauth1_server import OAuth1Server, new_rsa_consumer_key

        self.oauth1_rsa_key, public_key = new_rsa_consumer_key()
        self._oauth1 = OAuth1Server(
            {DEMO_OAUTH1_CONSUMER: DEMO_OAUTH1_SECRET},
            {DEMO_OAUTH1_RSA_CONSUMER: public_key},
            ssl_context=_demo_tls_context(),
            port=self.oauth1_port,
        )
        self._oauth1.start()
        self.extras["/_local/oauth1-stats"] = lambda _: _json_reply(200, self._oauth1.stats())

    def _count_token_requests(self, process: subprocess.Popen[str], server: str, counts: dict[str, int]) -> None:
        """A demo OAuth server reports each token request: count them by grant type in `counts`
        (/_local/oauth-stats; the sandbox's under "sandbox"), and its /userinfo calls under `server`."""
        assert process.stdout is not None
        for line in process.stdout:
            try:
                report = json.loads(line)
            except ValueError:
                continue
            if self._counted_userinfo(report, server):
                continue
            grant = report.get("grantType", "unknown")
            with self._stats_lock:
                counts[grant] = counts.get(grant, 0) + 1
                if server == "production":
                    self._note_strict_outcome(report)  # the sandbox is never strict
            local = "demo-oauth" if server == "production" else "demo-oauth-sandbox"
            jobs.say({"level": "INFO", "local": local, "tokenRequest": grant})

    def _note_strict_outcome(self, report: dict[str, Any]) -> None:
        """Strict mode: count the outcome (rotated, replayed, ...) and keep the grant's latest state."""
        if "outcome" in report:
            self.token_outcomes[report["outcome"]] = self.token_outcomes.get(report["outcome"], 0) + 1
        if "grant" in report:
            state = self.grants.setdefault(report["grant"], {"accessTokenId": None})
            state.update({k: report[k] for k in ("generation", "revoked", "accessTokenId") if k in report})
        if "revokedGrant" in report:
            self.grants.setdefault(report["revokedGrant"], {"accessTokenId": None})["revoked"] = True

    def _seed_demo_tenant(self) -> None:
        """The demo tenant, with its own OAuth app for demo-oauth (the mock server accepts any client)."""
        from grantlink import config, oauth, tenants
        from grantlink.models import Caller, OAuthAppRequest

        config.reset()
        self.tenant_id, self.api_key = tenants.create_tenant("demo", redirect_origins=DEMO_REDIRECTS)
        app = OAuthAppRequest.model_validate({"clientId": "grantlink-demo", "clientSecret": "demo-client-secret"})
        oauth.put_app(Caller(self.tenant_id), DEMO_OAUTH_PARTNER, app, self.redirect_uri)
        self._seed_demo_oauth1_consumer()

    def _seed_demo_oauth1_consumer(self) -> None:
        """The demo tenant's consumers for demo-oauth1 (HMAC) and demo-oauth1-rsa (RSA-SHA1), as the provider is
        configured: their links work out of the box, as demo-oauth's do."""
        from grantlink import oauth
        from grantlink.models import Caller, OAuthAppRequest

        consumer = {"clientId": DEMO_OAUTH1_CONSUMER, "clientSecret": DEMO_OAUTH1_SECRET}
        app = OAuthAppRequest.model_validate(consumer)
        oauth.put_app(Caller(self.tenant_id), DEMO_OAUTH1_PARTNER, app, self.redirect_uri)
        # demo-oauth1-rsa signs with RSA-SHA1: the consumer's secret is the private key made at this start.
        rsa = OAuthAppRequest.model_validate(
            {"clientId": DEMO_OAUTH1_RSA_CONSUMER, "clientSecret": self.oauth1_rsa_key}
        )
        oauth.put_app(Caller(self.tenant_id), DEMO_OAUTH1_RSA_PARTNER, rsa, self.redirect_uri)

    def state(self) -> dict[str, Any]:
        return {
            "pid": os.getpid(),
            "apiUrl": self.api_url,
            "awsEndpoint": self.aws_endpoint,
            "apiKey": self.api_key,
            "tenantId": self.tenant_id,
            "table": self.env.get("GRANTLINK_TABLE"),
            "oauthIssuer": self.oauth_url,
            "sandboxOAuthIssuer": self.sandbox_oauth_url,
            "oauth1Url": self.oauth1_url,
        }

    def sam_env(self) -> dict[str, Any]:
        """SAM CLI's env-vars format: Parameters apply to every function."""
        keep = ("GRANTLINK_", "POWERTOOLS_", "AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
        return {"Parameters": {k: v for k, v in {**os.environ, **self.env}.items() if k.startswith(keep)}}

    def stop(self) -> None:
        self.jobs.stop()
        for server in (self._oauth, self._sandbox_oauth):
            server.terminate()
            server.wait(timeout=10)
        self._oauth1.stop()
        self._server.shutdown()
        self._server.server_close()
        self._moto.stop()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # the default 5 resets connections under a burst of concurrent requests


def _gateway(tpl: dict[str, Any], resolver: template.Resolver) -> Gateway:
    specs = template.functions(tpl)
    check_every_function_is_declared(specs)
    handlers = {s.logical_id: load_handler(s) for s in specs}
    authorizer = template.authorizer(tpl)
    cache = int(resolver.resolve(authorizer[1].get("ReauthorizeEvery", 300)))
    return Gateway(template.http_routes(tpl), handlers, {s.logical_id: s for s in specs}, authorizer, cache)


def _json_reply(status: int, body: dict[str, Any], **headers: str) -> Reply:
    return Reply(status, {"content-type": "application/json", **headers}, [], json.dumps(body).encode())


def _node_oauth_server(port: int, options: list[str]) -> subprocess.Popen[str]:
    """infra/local/oauth_server.mjs (oauth2-mock-server) on 127.0.0.1:`port`, once it listens."""
    script = template.ROOT / "infra/local/oauth_server.mjs"
    if not (template.ROOT / "node_modules/oauth2-mock-server").is_dir():
        raise RuntimeError("node_modules is missing: run `make system` (npm ci) first")
    ttl = os.environ.get("GRANTLINK_DEMO_TOKEN_TTL", "3600")
    node = shutil.which("node")
    if node is None:
        raise RuntimeError("Node.js is missing: the demo OAuth server needs it")
    server = subprocess.Popen(  # noqa: S603 - our own script, fixed arguments
        [node, str(script), "--port", str(port), "--token-ttl", ttl, *options],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert server.stdout is not None
    line = server.stdout.readline()  # {"issuer": ...} once it listens
    if not line.startswith("{"):
        raise RuntimeError("the demo OAuth server did not start")
    return server


def _demo_tls_context() -> ssl.SSLContext | None:
    """https for the demo OAuth 1.0a provider too, from the same GRANTLINK_DEMO_OAUTH_TLS_CERT/_KEY."""
    cert, key = os.environ.get("GRANTLINK_DEMO_OAUTH_TLS_CERT"), os.environ.get("GRANTLINK_DEMO_OAUTH_TLS_KEY")
    if not (cert and key):
        return None  # _strict_options refuses one without the other
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    return context


def _strict_options() -> list[str]:
    """The demo OAuth server's strict mode and https, from GRANTLINK_DEMO_OAUTH_STRICT and
    GRANTLINK_DEMO_OAUTH_TLS_CERT/_KEY (PEM paths); both off by default."""
    options = ["--strict"] if os.environ.get("GRANTLINK_DEMO_OAUTH_STRICT", "").lower() == "true" else []
    cert, key = os.environ.get("GRANTLINK_DEMO_OAUTH_TLS_CERT"), os.environ.get("GRANTLINK_DEMO_OAUTH_TLS_KEY")
    if bool(cert) != bool(key):
        raise RuntimeError("GRANTLINK_DEMO_OAUTH_TLS_CERT and GRANTLINK_DEMO_OAUTH_TLS_KEY go together")
    return options + (["--cert", str(cert), "--key", str(key)] if cert else [])


def _extras() -> dict[str, Extra]:
    from infra.local import extras

    return extras.endpoints()


def _prefixed(path: str) -> Extra | None:
    from infra.local import extras

    return extras.prefixed(path)


def _handler_class(stack: LocalStack) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "grantlink-local"

        def _serve(self) -> None:
            url = urlsplit(self.path)
            length = int(self.headers.get("content-length") or 0)
            request = Request(
                method=self.command,
                path=url.path,
                query=url.query,
                headers={k.lower(): v for k, v in self.headers.items()},
                body=self.rfile.read(length) if length else b"",
                source_ip=self.client_address[0],
            )
            extra = stack.extras.get(url.path) or _prefixed(url.path)
            reply = extra(request) if extra else stack.gateway.handle(request)
            self.log_request(reply.status)
            self.send_response_only(reply.status)
            # A proxied partner's answer brings its own Date and Server: send ours only where it has none.
            for name, value in (("server", self.version_string()), ("date", self.date_time_string())):
                if name not in reply.headers:
                    self.send_header(name, value)
            for name, value in reply.headers.items():
                if name != "content-length":
                    self.send_header(name, value)
            for cookie in reply.cookies:
                self.send_header("set-cookie", cookie)
            self.send_header("content-length", str(len(reply.body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(reply.body)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _serve

        def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
            # The path only: query strings carry link tokens, OAuth codes and states (SECURITY.md O11).
            path = urlsplit(self.path).path
            jobs.say({"level": "INFO", "local": "access", "method": self.command, "path": path, "status": code})

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
            from grantlink.observability import redact_text

            jobs.say({"level": "INFO", "local": "server", "message": redact_text(format % args)})

    return Handler


def write_state(stack: LocalStack, path: Path) -> None:
    """The state file (URLs, demo key) and, beside it, sam-env.json: an --env-vars file that points
    `sam local invoke` / `sam local start-api` (where a container engine exists) at this stack's AWS endpoint."""
    path.parent.mkdir(parents=True, exist_ok=True)
    for target, content in ((path, stack.state()), (sam_env_path(path), stack.sam_env())):
        target.write_text(json.dumps(content, indent=2) + "\n")
        target.chmod(0o600)


def sam_env_path(state_file: Path) -> Path:
    return state_file.with_name("sam-env.json")
