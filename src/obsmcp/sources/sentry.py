"""Sentry as an error source: `find_errors` from an organization's issues, `get_error_details` from an issue,
its latest event (stack trace, tags, breadcrumbs, trace context) and its recent events (samples, tag counts).

Endpoints are those of Sentry's published API schema (getsentry/sentry-api-schema), all organization-scoped so
one token and one base URL serve every project:

    GET /api/0/organizations/{org}/                                 region lookup, health check   (org:read)
    GET /api/0/organizations/{org}/projects/                        project slug <-> numeric id   (org:read)
    GET /api/0/organizations/{org}/issues/                          find_errors                   (event:read)
    GET /api/0/organizations/{org}/issues/{id}/                     counts, first/last seen, stats (event:read)
    GET /api/0/organizations/{org}/issues/{id}/events/latest/       stack trace, breadcrumbs, trace (event:read)
    GET /api/0/organizations/{org}/issues/{id}/events/              samples and tag counts         (event:read)

find_errors reads the latest event of its first few issues for their trace ids (an issue carries none), so
an agent can go from an error to its trace. Service names resolve to a project's slug *and* its numeric id
(the issues endpoint filters by id); the project list is cached with the metadata TTL. The environment
filter is sent only when the backend configures one.

Regions: sentry.io organizations live in a data-storage region (us.sentry.io, de.sentry.io). When the base URL
is the sentry.io apex, the source asks it once for the organization (`links.regionUrl` in the schema)
and sends everything else to that region; it follows only an https `*.sentry.io` address, so a token never
goes to a host taken from a response. A region URL or a self-hosted SENTRY_URL is used as given.

Pagination: Sentry pages with cursors in the Link header (RFC 8288 links, each with `rel`, `results="true|false"`
and `cursor="..."`, https://docs.sentry.io/api/pagination/) and counts matches in X-Hits (capped at X-Max-Hits).
find_errors asks for the caller's limit (several pages of at most 100 when the limit is larger), returns the
rel="next" cursor when it has results as the page's `next_cursor`, and X-Hits as the total; a cursor given to
`find_errors(q, cursor=...)` continues from there. The project list follows its cursor for at most
`PROJECT_PAGES` pages (a resolution failure says when that bound was hit).
"""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import structlog

from obsmcp.http import (
    BackendClient,
    BackendClientConfig,
    BackendHTTPError,
    CacheClass,
    JsonResult,
    backend_client,
)
from obsmcp.resolve import AmbiguousServiceError, ServiceNotFoundError, resolve_service
from obsmcp.sources import remote
from obsmcp.sources.base import ErrorPage, ErrorQuery, SourceError
from obsmcp.sources.config import BackendConfig
from obsmcp.timerange import format_ns
from obsmcp.tools.errors import ErrorDetails, ErrorGroup

log = structlog.get_logger("obsmcp.sources.sentry")

ID_PREFIX = "sentry:"
PAGE_MAX = 100  # Sentry's page size limit for issues, events and projects
PROJECT_PAGES = 10  # project list pages followed for slug <-> id resolution (1,000 projects)
ISSUE_PAGES = 2  # issue pages one find_errors call reads (the tools' limit is at most 200)
ISSUE_QUERY = "is:unresolved issue.category:error"  # what is broken now; performance issues are not errors
_SORT = {"count": "freq", "recent": "date", "new": "new"}
_ISSUE_ID = re.compile(r"^[0-9]{1,20}$|^[A-Za-z0-9][A-Za-z0-9-]{0,63}$")  # numeric id, or a short id (APP-1A)
_MAX_FRAMES = 30  # per exception: the most recent ones
_MAX_BREADCRUMBS = 10
_SAMPLE_EVENTS = 100
_TRACE_LOOKUPS = 5  # find_errors: latest events fetched for trace ids (one request each)
_EXPLAINED = frozenset({400, 401, 403, 404})


@dataclass(frozen=True, slots=True)
class Project:
    slug: str
    id: str
    name: str


