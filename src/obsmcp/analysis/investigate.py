"""Root-cause ranking from trace structure: which service's own work got slower, and where errors start.

The symptoms of an incident spread up the call graph: when payment-service's database slows down, checkout,
the gateway and the frontend all get slower and some time out. Ranking services by how much worse their
end-to-end latency or error rate got blames the victims. What separates the origin from the victims is the
part of the trace each service is responsible for itself:

* exclusive time: the time spent in a service's entry spans minus the time spent waiting on other services
  it called (each call clipped to the caller's span, so a callee that outlives its caller's timeout does not
  count twice). A database, cache or external API the service calls is part of the service's own time: it
  has no spans of its own in the trace, and "payment-service's database is slow" is the answer an on-call
  engineer wants.
* error origins: error spans with no error below them. A client span that failed while its callee's span did
  not (a timeout waiting on a slow callee), or failed with no callee span at all (connection refused) is
  attributed to the callee; so is the time such a call without a callee span took (the caller waited on a
  service that was not there).

Both are normalized per trace, so a traffic change does not look like a regression. This module is pure: the
tool layer fetches per-(bucket, service) sums with one SQL query and passes them here.

References: the exclusive-time / error-origin reasoning is what trace-based RCA methods such as MicroRank and
TraceRCA build on; the scoring here is deliberately simple and explainable, since its output is read by an
agent that must be able to check each piece of evidence with another tool call.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field

MS = 1_000_000


@dataclass
class Cell:
    """One service in one time bucket (sums over sampled traces)."""

    entry_ns: int = 0  # duration of the service's entry spans (parent absent or in another service)
    outgoing_ns: int = 0  # time its spans waited on spans of other services (clipped to the caller)
    entries: int = 0  # entry spans
    entry_errors: int = 0  # entry spans with error status
    origins: int = 0  # error origins attributed to this service
    spans: int = 0  # all spans of the service: its work, in calls (an N+1 multiplies them)

    def add(self, other: Cell) -> None:
        self.spans += other.spans
        self.entry_ns += other.entry_ns
        self.outgoing_ns += other.outgoing_ns
        self.entries += other.entries
        self.entry_errors += other.entry_errors
        self.origins += other.origins

    @property
    def exclusive_ns(self) -> int:
        return max(0, self.entry_ns - self.outgoing_ns)


@dataclass
class StructureSeries:
    """Per-bucket sums: traces (root spans) per bucket and a Cell per (bucket, service)."""

    step_ns: int
    traces: dict[int, int] = field(default_factory=dict)  # bucket start -> root spans
    cells: dict[tuple[int, str], Cell] = field(default_factory=dict)
    # row id of one entry span per (bucket, service) -> (bucket, service): where to read resource attributes
    representatives: dict[int, tuple[int, str]] = field(default_factory=dict)
    # (bucket, caller, callee) -> calls of the caller that failed because of the callee
    failed_calls: dict[tuple[int, str, str], int] = field(default_factory=dict)
    # (bucket, service, span name) -> (spans, total duration ns, error spans)
    operations: dict[tuple[int, str, str], tuple[int, int, int]] = field(default_factory=dict)

    @property
    def services(self) -> list[str]:
        return sorted({s for _, s in self.cells})

    def totals(self, lo: int, hi: int) -> tuple[int, dict[str, Cell]]:
        """Traces and per-service sums over buckets in [lo, hi)."""
        traces = sum(n for b, n in self.traces.items() if lo <= b < hi)
        out: dict[str, Cell] = defaultdict(Cell)
        for (b, svc), cell in self.cells.items():
            if lo <= b < hi:
                out[svc].add(cell)
        return traces, dict(out)


@dataclass
class ServiceChange:
    """How one service's own share of the work changed between two periods, per trace."""

    service: str
    exclusive_ms_before: float
    exclusive_ms_after: float
    origins_before: float  # per 1,000 traces
    origins_after: float
    origins_z: float  # Poisson z-score of the rise in error origins
    entry_error_rate_before: float
    entry_error_rate_after: float
    entry_ms_before: float  # mean entry-span duration
    entry_ms_after: float
    spans_before: float = 0.0  # spans of the service per trace
    spans_after: float = 0.0
    # callee -> rise of this service's calls failing because of it, per 1,000 traces (significant rises only)
    failing_callees: dict[str, float] = field(default_factory=dict)
    exclusive_t: float = 0.0  # rank-test z of own time per trace, bucket by bucket, after vs before
    spans_t: float = 0.0  # the same for spans per trace

    @property
    def exclusive_delta_ms(self) -> float:
        return self.exclusive_ms_after - self.exclusive_ms_before

    @property
    def spans_delta(self) -> float:
        return self.spans_after - self.spans_before

    @property
    def origins_delta(self) -> float:
        return self.origins_after - self.origins_before


