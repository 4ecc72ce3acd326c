"""HTTP routes of the status page: `/` for people (JSON for programs), its JSON, charts, agent views, assets.

Every route sits behind the listener's HTTPGuard (Host/Origin, no tokens in URLs). With authentication
configured, everything that shows telemetry needs a valid bearer token: in the Authorization header (scripts,
a proxy that adds it), or in the cookie that `POST /login` sets after checking a token typed into the page
(HttpOnly, SameSite=Strict, so other sites can neither read it nor send it). The JSON index at `/` stays
public, as before. Store reads and chart rendering run in worker threads, never on the event loop.
"""

from __future__ import annotations

import json
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

import anyio
import structlog
from mcp.server.mcpserver.exceptions import ToolError, UnexpectedToolError
from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from obsmcp.access import RateLimiter, ToolCallGuard
from obsmcp.redaction import redactor_for
from obsmcp.resolve import AmbiguousServiceError, ServiceNotFoundError
from obsmcp.timerange import TimeRangeError
from obsmcp.tools import charts as charts_tool
from obsmcp.tools.context import ToolInputError
from obsmcp.web import html
from obsmcp.web.status import (
    Section,
    StatusData,
    check_window,
    choose_service,
    collect_alerts,
    collect_errors,
    collect_patterns,
    collect_services,
    collect_slos,
    section,
)

if TYPE_CHECKING:
    from obsmcp.runtime import Runtime

log = structlog.get_logger("obsmcp.web")

COOKIE = "obsmcp_session"
COOKIE_MAX_AGE_S = 12 * 3600
CHART_CACHE_S = 30  # a chart is redrawn at most this often per (service, kind, window): matplotlib takes ~0.5 s
CHART_CACHE_SIZE = 32
# No inline script or style anywhere; images are same-origin PNGs, or data: PNGs (render_chart's in an agent view).
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    # same-origin, not no-referrer: with no-referrer Chrome sends `Origin: null` on form posts, which HTTPGuard refuses.
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
}
_STATIC_TYPES = {".css": "text/css; charset=utf-8", ".js": "text/javascript; charset=utf-8", ".svg": "image/svg+xml"}
# The tools the page links to ("view as agent"): the only ones /view runs. Not every read-only tool: query_sql or
# create_dashboard (writes files under data_dir) have no business behind a GET.
VIEW_TOOLS = frozenset(
    {
        "list_services",
        "list_alerts",
        "render_chart",
        "slo_report",
        "investigate",
        "find_bottlenecks",
        "find_errors",
        "get_error_details",
        "log_patterns",
    }
)
_USER_ERRORS = (ToolInputError, TimeRangeError, ServiceNotFoundError, AmbiguousServiceError)


def wants_html(request: Request) -> bool:
    """A browser navigating here (Accept names text/html); programs (Accept */* or JSON) keep the JSON index."""
    accept = request.headers.get("accept", "").lower()
    return "text/html" in accept


def _static_files() -> dict[str, tuple[bytes, str]]:
    root = resources.files("obsmcp.web") / "static"
    out: dict[str, tuple[bytes, str]] = {}
    for item in root.iterdir():
        suffix = "." + item.name.rsplit(".", 1)[-1]
        if item.is_file() and suffix in _STATIC_TYPES:
            out[item.name] = (item.read_bytes(), _STATIC_TYPES[suffix])
    return out