class SentrySource:
    """An ErrorSource over one Sentry organization (sentry.io in any region, or self-hosted)."""

    kind = "sentry"
    signals: tuple[str, ...] = ("errors",)

    def __init__(
        self,
        config: BackendConfig,
        *,
        client_config: BackendClientConfig | None = None,
        region_lookup: bool | None = None,
        trust_region: Callable[[str], bool] | None = None,
    ) -> None:
        """`client_config`: the resilient client's policy (default: built from `config`); `region_lookup`: ask
        for the organization's region first (default: when the URL is the sentry.io apex); `trust_region`:
        which region URLs may receive the token (default: https `*.sentry.io`)."""
        if config.kind != "sentry" or not config.org:
            raise SourceError(f"backend {config.name} is not a Sentry backend with an org: set kind and org")
        self.config = config
        self.name = config.name
        self.org = config.org
        self.environment = config.environment
        self._client_config = client_config or remote.client_config(config)
        self._client: BackendClient = backend_client(self._client_config)
        lookup = _is_apex(self._client_config.base_url) if region_lookup is None else region_lookup
        self._region_checked = not lookup
        self._trust_region = trust_region or _is_sentry_region
        self._region_lock = asyncio.Lock()
        self._projects_truncated = False  # the last project listing stopped at PROJECT_PAGES

    @property
    def client(self) -> BackendClient:
        """The client requests go through now (the region's, once looked up)."""
        return self._client

    async def aclose(self) -> None:
        """Close the connection pool (the source is not used afterwards)."""
        await self._client.aclose()

    @property
    def base_url(self) -> str:
        """Where requests go now: the configured URL, or the organization's region once looked up."""
        return self._client.config.base_url

    # -- Source ------------------------------------------------------------------------------------------------

    async def check(self) -> None:
        await self._get(f"{self._org_path()}/", {"detailed": "0"}, what="read the organization", scope="org:read")

    async def services(self, start_ns: int, end_ns: int) -> list[str]:
        return [p.slug for p in (await self._projects())[0]]

    # -- ErrorSource -------------------------------------------------------------------------------------------

    async def find_errors(self, q: ErrorQuery, cursor: str | None = None) -> ErrorPage:
        """Issues matching `q`, from the first page or from `cursor` (a `next_cursor` this source returned)."""
        if q.sort not in _SORT:
            raise SourceError(f"sort={q.sort!r} is unknown to the Sentry source: use count, recent or new")
        if q.limit < 1:
            raise SourceError("limit must be at least 1")
        notes: list[str] = []
        want = min(q.limit, PAGE_MAX * ISSUE_PAGES)
        if q.limit > want:
            notes.append(f"one call reads at most {want} Sentry issues: showing the first {want}")
        params: list[tuple[str, str]] = [
            ("query", ISSUE_QUERY),
            ("sort", _SORT[q.sort]),
            ("start", format_ns(q.start_ns)),
            ("end", format_ns(q.end_ns)),
            ("collapse", "stats"),
        ]
        if q.service:
            project, _ = await self.resolve_project(q.service)
            params.append(("project", project.id))
        params += self._environment()
        issues: list[Any] = []
        first: JsonResult | None = None
        paging = _Paging(cursor=cursor.strip() if cursor else None, more=None)
        hits: tuple[int, bool] | None = None
        while len(issues) < want:
            page_params = [*params, ("limit", str(min(want - len(issues), PAGE_MAX)))]
            if paging.cursor:
                page_params.append(("cursor", paging.cursor))
            result = await self._get(
                f"{self._org_path()}/issues/", page_params, what="list issues", scope="event:read", cache="query"
            )
            first = first or result
            hits = hits or _hits(result.headers)  # X-Hits counts the whole query: the first page's is the figure
            batch = _list(result.data, "issues")[: want - len(issues)]
            issues += batch
            paging = next_page(result.headers.get("link"))
            if not batch or paging.more is not True:
                break
        assert first is not None  # the loop runs at least once (want >= 1)
        groups = [_group(issue) for issue in issues]
        await self._attach_traces(groups, notes)
        total, estimated = _total(hits, len(groups), paging)
        if paging.more is not None:
            more = paging.more
        elif total is not None and not estimated:
            more = total > len(groups)
        else:  # no Link header and no count: a full page may have more
            more = len(groups) == want
        if more:
            count = f"{total} issues match" if total is not None else "more issues match"
            prefix = "at least " if estimated and total is not None else ""
            notes.append(
                f"{prefix}{count}, {len(groups)} shown: narrow the time range, filter by service or sort differently"
            )
        notes.append(
            f"Sentry issues matching `{ISSUE_QUERY}`"
            + (f" in environment {self.environment}" if self.environment else "")
        )
        return ErrorPage(
            total=total,
            total_estimated=estimated,
            next_cursor=paging.cursor if paging.more else None,
            notes=notes,
            freshness=first.freshness,
            groups=groups,
        )

    async def get_error_details(self, error_id: str, start_ns: int, end_ns: int) -> ErrorDetails:
        issue_id = error_id.strip().removeprefix(ID_PREFIX)
        if not _ISSUE_ID.match(issue_id):
            raise SourceError(
                f"error_id {error_id!r} is not a Sentry issue id: use an id from find_errors (sentry:<id>)"
            )
        base = f"{self._org_path()}/issues/{quote(issue_id, safe='')}"
        env = self._environment()
        what = f"read issue {issue_id}"
        issue_r, event_r, events_r = await asyncio.gather(
            self._get(f"{base}/", env, what=what, scope="event:read", cache="query", issue=issue_id),
            self._get(
                f"{base}/events/latest/",
                env,
                what=f"read the latest event of issue {issue_id}",
                scope="event:read",
                cache="query",
                issue=issue_id,
            ),
            self._get(
                f"{base}/events/",
                [("start", format_ns(start_ns)), ("end", format_ns(end_ns)), ("per_page", str(_SAMPLE_EVENTS)), *env],
                what=f"list the events of issue {issue_id}",
                scope="event:read",
                cache="query",
                issue=issue_id,
            ),
        )
        issue, event = _dict(issue_r.data, "issue"), _dict(event_r.data, "event")
        events = _list(events_r.data, "events")
        slug = str(_obj(issue.get("project")).get("slug") or "")
        slugs = await self._slugs_by_id()
        meta = _obj(issue.get("metadata"))
        trace_id = _trace_id(event)
        # The issue endpoint takes no time range: its count and first/last seen are over the issue's life.
        notes: list[str] = ["count, first_seen and last_seen are the Sentry issue's lifetime figures"]
        count = int(issue.get("count") or 0)
        if events and count > len(events):
            notes.append(f"tag counts are over the newest {len(events)} events in range, of {count} in all")
        if not events:
            notes.append("no events of this issue in the range: the sample and tag values are the latest event's")
        samples = [_sample(e, slugs, slug) for e in events[:5]]
        if trace_id and samples and samples[0].get("event_id") == str(event.get("id") or event.get("eventID")):
            samples[0]["trace_id"] = trace_id
        for s in samples:
            s.pop("event_id", None)
        if not samples and event:
            samples = [
                {
                    "time": _time(event.get("dateCreated")),
                    "service": slug,
                    "trace_id": trace_id,
                    "message": _event_message(event),
                }
            ]
        return ErrorDetails(
            error_id=ID_PREFIX + str(issue.get("id") or issue_id),
            kind="exception" if meta.get("type") else "message",
            type=str(meta.get("type") or issue.get("type") or "error"),
            message=str(meta.get("value") or issue.get("title") or "")[:400],
            count=count,
            first_seen=_time(issue.get("firstSeen")),
            last_seen=_time(issue.get("lastSeen")),
            services=[slug] if slug else [],
            stacktrace=_stacktrace(event),
            attributes=_tag_counts(events or [event]),
            timeline=_timeline(issue.get("stats"), end_ns - start_ns),
            samples=samples,
            notes=notes + _event_notes(issue),
        )

    async def _attach_traces(self, groups: list[ErrorGroup], notes: list[str]) -> None:
        """Trace ids from the latest event of the first groups (an issue carries none itself), so an agent
        can go from an error to its trace; one event per issue, for a bounded number of issues."""
        head = groups[:_TRACE_LOOKUPS]
        if not head:
            return
        events = await asyncio.gather(*(self._latest_event(g.error_id.removeprefix(ID_PREFIX)) for g in head))
        for group, event in zip(head, events, strict=True):
            trace_id = _trace_id(event) if event is not None else ""
            if trace_id:
                group.sample_trace_ids = [trace_id]
        if len(groups) > len(head):
            notes.append(f"trace ids are given for the first {len(head)} issues: get_error_details has the others'")

    async def _latest_event(self, issue_id: str) -> dict[str, Any] | None:
        path = f"{self._org_path()}/issues/{quote(issue_id, safe='')}/events/latest/"
        try:
            result = await self._get(
                path,
                self._environment(),
                what=f"read the latest event of issue {issue_id}",
                scope="event:read",
                cache="query",
                issue=issue_id,
            )
        except SourceError as exc:
            # An issue merged or deleted since the list was fetched has no latest event: no trace id for it.
            if isinstance(exc.__cause__, BackendHTTPError) and exc.__cause__.status == 404:
                return None
            raise
        return _dict(result.data, "event")

    # -- projects ----------------------------------------------------------------------------------------------

    async def resolve_project(self, service: str) -> tuple[Project, JsonResult]:
        """A loose service name ("auth"), a slug or a numeric id -> the project (slug and id)."""
        projects, result = await self._projects()
        wanted = service.strip()
        by_id = {p.id: p for p in projects}
        if wanted in by_id:
            return by_id[wanted], result
        by_slug = {p.slug: p for p in projects}
        names = {p.name.lower(): p for p in projects}
        if wanted.lower() in names and wanted not in by_slug:
            return names[wanted.lower()], result
        try:
            slug = resolve_service(wanted, by_slug)
        except AmbiguousServiceError as exc:
            raise SourceError(f"Sentry org {self.org}: {exc}: name the project slug") from exc
        except ServiceNotFoundError as exc:
            more = (
                f" (only the first {PROJECT_PAGES} pages, {len(projects)} projects, were searched)"
                if self._projects_truncated
                else ""
            )
            raise SourceError(
                f"Sentry org {self.org} has no project matching {service!r}{more}: {exc}. Use a project slug "
                "from list_services, or check SENTRY_ORG"
            ) from exc
        return by_slug[slug], result

    async def _projects(self) -> tuple[list[Project], JsonResult]:
        """Every project of the organization, following the Link cursor for at most `PROJECT_PAGES` pages
        (each page cached with the metadata TTL); the first page's result (its freshness)."""
        projects: list[Project] = []
        first: JsonResult | None = None
        cursor: str | None = None
        for _ in range(PROJECT_PAGES):
            params = {"per_page": str(PAGE_MAX)} | ({"cursor": cursor} if cursor else {})
            result = await self._get(
                f"{self._org_path()}/projects/", params, what="list projects", scope="org:read", cache="metadata"
            )
            first = first or result
            projects += [
                Project(slug=str(p["slug"]), id=str(p["id"]), name=str(p.get("name") or p["slug"]))
                for p in _list(result.data, "projects")
                if isinstance(p, Mapping) and p.get("slug") and p.get("id") is not None
            ]
            paging = next_page(result.headers.get("link"))
            if not paging.more or not paging.cursor:
                self._projects_truncated = False
                break
            cursor = paging.cursor
        else:
            # Bounded: an organization with more projects resolves names among the first pages only.
            self._projects_truncated = True
            log.warning("sentry_projects_truncated", backend=self.name, pages=PROJECT_PAGES, projects=len(projects))
        assert first is not None  # PROJECT_PAGES >= 1
        return projects, first

    async def _slugs_by_id(self) -> dict[str, str]:
        return {p.id: p.slug for p in (await self._projects())[0]}

    # -- requests ----------------------------------------------------------------------------------------------

    def _org_path(self) -> str:
        return f"/api/0/organizations/{quote(self.org, safe='')}"

    def _environment(self) -> list[tuple[str, str]]:
        # Never a default environment: issues from every environment unless the user configured one.
        return [("environment", self.environment)] if self.environment else []

    async def _region(self) -> None:
        """Switch from the sentry.io apex to the organization's region (once)."""
        if self._region_checked:
            return
        async with self._region_lock:
            if self._region_checked:
                return
            result = await self._get(
                f"{self._org_path()}/",
                {"detailed": "0"},
                what="look up the organization's region",
                scope="org:read",
                cache="metadata",
                lookup=True,
            )
            links = _dict(result.data, "organization").get("links")
            region = str(links.get("regionUrl") or "") if isinstance(links, Mapping) else ""
            if region and region.rstrip("/") != self.base_url:
                if not self._trust_region(region):
                    raise SourceError(
                        f"Sentry ({self.name}) says organization {self.org} lives at {region[:120]}, which is not a "
                        "Sentry region (https://<region>.sentry.io): obsmcp does not send the token there; set "
                        "SENTRY_URL to your organization's region URL"
                    )
                log.info("sentry_region", backend=self.name, region=region)
                self._client = backend_client(replace(self._client_config, base_url=region.rstrip("/")))
            self._region_checked = True

    async def _get(
        self,
        path: str,
        params: Mapping[str, str] | Sequence[tuple[str, str]] | None,
        *,
        what: str,
        scope: str,
        cache: CacheClass | None = None,
        issue: str | None = None,
        lookup: bool = False,
    ) -> JsonResult:
        if not lookup:
            await self._region()
        try:
            # A token file is read at every call: a rotated secret takes effect without a restart.
            return await self._client.get_json(path, params, cache=cache, headers=remote.call_headers(self.config))
        except BackendHTTPError as exc:
            # 429 and 5xx keep the client's own error (its type and Retry-After are what a caller acts on).
            if exc.status in _EXPLAINED:
                raise SourceError(self._explain(exc, what, scope, issue)) from exc
            raise

    def _explain(self, exc: BackendHTTPError, what: str, scope: str, issue: str | None) -> str:
        head = f"Sentry ({self.name}) could not {what}: it answered {exc.status}"
        quoted = f" ({exc.excerpt})" if exc.excerpt else ""
        if exc.status == 401:
            return (
                f"{head}{quoted}: the auth token is invalid or expired: create a new token (an organization "
                f"or internal-integration token with `{scope}`) and set SENTRY_AUTH_TOKEN"
            )
        if exc.status == 403:
            return (
                f"{head}{quoted}: the auth token lacks the `{scope}` scope (or access to this project): "
                f"create a token with `{scope}` and set SENTRY_AUTH_TOKEN"
            )
        if exc.status == 404:
            if issue is not None:
                return f"{head}: no issue {issue} in organization {self.org}: use an error_id from find_errors"
            return (
                f"{head}: organization {self.org!r} was not found at {self._client.config.display_url}: "
                "set SENTRY_ORG to the organization slug (as in your Sentry URL), and SENTRY_URL to your "
                "self-hosted Sentry or region (https://us.sentry.io, https://de.sentry.io) if it is not sentry.io"
            )
        return f"{head}: Sentry rejected the request{quoted}: check the time range and the service"


