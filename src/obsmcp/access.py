"""What a caller may do and what it costs: tool selection, tool-definition size, rate limit, body cap, audit log.

- Tool selection: tools belong to categories; agents get the default set unless `tools` / `disable_tools` say
  otherwise, and tools that change something (readOnlyHint false) only with `enable_writes`.
- Tool definitions are compacted (titles, null defaults, output-schema detail dropped) so that the definitions
  an agent loads into its context stay within TOOL_DEFINITIONS_BUDGET tokens for the default set.
- Over HTTP, each caller (token identity, else client address) gets a token-bucket rate limit on tool calls,
  and every tool call is written to a JSON-lines audit log with the caller's identity (never a token).
"""

from __future__ import annotations

import contextlib
import inspect
import json
import math
import os
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.mcpserver import MCPServer
from mcp.types import CallToolResult, TextContent
from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from obsmcp import metrics
from obsmcp.config import ConfigError, Settings
from obsmcp.result import redact
from obsmcp.sources.config import SIGNALS_BY_KIND

log = structlog.get_logger("obsmcp.access")

# -- tool selection ------------------------------------------------------------------------------------------------

# Every tool belongs to one category (tests/test_tool_definitions.py fails for a tool missing here).
CATEGORIES: dict[str, tuple[str, ...]] = {
    # Raw data: what every question starts from.
    "core": (
        "list_services",
        "search_logs",
        "search_traces",
        "get_trace",
        "list_metrics",
        "query_metrics",
        "find_errors",
        "get_error_details",
        "query_sql",
    ),
    # The incident workflow: investigate, and find_bottlenecks, the next call investigate suggests.
    "investigate": ("investigate", "find_bottlenecks"),
    # Further analyses, on request.
    "analysis": ("slo_report", "log_patterns", "service_map", "detect_anomalies"),
    "charts": ("render_chart",),
    # The MCP servers configured on this machine (obsmcp fleet): on request, not in the default set.
    "fleet": ("list_mcp_servers", "check_mcp_updates"),
    # Grafana dashboards (obsmcp.dashboards): on request, not in the default set; push_dashboard is a write.
    "dashboards": ("create_dashboard", "push_dashboard"),
    # Firing and pending alerts (obsmcp.alerting): what an on-call engineer asks first, in the default set.
    "alerts": ("list_alerts",),
    # Alert rules: on request; create/update/delete_alert_rule and silence_alert are writes.
    "alert_rules": (
        "list_alert_rules",
        "create_alert_rule",
        "update_alert_rule",
        "delete_alert_rule",
        "silence_alert",
    ),
}
# The default set must keep its definitions within TOOL_DEFINITIONS_BUDGET (measured in CI). It is every tool:
# investigate's next calls name the analysis tools, so leaving them out would send agents to tools they lack.
DEFAULT_CATEGORIES = ("core", "investigate", "analysis", "charts", "alerts", "backends")
TOOL_DEFINITIONS_BUDGET = 5000
# A tool missing from CATEGORIES is served on request only (and tests/test_tool_definitions.py fails).
UNCATEGORIZED = "analysis"
# Tools a server has only when remote backends are configured (settings.backends), kept apart from CATEGORIES,
# which lists the tools every server has. In the default set: they cost no tokens where they do not exist.
BACKEND_CATEGORIES: dict[str, tuple[str, ...]] = {"backends": ("backend_status",)}
# Arguments published only when a configured remote backend can answer the tool's signal:
# (tool, argument, signal).
REMOTE_ARGUMENTS = (
    ("list_metrics", "backend", "metrics"),
    ("query_metrics", "backend", "metrics"),
    ("query_metrics", "promql", "metrics"),
    ("search_logs", "backend", "logs"),
    ("search_traces", "backend", "traces"),
    ("get_trace", "backend", "traces"),
    ("find_errors", "backend", "errors"),
    ("get_error_details", "backend", "errors"),
    # Only kinds with a pattern API (Loki's pattern ingester) serve log_patterns: see remote_signals.
    ("log_patterns", "backend", "log_patterns"),
)
PATTERN_KINDS = ("loki",)


def category_of(name: str) -> str:
    every = {**CATEGORIES, **BACKEND_CATEGORIES}
    return next((cat for cat, names in every.items() if name in names), UNCATEGORIZED)


def default_tools(names: Iterable[str]) -> list[str]:
    return [n for n in names if category_of(n) in DEFAULT_CATEGORIES]


