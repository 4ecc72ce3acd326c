"""investigate: the first call an agent makes — what is wrong, since when, where, and what to look at next.

Every argument is optional. With none, it looks at the whole system over the last hour. The ranking comes
from trace structure (analysis/investigate.py: whose own time grew, where errors start), found against the
period before the incident's onset; the other analyses (SLO burn, error groups, log patterns, anomalies,
deploys) add evidence to the suspects and name the impact. The answer stays within the token budget.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, Field

from obsmcp.analysis import investigate as rca
from obsmcp.result import UNTRUSTED_NOTE, Fence, estimate_tokens, redactor_for, scrub
from obsmcp.timerange import NS_PER_S, TimeRange, format_ns, resolve_range
from obsmcp.tools.context import ToolContext, ToolInputError
from obsmcp.tools.structure import choose_sample, structure_series
from obsmcp.tools.structure import versions as structure_versions

MIN_STEP_NS = 60 * NS_PER_S
TARGET_BUCKETS = 120
CHANGE_STAT_MIN = 3.0  # t-like statistic a change point must reach to be called the onset
SUSPECTS = 3
DEPLOY_LEAD_NS = 30 * 60 * NS_PER_S
_TRACE_ID = re.compile(r"^[0-9a-fA-F]{32}$")


class Suspect(BaseModel):
    service: str
    operation: str | None = Field(None, description="the operation where the problem shows most")
    score: float = Field(description="0..1, the share of the incident's signal this service explains")
    evidence: list[str] = Field(default_factory=list)


class NextCall(BaseModel):
    tool: str
    arguments: dict[str, Any]
    why: str


class InvestigateResult(BaseModel):
    range: str
    baseline: str = Field(description="the period the incident is compared with")
    status: str = Field(description="incident | degraded | healthy | no-data")
    summary: str
    onset: str | None = Field(None, description="when the incident started (change point), ISO-8601 UTC")
    suspects: list[Suspect] = Field(default_factory=list, description="most likely root cause first")
    impact: list[str] = Field(default_factory=list, description="services that suffer, and how")
    next_calls: list[NextCall] = Field(default_factory=list)
    truncated: bool = False
    notes: list[str] = Field(default_factory=list)


@dataclass
class _Focus:
    tr: TimeRange
    service: str | None
    services: set[str] | None  # restrict suspects to these (a trace's services), None = all
    notes: list[str]


def investigate(
    ctx: ToolContext,
    service: str | None = None,
    trace_id: str | None = None,
    alert: str | None = None,
    start: str | None = None,
    end: str | None = None,
    max_tokens: int | None = None,
) -> tuple[InvestigateResult, str]:
    res = compute_investigation(ctx, service, trace_id, alert, start, end)
    return _fit(res, ctx.budget(max_tokens))


def compute_investigation(
    ctx: ToolContext,
    service: str | None = None,
    trace_id: str | None = None,
    alert: str | None = None,
    start: str | None = None,
    end: str | None = None,
) -> InvestigateResult:
    focus = _focus(ctx, service, trace_id, alert, start, end)
    tr = focus.tr
    length = tr.duration_ns
    # Look back one window length before the range: the baseline, and room to find the onset.
    full = TimeRange(tr.start_ns - length, tr.end_ns)
    step = max(MIN_STEP_NS, -(-full.duration_ns // TARGET_BUCKETS))
    step = -(-step // MIN_STEP_NS) * MIN_STEP_NS
    full = TimeRange(tr.end_ns - -(-full.duration_ns // step) * step, tr.end_ns)  # whole buckets, ending at end
    sample = choose_sample(ctx, full)
    notes = list(focus.notes)
    if sample.note:
        notes.append(sample.note)
    if sample.spans_in_range == 0:
        return InvestigateResult(
            range=tr.describe(),
            baseline="none",
            status="no-data",
            summary="No traces in this range or the hour before it: nothing to investigate from traces. "
            "Check that services export traces (list_services), or widen the range.",
            notes=notes,
        )
    series = structure_series(ctx, full, step, sample)
    edges = rca.partial_edges(series)
    if edges:
        # Said once, briefly: it happens on every call over live data.
        series = rca.without_buckets(series, edges)
        notes.append(f"the first and the newest {step // NS_PER_S}s bucket of data are left out (partly filled)")
    split = _bucket_floor(tr.start_ns, full.start_ns, step)
    with_data = sorted(b for b, n in series.traces.items() if n > 0)
    if with_data and split - with_data[0] < 3 * step:
        # Little or no data before the range (a new store, a service that just started exporting): compare
        # the two halves of what there is until the onset is found.
        split = _bucket_floor((with_data[0] + full.end_ns) // 2, full.start_ns, step)
        notes.append("little data before the range: the first part of the range serves as the baseline")
    # The strongest shift in any service's own signals is the first guess at the onset: comparing against
    # the whole window would dilute an incident that began late in it.
    shifts = _shifts(series, focus.services)
    if shifts:
        # Several services may shift (noise, or a slow ramp elsewhere): the split that makes the incident
        # clearest wins.
        split = max(
            shifts,
            key=lambda b: (
                rca.rank(_restrict(rca.compare(series, b, full.start_ns, full.end_ns), focus.services)).strength
            ),
        )
    strongest = split if shifts else None
    data_start = with_data[0] if with_data else full.start_ns
    changes = _restrict(rca.compare(series, split, full.start_ns, full.end_ns), focus.services)
    # Versions only of the services that show something of their own: reading resources costs per service.
    candidates = {s for s, c in changes.items() if rca.weak_signal(c) > 0.5}
    versions = structure_versions(ctx, series, candidates)
    ranking = rca.rank(changes, frozenset(_deploys(versions, split, data_start)))
    onset = _onset(series, ranking)
    if onset is not None and onset != split:
        split = onset
        ranking = rca.rank(
            _restrict(rca.compare(series, split, full.start_ns, full.end_ns), focus.services),
            frozenset(_deploys(versions, split, data_start)),
        )
    elif onset is None and strongest is not None and ranking.anything_wrong:
        onset = strongest
    before = TimeRange(full.start_ns, split)
    after = TimeRange(split, full.end_ns)
    res = InvestigateResult(
        range=tr.describe(),
        baseline=before.describe(),
        status="healthy",
        summary="",
        onset=format_ns(split) if onset is not None else None,
        notes=notes,
    )
    ordered = sorted(ranking.scores.items(), key=lambda kv: (-kv[1], kv[0]))
    suspects = [(s, sc) for s, sc in ordered if sc >= 0.05][:SUSPECTS]
    if ranking.anything_wrong and len(suspects) < SUSPECTS:
        # Fill the list with the services whose own signals moved most below the thresholds: weak
        # candidates, scored 0, so the agent sees what else was considered.
        chosen = {s for s, _ in suspects}
        weak = sorted(
            ((rca.weak_signal(c), s) for s, c in ranking.changes.items() if s not in chosen),
            reverse=True,
        )
        suspects += [(s, 0.0) for w, s in weak[: SUSPECTS - len(suspects)] if w > 0]
    versions_changed = _deploys(versions, split, data_start)
    if not ranking.anything_wrong or not suspects:
        res.status = "healthy"
        res.summary = (
            "Nothing clearly wrong: no service's own time or error origins rose beyond noise against "
            f"{before.describe()}."
        )
        if versions_changed:
            res.summary += " Deploys: " + "; ".join(f"{s} {v}" for s, v in versions_changed.items()) + "."
        res.next_calls = [NextCall(tool="list_services", arguments=_range_args(tr), why="RED figures per service")]
        return res
    res.status = "incident" if ranking.clear else "degraded"
    for svc, score in suspects:
        suspect = _suspect(ctx, series, svc, score, ranking, after, before, versions_changed.get(svc))
        if score == 0.0:
            suspect.evidence = ["weak candidate: its own signals moved, below the thresholds", *suspect.evidence[:1]]
        res.suspects.append(suspect)
    res.impact = _impact(ctx, ranking, {s for s, _ in suspects})
    top = res.suspects[0]
    shares = {
        "latency": ranking.latency_share.get(top.service, 0.0),
        "errors": ranking.error_share.get(top.service, 0.0),
        "extra calls": ranking.work_share.get(top.service, 0.0),
    }
    kind = max(shares, key=lambda k: shares[k])
    since = f" since {format_ns(split)}" if onset is not None else ""
    res.summary = (
        ("" if ranking.clear else "A small shift, possibly noise (below twice the noise thresholds). ")
        + f"Most likely origin: {top.service}"
        + (f" ({top.operation})" if top.operation else "")
        + f" — {kind}{since}. "
        + (f"{len(res.impact)} other service(s) affected." if res.impact else "")
    )
    res.next_calls = _next_calls(ctx, top, kind, after)
    return res


def _bucket_floor(t: int, origin: int, step: int) -> int:
    return origin + max(0, (t - origin) // step) * step


def _restrict(changes: dict[str, rca.ServiceChange], services: set[str] | None) -> dict[str, rca.ServiceChange]:
    if services is None:
        return changes
    return {s: c for s, c in changes.items() if s in services}


def _signals(series: rca.StructureSeries, svc: str) -> tuple[list[int], dict[str, list[float]]]:
    buckets, own, orig, spans = rca.service_signal(series, svc)
    return buckets, {"latency": own, "errors": orig, "work": spans}


def _shifts(series: rca.StructureSeries, services: set[str] | None, keep: int = 4) -> list[int]:
    """Buckets where some service's own time, error origins or work shifts up clearly, strongest first."""
    found: list[tuple[float, int]] = []
    for svc in series.services:
        if services is not None and svc not in services:
            continue
        buckets, signals = _signals(series, svc)
        for values in signals.values():
            cp = rca.change_point(values)
            if cp is not None and cp[1] >= CHANGE_STAT_MIN:
                found.append((cp[1], buckets[cp[0]]))
    out: list[int] = []
    for _, b in sorted(found, reverse=True):
        if b not in out:
            out.append(b)
    return out[:keep]


