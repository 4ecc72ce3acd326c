"""The Tempo and Jaeger trace sources against recorded answers on a real loopback HTTP server.

Neither can run here: tests/data/vendor/{tempo,jaeger}/ hold answers in the shapes of their APIs' documentation
and source (see the READMEs). One logical trace is recorded in each backend's own dialect (Tempo's gogo-jsonpb
OTLP with base64 ids and enum names, in its v1 and v2 envelopes; Jaeger's v1 JSON model with microseconds,
typed tags and references; Jaeger API v3's OTLP/JSON with hex ids), and every one must come back as the
same spans, so get_trace draws the same tree and critical path whichever backend answered.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from obsmcp.analysis.critical_path import build_tree, critical_path
from obsmcp.http import close_all
from obsmcp.model import Span, SpanEvent
from obsmcp.sources import jaeger, tempo
from obsmcp.sources.base import SourceError, TraceQuery, TraceSource, UnsupportedQuery
from obsmcp.sources.otlp_json import TraceDecodeError, normalize_span_id, normalize_trace_id, summarize
from obsmcp.sources.tempo import traceql_for
from tests.faulty_backend import FaultyBackend, Reply
from tests.recorded_backend import backend_config, query_of, recorded_reply

pytestmark = pytest.mark.anyio

TID = "4bf92f3577b34da6a3ce929d0e0e4736"
T = 1_700_000_000_000_000_000
MS = 1_000_000
HOUR = 3600 * 10**9
EXPECTED = [
    Span(TID, "00f067aa0ba902b7", "", "frontend", "GET /checkout", "Server", T, 120 * MS, "Unset", "",
         {"http.method": "GET", "http.status_code": "500"}),
    Span(TID, "53995c3f42cd8ad8", "00f067aa0ba902b7", "frontend", "POST checkout", "Client", T + 5 * MS, 100 * MS,
         "Unset", "", {"peer.service": "checkout"}),
    Span(TID, "1e7b2a4c5d6e7f80", "53995c3f42cd8ad8", "checkout", "charge", "Server", T + 10 * MS, 90 * MS, "Error",
         "card declined", {"retry": "true", "amount": "12.5"},
         [SpanEvent(T + 95 * MS, "exception",
                    {"exception.type": "PaymentError", "exception.message": "card declined"})]),
    Span(TID, "9a8b7c6d5e4f3a2b", "1e7b2a4c5d6e7f80", "checkout", "SELECT orders", "Client", T + 20 * MS, 30 * MS,
         "Ok", "", {"db.system": "postgresql"}),
]  # fmt: skip


@pytest.fixture(scope="module", autouse=True)
def _stop_client_loop() -> Iterator[None]:
    yield
    close_all()


@pytest.fixture
def server() -> Iterator[FaultyBackend]:
    with FaultyBackend() as s:
        yield s


def tempo_source(server: FaultyBackend, **fields: Any) -> tempo.TempoSource:
    return tempo.from_config(backend_config(server, "tempo", **fields))


def jaeger_source(server: FaultyBackend, api: str, **fields: Any) -> jaeger.JaegerSource:
    return jaeger.from_config(backend_config(server, "jaeger", jaeger_api=api, **fields))


def window(**kw: Any) -> TraceQuery:
    return TraceQuery(start_ns=T - HOUR, end_ns=T + HOUR + 1, **kw)


# -- ids --------------------------------------------------------------------------------------------------------


def test_ids_in_hex_of_any_case_trimmed_or_base64_become_lowercase_hex() -> None:
    assert normalize_trace_id("S/kvNXezTaajzpKdDg5HNg==") == TID  # Tempo's jsonpb: base64 bytes
    assert normalize_trace_id(TID.upper()) == TID
    assert normalize_trace_id("D6E9329D67B6146A") == "0000000000000000d6e9329d67b6146a"  # Jaeger 64-bit id
    assert normalize_trace_id("2f3e0cee77ae5dc9c17ade3689eb2e5") == "02f3e0cee77ae5dc9c17ade3689eb2e5"  # zeros trimmed
    assert normalize_span_id("APBnqgupArc=") == "00f067aa0ba902b7"
    assert normalize_span_id("") == ""
    for bad in ("not an id!", "QUFBQUFBQUFBQUFBQUFBQUFBQUFB"):  # neither hex nor base64; base64 of 21 bytes
        with pytest.raises(TraceDecodeError):
            normalize_trace_id(bad)


# -- the same trace from every backend ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("backend", "path", "answer"),
    [
        ("tempo", f"/api/traces/{TID}", "tempo/trace_v1.json"),
        ("tempo", f"/api/traces/{TID}", "tempo/trace_v2.json"),
        ("jaeger-v1", f"/api/traces/{TID}", "jaeger/v1_trace.json"),
        ("jaeger-v3", f"/api/v3/traces/{TID}", "jaeger/v3_trace.json"),
    ],
)
async def test_a_trace_from_each_backend_gives_the_same_spans(
    server: FaultyBackend, backend: str, path: str, answer: str
) -> None:
    server.script(path, then=recorded_reply(answer))
    source = tempo_source(server) if backend == "tempo" else jaeger_source(server, backend.split("-")[1])
    spans = await source.get_trace(TID.upper())  # any case in, the canonical id asked for and returned

    assert spans == EXPECTED
    (seen,) = server.seen()
    assert (seen.method, seen.path, seen.query) == ("GET", path, [])
    tree = build_tree(spans)
    assert tree.roots == ["00f067aa0ba902b7"]
    assert critical_path(tree)["9a8b7c6d5e4f3a2b"] == 30 * MS


async def test_tempo_asks_for_json_and_sends_the_tenant_header(server: FaultyBackend) -> None:
    server.script(f"/api/traces/{TID}", then=recorded_reply("tempo/trace_v1.json"))
    await tempo_source(server, headers={"X-Scope-OrgID": "team-a"}).get_trace(TID)
    (seen,) = server.seen()
    assert (seen.headers["Accept"], seen.headers["X-Scope-OrgID"]) == ("application/json", "team-a")


@pytest.mark.parametrize(
    ("backend", "path", "reply"),
    [
        ("tempo", f"/api/traces/{TID}", Reply(404, b"trace not found")),
        ("jaeger-v1", f"/api/traces/{TID}", recorded_reply("jaeger/v1_not_found.json", 404)),
        ("jaeger-v3", f"/api/v3/traces/{TID}", recorded_reply("jaeger/v3_not_found.json", 404)),
    ],
)
async def test_a_missing_trace_says_where_to_find_trace_ids(
    server: FaultyBackend, backend: str, path: str, reply: Reply
) -> None:
    server.script(path, then=reply)
    source = tempo_source(server) if backend == "tempo" else jaeger_source(server, backend.split("-")[1])
    with pytest.raises(SourceError, match=f"has no trace {TID}: .*search_traces"):
        await source.get_trace(TID)


# -- Tempo search ---------------------------------------------------------------------------------------------------


def test_traceql_puts_every_condition_in_one_spanset_with_escaped_strings() -> None:
    q = window(
        service='shop "edge"',
        operation="POST /cart (v2)",
        min_duration_ms=250,
        max_duration_ms=1500.5,
        status="Error",
        attributes={"user id": 'a"b\\c', "http.status_code": "500"},
    )
    assert traceql_for(q) == (
        '{ resource.service.name = "shop \\"edge\\"" && name =~ "(?i).*POST /cart \\\\(v2\\\\).*" '
        "&& duration >= 250ms && duration <= 1500500000ns && status = error "
        '&& .http.status_code = "500" && ."user id" = "a\\"b\\\\c" }'
    )
    assert traceql_for(window()) == "{}"
    with pytest.raises(SourceError, match="use error, ok or unset"):
        traceql_for(window(status="failed"))


async def test_tempo_search_sends_traceql_with_seconds_and_maps_the_search_metadata(server: FaultyBackend) -> None:
    server.script("/api/search", then=recorded_reply("tempo/search.json"))
    page = await tempo_source(server).search_traces(window(service="frontend", status="error", limit=20))

    (seen,) = server.seen("/api/search")
    assert query_of(seen) == {
        "q": '{ resource.service.name = "frontend" && status = error }',
        "start": str((T - HOUR) // 10**9),
        "end": str((T + HOUR) // 10**9 + 1),  # rounded up: the range's last nanosecond stays inside
        "limit": "20",
    }
    assert [t.model_dump() for t in page.traces] == [
        {
            "trace_id": TID,
            "start": "2023-11-14T22:13:20.000Z",
            "root": "frontend GET /checkout",
            "duration_ms": 120.0,
            "spans": 4,
            "errors": 1,
            "services": ["checkout", "frontend"],
        },
        {
            "trace_id": "0000000000000000d6e9329d67b6146a",
            "start": "2021-10-20T11:05:03.545Z",
            "root": "frontend /cart",
            "duration_ms": 611.0,
            "spans": 0,  # the documented tag-search answer has no serviceStats
            "errors": 0,
            "services": ["frontend"],
        },
    ]
    assert page.total is None and page.next_cursor is None


async def test_tempo_search_says_when_it_hit_the_limit(server: FaultyBackend) -> None:
    server.script("/api/search", then=recorded_reply("tempo/search.json"))
    page = await tempo_source(server).search_traces(window(limit=2))
    assert any("not necessarily the newest" in n for n in page.notes)


async def test_a_traceql_error_is_quoted(server: FaultyBackend) -> None:
    body = b"invalid TraceQL query: parse error at line 1, col 3: syntax error: unexpected IDENTIFIER"
    server.script("/api/search", then=Reply(400, body, headers={"Content-Type": "text/plain"}))
    with pytest.raises(SourceError, match=r"rejected the TraceQL search .*unexpected IDENTIFIER"):
        await tempo_source(server).search_traces(window(service="x"))


async def test_tempo_services_and_check(server: FaultyBackend) -> None:
    server.script("/api/search/tag/service.name/values", then=recorded_reply("tempo/tag_values.json"))
    server.script("/api/status/buildinfo", then=recorded_reply("tempo/buildinfo.json"))
    source = tempo_source(server)
    assert (await source.services(T - HOUR, T))[:2] == ["article-service", "auth-service"]
    await source.check()
    (seen,) = server.seen("/api/search/tag/service.name/values")
    assert query_of(seen) == {"start": str((T - HOUR) // 10**9), "end": str(T // 10**9)}


# -- Jaeger search ----------------------------------------------------------------------------------------------------


async def test_jaeger_v1_search_sends_microseconds_and_json_tags_and_summarizes_traces(server: FaultyBackend) -> None:
    server.script("/api/traces", then=recorded_reply("jaeger/v1_search.json"))
    q = window(service="frontend", operation="GET /checkout", min_duration_ms=100, attributes={"http.method": "GET"})
    page = await jaeger_source(server, "v1").search_traces(q)

    (seen,) = server.seen("/api/traces")
    assert query_of(seen) == {
        "service": "frontend",
        "operation": "GET /checkout",
        "start": str((T - HOUR) // 1000),
        "end": str((T + HOUR) // 1000 + 1),
        "limit": "20",
        "minDuration": "100ms",
        "tags": '{"http.method":"GET"}',
    }
    assert [t.trace_id for t in page.traces] == [TID, "0000000000000000d6e9329d67b6146a"]  # newest first
    assert page.traces[0] == summarize(TID, EXPECTED)
    assert page.traces[0].model_dump() == {
        "trace_id": TID,
        "start": "2023-11-14T22:13:20.000Z",
        "root": "frontend GET /checkout",
        "duration_ms": 120.0,
        "spans": 4,
        "errors": 1,
        "services": ["checkout", "frontend"],
    }


async def test_jaeger_status_is_applied_to_the_returned_traces_and_said(server: FaultyBackend) -> None:
    server.script("/api/traces", then=recorded_reply("jaeger/v1_search.json"))
    page = await jaeger_source(server, "v1").search_traces(window(service="frontend", status="error"))
    assert [t.trace_id for t in page.traces] == [TID]
    assert "status" not in query_of(server.seen("/api/traces")[0])
    assert any("status=error applied to the 2 traces Jaeger returned" in n for n in page.notes)


async def test_jaeger_v1_needs_a_service_and_sends_nothing_without_one(server: FaultyBackend) -> None:
    with pytest.raises(UnsupportedQuery, match="needs a service"):
        await jaeger_source(server, "v1").search_traces(window())
    assert server.count() == 0


async def test_jaeger_errors_quote_the_message_inside_its_json(server: FaultyBackend) -> None:
    server.script("/api/traces", then=recorded_reply("jaeger/v1_error_service_required.json", 400))
    with pytest.raises(SourceError, match="rejected the trace search \\(400\\): \"parameter 'service' is required\""):
        await jaeger_source(server, "v1").search_traces(window(service="x"))


async def test_jaeger_v3_search_sends_rfc3339_times_and_reads_the_otlp_result(server: FaultyBackend) -> None:
    server.script("/api/v3/traces", then=recorded_reply("jaeger/v3_trace.json"))
    q = window(service="frontend", max_duration_ms=0.5, attributes={"http.status_code": "500"}, limit=5)
    page = await jaeger_source(server, "v3").search_traces(q)

    (seen,) = server.seen("/api/v3/traces")
    assert query_of(seen) == {
        "query.service_name": "frontend",
        "query.start_time_min": "2023-11-14T21:13:20.000000000Z",
        "query.start_time_max": "2023-11-14T23:13:20.000000001Z",
        "query.search_depth": "5",
        "query.duration_max": "500000ns",
        "query.attributes": '{"http.status_code":"500"}',
    }
    assert page.traces == [summarize(TID, EXPECTED)]


async def test_jaeger_v3_no_traces_found_is_an_empty_page(server: FaultyBackend) -> None:
    server.script("/api/v3/traces", then=recorded_reply("jaeger/v3_not_found.json", 404))
    page = await jaeger_source(server, "v3").search_traces(window(service="frontend"))
    assert page.traces == []


async def test_a_jaeger_without_the_v1_api_says_to_switch_to_v3(server: FaultyBackend) -> None:
    server.script("/api/traces", then=Reply(404, b"404 page not found\n", headers={"Content-Type": "text/plain"}))
    with pytest.raises(SourceError, match='set jaeger_api = "v3"'):
        await jaeger_source(server, "v1").search_traces(window(service="frontend"))


@pytest.mark.parametrize(
    ("api", "path", "answer"),
    [("v1", "/api/services", "jaeger/v1_services.json"), ("v3", "/api/v3/services", "jaeger/v3_services.json")],
)
async def test_jaeger_services(server: FaultyBackend, api: str, path: str, answer: str) -> None:
    server.script(path, then=recorded_reply(answer))
    source = jaeger_source(server, api, token="tok-123456")
    assert await source.services(T - HOUR, T) == ["checkout", "frontend"]
    await source.check()
    assert [(s.path, s.headers["Authorization"]) for s in server.seen()] == [(path, "Bearer tok-123456")] * 2


def test_both_sources_are_trace_sources_for_the_registry(server: FaultyBackend) -> None:
    for source in (tempo_source(server), jaeger_source(server, "v1"), jaeger_source(server, "v3")):
        assert isinstance(source, TraceSource)
        assert source.signals == ("traces",)


def test_recorded_traces_are_one_trace_in_four_dialects() -> None:
    """Guards the fixtures themselves: the Tempo files really use base64 ids and enum names, Jaeger v3 hex."""
    from tests.recorded_backend import recorded

    v1 = json.dumps(recorded("tempo/trace_v1.json"))
    v3 = json.dumps(recorded("jaeger/v3_trace.json"))
    assert '"traceId": "S/kvNXezTaajzpKdDg5HNg=="' in v1 and '"SPAN_KIND_SERVER"' in v1
    assert f'"traceId": "{TID}"' in v3 and '"kind": 2' in v3
