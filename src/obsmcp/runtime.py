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
from typing import Any

import structlog
import uvicorn
from mcp.server.mcpserver import MCPServer
from mcp.server.transport_security import TransportSecuritySettings
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from obsmcp import __version__
from obsmcp.config import Settings
from obsmcp.ingest.http import otlp_routes
from obsmcp.ingest.receiver import Receiver
from obsmcp.server import build_server
from obsmcp.store.database import Database, StoreLockedError
from obsmcp.store.writer import StoreWriter
from obsmcp.tools.context import ToolContext

log = structlog.get_logger("obsmcp.runtime")

OWNER_FILE = "owner.json"
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


class PortInUseError(OSError):
    pass


@dataclass
class Runtime:
    settings: Settings
    db: Database
    writer: StoreWriter
    receiver: Receiver
    ctx: ToolContext
    mcp: MCPServer[Any]
    endpoints: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def open(cls, settings: Settings, *, in_memory: bool = False) -> Runtime:
        """Open (and own) the store. Raises StoreLockedError when another process owns it."""
        db = Database(None if in_memory else settings.store_path, query_timeout_s=settings.query_timeout_s)
        writer = StoreWriter(
            db,
            batch_rows=settings.ingest_batch_rows,
            flush_ms=settings.ingest_flush_ms,
            max_pending_rows=settings.ingest_queue_max_rows,
            retention_days=settings.retention_days,
            retention_max_bytes=int(settings.retention_max_gb * 1024**3),
        )
        receiver = Receiver(writer, settings.otlp_max_body_bytes)
        ctx = ToolContext(db, settings)
        return cls(settings, db, writer, receiver, ctx, build_server(ctx))

    def close(self) -> None:
        self.receiver.close()
        self.writer.close()
        self.db.close()
        owner = self.settings.data_dir / OWNER_FILE
        with contextlib.suppress(OSError, ValueError):
            if json.loads(owner.read_text()).get("pid") == os.getpid():
                owner.unlink()

    # -- HTTP apps -----------------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        checks: list[dict[str, Any]] = []
        status = "healthy"
        try:
            self.db.query("SELECT 1")
            checks.append({"name": "store", "status": "ok"})
        except Exception as e:  # the health check reports any failure rather than raising
            checks.append({"name": "store", "status": "fail", "detail": str(e)})
            status = "unhealthy"
        depth = self.writer.pending_rows
        limit = self.settings.ingest_queue_max_rows
        q_ok = depth < 0.8 * limit
        checks.append({"name": "ingest_queue", "status": "ok" if q_ok else "warn", "depth": depth, "limit": limit})
        if not q_ok and status == "healthy":
            status = "degraded"
        return {"status": status, "version": __version__, "checks": checks, "endpoints": self.endpoints}

    def mcp_app(self) -> Starlette:
        host = self.settings.host
        security = None
        if host in LOCAL_HOSTS:
            security = TransportSecuritySettings(
                enable_dns_rebinding_protection=True,
                allowed_hosts=["127.0.0.1:*", "localhost:*", "[::1]:*"],
                allowed_origins=["http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*"],
            )
        app = self.mcp.streamable_http_app(
            streamable_http_path="/mcp",
            stateless_http=self.settings.stateless_http,
            json_response=self.settings.stateless_http,
            transport_security=security,
            host=host,
        )

        async def health(_: Request) -> Response:
            body = self.health()
            return JSONResponse(body, status_code=503 if body["status"] == "unhealthy" else 200)

        async def index(_: Request) -> Response:
            return JSONResponse(
                {
                    "name": "obsmcp",
                    "version": __version__,
                    "mcp": "/mcp (streamable HTTP)",
                    "health": "/health",
                    "otlp_http": self.endpoints.get("otlp_http"),
                    "tools": [t.name for t in self.mcp._tool_manager.list_tools()],
                }
            )

        app.add_route("/health", health, methods=["GET"])
        app.add_route("/", index, methods=["GET"])
        # OTLP is also accepted on the MCP port, for setups that can expose only one port.
        for r in otlp_routes(self.receiver):
            app.router.routes.append(r)
        return app

    def otlp_app(self) -> Starlette:
        return Starlette(routes=otlp_routes(self.receiver))

    def write_owner_file(self) -> None:
        path = self.settings.data_dir / OWNER_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"pid": os.getpid(), **self.endpoints}))
        tmp.chmod(0o600)
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
        yield rt


async def bridge_stdio(mcp_url: str) -> None:
    """Relay MCP messages between this process's stdio and the owning server's streamable HTTP endpoint."""
    import anyio
    from mcp.client.streamable_http import streamable_http_client
    from mcp.server.stdio import stdio_server

    async with stdio_server() as (s_read, s_write):
        try:
            async with streamable_http_client(mcp_url) as streams:
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


__all__ = ["Runtime", "StoreLockedError", "bridge_stdio", "read_owner", "running"]