def from_config(cfg: BackendConfig) -> SentrySource:
    """The Sentry source of a `[[backends]]` table (or SENTRY_AUTH_TOKEN / SENTRY_ORG / SENTRY_URL)."""
    return SentrySource(cfg)


# -- paging (pure) -------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Link:
    """One link of a Link header: its target and its parameters (names lowercased, values unquoted)."""

    url: str
    params: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class _Paging:
    """Where the next page starts; `more` is None when the answer said nothing (no Link header or no next)."""

    cursor: str | None
    more: bool | None


def parse_link_header(value: str | None) -> list[Link]:
    """The links of an RFC 8288 Link header: `<url>; name=token; name="quoted, \\"escaped\\"", <url2>; ...`.
    Commas inside `<...>` or quotes do not split links; a malformed link is skipped up to the next comma."""
    links: list[Link] = []
    text, i, n = value or "", 0, len(value or "")
    while i < n:
        while i < n and text[i] in " \t,":
            i += 1
        if i >= n:
            break
        if text[i] != "<" or (close := text.find(">", i)) < 0:
            i = _skip_link(text, i)
            continue
        url, i = text[i + 1 : close].strip(), close + 1
        params: dict[str, str] = {}
        while True:
            while i < n and text[i] in " \t":
                i += 1
            if i >= n or text[i] != ";":
                break
            i += 1
            while i < n and text[i] in " \t":
                i += 1
            name_start = i
            while i < n and text[i] not in "=;, \t":
                i += 1
            name = text[name_start:i].lower()
            while i < n and text[i] in " \t":
                i += 1
            val = ""
            if i < n and text[i] == "=":
                i += 1
                while i < n and text[i] in " \t":
                    i += 1
                if i < n and text[i] == '"':
                    val, i = _quoted(text, i)
                else:
                    val_start = i
                    while i < n and text[i] not in ";,":
                        i += 1
                    val = text[val_start:i].strip()
            if name and name not in params:  # RFC 8288: occurrences after the first are ignored
                params[name] = val
        links.append(Link(url, params))
        if i < n and text[i] != ",":
            i = _skip_link(text, i)
    return links


