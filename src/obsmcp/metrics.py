"""obsmcp's own Prometheus metrics, in one registry, defined in one place.

Every part records into these objects (tools, the resilient HTTP client, ingest, the store); `/metrics` renders
the registry in the Prometheus text format and `/metrics/json` the same samples as JSON. A dedicated registry
(not prometheus_client's global one) keeps tests and embedded uses from seeing each other's samples twice.
Label values are bounded sets (tool names, backend names, outcomes, signals): never user input.
"""

from __future__ import annotations

import time

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    PlatformCollector,
    ProcessCollector,
)

from obsmcp import __version__

REGISTRY = CollectorRegistry(auto_describe=True)
ProcessCollector(registry=REGISTRY)
PlatformCollector(registry=REGISTRY)

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_SIZE_BUCKETS = (256, 1024, 2048, 4096, 8192, 16384, 32768, 65536, 131072, 262144)

BUILD_INFO = Info("obsmcp_build", "obsmcp version", registry=REGISTRY)
BUILD_INFO.info({"version": __version__})
START_TIME = time.time()
UPTIME = Gauge("obsmcp_uptime_seconds", "seconds since this process started", registry=REGISTRY)
UPTIME.set_function(lambda: time.time() - START_TIME)

# -- MCP tool calls -----------------------------------------------------------------------------------
TOOL_CALLS = Counter(
    "obsmcp_tool_calls", "MCP tool calls by tool and outcome (ok|bad_request|error|rejected)",
    ["tool", "outcome"], registry=REGISTRY,
)  # fmt: skip
TOOL_DURATION = Histogram(
    "obsmcp_tool_call_duration_seconds", "MCP tool call duration", ["tool"],
    buckets=_LATENCY_BUCKETS, registry=REGISTRY,
)  # fmt: skip
TOOL_RESULT_BYTES = Histogram(
    "obsmcp_tool_result_bytes", "size of a tool answer (text + structured content), bytes", ["tool"],
    buckets=_SIZE_BUCKETS, registry=REGISTRY,
)  # fmt: skip

# -- remote backends (the resilient HTTP client) -------------------------------------------------------
BACKEND_REQUESTS = Counter(
    "obsmcp_backend_requests", "requests sent to a backend, by HTTP status or error kind (timeout, connect, ...)",
    ["backend", "status"], registry=REGISTRY,
)  # fmt: skip
BACKEND_DURATION = Histogram(
    "obsmcp_backend_request_duration_seconds", "duration of one request to a backend (each attempt)",
    ["backend"], buckets=_LATENCY_BUCKETS, registry=REGISTRY,
)  # fmt: skip
BACKEND_RETRIES = Counter(
    "obsmcp_backend_retries", "retried requests, by the reason of the retry", ["backend", "reason"],
    registry=REGISTRY,
)  # fmt: skip
CACHE_HITS = Counter("obsmcp_cache_hits", "answers served from the TTL cache", ["backend"], registry=REGISTRY)
CACHE_MISSES = Counter("obsmcp_cache_misses", "cacheable requests not in the cache", ["backend"], registry=REGISTRY)
CIRCUIT_STATE = Gauge(
    "obsmcp_circuit_state", "circuit breaker state per backend: 0 closed, 1 half-open, 2 open", ["backend"],
    registry=REGISTRY,
)  # fmt: skip
CIRCUIT_TRANSITIONS = Counter(
    "obsmcp_circuit_transitions", "circuit breaker state changes, by the state entered", ["backend", "state"],
    registry=REGISTRY,
)  # fmt: skip
BACKEND_THROTTLED = Counter(
    "obsmcp_backend_throttled", "requests delayed by the per-backend token bucket", ["backend"], registry=REGISTRY
)

# -- ingest and store -----------------------------------------------------------------------------------
INGEST_RECORDS = Counter(
    "obsmcp_ingest_records", "OTLP records by signal (traces|logs|metrics) and outcome (accepted|rejected)",
    ["signal", "outcome"], registry=REGISTRY,
)  # fmt: skip
INGEST_REQUESTS = Counter(
    "obsmcp_ingest_requests", "OTLP requests by transport (http|grpc) and HTTP status", ["transport", "status"],
    registry=REGISTRY,
)  # fmt: skip
# Gauges read at scrape time (queue depth, store rows and bytes) are set by the collector in telemetry.py.

# -- HTTP access ------------------------------------------------------------------------------------------
HTTP_REJECTED = Counter(
    "obsmcp_http_rejected", "HTTP requests refused before reaching a tool (auth|rate_limit|body_too_large|host)",
    ["reason"], registry=REGISTRY,
)  # fmt: skip

# -- alert notifications (obsmcp.alerting.notify) ---------------------------------------------------------
ALERT_NOTIFICATIONS = Counter(
    "obsmcp_alert_notifications", "alert webhook messages by webhook, format and outcome (sent|failed|dropped)",
    ["webhook", "format", "outcome"], registry=REGISTRY,
)  # fmt: skip
ALERT_NOTIFICATION_RETRIES = Counter(
    "obsmcp_alert_notification_retries", "retried alert webhook sends, by webhook and reason (429, 503, connect, ...)",
    ["webhook", "reason"], registry=REGISTRY,
)  # fmt: skip
ALERT_NOTIFICATION_QUEUE = Gauge(
    "obsmcp_alert_notification_queue", "alert webhook messages waiting to be sent", ["webhook"], registry=REGISTRY
)

CIRCUIT_STATE_VALUE = {"closed": 0, "half_open": 1, "open": 2}

# -- alerting (obsmcp.alerting.engine) --------------------------------------------------------------------
ALERTS = Gauge(
    "obsmcp_alerts", "alerts by state (pending|firing), silenced ones included", ["state"], registry=REGISTRY
)
ALERT_RULE_DURATION = Histogram(
    "obsmcp_alert_rule_evaluation_duration_seconds", "time to evaluate one alert rule, by rule kind", ["kind"],
    buckets=_LATENCY_BUCKETS, registry=REGISTRY,
)  # fmt: skip
ALERT_RULE_FAILURES = Counter(
    "obsmcp_alert_rule_evaluation_failures", "alert rule evaluations that failed, by rule kind", ["kind"],
    registry=REGISTRY,
)  # fmt: skip
ALERT_TRANSITIONS = Counter(
    "obsmcp_alert_transitions", "alert state changes, by the state entered", ["state"], registry=REGISTRY
)
