"""`fleet daemon`: cron schedules with jitter, one instance at a time, /health /status /metrics, clean stop."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import pytest

from obsmcp.fleet import audit
from obsmcp.fleet.check import check_rows
from obsmcp.fleet.clients import ListedServer
from obsmcp.fleet.daemon import DaemonLocked, FleetDaemon, acquire_lock, status_server
from obsmcp.fleet.model import FleetConfigError, FleetPaths, FleetSettings
from tests import fleet_index as registries
from tests.fleet_index import PackageIndex

fleet_packages = registries.fleet_packages
fleet_index = registries.fleet_index

OBSMCP = str(Path(sys.executable).parent / "obsmcp")


def _rows() -> list[ListedServer]:
    return [ListedServer(name="echo", kind="pypi", package="obsmcp-test-echo", requested="1.0.0", pinned=True)]


def _fleet(index: PackageIndex, **kw: object) -> FleetSettings:
    return FleetSettings(pypi_url=index.url, npm_registry=index.url + "/", mcp_registry=index.url, **kw)  # type: ignore[arg-type]


def test_every_minute_schedule_runs_the_check_at_the_minute_and_plans_the_next(
    fleet_index: PackageIndex, tmp_path: Path
) -> None:
    fleet = _fleet(fleet_index, check_schedule="* * * * *", jitter_s=0)
    paths = FleetPaths(tmp_path / "fleet")
    now = [datetime(2026, 11, 21, 12, 0, 30, tzinfo=UTC).timestamp()]
    daemon = FleetDaemon(fleet, paths, lambda: check_rows(fleet, _rows()), clock=lambda: now[0])
    assert daemon.jobs["check"].next_run == datetime(2026, 11, 21, 12, 1, tzinfo=UTC).timestamp()
    assert daemon.tick() == []  # not due yet
    now[0] += 30
    assert daemon.tick() == ["check"]
    assert daemon.last_check is not None and daemon.last_check.updates_available == 1
    assert daemon.jobs["check"].next_run == datetime(2026, 11, 21, 12, 2, tzinfo=UTC).timestamp()
    status = daemon.status()
    assert status["jobs"]["check"]["runs"] == 1 and status["jobs"]["check"]["last_outcome"] == "ok"
    assert status["last_check"]["servers"][0]["latest"] == "1.1.0"
    assert audit.read(paths)[-1]["action"] == "check"


def test_jitter_delays_runs_within_the_configured_bound(fleet_index: PackageIndex, tmp_path: Path) -> None:
    fleet = _fleet(fleet_index, check_schedule="0 * * * *", jitter_s=120)
    start = datetime(2026, 11, 21, 12, 0, 30, tzinfo=UTC).timestamp()
    hour = datetime(2026, 11, 21, 13, 0, tzinfo=UTC).timestamp()
    delays = {
        FleetDaemon(fleet, FleetPaths(tmp_path), lambda: check_rows(fleet, []), clock=lambda: start)
        .jobs["check"]
        .next_run
        - hour
        for _ in range(20)
    }
    assert all(0 <= d <= 120 for d in delays) and len(delays) > 1


def test_a_bad_schedule_is_refused_with_an_example(tmp_path: Path) -> None:
    with pytest.raises(FleetConfigError, match=r"not a cron schedule.*0 \*/6"):
        FleetDaemon(
            FleetSettings(check_schedule="every hour"), FleetPaths(tmp_path), lambda: check_rows(FleetSettings(), [])
        )


def test_auto_update_job_calls_the_updater_and_reports_failures(fleet_index: PackageIndex, tmp_path: Path) -> None:
    from obsmcp.fleet.model import SmokeTestError

    fleet = _fleet(fleet_index, auto_update=["echo", "broken"], jitter_s=0)
    calls = []

    def updater(name: str) -> dict[str, object]:
        calls.append(name)
        if name == "broken":
            raise SmokeTestError("2.0.0 failed its handshake")
        return {"server": name, "outcome": "activated", "to": "1.1.0"}

    daemon = FleetDaemon(fleet, FleetPaths(tmp_path), lambda: check_rows(fleet, []), updater)
    daemon.run_job("update")
    assert calls == ["echo", "broken"]
    assert [u["outcome"] for u in daemon.status()["last_updates"]] == ["activated", "failed"]
    assert daemon.jobs["update"].last_outcome == "error" and "broken" in str(daemon.jobs["update"].last_error)


def test_second_instance_is_refused_while_the_first_holds_the_lock(tmp_path: Path) -> None:
    paths = FleetPaths(tmp_path / "fleet")
    held = acquire_lock(paths)
    try:
        with pytest.raises(DaemonLocked, match=f"pid {os.getpid()}"):
            acquire_lock(paths)
    finally:
        held.close()
    acquire_lock(paths).close()  # released: the next one gets it


def test_status_and_metrics_are_served_on_loopback(fleet_index: PackageIndex, tmp_path: Path) -> None:
    fleet = _fleet(fleet_index, jitter_s=0)
    daemon = FleetDaemon(fleet, FleetPaths(tmp_path), lambda: check_rows(fleet, _rows()))
    daemon.run_job("check")
    server = status_server(daemon, 0)
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        assert json.load(urllib.request.urlopen(base + "/health", timeout=5)) == {"status": "ok"}
        status = json.load(urllib.request.urlopen(base + "/status", timeout=5))
        assert status["last_check"]["updates_available"] == 1
        metrics = urllib.request.urlopen(base + "/metrics", timeout=5).read().decode()
        assert "obsmcp_fleet_updates_available 1.0" in metrics
        assert 'obsmcp_fleet_checks_total{outcome="ok"}' in metrics
        assert 'obsmcp_fleet_last_run_timestamp_seconds{job="check"}' in metrics
    finally:
        server.shutdown()
        server.server_close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_daemon_process_serves_status_refuses_a_second_instance_and_stops_on_sigterm(
    fleet_index: PackageIndex, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    (home / ".cursor").mkdir(parents=True)
    (home / ".cursor" / "mcp.json").write_text(
        json.dumps({"mcpServers": {"echo": {"command": "uvx", "args": ["obsmcp-test-echo==1.0.0"]}}})
    )
    port = _free_port()
    fleet = {
        "pypi_url": fleet_index.url,
        "npm_registry": fleet_index.url + "/",
        "mcp_registry": fleet_index.url,
        "check_schedule": "* * * * *",
        "jitter_s": 0,
    }
    env = {**os.environ, "HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config"), "OBSMCP_FLEET": json.dumps(fleet)}
    args = ["fleet", "daemon", "--data-dir", str(tmp_path / "data"), "--project", str(tmp_path)]
    proc = subprocess.Popen(
        [OBSMCP, *args, "--run-now", "--port", str(port)], env=env, stderr=subprocess.PIPE, text=True
    )
    try:
        status: dict[str, object] = {}
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                status = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=2))
                if status.get("last_check"):
                    break
            except OSError:
                pass
            time.sleep(0.2)
        assert status.get("last_check"), "the daemon did not run its first check"
        assert status["last_check"]["servers"][0]["latest"] == "1.1.0"  # type: ignore[index]
        second = subprocess.run([OBSMCP, *args, "--once"], env=env, capture_output=True, text=True, timeout=30)
        assert second.returncode == 3
        assert f"another fleet daemon is running (pid {proc.pid}" in second.stderr
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
        assert "fleet daemon stopped" in (proc.stderr.read() if proc.stderr else "")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    once = subprocess.run([OBSMCP, *args, "--once"], env=env, capture_output=True, text=True, timeout=30)
    assert once.returncode == 0, once.stderr  # the lock was released
    assert json.loads(once.stdout)["last_check"]["updates_available"] == 1


def test_unattended_updates_never_activate_a_rewritten_tool_description_or_a_broken_release(
    fleet_index: PackageIndex, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The daemon's update job through the real update path: echo 1.1.0 rewrites a tool description (refused
    unattended), broken 2.0.0 fails its handshake; both stay on the version that works."""
    from obsmcp.fleet.cmd_update import update_server
    from obsmcp.fleet.daemon import default_updater
    from obsmcp.fleet.state import load_state

    fleet = _fleet(fleet_index, auto_update=["echo", "broken", "unmanaged"], jitter_s=0, smoke_timeout_s=30)
    paths = FleetPaths(tmp_path / "fleet")
    update_server(fleet, paths, "echo", kind="pypi", package="obsmcp-test-echo", version="1.0.0")
    update_server(fleet, paths, "broken", kind="pypi", package="obsmcp-test-broken", version="1.0.0")
    daemon = FleetDaemon(fleet, paths, lambda: check_rows(fleet, []), default_updater(fleet, paths))
    daemon.run_job("update")
    outcomes = {u["server"]: u for u in daemon.status()["last_updates"]}
    assert outcomes["echo"]["outcome"] == "failed" and outcomes["echo"]["kind"] == "tool_change"
    assert outcomes["broken"]["outcome"] == "failed" and outcomes["broken"]["kind"] == "smoke_test"
    assert outcomes["unmanaged"]["outcome"] == "skipped"
    assert load_state(paths, "echo").active == "1.0.0"  # type: ignore[union-attr]
    assert load_state(paths, "broken").active == "1.0.0"  # type: ignore[union-attr]
    assert daemon.jobs["update"].last_outcome == "error"

    # The smoke test starts the candidate the way the client does, with the entry's arguments: here `--version`,
    # which makes echo print its version and exit instead of serving, so 1.1.0 now fails its handshake.
    home = tmp_path / "home"
    (home / ".cursor").mkdir(parents=True)
    entry = {"command": "uvx", "args": ["obsmcp-test-echo", "--version"]}
    (home / ".cursor" / "mcp.json").write_text(json.dumps({"mcpServers": {"echo": entry}}))
    for var in ("XDG_CONFIG_HOME", "CLAUDE_CONFIG_DIR"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(tmp_path)
    daemon.run_job("update")
    outcomes = {u["server"]: u for u in daemon.status()["last_updates"]}
    assert outcomes["echo"]["outcome"] == "failed" and outcomes["echo"]["kind"] == "smoke_test", outcomes["echo"]
    assert load_state(paths, "echo").active == "1.0.0"  # type: ignore[union-attr]
