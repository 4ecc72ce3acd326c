"""What the status page shows, gathered from the same tool implementations an agent calls.

Each section is computed on its own (blocking store reads: the routes run them in worker threads) and fails on
its own: a section that cannot be computed carries the reason instead of taking the page down. Text from the
observed system (error messages, log templates, alert causes and labels) is scrubbed and redacted here, as the
tools do for their answers; the HTML renderer escapes everything on top of that.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

import structlog
from pydantic import BaseModel, Field

from obsmcp.redaction import Redactor
from obsmcp.result import scrub
from obsmcp.timerange import parse_duration
from obsmcp.tools import errors as errors_tool
from obsmcp.tools import patterns as patterns_tool
from obsmcp.tools import services as services_tool
from obsmcp.tools import slo as slo_tool
from obsmcp.tools.context import ToolContext, ToolInputError

log = structlog.get_logger("obsmcp.web")

WINDOWS = ("15m", "1h", "6h", "24h")
DEFAULT_WINDOW = "1h"
ERROR_GROUPS = 10
LOG_PATTERNS = 10
PATTERN_SEVERITY = "warn"  # the page lists what may be wrong: warning and error patterns
ALERT_HISTORY = 10

T = TypeVar("T")


@dataclass
class Section(Generic[T]):
    """One part of the page: its value, or why it is missing, and what it cost."""

    value: T | None = None
    error: str | None = None
    ms: float = 0.0


def section(name: str, fn: Callable[[], T]) -> Section[T]:
    t0 = time.perf_counter()
    try:
        value = fn()
    except (ToolInputError, LookupError, ValueError) as e:  # the caller's arguments (service, window): said plainly
        return Section(error=str(e), ms=_ms(t0))
    except Exception as e:  # a store or backend failure: shown in its section, logged, the rest still renders
        log.warning("status_section_failed", section=name, error=str(e).splitlines()[0][:300] if str(e) else "")
        return Section(error=f"{name} could not be computed ({type(e).__name__}); see the server log", ms=_ms(t0))
    return Section(value=value, ms=_ms(t0))


def _ms(t0: float) -> float:
    return round((time.perf_counter() - t0) * 1000, 1)


# -- alerts ----------------------------------------------------------------------------------------------------


class AlertRow(BaseModel):
    rule: str
    state: str
    severity: str
    cause: str
    labels: dict[str, str] = Field(default_factory=dict)
    value: float | None = None
    since: str
    firing_since: str | None = None
    resolved_at: str | None = None
    silenced_by: str | None = None
    changed_at: str | None = Field(None, description="history: when the alert entered `state`")
    previous: str | None = Field(None, description="history: the state it left")


class AlertsView(BaseModel):
    enabled: bool
    current: list[AlertRow] = Field(default_factory=list)
    history: list[AlertRow] = Field(default_factory=list)
    rules: int | None = Field(None, description="alert rules in effect")
    rule_errors: dict[str, str] = Field(default_factory=dict, description="rule -> why its last evaluation failed")


def _iso(t: datetime | None) -> str | None:
    """UTC to the second, as a person reads it ("2026-11-21 07:28:16Z")."""
    if t is None:
        return None
    if t.tzinfo is not None:
        t = t.astimezone(UTC)
    return t.strftime("%Y-%m-%d %H:%M:%SZ")


def _alert_row(a: Any, redact: Redactor | None, transition: Any = None) -> AlertRow:
    def clean(text: str, chars: int = 300) -> str:
        return scrub(str(text), redact_secrets=redact, max_chars=chars)

    return AlertRow(
        rule=clean(a.rule, 100),
        state=clean(a.state, 20),
        severity=clean(a.severity, 20),
        cause=clean(a.cause),
        labels={clean(k, 100): clean(v, 200) for k, v in a.labels.items()},
        value=a.value,
        since=_iso(a.since) or "",
        firing_since=_iso(a.firing_since),
        resolved_at=_iso(a.resolved_at),
        silenced_by=a.silenced_by,
        changed_at=_iso(getattr(transition, "at", None)),
        previous=getattr(transition, "previous", None),
    )


def collect_alerts(engine: Any, redact: Redactor | None) -> AlertsView:
    """The alert engine's current alerts (firing first) and recent history; `enabled=False` without an engine."""
    if engine is None:
        return AlertsView(enabled=False)
    order = {"firing": 0, "pending": 1, "resolved": 2}
    severity = {"critical": 0, "warning": 1, "info": 2}
    current = sorted(
        engine.current(),
        key=lambda a: (order.get(a.state, 3), severity.get(a.severity, 3), a.labels.get("service", ""), a.rule),
    )
    history_fn = getattr(engine, "history", None)
    transitions = list(history_fn(ALERT_HISTORY)) if callable(history_fn) else []
    rules_fn, errors_fn = getattr(engine, "rules", None), getattr(engine, "errors", None)
    failing = errors_fn() if callable(errors_fn) else {}
    return AlertsView(
        enabled=True,
        rules=len(rules_fn()) if callable(rules_fn) else None,
        rule_errors={
            scrub(str(k), redact_secrets=redact, max_chars=100): scrub(str(v), redact_secrets=redact, max_chars=300)
            for k, v in failing.items()
        },
        current=[_alert_row(a, redact) for a in current],
        # AlertTransitions (newest first): the alert as it was then, with when and from which state.
        history=[_alert_row(getattr(t, "alert", t), redact, t) for t in transitions],
    )


