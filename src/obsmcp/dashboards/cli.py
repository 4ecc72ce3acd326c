"""`obsmcp dashboard ...`: the generated dashboards on disk, and pushing one to Grafana after a person looked at it.

Creating one needs the store: `obsmcp tool create_dashboard service=checkout` (it goes through a running server
that owns the store, like every `obsmcp tool` call).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

dashboard_app = typer.Typer(
    name="dashboard",
    help="Generated Grafana dashboards: list them, push one to Grafana (create: obsmcp tool create_dashboard).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

ConfigOpt = Annotated[Path | None, typer.Option("--config", envvar="OBSMCP_CONFIG", help="TOML config file")]
DataDirOpt = Annotated[Path | None, typer.Option("--data-dir", help="obsmcp's data directory [env OBSMCP_DATA_DIR]")]


def _fail(msg: str) -> typer.Exit:
    typer.echo(f"obsmcp dashboard: {msg}", err=True)
    return typer.Exit(2)


@dashboard_app.command("list")
def list_dashboards(config: ConfigOpt = None, data_dir: DataDirOpt = None) -> None:
    """The dashboards in <data_dir>/dashboards: uid, panels, title."""
    from obsmcp.config import ConfigError, load_settings
    from obsmcp.dashboards.files import dashboards_dir

    try:
        settings = load_settings(config, **({"data_dir": data_dir} if data_dir else {}))
    except ConfigError as e:
        raise _fail(str(e)) from None
    folder = dashboards_dir(settings)
    paths = sorted(folder.glob("*.json"))
    if not paths:
        typer.echo(f"no dashboards in {folder}: obsmcp tool create_dashboard service=NAME")
        return
    for path in paths:
        try:
            model = json.loads(path.read_text(encoding="utf-8"))
            panels = sum(1 for p in model.get("panels", []) if p.get("type") != "row")
            typer.echo(f"{path.stem}\t{panels} panels\t{model.get('title', '')}")
        except (OSError, ValueError, AttributeError):
            typer.echo(f"{path.stem}\t(unreadable)")


@dashboard_app.command("push")
def push(
    name: Annotated[str, typer.Argument(help="the dashboard's uid (its file name, without .json)")],
    overwrite: Annotated[bool, typer.Option(help="replace a Grafana dashboard with that uid or title")] = False,
    message: Annotated[str, typer.Option(help="Grafana's version history message")] = "pushed by obsmcp",
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Save a generated dashboard in Grafana (grafana_url, grafana_token, grafana_folder)."""
    from obsmcp.config import ConfigError, load_settings
    from obsmcp.dashboards import files, grafana
    from obsmcp.http import close_all
    from obsmcp.tools.context import ToolInputError

    try:
        settings = load_settings(config, **({"data_dir": data_dir} if data_dir else {}))
        model = files.read(settings, name)
        pushed = grafana.push(settings, model, overwrite, message)
    except (ConfigError, ToolInputError, grafana.GrafanaError) as e:
        raise _fail(str(e)) from None
    finally:
        close_all()
    made = " (folder created)" if pushed.folder_created else ""
    typer.echo(f"saved {pushed.uid} in Grafana folder {pushed.folder_title!r}{made}, version {pushed.version}")
    typer.echo(pushed.url)