def _quoted(text: str, i: int) -> tuple[str, int]:
    """The quoted string starting at text[i] == '"', unescaped, and the index after its closing quote (or the
    end of the text when it is unterminated)."""
    out: list[str] = []
    i += 1
    while i < len(text):
        c = text[i]
        if c == "\\" and i + 1 < len(text):
            out.append(text[i + 1])
            i += 2
        elif c == '"':
            return "".join(out), i + 1
        else:
            out.append(c)
            i += 1
    return "".join(out), i


def _skip_link(text: str, i: int) -> int:
    """The index of the next comma outside quotes and angle brackets (the end of a malformed link)."""
    quoted = angled = False
    while i < len(text):
        c = text[i]
        if quoted:
            if c == "\\":
                i += 1
            elif c == '"':
                quoted = False
        elif c == '"':
            quoted = True
        elif c == "<":
            angled = True
        elif c == ">":
            angled = False
        elif c == "," and not angled:
            return i + 1
        i += 1
    return i


def next_page(link_header: str | None) -> _Paging:
    """Sentry's next page from its Link header: the rel="next" link's `cursor` (or the `cursor` of its URL when
    the attribute is missing, as in older Sentry), and whether it has results (`results="false"`: the end;
    no `results` attribute: a next link with a cursor is taken to have some)."""
    for link in parse_link_header(link_header):
        if "next" not in link.params.get("rel", "").lower().split():
            continue
        cursor = link.params.get("cursor") or next(iter(parse_qs(urlsplit(link.url).query).get("cursor", [])), "")
        results = link.params.get("results", "").lower()
        if results == "false":
            return _Paging(cursor=cursor or None, more=False)
        return _Paging(cursor=cursor or None, more=bool(cursor))
    return _Paging(cursor=None, more=None)


