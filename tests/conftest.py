"""Shared helpers for the end-to-end tests: real `obsmcp` processes on free ports, real MCP clients.

Nothing here is mocked. A server is the installed console script (`.venv/bin/obsmcp serve --http`) on a
temporary data directory; tests talk to it with the MCP SDK client and plain HTTP, exactly as users do.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest

# A real Prometheus server and promtool for the tests that need one (fixtures prometheus_binaries/_factory).
pytest_plugins = ["tests.prometheus", "tests.fleet_index"]

REPO = Path(__file__).resolve().parents[1]
OBSMCP = Path(sys.executable).parent / "obsmcp"

# The telemetry tables of the store (OpenTelemetry Collector ClickHouse exporter names).
TELEMETRY_TABLES = (
    "otel_logs",
    "otel_traces",
    "otel_metrics_gauge",
    "otel_metrics_sum",
    "otel_metrics_histogram",
    "otel_metrics_exponential_histogram",
    "otel_metrics_summary",
)
# The shared OTLP examples are from December 2018: tools reach them with an explicit start.
EXAMPLES_START = "2018-01-01T00:00:00Z"
# The tools served to agents by default (obsmcp.access.DEFAULT_CATEGORIES, within the definitions budget).
DEFAULT_TOOL_NAMES = {
    "list_services",
    "search_logs",
    "search_traces",
    "get_trace",
    "list_metrics",
    "query_metrics",
    "find_errors",
    "get_error_details",
    "query_sql",
    "investigate",
    "slo_report",
    "log_patterns",
    "find_bottlenecks",
    "service_map",
    "detect_anomalies",
    "render_chart",
    "list_alerts",
}
# Every read-only tool: what `--tools all` serves, and what in-process users (obsmcp tool, tests) have.
TOOL_NAMES = DEFAULT_TOOL_NAMES | {
    "list_alert_rules",
    "create_dashboard",
    "list_mcp_servers",
    "check_mcp_updates",
}
# Tools that change something: served only with --enable-writes.
WRITE_TOOL_NAMES = {
    "create_alert_rule",
    "update_alert_rule",
    "delete_alert_rule",
    "silence_alert",
    "push_dashboard",
}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def shared_data() -> Path:
    env = os.environ.get("OBSMCP_SHARED_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def otlp_examples() -> Path:
    path = shared_data() / "otlp-examples"
    if not (path / "trace.json").is_file():
        pytest.fail(f"shared test data not found at {path}: set OBSMCP_SHARED_DATA to the shared/data folder")
    return path


def example_files(examples: Path) -> list[Path]:
    return sorted(p for p in examples.glob("*.json"))


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# Variables that configure obsmcp besides OBSMCP_*: the vendors' own names for remote backends (and their *_FILE
# forms), and self-tracing. A developer's real Prometheus or Sentry must not leak into the tests.
_BACKEND_VARS = re.compile(
    r"^(PROMETHEUS_(URL|ENDPOINT)|LOKI_URL|TEMPO_URL|JAEGER_ENDPOINT|SENTRY_(AUTH_TOKEN|ORG|URL)|"
    r"DATADOG_(API|APP)_KEY|DD_(API_KEY|APP_KEY|APPLICATION_KEY|SITE)|OTEL_EXPORTER_OTLP_\w*)(_FILE)?$"
)


# What the test harness itself reads (not obsmcp settings).
_HARNESS_VARS = ("OBSMCP_SHARED_DATA", "OBSMCP_INSPECTOR")


def _is_obsmcp_setting(name: str) -> bool:
    if name in _HARNESS_VARS:
        return False
    return name.startswith("OBSMCP_") or bool(_BACKEND_VARS.match(name))


@pytest.fixture(scope="session", autouse=True)
def _no_developer_settings() -> Iterator[None]:
    """In-process tests build Settings() from os.environ too: run them without the developer's settings."""
    saved = {k: v for k, v in os.environ.items() if _is_obsmcp_setting(k)}
    for k in saved:
        del os.environ[k]
    yield
    os.environ.update(saved)


