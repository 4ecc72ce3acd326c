"""`obsmcp validate`: call every tool against every configured backend and say which work.

For the store and for each configured backend, every tool its signals serve is called once through the real
MCP server (the same in-process path as `obsmcp tool`, or the server that owns the data directory), with
`backend=NAME`, and recorded as PASS (the tool answered), FAIL (it returned an error: the error text is the
agent's) or SKIP (nothing to call it with, e.g. get_trace when search_traces found no trace; the reason says
why). Backends are checked concurrently, each backend's tools one after another, because get_trace and
get_error_details take their ids from the search before them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from mcp.shared.exceptions import MCPError
from mcp.types import CallToolResult, TextContent

from obsmcp.config import Settings
from obsmcp.sources.config import SIGNALS_BY_KIND
from obsmcp.sources.registry import STORE

Status = Literal["PASS", "FAIL", "SKIP"]

# The tools each signal serves, in the order they are called (a search before the tool that reads its ids).
SIGNAL_TOOLS: dict[str, tuple[str, ...]] = {
    "metrics": ("list_metrics", "query_metrics"),
    "logs": ("search_logs",),
    "traces": ("search_traces", "get_trace"),
    "errors": ("find_errors", "get_error_details"),
}
# Tools that take a `service` argument (validate --service passes it to these).
SERVICE_TOOLS = frozenset({"list_metrics", "query_metrics", "search_logs", "search_traces", "find_errors"})
SAMPLE_CHARS = 160
Extractor = Callable[[dict[str, Any]], str | None]  # reads an id from a tool's structured answer


class ToolCaller(Protocol):
    """What validation needs of an MCP client (mcp.Client)."""

    async def call_tool(self, name: str, arguments: dict[str, Any] | None = None) -> CallToolResult: ...


@dataclass(frozen=True)
class Target:
    """Something to validate: the store, or one configured backend, and the signals it can answer."""

    name: str
    kind: str
    signals: tuple[str, ...]

    @property
    def remote(self) -> bool:
        return self.name != STORE


@dataclass
class Check:
    """One tool called against one target."""

    tool: str
    backend: str
    status: Status
    duration_ms: float
    error: str | None = None  # FAIL: the tool's error; SKIP: why it was not called
    sample: str | None = None  # PASS: the start of the answer (--verbose)

    def to_json(self) -> dict[str, Any]:
        return {
            "tool": self.tool,
            "backend": self.backend,
            "status": self.status,
            "duration_ms": self.duration_ms,
            "error": self.error,
        }


@dataclass
class Report:
    checks: list[Check] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return any(c.status == "FAIL" for c in self.checks)

    def counts(self) -> dict[str, int]:
        return {s: sum(c.status == s for c in self.checks) for s in ("PASS", "FAIL", "SKIP")}


def targets(settings: Settings) -> list[Target]:
    """The store (every signal) and each configured backend (every signal its kind serves when named, even
    those its `signals` list routes elsewhere by default: validation asks each one by name)."""
    out = [Target(STORE, "store", ("metrics", "logs", "traces", "errors"))]
    out += [Target(b.name, b.kind, SIGNALS_BY_KIND[b.kind]) for b in settings.backends]
    return out


async def validate(
    client: ToolCaller,
    tools: Mapping[str, Mapping[str, Any]],
    all_targets: Sequence[Target],
    service: str | None = None,
) -> Report:
    """Run every check. `tools`: the server's tools by name with their published input schemas (tools/list),
    so a tool the server does not serve, or one that takes no `backend` argument, is skipped with the reason."""
    per_target = await asyncio.gather(*(_validate_target(client, tools, t, service) for t in all_targets))
    return Report([c for checks in per_target for c in checks])


async def _validate_target(
    client: ToolCaller, tools: Mapping[str, Mapping[str, Any]], target: Target, service: str | None
) -> list[Check]:
    checks: list[Check] = []
    found: dict[str, str | None] = {}  # ids found by a search, for the tool that reads them
    passed: set[str] = set()
    if target.remote:
        status, _ = await _call(client, tools, target, "backend_status", {})
        checks.append(status)
    for signal in ("metrics", "logs", "traces", "errors"):
        if signal not in target.signals:
            continue
        for tool in SIGNAL_TOOLS[signal]:
            args: dict[str, Any] = {}
            if service and tool in SERVICE_TOOLS:
                args["service"] = service
            needs = _NEEDS.get(tool)
            if needs is not None:
                key, source_tool = needs
                value = found.get(key)
                if value is None:
                    why = (
                        f"not called: {source_tool} did not pass"
                        if source_tool not in passed
                        else f"{source_tool} found nothing to call it with in the last hour"
                    )
                    checks.append(_skip(tool, target, why))
                    continue
                args[key] = value
            check, structured = await _call(client, tools, target, tool, args)
            checks.append(check)
            if check.status == "PASS":
                passed.add(tool)
            if check.status == "PASS" and tool in _FINDS:
                key, extract = _FINDS[tool]
                found[key] = extract(structured or {})
    return checks


async def _call(
    client: ToolCaller, tools: Mapping[str, Mapping[str, Any]], target: Target, tool: str, args: dict[str, Any]
) -> tuple[Check, dict[str, Any] | None]:
    schema = tools.get(tool)
    if schema is None:
        return _skip(tool, target, f"the server does not serve {tool} (see its tools / disable_tools settings)"), None
    takes_backend = "backend" in (schema.get("properties") or {})
    if target.remote and not takes_backend:
        return _skip(tool, target, f"{tool} cannot be routed to a backend in this obsmcp build"), None
    if takes_backend:
        # The store too is asked by name: without it the tool would answer from a backend configured for it.
        args = {**args, "backend": target.name}
    t0 = time.perf_counter()
    try:
        result = await client.call_tool(tool, args)
    except MCPError as e:
        # A protocol-level refusal (arguments the server rejected before the tool ran).
        return Check(tool, target.name, "FAIL", _ms(t0), f"{tool} was refused by the server: {e}"), None
    ms = _ms(t0)
    text = "\n".join(c.text for c in result.content if isinstance(c, TextContent))
    structured = result.structured_content
    if result.is_error:
        # The SDK prefixes tool errors with "Error executing tool NAME: "; the line already names the tool.
        error = text.strip().removeprefix(f"Error executing tool {tool}: ")
        return Check(tool, target.name, "FAIL", ms, error or f"{tool} returned an error without text"), None
    unhealthy = _unhealthy(tool, structured)
    if unhealthy is not None:
        return Check(tool, target.name, "FAIL", ms, unhealthy), structured
    return Check(tool, target.name, "PASS", ms, sample=_sample(text)), structured


def _unhealthy(tool: str, structured: dict[str, Any] | None) -> str | None:
    """backend_status answers even when its probe failed: for validation an unhealthy backend fails."""
    if tool != "backend_status" or not structured:
        return None
    bad = [b for b in structured.get("backends") or [] if not b.get("healthy")]
    if not bad:
        return None
    return "; ".join(f"{b.get('name')}: {b.get('check')} (circuit {b.get('circuit')})" for b in bad)


def _first(rows_key: str, id_key: str) -> Extractor:
    def extract(structured: dict[str, Any]) -> str | None:
        rows = structured.get(rows_key) or []
        value = rows[0].get(id_key) if rows and isinstance(rows[0], dict) else None
        return str(value) if value else None

    return extract


# tool -> (argument it fills for a later tool, how to read it from the structured answer)
_FINDS: dict[str, tuple[str, Extractor]] = {
    "list_metrics": ("metric", _first("metrics", "name")),
    "search_traces": ("trace_id", _first("traces", "trace_id")),
    "find_errors": ("error_id", _first("groups", "error_id")),
}
# tool -> (argument it needs, the tool that finds it)
_NEEDS: dict[str, tuple[str, str]] = {
    "query_metrics": ("metric", "list_metrics"),
    "get_trace": ("trace_id", "search_traces"),
    "get_error_details": ("error_id", "find_errors"),
}


def _skip(tool: str, target: Target, reason: str) -> Check:
    return Check(tool, target.name, "SKIP", 0.0, reason)


def _ms(t0: float) -> float:
    return round((time.perf_counter() - t0) * 1000, 1)


def _sample(text: str) -> str:
    """The answer's first lines that are not fence markers, on one line."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("<<<")]
    joined = " | ".join(lines[:2])
    return joined if len(joined) <= SAMPLE_CHARS else joined[: SAMPLE_CHARS - 1] + "…"


def render(report: Report, verbose: bool = False) -> str:
    """One aligned line per tool × backend, then the totals."""
    tool_w = max([len(c.tool) for c in report.checks] + [4])
    backend_w = max([len(c.backend) for c in report.checks] + [7])
    lines = [f"{'STATUS':<6}  {'TOOL':<{tool_w}}  {'BACKEND':<{backend_w}}  {'TIME':>9}  DETAIL"]
    for c in report.checks:
        detail = _one_line(c.error or (c.sample if verbose and c.sample else ""))
        lines.append(f"{c.status:<6}  {c.tool:<{tool_w}}  {c.backend:<{backend_w}}  {c.duration_ms:>6.0f} ms  {detail}")
    n = report.counts()
    verdict = "FAILED" if report.failed else "OK"
    lines.append(f"{verdict}: {n['PASS']} passed, {n['FAIL']} failed, {n['SKIP']} skipped")
    return "\n".join(line.rstrip() for line in lines)


def _one_line(text: str) -> str:
    """An error on one line (tool errors can span several: keep them all, joined)."""
    return " / ".join(ln.strip() for ln in text.splitlines() if ln.strip())
