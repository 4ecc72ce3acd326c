"""The OTLP decoder: protobuf and OTLP/JSON requests become Arrow tables that insert into the store as-is."""

from __future__ import annotations

import base64
import copy
import gzip
import json
import math
import os
import time
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pytest
from google.protobuf import json_format
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import (
    AnyValue,
    ArrayValue,
    InstrumentationScope,
    KeyValue,
    KeyValueList,
)
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs, SeverityNumber
from opentelemetry.proto.metrics.v1 import metrics_pb2 as m
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status

from obsmcp.ingest.otlp import DecodedBatch, OTLPDecodeError, decode
from obsmcp.store import schema

T0 = 1_700_000_000_000_000_000  # 2023-11-14T22:13:20Z in ns
TRACE_ID = bytes.fromhex("5b8efff798038103d269b633813fc60c")
SPAN_ID = bytes.fromhex("eee19b7ec3c1b174")
PARENT_ID = bytes.fromhex("eee19b7ec3c1b173")


# --- helpers ----------------------------------------------------------------------------------------


def shared_data() -> Path:
    candidates = [Path(__file__).resolve().parents[2] / "shared" / "data"]
    if os.environ.get("OBSMCP_SHARED_DATA"):
        candidates.append(Path(os.environ["OBSMCP_SHARED_DATA"]))
    for path in candidates:
        if (path / "otlp-examples").is_dir():
            return path
    pytest.fail(
        "shared test data not found: looked for otlp-examples/ under "
        + ", ".join(str(p) for p in candidates)
        + ". Set OBSMCP_SHARED_DATA to the shared/data folder."
    )


EXAMPLES = {"trace.json": "traces", "logs.json": "logs", "events.json": "logs", "metrics.json": "metrics"}


def example(name: str) -> bytes:
    return (shared_data() / "otlp-examples" / name).read_bytes()


def store(batch: DecodedBatch) -> duckdb.DuckDBPyConnection:
    """Insert every decoded table into a fresh in-memory store, exactly as the writer does."""
    con = duckdb.connect()
    for name, table in batch.tables.items():
        assert table.schema == schema.TABLES[name].arrow_schema, name
        con.execute(schema.TABLES[name].ddl())
        con.register("b", table)
        con.execute(f"INSERT INTO {name} SELECT * FROM b")
        con.unregister("b")
        assert con.execute(f"SELECT count(*) FROM {name}").fetchone() == (table.num_rows,)
    return con


def plain(table: pa.Table) -> list[dict[str, Any]]:
    """The table's rows as Python values, times as integer nanoseconds (datetime would drop them)."""
    columns = []
    for field, column in zip(table.schema, table.columns, strict=True):
        if pa.types.is_timestamp(field.type):
            column = column.cast(pa.int64())
        elif pa.types.is_list(field.type) and pa.types.is_timestamp(field.type.value_type):
            column = column.cast(pa.list_(pa.int64()))
        columns.append(column)
    out: list[dict[str, Any]] = pa.Table.from_arrays(columns, names=table.column_names).to_pylist()
    # Attribute columns are lists of {key, value} structs: give them as (key, value) pairs, ready for dict().
    pairs = [f.name for f in table.schema if f.type == schema.ATTRIBUTES]
    nested = [f.name for f in table.schema if f.type == pa.list_(schema.ATTRIBUTES)]
    for row in out:
        for name in pairs:
            row[name] = [(kv["key"], kv["value"]) for kv in row[name]]
        for name in nested:
            row[name] = [[(kv["key"], kv["value"]) for kv in attrs] for attrs in row[name]]
    return out


def rows(batch: DecodedBatch, table: str) -> list[dict[str, Any]]:
    return plain(batch.tables[table])


def comparable(table: pa.Table) -> list[dict[str, Any]]:
    """Rows with NaN made equal to itself, so two decodes of the same data compare equal."""

    def fix(value: Any) -> Any:
        if isinstance(value, float) and math.isnan(value):
            return "NaN"
        if isinstance(value, list):
            return [fix(v) for v in value]
        return value

    return [{k: fix(v) for k, v in row.items()} for row in plain(table)]


def assert_same_tables(a: DecodedBatch, b: DecodedBatch) -> None:
    assert a.tables.keys() == b.tables.keys()
    for name in a.tables:
        assert a.tables[name].schema == b.tables[name].schema
        assert comparable(a.tables[name]) == comparable(b.tables[name]), name
    assert (a.accepted, a.rejected, a.error_message) == (b.accepted, b.rejected, b.error_message)


def js(obj: Any) -> bytes:
    return json.dumps(obj).encode()


def kv(key: str, **value: Any) -> KeyValue:
    return KeyValue(key=key, value=AnyValue(**value))


def jkv(key: str, **value: Any) -> dict[str, Any]:
    return {"key": key, "value": value}


def hex_ids_to_base64(obj: Any) -> Any:
    """OTLP/JSON (hex ids) -> protobuf's canonical JSON (base64 bytes), to build protobuf from examples."""
    if isinstance(obj, dict):
        return {
            k: base64.b64encode(bytes.fromhex(v)).decode()
            if k in ("traceId", "spanId", "parentSpanId") and isinstance(v, str)
            else hex_ids_to_base64(v)
            for k, v in obj.items()
        }
    if isinstance(obj, list):
        return [hex_ids_to_base64(v) for v in obj]
    return obj


REQUEST_TYPES: dict[str, Any] = {
    "traces": ExportTraceServiceRequest,
    "logs": ExportLogsServiceRequest,
    "metrics": ExportMetricsServiceRequest,
}

# Every AnyValue kind, as protobuf, as OTLP/JSON, and as the store keeps it (strings, like the exporter).
ATTRS_PB = [
    kv("service.name", string_value="checkout"),
    kv("str", string_value="hello"),
    kv("bool", bool_value=True),
    kv("int", int_value=-42),
    kv("big", int_value=2**62),
    kv("double", double_value=0.5),
    kv("bytes", bytes_value=b"\x00\xff"),
    kv("array", array_value=ArrayValue(values=[AnyValue(string_value="a"), AnyValue(int_value=1)])),
    kv("kvlist", kvlist_value=KeyValueList(values=[kv("k", bool_value=False), kv("d", double_value=1.5)])),
    KeyValue(key="empty"),
    kv("long", string_value="x" * 300),
    kv("unicode", string_value="héllo ☃ 日本"),
]
ATTRS_JSON = [
    jkv("service.name", stringValue="checkout"),
    jkv("str", stringValue="hello"),
    jkv("bool", boolValue=True),
    jkv("int", intValue=-42),
    jkv("big", intValue=str(2**62)),
    jkv("double", doubleValue=0.5),
    jkv("bytes", bytesValue="AP8="),
    jkv("array", arrayValue={"values": [{"stringValue": "a"}, {"intValue": "1"}]}),
    jkv(
        "kvlist",
        kvlistValue={"values": [jkv("k", boolValue=False), jkv("d", doubleValue=1.5)]},
    ),
    {"key": "empty"},
    jkv("long", stringValue="x" * 300),
    jkv("unicode", stringValue="héllo ☃ 日本"),
]
ATTRS_STORED = {
    "service.name": "checkout",
    "str": "hello",
    "bool": "true",
    "int": "-42",
    "big": str(2**62),
    "double": "0.5",
    "bytes": "AP8=",
    "array": '["a",1]',
    "kvlist": '{"k":false,"d":1.5}',
    "empty": "",
    "long": "x" * 300,
    "unicode": "héllo ☃ 日本",
}


