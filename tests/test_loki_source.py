"""The Loki log source against recorded Loki answers on a real loopback HTTP server.

Loki cannot run here: tests/data/vendor/loki/ holds answers in the shapes of Loki's HTTP API documentation and
source (its README says which), and every request the source sends is asserted exactly as the server saw it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from obsmcp.http import close_all
from obsmcp.sources.base import LogQuery, LogSource, SourceError
from obsmcp.sources.loki import LokiSource, from_config, level_regex, logql_for, severity_name
from obsmcp.sources.tempo import quote
from tests.faulty_backend import FaultyBackend, Reply
from tests.recorded_backend import backend_config, query_of, recorded, recorded_reply, text_reply

pytestmark = pytest.mark.anyio

T0 = 1_700_000_000_000_000_000
HOUR = 3600 * 10**9
ERROR_AND_UP = "(?i)(err|error|crit|critical|fatal|panic|alert|emerg|emergency)"


@pytest.fixture(scope="module", autouse=True)
def _stop_client_loop() -> Iterator[None]:
    yield
    close_all()


@pytest.fixture
def server() -> Iterator[FaultyBackend]:
    with FaultyBackend() as s:
        yield s


def loki(server: FaultyBackend, **fields: object) -> LokiSource:
    return from_config(backend_config(server, "loki", **fields))


def window(**kw: object) -> LogQuery:
    return LogQuery(start_ns=T0 - HOUR, end_ns=T0 + HOUR, **kw)  # type: ignore[arg-type]


# -- LogQL ---------------------------------------------------------------------------------------------------


def test_logql_quotes_text_as_a_case_insensitive_literal_and_escapes_quotes_and_backslashes() -> None:
    q = window(
        service='web "edge"',
        text='card "declined" \\ (retry?)',
        min_severity=17,
        trace_id="4BF92F3577B34DA6A3CE929D0E0E4736",
        attributes={"http.route": "/pay", "k8s.pod.name": 'a"b'},
    )
    assert logql_for(q, "service_name", None) == (
        '{service_name="web \\"edge\\""} '
        '|~ "(?i)card \\"declined\\" \\\\\\\\ \\\\(retry\\\\?\\\\)" '
        f'| detected_level=~"{ERROR_AND_UP}" '
        '| trace_id="4bf92f3577b34da6a3ce929d0e0e4736" '
        '| http_route="/pay" | k8s_pod_name="a\\"b"'
    )


def test_logql_passes_a_regex_through_and_uses_an_indexed_level_label_in_the_selector() -> None:
    q = window(service="checkout", text='status=5\\d\\d "x"', regex=True, min_severity=13)
    assert logql_for(q, "app", "level") == (
        '{app="checkout", level=~"(?i)(warn|warning|err|error|crit|critical|fatal|panic|alert|emerg|emergency)"} '
        '|~ "status=5\\\\d\\\\d \\"x\\""'
    )


def test_logql_without_service_selects_every_stream_of_the_service_label() -> None:
    assert logql_for(window(), "service_name", None) == '{service_name=~".+"}'
    assert level_regex(1) is None  # a TRACE floor filters nothing


@pytest.mark.parametrize("text", ['a"b', "back\\slash", "tab\tnew\nline", "ünïcode ✓", '\\"', ""])
def test_quoted_strings_decode_back_to_the_text(text: str) -> None:
    # LogQL and TraceQL strings are Go string literals; for these characters JSON's escapes are the same.
    assert json.loads(quote(text)) == text


def test_the_source_is_a_log_source_for_the_registry(server: FaultyBackend) -> None:
    source = loki(server)
    assert isinstance(source, LogSource)
    assert (source.kind, source.signals) == ("loki", ("logs",))


def test_a_64_bit_trace_id_is_searched_in_the_32_digit_form_loki_stores() -> None:
    assert logql_for(window(trace_id="D6E9329D67B6146A"), "service_name", None) == (
        '{service_name=~".+"} | trace_id="0000000000000000d6e9329d67b6146a"'
    )


def test_level_words_map_to_the_store_severity_names() -> None:
    assert [severity_name(w) for w in ("warning", "ERR", "critical", "info2", "Debug", "unknown", None)] == [
        "WARN",
        "ERROR",
        "FATAL",
        "INFO",
        "DEBUG",
        "UNSET",
        "UNSET",
    ]


# -- search_logs -----------------------------------------------------------------------------------------------


async def test_search_logs_sends_the_logql_range_query_and_maps_records_newest_first(server: FaultyBackend) -> None:
    server.script("/loki/api/v1/labels", then=recorded_reply("loki/labels.json"))
    server.script("/loki/api/v1/query_range", then=recorded_reply("loki/query_range_streams.json"))
    page = await loki(server).search_logs(window(service="checkout", min_severity=13, limit=50))

    (labels,) = server.seen("/loki/api/v1/labels")
    assert query_of(labels) == {"start": str(1_699_996_200_000_000_000), "end": str(1_700_003_700_000_000_000)}
    (search,) = server.seen("/loki/api/v1/query_range")
    assert search.method == "GET"
    assert query_of(search) == {
        "query": '{service_name="checkout"} | detected_level=~"(?i)(warn|warning|err|error|crit|critical|fatal|'
        'panic|alert|emerg|emergency)"',
        "start": str(T0 - HOUR),
        "end": str(T0 + HOUR),
        "limit": "51",
        "direction": "backward",
    }
    assert [r.model_dump() for r in page.records] == [
        {
            "time": "2023-11-14T22:13:20.095Z",
            "severity": "ERROR",
            "service": "checkout",
            "body": "payment failed: card declined for order 8812",
            "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
            "span_id": "1e7b2a4c5d6e7f80",
            "attributes": {"deployment_environment": "prod"},
        },
        {
            "time": "2023-11-14T22:13:20.090Z",
            "severity": "WARN",
            "service": "checkout",
            "body": 'retrying charge "8812" (attempt 2)',
            "trace_id": None,
            "span_id": None,
            "attributes": {"deployment_environment": "prod"},
        },
        {
            "time": "2023-11-14T22:13:20.030Z",
            "severity": "WARN",
            "service": "checkout",
            "body": "slow query: SELECT orders took 30ms",
            "trace_id": None,
            "span_id": None,
            "attributes": {"deployment_environment": "prod"},
        },
    ]
    assert (page.total, page.by_severity, page.next_cursor) == (3, {"WARN": 2, "ERROR": 1}, None)


async def test_tenant_header_and_token_are_sent_with_every_request(server: FaultyBackend) -> None:
    server.script("/loki/api/v1/labels", then=recorded_reply("loki/labels.json"))
    server.script("/loki/api/v1/query_range", then=recorded_reply("loki/query_range_streams.json"))
    source = loki(server, headers={"X-Scope-OrgID": "tenant-a"}, token="s3cret-token")
    await source.search_logs(window())
    assert [(s.path, s.headers.get("X-Scope-OrgID"), s.headers.get("Authorization")) for s in server.seen()] == [
        ("/loki/api/v1/labels", "tenant-a", "Bearer s3cret-token"),
        ("/loki/api/v1/query_range", "tenant-a", "Bearer s3cret-token"),
    ]


async def test_a_bad_query_is_reported_with_lokis_own_parse_error(server: FaultyBackend) -> None:
    server.script("/loki/api/v1/labels", then=recorded_reply("loki/labels.json"))
    server.script("/loki/api/v1/query_range", then=text_reply(400, "loki/error_parse.txt"))
    source = loki(server)
    with pytest.raises(SourceError) as err:
        await source.search_logs(window(text="[", regex=True))
    message = str(err.value)
    assert f"Loki backend {source.name} rejected the LogQL query" in message
    assert "parse error at line 1, col 32: syntax error: unexpected IDENTIFIER" in message
    assert "fix the query" in message


async def test_a_missing_tenant_says_to_set_x_scope_orgid(server: FaultyBackend) -> None:
    server.script("/loki/api/v1/labels", then=text_reply(401, "loki/error_no_org_id.txt"))
    with pytest.raises(SourceError, match="X-Scope-OrgID"):
        await loki(server).search_logs(window())


async def test_app_label_and_indexed_level_are_used_when_the_streams_have_them(server: FaultyBackend) -> None:
    server.script("/loki/api/v1/labels", then=recorded_reply("loki/labels_app.json"))
    server.script("/loki/api/v1/query_range", then=recorded_reply("loki/query_range_categorized.json"))
    source = loki(server)
    page = await source.search_logs(window(service="checkout", min_severity=17, text="declined"))
    await source.search_logs(window(service="checkout"))

    assert server.count("/loki/api/v1/labels") == 1  # the label choice is cached
    first, second = (query_of(s)["query"] for s in server.seen("/loki/api/v1/query_range"))
    assert first == f'{{app="checkout", level=~"{ERROR_AND_UP}"}} |~ "(?i)declined"'
    assert second == '{app="checkout"}'
    rec = page.records[0]
    # categorize-labels entries: structured metadata and parsed labels ride in a third element.
    assert (rec.severity, rec.service, rec.trace_id, rec.attributes) == (
        "ERROR",
        "checkout",
        "4bf92f3577b34da6a3ce929d0e0e4736",
        {"order": "8812"},
    )
    assert page.records[1].trace_id is None


async def test_pages_continue_from_the_oldest_record_shown(server: FaultyBackend) -> None:
    answer = recorded("loki/query_range_streams.json")
    older = json.loads(json.dumps(answer))
    for stream in older["data"]["result"]:  # what Loki answers for end = 90 ms + 1 ns: entries before it
        stream["values"] = [v for v in stream["values"] if int(v[0]) <= T0 + 90_000_000]
    server.script("/loki/api/v1/labels", then=recorded_reply("loki/labels.json"))
    server.script("/loki/api/v1/query_range", Reply(200, answer), Reply(200, older))
    server.script("/loki/api/v1/query", then=recorded_reply("loki/query_count_by_level.json"))
    source = loki(server)

    first = await source.search_logs(window(service="checkout", limit=2))
    assert [r.time for r in first.records] == ["2023-11-14T22:13:20.095Z", "2023-11-14T22:13:20.090Z"]
    assert first.next_cursor == f"{T0 + 90_000_001}:1"
    second = await source.search_logs(window(service="checkout", limit=2, cursor=first.next_cursor))
    assert [r.time for r in second.records] == ["2023-11-14T22:13:20.030Z"]
    assert second.next_cursor is None
    sent = [query_of(s) for s in server.seen("/loki/api/v1/query_range")]
    assert [(s["end"], s["limit"]) for s in sent] == [(str(T0 + HOUR), "3"), (str(T0 + 90_000_001), "4")]

    # Neither page is the whole match: both count it over the whole range with one metric query.
    assert (first.total, first.by_severity) == (1338, {"WARN": 1290, "ERROR": 41, "UNSET": 7})
    assert second.total == 1338
    counts = [query_of(s) for s in server.seen("/loki/api/v1/query")]
    assert counts[0] == {
        "query": 'sum by (detected_level, level) (count_over_time({service_name="checkout"} [7200s]))',
        "time": str(T0 + HOUR),
    }


async def test_a_failed_count_leaves_page_counts_and_says_why(server: FaultyBackend) -> None:
    server.script("/loki/api/v1/labels", then=recorded_reply("loki/labels.json"))
    server.script("/loki/api/v1/query_range", then=recorded_reply("loki/query_range_streams.json"))
    server.script("/loki/api/v1/query", then=Reply(400, b"max query length exceeded"))
    page = await loki(server).search_logs(window(limit=1))
    assert (page.total, page.by_severity) == (None, {"ERROR": 1})
    assert any("counting the whole match failed" in n and "max query length exceeded" in n for n in page.notes)


async def test_services_are_the_values_of_the_discovered_service_label(server: FaultyBackend) -> None:
    server.script("/loki/api/v1/labels", then=recorded_reply("loki/labels.json"))
    server.script("/loki/api/v1/label/service_name/values", then=recorded_reply("loki/label_values.json"))
    assert await loki(server).services(T0 - HOUR, T0) == ["checkout", "frontend"]
    (seen,) = server.seen("/loki/api/v1/label/service_name/values")
    # Metadata ranges are widened to 5-minute boundaries so that repeated lookups hit the cache.
    assert query_of(seen) == {"start": str(1_699_996_200_000_000_000), "end": str(1_700_000_100_000_000_000)}


async def test_no_service_label_is_an_error_that_lists_the_labels_found(server: FaultyBackend) -> None:
    server.script("/loki/api/v1/labels", then=Reply(200, {"status": "success", "data": ["filename", "host"]}))
    with pytest.raises(SourceError, match="it has filename, host"):
        await loki(server).search_logs(window())


async def test_patterns_are_templates_with_their_total_counts(server: FaultyBackend) -> None:
    server.script("/loki/api/v1/labels", then=recorded_reply("loki/labels.json"))
    server.script("/loki/api/v1/patterns", then=recorded_reply("loki/patterns.json"))
    patterns = await loki(server).patterns("checkout", T0 - HOUR, T0)
    (seen,) = server.seen("/loki/api/v1/patterns")
    assert query_of(seen) == {"query": '{service_name="checkout"}', "start": str(T0 - HOUR), "end": str(T0)}
    assert [(p.count, p.template.split(" <_> ")[1][:11], p.first_seen_s, p.last_seen_s) for p in patterns] == [
        (523, "level=info ", 1711839260, 1711839280),
        (4, "level=error", 1711839260, 1711839280),
    ]


async def test_patterns_without_the_pattern_ingester_say_how_to_enable_it(server: FaultyBackend) -> None:
    server.script("/loki/api/v1/labels", then=recorded_reply("loki/labels.json"))
    server.script("/loki/api/v1/patterns", then=Reply(404, b"404 page not found\n"))
    with pytest.raises(SourceError, match=r"pattern_ingester\.enabled: true"):
        await loki(server).patterns(None, T0 - HOUR, T0)
