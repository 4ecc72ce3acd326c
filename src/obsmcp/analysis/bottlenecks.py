"""Where slow requests spend their time (pure functions over trace trees).

Three views over a sample of slow requests, each request being one entry span and its subtree:

- critical-path contributors: every request's critical path (see critical_path.py) split by
  (service, operation) and summed across requests, so the operation that most often holds up the
  response ranks first; `compare` puts the same figures from a baseline window next to them;
- N+1 calls: one parent making many identical calls one after another (an ORM loading rows one by one);
- serial calls: calls from one parent to different downstreams that run one after another and take most
  of the parent's time: run concurrently (if they are independent) they would cost only the longest.
"""

from __future__ import annotations

import math
import re
from collections import Counter, defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from itertools import pairwise

from obsmcp.analysis.critical_path import TraceTree, critical_path
from obsmcp.model import Span

CALL_KINDS = frozenset({"Client", "Producer"})
N_PLUS_ONE_MIN_CALLS = 5
SERIAL_MIN_SHARE = 0.5
# Calls that follow each other often touch within clock rounding; closer than this is "not overlapping".
OVERLAP_TOLERANCE_NS = 100_000
# Share of consecutive repeated calls that must not overlap for the repetition to count as sequential.
SEQUENTIAL_SHARE = 0.8

Key = tuple[str, str]  # (service, operation)


@dataclass(frozen=True)
class SlowRequest:
    """One request to analyse: a trace tree and the entry span whose subtree is the request."""

    tree: TraceTree
    entry_id: str


@dataclass
class Contributor:
    service: str
    operation: str
    critical_ns: int  # summed over the sampled requests
    requests: int  # sampled requests on whose critical path it appears
    share: float  # of all critical-path time of the sample
    ms_per_request: float  # critical-path ms per sampled request (0 where absent counts in the mean)
    baseline_ms_per_request: float | None = None
    baseline_share: float | None = None
    change_pct: float | None = None  # None: no baseline, or absent from it (see `new`)
    new: bool = False  # on the critical path now, absent from the baseline sample
    example_trace_id: str = ""  # the sampled trace where it weighs most


@dataclass
class NPlusOne:
    parent_service: str
    parent_operation: str
    service: str
    operation: str
    requests: int  # sampled requests where it happens
    mean_calls: float  # identical calls per occurrence
    max_calls: int
    ms_per_occurrence: float  # summed duration of the repeated calls, per occurrence
    share_of_parent: float  # mean share of the parent's duration the calls take
    example_span_id: str
    baseline_requests: int | None = None
    baseline_mean_calls: float | None = None
    statement: str | None = None  # shape of db.statement, filled in by the tool (untrusted text)


@dataclass
class SerialCalls:
    parent_service: str
    parent_operation: str
    calls: tuple[str, ...]  # downstream calls in the order they ran
    requests: int
    mean_total_ms: float  # time the serial calls take together
    mean_saving_ms: float  # what running them concurrently would save: total minus the longest
    share_of_parent: float


@dataclass
class BottleneckAnalysis:
    requests: int
    critical_ns: int  # all critical-path time of the sample (= summed entry durations, clipped)
    contributors: list[Contributor] = field(default_factory=list)
    n_plus_one: list[NPlusOne] = field(default_factory=list)
    serial: list[SerialCalls] = field(default_factory=list)

    @property
    def ms_per_request(self) -> float:
        return self.critical_ns / 1e6 / self.requests if self.requests else 0.0


# -- labels --------------------------------------------------------------------------------------------


def subtree(tree: TraceTree, root_id: str) -> list[str]:
    out: list[str] = []
    stack = [root_id]
    while stack:
        sid = stack.pop()
        out.append(sid)
        stack.extend(tree.children.get(sid, ()))
    return out


def is_generic_call(span: Span) -> bool:
    """A call span whose name says little on its own: HTTP clients name spans by method ("GET"), Redis
    clients by command ("GET"), so the target has to be added to tell the calls apart."""
    return span.kind in CALL_KINDS and len(span.name.split()) <= 1


