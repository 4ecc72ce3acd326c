"""check_mcp_updates: `fleet check` as a read-only MCP tool (registered from tools/fleet.py).

Registry metadata (versions, URLs, notes) and client-config text are untrusted: scrubbed and fenced.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from obsmcp.fleet.check import CheckResult, ServerCheck, check_configured
from obsmcp.fleet.model import FleetError
from obsmcp.result import Fence, estimate_tokens, scrub, within_budget
from obsmcp.tools.context import ToolContext, ToolInputError


class CheckMcpUpdatesResult(CheckResult):
    truncated: bool = Field(False, description="more servers than fit the budget: pass `name`")


def _clean(s: ServerCheck) -> ServerCheck:
    def c(v: str | None, n: int = 120) -> str | None:
        return scrub(v, max_chars=n) if v is not None else None

    return s.model_copy(
        update={
            "name": c(s.name, 80),
            "package": c(s.package),
            "requested": c(s.requested, 40),
            "notes_url": c(s.notes_url, 200),
            "note": c(s.note, 300),
            "error": c(s.error, 300),
            "changes": [ch.model_copy(update={"notes_url": c(ch.notes_url, 200)}) for ch in s.changes],
        }
    )


def _line(s: ServerCheck) -> str:
    changed = ", ".join(f"{c.version} ({(c.published or '?')[:10]}{', yanked' if c.yanked else ''})" for c in s.changes)
    parts = [f"{s.name} | {s.kind} {s.package or '-'} | {s.current or '-'} -> {s.latest or '-'} | {s.status}"]
    if changed:
        parts.append(f"  changes: {changed}")
    if s.notes_url and s.changes:
        parts.append(f"  notes: {s.notes_url}")
    if s.mcp_registry:
        parts.append(f"  MCP registry: {s.mcp_registry.name} {s.mcp_registry.version} ({s.mcp_registry.status})")
    for label, text in (("note", s.note), ("error", s.error)):
        if text:
            parts.append(f"  {label}: {text}")
    return "\n".join(parts)


def check_mcp_updates(
    ctx: ToolContext, name: str | None = None, max_tokens: int | None = None
) -> tuple[BaseModel, str]:
    settings = ctx.settings
    try:
        result, _ = check_configured(settings.fleet, settings.fleet_paths, name)
    except FleetError as e:
        raise ToolInputError(str(e)) from None
    servers = [_clean(s) for s in result.servers]
    kept = within_budget(servers, lambda s: estimate_tokens(_line(s)) + 80, ctx.budget(max_tokens), 80)
    out = CheckMcpUpdatesResult(
        checked_at=result.checked_at,
        servers=kept,
        updates_available=result.updates_available,
        errors=result.errors,
        truncated=len(kept) < len(servers),
    )
    fence = Fence("registry metadata")
    lines = [
        f"check_mcp_updates: {len(servers)} servers, {result.updates_available} with updates, {result.errors} errors",
        "name | kind package | current -> latest | status",
        fence.wrap([_line(s) for s in kept]),
    ]
    if out.truncated:
        lines.append(f"truncated: {len(servers) - len(kept)} more; pass `name` for one server")
    lines.append("updating is a human's command: `obsmcp fleet update NAME`")
    return out, "\n".join(lines)
