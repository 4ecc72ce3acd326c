"""Bad input gets a clear error that says what to do, and nothing is half-written.

Tool arguments are checked through the in-process MCP client against a real (in-memory) store. OTLP
requests go over real HTTP to a running `obsmcp serve --http` whose body cap is small (64 KiB); after every
refused request the store's row counts are unchanged and a good request still succeeds.
"""

from __future__ import annotations

import asyncio
import gzip
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from google.rpc import status_pb2
from mcp import Client
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

from obsmcp.config import Settings
from obsmcp.runtime import Runtime
from tests.conftest import (
    EXAMPLES_START,
    ServerProcess,
    call_tool,
    call_tool_error,
    otlp_logs_json,
    otlp_logs_protobuf,
    table_counts,
)

PROTOBUF = {"Content-Type": "application/x-protobuf"}
JSON = {"Content-Type": "application/json"}
MAX_BODY = 65536

# -- tool arguments (in-process) ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def rt(tmp_path_factory: pytest.TempPathFactory, otlp_examples: Path) -> Iterator[Runtime]:
    """One in-memory store for the module: the tools only read it (and the tests prove writes are refused)."""
    settings = Settings(data_dir=tmp_path_factory.mktemp("bad-tools"), ingest_flush_ms=5)
    runtime = Runtime.open(settings, in_memory=True)

    async def load() -> None:
        for name, signal in (("trace.json", "traces"), ("logs.json", "logs"), ("metrics.json", "metrics")):
            await runtime.receiver.ingest(signal, (otlp_examples / name).read_bytes(), "json")
        for service in ("checkout-service", "payment-service"):
            await runtime.receiver.ingest("logs", otlp_logs_protobuf(service, [f"hello from {service}"]), "protobuf")

    try:
        asyncio.run(load())
        yield runtime
    finally:
        runtime.close()


@pytest.fixture
async def client(rt: Runtime) -> AsyncIterator[Any]:
    async with Client(rt.mcp) as c:
        yield c


@pytest.mark.anyio
@pytest.mark.parametrize(
    "tool,args",
    [
        ("search_logs", {}),
        ("search_traces", {}),
        ("find_errors", {}),
        ("list_metrics", {}),
        ("query_metrics", {"metric": "my.counter"}),
    ],
)
async def test_unknown_service_suggests_the_closest(client: Any, tool: str, args: dict[str, Any]) -> None:
    err = await call_tool_error(client, tool, {**args, "service": "chekout"})
    assert "did you mean" in err and "checkout-service" in err, err


@pytest.mark.anyio
async def test_ambiguous_service_lists_candidates(client: Any) -> None:
    err = await call_tool_error(client, "search_logs", {"service": "service"})
    assert "ambiguous" in err and "checkout-service" in err and "payment-service" in err, err


@pytest.mark.anyio
async def test_unparseable_time_says_how_to_write_times(client: Any) -> None:
    err = await call_tool_error(client, "search_logs", {"start": "yesterday-ish"})
    assert "yesterday-ish" in err
    assert "15m" in err and "ISO-8601" in err and "now-30m" in err, err


@pytest.mark.anyio
async def test_start_after_end_is_refused(client: Any) -> None:
    err = await call_tool_error(client, "search_traces", {"start": "now-1h", "end": "now-2h"})
    assert "not before end" in err and "start='2h'" in err, err
    err = await call_tool_error(
        client, "list_services", {"start": "2030-01-02T00:00:00Z", "end": "2030-01-01T00:00:00Z"}
    )
    assert "not before end" in err, err


@pytest.mark.anyio
async def test_unknown_trace_id(client: Any) -> None:
    err = await call_tool_error(client, "get_trace", {"trace_id": "0123456789abcdef0123456789abcdef"})
    assert "no trace 0123456789abcdef0123456789abcdef" in err and "search_traces" in err, err