# --- the example payloads from opentelemetry-proto --------------------------------------------------


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_every_example_decodes_and_inserts_into_the_store(name: str) -> None:
    batch = decode(EXAMPLES[name], example(name), "json")  # type: ignore[arg-type]

    assert batch.accepted > 0
    assert (batch.rejected, batch.error_message) == (0, "")
    store(batch)


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_every_example_decodes_the_same_from_protobuf(name: str) -> None:
    signal = EXAMPLES[name]
    request = json_format.ParseDict(hex_ids_to_base64(json.loads(example(name))), REQUEST_TYPES[signal]())

    from_json = decode(signal, example(name), "json")  # type: ignore[arg-type]
    from_protobuf = decode(signal, request.SerializeToString(), "protobuf")  # type: ignore[arg-type]

    assert_same_tables(from_json, from_protobuf)


def test_example_trace() -> None:
    batch = decode("traces", example("trace.json"), "json")

    assert list(batch.tables) == ["otel_traces"]
    (span,) = rows(batch, "otel_traces")
    assert span["TraceId"] == "5b8efff798038103d269b633813fc60c"  # hex, lower-cased
    assert span["SpanId"] == "eee19b7ec3c1b174"
    assert span["ParentSpanId"] == "eee19b7ec3c1b173"
    assert span["SpanKind"] == "Server"
    assert span["StatusCode"] == "Unset"
    assert span["ServiceName"] == "my.service"
    assert span["ScopeName"] == "my.library"
    assert span["ScopeVersion"] == "1.0.0"
    assert dict(span["ResourceAttributes"]) == {"service.name": "my.service"}
    assert dict(span["SpanAttributes"]) == {"my.span.attr": "some value"}
    assert span["Duration"] == 1_000_000_000
    assert span["Timestamp"] == 1544712660000000000


def test_example_logs() -> None:
    batch = decode("logs", example("logs.json"), "json")

    (log,) = rows(batch, "otel_logs")
    assert log["TraceId"] == "5b8efff798038103d269b633813fc60c"
    assert log["SpanId"] == "eee19b7ec3c1b174"
    assert (log["SeverityText"], log["SeverityNumber"]) == ("Information", 10)
    assert log["Body"] == "Example log record"
    assert log["ServiceName"] == "my.service"
    assert dict(log["ScopeAttributes"]) == {"my.scope.attribute": "some scope attribute"}
    assert dict(log["LogAttributes"]) == {
        "string.attribute": "some string",
        "boolean.attribute": "true",
        "int.attribute": "10",
        "double.attribute": "637.704",
        "array.attribute": '["many","values"]',
        "map.attribute": '{"some.map.key":"some value"}',
    }
    assert log["Timestamp"] == 1544712660300000000


def test_example_event_is_a_log_with_an_event_name_and_a_structured_body() -> None:
    batch = decode("logs", example("events.json"), "json")

    (log,) = rows(batch, "otel_logs")
    assert log["EventName"] == "browser.page_view"
    assert (log["SeverityText"], log["SeverityNumber"]) == ("test severity text", 9)
    assert (log["TraceId"], log["SpanId"]) == ("", "")
    assert json.loads(log["Body"]) == {
        "type": 0,
        "url": "https://www.guidgenerator.com/online-guid-generator.aspx",
        "referrer": "https://wwww.google.com",
        "title": "Free Online GUID Generator",
    }
    assert dict(log["LogAttributes"]) == {"event.attribute": "some event attribute"}


def test_example_metrics_land_in_one_table_per_type() -> None:
    batch = decode("metrics", example("metrics.json"), "json")

    assert batch.accepted == 4
    assert sorted(batch.tables) == [
        "otel_metrics_exponential_histogram",
        "otel_metrics_gauge",
        "otel_metrics_histogram",
        "otel_metrics_sum",
    ]
    (counter,) = rows(batch, "otel_metrics_sum")
    assert (counter["MetricName"], counter["Value"], counter["MetricDescription"]) == (
        "my.counter",
        5.0,
        "I am a Counter",
    )
    assert (counter["AggregationTemporality"], counter["IsMonotonic"]) == (1, True)
    assert dict(counter["Attributes"]) == {"my.counter.attr": "some value"}
    (gauge,) = rows(batch, "otel_metrics_gauge")
    assert (gauge["MetricName"], gauge["Value"], gauge["ServiceName"]) == ("my.gauge", 10.0, "my.service")
    (histogram,) = rows(batch, "otel_metrics_histogram")
    assert (histogram["Count"], histogram["Sum"], histogram["Min"], histogram["Max"]) == (2, 2.0, 0.0, 2.0)
    assert (histogram["BucketCounts"], histogram["ExplicitBounds"]) == ([1, 1], [1.0])
    (exp,) = rows(batch, "otel_metrics_exponential_histogram")
    assert (exp["Count"], exp["Sum"], exp["Scale"], exp["ZeroCount"]) == (3, 10.0, 0, 1)
    assert (exp["PositiveOffset"], exp["PositiveBucketCounts"]) == (1, [0, 2])
    assert (exp["NegativeOffset"], exp["NegativeBucketCounts"]) == (0, [])
    assert (exp["Min"], exp["Max"]) == (0.0, 5.0)


# --- traces: protobuf and hand-written OTLP/JSON ----------------------------------------------------


def traces_pb() -> ExportTraceServiceRequest:
    server = Span(
        trace_id=TRACE_ID,
        span_id=SPAN_ID,
        parent_span_id=PARENT_ID,
        trace_state="vendor=1",
        name="GET /cart",
        kind=Span.SPAN_KIND_SERVER,
        start_time_unix_nano=T0,
        end_time_unix_nano=T0 + 2_500_000,
        attributes=ATTRS_PB,
        status=Status(code=Status.STATUS_CODE_ERROR, message="cart service down"),
        events=[
            Span.Event(
                time_unix_nano=T0 + 1000,
                name="exception",
                attributes=[kv("exception.type", string_value="TimeoutError")],
            ),
            Span.Event(time_unix_nano=T0 + 2000, name="retry"),
        ],
        links=[
            Span.Link(
                trace_id=bytes(range(16)),
                span_id=bytes(range(8)),
                trace_state="a=b",
                attributes=[kv("link.kind", string_value="follows")],
            )
        ],
    )
    # A root span whose end is before its start: duration is clamped to 0, not a huge unsigned number.
    client = Span(
        trace_id=TRACE_ID,
        span_id=bytes.fromhex("00000000000000ff"),
        name="SELECT carts",
        kind=Span.SPAN_KIND_CLIENT,
        start_time_unix_nano=T0 + 10,
        end_time_unix_nano=T0 + 5,
        status=Status(code=Status.STATUS_CODE_OK),
    )
    kinds = [
        Span(
            trace_id=TRACE_ID,
            span_id=bytes([k] * 8),
            name=f"kind {k}",
            kind=Span.SpanKind.ValueType(k),
            start_time_unix_nano=T0,
        )
        for k in (0, 1, 4, 5)
    ]
    return ExportTraceServiceRequest(
        resource_spans=[
            ResourceSpans(
                resource=Resource(attributes=[kv("service.name", string_value="cart"), kv("host", int_value=7)]),
                scope_spans=[
                    ScopeSpans(scope=InstrumentationScope(name="http", version="2.0"), spans=[server, client]),
                    ScopeSpans(scope=InstrumentationScope(name="kinds"), spans=kinds),
                ],
            ),
            ResourceSpans(  # no service.name
                resource=Resource(attributes=[kv("host.name", string_value="web-1")]),
                scope_spans=[ScopeSpans(spans=[Span(trace_id=TRACE_ID, span_id=SPAN_ID, name="orphan")])],
            ),
        ]
    )


