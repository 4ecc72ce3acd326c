"""Signal protocols: what a remote backend implements so that the same tools answer from it.

A source declares the signals it serves by implementing small async protocols that take typed query objects
and return typed pages (DESIGN.md "Signal protocols"). The records inside a page are the tools' own answer
models (LogRecord, TraceSummary, MetricInfo, Series, ErrorGroup, ...), so a tool renders, budgets, fences and
redacts a remote answer exactly as it does one from the store: only the fetching differs.

Sources make every remote call through `obsmcp.http.BackendClient` (timeouts, retries, breaker, cache, rate
limit), and fill `freshness` ("cached, N s old") from its results. Service names in queries are the canonical
names *of that backend* (see `services()`); the resolver maps a user's loose name to each backend's own.

Times are UTC nanoseconds; durations in the records follow the tools' units.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from obsmcp.model import Span
    from obsmcp.tools.errors import ErrorDetails, ErrorGroup
    from obsmcp.tools.logs import LogRecord
    from obsmcp.tools.metrics import MetricInfo, Series
    from obsmcp.tools.traces import TraceSummary


class SourceError(RuntimeError):
    """A source could not answer; the message says what failed and what to do (it reaches the agent as is)."""


class UnsupportedQuery(SourceError):
    """The backend cannot express this query (e.g. a regex filter Sentry has no syntax for); say which part."""


# -- queries ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LogQuery:
    start_ns: int
    end_ns: int
    service: str | None = None
    text: str | None = None  # substring of the body (or a regex when regex=True)
    regex: bool = False
    min_severity: int | None = None  # OTel severity number floor (9 info, 13 warn, 17 error)
    trace_id: str | None = None
    attributes: Mapping[str, str] = field(default_factory=dict)
    limit: int = 50
    cursor: str | None = None  # the backend's own page token, when it has one


@dataclass(frozen=True)
class TraceQuery:
    start_ns: int
    end_ns: int
    service: str | None = None
    operation: str | None = None
    min_duration_ms: float | None = None
    max_duration_ms: float | None = None
    status: str | None = None  # error | ok | unset
    attributes: Mapping[str, str] = field(default_factory=dict)
    limit: int = 20
    cursor: str | None = None


@dataclass(frozen=True)
class MetricQuery:
    start_ns: int
    end_ns: int
    name: str | None = None  # metric name (None when `raw` carries the whole query)
    service: str | None = None
    aggregation: str = "avg"  # avg sum min max rate increase p50 p90 p95 p99 count
    step_s: int = 60
    group_by: tuple[str, ...] = ()
    attributes: Mapping[str, str] = field(default_factory=dict)
    raw: str | None = None  # the backend's own query language (PromQL, Datadog metrics query)


@dataclass(frozen=True)
class ErrorQuery:
    start_ns: int
    end_ns: int
    service: str | None = None
    sort: str = "count"  # count | recent | new
    limit: int = 20


# -- pages --------------------------------------------------------------------------------------------------


@dataclass
class Page:
    """What every answer carries besides its records."""

    total: int | None = None  # matches in range; None when the backend does not say
    total_estimated: bool = False
    next_cursor: str | None = None  # the backend's page token for the next page
    notes: list[str] = field(default_factory=list)
    freshness: str | None = None  # "cached, 12 s old" when served from the client's cache


@dataclass
class LogPage(Page):
    records: list[LogRecord] = field(default_factory=list)
    by_severity: dict[str, int] = field(default_factory=dict)


@dataclass
class TracePage(Page):
    traces: list[TraceSummary] = field(default_factory=list)


@dataclass
class MetricsList(Page):
    metrics: list[MetricInfo] = field(default_factory=list)


@dataclass
class SeriesPage(Page):
    series: list[Series] = field(default_factory=list)
    query: str | None = None  # the backend query that was run (e.g. the PromQL), shown to the agent
    step_s: int | None = None


@dataclass
class ErrorPage(Page):
    groups: list[ErrorGroup] = field(default_factory=list)


# -- protocols ----------------------------------------------------------------------------------------------


@runtime_checkable
class Source(Protocol):
    """What every source has: its instance name and kind, the signals it serves, a health probe and the
    service names it knows (for cross-backend resolution)."""

    name: str
    kind: str
    signals: tuple[str, ...]

    async def check(self) -> None:
        """Raise obsmcp.http.BackendError (or SourceError) when the backend cannot serve; cheap."""
        ...

    async def services(self, start_ns: int, end_ns: int) -> list[str]:
        """Service names as this backend spells them (Prometheus job/service, Sentry project slugs, ...)."""
        ...


@runtime_checkable
class LogSource(Source, Protocol):
    async def search_logs(self, q: LogQuery) -> LogPage: ...


@runtime_checkable
class TraceSource(Source, Protocol):
    async def search_traces(self, q: TraceQuery) -> TracePage: ...

    async def get_trace(self, trace_id: str) -> list[Span]: ...


@runtime_checkable
class MetricSource(Source, Protocol):
    async def list_metrics(self, filter: str | None, service: str | None) -> MetricsList: ...

    async def query_metrics(self, q: MetricQuery) -> SeriesPage: ...


@runtime_checkable
class ErrorSource(Source, Protocol):
    async def find_errors(self, q: ErrorQuery) -> ErrorPage: ...

    async def get_error_details(self, error_id: str, start_ns: int, end_ns: int) -> ErrorDetails: ...
