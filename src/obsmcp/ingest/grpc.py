"""OTLP/gRPC on its own port (4317 by convention), sharing the receiver core with OTLP/HTTP.

Requests arrive as raw bytes (no deserializer) and go to the same protobuf decoder as HTTP. Status mapping
per the OTLP spec: malformed -> INVALID_ARGUMENT, backpressure -> UNAVAILABLE (retryable), too large ->
RESOURCE_EXHAUSTED.
"""

from __future__ import annotations

from typing import Any

import grpc
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

from obsmcp import metrics
from obsmcp.ingest.receiver import IngestError, Receiver, Signal

_SERVICES: dict[Signal, tuple[str, Any, str]] = {
    "traces": (
        "opentelemetry.proto.collector.trace.v1.TraceService",
        trace_service_pb2.ExportTraceServiceResponse,
        "rejected_spans",
    ),
    "logs": (
        "opentelemetry.proto.collector.logs.v1.LogsService",
        logs_service_pb2.ExportLogsServiceResponse,
        "rejected_log_records",
    ),
    "metrics": (
        "opentelemetry.proto.collector.metrics.v1.MetricsService",
        metrics_service_pb2.ExportMetricsServiceResponse,
        "rejected_data_points",
    ),
}


def _handler(receiver: Receiver, signal: Signal, response_cls: Any, field: str) -> Any:
    async def export(request: bytes, context: grpc.aio.ServicerContext) -> Any:
        try:
            batch = await receiver.ingest(signal, request, "protobuf")
        except IngestError as e:
            # Counted by the HTTP status the same refusal gets over OTLP/HTTP, so both transports compare.
            metrics.INGEST_REQUESTS.labels("grpc", str(e.status)).inc()
            code = {400: grpc.StatusCode.INVALID_ARGUMENT, 413: grpc.StatusCode.RESOURCE_EXHAUSTED}.get(
                e.status, grpc.StatusCode.UNAVAILABLE
            )
            await context.abort(code, e.message)
        metrics.INGEST_REQUESTS.labels("grpc", "200").inc()
        resp = response_cls()
        if batch.rejected or batch.error_message:
            setattr(resp.partial_success, field, batch.rejected)
            resp.partial_success.error_message = batch.error_message
        return resp

    return grpc.unary_unary_rpc_method_handler(export, response_serializer=response_cls.SerializeToString)


async def start_grpc(receiver: Receiver, host: str, port: int) -> grpc.aio.Server:
    server = grpc.aio.server(options=[("grpc.max_receive_message_length", receiver.max_body_bytes)])
    for signal, (service, response_cls, field) in _SERVICES.items():
        server.add_generic_rpc_handlers(
            (
                grpc.method_handlers_generic_handler(
                    service, {"Export": _handler(receiver, signal, response_cls, field)}
                ),
            )
        )
    bound = server.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        raise OSError(f"could not bind OTLP/gRPC to {host}:{port}: is the port in use? pick another --otlp-grpc-port")
    await server.start()
    return server