def operation_label(tree: TraceTree, span: Span, targets: Mapping[Key, str]) -> str:
    """The span name, with the call's target added when the name alone is generic."""
    if not is_generic_call(span):
        return span.name
    callee = next(
        (tree.spans[c].service for c in tree.children.get(span.span_id, ()) if tree.spans[c].service != span.service),
        None,
    )
    target = callee or targets.get((span.service, span.name))
    return f"{span.name} -> {target}" if target else span.name


_QUOTED = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"")
_NUMBER = re.compile(r"(?<![\w$])-?\d+(?:\.\d+)?\b")
_IN_LIST = re.compile(r"\(\s*\?(?:\s*,\s*\?)+\s*\)")
_SPACES = re.compile(r"\s+")


def statement_shape(statement: str) -> str:
    """A statement with literal values replaced by ?, so calls that differ only in values compare equal."""
    s = _QUOTED.sub("?", statement)
    s = _NUMBER.sub("?", s)
    s = _IN_LIST.sub("(?...)", s)
    return _SPACES.sub(" ", s).strip()


@dataclass
class _Prepared:
    """A request with what every view needs computed once: its span ids and their labels."""

    request: SlowRequest
    index: int
    span_ids: list[str]
    labels: dict[str, str]


def _prepare(requests: list[SlowRequest], targets: Mapping[Key, str]) -> list[_Prepared]:
    out = []
    for i, req in enumerate(requests):
        ids = subtree(req.tree, req.entry_id)
        out.append(
            _Prepared(req, i, ids, {sid: operation_label(req.tree, req.tree.spans[sid], targets) for sid in ids})
        )
    return out


# -- critical-path contributors ------------------------------------------------------------------------


def aggregate_critical_paths(requests: list[SlowRequest], targets: Mapping[Key, str]) -> list[Contributor]:
    """(service, operation) -> critical-path time across the requests, largest first."""
    return _contributors(_prepare(requests, targets))


def _contributors(prepared: list[_Prepared]) -> list[Contributor]:
    total: dict[Key, int] = defaultdict(int)
    seen: dict[Key, int] = defaultdict(int)
    heaviest: dict[Key, tuple[int, str]] = {}
    for p in prepared:
        tree = p.request.tree
        per_request: dict[Key, int] = defaultdict(int)
        for sid, ns in critical_path(tree, p.request.entry_id).items():
            if ns > 0:
                per_request[(tree.spans[sid].service, p.labels[sid])] += ns
        for key, ns in per_request.items():
            total[key] += ns
            seen[key] += 1
            if ns > heaviest.get(key, (0, ""))[0]:
                heaviest[key] = (ns, tree.spans[p.request.entry_id].trace_id)
    grand = sum(total.values())
    n = len(prepared)
    out = [
        Contributor(
            service=svc,
            operation=op,
            critical_ns=ns,
            requests=seen[(svc, op)],
            share=ns / grand if grand else 0.0,
            ms_per_request=ns / 1e6 / n if n else 0.0,
            example_trace_id=heaviest[(svc, op)][1],
        )
        for (svc, op), ns in total.items()
    ]
    out.sort(key=lambda c: (-c.critical_ns, c.service, c.operation))
    return out


# -- N+1 -----------------------------------------------------------------------------------------------


def _calls(tree: TraceTree, parent: Span) -> list[Span]:
    """Children of the parent that are calls: client/producer spans, or spans of another service (a callee
    whose caller was not instrumented)."""
    return [
        tree.spans[c]
        for c in tree.children.get(parent.span_id, ())
        if tree.spans[c].kind in CALL_KINDS or tree.spans[c].service != parent.service
    ]


def _sequential(spans: list[Span]) -> bool:
    ordered = sorted(spans, key=lambda s: s.start_ns)
    pairs = len(ordered) - 1
    if pairs <= 0:
        return True
    apart = sum(1 for a, b in pairwise(ordered) if b.start_ns >= a.end_ns - OVERLAP_TOLERANCE_NS)
    return apart >= SEQUENTIAL_SHARE * pairs


