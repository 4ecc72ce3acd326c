"""Service dependencies from traces (pure): call targets, latency histograms, edges and their comparison.

An edge is caller -> callee. Between instrumented services it comes from a client span whose child server
span belongs to another service; calls to things that send no spans (databases, caches, queues, third-party
APIs) are client spans without a child, named after what their attributes say they called. Latency is the
caller's view (the client span's duration), kept as a log-scale histogram so edges merge exactly and p95
is read off the merged histogram to within half a bucket.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

# Buckets per doubling of duration: the p95 read from a bucket is within ±2.2% of the true value.
BUCKETS_PER_OCTAVE = 16
CACHE_SYSTEMS = frozenset({"redis", "memcached", "valkey", "hazelcast", "aerospike"})


def call_target(attrs: Mapping[str, str], fallback: str = "") -> tuple[str, str]:
    """(target, kind) of a call with no span behind it, from OpenTelemetry semantic-convention attributes.

    kind is one of service (peer.service names one), database, cache, queue, external."""
    if attrs.get("peer.service"):
        return attrs["peer.service"], "service"
    system = attrs.get("db.system.name") or attrs.get("db.system")
    if system:
        name = attrs.get("db.namespace") or attrs.get("db.name")
        kind = "cache" if system in CACHE_SYSTEMS else "database"
        return (f"{system}/{name}" if name else system), kind
    messaging = attrs.get("messaging.system")
    if messaging:
        dest = attrs.get("messaging.destination.name") or attrs.get("messaging.destination")
        return (f"{messaging}/{dest}" if dest else messaging), "queue"
    host = attrs.get("server.address") or attrs.get("net.peer.name") or attrs.get("http.host")
    if host:
        return host, "external"
    return (fallback or "unknown"), "external"


def bucket_value_ns(bucket: int) -> float:
    """Representative duration of a histogram bucket: its geometric midpoint."""
    return float(2 ** ((bucket + 0.5) / BUCKETS_PER_OCTAVE))


def histogram_quantile(hist: Mapping[int, float], q: float) -> float | None:
    total = sum(hist.values())
    if total <= 0:
        return None
    rank = q * total
    seen = 0.0
    for b in sorted(hist):
        seen += hist[b]
        if seen >= rank:
            return bucket_value_ns(b)
    return bucket_value_ns(max(hist))


@dataclass
class Edge:
    caller: str
    callee: str
    kind: str  # service | database | cache | queue | external
    calls: float  # in the window (scaled up when traces were sampled)
    errors: float
    rate_per_s: float
    error_rate: float
    p95_ms: float | None
    operations: list[str] = field(default_factory=list)  # span names of calls to a non-service target
    baseline_rate_per_s: float | None = None
    baseline_error_rate: float | None = None
    baseline_p95_ms: float | None = None


@dataclass
class EdgeAccumulator:
    """Counts of one edge as they are read, before rates and quantiles are computed."""

    kind: str
    calls: float = 0.0
    errors: float = 0.0
    hist: dict[int, float] = field(default_factory=lambda: defaultdict(float))
    operations: set[str] = field(default_factory=set)

    def add(self, bucket: int, calls: float, errors: float, operation: str | None = None) -> None:
        self.calls += calls
        self.errors += errors
        self.hist[bucket] += calls
        if operation:
            self.operations.add(operation)


def build_edges(acc: Mapping[tuple[str, str], EdgeAccumulator], seconds: float) -> list[Edge]:
    """Edges with rates and p95, busiest first."""
    edges = []
    for (caller, callee), a in acc.items():
        p95 = histogram_quantile(a.hist, 0.95)
        edges.append(
            Edge(
                caller=caller,
                callee=callee,
                kind=a.kind,
                calls=a.calls,
                errors=a.errors,
                rate_per_s=a.calls / seconds if seconds else 0.0,
                error_rate=a.errors / a.calls if a.calls else 0.0,
                p95_ms=p95 / 1e6 if p95 is not None else None,
                operations=sorted(a.operations),
            )
        )
    edges.sort(key=lambda e: (-e.calls, e.caller, e.callee))
    return edges


def touching(edges: Iterable[Edge], service: str) -> tuple[list[Edge], list[Edge]]:
    """(upstream callers of the service, its downstream callees)."""
    up, down = [], []
    for e in edges:
        if e.callee == service:
            up.append(e)
        if e.caller == service:
            down.append(e)
    return up, down


def compare_edges(current: Iterable[Edge], baseline: Iterable[Edge]) -> None:
    """Baseline rate, error rate and p95 next to each current edge (in place); 0 rate for new edges."""
    before = {(e.caller, e.callee): e for e in baseline}
    for e in current:
        b = before.get((e.caller, e.callee))
        e.baseline_rate_per_s = b.rate_per_s if b else 0.0
        e.baseline_error_rate = b.error_rate if b else None
        e.baseline_p95_ms = b.p95_ms if b else None
