"""`obsmcp fleet ...`: the typer sub-application. Commands live in the modules that implement them and register
themselves here with `@fleet_app.command()`; `obsmcp.fleet.cli` imports them all."""

from __future__ import annotations

import typer

fleet_app = typer.Typer(
    name="fleet",
    help="Keep the MCP servers configured on this machine up to date, verified and reversible.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
