"""Which rules apply: the config's `[[alerts]]`, the default burn-rate rules, and rules created by tools; and
the checks that a rule can evaluate here (its SLO exists, its backend is a Prometheus, ...), with the fix."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from obsmcp.alerting.model import AlertRule
from obsmcp.config import Settings

# The SRE Workbook's multiwindow, multi-burn-rate alerts for a 30-day SLO (obsmcp.analysis.slo.ALERT_RULES),
# split as Sloth and Pyrra split them: the two fast ones page, the slow one opens a ticket.
PAGE_WINDOWS: list[tuple[str, str, float]] = [("1h", "5m", 14.4), ("6h", "30m", 6.0)]
TICKET_WINDOWS: list[tuple[str, str, float]] = [("3d", "6h", 1.0)]
DEFAULT_SLO_NAMES = ("availability", "latency-p95", "latency-p99", "error-rate")


class RuleError(ValueError):
    """A rule that cannot evaluate here; the message says why and what to write instead."""


def default_rules(settings: Settings) -> list[AlertRule]:
    """Burn-rate rules over every SLO: the configured ones, and the defaults of every service seen without any
    (slo = '*'). One alert per (service, SLO) that burns; none when `alert_default_rules` is off."""
    if not settings.alert_default_rules:
        return []
    return [
        AlertRule(
            name="slo-burn-page",
            kind="burn_rate",
            severity="critical",
            slo="*",
            windows=PAGE_WINDOWS,
            summary="an SLO's error budget burns fast (1h & 5m over 14.4x, or 6h & 30m over 6x)",
            source="default",
        ),
        AlertRule(
            name="slo-burn-ticket",
            kind="burn_rate",
            severity="warning",
            slo="*",
            windows=TICKET_WINDOWS,
            summary="an SLO's error budget burns faster than it refills (3d & 6h over 1x)",
            source="default",
        ),
    ]


def effective_rules(settings: Settings, api_rules: Iterable[AlertRule] = ()) -> list[AlertRule]:
    """Config rules, then default rules (a config rule with the same name replaces one), then tool-made rules
    (never named like a config or default rule: the tools refuse that)."""
    config = list(settings.alerts)
    names = {r.name for r in config}
    out = config + [r for r in default_rules(settings) if r.name not in names]
    names |= {r.name for r in out}
    out += [r for r in api_rules if r.name not in names]
    return out


def check_rule(rule: AlertRule, settings: Settings) -> None:
    """Raise RuleError when `rule` cannot evaluate with these settings (an unknown SLO or backend, a backend of
    the wrong kind). The rule's own shape is checked by the model."""
    kinds = {b.name: b.kind for b in settings.backends}
    proms = ", ".join(n for n, k in kinds.items() if k == "prometheus") or "none configured"
    if rule.backend is not None:
        if rule.backend not in kinds and rule.backend != "store":
            raise RuleError(
                f"backend = {rule.backend!r} names no configured backend (Prometheus backends: {proms}): fix the "
                "name, add a [[backends]] table for it, or remove backend to use the store"
            )
        if rule.promql is not None and kinds.get(rule.backend) != "prometheus":
            raise RuleError(
                f"promql runs on a Prometheus backend; {rule.backend!r} is "
                f"{kinds.get(rule.backend, 'the store')}: name one of: {proms}"
            )
        if rule.kind in ("log_pattern", "log_rate") and rule.backend != "store":
            raise RuleError("log rules count the store's logs: remove backend")
    if rule.kind == "burn_rate" and rule.slo is not None:
        slo_problem = _slo_problem(rule.slo, settings)
        if slo_problem:
            raise RuleError(slo_problem)


def _slo_problem(ref: str, settings: Settings) -> str | None:
    if ref == "*":
        return None
    names = [s.name for s in settings.slos]
    if ref in names:
        return None
    service, _, name = ref.partition("/")
    if service and name in DEFAULT_SLO_NAMES:
        own = [s.name for s in settings.slos if s.service == service]
        if own:
            return (
                f"slo = {ref!r}: {service} has SLOs in the config ({', '.join(own)}), so no default ones: name one "
                "of those"
            )
        return None
    listed = ", ".join(names) or "none in the config"
    return (
        f"slo = {ref!r} names no SLO: use a configured SLO's name ({listed}), '<service>/<default SLO>' with "
        f"{', '.join(DEFAULT_SLO_NAMES)} (e.g. 'checkout-service/availability'), or '*' for every SLO"
    )


def check_rules(rules: Sequence[AlertRule], settings: Settings) -> None:
    """check_rule for each, the message naming the rule."""
    for rule in rules:
        try:
            check_rule(rule, settings)
        except RuleError as e:
            raise RuleError(f"alert rule {rule.name!r}: {e}") from None
