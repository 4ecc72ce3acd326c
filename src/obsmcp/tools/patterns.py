"""log_patterns: log messages mined into templates, with which patterns are new or rising against a baseline.

The store does the heavy part: it masks obvious values (numbers, hex byte strings) with the miner's own
premask in RE2 form, and groups by (masked body, service, window) with counts and severity, multi-threaded.
Python then mines only the distinct masked bodies, weighted by their counts. Over very large windows the
scan is a labelled sample (`SAMPLE_ROWS`), counts are scaled and the answer says so.
"""

from __future__ import annotations

import csv
import hashlib
import sys
from array import array
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, TextIO

from pydantic import BaseModel, Field

from obsmcp.analysis.patterns import PREMASK_RE2, TemplateMiner
from obsmcp.result import UNTRUSTED_NOTE, Fence, ListResult, estimate_tokens, redactor_for, scrub, within_budget
from obsmcp.store.dialect import Dialect
from obsmcp.store.where import Where, col
from obsmcp.timerange import TimeRange, format_duration, parse_duration, resolve_range
from obsmcp.tools.context import ToolContext, ToolInputError, severity_floor
from obsmcp.tools.remote import source_for

# Above this many records in the window plus baseline, mine a sample of about this many (fits ~1 s at 10M).
SAMPLE_ROWS = 80_000
BODY_CHARS = 500  # the first line, up to this many characters, is what is mined
RISING_RATIO = 2.0  # rate now / rate in the baseline at or above which a pattern is "rising"
RISING_MIN_COUNT = 5  # ... and at least this many occurrences, so 1 -> 2 is not news
MAX_LIMIT = 200
_SEVERITY_NAMES = ((21, "FATAL"), (17, "ERROR"), (13, "WARN"), (9, "INFO"), (5, "DEBUG"), (1, "TRACE"))


@dataclass
class PatternStat:
    """One template of one service over the window, compared with the baseline."""

    id: str
    template: str
    service: str
    count: int
    share: float  # of all records in the window (after the filters)
    severity: str  # the most common severity text
    max_severity_number: int
    example: str
    baseline_count: int
    change: str  # new | rising | steady | falling | gone | n/a (no baseline)
    ratio: float | None  # rate in the window / rate in the baseline (None when new or without baseline)


@dataclass
class LogPatternsAnalysis:
    range: TimeRange
    baseline: TimeRange | None
    total: int
    baseline_total: int
    patterns: list[PatternStat] = field(default_factory=list)  # by count, then the gone ones
    estimated: bool = False
    notes: list[str] = field(default_factory=list)

    def new_or_rising(self) -> list[PatternStat]:
        return [p for p in self.patterns if p.change in ("new", "rising")]


def _masked_body_sql(d: Dialect) -> str:
    out = d.left(d.first_line(col("Body")), BODY_CHARS)
    for pattern, repl in PREMASK_RE2:
        out = d.regex_replace_all(out, pattern, repl)
    return out


def _baseline_range(tr: TimeRange, baseline: str | None) -> TimeRange | None:
    """None/"previous": the same length just before the window; "none": no comparison; a duration ("1d"):
    the same window that long earlier (e.g. the same hour yesterday)."""
    b = (baseline or "previous").strip().lower()
    if b in ("none", "off", "no"):
        return None
    if b == "previous":
        return TimeRange(tr.start_ns - tr.duration_ns, tr.start_ns)
    try:
        shift = parse_duration(b)
    except ValueError:
        raise ToolInputError(
            f"baseline={baseline!r} is not understood: use 'previous' (default, the same length just before "
            "start), a shift like '1d' (the same window a day earlier), or 'none'"
        ) from None
    if shift < tr.duration_ns:
        raise ToolInputError(
            f"baseline shift {baseline!r} is shorter than the window ({format_duration(tr.duration_ns)}), so the "
            "two would overlap: shift by at least the window length, or use 'previous'"
        )
    return TimeRange(tr.start_ns - shift, tr.end_ns - shift)