def _onset(series: rca.StructureSeries, ranking: rca.Ranking) -> int | None:
    """The earliest clear change point in the leading suspects' own time, error origins or work."""
    if not ranking.anything_wrong:
        return None
    leaders = [s for s, sc in sorted(ranking.scores.items(), key=lambda kv: -kv[1]) if sc >= 0.2][:2]
    shares = {"latency": ranking.latency_share, "errors": ranking.error_share, "work": ranking.work_share}
    found: list[int] = []
    for svc in leaders:
        buckets, signals = _signals(series, svc)
        # Only the signals that make the service a suspect: a chance wiggle in another must not move the onset.
        for kind, values in signals.items():
            if not shares[kind].get(svc):
                continue
            cp = rca.change_point(values)
            if cp is not None and cp[1] >= CHANGE_STAT_MIN:
                found.append(buckets[cp[0]])
    return min(found) if found else None


def _focus(
    ctx: ToolContext,
    service: str | None,
    trace_id: str | None,
    alert: str | None,
    start: str | None,
    end: str | None,
) -> _Focus:
    notes: list[str] = []
    tr = resolve_range(start, end)
    svc = ctx.resolve(service) if service else None
    services: set[str] | None = None
    if trace_id:
        tid = trace_id.strip().lower()
        if not _TRACE_ID.match(tid):
            raise ToolInputError(f"trace_id {trace_id!r} is not 32 hex characters: pass a trace id from search_traces")
        d = ctx.dialect
        first_ts = 'min("Timestamp")'
        _, rows = ctx.db.query(
            f'SELECT "ServiceName", {d.epoch_ns(first_ts)} FROM otel_traces WHERE "TraceId" = ? GROUP BY 1',
            [tid],
        )
        if not rows:
            raise ToolInputError(f"trace {tid} is not in the store: check the id, or search_traces to find one")
        services = {str(r[0]) for r in rows}
        if not start:
            t = min(int(r[1]) for r in rows)
            tr = TimeRange(t - 30 * 60 * NS_PER_S, min(t + 30 * 60 * NS_PER_S, tr.end_ns))
        notes.append(f"suspects limited to the {len(services)} services of trace {tid}")
    if alert and alert.strip():
        named = _services_named_in(ctx, alert)
        if named and svc is None and services is None:
            notes.append("alert names " + ", ".join(sorted(named)) + "; the whole system is still considered")
    if svc is not None:
        notes.append(f"focused on {svc}: every service is ranked, as the origin is often downstream of it")
    return _Focus(tr, svc, services, notes)