def _page(body: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(body, status_code=status, headers={**SECURITY_HEADERS, "Cache-Control": "no-store"})


def _json(body: Any, status: int = 200) -> JSONResponse:
    return JSONResponse(body, status_code=status, headers={**SECURITY_HEADERS, "Cache-Control": "no-store"})


def _coerce(name: str, raw: str, schema: dict[str, Any]) -> Any:
    """A query-string value as the type the tool's input schema asks for."""
    types: set[str] = set()
    for option in [schema, *schema.get("anyOf", [])]:
        t = option.get("type")
        types.update([t] if isinstance(t, str) else t or [])
    if "string" in types:
        return raw
    try:
        if "integer" in types:
            return int(raw)
        if "number" in types:
            return float(raw)
        if "boolean" in types:
            if raw.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(raw)
            return raw.lower() in ("true", "1", "yes")
        if types & {"object", "array"}:
            return json.loads(raw)
    except ValueError:
        raise ToolInputError(f"{name}={raw!r} is not a {'/'.join(sorted(types))}") from None
    return raw


class StatusRoutes:
    def __init__(self, rt: Runtime, index: Callable[[], dict[str, Any]]) -> None:
        self.rt = rt
        self.index = index
        self.static = _static_files()
        s = rt.settings
        self.limiter = RateLimiter(s.rate_limit_per_client, s.rate_limit_burst)
        self._charts: OrderedDict[tuple[str, str, str, int], bytes] = OrderedDict()

    def routes(self) -> list[Route]:
        return [
            Route("/", self.root, methods=["GET"]),
            Route("/api/index", self.api_index, methods=["GET"]),
            Route("/api/status", self.guarded(self.api_status), methods=["GET"]),
            Route("/status/chart", self.guarded(self.chart), methods=["GET"]),
            Route("/view/{tool}", self.guarded(self.view), methods=["GET"]),
            Route("/static/{name}", self.asset, methods=["GET"]),
            Route("/login", self.login, methods=["POST"]),
            Route("/logout", self.logout, methods=["POST"]),
        ]

    # -- access -------------------------------------------------------------------------------------------------

    async def authorized(self, request: Request) -> bool:
        auth = self.rt.auth
        if auth is None:
            return True
        scheme, _, value = request.headers.get("authorization", "").partition(" ")
        token = value.strip() if scheme.lower() == "bearer" else request.cookies.get(COOKIE, "")
        return bool(token) and await self._valid(token)

    async def _valid(self, token: str) -> bool:
        auth = self.rt.auth
        assert auth is not None
        access = await auth.verifier.verify_token(token)
        required = auth.settings.required_scopes or []
        return access is not None and all(scope in access.scopes for scope in required)

    def _unauthorized(self, request: Request) -> Response:
        headers = {"WWW-Authenticate": 'Bearer realm="obsmcp"'}
        if wants_html(request):
            body = html.message_page(
                "sign in",
                "This server requires authentication: enter a bearer token it accepts (from OBSMCP_AUTH_TOKEN or "
                "OBSMCP_AUTH_TOKEN_FILE, or an OAuth access token).",
                form=html.login_form(_next_path(request)),
            )
            r: Response = _page(body, 401)
        else:
            r = _json({"error": "authentication required: send 'Authorization: Bearer <token>'"}, 401)
        r.headers.update(headers)
        return r

    def guarded(self, handler: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
        async def run(request: Request) -> Response:
            # Another site's <img>/<a> sends no Origin header on a GET, but browsers do send Sec-Fetch-Site.
            if request.headers.get("sec-fetch-site", "").lower() == "cross-site":
                return Response(
                    "refused: this page's data is not served to other sites (Sec-Fetch-Site: cross-site); "
                    "open the status page on this server instead",
                    status_code=403,
                    media_type="text/plain",
                    headers=SECURITY_HEADERS,
                )
            if not await self.authorized(request):
                limited = self._limited(request)  # failed checks count against the client's rate limit
                return limited if limited is not None else self._unauthorized(request)
            return await handler(request)

        return run

    def _limited(self, request: Request) -> Response | None:
        client = request.client.host if request.client else "unknown"
        wait = self.limiter.acquire(f"web:{client}")
        if wait <= 0:
            return None
        return Response(
            f"too many requests: retry in {max(wait, 0.1):.1f} s",
            status_code=429,
            headers={**SECURITY_HEADERS, "Retry-After": str(max(1, round(wait)))},
        )

    # -- routes -------------------------------------------------------------------------------------------------

    async def root(self, request: Request) -> Response:
        if not wants_html(request):
            return JSONResponse(self.index())
        if (limited := self._limited(request)) is not None:
            return limited
        if not await self.authorized(request):
            return self._unauthorized(request)
        t0 = time.perf_counter()
        try:
            data = await self.collect(request)
        except _USER_ERRORS as e:
            return _page(html.message_page("status", str(e)), 400)
        elapsed = (time.perf_counter() - t0) * 1000
        log.debug("status_page", ms=round(elapsed, 1), service=data.service, window=data.window)
        return _page(
            html.status_page(
                data,
                alert_tool=self._has_tool("list_alerts"),
                elapsed_ms=elapsed,
                signed_in=self.rt.auth is not None and COOKIE in request.cookies,
            )
        )

    async def api_index(self, _: Request) -> Response:
        return JSONResponse(self.index())

    async def api_status(self, request: Request) -> Response:
        if (limited := self._limited(request)) is not None:
            return limited
        try:
            data = await self.collect(request)
        except _USER_ERRORS as e:
            return _json({"error": str(e)}, 400)
        return _json(data.as_json())

    async def collect(self, request: Request) -> StatusData:
        """Every section at once, each in a worker thread (DuckDB and the tools release the GIL)."""
        ctx = self.rt.ctx
        window = check_window(request.query_params.get("window"))
        wanted = request.query_params.get("service") or None
        explicit = await anyio.to_thread.run_sync(self._resolve, wanted) if wanted else None
        engine = getattr(self.rt, "alerts", None)
        results: dict[str, Section[Any]] = {}

        async def run(name: str, fn: Callable[[], Section[Any]]) -> None:
            results[name] = await anyio.to_thread.run_sync(fn)

        redact = redactor_for(ctx.settings)
        async with anyio.create_task_group() as tg:
            tg.start_soon(run, "services", lambda: collect_services(ctx, window))
            tg.start_soon(run, "slos", lambda: collect_slos(ctx, window))
            tg.start_soon(run, "alerts", lambda: section("alerts", lambda: collect_alerts(engine, redact)))
            tg.start_soon(run, "errors", lambda: collect_errors(ctx, explicit, window))
            tg.start_soon(run, "patterns", lambda: collect_patterns(ctx, explicit, window))
        chosen = choose_service(explicit, results["services"].value, results["slos"].value, results["alerts"].value)
        return StatusData(
            window=window,
            service=chosen,
            service_explicit=explicit is not None,
            services=results["services"],
            slos=results["slos"],
            alerts=results["alerts"],
            errors=results["errors"],
            patterns=results["patterns"],
        )

    def _resolve(self, service: str) -> str | None:
        return self.rt.ctx.resolve_fresh(service)

    async def chart(self, request: Request) -> Response:
        q = request.query_params
        service, kind = q.get("service") or "", q.get("kind") or "red"
        try:
            window = check_window(q.get("window"))
            if kind not in ("red", "latency_histogram"):
                raise ToolInputError(f"kind={kind!r}: the status page draws red or latency_histogram")
            if not service:
                raise ToolInputError("pass service= (a service from the status page)")
            key = (service, kind, window, int(time.time() // CHART_CACHE_S))
            png = self._charts.get(key)
            if png is None:
                if (limited := self._limited(request)) is not None:
                    return limited
                png = (
                    await anyio.to_thread.run_sync(
                        lambda: charts_tool.render_chart(self.rt.ctx, None, service, kind, window)
                    )
                )[2]
                self._charts[key] = png
                while len(self._charts) > CHART_CACHE_SIZE:
                    self._charts.popitem(last=False)
        except _USER_ERRORS as e:
            return Response(str(e), status_code=404, media_type="text/plain", headers=SECURITY_HEADERS)
        return Response(
            png,
            media_type="image/png",
            headers={**SECURITY_HEADERS, "Cache-Control": f"private, max-age={CHART_CACHE_S}"},
        )

    async def view(self, request: Request) -> Response:
        """A read-only tool's exact text answer, through the MCP server in this process (same budget, fences and
        redaction as over MCP)."""
        name = request.path_params["tool"]
        tool = next((t for t in self.rt.mcp._tool_manager.list_tools() if t.name == name), None)
        if tool is None or name not in VIEW_TOOLS or tool.annotations is None or not tool.annotations.read_only_hint:
            served = sorted(
                t.name
                for t in self.rt.mcp._tool_manager.list_tools()
                if t.name in VIEW_TOOLS and t.annotations is not None and t.annotations.read_only_hint
            )
            return _page(
                html.message_page(
                    "agent view", f"no read-only tool named {name!r} is served; these are: {', '.join(served)}"
                ),
                404,
            )
        props: dict[str, Any] = tool.parameters.get("properties", {}) if isinstance(tool.parameters, dict) else {}
        try:
            args = {}
            for key, raw in request.query_params.multi_items():
                if key not in props:
                    raise ToolInputError(f"{key!r} is not an argument of {name}: use some of {', '.join(props)}")
                args[key] = _coerce(key, raw, props[key])
        except ToolInputError as e:
            return _page(html.message_page("agent view", str(e)), 400)
        started = time.perf_counter()
        if (limited := self._limited(request)) is not None:
            self._audit(request, name, args, "rate_limited", started)
            return limited
        images: list[str] = []
        outcome = "error"
        try:
            result = await self.rt.mcp.call_tool(name, args)
            content = getattr(result, "content", [])
            text = "\n".join(c.text for c in content if getattr(c, "type", "") == "text")
            # Image content (render_chart) as the agent gets it: base64 PNG, shown inline (CSP allows data: images).
            images = [
                str(c.data)
                for c in content
                if getattr(c, "type", "") == "image" and getattr(c, "mime_type", "") == "image/png"
            ]
            is_error = bool(getattr(result, "is_error", False))
            outcome = "error" if is_error else "ok"
        except UnexpectedToolError as e:
            is_error = True
            if isinstance(e.__cause__, ValidationError):
                text = f"the arguments do not match {name}'s input schema: {e.__cause__.errors()[0].get('msg', '')}"
            else:
                log.warning("agent_view_failed", tool=name, error=type(e.__cause__).__name__)
                text = f"{name} failed with an internal error; it is logged on the server"
        except ToolError as e:
            is_error, text = True, str(e)
        finally:
            self._audit(request, name, args, outcome, started)
        return _page(html.agent_view(name, args, text, is_error=is_error, images=images), 200)

    def _audit(self, request: Request, tool: str, args: dict[str, Any], outcome: str, started: float) -> None:
        """The audit line ToolCallGuard writes for an MCP tool call, for a call made through /view."""
        guard = next((m for m in self.rt.mcp.middleware if isinstance(m, ToolCallGuard)), None)
        if guard is None:
            return
        address = request.client.host if request.client else "unknown"
        guard.record_call(f"web:{address}", address, tool, {"arguments": args}, outcome, started)

    async def asset(self, request: Request) -> Response:
        found = self.static.get(request.path_params["name"])
        if found is None:
            return Response("not found", status_code=404, media_type="text/plain", headers=SECURITY_HEADERS)
        body, content_type = found
        return Response(
            body, headers={**SECURITY_HEADERS, "Content-Type": content_type, "Cache-Control": "max-age=300"}
        )

    async def login(self, request: Request) -> Response:
        if self.rt.auth is None:
            return _redirect("/")
        if (limited := self._limited(request)) is not None:
            return limited
        body = (await request.body())[:8192].decode("utf-8", "replace")
        form = parse_qs(body)
        token = (form.get("token") or [""])[0].strip()
        target = _safe_next((form.get("next") or ["/"])[0])
        if not token or not await self._valid(token):
            log.info("status_login_refused", client=request.client.host if request.client else "unknown")
            return _page(
                html.message_page("sign in", "that token is not accepted here", form=html.login_form(target)), 401
            )
        r = _redirect(target)
        r.set_cookie(
            COOKIE,
            token,
            max_age=COOKIE_MAX_AGE_S,
            path="/",
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https" or request.headers.get("x-forwarded-proto") == "https",
        )
        return r

    async def logout(self, _: Request) -> Response:
        r = _redirect("/")
        r.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")
        return r

    def _has_tool(self, name: str) -> bool:
        return any(t.name == name for t in self.rt.mcp._tool_manager.list_tools())


def _redirect(path: str) -> Response:
    return Response(status_code=303, headers={**SECURITY_HEADERS, "Location": path, "Cache-Control": "no-store"})


def _next_path(request: Request) -> str:
    path = request.url.path
    return path + ("?" + request.url.query if request.url.query else "")


def _safe_next(target: str) -> str:
    """Only a path on this server (no scheme, host or '//' that would leave it)."""
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


def status_routes(rt: Runtime, index: Callable[[], dict[str, Any]]) -> list[Route]:
    """The status page's routes for one listener; `index` is the JSON answer `/` gives programs."""
    return StatusRoutes(rt, index).routes()