@pytest.mark.anyio
@pytest.mark.parametrize(
    "trace_id", ["xyz", "5b8efff798038103d269b633813fc60", "5B8EFFF7-9803-8103-D269-B633813FC60C", "g" * 32]
)
async def test_malformed_trace_id(client: Any, trace_id: str) -> None:
    err = await call_tool_error(client, "get_trace", {"trace_id": trace_id})
    assert "32 hex" in err, err


@pytest.mark.anyio
async def test_trace_id_is_case_insensitive(client: Any) -> None:
    r = await call_tool(client, "get_trace", {"trace_id": "5B8EFFF798038103D269B633813FC60C"})
    assert r.structured_content["span_count"] == 1


@pytest.mark.anyio
async def test_invalid_regex(client: Any) -> None:
    err = await call_tool_error(client, "search_logs", {"query": "timeout (", "regex": True, "start": EXAMPLES_START})
    assert "regex" in err and "invalid" in err and "regex=false" in err, err
    # The same text as a plain substring is fine.
    r = await call_tool(client, "search_logs", {"query": "timeout (", "start": EXAMPLES_START})
    assert r.structured_content["total"] == 0


@pytest.mark.anyio
async def test_bad_error_id_and_unknown_metric(client: Any) -> None:
    err = await call_tool_error(client, "get_error_details", {"error_id": "not-an-id"})
    assert "find_errors" in err, err
    err = await call_tool_error(client, "get_error_details", {"error_id": "0123456789ab"})
    assert "no error group" in err, err
    err = await call_tool_error(client, "query_metrics", {"metric": "my.countr"})
    assert "did you mean" in err and "my.counter" in err, err


WRITES = [
    "DELETE FROM otel_logs",
    "INSERT INTO otel_logs (\"Body\") VALUES ('x')",
    "UPDATE otel_logs SET \"Body\" = 'x'",
    "DROP TABLE otel_logs",
    "CREATE TABLE evil AS SELECT 1",
    "ATTACH '/tmp/obsmcp-evil.duckdb' AS evil",
    "COPY otel_logs TO '/tmp/obsmcp-evil.csv'",
    "SET enable_external_access = true",
    "INSTALL httpfs",
    "CHECKPOINT",
    "SELECT 1; DELETE FROM otel_logs",
    "SELECT 1; DROP TABLE otel_traces;",
    "WITH d AS (DELETE FROM otel_logs RETURNING *) SELECT count(*) FROM d",
]


@pytest.mark.anyio
@pytest.mark.parametrize("sql", WRITES)
async def test_sql_that_writes_is_refused(client: Any, sql: str) -> None:
    before = await table_counts(client)
    assert before["otel_logs"] > 0
    err = await call_tool_error(client, "query_sql", {"sql": sql})
    # Refused before it runs (read-only / one statement), or by DuckDB itself for a nested DELETE.
    assert any(w in err for w in ("read-only", "one statement", "does not parse", "data-modifying")), err
    assert await table_counts(client) == before, f"{sql!r} changed the store"
    assert not Path("/tmp/obsmcp-evil.csv").exists()


FILE_READS = [
    ("SELECT * FROM read_csv('/etc/passwd')", "disabled"),
    ("SELECT * FROM read_text('/etc/passwd')", "disabled"),
    ("SELECT * FROM glob('/etc/*')", "disabled"),
    ("SELECT * FROM read_parquet('/etc/hosts')", "disabled"),
    ("SELECT content FROM read_blob('/etc/hostname')", "disabled"),
    ("SELECT * FROM read_csv('https://example.com/x.csv')", "disabled"),
    # A bare path is not even looked up as a file: it is an unknown table.
    ("SELECT * FROM '/etc/passwd'", "does not exist"),
]


@pytest.mark.anyio
@pytest.mark.parametrize("sql,why", FILE_READS)
async def test_sql_reading_files_is_refused(client: Any, sql: str, why: str) -> None:
    r = await client.call_tool("query_sql", {"sql": sql})
    text = r.content[0].text
    assert r.is_error, f"{sql!r} was allowed: {text[:300]}"
    assert "root:" not in text and "localhost" not in text
    # Refused because file and network access are off, not because the file happened to be unreadable.
    assert why in text, text