def _expand(words: Iterable[str], names: list[str], setting: str) -> tuple[set[str], set[str]]:
    """-> (tool names, names asked for by name). Raises ConfigError listing the valid words."""
    picked: set[str] = set()
    by_name: set[str] = set()
    for raw in words:
        word = raw.strip()
        if word == "all":
            picked.update(names)
        elif word == "default":
            picked.update(default_tools(names))
        elif word in CATEGORIES or word in BACKEND_CATEGORIES:
            picked.update(n for n in names if category_of(n) == word)
        elif word in names:
            picked.add(word)
            by_name.add(word)
        else:
            cats = ", ".join([*CATEGORIES, *BACKEND_CATEGORIES, "default", "all"])
            raise ConfigError(
                f"{setting}: {word!r} is neither a tool nor a category. Categories: {cats}. "
                f"Tools: {', '.join(sorted(names))}"
            )
    return picked, by_name


def is_write_tool(mcp: MCPServer[Any], name: str) -> bool:
    """Tools that do not declare readOnlyHint true are treated as changing something."""
    tool = mcp._tool_manager.get_tool(name)
    return tool is None or tool.annotations is None or tool.annotations.read_only_hint is not True


def select_tools(mcp: MCPServer[Any], settings: Settings, *, for_agents: bool) -> list[str]:
    """Remove the tools this server must not offer; returns the names kept.

    Write tools go unless `enable_writes`, always. The `tools` / `disable_tools` selection applies to servers for
    agents (serve, demo); in-process uses (`obsmcp tool`, tests, benchmarks) keep every read-only tool.
    Raises ConfigError for unknown names, with the valid ones listed.
    """
    names = [t.name for t in mcp._tool_manager.list_tools()]
    keep = set(names)
    if for_agents:
        keep, by_name = _expand(settings.tools or ["default"], names, "--tools / OBSMCP_TOOLS")
        dropped, _ = _expand(settings.disable_tools, names, "--disable-tools / OBSMCP_DISABLE_TOOLS")
        keep -= dropped
        refused = sorted(n for n in by_name if is_write_tool(mcp, n) and not settings.enable_writes)
        if refused:
            raise ConfigError(
                f"{', '.join(refused)} change(s) something (not read-only): add --enable-writes "
                "(OBSMCP_ENABLE_WRITES=true) to serve them"
            )
    if not settings.enable_writes:
        keep = {n for n in keep if not is_write_tool(mcp, n)}
    for name in names:
        if name not in keep:
            mcp.remove_tool(name)
    return [n for n in names if n in keep]


# -- compact tool definitions --------------------------------------------------------------------------------------

_SCHEMA_MAPS = ("properties", "$defs", "definitions", "patternProperties", "dependentSchemas")
_SCHEMA_LISTS = ("anyOf", "oneOf", "allOf", "prefixItems")
_SCHEMA_ONE = ("items", "additionalProperties", "not", "contains", "if", "then", "else", "propertyNames")
_SCALARS = ("string", "number", "integer", "boolean")


def compact_input_schema(schema: Any) -> Any:
    """Drop what tells an agent nothing: titles (the property name again), `default: null`; and write
    `anyOf: [X, {type: null}]` as `type: [X, "null"]`. Descriptions and real defaults stay."""
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key == "title" or (key == "default" and value is None):
            continue
        if key in _SCHEMA_MAPS and isinstance(value, dict):
            out[key] = {k: compact_input_schema(v) for k, v in value.items()}
        elif key in _SCHEMA_LISTS and isinstance(value, list):
            out[key] = [compact_input_schema(v) for v in value]
        elif key in _SCHEMA_ONE:
            out[key] = compact_input_schema(value)
        else:
            out[key] = value
    return _collapse_nullable(out)


def _collapse_nullable(schema: dict[str, Any]) -> dict[str, Any]:
    alts = schema.get("anyOf")
    if not (isinstance(alts, list) and len(alts) == 2 and {"type": "null"} in alts):
        return schema
    other = alts[0] if alts[1] == {"type": "null"} else alts[1]
    # enum/const would exclude the null the type list admits; keys on both sides would clash.
    if not isinstance(other.get("type"), str) or {"enum", "const"} & set(other) or set(other) & set(schema):
        return schema
    merged = {k: v for k, v in schema.items() if k != "anyOf"}
    merged.update(other)
    merged["type"] = [other["type"], "null"]
    return merged


