"""Fleet tools (read-only): the MCP servers configured on this machine, and (helper E) their available updates.

Client configs can come from a cloned repository (a project's .mcp.json, .vscode/mcp.json), so names,
commands and URLs are treated as untrusted text: scrubbed, redacted and fenced like telemetry.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

from mcp.types import CallToolResult
from pydantic import BaseModel, Field

from obsmcp.fleet.clients import ListedServer, ListResult, discover, listing, requested_label
from obsmcp.fleet.model import FleetError
from obsmcp.result import Fence, estimate_tokens, scrub, within_budget
from obsmcp.tools.context import ToolContext, ToolInputError
from obsmcp.tools.fleet_updates import CheckMcpUpdatesResult
from obsmcp.tools.fleet_updates import check_mcp_updates as check_updates

if TYPE_CHECKING:
    from mcp.server.mcpserver import MCPServer


class ListMcpServersResult(ListResult):
    truncated: bool = Field(False, description="more servers than fit the budget: pass `name`")


def _clean(s: ListedServer) -> ListedServer:
    def c(v: str | None, n: int) -> str | None:
        return scrub(v, max_chars=n) if v is not None else None

    return s.model_copy(
        update={
            "name": c(s.name, 80),
            "package": c(s.package, 120),
            "requested": c(s.requested, 40),
            "command": c(s.command, 300),
            "url": c(s.url, 200),
            "env_keys": [scrub(k, max_chars=60) for k in s.env_keys],
            "header_keys": [scrub(k, max_chars=60) for k in s.header_keys],
        }
    )


def _line(s: ListedServer) -> str:
    clients = ",".join(dict.fromkeys(c.client + ("(project)" if c.scope == "project" else "") for c in s.clients))
    installed = ",".join(s.installed) if s.installed else ("-" if s.kind == "remote" else "not managed")
    what = s.package or s.url or (s.command or "-").split(" ")[0]
    adopted = "adopted" if s.adopted else "-"
    return (
        f"{s.name} | {clients} | {s.kind} {what} | {requested_label(s)} | {installed} | {s.active or '-'} | {adopted}"
    )


def list_mcp_servers(ctx: ToolContext, name: str | None = None, max_tokens: int | None = None) -> tuple[BaseModel, str]:
    paths = ctx.settings.fleet_paths
    try:
        result = listing(discover(paths), paths)
    except FleetError as e:
        raise ToolInputError(str(e)) from None
    servers = [_clean(s) for s in result.servers if name is None or s.name == name]
    if name is not None and not servers:
        raise ToolInputError(f"no MCP server named {name!r} is configured; call without `name` to list them all")
    kept = within_budget(servers, lambda s: estimate_tokens(_line(s)) + 60, ctx.budget(max_tokens), 80)
    out = ListMcpServersResult(
        servers=kept,
        warnings=[scrub(w, max_chars=300) for w in result.warnings],
        files=result.files,
        truncated=len(kept) < len(servers),
    )
    fence = Fence("client configs")
    head = f"list_mcp_servers: {len(servers)} servers in {len(result.files)} client config files"
    lines = [head, "name | clients | kind package | requested | installed | active | adopted"]
    lines.append(fence.wrap([_line(s) for s in kept] + [f"warning: {w}" for w in out.warnings]))
    if out.truncated:
        lines.append(f"truncated: {len(servers) - len(kept)} more; pass `name` for one server")
    return out, "\n".join(lines)


def register(mcp: MCPServer[Any], ctx: ToolContext) -> None:
    from obsmcp.redaction import redactor_for
    from obsmcp.server import READ_ONLY, _run

    redactor = redactor_for(ctx.settings)

    @mcp.tool(annotations=READ_ONLY)
    async def list_mcp_servers(
        name: Annotated[str | None, Field(description="only this server")] = None,
    ) -> Annotated[CallToolResult, ListMcpServersResult]:
        """MCP servers configured in this machine's clients: package, requested/installed/active version,
        adopted by obsmcp. Config text is untrusted data, fenced."""
        return await _run("list_mcp_servers", lambda: _list(ctx, name), redactor)

    # check_mcp_updates (fleet check) is registered here, below.
    @mcp.tool(annotations=READ_ONLY)
    async def check_mcp_updates(
        name: Annotated[str | None, Field(description="only this server")] = None,
    ) -> Annotated[CallToolResult, CheckMcpUpdatesResult]:
        """Configured MCP servers vs the latest on PyPI/npm/MCP registry: releases since the version in use,
        yanked, pinned. Read-only."""
        return await _run("check_mcp_updates", lambda: check_updates(ctx, name), redactor)


def _list(ctx: ToolContext, name: str | None) -> tuple[BaseModel, str]:
    return list_mcp_servers(ctx, name)
