"""Misbehaving HTTP backends on loopback, for the resilient client's fault-injection tests and benchmark.

`FaultyBackend` is a real HTTP/1.1 server (stdlib, one thread per connection, keep-alive) on 127.0.0.1 whose
answers a test scripts per path: slow answers, any status with any headers (429 with Retry-After in seconds
or as an HTTP-date), a connection reset before the answer, a body cut short of its Content-Length, a
close-delimited body that stops mid-JSON, or text that is not JSON. It records every request it receives
(method, path, query, headers, body, arrival time on its own monotonic clock), so tests assert how many
attempts reached the server and how far apart they arrived, as the server saw them.

    with FaultyBackend() as server:
        server.script("/api/v1/labels", Reply(503), Reply(503), then=Reply(200, {"data": []}))
        ... client at server.url ...
        assert server.count("/api/v1/labels") == 3
"""

from __future__ import annotations

import json
import socket
import socketserver
import struct
import threading
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler
from typing import Any, Literal
from urllib.parse import parse_qsl, urlsplit

Fault = Literal["reset", "truncate", "close_delimited"]
_REASONS = {200: "OK", 204: "No Content", 302: "Found", 400: "Bad Request", 401: "Unauthorized",
            403: "Forbidden", 404: "Not Found", 429: "Too Many Requests", 500: "Internal Server Error",
            502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout"}  # fmt: skip


@dataclass(frozen=True)
class Reply:
    """One scripted answer. `body` is sent as JSON unless it is bytes."""

    status: int = 200
    body: Any = field(default_factory=lambda: {"status": "success", "data": []})
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0  # wait this long before answering (a slow backend)
    fault: Fault | None = None  # reset: close with RST, no answer; truncate: send half the body, then RST;
    # close_delimited: no Content-Length, the body as given, then close (the client sees a complete body)

    def payload(self) -> bytes:
        return self.body if isinstance(self.body, bytes) else json.dumps(self.body).encode()


@dataclass(frozen=True)
class Seen:
    """A request as the server received it; `at` is time.monotonic() when its headers had been read."""

    method: str
    path: str
    query: list[tuple[str, str]]
    headers: dict[str, str]
    body: bytes
    at: float
    client_port: int  # the client's side of the connection: equal ports mean one reused connection


def retry_after_date(seconds_from_now: float) -> str:
    """A Retry-After header value as an HTTP-date."""
    return formatdate(time.time() + seconds_from_now, usegmt=True)


def unused_port() -> int:
    """A loopback port nothing listens on (connections to it are refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Server(socketserver.ThreadingMixIn, socketserver.TCPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    backend: FaultyBackend


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as real backends: the client's pool reuses connections
    server: _Server
    _aborted = False

    def log_message(self, format: str, *args: Any) -> None:  # the server's access log would only be noise
        pass

    def do_GET(self) -> None:
        self._answer()

    def do_POST(self) -> None:
        self._answer()

    def _answer(self) -> None:
        arrived = time.monotonic()
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        parts = urlsplit(self.path)
        seen = Seen(
            self.command,
            parts.path,
            parse_qsl(parts.query),
            dict(self.headers.items()),
            body,
            arrived,
            self.client_address[1],
        )
        reply = self.server.backend._record(seen)
        if reply.delay_s:
            time.sleep(reply.delay_s)
        if reply.fault == "reset":
            self._abort()
            return
        payload = reply.payload()
        headers = {"Content-Type": "application/json", **reply.headers}
        if reply.fault != "close_delimited":
            headers["Content-Length"] = str(len(payload))
        else:
            headers["Connection"] = "close"
        head = f"HTTP/1.1 {reply.status} {_REASONS.get(reply.status, 'Status')}\r\n"
        head += "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
        if reply.fault == "truncate":
            self.wfile.write(head.encode() + payload[: len(payload) // 2])
            self.wfile.flush()
            self._abort()
            return
        self.wfile.write(head.encode() + payload)
        self.wfile.flush()
        if reply.fault == "close_delimited":
            self.close_connection = True

    def _abort(self) -> None:
        # SO_LINGER 0: closing sends RST instead of FIN, as a crashed backend or a proxy dropping a connection.
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.connection.close()
        self._aborted = True
        self.close_connection = True

    def finish(self) -> None:
        if not self._aborted:  # an aborted connection has no stream left to flush
            super().finish()


class FaultyBackend:
    """A scriptable misbehaving backend on 127.0.0.1 (see the module docstring)."""

    def __init__(self) -> None:
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.backend = self
        self._lock = threading.Lock()
        self._scripts: dict[str, deque[Reply]] = defaultdict(deque)
        self._then: dict[str, Reply] = {}
        self._seen: list[Seen] = []
        # A short poll interval: shutdown() waits for the serving loop to notice, 0.5 s by default.
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.02,), name="faulty-backend", daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def __enter__(self) -> FaultyBackend:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def script(self, path: str, *replies: Reply, then: Reply | None = None) -> None:
        """Answer the next requests to `path` with `replies` in order, then with `then` (default: 200 JSON)."""
        with self._lock:
            self._scripts[path] = deque(replies)
            self._then[path] = then or Reply()

    def seen(self, path: str | None = None) -> list[Seen]:
        with self._lock:
            return [s for s in self._seen if path is None or s.path == path]

    def count(self, path: str | None = None) -> int:
        return len(self.seen(path))

    def arrivals(self, path: str | None = None) -> list[float]:
        return [s.at for s in self.seen(path)]

    def _record(self, seen: Seen) -> Reply:
        with self._lock:
            self._seen.append(seen)
            queue = self._scripts.get(seen.path)
            if queue:
                return queue.popleft()
            return self._then.get(seen.path, Reply())
