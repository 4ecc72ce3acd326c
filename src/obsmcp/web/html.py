"""Server-rendered HTML for the status page and the agent views: plain strings, every value escaped.

No template engine: the page is a handful of tables. `esc` is applied to every value that reaches the markup
(names, numbers, telemetry text alike), and URLs are built with `urlencode` then escaped for the attribute, so
nothing from the observed system can become markup. There is no inline script or style (the Content-Security-
Policy forbids both); behaviour lives in static/status.js, looks in static/status.css.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import urlencode

from obsmcp import __version__
from obsmcp.timerange import format_duration
from obsmcp.tools.services import ServiceInfo
from obsmcp.tools.slo import ServiceSLOs
from obsmcp.web.status import PATTERN_SEVERITY, WINDOWS, AlertRow, Section, StatusData

MAX_ALERT_ROWS = 25  # firing and critical ones first (status.collect_alerts orders them)
_OK = {"ok", "met", "healthy"}
_BAD = {"page", "violated", "firing", "critical", "unhealthy"}
_WARN = {"ticket", "at risk", "pending", "warning", "degraded"}


def esc(value: object) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def url(path: str, params: Mapping[str, str | None] | None = None) -> str:
    """A same-origin URL with its query string, escaped for an attribute value."""
    query = urlencode({k: v for k, v in (params or {}).items() if v is not None and v != ""})
    return esc(path + ("?" + query if query else ""))


def view_url(tool: str, params: Mapping[str, str | None] | None = None) -> str:
    return url(f"/view/{tool}", params)


def badge(text: str) -> str:
    kind = "bad" if text in _BAD else "warn" if text in _WARN else "ok" if text in _OK else "none"
    return f'<span class="badge {kind}">{esc(text)}</span>'


def agent_link(tool: str, params: Mapping[str, str | None] | None = None, label: str = "view as agent") -> str:
    title = f"the {tool} answer an agent reads"
    return f'<a class="agent" href="{view_url(tool, params)}" title="{esc(title)}">{esc(label)}</a>'


def page(title: str, body: str, *, nav: str = "") -> str:
    return (
        "<!doctype html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)}</title>"
        '<link rel="icon" href="/static/favicon.svg" type="image/svg+xml">'
        '<link rel="stylesheet" href="/static/status.css">'
        '<script src="/static/status.js" defer></script>'
        "</head><body>"
        f'<header><a class="brand" href="/">obsmcp</a>{nav}</header>'
        f"<main>{body}</main>"
        f'<footer>obsmcp {esc(__version__)} · <a href="/api/index">what is served (JSON)</a> · '
        '<a href="/health">health</a> · <a href="/metrics">metrics</a></footer>'
        "</body></html>"
    )


def _pct(v: float | None) -> str:
    return "–" if v is None else f"{v * 100:.2f}%"


def _ms(v: float | None) -> str:
    return "–" if v is None else format_duration(v * 1e6)


def _table(head: Sequence[str], rows: Iterable[str], cls: str = "") -> str:
    th = "".join(f"<th>{esc(h)}</th>" for h in head)
    body = "".join(rows)
    return (
        f'<div class="scroll"><table class="{esc(cls)}"><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table></div>'
    )


def _failed(s: Section[Any]) -> str:
    return f'<p class="error">{esc(s.error)}</p>' if s.error else ""


def _notes(notes: Sequence[str]) -> str:
    shown = [n for n in notes if not n.startswith("Text between <<<")]
    return "".join(f'<p class="note">{esc(n)}</p>' for n in shown)


# -- the status page -------------------------------------------------------------------------------------------


def status_page(d: StatusData, *, alert_tool: bool, elapsed_ms: float, signed_in: bool = False) -> str:
    nav = _nav(d) + (logout_form() if signed_in else "")
    body = (
        _alerts(d, alert_tool)
        + _services(d)
        + (_service_detail(d) if d.service else "")
        + _errors(d)
        + _patterns(d)
        + f'<p class="meta">window {esc(d.window)} ending now · built in '
        + f'<span id="built-ms">{elapsed_ms:.0f}</span> ms · '
        f'<a href="{url("/api/status", {"window": d.window, "service": d.service})}">this page as JSON</a></p>'
    )
    return page("obsmcp status" + (f": {d.service}" if d.service else ""), body, nav=nav)


def _nav(d: StatusData) -> str:
    picked = d.service if d.service_explicit else None
    windows = "".join(
        f'<a href="{url("/", {"window": w, "service": picked})}"'
        + (' class="current" aria-current="true"' if w == d.window else "")
        + f">{esc(w)}</a>"
        for w in WINDOWS
    )
    names = [s.service for s in d.services.value.services] if d.services.value else []
    auto = "worst first" + (f" ({d.service})" if d.service and not picked else "")
    options = f'<option value="">{esc(auto)}</option>' + "".join(
        f'<option value="{esc(n)}"' + (" selected" if n == picked else "") + f">{esc(n)}</option>" for n in names
    )
    return (
        f'<nav class="windows" aria-label="time window">{windows}</nav>'
        '<form class="pick" method="get" action="/">'
        f'<input type="hidden" name="window" value="{esc(d.window)}">'
        f'<label>service <select name="service" id="service-select">{options}</select></label>'
        '<button type="submit">show</button></form>'
        '<label class="refresh"><input type="checkbox" id="auto-refresh"> refresh every 30 s</label>'
    )


def _alerts(d: StatusData, alert_tool: bool) -> str:
    s = d.alerts
    head = "<h2>Alerts</h2>"
    if s.value is None:
        return f'<section id="alerts">{head}{_failed(s)}</section>'
    v = s.value
    if not v.enabled:
        return (
            f'<section id="alerts">{head}<p class="muted" id="alerting-off">alerting not enabled: no alert engine '
            "runs in this server</p></section>"
        )
    link = agent_link("list_alerts") if alert_tool else ""
    active = [a for a in v.current if a.state != "resolved"]
    if not active:
        content = '<p class="ok-line">no alert is firing or pending</p>'
    else:
        shown = active[:MAX_ALERT_ROWS]
        content = _table(("state", "severity", "alert", "cause", "since"), (_alert_tr(a) for a in shown), "alerts")
        if len(active) > len(shown):
            content += f'<p class="note">{len(active) - len(shown)} more alerts (list_alerts shows every one)</p>'
    if v.rules == 0:
        content = '<p class="muted">no alert rules are in effect (config [[alerts]], or the default SLO rules)</p>'
    if v.rule_errors:
        content += "".join(
            f'<p class="error">rule {esc(rule)} could not be evaluated: {esc(why)}</p>'
            for rule, why in sorted(v.rule_errors.items())
        )
    recent = ""
    if v.history:
        recent = (
            "<details><summary>recent changes</summary>"
            + _table(("change", "severity", "alert", "cause", "at"), (_change_tr(a) for a in v.history))
            + "</details>"
        )
    return f'<section id="alerts">{head}{link}{content}{recent}</section>'


def _alert_tr(a: AlertRow) -> str:
    labels = ", ".join(f"{k}={v}" for k, v in sorted(a.labels.items()))
    since = a.firing_since or a.since
    muted = f' <span class="muted">silenced ({esc(a.silenced_by)})</span>' if a.silenced_by else ""
    return (
        f'<tr class="alert {esc(a.state)}"><td>{badge(a.state)}</td><td>{badge(a.severity)}</td>'
        f'<td><strong>{esc(a.rule)}</strong><div class="muted small">{esc(labels)}</div></td>'
        f"<td>{esc(a.cause)}{muted}</td><td>{esc(since)}</td></tr>"
    )


def _change_tr(a: AlertRow) -> str:
    labels = ", ".join(f"{k}={v}" for k, v in sorted(a.labels.items()))
    change = f"{a.previous} → " if a.previous else ""
    return (
        f"<tr><td>{esc(change)}{badge(a.state)}</td><td>{badge(a.severity)}</td>"
        f'<td><strong>{esc(a.rule)}</strong><div class="muted small">{esc(labels)}</div></td>'
        f"<td>{esc(a.cause)}</td><td>{esc(a.changed_at or a.since)}</td></tr>"
    )


def _services(d: StatusData) -> str:
    s = d.services
    head = "<h2>Services</h2>" + agent_link("list_services", {"start": d.window})
    if s.value is None:
        return f'<section id="services">{head}{_failed(s)}</section>'
    rows = [_service_tr(d, info, d.slo_of(info.service)) for info in s.value.services]
    if not rows:
        return f'<section id="services">{head}<p class="muted">no telemetry in the last {esc(d.window)}</p></section>'
    table = _table(
        ("service", "req/s", "errors", "p50", "p95", "p99", "error logs", "SLO", "burn alert"), rows, "services"
    )
    return f'<section id="services">{head}{table}{_notes(s.value.notes)}{_failed(d.slos)}</section>'


def _service_tr(d: StatusData, info: ServiceInfo, slo: ServiceSLOs | None) -> str:
    selected = ' class="selected"' if info.service == d.service else ""
    name = f'<a href="{url("/", {"window": d.window, "service": info.service})}">{esc(info.service)}</a>'
    if not info.requests:
        red = '<td colspan="5" class="muted">no server spans</td>'
    else:
        red = (
            f'<td class="num">{info.request_rate_per_s:g}</td><td class="num">{_pct(info.error_rate)}</td>'
            f'<td class="num">{_ms(info.p50_ms)}</td><td class="num">{_ms(info.p95_ms)}</td>'
            f'<td class="num">{_ms(info.p99_ms)}</td>'
        )
    compliance = badge(slo.compliance) if slo else badge("no data")
    alert = badge(slo.alert) if slo else badge("no data")
    return (
        f'<tr{selected} data-service="{esc(info.service)}"><th scope="row">{name}</th>{red}'
        f'<td class="num">{info.error_logs}</td><td>{compliance}</td><td>{alert}</td></tr>'
    )


def _service_detail(d: StatusData) -> str:
    svc = d.service
    assert svc is not None
    chart_args = {"service": svc, "kind": "red", "window": d.window}
    info = next((i for i in d.services.value.services if i.service == svc), None) if d.services.value else None
    if info is None or not info.requests:
        # render_chart draws entry spans: without any, the image would only be an error.
        chart = f'<p class="muted">no requests (server spans) of {esc(svc)} to chart in the last {esc(d.window)}</p>'
    else:
        chart = _chart(svc, d.window, chart_args)
    return _detail(d, svc, chart)


def _chart(svc: str, window: str, chart_args: Mapping[str, str | None]) -> str:
    return (
        f'<figure><img id="red-chart" src="{url("/status/chart", chart_args)}" width="900" height="600" '
        f'alt="{esc(svc)}: request rate, error rate and p95 over the last {esc(window)}" decoding="async">'
        f"<figcaption>request rate, error rate and p95 of {esc(svc)} (entry spans); anomalies shaded, SLO "
        f'thresholds dashed · <a href="{url("/status/chart", {**chart_args, "kind": "latency_histogram"})}">'
        "latency histogram</a> · "
        + agent_link("render_chart", {"service": svc, "kind": "red", "start": window}, "chart as agent")
        + "</figcaption></figure>"
    )


def _detail(d: StatusData, svc: str, chart: str) -> str:
    slo = d.slo_of(svc)
    slo_table = ""
    if slo:
        rows = (
            f'<tr><td>{esc(st.name)}</td><td>{esc(st.sli)}</td><td class="num">{st.objective_pct:g}%</td>'
            f'<td class="num">{"–" if st.sli_window_pct is None else f"{st.sli_window_pct:.3f}%"}</td>'
            f'<td class="num">{"–" if st.budget_remaining_pct is None else f"{st.budget_remaining_pct:.1f}%"}</td>'
            f'<td class="num">{_burn(st.burn_rates.get("1h"))}</td><td>{badge(st.compliance)}</td>'
            f"<td>{badge(st.alert)}</td></tr>"
            for st in slo.slos
        )
        slo_table = _table(
            ("SLO", "SLI", "objective", "SLI (window)", "budget left", "burn 1h", "compliance", "alert"), rows, "slos"
        )
    links = " ".join(
        [
            agent_link("slo_report", {"service": svc, "start": d.window}, "SLOs as agent"),
            agent_link("investigate", {"service": svc, "start": d.window}, "investigate as agent"),
            agent_link("find_bottlenecks", {"service": svc, "start": d.window}, "bottlenecks as agent"),
        ]
    )
    return f'<section id="service"><h2>{esc(svc)}</h2><p class="links">{links}</p>{chart}{slo_table}</section>'


def _burn(v: float | None) -> str:
    return "–" if v is None else f"{v:.2f}x"


def _errors(d: StatusData) -> str:
    s = d.errors
    scope = f" of {d.service}" if d.service and d.service_explicit else ""
    args = {"service": d.service if d.service_explicit else None, "start": d.window}
    head = f"<h2>Error groups{esc(scope)}</h2>" + agent_link("find_errors", args)
    if s.value is None:
        return f'<section id="errors">{head}{_failed(s)}</section>'
    if not s.value.groups:
        return f'<section id="errors">{head}<p class="ok-line">no errors in the last {esc(d.window)}</p></section>'
    rows = (
        f'<tr><td class="num">{g.count}</td><td>{esc(g.type)}<div class="muted small">{esc(g.kind)}</div></td>'
        f'<td class="text">{esc(g.message)}</td><td>{esc(", ".join(g.services))}</td><td>{esc(g.last_seen)}</td>'
        f"<td>{agent_link('get_error_details', {'error_id': g.error_id}, 'details')}</td></tr>"
        for g in s.value.groups
    )
    total = s.value.total
    more = (
        f'<p class="note">{total - len(s.value.groups)} more groups</p>'
        if total and total > len(s.value.groups)
        else ""
    )
    return (
        f'<section id="errors">{head}'
        + _table(("count", "type", "message", "services", "last seen", ""), rows, "errors")
        + more
        + "</section>"
    )


def _patterns(d: StatusData) -> str:
    s = d.patterns
    scope = f" of {d.service}" if d.service and d.service_explicit else ""
    args = {"service": d.service if d.service_explicit else None, "min_severity": PATTERN_SEVERITY, "start": d.window}
    head = f"<h2>Warning and error log patterns{esc(scope)}</h2>" + agent_link("log_patterns", args)
    if s.value is None:
        return f'<section id="patterns">{head}{_failed(s)}</section>'
    if not s.value.patterns:
        quiet = f"no warning or error logs in the last {d.window}"
        return f'<section id="patterns">{head}<p class="ok-line">{esc(quiet)}</p></section>'
    rows = (
        f"<tr><td>{badge(p.change) if p.change in ('new', 'rising') else esc(p.change)}</td>"
        f'<td class="num">{p.count}</td><td>{esc(p.severity)}</td><td>{esc(p.service)}</td>'
        f'<td class="text"><code>{esc(p.template)}</code></td></tr>'
        for p in s.value.patterns
    )
    return (
        f'<section id="patterns">{head}'
        + _table(("change", "count", "severity", "service", "template (<*> varies)"), rows, "patterns")
        + "</section>"
    )


# -- the agent's view -------------------------------------------------------------------------------------------


def agent_view(tool: str, args: Mapping[str, object], text: str, *, is_error: bool, images: Sequence[str]) -> str:
    shown = ", ".join(f"{k}={v!r}" for k, v in args.items())
    status = '<p class="error">the tool answered with an error</p>' if is_error else ""
    extra = "".join(
        f'<figure><img class="tool-image" src="data:image/png;base64,{esc(b64)}" alt="image content of the answer">'
        "<figcaption>image content of the answer (PNG)</figcaption></figure>"
        for b64 in images
    )
    body = (
        f'<section id="agent-view"><h2>{esc(tool)}({esc(shown)})</h2>'
        '<p class="muted">The exact text answer an agent receives over MCP: budgeted, with text from the observed '
        "system fenced and secrets redacted.</p>"
        f'{status}<pre id="tool-text">{esc(text)}</pre>{extra}'
        '<p><a href="/">back to the status page</a></p></section>'
    )
    return page(f"{tool}: agent view", body)


def message_page(title: str, message: str, *, form: str = "") -> str:
    return page(title, f'<section><h2>{esc(title)}</h2><p class="error">{esc(message)}</p>{form}</section>')


def login_form(next_path: str) -> str:
    return (
        '<form class="login" method="post" action="/login">'
        f'<input type="hidden" name="next" value="{esc(next_path)}">'
        '<label>bearer token <input type="password" name="token" autocomplete="current-password" required></label>'
        '<button type="submit">sign in</button></form>'
        '<p class="muted">The token is kept in an HttpOnly, SameSite=Strict cookie for this server only, for 12 '
        "hours; sign out removes it.</p>"
    )


def logout_form() -> str:
    return '<form class="logout" method="post" action="/logout"><button type="submit">sign out</button></form>'
