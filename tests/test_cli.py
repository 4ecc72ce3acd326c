"""The `obsmcp` command line as a user runs it: help, ingest, tool, and clear errors without tracebacks."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import EXAMPLES_START, TOOL_NAMES, example_files, run_cli

SUBCOMMANDS = ("serve", "demo", "ingest", "tool")


def _no_traceback(proc: Any) -> None:
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout, proc.stderr


def test_top_level_help_lists_the_subcommands() -> None:
    r = run_cli("--help")
    assert r.returncode == 0, r.stderr
    for cmd in SUBCOMMANDS:
        assert cmd in r.stdout
    r = run_cli("--version")
    assert r.returncode == 0 and r.stdout.startswith("obsmcp "), r.stdout


@pytest.mark.parametrize("cmd", SUBCOMMANDS)
def test_subcommand_help(cmd: str) -> None:
    r = run_cli(cmd, "--help")
    assert r.returncode == 0, r.stderr
    assert "Usage:" in r.stdout and "--data-dir" in r.stdout, r.stdout


def test_tool_list_names_every_tool(tmp_path: Path) -> None:
    r = run_cli("tool", "--list", "--data-dir", str(tmp_path / "data"))
    assert r.returncode == 0, r.stderr
    names = {line.split()[0] for line in r.stdout.splitlines() if line.strip()}
    assert names == TOOL_NAMES, r.stdout


@pytest.fixture(scope="module")
def ingested(tmp_path_factory: pytest.TempPathFactory, otlp_examples: Path) -> Path:
    data = tmp_path_factory.mktemp("cli") / "data"
    r = run_cli("ingest", *map(str, example_files(otlp_examples)), "--data-dir", str(data))
    assert r.returncode == 0, r.stderr
    assert "1 traces items stored" in r.stdout and "4 metrics items stored" in r.stdout, r.stdout
    return data


def test_tool_prints_the_text_an_agent_gets(ingested: Path) -> None:
    r = run_cli("tool", "list_services", f"start={EXAMPLES_START}", "--data-dir", str(ingested))
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("list_services: 1 services"), r.stdout
    assert "my.service" in r.stdout


def test_tool_json_prints_structured_content(ingested: Path) -> None:
    r = run_cli("tool", "list_services", f"start={EXAMPLES_START}", "--json", "--data-dir", str(ingested))
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert [s["service"] for s in data["services"]] == ["my.service"]
    assert set(data["services"][0]["signals"]) == {"traces", "logs", "metrics"}

    r = run_cli(
        "tool", "search_logs", "query=example log", f"start={EXAMPLES_START}", "--json", "--data-dir", str(ingested)
    )
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["total"] == 1 and data["logs"][0]["body"] == "Example log record"


def test_tool_errors_exit_non_zero_with_the_explanation(ingested: Path) -> None:
    r = run_cli("tool", "get_trace", "trace_id=xyz", "--data-dir", str(ingested))
    assert r.returncode == 1
    assert "32 hex" in r.stdout + r.stderr
    _no_traceback(r)
    r = run_cli("tool", "list_service", "--data-dir", str(ingested))
    assert r.returncode == 2
    assert "did you mean list_services" in r.stderr, r.stderr
    _no_traceback(r)
    r = run_cli("tool", "search_logs", "query", "--data-dir", str(ingested))
    assert r.returncode == 2 and "key=value" in r.stderr, r.stderr
    _no_traceback(r)


def test_ingest_of_a_malformed_file_fails_cleanly(tmp_path: Path) -> None:
    bad = tmp_path / "broken-logs.json"
    bad.write_text('{"resourceLogs": [{"scopeLogs": [')
    data = tmp_path / "data"
    r = run_cli("ingest", str(bad), "--data-dir", str(data))
    assert r.returncode != 0
    assert "broken-logs.json" in r.stderr and "rejected" in r.stderr, r.stderr
    assert "JSON" in r.stderr
    _no_traceback(r)
    r = run_cli("tool", "query_sql", "sql=SELECT count(*) FROM otel_logs", "--json", "--data-dir", str(data))
    assert json.loads(r.stdout)["rows"] == [[0]], "nothing from the malformed file may be stored"


def test_ingest_errors_name_the_problem(tmp_path: Path) -> None:
    r = run_cli("ingest", str(tmp_path / "missing.json"), "--data-dir", str(tmp_path / "data"))
    assert r.returncode == 2 and "is not a file" in r.stderr, r.stderr
    _no_traceback(r)
    odd = tmp_path / "payload.json"
    odd.write_text("{}")
    r = run_cli("ingest", str(odd), "--data-dir", str(tmp_path / "data"))
    assert r.returncode == 2 and "--signal" in r.stderr, r.stderr
    _no_traceback(r)
    gz = tmp_path / "logs.json.gz"
    gz.write_bytes(b"\x1f\x8b\x08\x00broken")
    r = run_cli("ingest", str(gz), "--data-dir", str(tmp_path / "data"))
    assert r.returncode == 2 and "not valid gzip" in r.stderr, r.stderr
    _no_traceback(r)


@pytest.mark.parametrize(
    "args,env",
    [
        (["--port", "-5"], {}),
        ([], {"OBSMCP_PORT": "abc"}),
        (["--port", "70000"], {}),
    ],
)
def test_bad_setting_exits_2_naming_the_setting(tmp_path: Path, args: list[str], env: dict[str, str]) -> None:
    r = run_cli("serve", "--http", *args, "--data-dir", str(tmp_path / "data"), env=env, timeout=30)
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert "port" in r.stderr and "OBSMCP_PORT" in r.stderr, r.stderr
    _no_traceback(r)


def test_bad_environment_value_for_the_tool_command(tmp_path: Path) -> None:
    r = run_cli("tool", "--list", "--data-dir", str(tmp_path), env={"OBSMCP_MAX_RESULT_TOKENS": "lots"})
    assert r.returncode == 2 and "OBSMCP_MAX_RESULT_TOKENS" in r.stderr, r.stderr
    _no_traceback(r)


def test_missing_config_file(tmp_path: Path) -> None:
    r = run_cli("serve", "--config", str(tmp_path / "nope.toml"), "--data-dir", str(tmp_path / "data"))
    assert r.returncode == 2 and "nope.toml" in r.stderr and "does not exist" in r.stderr, r.stderr
    _no_traceback(r)


def test_port_in_use_is_reported_not_a_traceback(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        r = run_cli(
            "serve", "--http", "--port", str(port), "--otlp-port", "0", "--data-dir", str(tmp_path / "d"), timeout=30
        )
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    assert f"{port}" in r.stderr and "in use" in r.stderr and "--port" in r.stderr, r.stderr
    _no_traceback(r)


@pytest.mark.slow
def test_cli_uses_the_running_owner_of_the_data_dir(server: Any, otlp_examples: Path) -> None:
    """While `serve --http` owns the store, `ingest` sends to it and `tool` queries it (no lock errors)."""
    r = run_cli("ingest", str(otlp_examples / "logs.json"), "--data-dir", str(server.data_dir))
    assert r.returncode == 0, r.stderr
    assert "sent to the running server" in r.stdout, r.stdout
    r = run_cli(
        "tool",
        "search_logs",
        "query=example log record",
        f"start={EXAMPLES_START}",
        "--json",
        "--data-dir",
        str(server.data_dir),
    )
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["total"] == 1
    # A second HTTP server on the same directory is refused with who owns it.
    r = run_cli("serve", "--http", "--port", "0", "--otlp-port", "0", "--data-dir", str(server.data_dir), timeout=30)
    assert r.returncode == 2 and f"pid {server.proc.pid}" in r.stderr, r.stderr
    _no_traceback(r)


def test_ingest_warns_when_records_are_older_than_the_retention(tmp_path: Path, otlp_examples: Path) -> None:
    r = run_cli(
        "ingest",
        str(otlp_examples / "logs.json"),
        "--data-dir",
        str(tmp_path / "d"),
        env={"OBSMCP_RETENTION_DAYS": "7"},
    )
    assert r.returncode == 0, r.stderr
    assert "older than the 7-day retention" in r.stderr and "OBSMCP_RETENTION_DAYS" in r.stderr


@pytest.mark.slow
def test_demo_stops_cleanly_on_sigint_even_when_started_with_sigint_ignored(tmp_path: Path) -> None:
    """A demo launched in the background by a script inherits SIGINT as ignored; it must still stop on it."""
    import signal
    import subprocess
    import time

    from tests.conftest import OBSMCP, clean_env, free_port

    def ignore_sigint() -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)

    proc = subprocess.Popen(
        [
            str(OBSMCP),
            "demo",
            "--duration",
            "5m",
            "--rate",
            "0.5",
            "--data-dir",
            str(tmp_path / "demo"),
            "--port",
            str(free_port()),
            "--otlp-port",
            str(free_port()),
        ],
        env=clean_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=ignore_sigint,
    )
    try:
        assert proc.stderr is not None
        deadline = time.monotonic() + 120
        seen = ""
        while "Ctrl-C to stop" not in seen and time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line:
                break
            seen += line
        assert "Ctrl-C to stop" in seen, seen
        proc.send_signal(signal.SIGINT)
        _, rest = proc.communicate(timeout=60)
        assert proc.returncode == 0, seen + rest
        assert "Traceback" not in rest, rest
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


@pytest.mark.slow
def test_serving_demo_keeps_sending_live_telemetry_and_stops_promptly(tmp_path: Path) -> None:
    """`obsmcp demo` goes on producing the demo system's telemetry while it serves (the incident with it), so
    alerts and the status page stay live; Ctrl-C still stops it."""
    import re
    import signal
    import subprocess
    import time

    import httpx

    from tests.conftest import OBSMCP, clean_env, free_port

    port = free_port()
    proc = subprocess.Popen(
        [
            str(OBSMCP),
            "demo",
            "--duration",
            "5m",
            "--rate",
            "1",
            "--data-dir",
            str(tmp_path / "demo"),
            "--port",
            str(port),
            "--otlp-port",
            str(free_port()),
        ],
        env=clean_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )

    def accepted_spans() -> float:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
        m = re.search(r'obsmcp_ingest_records_total\{outcome="accepted",signal="traces"\} (\S+)', text)
        assert m, text[:2000]
        return float(m.group(1))

    try:
        assert proc.stderr is not None
        deadline = time.monotonic() + 120
        seen = ""
        while "Ctrl-C to stop" not in seen and time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line:
                break
            seen += line
        assert "Live:" in seen and "Ctrl-C to stop" in seen, seen
        loaded = accepted_spans()
        grown = loaded
        deadline = time.monotonic() + 40
        while grown <= loaded and time.monotonic() < deadline:
            time.sleep(2)
            grown = accepted_spans()
        assert grown > loaded, f"no live telemetry after the backfill ({loaded} spans)"
        proc.send_signal(signal.SIGINT)
        _, rest = proc.communicate(timeout=60)  # the live loop must not hold up the shutdown
        assert proc.returncode == 0, seen + rest
        assert "Traceback" not in rest, rest
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
