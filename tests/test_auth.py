"""Who may call obsmcp over HTTP: static bearer tokens, OAuth 2.1 JWTs against a real JWKS served over HTTP,
RFC 9728 metadata and WWW-Authenticate on 401, Host/Origin checks, and the refusal to listen beyond loopback
without authentication. Servers are real `obsmcp serve --http` processes; clients are the MCP SDK and httpx.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import subprocess
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import httpx2
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from mcp.client.streamable_http import streamable_http_client

from obsmcp.auth import (
    JWTVerifier,
    StaticTokenVerifier,
    load_static_tokens,
    parse_token_line,
    require_auth_beyond_loopback,
)
from obsmcp.config import ConfigError, Settings
from tests.conftest import OBSMCP, ServerProcess, call_tool, clean_env, free_port, otlp_logs_protobuf, run_cli

TOKEN = "ci-bot:Vq3n8xYkP2mR7sLw9tZb4cHd"
SECRET = TOKEN.split(":", 1)[1]
ISSUER = "http://127.0.0.1/issuer"  # loopback http is accepted for an issuer (as the SDK does)
INIT = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}},
}
ACCEPT = {"Accept": "application/json, text/event-stream"}
# Decode worker processes take seconds to start on a loaded machine, and these tests send almost no OTLP.
FAST = {"OBSMCP_INGEST_DECODE_PROCESSES": "0"}


# -- a real JWKS over HTTP ---------------------------------------------------------------------------------------


class Issuer:
    """An RSA signing key, its JWKS served on a loopback port, and tokens signed with it."""

    def __init__(self) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.key.public_key()))
        self.jwks = json.dumps({"keys": [{**jwk, "kid": "k1", "use": "sig", "alg": "RS256"}]}).encode()
        jwks = self.jwks

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200 if self.path == "/jwks.json" else 404)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(jwks if self.path == "/jwks.json" else b"{}")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/jwks.json"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def token(self, audience: str, *, key: Any = None, **claims: Any) -> str:
        now = int(time.time())
        body = {"iss": ISSUER, "aud": audience, "sub": "alice", "iat": now, "exp": now + 600, "scope": "obs:read"}
        body.update(claims)
        return jwt.encode(body, key or self.key, algorithm="RS256", headers={"kid": "k1"})

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def issuer() -> Iterator[Issuer]:
    iss = Issuer()
    yield iss
    iss.close()


# -- the verifiers, in process ----------------------------------------------------------------------------------


def test_token_lines_name_the_caller_and_comments_are_skipped(tmp_path: Path) -> None:
    assert parse_token_line("  # a comment", "") is None
    assert parse_token_line("", "") is None
    assert parse_token_line("ci-bot:abc", "") == ("ci-bot", "abc")
    path = tmp_path / "tokens"
    path.write_text(f"# who may call\n{TOKEN}\nanonymous0123456789xyz\n")
    tokens = load_static_tokens(Settings(data_dir=tmp_path, auth_token_file=path))
    assert tokens[SECRET] == "ci-bot"
    assert tokens["anonymous0123456789xyz"].startswith("token-")  # named by fingerprint, never by the token
    assert "anonymous" not in tokens["anonymous0123456789xyz"]


def test_short_or_missing_tokens_are_refused_with_the_fix(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"shorter than 16 characters.*secrets\.token_urlsafe"):
        load_static_tokens(Settings(data_dir=tmp_path, auth_token="bot:short"))
    with pytest.raises(ConfigError, match="cannot read the token file"):
        load_static_tokens(Settings(data_dir=tmp_path, auth_token_file=tmp_path / "missing"))


@pytest.mark.anyio
async def test_static_tokens_identify_the_caller_without_keeping_the_token() -> None:
    verifier = StaticTokenVerifier({SECRET: "ci-bot", "other-token-0123456789": "other"})
    found = await verifier.verify_token(SECRET)
    assert found is not None and found.subject == "ci-bot"
    assert SECRET not in found.model_dump_json()  # a fingerprint stands in for the token
    assert await verifier.verify_token(SECRET + "x") is None
    assert await verifier.verify_token("") is None


@pytest.mark.anyio
async def test_jwt_verifier_checks_signature_issuer_audience_and_times(issuer: Issuer) -> None:
    aud = "http://127.0.0.1:9/mcp"
    verifier = JWTVerifier(issuer.url, ISSUER, aud, resource=aud)
    ok = await verifier.verify_token(issuer.token(aud, scope="obs:read obs:admin"))
    assert ok is not None and ok.subject == "alice" and ok.scopes == ["obs:read", "obs:admin"]
    now = int(time.time())
    bad = {
        "expired": issuer.token(aud, exp=now - 3600, iat=now - 7200),
        "not yet valid": issuer.token(aud, nbf=now + 3600),
        "wrong issuer": issuer.token(aud, iss="http://127.0.0.1/other"),
        "wrong audience": issuer.token("http://elsewhere.example/mcp"),
        "bad signature": issuer.token(aud, key=issuer.other_key),
        "HS256 with the public key": jwt.encode({"iss": ISSUER, "aud": aud, "exp": now + 60}, "x" * 32, "HS256"),
    }
    for why, token in bad.items():
        assert await verifier.verify_token(token) is None, why


# -- listening beyond loopback ------------------------------------------------------------------------------------


def test_listening_beyond_loopback_without_auth_is_refused_with_the_flag_to_set(tmp_path: Path) -> None:
    r = run_cli("serve", "--http", "--host", "0.0.0.0", "--port", str(free_port()), "--data-dir", str(tmp_path))
    assert r.returncode != 0
    assert "refusing to listen on 0.0.0.0" in r.stderr and "--auth-token-file" in r.stderr, r.stderr
    assert "OBSMCP_AUTH_TOKEN" in r.stderr
    # The OTLP receivers bind the same host: stdio serve with an OTLP port there is refused too.
    with pytest.raises(ConfigError, match=r"OTLP/HTTP :4318"):
        require_auth_beyond_loopback(Settings(data_dir=tmp_path, host="0.0.0.0"), mcp_http=False)
    require_auth_beyond_loopback(Settings(data_dir=tmp_path, host="0.0.0.0", otlp_port=0), mcp_http=False)


class CustomServer(ServerProcess):
    """`obsmcp serve --http` with any arguments (ServerProcess binds 127.0.0.1 without options)."""

    def __init__(self, tmp: Path, args: list[str], env: Mapping[str, str] | None = None) -> None:
        (tmp / "logs").mkdir(exist_ok=True)
        super().__init__(tmp / "data", tmp / "logs", {**FAST, **(env or {})})
        self.args = args

    def start(self, timeout: float = 30.0) -> CustomServer:
        self.port, self.otlp_port = free_port(), free_port()
        cmd = [str(OBSMCP), "serve", "--http", "--port", str(self.port), "--otlp-port", str(self.otlp_port)]
        with open(self.log_path, "wb") as out:
            self.proc = subprocess.Popen(
                [*cmd, "--data-dir", str(self.data_dir), "--log-format", "json", *self.args],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=clean_env(self.env),
            )
        assert self._wait_healthy(timeout), self.log_text()
        return self


@contextlib.contextmanager
def custom_server(tmp: Path, args: list[str], env: Mapping[str, str] | None = None) -> Iterator[CustomServer]:
    srv = CustomServer(tmp, args, env)
    try:
        yield srv.start()
    finally:
        srv.stop()


@pytest.mark.slow
def test_beyond_loopback_with_a_token_it_serves_and_checks_host_and_origin(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text(TOKEN + "\n")
    tokens.chmod(0o600)
    args = ["--host", "0.0.0.0", "--auth-token-file", str(tokens)]
    with custom_server(tmp_path, args, {"OBSMCP_ALLOWED_HOSTS": "mcp.example.test"}) as srv:
        auth = {"Authorization": f"Bearer {SECRET}", **ACCEPT}

        def post(**headers: str) -> httpx.Response:
            return httpx.post(srv.mcp_url, json=INIT, headers={**auth, **headers}, timeout=10)

        assert post(Host=f"mcp.example.test:{srv.port}").status_code == 200
        assert post(Host="mcp.example.test").status_code == 200  # behind a proxy on the default port
        bad_host = post(Host="evil.example")
        assert bad_host.status_code == 421 and "OBSMCP_ALLOWED_HOSTS" in bad_host.text
        assert post(Origin="https://evil.example").status_code == 403
        assert post(Origin=f"http://mcp.example.test:{srv.port}").status_code == 200
        # The OTLP port is guarded the same way.
        r = httpx.get(f"{srv.otlp_url}/health", headers={"Host": "evil.example"}, timeout=10)
        assert r.status_code == 421


@pytest.mark.slow
def test_loopback_server_refuses_foreign_host_and_origin(server_factory: Any) -> None:
    srv = server_factory(env=FAST)
    for url in (srv.mcp_url, f"{srv.base_url}/health"):
        r = httpx.post(url, json=INIT, headers={**ACCEPT, "Host": "rebind.attacker.example"}, timeout=10)
        assert r.status_code == 421, url
        r = httpx.post(url, json=INIT, headers={**ACCEPT, "Origin": "https://attacker.example"}, timeout=10)
        assert r.status_code == 403, url
    # A browser client on this machine (e.g. the MCP Inspector's web UI) is welcome.
    r = httpx.post(srv.mcp_url, json=INIT, headers={**ACCEPT, "Origin": "http://localhost:6274"}, timeout=10)
    assert r.status_code == 200


# -- static tokens over HTTP -------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.anyio
async def test_static_token_from_a_file_guards_mcp_and_otlp(server_factory: Any, tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text(f"# callers\n{TOKEN}\n")
    srv = server_factory(env={**FAST, "OBSMCP_AUTH_TOKEN_FILE": str(tokens)})

    async with (
        httpx2.AsyncClient(headers={"Authorization": f"Bearer {SECRET}"}, timeout=30) as http,
        Client(streamable_http_client(srv.mcp_url, http_client=http)) as client,
    ):
        r = await call_tool(client, "search_logs", {"query": "password=hunter2 seen"})
        assert r.structured_content["total"] == 0

    missing = httpx.post(srv.mcp_url, json=INIT, headers=ACCEPT, timeout=10)
    assert missing.status_code == 401 and missing.headers["WWW-Authenticate"].startswith("Bearer")
    wrong = httpx.post(srv.mcp_url, json=INIT, headers={**ACCEPT, "Authorization": "Bearer " + "x" * 24}, timeout=10)
    assert wrong.status_code == 401
    # A token in the URL is refused outright, even the right one.
    in_url = httpx.post(f"{srv.mcp_url}?access_token={SECRET}", json=INIT, headers=ACCEPT, timeout=10)
    assert in_url.status_code == 400 and "Authorization header" in in_url.text

    body = otlp_logs_protobuf("auth-svc", ["with a token"])
    otlp = {"Content-Type": "application/x-protobuf"}
    r = httpx.post(f"{srv.otlp_url}/v1/logs", content=body, headers=otlp, timeout=10)
    assert r.status_code == 401 and "Authorization: Bearer" in r.json()["message"]
    r = httpx.post(f"{srv.otlp_url}/v1/logs", content=body, headers={**otlp, "Authorization": f"Bearer {SECRET}"})
    assert r.status_code == 200

    # This user's stdio bridges and CLI reach the owner with the local token from owner.json (0600).
    assert (srv.data_dir / "owner.json").stat().st_mode & 0o077 == 0
    bridge = StdioServerParameters(command=str(OBSMCP), args=["serve", "--data-dir", str(srv.data_dir)])
    async with Client(bridge) as bridged:
        assert "search_logs" in {t.name for t in (await bridged.list_tools()).tools}
    cli = run_cli("tool", "search_logs", "service=auth-svc", "--json", "--data-dir", str(srv.data_dir))
    assert cli.returncode == 0, cli.stderr
    assert json.loads(cli.stdout)["total"] == 1

    audit = (srv.data_dir / "audit.jsonl").read_text()
    first = json.loads(audit.splitlines()[0])
    assert first["identity"] == "ci-bot" and first["tool"] == "search_logs" and first["outcome"] == "ok"
    assert first["arguments"]["query"].startswith("password=[REDACTED") and "hunter2" not in audit
    assert '"identity":"local"' in audit  # the CLI call
    logs = srv.log_text() + audit
    assert SECRET not in logs


# -- OAuth 2.1 resource server over HTTP --------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.anyio
async def test_oauth_jwt_tokens_and_rfc9728_metadata(server_factory: Any, issuer: Issuer) -> None:
    srv = server_factory(
        env={
            **FAST,
            "OBSMCP_AUTH_JWKS_URL": issuer.url,
            "OBSMCP_AUTH_ISSUER": ISSUER,
            "OBSMCP_AUTH_REQUIRED_SCOPES": "obs:read",
        }
    )
    aud = srv.mcp_url  # the default audience: the resource URL
    async with (
        httpx2.AsyncClient(headers={"Authorization": f"Bearer {issuer.token(aud)}"}, timeout=30) as http,
        Client(streamable_http_client(srv.mcp_url, http_client=http)) as client,
    ):
        r = await call_tool(client, "list_services")
        assert r.structured_content["services"] == []

    metadata_url = f"{srv.base_url}/.well-known/oauth-protected-resource/mcp"
    now = int(time.time())
    refused = {
        "missing": None,
        "expired": issuer.token(aud, exp=now - 3600, iat=now - 7200),
        "wrong issuer": issuer.token(aud, iss="http://127.0.0.1/other"),
        "wrong audience": issuer.token("http://127.0.0.1:1/mcp"),
        "bad signature": issuer.token(aud, key=issuer.other_key),
    }
    for why, token in refused.items():
        headers = {**ACCEPT, **({"Authorization": f"Bearer {token}"} if token else {})}
        r = httpx.post(srv.mcp_url, json=INIT, headers=headers, timeout=10)
        assert r.status_code == 401, why
        assert f'resource_metadata="{metadata_url}"' in r.headers["WWW-Authenticate"], why
    no_scope = issuer.token(aud, scope="other")
    r = httpx.post(srv.mcp_url, json=INIT, headers={**ACCEPT, "Authorization": f"Bearer {no_scope}"}, timeout=10)
    assert r.status_code == 403 and "insufficient_scope" in r.headers["WWW-Authenticate"]

    meta = httpx.get(metadata_url, timeout=10).json()
    assert meta["resource"] == srv.mcp_url
    assert meta["authorization_servers"] == [ISSUER]
    assert meta["scopes_supported"] == ["obs:read"] and meta["bearer_methods_supported"] == ["header"]
    assert issuer.token(aud) not in srv.log_text()