def _services_named_in(ctx: ToolContext, text: str) -> set[str]:
    low = text.lower()
    return {s for s in ctx.known_services() if s.lower() in low}


def _suspect(
    ctx: ToolContext,
    series: rca.StructureSeries,
    svc: str,
    score: float,
    ranking: rca.Ranking,
    after: TimeRange,
    before: TimeRange,
    version: str | None,
) -> Suspect:
    c = ranking.changes[svc]
    ev: list[str] = []
    op: str | None = None
    if ranking.latency_share.get(svc):
        ev.append(
            f"own time per request {c.exclusive_ms_before:.1f} -> {c.exclusive_ms_after:.1f} ms "
            f"({ranking.latency_share[svc]:.0%} of the added latency is attributed here)"
        )
    if ranking.error_share.get(svc):
        ev.append(
            f"errors starting here: {c.origins_before:.1f} -> {c.origins_after:.1f} per 1k requests "
            f"({ranking.error_share[svc]:.0%} of new errors)"
        )
    if ranking.work_share.get(svc):
        ev.append(
            f"work: {c.spans_before:.1f} -> {c.spans_after:.1f} spans per request "
            f"({ranking.work_share[svc]:.0%} of the added calls)"
        )
    ev.append(
        f"its requests: mean {c.entry_ms_before:.0f} -> {c.entry_ms_after:.0f} ms, "
        f"errors {c.entry_error_rate_before:.1%} -> {c.entry_error_rate_after:.1%}"
    )
    if version:
        ev.append(f"deploy: {version}")
    ops = _operation_lines(rca.operation_changes(series, svc, after.start_ns, before.start_ns, after.end_ns))
    if ops:
        op = ops[0][0]
        for name, line in ops[:2]:
            ev.append(f"{name}: {line}")
    msgs = _error_messages(ctx, svc, after)
    if msgs:
        fence = Fence("error")
        redact = redactor_for(ctx.settings)
        ev.append(
            "top errors: " + fence.wrap([scrub(m, redact_secrets=redact, max_chars=140) + f" (x{n})" for m, n in msgs])
        )
    if score > 0:
        logs = _new_log_patterns(ctx, svc, after)
        if logs:
            ev.append("new or rising log patterns: " + Fence("log").wrap(logs))
    return Suspect(service=svc, operation=op, score=round(score, 3), evidence=ev)


