"""SLO arithmetic: SLI, error budget, burn rates and the multiwindow, multi-burn-rate alerts.

Pure functions over event counts, following the Google SRE Workbook, chapter "Alerting on SLOs":

- burn rate = observed bad fraction / (1 - objective): 1 spends the budget exactly over the SLO window;
- budget consumed by a period = burn rate x period / SLO window (a 1 h burn of 14.4 spends 2% of 30 days);
- time to exhaustion = remaining budget x SLO window / burn rate (30 days at 1, 50 hours at 14.4);
- alerts fire when the long AND the short window burn above the threshold: page at 14.4 over 1 h and 5 m, page
  at 6 over 6 h and 30 m, ticket at 1 over 3 d and 6 h (the workbook's table for a 30-day window).

Arithmetic is done in exact fractions (objectives are decimal percentages such as 99.9, which binary floats
cannot hold), so the workbook's figures come out exactly rather than as 14.399999999999999.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Literal

AlertStatus = Literal["page", "ticket", "ok", "no data"]
Compliance = Literal["met", "at risk", "violated", "no data"]

# The burn-rate windows reported for every SLO, (label, seconds), shortest first.
BURN_WINDOWS: tuple[tuple[str, int], ...] = (
    ("5m", 300),
    ("30m", 1800),
    ("1h", 3600),
    ("6h", 21600),
    ("1d", 86400),
    ("3d", 259200),
)
# The burn rate that "current" means for the time to exhaustion.
CURRENT_WINDOW = "1h"


@dataclass(frozen=True)
class AlertRule:
    """Fire when both windows burn faster than `burn` (the workbook's long AND short window)."""

    severity: Literal["page", "ticket"]
    long_window: str
    short_window: str
    burn: float

    def describe(self) -> str:
        return f"{self.severity}: {self.long_window} and {self.short_window} burn > {self.burn:g}"


ALERT_RULES: tuple[AlertRule, ...] = (
    AlertRule("page", "1h", "5m", 14.4),
    AlertRule("page", "6h", "30m", 6.0),
    AlertRule("ticket", "3d", "6h", 1.0),
)


@dataclass(frozen=True)
class EventCounts:
    """Good and total events over one window, and how many seconds of that window have data."""

    total: float = 0
    bad: float = 0
    covered_s: float = 0.0

    @property
    def good(self) -> float:
        return self.total - self.bad


def _frac(x: float) -> Fraction:
    # str() gives the shortest decimal that round-trips, so 99.9 becomes exactly 999/10.
    return Fraction(str(x)) if isinstance(x, float) else Fraction(x)


def sli(counts: EventCounts) -> float | None:
    """Share of good events (0..1); None without events (no data is not 100%)."""
    if counts.total <= 0:
        return None
    return float(1 - _frac(counts.bad) / _frac(counts.total))


def _burn(counts: EventCounts, objective_pct: float) -> Fraction | None:
    if counts.total <= 0:
        return None
    allowed = 1 - _frac(objective_pct) / 100
    return (_frac(counts.bad) / _frac(counts.total)) / allowed


def burn_rate(counts: EventCounts, objective_pct: float) -> float | None:
    """Observed bad fraction / (1 - objective); None when the window has no events."""
    b = _burn(counts, objective_pct)
    return None if b is None else float(b)


def budget_consumed(burn: float, period_s: float, window_s: float) -> float:
    """Share of the SLO window's error budget that `period_s` seconds at `burn` spend."""
    return float(_frac(burn) * _frac(period_s) / _frac(window_s))


def time_to_exhaustion_s(remaining: float, burn: float | None, window_s: float) -> float | None:
    """Seconds until the remaining budget (a share, 1 = untouched) is spent at `burn`; None when never or
    unknown, 0 when already spent."""
    if burn is None or burn <= 0:
        return None
    if remaining <= 0:
        return 0.0
    return float(_frac(remaining) * _frac(window_s) / _frac(burn))


def alert_status(
    burns: Mapping[str, float | None],
    rules: Sequence[AlertRule] = ALERT_RULES,
    bad_events: Mapping[str, float] | None = None,
    min_bad_events: float = 0,
) -> tuple[AlertStatus, list[AlertRule], list[AlertRule]]:
    """(status, firing rules, rules held back): status is the most severe firing rule's severity ("page" >
    "ticket" > "ok").

    A rule fires when its long AND short window burn above its threshold. A rule whose windows have no data
    cannot fire; with no data in any rule's windows the status is "no data". With `min_bad_events`, a rule
    whose long window holds fewer bad events is held back: at low traffic one failure is a huge burn rate
    (the workbook's "low-traffic services" problem), and a couple of failures are not worth a page.
    """
    firing: list[AlertRule] = []
    held: list[AlertRule] = []
    for r in rules:
        lo, sh = burns.get(r.long_window), burns.get(r.short_window)
        if lo is None or sh is None or not (lo > r.burn and sh > r.burn):
            continue
        if bad_events is not None and bad_events.get(r.long_window, 0) < min_bad_events:
            held.append(r)
        else:
            firing.append(r)
    if any(r.severity == "page" for r in firing):
        return "page", firing, held
    if firing:
        return "ticket", firing, held
    if all(burns.get(w) is None for r in rules for w in (r.long_window, r.short_window)):
        return "no data", firing, held
    return "ok", firing, held


@dataclass
class SLOEvaluation:
    """Everything the report says about one SLO over one evaluation."""

    objective_pct: float
    window_s: float
    range_sli: float | None
    range_counts: EventCounts
    window_sli: float | None
    window_counts: EventCounts
    coverage: float  # share of the SLO window that has data (0..1)
    budget_consumed: float | None  # share of the window's budget spent (may exceed 1)
    budget_remaining: float | None
    burn_rates: dict[str, float | None]
    alert: AlertStatus
    firing: list[AlertRule] = field(default_factory=list)
    held: list[AlertRule] = field(default_factory=list)  # would fire, but too few bad events
    exhaustion_s: float | None = None
    compliance: Compliance = "no data"


def evaluate(
    objective_pct: float,
    window_s: float,
    range_counts: EventCounts,
    window_counts: EventCounts,
    burn_counts: Mapping[str, EventCounts],
    rules: Sequence[AlertRule] = ALERT_RULES,
    min_bad_events: float = 0,
) -> SLOEvaluation:
    """Evaluate one SLO from its event counts: over the report range, over the SLO window (as far as data
    covers it), and over each burn-rate window.

    Budget consumed extrapolates the observed traffic to the whole window (the workbook's uniform-traffic
    assumption): a window with 1 day of data at burn 2 has spent 2 x 1/30 of a 30-day budget.
    Compliance: "violated" once more than the window's budget is spent; "at risk" when an alert fires or the window's
    SLI is below the objective (burn > 1: the budget runs out before the window ends if nothing changes);
    "met" otherwise; "no data" without events in the window.
    """
    burns = {label: burn_rate(c, objective_pct) for label, c in burn_counts.items()}
    bad = {label: c.bad for label, c in burn_counts.items()}
    status, firing, held = alert_status(burns, rules, bad, min_bad_events)
    window_burn = _burn(window_counts, objective_pct)
    coverage = min(1.0, window_counts.covered_s / window_s) if window_s > 0 else 0.0
    consumed: float | None = None
    remaining: float | None = None
    exhaustion: float | None = None
    compliance: Compliance = "no data"
    if window_burn is not None:
        spent = window_burn * _frac(window_counts.covered_s) / _frac(window_s)
        consumed, remaining = float(spent), float(1 - spent)
        exhaustion = time_to_exhaustion_s(remaining, burns.get(CURRENT_WINDOW), window_s)
        if spent > 1:
            compliance = "violated"
        elif status in ("page", "ticket") or window_burn > 1:
            compliance = "at risk"
        else:
            compliance = "met"
    return SLOEvaluation(
        objective_pct=objective_pct,
        window_s=window_s,
        range_sli=sli(range_counts),
        range_counts=range_counts,
        window_sli=sli(window_counts),
        window_counts=window_counts,
        coverage=coverage,
        budget_consumed=consumed,
        budget_remaining=remaining,
        burn_rates=burns,
        alert=status,
        firing=firing,
        held=held,
        exhaustion_s=exhaustion,
        compliance=compliance,
    )
