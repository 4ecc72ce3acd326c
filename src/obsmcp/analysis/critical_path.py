"""Critical path and self time of one trace (pure functions over Span records).

The critical path is the chain of work that determined the trace's end-to-end latency: walking back from
the end of a span, the time belongs to the child that finished last before that point (recursively), and
gaps between children belong to the span itself. This is the algorithm Jaeger's UI uses; children are
first clipped to their parent's interval, since clock skew between hosts can push them outside it.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from obsmcp.model import Span


@dataclass(frozen=True)
class TraceTree:
    spans: dict[str, Span]
    children: dict[str, list[str]]  # parent span id -> child ids, by start time
    roots: list[str]  # spans whose parent is absent from the trace, by start time


def build_tree(spans: list[Span]) -> TraceTree:
    by_id = {s.span_id: s for s in spans}
    children: dict[str, list[str]] = defaultdict(list)
    roots: list[str] = []
    for s in sorted(spans, key=lambda s: (s.start_ns, s.span_id)):
        if s.parent_id and s.parent_id in by_id and s.parent_id != s.span_id:
            children[s.parent_id].append(s.span_id)
        else:
            roots.append(s.span_id)
    return TraceTree(by_id, dict(children), roots)


def self_times(tree: TraceTree) -> dict[str, int]:
    """Span duration minus the union of its children's intervals (clipped to the span)."""
    out: dict[str, int] = {}
    for sid, span in tree.spans.items():
        intervals = sorted(
            (max(c.start_ns, span.start_ns), min(c.end_ns, span.end_ns))
            for c in (tree.spans[k] for k in tree.children.get(sid, ()))
        )
        covered = 0
        cur_s, cur_e = None, None
        for s, e in intervals:
            if e <= s:
                continue
            if cur_e is None or s > cur_e:
                if cur_e is not None and cur_s is not None:
                    covered += cur_e - cur_s
                cur_s, cur_e = s, e
            else:
                cur_e = max(cur_e, e)
        if cur_e is not None and cur_s is not None:
            covered += cur_e - cur_s
        out[sid] = max(0, span.duration_ns - covered)
    return out


def critical_path(tree: TraceTree, root_id: str | None = None) -> dict[str, int]:
    """Span id -> nanoseconds of the trace's latency it accounts for, along the critical path.

    Iterative (no recursion limit on deep traces).
    """
    if not tree.spans:
        return {}
    if root_id is None:
        root_id = max(tree.roots, key=lambda r: tree.spans[r].duration_ns)
    contribution: dict[str, int] = defaultdict(int)
    # Stack of (span id, point in time to walk back from).
    stack: list[tuple[str, int]] = [(root_id, tree.spans[root_id].end_ns)]
    while stack:
        sid, upto = stack.pop()
        span = tree.spans[sid]
        cursor = min(upto, span.end_ns)
        # Children clipped to the parent's interval, latest end first. The cursor only moves back in time,
        # so one pass over this order finds each next child: O(n log n) for wide fan-outs (N+1 calls).
        clipped = sorted(
            (
                (max(k.start_ns, span.start_ns), min(k.end_ns, span.end_ns), k.span_id)
                for k in (tree.spans[c] for c in tree.children.get(sid, ()))
            ),
            key=lambda x: (-x[1], -x[0]),
        )
        pending: list[tuple[str, int]] = []
        for c_start, c_end, child_id in clipped:
            if c_end <= c_start or c_end > cursor:
                continue
            contribution[sid] += cursor - c_end
            contribution[child_id] += 0
            pending.append((child_id, c_end))
            cursor = c_start
        contribution[sid] += max(0, cursor - span.start_ns)
        stack.extend(pending)
    return dict(contribution)
