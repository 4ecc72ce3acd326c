"""`obsmcp fleet daemon`: `fleet check` (and `fleet update` for the servers in `fleet.auto_update`) on cron
schedules, one instance per fleet directory, with its state on 127.0.0.1:<fleet.daemon_port>.

- Schedules are cron expressions (croniter): `fleet.check_schedule`, `fleet.update_schedule`; every run is
  delayed by a random 0..`fleet.jitter_s` seconds so a fleet of machines does not hit the registries at once.
- One instance: an exclusive `flock` on <fleet dir>/daemon.lock (released by the kernel when the process dies,
  so a crash never leaves a stale lock); a second instance exits at once, naming the running one's pid.
- Updates run non-interactively through the same path as `fleet update` (verify, smoke test, atomic switch):
  changed tool descriptions are never accepted unattended, and only servers obsmcp already manages are updated.
- HTTP (loopback only): `/health`, `/status` (JSON: jobs, last and next runs, last results), `/metrics`
  (obsmcp's Prometheus registry, with the fleet_* series below).
- SIGTERM / SIGINT stop it between steps: a run in progress finishes its current server first.
"""

from __future__ import annotations

import fcntl
import json
import os
import random
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import IO, Annotated, Any

import typer
from croniter import croniter
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, generate_latest

from obsmcp.fleet import audit
from obsmcp.fleet.app import fleet_app
from obsmcp.fleet.check import CheckResult, check_rows, configured_rows
from obsmcp.fleet.model import FleetConfigError, FleetError, FleetPaths, FleetSettings
from obsmcp.metrics import REGISTRY

FLEET_CHECKS = Counter("obsmcp_fleet_checks", "fleet check runs by outcome (ok|error)", ["outcome"], registry=REGISTRY)
FLEET_UPDATES = Counter(
    "obsmcp_fleet_updates",
    "daemon updates by outcome (activated|unchanged|failed|skipped)",
    ["outcome"],
    registry=REGISTRY,
)
FLEET_UPDATES_AVAILABLE = Gauge(
    "obsmcp_fleet_updates_available",
    "configured MCP servers with a newer release, at the last check",
    registry=REGISTRY,
)
FLEET_CHECK_ERRORS = Gauge(
    "obsmcp_fleet_check_errors", "servers whose registry could not be read at the last check", registry=REGISTRY
)
FLEET_LAST_RUN = Gauge(
    "obsmcp_fleet_last_run_timestamp_seconds", "when a daemon job last ended (unix time)", ["job"], registry=REGISTRY
)
FLEET_NEXT_RUN = Gauge(
    "obsmcp_fleet_next_run_timestamp_seconds", "when a daemon job runs next (unix time)", ["job"], registry=REGISTRY
)

Checker = Callable[[], CheckResult]
Updater = Callable[[str], dict[str, Any]]


class DaemonLocked(FleetError):
    kind = "busy"


def validate_schedule(expr: str, setting: str) -> str:
    if not croniter.is_valid(expr):
        raise FleetConfigError(
            f"fleet.{setting} {expr!r} is not a cron schedule", hint="five fields, e.g. '0 */6 * * *' (every 6 hours)"
        )
    return expr


@dataclass
class Job:
    name: str  # check | update
    schedule: str
    next_run: float = 0.0
    last_start: float | None = None
    last_end: float | None = None
    last_outcome: str | None = None
    last_error: str | None = None
    runs: int = 0

    def plan(self, after: float, jitter_s: float) -> None:
        base = datetime.fromtimestamp(after, UTC)
        nxt = croniter(self.schedule, base).get_next(datetime)
        self.next_run = nxt.timestamp() + (random.uniform(0, jitter_s) if jitter_s > 0 else 0.0)
        FLEET_NEXT_RUN.labels(self.name).set(self.next_run)

    def view(self) -> dict[str, Any]:
        def iso(t: float | None) -> str | None:
            return datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds") if t else None

        return {
            "schedule": self.schedule,
            "next_run": iso(self.next_run),
            "last_start": iso(self.last_start),
            "last_end": iso(self.last_end),
            "last_duration_s": round(self.last_end - self.last_start, 3) if self.last_end and self.last_start else None,
            "last_outcome": self.last_outcome,
            "last_error": self.last_error,
            "runs": self.runs,
        }