# -- the page's data ---------------------------------------------------------------------------------------------


@dataclass
class StatusData:
    window: str
    service: str | None  # the selected service (canonical name), if any
    service_explicit: bool  # asked for (errors and patterns are then that service's), or chosen as the worst
    services: Section[services_tool.ListServicesResult]
    slos: Section[slo_tool.SLOReport]
    alerts: Section[AlertsView]
    errors: Section[errors_tool.FindErrorsResult] = field(default_factory=Section)
    patterns: Section[patterns_tool.LogPatternsResult] = field(default_factory=Section)

    def slo_of(self, service: str) -> slo_tool.ServiceSLOs | None:
        if self.slos.value is None:
            return None
        return next((s for s in self.slos.value.services if s.service == service), None)

    def as_json(self) -> dict[str, Any]:
        def dump(s: Section[Any]) -> dict[str, Any]:
            v = s.value
            return {"value": v.model_dump(mode="json") if isinstance(v, BaseModel) else v, "error": s.error}

        return {
            "window": self.window,
            "service": self.service,
            "services": dump(self.services),
            "slos": dump(self.slos),
            "alerts": dump(self.alerts),
            "errors": dump(self.errors),
            "patterns": dump(self.patterns),
        }


def check_window(window: str | None) -> str:
    """A window the page offers (or any duration a person typed into the URL), else ToolInputError."""
    w = (window or DEFAULT_WINDOW).strip().lower()
    try:
        ns = parse_duration(w)
    except ValueError:
        raise ToolInputError(f"window={window!r} is not a duration: use one of {', '.join(WINDOWS)}") from None
    if ns <= 0 or ns > 30 * 86400 * 10**9:
        raise ToolInputError(f"window={window!r} is out of range: use a duration from 1m to 30d")
    return w


def choose_service(
    wanted: str | None,
    services: services_tool.ListServicesResult | None,
    slos: slo_tool.SLOReport | None,
    alerts: AlertsView | None,
) -> str | None:
    """The service the page details: the one asked for, else the one a firing alert names, else the worst by
    SLO alert, else the highest error rate (list_services' order)."""
    names = [s.service for s in services.services if s.requests] if services else []
    if wanted:
        return wanted
    if alerts:
        for a in alerts.current:
            svc = a.labels.get("service")
            if a.state == "firing" and svc in names:
                return svc
    if slos:
        for g in slos.services:
            if g.alert == "page" and g.service in names:
                return g.service
    return names[0] if names else None


def collect_services(ctx: ToolContext, window: str) -> Section[services_tool.ListServicesResult]:
    return section("services", lambda: services_tool.list_services(ctx, window, None, 20_000)[0])


def collect_slos(ctx: ToolContext, window: str) -> Section[slo_tool.SLOReport]:
    return section("SLOs", lambda: slo_tool.compute_slo_report(ctx, None, window))


def collect_errors(ctx: ToolContext, service: str | None, window: str) -> Section[errors_tool.FindErrorsResult]:
    return section(
        "error groups", lambda: errors_tool.find_errors(ctx, service, window, None, "count", ERROR_GROUPS)[0]
    )


def collect_patterns(ctx: ToolContext, service: str | None, window: str) -> Section[patterns_tool.LogPatternsResult]:
    return section(
        "log patterns",
        lambda: patterns_tool.log_patterns(ctx, service, PATTERN_SEVERITY, window, None, None, LOG_PATTERNS)[0],
    )
