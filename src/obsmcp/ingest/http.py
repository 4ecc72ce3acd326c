"""OTLP/HTTP: POST /v1/traces, /v1/logs, /v1/metrics (protobuf or JSON, optionally gzip)."""

from __future__ import annotations

import json
from typing import Any

from google.protobuf.json_format import MessageToDict
from google.rpc import status_pb2
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from obsmcp import metrics
from obsmcp.ingest.otlp import DecodedBatch
from obsmcp.ingest.receiver import Encoding, IngestError, Receiver, Reservation, Signal

PROTOBUF = "application/x-protobuf"
JSON = "application/json"

_RESPONSES: dict[str, tuple[Any, str]] = {
    "traces": (trace_service_pb2.ExportTraceServiceResponse, "rejected_spans"),
    "logs": (logs_service_pb2.ExportLogsServiceResponse, "rejected_log_records"),
    "metrics": (metrics_service_pb2.ExportMetricsServiceResponse, "rejected_data_points"),
}

# gRPC status codes used in google.rpc.Status bodies.
_GRPC_CODE = {400: 3, 413: 8, 415: 3, 429: 8, 503: 14}


def _encoding(content_type: str) -> Encoding | None:
    base = content_type.split(";")[0].strip().lower()
    if base == PROTOBUF:
        return "protobuf"
    if base == JSON:
        return "json"
    return None


def _success(signal: Signal, batch: DecodedBatch, encoding: Encoding) -> Response:
    msg_cls, field = _RESPONSES[signal]
    msg: Any
    msg = msg_cls()
    if batch.rejected or batch.error_message:
        setattr(msg.partial_success, field, batch.rejected)
        msg.partial_success.error_message = batch.error_message
    if encoding == "json":
        return Response(json.dumps(MessageToDict(msg)), media_type=JSON)
    return Response(msg.SerializeToString(), media_type=PROTOBUF)


def _failure(err: IngestError, encoding: Encoding | None) -> Response:
    status = status_pb2.Status(code=_GRPC_CODE.get(err.status, 2), message=err.message)
    headers = {"Retry-After": str(err.retry_after_s)} if err.retry_after_s else None
    if encoding == "protobuf":
        return Response(status.SerializeToString(), status_code=err.status, media_type=PROTOBUF, headers=headers)
    return JSONResponse({"code": status.code, "message": err.message}, status_code=err.status, headers=headers)


async def _read_capped(request: Request, cap: int, reservation: Reservation) -> bytes:
    """The body, refused (413) past `cap` and reserved against the memory budget as it arrives (429)."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit():
        if int(declared) > cap:
            raise IngestError(413, f"the body ({declared} bytes) is larger than {cap} bytes: send smaller batches")
        # Refuse before reading when the declared body cannot fit: a flood is turned away at no cost.
        reservation.grow(int(declared))
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > cap:
            raise IngestError(413, f"the body is larger than {cap} bytes: send smaller batches")
        if size > reservation.held:
            reservation.grow(size - reservation.held)
        chunks.append(chunk)
    return b"".join(chunks)


def otlp_routes(receiver: Receiver) -> list[Route]:
    def endpoint(signal: Signal):  # type: ignore[no-untyped-def]
        async def handle(request: Request) -> Response:
            response = await respond(request)
            metrics.INGEST_REQUESTS.labels("http", str(response.status_code)).inc()
            return response

        async def respond(request: Request) -> Response:
            encoding = _encoding(request.headers.get("content-type", ""))
            if encoding is None:
                return _failure(
                    IngestError(
                        415,
                        f"Content-Type {request.headers.get('content-type')!r} is not "
                        f"supported: use {PROTOBUF} or {JSON}",
                    ),
                    None,
                )
            reservation = receiver.reservation()
            try:
                body = await _read_capped(request, receiver.max_body_bytes, reservation)
                batch = await receiver.ingest(
                    signal, body, encoding, request.headers.get("content-encoding", ""), reservation
                )
            except IngestError as e:
                return _failure(e, encoding)
            except ClientDisconnect:
                return Response(status_code=499)
            finally:
                reservation.release_all()
            return _success(signal, batch, encoding)

        return handle

    return [Route(f"/v1/{s}", endpoint(s), methods=["POST"]) for s in ("traces", "logs", "metrics")]


def otlp_app(receiver: Receiver) -> Starlette:
    return Starlette(routes=otlp_routes(receiver))
