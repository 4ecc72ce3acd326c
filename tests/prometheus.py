"""A real Prometheus server (and promtool) for tests: found, started on a free loopback port, queried.

The binaries come from Debian's `prometheus` package, unpacked into build/prometheus by
`scripts/install-prometheus.sh` (which `make test` runs); a `prometheus`/`promtool` on PATH or in
$OBSMCP_PROMETHEUS_DIR also works. Without them a test fails under CI (CI=true), where it must run, and
skips elsewhere with the install command in the reason.

Import the fixtures (`prometheus_binaries`, `prometheus_factory`) into a test module, or call the functions:

    prom = prometheus_factory([scrape_job("obsmcp", ["127.0.0.1:8000"])])   # scrapes every second
    prom.wait_for('up{job="obsmcp"} == 1')
    prom.query('sum(rate(obsmcp_tool_calls_total[1m]))')

For a Prometheus *source* under test, `backfill=` loads OpenMetrics text into the TSDB before the server
starts (`promtool tsdb create-blocks-from openmetrics`), so queries see known series at known past times;
`extra_args=("--web.enable-remote-write-receiver",)` accepts remote-write pushes instead.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

REPO = Path(__file__).resolve().parents[1]
INSTALL_COMMAND = "bash scripts/install-prometheus.sh"


@dataclass(frozen=True)
class PrometheusBinaries:
    prometheus: Path
    promtool: Path

    def version(self) -> str:
        out = subprocess.run([str(self.prometheus), "--version"], capture_output=True, text=True, timeout=30)
        return (out.stdout or out.stderr).splitlines()[0]


def find_binaries() -> PrometheusBinaries | None:
    """prometheus and promtool from $OBSMCP_PROMETHEUS_DIR, build/prometheus/usr/bin, or PATH (first complete)."""
    dirs = [Path(d) for d in (os.environ.get("OBSMCP_PROMETHEUS_DIR"),) if d]
    dirs.append(REPO / "build" / "prometheus" / "usr" / "bin")
    for d in dirs:
        prom, tool = d / "prometheus", d / "promtool"
        if os.access(prom, os.X_OK) and os.access(tool, os.X_OK):
            return PrometheusBinaries(prom, tool)
    prom_path, tool_path = shutil.which("prometheus"), shutil.which("promtool")
    if prom_path and tool_path:
        return PrometheusBinaries(Path(prom_path), Path(tool_path))
    return None


def require_binaries() -> PrometheusBinaries:
    """The binaries, or the test fails (CI) / skips (elsewhere) saying how to install them."""
    found = find_binaries()
    if found is not None:
        return found
    msg = (
        "Prometheus and promtool were not found (build/prometheus/usr/bin, $OBSMCP_PROMETHEUS_DIR, PATH): "
        f"run `{INSTALL_COMMAND}`"
    )
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(msg + " (CI must run the Prometheus tests; scripts/test.sh installs it)")
    pytest.skip(msg)


def promtool(
    bins: PrometheusBinaries, *args: str, stdin: str | bytes | None = None
) -> subprocess.CompletedProcess[str]:
    """Run promtool; the caller asserts on returncode/stdout/stderr (promtool's own messages)."""
    data = stdin.decode() if isinstance(stdin, bytes) else stdin
    return subprocess.run([str(bins.promtool), *args], input=data, capture_output=True, text=True, timeout=60)


def check_metrics(bins: PrometheusBinaries, exposition: str | bytes) -> subprocess.CompletedProcess[str]:
    """`promtool check metrics`: parses the Prometheus text format and lints names, types and help."""
    return promtool(bins, "check", "metrics", stdin=exposition)


def scrape_job(
    job_name: str,
    targets: Sequence[str],
    *,
    metrics_path: str = "/metrics",
    scrape_interval: str = "1s",
    **extra: Any,
) -> dict[str, Any]:
    """One scrape_configs entry: targets are host:port; extra keys go in as written (scheme, basic_auth, ...)."""
    return {
        "job_name": job_name,
        "metrics_path": metrics_path,
        "scrape_interval": scrape_interval,
        "scrape_timeout": scrape_interval,
        "static_configs": [{"targets": list(targets)}],
        **extra,
    }


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PrometheusError(AssertionError):
    """Prometheus answered an API call with an error, or did not get ready; the message has its reason."""


class LoopbackDaemon:
    """A Prometheus-family server (Prometheus, Alertmanager) on a free 127.0.0.1 port, ready when /-/ready says
    so, its output in a log file. Subclasses give the command line and the error to raise."""

    name = "server"
    error: type[AssertionError] = AssertionError

    def __init__(self, workdir: Path, log_name: str) -> None:
        self.workdir = workdir
        self.log_path = workdir / log_name
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        raise NotImplementedError

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def _start(self, timeout: float) -> None:
        for _attempt in range(3):  # the port can be taken between choosing and binding it
            self.port = _free_port()
            with open(self.log_path, "ab") as log:
                self.proc = subprocess.Popen(
                    self.command(), cwd=self.workdir, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
                )
            if self._wait_ready(timeout):
                return
            self.stop()
            if "address already in use" not in self.log_text():
                break
        raise self.error(f"{self.name} did not get ready on {self.url}; its log:\n{self.log_text()[-4000:]}")

    def _wait_ready(self, timeout: float) -> bool:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/-/ready", timeout=2).status_code == 200:
                    return True
            time.sleep(0.1)
        return False

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


class PrometheusServer(LoopbackDaemon):
    """A running Prometheus on 127.0.0.1 with its own data directory and config file."""

    def __init__(self, bins: PrometheusBinaries, workdir: Path, config: dict[str, Any], extra_args: Sequence[str]):
        super().__init__(workdir, "prometheus.log")
        self.bins = bins
        self.config_path = workdir / "prometheus.yml"
        self.data_dir = workdir / "data"
        self.extra_args = tuple(extra_args)
        self.write_config(config)

    def write_config(self, config: dict[str, Any]) -> None:
        # JSON is YAML: no YAML library needed. promtool validates it before Prometheus sees it.
        self.config_path.write_text(json.dumps(config, indent=2))
        checked = promtool(self.bins, "check", "config", str(self.config_path))
        if checked.returncode != 0:
            raise PrometheusError(f"promtool rejected the config:\n{checked.stdout}{checked.stderr}")

    name = "Prometheus"
    error = PrometheusError

    def command(self) -> list[str]:
        return [
            str(self.bins.prometheus),
            f"--config.file={self.config_path}",
            f"--storage.tsdb.path={self.data_dir}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--web.enable-lifecycle",
            "--log.level=warn",
            *self.extra_args,
        ]

    def start(self, timeout: float = 30.0) -> PrometheusServer:
        self._start(timeout)
        return self

    def reload(self, config: dict[str, Any]) -> None:
        """Replace the config and apply it without a restart."""
        self.write_config(config)
        r = httpx.post(f"{self.url}/-/reload", timeout=10)
        if r.status_code != 200:
            raise PrometheusError(f"reload failed with {r.status_code}: {r.text}")

    # -- HTTP API ----------------------------------------------------------------------------------------

    def api(self, path: str, **params: Any) -> Any:
        """GET /api/v1/<path>; returns `data`, raises PrometheusError with Prometheus' error otherwise."""
        r = httpx.get(f"{self.url}/api/v1/{path}", params=params, timeout=30)
        try:
            body = r.json()
        except ValueError:
            raise PrometheusError(f"/api/v1/{path} answered {r.status_code}: {r.text[:500]}") from None
        if body.get("status") != "success":
            raise PrometheusError(f"/api/v1/{path} {params}: {body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def query(self, promql: str, at: float | None = None) -> list[dict[str, Any]]:
        """An instant query: the result vector ([{"metric": {...}, "value": [t, "v"]}, ...])."""
        params: dict[str, Any] = {"query": promql}
        if at is not None:
            params["time"] = at
        return list(self.api("query", **params)["result"])

    def query_range(self, promql: str, start: float, end: float, step: str = "15s") -> list[dict[str, Any]]:
        return list(self.api("query_range", query=promql, start=start, end=end, step=step)["result"])

    def targets(self) -> list[dict[str, Any]]:
        return list(self.api("targets")["activeTargets"])

    def wait_for(
        self,
        promql: str,
        timeout: float = 30.0,
        until: Callable[[list[dict[str, Any]]], bool] = bool,
    ) -> list[dict[str, Any]]:
        """Poll an instant query until `until(result)` holds (default: any series); the failure shows targets."""
        deadline = time.monotonic() + timeout
        result: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            result = self.query(promql)
            if until(result):
                return result
            time.sleep(0.25)
        health = [(t["labels"].get("job"), t["scrapeUrl"], t["health"], t.get("lastError")) for t in self.targets()]
        raise PrometheusError(f"{promql!r} did not hold within {timeout:g}s; last result {result}; targets {health}")


def start_prometheus(
    bins: PrometheusBinaries,
    workdir: Path,
    scrape_configs: Sequence[dict[str, Any]],
    *,
    global_config: dict[str, Any] | None = None,
    rule_files: Sequence[str | Path] = (),
    backfill: str | None = None,
    extra_args: Sequence[str] = (),
    timeout: float = 30.0,
) -> PrometheusServer:
    """Start Prometheus in `workdir` (config, TSDB and log go there); the caller stops it."""
    workdir.mkdir(parents=True, exist_ok=True)
    config: dict[str, Any] = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s", **(global_config or {})},
        "scrape_configs": list(scrape_configs),
    }
    if rule_files:
        config["rule_files"] = [str(p) for p in rule_files]
    server = PrometheusServer(bins, workdir, config, extra_args)
    if backfill is not None:
        source = workdir / "backfill.om"
        source.write_text(backfill if backfill.rstrip().endswith("# EOF") else backfill.rstrip() + "\n# EOF\n")
        made = promtool(bins, "tsdb", "create-blocks-from", "openmetrics", str(source), str(server.data_dir))
        if made.returncode != 0:
            raise PrometheusError(f"promtool could not backfill:\n{made.stdout}{made.stderr}")
    return server.start(timeout)


@pytest.fixture(scope="session")
def prometheus_binaries() -> PrometheusBinaries:
    return require_binaries()


@pytest.fixture
def prometheus_factory(
    prometheus_binaries: PrometheusBinaries, tmp_path: Path
) -> Iterator[Callable[..., PrometheusServer]]:
    """prometheus_factory(scrape_configs, **start_prometheus options) -> a running server, stopped at teardown."""
    started: list[PrometheusServer] = []

    def make(scrape_configs: Sequence[dict[str, Any]], **options: Any) -> PrometheusServer:
        server = start_prometheus(
            prometheus_binaries, tmp_path / f"prometheus-{len(started)}", scrape_configs, **options
        )
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()