@pytest.mark.anyio
async def test_bad_cursor(client: Any) -> None:
    err = await call_tool_error(client, "search_logs", {"cursor": "garbage!", "start": EXAMPLES_START})
    assert "cursor" in err and "next_cursor" in err, err
    # A real cursor from another query is refused too, not silently applied.
    r = await call_tool(client, "search_logs", {"limit": 1, "start": EXAMPLES_START})
    cursor = r.structured_content["next_cursor"]
    assert cursor, r.structured_content
    err = await call_tool_error(
        client, "search_logs", {"cursor": cursor, "limit": 1, "start": EXAMPLES_START, "service": "checkout"}
    )
    assert "different query" in err, err
    r2 = await call_tool(client, "search_logs", {"cursor": cursor, "limit": 1, "start": EXAMPLES_START})
    assert r2.structured_content["logs"] != r.structured_content["logs"]


@pytest.mark.anyio
async def test_out_of_range_arguments(client: Any) -> None:
    assert "1..500" in await call_tool_error(client, "search_logs", {"limit": 0})
    assert "error, ok or unset" in await call_tool_error(client, "search_traces", {"status": "broken"})
    assert "severity" in await call_tool_error(client, "search_logs", {"min_severity": "loud"})
    assert "sort" in await call_tool_error(client, "find_errors", {"sort": "random"})


# -- OTLP over HTTP against a running server ---------------------------------------------------------


@pytest.fixture(scope="module")
def small_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    tmp = tmp_path_factory.mktemp("bad-otlp")
    srv = ServerProcess(tmp / "data", tmp, env={"OBSMCP_OTLP_MAX_BODY_BYTES": str(MAX_BODY)})
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
async def otlp(small_server: ServerProcess) -> AsyncIterator[Any]:
    """Send a bad request, then prove the store did not change and a good request still works."""

    class Checker:
        def __init__(self, http: httpx.AsyncClient, mcp: Any) -> None:
            self.http, self.mcp, self.n = http, mcp, 0

        async def post(self, path: str, content: Any, headers: dict[str, str]) -> httpx.Response:
            return await self.http.post(f"{small_server.otlp_url}{path}", content=content, headers=headers)

        async def refused(self, path: str, content: Any, headers: dict[str, str], status: int) -> httpx.Response:
            before = await table_counts(self.mcp)
            r = await self.post(path, content, headers)
            assert r.status_code == status, f"expected {status}, got {r.status_code}: {r.text[:500]}"
            assert await table_counts(self.mcp) == before, "a refused request left rows behind"
            await self.still_works()
            return r

        async def still_works(self) -> None:
            self.n += 1
            marker = f"still-works-{self.n}-{id(self)}"
            r = await self.post("/v1/logs", otlp_logs_protobuf("canary", [marker]), PROTOBUF)
            assert r.status_code == 200, r.text
            res = await call_tool(self.mcp, "search_logs", {"query": marker})
            assert res.structured_content["total"] == 1
            assert small_server.healthy()

    async with httpx.AsyncClient(timeout=60) as http, Client(small_server.mcp_url) as mcp:
        yield Checker(http, mcp)


def _status(r: httpx.Response) -> status_pb2.Status:
    assert r.headers["content-type"].startswith("application/x-protobuf"), r.headers
    st = status_pb2.Status()
    st.ParseFromString(r.content)
    return st


@pytest.mark.anyio
async def test_malformed_protobuf_is_400_with_a_status_body(otlp: Any) -> None:
    # Field 1 (resource_logs) claims 2**35 bytes that are not there.
    r = await otlp.refused("/v1/logs", b"\x0a\x80\x80\x80\x80\x80\x01garbage", PROTOBUF, 400)
    st = _status(r)
    assert st.code == 3 and "malformed" in st.message, st  # INVALID_ARGUMENT, and says what is wrong