def _new_log_patterns(ctx: ToolContext, svc: str, after: TimeRange) -> list[str]:
    """Warn-and-above log templates of the service that appeared or grew since the onset (at most two)."""
    from obsmcp.tools.patterns import compute_log_patterns

    analysis = compute_log_patterns(
        ctx, svc, "warn", format_ns(after.start_ns), format_ns(after.end_ns), baseline="previous"
    )
    out = []
    for p in analysis.new_or_rising()[:2]:
        change = "new" if p.change == "new" else f"x{p.ratio:.1f}" if p.ratio else p.change
        template = scrub(p.template, redact_secrets=redactor_for(ctx.settings), max_chars=140)
        out.append(f"{p.severity} {template} ({p.count}, {change})")
    return out


def _operation_lines(changes: list[rca.OperationChange]) -> list[tuple[str, str]]:
    out = []
    for o in changes:
        if o.score <= 0.5:
            break
        parts = [f"mean {o.mean_ms_before:.1f} -> {o.mean_ms_after:.1f} ms"]
        if abs(o.calls_after - o.calls_before) >= 0.5:
            parts.append(f"{o.calls_before:.1f} -> {o.calls_after:.1f} calls/request")
        if o.errors_after - o.errors_before >= 1:
            parts.append(f"errors {o.errors_before:.1f} -> {o.errors_after:.1f} per 1k requests")
        out.append((o.name, ", ".join(parts)))
    return out