@dataclass
class Ranking:
    changes: dict[str, ServiceChange]
    latency_symptom: float  # system-wide rise of own time, as a share of the baseline trace time
    error_symptom: float  # system-wide rise of error origins, as a Poisson z-score
    work_symptom: float  # system-wide rise of spans per trace, as a share of the baseline
    scores: dict[str, float]  # service -> 0..1, from structure alone
    latency_share: dict[str, float]
    error_share: dict[str, float]
    work_share: dict[str, float]

    @property
    def strength(self) -> float:
        """How clearly something is wrong: each symptom in units of its threshold, summed."""
        return (
            self.latency_symptom / LATENCY_SYMPTOM_MIN
            + max(0.0, self.error_symptom) / ERROR_Z_MIN
            + self.work_symptom / WORK_SYMPTOM_MIN
        )

    @property
    def clear(self) -> bool:
        """Some symptom at least twice its noise threshold: an incident, not a wobble that may be noise."""
        return (
            self.latency_symptom >= 2 * LATENCY_SYMPTOM_MIN
            or self.error_symptom >= 2 * ERROR_Z_MIN
            or self.work_symptom >= 2 * WORK_SYMPTOM_MIN
        )

    @property
    def anything_wrong(self) -> bool:
        return (
            self.latency_symptom >= LATENCY_SYMPTOM_MIN
            or self.error_symptom >= ERROR_Z_MIN
            or self.work_symptom >= WORK_SYMPTOM_MIN
        )


# A rise in own time counts when it is at least this share of the baseline per-trace time of the whole
# system, and at least this many ms per trace; error origins when their rise is this many standard errors.
LATENCY_SYMPTOM_MIN = 0.08
LATENCY_MS_MIN = 2.0
ERROR_Z_MIN = 4.0
# A rise in own time or work must also be consistent over time: a rank test over the per-bucket values, so one
# burst of slow requests (or the best of several candidate splits) does not pass for a shift.
SHIFT_T_MIN = 3.5
# ... or a large rise (by half of the service's own baseline) that is moderately consistent: low-traffic
# services have few requests a minute, so their per-minute values are noisy even when the shift is real.
SHIFT_T_LARGE = 2.5
SHIFT_LARGE_RATIO = 1.5


def _shifted(before: float, after: float, z: float) -> bool:
    return z >= SHIFT_T_MIN or (z >= SHIFT_T_LARGE and after >= SHIFT_LARGE_RATIO * before)


# Work: a service's spans per trace must rise by this many and by this share, and the system's by this share.
WORK_SPANS_MIN = 0.3
WORK_RISE_MIN = 0.25
WORK_SYMPTOM_MIN = 0.05


def _poisson_z(before: int, after: int, ratio: float) -> float:
    """z-score of `after` events against `before` scaled by ratio (after-period traces / before-period traces)."""
    expected = before * ratio
    return (after - expected) / math.sqrt(after + expected * ratio + 1.0)


