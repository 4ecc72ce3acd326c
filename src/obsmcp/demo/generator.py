"""Synthetic, correlated OTLP telemetry: the shop in ``topology.py`` under one incident from ``scenarios.py``.

The same generator feeds the demo, the tests and the benchmark datasets (millions of spans), so speed
matters. Spans and log records are therefore written straight in protobuf wire format from pre-encoded
fragments: protobuf parsers accept fields in any order and a repeated field is a plain concatenation,
so a span is a ``b"".join`` of a few ids, two timestamps and attribute bytes prepared once. The rarer or
more intricate messages (exception events, statuses, resources and all metrics) use the generated
protobuf classes.

Requests come in simulated-time order: each root request is played out depth first (a SERVER span for
every service it reaches, a CLIENT span for every call a service makes), and every 15 s of simulated time
each service replica reports its cumulative metrics.
"""

from __future__ import annotations

import bisect
import functools
import math
import statistics
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass
from random import Random
from typing import Literal, Protocol

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
from opentelemetry.proto.metrics.v1.metrics_pb2 import (
    AGGREGATION_TEMPORALITY_CUMULATIVE,
    ExponentialHistogram,
    ExponentialHistogramDataPoint,
    Gauge,
    Histogram,
    HistogramDataPoint,
    Metric,
    NumberDataPoint,
    ResourceMetrics,
    ScopeMetrics,
    Sum,
    Summary,
    SummaryDataPoint,
)
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from obsmcp.demo.scenarios import Incident, Pressure, check_target, make_incident, scenario_truth
from obsmcp.demo.topology import (
    JOURNEYS,
    LOG_ATTRIBUTE_NAMES,
    POSTGRES_HOST,
    POSTGRES_PORT,
    REDIS_HOST,
    REDIS_PORT,
    ROUTES,
    SERVICES,
    CacheGet,
    CacheOp,
    Call,
    ErrorKind,
    External,
    Language,
    LogSpec,
    Query,
    Route,
    ServiceDef,
    Step,
    Work,
    connect_error,
    connect_message,
    pod_address,
    render_stacktrace,
    upstream_error,
    upstream_message,
)

_NS = 1_000_000_000
_MS = 1_000_000
METRIC_INTERVAL_S = 15.0

Signal = Literal["traces", "logs", "metrics"]


@dataclass(frozen=True)
class DemoConfig:
    duration_s: float = 7200.0
    rate: float = 4.0  # root requests per second
    scenario: str = "dependency-latency"
    seed: int = 42
    end_ns: int | None = None  # default: now
    incident_start_before_end_s: float = 1800.0
    incident_duration_s: float | None = None  # default: until the end
    # The root-cause service (see scenario_targets); default: the scenario's usual one.
    target: str | None = None
    # Live continuation (`obsmcp demo` keeps sending after the backfill): the incident's absolute onset, which
    # may precede this window; the first window's start, from which the processes keep their start times; and
    # the continuation's number, so each window has other requests on the same processes (0: not a continuation).
    incident_start_ns: int | None = None
    origin_ns: int | None = None
    chunk: int = 0

    def __post_init__(self) -> None:
        check_target(self.scenario, self.target)
        if self.end_ns is None:
            # Pinned once, so scenario_truth(cfg) and generate(cfg) agree on the window.
            object.__setattr__(self, "end_ns", time.time_ns())
        if self.duration_s <= 0 or self.rate <= 0:
            raise ValueError("duration_s and rate must be positive")
        if self.incident_start_before_end_s < 0 or (self.incident_duration_s or 0) < 0:
            raise ValueError("incident offsets must not be negative")


@dataclass
class OTLPRequest:
    signal: Signal
    payload: bytes  # serialized Export{Trace,Logs,Metrics}ServiceRequest
    items: int  # spans, log records or data points
    end_ns: int  # simulated time the generator had reached


def generate(cfg: DemoConfig, batch_spans: int = 5000) -> Iterator[OTLPRequest]:
    """OTLP export requests for ``cfg``, in time order: about ``batch_spans`` spans, then their logs,
    then the metric points reported meanwhile."""
    if batch_spans < 1:
        raise ValueError("batch_spans must be at least 1")
    return _Engine(cfg).run(batch_spans)


def estimate_items(cfg: DemoConfig) -> dict[str, int]:
    """Rough totals per signal for ``generate(cfg)``, for a progress bar (from a short calibration run)."""
    spans_per_root, logs_per_root, points_per_snapshot = _calibration()
    assert cfg.end_ns is not None
    step = int(cfg.duration_s * _NS) // 64
    load = statistics.fmean(_traffic_factor(cfg.end_ns - i * step) for i in range(64))
    roots = cfg.rate * cfg.duration_s * load
    return {
        "traces": round(roots * spans_per_root),
        "logs": round(roots * logs_per_root),
        "metrics": round(cfg.duration_s / METRIC_INTERVAL_S * points_per_snapshot),
    }


@functools.cache
def _calibration() -> tuple[float, float, float]:
    """Spans and logs per root request, and metric points per snapshot once the series have all appeared."""
    engine = _Engine(DemoConfig(duration_s=600, rate=4, scenario="none", seed=1, end_ns=1_700_000_000 * _NS))
    for _ in engine.run(10**9):
        pass
    return engine.n_spans / engine.n_roots, engine.n_logs / engine.n_roots, engine.snapshot_points