def _error_messages(ctx: ToolContext, svc: str, after: TimeRange) -> list[tuple[str, int]]:
    d = ctx.dialect
    ts = d.ts_param()
    _, rows = ctx.db.query(
        'SELECT coalesce(nullif("StatusMessage", \'\'), "SpanName"), count(*) FROM otel_traces '
        f'WHERE "ServiceName" = ? AND "StatusCode" = \'Error\' AND "Timestamp" >= {ts} AND "Timestamp" < {ts} '
        "GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 2",  # ties by message: the same answer on every engine
        [svc, after.start_ns, after.end_ns],
    )
    return [(str(m), int(n)) for m, n in rows]


def _deploys(versions: dict[str, list[tuple[int, str]]], onset: int, data_start: int) -> dict[str, str]:
    """Services whose newest version first appeared shortly before or after the onset, replacing another.

    A rollout precedes its effect, and the onset is found at bucket resolution: DEPLOY_LEAD of slack. A
    version already there when the data starts is not a deploy we saw.
    """
    out: dict[str, str] = {}
    for svc, seen in versions.items():
        if len(seen) < 2:
            continue
        first, newest = seen[-1]
        if first >= onset - DEPLOY_LEAD_NS and first > data_start:
            prev = ", ".join(v for _, v in seen[:-1])
            out[svc] = f"service.version {newest} first seen in the minute from {format_ns(first)} (before: {prev})"
    return out


def _availability_burn(ctx: ToolContext, svc: str, error_rate: float) -> str:
    """The burn rate of the service's availability SLO at the error rate since the onset (sampled)."""
    from obsmcp.tools.slo import slos_for

    for slo in slos_for(ctx.settings, svc):
        if slo.sli == "availability" and slo.source == "spans" and not slo.operation:
            burn = error_rate / (1 - slo.objective / 100)
            if burn >= 1:
                return f"; availability SLO {slo.objective:g}% burning {burn:.0f}x"
    return ""


def _impact(ctx: ToolContext, ranking: rca.Ranking, suspects: set[str]) -> list[str]:
    out: list[tuple[float, str]] = []
    for svc, c in ranking.changes.items():
        if svc in suspects:
            continue
        slower = c.entry_ms_before > 0 and c.entry_ms_after > 1.3 * c.entry_ms_before + 5
        erring = c.entry_error_rate_after > c.entry_error_rate_before + 0.005
        if not (slower or erring):
            continue
        parts = []
        if slower:
            parts.append(f"mean {c.entry_ms_before:.0f} -> {c.entry_ms_after:.0f} ms")
        if erring:
            parts.append(f"errors {c.entry_error_rate_before:.1%} -> {c.entry_error_rate_after:.1%}")
        weight = c.entry_ms_after / max(c.entry_ms_before, 1.0) + 100 * c.entry_error_rate_after
        burn = _availability_burn(ctx, svc, c.entry_error_rate_after) if erring else ""
        out.append((weight, f"{svc}: " + ", ".join(parts) + burn))
    out.sort(reverse=True)
    return [line for _, line in out]


def _range_args(tr: TimeRange) -> dict[str, Any]:
    return {"start": format_ns(tr.start_ns), "end": format_ns(tr.end_ns)}