def rank_shift_z(before: list[float], after: list[float]) -> float:
    """Mann-Whitney z of a rise from `before` to `after` (normal approximation with tie correction; 0 when
    either side is too short).

    A rank test, not a t-test: per-minute own time is heavy-tailed (one lock wait of seconds in a quiet
    minute), which inflates the variance a t-test divides by and hides a real, consistent rise at
    low-traffic services, while a single outlier minute moves a rank test by one rank only.
    """
    n1, n2 = len(before), len(after)
    if n1 < 3 or n2 < 3:
        return 0.0
    values = sorted((v, i >= n1) for i, v in enumerate(before + after))
    rank_sum_after = 0.0
    ties = 0.0
    i = 0
    while i < len(values):
        j = i
        while j + 1 < len(values) and values[j + 1][0] == values[i][0]:
            j += 1
        mid = (i + j) / 2 + 1  # average rank of the tied run
        t = j - i + 1
        ties += t**3 - t
        rank_sum_after += mid * sum(1 for k in range(i, j + 1) if values[k][1])
        i = j + 1
    n = n1 + n2
    u = rank_sum_after - n2 * (n2 + 1) / 2
    var = n1 * n2 / 12 * ((n + 1) - ties / (n * (n - 1)))
    return (u - n1 * n2 / 2) / math.sqrt(var) if var > 0 else 0.0


def compare(series: StructureSeries, split: int, lo: int, hi: int) -> dict[str, ServiceChange]:
    """Per-service change between [lo, split) and [split, hi)."""
    tb, before = series.totals(lo, split)
    ta, after = series.totals(split, hi)
    tb, ta = max(tb, 1), max(ta, 1)
    fails: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    for (bucket, caller, callee), n in series.failed_calls.items():
        if lo <= bucket < hi:
            fails[(caller, callee)][bucket >= split] += n
    out: dict[str, ServiceChange] = {}
    for svc in sorted(set(before) | set(after)):
        buckets, own, _, spans = service_signal(series, svc)
        first = [b < split for b in buckets if lo <= b < hi]
        own = [v for b, v in zip(buckets, own, strict=True) if lo <= b < hi]
        spans = [v for b, v in zip(buckets, spans, strict=True) if lo <= b < hi]
        b = before.get(svc, Cell())
        a = after.get(svc, Cell())
        out[svc] = ServiceChange(
            service=svc,
            exclusive_ms_before=b.exclusive_ns / tb / MS,
            exclusive_ms_after=a.exclusive_ns / ta / MS,
            origins_before=1000 * b.origins / tb,
            origins_after=1000 * a.origins / ta,
            origins_z=_poisson_z(b.origins, a.origins, ta / tb),
            entry_error_rate_before=b.entry_errors / b.entries if b.entries else 0.0,
            entry_error_rate_after=a.entry_errors / a.entries if a.entries else 0.0,
            entry_ms_before=b.entry_ns / b.entries / MS if b.entries else 0.0,
            entry_ms_after=a.entry_ns / a.entries / MS if a.entries else 0.0,
            spans_before=b.spans / tb,
            spans_after=a.spans / ta,
            exclusive_t=rank_shift_z(
                [v for v, f in zip(own, first, strict=True) if f], [v for v, f in zip(own, first, strict=True) if not f]
            ),
            spans_t=rank_shift_z(
                [v for v, f in zip(spans, first, strict=True) if f],
                [v for v, f in zip(spans, first, strict=True) if not f],
            ),
        )
    for (caller, callee), (nb, na) in fails.items():
        if caller in out and _poisson_z(nb, na, ta / tb) >= ERROR_Z_MIN:
            out[caller].failing_callees[callee] = 1000 * (na / ta - nb / tb)
    return out


