"""Writes the recorded trace files of tests/data/vendor/{tempo,jaeger}: one logical trace in each backend's dialect.

Run it from the repository root (`python tests/data/vendor/tempo/generate_traces.py`) after changing the trace;
the shapes follow the sources named in tests/data/vendor/tempo/README.md and jaeger/README.md.
"""

import base64
import json
from pathlib import Path

OUT = Path(__file__).resolve().parents[1]
T = 1_700_000_000_000_000_000
TID = "4bf92f3577b34da6a3ce929d0e0e4736"
MS = 1_000_000
SPANS = [  # service, span id, parent, name, kind, start offset, duration, status, message, attrs, events
    (
        "frontend",
        "00f067aa0ba902b7",
        "",
        "GET /checkout",
        2,
        0,
        120 * MS,
        0,
        "",
        [("http.method", "s", "GET"), ("http.status_code", "i", 500)],
        [],
    ),
    (
        "frontend",
        "53995c3f42cd8ad8",
        "00f067aa0ba902b7",
        "POST checkout",
        3,
        5 * MS,
        100 * MS,
        0,
        "",
        [("peer.service", "s", "checkout")],
        [],
    ),
    (
        "checkout",
        "1e7b2a4c5d6e7f80",
        "53995c3f42cd8ad8",
        "charge",
        2,
        10 * MS,
        90 * MS,
        2,
        "card declined",
        [("retry", "b", True), ("amount", "d", 12.5)],
        [
            (
                95 * MS,
                "exception",
                [("exception.type", "s", "PaymentError"), ("exception.message", "s", "card declined")],
            )
        ],
    ),
    (
        "checkout",
        "9a8b7c6d5e4f3a2b",
        "1e7b2a4c5d6e7f80",
        "SELECT orders",
        3,
        20 * MS,
        30 * MS,
        1,
        "",
        [("db.system", "s", "postgresql")],
        [],
    ),
]
KIND_NAMES = ["SPAN_KIND_UNSPECIFIED", "SPAN_KIND_INTERNAL", "SPAN_KIND_SERVER", "SPAN_KIND_CLIENT"]
STATUS_NAMES = ["STATUS_CODE_UNSET", "STATUS_CODE_OK", "STATUS_CODE_ERROR"]


def otlp_value(t, v):
    return {"s": {"stringValue": v}, "i": {"intValue": str(v)}, "b": {"boolValue": v}, "d": {"doubleValue": v}}[t]


def otlp(ids, enums, envelope):
    by_service = {}
    for svc, sid, pid, name, kind, off, dur, code, msg, attrs, events in SPANS:
        span = {"traceId": ids(TID), "spanId": ids(sid)}
        if pid:
            span["parentSpanId"] = ids(pid)
        span.update(
            {
                "name": name,
                "kind": KIND_NAMES[kind] if enums else kind,
                "startTimeUnixNano": str(T + off),
                "endTimeUnixNano": str(T + off + dur),
                "attributes": [{"key": k, "value": otlp_value(t, v)} for k, t, v in attrs],
            }
        )
        if events:
            span["events"] = [
                {
                    "timeUnixNano": str(T + eo),
                    "name": en,
                    "attributes": [{"key": k, "value": otlp_value(t, v)} for k, t, v in ea],
                }
                for eo, en, ea in events
            ]
        status = {}
        if code:
            status["code"] = STATUS_NAMES[code] if enums else code
        if msg:
            status["message"] = msg
        span["status"] = status
        by_service.setdefault(svc, []).append(span)
    rs = [
        {
            "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": svc}}]},
            "scopeSpans": [{"scope": {"name": "io.opentelemetry.demo"}, "spans": spans}],
        }
        for svc, spans in by_service.items()
    ]
    return envelope(rs)


def b64(h):
    return base64.b64encode(bytes.fromhex(h)).decode()


def hexid(h):
    return h


def jaeger_tag(k, t, v):
    return {"key": k, "type": {"s": "string", "i": "int64", "b": "bool", "d": "float64"}[t], "value": v}


def jaeger_v1(trace_id_text):
    procs = {"p1": {"serviceName": "frontend", "tags": []}, "p2": {"serviceName": "checkout", "tags": []}}
    spans = []
    for svc, sid, pid, name, kind, off, dur, code, msg, attrs, events in SPANS:
        tags = [jaeger_tag(k, t, v) for k, t, v in attrs]
        tags.append({"key": "otel.scope.name", "type": "string", "value": "io.opentelemetry.demo"})
        tags.append({"key": "span.kind", "type": "string", "value": ["", "internal", "server", "client"][kind]})
        if code == 2:
            tags += [
                {"key": "otel.status_code", "type": "string", "value": "ERROR"},
                {"key": "error", "type": "bool", "value": True},
            ]
        elif code == 1:
            tags.append({"key": "otel.status_code", "type": "string", "value": "OK"})
        if msg:
            tags.append({"key": "otel.status_description", "type": "string", "value": msg})
        spans.append(
            {
                "traceID": trace_id_text,
                "spanID": sid,
                "operationName": name,
                "references": [{"refType": "CHILD_OF", "traceID": trace_id_text, "spanID": pid}] if pid else [],
                "startTime": (T + off) // 1000,
                "duration": dur // 1000,
                "tags": tags,
                "logs": [
                    {
                        "timestamp": (T + eo) // 1000,
                        "fields": [{"key": "event", "type": "string", "value": en}]
                        + [jaeger_tag(k, t, v) for k, t, v in ea],
                    }
                    for eo, en, ea in events
                ],
                "processID": "p1" if svc == "frontend" else "p2",
                "warnings": None,
            }
        )
    return {"traceID": trace_id_text, "spans": spans, "processes": procs, "warnings": None}


def dump(path, doc):
    (OUT / path).write_text(json.dumps(doc, indent=2) + "\n")


dump("tempo/trace_v1.json", otlp(b64, True, lambda rs: {"batches": rs}))
dump(
    "tempo/trace_v2.json",
    otlp(b64, True, lambda rs: {"trace": {"resourceSpans": rs}, "metrics": {"inspectedBytes": "4216"}}),
)
dump("jaeger/v3_trace.json", otlp(hexid, False, lambda rs: {"result": {"resourceSpans": rs}}))


def env(data):
    return {"data": data, "total": len(data), "limit": 0, "offset": 0, "errors": None}


dump("jaeger/v1_trace.json", env([jaeger_v1(TID)]))
# A 64-bit trace as Jaeger prints it (16 hex digits), next to the 128-bit one.
short = jaeger_v1("d6e9329d67b6146a")
short["spans"] = short["spans"][:1]
for s in short["spans"]:
    s["startTime"] -= 60_000_000
short["processes"] = {"p1": short["processes"]["p1"]}
dump("jaeger/v1_search.json", env([jaeger_v1(TID), short]))
