"""Build small OTLP protobuf export requests for tests (real messages, decoded by the real receiver)."""

from __future__ import annotations

import random

from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.logs.v1 import logs_pb2
from opentelemetry.proto.resource.v1 import resource_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

MS = 1_000_000


def kv(key: str, value: str) -> common_pb2.KeyValue:
    return common_pb2.KeyValue(key=key, value=common_pb2.AnyValue(string_value=value))


def resource(service: str, version: str = "1.0.0") -> resource_pb2.Resource:
    return resource_pb2.Resource(attributes=[kv("service.name", service), kv("service.version", version)])


def span(
    trace_id: bytes,
    span_id: bytes,
    parent: bytes,
    name: str,
    start_ns: int,
    dur_ms: float,
    kind: int = 2,
    error: str | None = None,
    attrs: dict[str, str] | None = None,
) -> trace_pb2.Span:
    s = trace_pb2.Span(
        trace_id=trace_id,
        span_id=span_id,
        parent_span_id=parent,
        name=name,
        kind=kind,
        start_time_unix_nano=start_ns,
        end_time_unix_nano=start_ns + int(dur_ms * MS),
        attributes=[kv(k, v) for k, v in (attrs or {}).items()],
    )
    if error:
        s.status.code = 2
        s.status.message = error
        s.events.append(
            trace_pb2.Span.Event(
                time_unix_nano=start_ns + int(dur_ms * MS) - 1,
                name="exception",
                attributes=[
                    kv("exception.type", "TimeoutError"),
                    kv("exception.message", error),
                    kv("exception.stacktrace", 'Traceback:\n  File "/app/pay.py", line 42, in charge\nTimeoutError'),
                ],
            )
        )
    return s


def traces_request(by_service: dict[str, list[trace_pb2.Span]]) -> bytes:
    req = trace_service_pb2.ExportTraceServiceRequest(
        resource_spans=[
            trace_pb2.ResourceSpans(resource=resource(svc), scope_spans=[trace_pb2.ScopeSpans(spans=spans)])
            for svc, spans in by_service.items()
        ]
    )
    return bytes(req.SerializeToString())


def logs_request(service: str, records: list[tuple[int, int, str, bytes]]) -> bytes:
    """records: (time_ns, severity_number, body, trace_id)."""
    req = logs_service_pb2.ExportLogsServiceRequest(
        resource_logs=[
            logs_pb2.ResourceLogs(
                resource=resource(service),
                scope_logs=[
                    logs_pb2.ScopeLogs(
                        log_records=[
                            logs_pb2.LogRecord(
                                time_unix_nano=t,
                                severity_number=sev,
                                body=common_pb2.AnyValue(string_value=body),
                                trace_id=tid,
                            )
                            for t, sev, body, tid in records
                        ]
                    )
                ],
            )
        ]
    )
    return bytes(req.SerializeToString())


def ids(rng: random.Random) -> tuple[bytes, bytes]:
    return rng.randbytes(16), rng.randbytes(8)