def traces_json() -> dict[str, Any]:
    return {
        "resourceSpans": [
            {
                "resource": {"attributes": [jkv("service.name", stringValue="cart"), jkv("host", intValue=7)]},
                "scopeSpans": [
                    {
                        "scope": {"name": "http", "version": "2.0"},
                        "spans": [
                            {
                                "traceId": "5B8EFFF798038103D269B633813FC60C",  # upper case is fine
                                "spanId": "eee19b7ec3c1b174",
                                "parentSpanId": "eee19b7ec3c1b173",
                                "traceState": "vendor=1",
                                "name": "GET /cart",
                                "kind": 2,
                                "startTimeUnixNano": str(T0),  # 64-bit ints: a decimal string ...
                                "endTimeUnixNano": T0 + 2_500_000,  # ... or a number
                                "attributes": ATTRS_JSON,
                                "status": {"code": 2, "message": "cart service down"},
                                "events": [
                                    {
                                        "timeUnixNano": str(T0 + 1000),
                                        "name": "exception",
                                        "attributes": [jkv("exception.type", stringValue="TimeoutError")],
                                    },
                                    {"timeUnixNano": T0 + 2000, "name": "retry"},
                                ],
                                "links": [
                                    {
                                        "traceId": bytes(range(16)).hex(),
                                        "spanId": bytes(range(8)).hex(),
                                        "traceState": "a=b",
                                        "attributes": [jkv("link.kind", stringValue="follows")],
                                    }
                                ],
                            },
                            {
                                "traceId": TRACE_ID.hex(),
                                "spanId": "00000000000000ff",
                                "parentSpanId": "",
                                "name": "SELECT carts",
                                "kind": 3,
                                "startTimeUnixNano": str(T0 + 10),
                                "endTimeUnixNano": str(T0 + 5),
                                "status": {"code": 1},
                            },
                        ],
                    },
                    {
                        "scope": {"name": "kinds"},
                        "spans": [
                            {
                                "traceId": TRACE_ID.hex(),
                                "spanId": bytes([k] * 8).hex(),
                                "name": f"kind {k}",
                                "kind": k,
                                "startTimeUnixNano": T0,
                            }
                            for k in (0, 1, 4, 5)
                        ],
                    },
                ],
            },
            {
                "resource": {"attributes": [jkv("host.name", stringValue="web-1")]},
                "scopeSpans": [{"spans": [{"traceId": TRACE_ID.hex(), "spanId": SPAN_ID.hex(), "name": "orphan"}]}],
            },
        ]
    }


def test_traces_decode_identically_from_protobuf_and_json() -> None:
    from_protobuf = decode("traces", traces_pb().SerializeToString(), "protobuf")
    from_json = decode("traces", js(traces_json()), "json")

    assert_same_tables(from_protobuf, from_json)
    assert from_protobuf.accepted == 7
    store(from_protobuf)


@pytest.mark.parametrize("encoding", ["protobuf", "json"])
def test_span_columns(encoding: str) -> None:
    body = traces_pb().SerializeToString() if encoding == "protobuf" else js(traces_json())
    spans = {s["SpanName"]: s for s in rows(decode("traces", body, encoding), "otel_traces")}  # type: ignore[arg-type]

    server = spans["GET /cart"]
    assert (server["TraceId"], server["SpanId"], server["ParentSpanId"]) == (
        TRACE_ID.hex(),
        SPAN_ID.hex(),
        PARENT_ID.hex(),
    )
    assert (server["ServiceName"], server["ScopeName"], server["ScopeVersion"]) == ("cart", "http", "2.0")
    assert dict(server["ResourceAttributes"]) == {"service.name": "cart", "host": "7"}
    assert dict(server["SpanAttributes"]) == ATTRS_STORED
    assert (server["SpanKind"], server["StatusCode"], server["StatusMessage"]) == (
        "Server",
        "Error",
        "cart service down",
    )
    assert server["TraceState"] == "vendor=1"
    assert server["Duration"] == 2_500_000
    assert server["Events.Name"] == ["exception", "retry"]
    assert server["Timestamp"] == T0
    assert server["Events.Timestamp"] == [T0 + 1000, T0 + 2000]
    assert [dict(a) for a in server["Events.Attributes"]] == [{"exception.type": "TimeoutError"}, {}]
    assert server["Links.TraceId"] == [bytes(range(16)).hex()]
    assert server["Links.SpanId"] == [bytes(range(8)).hex()]
    assert server["Links.TraceState"] == ["a=b"]
    assert [dict(a) for a in server["Links.Attributes"]] == [{"link.kind": "follows"}]

    client = spans["SELECT carts"]
    assert (client["SpanKind"], client["StatusCode"], client["ParentSpanId"]) == ("Client", "Ok", "")
    assert client["Duration"] == 0
    assert (client["Events.Name"], client["Links.TraceId"]) == ([], [])

    assert [spans[f"kind {k}"]["SpanKind"] for k in (0, 1, 4, 5)] == [
        "Unspecified",
        "Internal",
        "Producer",
        "Consumer",
    ]
    assert spans["orphan"]["ServiceName"] == "unknown_service"


def test_span_timestamps_keep_nanoseconds() -> None:
    batch = decode("traces", traces_pb().SerializeToString(), "protobuf")
    con = store(batch)

    got = con.execute("SELECT epoch_ns(Timestamp), Duration FROM otel_traces WHERE SpanName = 'GET /cart'").fetchone()
    assert got == (T0, 2_500_000)


# --- partial success --------------------------------------------------------------------------------


def spans_with_bad_ids() -> ExportTraceServiceRequest:
    good = Span(trace_id=TRACE_ID, span_id=SPAN_ID, name="good")
    return ExportTraceServiceRequest(
        resource_spans=[
            ResourceSpans(
                scope_spans=[
                    ScopeSpans(
                        spans=[
                            good,
                            Span(trace_id=TRACE_ID[:8], span_id=SPAN_ID, name="short trace id"),
                            Span(trace_id=b"", span_id=SPAN_ID, name="no trace id"),
                            Span(trace_id=TRACE_ID, span_id=SPAN_ID + b"\x00", name="long span id"),
                            Span(trace_id=TRACE_ID, span_id=SPAN_ID, parent_span_id=b"\x01", name="bad parent"),
                            good,
                        ]
                    )
                ]
            )
        ]
    )


