"""Grafana Loki as a log source (Loki HTTP API, docs/sources/reference/loki-http-api.md in grafana/loki).

search_logs: a LogQuery becomes one LogQL log query (`logql_for`), run by `GET /loki/api/v1/query_range` with
start/end in Unix nanoseconds, `direction=backward` (newest first) and `limit`:

- Stream selector: the service label of this instance, found once via `/loki/api/v1/labels` (cached): Loki 3
  derives `service_name` at ingestion (`discover_service_name`) and the OTLP endpoint maps `service.name` to
  it; older setups label streams `app`, `application`, `service` or `job`. Without a service, the selector
  is `{<label>=~".+"}` (LogQL needs one matcher that does not match the empty string).
- Severity: when the streams carry a level label (`detected_level` or `level` among the indexed labels), a
  matcher in the selector, which the index answers without reading chunks. Otherwise `| detected_level=~...`:
  Loki >= 3.0 detects each line's level at ingestion (`discover_log_levels`, on by default) and stores it as
  structured metadata, which a label filter before any parser reads without parsing lines (the docs' "query
  acceleration"). A `| json | level=...` filter was rejected: it parses every line and only works for JSON
  logs. Matching is case-insensitive over the level words of each OTel severity range (warn|warning, ...).
- Text: the tools' `query` is a case-insensitive substring (as in the store), so it becomes
  `|~ "(?i)<literal, regex-escaped>"`; Loki's regex simplifier (pkg/logql/log/filter.go) runs such a literal as a
  case-insensitive contains filter, not a regex.
  With regex=True the pattern is passed as is (`|~ "<RE2>"`, not anchored). Both are Go string literals
  with `\\` and `"` escaped.
- trace_id: `| trace_id="<32 hex>"`, the structured metadata Loki's OTLP endpoint writes for each record.
- attributes: `| <label>="<value>"`, names normalized as Loki normalizes OTLP attribute names (`.` -> `_`).

Records map to the tools' LogRecord: time, severity (from detected_level / level / severity_text ...), the
service label, the line as body, trace_id/span_id when present, the other labels as attributes. Loki has no
page token: next_cursor is "<oldest ns>:<records at that ns already shown>" and the next page ends there.
When a page is not the whole match, total and by_severity come from one instant metric query over the whole
range (`count_by_severity`: `sum by (detected_level, level) (count_over_time(<query> [<range>s]))`).

Also: label discovery (`labels`, `label_values`), and `patterns` from `/loki/api/v1/patterns` (Loki's pattern
ingester must be enabled): templates with counts, in the shape the log_patterns tool reports (template and
count), so log_patterns can show Loki's patterns for a service instead of mining lines it would have to
download first.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from obsmcp.http import BackendClient, BackendHTTPError, JsonResult, backend_client
from obsmcp.sources import remote
from obsmcp.sources.base import LogPage, LogQuery, SourceError
from obsmcp.sources.config import BackendConfig
from obsmcp.sources.otlp_json import TraceDecodeError, normalize_span_id, normalize_trace_id
from obsmcp.sources.tempo import quote, re2_escape
from obsmcp.timerange import format_ns
from obsmcp.tools.logs import LogRecord

SERVICE_LABELS = ("service_name", "app", "application", "service", "job")
LEVEL_LABELS = ("detected_level", "level")  # indexed level labels usable in the stream selector
# Labels a record's severity is read from, first present wins (structured metadata appears among them).
SEVERITY_KEYS = ("detected_level", "level", "severity_text", "severity", "lvl", "loglevel")
_SEVERITY_NUMBER = "severity_number"  # structured metadata from Loki's OTLP endpoint
TRACE_KEYS = ("trace_id", "traceID", "traceid", "trace")
SPAN_KEYS = ("span_id", "spanID", "spanid")
_ROUND_NS = 300 * 10**9  # metadata time ranges are rounded to this, so that repeated calls hit the cache
_LABEL_CHARS = re.compile(r"[^a-zA-Z0-9_]")

# Level words senders use, by the OTel severity number they stand for (data model ranges: 1 TRACE, 5 DEBUG,
# 9 INFO, 13 WARN, 17 ERROR, 21 FATAL). Loki's detected_level uses trace debug info warn error critical fatal
# (pkg/util/constants/levels.go) and "unknown".
LEVEL_WORDS: dict[str, int] = {
    "trace": 1, "debug": 5, "dbg": 5, "info": 9, "information": 9, "notice": 10, "warn": 13, "warning": 13,
    "error": 17, "err": 17, "critical": 21, "crit": 21, "fatal": 21, "panic": 21, "alert": 22, "emerg": 23,
    "emergency": 23,
}  # fmt: skip
_SEVERITY_NAMES = ((21, "FATAL"), (17, "ERROR"), (13, "WARN"), (9, "INFO"), (5, "DEBUG"), (1, "TRACE"))


@dataclass(frozen=True)
class LogPattern:
    """One pattern Loki's pattern ingester detected: `<_>` marks a variable part."""

    template: str
    count: int
    first_seen_s: int
    last_seen_s: int