def compact_output_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """The answer's top-level fields and their JSON types; nested objects are just "object", arrays "array".

    Agents read the text rendering, which explains every figure; the output schema is for clients that validate
    or route structured content, and this keeps it valid (every answer still conforms: it only relaxes) at a
    tenth of the tokens. Field descriptions live in the models in obsmcp/tools/.
    """
    props = {name: _bare(prop) for name, prop in (schema.get("properties") or {}).items()}
    return {"type": "object", "properties": props}


def _bare(prop: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in prop:
        return {"type": "object"}
    for key in ("anyOf", "oneOf"):
        if key in prop:
            types: list[str] = []
            for alt in prop[key]:
                t = _bare(alt).get("type")
                for one in t if isinstance(t, list) else [t]:
                    if isinstance(one, str) and one not in types:
                        types.append(one)
            return {"type": types[0] if len(types) == 1 else types} if types else {}
    kind = prop.get("type")
    if kind is None:
        return {}
    return {"type": kind}  # arrays without their items: the text answer says what they hold


def compact_description(text: str) -> str:
    """Docstring indentation and line wraps out; paragraph breaks kept."""
    paragraphs = re.split(r"\n\s*\n", inspect.cleandoc(text))
    return "\n\n".join(" ".join(p.split()) for p in paragraphs if p.strip())


# Arguments every tool shares, described once in the server instructions (server.INSTRUCTIONS) instead of in
# each of the 16 definitions (~1,000 tokens); `backend` in server.BACKEND_INSTRUCTIONS, sent with backends only.
SHARED_ARGUMENTS = ("start", "end", "service", "max_tokens", "cursor", "backend")


def _publish_arguments(schema: Any) -> Any:
    """Shared arguments without their repeated descriptions; `type: [X, "null"]` published as X: an optional
    argument is simply left out (the tool still accepts an explicit null)."""
    props = schema.get("properties") if isinstance(schema, dict) else None
    if not isinstance(props, dict):
        return schema
    for name, prop in props.items():
        if not isinstance(prop, dict):
            continue
        kind = prop.get("type")
        if isinstance(kind, list) and len(kind) == 2 and "null" in kind:
            prop["type"] = next(k for k in kind if k != "null")
        if name in SHARED_ARGUMENTS and prop.get("type") in ("string", "integer"):
            prop.pop("description", None)
    return schema


def compact_tool_definitions(mcp: MCPServer[Any]) -> None:
    """Rewrite every registered tool's published definition in place (what tools/list sends); arguments are
    still validated by the tool's pydantic model and results by its output model, as before."""
    for tool in mcp._tool_manager.list_tools():
        tool.description = compact_description(tool.description or "")
        tool.parameters = _publish_arguments(compact_input_schema(tool.parameters))
        if tool.fn_metadata.output_schema is not None:
            tool.fn_metadata.output_schema = compact_output_schema(tool.fn_metadata.output_schema)
            tool.__dict__.pop("output_schema", None)  # a cached_property on the SDK's Tool
        ann = tool.annotations
        if ann is not None and ann.read_only_hint is True:
            # MCP: destructiveHint and idempotentHint are meaningful only when readOnlyHint is false.
            tool.annotations = ann.model_copy(update={"destructive_hint": None, "idempotent_hint": None})


def unpublish_remote_arguments(mcp: MCPServer[Any], served: Iterable[str] = ()) -> None:
    """Where no configured backend serves a tool's signal (`served`: the signals the backends' kinds serve),
    `backend` and `promql` mean nothing: leave them out of the published definitions (the tools still accept
    them, and say so when one is used). query_metrics' metric, optional only because promql can replace it,
    is published as required again."""
    signals = set(served)
    for tool_name, argument, signal in REMOTE_ARGUMENTS:
        if signal in signals:
            continue
        tool = mcp._tool_manager.get_tool(tool_name)
        props = tool.parameters.get("properties") if tool is not None else None
        if tool is None or not isinstance(props, dict):
            continue
        props.pop(argument, None)
        if tool_name == "query_metrics" and "metric" in props:
            required = tool.parameters.setdefault("required", [])
            if "metric" not in required:
                required.insert(0, "metric")


def remote_signals(settings: Settings) -> set[str]:
    """What the configured backends serve: their kinds' signals, and "log_patterns" for a pattern API."""
    served = {s for cfg in settings.backends for s in SIGNALS_BY_KIND[cfg.kind]}
    if any(cfg.kind in PATTERN_KINDS for cfg in settings.backends):
        served.add("log_patterns")
    return served


def apply_tool_policy(mcp: MCPServer[Any], settings: Settings, *, for_agents: bool) -> list[str]:
    """Select the tools (see select_tools) and compact their definitions; returns the names served."""
    served = select_tools(mcp, settings, for_agents=for_agents)
    compact_tool_definitions(mcp)
    unpublish_remote_arguments(mcp, remote_signals(settings))
    _mark_open_world(mcp)
    if for_agents:
        log.info("tools_selected", count=len(served), tools=served, writes=settings.enable_writes)
    return served


def _mark_open_world(mcp: MCPServer[Any]) -> None:
    """Tools that may ask a remote backend (they publish `backend`, or report on backends) reach beyond obsmcp:
    MCP's openWorldHint, whose default is true, so the hint is left out rather than claimed false."""
    for tool in mcp._tool_manager.list_tools():
        props = tool.parameters.get("properties") if isinstance(tool.parameters, dict) else None
        remote = tool.name == "backend_status" or (isinstance(props, dict) and "backend" in props)
        if remote and tool.annotations is not None:
            tool.annotations = tool.annotations.model_copy(update={"open_world_hint": None})


def definitions_tokens(tools: list[Any]) -> int:
    """The measure of issue 4: characters/4 of the JSON tool list (wire field names, nulls left out)."""
    dumped = [t.model_dump(mode="json", by_alias=True, exclude_none=True) for t in tools]
    return len(json.dumps(dumped)) // 4


# -- per-client rate limit ---------------------------------------------------------------------------------------


def retry_in(wait_s: float) -> float:
    """The wait to advise, rounded up to a tenth of a second: advice rounded down would be refused again."""
    return max(0.1, math.ceil(wait_s * 10 - 1e-9) / 10)


class RateLimiter:
    """A token bucket per client: `rate` calls per second, bursts of `burst`. The table of clients is bounded
    (least recently seen dropped first), so many addresses cannot grow it without limit."""

    MAX_CLIENTS = 10_000

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = burst
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def acquire(self, client: str, now: float | None = None) -> float:
        """0 when the call may go ahead (and is counted), else the seconds until it may."""
        if self.rate <= 0:
            return 0.0
        now = time.monotonic() if now is None else now
        tokens, last = self._buckets.pop(client, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - last) * self.rate)
        wait = 0.0
        if tokens >= 1.0:
            tokens -= 1.0
        else:
            wait = (1.0 - tokens) / self.rate
        self._buckets[client] = (tokens, now)
        while len(self._buckets) > self.MAX_CLIENTS:
            self._buckets.popitem(last=False)
        return wait


