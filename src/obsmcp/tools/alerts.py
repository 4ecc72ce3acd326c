"""Alert tools: list_alerts, list_alert_rules, and (with --enable-writes) create/update/delete_alert_rule and
silence_alert; plus the subscribable resource obsmcp://alerts/firing (obsmcp.alerting.push)."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Annotated, Any

from mcp.server.mcpserver import MCPServer
from mcp.types import CallToolResult, SubscribeRequestParams, ToolAnnotations, UnsubscribeRequestParams
from pydantic import BaseModel, Field, ValidationError

from obsmcp.alerting.engine import AlertEngine
from obsmcp.alerting.evaluate import Sample
from obsmcp.alerting.model import Alert, AlertRule
from obsmcp.alerting.push import FIRING_URI, FiringResourcePush, LegacySubscriptions, ThreadSafeBus
from obsmcp.alerting.rules import RuleError
from obsmcp.result import UNTRUSTED_NOTE, Fence, ListResult, estimate_tokens, scrub
from obsmcp.timerange import format_duration
from obsmcp.tools.context import ToolContext, ToolInputError

Run = Callable[[str, Callable[[], tuple[BaseModel, str]]], Awaitable[CallToolResult]]

READ_ONLY = ToolAnnotations(read_only_hint=True, destructive_hint=False, idempotent_hint=True, open_world_hint=False)
CREATE = ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=False, open_world_hint=False)
CHANGE = ToolAnnotations(read_only_hint=False, destructive_hint=True, idempotent_hint=True, open_world_hint=False)
SILENCE = ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=False, open_world_hint=False)

RULE_HELP = (
    "rule fields: name, kind (threshold|burn_rate|log_pattern|log_rate), severity (critical|warning|info), for "
    "('2m'), window ('5m'), op (> >= < <=), threshold; threshold: metric (+aggregation, filters, group_by, backend) "
    "or signal (error_rate|request_rate|latency_p50|p95|p99, +service) or promql+backend; burn_rate: slo (name, "
    "'service/availability', '*'); log_rate: min_severity, threshold per min; log_pattern: min_count, baseline"
)


class AlertView(BaseModel):
    rule: str
    state: str
    severity: str
    since: str
    firing_since: str | None = None
    value: float | None = None
    threshold: float | None = None
    labels: dict[str, str]
    cause: str
    silenced_by: str | None = None


class ListAlertsResult(ListResult):
    alerts: list[AlertView] = Field(default_factory=list)
    rules_evaluating: int = 0
    last_evaluated: str | None = None
    rule_errors: dict[str, str] = Field(default_factory=dict, description="rule -> why its evaluation failed")


class RuleView(BaseModel):
    name: str
    kind: str
    severity: str
    source: str = Field(description="config | default | api (made by a tool)")
    condition: str
    firing: int = 0
    pending: int = 0
    error: str | None = None
    rule: dict[str, Any] = Field(description="the rule's fields")


class ListAlertRulesResult(ListResult):
    rules: list[RuleView] = Field(default_factory=list)


class RuleChangeResult(BaseModel):
    action: str
    rule: dict[str, Any] | None = None
    dry_run: list[str] = Field(default_factory=list, description="what the rule matches now (one line each)")


class SilenceResult(BaseModel):
    id: str
    rule: str | None
    matchers: dict[str, str]
    ends_at: str
    muted_now: int = Field(description="alerts this silence mutes now")


def _iso(t: datetime | None) -> str | None:
    return None if t is None else t.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _view(a: Alert) -> AlertView:
    return AlertView(
        rule=a.rule,
        state=a.state,
        severity=a.severity,
        since=_iso(a.since) or "",
        firing_since=_iso(a.firing_since),
        value=None if a.value is None else round(a.value, 6),
        threshold=a.threshold,
        labels=a.labels,
        cause=a.cause,
        silenced_by=a.silenced_by,
    )


def condition(rule: AlertRule) -> str:
    """One line: what the rule watches."""
    if rule.kind == "burn_rate":
        windows = rule.windows or [("1h", "5m", 14.4), ("6h", "30m", 6.0), ("3d", "6h", 1.0)]
        pairs = ", ".join(f"{lo}&{sh}>{b:g}x" for lo, sh, b in windows)
        return f"SLO {rule.slo} burn {pairs}"
    if rule.kind == "log_pattern":
        where = f" in {rule.service}" if rule.service else ""
        return (
            f"new {rule.min_severity}+ log pattern{where} >= {rule.min_count}x in {rule.window} "
            f"(baseline {rule.baseline})"
        )
    if rule.kind == "log_rate":
        where = f" of {rule.service}" if rule.service else ""
        return f"{rule.min_severity}+ logs/min{where} over {rule.window} {rule.op} {rule.threshold:g}"
    if rule.promql:
        return f"promql {rule.promql} {rule.op} {rule.threshold:g} ({rule.backend})"
    if rule.signal:
        return f"{rule.service or 'each service'} {rule.signal} over {rule.window} {rule.op} {rule.threshold:g}"
    where = f" {rule.filters}" if rule.filters else ""
    on = f" ({rule.backend})" if rule.backend else ""
    return f"{rule.metric}{where} {rule.aggregation} over {rule.window} {rule.op} {rule.threshold:g}{on}"


def _ago(t: datetime, now: datetime) -> str:
    seconds = int((now - t).total_seconds())
    return f"{seconds}s" if seconds < 60 else format_duration(seconds * 1e9)


def _repeats_a_page(a: Alert, paging: set[tuple[str, str]]) -> bool:
    """A lower-severity burn-rate alert of an SLO that already pages (the text shows the page; Alertmanager's
    usual inhibition of the ticket by the page)."""
    key = (a.labels.get("service", ""), a.labels.get("slo", ""))
    return a.severity != "critical" and bool(key[1]) and key in paging


def alerts_answer(
    engine: AlertEngine, ctx: ToolContext, service: str | None, max_tokens: int | None
) -> tuple[ListAlertsResult, str]:
    engine.ensure_fresh()
    rules = engine.rules()
    alerts = engine.current()
    if service:
        svc = ctx.resolve(service) or service
        alerts = [a for a in alerts if a.labels.get("service") == svc]
    alerts.sort(key=lambda a: (a.state != "firing", {"critical": 0, "warning": 1}.get(a.severity, 2), a.rule))
    errors = engine.errors()
    now = datetime.now(UTC)
    last = engine.last_round
    head = (
        f"list_alerts: {sum(a.state == 'firing' for a in alerts)} firing, {sum(a.state == 'pending' for a in alerts)} "
        f"pending; {len(rules)} rules evaluating every {engine.settings.alert_interval} "
        f"(last round {_iso(last) or 'never'})"
    )
    res = ListAlertsResult(
        rules_evaluating=len(rules), last_evaluated=_iso(last), rule_errors=errors, total=len(alerts)
    )
    lines: list[str] = []
    budget = ctx.budget(max_tokens)
    paging = {
        (a.labels.get("service", ""), a.labels.get("slo", ""))
        for a in alerts
        if a.state == "firing" and a.severity == "critical" and "slo" in a.labels
    }
    shown = [a for a in alerts if not _repeats_a_page(a, paging)]
    if len(shown) < len(alerts):
        res.notes.append(
            f"{len(alerts) - len(shown)} lower-severity alerts of SLOs that already page are left out of this text "
            "(they are in the structured content)"
        )
    for a in shown:
        silenced = f" SILENCED by {a.silenced_by}" if a.silenced_by else ""
        when = (
            f"for {_ago(a.firing_since, now)} (since {_iso(a.firing_since)})"
            if a.firing_since
            else f"for {_ago(a.since, now)} (since {_iso(a.since)})"
        )
        labels = ", ".join(f"{k}={v}" for k, v in sorted(a.labels.items()) if k not in ("alertname", "severity"))
        line = f"{a.state.upper()} {a.severity} {a.rule} {when}{silenced} {{{labels}}} :: {a.cause}"
        line = scrub(line, max_chars=400)
        if estimate_tokens("\n".join([head, *lines, line])) > budget - 60 and lines:
            res.truncated = True
            res.notes.append(
                f"{len(shown) - len(lines)} more alerts not shown to fit ~{budget} tokens: filter by service"
            )
            break
        lines.append(line)
        res.alerts.append(_view(a))
    res.alerts += [_view(a) for a in alerts if _repeats_a_page(a, paging)]
    res.returned = len(res.alerts)
    blocks = [head]
    if not alerts:
        names = ", ".join(r.name for r in rules[:12]) + (" ..." if len(rules) > 12 else "")
        blocks.append(f"no alerts: nothing is firing or pending{' for ' + service if service else ''}. Rules: {names}")
    else:
        blocks.append(Fence("alerts").wrap(lines))
        res.notes.append(UNTRUSTED_NOTE)
    if errors:
        blocks.append("rules that failed to evaluate: " + "; ".join(f"{k}: {v}" for k, v in sorted(errors.items())))
    return res, "\n".join([*blocks, *res.notes])


def rules_answer(engine: AlertEngine, max_tokens: int | None) -> tuple[ListAlertRulesResult, str]:
    rules = engine.rules()
    current = engine.current()
    errors = engine.errors()
    res = ListAlertRulesResult(total=len(rules))
    lines = []
    for r in rules:
        mine = [a for a in current if a.rule == r.name]
        view = RuleView(
            name=r.name,
            kind=r.kind,
            severity=r.severity,
            source=r.source,
            condition=condition(r),
            firing=sum(a.state == "firing" for a in mine),
            pending=sum(a.state == "pending" for a in mine),
            error=errors.get(r.name),
            rule=r.model_dump(by_alias=True, exclude_defaults=True),
        )
        res.rules.append(view)
        state = f"{view.firing} firing, {view.pending} pending" if mine else "ok"
        extra = f" for {r.for_}" if r.for_ != "0s" else ""
        err = f" ERROR: {view.error}" if view.error else ""
        lines.append(f"{r.name} [{r.source}, {r.kind}, {r.severity}{extra}] {view.condition} -> {state}{err}")
    res.returned = len(res.rules)
    head = f"list_alert_rules: {len(rules)} rules (config, default burn-rate, made by tools)"
    if not rules:
        lines.append("no rules: add [[alerts]] to the config, or create_alert_rule (with --enable-writes)")
    return res, "\n".join([head, *lines])


def _rule_from(body: dict[str, Any]) -> AlertRule:
    try:
        return AlertRule.model_validate({**body, "source": "api"})
    except ValidationError as e:
        parts = []
        for err in e.errors():
            field = ".".join(str(p) for p in err["loc"])
            msg = str(err["msg"]).removeprefix("Value error, ")
            parts.append(f"{field}: {msg}" if field else msg)
        raise ToolInputError(f"the rule is invalid: {'; '.join(parts)}. {RULE_HELP}") from None


def _dry_lines(samples: list[Sample]) -> list[str]:
    if not samples:
        return ["dry run: the rule evaluates, and its condition does not hold now"]
    return [f"dry run: holds now for {s.labels or 'the whole system'}: {s.cause}" for s in samples[:10]]


def register(mcp: MCPServer[Any], ctx: ToolContext, engine: AlertEngine, run: Run, bus: ThreadSafeBus | None) -> None:
    """The alert tools and the firing-alerts resource. `bus`: the server's SubscriptionBus (modern-era push)."""

    @mcp.tool(annotations=READ_ONLY)
    async def list_alerts(
        service: Annotated[str | None, Field(description="only this service's alerts")] = None,
        max_tokens: Annotated[int | None, Field(description="answer budget")] = None,
    ) -> Annotated[CallToolResult, ListAlertsResult]:
        """Firing and pending alerts: since when, value, labels, a one-line cause; or says none fire."""
        return await run("list_alerts", lambda: alerts_answer(engine, ctx, service, max_tokens))

    @mcp.tool(annotations=READ_ONLY)
    async def list_alert_rules(
        max_tokens: Annotated[int | None, Field(description="answer budget")] = None,
    ) -> Annotated[CallToolResult, ListAlertRulesResult]:
        """Alert rules (config, default SLO burn-rate, tool-made) with their state."""
        return await run("list_alert_rules", lambda: rules_answer(engine, max_tokens))

    def changed(action: str, rule: AlertRule | None, samples: list[Sample]) -> tuple[BaseModel, str]:
        body = rule.model_dump(by_alias=True, exclude_defaults=True) if rule else None
        res = RuleChangeResult(action=action, rule=body, dry_run=_dry_lines(samples) if rule else [])
        text = f"{action}" + (f": {rule.name} ({condition(rule)})" if rule else "")
        return res, "\n".join([text, *res.dry_run])

    def guarded(fn: Callable[[], tuple[BaseModel, str]]) -> Callable[[], tuple[BaseModel, str]]:
        def call() -> tuple[BaseModel, str]:
            try:
                return fn()
            except RuleError as e:
                raise ToolInputError(str(e)) from None

        return call

    @mcp.tool(
        annotations=CREATE,
        description=f"Create an alert rule after a dry run (refused if it cannot evaluate). {RULE_HELP}",
    )
    async def create_alert_rule(
        rule: Annotated[dict[str, Any], Field(description="the rule's fields")],
    ) -> Annotated[CallToolResult, RuleChangeResult]:
        def do() -> tuple[BaseModel, str]:
            r = _rule_from(rule)
            samples = engine.create_rule(r)
            return changed("created", r, samples)

        return await run("create_alert_rule", guarded(do))

    @mcp.tool(annotations=CHANGE)
    async def update_alert_rule(
        name: str, changes: Annotated[dict[str, Any], Field(description="fields to change")]
    ) -> Annotated[CallToolResult, RuleChangeResult]:
        """Change a tool-made alert rule (dry run first); config rules cannot change."""

        def do() -> tuple[BaseModel, str]:
            r, samples = engine.update_rule(name, changes)
            return changed("updated", r, samples)

        return await run("update_alert_rule", guarded(do))

    @mcp.tool(annotations=CHANGE)
    async def delete_alert_rule(name: str) -> Annotated[CallToolResult, RuleChangeResult]:
        """Delete a tool-made alert rule; its alerts resolve."""

        def do() -> tuple[BaseModel, str]:
            r = engine.delete_rule(name)
            body = r.model_dump(by_alias=True, exclude_defaults=True)
            return RuleChangeResult(
                action="deleted", rule=body
            ), f"deleted: {name} ({condition(r)}); its alerts resolve"

        return await run("delete_alert_rule", guarded(do))

    @mcp.tool(annotations=SILENCE)
    async def silence_alert(
        duration: Annotated[str, Field(description="e.g. '2h'")],
        matchers: Annotated[dict[str, str] | None, Field(description='labels, e.g. {"service": "checkout"}')] = None,
        rule: Annotated[str | None, Field(description="rule name")] = None,
        comment: str = "",
    ) -> Annotated[CallToolResult, SilenceResult]:
        """Mute notifications of matching alerts for a while (they stay listed)."""

        def do() -> tuple[BaseModel, str]:
            s = engine.add_silence(duration, matchers or {}, rule, comment, "mcp")
            muted = sum(a.silenced_by == s.id for a in engine.current())
            res = SilenceResult(
                id=s.id, rule=s.rule, matchers=s.matchers, ends_at=_iso(s.ends_at) or "", muted_now=muted
            )
            return (
                res,
                f"silence {s.id} until {res.ends_at}: rule={s.rule or 'any'} matchers={s.matchers}; mutes {muted} now",
            )

        return await run("silence_alert", guarded(do))

    @mcp.resource(
        FIRING_URI, name="alerts-firing", description="firing alerts (JSON); subscribe", mime_type="application/json"
    )
    def firing_resource() -> str:
        engine.ensure_fresh()
        return json.dumps([a.model_dump(mode="json") for a in engine.firing()])

    legacy = LegacySubscriptions({FIRING_URI})
    low = mcp._lowlevel_server
    low.add_request_handler("resources/subscribe", SubscribeRequestParams, legacy.subscribe)
    low.add_request_handler("resources/unsubscribe", UnsubscribeRequestParams, legacy.unsubscribe)
    engine.watch(FiringResourcePush(bus or ThreadSafeBus(), legacy))