def test_spans_with_bad_ids_are_rejected_and_the_rest_accepted() -> None:
    batch = decode("traces", spans_with_bad_ids().SerializeToString(), "protobuf")

    assert (batch.accepted, batch.rejected) == (2, 4)
    assert [s["SpanName"] for s in rows(batch, "otel_traces")] == ["good", "good"]
    assert "rejected 4 spans" in batch.error_message
    assert "2 with a trace id that is not 16 bytes" in batch.error_message
    assert "1 with a span id that is not 8 bytes" in batch.error_message
    assert "1 with a parent span id that is not 8 bytes" in batch.error_message
    assert "resourceSpans[0].scopeSpans[0].spans[1]" in batch.error_message
    store(batch)


def test_spans_with_bad_ids_are_rejected_from_json_too() -> None:
    request = json_format.MessageToDict(spans_with_bad_ids())
    for span in request["resourceSpans"][0]["scopeSpans"][0]["spans"]:
        for key in ("traceId", "spanId", "parentSpanId"):
            if key in span:
                span[key] = base64.b64decode(span[key]).hex()

    batch = decode("traces", js(request), "json")

    assert (batch.accepted, batch.rejected) == (2, 4)
    assert batch.error_message == decode("traces", spans_with_bad_ids().SerializeToString(), "protobuf").error_message


def test_log_records_with_bad_ids_are_rejected_but_records_without_a_trace_are_kept() -> None:
    request = ExportLogsServiceRequest(
        resource_logs=[
            ResourceLogs(
                scope_logs=[
                    ScopeLogs(
                        log_records=[
                            LogRecord(time_unix_nano=T0, body=AnyValue(string_value="no trace")),
                            LogRecord(time_unix_nano=T0, trace_id=TRACE_ID[:15], body=AnyValue(string_value="x")),
                            LogRecord(time_unix_nano=T0, trace_id=TRACE_ID, span_id=b"\x01\x02"),
                            LogRecord(time_unix_nano=T0, trace_id=TRACE_ID, span_id=SPAN_ID, body=AnyValue()),
                        ]
                    )
                ]
            )
        ]
    )

    batch = decode("logs", request.SerializeToString(), "protobuf")

    assert (batch.accepted, batch.rejected) == (2, 2)
    assert "rejected 2 log records" in batch.error_message
    assert "resourceLogs[0].scopeLogs[0].logRecords[1]" in batch.error_message
    kept = rows(batch, "otel_logs")
    assert [(r["Body"], r["TraceId"], r["SpanId"]) for r in kept] == [
        ("no trace", "", ""),
        ("", TRACE_ID.hex(), SPAN_ID.hex()),
    ]


def test_a_request_with_nothing_in_it_decodes_to_no_tables() -> None:
    for signal in ("traces", "logs", "metrics"):
        for body, encoding in ((b"", "protobuf"), (b"{}", "json")):
            batch = decode(signal, body, encoding)  # type: ignore[arg-type]
            assert (batch.tables, batch.accepted, batch.rejected, batch.error_message) == ({}, 0, 0, "")


# --- logs -------------------------------------------------------------------------------------------


def logs_pb() -> ExportLogsServiceRequest:
    records = [
        LogRecord(
            time_unix_nano=T0,
            observed_time_unix_nano=T0 + 5,
            severity_number=SeverityNumber.SEVERITY_NUMBER_ERROR,
            severity_text="ERROR",
            body=AnyValue(string_value="payment failed"),
            attributes=ATTRS_PB,
            trace_id=TRACE_ID,
            span_id=SPAN_ID,
            flags=0x101,  # only the low byte is the W3C trace flags
            event_name="payment.failed",
        ),
        LogRecord(
            observed_time_unix_nano=T0 + 7,
            severity_number=SeverityNumber.SEVERITY_NUMBER_WARN,
            body=AnyValue(int_value=5),
        ),
        LogRecord(time_unix_nano=T0 + 9, severity_text="warning", body=AnyValue(bool_value=True)),
        LogRecord(time_unix_nano=T0 + 10, severity_text="CRITICAL", body=AnyValue(double_value=2.5)),
        LogRecord(time_unix_nano=T0 + 11, severity_text="chatty", body=AnyValue(bytes_value=b"hi")),
        LogRecord(
            time_unix_nano=T0 + 12,
            severity_number=SeverityNumber.SEVERITY_NUMBER_TRACE2,
            body=AnyValue(array_value=ArrayValue(values=[AnyValue(string_value="a"), AnyValue(bool_value=True)])),
        ),
    ]
    return ExportLogsServiceRequest(
        resource_logs=[
            ResourceLogs(
                resource=Resource(attributes=[kv("service.name", string_value="payments")]),
                schema_url="https://opentelemetry.io/schemas/1.26.0",
                scope_logs=[
                    ScopeLogs(
                        scope=InstrumentationScope(name="app", version="3", attributes=[kv("s", string_value="1")]),
                        schema_url="https://scope.schema",
                        log_records=records,
                    )
                ],
            )
        ]
    )


def logs_json() -> dict[str, Any]:
    records = [
        {
            "timeUnixNano": str(T0),
            "observedTimeUnixNano": str(T0 + 5),
            "severityNumber": 17,
            "severityText": "ERROR",
            "body": {"stringValue": "payment failed"},
            "attributes": ATTRS_JSON,
            "traceId": TRACE_ID.hex(),
            "spanId": SPAN_ID.hex(),
            "flags": 0x101,
            "eventName": "payment.failed",
        },
        {"observedTimeUnixNano": T0 + 7, "severityNumber": 13, "body": {"intValue": 5}},
        {"timeUnixNano": T0 + 9, "severityText": "warning", "body": {"boolValue": True}},
        {"timeUnixNano": T0 + 10, "severityText": "CRITICAL", "body": {"doubleValue": 2.5}},
        {"timeUnixNano": T0 + 11, "severityText": "chatty", "body": {"bytesValue": "aGk="}},
        {
            "timeUnixNano": T0 + 12,
            "severityNumber": 2,
            "body": {"arrayValue": {"values": [{"stringValue": "a"}, {"boolValue": True}]}},
        },
    ]
    return {
        "resourceLogs": [
            {
                "resource": {"attributes": [jkv("service.name", stringValue="payments")]},
                "schemaUrl": "https://opentelemetry.io/schemas/1.26.0",
                "scopeLogs": [
                    {
                        "scope": {"name": "app", "version": "3", "attributes": [jkv("s", stringValue="1")]},
                        "schemaUrl": "https://scope.schema",
                        "logRecords": records,
                    }
                ],
            }
        ]
    }


def test_logs_decode_identically_from_protobuf_and_json() -> None:
    from_protobuf = decode("logs", logs_pb().SerializeToString(), "protobuf")
    from_json = decode("logs", js(logs_json()), "json")

    assert_same_tables(from_protobuf, from_json)
    assert from_protobuf.accepted == 6
    store(from_protobuf)


