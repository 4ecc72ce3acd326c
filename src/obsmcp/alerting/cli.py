"""`obsmcp alerts ...`: alert rules from the command line (export to Prometheus rules, check)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from obsmcp.alerting.model import AlertRule

alerts_app = typer.Typer(
    name="alerts",
    help="Alert rules: check them, export them as Prometheus recording and alerting rules.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

ConfigOpt = Annotated[Path | None, typer.Option("--config", envvar="OBSMCP_CONFIG", help="TOML config file")]


def _fail(msg: str) -> typer.Exit:
    typer.echo(f"obsmcp alerts: {msg}", err=True)
    return typer.Exit(2)


@alerts_app.command("export")
def export(
    config: ConfigOpt = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="write the rule file here (default: stdout)")] = None,
    default_slos: Annotated[
        list[str] | None,
        typer.Option("--default-slos", help="also export obsmcp's default SLOs of this service (repeatable)"),
    ] = None,
    service_label: Annotated[str, typer.Option(help="Prometheus label that holds the service name")] = "job",
    histogram: Annotated[
        str, typer.Option(help="HTTP server histogram SLOs count requests from")
    ] = "http_server_request_duration_seconds",
    status_label: Annotated[str, typer.Option(help="its HTTP status code label")] = "http_response_status_code",
    interval: Annotated[str | None, typer.Option(help="rule group evaluation interval, e.g. 30s")] = None,
) -> None:
    """The config's SLOs and alert rules (with the default burn-rate rules) as a Prometheus rule file, like
    Sloth or Pyrra generate: recording rules of each SLO's error ratio, multiwindow burn-rate alerts, threshold
    alerts. Check it with `promtool check rules FILE`."""
    from obsmcp.alerting.export import ExportError, ExportOptions, build_export, render_yaml
    from obsmcp.alerting.model import DURATION
    from obsmcp.alerting.rules import effective_rules
    from obsmcp.config import ConfigError, load_settings

    if interval is not None and not DURATION.match(interval):
        raise _fail(f"--interval {interval!r} is not a duration: write a number and a unit (s, m, h, d), e.g. 30s")
    try:
        settings = load_settings(config)
    except ConfigError as e:
        raise _fail(str(e)) from None
    opts = ExportOptions(
        histogram=histogram,
        status_label=status_label,
        service_label=service_label,
        default_slo_services=tuple(default_slos or ()),
        interval=interval.strip() if interval else None,
    )
    try:
        result = build_export(settings.slos, effective_rules(settings), opts)
    except ExportError as e:
        raise _fail(str(e)) from None
    for s in result.skipped:
        typer.echo(f"obsmcp alerts: {s.line()}", err=True)
    text = render_yaml(result, f" from {config}" if config else "")
    summary = (
        f"{result.recording_rules} recording and {result.alerting_rules} alerting rules in {len(result.groups)} "
        f"groups, {len(result.skipped)} skipped"
    )
    if out is None:
        typer.echo(text, nl=False)
        typer.echo(f"obsmcp alerts: {summary}", err=True)
        return
    try:
        out.expanduser().write_text(text)
    except OSError as e:
        raise _fail(f"cannot write {out}: {e.strerror or e}: choose another --out path") from None
    typer.echo(f"wrote {summary} to {out}", err=True)


@alerts_app.command("check")
def check(config: ConfigOpt = None) -> None:
    """Validate the config's alert rules and webhooks; print each rule, its kind and what it evaluates."""
    from obsmcp.alerting.export import ExportError, ExportOptions, build_export
    from obsmcp.alerting.rules import effective_rules
    from obsmcp.config import ConfigError, load_settings

    try:
        settings = load_settings(config)  # validates every rule and webhook, naming the offender and the fix
    except ConfigError as e:
        raise _fail(str(e)) from None
    rules = effective_rules(settings)
    typer.echo(f"{len(rules)} alert rule(s):")
    for r in rules:
        origin = "" if r.source == "config" else f" [{r.source}]"
        for_ = f" for {r.for_}" if r.for_ not in ("0s", "0m") else ""
        typer.echo(f"  {r.name} ({r.kind}, {r.severity}{for_}){origin}: {describe_rule(r)}")
    typer.echo(f"{len(settings.alert_webhooks)} webhook(s):")
    for w in settings.alert_webhooks:
        resolved = "" if w.send_resolved or w.format == "alertmanager_api" else ", firing only"
        typer.echo(f"  {w.name} ({w.format}{resolved}) -> {w.host}")
    try:
        exported = build_export(settings.slos, rules, ExportOptions())
        prom = f"{exported.recording_rules} recording and {exported.alerting_rules} alerting rules"
        typer.echo(f"Prometheus export: {prom}, {len(exported.skipped)} skipped")
        for s in exported.skipped:
            typer.echo(f"  {s.line()}")
    except ExportError as e:
        typer.echo(f"Prometheus export: {e}")


def describe_rule(r: AlertRule) -> str:
    """One line: what a rule evaluates, in the words of the config."""
    cond = f"{r.op} {r.threshold:g}" if r.threshold is not None else "(no threshold)"
    if r.kind == "burn_rate":
        wins = ", ".join(f"{long}&{short} >{f:g}x" for long, short, f in r.windows or []) or "SRE workbook windows"
        return f"error budget burn of SLO {r.slo!r}: {wins}"
    if r.kind == "log_pattern":
        scope = f" of {r.service}" if r.service else ""
        seen = f"seen >= {r.min_count}x in {r.window}, not in the {r.baseline} before"
        return f"a new {r.min_severity}+ log pattern{scope} {seen}"
    if r.kind == "log_rate":
        scope = f" of {r.service}" if r.service else ""
        return f"{r.min_severity}+ log records{scope} per minute over {r.window} {cond}"
    if r.promql is not None:
        return f"PromQL on {r.backend}: {r.promql} {cond}"
    if r.signal is not None:
        return f"{r.signal} of {r.service or 'every service'} over {r.window} {cond}"
    where = f" on {r.backend}" if r.backend and r.backend != "store" else ""
    by = f" by {', '.join(r.group_by)}" if r.group_by else ""
    return f"{r.aggregation}({r.metric}){by}{where} over {r.window} {cond}"
