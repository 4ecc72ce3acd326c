"""Who may call obsmcp over HTTP: static bearer tokens and OAuth 2.1 resource-server tokens (JWT + JWKS).

Both are `TokenVerifier`s of the MCP SDK (`async verify_token(token) -> AccessToken | None`), combined into
one: the SDK's bearer middleware calls it for every request to /mcp, answers 401 with `WWW-Authenticate`
(pointing at the RFC 9728 metadata when OAuth is configured) and puts the `AccessToken` in the request scope,
where `obsmcp.access` reads the caller's identity for the rate limit and the audit log.

Tokens are only read from the Authorization header (never a URL), never logged, and never kept: the
`AccessToken` handed on carries a fingerprint instead of the token, so nothing downstream can log it or pass
it to a backend (MCP forbids token passthrough).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import ipaddress
import secrets
import stat
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import anyio
import httpx2
import jwt
import structlog
from mcp.client._transport import TransportStreams
from mcp.client.streamable_http import streamable_http_client
from mcp.server.auth.provider import AccessToken, TokenVerifier
from mcp.server.auth.routes import build_resource_metadata_url
from mcp.server.auth.settings import AuthSettings
from pydantic import AnyHttpUrl
from starlette.datastructures import Headers
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from obsmcp import metrics
from obsmcp.config import ConfigError, Settings

log = structlog.get_logger("obsmcp.auth")

# Asymmetric algorithms only: an HMAC algorithm would let anyone holding the public JWKS forge tokens.
JWT_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")
JWKS_TIMEOUT_S = 5.0
# The key set is cached this long; a token signed by an unknown key forces one refetch at most every 30 s
# (PyJWKClient's cooldown), so forged `kid`s cannot make obsmcp hammer the authorization server.
JWKS_CACHE_S = 300.0
CLOCK_LEEWAY_S = 30
MIN_TOKEN_CHARS = 16
LOCAL_IDENTITY = "local"
TOKEN_HINT = "python -c 'import secrets; print(secrets.token_urlsafe(32))'"


def fingerprint(token: str) -> str:
    """What stands for a token wherever one is needed: enough to tell two tokens apart, useless to replay."""
    return "sha256:" + hashlib.sha256(token.encode()).hexdigest()[:16]


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def auth_configured(settings: Settings) -> bool:
    return bool(settings.auth_token or settings.auth_token_file or settings.auth_jwks_url)


# -- static bearer tokens ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _StaticEntry:
    name: str
    digest: bytes


def parse_token_line(line: str, default_name: str) -> tuple[str, str] | None:
    """ "name:token" or "token" -> (name, token); None for blank lines and # comments."""
    text = line.strip()
    if not text or text.startswith("#"):
        return None
    name, sep, token = text.partition(":")
    if not sep:
        return default_name, text
    return name.strip(), token.strip()


class StaticTokenVerifier:
    """Accepts configured tokens, compared in constant time (as SHA-256 digests, so a token's length does not
    leak either); every entry is compared on every call, so timing does not tell which one matched."""

    def __init__(self, tokens: Mapping[str, str], scopes: Sequence[str] = ()) -> None:
        """tokens: token -> name of the caller."""
        self._entries = [_StaticEntry(name, hashlib.sha256(tok.encode()).digest()) for tok, name in tokens.items()]
        self._scopes = list(scopes)

    def __len__(self) -> int:
        return len(self._entries)

    async def verify_token(self, token: str) -> AccessToken | None:
        digest = hashlib.sha256(token.encode()).digest()
        match: _StaticEntry | None = None
        for entry in self._entries:
            if hmac.compare_digest(digest, entry.digest):
                match = entry
        if match is None:
            return None
        return AccessToken(
            token=fingerprint(token), client_id=match.name, subject=match.name, scopes=list(self._scopes)
        )