# -- audit log -----------------------------------------------------------------------------------------------------

AUDIT_VALUE_CHARS = 200


def audit_arguments(arguments: Any) -> dict[str, str]:
    """Argument values as the auditor sees them: secrets redacted, each cut to AUDIT_VALUE_CHARS.

    Values, not fingerprints: an audit has to answer "who asked for what" (which SQL, which service, which
    range). They come from the audited caller, not from the observed system; redaction removes credentials a
    caller may have pasted, and the cap bounds a line.
    """
    if not isinstance(arguments, dict):
        return {}
    out: dict[str, str] = {}
    for key, value in arguments.items():
        text = value if isinstance(value, str) else json.dumps(value, default=str)
        text = redact(text)
        out[str(key)[:64]] = text if len(text) <= AUDIT_VALUE_CHARS else text[: AUDIT_VALUE_CHARS - 1] + "…"
    return out


class AuditLog:
    """JSON lines, one per tool call, in a file only the owner can read (0600). Above `max_bytes` the file is
    renamed to <file>.1 (replacing the previous one) and a new one starts: at most twice `max_bytes` on disk."""

    def __init__(self, path: Path, max_bytes: int) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._size = 0

    def _open(self) -> int:
        if self._fd is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            os.fchmod(self._fd, 0o600)  # an existing file created with a looser umask
            self._size = os.fstat(self._fd).st_size
        return self._fd

    def write(self, entry: dict[str, Any]) -> None:
        line = (json.dumps(entry, separators=(",", ":"), ensure_ascii=False) + "\n").encode()
        with self._lock:
            try:
                fd = self._open()
                if self._size and self._size + len(line) > self.max_bytes:
                    os.close(fd)
                    self._fd = None
                    os.replace(self.path, self.path.with_name(self.path.name + ".1"))
                    fd = self._open()
                os.write(fd, line)
                self._size += len(line)
            except OSError as e:
                # The call itself succeeded; losing its audit line is logged loudly, not raised at the caller.
                log.error("audit_log_write_failed", path=str(self.path), error=e.strerror)

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                with contextlib.suppress(OSError):
                    os.close(self._fd)
                self._fd = None


