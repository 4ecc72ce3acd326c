"""obsmcp traces itself: its own spans and logs, to an OTLP endpoint and/or into its own store.

Two destinations, either or both:

* `OTEL_EXPORTER_OTLP_ENDPOINT` set: spans and log events go there over OTLP/HTTP with the standard
  OpenTelemetry exporters (`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`/`_LOGS_ENDPOINT` send one signal elsewhere or
  alone; headers, timeouts, `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_BSP_*`, `OTEL_BLRP_*` apply).
  An endpoint that is this server itself is served by self-ingest instead (see below).
* `--self-ingest`: the same spans and logs go into this server's own store, so an agent can debug obsmcp with
  obsmcp's tools (`search_traces service=obsmcp`). They take the in-process path: encoded with the OTLP
  exporters' own protobuf encoders and handed to this process's `Receiver`, exactly what an OTLP/HTTP request
  would carry, without a loopback connection, a port, or an auth token.

The spans are the MCP SDK's own: it wraps every MCP message in a SERVER span (`tools/call <tool>`, with the
JSON-RPC id); obsmcp adds its outcome and result size to that span instead of opening a second one. Log events
are the structlog events of the server log, with trace and span ids added while a span is current.

Self-ingest must not feed itself: ingesting a batch runs obsmcp code, and a span or log event made there would
be exported and ingested again, forever. While an exporter runs, a context variable is set (it follows the
ingest coroutine onto the event loop, since asyncio copies the caller's context); the sampler drops spans
and the log bridge drops events made under it.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import os
import time
from collections.abc import AsyncIterator, Iterable, Iterator, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import structlog
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry._logs import SeverityNumber
from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk._logs import Logger, LoggerProvider, ReadableLogRecord
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor, LogRecordExporter, LogRecordExportResult
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, Decision, ParentBased, Sampler, SamplingResult
from opentelemetry.trace import Link, SpanKind
from opentelemetry.trace.span import TraceState
from opentelemetry.util.types import Attributes

from obsmcp import __version__, telemetry
from obsmcp.ingest.receiver import IngestError, Receiver, Signal

log = structlog.get_logger("obsmcp.selftrace")

SERVICE_NAME = "obsmcp"

_EXPORTING: contextvars.ContextVar[bool] = contextvars.ContextVar("obsmcp_self_export", default=False)


@contextlib.contextmanager
def _exporting() -> Iterator[None]:
    token = _EXPORTING.set(True)
    try:
        yield
    finally:
        _EXPORTING.reset(token)


class _NoSelfFeedSampler(Sampler):
    """Samples like `inner`, except spans started while obsmcp exports its own telemetry (see the module doc)."""

    def __init__(self, inner: Sampler) -> None:
        self._inner = inner

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: TraceState | None = None,
    ) -> SamplingResult:
        if _EXPORTING.get():
            return SamplingResult(Decision.DROP)
        return self._inner.should_sample(parent_context, trace_id, name, kind, attributes, links, trace_state)

    def get_description(self) -> str:
        return f"NoSelfFeed{{{self._inner.get_description()}}}"


class _GuardedSpanExporter(SpanExporter):
    def __init__(self, inner: SpanExporter) -> None:
        self._inner = inner

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        with _exporting():
            return self._inner.export(spans)

    def shutdown(self) -> None:
        self._inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._inner.force_flush(timeout_millis)


class _GuardedLogExporter(LogRecordExporter):
    def __init__(self, inner: LogRecordExporter) -> None:
        self._inner = inner

    def export(self, batch: Sequence[ReadableLogRecord]) -> LogRecordExportResult:
        with _exporting():
            return self._inner.export(batch)

    def shutdown(self) -> None:
        self._inner.shutdown()  # type: ignore[no-untyped-call]  # untyped in the SDK

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._inner.force_flush(timeout_millis)


class SelfIngest:
    """Hands OTLP protobuf requests to this process's own Receiver, on the server's event loop.

    Exporters run in the OpenTelemetry batch processors' threads; the receiver is asyncio code (it decodes in
    the worker processes and waits for the group commit), so each request is run on the loop and waited for.
    """

    def __init__(self, receiver: Receiver, loop: asyncio.AbstractEventLoop, timeout_s: float = 30.0) -> None:
        self.receiver = receiver
        self.loop = loop
        self.timeout_s = timeout_s

    def ingest(self, signal: Signal, body: bytes) -> bool:
        try:
            future = asyncio.run_coroutine_threadsafe(self.receiver.ingest(signal, body, "protobuf"), self.loop)
        except RuntimeError as e:  # the loop is closed: the server is gone, nothing can be stored any more
            log.warning("self_ingest_failed", signal=signal, error=f"the server's event loop is closed ({e})")
            return False
        try:
            future.result(self.timeout_s)
        except IngestError as e:
            log.warning("self_ingest_failed", signal=signal, status=e.status, error=e.message)
            return False
        except TimeoutError:
            future.cancel()
            log.warning("self_ingest_failed", signal=signal, error=f"not committed within {self.timeout_s:g}s")
            return False
        except Exception as e:  # e.g. the writer stopped during shutdown: this batch is lost, say so
            log.warning("self_ingest_failed", signal=signal, error=f"{type(e).__name__}: {e}")
            return False
        return True


class SelfIngestSpanExporter(SpanExporter):
    def __init__(self, sink: SelfIngest) -> None:
        self._sink = sink

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        body = encode_spans(spans).SerializeToString()
        return SpanExportResult.SUCCESS if self._sink.ingest("traces", body) else SpanExportResult.FAILURE

    def shutdown(self) -> None:
        pass


class SelfIngestLogExporter(LogRecordExporter):
    def __init__(self, sink: SelfIngest) -> None:
        self._sink = sink

    def export(self, batch: Sequence[ReadableLogRecord]) -> LogRecordExportResult:
        body = encode_logs(batch).SerializeToString()
        return LogRecordExportResult.SUCCESS if self._sink.ingest("logs", body) else LogRecordExportResult.FAILURE

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


_SEVERITY = {
    "debug": SeverityNumber.DEBUG,
    "info": SeverityNumber.INFO,
    "warning": SeverityNumber.WARN,
    "warn": SeverityNumber.WARN,
    "error": SeverityNumber.ERROR,
    "exception": SeverityNumber.ERROR,
    "critical": SeverityNumber.FATAL,
}
_NOT_ATTRIBUTES = frozenset({"event", "level", "timestamp", "exc_info"})


def _attribute(value: Any) -> str | bool | int | float:
    return value if isinstance(value, str | bool | int | float) else str(value)


@dataclass
class SelfTelemetry:
    """What self-tracing started; `shutdown` flushes what is buffered and stops it."""

    tracer_provider: TracerProvider
    logger_provider: LoggerProvider
    destinations: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._logger: Logger = self.logger_provider.get_logger("obsmcp", __version__)  # type: ignore[assignment]

    def bridge(self, event_dict: MutableMapping[str, Any]) -> None:
        """The structlog bridge: trace ids into the log line, and the event as an OTel log record."""
        span_context = trace.get_current_span().get_span_context()
        if span_context.is_valid:
            event_dict["trace_id"] = format(span_context.trace_id, "032x")
            event_dict["span_id"] = format(span_context.span_id, "016x")
        if _EXPORTING.get():
            return
        level = str(event_dict.get("level", "info"))
        self._logger.emit(
            timestamp=time.time_ns(),
            context=otel_context.get_current(),
            severity_number=_SEVERITY.get(level, SeverityNumber.INFO),
            severity_text=level.upper(),
            body=str(event_dict.get("event", "")),
            attributes={k: _attribute(v) for k, v in event_dict.items() if k not in _NOT_ATTRIBUTES and v is not None},
        )

    def shutdown(self) -> None:
        telemetry.set_log_bridge(None)
        self.tracer_provider.shutdown()
        self.logger_provider.shutdown()


_LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1", "0.0.0.0", "::"})


def otlp_endpoints() -> tuple[str | None, str | None]:
    """Where the standard OTLP/HTTP environment variables send traces and logs (None: not configured)."""
    base = os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip().rstrip("/")
    traces = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip() or (base and f"{base}/v1/traces")
    logs = os.environ.get("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", "").strip() or (base and f"{base}/v1/logs")
    return traces or None, logs or None


def _is_own(url: str, own: Sequence[str]) -> bool:
    """Does url point at one of this server's own listeners (same port on a loopback or the same host)?"""
    try:
        u = urlsplit(url)
        port = u.port or (443 if u.scheme == "https" else 80)
    except ValueError:
        return False
    for mine in own:
        m = urlsplit(mine)
        if m.port == port and (u.hostname in _LOOPBACK or u.hostname == m.hostname):
            return True
    return False