@pytest.mark.parametrize("encoding", ["protobuf", "json"])
def test_log_columns(encoding: str) -> None:
    body = logs_pb().SerializeToString() if encoding == "protobuf" else js(logs_json())
    logs = rows(decode("logs", body, encoding), "otel_logs")  # type: ignore[arg-type]

    first = logs[0]
    assert (first["Body"], first["TraceId"], first["SpanId"], first["TraceFlags"]) == (
        "payment failed",
        TRACE_ID.hex(),
        SPAN_ID.hex(),
        1,
    )
    assert (first["ServiceName"], first["EventName"]) == ("payments", "payment.failed")
    assert dict(first["LogAttributes"]) == ATTRS_STORED
    assert (first["ResourceSchemaUrl"], first["ScopeSchemaUrl"]) == (
        "https://opentelemetry.io/schemas/1.26.0",
        "https://scope.schema",
    )
    assert (first["ScopeName"], first["ScopeVersion"], dict(first["ScopeAttributes"])) == ("app", "3", {"s": "1"})
    # Non-string bodies are stored the way the exporter renders them.
    assert [r["Body"] for r in logs[1:]] == ["5", "true", "2.5", "aGk=", '["a",true]']


@pytest.mark.parametrize("encoding", ["protobuf", "json"])
def test_severity_text_and_number_fill_each_other_in(encoding: str) -> None:
    body = logs_pb().SerializeToString() if encoding == "protobuf" else js(logs_json())
    logs = rows(decode("logs", body, encoding), "otel_logs")  # type: ignore[arg-type]

    assert [(r["SeverityText"], r["SeverityNumber"]) for r in logs] == [
        ("ERROR", 17),  # both given: kept
        ("WARN", 13),  # number only: text derived
        ("warning", 13),  # text only: number inferred, text kept as sent
        ("CRITICAL", 21),
        ("chatty", 0),  # unknown word: number stays unspecified
        ("TRACE", 2),
    ]


@pytest.mark.parametrize(
    ("text", "number"),
    [
        ("trace", 1),
        ("DEBUG", 5),
        ("Info", 9),
        ("information", 9),
        ("WARN", 13),
        ("Warning", 13),
        ("error", 17),
        ("ERR", 17),
        ("fatal", 21),
        ("critical", 21),
        ("INFO2", 10),
        (" error ", 17),
    ],
)
def test_severity_number_is_inferred_from_common_words(text: str, number: int) -> None:
    request = {"resourceLogs": [{"scopeLogs": [{"logRecords": [{"timeUnixNano": T0, "severityText": text}]}]}]}

    (log,) = rows(decode("logs", js(request), "json"), "otel_logs")

    assert (log["SeverityText"], log["SeverityNumber"]) == (text, number)


@pytest.mark.parametrize(
    ("number", "text"), [(1, "TRACE"), (8, "DEBUG"), (9, "INFO"), (16, "WARN"), (20, "ERROR"), (24, "FATAL")]
)
def test_severity_text_is_derived_from_the_number(number: int, text: str) -> None:
    request = ExportLogsServiceRequest(
        resource_logs=[
            ResourceLogs(
                scope_logs=[ScopeLogs(log_records=[LogRecord(severity_number=SeverityNumber.ValueType(number))])]
            )
        ]
    )

    (log,) = rows(decode("logs", request.SerializeToString(), "protobuf"), "otel_logs")

    assert (log["SeverityText"], log["SeverityNumber"]) == (text, number)


def test_log_timestamp_falls_back_to_observed_time_then_to_now() -> None:
    request = {
        "resourceLogs": [
            {
                "scopeLogs": [
                    {
                        "logRecords": [
                            {"timeUnixNano": "0", "observedTimeUnixNano": str(T0)},
                            {"body": {"stringValue": "no times at all"}},
                        ]
                    }
                ]
            }
        ]
    }
    before = time.time_ns()
    batch = decode("logs", js(request), "json")
    after = time.time_ns()

    con = store(batch)
    (observed,), (now,) = con.execute("SELECT epoch_ns(Timestamp) FROM otel_logs ORDER BY Body").fetchall()
    assert observed == T0
    assert before <= now <= after
    assert rows(batch, "otel_logs")[0]["ServiceName"] == "unknown_service"


# --- metrics ----------------------------------------------------------------------------------------


def exemplar_pb(**value: Any) -> m.Exemplar:
    return m.Exemplar(
        time_unix_nano=T0 + 1,
        span_id=SPAN_ID,
        trace_id=TRACE_ID,
        filtered_attributes=[kv("user", string_value="u1")],
        **value,
    )


def exemplar_json(**value: Any) -> dict[str, Any]:
    return {
        "timeUnixNano": str(T0 + 1),
        "spanId": SPAN_ID.hex(),
        "traceId": TRACE_ID.hex(),
        "filteredAttributes": [jkv("user", stringValue="u1")],
        **value,
    }


def metrics_pb() -> ExportMetricsServiceRequest:
    attrs = [kv("route", string_value="/pay")]
    metrics = [
        m.Metric(
            name="queue.depth",
            description="jobs waiting",
            unit="{job}",
            gauge=m.Gauge(
                data_points=[
                    m.NumberDataPoint(
                        time_unix_nano=T0, as_int=12, attributes=attrs, exemplars=[exemplar_pb(as_int=3)]
                    ),
                    m.NumberDataPoint(time_unix_nano=T0 + 1, as_double=0.25, flags=1),
                ]
            ),
        ),
        m.Metric(
            name="requests",
            unit="1",
            sum=m.Sum(
                aggregation_temporality=m.AGGREGATION_TEMPORALITY_CUMULATIVE,
                is_monotonic=True,
                data_points=[m.NumberDataPoint(start_time_unix_nano=T0 - 100, time_unix_nano=T0, as_int=1000)],
            ),
        ),
        m.Metric(
            name="latency",
            unit="ms",
            histogram=m.Histogram(
                aggregation_temporality=m.AGGREGATION_TEMPORALITY_DELTA,
                data_points=[
                    m.HistogramDataPoint(
                        time_unix_nano=T0,
                        count=6,
                        sum=42.5,
                        bucket_counts=[1, 2, 3],
                        explicit_bounds=[10.0, 100.0],
                        min=0.5,
                        max=120.0,
                        attributes=attrs,
                        exemplars=[exemplar_pb(as_double=99.5)],
                    ),
                    m.HistogramDataPoint(time_unix_nano=T0 + 1, count=0),  # no sum, min, max
                ],
            ),
        ),
        m.Metric(
            name="size",
            exponential_histogram=m.ExponentialHistogram(
                aggregation_temporality=m.AGGREGATION_TEMPORALITY_DELTA,
                data_points=[
                    m.ExponentialHistogramDataPoint(
                        time_unix_nano=T0,
                        count=7,
                        sum=-3.0,
                        scale=-2,
                        zero_count=1,
                        positive=m.ExponentialHistogramDataPoint.Buckets(offset=-3, bucket_counts=[1, 2]),
                        negative=m.ExponentialHistogramDataPoint.Buckets(offset=4, bucket_counts=[3]),
                        min=-8.0,
                    )
                ],
            ),
        ),
        m.Metric(
            name="gc.pause",
            summary=m.Summary(
                data_points=[
                    m.SummaryDataPoint(
                        time_unix_nano=T0,
                        count=10,
                        sum=5.5,
                        quantile_values=[
                            m.SummaryDataPoint.ValueAtQuantile(quantile=0.5, value=0.4),
                            m.SummaryDataPoint.ValueAtQuantile(quantile=0.99, value=1.2),
                        ],
                    )
                ]
            ),
        ),
        m.Metric(name="no.data"),
    ]
    return ExportMetricsServiceRequest(
        resource_metrics=[
            m.ResourceMetrics(
                resource=Resource(attributes=[kv("service.name", string_value="billing")]),
                schema_url="https://res.schema",
                scope_metrics=[
                    m.ScopeMetrics(
                        scope=InstrumentationScope(name="meter", version="1.1", dropped_attributes_count=2),
                        schema_url="https://scope.schema",
                        metrics=metrics,
                    )
                ],
            )
        ]
    )