def _sampling_step(rows: int, budget: int) -> int:
    """1 (keep all), or a prime k >= rows/budget: keeping timestamps divisible by k stays unbiased even when
    clocks tick in whole micro- or milliseconds (a prime never shares a factor with 10**n)."""
    if rows <= budget:
        return 1
    k = max(2, -(-rows // budget))
    while any(k % p == 0 for p in range(2, int(k**0.5) + 1)):
        k += 1
    return k


def _severity_name(text: str | None, number: int) -> str:
    if text:
        return text.upper()
    for floor, name in _SEVERITY_NAMES:
        if number >= floor:
            return name
    return "UNSET"


def compute_log_patterns(
    ctx: ToolContext,
    service: str | None = None,
    min_severity: str | None = None,
    start: str | None = None,
    end: str | None = None,
    baseline: str | None = None,
) -> LogPatternsAnalysis:
    """Templates per service over the window with counts, severity, an example, and change vs the baseline.

    The plain result for other analyses (`investigate`): `analysis.new_or_rising()` lists the patterns that
    appeared or grew. Examples and templates are raw telemetry text: scrub and fence before showing them.
    """
    svc = ctx.resolve(service)
    floor = severity_floor(min_severity)
    tr = resolve_range(start, end)
    base = _baseline_range(tr, baseline)
    d = ctx.dialect

    def where_for(lo: int, hi: int) -> Where:
        w = Where(d).log_time(lo, hi)
        if svc:
            w.add('"ServiceName" = ?', svc)
        if floor is not None:
            w.add('"SeverityNumber" >= ?', floor)
        return w

    # Windows: the current one, and the baseline when it does not overlap (a shifted one may be far back).
    wheres = [where_for(tr.start_ns, tr.end_ns)]
    if base:
        wheres.append(where_for(base.start_ns, base.end_ns))
    union = " OR ".join(f"({w.sql()})" for w in wheres)
    params: list[Any] = [p for w in wheres for p in w.params]
    _, counted = ctx.db.query(
        f'SELECT count(*) FILTER (WHERE "SeverityNumber" >= 13), count(*) FROM otel_logs WHERE {union}', params
    )
    n_high = int(counted[0][0] or 0) if counted else 0
    n_low = (int(counted[0][1] or 0) if counted else 0) - n_high
    notes: list[str] = []
    # Over large windows read a sample: every k-th record by a hash of its timestamp (cheap: the body is only
    # read for kept rows), with warnings and errors kept at a higher rate than the rest because they are
    # rarer and matter more. Each kept row weighs k, so counts are unbiased estimates.
    k_high = _sampling_step(n_high, SAMPLE_ROWS // 2)
    k_low = _sampling_step(n_low, SAMPLE_ROWS - min(n_high, SAMPLE_ROWS // 2))
    weight = f'CASE WHEN "SeverityNumber" >= 13 THEN {k_high} ELSE {k_low} END'
    sampled = k_high > 1 or k_low > 1
    keep = f"AND {d.epoch_ns(col('Timestamp'))} % ({weight}) = 0" if sampled else ""
    if sampled:
        notes.append(
            f"counts are estimated from a sample of {n_high + n_low:,} records (1 in {k_low} below WARN, 1 in "
            f"{k_high} at WARN and above); patterns rarer than that may be missing: narrow the window or filter "
            "by service or min_severity for exact counts"
        )
    ts = d.ts_param()
    severity_text = "nullif(" + col("SeverityText") + ", '')"
    sql = f"""
SELECT {_masked_body_sql(d)} AS mb, "ServiceName", "Timestamp" >= {ts} AS cur, sum({weight}),
       {d.mode(severity_text)}, max("SeverityNumber"), min("Body")
FROM otel_logs WHERE ({union}) {keep}
GROUP BY ALL ORDER BY 1, 2, 3"""
    _, rows = ctx.db.query(sql, [tr.start_ns, *params])

    miner = TemplateMiner()
    grouped = [
        (miner.add(str(mb), int(n)), str(s), bool(cur), int(n), sev, int(sevnum or 0), ex)
        for mb, s, cur, n, sev, sevnum, ex in rows
    ]
    acc: dict[tuple[str, str], dict[str, Any]] = {}
    for g, s, cur, n, sev, sevnum, ex in grouped:
        t = miner.template_of(g)
        a = acc.setdefault(
            (s, t.id),
            {"t": t.template, "cur": 0, "base": 0, "sev": defaultdict(int), "max": 0, "ex": "", "exn": -1},
        )
        if cur:
            a["cur"] += n
            a["sev"][_severity_name(sev, sevnum)] += n
            a["max"] = max(a["max"], sevnum)
            if n > a["exn"]:
                a["ex"], a["exn"] = str(ex), n
        else:
            a["base"] += n
            if a["exn"] < 0 and not a["ex"]:
                a["ex"] = str(ex)
    total = sum(a["cur"] for a in acc.values())
    base_total = sum(a["base"] for a in acc.values())
    if base is not None and base_total == 0:
        notes.append(f"the baseline {base.describe()} has no matching logs: nothing to compare with")
    dur_ratio = (base.duration_ns / tr.duration_ns) if base else 1.0
    out: list[PatternStat] = []
    for (s, tid), a in acc.items():
        cur_n, base_n = int(a["cur"]), int(a["base"])
        change, ratio = _change(cur_n, base_n, base is not None and base_total > 0, dur_ratio)
        sev_votes: dict[str, int] = a["sev"]
        out.append(
            PatternStat(
                id=tid,
                template=a["t"],
                service=s,
                count=cur_n,
                share=round(a["cur"] / total, 4) if total else 0.0,
                severity=max(sev_votes, key=lambda k: sev_votes[k]) if sev_votes else "",
                max_severity_number=int(a["max"]),
                example=a["ex"],
                baseline_count=base_n,
                change=change,
                ratio=ratio,
            )
        )
    out.sort(key=lambda p: (p.count == 0, -p.count, -p.baseline_count, p.service, p.template))
    return LogPatternsAnalysis(
        range=tr,
        baseline=base,
        total=int(total),
        baseline_total=int(base_total),
        patterns=out,
        estimated=sampled,
        notes=notes,
    )


def _change(cur_n: int, base_n: int, comparable: bool, dur_ratio: float) -> tuple[str, float | None]:
    """new | rising | steady | falling | gone (n/a without a baseline), and the rate ratio now / baseline."""
    if not comparable:
        return "n/a", None
    if cur_n == 0:
        return "gone", 0.0
    if base_n == 0:
        return "new", None
    ratio = round(cur_n * dur_ratio / base_n, 2)
    if ratio >= RISING_RATIO and cur_n >= RISING_MIN_COUNT:
        return "rising", ratio
    if ratio <= 1 / RISING_RATIO:
        return "falling", ratio
    return "steady", ratio


def remote_log_patterns(
    ctx: ToolContext,
    source: Any,
    routing: list[str],
    service: str | None,
    min_severity: str | None,
    start: str | None,
    end: str | None,
    baseline: str | None,
) -> LogPatternsAnalysis:
    """The same analysis from a backend's own pattern detection (Loki's pattern ingester): its templates and
    counts for the window and the baseline, compared with the same rule as the store's. Loki's patterns carry
    no severity and no example line; the notes say so."""
    patterns = getattr(source, "patterns", None)
    if patterns is None:
        raise ToolInputError(
            f"backend {source.name} ({source.kind}) has no log pattern API: use search_logs on it, or "
            "log_patterns with backend='store'"
        )
    tr = resolve_range(start, end)
    base = _baseline_range(tr, baseline)
    svc = ctx.sources.resolve(source, service, tr.start_ns, tr.end_ns) if service else None
    current = ctx.sources.call(patterns(svc, tr.start_ns, tr.end_ns, MAX_LIMIT), ctx.sources.timeout_for(source))
    before = (
        ctx.sources.call(patterns(svc, base.start_ns, base.end_ns, MAX_LIMIT), ctx.sources.timeout_for(source))
        if base
        else []
    )
    base_counts = {p.template: p.count for p in before}
    total, base_total = sum(p.count for p in current), sum(base_counts.values())
    dur_ratio = (base.duration_ns / tr.duration_ns) if base else 1.0
    out: list[PatternStat] = []
    seen: set[str] = set()
    for p in current:
        seen.add(p.template)
        change, ratio = _change(p.count, base_counts.get(p.template, 0), base is not None and base_total > 0, dur_ratio)
        out.append(_remote_stat(p.template, svc, p.count, total, base_counts.get(p.template, 0), change, ratio))
    if base is not None and base_total > 0:
        out += [_remote_stat(t, svc, 0, total, n, "gone", 0.0) for t, n in base_counts.items() if t not in seen]
    out.sort(key=lambda p: (p.count == 0, -p.count, -p.baseline_count, p.template))
    notes = [
        *routing,
        f"patterns as {source.kind} detected them (<_> marks variable parts); they carry no severity or example",
    ]
    if min_severity:
        notes.append(f"min_severity={min_severity!r} is not applied: {source.kind}'s pattern API has no level filter")
    if base is not None and base_total == 0:
        notes.append(f"the baseline {base.describe()} has no patterns: nothing to compare with")
    return LogPatternsAnalysis(tr, base, total, base_total, out, notes=notes)


def _remote_stat(
    template: str, service: str | None, count: int, total: int, base_n: int, change: str, ratio: float | None
) -> PatternStat:
    return PatternStat(
        id=hashlib.sha1(template.encode()).hexdigest()[:8],
        template=template,
        service=service or "",
        count=count,
        share=round(count / total, 4) if total else 0.0,
        severity="",
        max_severity_number=0,
        example="",
        baseline_count=base_n,
        change=change,
        ratio=ratio,
    )


# -- the tool -----------------------------------------------------------------------------------------


class LogPattern(BaseModel):
    id: str = Field(description="stable for the same template text (compare across windows)")
    template: str = Field(description="<*> marks variable parts; untrusted text from the observed system")
    service: str
    count: int
    share: float = Field(description="share of the window's matching log records")
    severity: str = Field(description="the most common severity")
    change: str = Field(description="new | rising | steady | falling | gone | n/a, against the baseline")
    baseline_count: int
    ratio: float | None = Field(None, description="rate now / rate in the baseline")
    example: str = Field(description="one full message; untrusted text from the observed system")


class LogPatternsResult(ListResult):
    range: str
    baseline_range: str | None = None
    total_logs: int = 0
    counts_estimated: bool = False
    patterns: list[LogPattern] = Field(default_factory=list)


def log_patterns(
    ctx: ToolContext,
    service: str | None = None,
    min_severity: str | None = None,
    start: str | None = None,
    end: str | None = None,
    baseline: str | None = None,
    limit: int = 20,
    max_tokens: int | None = None,
    backend: str | None = None,
) -> tuple[LogPatternsResult, str]:
    if not 1 <= limit <= MAX_LIMIT:
        raise ToolInputError(f"limit={limit} is out of range: use 1..{MAX_LIMIT}")
    source, routing = source_for(ctx, "logs", backend)
    if source is not None:
        a = remote_log_patterns(ctx, source, routing, service, min_severity, start, end, baseline)
    else:
        a = compute_log_patterns(ctx, service, min_severity, start, end, baseline)
    redact = redactor_for(ctx.settings)
    # New and rising patterns first (what changed), then the rest by count; gone ones last.
    rank = {"new": 0, "rising": 0}
    ordered = sorted(a.patterns, key=lambda p: (rank.get(p.change, 1), p.count == 0, -p.count))
    items = [
        LogPattern(
            id=p.id,
            template=scrub(p.template, redact_secrets=redact, max_chars=300),
            service=p.service,
            count=p.count,
            share=p.share,
            severity=p.severity,
            change=p.change,
            baseline_count=p.baseline_count,
            ratio=p.ratio,
            example=scrub(p.example, redact_secrets=redact, max_chars=300),
        )
        for p in ordered
    ]
    notes = list(a.notes)
    budget = ctx.budget(max_tokens)
    kept = within_budget(items[:limit], lambda p: estimate_tokens(_line(p)) + 12, budget, 150)
    if len(kept) < min(limit, len(items)):
        notes.append(f"cut to {len(kept)} patterns to fit ~{budget} tokens; filter by service or raise max_tokens")
    if kept:
        notes.append(UNTRUSTED_NOTE)
    res = LogPatternsResult(
        range=a.range.describe(),
        baseline_range=a.baseline.describe() if a.baseline else None,
        total_logs=a.total,
        counts_estimated=a.estimated,
        total=len(items),
        returned=len(kept),
        truncated=len(kept) < len(items),
        notes=notes,
        patterns=kept,
    )
    changed = sum(1 for p in a.patterns if p.change in ("new", "rising"))
    head = (
        f"log_patterns: {a.total:,} logs in {len(items)} patterns over {a.range.describe()}"
        + (f"; baseline {a.baseline.describe()}: {changed} new or rising" if a.baseline else "")
        + (" (estimated counts)" if a.estimated else "")
    )
    if not kept:
        return res, head + "\nno logs match in range" + "".join("\n" + n for n in notes)
    tail = [n for n in notes if n != UNTRUSTED_NOTE]
    if len(kept) < len(items):
        tail.append(f"{len(items) - len(kept)} more patterns not shown (raise limit, or filter)")
    tail.append("next: search_logs(query=...) with a fixed part of a template to see its records")
    return res, "\n".join([head, Fence().wrap([_line(p) for p in kept]), *tail, UNTRUSTED_NOTE])


def _line(p: LogPattern) -> str:
    if p.change == "rising":
        change = f" RISING x{p.ratio:g} (baseline {p.baseline_count})"
    elif p.change == "new":
        change = " NEW"
    elif p.change in ("falling", "gone"):
        change = f" {p.change} (baseline {p.baseline_count})"
    else:
        change = ""
    who = " ".join(x for x in (p.severity, p.service) if x)
    example = f" | e.g. {p.example}" if p.example else ""
    return f"[{p.id}] {p.count}x {p.share:.1%} {who}{change}: {p.template}{example}"


# -- files (the `obsmcp patterns FILE` command) ---------------------------------------------------------


class PatternsInputError(ValueError):
    """The file cannot be mined; the message says why and what to do."""


def _open_lines(file: str) -> Iterator[str]:
    """Lines of a file or stdin ("-"), decoded as UTF-8 (undecodable bytes replaced), streamed."""
    if file == "-":
        stream: IO[bytes] = sys.stdin.buffer
    else:
        path = Path(file)
        if not path.exists():
            raise PatternsInputError(f"{file}: no such file; give a log file with one message per line, or - for stdin")
        if path.is_dir():
            raise PatternsInputError(f"{file} is a directory; give a log file with one message per line")
        try:
            stream = path.open("rb")
        except OSError as e:
            raise PatternsInputError(f"{file}: cannot be read ({e.strerror})") from None
    return _decoded(stream, file)


def _decoded(stream: IO[bytes], name: str) -> Iterator[str]:
    try:
        first = True
        for raw in stream:
            if first:
                first = False
                if b"\x00" in raw[:8192]:
                    raise PatternsInputError(
                        f"{'stdin' if name == '-' else name} looks binary (NUL bytes): give a text log file"
                    )
            yield raw.decode("utf-8", errors="replace").rstrip("\r\n")
    finally:
        if stream is not sys.stdin.buffer:
            stream.close()


def run_patterns(file: str, *, csv_out: bool, limit: int, out: TextIO) -> None:
    """Mine a file; write a template summary, or with `csv_out` one `line,template_id,template` row per line.

    Memory grows with the distinct masked messages, not with the file: lines are streamed, and the CSV keeps
    only a 4-byte group number per line until the templates are known.
    """
    if limit < 1:
        raise PatternsInputError("--limit must be at least 1")
    miner = TemplateMiner()
    groups = array("I")
    lines = 0
    for text in _open_lines(file):
        g = miner.add(text)
        lines += 1
        if csv_out:
            groups.append(g)
    if lines == 0:
        raise PatternsInputError(f"{'stdin' if file == '-' else file} is empty: nothing to mine")
    if csv_out:
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["line", "template_id", "template"])
        for i, g in enumerate(groups, start=1):
            t = miner.template_of(g)
            writer.writerow([i, t.id, t.template])
        return
    templates = miner.templates()
    out.write(f"{lines:,} lines, {len(templates):,} templates\n")
    out.write(f"{'count':>10}  {'share':>6}  {'id':12}  template  |  example\n")
    for t in templates[:limit]:
        out.write(f"{t.count:>10,}  {t.count / lines:>6.1%}  {t.id:12}  {t.template}  |  {t.example[:200]}\n")
    if len(templates) > limit:
        rest = sum(t.count for t in templates[limit:])
        out.write(f"... {len(templates) - limit:,} more templates ({rest:,} lines); raise --limit to see them\n")
