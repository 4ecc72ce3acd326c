"""obsmcp's telemetry about itself: structured logs, scrape-time gauges, /metrics rendering, the health model.

Logs are structlog events on stderr (stdout is the MCP channel in stdio mode, so nothing is ever logged
there): readable on a terminal, JSON lines with --log-format json. Secrets never reach a log line: values
under secret-looking keys are replaced and every string value goes through the same redaction as tool output.

The metric objects live in `obsmcp.metrics`; this module adds what is read at scrape time (ingest queue
depth, store rows and bytes) and renders the registry. prometheus_client is imported inside the functions
that need it: importing it costs ~0.2 s, and every CLI command imports this module for its logging.
"""

from __future__ import annotations

import collections
import logging
import math
import sys
import threading
import time
from collections.abc import Callable, Iterator, MutableMapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

import structlog

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

    from obsmcp.store.database import Store

log = structlog.get_logger("obsmcp.telemetry")

# -- logging --------------------------------------------------------------------------------------------

LogBridge = Callable[[MutableMapping[str, Any]], None]
_log_bridge: LogBridge | None = None

# Keys whose values are credentials whatever they look like, beyond the names redaction.sensitive_key knows
# (`db_password`, `api_key`, `token`, ...; `max_tokens` is not one).
_SECRET_KEYS = frozenset({"authorization", "proxy_authorization", "cookie", "set_cookie", "dsn", "headers"})
_PLAIN_KEYS = frozenset({"timestamp", "level", "logger"})


def redact_secrets(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: no secret in a log line, whoever wrote the log call (the same detectors as tool
    output; imported on first use, as they take a while to compile)."""
    from obsmcp.redaction import redact, sensitive_key

    for key, value in list(event_dict.items()):
        if key in _PLAIN_KEYS or value is None:
            continue
        if key.lower() in _SECRET_KEYS or sensitive_key(key):
            event_dict[key] = "[REDACTED]"
        elif isinstance(value, str):
            event_dict[key] = redact(value)
    return event_dict


def _bridge(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: hands each event to self-tracing (trace ids, OTel log records) when it is on."""
    bridge = _log_bridge
    if bridge is not None:
        bridge(event_dict)
    return event_dict


def set_log_bridge(bridge: LogBridge | None) -> None:
    """Install (or remove, with None) the function that sees every log event after redaction."""
    global _log_bridge
    _log_bridge = bridge


def configure_logging(fmt: str = "console", level: str = "info") -> None:
    lvl = getattr(logging, level.upper(), logging.INFO)
    tail: list[structlog.types.Processor]
    if fmt == "json":
        # Tracebacks become one string field, so each event stays one JSON line.
        tail = [structlog.processors.format_exc_info, redact_secrets, _bridge, structlog.processors.JSONRenderer()]
    else:
        # Tracebacks without local variables (a local can hold a token; redaction never sees a traceback), and
        # without colour codes when stderr is a file.
        tty = sys.stderr.isatty()
        formatter: structlog.typing.ExceptionRenderer = (
            structlog.dev.RichTracebackFormatter(show_locals=False) if tty else structlog.dev.plain_traceback
        )
        renderer = structlog.dev.ConsoleRenderer(colors=tty, exception_formatter=formatter)
        tail = [redact_secrets, _bridge, renderer]
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            *tail,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(lvl),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    # The SDK and uvicorn log through the standard library: send it to stderr at the same level.
    logging.basicConfig(stream=sys.stderr, level=max(lvl, logging.WARNING), force=True)
    # The SDK logs every rejected tool call at INFO with the caller's text; obsmcp logs its own event.
    logging.getLogger("mcp").setLevel(logging.WARNING)


# -- tool calls -----------------------------------------------------------------------------------------

# Outcomes that are the server's fault (bad input and refused requests are the caller's).
SERVER_ERROR_OUTCOMES = frozenset({"error"})


class ToolOutcomeWindow:
    """Tool call outcomes over a sliding window, for /health's recent error rate.

    Keeps (time, failed) per call for at most `horizon_s` and at most `max_calls` calls, so memory stays
    bounded under any load; the window asked for at check time may be shorter than the horizon.
    """

    def __init__(self, horizon_s: float = 3600.0, max_calls: int = 100_000) -> None:
        self.horizon_s = horizon_s
        self._calls: collections.deque[tuple[float, bool]] = collections.deque(maxlen=max_calls)
        self._lock = threading.Lock()

    def record(self, outcome: str, now: float | None = None) -> None:
        t = time.monotonic() if now is None else now
        with self._lock:
            self._calls.append((t, outcome in SERVER_ERROR_OUTCOMES))
            while self._calls and self._calls[0][0] < t - self.horizon_s:
                self._calls.popleft()

    def counts(self, window_s: float, now: float | None = None) -> tuple[int, int]:
        """(calls, server errors) in the last window_s seconds."""
        t = time.monotonic() if now is None else now
        calls = errors = 0
        with self._lock:
            for at, failed in reversed(self._calls):
                if at < t - window_s:
                    break
                calls += 1
                errors += failed
        return calls, errors


TOOL_OUTCOMES = ToolOutcomeWindow()


def record_tool_call(tool: str, outcome: str, seconds: float, result_bytes: int | None) -> None:
    """Count one tool call in the metrics and in the error-rate window (result_bytes: answers only)."""
    from obsmcp import metrics

    metrics.TOOL_CALLS.labels(tool, outcome).inc()
    metrics.TOOL_DURATION.labels(tool).observe(seconds)
    if result_bytes is not None:
        metrics.TOOL_RESULT_BYTES.labels(tool).observe(result_bytes)
    TOOL_OUTCOMES.record(outcome)


# -- health ---------------------------------------------------------------------------------------------

CheckStatus = Literal["ok", "warn", "fail"]
HealthStatus = Literal["healthy", "degraded", "unhealthy"]


@dataclass(frozen=True)
class Check:
    """One fact behind /health: `warn` makes the server degraded, `fail` unhealthy."""

    name: str
    status: CheckStatus
    detail: str
    values: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "status": self.status, "detail": self.detail, **self.values}