def metrics_json() -> dict[str, Any]:
    attrs = [jkv("route", stringValue="/pay")]
    metrics = [
        {
            "name": "queue.depth",
            "description": "jobs waiting",
            "unit": "{job}",
            "gauge": {
                "dataPoints": [
                    {
                        "timeUnixNano": str(T0),
                        "asInt": "12",
                        "attributes": attrs,
                        "exemplars": [exemplar_json(asInt="3")],
                    },
                    {"timeUnixNano": str(T0 + 1), "asDouble": 0.25, "flags": 1},
                ]
            },
        },
        {
            "name": "requests",
            "unit": "1",
            "sum": {
                "aggregationTemporality": 2,
                "isMonotonic": True,
                "dataPoints": [{"startTimeUnixNano": T0 - 100, "timeUnixNano": T0, "asInt": 1000}],
            },
        },
        {
            "name": "latency",
            "unit": "ms",
            "histogram": {
                "aggregationTemporality": 1,
                "dataPoints": [
                    {
                        "timeUnixNano": str(T0),
                        "count": "6",
                        "sum": 42.5,
                        "bucketCounts": ["1", 2, "3"],
                        "explicitBounds": [10, 100.0],
                        "min": 0.5,
                        "max": 120,
                        "attributes": attrs,
                        "exemplars": [exemplar_json(asDouble=99.5)],
                    },
                    {"timeUnixNano": str(T0 + 1), "count": 0},
                ],
            },
        },
        {
            "name": "size",
            "exponentialHistogram": {
                "aggregationTemporality": 1,
                "dataPoints": [
                    {
                        "timeUnixNano": str(T0),
                        "count": "7",
                        "sum": -3,
                        "scale": -2,
                        "zeroCount": "1",
                        "positive": {"offset": -3, "bucketCounts": ["1", "2"]},
                        "negative": {"offset": 4, "bucketCounts": ["3"]},
                        "min": -8,
                    }
                ],
            },
        },
        {
            "name": "gc.pause",
            "summary": {
                "dataPoints": [
                    {
                        "timeUnixNano": str(T0),
                        "count": "10",
                        "sum": 5.5,
                        "quantileValues": [{"quantile": 0.5, "value": 0.4}, {"quantile": 0.99, "value": 1.2}],
                    }
                ]
            },
        },
        {"name": "no.data"},
    ]
    return {
        "resourceMetrics": [
            {
                "resource": {"attributes": [jkv("service.name", stringValue="billing")]},
                "schemaUrl": "https://res.schema",
                "scopeMetrics": [
                    {
                        "scope": {"name": "meter", "version": "1.1", "droppedAttributesCount": 2},
                        "schemaUrl": "https://scope.schema",
                        "metrics": metrics,
                    }
                ],
            }
        ]
    }


def test_metrics_decode_identically_from_protobuf_and_json() -> None:
    from_protobuf = decode("metrics", metrics_pb().SerializeToString(), "protobuf")
    from_json = decode("metrics", js(metrics_json()), "json")

    assert_same_tables(from_protobuf, from_json)
    assert from_protobuf.accepted == 7  # data points, across all five tables
    assert len(from_protobuf.tables) == 5
    store(from_protobuf)


@pytest.mark.parametrize("encoding", ["protobuf", "json"])
def test_metric_columns(encoding: str) -> None:
    body = metrics_pb().SerializeToString() if encoding == "protobuf" else js(metrics_json())
    batch = decode("metrics", body, encoding)  # type: ignore[arg-type]

    gauge = rows(batch, "otel_metrics_gauge")
    assert [(g["Value"], g["Flags"]) for g in gauge] == [(12.0, 0), (0.25, 1)]
    first = gauge[0]
    assert (first["ServiceName"], first["MetricName"], first["MetricDescription"], first["MetricUnit"]) == (
        "billing",
        "queue.depth",
        "jobs waiting",
        "{job}",
    )
    assert (first["ScopeName"], first["ScopeVersion"], first["ScopeDroppedAttrCount"]) == ("meter", "1.1", 2)
    assert (first["ResourceSchemaUrl"], first["ScopeSchemaUrl"]) == ("https://res.schema", "https://scope.schema")
    assert dict(first["Attributes"]) == {"route": "/pay"}
    assert first["Exemplars.Value"] == [3.0]
    assert first["Exemplars.TraceId"] == [TRACE_ID.hex()]
    assert first["Exemplars.SpanId"] == [SPAN_ID.hex()]
    assert [dict(a) for a in first["Exemplars.FilteredAttributes"]] == [{"user": "u1"}]

    (total,) = rows(batch, "otel_metrics_sum")
    assert (total["Value"], total["AggregationTemporality"], total["IsMonotonic"]) == (1000.0, 2, True)

    full, empty = rows(batch, "otel_metrics_histogram")
    assert (full["Count"], full["Sum"], full["Min"], full["Max"]) == (6, 42.5, 0.5, 120.0)
    assert (full["BucketCounts"], full["ExplicitBounds"], full["AggregationTemporality"]) == (
        [1, 2, 3],
        [10.0, 100.0],
        1,
    )
    assert full["Exemplars.Value"] == [99.5]
    # Absent sum/min/max are unknown, not zero.
    assert empty["Count"] == 0
    assert all(math.isnan(empty[c]) for c in ("Sum", "Min", "Max"))

    (exp,) = rows(batch, "otel_metrics_exponential_histogram")
    assert (exp["Count"], exp["Sum"], exp["Scale"], exp["ZeroCount"]) == (7, -3.0, -2, 1)
    assert (exp["PositiveOffset"], exp["PositiveBucketCounts"]) == (-3, [1, 2])
    assert (exp["NegativeOffset"], exp["NegativeBucketCounts"]) == (4, [3])
    assert exp["Min"] == -8.0 and math.isnan(exp["Max"])

    (summary,) = rows(batch, "otel_metrics_summary")
    assert (summary["Count"], summary["Sum"]) == (10, 5.5)
    assert (summary["ValueAtQuantiles.Quantile"], summary["ValueAtQuantiles.Value"]) == ([0.5, 0.99], [0.4, 1.2])


def test_only_metric_types_present_get_a_table() -> None:
    request = {
        "resourceMetrics": [
            {"scopeMetrics": [{"metrics": [{"name": "x", "gauge": {"dataPoints": [{"asDouble": 1.5}]}}]}]}
        ]
    }

    batch = decode("metrics", js(request), "json")

    assert list(batch.tables) == ["otel_metrics_gauge"]
    assert batch.accepted == 1


# --- attribute conversion over many values ----------------------------------------------------------