def rank(changes: dict[str, ServiceChange], deployed: frozenset[str] = frozenset()) -> Ranking:
    """Scores from structure: each symptom's rise is shared among the services it comes from, and the
    symptoms are weighed by how strong each is system-wide.

    Three symptoms: own time (latency), error origins, and work (spans per trace: an N+1 or a retry storm).
    A service that was deployed around the onset (``deployed``) and shows any own symptom gets its share
    doubled: a change that coincides with a regression is the first thing an SRE checks.
    """
    base_ms = sum(c.exclusive_ms_before for c in changes.values()) or 1.0
    base_spans = sum(c.spans_before for c in changes.values()) or 1.0
    lat = {
        s: c.exclusive_delta_ms
        if c.exclusive_delta_ms >= LATENCY_MS_MIN
        and _shifted(c.exclusive_ms_before, c.exclusive_ms_after, c.exclusive_t)
        else 0.0
        for s, c in changes.items()
    }
    err = {s: max(0.0, c.origins_delta) if c.origins_z >= ERROR_Z_MIN else 0.0 for s, c in changes.items()}
    work = {
        s: c.spans_delta
        if c.spans_delta >= WORK_SPANS_MIN
        and c.spans_after >= (1 + WORK_RISE_MIN) * c.spans_before
        and _shifted(c.spans_before, c.spans_after, c.spans_t)
        else 0.0
        for s, c in changes.items()
    }
    # A caller whose calls to a service started failing (timeouts, refused connections) spends the added time
    # and calls (retries, backoff) because of that service: pass its latency and work on to it.
    for caller, c in changes.items():
        targets = {k: v for k, v in c.failing_callees.items() if k in changes and v > 0}
        total = sum(targets.values())
        if not total:
            continue
        for d in (lat, work):
            moved = d.get(caller, 0.0)
            if moved:
                d[caller] = 0.0
                for callee, v in targets.items():
                    d[callee] = d.get(callee, 0.0) + moved * v / total
    for d in (lat, err, work):
        for s in deployed:
            if d.get(s):
                d[s] *= 2.0
    lat_total, err_total, work_total = sum(lat.values()), sum(err.values()), sum(work.values())
    latency_symptom = lat_total / base_ms
    error_symptom = max((c.origins_z for c in changes.values()), default=0.0)
    work_symptom = work_total / base_spans
    lat_share = {s: v / lat_total for s, v in lat.items()} if lat_total else {}
    err_share = {s: v / err_total for s, v in err.items()} if err_total else {}
    work_share = {s: v / work_total for s, v in work.items()} if work_total else {}
    # Weights: how far past its threshold each symptom is (log-scaled, so a huge error burst does not
    # drown a clear latency regression entirely).
    w_lat = math.log1p(latency_symptom / LATENCY_SYMPTOM_MIN) if latency_symptom >= LATENCY_SYMPTOM_MIN else 0.0
    w_err = math.log1p(error_symptom / ERROR_Z_MIN) if error_symptom >= ERROR_Z_MIN else 0.0
    w_work = math.log1p(work_symptom / WORK_SYMPTOM_MIN) if work_symptom >= WORK_SYMPTOM_MIN else 0.0
    scores: dict[str, float] = {}
    total_w = w_lat + w_err + w_work
    if total_w > 0:
        for s in changes:
            scores[s] = (
                w_lat * lat_share.get(s, 0.0) + w_err * err_share.get(s, 0.0) + w_work * work_share.get(s, 0.0)
            ) / total_w
    return Ranking(changes, latency_symptom, error_symptom, work_symptom, scores, lat_share, err_share, work_share)


def weak_signal(c: ServiceChange) -> float:
    """How far a service's own signals moved, in units of their thresholds (for ranking weak candidates)."""
    work = c.spans_delta / WORK_SPANS_MIN if c.spans_after >= (1 + WORK_RISE_MIN) * c.spans_before else 0.0
    return max(0.0, c.exclusive_delta_ms / LATENCY_MS_MIN, c.origins_z / ERROR_Z_MIN, work)


EDGE_MIN_BUCKETS = 8  # with fewer buckets of data, every one is needed


def partial_edges(series: StructureSeries) -> list[int]:
    """The first and the last bucket with traces: the data starts and stops inside them (the newest minute is
    still arriving; spans of requests in flight are not exported yet).

    Spans are bucketed by their own start and traces by their root's, so a bucket the data covers only in part
    divides spans of traces that began in the bucket before by few traces: work and own time per trace jump
    there although nothing changed (seen: "work 0.4 -> 0.9 spans per request" on a quiet system). Both edge
    buckets are left out of the analysis; an incident shows in the buckets before them too.
    """
    with_data = sorted(b for b, n in series.traces.items() if n > 0)
    if len(with_data) < EDGE_MIN_BUCKETS:
        return []
    return [with_data[0], with_data[-1]]