def _hits(headers: Mapping[str, str]) -> tuple[int, bool] | None:
    """X-Hits as (count, capped): Sentry stops counting at X-Max-Hits, so a count there is a lower bound."""
    raw = headers.get("x-hits", "").strip()
    if not raw.isdigit():
        return None
    hits, cap = int(raw), headers.get("x-max-hits", "").strip()
    return hits, cap.isdigit() and hits >= int(cap)


def _total(hits: tuple[int, bool] | None, shown: int, paging: _Paging) -> tuple[int | None, bool]:
    """The page's total and whether it is a lower bound: X-Hits when sent, else exact only when the answer
    says there is no next page."""
    if hits is not None:
        count, capped = hits
        return max(count, shown), capped
    if paging.more is False:
        return shown, False
    return None, True


# -- mapping (pure) ------------------------------------------------------------------------------------------


def _is_apex(url: str) -> bool:
    return (urlsplit(url).hostname or "").lower() == "sentry.io"


def _is_sentry_region(url: str) -> bool:
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    return parts.scheme == "https" and host.endswith(".sentry.io") and not parts.path.strip("/")


def _time(value: Any) -> str:
    """Sentry's ISO-8601 timestamps in obsmcp's form (UTC, milliseconds)."""
    if not isinstance(value, str) or not value:
        return ""
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return value
    return format_ns(int(dt.timestamp() * 1_000_000) * 1000)