def _next_calls(ctx: ToolContext, top: Suspect, kind: str, after: TimeRange) -> list[NextCall]:
    rng = _range_args(after)
    calls: list[NextCall] = []
    if kind == "errors":
        calls.append(
            NextCall(
                tool="find_errors",
                arguments={"service": top.service, **rng, "sort": "new"},
                why="the error groups that appeared with the incident, then get_error_details on the first",
            )
        )
    calls.append(
        NextCall(
            tool="find_bottlenecks",
            arguments={"service": top.service, **rng},
            why="where the time goes on slow requests, against the baseline",
        )
    )
    tid = _sample_trace(ctx, top.service, after, kind)
    if tid:
        calls.append(
            NextCall(tool="get_trace", arguments={"trace_id": tid}, why=f"one affected request through {top.service}")
        )
    calls.append(
        NextCall(
            tool="search_logs",
            arguments={"service": top.service, "min_severity": "warn", **rng},
            why="what the service logged during the incident",
        )
    )
    return calls


def _sample_trace(ctx: ToolContext, svc: str, after: TimeRange, kind: str) -> str | None:
    ts = ctx.dialect.ts_param()
    order = '"StatusCode" = \'Error\' DESC, "Duration" DESC' if kind == "errors" else '"Duration" DESC'
    _, rows = ctx.db.query(
        f'SELECT "TraceId" FROM otel_traces WHERE "ServiceName" = ? AND "Timestamp" >= {ts} '
        f'AND "Timestamp" < {ts} ORDER BY {order} LIMIT 1',
        [svc, after.start_ns, after.end_ns],
    )
    return str(rows[0][0]) if rows else None


# -- rendering within the budget ---------------------------------------------------------------------------


def _render(res: InvestigateResult) -> str:
    lines = [f"investigate {res.range} — {res.status.upper()}", res.summary]
    if res.onset:
        lines.append(f"onset: {res.onset}; baseline {res.baseline}")
    for i, s in enumerate(res.suspects, 1):
        head = f"{i}. {s.service}" + (f" / {s.operation}" if s.operation else "") + f"  score {s.score:.2f}"
        lines.append(head)
        lines.extend(f"   - {e}" for e in s.evidence)
    if res.impact:
        lines.append("impact: " + "; ".join(res.impact))
    if res.next_calls:
        lines.append("next:")
        for c in res.next_calls:
            args = ", ".join(f"{k}={v!r}" for k, v in c.arguments.items())
            lines.append(f"  {c.tool}({args}) — {c.why}")
    if any("<<<" in e for s in res.suspects for e in s.evidence):
        lines.append(UNTRUSTED_NOTE)
    lines.extend(f"note: {n}" for n in res.notes)
    return "\n".join(lines)


def _fit(res: InvestigateResult, budget: int) -> tuple[InvestigateResult, str]:
    """Degrade step by step until text and structured content fit: fewer impact lines, evidence, suspects."""
    steps: list[Callable[[InvestigateResult], bool]] = [
        lambda r: _pop(r.impact, keep=3),
        lambda r: any(_pop(s.evidence, keep=3) for s in reversed(r.suspects[1:])),
        lambda r: _pop(r.suspects, keep=2),
        lambda r: _pop(r.next_calls, keep=2),
        lambda r: _pop(r.suspects[0].evidence, keep=2) if r.suspects else False,
        lambda r: _pop(r.suspects, keep=1),
    ]
    text = _render(res)
    while _cost(res, text) > budget:
        if not any(step(res) for step in steps):
            break
        res.truncated = True
        text = _render(res)
    if res.truncated:
        res.notes.append("shortened to fit the token budget: pass max_tokens for more evidence")
        text = _render(res)
    return res, text


def _pop(items: list[Any], keep: int) -> bool:
    if len(items) > keep:
        items.pop()
        return True
    return False


def _cost(res: InvestigateResult, text: str) -> int:
    # Clients show the model the text, the structured content, or both: each must fit on its own.
    return max(estimate_tokens(text), estimate_tokens(res.model_dump_json()))
