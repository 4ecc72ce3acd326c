"""create_dashboard (read-only: a file in obsmcp's own data directory) and push_dashboard (a write: it changes
Grafana, so it is served only with --enable-writes).

Two tools rather than `push=true` on one: an agent without write access still gets the dashboard file and the
read-only tool stays truthful about its annotation; the write tool costs no definition tokens where writes are
off (the default), and pushing a file someone reviewed is the natural second step.
"""

from __future__ import annotations

from typing import Annotated, Any

from mcp.server.mcpserver import MCPServer
from mcp.types import CallToolResult, ToolAnnotations
from pydantic import BaseModel, Field

from obsmcp.dashboards import builder, files, grafana
from obsmcp.tools.context import ToolContext, ToolInputError

PUSH = ToolAnnotations(read_only_hint=False, destructive_hint=True, idempotent_hint=False, open_world_hint=True)


class CreateDashboardResult(BaseModel):
    uid: str = Field(description="Grafana uid, also the file name")
    title: str
    kind: str = Field(description="service | slo | queries")
    path: str = Field(description="the dashboard JSON file")
    replaced: bool = Field(description="an earlier file of that name was replaced")
    panels: int
    datasources: list[str] = Field(description="datasource template variables: name=plugin type")
    sources: dict[str, str] = Field(description="signal -> data source kind")
    notes: list[str] = Field(default_factory=list)


class PushDashboardResult(BaseModel):
    uid: str
    url: str
    version: int
    folder: str
    folder_created: bool


def create_dashboard(
    ctx: ToolContext,
    service: str | None = None,
    slo: str | None = None,
    queries: list[str] | None = None,
    name: str | None = None,
    title: str | None = None,
) -> tuple[CreateDashboardResult, str]:
    if name is not None:
        name = files.check_name(name)
    if title is not None and not title.strip():
        raise ToolInputError("title is empty: leave it out for the default, or give one")
    if queries:
        if service or slo:
            raise ToolInputError("give queries alone, or service (and optionally slo): not both")
        gen = builder.queries_dashboard(ctx, queries, name, title)
    elif slo:
        gen = builder.slo_dashboard(ctx, slo.strip(), service, name, title)
    elif service and service.strip():
        gen = builder.service_dashboard(ctx, service, name, title)
    else:
        raise ToolInputError(
            "say what to draw: service='checkout' (RED, SLOs, logs, traces), slo='<name>' (with service= for a "
            "default SLO), or queries=['<metric name or PromQL>', ...]"
        )
    model = gen.model
    path, replaced = files.write(ctx.settings, model["uid"], model)
    variables = [f"{v['name']}={v['query']}" for v in model["templating"]["list"]]
    out = CreateDashboardResult(
        uid=model["uid"],
        title=model["title"],
        kind=gen.kind,
        path=str(path),
        replaced=replaced,
        panels=gen.panel_count,
        datasources=variables,
        sources=gen.sources,
        notes=gen.notes,
    )
    lines = [
        f"create_dashboard: {out.kind} dashboard {out.title!r} (uid {out.uid}), {out.panels} panels",
        f"file: {out.path}" + (" (replaced the previous one)" if replaced else ""),
        "data source variables: " + ", ".join(variables),
        "sources: " + ", ".join(f"{k}: {v}" for k, v in out.sources.items()),
        *[f"note: {n}" for n in out.notes],
        f"import it in Grafana (Dashboards > New > Import), or push_dashboard(name={out.uid!r}) with writes enabled",
    ]
    return out, "\n".join(lines)


def push_dashboard(
    ctx: ToolContext, name: str, overwrite: bool = False, message: str | None = None
) -> tuple[PushDashboardResult, str]:
    model = files.read(ctx.settings, name)
    pushed = grafana.push(ctx.settings, model, overwrite, message or "")
    out = PushDashboardResult(
        uid=pushed.uid,
        url=pushed.url,
        version=pushed.version,
        folder=pushed.folder_title,
        folder_created=pushed.folder_created,
    )
    made = " (folder created)" if pushed.folder_created else ""
    text = f"push_dashboard: {out.uid} saved in Grafana folder {out.folder!r}{made}, version {out.version}: {out.url}"
    return out, text


def register(mcp: MCPServer[Any], ctx: ToolContext) -> None:
    from obsmcp.redaction import redactor_for
    from obsmcp.server import READ_ONLY, _run

    redactor = redactor_for(ctx.settings)

    @mcp.tool(annotations=READ_ONLY)
    async def create_dashboard(
        service: Annotated[str | None, Field(description="RED, SLO, logs and traces panels of this service")] = None,
        slo: Annotated[str | None, Field(description="one SLO's panels, by name")] = None,
        queries: Annotated[list[str] | None, Field(description="metric names or PromQL, one panel each")] = None,
        name: Annotated[str | None, Field(description="file name and Grafana uid")] = None,
        title: str | None = None,
    ) -> Annotated[CallToolResult, CreateDashboardResult]:
        """Write a Grafana dashboard JSON file for the configured data sources; returns its path."""
        return await _run("create_dashboard", lambda: _create(ctx, service, slo, queries, name, title), redactor)

    @mcp.tool(annotations=PUSH)
    async def push_dashboard(
        name: Annotated[str, Field(description="uid from create_dashboard")],
        overwrite: Annotated[bool, Field(description="replace a dashboard of that uid or title")] = False,
        message: str | None = None,
    ) -> Annotated[CallToolResult, PushDashboardResult]:
        """Save a created dashboard in Grafana (grafana_url), in folder grafana_folder."""
        return await _run("push_dashboard", lambda: _push(ctx, name, overwrite, message), redactor)


def _create(
    ctx: ToolContext,
    service: str | None,
    slo: str | None,
    queries: list[str] | None,
    name: str | None,
    title: str | None,
) -> tuple[BaseModel, str]:
    return create_dashboard(ctx, service, slo, queries, name, title)


def _push(ctx: ToolContext, name: str, overwrite: bool, message: str | None) -> tuple[BaseModel, str]:
    return push_dashboard(ctx, name, overwrite, message)