def _list(data: Any, what: str) -> list[Any]:
    if not isinstance(data, list):
        raise SourceError(
            f"Sentry answered the {what} request with {type(data).__name__}, not a list: check SENTRY_URL"
        )
    return data


def _obj(value: Any) -> Mapping[str, Any]:
    """A JSON object, or an empty one for null or a value of another type (optional fields)."""
    return value if isinstance(value, Mapping) else {}


def _dict(data: Any, what: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise SourceError(f"Sentry answered the {what} request with {type(data).__name__}, not an object")
    return data


def _group(issue: Mapping[str, Any]) -> ErrorGroup:
    meta, project = _obj(issue.get("metadata")), _obj(issue.get("project"))
    filename, function = str(meta.get("filename") or ""), str(meta.get("function") or "")
    frame = f"{filename.rsplit('/', 1)[-1]} in {function}" if filename and function else str(issue.get("culprit") or "")
    return ErrorGroup(
        error_id=ID_PREFIX + str(issue.get("id")),
        kind="exception" if meta.get("type") else "message",
        type=str(meta.get("type") or issue.get("type") or "error"),
        message=str(meta.get("value") or meta.get("title") or issue.get("title") or "")[:200],
        top_frame=frame,
        count=int(issue.get("count") or 0),
        first_seen=_time(issue.get("firstSeen")),
        last_seen=_time(issue.get("lastSeen")),
        services=[str(project["slug"])] if project.get("slug") else [],
        operations=[],
        sample_trace_ids=[],
    )


def _trace_id(event: Mapping[str, Any]) -> str:
    contexts = event.get("contexts")
    trace = contexts.get("trace") if isinstance(contexts, Mapping) else None
    return str(trace.get("trace_id") or "") if isinstance(trace, Mapping) else ""


def _entries(event: Mapping[str, Any], kind: str) -> list[Mapping[str, Any]]:
    out: list[Mapping[str, Any]] = []
    for entry in event.get("entries") or []:
        if isinstance(entry, Mapping) and entry.get("type") == kind:
            values = (entry.get("data") or {}).get("values") or []
            out += [v for v in values if isinstance(v, Mapping)]
    return out


def _stacktrace(event: Mapping[str, Any]) -> str:
    """The latest event's exceptions (chain order, most recent call last) and its last breadcrumbs."""
    lines: list[str] = []
    for exc in _entries(event, "exception"):
        lines.append(f"{exc.get('type') or 'Error'}: {exc.get('value') or ''}".rstrip())
        frames = [f for f in ((exc.get("stacktrace") or {}).get("frames") or []) if isinstance(f, Mapping)]
        if len(frames) > _MAX_FRAMES:
            lines.append(f"  ... {len(frames) - _MAX_FRAMES} older frames not shown")
        for f in frames[-_MAX_FRAMES:]:
            where = f.get("filename") or f.get("absPath") or f.get("module") or "?"
            app = "" if f.get("inApp") else " (library)"
            lines.append(
                f'  File "{where}", line {f.get("lineNo") or "?"}, in {f.get("function") or "<anonymous>"}{app}'
            )
    crumbs = _entries(event, "breadcrumbs")[-_MAX_BREADCRUMBS:]
    if crumbs:
        lines.append(f"breadcrumbs (last {len(crumbs)}, oldest first):")
        for c in crumbs:
            data = _obj(c.get("data"))
            text = c.get("message") or " ".join(str(data[k]) for k in ("method", "url", "status_code") if k in data)
            lines.append(
                f"  {_time(c.get('timestamp'))} [{c.get('category') or c.get('type') or ''}] {text or ''}".rstrip()
            )
    return "\n".join(lines)


def _tag_counts(events: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, int]]:
    counts: dict[str, Counter[str]] = {}
    for e in events:
        for tag in e.get("tags") or []:
            if isinstance(tag, Mapping) and tag.get("key"):
                counts.setdefault(str(tag["key"]), Counter())[str(tag.get("value"))] += 1
    ranked = sorted(counts.items(), key=lambda kv: -sum(kv[1].values()))[:15]
    return {k: dict(c.most_common(5)) for k, c in ranked}


