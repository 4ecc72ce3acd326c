"""Grafana Tempo as a trace source (Tempo HTTP API, docs/sources/tempo/api_docs/_index.md in grafana/tempo).

search_traces: a TraceQuery becomes one TraceQL spanset filter (`traceql_for`), run by `GET /api/search` with
start/end in Unix seconds and `limit`. All conditions sit in one `{ ... }`, so one span must meet all of them,
as in the store's search_traces: service is `resource.service.name`, the operation is a case-insensitive
substring of the span name (TraceQL regexes are fully anchored, hence `.*` on both sides), durations are
span durations, status is the span status, attributes are unscoped (`.key`: span or resource attribute).
Rows come from the search metadata (root service and name, start, duration, and `serviceStats` for span
and error counts). Tempo returns the first `limit` matches its parallel search finds, not the newest, and
has no page token: the page says so.

get_trace: `GET /api/traces/<id>`, OTLP JSON whose envelope and id encoding vary by version (see
`sources/otlp_json.py`); spans come back as `model.Span`, from which the tools build the tree and critical path.
services: `GET /api/search/tag/service.name/values`. A multi-tenant Tempo takes X-Scope-OrgID in `headers`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from obsmcp.http import BackendClient, BackendHTTPError, JsonResult, backend_client
from obsmcp.model import Span
from obsmcp.sources import remote
from obsmcp.sources.base import SourceError, TracePage, TraceQuery
from obsmcp.sources.config import BackendConfig
from obsmcp.sources.otlp_json import TraceDecodeError, normalize_trace_id, spans_from_otlp
from obsmcp.timerange import format_ns
from obsmcp.tools.traces import TraceSummary

_STATUS = {"error": "error", "ok": "ok", "unset": "unset"}
_RE2_META = set("\\.+*?()|[]{}^$")  # Go's regexp.QuoteMeta set


def from_config(cfg: BackendConfig) -> TempoSource:
    return TempoSource(cfg)


def quote(value: str) -> str:
    """A TraceQL (or LogQL) double-quoted string literal: Go string escapes for backslash, quote, controls."""
    out = []
    for ch in value:
        if ch in ('"', "\\"):
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\r":
            out.append("\\r")
        elif ch == "\t":
            out.append("\\t")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def re2_escape(text: str) -> str:
    """`text` as an RE2 regex matching it literally (Go regexp.QuoteMeta)."""
    return "".join("\\" + c if c in _RE2_META else c for c in text)


def go_duration(ms: float) -> str:
    """Milliseconds as a Go/TraceQL duration: whole milliseconds as `250ms`, anything finer in `ns`."""
    ns = round(ms * 1e6)
    return f"{ns // 1_000_000}ms" if ns % 1_000_000 == 0 else f"{ns}ns"


def traceql_for(q: TraceQuery) -> str:
    """The TraceQL spanset filter of a TraceQuery (see the module docstring for the semantics)."""
    conds: list[str] = []
    if q.service:
        conds.append(f"resource.service.name = {quote(q.service)}")
    if q.operation and q.operation.strip():
        conds.append(f"name =~ {quote('(?i).*' + re2_escape(q.operation.strip()) + '.*')}")
    if q.min_duration_ms is not None:
        conds.append(f"duration >= {go_duration(q.min_duration_ms)}")
    if q.max_duration_ms is not None:
        conds.append(f"duration <= {go_duration(q.max_duration_ms)}")
    if q.status and q.status.strip():
        status = q.status.strip().lower()
        if status not in _STATUS:
            raise SourceError(f"status={q.status!r} is not a span status: use error, ok or unset")
        conds.append(f"status = {_STATUS[status]}")
    for key, value in sorted(q.attributes.items()):
        conds.append(f".{_attribute_name(key)} = {quote(str(value))}")
    return "{ " + " && ".join(conds) + " }" if conds else "{}"


def _attribute_name(key: str) -> str:
    # TraceQL identifiers end at spaces and operators; an attribute name with such characters is quoted
    # (Tempo >= 2.4 accepts `."name with spaces"`).
    if key and all(c.isalnum() or c in "._-/:" for c in key):
        return key
    return quote(key)


class TempoSource:
    """TraceSource over the Tempo HTTP API."""

    signals: tuple[str, ...]

    def __init__(self, cfg: BackendConfig, client: BackendClient | None = None) -> None:
        self.name = cfg.name
        self.kind = "tempo"
        self.signals = cfg.routed_signals
        self.config = cfg
        self.client = client or backend_client(remote.client_config(cfg))

    def __repr__(self) -> str:
        return f"<TempoSource {self.name} {self.client.config.display_url}>"

    async def _get(
        self,
        path: str,
        params: Mapping[str, Any] | None,
        what: str,
        *,
        cache: Any = None,
        not_found: str | None = None,
    ) -> JsonResult:
        headers = {"Accept": "application/json", **(remote.call_headers(self.config) or {})}
        try:
            return await self.client.get_json(path, params, cache=cache, headers=headers)
        except BackendHTTPError as e:
            raise remote.http_error(self.config, e, what, not_found=not_found) from None

    async def check(self) -> None:
        # Build information: cheap, JSON, and served by every Tempo component that answers queries.
        await self._get("/api/status/buildinfo", None, "the health probe (/api/status/buildinfo)")

    async def services(self, start_ns: int, end_ns: int) -> list[str]:
        result = await self._get(
            "/api/search/tag/service.name/values",
            {"start": start_ns // 10**9, "end": -(-end_ns // 10**9)},
            "the service list (/api/search/tag/service.name/values)",
            cache="metadata",
        )
        values = (result.data or {}).get("tagValues") or []
        # v1 answers strings; a gateway speaking v2 answers {"type", "value"} objects.
        names = [str(v.get("value", "")) if isinstance(v, Mapping) else str(v) for v in values]
        return sorted({n for n in names if n})

    async def search_traces(self, q: TraceQuery) -> TracePage:
        query = traceql_for(q)
        params = {
            "q": query,
            "start": q.start_ns // 10**9,
            "end": -(-q.end_ns // 10**9),
            "limit": q.limit,
        }
        result = await self._get("/api/search", params, f"the TraceQL search {query}", cache="query")
        rows = (result.data or {}).get("traces") or []
        traces = [_summary(r) for r in rows]
        notes = [f"TraceQL: {query}"]
        if len(traces) >= q.limit:
            notes.append(
                f"Tempo returned its limit of {q.limit} traces: the first matches its parallel search found, "
                "not necessarily the newest, and it has no next page; narrow the time range or the filters"
            )
        return TracePage(traces=traces, total=None, notes=notes, freshness=result.freshness, total_estimated=False)

    async def get_trace(self, trace_id: str) -> list[Span]:
        tid = normalize_trace_id(trace_id)
        result = await self._get(
            f"/api/traces/{tid}",
            None,
            f"trace {tid}",
            cache="query",
            not_found=f"Tempo backend {self.name} has no trace {tid}: it may be older than its retention or not "
            "yet flushed; find trace ids with search_traces or in logs (if no trace is ever found, check that url is "
            "Tempo's HTTP API, e.g. http://tempo:3200)",
        )
        data = result.data or {}
        try:
            spans = spans_from_otlp(data)
        except (TraceDecodeError, ValueError, TypeError) as e:
            raise SourceError(
                f"Tempo backend {self.name} answered trace {tid} with JSON that is not an OTLP trace ({e}): "
                "check that url points at Tempo's HTTP API"
            ) from None
        return spans


def _summary(row: Mapping[str, Any]) -> TraceSummary:
    stats = row.get("serviceStats") or {}
    root_service = str(row.get("rootServiceName") or "")
    services = sorted(stats) if stats else ([root_service] if root_service else [])
    span_count = sum(int(s.get("spanCount") or 0) for s in stats.values())
    if not span_count:
        # Older Tempo: no serviceStats; the matched spans are all the search says.
        span_count = sum(int(ss.get("matched") or 0) for ss in row.get("spanSets") or [])
    return TraceSummary(
        trace_id=normalize_trace_id(row.get("traceID")),
        start=format_ns(int(row.get("startTimeUnixNano") or 0)),
        root=f"{root_service or '<root span not yet received>'} {row.get('rootTraceName') or ''}".strip(),
        duration_ms=float(row.get("durationMs") or 0),  # jsonpb omits 0: a trace shorter than 1 ms
        spans=span_count,
        errors=sum(int(s.get("errorCount") or 0) for s in stats.values()),
        services=services,
    )
