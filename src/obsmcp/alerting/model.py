"""Alert rules, alert instances and their transitions: the contract between the rule engine (engine.py), the
tools (tools/alerts.py), notifications (notify.py), Prometheus rule export (export.py) and the status page.

A rule is data: rules as code come from the config file's `[[alerts]]` tables (or OBSMCP_ALERTS as JSON), rules
created by tools are kept in the store; both have this shape.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

RULE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")
DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)\s*$", re.IGNORECASE)
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}
# The burn-rate windows an SLO is counted over (obsmcp.analysis.slo.BURN_WINDOWS): what `windows` may name.
BURN_WINDOW_LABELS = ("5m", "30m", "1h", "6h", "1d", "3d")
MAX_DURATION_S = 90 * 86400  # the longest rule window / for / baseline and silence: 90 days
MAX_DURATION = "90d"
SEVERITIES = ("trace", "debug", "info", "warn", "warning", "error", "fatal")

RuleKind = Literal["threshold", "burn_rate", "log_pattern", "log_rate"]
# RED series of a service (threshold rules with `service` + `signal` instead of `metric`).
RedSignal = Literal["error_rate", "request_rate", "latency_p50", "latency_p95", "latency_p99"]
Comparison = Literal[">", ">=", "<", "<="]
Severity = Literal["critical", "warning", "info"]
AlertState = Literal["pending", "firing", "resolved"]


def duration_s(text: str) -> float:
    """'30s', '5m', '1h', '7d' -> seconds. Raises ValueError with what to write instead."""
    m = DURATION.match(text)
    if not m:
        raise ValueError(f"{text!r} is not a duration: write a number and a unit (s, m, h, d), e.g. '5m'")
    return float(m.group(1)) * _UNIT_S[m.group(2).lower()]


class AlertRule(BaseModel):
    """One alert rule. Which fields apply depends on `kind`:

    - threshold: either `metric` (+ `aggregation`, `filters`, optional `backend` / `promql`) or `service` +
      `signal` (a RED series); fires while `value <op> threshold` over `window`.
    - burn_rate: `slo` names an SLO (config or default `service/name`); multi-window, multi-burn-rate (Google SRE
      workbook: 1h & 5m at 14.4x page, 6h & 30m at 6x page, 3d & 6h at 1x ticket) unless `windows` overrides.
    - log_pattern: a log pattern seen at least `min_count` times in `window` that was not seen in the `baseline`
      before it (optionally for one `service`, at or above `min_severity`).
    - log_rate: log records at or above `min_severity` (default ERROR) per minute over `window`, `<op> threshold`.
    """

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    name: str = Field(description="unique rule name, e.g. checkout-error-rate")
    kind: RuleKind
    severity: Severity = "warning"
    for_: str = Field("0s", alias="for", description="how long the condition must hold before firing, e.g. '2m'")
    summary: str | None = Field(None, description="one line a person reads; default: generated from the rule")
    labels: dict[str, str] = Field(default_factory=dict, description="extra labels on every alert of this rule")
    # threshold / log_rate
    service: str | None = None
    signal: RedSignal | None = None
    metric: str | None = None
    aggregation: Literal["avg", "min", "max", "sum", "rate", "p50", "p95", "p99"] = "avg"
    filters: dict[str, str] = Field(default_factory=dict)
    group_by: list[str] = Field(default_factory=list, description="one alert per distinct value of these labels")
    backend: str | None = Field(None, description="a configured backend to evaluate against (default: the store)")
    promql: str | None = Field(None, description="threshold on a raw PromQL expression (backend = a Prometheus)")
    op: Comparison = ">"
    threshold: float | None = None
    window: str = "5m"
    # burn_rate
    slo: str | None = None
    windows: list[tuple[str, str, float]] | None = Field(
        None, description="(long, short, burn factor) triples; default: the SRE workbook's three"
    )
    # log_pattern / log_rate
    min_severity: str = "ERROR"
    min_count: int = Field(3, ge=1)
    baseline: str = "6h"
    source: Literal["config", "api", "default"] = Field("config", description="where the rule was defined")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not RULE_NAME.match(v):
            raise ValueError(
                f"{v!r} is not a rule name: 1-64 letters, digits, '_', '.', ':' or '-', starting with a letter or digit"
            )
        return v

    @field_validator("for_", "window", "baseline")
    @classmethod
    def _duration(cls, v: str) -> str:
        if duration_s(v) > MAX_DURATION_S:
            raise ValueError(f"{v.strip()!r} is too long: at most {MAX_DURATION}, e.g. '1h' or '7d'")
        return v.strip()

    @field_validator("min_severity")
    @classmethod
    def _severity(cls, v: str) -> str:
        if v.strip().lower() not in SEVERITIES:
            raise ValueError(f"{v!r} is not a severity: use trace, debug, info, warn, error or fatal")
        return v.strip().upper()

    @model_validator(mode="after")
    def _fields_of_kind(self) -> AlertRule:
        problem = shape_problem(self)
        if problem:
            raise ValueError(problem)
        return self


def shape_problem(rule: AlertRule) -> str | None:
    """What a rule lacks (or has too much of) for its kind, and what to write instead; None when it fits."""
    sources = [n for n in ("metric", "signal", "promql") if getattr(rule, n) is not None]
    if rule.kind == "threshold":
        if len(sources) != 1:
            return (
                "a threshold rule needs exactly one of: metric = '<metric name>' (list_metrics), signal = "
                "'error_rate' | 'request_rate' | 'latency_p95' ... (a service's RED series; service = ... for one "
                f"service), or promql = '<expression>' with backend = '<a Prometheus backend>' (given: {sources})"
            )
        if rule.threshold is None:
            return "a threshold rule needs threshold = <number>, e.g. threshold = 0.05 with op = '>'"
        if rule.promql is not None and rule.backend is None:
            return "promql needs backend = '<name of a configured Prometheus backend>'"
        if rule.signal is not None and rule.backend is not None:
            return "signal (RED series) is counted from the store's spans: remove backend, or use promql"
    elif rule.kind == "burn_rate":
        if not rule.slo:
            return (
                "a burn_rate rule needs slo = '<SLO name from [[slos]]>', '<service>/<default SLO>' (availability, "
                "latency-p95, latency-p99, error-rate), or '*' (every SLO)"
            )
        if sources or rule.threshold is not None:
            return "metric, signal, promql and threshold do not apply to burn_rate rules (the SLO says what counts)"
        for w in rule.windows or ():
            bad = [x for x in w[:2] if x not in BURN_WINDOW_LABELS]
            if bad or w[2] <= 0:
                return (
                    f"windows entry {list(w)}: write [long, short, burn factor > 0] with windows from "
                    f"{', '.join(BURN_WINDOW_LABELS)}, e.g. ['1h', '5m', 14.4]"
                )
    else:
        if sources:
            return f"metric, signal and promql do not apply to {rule.kind} rules: remove them"
        if rule.kind == "log_rate" and rule.threshold is None:
            return "a log_rate rule needs threshold = <records per minute>, e.g. threshold = 10 with op = '>'"
    if rule.kind != "burn_rate" and (rule.slo is not None or rule.windows is not None):
        return "slo and windows apply to kind = 'burn_rate' only: remove them, or set kind = 'burn_rate'"
    return None


class Alert(BaseModel):
    """One alert: a rule's condition for one label set."""

    rule: str
    fingerprint: str = Field(description="stable id of rule + labels (hex)")
    state: AlertState
    severity: Severity
    labels: dict[str, str]
    value: float | None = None
    threshold: float | None = None
    since: datetime = Field(description="when the condition started to hold (pending since)")
    firing_since: datetime | None = None
    resolved_at: datetime | None = None
    cause: str = Field(description="one line: what is wrong, e.g. 'payment-service error rate 12.4% > 5% for 5m'")
    silenced_by: str | None = Field(None, description="id of the silence that mutes it")


class AlertTransition(BaseModel):
    """A change of an alert's state, as notifications and history see it."""

    alert: Alert
    previous: AlertState | None
    at: datetime


class Silence(BaseModel):
    id: str
    rule: str | None = Field(None, description="the rule it mutes (None: any rule whose labels match)")
    matchers: dict[str, str] = Field(default_factory=dict, description="labels an alert must have (exact)")
    starts_at: datetime
    ends_at: datetime
    created_by: str = "unknown"
    comment: str = ""


class Notifier(Protocol):
    """Something told about alert transitions (webhooks, MCP resource subscribers). Called from the engine's
    evaluation thread after each round that changed anything; must not block for long (queue the work)."""

    def notify(self, transitions: list[AlertTransition], firing: list[Alert]) -> None: ...