def audit_log_path(settings: Settings) -> Path | None:
    value = settings.audit_log.strip()
    if value.lower() == "off" or not value:
        return None
    if value.lower() == "auto":
        return settings.data_dir / "audit.jsonl"
    return Path(value).expanduser()


# -- the MCP middleware: rate limit and audit of tool calls over HTTP ----------------------------------------------


def caller_of(ctx: ServerRequestContext[Any, Any]) -> tuple[str, str] | None:
    """(identity, client address) of a message that came over HTTP; None for stdio and in-process calls."""
    request = ctx.request
    scope = getattr(request, "scope", None)
    if not isinstance(scope, dict):
        return None
    client = scope.get("client")
    address = str(client[0]) if client else "unknown"
    user = scope.get("user")
    if isinstance(user, AuthenticatedUser):
        token = user.access_token
        return str(token.subject or token.client_id), address
    return address, address


class ToolCallGuard:
    """Server middleware (MCPServer(middleware=[...])): each tools/call over HTTP is rate-limited per caller
    and written to the audit log. stdio and in-process calls are the local user's own and pass untouched."""

    def __init__(self, settings: Settings) -> None:
        self.limiter = RateLimiter(settings.rate_limit_per_client, settings.rate_limit_burst)
        path = audit_log_path(settings)
        self.audit = AuditLog(path, settings.audit_log_max_bytes) if path else None

    async def __call__(self, ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        if ctx.method != "tools/call":
            return await call_next(ctx)
        caller = caller_of(ctx)
        if caller is None:
            return await call_next(ctx)
        identity, address = caller
        params = ctx.params or {}
        tool = str(params.get("name", ""))[:100]
        started = time.perf_counter()
        wait = self.limiter.acquire(identity)
        if wait > 0:
            metrics.HTTP_REJECTED.labels("rate_limit").inc()
            log.info("tool_call_rate_limited", identity=identity, tool=tool, retry_after_s=round(wait, 2))
            self.record_call(identity, address, tool, params, "rate_limited", started)
            return CallToolResult(
                is_error=True,
                content=[
                    TextContent(
                        type="text",
                        text=f"rate limit: {identity} may make {self.limiter.rate:g} tool calls per second "
                        f"(bursts of {self.limiter.burst}); retry in {retry_in(wait):.1f} s",
                    )
                ],
            )
        outcome = "error"
        try:
            result = await call_next(ctx)
            outcome = "error" if getattr(result, "is_error", False) else "ok"
            return result
        finally:
            self.record_call(identity, address, tool, params, outcome, started)

    def record_call(self, identity: str, address: str, tool: str, params: Any, outcome: str, started: float) -> None:
        if self.audit is None:
            return
        self.audit.write(
            {
                "time": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
                "identity": identity,
                "client": address,
                "tool": tool,
                "arguments": audit_arguments(params.get("arguments")),
                "outcome": outcome,
                "duration_ms": round((time.perf_counter() - started) * 1000, 1),
            }
        )


# -- request body cap (ASGI) -------------------------------------------------------------------------------------


class BodyCap:
    """413 for a request to one of `paths` whose body is over `max_bytes`, declared or streamed, with a message
    that says the cap and how to change it. OTLP routes have their own (larger) cap in the receiver."""

    def __init__(self, app: ASGIApp, max_bytes: int, paths: tuple[str, ...] = ("/mcp",)) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.paths = paths

    def _too_large(self) -> JSONResponse:
        metrics.HTTP_REJECTED.labels("body_too_large").inc()
        return JSONResponse(
            {
                "error": "request_too_large",
                "error_description": f"the request body is larger than {self.max_bytes} bytes, the cap of one MCP "
                "request (mcp_max_body_bytes, OBSMCP_MCP_MAX_BODY_BYTES): send a smaller request",
            },
            status_code=413,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].rstrip("/") not in self.paths:
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._too_large()(scope, receive, send)
            return
        # Read the body up to the cap before the app sees it, then replay it.
        chunks: list[Message] = []
        size = 0
        while True:
            message = await receive()
            chunks.append(message)
            if message["type"] != "http.request":
                break
            size += len(message.get("body", b""))
            if size > self.max_bytes:
                await self._too_large()(scope, receive, send)
                return
            if not message.get("more_body", False):
                break

        async def replay() -> Message:
            return chunks.pop(0) if chunks else await receive()

        await self.app(scope, replay, send)