def _traffic_factor(t_ns: int) -> float:
    """Traffic follows the time of day (about ±10%)."""
    return 1.0 + 0.1 * math.sin(2 * math.pi * ((t_ns // _NS) % 86400) / 86400)


# --- protobuf wire format ------------------------------------------------------------------------------------

# Field keys (field number << 3 | wire type) of the messages written by hand.
_TOP = b"\x0a"  # Export*Request.resource_*, Resource*.resource, Scope*.scope, KeyValue.key, AnyValue.string
_NESTED = b"\x12"  # Resource*.scope_*, ScopeSpans.spans, ScopeLogs.log_records
_SPAN_TRACE_ID = b"\x0a\x10"
_SPAN_ID = b"\x12\x08"
_SPAN_PARENT_ID = b"\x22\x08"
_SPAN_NAME = b"\x2a"
_SPAN_ATTR = b"\x4a"
_SPAN_EVENT = b"\x5a"
_SPAN_STATUS = b"\x7a"
_SPAN_TIMES = struct.Struct("<BQBQ")  # start_time_unix_nano (7) and end_time_unix_nano (8), fixed64
_SPAN_START, _SPAN_END = 0x39, 0x41
_LOG_TIMES = struct.Struct("<BQBQ")  # time_unix_nano (1) and observed_time_unix_nano (11), fixed64
_LOG_TIME, _LOG_OBSERVED = 0x09, 0x59
_LOG_BODY = b"\x2a"
_LOG_ATTR = b"\x32"
_LOG_TRACE_ID = b"\x4a\x10"
_LOG_SPAN_ID = b"\x52\x08"
_LOG_FLAGS_SAMPLED = b"\x45\x01\x00\x00\x00"
_KIND_SERVER, _KIND_CLIENT, _KIND_INTERNAL = b"\x30\x02", b"\x30\x03", b"\x30\x01"
_CLIENT_ERROR_STATUS = _SPAN_STATUS + b"\x02\x18\x02"  # Status{code: ERROR}


def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


_VARINTS = tuple(_varint(i) for i in range(1 << 14))


def _ld(key: bytes, payload: bytes) -> bytes:
    """A length-delimited field."""
    n = len(payload)
    return key + (_VARINTS[n] if n < 16384 else _varint(n)) + payload


AttrValue = str | int | float | bool


def _kv(key: str, value: AttrValue) -> KeyValue:
    if isinstance(value, bool):
        return KeyValue(key=key, value=AnyValue(bool_value=value))
    if isinstance(value, int):
        return KeyValue(key=key, value=AnyValue(int_value=value))
    if isinstance(value, float):
        return KeyValue(key=key, value=AnyValue(double_value=value))
    return KeyValue(key=key, value=AnyValue(string_value=value))


def _attrs(field: bytes, items: dict[str, AttrValue]) -> bytes:
    return b"".join(_ld(field, _kv(k, v).SerializeToString()) for k, v in items.items())


def _key(name: str) -> bytes:
    """KeyValue.key, ready to be followed by a value (see ``_str_attr``)."""
    return _ld(_TOP, name.encode())


def _str_attr(field: bytes, key: bytes, value: str) -> bytes:
    """A string attribute; ``key`` comes from ``_key``."""
    return _ld(field, key + _ld(b"\x12", _ld(_TOP, value.encode())))


def _str_value(field: bytes, text: str) -> bytes:
    """An AnyValue holding ``text``, as field ``field``."""
    v = text.encode()
    n = len(v)
    if n < 126:  # the common case: both lengths fit in one byte
        return field + _VARINTS[n + 2] + _TOP + _VARINTS[n] + v
    return _ld(field, _ld(_TOP, v))


def _error_tail(kind: ErrorKind, message: str, t_ns: int) -> bytes:
    """Exception event and error status of a failed span."""
    event = Span.Event(
        time_unix_nano=t_ns,
        name="exception",
        attributes=[
            _kv("exception.type", kind.type),
            _kv("exception.message", message),
            _kv("exception.stacktrace", render_stacktrace(kind, message)),
        ],
    )
    status = Status(code=Status.STATUS_CODE_ERROR, message=f"{kind.type}: {message}")
    return _ld(_SPAN_EVENT, event.SerializeToString()) + _ld(_SPAN_STATUS, status.SerializeToString())


def _exception_log_attrs(kind: ErrorKind, message: str) -> bytes:
    return _attrs(
        _LOG_ATTR,
        {
            "exception.type": kind.type,
            "exception.message": message,
            "exception.stacktrace": render_stacktrace(kind, message),
        },
    )


_K_URL_PATH = _key("url.path")
_K_URL_FULL = _key("url.full")
_K_STATEMENT = _key("db.statement")
_K_CLIENT_ADDRESS = _key("client.address")
_K_ERROR_TYPE = _key("error.type")
_REASONS = {
    200: "200 OK",
    201: "201 Created",
    204: "204 No Content",
    401: "401 Unauthorized",
    402: "402 Payment Required",
    404: "404 Not Found",
    409: "409 Conflict",
    500: "500 Internal Server Error",
    502: "502 Bad Gateway",
    503: "503 Service Unavailable",
    504: "504 Gateway Timeout",
}
_HTTP_STATUS = {code: _attrs(_SPAN_ATTR, {"http.response.status_code": code}) for code in _REASONS}
_LOG_HTTP_STATUS = {code: _attrs(_LOG_ATTR, {"http.response.status_code": code}) for code in _REASONS}
# A double attribute up to its value: LogRecord.attributes { key, value { double_value: <8 bytes> } }.
_DOUBLE = struct.Struct("<Bd")
_DURATION_KEY = _key("http.server.request.duration_ms")
_LOG_DURATION_MS = _LOG_ATTR + _varint(len(_DURATION_KEY) + 11) + _DURATION_KEY + b"\x12\x09"

# --- the running system ----------------------------------------------------------------------------------------

_SERVER, _CLIENT, _DB, _CACHE, _INTERNAL = range(5)
SERVICE_PORTS = {s.name: s.port for s in SERVICES}
_SEVERITIES = {"DEBUG": 5, "INFO": 9, "WARN": 13, "ERROR": 17}
_OUTLIER_P = 0.002  # slow outliers: GC pauses, noisy neighbours, cold caches
_SLOW_QUERY_NS = 250 * _MS
_SDK_VERSION = {"python": "1.33.1", "java": "1.49.0", "go": "1.35.0", "nodejs": "1.30.1"}
_USER_AGENTS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_6) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148",
    "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
)
_QUERIES = ("running shoes", "wireless headphones", "coffee grinder", "yoga mat", "usb-c cable", "desk lamp")
_CURRENCIES = ("USD", "USD", "USD", "EUR", "GBP")
_CARD_BRANDS = ("visa", "mastercard", "amex")


class _Service:
    def __init__(self, defn: ServiceDef, culprit: bool) -> None:
        self.defn = defn
        self.name = defn.name
        self.culprit = culprit
        lang = defn.language
        scope_names = (lang.server_scope, lang.client_scope, lang.db_scope, lang.cache_scope, defn.name)
        self.scopes = [
            _ld(_TOP, InstrumentationScope(name=n, version=_SDK_VERSION[lang.name]).SerializeToString())
            for n in scope_names
        ]
        self.metrics_scope = InstrumentationScope(name=lang.server_scope, version=_SDK_VERSION[lang.name])
        self.log_scope = _ld(_TOP, InstrumentationScope(name=_logger_name(defn)).SerializeToString())
        self.severity = {
            level: b"\x10" + _varint(num) + _ld(b"\x1a", (lang.warn_text if level == "WARN" else level).encode())
            for level, num in _SEVERITIES.items()
        }
        self.replicas: list[_Replica] = []
        # The replicas serving while the incident is active: new ones when the incident is a rollout.
        self.incident_replicas: list[_Replica] = []


def _logger_name(defn: ServiceDef) -> str:
    """The logger a service's application logs come from, named the way its language names loggers."""
    lang = defn.language.name
    if lang == "python":
        return defn.name.replace("-", "_")
    if lang == "java":
        return f"com.shop.{defn.name.split('-')[0]}"
    if lang == "go":
        return f"github.com/shop/{defn.name}"
    return defn.name


class _Replica:
    """One process of a service: its resource, its unsent spans and logs, and its metric state."""

    def __init__(self, service: _Service, host: str, version: str, start_ns: int, rng: Random) -> None:
        defn = service.defn
        self.service = service
        self.host = host
        self.version = version
        self.start_ns = start_ns
        self.announced = False  # startup logs written
        self.retired = False  # shutdown logs written
        self.resource = Resource(
            attributes=[
                _kv(k, v)
                for k, v in {
                    "service.name": defn.name,
                    "service.version": version,
                    "service.namespace": "shop",
                    "service.instance.id": f"{rng.getrandbits(128):032x}",
                    "deployment.environment.name": "production",
                    "host.name": host,
                    "k8s.pod.name": host,
                    "k8s.namespace.name": "shop",
                    "k8s.deployment.name": defn.name,
                    "telemetry.sdk.name": "opentelemetry",
                    "telemetry.sdk.language": defn.language.name,
                    "telemetry.sdk.version": _SDK_VERSION[defn.language.name],
                }.items()
            ]
        )
        self.resource_field = _ld(_TOP, self.resource.SerializeToString())
        self.spans: list[list[bytes]] = [[] for _ in service.scopes]
        self.logs: list[bytes] = []
        self.metrics = _ReplicaMetrics(defn, start_ns, rng)
        self.per_item_queries = False  # runs the version that queries item by item (n-plus-one)


class _Trace:
    __slots__ = ("ctx", "log_tid", "span_tid")

    def __init__(self, tid: bytes, ctx: dict[str, str]) -> None:
        self.span_tid = _SPAN_TRACE_ID + tid
        self.log_tid = _LOG_TRACE_ID + tid
        self.ctx = ctx


class _LogLine:
    """A compiled ``LogSpec`` for one service."""

    def __init__(self, spec: LogSpec, service: _Service) -> None:
        self.severity = service.severity[spec.level]
        self.template = spec.template
        self.constant = "{" not in spec.template
        self.p = spec.p
        self.at = spec.at
        self.attr_keys = tuple((k, _key(LOG_ATTRIBUTE_NAMES[k])) for k in spec.attrs)

    def text(self, ctx: dict[str, str]) -> str:
        return self.template if self.constant else self.template.format_map(ctx)

    def attrs(self, ctx: dict[str, str]) -> bytes:
        return b"".join(_str_attr(_LOG_ATTR, key, ctx[name]) for name, key in self.attr_keys)


class _Step(Protocol):
    def run(self, eng: _Engine, t: int, tr: _Trace, parent: bytes, rep: _Replica) -> tuple[int, int]:
        """Play the step from ``t`` inside span ``parent``; return when it ended and its HTTP-like status
        (0: timed out). A failing call leaves its description in ``eng.failure``."""
        ...


@dataclass(frozen=True)
class _Failure:
    """The downstream call that made a request fail, for the caller's exception and log."""

    target: str
    method: str
    url: str
    status: int  # 0: timed out
    timeout_ms: float


class _ClientOutcome:
    """How a CLIENT span records the end of its call: status code, or the timeout exception."""

    def __init__(self, language: Language, timeout_ms: float) -> None:
        self.language = language
        self.timeout_ms = timeout_ms
        self.timeout_ns = int(timeout_ms * _MS)
        self.timeout_error = upstream_error(language, timeout=True)
        self.timeout_type = _str_attr(_SPAN_ATTR, _K_ERROR_TYPE, self.timeout_error.type)
        self.connect_error = connect_error(language)
        self.connect_type = _str_attr(_SPAN_ATTR, _K_ERROR_TYPE, self.connect_error.type)

    def refused(self, end: int, method: str, url: str, address: str) -> tuple[bytes, bytes]:
        message = connect_message(self.language, url, method, address)
        return self.connect_type, _error_tail(self.connect_error, message, end)

    def attrs_and_tail(self, status: int, end: int, method: str, url: str) -> tuple[bytes, bytes]:
        """Attributes to add and the span's event/status tail for ``status`` (0: timed out at ``end``)."""
        if status == 0:
            message = upstream_message(self.language, url, method, 0, self.timeout_ms)
            return self.timeout_type, _error_tail(self.timeout_error, message, end)
        if status >= 400:
            return _HTTP_STATUS[status] + _str_attr(_SPAN_ATTR, _K_ERROR_TYPE, str(status)), _CLIENT_ERROR_STATUS
        return _HTTP_STATUS[status], b""


# Statuses below 100 are failures without an HTTP answer.
_TIMED_OUT = 0
_REFUSED = 1  # nothing listens at the callee's address (its process is down)
_CONNECT_ATTEMPTS = 3  # HTTP clients retry refused connections: the request never reached the server


def _failed(status: int) -> bool:
    return status < 100 or status >= 400


def _pick(rng: Random, lines: list[_LogLine]) -> list[_LogLine]:
    return [line for line in lines if line.p >= 1.0 or rng.random() < line.p]


class _Route:
    """A compiled ``Route``; its steps are attached once every route exists (calls refer to each other)."""

    def __init__(self, route: Route, index: int, service: _Service) -> None:
        defn = service.defn
        self.key = route.key
        self.index = index
        self.service = service
        self.method = route.method
        self.route = route.route
        self.path = route.path
        self.path_dynamic = "{" in route.path
        self.head = _ld(_SPAN_NAME, f"{route.method} {route.route}".encode()) + _KIND_SERVER
        static: dict[str, AttrValue] = {
            "http.request.method": route.method,
            "http.route": route.route,
            "url.scheme": "http",
            "server.address": defn.name,
            "server.port": defn.port,
            "network.protocol.version": "1.1",
        }
        self.entry = defn.name == "frontend"
        # Entry spans also carry the browser's user agent: one pre-encoded variant per agent.
        agents = _USER_AGENTS if self.entry else ("",)
        self.static_attrs = [_attrs(_SPAN_ATTR, static | ({"user_agent.original": a} if a else {})) for a in agents]
        self.access_attrs = _attrs(_LOG_ATTR, {"http.request.method": route.method})
        self.mu = math.log(route.median_ms * _MS)
        self.sigma = route.sigma
        self.ok_status = route.ok_status
        self.steps: list[_Step] = []
        self.logs = [_LogLine(s, service) for s in route.logs]
        self.errors = route.errors
        self.rejections = [(r.status, r.p, _LogLine(r.log, service)) for r in route.rejections]

    def url_path(self, ctx: dict[str, str]) -> str:
        return self.path.format_map(ctx) if self.path_dynamic else self.path


class _CallStep:
    def __init__(self, call: Call, service: _Service, callee: _Route) -> None:
        self.callee = callee
        self.p = call.p
        self.outcome = _ClientOutcome(service.defn.language, call.timeout_ms)
        self.method = callee.method
        self.base_url = f"http://{callee.service.name}:{callee.service.defn.port}"
        self.head = _ld(_SPAN_NAME, callee.method.encode()) + _KIND_CLIENT
        self.static_attrs = _attrs(
            _SPAN_ATTR,
            {
                "http.request.method": callee.method,
                "server.address": callee.service.name,
                "server.port": callee.service.defn.port,
                "network.protocol.version": "1.1",
            },
        )
        self.debug = service.severity["DEBUG"]
        self.info = service.severity["INFO"]
        self.warn = service.severity["WARN"]
        self.httpx = service.defn.language.name == "python"
        self.address = f"{pod_address(callee.service.name)}:{callee.service.defn.port}"

    def run(self, eng: _Engine, t: int, tr: _Trace, parent: bytes, rep: _Replica) -> tuple[int, int]:
        rng = eng.rng
        if self.p < 1.0 and rng.random() >= self.p:
            return t, 200
        sid = eng.span_id()
        served_until, status = eng.serve(self.callee, t + eng.hop(), tr, sid)
        attempt = 1
        while status == _REFUSED:
            # Nothing listens there: the attempt fails within a round trip, and the client retries after a
            # backoff, each attempt a span of its own.
            end = t + 2 * eng.hop()
            url = self.base_url + self.callee.url_path(tr.ctx)
            attrs, tail = self.outcome.refused(end, self.method, url, self.address)
            head = self.static_attrs + _str_attr(_SPAN_ATTR, _K_URL_FULL, url) + attrs
            eng.span(rep.spans[_CLIENT], tr, sid, parent, self.head, t, end, head, tail)
            if attempt >= _CONNECT_ATTEMPTS:
                eng.failure = _Failure(self.callee.service.name, self.method, url, _REFUSED, self.outcome.timeout_ms)
                return end, _REFUSED
            retry = f"retrying ({attempt}/{_CONNECT_ATTEMPTS - 1})"
            text = f"Connection refused by {self.address} for {self.method} {url}; {retry}"
            eng.log(rep, tr, sid, end, self.warn, text)
            t = end + int(rng.uniform(50, 150) * attempt * _MS)
            attempt += 1
            sid = eng.span_id()
            served_until, status = eng.serve(self.callee, t + eng.hop(), tr, sid)
        end = served_until + eng.hop()
        if end - t > self.outcome.timeout_ns:
            # The caller gives up; the callee's span carries on past its parent's end, as it does for real.
            end, status = t + self.outcome.timeout_ns, 0
        url = self.base_url + self.callee.url_path(tr.ctx)
        attrs, tail = self.outcome.attrs_and_tail(status, end, self.method, url)
        eng.span(
            rep.spans[_CLIENT],
            tr,
            sid,
            parent,
            self.head,
            t,
            end,
            self.static_attrs + _str_attr(_SPAN_ATTR, _K_URL_FULL, url) + attrs,
            tail,
        )
        if self.httpx and status:
            # httpx logs every response at INFO.
            eng.log(rep, tr, sid, end, self.info, f'HTTP Request: {self.method} {url} "HTTP/1.1 {_REASONS[status]}"')
        else:
            outcome = "timed out" if status == 0 else str(status)
            text = f"HTTP {self.method} {url} -> {outcome} ({(end - t) / _MS:.1f} ms)"
            eng.log(rep, tr, sid, end, self.debug, text)
        if _failed(status):
            eng.failure = _Failure(self.callee.service.name, self.method, url, status, self.outcome.timeout_ms)
        return end, status


class _QueryStep:
    def __init__(self, query: Query, service: _Service) -> None:
        self.service = service
        # The statements a version that loops over items runs instead (the n-plus-one incident).
        self.per_item = _QueryStep(query.per_item, service) if query.per_item else None
        self.p = query.p
        self.repeat = query.repeat
        self.mu = math.log(query.median_ms * _MS)
        self.sigma = query.sigma
        self.statement = query.statement
        self.label = f"{query.operation} {query.table}"
        self.operation = query.operation
        self.head = _ld(_SPAN_NAME, self.label.encode()) + _KIND_CLIENT
        self.attrs = _attrs(
            _SPAN_ATTR,
            {
                "db.system": "postgresql",
                "db.name": service.defn.db_name,
                "db.statement": query.statement,
                "db.operation": query.operation,
                "db.sql.table": query.table,
                "server.address": POSTGRES_HOST,
                "server.port": POSTGRES_PORT,
            },
        )
        self.debug = service.severity["DEBUG"]
        self.warn = service.severity["WARN"]

    def run(self, eng: _Engine, t: int, tr: _Trace, parent: bytes, rep: _Replica) -> tuple[int, int]:
        rng = eng.rng
        if self.per_item is not None and rep.per_item_queries:
            return self.per_item.run(eng, t, tr, parent, rep)
        if self.p < 1.0 and rng.random() >= self.p:
            return t, 200
        lo, hi = self.repeat
        for _ in range(lo if lo == hi else rng.randint(lo, hi)):
            d = rng.lognormvariate(self.mu, self.sigma)
            if rng.random() < _OUTLIER_P:
                d *= rng.uniform(4.0, 15.0)
            duration = int(d)
            if self.service.culprit and eng.incident_start <= t < eng.incident_end:
                duration = eng.incident.db_duration(duration, t, rng)
            sid = eng.span_id()
            end = t + duration
            eng.span(rep.spans[_DB], tr, sid, parent, self.head, t, end, self.attrs)
            rep.metrics.record_db(self.operation, duration)
            if duration > _SLOW_QUERY_NS:
                eng.log(rep, tr, sid, end, self.warn, f"Slow query took {duration // _MS}ms: {self.statement}")
            elif rng.random() < 0.6:
                eng.log(rep, tr, sid, end, self.debug, f"{self.label} took {duration / _MS:.1f} ms")
            t = end + 50_000 + int(rng.random() * 250_000)
        return t, 200


class _CacheOpStep:
    def __init__(self, op: CacheOp) -> None:
        self.command = op.command
        self.key = op.key
        self.mu = math.log(op.median_ms * _MS)
        self.head = _ld(_SPAN_NAME, op.command.encode()) + _KIND_CLIENT
        self.attrs = _attrs(
            _SPAN_ATTR,
            {
                "db.system": "redis",
                "db.redis.database_index": 0,
                "db.operation": op.command,
                "server.address": REDIS_HOST,
                "server.port": REDIS_PORT,
            },
        )

    def run(self, eng: _Engine, t: int, tr: _Trace, parent: bytes, rep: _Replica) -> tuple[int, int]:
        return self.run_key(eng, t, tr, parent, rep, self.key.format_map(tr.ctx)), 200

    def run_key(self, eng: _Engine, t: int, tr: _Trace, parent: bytes, rep: _Replica, key: str) -> int:
        rng = eng.rng
        end = t + int(rng.lognormvariate(self.mu, 0.35))
        attrs = self.attrs + _str_attr(_SPAN_ATTR, _K_STATEMENT, f"{self.command} {key}")
        eng.span(rep.spans[_CACHE], tr, eng.span_id(), parent, self.head, t, end, attrs)
        return end + 30_000 + int(rng.random() * 120_000)


class _CacheGetStep:
    def __init__(self, get: CacheGet, service: _Service, on_miss: list[_Step]) -> None:
        self.key = get.key
        self.cache = get.cache
        self.hit_ratio = get.hit_ratio
        self.lookup = _CacheOpStep(CacheOp(get.command, get.key))
        self.fill = _CacheOpStep(CacheOp(get.fill_command, get.key, 0.7))
        self.on_miss = on_miss
        self.service = service
        self.info = service.severity["INFO"]
        self.debug = service.severity["DEBUG"]
        self.key_attr = _key(LOG_ATTRIBUTE_NAMES["key"])

    def run(self, eng: _Engine, t: int, tr: _Trace, parent: bytes, rep: _Replica) -> tuple[int, int]:
        rng = eng.rng
        key = self.key.format_map(tr.ctx)
        t = self.lookup.run_key(eng, t, tr, parent, rep, key)
        ratio = self.hit_ratio
        if self.service.culprit and eng.incident_start <= t < eng.incident_end:
            ratio = eng.incident.cache_hit_ratio(ratio, t)
        hit = rng.random() < ratio
        rep.metrics.record_cache(self.cache, hit)
        # The log is the application's, so it belongs to the span doing the lookup.
        if hit:
            if rng.random() < 0.4:
                eng.log(rep, tr, parent, t, self.debug, f"Cache hit for key {key}")
            return t, 200
        eng.log(rep, tr, parent, t, self.info, f"Cache miss for key {key}", _str_attr(_LOG_ATTR, self.key_attr, key))
        for step in self.on_miss:
            t, status = step.run(eng, t, tr, parent, rep)
            if _failed(status):
                return t, status
        return self.fill.run_key(eng, t, tr, parent, rep, key), 200


class _WorkStep:
    def __init__(self, work: Work, service: _Service) -> None:
        self.mu = math.log(work.median_ms * _MS)
        self.sigma = work.sigma
        self.head = _ld(_SPAN_NAME, work.name.encode()) + _KIND_INTERNAL
        self.attrs = _attrs(_SPAN_ATTR, {"code.function": work.name})
        self.logs = [_LogLine(s, service) for s in work.logs]

    def run(self, eng: _Engine, t: int, tr: _Trace, parent: bytes, rep: _Replica) -> tuple[int, int]:
        rng = eng.rng
        d = rng.lognormvariate(self.mu, self.sigma)
        if rng.random() < _OUTLIER_P:
            d *= rng.uniform(4.0, 15.0)
        end = t + int(d)
        sid = eng.span_id()
        eng.span(rep.spans[_INTERNAL], tr, sid, parent, self.head, t, end, self.attrs)
        for line in _pick(rng, self.logs):
            eng.log(rep, tr, sid, t + int(d * line.at), line.severity, line.text(tr.ctx), line.attrs(tr.ctx))
        return end, 200


class _ExternalStep:
    def __init__(self, ext: External, service: _Service) -> None:
        self.host = ext.host
        self.mu = math.log(ext.median_ms * _MS)
        self.sigma = ext.sigma
        self.outcome = _ClientOutcome(service.defn.language, ext.timeout_ms)
        self.method = ext.method
        self.url = f"https://{ext.host}{ext.path}"
        self.head = _ld(_SPAN_NAME, ext.method.encode()) + _KIND_CLIENT
        self.attrs = _attrs(
            _SPAN_ATTR,
            {
                "http.request.method": ext.method,
                "server.address": ext.host,
                "server.port": 443,
                "url.full": self.url,
                "network.protocol.version": "1.1",
            },
        )
        self.rejections = [(r.status, r.p, _LogLine(r.log, service)) for r in ext.rejections]
        self.failure_p = ext.failure_p

    def _answer(self, rng: Random) -> tuple[int, _LogLine | None]:
        for code, p, line in self.rejections:
            if rng.random() < p:
                return code, line
        return (503 if rng.random() < self.failure_p else 200), None

    def run(self, eng: _Engine, t: int, tr: _Trace, parent: bytes, rep: _Replica) -> tuple[int, int]:
        rng = eng.rng
        d = rng.lognormvariate(self.mu, self.sigma)
        if rng.random() < _OUTLIER_P * 5:  # third parties are less predictable than our own services
            d *= rng.uniform(3.0, 12.0)
        end = t + int(d)
        status, rejected = self._answer(rng)
        if end - t > self.outcome.timeout_ns:
            end, status, rejected = t + self.outcome.timeout_ns, 0, None
        attrs, tail = self.outcome.attrs_and_tail(status, end, self.method, self.url)
        eng.span(rep.spans[_CLIENT], tr, eng.span_id(), parent, self.head, t, end, self.attrs + attrs, tail)
        if rejected is not None:
            eng.log(rep, tr, parent, end, rejected.severity, rejected.text(tr.ctx), rejected.attrs(tr.ctx))
        if _failed(status):
            eng.failure = _Failure(self.host, self.method, self.url, status, self.outcome.timeout_ms)
        return end, status


# --- metrics -------------------------------------------------------------------------------------------------

# The semantic conventions' default buckets for http.server.request.duration, in seconds.
_HTTP_BOUNDS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
_EXP_SCALE = 3  # bucket boundaries at powers of 2**(1/8)
_CUMULATIVE = AGGREGATION_TEMPORALITY_CUMULATIVE
_GC_QUANTILES = (0.0, 0.25, 0.5, 0.75, 1.0)
_MIB = 1 << 20


class _HttpPoint:
    __slots__ = ("attributes", "buckets", "count", "max", "min", "total")

    def __init__(self, method: str, route: str, status: int) -> None:
        self.attributes = [
            _kv("http.request.method", method),
            _kv("http.route", route),
            _kv("http.response.status_code", status),
        ]
        self.buckets = [0] * (len(_HTTP_BOUNDS) + 1)
        self.count = 0
        self.total = 0.0
        self.min = math.inf
        self.max = 0.0

    def record(self, seconds: float) -> None:
        self.count += 1
        self.total += seconds
        self.buckets[bisect.bisect_left(_HTTP_BOUNDS, seconds)] += 1
        self.min = min(self.min, seconds)
        self.max = max(self.max, seconds)


class _ExpPoint:
    __slots__ = ("attributes", "count", "counts", "max", "min", "total")

    def __init__(self, operation: str) -> None:
        self.attributes = [_kv("db.system", "postgresql"), _kv("db.operation", operation)]
        self.counts: dict[int, int] = {}
        self.count = 0
        self.total = 0.0
        self.min = math.inf
        self.max = 0.0

    def record(self, seconds: float) -> None:
        index = math.ceil(math.log2(seconds) * (1 << _EXP_SCALE)) - 1
        self.counts[index] = self.counts.get(index, 0) + 1
        self.count += 1
        self.total += seconds
        self.min = min(self.min, seconds)
        self.max = max(self.max, seconds)

    def to_point(self, start_ns: int, t_ns: int) -> ExponentialHistogramDataPoint:
        offset = min(self.counts)
        counts = [self.counts.get(i, 0) for i in range(offset, max(self.counts) + 1)]
        return ExponentialHistogramDataPoint(
            attributes=self.attributes,
            start_time_unix_nano=start_ns,
            time_unix_nano=t_ns,
            count=self.count,
            sum=self.total,
            scale=_EXP_SCALE,
            zero_count=0,
            positive=ExponentialHistogramDataPoint.Buckets(offset=offset, bucket_counts=counts),
            min=self.min,
            max=self.max,
        )


def _gauge(name: str, unit: str, description: str, points: list[NumberDataPoint]) -> Metric:
    return Metric(name=name, unit=unit, description=description, gauge=Gauge(data_points=points))


def _counter(name: str, unit: str, description: str, points: list[NumberDataPoint]) -> Metric:
    return Metric(
        name=name,
        unit=unit,
        description=description,
        sum=Sum(data_points=points, aggregation_temporality=_CUMULATIVE, is_monotonic=True),
    )


def _number(t_ns: int, start_ns: int, value: float, **attributes: AttrValue) -> NumberDataPoint:
    attrs = [_kv(k.replace("_", "."), v) for k, v in attributes.items()]
    if isinstance(value, int):
        return NumberDataPoint(attributes=attrs, start_time_unix_nano=start_ns, time_unix_nano=t_ns, as_int=value)
    return NumberDataPoint(attributes=attrs, start_time_unix_nano=start_ns, time_unix_nano=t_ns, as_double=value)


class _ReplicaMetrics:
    """Cumulative metric state of one process, and the interval counters its gauges are derived from."""

    def __init__(self, defn: ServiceDef, start_ns: int, rng: Random) -> None:
        self.defn = defn
        self.start_ns = start_ns
        self.http: dict[int, _HttpPoint] = {}
        self.db: dict[str, _ExpPoint] = {}
        self.cache: dict[str, list[int]] = {}  # cache.name -> [hits, misses]
        self.requests = 0  # in the current interval
        self.db_busy_ns = 0  # in the current interval
        self.gc_count = 0
        self.gc_total = 0.0
        self.memory_phase = rng.random()

    def record_http(self, route: _Route, status: int, duration_ns: int) -> None:
        key = route.index * 1000 + status
        point = self.http.get(key)
        if point is None:
            point = self.http[key] = _HttpPoint(route.method, route.route, status)
        point.record(duration_ns / _NS)
        self.requests += 1

    def record_db(self, operation: str, duration_ns: int) -> None:
        point = self.db.get(operation)
        if point is None:
            point = self.db[operation] = _ExpPoint(operation)
        point.record(duration_ns / _NS)
        self.db_busy_ns += duration_ns

    def record_cache(self, cache: str, hit: bool) -> None:
        counts = self.cache.get(cache)
        if counts is None:
            counts = self.cache[cache] = [0, 0]
        counts[0 if hit else 1] += 1

    def export(self, t_ns: int, rng: Random, pressure: Pressure) -> tuple[list[Metric], list[tuple[str, str]]]:
        """The metrics to report at ``t_ns`` and the (severity, body) logs the process writes about itself."""
        rps = self.requests / METRIC_INTERVAL_S
        metrics = [*self._http_metrics(t_ns), *self._process_metrics(t_ns, rng, rps, pressure)]
        logs: list[tuple[str, str]] = []
        if self.cache:
            metrics += self._cache_metrics(t_ns)
        if self.db:
            metrics.append(self._db_duration(t_ns))
        if self.defn.db_pool_max:
            pool_metrics, logs = self._pool(t_ns, rng, pressure)
            metrics += pool_metrics
        if self.defn.language.name == "go":
            metrics.append(self._gc_summary(t_ns, rng, rps))
        self.requests = 0
        self.db_busy_ns = 0
        return metrics, logs

    def _http_metrics(self, t_ns: int) -> list[Metric]:
        start = self.start_ns
        histogram = [
            HistogramDataPoint(
                attributes=p.attributes,
                start_time_unix_nano=start,
                time_unix_nano=t_ns,
                count=p.count,
                sum=p.total,
                bucket_counts=p.buckets,
                explicit_bounds=_HTTP_BOUNDS,
                min=p.min,
                max=p.max,
            )
            for p in self.http.values()
        ]
        counts = [
            NumberDataPoint(attributes=p.attributes, start_time_unix_nano=start, time_unix_nano=t_ns, as_int=p.count)
            for p in self.http.values()
        ]
        return [
            Metric(
                name="http.server.request.duration",
                unit="s",
                description="Duration of HTTP server requests.",
                histogram=Histogram(data_points=histogram, aggregation_temporality=_CUMULATIVE),
            ),
            _counter("http.server.requests", "{request}", "Number of HTTP server requests.", counts),
        ]

    def _process_metrics(self, t_ns: int, rng: Random, rps: float, pressure: Pressure) -> list[Metric]:
        defn = self.defn
        cpu = defn.base_cpu + defn.cpu_per_rps * rps + pressure.cpu + rng.gauss(0.0, 0.01)
        cpu = min(0.99, max(0.001, cpu))
        # Heap grows between collections: a slow sawtooth around the normal footprint.
        sawtooth = (t_ns / _NS / 300.0 + self.memory_phase) % 1.0
        headroom = defn.memory_limit_mb - defn.base_memory_mb
        mb = defn.base_memory_mb + headroom * (0.06 * sawtooth + pressure.memory) + rng.gauss(0.0, 2.0)
        memory = int(min(defn.memory_limit_mb * 0.97, mb) * _MIB)
        start = self.start_ns
        return [
            _gauge("process.cpu.utilization", "1", "CPU utilization of the process.", [_number(t_ns, start, cpu)]),
            _gauge("process.memory.usage", "By", "Resident memory of the process.", [_number(t_ns, start, memory)]),
        ]

    def _cache_metrics(self, t_ns: int) -> list[Metric]:
        start = self.start_ns
        hits = [_number(t_ns, start, c[0], cache_name=name) for name, c in self.cache.items()]
        misses = [_number(t_ns, start, c[1], cache_name=name) for name, c in self.cache.items()]
        return [
            _counter("cache.hits", "{hit}", "Cache lookups that found the key.", hits),
            _counter("cache.misses", "{miss}", "Cache lookups that missed.", misses),
        ]

    def _db_duration(self, t_ns: int) -> Metric:
        return Metric(
            name="db.client.operation.duration",
            unit="s",
            description="Duration of database client operations.",
            exponential_histogram=ExponentialHistogram(
                data_points=[p.to_point(self.start_ns, t_ns) for p in self.db.values()],
                aggregation_temporality=_CUMULATIVE,
            ),
        )

    def _pool(self, t_ns: int, rng: Random, pressure: Pressure) -> tuple[list[Metric], list[tuple[str, str]]]:
        size = self.defn.db_pool_max
        busy = self.db_busy_ns / (METRIC_INTERVAL_S * _NS)  # average connections in use (Little's law)
        used = min(size, int(busy + rng.random() * 2.5) + round(pressure.pool_leak * size))
        pool = f"{self.defn.db_name}-pool"
        start = self.start_ns
        metrics = [
            _gauge(
                "db.client.connections.usage",
                "{connection}",
                "Connections in the pool, by state.",
                [
                    _number(t_ns, start, used, pool_name=pool, state="used"),
                    _number(t_ns, start, size - used, pool_name=pool, state="idle"),
                ],
            ),
            _gauge(
                "db.client.connections.max",
                "{connection}",
                "Maximum connections the pool allows.",
                [_number(t_ns, start, size, pool_name=pool)],
            ),
        ]
        logs: list[tuple[str, str]] = []
        if used >= size:
            waiting = 5 + int(rng.random() * 40)
            logs.append(("ERROR", f"Connection pool exhausted (active={used}, max={size}), {waiting} requests waiting"))
        elif used >= 0.8 * size:
            logs.append(("WARN", f"Connection pool nearly exhausted (active={used}, max={size})"))
        if pressure.memory > 0.5:
            mb = self.defn.base_memory_mb + (self.defn.memory_limit_mb - self.defn.base_memory_mb) * pressure.memory
            share = mb / self.defn.memory_limit_mb
            logs.append(("WARN", f"Heap usage at {share:.0%} of {self.defn.memory_limit_mb}MB, GC overhead rising"))
        return metrics, logs

    def _gc_summary(self, t_ns: int, rng: Random, rps: float) -> Metric:
        # Prometheus' Go client reports GC pauses as a summary over the recent window.
        pauses = sorted(rng.lognormvariate(math.log(0.00018), 0.6) for _ in range(1 + int(rps * 0.4)))
        self.gc_count += len(pauses)
        self.gc_total += sum(pauses)
        quantiles = [
            SummaryDataPoint.ValueAtQuantile(quantile=q, value=pauses[round(q * (len(pauses) - 1))])
            for q in _GC_QUANTILES
        ]
        point = SummaryDataPoint(
            start_time_unix_nano=self.start_ns,
            time_unix_nano=t_ns,
            count=self.gc_count,
            sum=self.gc_total,
            quantile_values=quantiles,
        )
        return Metric(
            name="go_gc_duration_seconds",
            unit="s",
            description="A summary of the pause duration of garbage collection cycles.",
            summary=Summary(data_points=[point]),
        )


# --- the simulation --------------------------------------------------------------------------------------------

_POD_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
# Pod addresses that show up as peers in access logs.
_PEERS = tuple(f"10.0.{i % 7}.{(i * 37) % 250 + 3}:{40000 + i * 131}" for i in range(24))
_CLIENT_NETS = ("203.0.113", "198.51.100", "192.0.2", "100.64.12", "100.64.77")


class _Engine:
    def __init__(self, cfg: DemoConfig) -> None:
        assert cfg.end_ns is not None
        self.cfg = cfg
        self.rng = Random(cfg.seed)
        self._bits = self.rng.getrandbits
        self.end_ns = cfg.end_ns
        self.start_ns = cfg.end_ns - int(cfg.duration_s * _NS)
        self.origin_ns = cfg.origin_ns if cfg.origin_ns is not None else self.start_ns
        self.truth = scenario_truth(cfg)
        self.incident: Incident = make_incident(self.truth, cfg.seed)
        self.incident_start = self.truth.start_ns
        self.incident_end = self.truth.end_ns
        self.services = [_Service(d, d.name == self.truth.root_cause_service) for d in SERVICES]
        self._start_replicas()
        if cfg.chunk:
            # The same processes (drawn above from the seed), other requests in each live window.
            self.rng.seed(cfg.seed * 1_000_003 + cfg.chunk)
        self.routes = self._compile_routes()
        entries = [(self.routes[key], weight) for key, weight in JOURNEYS]
        self.journeys = [route for route, _ in entries]
        total = sum(weight for _, weight in entries)
        self.journey_cdf = [sum(w for _, w in entries[: i + 1]) / total for i in range(len(entries))]
        self.failure: _Failure | None = None
        self.n_roots = self.n_spans = self.n_logs = 0
        self.sent_spans = self.sent_logs = 0
        self.pending_metrics: list[ResourceMetrics] = []
        self.pending_points = 0
        self.snapshot_points = 0  # in the latest snapshot
        self.last_snapshot = self.start_ns

    # -- setup

    def _pod_name(self, service: str) -> str:
        rng = self.rng
        template = "".join(rng.choice(_POD_ALPHABET) for _ in range(9))
        return f"{service}-{template}-{''.join(rng.choice(_POD_ALPHABET) for _ in range(5))}"

    def _start_replicas(self) -> None:
        rng = self.rng
        new_version = self.incident.new_version
        for svc in self.services:
            defn = svc.defn
            for _ in range(defn.replicas):
                started = self.origin_ns - int(rng.uniform(1.0, 6.0) * 86400 * _NS)
                svc.replicas.append(_Replica(svc, self._pod_name(defn.name), defn.version, started, rng))
            svc.incident_replicas = svc.replicas
            if svc.culprit and new_version is not None:
                pods = [self._pod_name(defn.name) for _ in range(defn.replicas)]
                # New pods start a little before the rollout switches traffic to them.
                svc.incident_replicas = [
                    _Replica(svc, pod, new_version, self.incident_start - int(rng.uniform(5, 40) * _NS), rng)
                    for pod in pods
                ]
                for rep in svc.incident_replicas:
                    rep.per_item_queries = self.incident.per_item_queries

    def _compile_routes(self) -> dict[str, _Route]:
        by_name = {s.name: s for s in self.services}
        routes = {r.key: _Route(r, i, by_name[r.service]) for i, r in enumerate(ROUTES)}
        for spec in ROUTES:
            route = routes[spec.key]
            route.steps = [self._compile_step(step, route.service, routes) for step in spec.steps]
        return routes

    def _compile_step(self, step: Step, service: _Service, routes: dict[str, _Route]) -> _Step:
        if isinstance(step, Call):
            return _CallStep(step, service, routes[f"{step.service} {step.route}"])
        if isinstance(step, Query):
            return _QueryStep(step, service)
        if isinstance(step, CacheOp):
            return _CacheOpStep(step)
        if isinstance(step, CacheGet):
            return _CacheGetStep(step, service, [self._compile_step(s, service, routes) for s in step.on_miss])
        if isinstance(step, Work):
            return _WorkStep(step, service)
        return _ExternalStep(step, service)

    # -- writing spans and logs

    def span_id(self) -> bytes:
        return self._bits(64).to_bytes(8, "big")

    def hop(self) -> int:
        """One-way network time between two services."""
        return 150_000 + int(self.rng.random() * 700_000)

    def span(
        self,
        buf: list[bytes],
        tr: _Trace,
        sid: bytes,
        parent: bytes,
        head: bytes,
        start: int,
        end: int,
        attrs: bytes,
        tail: bytes = b"",
    ) -> None:
        body = b"".join(
            (
                tr.span_tid,
                _SPAN_ID,
                sid,
                _SPAN_PARENT_ID + parent if parent else b"",
                head,
                _SPAN_TIMES.pack(_SPAN_START, start, _SPAN_END, end),
                attrs,
                tail,
            )
        )
        n = len(body)
        buf.append(_NESTED + (_VARINTS[n] if n < 16384 else _varint(n)) + body)
        self.n_spans += 1

    def log(
        self, rep: _Replica, tr: _Trace, sid: bytes, t: int, severity: bytes, text: str, attrs: bytes = b""
    ) -> None:
        body = b"".join(
            (
                _LOG_TIMES.pack(_LOG_TIME, t, _LOG_OBSERVED, t),
                severity,
                _str_value(_LOG_BODY, text),
                attrs,
                tr.log_tid,
                _LOG_SPAN_ID,
                sid,
                _LOG_FLAGS_SAMPLED,
            )
        )
        n = len(body)
        rep.logs.append(_NESTED + (_VARINTS[n] if n < 16384 else _varint(n)) + body)
        self.n_logs += 1

    def process_log(self, rep: _Replica, t: int, level: str, text: str) -> None:
        """A log the process writes outside any request, so without trace context."""
        body = (
            _LOG_TIMES.pack(_LOG_TIME, t, _LOG_OBSERVED, t) + rep.service.severity[level] + _str_value(_LOG_BODY, text)
        )
        rep.logs.append(_ld(_NESTED, body))
        self.n_logs += 1

    # -- requests

    def new_context(self) -> dict[str, str]:
        rng = self.rng
        r = rng.random
        # A few products are very popular (and so mostly cached); the long tail misses the cache.
        product = 1000 + int((rng.paretovariate(1.1) - 1.0) * 40) % 9000
        items = 1 + int(r() * 4)
        return {
            "user_id": f"u-{10000 + int(r() * 90000)}",
            "session_id": f"{self._bits(64):016x}",
            "client_ip": f"{_CLIENT_NETS[int(r() * len(_CLIENT_NETS))]}.{1 + int(r() * 254)}",
            "product_id": str(product),
            "sku": f"SKU-{product * 7919 % 100000:05d}",
            "query": _QUERIES[int(r() * len(_QUERIES))],
            "results": str(1 + int(r() * 48)),
            "quantity": str(1 + int(r() * 60)),
            "items": str(items),
            "order_id": f"o-{100000 + int(r() * 900000)}",
            "payment_id": f"pay_{self._bits(48):012x}",
            "amount": f"{items * (5 + r() * 95):.2f}",
            "currency": _CURRENCIES[int(r() * len(_CURRENCIES))],
            "card_brand": _CARD_BRANDS[int(r() * len(_CARD_BRANDS))],
            "fraud_score": f"{r() * 0.3:.2f}",
            "ms": "",
            "key": "",
        }

    def root(self, t: int) -> None:
        journey = self.journeys[bisect.bisect_left(self.journey_cdf, self.rng.random())]
        tr = _Trace(self._bits(128).to_bytes(16, "big"), self.new_context())
        self.serve(journey, t, tr, b"")
        self.n_roots += 1

    def serve(self, r: _Route, start: int, tr: _Trace, parent: bytes) -> tuple[int, int]:
        """Play a request to route ``r`` arriving at ``start``; return when it ended and its status code."""
        rng = self.rng
        svc = r.service
        replicas, delay, fault = svc.replicas, 0, None
        index = 0 if len(svc.replicas) == 1 else int(rng.random() * len(svc.replicas))
        if svc.culprit and self.incident_start <= start < self.incident_end:
            replicas = svc.incident_replicas
            routed = self.incident.route_to(index, start)
            if routed is None:
                return start, _REFUSED
            index = routed
            delay, fault = self.incident.route_effect(r.key, index, start, rng)
        rep = replicas[index]
        sid = self.span_id()
        own = rng.lognormvariate(r.mu, r.sigma)
        if rng.random() < _OUTLIER_P:
            own *= rng.uniform(4.0, 15.0)
        # Most of a handler's own time (parsing, validation, auth) comes before its downstream calls.
        t = start + delay + int(own * 0.6)
        status, failure = r.ok_status, None
        if fault is None or fault.after_work:
            for step in r.steps:
                t, step_status = step.run(self, t, tr, sid, rep)
                if _failed(step_status):
                    status, failure = step_status, self.failure
                    break
        end = t + int(own * 0.4)
        if fault is None and failure is None:
            fault = self._baseline_fault(r)
        status, attrs, tail = self._conclude(r, rep, tr, sid, start, end, status, fault, failure)
        path = r.url_path(tr.ctx)
        attrs += _str_attr(_SPAN_ATTR, _K_URL_PATH, path) + _HTTP_STATUS[status]
        if r.entry:
            agent = r.static_attrs[int(rng.random() * len(r.static_attrs))]
            attrs += agent + _str_attr(_SPAN_ATTR, _K_CLIENT_ADDRESS, tr.ctx["client_ip"])
        else:
            attrs += r.static_attrs[0]
        self.span(rep.spans[_SERVER], tr, sid, parent, r.head, start, end, attrs, tail)
        self._route_logs(r, rep, tr, sid, start, end, status, path)
        rep.metrics.record_http(r, status, end - start)
        return end, status

    def _conclude(
        self,
        r: _Route,
        rep: _Replica,
        tr: _Trace,
        sid: bytes,
        start: int,
        end: int,
        status: int,
        fault: ErrorKind | None,
        failure: _Failure | None,
    ) -> tuple[int, bytes, bytes]:
        """The request's final status, error attributes and span tail; writes the log explaining a failure."""
        if fault is not None:
            message = fault.message.format_map(tr.ctx)
            text = fault.log.format_map(tr.ctx)
            self.log(rep, tr, sid, end, rep.service.severity["ERROR"], text, _exception_log_attrs(fault, message))
            return fault.status, _str_attr(_SPAN_ATTR, _K_ERROR_TYPE, fault.type), _error_tail(fault, message, end)
        if failure is None:
            return self._rejection(r, rep, tr, sid, start, end, status), b"", b""
        if _failed(status) and (status < 100 or status >= 500):
            return self._upstream_failure(rep, tr, sid, end, failure)
        return status, b"", b""  # a 4xx from downstream is passed on as is

    def _baseline_fault(self, r: _Route) -> ErrorKind | None:
        for kind, p in r.errors:
            if self.rng.random() < p:
                return kind
        return None

    def _rejection(self, r: _Route, rep: _Replica, tr: _Trace, sid: bytes, start: int, end: int, status: int) -> int:
        for code, p, line in r.rejections:
            if self.rng.random() < p:
                at = start + int((end - start) * line.at)
                self.log(rep, tr, sid, at, line.severity, line.text(tr.ctx), line.attrs(tr.ctx))
                return code
        return status

    def _upstream_failure(
        self, rep: _Replica, tr: _Trace, sid: bytes, end: int, failure: _Failure
    ) -> tuple[int, bytes, bytes]:
        """``_conclude`` for a request failed by a downstream call."""
        lang = rep.service.defn.language
        timed_out = failure.status == _TIMED_OUT
        call = f"{failure.method} {failure.url}"
        if failure.status == _REFUSED:
            kind = connect_error(lang)
            address = f"{pod_address(failure.target)}:{SERVICE_PORTS[failure.target]}"
            message = connect_message(lang, failure.url, failure.method, address)
            text = f"Call to {failure.target} failed after {_CONNECT_ATTEMPTS} attempts: connection refused: {call}"
            self.log(rep, tr, sid, end, rep.service.severity["ERROR"], text, _exception_log_attrs(kind, message))
            status = 502 if rep.service.defn.gateway else 500
            return status, _str_attr(_SPAN_ATTR, _K_ERROR_TYPE, kind.type), _error_tail(kind, message, end)
        kind = upstream_error(lang, timeout=timed_out)
        message = upstream_message(lang, failure.url, failure.method, failure.status, failure.timeout_ms)
        if timed_out:
            text = f"Timed out after {failure.timeout_ms:.0f}ms calling {failure.target}: {call}"
        else:
            text = f"Call to {failure.target} failed with {failure.status}: {call}"
        self.log(rep, tr, sid, end, rep.service.severity["ERROR"], text, _exception_log_attrs(kind, message))
        # Proxies answer 502/504; services let the exception become a plain 500.
        status = (504 if timed_out else 502) if rep.service.defn.gateway else 500
        return status, _str_attr(_SPAN_ATTR, _K_ERROR_TYPE, kind.type), _error_tail(kind, message, end)

    def _route_logs(
        self, r: _Route, rep: _Replica, tr: _Trace, sid: bytes, start: int, end: int, status: int, path: str
    ) -> None:
        ctx = tr.ctx
        duration = end - start
        for line in _pick(self.rng, r.logs):
            self.log(rep, tr, sid, start + int(duration * line.at), line.severity, line.text(ctx), line.attrs(ctx))
        style = r.service.defn.access_log
        ms = duration / _MS
        if style == "structured":
            # Structured request logs carry the outcome in their level; text access logs are always INFO.
            level = "ERROR" if status >= 500 else "WARN" if status >= 400 else "INFO"
            severity = r.service.severity[level]
            attrs = r.access_attrs + _str_attr(_LOG_ATTR, _K_URL_PATH, path) + _LOG_HTTP_STATUS[status]
            attrs += _LOG_DURATION_MS + _DOUBLE.pack(0x21, ms)
            self.log(rep, tr, sid, end, severity, "request completed", attrs)
            return
        if style == "morgan":
            text = f"{r.method} {path} {status} {ms:.3f} ms - {800 + int(self.rng.random() * 24000)}"
        elif style == "uvicorn":
            peer = _PEERS[int(self.rng.random() * len(_PEERS))]
            text = f'{peer} - "{r.method} {path} HTTP/1.1" {status}'
        else:
            text = f"Completed {r.method} {path} -> {status} in {ms:.0f} ms"
        self.log(rep, tr, sid, end, r.service.severity["INFO"], text)

    # -- metrics and process logs

    def snapshot(self, t: int) -> None:
        incident_on = self.incident_start <= t < self.incident_end
        points_before = self.pending_points
        previous, self.last_snapshot = self.last_snapshot, t
        for svc in self.services:
            culprit_on = svc.culprit and incident_on
            serving = svc.incident_replicas if culprit_on else svc.replicas
            for index, rep in enumerate(serving):
                if not rep.announced:
                    self._announce(rep)
                pressure = Pressure()
                if culprit_on:
                    for event in self.incident.process_events(index, previous, t):
                        self.process_log(rep, event.t_ns, event.level, event.text)
                        if event.started:
                            # A new process: its cumulative metrics start over.
                            rep.metrics = _ReplicaMetrics(svc.defn, event.t_ns, self.rng)
                    if self.incident.is_down(index, t):
                        continue  # a dead process reports nothing
                    pressure = self.incident.pressure(t, index)
                metrics, logs = rep.metrics.export(t + 137 * _MS, self.rng, pressure)
                self.pending_metrics.append(
                    ResourceMetrics(
                        resource=rep.resource, scope_metrics=[ScopeMetrics(scope=svc.metrics_scope, metrics=metrics)]
                    )
                )
                self.pending_points += sum(_point_count(m) for m in metrics)
                for level, text in logs:
                    self.process_log(rep, t, level, text)
            if serving is not svc.replicas:
                for rep in svc.replicas:
                    if not rep.retired:
                        self._retire(rep, self.incident_start)
        self.snapshot_points = self.pending_points - points_before

    def _announce(self, rep: _Replica) -> None:
        rep.announced = True
        if rep.start_ns < self.start_ns:
            return
        name = rep.service.name
        self.process_log(rep, rep.start_ns, "INFO", f"Starting {name} {rep.version} on {rep.host}")
        boot = int(self.rng.uniform(3.0, 9.0) * _NS)
        self.process_log(rep, rep.start_ns + boot, "INFO", f"Started {name} in {boot / _NS:.1f} seconds")

    def _retire(self, rep: _Replica, t: int) -> None:
        rep.retired = True
        if t < self.start_ns:  # retired before this window (a live continuation): logged by an earlier one
            return
        self.process_log(rep, t, "INFO", "Received SIGTERM, shutting down gracefully")
        self.process_log(rep, t + int(self.rng.uniform(1.0, 4.0) * _NS), "INFO", "Shutdown complete")

    # -- the main loop

    def run(self, batch_spans: int) -> Iterator[OTLPRequest]:
        rng = self.rng
        rate = self.cfg.rate
        interval = int(METRIC_INTERVAL_S * _NS)
        next_snapshot = (self.start_ns // interval + 1) * interval
        t = self.start_ns
        while True:
            t += int(rng.expovariate(rate * _traffic_factor(t)) * _NS)
            if t >= self.end_ns:
                break
            while next_snapshot <= t:
                self.snapshot(next_snapshot)
                next_snapshot += interval
            self.root(t)
            if self.n_spans - self.sent_spans >= batch_spans or self.pending_points >= batch_spans:
                yield from self._flush(t)
        while next_snapshot <= self.end_ns:
            self.snapshot(next_snapshot)
            next_snapshot += interval
        yield from self._flush(self.end_ns)

    def _all_replicas(self) -> Iterator[_Replica]:
        for svc in self.services:
            yield from svc.replicas
            if svc.incident_replicas is not svc.replicas:
                yield from svc.incident_replicas

    def _flush(self, t: int) -> Iterator[OTLPRequest]:
        if self.n_spans > self.sent_spans:
            yield OTLPRequest("traces", self._drain_spans(), self.n_spans - self.sent_spans, t)
            self.sent_spans = self.n_spans
        if self.n_logs > self.sent_logs:
            yield OTLPRequest("logs", self._drain_logs(), self.n_logs - self.sent_logs, t)
            self.sent_logs = self.n_logs
        if self.pending_metrics:
            payload = ExportMetricsServiceRequest(resource_metrics=self.pending_metrics).SerializeToString()
            yield OTLPRequest("metrics", payload, self.pending_points, t)
            self.pending_metrics = []
            self.pending_points = 0

    def _drain_spans(self) -> bytes:
        resources = []
        for rep in self._all_replicas():
            scopes = b"".join(
                _ld(_NESTED, scope + b"".join(spans))
                for scope, spans in zip(rep.service.scopes, rep.spans, strict=True)
                if spans
            )
            if scopes:
                resources.append(_ld(_TOP, rep.resource_field + scopes))
                for spans in rep.spans:
                    spans.clear()
        return b"".join(resources)

    def _drain_logs(self) -> bytes:
        resources = []
        for rep in self._all_replicas():
            if rep.logs:
                scope_logs = _ld(_NESTED, rep.service.log_scope + b"".join(rep.logs))
                resources.append(_ld(_TOP, rep.resource_field + scope_logs))
                rep.logs.clear()
        return b"".join(resources)


def _point_count(metric: Metric) -> int:
    kind = metric.WhichOneof("data")
    return len(getattr(metric, kind).data_points) if kind else 0