def overall_status(checks: list[Check]) -> HealthStatus:
    statuses = {c.status for c in checks}
    if "fail" in statuses:
        return "unhealthy"
    if "warn" in statuses:
        return "degraded"
    return "healthy"


def check_store_writable(db: Store, timeout_s: float = 5.0) -> Check:
    """Commit one small write, the way ingest does: reads alone do not show a full disk or a broken file.

    On ClickHouse a write probe would add a part per health check; there the check is that the server answers
    (failed inserts show as ingest errors and 503s to OTLP senders).
    """
    import duckdb

    from obsmcp.store.database import Database, StoreError

    if not isinstance(db, Database):
        try:
            db.query("SELECT 1", timeout_s=timeout_s)
        except Exception as e:  # any failure to answer is what this check reports
            return Check(
                "store",
                "fail",
                f"the store {db.describe()} does not answer ({_first_line(e)}): check that it is up and reachable",
                {"reachable": False},
            )
        return Check("store", "ok", f"the store {db.describe()} answers", {"reachable": True})
    cur = db.cursor()
    # A commit stuck on a dead disk must not hang /health: interrupt it like a slow query.
    timer = threading.Timer(timeout_s, cur.interrupt)
    timer.start()
    try:
        cur.execute(
            "INSERT OR REPLACE INTO obsmcp_meta VALUES ('health_probe', ?)",
            [time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())],
        )
    except (duckdb.Error, StoreError) as e:
        return Check(
            "store",
            "fail",
            f"the store cannot commit writes ({_first_line(e)}): ingest fails until it can; check the disk "
            f"holding {db.path or 'the in-memory store'} (space, permissions, errors)",
            {"writable": False},
        )
    finally:
        timer.cancel()
        cur.close()
    return Check("store", "ok", "the store commits writes", {"writable": True})


def _first_line(e: BaseException) -> str:
    return str(e).splitlines()[0] if str(e) else type(e).__name__


