"""The Sentry error source against a Sentry-shaped server on loopback (recorded response shapes), with every
request it sends validated against Sentry's published API schema (tests/sentry_server.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from mcp import Client

from obsmcp.http import BackendRateLimited, RetryPolicy, close_all
from obsmcp.sources import sentry
from obsmcp.sources.base import ErrorQuery, ErrorSource, SourceError
from obsmcp.sources.config import BackendConfig
from obsmcp.timerange import now_ns
from tests.conftest import call_tool
from tests.faulty_backend import Reply
from tests.sentry_server import ORG, SentryBackend, recorded, scopes, validate_response
from tests.test_remote_tools import sentry_backend, serving

pytestmark = pytest.mark.anyio
HOUR_NS = 3600 * 10**9
TOKEN = "sntrys_test_token_value_1234567890"


@pytest.fixture(scope="module", autouse=True)
def _stop_client_loop() -> Iterator[None]:
    yield
    close_all()


@pytest.fixture
def backend() -> Iterator[SentryBackend]:
    with SentryBackend() as b:
        b.serve_recorded()
        yield b


def make_source(url: str, **extra: Any) -> sentry.SentrySource:
    cfg = BackendConfig(name="sentry-test", kind="sentry", url=url, org=ORG, token=TOKEN, **extra)
    return sentry.from_config(cfg)


@pytest.fixture
async def source(backend: SentryBackend) -> AsyncIterator[sentry.SentrySource]:
    s = make_source(backend.url)
    yield s
    await s.aclose()


def query(**kw: Any) -> ErrorQuery:
    end = now_ns()
    return ErrorQuery(start_ns=end - 24 * HOUR_NS, end_ns=end, **kw)


def params(backend: SentryBackend, tail: str) -> list[tuple[str, str]]:
    seen = backend.server.seen(backend.path(tail))
    assert seen, f"no request to {tail}"
    return seen[-1].query


# -- the recorded shapes are the schema's shapes ----------------------------------------------------------------


def test_recorded_responses_match_the_published_schema() -> None:
    for operation, name in [
        ("getOrganization", "organization"),
        ("listOrganizationProjects", "projects"),
        ("listOrganizationIssues", "issues"),
        ("getOrganizationIssue", "issue"),
        ("getOrganizationIssueEvent", "event_latest"),
        ("listOrganizationIssueEvents", "issue_events"),
    ]:
        validate_response(operation, recorded(name))


# -- find_errors ----------------------------------------------------------------------------------------------------


async def test_find_errors_maps_issues_into_error_groups(source: sentry.SentrySource, backend: SentryBackend) -> None:
    assert isinstance(source, ErrorSource)
    page = await source.find_errors(query(service="auth"))
    assert [g.error_id for g in page.groups] == ["sentry:6001", "sentry:6002"]
    first, second = page.groups
    assert (first.type, first.message, first.count) == ("TokenExpiredError", "token for user 8812 expired", 1432)
    assert first.top_frame == "tokens.py in verify"
    assert second.top_frame == "POST /login"  # no frame in the metadata: Sentry's culprit
    assert first.services == ["hub-ca-auth"]
    assert (first.first_seen, first.last_seen) == ("2026-11-20T09:12:03.114Z", "2026-11-21T04:58:41.902Z")
    assert page.total == 2 and not page.total_estimated
    # Trace ids come from each issue's latest event (trace context); an issue without one has none.
    assert first.sample_trace_ids == ["4bf92f3577b34da6a3ce929d0e0e4736"] and second.sample_trace_ids == []
    assert backend.validated() == [
        "listOrganizationProjects",
        "listOrganizationIssues",
        "getOrganizationIssueEvent",
        "getOrganizationIssueEvent",
    ]


async def test_service_name_resolves_to_project_slug_and_numeric_id(
    source: sentry.SentrySource, backend: SentryBackend
) -> None:
    project, _ = await source.resolve_project("auth")
    assert (project.slug, project.id) == ("hub-ca-auth", "4501")
    assert (await source.resolve_project("4502"))[0].slug == "hub-ca-payments"
    assert (await source.resolve_project("Hub CA Web"))[0].id == "4503"
    await source.find_errors(query(service="auth"))
    # The issues endpoint is filtered by the numeric id; the project list came from the metadata cache.
    assert ("project", "4501") in params(backend, "issues/")
    assert backend.server.count(backend.path("projects/")) == 1
    assert await source.services(0, now_ns()) == ["hub-ca-auth", "hub-ca-payments", "hub-ca-web"]


async def test_unknown_or_ambiguous_service_says_which_projects_exist(source: sentry.SentrySource) -> None:
    with pytest.raises(SourceError, match=r"no project matching 'billing'.*SENTRY_ORG"):
        await source.find_errors(query(service="billing"))
    with pytest.raises(SourceError, match="hub-ca-auth"):
        await source.resolve_project("hub-ca")


async def test_environment_filter_is_sent_only_when_configured(backend: SentryBackend) -> None:
    plain = make_source(backend.url)
    await plain.find_errors(query())
    await plain.get_error_details("sentry:6001", *_range())
    assert not [s for s in backend.requests() if any(k == "environment" for k, _ in s.query)]
    prod = make_source(backend.url, environment="production", query_cache_ttl_s=0)
    await prod.find_errors(query())
    await prod.get_error_details("sentry:6001", *_range())
    for tail in ("issues/", "issues/6001/", "issues/6001/events/latest/", "issues/6001/events/"):
        assert ("environment", "production") in params(backend, tail), tail
    backend.validated()
    await prod.aclose()


async def test_sort_and_time_range_map_to_sentry_parameters(
    source: sentry.SentrySource, backend: SentryBackend
) -> None:
    q = query(sort="new")
    await source.find_errors(q)
    sent = dict(params(backend, "issues/"))
    assert sent["sort"] == "new" and sent["query"] == "is:unresolved issue.category:error"
    assert sent["start"].endswith("Z") and sent["end"].endswith("Z")
    await source.find_errors(query(sort="recent", limit=5))
    assert dict(params(backend, "issues/"))["sort"] == "date"
    assert dict(params(backend, "issues/"))["limit"] == "5"  # as asked: the Link header says whether there are more
    backend.validated()
    with pytest.raises(SourceError, match="sort='loudest'"):
        await source.find_errors(query(sort="loudest"))


def _issues(n: int, first_id: int = 7000) -> list[dict[str, Any]]:
    """`n` issues of the recorded shape with distinct ids."""
    template = recorded("issues")[0]
    return [template | {"id": str(first_id + k), "shortId": f"HUB-CA-AUTH-{first_id + k}"} for k in range(n)]


async def test_more_issues_than_the_limit_give_the_total_and_a_cursor_to_the_next_page(
    source: sentry.SentrySource, backend: SentryBackend
) -> None:
    issues = recorded("issues")
    backend.answer(
        "issues/",
        Reply(200, issues[:1], backend.paging("issues/", next_cursor="1732160000000:0:0", more=True, hits=2)),
        Reply(200, issues[1:], backend.paging("issues/", next_cursor="1732150000000:0:0", more=False, hits=2)),
    )
    page = await source.find_errors(query(limit=1))
    assert [g.error_id for g in page.groups] == ["sentry:6001"]
    assert (page.total, page.total_estimated, page.next_cursor) == (2, False, "1732160000000:0:0")
    assert any("2 issues match, 1 shown" in n for n in page.notes)
    # The cursor continues where the first page stopped, with the same query.
    page = await source.find_errors(query(limit=1), cursor=page.next_cursor)
    sent = params(backend, "issues/")
    assert ("cursor", "1732160000000:0:0") in sent and ("limit", "1") in sent
    assert [g.error_id for g in page.groups] == ["sentry:6002"] and page.next_cursor is None
    assert not any("shown" in n for n in page.notes)
    backend.validated()


async def test_a_limit_beyond_sentrys_page_size_follows_the_cursor(
    source: sentry.SentrySource, backend: SentryBackend
) -> None:
    backend.answer(
        "issues/",
        Reply(200, _issues(100), backend.paging("issues/", next_cursor="0:100:0", more=True, hits=1000)),
        Reply(200, _issues(50, 7100), backend.paging("issues/", next_cursor="0:150:0", more=True, hits=1000)),
        then=Reply(200, _issues(100), backend.paging("issues/", more=True, hits=1000)),
    )
    page = await source.find_errors(query(limit=150))
    first, second = backend.server.seen(backend.path("issues/"))
    assert ("limit", "100") in first.query and not any(k == "cursor" for k, _ in first.query)
    assert ("limit", "50") in second.query and ("cursor", "0:100:0") in second.query
    assert len(page.groups) == 150 and page.groups[-1].error_id == "sentry:7149"
    assert (page.total, page.next_cursor) == (1000, "0:150:0")
    assert any("1000 issues match, 150 shown" in n for n in page.notes)
    # Beyond what one call reads: the page says so.
    page = await source.find_errors(query(limit=250))
    assert len(page.groups) == 200 and any("at most 200 Sentry issues" in n for n in page.notes)
    backend.validated()


async def test_a_count_at_x_max_hits_is_a_lower_bound(source: sentry.SentrySource, backend: SentryBackend) -> None:
    headers = backend.paging("issues/", more=True, hits=1000) | {"X-Max-Hits": "1000"}
    backend.answer("issues/", Reply(200, _issues(3), headers))
    page = await source.find_errors(query(limit=3))
    assert (page.total, page.total_estimated) == (1000, True)
    assert any("at least 1000 issues match, 3 shown" in n for n in page.notes)


async def test_without_paging_headers_a_full_page_says_more_may_match(
    source: sentry.SentrySource, backend: SentryBackend
) -> None:
    # A proxy that strips headers, or a Sentry-compatible server that sends none.
    backend.answer("issues/", Reply(200, _issues(3)))
    page = await source.find_errors(query(limit=3))
    assert (page.total, page.total_estimated, page.next_cursor) == (None, True, None)
    assert any("more issues match, 3 shown" in n for n in page.notes)
    backend.answer("issues/", Reply(200, _issues(2)))
    page = await source.find_errors(query(limit=3, sort="new"))
    assert page.total is None and not any("shown" in n for n in page.notes)


async def test_the_find_errors_tool_tells_the_agent_how_many_issues_match(
    backend: SentryBackend, tmp_path: Path
) -> None:
    # Through the MCP tool: the agent sees Sentry's X-Hits count, not just the page it got.
    backend.answer("issues/", then=Reply(200, _issues(3), backend.paging("issues/", more=True, hits=40)))
    cfg = sentry_backend(backend)
    with serving(tmp_path, cfg) as rt:
        async with Client(rt.mcp) as client:
            r = await call_tool(client, "find_errors", {"start": "24h", "limit": 3, "backend": cfg["name"]})
    out = r.structured_content
    assert (out["total"], out["returned"], out["truncated"]) == (40, 3, True)
    assert any("40 issues match, 3 shown" in n for n in out["notes"])
    assert "37 more groups not shown" in r.content[0].text
    backend.validated()


# -- projects beyond the first page --------------------------------------------------------------------------------


def _projects(first_id: int, n: int) -> list[dict[str, Any]]:
    template = recorded("projects")[0]
    return [
        template | {"id": str(first_id + k), "slug": f"svc-{first_id + k}", "name": f"svc-{first_id + k}"}
        for k in range(n)
    ]


async def test_project_resolution_follows_the_link_cursor_past_the_first_100(backend: SentryBackend) -> None:
    backend.answer(
        "projects/",
        Reply(200, _projects(1000, 100), backend.paging("projects/", next_cursor="100:1:0", more=True)),
        Reply(200, _projects(1100, 100), backend.paging("projects/", next_cursor="100:2:0", more=True)),
        Reply(200, _projects(1200, 7), backend.paging("projects/", next_cursor="100:3:0", more=False)),
    )
    s = make_source(backend.url)
    project, _ = await s.resolve_project("svc-1205")
    assert project.id == "1205"
    cursors = [dict(r.query).get("cursor") for r in backend.server.seen(backend.path("projects/"))]
    assert cursors == [None, "100:1:0", "100:2:0"]
    await s.find_errors(query(service="svc-1205"))
    assert ("project", "1205") in params(backend, "issues/")
    assert backend.server.count(backend.path("projects/")) == 3  # every page came from the metadata cache
    backend.validated()
    await s.aclose()


async def test_project_listing_stops_at_its_page_bound_and_says_so(backend: SentryBackend) -> None:
    pages = [
        Reply(200, _projects(1000 + 100 * k, 100), backend.paging("projects/", next_cursor=f"100:{k + 1}:0", more=True))
        for k in range(sentry.PROJECT_PAGES + 2)
    ]
    backend.answer("projects/", *pages)
    s = make_source(backend.url)
    with pytest.raises(SourceError, match=r"only the first 10 pages, 1000 projects, were searched"):
        await s.resolve_project("svc-2050")  # on page 11
    assert backend.server.count(backend.path("projects/")) == sentry.PROJECT_PAGES
    backend.validated()
    await s.aclose()


# -- the Link header as Sentry sends it ------------------------------------------------------------------------------

# From https://docs.sentry.io/api/pagination/ (tests/data/vendor/sentry/headers.md).
DOCS_LINK = (
    '<https://sentry.io/api/0/organizations/acme/issues/123456/events/?&cursor=0:0:1>; rel="previous"; '
    'results="false"; cursor="0:0:1", <https://sentry.io/api/0/organizations/acme/issues/123456/events/'
    '?&cursor=0:100:0>; rel="next"; results="true"; cursor="0:100:0"'
)


def test_link_header_from_sentrys_docs() -> None:
    links = sentry.parse_link_header(DOCS_LINK)
    assert [(link.params["rel"], link.params["results"], link.params["cursor"]) for link in links] == [
        ("previous", "false", "0:0:1"),
        ("next", "true", "0:100:0"),
    ]
    assert links[1].url == "https://sentry.io/api/0/organizations/acme/issues/123456/events/?&cursor=0:100:0"
    assert sentry.next_page(DOCS_LINK) == sentry._Paging(cursor="0:100:0", more=True)
    last = DOCS_LINK.replace('results="true"', 'results="false"')
    assert sentry.next_page(last).more is False and sentry.next_page(last).cursor == "0:100:0"


def test_link_header_variants_are_read_robustly() -> None:
    # Older Sentry: no cursor attribute, the cursor is in the URL.
    old = (
        '<https://s.example/api/0/x/?&cursor=0:0:1>; rel="previous"; results="false", '
        '<https://s.example/api/0/x/?query=a%2Cb&cursor=0:25:0>; rel="next"; results="true"'
    )
    assert sentry.next_page(old) == sentry._Paging(cursor="0:25:0", more=True)
    # Unquoted tokens, other case, extra whitespace, a comma and escaped quotes inside quoted values, several rels.
    odd = (
        '<https://s.example/a?x=1,2>;REL=next ;Results=TRUE; title="a, \\"b\\"";cursor=c:1:0 ,'
        '<https://s.example/b>; rel="prev start"'
    )
    links = sentry.parse_link_header(odd)
    assert [link.url for link in links] == ["https://s.example/a?x=1,2", "https://s.example/b"]
    assert links[0].params == {"rel": "next", "results": "TRUE", "title": 'a, "b"', "cursor": "c:1:0"}
    assert sentry.next_page(odd) == sentry._Paging(cursor="c:1:0", more=True)
    assert sentry.next_page('<https://s.example/a>; rel="alternate next"; cursor="z"').cursor == "z"
    # Missing pieces: no next link, a next link with no cursor at all, no results attribute, garbage.
    assert sentry.next_page(DOCS_LINK.split(", <")[0]) == sentry._Paging(cursor=None, more=None)
    assert sentry.next_page('<https://s.example/a>; rel="next"; results="true"') == sentry._Paging(None, False)
    assert sentry.next_page('<https://s.example/a>; rel="next"; cursor="k"') == sentry._Paging("k", True)
    assert sentry.next_page(None) == sentry.next_page("") == sentry._Paging(None, None)
    junk = 'garbage, "quoted, comma", <https://s.example/n>; rel=next; cursor="n:1:0"; results="true"'
    assert sentry.next_page(junk) == sentry._Paging("n:1:0", True)
    assert sentry.parse_link_header('<https://s.example/unterminated; rel="next"') == []
    assert sentry.parse_link_header('<https://s.example/q>; rel="next"; cursor="open')[0].params["cursor"] == "open"


# -- get_error_details --------------------------------------------------------------------------------------------


def _range() -> tuple[int, int]:
    end = now_ns()
    return end - 24 * HOUR_NS, end


async def test_error_details_carry_stack_trace_tags_breadcrumbs_and_trace(
    source: sentry.SentrySource, backend: SentryBackend
) -> None:
    d = await source.get_error_details("sentry:6001", *_range())
    assert (d.error_id, d.type, d.count, d.services) == ("sentry:6001", "TokenExpiredError", 1432, ["hub-ca-auth"])
    lines = d.stacktrace.splitlines()
    assert lines[0] == "TokenExpiredError: token for user 8812 expired"
    frames = [ln for ln in lines if ln.lstrip().startswith("File ")]
    assert frames == [
        '  File "flask/app.py", line 1823, in handle (library)',
        '  File "auth/views.py", line 57, in login',
        '  File "auth/tokens.py", line 112, in verify',
    ]
    assert "breadcrumbs (last 2, oldest first):" in lines
    assert any("[auth] token refresh failed" in ln for ln in lines)
    assert any("POST /login 401" in ln for ln in lines)
    assert d.attributes["environment"] == {"production": 2, "staging": 1}
    assert d.attributes["release"] == {"auth@2.14.0": 2, "auth@2.13.2": 1}
    assert d.samples[0]["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"  # the latest event's trace context
    assert [s["service"] for s in d.samples] == ["hub-ca-auth"] * 3
    assert len(d.timeline) == 24 and sum(b["count"] for b in d.timeline) == 1531
    assert any("HUB-CA-AUTH-1" in n for n in d.notes)
    assert sorted(backend.validated()) == sorted(
        ["getOrganizationIssue", "getOrganizationIssueEvent", "listOrganizationIssueEvents", "listOrganizationProjects"]
    )
    assert ("per_page", "100") in params(backend, "issues/6001/events/")


async def test_error_ids_that_are_not_sentry_issue_ids_are_refused_before_any_request(
    source: sentry.SentrySource, backend: SentryBackend
) -> None:
    for bad in ("sentry:../../projects", "sentry:6001?x=1", "sentry:"):
        with pytest.raises(SourceError, match="not a Sentry issue id"):
            await source.get_error_details(bad, *_range())
    assert backend.requests() == []


async def test_unknown_issue_says_to_use_an_id_from_find_errors(
    source: sentry.SentrySource, backend: SentryBackend
) -> None:
    for tail in ("issues/999/", "issues/999/events/latest/", "issues/999/events/"):
        backend.answer(tail, then=Reply(404, {"detail": "The requested resource does not exist"}))
    with pytest.raises(SourceError, match="no issue 999 in organization hub-ca: use an error_id from find_errors"):
        await source.get_error_details("sentry:999", *_range())


# -- errors that say what to do -----------------------------------------------------------------------------------


async def test_401_says_the_token_is_invalid(source: sentry.SentrySource, backend: SentryBackend) -> None:
    backend.answer("issues/", then=Reply(401, {"detail": "Invalid token"}))
    with pytest.raises(SourceError, match=r"answered 401 .*invalid or expired.*SENTRY_AUTH_TOKEN") as info:
        await source.find_errors(query())
    assert TOKEN not in str(info.value)


@pytest.mark.parametrize(
    ("tail", "operation", "call"),
    [
        ("issues/", "listOrganizationIssues", "find"),
        ("projects/", "listOrganizationProjects", "find_service"),
        ("issues/6001/events/latest/", "getOrganizationIssueEvent", "details"),
    ],
)
async def test_403_names_the_scope_the_schema_requires(
    source: sentry.SentrySource, backend: SentryBackend, tail: str, operation: str, call: str
) -> None:
    backend.answer(tail, then=Reply(403, {"detail": "You do not have permission to perform this action."}))
    with pytest.raises(SourceError, match="answered 403") as info:
        if call == "details":
            await source.get_error_details("sentry:6001", *_range())
        else:
            await source.find_errors(query(service="auth" if call == "find_service" else None))
    read_scope = next(s for s in scopes(operation) if s.endswith(":read"))
    assert f"lacks the `{read_scope}` scope" in str(info.value)
    assert "SENTRY_AUTH_TOKEN" in str(info.value)


async def test_404_for_the_organization_names_sentry_org(backend: SentryBackend) -> None:
    with SentryBackend(org="no-such-org") as other:
        other.answer("issues/", then=Reply(404, {"detail": "The requested resource does not exist"}))
        s = sentry.from_config(
            BackendConfig(name="sentry-test", kind="sentry", url=other.url, org="no-such-org", token=TOKEN)
        )
        with pytest.raises(SourceError, match=r"organization 'no-such-org' was not found.*SENTRY_ORG"):
            await s.find_errors(query())
        await s.aclose()


async def test_400_quotes_sentrys_own_words(source: sentry.SentrySource, backend: SentryBackend) -> None:
    backend.answer("issues/", then=Reply(400, {"detail": "start must be before end"}))
    with pytest.raises(SourceError, match=r"rejected the request.*start must be before end"):
        await source.find_errors(query())


async def test_429_is_retried_by_the_client_then_reported(backend: SentryBackend) -> None:
    s = make_source(backend.url)
    backend.answer(
        "issues/",
        Reply(429, {"detail": "slow down"}, headers={"Retry-After": "0"}),
        then=Reply(200, recorded("issues")),
    )
    page = await s.find_errors(query())
    assert len(page.groups) == 2
    assert backend.server.count(backend.path("issues/")) == 2
    # Rate-limited on every attempt: the client's own error (with Retry-After) reaches the caller.
    backend.answer("issues/", then=Reply(429, {"detail": "slow down"}, headers={"Retry-After": "0"}))
    s2 = sentry.SentrySource(
        s.config, client_config=replace(s.client.config, retry=RetryPolicy(max_attempts=2, backoff_base_s=0.0))
    )
    with pytest.raises(BackendRateLimited, match="429"):
        await s2.find_errors(query(limit=3))
    await s2.aclose()


# -- where requests go: self-hosted and regions -------------------------------------------------------------------


async def test_self_hosted_base_url_with_a_path_prefix() -> None:
    with SentryBackend(prefix="/sentry") as hosted:
        hosted.serve_recorded()
        s = make_source(hosted.url)
        page = await s.find_errors(query(service="auth"))
        await s.check()
        assert page.groups
        assert all(r.path.startswith("/sentry/api/0/organizations/hub-ca/") for r in hosted.requests())
        # No region lookup for a self-hosted Sentry: projects are the first request.
        assert hosted.validated()[:2] == ["listOrganizationProjects", "listOrganizationIssues"]
        assert hosted.validated()[-1] == "getOrganization"
        assert all(r.headers.get("Authorization") == f"Bearer {TOKEN}" for r in hosted.requests())
        await s.aclose()


async def test_region_lookup_sends_requests_to_the_organizations_region(backend: SentryBackend) -> None:
    with SentryBackend() as apex:
        apex.serve_recorded(region_url=backend.url)
        s = sentry.SentrySource(
            make_source(apex.url).config, region_lookup=True, trust_region=lambda url: url == backend.url
        )
        page = await s.find_errors(query(service="auth"))
        assert page.groups and s.base_url == backend.url
        assert apex.validated() == ["getOrganization"]
        assert ("detailed", "0") in apex.requests()[0].query
        assert backend.validated()[:2] == ["listOrganizationProjects", "listOrganizationIssues"]
        await s.aclose()


async def test_a_region_url_that_is_not_sentrys_never_receives_the_token(backend: SentryBackend) -> None:
    with SentryBackend() as apex:
        apex.serve_recorded(region_url=backend.url)  # http://127.0.0.1:...: not https://<region>.sentry.io
        s = sentry.SentrySource(make_source(apex.url).config, region_lookup=True)
        with pytest.raises(SourceError, match=r"not a Sentry region.*SENTRY_URL"):
            await s.find_errors(query())
        assert backend.requests() == []
        await s.aclose()


def test_region_urls_are_trusted_only_on_sentry_io_over_https() -> None:
    assert sentry._is_sentry_region("https://de.sentry.io")
    assert sentry._is_sentry_region("https://us.sentry.io/")
    assert not sentry._is_sentry_region("http://us.sentry.io")
    assert not sentry._is_sentry_region("https://us.sentry.io.example.com")
    assert not sentry._is_sentry_region("https://evil.example.com/.sentry.io")
    assert sentry._is_apex("https://sentry.io") and not sentry._is_apex("https://sentry.example.com")


async def test_a_rotated_token_file_takes_effect_without_a_restart(backend: SentryBackend, tmp_path: Path) -> None:
    token_file = tmp_path / "sentry-token"
    token_file.write_text("sntrys_first_token_aaaaaaaaaaaa\n")
    cfg = BackendConfig(
        name="sentry-test", kind="sentry", url=backend.url, org=ORG, token_file=token_file, query_cache_ttl_s=0
    )
    s = sentry.from_config(cfg)
    await s.find_errors(query())
    token_file.write_text("sntrys_second_token_bbbbbbbbbbb\n")
    await s.find_errors(query())
    sent = [r.headers.get("Authorization") for r in backend.server.seen(backend.path("issues/"))]
    assert sent == ["Bearer sntrys_first_token_aaaaaaaaaaaa", "Bearer sntrys_second_token_bbbbbbbbbbb"]
    backend.validated()
    await s.aclose()


async def test_check_reads_the_organization(source: sentry.SentrySource, backend: SentryBackend) -> None:
    await source.check()
    assert backend.validated() == ["getOrganization"]
    backend.answer("", then=Reply(401, {"detail": "Invalid token"}))
    with pytest.raises(SourceError, match="SENTRY_AUTH_TOKEN"):
        await source.check()


def test_from_config_defaults_to_sentry_io_with_the_region_lookup() -> None:
    s = sentry.from_config(BackendConfig(name="sentry-saas", kind="sentry", org=ORG, token=TOKEN))
    assert s.base_url == "https://sentry.io" and not s._region_checked
    assert s.environment is None
    s._client.close()
