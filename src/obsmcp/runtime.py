"""The running server: owns the store, receives OTLP, serves MCP over stdio or streamable HTTP.

Whoever opens the data directory first owns the DuckDB file and the OTLP ports, and records how to reach
it in `owner.json`. A later `obsmcp serve` (another MCP client spawning its own stdio server) finds the
store locked and bridges its stdio to the owner's MCP endpoint instead of failing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio
import structlog
import uvicorn
from mcp.server.mcpserver import MCPServer
from mcp.server.transport_security import TransportSecuritySettings
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from obsmcp import __version__, telemetry
from obsmcp.access import BodyCap
from obsmcp.alerting.engine import AlertEngine
from obsmcp.auth import AuthSetup, HostPolicy, HTTPGuard, build_auth
from obsmcp.config import Settings
from obsmcp.ingest.http import otlp_routes
from obsmcp.ingest.receiver import Receiver
from obsmcp.server import build_server
from obsmcp.store.database import Database, Store, StoreError, StoreLockedError
from obsmcp.store.writer import StoreWriter
from obsmcp.tools.context import ToolContext
from obsmcp.web import status_routes

if TYPE_CHECKING:
    from obsmcp.store.clickhouse_writer import ClickHouseWriter

log = structlog.get_logger("obsmcp.runtime")

OWNER_FILE = "owner.json"


class PortInUseError(OSError):
    pass


@dataclass
class Runtime:
    settings: Settings
    db: Store
    writer: StoreWriter | ClickHouseWriter
    receiver: Receiver
    ctx: ToolContext
    mcp: MCPServer[Any]
    alerts: AlertEngine  # evaluates the alert rules; its loop runs while `running`
    endpoints: dict[str, Any] = field(default_factory=dict)
    auth: AuthSetup | None = None

    @classmethod
    def open(cls, settings: Settings, *, in_memory: bool = False, for_agents: bool = False) -> Runtime:
        """Open (and own) the store. Raises StoreLockedError when another process owns it, ConfigError for
        invalid access settings. for_agents: serve the selected tool set (serve, demo), not every tool."""
        auth = build_auth(settings)
        db: Store
        writer: StoreWriter | ClickHouseWriter
        store_url = settings.store.get_secret_value().strip() if settings.store else ""
        if store_url:  # ClickHouse or chDB (obsmcp.store.clickhouse); in_memory applies to DuckDB only
            from obsmcp.store.clickhouse_writer import open_clickhouse_store

            settings.data_dir.mkdir(parents=True, exist_ok=True)  # owner.json and the audit log still live there
            db, writer = open_clickhouse_store(store_url, settings)
        else:
            duck = Database(None if in_memory else settings.store_path, query_timeout_s=settings.query_timeout_s)
            db = duck
            writer = StoreWriter(
                duck,
                batch_rows=settings.ingest_batch_rows,
                flush_ms=settings.ingest_flush_ms,
                max_pending_rows=settings.ingest_queue_max_rows,
                retention_days=settings.retention_days,
                retention_max_bytes=int(settings.retention_max_gb * 1024**3),
            )
        receiver = Receiver(
            writer,
            settings.otlp_max_body_bytes,
            max_memory_bytes=int(settings.ingest_memory_max_mb * 1024**2),
        )
        try:
            ctx = ToolContext(db, settings)  # builds the remote sources: bad backend configuration fails here
            try:
                alerts = AlertEngine(ctx)
                mcp = build_server(ctx, auth=auth, for_agents=for_agents, alerts=alerts)
            except BaseException:
                ctx.sources.close()
                raise
        except BaseException:
            receiver.close()
            writer.close()
            db.close()
            raise
        return cls(settings, db, writer, receiver, ctx, mcp, alerts, auth=auth)

    def close(self) -> None:
        self.alerts.stop()
        self.receiver.close()
        self.writer.close()
        self.db.close()
        # Backend clients are process-wide: an open circuit must not outlive this runtime in /health.
        self.ctx.sources.close()
        owner = self.settings.data_dir / OWNER_FILE
        with contextlib.suppress(OSError, ValueError):
            if json.loads(owner.read_text()).get("pid") == os.getpid():
                owner.unlink()

    # -- HTTP apps -----------------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        """The /health answer: healthy, degraded (a check warns) or unhealthy (a check fails), with every check.

        Blocking (it commits a probe write): call it from a worker thread.
        """
        s = self.settings
        checks = [
            telemetry.check_store_writable(self.db),
            telemetry.check_ingest_queue(self.writer.pending_rows, s.ingest_queue_max_rows, s.health_queue_warn_share),
            telemetry.check_circuits(),
            telemetry.check_tool_errors(
                telemetry.TOOL_OUTCOMES, s.health_error_window_s, s.health_error_rate, s.health_error_min_calls
            ),
        ]
        return {
            "status": telemetry.overall_status(checks),
            "version": __version__,
            "checks": [c.as_dict() for c in checks],
            "endpoints": self.endpoints,
        }

    def index(self, *, mcp: bool) -> dict[str, Any]:
        """What one HTTP listener serves (the MCP app, or the OTLP-only app with mcp=False)."""
        routes = {
            "/health": "GET: healthy | degraded | unhealthy with the checks behind it (503 when unhealthy)",
            "/metrics": "GET: obsmcp's own metrics, Prometheus text format (OpenMetrics when asked for)",
            "/metrics/json": "GET: the same samples as JSON",
            "/v1/traces, /v1/logs, /v1/metrics": "POST: OTLP/HTTP receiver (protobuf or JSON, optionally gzip)",
            "/ (Accept: text/html)": "GET: the status page for people (this index for programs; also /api/index)",
            "/api/status": "GET: the status page's data as JSON (?window=1h&service=...)",
            "/view/<tool>": "GET: a read-only tool's text answer as an agent sees it (?arguments)",
        }
        if mcp:
            routes = {"/mcp": "MCP over streamable HTTP", **routes}
        return {
            "name": "obsmcp",
            "version": __version__,
            "mcp": "/mcp (streamable HTTP)" if mcp else self.endpoints.get("mcp_url"),
            "health": "/health",
            "metrics": "/metrics",
            "otlp_http": self.endpoints.get("otlp_http"),
            "routes": routes,
            "endpoints": self.endpoints,
            "tools": [t.name for t in self.mcp._tool_manager.list_tools()],
        }

    def ops_routes(self, *, mcp: bool) -> list[Route]:
        """/health, /metrics, /metrics/json and / for one listener; binds this store to the scrape-time gauges."""
        telemetry.watch_store(self.db, self.writer, self.settings.ingest_queue_max_rows)

        async def health(_: Request) -> Response:
            body = await anyio.to_thread.run_sync(self.health)
            return JSONResponse(body, status_code=503 if body["status"] == "unhealthy" else 200)

        async def metrics(request: Request) -> Response:
            # Scrape-time gauges query the store: keep them off the event loop.
            body, content_type = await anyio.to_thread.run_sync(
                telemetry.metrics_exposition, request.headers.get("accept")
            )
            return Response(body, headers={"Content-Type": content_type})

        async def metrics_json(_: Request) -> Response:
            return JSONResponse(await anyio.to_thread.run_sync(telemetry.metrics_json))

        return [
            Route("/health", health, methods=["GET"]),
            Route("/metrics", metrics, methods=["GET"]),
            Route("/metrics/json", metrics_json, methods=["GET"]),
            # `/`: the status page for browsers, this index as JSON for programs (and at /api/index).
            *status_routes(self, lambda: self.index(mcp=mcp)),
        ]

    def mcp_app(self) -> Starlette:
        host = self.settings.host
        # Host/Origin are checked for every route by HTTPGuard (obsmcp.auth), not by the SDK for /mcp alone;
        # the SDK still checks the Content-Type. Bodies are capped by BodyCap with a message that says the fix.
        app = self.mcp.streamable_http_app(
            streamable_http_path="/mcp",
            stateless_http=self.settings.stateless_http,
            json_response=self.settings.stateless_http,
            transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False),
            max_request_body_size=self.settings.mcp_max_body_bytes,
            host=host,
        )
        app.add_middleware(BodyCap, max_bytes=self.settings.mcp_max_body_bytes)
        self._guard(app)

        app.router.routes.extend(self.ops_routes(mcp=True))
        # OTLP is also accepted on the MCP port, for setups that can expose only one port.
        for r in otlp_routes(self.receiver):
            app.router.routes.append(r)
        return app

    def otlp_app(self) -> Starlette:
        # The operations routes are here too: in stdio mode the MCP app listens on an ephemeral port, so the
        # fixed OTLP port is the one a Prometheus scrape config or a health probe can name.
        return self._guard(Starlette(routes=[*otlp_routes(self.receiver), *self.ops_routes(mcp=False)]))

    def _guard(self, app: Starlette) -> Starlette:
        """HTTPGuard outermost: Host/Origin, no tokens in URLs, bearer tokens on OTLP when auth is configured."""
        a = self.auth
        app.add_middleware(
            HTTPGuard,
            policy=HostPolicy(self.settings),
            verifier=a.verifier if a else None,
            resource_metadata_url=a.metadata_url if a else None,
        )
        return app

    def write_owner_file(self) -> None:
        path = self.settings.data_dir / OWNER_FILE
        tmp = path.with_suffix(".tmp")
        owner: dict[str, Any] = {"pid": os.getpid(), **self.endpoints}
        if self.auth:
            owner["token"] = self.auth.local_token  # for this user's bridges and CLI (obsmcp.auth.AuthSetup)
        tmp.unlink(missing_ok=True)
        # Created 0600, never readable by others even for a moment: it may hold the local token.
        with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as f:
            f.write(json.dumps(owner))
        tmp.replace(path)


def read_owner(settings: Settings) -> dict[str, Any] | None:
    try:
        owner = json.loads((settings.data_dir / OWNER_FILE).read_text())
    except (OSError, ValueError):
        return None
    pid = owner.get("pid")
    if not isinstance(pid, int):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass
    return dict(owner)


def _check_port_free(host: str, port: int, what: str, flag: str) -> None:
    if port == 0:
        return
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            raise PortInUseError(
                f"{what} port {host}:{port} is in use by another program: stop it, or choose another with {flag}"
            ) from None


class _EmbeddedServer(uvicorn.Server):
    """uvicorn without its own signal handling: obsmcp runs several servers and stops them together."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@contextlib.asynccontextmanager