def find_n_plus_one(
    requests: list[SlowRequest], targets: Mapping[Key, str], min_calls: int = N_PLUS_ONE_MIN_CALLS
) -> list[NPlusOne]:
    """Parents with >= min_calls identical (same service and operation), sequential calls; most costly first."""
    return _n_plus_one(_prepare(requests, targets), min_calls)


def _n_plus_one(prepared: list[_Prepared], min_calls: int) -> list[NPlusOne]:
    @dataclass
    class Acc:
        requests: set[int] = field(default_factory=set)
        counts: list[int] = field(default_factory=list)
        ns: list[int] = field(default_factory=list)
        shares: list[float] = field(default_factory=list)
        example: str = ""

    found: dict[tuple[str, str, str, str], Acc] = defaultdict(Acc)
    for p in prepared:
        tree = p.request.tree
        for sid in p.span_ids:
            parent = tree.spans[sid]
            calls_of = _calls(tree, parent)
            if len(calls_of) < min_calls:
                continue
            groups: dict[Key, list[Span]] = defaultdict(list)
            for call in calls_of:
                groups[(call.service, p.labels[call.span_id])].append(call)
            for (svc, op), calls in groups.items():
                if len(calls) < min_calls or not _sequential(calls):
                    continue
                acc = found[(parent.service, p.labels[sid], svc, op)]
                acc.requests.add(p.index)
                acc.counts.append(len(calls))
                busy = sum(c.duration_ns for c in calls)
                acc.ns.append(busy)
                acc.shares.append(min(1.0, busy / parent.duration_ns) if parent.duration_ns else 0.0)
                acc.example = acc.example or calls[0].span_id
    out = [
        NPlusOne(
            parent_service=psvc,
            parent_operation=pop,
            service=svc,
            operation=op,
            requests=len(acc.requests),
            mean_calls=sum(acc.counts) / len(acc.counts),
            max_calls=max(acc.counts),
            ms_per_occurrence=sum(acc.ns) / len(acc.ns) / 1e6,
            share_of_parent=sum(acc.shares) / len(acc.shares),
            example_span_id=acc.example,
        )
        for (psvc, pop, svc, op), acc in found.items()
    ]
    # Most time per slow request first: frequency times cost.
    out.sort(key=lambda f: (-f.requests * f.ms_per_occurrence, f.service, f.operation))
    return out


# -- serial calls --------------------------------------------------------------------------------------


def find_serial_calls(
    requests: list[SlowRequest], targets: Mapping[Key, str], min_share: float = SERIAL_MIN_SHARE
) -> list[SerialCalls]:
    """Parents whose calls to >= 2 different downstreams run one after another (no two overlap) and take
    >= min_share of the parent's duration. Repeated calls to one downstream count as one block. Findings
    are per parent operation; `calls` is the sequence seen most often."""
    return _serial(_prepare(requests, targets), min_share)


def _serial_blocks(tree: TraceTree, parent: Span, labels: Mapping[str, str]) -> list[tuple[str, int, int]]:
    """(label, start, end) of the parent's calls that overlap no other call, by start time."""
    blocks: dict[str, tuple[int, int]] = {}
    for call in _calls(tree, parent):
        label = labels[call.span_id] if call.service == parent.service else f"{call.service} {labels[call.span_id]}"
        lo, hi = blocks.get(label, (call.start_ns, call.end_ns))
        blocks[label] = (min(lo, call.start_ns), max(hi, call.end_ns))
    ordered = sorted(blocks.items(), key=lambda kv: kv[1])
    # Blocks that overlap another block already run concurrently: only the others are serial.
    return [
        (label, lo, hi)
        for j, (label, (lo, hi)) in enumerate(ordered)
        if all(
            hi <= o_lo + OVERLAP_TOLERANCE_NS or o_hi <= lo + OVERLAP_TOLERANCE_NS
            for k, (_, (o_lo, o_hi)) in enumerate(ordered)
            if k != j
        )
    ]


