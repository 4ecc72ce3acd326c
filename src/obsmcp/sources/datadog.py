"""Datadog as a source of logs, traces and metrics, through Datadog's public HTTP API.

Operations (Datadog's OpenAPI, `tests/data/vendor/datadog/`; the permission each one needs is its
`x-permission` / OAuth scope there):

    search_logs    POST /api/v2/logs/events/search    (ListLogs)             logs_read_data
    search_traces  POST /api/v2/spans/events/search   (ListSpans)            apm_read
    get_trace      POST /api/v2/spans/events/search   (ListSpans)            apm_read
    services       GET  /api/v2/apm/services          (GetServiceList)       apm_read
    list_metrics   GET  /api/v1/metrics               (ListActiveMetrics)    metrics_read
                   GET  /api/v1/metrics/{name}        (GetMetricMetadata)    metrics_read
    query_metrics  GET  /api/v1/query                 (QueryMetrics)         timeseries_query
    check          GET  /api/v1/validate              (Validate)             (API key only)

The base URL is https://api.<site> (DD_SITE: datadoghq.com, us3/us5.datadoghq.com, datadoghq.eu,
ap1/ap2.datadoghq.com, ddog-gov.com); the keys go in the DD-API-KEY and DD-APPLICATION-KEY headers (the
spec's apiKeyAuth/appKeyAuth), which the client never logs.

Trace ids. Datadog's span `trace_id` is the lower 64 bits of the trace id, in decimal; for a 128-bit
(OpenTelemetry) trace the upper 64 bits travel in the `_dd.p.tid` tag, in hex. `get_trace` accepts either
form: a decimal id as is, a 16-hex id converted to decimal, and a 32-hex OTel id searched by its lower half
in decimal, keeping only spans whose `_dd.p.tid` (when present) equals its upper half. Log records carry
the trace id their tracer injected: `otel.trace_id` (hex, OTel) when present, else `dd.trace_id` (decimal).

Span shape (recorded responses): `attributes.custom.duration` is the span's duration in nanoseconds (the
start/end timestamps have millisecond precision only), `parent_id` "0" marks a root span, `resource_name`
is the operation shown, and an error span carries `custom.error` (type/message/stack) or `status: error`.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog

from obsmcp.http import (
    BackendClient,
    BackendClientConfig,
    BackendHTTPError,
    BackendRateLimited,
    CacheClass,
    CachePolicy,
    JsonResult,
    RateLimit,
    backend_client,
)
from obsmcp.model import Span
from obsmcp.sources.base import (
    LogPage,
    LogQuery,
    MetricQuery,
    MetricsList,
    SeriesPage,
    SourceError,
    TracePage,
    TraceQuery,
    UnsupportedQuery,
)
from obsmcp.sources.config import BackendConfig
from obsmcp.timerange import format_ns
from obsmcp.tools.logs import LogRecord
from obsmcp.tools.metrics import MetricInfo, Series, SeriesPoint
from obsmcp.tools.traces import TraceSummary

log = structlog.get_logger("obsmcp.sources.datadog")

LOGS_SEARCH = "/api/v2/logs/events/search"
SPANS_SEARCH = "/api/v2/spans/events/search"
SERVICES = "/api/v2/apm/services"
ACTIVE_METRICS = "/api/v1/metrics"
METRIC_METADATA = "/api/v1/metrics/{name}"
QUERY = "/api/v1/query"
VALIDATE = "/api/v1/validate"

# The permission each operation needs (the spec's x-permission / AuthZ scope of the operation).
PERMISSION = {
    "search_logs": "logs_read_data",
    "search_traces": "apm_read",
    "get_trace": "apm_read",
    "services": "apm_read",
    "list_metrics": "metrics_read",
    "metric_metadata": "metrics_read",
    "query_metrics": "timeseries_query",
}

MAX_PAGE = 1000  # page.limit maximum of both search APIs
TRACE_PAGES = 10  # get_trace reads at most this many pages of spans (10,000 spans)
TRACE_LOOKBACK = "now-15d"  # Datadog's default retention of indexed spans: get_trace has no time range
ACTIVE_WINDOW_S = 3600  # list_metrics: metrics that reported in the last hour (the v2 API's default window)
METADATA_LOOKUPS = 10  # list_metrics: type/unit/description fetched for at most this many metrics
_U64 = 1 << 64

# Datadog log statuses and the OTel severity number each stands for (DESIGN: severities are OTel's).
_STATUS_SEVERITY = {
    "emergency": ("FATAL", 21), "emerg": ("FATAL", 21), "alert": ("FATAL", 21), "critical": ("FATAL", 21),
    "error": ("ERROR", 17), "warn": ("WARN", 13), "warning": ("WARN", 13), "notice": ("INFO", 10),
    "info": ("INFO", 9), "ok": ("INFO", 9), "debug": ("DEBUG", 5), "trace": ("TRACE", 1),
}  # fmt: skip
_QUERY_STATUSES = ("emergency", "alert", "critical", "error", "warn", "notice", "info", "ok", "debug")

# Characters with a meaning in Datadog's search syntax (logs and spans): a value holding one is quoted.
_SEARCH_SPECIAL = re.compile(r'[\s+\-=&|><!(){}\[\]^"“”~*?:\\/]')
_ATTR_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]*$")
# Metric names and tags as Datadog stores them (other characters become "_" at intake, so a value holding
# one can never match as written).
_METRIC_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.]{0,199}$")
_TAG_KEY = re.compile(r"^[A-Za-z][A-Za-z0-9_.\-/]*$")
_TAG_VALUE = re.compile(r"^[A-Za-z0-9_.\-/:*]+$")
_SPACE_AGG = ("avg", "sum", "min", "max")
_PERCENTILES = ("p50", "p90", "p95", "p99")


class DatadogSource:
    """Logs, traces and metrics of one Datadog organization (on one site)."""

    kind = "datadog"

    def __init__(self, config: BackendConfig, client_config: BackendClientConfig) -> None:
        self.config = config  # the registry reads it (signals this backend can serve when named)
        self.name = config.name
        self.signals: tuple[str, ...] = tuple(config.routed_signals)
        self.client: BackendClient = backend_client(client_config)  # the registry closes it

    @property
    def base_url(self) -> str:
        return self.client.config.base_url

    # -- Source ---------------------------------------------------------------------------------------------

    async def check(self) -> None:
        """Validate the API key (GET /api/v1/validate): cheap, and it fails fast on a wrong key or site."""
        await self._get("check", VALIDATE, None, cache=None)

    async def services(self, start_ns: int, end_ns: int) -> list[str]:
        """APM service names across all environments (the API has no time range: all services it knows)."""
        result = await self._get("services", SERVICES, {"filter[env]": "*"}, cache="metadata")
        attrs = _dict(_dict(result.data).get("data")).get("attributes")
        return sorted({str(s) for s in _dict(attrs).get("services") or [] if s})

    # -- logs -------------------------------------------------------------------------------------------------

    def logs_request(self, q: LogQuery) -> dict[str, Any]:
        """The ListLogs request body for a query (public so tests validate it against the spec)."""
        page: dict[str, Any] = {"limit": max(1, min(q.limit, MAX_PAGE))}
        if q.cursor:
            page["cursor"] = q.cursor
        return {
            "filter": {"query": log_query(q), "from": _ms(q.start_ns), "to": _ms(q.end_ns)},
            "sort": "-timestamp",
            "page": page,
        }

    async def search_logs(self, q: LogQuery) -> LogPage:
        result = await self._post("search_logs", LOGS_SEARCH, self.logs_request(q))
        body = _dict(result.data)
        records = [_log_record(item) for item in body.get("data") or [] if isinstance(item, dict)]
        meta = _dict(body.get("meta"))
        return LogPage(
            records=records,
            next_cursor=_dict(meta.get("page")).get("after") or None,
            notes=_meta_notes(meta, "logs"),
            freshness=result.freshness,
        )

    # -- traces -----------------------------------------------------------------------------------------------

    def spans_request(
        self, query: str, start: str, end: str, limit: int, cursor: str | None, sort: str = "-timestamp"
    ) -> dict[str, Any]:
        """The ListSpans request body (public so tests validate it against the spec)."""
        page: dict[str, Any] = {"limit": max(1, min(limit, MAX_PAGE))}
        if cursor:
            page["cursor"] = cursor
        return {
            "data": {
                "type": "search_request",
                "attributes": {"filter": {"query": query, "from": start, "to": end}, "sort": sort, "page": page},
            }
        }

    async def search_traces(self, q: TraceQuery) -> TracePage:
        """Newest matching spans, grouped by trace id (newest trace first); then every span of those traces
        (one more search by trace id, range widened by an hour) for the summaries: root = the span without a
        parent, duration = the root span's duration (else first start to last end of the spans seen)."""
        matching = await self._post(
            "search_traces",
            SPANS_SEARCH,
            self.spans_request(span_query(q), _ms(q.start_ns), _ms(q.end_ns), max(50, q.limit * 10), q.cursor),
        )
        body = _dict(matching.data)
        ids: list[str] = []
        for item in body.get("data") or []:
            tid = str(_dict(_dict(item).get("attributes")).get("trace_id") or "")
            if tid and tid not in ids:
                ids.append(tid)
        meta = _dict(body.get("meta"))
        notes = _meta_notes(meta, "spans")
        shown = ids[: max(1, q.limit)]
        if len(ids) > len(shown):
            notes.append(
                f"{len(ids) - len(shown)} more traces matched in this page of spans but are not shown (the next "
                "cursor continues after them): raise limit or narrow the filters to see them"
            )
        spans_by_trace: dict[str, list[dict[str, Any]]] = {t: [] for t in shown}
        if shown:
            hour = 3600 * 10**9
            every = await self._post(
                "search_traces",
                SPANS_SEARCH,
                self.spans_request(
                    f"trace_id:({' OR '.join(shown)})",
                    _ms(q.start_ns - hour),
                    _ms(q.end_ns + hour),
                    MAX_PAGE,
                    None,
                    sort="timestamp",
                ),
            )
            spans = [_dict(_dict(i).get("attributes")) for i in _dict(every.data).get("data") or []]
            for a in spans:
                tid = str(a.get("trace_id") or "")
                if tid in spans_by_trace:
                    spans_by_trace[tid].append(a)
            if len(spans) >= MAX_PAGE:
                notes.append(f"the summaries read the first {MAX_PAGE} spans of these traces: span counts may be low")
        return TracePage(
            traces=[_summary(t, spans_by_trace[t]) for t in shown if spans_by_trace[t]],
            next_cursor=_dict(meta.get("page")).get("after") or None,
            notes=notes,
            freshness=matching.freshness,
        )

    async def get_trace(self, trace_id: str) -> list[Span]:
        """Every span of one trace (decimal Datadog id, or 16/32-hex OTel id: see the module docstring),
        searched over Datadog's span retention (15 days), in start order."""
        decimal, high = datadog_trace_id(trace_id)
        shown_id = trace_id.strip().lower()
        cursor: str | None = None
        out: list[Span] = []
        for _ in range(TRACE_PAGES):
            body = self.spans_request(f"trace_id:{decimal}", TRACE_LOOKBACK, "now", MAX_PAGE, cursor, "timestamp")
            page = _dict((await self._post("get_trace", SPANS_SEARCH, body)).data)
            for item in page.get("data") or []:
                a = _dict(_dict(item).get("attributes"))
                if str(a.get("trace_id") or "") != decimal:
                    continue  # the search matched another field: keep this trace's spans only
                flat = _flatten(_dict(a.get("custom")))
                tid_high = str(flat.get("_dd.p.tid") or "").lower()
                if high is not None and tid_high and tid_high != high:
                    continue  # same lower 64 bits, another 128-bit trace
                out.append(_span(shown_id, a, flat))
            cursor = _dict(_dict(page.get("meta")).get("page")).get("after") or None
            if not cursor or not page.get("data"):
                break
        else:
            log.warning("trace_truncated", backend=self.name, spans=len(out))
        out.sort(key=lambda s: (s.start_ns, s.span_id))
        return out

    # -- metrics ----------------------------------------------------------------------------------------------

    def active_metrics_params(self, service: str | None, now_s: int | None = None) -> dict[str, str]:
        now = now_s if now_s is not None else int(time.time())
        # On a minute boundary, so that repeated listings share one cache entry.
        params = {"from": str(now // 60 * 60 - ACTIVE_WINDOW_S)}
        if service:
            params["tag_filter"] = f"service:{_tag_value('service', service)}"
        return params

    async def list_metrics(self, filter: str | None, service: str | None) -> MetricsList:
        """Metrics that reported in the last hour (of `service`: its `service` tag); type, unit and
        description from each one's metadata, for the first few."""
        result = await self._get("list_metrics", ACTIVE_METRICS, self.active_metrics_params(service), cache="metadata")
        names = sorted({str(n) for n in _dict(result.data).get("metrics") or []})
        if filter:
            names = [n for n in names if filter.lower() in n.lower()]
        described = names[:METADATA_LOOKUPS]
        metas = await asyncio.gather(*(self._metadata(n, missing_ok=True) for n in described))
        meta_of = dict(zip(described, metas, strict=True))
        notes = []
        if len(names) > len(described):
            notes.append(
                f"type/unit/description shown for the first {len(described)} metrics only (one metadata call "
                "each): pass filter to narrow the list"
            )
        return MetricsList(
            metrics=[
                MetricInfo(
                    name=n,
                    type=str(meta_of.get(n, {}).get("type") or "unknown"),
                    unit=str(meta_of.get(n, {}).get("unit") or ""),
                    description=str(meta_of.get(n, {}).get("description") or ""),
                    services=[service] if service else [],
                    attribute_keys=[],
                )
                for n in names
            ],
            total=len(names),
            notes=notes,
            freshness=result.freshness,
        )

    async def metric_query(self, q: MetricQuery) -> tuple[str, list[str]]:
        """The Datadog metrics query for `q`, and notes; UnsupportedQuery for what Datadog cannot express."""
        if q.raw:
            return q.raw.strip(), []
        if not q.name or not _METRIC_NAME.match(q.name):
            raise UnsupportedQuery(
                f"{q.name!r} is not a Datadog metric name (a letter, then letters, digits, '_' or '.'): "
                "check it with list_metrics"
            )
        agg = q.aggregation.lower()
        tags = [f"service:{_tag_value('service', q.service)}"] if q.service else []
        tags += [f"{_tag_key(k)}:{_tag_value(k, v)}" for k, v in q.attributes.items()]
        scope = "{" + (",".join(tags) or "*") + "}"
        by = " by {" + ",".join(_tag_key(g) for g in q.group_by) + "}" if q.group_by else ""
        step = max(1, q.step_s)
        notes: list[str] = []
        if agg in _SPACE_AGG:
            return f"{agg}:{q.name}{scope}{by}.rollup({agg}, {step})", notes
        if agg not in ("rate", "increase", "count", *_PERCENTILES):
            raise UnsupportedQuery(f"aggregation {agg!r} has no Datadog equivalent: use avg, sum, min, max, "
                                   "rate, increase, count or p50/p90/p95/p99")  # fmt: skip
        mtype = str((await self._metadata(q.name)).get("type") or "")
        if not mtype:
            notes.append(f"Datadog has no type for {q.name}: {agg} was sent without checking it applies")
        if agg in ("rate", "increase"):
            if mtype in ("gauge", "distribution"):
                raise UnsupportedQuery(
                    f"{agg} needs a count or rate metric; {q.name} is a {mtype} in Datadog, where .as_rate()/"
                    ".as_count() do not apply: use avg, min or max"
                    + (", or count (observations) and percentiles" if mtype == "distribution" else "")
                )
            if agg == "rate":
                return f"sum:{q.name}{scope}{by}.as_rate().rollup(avg, {step})", notes
            return f"sum:{q.name}{scope}{by}.as_count().rollup(sum, {step})", notes
        if mtype and mtype != "distribution":
            what = "percentiles" if agg in _PERCENTILES else "a count of observations"
            raise UnsupportedQuery(
                f"{agg} needs a distribution metric: Datadog computes {what} only for distributions, and "
                f"{q.name} is a {mtype}: use avg or max" + (", or increase" if mtype in ("count", "rate") else "")
            )
        if agg == "count":
            return f"count:{q.name}{scope}{by}.rollup(sum, {step})", notes
        return f"{agg}:{q.name}{scope}{by}", notes

    def query_params(self, query: str, start_ns: int, end_ns: int) -> dict[str, str]:
        return {"from": str(start_ns // 10**9), "to": str(-(-end_ns // 10**9)), "query": query}

    async def query_metrics(self, q: MetricQuery) -> SeriesPage:
        query, notes = await self.metric_query(q)
        result = await self._get("query_metrics", QUERY, self.query_params(query, q.start_ns, q.end_ns), cache="query")
        body = _dict(result.data)
        if body.get("status") == "error" or body.get("error"):
            raise SourceError(
                f"Datadog backend {self.name} rejected the metrics query {query!r}: "
                f"{str(body.get('error') or 'status error')[:300]!r}: fix the query (Datadog's words are quoted)"
            )
        series: list[Series] = []
        interval: int | None = None
        for s in body.get("series") or []:
            s = _dict(s)
            interval = interval or _int(s.get("interval"))
            points = [
                SeriesPoint(t=format_ns(int(float(p[0]) * 1_000_000)), v=None if p[1] is None else float(p[1]))
                for p in s.get("pointlist") or []
                if isinstance(p, list) and len(p) == 2 and p[0] is not None
            ]
            vals = [p.v for p in points if p.v is not None]
            series.append(
                Series(
                    labels=_tag_labels(s.get("tag_set") or []),
                    points=points,
                    min=min(vals) if vals else None,
                    max=max(vals) if vals else None,
                    last=vals[-1] if vals else None,
                    trend=_trend(vals),
                )
            )
        return SeriesPage(
            series=series,
            query=query,
            step_s=interval or q.step_s,
            total=len(series),
            notes=notes,
            freshness=result.freshness,
        )

    async def _metadata(self, name: str, *, missing_ok: bool = False) -> dict[str, Any]:
        try:
            result = await self._get(
                "metric_metadata", METRIC_METADATA.format(name=name), None, cache="metadata", missing=name
            )
        except _Missing:
            if missing_ok:  # listed as active but without metadata: show it with an unknown type
                return {}
            raise SourceError(
                f"Datadog backend {self.name} has no metric named {name!r}: check the name with list_metrics"
            ) from None
        return _dict(result.data)

    # -- HTTP -------------------------------------------------------------------------------------------------

    async def _get(
        self,
        op: str,
        path: str,
        params: Mapping[str, str] | None,
        *,
        cache: CacheClass | None,
        missing: str | None = None,
    ) -> JsonResult:
        try:
            return await self.client.get_json(path, params=dict(params or {}), cache=cache)
        except BackendHTTPError as e:
            if e.status == 404 and missing is not None:
                raise _Missing(missing) from None
            raise self._error(op, e) from e

    async def _post(self, op: str, path: str, body: dict[str, Any]) -> JsonResult:
        try:
            # A search is a read sent as a body: safe to retry, share and cache.
            return await self.client.post_json(path, body, idempotent=True, cache="query")
        except BackendHTTPError as e:
            raise self._error(op, e) from e

    def _error(self, op: str, e: BackendHTTPError) -> SourceError:
        who = f"Datadog backend {self.name} ({self.base_url})"
        said = datadog_errors(e.excerpt)
        quoted = f" (Datadog said: {said})" if said else ""
        if isinstance(e, BackendRateLimited):
            return SourceError(f"{who} rate-limited {op} (429){quoted}: {e.message}")
        if e.status in (401, 403):
            perm = PERMISSION.get(op)
            if perm is None:  # check(): Validate takes the API key alone
                return SourceError(
                    f"{who} refused the API key ({e.status}){quoted}: it is wrong or belongs to another site: "
                    "check DATADOG_API_KEY and DD_SITE"
                )
            return SourceError(
                f"{who} refused {op} ({e.status}){quoted}: the application key lacks the `{perm}` permission, or "
                f"a key is wrong or belongs to another site: grant `{perm}` to the application key's user or "
                "service account (or its scopes), and check DATADOG_API_KEY, DATADOG_APP_KEY and DD_SITE"
            )
        if e.status in (400, 422):
            return SourceError(f"{who} rejected {op} ({e.status}){quoted}: fix the query (Datadog's words are quoted)")
        if e.status == 404:
            return SourceError(f"{who} has no endpoint for {op} (404){quoted}: check url or DD_SITE")
        return SourceError(f"{who} failed {op}: {e.message}")


class _Missing(Exception):
    """A 404 of a lookup by name (a metric): the caller says what is missing."""


# -- query building (pure) ----------------------------------------------------------------------------------


def search_value(value: str) -> str:
    """A value for Datadog's search syntax: bare when plain, else a quoted phrase."""
    if value and not _SEARCH_SPECIAL.search(value):
        return value
    return phrase(value)


def phrase(value: str) -> str:
    """A quoted phrase: inside quotes only \\ and " need escaping (every other special character is literal)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _attr(key: str) -> str:
    if not _ATTR_KEY.match(key):
        raise UnsupportedQuery(f"attribute {key!r} cannot be searched in Datadog: use letters, digits, '_', '.', '-'")
    return f"@{key}"


def log_query(q: LogQuery) -> str:
    """Datadog log search syntax for a LogQuery ("*" when nothing filters)."""
    if q.regex:
        raise UnsupportedQuery(
            "Datadog log search has no regular expressions: search a substring (regex=false) or a word with "
            "a * wildcard instead"
        )
    terms: list[str] = []
    if q.service:
        terms.append(f"service:{search_value(q.service)}")
    if q.min_severity is not None and q.min_severity > 5:
        floor = min(q.min_severity, 21)  # above FATAL (22-24) Datadog has nothing finer than emergency
        wanted = [s for s in _QUERY_STATUSES if _STATUS_SEVERITY[s][1] >= floor]
        terms.append("status:(" + " OR ".join(wanted) + ")")
    if q.trace_id:
        terms.append(_log_trace_term(q.trace_id))
    for k, v in q.attributes.items():
        terms.append(f"{_attr(k)}:{search_value(str(v))}")
    if q.text:
        terms.append(phrase(q.text))  # full-text search of the message for this exact text
    return " ".join(terms) or "*"


def _log_trace_term(trace_id: str) -> str:
    decimal, high = datadog_trace_id(trace_id)
    tid = trace_id.strip().lower()
    if high is None and tid == decimal:
        return f"@dd.trace_id:{decimal}"
    return f"(@otel.trace_id:{tid} OR @dd.trace_id:{decimal})"


def span_query(q: TraceQuery) -> str:
    """Datadog span search syntax for a TraceQuery: resource_name is the operation, @duration in ns."""
    terms: list[str] = []
    if q.service:
        terms.append(f"service:{search_value(q.service)}")
    if q.operation:
        terms.append(f"resource_name:{search_value(q.operation)}")
    if q.min_duration_ms is not None:
        terms.append(f"@duration:>={int(q.min_duration_ms * 1e6)}")
    if q.max_duration_ms is not None:
        terms.append(f"@duration:<={int(q.max_duration_ms * 1e6)}")
    if q.status:
        status = q.status.lower()
        if status not in ("error", "ok"):
            raise UnsupportedQuery(f"status={q.status!r}: Datadog spans are error or ok (it has no unset status)")
        terms.append(f"status:{status}")
    for k, v in q.attributes.items():
        terms.append(f"{_attr(k)}:{search_value(str(v))}")
    return " ".join(terms) or "*"


def datadog_trace_id(trace_id: str) -> tuple[str, str | None]:
    """(Datadog's decimal trace id, the upper 64 bits in hex of a 128-bit id or None) for a decimal,
    16-hex or 32-hex trace id."""
    tid = trace_id.strip().lower()
    if tid.isdigit() and int(tid) < _U64:
        return str(int(tid)), None
    if re.fullmatch(r"[0-9a-f]{32}", tid):
        return str(int(tid[16:], 16)), tid[:16]
    if re.fullmatch(r"[0-9a-f]{16}", tid):
        return str(int(tid, 16)), None
    raise SourceError(
        f"{trace_id!r} is not a trace id Datadog knows: give its decimal id (as Datadog shows it) or the "
        "16- or 32-character hex id (OpenTelemetry)"
    )


def _tag_key(key: str) -> str:
    if not _TAG_KEY.match(key):
        raise UnsupportedQuery(
            f"{key!r} is not a Datadog tag key (a letter, then letters, digits, '_', '.', '-', '/'): check it"
        )
    return key


def _tag_value(key: str, value: str) -> str:
    if not _TAG_VALUE.match(value):
        raise UnsupportedQuery(
            f"{key}={value!r} cannot be a Datadog tag value: tags hold letters, digits and _ . - / : only "
            "(Datadog turns other characters into '_' at intake); write it as Datadog stores it, * as wildcard"
        )
    return value


# -- response mapping (pure) --------------------------------------------------------------------------------


def datadog_errors(excerpt: str) -> str:
    """Datadog's `errors` array (strings, or JSON:API items with title/detail) as one line; the raw
    excerpt when it is not that shape (or was cut)."""
    try:
        body = json.loads(excerpt)
    except ValueError:
        return excerpt
    errors = body.get("errors") if isinstance(body, dict) else None
    if not isinstance(errors, list) or not errors:
        return excerpt
    parts = []
    for err in errors:
        if isinstance(err, dict):
            parts.append(": ".join(str(err[k]) for k in ("title", "detail") if err.get(k)))
        else:
            parts.append(str(err))
    return "; ".join(p for p in parts if p)


def _log_record(item: dict[str, Any]) -> LogRecord:
    a = _dict(item.get("attributes"))
    flat = _flatten(_dict(a.get("attributes")))
    status = str(a.get("status") or "").lower()
    severity = _STATUS_SEVERITY.get(status, (status.upper() or "UNSET", 0))[0]
    trace_id = flat.get("otel.trace_id") or flat.get("dd.trace_id") or flat.get("trace_id")
    span_id = flat.get("otel.span_id") or flat.get("dd.span_id") or flat.get("span_id")
    attributes = {k: v for k, v in flat.items() if k not in _LOG_ID_KEYS}
    if a.get("host"):
        attributes["host"] = str(a["host"])
    return LogRecord(
        time=format_ns(_iso_ns(a.get("timestamp"))),
        severity=severity,
        service=str(a.get("service") or _tag(a.get("tags"), "service") or "unknown"),
        body=str(a.get("message") or ""),
        trace_id=trace_id or None,
        span_id=span_id or None,
        attributes=attributes,
    )


_LOG_ID_KEYS = frozenset({"otel.trace_id", "dd.trace_id", "trace_id", "otel.span_id", "dd.span_id", "span_id"})


def _is_error(a: Mapping[str, Any], flat: Mapping[str, str]) -> bool:
    return str(a.get("status") or "").lower() == "error" or any(k.startswith("error.") for k in flat)


def _duration_ns(a: Mapping[str, Any]) -> int:
    d = _dict(a.get("custom")).get("duration")
    if isinstance(d, int | float) and d >= 0:
        return int(d)
    return max(0, _iso_ns(a.get("end_timestamp")) - _iso_ns(a.get("start_timestamp")))


def _summary(trace_id: str, spans: list[dict[str, Any]]) -> TraceSummary:
    ids = {str(s.get("span_id")) for s in spans}
    roots = [s for s in spans if str(s.get("parent_id") or "0") in ("0", "") or str(s.get("parent_id")) not in ids]
    true_roots = [s for s in roots if str(s.get("parent_id") or "0") in ("0", "")]
    root = (true_roots or roots or spans)[0]
    starts = [_iso_ns(s.get("start_timestamp")) for s in spans]
    ends = [st + _duration_ns(s) for st, s in zip(starts, spans, strict=True)]
    duration = _duration_ns(root) if true_roots else max(ends) - min(starts)
    return TraceSummary(
        trace_id=trace_id,
        start=format_ns(min(starts)),
        root=f"{root.get('service') or 'unknown'} {root.get('resource_name') or ''}".strip(),
        duration_ms=round(duration / 1e6, 3),
        spans=len(spans),
        errors=sum(_is_error(s, _flatten(_dict(s.get("custom")))) for s in spans),
        services=sorted({str(s.get("service")) for s in spans if s.get("service")}),
    )


def _span(trace_id: str, a: Mapping[str, Any], flat: Mapping[str, str]) -> Span:
    parent = str(a.get("parent_id") or "0")
    kind = str(flat.get("span.kind") or "")
    attributes = {k: v[:500] for k, v in flat.items() if k != "duration"}
    for key in ("env", "host", "type"):
        if a.get(key):
            attributes.setdefault(key, str(a[key]))
    error = _is_error(a, flat)
    return Span(
        trace_id=trace_id,
        span_id=str(a.get("span_id") or ""),
        parent_id="" if parent == "0" else parent,
        service=str(a.get("service") or "unknown"),
        name=str(a.get("resource_name") or ""),
        kind=kind.capitalize() if kind else "Unspecified",
        start_ns=_iso_ns(a.get("start_timestamp")),
        duration_ns=_duration_ns(a),
        status="Error" if error else "Unset",
        status_message=str(flat.get("error.message") or "") if error else "",
        attributes=attributes,
    )


def _meta_notes(meta: Mapping[str, Any], what: str) -> list[str]:
    notes = []
    if meta.get("status") == "timeout":
        notes.append(f"Datadog timed out searching {what}: the results are partial; narrow the time range")
    for w in meta.get("warnings") or []:
        w = _dict(w)
        notes.append(f"Datadog: {w.get('title') or w.get('code')}" + (f" ({w['detail']})" if w.get("detail") else ""))
    return notes


def _tag_labels(tag_set: Iterable[Any]) -> dict[str, str]:
    labels: dict[str, str] = {}
    for tag in tag_set:
        key, _, value = str(tag).partition(":")
        labels[key] = value
    return labels


def _tag(tags: Any, key: str) -> str | None:
    for tag in tags or []:
        k, _, v = str(tag).partition(":")
        if k == key and v:
            return v
    return None


def _trend(vals: list[float]) -> str:
    """The same wording as the store's query_metrics: last third against first third."""
    if len(vals) < 3:
        return "too few points"
    third = max(1, len(vals) // 3)
    a, b = sum(vals[:third]) / third, sum(vals[-third:]) / third
    if a == 0 and b == 0:
        return "flat at 0"
    if a == 0:
        return "rising (∞, last third vs first third)" if b > 0 else "falling (∞, last third vs first third)"
    change = (b - a) / abs(a)
    if abs(change) < 0.1:
        return "flat"
    return f"{'rising' if change > 0 else 'falling'} ({change * 100:+.0f}%, last third vs first third)"


def _flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(_flatten(v, key + "."))
        elif v is not None:
            out[key] = v if isinstance(v, str) else json.dumps(v)
    return out


def _dict(v: Any) -> dict[str, Any]:
    return v if isinstance(v, dict) else {}


def _int(v: Any) -> int | None:
    return int(v) if isinstance(v, int | float) and v > 0 else None


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _iso_ns(value: Any) -> int:
    if not isinstance(value, str) or not value:
        return 0
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return 0
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return (dt - _EPOCH) // timedelta(microseconds=1) * 1000


def _ms(ns: int) -> str:
    """A search API time bound: milliseconds since the epoch, as the spec's `from`/`to` strings allow."""
    return str(ns // 1_000_000)


# -- construction ---------------------------------------------------------------------------------------------


def client_config(cfg: BackendConfig) -> BackendClientConfig:
    """The resilient client's policy; the keys ride in the spec's apiKeyAuth/appKeyAuth headers."""
    if cfg.api_key is None or cfg.app_key is None:
        raise SourceError(
            f"backend {cfg.name}: Datadog needs an API key and an application key: set DATADOG_API_KEY and "
            "DATADOG_APP_KEY (or api_key/app_key in its [[backends]] table)"
        )
    headers = {
        **cfg.headers,
        "DD-API-KEY": cfg.api_key.get_secret_value(),
        "DD-APPLICATION-KEY": cfg.app_key.get_secret_value(),
    }
    return BackendClientConfig(
        name=cfg.name,
        base_url=cfg.base_url,
        kind="datadog",
        connect_timeout_s=cfg.connect_timeout_s,
        read_timeout_s=cfg.read_timeout_s,
        headers=headers,
        cache=CachePolicy(metadata_ttl_s=cfg.metadata_cache_ttl_s, query_ttl_s=cfg.query_cache_ttl_s),
        rate_limit=RateLimit(cfg.rate_limit_per_s) if cfg.rate_limit_per_s > 0 else None,
    )


def from_config(cfg: BackendConfig) -> DatadogSource:
    """The Datadog source of a `[[backends]]` table (or DATADOG_API_KEY / DATADOG_APP_KEY / DD_SITE)."""
    if cfg.kind != "datadog":
        raise SourceError(f"backend {cfg.name} is a {cfg.kind} backend, not Datadog: set kind = 'datadog'")
    return DatadogSource(cfg, client_config(cfg))