def without_buckets(series: StructureSeries, buckets: list[int]) -> StructureSeries:
    """The series without the given buckets."""
    drop = set(buckets)
    return StructureSeries(
        step_ns=series.step_ns,
        traces={b: n for b, n in series.traces.items() if b not in drop},
        cells={k: c for k, c in series.cells.items() if k[0] not in drop},
        representatives={r: bs for r, bs in series.representatives.items() if bs[0] not in drop},
        failed_calls={k: n for k, n in series.failed_calls.items() if k[0] not in drop},
        operations={k: v for k, v in series.operations.items() if k[0] not in drop},
    )


def service_signal(series: StructureSeries, service: str) -> tuple[list[int], list[float], list[float], list[float]]:
    """Buckets, and per trace: own ms, error origins (per 1,000) and spans of one service, bucket by bucket.

    Buckets without traces are left out (a gap in the data is not a level).
    """
    buckets = [b for b in sorted(series.traces) if series.traces[b] > 0]
    own, orig, spans = [], [], []
    for b in buckets:
        n = series.traces[b]
        cell = series.cells.get((b, service), Cell())
        own.append(cell.exclusive_ns / n / MS)
        orig.append(1000 * cell.origins / n)
        spans.append(cell.spans / n)
    return buckets, own, orig, spans


def change_point(values: list[float], min_side: int = 3) -> tuple[int, float] | None:
    """The single split that best separates the series into two levels (largest t-like statistic).

    Returns (index of the first value after the change, statistic) or None when too short. One mean shift is
    what an incident onset looks like at bucket resolution; binary segmentation would add more splits.
    """
    n = len(values)
    if n < 2 * min_side:
        return None
    total = sum(values)
    sq = sum(v * v for v in values)
    var = max((sq - total * total / n) / max(n - 1, 1), 1e-12)
    best: tuple[int, float] | None = None
    left = 0.0
    for i in range(1, n):
        left += values[i - 1]
        if i < min_side or n - i < min_side:
            continue
        mean_l = left / i
        mean_r = (total - left) / (n - i)
        stat = (mean_r - mean_l) * math.sqrt(i * (n - i) / n) / math.sqrt(var)
        if best is None or stat > best[1]:
            best = (i, stat)
    return best


@dataclass(frozen=True)
class OperationChange:
    name: str
    calls_before: float  # per trace
    calls_after: float
    mean_ms_before: float
    mean_ms_after: float
    errors_before: float  # per 1,000 traces
    errors_after: float
    added_ms: float  # added time per trace
    score: float  # added ms per trace, an added error per trace weighing as a second


def operation_changes(series: StructureSeries, service: str, split: int, lo: int, hi: int) -> list[OperationChange]:
    """The service's operations (span names), by how much time or errors per trace they added after `split`."""
    tb, _ = series.totals(lo, split)
    ta, _ = series.totals(split, hi)
    tb, ta = max(tb, 1), max(ta, 1)
    sums: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0, 0, 0])
    for (b, svc, name), (n, dur, errs) in series.operations.items():
        if svc != service or not lo <= b < hi:
            continue
        acc = sums[name]
        k = 3 if b >= split else 0
        acc[k] += n
        acc[k + 1] += dur
        acc[k + 2] += errs
    out = []
    for name, (nb, db_, eb, na, da, ea) in sums.items():
        added_ms = (da / ta - db_ / tb) / MS
        added_err = ea / ta - eb / tb
        out.append(
            OperationChange(
                name=name,
                calls_before=nb / tb,
                calls_after=na / ta,
                mean_ms_before=db_ / nb / MS if nb else 0.0,
                mean_ms_after=da / na / MS if na else 0.0,
                errors_before=1000 * eb / tb,
                errors_after=1000 * ea / ta,
                added_ms=added_ms,
                score=added_ms + 1000 * added_err,
            )
        )
    out.sort(key=lambda o: (-o.score, o.name))
    return out