async def http_server(app: Any, host: str, port: int) -> AsyncIterator[int]:
    """Run a uvicorn server in the background; yields the bound port (useful with port 0)."""
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=3,
    )
    server = _EmbeddedServer(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            exc = task.exception()
            raise PortInUseError(f"could not start HTTP on {host}:{port}: {exc or 'bind failed (port in use?)'}")
        await asyncio.sleep(0.01)
    bound = server.servers[0].sockets[0].getsockname()[1] if server.servers else port
    try:
        yield int(bound)
    finally:
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await task


def url_host(host: str) -> str:
    if host in ("0.0.0.0", "::", ""):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


@contextlib.asynccontextmanager
async def running(rt: Runtime, *, mcp_http: bool, strict_ports: bool) -> AsyncIterator[Runtime]:
    """Start the listeners an owner runs: OTLP/HTTP, optional OTLP/gRPC, and MCP over HTTP.

    With mcp_http=False (stdio), MCP over HTTP still listens on an ephemeral loopback port so that other
    stdio servers on this data directory can bridge to this one.
    """
    s = rt.settings
    if s.otlp_port or s.otlp_grpc_port or mcp_http:
        await rt.receiver.start_decode_workers(s.ingest_decode_processes)
    async with contextlib.AsyncExitStack() as stack:
        if mcp_http:
            _check_port_free(s.host, s.port, "MCP HTTP", "--port")
            port = await stack.enter_async_context(http_server(rt.mcp_app(), s.host, s.port))
            rt.endpoints["mcp_url"] = f"http://{url_host(s.host)}:{port}/mcp"
        else:
            port = await stack.enter_async_context(http_server(rt.mcp_app(), "127.0.0.1", 0))
            rt.endpoints["mcp_url"] = f"http://127.0.0.1:{port}/mcp"
        if s.otlp_port:
            try:
                _check_port_free(s.host, s.otlp_port, "OTLP/HTTP", "--otlp-port")
                oport = await stack.enter_async_context(http_server(rt.otlp_app(), s.host, s.otlp_port))
                rt.endpoints["otlp_http"] = f"http://{url_host(s.host)}:{oport}"
            except PortInUseError as e:
                if strict_ports:
                    raise
                log.warning("otlp_http_disabled", reason=str(e))
        if s.otlp_grpc_port:
            from obsmcp.ingest.grpc import start_grpc

            try:
                grpc_server = await start_grpc(rt.receiver, s.host, s.otlp_grpc_port)
                stack.push_async_callback(grpc_server.stop, 2)
                rt.endpoints["otlp_grpc"] = f"{url_host(s.host)}:{s.otlp_grpc_port}"
            except OSError as e:
                if strict_ports:
                    raise
                log.warning("otlp_grpc_disabled", reason=str(e))
        rt.write_owner_file()
        from obsmcp.alerting.notify import webhook_notifiers

        mcp_url = rt.endpoints.get("mcp_url")
        for notifier in webhook_notifiers(s, mcp_url.removesuffix("mcp") if mcp_url else None):
            rt.alerts.add_notifier(notifier)
            stack.callback(notifier.close)  # after the engine stopped: queued messages get a last chance
        rt.alerts.start()
        stack.callback(rt.alerts.stop)
        yield rt


async def bridge_stdio(mcp_url: str, token: str | None = None) -> None:
    """Relay MCP messages between this process's stdio and the owning server's streamable HTTP endpoint
    (with the owner's local token from owner.json when it requires authentication)."""
    import anyio
    from mcp.server.stdio import stdio_server

    from obsmcp.auth import mcp_client_streams

    async with stdio_server() as (s_read, s_write):
        try:
            async with mcp_client_streams(mcp_url, token) as streams:
                c_read, c_write = streams[0], streams[1]
                async with anyio.create_task_group() as tg:

                    async def upstream() -> None:
                        async for msg in s_read:
                            if isinstance(msg, Exception):
                                log.warning("bridge_bad_message", error=str(msg))
                                continue
                            await c_write.send(msg)
                        tg.cancel_scope.cancel()

                    async def downstream() -> None:
                        async for msg in c_read:
                            if isinstance(msg, Exception):
                                log.warning("bridge_upstream_error", error=str(msg))
                                continue
                            await s_write.send(msg)

                    tg.start_soon(upstream)
                    tg.start_soon(downstream)
        except Exception as e:  # the HTTP transport failed: the owning server went away
            # stdin is read in a thread that cannot be cancelled, so a normal return would wait for the client
            # forever; exit now so the client sees the connection close instead of a request that never ends.
            first: BaseException = e
            while isinstance(first, BaseExceptionGroup) and first.exceptions:
                first = first.exceptions[0]
            print(
                f"obsmcp: lost the obsmcp server that owns the store ({mcp_url}): {first or type(first).__name__}; "
                "restart the MCP client to reconnect",
                file=sys.stderr,
                flush=True,
            )
            os._exit(1)
        # stdin reached EOF (the client is gone): stdio_server only returns once its write stream is closed.
        await s_write.aclose()


@contextlib.contextmanager
def stop_signal() -> Iterator[asyncio.Event]:
    """An event set on SIGINT or SIGTERM (a clean shutdown: listeners stop, queued writes commit).

    Enter it before telling anyone how to stop the process: a signal that arrives before the handlers are
    installed is lost when the process inherited SIGINT as ignored (started in the background by a script).
    """
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        yield stop
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def data_dir_in_use_message(settings: Settings, owner: dict[str, Any] | None) -> str:
    if owner:
        return (
            f"the store in {settings.data_dir} is owned by obsmcp pid {owner.get('pid')} "
            f"(MCP at {owner.get('mcp_url')}); use that server, stop it, or pass another --data-dir"
        )
    return (
        f"the store {settings.store_path} is locked by another process that is not a running obsmcp "
        "server: stop it, or pass another --data-dir"
    )


__all__ = ["Runtime", "StoreError", "StoreLockedError", "bridge_stdio", "read_owner", "running"]