def _event_message(e: Mapping[str, Any]) -> str:
    meta = _obj(e.get("metadata"))
    return str(e.get("message") or meta.get("value") or e.get("title") or "")[:200]


def _sample(e: Mapping[str, Any], slugs: Mapping[str, str], default_slug: str) -> dict[str, str]:
    tags = {str(t.get("key")): str(t.get("value")) for t in e.get("tags") or [] if isinstance(t, Mapping)}
    return {
        "time": _time(e.get("dateCreated")),
        "service": slugs.get(str(e.get("projectID")), default_slug),
        "trace_id": tags.get("trace", ""),
        "message": _event_message(e),
        "event_id": str(e.get("id") or e.get("eventID") or ""),
    }


def _timeline(stats: Any, range_ns: int) -> list[dict[str, Any]]:
    """The issue's own event counts: hourly over 24 h for short ranges, daily over 30 days otherwise."""
    if not isinstance(stats, Mapping):
        return []
    key = "24h" if range_ns <= 24 * 3600 * 10**9 and stats.get("24h") else "30d"
    points = stats.get(key) or stats.get("24h") or []
    return [
        {"start": format_ns(int(p[0]) * 10**9), "count": int(p[1])}
        for p in points
        if isinstance(p, Sequence) and len(p) >= 2
    ]


def _event_notes(issue: Mapping[str, Any]) -> list[str]:
    out = []
    if issue.get("shortId"):
        out.append(f"Sentry issue {issue['shortId']}" + (f": {issue['permalink']}" if issue.get("permalink") else ""))
    if issue.get("status"):
        out.append(f"status: {issue['status']}")
    return out