def load_static_tokens(settings: Settings) -> dict[str, str]:
    """token -> caller name, from auth_token and auth_token_file. Raises ConfigError with the fix."""
    tokens: dict[str, str] = {}
    sources: list[tuple[str, str]] = []
    if settings.auth_token is not None:
        sources.append(("OBSMCP_AUTH_TOKEN", settings.auth_token.get_secret_value()))
    path = settings.auth_token_file
    if path is not None:
        try:
            text = Path(path).expanduser().read_text()
        except OSError as e:
            raise ConfigError(
                f"cannot read the token file {path} (--auth-token-file / OBSMCP_AUTH_TOKEN_FILE): {e.strerror}"
            ) from None
        _warn_if_readable_by_others(Path(path).expanduser())
        for n, line in enumerate(text.splitlines(), 1):
            sources.append((f"{path} line {n}", line))
    for where, line in sources:
        parsed = parse_token_line(line, default_name="")
        if parsed is None:
            continue
        name, token = parsed
        if len(token) < MIN_TOKEN_CHARS:
            raise ConfigError(
                f"the bearer token in {where} is shorter than {MIN_TOKEN_CHARS} characters: use a random one, "
                f"e.g. {TOKEN_HINT}"
            )
        if token in tokens:
            raise ConfigError(f"the bearer token in {where} is given twice: give each caller its own token")
        # An unnamed token is named by its fingerprint, so the audit log can still tell callers apart.
        tokens[token] = name or "token-" + fingerprint(token).removeprefix("sha256:")[:8]
    if (settings.auth_token is not None or path is not None) and not tokens:
        raise ConfigError(f"no bearer token found in {path or 'OBSMCP_AUTH_TOKEN'}: write one token per line")
    return tokens


def _warn_if_readable_by_others(path: Path) -> None:
    try:
        mode = path.stat().st_mode
    except OSError:
        return
    if mode & (stat.S_IRGRP | stat.S_IROTH):
        log.warning("auth_token_file_readable", path=str(path), fix=f"chmod 600 {path}")


# -- OAuth 2.1 resource server: JWTs verified against the authorization server's JWKS ----------------------------


class JWTVerifier:
    """Verifies JWT access tokens: signature (key from the JWKS URL by `kid`), `iss`, `aud`, `exp`, `nbf`.

    Scopes come from `scope` (space-separated, RFC 9068) or `scp` (a list); the caller's identity is `sub`.
    Required scopes are checked by the SDK (403 insufficient_scope), not here, so a token without them is
    told apart from an invalid one.
    """

    def __init__(self, jwks_url: str, issuer: str, audience: str, resource: str | None = None) -> None:
        self.issuer = issuer
        self.audience = audience
        self.resource = resource
        self._jwks = jwt.PyJWKClient(jwks_url, cache_jwk_set=True, lifespan=JWKS_CACHE_S, timeout=JWKS_TIMEOUT_S)

    def _decode(self, token: str) -> dict[str, Any]:
        key = self._jwks.get_signing_key_from_jwt(token)
        claims: dict[str, Any] = jwt.decode(
            token,
            key.key,
            algorithms=list(JWT_ALGORITHMS),
            audience=self.audience,
            issuer=self.issuer,
            leeway=CLOCK_LEEWAY_S,
            options={"require": ["exp", "iss", "aud"]},
        )
        return claims

    async def verify_token(self, token: str) -> AccessToken | None:
        try:
            # PyJWKClient fetches with urllib (blocking): off the event loop.
            claims = await anyio.to_thread.run_sync(self._decode, token)
        except jwt.PyJWKClientConnectionError as e:
            log.warning("auth_jwks_unreachable", error=str(e).splitlines()[0][:200])
            return None
        except (jwt.InvalidTokenError, jwt.PyJWKClientError) as e:
            log.info("auth_jwt_rejected", reason=type(e).__name__, detail=str(e)[:200])
            return None
        scope = claims.get("scope")
        scopes = scope.split() if isinstance(scope, str) else [str(s) for s in claims.get("scp") or []]
        subject = str(claims.get("sub") or claims.get("client_id") or "unknown")
        return AccessToken(
            token=fingerprint(token),
            client_id=str(claims.get("client_id") or claims.get("azp") or subject),
            subject=subject,
            scopes=scopes,
            expires_at=int(claims["exp"]),
            resource=self.resource,
            claims={"iss": claims["iss"]},
        )


def looks_like_jwt(token: str) -> bool:
    return token.count(".") == 2 and token.startswith("ey")