def check_ingest_queue(depth: int, limit: int, warn_share: float) -> Check:
    warn_at = int(limit * warn_share)
    values = {"depth": depth, "limit": limit, "warn_at": warn_at}
    if depth >= warn_at:
        return Check(
            "ingest_queue",
            "warn",
            f"{depth} rows wait to be written ({depth / limit:.0%} of the {limit}-row limit): senders get 429 "
            "at the limit; the store is slower than ingest",
            values,
        )
    return Check("ingest_queue", "ok", f"{depth} rows waiting", values)


def check_circuits() -> Check:
    """Backends whose circuit breaker is open (read from the obsmcp_circuit_state gauge the HTTP client sets)."""
    from obsmcp import metrics

    states = {v: k for k, v in metrics.CIRCUIT_STATE_VALUE.items()}
    by_backend: dict[str, str] = {}
    for family in metrics.CIRCUIT_STATE.collect():
        for sample in family.samples:
            by_backend[sample.labels["backend"]] = states.get(int(sample.value), str(sample.value))
    open_ = sorted(b for b, s in by_backend.items() if s == "open")
    values = {"open": open_, "states": dict(sorted(by_backend.items()))}
    if open_:
        return Check(
            "circuits",
            "warn",
            f"circuit open for {', '.join(open_)}: calls to it fail fast until a probe succeeds; "
            "tools answer from the other sources",
            values,
        )
    return Check("circuits", "ok", f"{len(by_backend)} backends, none open", values)


def check_tool_errors(window: ToolOutcomeWindow, window_s: float, max_rate: float, min_calls: int) -> Check:
    calls, errors = window.counts(window_s)
    rate = errors / calls if calls else 0.0
    values = {"calls": calls, "errors": errors, "rate": round(rate, 4), "window_s": window_s, "max_rate": max_rate}
    if calls >= min_calls and rate > max_rate:
        return Check(
            "tool_error_rate",
            "warn",
            f"{errors} of {calls} tool calls in the last {window_s:g}s failed on the server side "
            f"({rate:.0%} > {max_rate:.0%}): see the tool_internal_error and tool_store_error log events",
            values,
        )
    return Check("tool_error_rate", "ok", f"{errors} server errors in {calls} tool calls", values)


# -- scrape-time gauges ---------------------------------------------------------------------------------


class _Queue(Protocol):
    @property
    def pending_rows(self) -> int: ...


@dataclass
class _StoreSource:
    db: Store
    writer: _Queue
    queue_limit: int


class StoreCollector:
    """Gauges read when /metrics is scraped: ingest queue depth, store rows by table, store bytes.

    Reading them at scrape time (not on every write) costs nothing between scrapes. Per-table bytes come from
    DuckDB's storage blocks and change only at checkpoints, so they are cached for `table_bytes_ttl_s`.
    """

    def __init__(self, table_bytes_ttl_s: float = 60.0) -> None:
        self._source: _StoreSource | None = None
        self._lock = threading.Lock()
        self._table_bytes_ttl_s = table_bytes_ttl_s
        self._table_bytes: tuple[float, dict[str, int]] | None = None

    def bind(self, db: Store, writer: _Queue, queue_limit: int) -> None:
        with self._lock:
            self._source = _StoreSource(db, writer, queue_limit)
            self._table_bytes = None

    def unbind(self, db: Store) -> None:
        with self._lock:
            if self._source is not None and self._source.db is db:
                self._source = None

    def describe(self) -> list[Metric]:
        return list(self._families())

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            source = self._source
        yield from self._families(source)

    def _families(self, source: _StoreSource | None = None) -> Iterator[Metric]:
        from prometheus_client.core import GaugeMetricFamily

        depth = GaugeMetricFamily("obsmcp_ingest_queue_rows", "rows received and waiting to be committed")
        limit = GaugeMetricFamily("obsmcp_ingest_queue_limit_rows", "queue depth at which OTLP senders get 429")
        rows = GaugeMetricFamily("obsmcp_store_rows", "rows in each store table", labels=["table"])
        size = GaugeMetricFamily("obsmcp_store_bytes", "size of the store on disk (database file and WAL)")
        table_size = GaugeMetricFamily(
            "obsmcp_store_table_bytes",
            "estimated bytes of each store table: its storage blocks times the block size (refreshed each minute)",
            labels=["table"],
        )
        if source is not None:
            depth.add_metric([], source.writer.pending_rows)
            limit.add_metric([], source.queue_limit)
            size.add_metric([], source.db.size_bytes())
            try:
                for table, n in sorted(source.db.table_stats().items()):
                    rows.add_metric([table], n)
                for table, n in sorted(self._cached_table_bytes(source.db).items()):
                    table_size.add_metric([table], n)
            except Exception as e:  # a failing store must not fail the whole scrape; /health reports it
                log.warning("store_stats_failed", error=_first_line(e))
        yield from (depth, limit, rows, size, table_size)

    def _cached_table_bytes(self, db: Store) -> dict[str, int]:
        now = time.monotonic()
        cached = self._table_bytes
        if cached is not None and now - cached[0] < self._table_bytes_ttl_s:
            return cached[1]
        value = store_table_bytes(db)
        self._table_bytes = (now, value)
        return value