def from_config(cfg: BackendConfig) -> LokiSource:
    return LokiSource(cfg)


def severity_name(word: str | None) -> str:
    """A level word (any case, "INFO2" sub-levels too) as the store's short severity name; UNSET if unknown."""
    w = (word or "").strip().lower()
    n = LEVEL_WORDS.get(w)
    if n is None and len(w) > 1 and w[-1] in "1234":
        n = LEVEL_WORDS.get(w[:-1])
    if n is None:
        return "UNSET"
    return next(name for floor, name in _SEVERITY_NAMES if n >= floor)


def level_regex(min_severity: int) -> str | None:
    """RE2 matching every level word at or above an OTel severity floor (None: no filter needed)."""
    if min_severity <= 1:
        return None
    words = sorted((w for w, n in LEVEL_WORDS.items() if n >= min_severity), key=lambda w: (LEVEL_WORDS[w], w))
    return "(?i)(" + "|".join(words) + ")"


def label_name(key: str) -> str:
    """An attribute name as a Loki label name (Loki writes OTLP `service.name` as `service_name`)."""
    name = _LABEL_CHARS.sub("_", key)
    return name if name and not name[0].isdigit() else "_" + name


def logql_for(q: LogQuery, service_label: str, level_label: str | None) -> str:
    """The LogQL of a LogQuery; `level_label` is an indexed level label, or None for `| detected_level`."""
    matchers = [f"{service_label}={quote(q.service)}" if q.service else f'{service_label}=~".+"']
    levels = level_regex(q.min_severity) if q.min_severity is not None else None
    if levels and level_label:
        matchers.append(f"{level_label}=~{quote(levels)}")
    parts = ["{" + ", ".join(matchers) + "}"]
    if q.text:
        parts.append(f"|~ {quote(q.text if q.regex else '(?i)' + re2_escape(q.text))}")
    if levels and not level_label:
        parts.append(f"| detected_level=~{quote(levels)}")
    if q.trace_id:
        parts.append(f"| trace_id={quote(_trace_id_text(q.trace_id))}")
    for key, value in sorted(q.attributes.items()):
        parts.append(f"| {label_name(key)}={quote(str(value))}")
    return " ".join(parts)


def _trace_id_text(raw: str) -> str:
    # Loki's OTLP endpoint writes the full 32 hex digits; a 64-bit id given in 16 is padded to match.
    try:
        return normalize_trace_id(raw)
    except TraceDecodeError:
        return raw.strip().lower()  # not an id at all: searched as given, and simply matches nothing


