"""`obsmcp fleet list | adopt | restore`: the MCP servers the clients on this machine configure."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from obsmcp.config import ConfigError, Settings, load_settings
from obsmcp.fleet.adopt import Outcome, adopt, restore
from obsmcp.fleet.app import fleet_app
from obsmcp.fleet.clients import ListResult, discover, listing, requested_label
from obsmcp.fleet.model import FleetConfigError

ConfigOpt = Annotated[Path | None, typer.Option("--config", envvar="OBSMCP_CONFIG", help="TOML config file")]
DataDirOpt = Annotated[
    Path | None, typer.Option("--data-dir", help="data directory; the fleet lives in <data-dir>/fleet by default")
]
ProjectOpt = Annotated[
    Path | None,
    typer.Option("--project", help="project whose .mcp.json, .cursor/ and .vscode/ configs count [default: cwd]"),
]
ClientOpt = Annotated[
    str | None,
    typer.Option("--client", help="only this client: claude-desktop, claude-code, cursor, vscode, windsurf"),
]


def _settings(config: Path | None, data_dir: Path | None) -> Settings:
    try:
        return load_settings(config, **({"data_dir": data_dir} if data_dir else {}))
    except ConfigError as e:
        raise FleetConfigError(str(e)) from None


@fleet_app.command("list")
def list_cmd(
    as_json: Annotated[bool, typer.Option("--json", help="print JSON instead of a table")] = False,
    project: ProjectOpt = None,
    data_dir: DataDirOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Every MCP server the clients on this machine configure, with versions requested, installed and active.

    Reads Claude Desktop, Claude Code (.mcp.json and ~/.claude.json), Cursor, VS Code (mcp.json) and Windsurf.
    Environment variables and headers are shown by name only; tokens in arguments and URLs are redacted."""
    settings = _settings(config, data_dir)
    paths = settings.fleet_paths
    result = listing(discover(paths, project), paths)
    if as_json:
        typer.echo(result.model_dump_json(indent=2))
    else:
        typer.echo(render_table(result))
    for w in result.warnings:
        typer.echo(f"warning: {w}", err=True)


def render_table(result: ListResult) -> str:
    if not result.servers:
        files = ", ".join(result.files) or "none found"
        return f"no MCP servers configured (config files read: {files})"
    head = ("NAME", "CLIENTS", "KIND", "PACKAGE", "REQUESTED", "INSTALLED", "ACTIVE", "ADOPTED")
    rows = [head]
    for s in result.servers:
        clients = ",".join(
            dict.fromkeys(f"{c.client}" + ("(project)" if c.scope == "project" else "") for c in s.clients)
        )
        rows.append(
            (
                s.name,
                clients,
                s.kind,
                s.package or s.url or (s.command or "-").split(" ")[0],
                requested_label(s),
                ",".join(s.installed) if s.installed else ("-" if s.kind == "remote" else "not managed"),
                s.active or "-",
                "yes" if s.adopted else "no",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return "\n".join(lines)


def _print(outcomes: list[Outcome]) -> None:
    for o in outcomes:
        typer.echo(f"{o.outcome}: {o.message}", err=o.outcome == "refused")


@fleet_app.command("adopt")
def adopt_cmd(
    name: Annotated[str, typer.Argument(help="the server's name in the client config (see `fleet list`)")],
    client: ClientOpt = None,
    no_install: Annotated[
        bool, typer.Option("--no-install", help="do not install it first; fail unless `fleet update` did")
    ] = False,
    allow_unverified: Annotated[
        bool, typer.Option("--allow-unverified", help="install even when the registry publishes no digest")
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="show what would change; install and write nothing")
    ] = False,
    project: ProjectOpt = None,
    data_dir: DataDirOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Point NAME's client entries at obsmcp's launcher, so `fleet update` / `rollback` switch what clients run.

    Installs the requested version first if obsmcp does not manage it yet. Backs up each config file, then changes
    only that entry's command and args (every other byte stays); `fleet restore NAME` undoes it. Fully quit and
    restart the client afterwards."""
    settings = _settings(config, data_dir)
    outcomes = adopt(
        settings.fleet,
        settings.fleet_paths,
        name,
        client=client,
        project=project,
        install=not no_install,
        allow_unverified=allow_unverified,
        echo=lambda line: typer.echo(line, err=line.startswith("warning:")),
        dry_run=dry_run,
    )
    _print(outcomes)
    _restart_hint(outcomes)
    if any(o.outcome == "refused" for o in outcomes):
        raise typer.Exit(1)


def _restart_hint(outcomes: list[Outcome]) -> None:
    changed = sorted({o.client for o in outcomes if o.outcome == "ok"})
    if changed:
        typer.echo(f"Fully quit and restart {', '.join(changed)} to pick up the change.")


@fleet_app.command("restore")
def restore_cmd(
    name: Annotated[str | None, typer.Argument(help="the server to restore [default: every adopted server]")] = None,
    client: ClientOpt = None,
    data_dir: DataDirOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Undo `fleet adopt`: put the client entries back as they were.

    The config file comes back byte for byte from its backup when it has not changed since; otherwise only the
    entry's command and args are reverted. Refuses (exit 1) when the entry itself changed since."""
    settings = _settings(config, data_dir)
    outcomes = restore(settings.fleet_paths, name, client=client)
    _print(outcomes)
    _restart_hint(outcomes)
    if any(o.outcome == "refused" for o in outcomes):
        raise typer.Exit(1)