class CombinedVerifier:
    """Static tokens first (a digest compare), then JWTs; the first that accepts the token wins."""

    def __init__(self, static: StaticTokenVerifier | None, jwt_verifier: JWTVerifier | None) -> None:
        self.static = static
        self.jwt = jwt_verifier

    async def verify_token(self, token: str) -> AccessToken | None:
        if self.static is not None:
            found = await self.static.verify_token(token)
            if found is not None:
                return found
        if self.jwt is not None and looks_like_jwt(token):
            return await self.jwt.verify_token(token)
        return None


# -- putting it together -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AuthSetup:
    """What the MCP server is built with when authentication is configured."""

    verifier: TokenVerifier
    settings: AuthSettings
    resource_url: str
    # A random token for this process's own clients (stdio bridges, `obsmcp tool`/`ingest` against the owner):
    # written only to owner.json (mode 0600) in the data directory, so whoever can read the store can use it.
    local_token: str

    @property
    def metadata_url(self) -> str | None:
        """The RFC 9728 metadata URL 401 answers point at (OAuth only)."""
        url = self.settings.resource_server_url
        return str(build_resource_metadata_url(url)) if url else None


def resource_url(settings: Settings) -> str:
    """The URL clients use for /mcp: configured, or derived from the bind address (loopback for wildcards)."""
    if settings.auth_resource_url:
        return settings.auth_resource_url.rstrip("/")
    host = settings.host
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    host = f"[{host}]" if ":" in host else host
    return f"http://{host}:{settings.port}/mcp"


def build_auth(settings: Settings) -> AuthSetup | None:
    """The verifier and SDK auth settings for the configured tokens; None when no authentication is configured.

    Raises ConfigError naming the setting and the fix.
    """
    if not auth_configured(settings):
        return None
    static_tokens = load_static_tokens(settings)
    local_token = secrets.token_urlsafe(32)
    static_tokens[local_token] = LOCAL_IDENTITY
    url = resource_url(settings)
    jwt_verifier: JWTVerifier | None = None
    if settings.auth_jwks_url or settings.auth_issuer:
        jwt_verifier = _jwt_verifier(settings, url)
    scopes = list(settings.auth_required_scopes)
    verifier = CombinedVerifier(StaticTokenVerifier(static_tokens, scopes), jwt_verifier)
    if jwt_verifier is not None:
        # RFC 9728: the protected-resource metadata names the authorization server; 401s point at it.
        auth = AuthSettings(
            issuer_url=AnyHttpUrl(jwt_verifier.issuer),
            resource_server_url=AnyHttpUrl(url),
            required_scopes=scopes or None,
            validate_token_resource=False,  # JWTVerifier checks `aud` itself
        )
    else:
        # Static tokens only: there is no authorization server to advertise, so no RFC 9728 metadata
        # (resource_server_url None); issuer_url is required by the SDK's model but published nowhere then.
        auth = AuthSettings(
            issuer_url=AnyHttpUrl(url),
            resource_server_url=None,
            required_scopes=scopes or None,
            validate_token_resource=False,
        )
    return AuthSetup(verifier, auth, url, local_token)


def _jwt_verifier(settings: Settings, url: str) -> JWTVerifier:
    jwks, issuer = settings.auth_jwks_url, settings.auth_issuer
    if not jwks or not issuer:
        raise ConfigError(
            "OAuth needs both OBSMCP_AUTH_JWKS_URL (the authorization server's JWKS) and OBSMCP_AUTH_ISSUER "
            "(the exact `iss` of its tokens): set the missing one"
        )
    for name, value in (("OBSMCP_AUTH_JWKS_URL", jwks), ("OBSMCP_AUTH_ISSUER", issuer)):
        parsed = urlparse(value)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise ConfigError(f"{name}={value!r} is not an http(s) URL")
        if parsed.scheme != "https" and not is_loopback(parsed.hostname):
            raise ConfigError(f"{name}={value!r} must use https (plain http is accepted for loopback only)")
    if not settings.auth_resource_url and settings.host in ("0.0.0.0", "::", ""):
        raise ConfigError(
            f"with OAuth on {settings.host}, set OBSMCP_AUTH_RESOURCE_URL to the URL clients use for the MCP "
            "endpoint (e.g. https://obsmcp.example.com/mcp): it is the RFC 9728 resource and the default audience"
        )
    return JWTVerifier(jwks, issuer, settings.auth_audience or url, resource=url)


