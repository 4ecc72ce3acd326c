"""Jaeger as a trace source: the v1 HTTP API (`jaeger_api = "v1"`, Jaeger 1.x and Jaeger v2 before the
removal of the v1 search endpoints, jaegertracing/jaeger#9260) or Jaeger v2's API v3 (`jaeger_api = "v3"`).

v1 (cmd/jaeger/internal/extension/jaegerquery/internal/http_handler.go and query_parser.go before #9260):
  services  GET /api/services                         -> {"data": [names]}
  search    GET /api/traces?service=&operation=&start=&end=&minDuration=&maxDuration=&limit=&tags=
            start/end in Unix microseconds, durations as Go durations, tags a JSON map; `service` is required
  trace     GET /api/traces/<id>                      -> {"data": [trace]}: Jaeger JSON (processes, references,
            microsecond times, typed tags, logs)
v3 (jaegertracing/jaeger-idl proto/api_v3/query_service.proto; the HTTP gateway's parameter names):
  services  GET /api/v3/services                      -> {"services": [names]}
  search    GET /api/v3/traces?query.service_name=&query.operation_name=&query.start_time_min=
            &query.start_time_max=&query.duration_min=&query.duration_max=&query.search_depth=
            &query.attributes=; times RFC 3339 with nanoseconds. The snake_case names are the ones every
            Jaeger v2 release accepts (newer ones prefer camelCase and keep these as aliases).
  trace     GET /api/v3/traces/<id>                   -> {"result": {"resourceSpans": [...]}} (OTLP JSON)
  Nothing found is a 404 {"error": {"message": "No traces found"}}: an empty page, not an error.

Both searches return whole traces, summarized here as the store's search_traces summarizes them. The operation
is Jaeger's exact span name match (it has no substring search); `status` has no Jaeger search parameter, so
it is applied to the returned traces (a trace stays when one of its spans has that status), and the page says
so. Trace ids are normalized to 32 lowercase hex characters (Jaeger prints 64-bit ids with 16).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from obsmcp.http import BackendClient, BackendHTTPError, JsonResult, backend_client
from obsmcp.model import Span, SpanEvent
from obsmcp.sources import remote
from obsmcp.sources.base import SourceError, TracePage, TraceQuery, UnsupportedQuery
from obsmcp.sources.config import BackendConfig
from obsmcp.sources.otlp_json import (
    TraceDecodeError,
    group_by_trace,
    normalize_span_id,
    normalize_trace_id,
    spans_from_otlp,
    summarize,
)
from obsmcp.sources.tempo import go_duration

# Tags Jaeger adds when it stores an OTLP span in its own model (OTel's Jaeger translator): they carry the
# span's kind, status and scope, which Span has fields for, so they are not span attributes.
_TRANSLATION_TAGS = frozenset(
    {"span.kind", "otel.status_code", "otel.status_description", "error", "otel.scope.name",
     "otel.scope.version", "otel.library.name", "otel.library.version", "w3c.tracestate", "internal.span.format"}
)  # fmt: skip
_KINDS = {
    "server": "Server",
    "client": "Client",
    "producer": "Producer",
    "consumer": "Consumer",
    "internal": "Internal",
}
_STATUS = {"error": "Error", "ok": "Ok", "unset": "Unset"}


def from_config(cfg: BackendConfig) -> JaegerSource:
    return JaegerSource(cfg)


def rfc3339_ns(ns: int) -> str:
    """UTC nanoseconds as RFC 3339 with nanoseconds (Go's time.RFC3339Nano accepts trailing zeros)."""
    seconds, frac = divmod(ns, 10**9)
    return datetime.fromtimestamp(seconds, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S") + f".{frac:09d}Z"


def v1_params(q: TraceQuery) -> dict[str, str | int]:
    if not q.service:
        raise UnsupportedQuery(
            "Jaeger's v1 search needs a service: name one (list_services shows them), or search by trace id"
        )
    params: dict[str, str | int] = {
        "service": q.service,
        "start": q.start_ns // 1000,
        "end": -(-q.end_ns // 1000),
        "limit": q.limit,
    }
    if q.operation and q.operation.strip():
        params["operation"] = q.operation.strip()
    if q.min_duration_ms is not None:
        params["minDuration"] = go_duration(q.min_duration_ms)
    if q.max_duration_ms is not None:
        params["maxDuration"] = go_duration(q.max_duration_ms)
    if q.attributes:
        params["tags"] = json.dumps(dict(sorted(q.attributes.items())), separators=(",", ":"))
    return params


def v3_params(q: TraceQuery) -> dict[str, str | int]:
    params: dict[str, str | int] = {
        "query.start_time_min": rfc3339_ns(q.start_ns),
        "query.start_time_max": rfc3339_ns(q.end_ns),
        "query.search_depth": q.limit,
    }
    if q.service:
        params["query.service_name"] = q.service
    if q.operation and q.operation.strip():
        params["query.operation_name"] = q.operation.strip()
    if q.min_duration_ms is not None:
        params["query.duration_min"] = go_duration(q.min_duration_ms)
    if q.max_duration_ms is not None:
        params["query.duration_max"] = go_duration(q.max_duration_ms)
    if q.attributes:
        params["query.attributes"] = json.dumps(dict(sorted(q.attributes.items())), separators=(",", ":"))
    return params


class JaegerSource:
    """TraceSource over Jaeger's query API (v1 or v3, per `jaeger_api`)."""

    signals: tuple[str, ...]

    def __init__(self, cfg: BackendConfig, client: BackendClient | None = None) -> None:
        self.name = cfg.name
        self.kind = "jaeger"
        self.signals = cfg.routed_signals
        self.config = cfg
        self.api = cfg.jaeger_api
        self.client = client or backend_client(remote.client_config(cfg))

    def __repr__(self) -> str:
        return f"<JaegerSource {self.name} {self.api} {self.client.config.display_url}>"

    async def _get(
        self, path: str, params: Mapping[str, Any] | None, what: str, *, cache: Any = None
    ) -> JsonResult | None:
        """The answer, or None for a 404 (no such trace; for v3 also "No traces found")."""
        try:
            return await self.client.get_json(path, params, cache=cache, headers=remote.call_headers(self.config))
        except BackendHTTPError as e:
            if e.status == 404 and _jaeger_message(e.excerpt) is not None:
                return None  # Jaeger's own JSON 404: "trace not found" (v1), "No traces found" (v3)
            if e.status == 404:  # a plain 404 page: this path is not served at all
                other = "v3" if self.api == "v1" else "v1"
                raise SourceError(
                    f"Jaeger backend {self.name} has no {path} (404): check url, or set jaeger_api = "
                    f'"{other}" if this Jaeger speaks the {other} API (Jaeger v2 serves /api/v3; its newest '
                    "releases no longer serve the v1 search endpoints)"
                ) from None
            raise remote.http_error(self.config, _with_jaeger_message(e), what) from None

    async def check(self) -> None:
        await self._get("/api/v3/services" if self.api == "v3" else "/api/services", None, "the service list probe")

    async def services(self, start_ns: int, end_ns: int) -> list[str]:
        # Jaeger's service list is not bounded in time: the range is accepted for the protocol's sake.
        if self.api == "v3":
            result = await self._get("/api/v3/services", None, "the service list", cache="metadata")
            names = (result.data or {}).get("services") if result else None
        else:
            result = await self._get("/api/services", None, "the service list", cache="metadata")
            names = (result.data or {}).get("data") if result else None
        return sorted(str(n) for n in names or [])

    async def search_traces(self, q: TraceQuery) -> TracePage:
        status = q.status.strip().lower() if q.status and q.status.strip() else None
        if status is not None and status not in _STATUS:
            raise SourceError(f"status={q.status!r} is not a span status: use error, ok or unset")
        notes: list[str] = []
        if self.api == "v3":
            result = await self._get("/api/v3/traces", v3_params(q), "the trace search", cache="query")
            traces = group_by_trace(self._decode_otlp(result.data, "the search") if result else [])
        else:
            result = await self._get("/api/traces", v1_params(q), "the trace search", cache="query")
            traces = {}
            for trace in (result.data or {}).get("data") or [] if result else []:
                spans = spans_from_jaeger(trace)
                if spans:
                    traces[spans[0].trace_id] = spans
            notes += _v1_errors(result.data if result else None)
        searched = len(traces)
        if status is not None:
            want = _STATUS[status]
            traces = {tid: spans for tid, spans in traces.items() if any(s.status == want for s in spans)}
            notes.append(
                f"status={status} applied to the {searched} traces Jaeger returned (it has no status search "
                "parameter): there may be more; narrow the range or add filters"
            )
        summaries = sorted(
            (summarize(tid, spans) for tid, spans in traces.items()), key=lambda s: s.start, reverse=True
        )[: q.limit]
        if searched >= q.limit:
            notes.append(f"Jaeger returned its limit of {q.limit} traces and has no next page: narrow the range")
        return TracePage(traces=summaries, total=None, notes=notes, freshness=result.freshness if result else None)

    async def get_trace(self, trace_id: str) -> list[Span]:
        tid = normalize_trace_id(trace_id)
        if self.api == "v3":
            result = await self._get(f"/api/v3/traces/{tid}", None, f"trace {tid}", cache="query")
            spans = self._decode_otlp(result.data, f"trace {tid}") if result else []
        else:
            result = await self._get(f"/api/traces/{tid}", None, f"trace {tid}", cache="query")
            spans = [s for t in ((result.data or {}).get("data") or [] if result else []) for s in spans_from_jaeger(t)]
        if not spans:
            raise SourceError(
                f"Jaeger backend {self.name} has no trace {tid}: it may be older than its retention; find trace "
                "ids with search_traces or in logs"
            )
        return spans

    def _decode_otlp(self, data: Any, what: str) -> list[Span]:
        try:
            return spans_from_otlp(data or {})
        except (TraceDecodeError, ValueError, TypeError) as e:
            raise SourceError(
                f"Jaeger backend {self.name} answered {what} with JSON that is not an OTLP trace ({e}): check that "
                "url points at Jaeger's query service and jaeger_api matches it"
            ) from None


def _with_jaeger_message(e: BackendHTTPError) -> BackendHTTPError:
    """Jaeger's error bodies are JSON ({"errors": [{"msg"}]} in v1, {"error": {"message"}} in v3): quote the
    message itself rather than the JSON around it."""
    message = _jaeger_message(e.excerpt)
    if not message:
        return e
    return BackendHTTPError(
        e.message, backend=e.backend, status=e.status, excerpt=str(message), method=e.method, path=e.path
    )


def _jaeger_message(excerpt: str) -> str | None:
    """The message of a Jaeger JSON error body; None when the body is not one (e.g. a plain 404 page)."""
    try:
        body = json.loads(excerpt)
    except ValueError:
        return None
    if not isinstance(body, Mapping):
        return None
    if isinstance(body.get("error"), Mapping):
        return str(body["error"].get("message") or "")
    if isinstance(body.get("errors"), list) and body["errors"]:
        return "; ".join(str(x.get("msg", "")) for x in body["errors"] if isinstance(x, Mapping))
    return None


def _v1_errors(data: Any) -> list[str]:
    errors = (data or {}).get("errors") if isinstance(data, Mapping) else None
    return [f"Jaeger reported: {x.get('msg', x)}" for x in errors or [] if isinstance(x, Mapping)]


# -- Jaeger JSON (v1) -> Span ---------------------------------------------------------------------------------


def tag_value(tag: Mapping[str, Any]) -> str:
    """A typed Jaeger tag value rendered as the store renders the OTLP attribute it came from."""
    value: Any = tag.get("value")
    kind = str(tag.get("type") or "string").lower()
    if kind == "bool":
        return "true" if value is True or str(value).lower() == "true" else "false"
    if kind == "int64":
        return str(int(value))  # large ones arrive as strings (JavaScript's 2^53 limit)
    if kind == "float64":
        return repr(float(value))
    return "" if value is None else str(value)


def spans_from_jaeger(trace: Mapping[str, Any]) -> list[Span]:
    """The spans of one trace in Jaeger's JSON model, ordered by start time then span id."""
    processes = trace.get("processes") or {}
    out: list[Span] = []
    for raw in trace.get("spans") or []:
        process = raw.get("process") or processes.get(raw.get("processID"), {})
        tags = {str(t.get("key")): tag_value(t) for t in raw.get("tags") or []}
        trace_id = normalize_trace_id(raw.get("traceID") or trace.get("traceID"))
        code = tags.get("otel.status_code", "").upper()
        if code in ("ERROR", "OK"):
            status = "Error" if code == "ERROR" else "Ok"
        else:
            status = "Error" if tags.get("error") == "true" else "Unset"
        events = []
        for log in raw.get("logs") or []:
            fields = {str(f.get("key")): tag_value(f) for f in log.get("fields") or []}
            name = fields.pop("event", "")
            events.append(SpanEvent(int(log.get("timestamp") or 0) * 1000, name, fields))
        out.append(
            Span(
                trace_id=trace_id,
                span_id=normalize_span_id(raw.get("spanID")),
                parent_id=_parent(raw, trace_id),
                service=str(process.get("serviceName") or "unknown_service"),
                name=str(raw.get("operationName") or ""),
                kind=_KINDS.get(tags.get("span.kind", "").lower(), "Unspecified"),
                start_ns=int(raw.get("startTime") or 0) * 1000,
                duration_ns=int(raw.get("duration") or 0) * 1000,
                status=status,
                status_message=tags.get("otel.status_description", ""),
                attributes={k: v for k, v in tags.items() if k not in _TRANSLATION_TAGS},
                events=events,
            )
        )
    out.sort(key=lambda s: (s.start_ns, s.span_id))
    return out


def _parent(raw: Mapping[str, Any], trace_id: str) -> str:
    """The CHILD_OF reference within the same trace (Jaeger's parent); else the first reference in it."""
    refs = [r for r in raw.get("references") or [] if normalize_trace_id(r.get("traceID")) == trace_id]
    for ref in refs:
        if str(ref.get("refType", "")).upper() == "CHILD_OF":
            return normalize_span_id(ref.get("spanID"))
    if refs:
        return normalize_span_id(refs[0].get("spanID"))
    return normalize_span_id(raw.get("parentSpanID"))  # some exporters' JSON carries it directly