def start(
    receiver: Receiver,
    loop: asyncio.AbstractEventLoop,
    *,
    self_ingest: bool,
    own_endpoints: Sequence[str] = (),
) -> SelfTelemetry | None:
    """Start self-tracing: to the OTLP endpoints when configured, into `receiver` with self_ingest.

    An endpoint that is this server itself (OTEL_EXPORTER_OTLP_ENDPOINT=http://localhost:4318, the SDK default,
    set for the instrumented apps) becomes self-ingest: the in-process path, guarded against feeding itself.
    Returns None (and changes nothing) when there is nowhere to send, or OTEL_SDK_DISABLED=true.
    """
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    traces_url, logs_url = otlp_endpoints()
    if any(url and _is_own(url, own_endpoints) for url in (traces_url, logs_url)):
        log.info("self_tracing_endpoint_is_this_server", endpoint=traces_url or logs_url, using="self-ingest")
        traces_url = logs_url = None
        self_ingest = True
    if not (traces_url or logs_url or self_ingest):
        return None
    resource = Resource.create(
        {"service.name": os.environ.get("OTEL_SERVICE_NAME") or SERVICE_NAME, "service.version": __version__}
    )
    tracer_provider = TracerProvider(resource=resource, sampler=_NoSelfFeedSampler(ParentBased(ALWAYS_ON)))
    logger_provider = LoggerProvider(resource=resource)
    destinations: list[str] = []
    if traces_url:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter(endpoint=traces_url)
        tracer_provider.add_span_processor(BatchSpanProcessor(_GuardedSpanExporter(exporter)))
        destinations.append(traces_url)
    if logs_url:
        from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter

        log_exporter = OTLPLogExporter(endpoint=logs_url)
        logger_provider.add_log_record_processor(BatchLogRecordProcessor(_GuardedLogExporter(log_exporter)))
        destinations.append(logs_url)
    if self_ingest:
        sink = SelfIngest(receiver, loop)
        tracer_provider.add_span_processor(BatchSpanProcessor(_GuardedSpanExporter(SelfIngestSpanExporter(sink))))
        logger_provider.add_log_record_processor(
            BatchLogRecordProcessor(_GuardedLogExporter(SelfIngestLogExporter(sink)))
        )
        destinations.append("self")
    # Global, so the MCP SDK's spans (its tracer is a proxy to the global provider) are recorded too.
    trace.set_tracer_provider(tracer_provider)
    st = SelfTelemetry(tracer_provider, logger_provider, destinations)
    telemetry.set_log_bridge(st.bridge)
    # Where to, never with the exporter headers (they may hold an API key).
    log.info("self_tracing_started", traces_to=traces_url, logs_to=logs_url, self_ingest=self_ingest)
    return st


@contextlib.asynccontextmanager
async def self_telemetry(
    receiver: Receiver, *, self_ingest: bool, own_endpoints: Iterable[Any] = ()
) -> AsyncIterator[SelfTelemetry | None]:
    """Self-tracing for the life of a running server (enter it inside the server's event loop, after its
    listeners are up: own_endpoints are their URLs, as in Runtime.endpoints)."""
    own = [str(e) for e in own_endpoints if str(e).startswith(("http://", "https://"))]
    st = start(receiver, asyncio.get_running_loop(), self_ingest=self_ingest, own_endpoints=own)
    try:
        yield st
    finally:
        if st is not None:
            # Flushing self-ingest runs the receiver on this loop: do it from a thread, or both wait forever.
            await asyncio.to_thread(st.shutdown)
