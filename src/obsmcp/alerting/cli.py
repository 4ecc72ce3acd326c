"""`obsmcp alerts ...`: alert rules from the command line (export to Prometheus rules, list, check)."""

from __future__ import annotations

import typer

alerts_app = typer.Typer(
    name="alerts",
    help="Alert rules: check them, list them, export them as Prometheus recording and alerting rules.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