def require_auth_beyond_loopback(settings: Settings, *, mcp_http: bool) -> None:
    """Refuse to listen beyond loopback without authentication (MCP over HTTP and the OTLP receivers alike).

    Raises ConfigError that says how to enable authentication.
    """
    listeners = [
        what
        for what, on in (
            (f"MCP HTTP :{settings.port}", mcp_http),
            (f"OTLP/HTTP :{settings.otlp_port}", settings.otlp_port != 0),
            (f"OTLP/gRPC :{settings.otlp_grpc_port}", settings.otlp_grpc_port != 0),
        )
        if on
    ]
    if auth_configured(settings) and settings.otlp_grpc_port:
        raise ConfigError(
            "OTLP/gRPC does not check bearer tokens yet, so with authentication configured it would be the one "
            "open door: set --otlp-grpc-port 0 and send OTLP over HTTP (exporters take an Authorization header, "
            "e.g. OTEL_EXPORTER_OTLP_HEADERS='Authorization=Bearer%20<token>')"
        )
    if is_loopback(settings.host) or not listeners or auth_configured(settings):
        return
    raise ConfigError(
        f"refusing to listen on {settings.host} ({', '.join(listeners)}) without authentication: anyone who "
        "can reach that address could read and write your telemetry. Enable a bearer token with "
        f"--auth-token-file FILE (one token per line, e.g. from {TOKEN_HINT}) or OBSMCP_AUTH_TOKEN, or OAuth "
        "with OBSMCP_AUTH_JWKS_URL and OBSMCP_AUTH_ISSUER; or bind --host 127.0.0.1"
    )


def bearer_headers(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


@contextlib.asynccontextmanager
async def mcp_client_streams(url: str, token: str | None) -> AsyncIterator[TransportStreams]:
    """An MCP client transport (streamable HTTP) to an obsmcp server, sending its bearer token if it has one:
    how this user's stdio bridges and CLI reach the server that owns the store (token from owner.json)."""
    timeout = httpx2.Timeout(30.0, read=300.0)  # the SDK's defaults: a response stream may stay open long
    async with (
        httpx2.AsyncClient(headers=bearer_headers(token), timeout=timeout) as http,
        streamable_http_client(url, http_client=http) as streams,
    ):
        yield streams


# -- the HTTP guard in front of every listener -----------------------------------------------------------------

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]")
# RFC 6750 §2.3 names a query parameter for tokens; MCP forbids it (URLs end up in logs and proxies).
TOKEN_QUERY_PARAMS = ("access_token", "token")


def _split_host(value: str) -> tuple[str, str | None]:
    """ "name:port" / "[v6]:port" / "name" -> (lowercased name, port or None)."""
    value = value.strip().lower()
    if value.startswith("["):
        name, _, rest = value.partition("]")
        return name + "]", rest[1:] if rest.startswith(":") else None
    name, sep, port = value.rpartition(":")
    return (name, port) if sep and ":" not in name else (value, None)


class HostPolicy:
    """Which Host and Origin headers are accepted (DNS rebinding protection, MCP's Origin rule).

    Loopback names are always accepted (a rebinding attack always carries the attacker's name), plus
    `allowed_hosts`, the bind address when it is a specific one, and the host of `auth_resource_url`. A pattern
    without a port accepts any port; "name:*" too. On a wildcard bind with none of these configured the Host
    cannot be checked (any name may point here); then an Origin must match the Host (same origin).
    """

    def __init__(self, settings: Settings) -> None:
        patterns = [*LOOPBACK_HOSTS, *settings.allowed_hosts]
        bind = settings.host
        if bind not in ("0.0.0.0", "::", "") and not is_loopback(bind):
            patterns.append(f"[{bind}]" if ":" in bind else bind)
        if settings.auth_resource_url:
            parsed = urlparse(settings.auth_resource_url)
            if parsed.hostname:
                patterns.append(parsed.netloc.rpartition("@")[2])
        self.hosts = [_split_host(p) for p in patterns]
        self.check_host = bind not in ("0.0.0.0", "::", "") or bool(
            settings.allowed_hosts or settings.auth_resource_url
        )
        self.origins = [o.rstrip("/").lower() for o in settings.allowed_origins]

    def host_ok(self, host: str | None) -> bool:
        if not self.check_host:
            return True
        if not host:
            return False
        name, port = _split_host(host)
        return any(n == name and (p is None or p == "*" or p == port) for n, p in self.hosts)

    def origin_ok(self, origin: str | None, host: str | None) -> bool:
        if not origin:
            return True  # not a browser, or a same-origin GET
        origin = origin.rstrip("/").lower()
        for allowed in self.origins:
            if origin == allowed or (allowed.endswith(":*") and origin.startswith(allowed[:-1])):
                return True
        parsed = urlparse(origin)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            return False  # "null" (sandboxed frames, file://) and other opaque origins
        if not self.check_host:
            return parsed.netloc == (host or "").lower()
        return self.host_ok(parsed.netloc)