@pytest.fixture(autouse=True)
def _logging_restored() -> Iterator[None]:
    """A test that calls configure_logging binds structlog and the root logger to its captured stderr, which
    pytest closes afterwards: give the next test the configuration it started with."""
    import logging

    import structlog

    previous = structlog.get_config()
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    structlog.configure(**previous)
    root.handlers[:] = handlers
    root.setLevel(level)


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The parent environment without obsmcp's settings (a developer's own config must not leak in)."""
    env = {k: v for k, v in os.environ.items() if not _is_obsmcp_setting(k)}
    env["PYTHONUNBUFFERED"] = "1"
    # The shared OTLP examples are from 2018: keep them past the default 7-day retention.
    env["OBSMCP_RETENTION_DAYS"] = "36500"
    env.update(extra or {})
    return env


def run_cli(*args: str, env: Mapping[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(OBSMCP), *args], capture_output=True, text=True, timeout=timeout, env=clean_env(env))


class ServerProcess:
    """`obsmcp serve --http` as a subprocess on free ports, with its output in a log file."""

    def __init__(self, data_dir: Path, log_dir: Path, env: Mapping[str, str] | None = None) -> None:
        self.data_dir = data_dir
        self.log_dir = log_dir
        self.env = dict(env or {})
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.otlp_port = 0
        self.starts = 0
        self.log_path = log_dir / "server-0.log"

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def mcp_url(self) -> str:
        return f"{self.base_url}/mcp"

    @property
    def otlp_url(self) -> str:
        return f"http://127.0.0.1:{self.otlp_port}"

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def start(self, timeout: float = 30.0) -> ServerProcess:
        last = ""
        for _attempt in range(3):  # a free port can be taken between picking it and binding it
            self.port, self.otlp_port = free_port(), free_port()
            self.starts += 1
            self.log_path = self.log_dir / f"server-{self.starts}.log"
            with open(self.log_path, "wb") as log:
                self.proc = subprocess.Popen(
                    [
                        str(OBSMCP),
                        "serve",
                        "--http",
                        "--host",
                        "127.0.0.1",
                        "--port",
                        str(self.port),
                        "--otlp-port",
                        str(self.otlp_port),
                        "--data-dir",
                        str(self.data_dir),
                        "--log-format",
                        "json",
                    ],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=clean_env(self.env),
                )
            if self._wait_healthy(timeout):
                return self
            last = self.log_text()
            self.stop()
            if "in use" not in last:
                break
        raise AssertionError(f"obsmcp serve --http did not become healthy; its output:\n{last}")

    def _wait_healthy(self, timeout: float) -> bool:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            with contextlib.suppress(httpx.HTTPError):
                r = httpx.get(f"{self.base_url}/health", timeout=2)
                if r.status_code == 200 and r.json().get("status") == "healthy":
                    return True
            time.sleep(0.05)
        return False

    def healthy(self) -> bool:
        try:
            r = httpx.get(f"{self.base_url}/health", timeout=5)
        except httpx.HTTPError:
            return False
        return r.status_code == 200 and r.json().get("status") == "healthy"

    def owner(self) -> dict[str, Any]:
        return json.loads((self.data_dir / "owner.json").read_text())

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs (a crash, a power cut of the process)."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[Any]:
    """Start servers (optionally with extra environment); every one is stopped at teardown."""
    started: list[ServerProcess] = []

    def make(data_dir: Path | None = None, env: Mapping[str, str] | None = None) -> ServerProcess:
        n = len(started)
        log_dir = tmp_path / f"logs-{n}"
        log_dir.mkdir()
        srv = ServerProcess(data_dir or tmp_path / f"data-{n}", log_dir, env)
        started.append(srv)
        return srv.start()

    yield make
    for srv in started:
        srv.stop()


@pytest.fixture
def server(server_factory: Any) -> ServerProcess:
    """One running `obsmcp serve --http` on an empty temporary data directory."""
    return server_factory()


# -- demo data in process ------------------------------------------------------------------------------


@dataclasses.dataclass
class DemoStore:
    """An in-memory store holding one generated demo dataset, and the incident injected into it."""

    runtime: Any  # obsmcp.runtime.Runtime
    truth: Any  # obsmcp.demo.Scenario
    cfg: Any  # obsmcp.demo.DemoConfig
    counts: dict[str, int]

    @property
    def ctx(self) -> Any:
        return self.runtime.ctx

    def window(self, before_incident_s: float = 0.0) -> dict[str, str]:
        """start/end (ISO) covering the incident, optionally reaching back before it."""
        from obsmcp.timerange import format_ns

        start = self.truth.start_ns - int(before_incident_s * 1e9)
        end = self.cfg.end_ns + 10**9
        return {"start": format_ns(start), "end": format_ns(end)}


@pytest.fixture(scope="session")
def demo_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """demo_store(scenario, seed=1, **DemoConfig fields) -> DemoStore, generated once per session.

    Defaults: one hour at one root request per second (~45k spans, ~45k logs), the incident in the last 20
    minutes, ending now (so tools' default "last hour" ranges see it).
    """
    from obsmcp.config import Settings
    from obsmcp.demo import DemoConfig, scenario_truth
    from obsmcp.demo.loader import load
    from obsmcp.runtime import Runtime

    made: dict[tuple[Any, ...], DemoStore] = {}

    def get(scenario: str = "deploy-errors", seed: int = 1, **fields: Any) -> DemoStore:
        key = (scenario, seed, tuple(sorted(fields.items())))
        if key not in made:
            opts: dict[str, Any] = {"duration_s": 3600.0, "rate": 1.0, "incident_start_before_end_s": 1200.0}
            opts.update(fields)
            cfg = DemoConfig(scenario=scenario, seed=seed, **opts)
            rt = Runtime.open(Settings(data_dir=tmp_path_factory.mktemp("demo"), retention_days=36500), in_memory=True)
            counts = load(rt, cfg)
            made[key] = DemoStore(rt, scenario_truth(cfg), cfg, counts)
        return made[key]

    yield get
    for store in made.values():
        store.runtime.close()


# -- MCP helpers -------------------------------------------------------------------------------------


async def call_tool(client: Any, name: str, args: dict[str, Any] | None = None) -> Any:
    """Call a tool and insist it succeeded; the assertion message carries the tool's own text."""
    r = await client.call_tool(name, args or {})
    text = r.content[0].text if r.content else ""
    assert not r.is_error, f"{name}({args}) failed: {text}"
    return r


async def call_tool_error(client: Any, name: str, args: dict[str, Any] | None = None) -> str:
    """Call a tool that must fail; returns the error text the agent reads."""
    r = await client.call_tool(name, args or {})
    text = "\n".join(getattr(c, "text", "") for c in r.content)
    assert r.is_error, f"{name}({args}) was expected to fail but answered: {text[:500]}"
    return text


async def sql_scalar(client: Any, sql: str) -> Any:
    r = await call_tool(client, "query_sql", {"sql": sql})
    return r.structured_content["rows"][0][0]


async def table_counts(client: Any) -> dict[str, int]:
    sql = " UNION ALL ".join(f"SELECT '{t}' AS t, count(*) AS n FROM {t}" for t in TELEMETRY_TABLES)
    r = await call_tool(client, "query_sql", {"sql": sql})
    return {row[0]: int(row[1]) for row in r.structured_content["rows"]}


# -- OTLP requests -----------------------------------------------------------------------------------


def otlp_logs_protobuf(service: str, bodies: list[str], severity: int = 9) -> bytes:
    """A real ExportLogsServiceRequest (protobuf) with one log record per body, timestamped now."""
    from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
    from opentelemetry.proto.common.v1 import common_pb2
    from opentelemetry.proto.logs.v1 import logs_pb2
    from opentelemetry.proto.resource.v1 import resource_pb2

    now = time.time_ns()
    resource = resource_pb2.Resource(
        attributes=[common_pb2.KeyValue(key="service.name", value=common_pb2.AnyValue(string_value=service))]
    )
    records = [
        logs_pb2.LogRecord(
            time_unix_nano=now + i,
            observed_time_unix_nano=now + i,
            severity_number=severity,
            body=common_pb2.AnyValue(string_value=body),
        )
        for i, body in enumerate(bodies)
    ]
    req = logs_service_pb2.ExportLogsServiceRequest(
        resource_logs=[logs_pb2.ResourceLogs(resource=resource, scope_logs=[logs_pb2.ScopeLogs(log_records=records)])]
    )
    return req.SerializeToString()


def otlp_logs_json(service: str, bodies: list[str]) -> dict[str, Any]:
    """An OTLP/JSON logs export request (as a dict) with one record per body, timestamped now."""
    now = time.time_ns()
    return {
        "resourceLogs": [
            {
                "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": service}}]},
                "scopeLogs": [
                    {
                        "logRecords": [
                            {
                                "timeUnixNano": str(now + i),
                                "severityNumber": 9,
                                "severityText": "INFO",
                                "body": {"stringValue": b},
                            }
                            for i, b in enumerate(bodies)
                        ]
                    }
                ],
            }
        ]
    }