@pytest.mark.anyio
async def test_malformed_json_is_400_with_a_message(otlp: Any) -> None:
    r = await otlp.refused("/v1/logs", b'{"resourceLogs": [', JSON, 400)
    assert r.headers["content-type"].startswith("application/json")
    assert "JSON" in r.json()["message"], r.json()
    r = await otlp.refused("/v1/traces", b'{"resourceSpans": "not a list"}', JSON, 400)
    assert r.json()["message"], r.json()


@pytest.mark.anyio
async def test_malformed_record_after_good_ones_stores_nothing(otlp: Any) -> None:
    req = otlp_logs_json("atomic", ["first-good-record", "second-good-record"])
    req["resourceLogs"][0]["scopeLogs"][0]["logRecords"].append({"timeUnixNano": "yesterday", "body": {}})
    r = await otlp.refused("/v1/logs", json.dumps(req).encode(), JSON, 400)
    assert "timeUnixNano" in r.json()["message"], r.json()
    res = await call_tool(otlp.mcp, "search_logs", {"query": "good-record"})
    assert res.structured_content["total"] == 0


@pytest.mark.anyio
@pytest.mark.parametrize("ctype", ["text/plain", "application/xml", ""])
async def test_wrong_content_type_is_415(otlp: Any, ctype: str) -> None:
    body = otlp_logs_protobuf("wrong-type", ["never stored"])
    r = await otlp.refused("/v1/logs", body, {"Content-Type": ctype} if ctype else {}, 415)
    assert "application/x-protobuf" in r.text and "application/json" in r.text


@pytest.mark.anyio
async def test_unsupported_content_encoding_is_415(otlp: Any) -> None:
    body = otlp_logs_protobuf("br", ["never stored"])
    r = await otlp.refused("/v1/logs", body, {**PROTOBUF, "Content-Encoding": "br"}, 415)
    assert "gzip" in _status(r).message


@pytest.mark.anyio
async def test_oversized_body_is_413(otlp: Any) -> None:
    big = otlp_logs_protobuf("big", ["x" * 1000] * 80)
    assert len(big) > MAX_BODY
    r = await otlp.refused("/v1/logs", big, PROTOBUF, 413)
    assert str(MAX_BODY) in _status(r).message

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: the cap applies while streaming
        for i in range(0, len(big), 8192):
            yield big[i : i + 8192]

    await otlp.refused("/v1/logs", chunks(), PROTOBUF, 413)


@pytest.mark.anyio
async def test_gzip_bomb_is_413_and_the_server_stays_healthy(otlp: Any) -> None:
    bomb = gzip.compress(b"\0" * (60 * 1024 * 1024), compresslevel=9)  # 60 MiB of zeros in ~60 KiB
    assert len(bomb) < MAX_BODY
    r = await otlp.refused("/v1/logs", bomb, {**PROTOBUF, "Content-Encoding": "gzip"}, 413)
    assert "decompression" in _status(r).message