any_value = st.recursive(
    st.one_of(
        st.text().map(lambda s: ("string_value", s, {"stringValue": s})),
        st.booleans().map(lambda b: ("bool_value", b, {"boolValue": b})),
        st.integers(-(2**63), 2**63 - 1).map(lambda i: ("int_value", i, {"intValue": str(i)})),
        st.floats(allow_nan=False).map(lambda f: ("double_value", f, {"doubleValue": f})),
        st.binary(max_size=20).map(lambda b: ("bytes_value", b, {"bytesValue": base64.b64encode(b).decode()})),
    ),
    lambda children: st.lists(children, max_size=3).map(
        lambda items: (
            "array_value",
            ArrayValue(values=[AnyValue(**{k: v}) for k, v, _ in items]),
            {"arrayValue": {"values": [j for _, _, j in items]}},
        )
    ),
    max_leaves=6,
)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.text(max_size=140), any_value), max_size=12))
def test_any_attribute_decodes_the_same_from_protobuf_and_json(attrs: list[tuple[str, Any]]) -> None:
    pb = ExportTraceServiceRequest(
        resource_spans=[
            ResourceSpans(
                scope_spans=[
                    ScopeSpans(
                        spans=[
                            Span(
                                trace_id=TRACE_ID,
                                span_id=SPAN_ID,
                                name="s",
                                attributes=[KeyValue(key=k, value=AnyValue(**{f: v})) for k, (f, v, _) in attrs],
                            )
                        ]
                    )
                ]
            )
        ]
    )
    json_span = {"traceId": TRACE_ID.hex(), "spanId": SPAN_ID.hex(), "name": "s"}
    json_span["attributes"] = [{"key": k, "value": j} for k, (_, _, j) in attrs]  # type: ignore[assignment]
    request = {"resourceSpans": [{"scopeSpans": [{"spans": [json_span]}]}]}

    # Twice through protobuf: the second decode is served by the attribute cache.
    first = decode("traces", pb.SerializeToString(), "protobuf")
    second = decode("traces", pb.SerializeToString(), "protobuf")
    from_json = decode("traces", js(request), "json")

    assert_same_tables(first, from_json)
    assert_same_tables(second, from_json)
    stored = dict(rows(first, "otel_traces")[0]["SpanAttributes"])
    assert list(stored) == list(dict.fromkeys(k for k, _ in attrs))  # unique keys, first-seen order
    store(first)


def length_delimited(field: int, payload: bytes) -> bytes:
    size, prefix = len(payload), b""
    while size >= 0x80:
        prefix += bytes([size & 0x7F | 0x80])
        size >>= 7
    return bytes([field << 3 | 2]) + prefix + bytes([size]) + payload


@pytest.mark.parametrize(
    ("key_value", "expected"),
    [
        # value before key
        (length_delimited(2, AnyValue(int_value=7).SerializeToString()) + length_delimited(1, b"k"), "7"),
        # the value field twice: protobuf merges them and the last oneof member wins
        (
            length_delimited(1, b"k")
            + length_delimited(2, AnyValue(string_value="old").SerializeToString())
            + length_delimited(2, AnyValue(bool_value=True).SerializeToString()),
            "true",
        ),
        # a bool encoded as 2: any non-zero varint is true
        (length_delimited(1, b"k") + length_delimited(2, b"\x10\x02"), "true"),
        # a key longer than 127 bytes needs a two-byte length
        (
            length_delimited(1, b"k" * 200) + length_delimited(2, AnyValue(double_value=-1.25).SerializeToString()),
            "-1.25",
        ),
    ],
)
def test_attributes_in_any_valid_protobuf_layout_decode_like_the_canonical_one(key_value: bytes, expected: str) -> None:
    span = Span(trace_id=TRACE_ID, span_id=SPAN_ID, name="s").SerializeToString() + length_delimited(9, key_value)
    body = length_delimited(1, length_delimited(2, length_delimited(2, span)))  # request > resource > scope > span

    (row,) = rows(decode("traces", body, "protobuf"), "otel_traces")

    reference = KeyValue.FromString(key_value)
    assert dict(row["SpanAttributes"]) == {reference.key: expected}


def test_duplicate_attribute_keys_keep_the_last_value_so_the_store_accepts_them() -> None:
    attrs = [kv("k", string_value="first"), kv("other", int_value=1), kv("k", string_value="last")]
    request = ExportTraceServiceRequest(
        resource_spans=[
            ResourceSpans(
                resource=Resource(attributes=attrs),
                scope_spans=[ScopeSpans(spans=[Span(trace_id=TRACE_ID, span_id=SPAN_ID, attributes=attrs)])],
            )
        ]
    )

    batch = decode("traces", request.SerializeToString(), "protobuf")

    (span,) = rows(batch, "otel_traces")
    assert dict(span["SpanAttributes"]) == {"k": "last", "other": "1"}
    store(batch)


def test_unknown_json_fields_are_ignored() -> None:
    request = copy.deepcopy(traces_json())
    request["futureField"] = {"x": 1}
    request["resourceSpans"][0]["futureField"] = [1, 2]
    request["resourceSpans"][0]["scopeSpans"][0]["scope"]["futureField"] = "x"
    request["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["futureField"] = None
    request["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["attributes"][1]["value"]["futureField"] = 3

    batch = decode("traces", js(request), "json")

    assert_same_tables(batch, decode("traces", js(traces_json()), "json"))


def test_timestamps_beyond_the_arrow_range_do_not_fail_the_request() -> None:
    request = ExportTraceServiceRequest(
        resource_spans=[
            ResourceSpans(
                scope_spans=[
                    ScopeSpans(
                        spans=[Span(trace_id=TRACE_ID, span_id=SPAN_ID, start_time_unix_nano=2**64 - 1, name="far")]
                    )
                ]
            )
        ]
    )

    batch = decode("traces", request.SerializeToString(), "protobuf")

    assert batch.accepted == 1
    store(batch)


# --- malformed payloads -----------------------------------------------------------------------------


def test_malformed_protobuf_is_rejected_with_the_expected_message_type() -> None:
    with pytest.raises(OTLPDecodeError) as err:
        decode("traces", b"\x0a\xff\xff\xff\xff\x0f garbage", "protobuf")

    assert "opentelemetry.proto.collector.trace.v1.ExportTraceServiceRequest" in str(err.value)
    assert "application/x-protobuf" in str(err.value)


def test_gzipped_protobuf_gets_a_hint_to_set_content_encoding() -> None:
    body = gzip.compress(logs_pb().SerializeToString())

    with pytest.raises(OTLPDecodeError, match="Content-Encoding: gzip"):
        decode("logs", body, "protobuf")


def test_json_sent_as_protobuf_gets_a_hint_to_set_content_type() -> None:
    with pytest.raises(OTLPDecodeError, match="application/json"):
        decode("metrics", example("metrics.json"), "protobuf")


def test_invalid_utf8_in_a_protobuf_attribute_is_rejected() -> None:
    good = Span(trace_id=TRACE_ID, span_id=SPAN_ID, attributes=[kv("key", string_value="AAAA")])
    body = ExportTraceServiceRequest(
        resource_spans=[ResourceSpans(scope_spans=[ScopeSpans(spans=[good])])]
    ).SerializeToString()
    body = body.replace(b"AAAA", b"A\xffAA")

    with pytest.raises(OTLPDecodeError, match="UTF-8"):
        decode("traces", body, "protobuf")


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"{not json", "body is not valid JSON"),
        (b"", "body is empty"),
        (b"[1, 2]", "must be a JSON object"),
        (b"\xff\xfe\x00garbage", "body is not valid JSON"),
    ],
)
def test_invalid_json_is_rejected(body: bytes, expected: str) -> None:
    with pytest.raises(OTLPDecodeError, match=expected):
        decode("traces", body, "json")