def _serial(prepared: list[_Prepared], min_share: float) -> list[SerialCalls]:
    @dataclass
    class Acc:
        requests: set[int] = field(default_factory=set)
        sequences: Counter[tuple[str, ...]] = field(default_factory=Counter)
        total: list[int] = field(default_factory=list)
        saving: list[int] = field(default_factory=list)
        shares: list[float] = field(default_factory=list)

    found: dict[Key, Acc] = defaultdict(Acc)
    for p in prepared:
        tree = p.request.tree
        for sid in p.span_ids:
            parent = tree.spans[sid]
            if len(tree.children.get(sid, ())) < 2 or not parent.duration_ns:
                continue
            serial = _serial_blocks(tree, parent, p.labels)
            if len(serial) < 2:
                continue
            lengths = [hi - lo for _, lo, hi in serial]
            total = sum(lengths)
            if total < min_share * parent.duration_ns:
                continue
            acc = found[(parent.service, p.labels[sid])]
            acc.requests.add(p.index)
            acc.sequences[tuple(label for label, _, _ in serial)] += 1
            acc.total.append(total)
            acc.saving.append(total - max(lengths))
            acc.shares.append(min(1.0, total / parent.duration_ns))
    out = [
        SerialCalls(
            parent_service=psvc,
            parent_operation=pop,
            calls=acc.sequences.most_common(1)[0][0],
            requests=len(acc.requests),
            mean_total_ms=sum(acc.total) / len(acc.total) / 1e6,
            mean_saving_ms=sum(acc.saving) / len(acc.saving) / 1e6,
            share_of_parent=sum(acc.shares) / len(acc.shares),
        )
        for (psvc, pop), acc in found.items()
    ]
    out.sort(key=lambda f: (-f.requests * f.mean_saving_ms, f.parent_service, f.calls))
    return out


# -- together ------------------------------------------------------------------------------------------


def analyse(
    requests: list[SlowRequest],
    targets: Mapping[Key, str] | None = None,
    min_calls: int = N_PLUS_ONE_MIN_CALLS,
    min_serial_share: float = SERIAL_MIN_SHARE,
) -> BottleneckAnalysis:
    prepared = _prepare(requests, targets or {})
    contributors = _contributors(prepared)
    n = len(requests)
    # Findings seen in a single request out of many are anecdotes, not patterns.
    floor = max(1, math.ceil(0.05 * n))
    return BottleneckAnalysis(
        requests=n,
        critical_ns=sum(c.critical_ns for c in contributors),
        contributors=contributors,
        n_plus_one=[f for f in _n_plus_one(prepared, min_calls) if f.requests >= floor],
        serial=[f for f in _serial(prepared, min_serial_share) if f.requests >= floor],
    )


def compare(current: BottleneckAnalysis, baseline: BottleneckAnalysis) -> None:
    """Put the baseline's figures next to the current ones (in place). A contributor absent from a
    non-empty baseline sample is `new`; its baseline time is 0."""
    if not baseline.requests:
        return
    before = {(c.service, c.operation): c for c in baseline.contributors}
    for c in current.contributors:
        b = before.get((c.service, c.operation))
        c.baseline_ms_per_request = b.ms_per_request if b else 0.0
        c.baseline_share = b.share if b else 0.0
        if b and b.ms_per_request > 0:
            c.change_pct = (c.ms_per_request - b.ms_per_request) / b.ms_per_request * 100
        else:
            c.new = True
    n1_before = {(f.parent_service, f.parent_operation, f.service, f.operation): f for f in baseline.n_plus_one}
    for f in current.n_plus_one:
        nb = n1_before.get((f.parent_service, f.parent_operation, f.service, f.operation))
        f.baseline_requests = nb.requests if nb else 0
        f.baseline_mean_calls = nb.mean_calls if nb else None