class LokiSource:
    """LogSource over the Loki HTTP API."""

    signals: tuple[str, ...]

    def __init__(self, cfg: BackendConfig, client: BackendClient | None = None) -> None:
        self.name = cfg.name
        self.kind = "loki"
        self.signals = cfg.routed_signals
        self.config = cfg
        self.client = client or backend_client(remote.client_config(cfg))
        # (chosen at monotonic time, service label, indexed level label or None)
        self._labels_choice: tuple[float, str, str | None] | None = None

    def __repr__(self) -> str:
        return f"<LokiSource {self.name} {self.client.config.display_url}>"

    async def _get(
        self, path: str, params: Mapping[str, Any] | None, what: str, *, cache: Any = None, not_found: str | None = None
    ) -> JsonResult:
        try:
            return await self.client.get_json(path, params, cache=cache, headers=remote.call_headers(self.config))
        except BackendHTTPError as e:
            raise remote.http_error(self.config, e, what, not_found=not_found) from None

    # -- discovery ---------------------------------------------------------------------------------------

    async def check(self) -> None:
        await self.labels(*_recent())

    async def labels(self, start_ns: int, end_ns: int) -> list[str]:
        """Stream label names in the range (indexed labels; structured metadata is not listed)."""
        s, e = _rounded(start_ns, end_ns)
        result = await self._get("/loki/api/v1/labels", {"start": s, "end": e}, "the label list", cache="metadata")
        return sorted(str(x) for x in (result.data or {}).get("data") or [])

    async def label_values(self, label: str, start_ns: int, end_ns: int, selector: str | None = None) -> list[str]:
        s, e = _rounded(start_ns, end_ns)
        result = await self._get(
            f"/loki/api/v1/label/{label}/values",
            {"start": s, "end": e, "query": selector},
            f"the values of label {label}",
            cache="metadata",
        )
        return sorted(str(x) for x in (result.data or {}).get("data") or [])

    async def stream_labels(self, start_ns: int, end_ns: int) -> tuple[str, str | None]:
        """(service label, indexed level label or None) of this instance, cached for the metadata TTL."""
        ttl = self.config.metadata_cache_ttl_s
        if self._labels_choice is not None and time.monotonic() - self._labels_choice[0] < ttl:
            return self._labels_choice[1], self._labels_choice[2]
        names = set(await self.labels(start_ns, end_ns))
        service = next((label for label in SERVICE_LABELS if label in names), None)
        if service is None:
            raise SourceError(
                f"Loki backend {self.name} has no service label on its streams in this range (looked for "
                f"{', '.join(SERVICE_LABELS)}; it has {', '.join(sorted(names)) or 'no labels at all'}): "
                "widen the time range, or label streams with service_name (Loki 3 derives it at ingestion)"
            )
        level = next((label for label in LEVEL_LABELS if label in names), None)
        self._labels_choice = (time.monotonic(), service, level)
        return service, level

    async def services(self, start_ns: int, end_ns: int) -> list[str]:
        service, _ = await self.stream_labels(start_ns, end_ns)
        return await self.label_values(service, start_ns, end_ns)

    # -- search ------------------------------------------------------------------------------------------

    async def search_logs(self, q: LogQuery) -> LogPage:
        service_label, level_label = await self.stream_labels(q.start_ns, q.end_ns)
        end_ns, skip = _parse_cursor(q.cursor, q.end_ns)
        query = logql_for(q, service_label, level_label)
        params = {
            "query": query,
            "start": q.start_ns,
            "end": end_ns,
            "limit": q.limit + skip + 1,  # one more than shown: tells whether there is a next page
            "direction": "backward",
        }
        result = await self._get("/loki/api/v1/query_range", params, f"the LogQL query {query}", cache="query")
        data = (result.data or {}).get("data") or {}
        if data.get("resultType") not in (None, "streams"):
            raise SourceError(
                f"Loki backend {self.name} answered the log query with {data.get('resultType')!r}, not streams"
            )
        entries = _entries(data.get("result") or [])
        if skip:
            at_end = [e for e in entries if e[0] == end_ns - 1]
            entries = [e for e in entries if e[0] != end_ns - 1] + at_end[skip:]
            entries.sort(key=lambda e: -e[0])
        more = len(entries) > q.limit
        entries = entries[: q.limit]
        records = [_record(ts, line, labels, service_label) for ts, line, labels in entries]
        by_severity = dict(Counter(r.severity for r in records).most_common())
        notes = [f"LogQL: {query}"]
        next_cursor = None
        if more:
            oldest = entries[-1][0]
            shown_at_oldest = sum(1 for e in entries if e[0] == oldest)
            if oldest == end_ns - 1:
                shown_at_oldest += skip
            next_cursor = f"{oldest + 1}:{shown_at_oldest}"
        first_page = q.cursor is None
        total: int | None = len(records)
        if more or not first_page:
            # The page is not the whole match: count it with a metric query over the query's whole range.
            try:
                by_severity = await self.count_by_severity(query, q.start_ns, q.end_ns)
                total = sum(by_severity.values())
            except SourceError as e:
                total = None
                notes.append(f"by_severity covers this page only: counting the whole match failed ({e})")
        if q.min_severity is not None and not level_label and not records and first_page:
            notes.append(
                "severity was filtered on detected_level, which Loki >= 3.0 adds at ingestion "
                "(discover_log_levels): if this Loki is older or has it off, search without min_severity"
            )
        return LogPage(
            records=records,
            by_severity=by_severity,
            total=total,
            next_cursor=next_cursor,
            notes=notes,
            freshness=result.freshness,
        )

    async def count_by_severity(self, query: str, start_ns: int, end_ns: int) -> dict[str, int]:
        """Matches of a LogQL log query over [start, end) by severity, from one instant metric query:
        `sum by (detected_level, level) (count_over_time(<query> [<range>s]))` at `end`."""
        range_s = max(1, -(-(end_ns - start_ns) // 10**9))
        metric = f"sum by (detected_level, level) (count_over_time({query} [{range_s}s]))"
        result = await self._get(
            "/loki/api/v1/query", {"query": metric, "time": end_ns}, f"the count query {metric}", cache="query"
        )
        counts: Counter[str] = Counter()
        for row in ((result.data or {}).get("data") or {}).get("result") or []:
            labels = row.get("metric") or {}
            name = severity_name(labels.get("detected_level") or labels.get("level"))
            counts[name] += int(float((row.get("value") or [0, "0"])[1]))
        return dict(counts.most_common())

    async def patterns(self, service: str | None, start_ns: int, end_ns: int, limit: int = 50) -> list[LogPattern]:
        """Loki's detected patterns for a service (or all services), most frequent first."""
        service_label, _ = await self.stream_labels(start_ns, end_ns)
        selector = "{" + (f"{service_label}={quote(service)}" if service else f'{service_label}=~".+"') + "}"
        result = await self._get(
            "/loki/api/v1/patterns",
            {"query": selector, "start": start_ns, "end": end_ns},
            f"the patterns of {selector}",
            cache="query",
            not_found=f"Loki backend {self.name} does not serve /loki/api/v1/patterns (404): enable the pattern "
            "ingester (pattern_ingester.enabled: true), or use log_patterns over search_logs results",
        )
        out = []
        for item in (result.data or {}).get("data") or []:
            samples = [(int(t), int(n)) for t, n in item.get("samples") or []]
            if not samples:
                continue
            out.append(
                LogPattern(
                    template=str(item.get("pattern", "")),
                    count=sum(n for _, n in samples),
                    first_seen_s=min(t for t, _ in samples),
                    last_seen_s=max(t for t, _ in samples),
                )
            )
        out.sort(key=lambda p: (-p.count, p.template))
        return out[:limit]


def _entries(streams: list[Mapping[str, Any]]) -> list[tuple[int, str, dict[str, str]]]:
    """(ns, line, labels) of every entry, newest first. With the `categorize-labels` encoding flag an entry
    carries a third element {structuredMetadata, parsed}; without it (the default) those are in `stream`."""
    out = []
    for stream in streams:
        labels = {str(k): str(v) for k, v in (stream.get("stream") or {}).items()}
        for value in stream.get("values") or []:
            extra = dict(labels)
            if len(value) > 2 and isinstance(value[2], Mapping):
                for group in ("structuredMetadata", "parsed"):
                    extra.update({str(k): str(v) for k, v in (value[2].get(group) or {}).items()})
            out.append((int(value[0]), str(value[1]), extra))
    out.sort(key=lambda e: -e[0])
    return out


def _record(ts: int, line: str, labels: dict[str, str], service_label: str) -> LogRecord:
    severity = severity_name(next((labels[k] for k in SEVERITY_KEYS if labels.get(k)), None))
    trace_id = _id(labels, TRACE_KEYS, normalize_trace_id)
    span_id = _id(labels, SPAN_KEYS, normalize_span_id)
    used = {service_label, _SEVERITY_NUMBER, *SEVERITY_KEYS, *TRACE_KEYS, *SPAN_KEYS}
    return LogRecord(
        time=format_ns(ts),
        severity=severity,
        service=labels.get(service_label, ""),
        body=line,
        trace_id=trace_id,
        span_id=span_id,
        attributes={k: v for k, v in sorted(labels.items()) if k not in used},
    )


def _id(labels: Mapping[str, str], keys: tuple[str, ...], normalize: Any) -> str | None:
    raw = next((labels[k] for k in keys if labels.get(k)), None)
    if raw is None:
        return None
    try:
        return str(normalize(raw))
    except TraceDecodeError:
        return None  # a label that happens to be called trace_id but holds no id: not a trace link


def _parse_cursor(cursor: str | None, end_ns: int) -> tuple[int, int]:
    if not cursor:
        return end_ns, 0
    try:
        end_s, skip_s = cursor.split(":")
        end, skip = int(end_s), int(skip_s)
    except ValueError:
        raise SourceError(f"cursor {cursor!r} is not a Loki page cursor: pass next_cursor as given") from None
    return min(end, end_ns), max(0, skip)


def _rounded(start_ns: int, end_ns: int) -> tuple[int, int]:
    return start_ns // _ROUND_NS * _ROUND_NS, -(-end_ns // _ROUND_NS) * _ROUND_NS


def _recent() -> tuple[int, int]:
    now = time.time_ns()
    return now - 3600 * 10**9, now
