"""OTLP/JSON traces as remote backends return them, turned into `model.Span` records (pure, no I/O).

Tempo and Jaeger's API v3 both answer get_trace with OTLP trace JSON, in different envelopes and dialects:

- Tempo `/api/traces/<id>`: `{"batches": [ResourceSpans...]}`, marshalled by gogo jsonpb from Tempo's own
  proto (pkg/tempopb/trace_utils.go `MarshalToJSONV1`), so ids are base64 bytes and enums are names
  ("SPAN_KIND_SERVER", "STATUS_CODE_ERROR"); old Tempo releases say `instrumentationLibrarySpans`.
- Tempo `/api/v2/traces/<id>`: `{"trace": {"resourceSpans": [...]}, "status": ...}` (TraceByIDResponse).
- Jaeger v2 `/api/v3/traces...`: `{"result": {"resourceSpans": [...]}}` (GRPCGatewayWrapper) whose payload is
  the OpenTelemetry Collector's own JSON marshaller: hex ids, integer enums (the OTLP/JSON spec).

This module accepts all of them, and normalizes ids to lowercase hex (32 characters for trace ids, 16 for
span ids; 64-bit trace ids are left-padded with zeros, as the OTLP and W3C formats require). Attribute values
are rendered as the store renders them (ints as decimal, doubles with repr, bools true/false, arrays and maps
as compact JSON), so the same trace read from the store, Tempo or Jaeger gives the same spans.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from obsmcp.model import Span, SpanEvent
from obsmcp.timerange import format_ns
from obsmcp.tools.traces import TraceSummary

UNKNOWN_SERVICE = "unknown_service"  # what the OTel SDKs and obsmcp's ingest use when service.name is absent
SPAN_KINDS = ("Unspecified", "Internal", "Server", "Client", "Producer", "Consumer")
STATUS_CODES = ("Unset", "Ok", "Error")
_HEX = frozenset("0123456789abcdefABCDEF")
MAX_SERVICES = 12  # services listed in a summary, as the store's search_traces does


class TraceDecodeError(ValueError):
    """The backend's trace JSON is not OTLP as expected; the message says where."""


def _normalize_id(raw: object, nbytes: int, what: str) -> str:
    if raw is None or raw == "":
        return ""
    if not isinstance(raw, str):
        raise TraceDecodeError(f"{what} {raw!r} is not a string")
    text = raw.strip()
    # Hex first: a valid id in base64 never consists of 16 or 32 hex digits only (its length differs).
    if text and len(text) <= 2 * nbytes and all(c in _HEX for c in text):
        return text.lower().rjust(2 * nbytes, "0")
    padded = text.replace("-", "+").replace("_", "/") + "=" * (-len(text) % 4)
    try:
        decoded = base64.b64decode(padded, validate=True)
    except (binascii.Error, ValueError):
        raise TraceDecodeError(f"{what} {raw!r} is neither hex nor base64") from None
    if not decoded or len(decoded) > nbytes:
        raise TraceDecodeError(f"{what} {raw!r} decodes to {len(decoded)} bytes, not {nbytes}")
    return decoded.hex().rjust(2 * nbytes, "0")


def normalize_trace_id(raw: object) -> str:
    """A trace id (hex of 64 or 128 bits, any case, leading zeros trimmed or not; or base64) as 32 lowercase
    hex characters. Raises TraceDecodeError when it is neither."""
    return _normalize_id(raw, 16, "trace id")


def normalize_span_id(raw: object) -> str:
    """A span id (hex or base64) as 16 lowercase hex characters; "" for an absent one."""
    return _normalize_id(raw, 8, "span id")


def any_value(value: Any) -> str:
    """An OTLP/JSON AnyValue rendered as the store renders attribute values."""
    raw = _raw(value)
    if raw is None:
        return ""
    if isinstance(raw, str):
        return raw
    if isinstance(raw, bool):
        return "true" if raw else "false"
    if isinstance(raw, int):
        return str(raw)
    if isinstance(raw, float):
        return repr(raw)
    return json.dumps(raw, separators=(",", ":"), ensure_ascii=False)


