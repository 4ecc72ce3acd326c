"""obsmcp observes itself: /metrics (checked by promtool, scraped by a real Prometheus), /metrics/json, /health,
the tool_call log event, and self-tracing to another obsmcp or into its own store.

Everything runs against real `obsmcp serve --http` processes and the MCP SDK client.
"""

from __future__ import annotations

import contextlib
import json
import re
import resource
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import httpx
import pytest
from mcp import Client
from prometheus_client.parser import text_string_to_metric_families

from obsmcp import metrics, telemetry
from obsmcp.config import Settings
from obsmcp.runtime import Runtime
from tests.conftest import (
    OBSMCP,
    ServerProcess,
    call_tool,
    call_tool_error,
    clean_env,
    free_port,
    otlp_logs_protobuf,
    run_cli,
    sql_scalar,
)

if TYPE_CHECKING:
    from tests.prometheus import PrometheusBinaries, PrometheusServer

# The fixtures prometheus_binaries and prometheus_factory come from tests/prometheus.py (a plugin named in
# conftest.py). Its functions are imported inside the tests: a module imported before pytest loads it as a plugin
# would miss pytest's assertion rewriting.
# Servers here need no decode worker processes (small requests): they start faster without them.
NO_WORKERS = {"OBSMCP_INGEST_DECODE_PROCESSES": "0"}

# A value that must never reach a log line: passed to tools as an argument.
SECRET = "sk-proj-" + uuid.uuid4().hex + uuid.uuid4().hex
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(url: str) -> str:
    r = httpx.get(url + "/metrics", timeout=10)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain"), r.headers["content-type"]
    return r.text


def samples(text: str, prefix: str = "obsmcp_") -> Samples:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name.startswith(prefix)
    }


def sample(text: str, name: str, **labels: str) -> float | None:
    return samples(text, name).get((name, frozenset(labels.items())))


def log_events(text: str, event: str) -> list[dict[str, Any]]:
    out = []
    for line in text.splitlines():
        if line.startswith("{"):
            record = json.loads(line)
            if record.get("event") == event:
                out.append(record)
    return out


def wait_until(check: Any, timeout: float = 20.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.1)
    raise AssertionError(f"{what} did not hold within {timeout:g}s; last value: {last!r}")


# -- one server, observed after a known set of tool calls --------------------------------------------------


