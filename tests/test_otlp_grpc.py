"""OTLP/gRPC: a real gRPC client (the proto's generated stub) exports to the receiver on its own port."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import grpc
import pytest
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.logs.v1 import logs_pb2
from opentelemetry.proto.resource.v1 import resource_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

from obsmcp.config import Settings
from obsmcp.ingest.grpc import start_grpc
from obsmcp.runtime import Runtime


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _resource(service: str) -> resource_pb2.Resource:
    return resource_pb2.Resource(
        attributes=[common_pb2.KeyValue(key="service.name", value=common_pb2.AnyValue(string_value=service))]
    )


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
async def test_grpc_export_is_stored_and_bad_ids_are_reported_as_partial_success(tmp_path: Path) -> None:
    rt = Runtime.open(Settings(data_dir=tmp_path), in_memory=True)
    port = _free_port()
    server = await start_grpc(rt.receiver, "127.0.0.1", port)
    try:
        good = trace_pb2.Span(
            trace_id=bytes(range(16)),
            span_id=bytes(range(8)),
            name="GET /cart",
            kind=2,
            start_time_unix_nano=1_700_000_000_000_000_000,
            end_time_unix_nano=1_700_000_000_250_000_000,
        )
        bad = trace_pb2.Span(trace_id=b"\x01\x02", span_id=bytes(8), name="broken")
        req = trace_service_pb2.ExportTraceServiceRequest(
            resource_spans=[
                trace_pb2.ResourceSpans(
                    resource=_resource("cart-service"), scope_spans=[trace_pb2.ScopeSpans(spans=[good, bad])]
                )
            ]
        )
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            resp = await trace_service_pb2_grpc.TraceServiceStub(channel).Export(req, timeout=10)
            assert resp.partial_success.rejected_spans == 1
            log_req = logs_service_pb2.ExportLogsServiceRequest(
                resource_logs=[
                    logs_pb2.ResourceLogs(
                        resource=_resource("cart-service"),
                        scope_logs=[
                            logs_pb2.ScopeLogs(
                                log_records=[
                                    logs_pb2.LogRecord(
                                        time_unix_nano=1_700_000_000_100_000_000,
                                        severity_number=17,
                                        body=common_pb2.AnyValue(string_value="cart total mismatch"),
                                    )
                                ]
                            )
                        ],
                    )
                ]
            )
            await logs_service_pb2_grpc.LogsServiceStub(channel).Export(log_req, timeout=10)
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await channel.unary_unary(
                    "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
                    request_serializer=lambda b: b,
                    response_deserializer=lambda b: b,
                )(b"\xff\xff\xff not protobuf", timeout=10)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "malformed" in (err.value.details() or "")
        _, rows = await asyncio.to_thread(
            rt.db.query, 'SELECT "ServiceName", "SpanName", "SpanKind", "Duration" FROM otel_traces'
        )
        assert rows == [("cart-service", "GET /cart", "Server", 250_000_000)]
        _, logs = await asyncio.to_thread(rt.db.query, 'SELECT "Body", "SeverityText" FROM otel_logs')
        assert logs == [("cart total mismatch", "ERROR")]
    finally:
        await server.stop(0)
        rt.close()