def with_span_field(key: str, value: Any) -> dict[str, Any]:
    request = traces_json()
    request["resourceSpans"][0]["scopeSpans"][1]["spans"][3][key] = value
    return request


SPAN_PATH = "resourceSpans[0].scopeSpans[1].spans[3]"


@pytest.mark.parametrize(
    ("request_body", "message"),
    [
        (
            with_span_field("startTimeUnixNano", "soon"),
            f'{SPAN_PATH}.startTimeUnixNano: expected an integer or decimal string, got a string "soon"',
        ),
        (with_span_field("startTimeUnixNano", -1), f"{SPAN_PATH}.startTimeUnixNano: expected an integer or decimal"),
        (with_span_field("startTimeUnixNano", 2**64), f"{SPAN_PATH}.startTimeUnixNano: expected an integer"),
        (with_span_field("name", 5), f"{SPAN_PATH}.name: expected a string, got 5"),
        (with_span_field("kind", "SPAN_KIND_SERVER"), f"{SPAN_PATH}.kind: expected an integer"),
        (with_span_field("traceId", base64.b64encode(TRACE_ID).decode()), f"{SPAN_PATH}.traceId: expected a hex"),
        (with_span_field("attributes", {"k": "v"}), f"{SPAN_PATH}.attributes: expected an array"),
        (with_span_field("attributes", [jkv("k", intValue="ten")]), f"{SPAN_PATH}.attributes[0].value.intValue:"),
        (with_span_field("attributes", [{"key": 1}]), f"{SPAN_PATH}.attributes[0].key: expected a string"),
        (with_span_field("attributes", ["k=v"]), f"{SPAN_PATH}.attributes[0]: expected a {{key, value}} object"),
        (
            with_span_field("attributes", [jkv("k", arrayValue={"values": [{"boolValue": "yes"}]})]),
            f"{SPAN_PATH}.attributes[0].value.arrayValue.values[0].boolValue: expected true or false",
        ),
        (with_span_field("status", {"code": "ERROR"}), f"{SPAN_PATH}.status.code: expected an integer"),
        (with_span_field("events", [{"name": "e"}, {"timeUnixNano": "x"}]), f"{SPAN_PATH}.events[1].timeUnixNano:"),
        (with_span_field("links", [{"spanId": "zz"}]), f"{SPAN_PATH}.links[0].spanId: expected a hex string"),
        ({"resourceSpans": {"not": "a list"}}, "resourceSpans: expected an array, got an object"),
        ({"resourceSpans": [{"scopeSpans": [{"spans": [5]}]}]}, "resourceSpans[0].scopeSpans[0].spans[0]: expected"),
        ({"resourceSpans": [{"resource": {"attributes": 7}}]}, "resourceSpans[0].resource.attributes: expected"),
    ],
)
def test_wrong_json_types_are_rejected_with_the_field_path(request_body: dict[str, Any], message: str) -> None:
    with pytest.raises(OTLPDecodeError) as err:
        decode("traces", js(request_body), "json")

    assert str(err.value).startswith(message)
    assert "OTLP/JSON" in str(err.value)  # says what to do


@pytest.mark.parametrize(
    ("mutate", "path"),
    [
        (lambda r: r["logRecords"][0].update(severityNumber="ERROR"), "logRecords[0].severityNumber"),
        (lambda r: r["logRecords"][0].update(body={"intValue": 1.5}), "logRecords[0].body.intValue"),
        (lambda r: r["logRecords"][0].update(observedTimeUnixNano=True), "logRecords[0].observedTimeUnixNano"),
        (lambda r: r["scope"].update(version=1), "scope.version"),
    ],
)
def test_wrong_json_types_in_logs_name_the_path(mutate: Any, path: str) -> None:
    request = logs_json()
    mutate(request["resourceLogs"][0]["scopeLogs"][0])

    with pytest.raises(OTLPDecodeError, match=r"^resourceLogs\[0\]\.scopeLogs\[0\]\." + path.replace("[", r"\[")):
        decode("logs", js(request), "json")


@pytest.mark.parametrize(
    ("mutate", "path"),
    [
        (
            lambda ms: ms[2]["histogram"]["dataPoints"][0].update(bucketCounts=["1", "x"]),
            "metrics[2].histogram.dataPoints[0].bucketCounts[1]",
        ),
        (
            lambda ms: ms[2]["histogram"]["dataPoints"][0].update(explicitBounds=[None]),
            "metrics[2].histogram.dataPoints[0].explicitBounds[0]",
        ),
        (lambda ms: ms[0]["gauge"]["dataPoints"][1].update(asDouble="fast"), "metrics[0].gauge.dataPoints[1].asDouble"),
        (lambda ms: ms[1]["sum"].update(isMonotonic="yes"), "metrics[1].sum.isMonotonic"),
        (
            lambda ms: ms[3]["exponentialHistogram"]["dataPoints"][0]["positive"].update(offset=2**40),
            "metrics[3].exponentialHistogram.dataPoints[0].positive.offset",
        ),
        (
            lambda ms: ms[4]["summary"]["dataPoints"][0]["quantileValues"][1].update(value=[]),
            "metrics[4].summary.dataPoints[0].quantileValues[1].value",
        ),
        (
            lambda ms: ms[0]["gauge"]["dataPoints"][0]["exemplars"][0].update(traceId=7),
            "metrics[0].gauge.dataPoints[0].exemplars[0].traceId",
        ),
    ],
)
def test_wrong_json_types_in_metrics_name_the_path(mutate: Any, path: str) -> None:
    request = metrics_json()
    mutate(request["resourceMetrics"][0]["scopeMetrics"][0]["metrics"])

    with pytest.raises(OTLPDecodeError) as err:
        decode("metrics", js(request), "json")

    assert str(err.value).startswith(f"resourceMetrics[0].scopeMetrics[0].{path}: expected")


def test_a_bad_field_fails_the_whole_request_even_after_good_items() -> None:
    request = traces_json()
    request["resourceSpans"][1]["scopeSpans"][0]["spans"][0]["endTimeUnixNano"] = "later"

    with pytest.raises(OTLPDecodeError, match=r"resourceSpans\[1\]\.scopeSpans\[0\]\.spans\[0\]\.endTimeUnixNano"):
        decode("traces", js(request), "json")


def test_special_doubles_use_the_proto3_json_spelling() -> None:
    request = {
        "resourceMetrics": [
            {
                "scopeMetrics": [
                    {
                        "metrics": [
                            {
                                "name": "x",
                                "gauge": {"dataPoints": [{"asDouble": "NaN"}, {"asDouble": "-Infinity"}]},
                            }
                        ]
                    }
                ]
            }
        ]
    }

    values = [r["Value"] for r in rows(decode("metrics", js(request), "json"), "otel_metrics_gauge")]

    assert math.isnan(values[0]) and values[1] == -math.inf