def _raw(value: Any) -> Any:
    if not isinstance(value, Mapping):
        return value
    if "stringValue" in value:
        return str(value["stringValue"])
    if "intValue" in value:
        return int(value["intValue"])  # proto3 JSON sends int64 as a decimal string
    if "boolValue" in value:
        return bool(value["boolValue"])
    if "doubleValue" in value:
        return float(value["doubleValue"])
    if "bytesValue" in value:
        return str(value["bytesValue"])  # already base64, as the store keeps bytes
    if "arrayValue" in value:
        return [_raw(v) for v in (value["arrayValue"] or {}).get("values", [])]
    if "kvlistValue" in value:
        return {str(kv.get("key", "")): _raw(kv.get("value")) for kv in (value["kvlistValue"] or {}).get("values", [])}
    return None


def attributes(items: Iterable[Mapping[str, Any]] | None) -> dict[str, str]:
    return {str(kv.get("key", "")): any_value(kv.get("value")) for kv in items or ()}


def _enum(value: Any, names: Sequence[str], prefix: str) -> str:
    """An OTLP enum given as an integer (OTLP/JSON) or as its proto name (gogo jsonpb), as the store's word."""
    if value is None or value == "":
        return names[0]
    if isinstance(value, int) or (isinstance(value, str) and value.isdigit()):
        i = int(value)
        return names[i] if 0 <= i < len(names) else names[0]
    word = str(value).upper().removeprefix(prefix)
    for name in names:
        if name.upper() == word:
            return name
    return names[0]


def _resource_spans(doc: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The ResourceSpans list of any of the envelopes this module accepts."""
    for key in ("result", "trace"):  # Jaeger API v3 / Tempo API v2 envelopes
        inner = doc.get(key)
        if isinstance(inner, Mapping):
            return _resource_spans(inner)
    for key in ("resourceSpans", "batches"):
        found = doc.get(key)
        if isinstance(found, list):
            return found
    return []


def spans_from_otlp(doc: Mapping[str, Any]) -> list[Span]:
    """Every span of an OTLP/JSON trace document (any envelope above), ordered by start time then span id."""
    spans: list[Span] = []
    for rs in _resource_spans(doc):
        resource = attributes((rs.get("resource") or {}).get("attributes"))
        service = resource.get("service.name") or UNKNOWN_SERVICE
        scopes = rs.get("scopeSpans") or rs.get("instrumentationLibrarySpans") or []
        for scope in scopes:
            for raw in scope.get("spans") or []:
                spans.append(_span(raw, service))
    spans.sort(key=lambda s: (s.start_ns, s.span_id))
    return spans


def _span(raw: Mapping[str, Any], service: str) -> Span:
    start = int(raw.get("startTimeUnixNano") or 0)
    end = int(raw.get("endTimeUnixNano") or 0)
    status = raw.get("status") or {}
    return Span(
        trace_id=normalize_trace_id(raw.get("traceId")),
        span_id=normalize_span_id(raw.get("spanId")),
        parent_id=normalize_span_id(raw.get("parentSpanId")),
        service=service,
        name=str(raw.get("name") or ""),
        kind=_enum(raw.get("kind"), SPAN_KINDS, "SPAN_KIND_"),
        start_ns=start,
        duration_ns=max(0, end - start),
        status=_enum(status.get("code"), STATUS_CODES, "STATUS_CODE_"),
        status_message=str(status.get("message") or ""),
        attributes=attributes(raw.get("attributes")),
        events=[
            SpanEvent(int(e.get("timeUnixNano") or 0), str(e.get("name") or ""), attributes(e.get("attributes")))
            for e in raw.get("events") or []
        ],
    )


def summarize(trace_id: str, spans: Sequence[Span]) -> TraceSummary:
    """One search_traces row from a trace's spans, computed as the store's search_traces computes it: the
    root is the longest span without a parent in the trace, its duration the trace's duration."""
    ids = {s.span_id for s in spans}
    roots = [s for s in spans if not s.parent_id or s.parent_id not in ids] or list(spans)
    root = max(roots, key=lambda s: (s.duration_ns, -s.start_ns))
    start = min(s.start_ns for s in spans)
    services = sorted({s.service for s in spans})[:MAX_SERVICES]
    return TraceSummary(
        trace_id=trace_id,
        start=format_ns(start),
        root=f"{root.service} {root.name}",
        duration_ms=round(root.duration_ns / 1e6, 3),
        spans=len(spans),
        errors=sum(1 for s in spans if s.is_error),
        services=services,
    )


def group_by_trace(spans: Iterable[Span]) -> dict[str, list[Span]]:
    """Spans by trace id, in first-seen order."""
    out: dict[str, list[Span]] = {}
    for s in spans:
        out.setdefault(s.trace_id, []).append(s)
    return out