@dataclass
class FleetDaemon:
    """The scheduler. `tick(now)` runs the jobs that are due (tests drive it with their own clock)."""

    fleet: FleetSettings
    paths: FleetPaths
    checker: Checker
    updater: Updater | None = None
    clock: Callable[[], float] = time.time
    jobs: dict[str, Job] = field(default_factory=dict)
    last_check: CheckResult | None = None
    last_updates: list[dict[str, Any]] = field(default_factory=list)
    started_at: float = field(default_factory=time.time)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        now = self.clock()
        self.jobs["check"] = Job("check", validate_schedule(self.fleet.check_schedule, "check_schedule"))
        if self.fleet.auto_update:
            self.jobs["update"] = Job("update", validate_schedule(self.fleet.update_schedule, "update_schedule"))
        for job in self.jobs.values():
            job.plan(now, self.fleet.jitter_s)

    def tick(self, now: float | None = None, stop: threading.Event | None = None) -> list[str]:
        """Run every due job (check before update); returns the names of the jobs run."""
        now = self.clock() if now is None else now
        ran = []
        for name in ("check", "update"):
            job = self.jobs.get(name)
            if job is not None and job.next_run <= now and not (stop and stop.is_set()):
                self.run_job(name, stop)
                job.plan(max(now, self.clock()), self.fleet.jitter_s)
                ran.append(name)
        return ran

    def run_job(self, name: str, stop: threading.Event | None = None) -> None:
        job = self.jobs.get(name) or Job(name, "-")
        job.last_start = self.clock()
        try:
            if name == "check":
                self._check()
            else:
                self._update(stop)
            job.last_outcome, job.last_error = "ok", None
        except Exception as e:  # a failed run is reported in /status and the next one is still scheduled
            job.last_outcome = "error"
            job.last_error = str(e) if isinstance(e, FleetError) else f"{type(e).__name__}: {e}"
            if name == "check":
                FLEET_CHECKS.labels("error").inc()
        finally:
            job.last_end = self.clock()
            job.runs += 1
            FLEET_LAST_RUN.labels(name).set(job.last_end)

    def _check(self) -> None:
        result = self.checker()
        with self._lock:
            self.last_check = result
        FLEET_UPDATES_AVAILABLE.set(result.updates_available)
        FLEET_CHECK_ERRORS.set(result.errors)
        FLEET_CHECKS.labels("error" if result.errors else "ok").inc()
        audit.record(
            self.paths,
            "check",
            None,
            outcome="failed" if result.errors else "ok",
            detail=f"{len(result.servers)} servers, {result.updates_available} updates available, "
            f"{result.errors} errors",
            via="daemon",
        )

    def _update(self, stop: threading.Event | None) -> None:
        results = []
        for name in self.fleet.auto_update:
            if stop is not None and stop.is_set():
                break
            if self.updater is None:
                outcome = {"server": name, "outcome": "skipped", "detail": "no updater"}
            else:
                try:
                    outcome = self.updater(name)
                except FleetError as e:  # recorded in the audit log by the update path itself
                    outcome = {"server": name, "outcome": "failed", "kind": e.kind, "detail": str(e)}
            FLEET_UPDATES.labels(str(outcome.get("outcome", "failed"))).inc()
            results.append(outcome)
        with self._lock:
            self.last_updates = results
        failed = [r["server"] for r in results if r.get("outcome") == "failed"]
        if failed:
            raise FleetError(f"update failed for {', '.join(failed)} (see /status and the audit log)")

    def status(self) -> dict[str, Any]:
        with self._lock:
            check = self.last_check
            updates = list(self.last_updates)
        summary = None
        if check is not None:
            summary = {
                "checked_at": check.checked_at,
                "updates_available": check.updates_available,
                "errors": check.errors,
                "servers": [
                    {
                        "name": s.name,
                        "kind": s.kind,
                        "package": s.package,
                        "current": s.current,
                        "latest": s.latest,
                        "status": s.status,
                        **({"error": s.error} if s.error else {}),
                    }
                    for s in check.servers
                ],
            }
        return {
            "pid": os.getpid(),
            "started_at": datetime.fromtimestamp(self.started_at, UTC).isoformat(timespec="seconds"),
            "jobs": {name: job.view() for name, job in self.jobs.items()},
            "auto_update": list(self.fleet.auto_update),
            "last_check": summary,
            "last_updates": updates,
        }

    def serve_forever(self, stop: threading.Event, poll_s: float = 30.0) -> None:
        while not stop.is_set():
            self.tick(stop=stop)
            due = min(job.next_run for job in self.jobs.values())
            stop.wait(max(0.05, min(poll_s, due - self.clock())))


# ---- single instance ---------------------------------------------------------------------------------------