class HTTPGuard:
    """ASGI middleware in front of each obsmcp listener (the MCP port and the OTLP port).

    421 for a Host and 403 for an Origin this server does not answer to; 400 for a token in the URL; and, when
    authentication is configured, 401 for OTLP requests (/v1/...) without a valid bearer token. The SDK
    authenticates /mcp itself; its 401s and 403s are counted here.
    """

    def __init__(
        self,
        app: ASGIApp,
        policy: HostPolicy,
        verifier: TokenVerifier | None = None,
        resource_metadata_url: str | None = None,
    ) -> None:
        self.app = app
        self.policy = policy
        self.verifier = verifier
        self.resource_metadata_url = resource_metadata_url

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        client = scope.get("client")
        address = str(client[0]) if client else "unknown"
        refusal = self._refusal(scope, headers)
        if refusal is not None:
            reason, response = refusal
            metrics.HTTP_REJECTED.labels(reason).inc()
            log.info("http_rejected", reason=reason, path=scope["path"], client=address)
            await response(scope, receive, send)
            return
        if self.verifier is not None and scope["path"].startswith("/v1/"):
            token = _bearer(headers)
            if token is None or await self.verifier.verify_token(token) is None:
                metrics.HTTP_REJECTED.labels("auth").inc()
                log.info("http_rejected", reason="auth", path=scope["path"], client=address)
                await self._otlp_unauthorized(token is None)(scope, receive, send)
                return

        async def counting_send(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] in (401, 403):
                metrics.HTTP_REJECTED.labels("auth").inc()
                log.info("http_rejected", reason="auth", path=scope["path"], client=address, status=message["status"])
            await send(message)

        await self.app(scope, receive, counting_send)

    def _refusal(self, scope: Scope, headers: Headers) -> tuple[str, Response] | None:
        host = headers.get("host")
        if not self.policy.host_ok(host):
            return "host", PlainTextResponse(
                f"Invalid Host header {host!r}: this server answers to loopback names and the allowed hosts "
                "(set OBSMCP_ALLOWED_HOSTS to add a name)",
                status_code=421,
            )
        if not self.policy.origin_ok(headers.get("origin"), host):
            return "host", PlainTextResponse(
                "Invalid Origin header: cross-origin requests are refused (set OBSMCP_ALLOWED_ORIGINS to allow "
                "a web client)",
                status_code=403,
            )
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        if any(name in query for name in TOKEN_QUERY_PARAMS):
            return "auth", PlainTextResponse(
                "A token in the URL is refused (URLs end up in logs and proxies): send it in the Authorization "
                "header, 'Authorization: Bearer <token>'",
                status_code=400,
            )
        return None

    def _otlp_unauthorized(self, missing: bool) -> Response:
        params = ['realm="obsmcp"', 'error="invalid_token"']
        if self.resource_metadata_url:
            params.append(f'resource_metadata="{self.resource_metadata_url}"')
        what = "no bearer token" if missing else "the bearer token is not valid"
        return JSONResponse(
            {  # OTLP error body: google.rpc.Status with code 16 (UNAUTHENTICATED)
                "code": 16,
                "message": f"OTLP ingest needs authentication here, and {what}: send 'Authorization: Bearer "
                "<token>' (collector exporter `headers`, or OTEL_EXPORTER_OTLP_HEADERS)",
            },
            status_code=401,
            headers={"WWW-Authenticate": "Bearer " + ", ".join(params)},
        )


def _bearer(headers: Headers) -> str | None:
    value = headers.get("authorization", "")
    scheme, _, token = value.partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None