def store_table_bytes(db: Store) -> dict[str, int]:
    """Bytes per table: ClickHouse's active parts; on DuckDB estimated from the blocks its columns occupy."""
    from obsmcp.store import schema
    from obsmcp.store.database import Database

    names = [t.name for t in schema.TELEMETRY_TABLES]
    if db.dialect.name == "clickhouse":
        _, rows = db.query(
            "SELECT table, sum(bytes_on_disk) FROM system.parts WHERE active AND database = currentDatabase() "
            "GROUP BY table"
        )
        on_disk = {str(t): int(n) for t, n in rows}
        return {name: on_disk.get(name, 0) for name in names}
    if not isinstance(db, Database) or db.path is None:
        return dict.fromkeys(names, 0)
    _, size_rows = db.query("SELECT block_size FROM pragma_database_size()")
    block = int(size_rows[0][0]) if size_rows else 262_144
    parts = [
        f"SELECT '{name}' AS t, count(DISTINCT b) AS n FROM ("
        f"SELECT block_id AS b FROM pragma_storage_info('{name}') WHERE persistent AND block_id >= 0 "
        f"UNION ALL SELECT unnest(additional_block_ids) FROM pragma_storage_info('{name}') WHERE persistent)"
        for name in names
    ]
    _, rows = db.query(" UNION ALL ".join(parts))
    return {str(t): int(n) * block for t, n in rows}


STORE_COLLECTOR = StoreCollector()
_registered = False


def watch_store(db: Store, writer: _Queue, queue_limit: int) -> None:
    """Expose this store's queue depth, rows and bytes on /metrics (the last store bound wins)."""
    global _registered
    from obsmcp import metrics

    if not _registered:
        metrics.REGISTRY.register(STORE_COLLECTOR)
        _registered = True
    STORE_COLLECTOR.bind(db, writer, queue_limit)


# -- rendering ------------------------------------------------------------------------------------------


def metrics_exposition(accept: str | None) -> tuple[bytes, str]:
    """The registry in the format the scraper asked for (Prometheus text, or OpenMetrics): body, content type."""
    from prometheus_client.exposition import choose_encoder

    from obsmcp import metrics

    encoder, content_type = choose_encoder(accept or "")
    return encoder(metrics.REGISTRY), content_type


def _json_number(value: float) -> float | str:
    """JSON has no NaN or infinities: write them as Prometheus' HTTP API does, as strings."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return value


def metrics_json() -> dict[str, Any]:
    """The same samples as /metrics, grouped by metric family with its type and help."""
    from obsmcp import metrics

    families = []
    for family in metrics.REGISTRY.collect():
        families.append(
            {
                "name": family.name,
                "type": family.type,
                "help": family.documentation,
                "samples": [
                    {"name": s.name, "labels": dict(s.labels), "value": _json_number(s.value)} for s in family.samples
                ],
            }
        )
    return {"metrics": families}