@pytest.fixture(scope="module")
def observed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server that answered 2 x list_services (ok), search_logs with a bad start (bad_request, refused by
    the tool), get_trace without its argument (bad_request, refused by the SDK's input schema) and query_sql
    with a secret in its text (ok)."""
    base = tmp_path_factory.mktemp("observed")
    (base / "logs").mkdir()
    srv = ServerProcess(base / "data", base / "logs", NO_WORKERS).start()

    async def calls() -> None:
        async with Client(srv.mcp_url) as client:
            await call_tool(client, "list_services")
            await call_tool(client, "list_services")
            await call_tool_error(client, "search_logs", {"query": SECRET, "start": "not-a-time"})
            await call_tool_error(client, "get_trace", {})
            await call_tool(client, "query_sql", {"sql": f"SELECT '{SECRET}' AS answer_column_xyz"})

    try:
        anyio.run(calls)
        yield srv
    finally:
        srv.stop()


@pytest.mark.slow
def test_tool_calls_are_counted_by_tool_and_outcome(observed: ServerProcess) -> None:
    text = scrape(observed.base_url)
    calls = "obsmcp_tool_calls_total"
    assert sample(text, calls, tool="list_services", outcome="ok") == 2
    assert sample(text, calls, tool="search_logs", outcome="bad_request") == 1
    assert sample(text, calls, tool="get_trace", outcome="bad_request") == 1, "SDK-refused calls count too"
    assert sample(text, calls, tool="query_sql", outcome="ok") == 1
    assert sample(text, "obsmcp_tool_call_duration_seconds_count", tool="list_services") == 2
    # Answer sizes are observed for answers only (2 list_services answers of a few hundred bytes).
    assert sample(text, "obsmcp_tool_result_bytes_count", tool="list_services") == 2
    assert (sample(text, "obsmcp_tool_result_bytes_sum", tool="list_services") or 0) > 100
    # Scrape-time gauges and process metrics are there too.
    assert sample(text, "obsmcp_store_rows", table="otel_traces") == 0
    assert sample(text, "obsmcp_ingest_queue_rows") == 0
    assert (sample(text, "obsmcp_store_bytes") or 0) > 0
    assert "process_resident_memory_bytes" in text and "obsmcp_uptime_seconds" in text


@pytest.mark.slow
def test_metrics_pass_promtool_check_metrics(observed: ServerProcess, prometheus_binaries: PrometheusBinaries) -> None:
    from tests.prometheus import check_metrics

    for url in (observed.base_url, observed.otlp_url):
        checked = check_metrics(prometheus_binaries, scrape(url))
        assert checked.returncode == 0, f"promtool check metrics on {url}/metrics:\n{checked.stdout}{checked.stderr}"


@pytest.mark.slow
def test_a_real_prometheus_scrapes_both_listeners(observed: ServerProcess, prometheus_factory: Any) -> None:
    from tests.prometheus import scrape_job

    prom: PrometheusServer = prometheus_factory(
        [
            scrape_job("obsmcp", [f"127.0.0.1:{observed.port}"]),
            scrape_job("obsmcp-otlp", [f"127.0.0.1:{observed.otlp_port}"]),
        ]
    )
    prom.wait_for('up{job="obsmcp"} == 1')
    prom.wait_for('up{job="obsmcp-otlp"} == 1')
    result = prom.wait_for('obsmcp_tool_calls_total{job="obsmcp", tool="list_services", outcome="ok"}')
    assert [float(r["value"][1]) for r in result] == [2.0]
    rows = prom.query('obsmcp_store_rows{job="obsmcp-otlp"}')
    assert {r["metric"]["table"] for r in rows} >= {"otel_logs", "otel_traces"}


@pytest.mark.slow
def test_metrics_json_has_the_same_samples_as_metrics(observed: ServerProcess) -> None:
    text = scrape(observed.base_url)
    body = httpx.get(observed.base_url + "/metrics/json", timeout=10).json()
    from_json: Samples = {
        (s["name"], frozenset(s["labels"].items())): s["value"]
        for family in body["metrics"]
        for s in family["samples"]
        if s["name"].startswith("obsmcp_")
    }
    # Nothing happens between the two requests, except the clock: uptime differs.
    stable = {k: v for k, v in samples(text).items() if k[0] != "obsmcp_uptime_seconds"}
    assert stable == {k: v for k, v in from_json.items() if k[0] != "obsmcp_uptime_seconds"}
    families = {f["name"]: f for f in body["metrics"]}
    assert families["obsmcp_tool_calls"]["type"] == "counter"
    assert families["obsmcp_tool_call_duration_seconds"]["type"] == "histogram"
    assert families["obsmcp_tool_calls"]["help"].startswith("MCP tool calls")


@pytest.mark.slow
def test_each_tool_call_logs_one_json_event_without_arguments_or_answer(observed: ServerProcess) -> None:
    text = observed.log_text()
    events = log_events(text, "tool_call")
    by_tool = {(e["tool"], e["outcome"]) for e in events}
    assert by_tool == {
        ("list_services", "ok"),
        ("search_logs", "bad_request"),
        ("get_trace", "bad_request"),
        ("query_sql", "ok"),
    }
    assert len(events) == 5
    for e in events:
        assert isinstance(e["duration_ms"], int | float) and e["duration_ms"] >= 0
        assert isinstance(e["result_bytes"], int) and e["result_bytes"] > 0
        assert re.fullmatch(r"[0-9a-f]{16}", e["request_id"]), e
        assert e["jsonrpc_id"] and e["level"] == "info" and e["timestamp"].endswith("Z")
    assert len({e["request_id"] for e in events}) == 5, "one request id per call"
    # Never the payload: neither the arguments (a secret here) nor the answer (its column name).
    assert SECRET not in text
    assert "answer_column_xyz" not in text


# -- /health -----------------------------------------------------------------------------------------------


def health(srv: Any) -> tuple[int, dict[str, Any]]:
    r = httpx.get(srv.base_url + "/health", timeout=15)
    return r.status_code, r.json()


def check_of(body: dict[str, Any], name: str) -> dict[str, Any]:
    return next(c for c in body["checks"] if c["name"] == name)


@pytest.mark.slow
def test_health_is_degraded_while_the_ingest_queue_is_nearly_full(server_factory: Any) -> None:
    # A 1000-row queue and a writer that waits 60 s to fill a batch: 900 rows stay queued.
    srv = server_factory(
        env={
            "OBSMCP_INGEST_QUEUE_MAX_ROWS": "1000",
            "OBSMCP_INGEST_FLUSH_MS": "60000",
            "OBSMCP_INGEST_BATCH_ROWS": "1000000",
            **NO_WORKERS,
        }
    )
    status, body = health(srv)
    assert (status, body["status"]) == (200, "healthy")
    body_bytes = otlp_logs_protobuf("queued", [f"line {i}" for i in range(900)])

    def send() -> None:
        # Answered only when the batch commits (at shutdown here); the test is about the wait before that.
        with contextlib.suppress(httpx.HTTPError):
            httpx.post(
                srv.otlp_url + "/v1/logs",
                content=body_bytes,
                headers={"Content-Type": "application/x-protobuf"},
                timeout=90,
            )

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    status, body = wait_until(lambda: (lambda h: h if h[1]["status"] != "healthy" else None)(health(srv)))
    assert (status, body["status"]) == (200, "degraded"), body
    queue = check_of(body, "ingest_queue")
    assert queue["status"] == "warn" and queue["depth"] == 900 and queue["limit"] == 1000
    assert "1000-row limit" in queue["detail"]
    assert sample(scrape(srv.base_url), "obsmcp_ingest_queue_rows") == 900
    srv.stop()
    sender.join(30)


class PipedServer:
    """`obsmcp serve --http` with its output on a pipe, read by a thread.

    For tests that limit the size of files the server may write (RLIMIT_FSIZE applies to every regular file,
    a log file too) and for flags ServerProcess does not pass.
    """

    def __init__(self, tmp: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.data_dir = tmp / "data"
        self.port, self.otlp_port = free_port(), free_port()
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            [
                str(OBSMCP),
                "serve",
                "--http",
                "--port",
                str(self.port),
                "--otlp-port",
                str(self.otlp_port),
                "--data-dir",
                str(self.data_dir),
                "--log-format",
                "json",
                *args,
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=clean_env(env),
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        wait_until(self._healthy, 30, f"obsmcp serve on :{self.port} healthy (output: {self.lines[-20:]})")

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def _healthy(self) -> bool:
        assert self.proc.poll() is None, "\n".join(self.lines)
        with contextlib.suppress(httpx.HTTPError):
            return httpx.get(self.base_url + "/health", timeout=2).json().get("status") == "healthy"
        return False

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def mcp_url(self) -> str:
        return self.base_url + "/mcp"

    @property
    def otlp_url(self) -> str:
        return f"http://127.0.0.1:{self.otlp_port}"

    def log_text(self) -> str:
        return "\n".join(self.lines)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._reader.join(10)


@pytest.fixture
def piped(tmp_path: Path) -> Iterator[Any]:
    started: list[PipedServer] = []

    def make(*args: str, env: dict[str, str] | None = None) -> PipedServer:
        srv = PipedServer(tmp_path / f"piped-{len(started)}", *args, env=env)
        started.append(srv)
        return srv

    yield make
    for srv in started:
        srv.stop()


@pytest.mark.slow
def test_health_is_unhealthy_503_while_the_store_cannot_write_and_recovers(piped: Any) -> None:
    srv = piped(env=NO_WORKERS)
    _, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    # The disk is "full" for this process: no file it writes may grow past 1 byte (the DuckDB WAL included).
    resource.prlimit(srv.proc.pid, resource.RLIMIT_FSIZE, (1, hard))
    try:
        status, body = wait_until(lambda: (lambda h: h if h[0] != 200 else None)(health(srv)))
        assert (status, body["status"]) == (503, "unhealthy"), body
        store = check_of(body, "store")
        assert store["status"] == "fail" and store["writable"] is False
        assert "cannot commit writes" in store["detail"] and "File too large" in store["detail"]
        # What the check predicts is what ingest sees: OTLP senders are told to retry later.
        r = httpx.post(
            srv.otlp_url + "/v1/logs",
            content=otlp_logs_protobuf("svc", ["x"]),
            headers={"Content-Type": "application/x-protobuf"},
            timeout=30,
        )
        assert r.status_code == 503, r.text
    finally:
        resource.prlimit(srv.proc.pid, resource.RLIMIT_FSIZE, (hard, hard))
    status, body = wait_until(lambda: (lambda h: h if h[0] == 200 else None)(health(srv)))
    assert body["status"] == "healthy", body


@pytest.fixture
def isolated_outcomes(monkeypatch: pytest.MonkeyPatch) -> telemetry.ToolOutcomeWindow:
    """A fresh error-rate window: other tests in this process make tool calls too."""
    window = telemetry.ToolOutcomeWindow()
    monkeypatch.setattr(telemetry, "TOOL_OUTCOMES", window)
    return window


def test_health_is_degraded_by_recent_server_side_tool_errors(
    tmp_path: Path, isolated_outcomes: telemetry.ToolOutcomeWindow
) -> None:
    rt = Runtime.open(Settings(data_dir=tmp_path, health_error_min_calls=4, health_error_rate=0.25), in_memory=True)
    try:
        for outcome in ("ok", "ok", "bad_request", "bad_request", "bad_request"):
            telemetry.record_tool_call("list_services", outcome, 0.01, None)
        assert rt.health()["status"] == "healthy", "bad input is the caller's error, not the server's"
        telemetry.record_tool_call("list_services", "error", 0.01, None)
        telemetry.record_tool_call("list_services", "error", 0.01, None)
        body = rt.health()
        assert body["status"] == "degraded"
        errors = check_of(body, "tool_error_rate")
        assert (errors["status"], errors["calls"], errors["errors"]) == ("warn", 7, 2)
    finally:
        rt.close()


def test_the_error_rate_window_forgets_old_calls() -> None:
    window = telemetry.ToolOutcomeWindow(horizon_s=600)
    for i in range(10):
        window.record("error", now=1000.0 + i)
    window.record("ok", now=1400.0)
    assert window.counts(300, now=1400.0) == (1, 0)
    assert window.counts(600, now=1400.0) == (11, 10)
    window.record("ok", now=1700.0)  # past the horizon: the errors are dropped
    assert window.counts(3600, now=1700.0) == (2, 0)


def test_health_is_degraded_while_a_backend_circuit_is_open(tmp_path: Path) -> None:
    rt = Runtime.open(Settings(data_dir=tmp_path), in_memory=True)
    try:
        metrics.CIRCUIT_STATE.labels("test-backend").set(metrics.CIRCUIT_STATE_VALUE["open"])
        body = rt.health()
        circuits = check_of(body, "circuits")
        assert body["status"] == "degraded" and circuits["open"] == ["test-backend"]
        metrics.CIRCUIT_STATE.labels("test-backend").set(metrics.CIRCUIT_STATE_VALUE["half_open"])
        assert check_of(rt.health(), "circuits")["status"] == "ok"
    finally:
        metrics.CIRCUIT_STATE.remove("test-backend")
        rt.close()


# -- logs ----------------------------------------------------------------------------------------------------


def test_log_events_never_carry_secrets() -> None:
    # The processor every log event goes through (configure_logging puts it before both renderers).
    line = telemetry.redact_secrets(
        None,
        "info",
        {
            "event": "backend_configured",
            "url": "https://user:hunter2pass@example.com/api",
            "api_key": "dd-0123456789abcdef",
            "authorization": "Bearer abcdefghijklmnop",
            "detail": f"retrying with token={SECRET}",
            "max_tokens": 2000,
        },
    )
    assert line["api_key"] == "[REDACTED]" and line["authorization"] == "[REDACTED]"
    assert "hunter2pass" not in line["url"] and SECRET not in line["detail"]
    assert line["max_tokens"] == 2000, "a count of tokens is not a token"


# -- self-tracing ------------------------------------------------------------------------------------------

FAST_EXPORT = {"OTEL_BSP_SCHEDULE_DELAY": "100", "OTEL_BLRP_SCHEDULE_DELAY": "100"}


@pytest.mark.slow
@pytest.mark.anyio
async def test_self_tracing_sends_spans_and_logs_to_another_obsmcp(server_factory: Any) -> None:
    collector = server_factory(env=NO_WORKERS)
    traced = server_factory(env={"OTEL_EXPORTER_OTLP_ENDPOINT": collector.otlp_url, **FAST_EXPORT, **NO_WORKERS})
    async with Client(traced.mcp_url) as client:
        await call_tool(client, "list_services")
    # Stopped first, so its last export finds the collector up.
    traced.stop()
    [event] = log_events(traced.log_text(), "tool_call")
    trace_id = event["trace_id"]
    assert re.fullmatch(r"[0-9a-f]{32}", trace_id), event

    async with Client(collector.mcp_url) as client:
        deadline = time.monotonic() + 20
        found: list[dict[str, Any]] = []
        while not found and time.monotonic() < deadline:
            # Errors while nothing has arrived yet ("no service named 'obsmcp'").
            r = await client.call_tool("search_traces", {"service": "obsmcp", "start": "10m"})
            if not r.is_error:
                found = [t for t in r.structured_content["traces"] if t["trace_id"] == trace_id]
            await anyio.sleep(0.2)
        assert found, f"obsmcp's span for trace {trace_id} did not arrive at the collector"
        assert "tools/call list_services" in found[0]["root"]
        logs = await call_tool(client, "search_logs", {"service": "obsmcp", "trace_id": trace_id, "start": "10m"})
        bodies = [row["body"] for row in logs.structured_content["logs"]]
        assert any("tool_call" in b for b in bodies), bodies


@pytest.mark.slow
@pytest.mark.anyio
async def test_self_ingest_stores_obsmcps_own_telemetry_without_feeding_itself(piped: Any) -> None:
    srv = piped("--self-ingest", env={**FAST_EXPORT, **NO_WORKERS})
    calls = 0
    own_spans = "SELECT count(*) FROM otel_traces WHERE ServiceName = 'obsmcp' AND SpanName = 'tools/call query_sql'"
    async with Client(srv.mcp_url) as client:
        # query_sql, not a tool that names a service: those cache the service list for a few seconds.
        deadline = time.monotonic() + 20
        while await sql_scalar(client, own_spans) == 0 and time.monotonic() < deadline:
            calls += 1
            await anyio.sleep(0.1)
        calls += 1
        # The agent's way in: obsmcp is a service like any other.
        r = await call_tool(client, "search_traces", {"service": "obsmcp", "operation": "query_sql"})
        calls += 1
        assert r.structured_content["traces"], "obsmcp's own query_sql span is not in its store"
    srv.stop()
    assert srv.proc.returncode == 0, srv.log_text()[-3000:]
    assert "self_ingest_failed" not in srv.log_text()

    # After a clean stop everything buffered is flushed: exactly one span and one log event per tool call.
    # If ingesting its own telemetry made new telemetry, there would be more of both.
    own = "ServiceName = 'obsmcp'"
    sql = (
        f"SELECT (SELECT count(*) FROM otel_traces WHERE {own} AND SpanName LIKE 'tools/call %'), "
        f"(SELECT count(*) FROM otel_traces WHERE {own} AND SpanName NOT LIKE 'tools/call %' "
        "AND SpanName NOT IN ('server/discover', 'initialize', 'notifications/initialized', 'tools/list', 'ping')), "
        f"(SELECT count(*) FROM otel_logs WHERE {own} AND Body = 'tool_call'), "
        "(SELECT count(*) FROM otel_logs l JOIN otel_traces t ON l.TraceId = t.TraceId AND l.SpanId = t.SpanId "
        f"WHERE l.{own} AND l.Body = 'tool_call')"
    )
    out = run_cli("tool", "query_sql", f"sql={sql}", "--json", "--data-dir", str(srv.data_dir))
    assert out.returncode == 0, out.stderr
    spans, other, tool_logs, linked = json.loads(out.stdout)["rows"][0]
    assert (spans, other, tool_logs, linked) == (calls, 0, calls, calls)


def test_an_otlp_endpoint_that_is_this_server_is_recognised(monkeypatch: pytest.MonkeyPatch) -> None:
    from obsmcp.selftrace import _is_own, otlp_endpoints

    own = ["http://127.0.0.1:4318", "http://127.0.0.1:8000/mcp"]
    assert _is_own("http://localhost:4318/v1/traces", own)
    assert _is_own("http://127.0.0.1:8000/v1/logs", own), "OTLP is served on the MCP port too"
    assert not _is_own("http://collector.internal:4318/v1/traces", own)
    assert not _is_own("http://localhost:4319/v1/traces", own)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/")
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", raising=False)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", "http://logs:4318/v1/logs")
    assert otlp_endpoints() == ("http://collector:4318/v1/traces", "http://logs:4318/v1/logs")