def acquire_lock(paths: FleetPaths) -> IO[str]:
    """Hold <fleet dir>/daemon.lock for the life of the process; DaemonLocked when another daemon holds it."""
    paths.daemon_lock.parent.mkdir(parents=True, exist_ok=True)
    handle = open(paths.daemon_lock, "a+")  # noqa: SIM115 - held open until the process exits
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "unknown"
        handle.close()
        raise DaemonLocked(
            f"another fleet daemon is running (pid {holder}, lock {paths.daemon_lock})",
            hint="stop it first, or point this one at another fleet directory",
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle


# ---- HTTP --------------------------------------------------------------------------------------------------


def status_server(daemon: FleetDaemon, port: int) -> ThreadingHTTPServer:
    """/health, /status, /metrics on 127.0.0.1:port (0 picks a free port), served from a daemon thread."""

    class Handler(BaseHTTPRequestHandler):
        server_version = "obsmcp-fleet-daemon"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _send(self, status: int, body: bytes, ctype: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/health":
                self._send(200, b'{"status": "ok"}', "application/json")
            elif path == "/status":
                self._send(200, json.dumps(daemon.status(), indent=2).encode(), "application/json")
            elif path == "/metrics":
                self._send(200, generate_latest(REGISTRY), CONTENT_TYPE_LATEST)
            else:
                self._send(404, b'{"error": "not found: try /health, /status or /metrics"}', "application/json")

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="fleet-daemon-http", daemon=True).start()
    return server


# ---- wiring ------------------------------------------------------------------------------------------------


def default_checker(fleet: FleetSettings, paths: FleetPaths, project: Path | None) -> Checker:
    def run() -> CheckResult:
        rows, _ = configured_rows(paths, project)
        return check_rows(fleet, rows)

    return run


def default_updater(fleet: FleetSettings, paths: FleetPaths) -> Updater:
    def run(name: str) -> dict[str, Any]:
        from obsmcp.fleet.cmd_update import _discovered, update_server
        from obsmcp.fleet.state import is_managed

        if not is_managed(paths, name):
            return {
                "server": name,
                "outcome": "skipped",
                "detail": "not managed by obsmcp yet: run `obsmcp fleet update NAME` or `fleet adopt NAME` once",
            }
        found = _discovered(paths, name)  # start it the way clients do: their arguments and env var names
        out = update_server(
            fleet, paths, name, accept_description_changes=False, confirm=None,
            server_args=found.args, env_keys=found.env_keys,
        )  # fmt: skip
        return {"server": name, "outcome": out.status, "from": out.from_version, "to": out.version}

    return run


@fleet_app.command("daemon")
def daemon_cmd(
    once: Annotated[bool, typer.Option("--once", help="run a check now (and updates with --update) and exit")] = False,
    update: Annotated[bool, typer.Option("--update", help="with --once: also update fleet.auto_update")] = False,
    run_now: Annotated[bool, typer.Option("--run-now", help="run a check at start, then follow the schedule")] = False,
    port: Annotated[int | None, typer.Option("--port", help="status/metrics port [default: fleet.daemon_port]")] = None,
    project: Annotated[Path | None, typer.Option("--project", help="project whose configs count [cwd]")] = None,
    data_dir: Annotated[Path | None, typer.Option("--data-dir", help="data directory (fleet in <dir>/fleet)")] = None,
    config: Annotated[Path | None, typer.Option("--config", envvar="OBSMCP_CONFIG", help="TOML config file")] = None,
) -> None:
    """Run `fleet check` (and updates of fleet.auto_update) on cron schedules, one instance at a time.

    Serves /health, /status and /metrics on 127.0.0.1:fleet.daemon_port (0: no HTTP). Stop with SIGTERM/Ctrl-C."""
    from obsmcp.config import ConfigError, load_settings

    try:
        settings = load_settings(config, **({"data_dir": data_dir} if data_dir else {}))
        fleet, paths = settings.fleet, settings.fleet_paths
        lock = acquire_lock(paths)
        daemon = FleetDaemon(
            fleet,
            paths,
            default_checker(fleet, paths, project),
            default_updater(fleet, paths) if fleet.auto_update else None,
        )
    except ConfigError as e:
        typer.secho(f"error (configuration): {e}", err=True, fg="red")
        raise typer.Exit(2) from None
    except DaemonLocked as e:
        typer.secho(f"error ({e.kind}): {e.message}", err=True, fg="red")
        if e.hint:
            typer.echo(f"hint: {e.hint}", err=True)
        raise typer.Exit(3) from None
    except FleetError as e:
        typer.secho(f"error ({e.kind}): {e.message}", err=True, fg="red")
        if e.hint:
            typer.echo(f"hint: {e.hint}", err=True)
        raise typer.Exit(2) from None
    try:
        if once:
            daemon.run_job("check")
            if update:
                daemon.run_job("update")
            typer.echo(json.dumps(daemon.status(), indent=2))
            failed = any(j.last_outcome == "error" for j in daemon.jobs.values()) or (
                daemon.last_check is not None and daemon.last_check.errors > 0
            )
            raise typer.Exit(1 if failed else 0)
        stop = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
        http_port = fleet.daemon_port if port is None else port
        try:
            server = status_server(daemon, http_port) if http_port else None
        except OSError as e:
            typer.secho(
                f"error (configuration): cannot listen on 127.0.0.1:{http_port}: {e.strerror}", err=True, fg="red"
            )
            typer.echo("hint: another process uses that port: pass --port or set fleet.daemon_port", err=True)
            raise typer.Exit(2) from None
        where = f"http://127.0.0.1:{server.server_address[1]}" if server else "no HTTP (port 0)"
        jobs = ", ".join(f"{j.name} '{j.schedule}'" for j in daemon.jobs.values())
        typer.echo(f"fleet daemon pid {os.getpid()}: {jobs}; status at {where}", err=True)
        if run_now:
            daemon.run_job("check", stop)
        daemon.serve_forever(stop)
        if server is not None:
            server.shutdown()
            server.server_close()
        typer.echo("fleet daemon stopped", err=True)
    finally:
        lock.close()


__all__ = ["DaemonLocked", "FleetDaemon", "Job", "acquire_lock", "status_server", "validate_schedule"]