@pytest.mark.anyio
async def test_truncated_gzip_is_400(otlp: Any) -> None:
    whole = gzip.compress(otlp_logs_protobuf("truncated", [f"record {i}" for i in range(50)]))
    r = await otlp.refused("/v1/logs", whole[: len(whole) // 2], {**PROTOBUF, "Content-Encoding": "gzip"}, 400)
    assert "gzip" in _status(r).message
    await otlp.refused("/v1/logs", b"this is not gzip", {**PROTOBUF, "Content-Encoding": "gzip"}, 400)


@pytest.mark.anyio
async def test_partial_success_reports_rejected_spans_and_keeps_the_good_one(otlp: Any) -> None:
    now = 1_700_000_000_000_000_000
    span = {
        "traceId": "5b8efff798038103d269b633813fc60c",
        "name": "good-span",
        "kind": 2,
        "startTimeUnixNano": str(now),
        "endTimeUnixNano": str(now + 1000),
    }
    req = {
        "resourceSpans": [
            {
                "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "partial"}}]},
                "scopeSpans": [
                    {
                        "spans": [
                            {**span, "spanId": "eee19b7ec3c1b174"},
                            {**span, "spanId": "eee19b7e", "name": "bad-span"},  # hex, but 4 bytes instead of 8
                        ]
                    }
                ],
            }
        ]
    }
    r = await otlp.post("/v1/traces", json.dumps(req).encode(), JSON)
    assert r.status_code == 200, r.text
    partial = r.json()["partialSuccess"]
    assert int(partial["rejectedSpans"]) == 1, partial
    assert partial["errorMessage"], partial
    res = await call_tool(
        otlp.mcp, "query_sql", {"sql": 'SELECT "SpanName" FROM otel_traces WHERE "ServiceName" = \'partial\''}
    )
    assert res.structured_content["rows"] == [["good-span"]]


@pytest.mark.anyio
async def test_partial_success_in_protobuf(otlp: Any) -> None:
    from opentelemetry.proto.common.v1 import common_pb2
    from opentelemetry.proto.resource.v1 import resource_pb2
    from opentelemetry.proto.trace.v1 import trace_pb2

    now = 1_700_000_000_000_000_000
    good = trace_pb2.Span(
        trace_id=b"\x01" * 16,
        span_id=b"\x02" * 8,
        name="pb-good",
        kind=2,
        start_time_unix_nano=now,
        end_time_unix_nano=now + 5,
    )
    bad = trace_pb2.Span(
        trace_id=b"\x01" * 16,
        span_id=b"\x03" * 3,
        name="pb-bad",
        kind=2,
        start_time_unix_nano=now,
        end_time_unix_nano=now + 5,
    )
    req = trace_service_pb2.ExportTraceServiceRequest(
        resource_spans=[
            trace_pb2.ResourceSpans(
                resource=resource_pb2.Resource(
                    attributes=[
                        common_pb2.KeyValue(key="service.name", value=common_pb2.AnyValue(string_value="partial-pb"))
                    ]
                ),
                scope_spans=[trace_pb2.ScopeSpans(spans=[good, bad])],
            )
        ]
    )
    r = await otlp.post("/v1/traces", req.SerializeToString(), PROTOBUF)
    assert r.status_code == 200, r.text
    resp = trace_service_pb2.ExportTraceServiceResponse()
    resp.ParseFromString(r.content)
    assert resp.partial_success.rejected_spans == 1, resp
    res = await call_tool(
        otlp.mcp, "query_sql", {"sql": 'SELECT "SpanName" FROM otel_traces WHERE "ServiceName" = \'partial-pb\''}
    )
    assert res.structured_content["rows"] == [["pb-good"]]


@pytest.mark.anyio
async def test_non_hex_span_id_in_json_is_a_malformed_request(otlp: Any) -> None:
    now = 1_700_000_000_000_000_000
    req = {
        "resourceSpans": [
            {
                "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "non-hex"}}]},
                "scopeSpans": [
                    {
                        "spans": [
                            {
                                "traceId": "5b8efff798038103d269b633813fc60c",
                                "spanId": "eee19b7ec3c1b175",
                                "name": "ok",
                                "startTimeUnixNano": str(now),
                                "endTimeUnixNano": str(now + 1),
                            },
                            {
                                "traceId": "5b8efff798038103d269b633813fc60c",
                                "spanId": "not-hex!",
                                "name": "bad",
                                "startTimeUnixNano": str(now),
                                "endTimeUnixNano": str(now + 1),
                            },
                        ]
                    }
                ],
            }
        ]
    }
    r = await otlp.refused("/v1/traces", json.dumps(req).encode(), JSON, 400)
    message = r.json()["message"]
    assert "spans[1].spanId" in message and "hex" in message, message
