"""A real Alertmanager for tests: found, started on a free loopback port (clustering off), queried.

The binary comes from Debian's `prometheus-alertmanager` package, unpacked into build/alertmanager by
`scripts/install-alertmanager.sh` (which `make test` runs); one on PATH or in $OBSMCP_ALERTMANAGER_DIR also works.
Without it a test fails under CI (CI=true), where it must run, and skips elsewhere with the install command.

    am = alertmanager_factory(webhook_receiver("capture", "http://127.0.0.1:9999/hook"))
    am.alerts()                        # GET /api/v2/alerts
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.prometheus import LoopbackDaemon

REPO = Path(__file__).resolve().parents[1]
INSTALL_COMMAND = "bash scripts/install-alertmanager.sh"


def find_alertmanager() -> Path | None:
    dirs = [Path(d) for d in (os.environ.get("OBSMCP_ALERTMANAGER_DIR"),) if d]
    dirs.append(REPO / "build" / "alertmanager" / "usr" / "bin")
    for d in dirs:
        for name in ("prometheus-alertmanager", "alertmanager"):
            if os.access(d / name, os.X_OK):
                return d / name
    found = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
    return Path(found) if found else None


def require_alertmanager() -> Path:
    found = find_alertmanager()
    if found is not None:
        return found
    msg = (
        "Alertmanager was not found (build/alertmanager/usr/bin, $OBSMCP_ALERTMANAGER_DIR, PATH): "
        f"run `{INSTALL_COMMAND}`"
    )
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(msg + " (CI must run the Alertmanager tests; scripts/test.sh installs it)")
    pytest.skip(msg)


def webhook_receiver(
    name: str, url: str, *, group_wait: str = "0s", group_interval: str = "1s", send_resolved: bool = True
) -> dict[str, Any]:
    """An Alertmanager config whose one route sends every alert, grouped by alertname, to a webhook_config."""
    return {
        "route": {
            "receiver": name,
            "group_by": ["alertname"],
            "group_wait": group_wait,
            "group_interval": group_interval,
            "repeat_interval": "1h",
        },
        "receivers": [{"name": name, "webhook_configs": [{"url": url, "send_resolved": send_resolved}]}],
    }


class AlertmanagerServer(LoopbackDaemon):
    name = "Alertmanager"

    def __init__(self, binary: Path, workdir: Path, config: dict[str, Any]) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        super().__init__(workdir, "alertmanager.log")
        self.binary = binary
        self.config_path = workdir / "alertmanager.yml"
        self.config_path.write_text(json.dumps(config, indent=2))  # JSON is YAML
        # The binary from scripts/install-alertmanager.sh reads its templates and UI from ./am-share.
        share = binary.parent.parent / "share" / "prometheus" / "alertmanager"
        if share.is_dir() and not (workdir / "am-share").exists():
            (workdir / "am-share").symlink_to(share)

    def command(self) -> list[str]:
        return [
            str(self.binary),
            f"--config.file={self.config_path}",
            f"--storage.path={self.workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--cluster.listen-address=",  # no gossip: one instance, no port 9094
            "--log.level=warn",
        ]

    def start(self, timeout: float = 30.0) -> AlertmanagerServer:
        self._start(timeout)
        return self

    def alerts(self, **params: Any) -> list[dict[str, Any]]:
        """GET /api/v2/alerts (gettableAlerts): labels, annotations, startsAt, endsAt, fingerprint, status."""
        r = httpx.get(f"{self.url}/api/v2/alerts", params=params, timeout=10)
        r.raise_for_status()
        return list(r.json())


@dataclass
class Received:
    at: float  # time.monotonic() when it arrived
    path: str
    headers: dict[str, str]
    body: Any  # parsed JSON
    wall: float = 0.0  # time.time() when it arrived


@dataclass
class WebhookReceiver:
    """A loopback HTTP server that records every POST and answers the scripted statuses in turn, then 200."""

    statuses: list[int] = field(default_factory=list)
    headers_out: dict[str, str] = field(default_factory=dict)
    received: list[Received] = field(default_factory=list)

    def __post_init__(self) -> None:
        receiver = self
        self._lock = threading.Condition()

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with receiver._lock:
                    receiver.received.append(
                        Received(
                            time.monotonic(),
                            self.path,
                            dict(self.headers.items()),
                            json.loads(raw or b"null"),
                            time.time(),
                        )
                    )
                    status = receiver.statuses.pop(0) if receiver.statuses else 200
                    receiver._lock.notify_all()
                body = b"ok" if status < 300 else b"invalid_payload" if status == 400 else b"unavailable"
                self.send_response(status)
                for k, v in receiver.headers_out.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def wait(
        self, count: int, timeout: float = 30.0, where: Callable[[Received], bool] = lambda r: True
    ) -> list[Received]:
        """The first `count` requests that satisfy `where`, waiting for them to arrive."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                got = [r for r in self.received if where(r)]
                if len(got) >= count:
                    return got[:count]
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"{count} request(s) did not arrive within {timeout:g}s: got {len(got)}")
                self._lock.wait(left)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def webhook_receiver_factory() -> Iterator[Callable[..., WebhookReceiver]]:
    made: list[WebhookReceiver] = []

    def make(statuses: Sequence[int] = (), headers: dict[str, str] | None = None) -> WebhookReceiver:
        r = WebhookReceiver(list(statuses), dict(headers or {}))
        made.append(r)
        return r

    yield make
    for r in made:
        r.close()


@pytest.fixture(scope="session")
def alertmanager_binary() -> Path:
    return require_alertmanager()


@pytest.fixture
def alertmanager_factory(alertmanager_binary: Path, tmp_path: Path) -> Iterator[Callable[..., AlertmanagerServer]]:
    """alertmanager_factory(config) -> a running Alertmanager, stopped at teardown."""
    started: list[AlertmanagerServer] = []

    def make(config: dict[str, Any]) -> AlertmanagerServer:
        server = AlertmanagerServer(alertmanager_binary, tmp_path / f"alertmanager-{len(started)}", config).start()
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()
