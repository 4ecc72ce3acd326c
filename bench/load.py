"""Load, overload and throughput of a real `obsmcp serve --http`, against baselines in the same run.

    .venv/bin/python -m bench.load                 # every phase, writes bench/results/load.json and load.md
    .venv/bin/python -m bench.load --seconds 10    # shorter phases

Phases (each on a fresh copy of one demo store; every load generator runs in its own process and its CPU is
recorded, because on a 2-core machine it competes with the server):

1. throughput: cheap tool calls per second in stateless HTTP mode (`--stateless`, plain JSON answers), driven
   by a raw HTTP/1.1 keep-alive client (a few microseconds of client CPU per call, like wrk). "Cheap" = a
   one-key lookup: get_trace(trace_id) (one trace of ~17 spans, two indexed SQL queries) and
   search_logs(trace_id=...) (the logs of one trace). Side by side, the same client against (a) the MCP
   SDK's floor: a bare MCPServer with an echo tool in stateless HTTP mode, and (b) the SDK plus the same two
   DuckDB queries get_trace runs, returning the rows (the SDK + engine floor without obsmcp's layers).
2. ingest capacity: log records/s with 64 concurrent senders of realistic gzip protobuf batches (500 records);
   fewer in flight leave the group commit (up to ingest_flush_ms per batch) waiting, not the server busy.
3. load: 50 MCP SDK clients (each its own session over streamable HTTP) call a mix of tools in a loop while
   OTLP logs arrive at half the capacity measured in phase 2: errors, per-tool p50/p99, acknowledged vs
   stored records, resident memory over the run.
4. overload: OTLP logs offered at 3x the measured capacity (open loop: requests start on schedule whatever
   the answers): status counts, Retry-After on every refusal, memory against `ingest_memory_max_mb`, and
   acknowledged vs stored.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gzip
import json
import multiprocessing
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import httpx

from bench import report
from bench.ingest import free_port
from bench.sysmon import CpuWatch, settle, tree_cpu_s

WORK = Path(__file__).resolve().parent / ".work" / "load"
OBSMCP = Path(sys.executable).parent / "obsmcp"
RECORDS_PER_REQUEST = 500


def log(msg: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {msg}", file=sys.stderr, flush=True)


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


def ms(v: float | None) -> float | None:
    return None if v is None else round(v * 1000, 1)


def rss_mb(pid: int) -> float:
    """Resident memory of a process and its children (obsmcp's decode workers)."""
    total = 0.0
    pids = [pid]
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            pids += [int(c) for c in (task / "children").read_text().split()]
    for p in pids:
        with contextlib.suppress(OSError):
            m = re.search(r"^VmRSS:\s+(\d+) kB", Path(f"/proc/{p}/status").read_text(), re.M)
            total += int(m.group(1)) / 1024 if m else 0.0
    return total


class RssSampler:
    def __init__(self, pid: int, every_s: float = 0.1) -> None:
        self.pid, self.every_s = pid, every_s
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        t0 = time.perf_counter()
        while not self._stop.is_set():
            self.samples.append((round(time.perf_counter() - t0, 2), round(rss_mb(self.pid), 1)))
            time.sleep(self.every_s)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def summary(self) -> dict[str, Any]:
        values = [v for _, v in self.samples]
        n = len(values)
        return {
            "start_mb": values[0] if values else None,
            "peak_mb": max(values) if values else None,
            "end_mb": values[-1] if values else None,
            # Growth over the last half: near zero when memory is bounded, steady when something leaks.
            "last_half_growth_mb": round(values[-1] - values[n // 2], 1) if n > 2 else None,
        }


# -- servers ----------------------------------------------------------------------------------------


class Proc:
    """A server subprocess on free ports, its output in a log file."""

    def __init__(self, cmd: list[str], env: dict[str, str], log_path: Path, health_url: str) -> None:
        self.cmd, self.env, self.log_path, self.health_url = cmd, env, log_path, health_url
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Proc:
        self._log = open(self.log_path, "wb")  # closed in __exit__
        self.proc = subprocess.Popen(self.cmd, env=self.env, stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.cmd[0]} exited with {self.proc.returncode}: see {self.log_path}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.health_url, timeout=2).status_code < 500:
                    return self
            time.sleep(0.1)
        raise RuntimeError(f"{self.cmd} did not answer {self.health_url} within 60s: see {self.log_path}")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def __exit__(self, *exc: object) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._log.close()


def obsmcp_server(
    data_dir: Path, log_path: Path, *, stateless: bool = False, extra: dict[str, str] | None = None
) -> tuple[Proc, int, int]:
    port, otlp = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("OBSMCP_")}
    env.update(
        {
            "OBSMCP_RETENTION_DAYS": "36500",
            "OBSMCP_RETENTION_MAX_GB": "100000",
            "OBSMCP_RATE_LIMIT_PER_CLIENT": "0",  # one load generator address would be throttled as one client
            **(extra or {}),
        }
    )
    cmd = [str(OBSMCP), "serve", "--http", "--port", str(port), "--otlp-port", str(otlp)]
    cmd += ["--data-dir", str(data_dir), "--log-format", "json"]
    if stateless:
        cmd.append("--stateless")
    return Proc(cmd, env, log_path, f"http://127.0.0.1:{port}/health"), port, otlp


BASELINE_SERVER = textwrap.dedent(
    '''
    """The MCP SDK's floor: a bare MCPServer in stateless HTTP mode (plain JSON), logging like obsmcp."""
    import logging, sys
    import anyio, duckdb, uvicorn
    from mcp.server.mcpserver import MCPServer

    port, store = int(sys.argv[1]), sys.argv[2]
    mcp = MCPServer("baseline")
    logging.getLogger("mcp").setLevel(logging.WARNING)  # obsmcp does the same (the SDK logs every call)
    con = duckdb.connect(store, config={"enable_external_access": False})

    @mcp.tool()
    async def echo(text: str) -> str:
        return text

    def _rows(trace_id: str) -> int:
        cur = con.cursor()
        try:
            b = cur.execute(
                'SELECT epoch_ns(min("Start")), epoch_ns(max("End")) FROM otel_traces_trace_id_ts WHERE "TraceId" = ?',
                [trace_id],
            ).fetchone()
            rows = cur.execute(
                'SELECT "SpanId", "ParentSpanId", "ServiceName", "SpanName", "SpanKind", epoch_ns("Timestamp"), '
                '"Duration", "StatusCode", "StatusMessage", "SpanAttributes", "Events.Name" FROM otel_traces '
                'WHERE "Timestamp" >= make_timestamp_ns(?) AND "Timestamp" < make_timestamp_ns(?) AND "TraceId" = ?',
                [b[0], b[1] + 1, trace_id],
            ).fetchall()
            return len(rows)
        finally:
            cur.close()

    @mcp.tool()
    async def trace_rows(trace_id: str) -> int:
        return await anyio.to_thread.run_sync(_rows, trace_id)

    app = mcp.streamable_http_app(streamable_http_path="/mcp", stateless_http=True, json_response=True)
    app.add_route("/health", lambda request: __import__("starlette.responses").responses.PlainTextResponse("ok"))
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)
    '''
)


def baseline_server(store: Path, log_path: Path) -> tuple[Proc, int]:
    port = free_port()
    script = WORK / "baseline_server.py"
    script.write_text(BASELINE_SERVER)
    cmd = [sys.executable, str(script), str(port), str(store)]
    return Proc(cmd, dict(os.environ), log_path, f"http://127.0.0.1:{port}/health"), port


# -- raw HTTP client (throughput) ----------------------------------------------------------------------


def _raw_client(port: int, calls: list[tuple[str, dict[str, Any]]], conc: int, seconds: float, out: Any) -> None:
    """Runs in its own process: `conc` keep-alive connections posting JSON-RPC tools/call as fast as answered."""

    async def main() -> dict[str, Any]:
        lat: list[float] = []
        errors: Counter[str] = Counter()
        stop = time.perf_counter() + seconds

        def request(i: int) -> bytes:
            name, args = calls[i % len(calls)]
            body = json.dumps(
                {"jsonrpc": "2.0", "id": i, "method": "tools/call", "params": {"name": name, "arguments": args}}
            ).encode()
            head = (
                f"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
                "Accept: application/json, text/event-stream\r\nMCP-Protocol-Version: 2025-11-25\r\n"
                f"Content-Length: {len(body)}\r\n\r\n"
            )
            return head.encode() + body

        async def worker(w: int) -> None:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            i = w
            while time.perf_counter() < stop:
                t0 = time.perf_counter()
                writer.write(request(i))
                head = await reader.readuntil(b"\r\n\r\n")
                status = int(head.split(b" ", 2)[1])
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                body = await reader.readexactly(length)
                lat.append(time.perf_counter() - t0)
                if status != 200:
                    errors[f"http {status}"] += 1
                elif b'"isError":true' in body:
                    errors[body[:160].decode(errors="replace")] += 1
                i += conc
            writer.close()

        cpu0 = time.process_time()
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(w) for w in range(conc)))
        wall = time.perf_counter() - t0
        return {
            "calls": len(lat),
            "seconds": round(wall, 2),
            "calls_per_s": round(len(lat) / wall),
            "p50_ms": ms(pct(lat, 0.5)),
            "p99_ms": ms(pct(lat, 0.99)),
            "errors": sum(errors.values()),
            "error_examples": list(errors)[:3],
            "client_cpu_cores": round((time.process_time() - cpu0) / wall, 2),
        }

    out.put(asyncio.run(main()))


def drive(
    port: int, server_pid: int, calls: list[tuple[str, dict[str, Any]]], conc: int, seconds: float
) -> dict[str, Any]:
    ctx = multiprocessing.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_raw_client, args=(port, calls, conc, seconds, q))
    cpu0 = tree_cpu_s(server_pid)
    with CpuWatch((server_pid,)) as watch:
        p.start()
        res: dict[str, Any] = q.get()
        p.join()
    res["server_cpu_cores"] = round((tree_cpu_s(server_pid) - cpu0) / res["seconds"], 2)
    res["other_cores"] = watch.result["other_cores"]
    return res


def run_throughput(store: Path, seconds: float, conc: int) -> dict[str, Any]:
    work = WORK / "throughput"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    shutil.copytree(store.parent, work / "obsmcp")
    shutil.copytree(store.parent, work / "baseline")
    out: dict[str, Any] = {"concurrency": conc, "seconds": seconds, "cases": {}}
    server, port, _ = obsmcp_server(work / "obsmcp", work / "obsmcp.log", stateless=True)
    with server:
        trace_id = _newest_trace(port)
        cheap = [("get_trace", {"trace_id": trace_id}), ("search_logs", {"trace_id": trace_id, "limit": 20})]
        out["cheap_definition"] = (
            "get_trace(trace_id) and search_logs(trace_id=..., limit=20) alternating, on one trace of the demo "
            "store: one-key lookups (no scan), each answer rendered through obsmcp's result contract"
        )
        out["trace_spans"] = _sql(port, f"SELECT count(*) FROM otel_traces WHERE \"TraceId\" = '{trace_id}'")
        for key, calls in (
            ("obsmcp_cheap_mix", cheap),
            ("obsmcp_get_trace", cheap[:1]),
            ("obsmcp_search_logs_trace_id", cheap[1:]),
            ("obsmcp_query_sql_select_1", [("query_sql", {"sql": "SELECT 1"})]),
            ("obsmcp_list_metrics", [("list_metrics", {})]),
        ):
            settle(log)
            drive(port, server.pid, calls, conc, 2.0)  # warm-up
            out["cases"][key] = drive(port, server.pid, calls, conc, seconds)
            log(f"throughput {key}: {_line(out['cases'][key])}")
    base, bport = baseline_server(work / "baseline" / "obsmcp.duckdb", work / "baseline.log")
    with base:
        for key, calls in (
            ("sdk_echo", [("echo", {"text": "hello"})]),
            ("sdk_plus_duckdb_trace_rows", [("trace_rows", {"trace_id": trace_id})]),
        ):
            settle(log)
            drive(bport, base.pid, calls, conc, 2.0)
            out["cases"][key] = drive(bport, base.pid, calls, conc, seconds)
            log(f"throughput {key}: {_line(out['cases'][key])}")
    return out


def _line(r: dict[str, Any]) -> str:
    return (
        f"{r['calls_per_s']}/s p50 {r['p50_ms']} ms p99 {r['p99_ms']} ms, errors {r['errors']}, "
        f"server {r['server_cpu_cores']} cores, client {r['client_cpu_cores']}, others {r['other_cores']}"
    )


def _jsonrpc(port: int, name: str, args: dict[str, Any]) -> dict[str, Any]:
    """One tool call through the MCP SDK client (works in stateful and stateless mode); the result as JSON."""
    import anyio
    from mcp import Client

    async def call() -> dict[str, Any]:
        async with Client(f"http://127.0.0.1:{port}/mcp") as client:
            r = await client.call_tool(name, args)
        if r.is_error:
            raise RuntimeError(f"{name}({args}) failed: {r.content[0].text[:300]}")  # type: ignore[union-attr]
        return {"structuredContent": r.structured_content}

    return anyio.run(call)


def _sql(port: int, sql: str) -> Any:
    return _jsonrpc(port, "query_sql", {"sql": sql})["structuredContent"]["rows"][0][0]


def _newest_trace(port: int) -> str:
    return str(
        _sql(
            port,
            'SELECT "TraceId" FROM otel_traces WHERE "ParentSpanId" = \'\' ORDER BY "Timestamp" DESC LIMIT 1',
        )
    )


# -- OTLP senders ----------------------------------------------------------------------------------------


def log_batch(seq: int, records: int = RECORDS_PER_REQUEST) -> bytes:
    """A realistic logs export request (gzip protobuf): 4 services, trace context, 5 attributes per record.

    The resource carries a unique `bench.batch` attribute value = seq, so acknowledged batches can be
    counted in the store.
    """
    from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
    from opentelemetry.proto.common.v1 import common_pb2
    from opentelemetry.proto.logs.v1 import logs_pb2
    from opentelemetry.proto.resource.v1 import resource_pb2

    def kv(k: str, v: str) -> common_pb2.KeyValue:
        return common_pb2.KeyValue(key=k, value=common_pb2.AnyValue(string_value=v))

    rng = random.Random(seq)
    now = time.time_ns()
    service = f"bench-load-{seq % 4}"
    recs = []
    for _ in range(records):
        sev = rng.choice((9, 9, 9, 13, 17))
        recs.append(
            logs_pb2.LogRecord(
                time_unix_nano=now - rng.randrange(10**9),
                observed_time_unix_nano=now,
                severity_number=sev,
                severity_text={9: "INFO", 13: "WARN", 17: "ERROR"}[sev],
                body=common_pb2.AnyValue(
                    string_value=f"request {rng.randrange(10**9):x} handled in {rng.randrange(2000)} ms for user "
                    f"{rng.randrange(10**6)} route /api/v1/items/{rng.randrange(1000)}"
                ),
                trace_id=rng.randbytes(16),
                span_id=rng.randbytes(8),
                attributes=[
                    kv("http.route", f"/api/v1/items/{rng.randrange(20)}"),
                    kv("http.request.method", rng.choice(("GET", "POST"))),
                    kv("user.id", str(rng.randrange(10**6))),
                    kv("thread.name", f"worker-{rng.randrange(16)}"),
                    kv("code.function", "handle_request"),
                ],
            )
        )
    resource = resource_pb2.Resource(
        attributes=[kv("service.name", service), kv("bench.batch", f"b{seq:08d}"), kv("host.name", "bench-host")]
    )
    req = logs_service_pb2.ExportLogsServiceRequest(
        resource_logs=[logs_pb2.ResourceLogs(resource=resource, scope_logs=[logs_pb2.ScopeLogs(log_records=recs)])]
    )
    return gzip.compress(req.SerializeToString(), 6)


HEADERS = {"Content-Type": "application/x-protobuf", "Content-Encoding": "gzip"}


def _bodies(n: int) -> list[bytes]:
    return [log_batch(i) for i in range(n)]


def _sender(otlp_port: int, mode: str, rate_rps: float, conc: int, seconds: float, out: Any) -> None:
    """Runs in its own process. mode closed: `conc` senders back to back; open: requests start every 1/rate
    seconds whatever the answers (at most `conc` in flight: past it the sender itself is saturated)."""
    bodies = _bodies(64)  # pre-built; each send patches the batch id, so generation costs no send time

    async def main() -> dict[str, Any]:
        codes: Counter[str] = Counter()
        acked: list[int] = []
        lat: list[float] = []
        no_retry_after = 0
        saturated = 0
        seq = 0
        limits = httpx.Limits(max_connections=conc, max_keepalive_connections=conc)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{otlp_port}", limits=limits, timeout=120) as http:

            async def one(i: int) -> None:
                nonlocal no_retry_after
                body = _with_batch_id(bodies[i % len(bodies)], i)
                t0 = time.perf_counter()
                try:
                    r = await http.post("/v1/logs", content=body, headers=HEADERS)
                except httpx.HTTPError as e:
                    codes[type(e).__name__] += 1
                    return
                lat.append(time.perf_counter() - t0)
                codes[str(r.status_code)] += 1
                if r.status_code == 200:
                    acked.append(i)
                elif r.status_code in (429, 503) and not r.headers.get("Retry-After", "").isdigit():
                    no_retry_after += 1

            cpu0 = time.process_time()
            t_start = time.perf_counter()
            stop = t_start + seconds
            if mode == "closed":

                async def loop() -> None:
                    nonlocal seq
                    while time.perf_counter() < stop:
                        seq += 1
                        await one(seq)

                await asyncio.gather(*(loop() for _ in range(conc)))
            else:
                sem = asyncio.Semaphore(conc)
                tasks: set[asyncio.Task[None]] = set()

                async def guarded(i: int) -> None:
                    try:
                        await one(i)
                    finally:
                        sem.release()

                next_t = t_start
                while next_t < stop:
                    await asyncio.sleep(max(0.0, next_t - time.perf_counter()))
                    if sem.locked():
                        saturated += 1
                    await sem.acquire()
                    seq += 1
                    t = asyncio.create_task(guarded(seq))
                    tasks.add(t)
                    t.add_done_callback(tasks.discard)
                    next_t += 1.0 / rate_rps
                await asyncio.gather(*tasks)
            wall = time.perf_counter() - t_start
        return {
            "mode": mode,
            "offered_requests_per_s": round(rate_rps, 2) if mode == "open" else None,
            "requests": seq,
            "seconds": round(wall, 2),
            "status": dict(codes),
            "acked_requests": len(acked),
            "acked_records": len(acked) * RECORDS_PER_REQUEST,
            "acked_records_per_s": round(len(acked) * RECORDS_PER_REQUEST / wall),
            "acked_batch_ids": acked,
            "refusals_without_retry_after": no_retry_after,
            "sender_saturated_starts": saturated,
            "request_p50_ms": ms(pct(lat, 0.5)),
            "request_p99_ms": ms(pct(lat, 0.99)),
            "sender_cpu_cores": round((time.process_time() - cpu0) / wall, 2),
        }

    out.put(asyncio.run(main()))


_BATCH_RE = re.compile(rb"b\d{8}")


def _with_batch_id(body_gz: bytes, i: int) -> bytes:
    raw = gzip.decompress(body_gz)
    return gzip.compress(_BATCH_RE.sub(f"b{i:08d}".encode(), raw, count=1), 1)


def start_sender(otlp_port: int, mode: str, rate_rps: float, conc: int, seconds: float) -> tuple[Any, Any]:
    ctx = multiprocessing.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_sender, args=(otlp_port, mode, rate_rps, conc, seconds, q))
    p.start()
    return p, q


def stored_batches(port: int, acked: list[int]) -> dict[str, Any]:
    """How many of the acknowledged batches are in the store, whole; and records stored in total."""
    rows = _jsonrpc(
        port,
        "query_sql",
        {
            "sql": "SELECT count(*), count(DISTINCT attr(\"ResourceAttributes\", 'bench.batch')) FROM otel_logs "
            "WHERE \"ServiceName\" LIKE 'bench-load-%'"
        },
    )["structuredContent"]["rows"][0]
    records, batches = int(rows[0]), int(rows[1])
    return {
        "acked_batches": len(acked),
        "stored_batches": batches,
        "acked_records": len(acked) * RECORDS_PER_REQUEST,
        "stored_records": records,
        "lost_records": max(0, len(acked) * RECORDS_PER_REQUEST - records),
    }


def run_capacity(store: Path, seconds: float, conc: int = 64) -> dict[str, Any]:
    work = WORK / "capacity"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    server, port, otlp = obsmcp_server(work / "data", work / "server.log")
    with server:
        settle(log)
        p, q = start_sender(otlp, "closed", 0, conc, seconds)
        with CpuWatch((server.pid,)) as watch:
            res = q.get()
            p.join()
        res["other_cores"] = watch.result["other_cores"]
        res["server_cpu_cores"] = round(watch.result["bench_cores"] - res["sender_cpu_cores"], 2)
        res["store"] = stored_batches(port, res.pop("acked_batch_ids"))
    res["concurrency"] = conc
    res["records_per_request"] = RECORDS_PER_REQUEST
    log(f"capacity: {res['acked_records_per_s']:,} log records/s ({res['status']}), others {res['other_cores']}")
    return res


# -- load: 50 MCP clients + ingest at half capacity ---------------------------------------------------------


def _mcp_clients(mcp_url: str, clients: int, seconds: float, trace_id: str, out: Any) -> None:
    """Runs in its own process: `clients` MCP SDK clients, each its own session, calling a tool mix in a loop."""
    from mcp import Client

    mix: list[tuple[str, dict[str, Any]]] = [
        ("list_services", {}),
        ("search_logs", {"service": "checkout", "query": "timeout", "limit": 20}),
        ("search_logs", {"trace_id": trace_id}),
        ("search_traces", {"service": "frontend", "status": "error", "limit": 10}),
        ("get_trace", {"trace_id": trace_id}),
        ("list_metrics", {"filter": "http"}),
        ("query_metrics", {"metric": "http.server.request.duration", "service": "checkout"}),
        ("find_errors", {"limit": 10}),
    ]

    async def main() -> dict[str, Any]:
        lat: dict[str, list[float]] = defaultdict(list)
        errors: Counter[str] = Counter()
        stop = time.perf_counter() + seconds

        async def one(n: int) -> None:
            rng = random.Random(n)
            try:
                async with Client(mcp_url) as client:
                    while time.perf_counter() < stop:
                        name, args = rng.choice(mix)
                        t0 = time.perf_counter()
                        try:
                            r = await client.call_tool(name, args)
                        except Exception as e:  # counted and reported: the figure is "errors"
                            errors[f"{name}: {type(e).__name__}: {str(e)[:120]}"] += 1
                            continue
                        lat[name].append(time.perf_counter() - t0)
                        if r.is_error:
                            text = r.content[0].text if r.content else ""  # type: ignore[union-attr]
                            errors[f"{name}: {text[:160]}"] += 1
            except Exception as e:  # a session that could not start
                errors[f"session: {type(e).__name__}: {str(e)[:160]}"] += 1

        cpu0 = time.process_time()
        t0 = time.perf_counter()
        await asyncio.gather(*(one(n) for n in range(clients)))
        wall = time.perf_counter() - t0
        return {
            "clients": clients,
            "seconds": round(wall, 2),
            "calls": sum(len(v) for v in lat.values()),
            "calls_per_s": round(sum(len(v) for v in lat.values()) / wall, 1),
            "errors": sum(errors.values()),
            "error_examples": list(errors)[:5],
            "per_tool": {
                k: {"calls": len(v), "p50_ms": ms(pct(v, 0.5)), "p99_ms": ms(pct(v, 0.99))}
                for k, v in sorted(lat.items())
            },
            "client_cpu_cores": round((time.process_time() - cpu0) / wall, 2),
        }

    out.put(asyncio.run(main()))


def run_load(store: Path, capacity_rps: float, seconds: float, clients: int) -> dict[str, Any]:
    work = WORK / "load"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    shutil.copytree(store.parent, work / "data")
    server, port, otlp = obsmcp_server(work / "data", work / "server.log")
    with server:
        trace_id = _newest_trace(port)
        settle(log)
        ctx = multiprocessing.get_context("spawn")
        q = ctx.Queue()
        rate = capacity_rps / 2
        idle = rss_mb(server.pid)
        with RssSampler(server.pid) as rss, CpuWatch((server.pid,)) as watch:
            sp, sq = start_sender(otlp, "open", rate, 64, seconds)
            cp = ctx.Process(target=_mcp_clients, args=(f"http://127.0.0.1:{port}/mcp", clients, seconds, trace_id, q))
            cp.start()
            mcp_res = q.get()
            ingest = sq.get()
            cp.join()
            sp.join()
        ingest["store"] = stored_batches(port, ingest.pop("acked_batch_ids"))
        health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=10).json()["status"]
    res = {
        "mcp": mcp_res,
        "ingest": ingest,
        "ingest_target_records_per_s": round(rate * RECORDS_PER_REQUEST),
        "memory": {"idle_mb": round(idle, 1), **rss.summary()},
        "health_after": health,
        "other_cores": watch.result["other_cores"],
    }
    log(
        f"load: {mcp_res['calls']} calls ({mcp_res['calls_per_s']}/s), {mcp_res['errors']} errors; ingest "
        f"{ingest['acked_records_per_s']:,} records/s, lost {ingest['store']['lost_records']}; "
        f"memory {res['memory']}"
    )
    return res


def run_overload(store: Path, capacity_rps: float, seconds: float, memory_mb: int) -> dict[str, Any]:
    work = WORK / "overload"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    server, port, otlp = obsmcp_server(
        work / "data", work / "server.log", extra={"OBSMCP_INGEST_MEMORY_MAX_MB": str(memory_mb)}
    )
    with server:
        settle(log)
        idle = rss_mb(server.pid)
        with RssSampler(server.pid) as rss:
            p, q = start_sender(otlp, "open", 3 * capacity_rps, 512, seconds)
            res = q.get()
            p.join()
        res["store"] = stored_batches(port, res.pop("acked_batch_ids"))
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
        m = re.search(r"^obsmcp_ingest_memory_peak_bytes (\S+)$", text, re.M)
        res["ingest_memory_peak_mb"] = round(float(m.group(1)) / 1024**2, 1) if m else None
        res["ingest_memory_max_mb"] = memory_mb
        res["memory"] = {"idle_mb": round(idle, 1), **rss.summary()}
        res["health_after"] = httpx.get(f"http://127.0.0.1:{port}/health", timeout=10).json()["status"]
    res["offered_records_per_s"] = round(3 * capacity_rps * RECORDS_PER_REQUEST)
    log(
        f"overload: {res['status']}, acked {res['acked_records_per_s']:,} records/s, lost "
        f"{res['store']['lost_records']}, ingest memory peak {res['ingest_memory_peak_mb']} MB, rss {res['memory']}"
    )
    return res


# -- main ------------------------------------------------------------------------------------------------


def demo_store(duration: str, rate: float) -> Path:
    d = WORK / f"demo-{duration}-{rate:g}"
    store = d / "obsmcp.duckdb"
    if not store.exists():
        log(f"generating the demo store ({duration} at {rate:g} requests/s) in {d}")
        env = {k: v for k, v in os.environ.items() if not k.startswith("OBSMCP_")}
        env["OBSMCP_RATE_LIMIT_PER_CLIENT"] = "0"
        cmd = [str(OBSMCP), "demo", "--no-serve", "--duration", duration, "--rate", str(rate), "--data-dir", str(d)]
        cmd += ["--port", "0", "--otlp-port", "0"]
        subprocess.run(
            cmd,
            check=True,
            env=env,
            capture_output=True,
        )
    return store


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.load", description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=20.0, help="length of each timed phase (default 20)")
    p.add_argument("--clients", type=int, default=50, help="MCP clients in the load phase (default 50)")
    p.add_argument("--concurrency", type=int, default=16, help="connections of the throughput client (default 16)")
    p.add_argument("--memory-mb", type=int, default=64, help="ingest_memory_max_mb in the overload phase")
    p.add_argument("--phases", default="throughput,capacity,load,overload", help="comma-separated phases to run")
    p.add_argument("--max-quiet-wait", type=float, default=120.0, help="wait this long for a quiet machine (0: no)")
    args = p.parse_args(argv)
    from bench import sysmon

    sysmon.MAX_WAIT_S = args.max_quiet_wait
    WORK.mkdir(parents=True, exist_ok=True)
    phases = {x.strip() for x in args.phases.split(",")}
    store = demo_store("30m", 2.0)
    result: dict[str, Any] = {
        "machine": report.machine_info(),
        "src_state": report.src_state(),
        "demo_store": {"duration": "30m", "rate": 2.0, "bytes": store.stat().st_size},
    }
    if "throughput" in phases:
        result["throughput"] = run_throughput(store, args.seconds, args.concurrency)
    capacity_rps = None
    if phases & {"capacity", "load", "overload"}:
        result["ingest_capacity"] = run_capacity(store, args.seconds)
        capacity_rps = result["ingest_capacity"]["acked_requests"] / result["ingest_capacity"]["seconds"]
    if "load" in phases and capacity_rps:
        result["load"] = run_load(store, capacity_rps, args.seconds * 1.5, args.clients)
    if "overload" in phases and capacity_rps:
        result["overload"] = run_overload(store, capacity_rps, args.seconds, args.memory_mb)
    result["goals"] = goals(result)
    result["src_state_end"] = report.src_state()
    out = report.RESULTS / "load.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    (report.RESULTS / "load.md").write_text(markdown(result))
    log(f"wrote {out} and load.md")
    for g in result["goals"]:
        log(f"  {g['status']:>5}: {g['goal']} ({g['value']})")
    return 0


def markdown(result: dict[str, Any]) -> str:
    """A short human summary of load.json (the JSON has every figure)."""
    m = result["machine"]
    lines = [
        "# Load, overload and throughput (bench/load.py)",
        "",
        f"{m.get('date')}, {m.get('cpus')} cores, commit {m.get('git_commit')}. "
        "Figures from a shared machine: `other_cores` in load.json says how busy the rest of it was.",
        "",
    ]
    tp = result.get("throughput")
    if tp:
        lines += [
            f"## Tool calls per second, stateless HTTP ({tp['concurrency']} connections, raw HTTP/1.1 client in its "
            "own process)",
            "",
            f"Cheap = {tp['cheap_definition']}.",
            "",
            "| case | calls/s | p50 ms | p99 ms | errors | server cores | client cores | other cores |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for k, r in tp["cases"].items():
            lines.append(
                f"| {k} | {r['calls_per_s']} | {r['p50_ms']} | {r['p99_ms']} | {r['errors']} | "
                f"{r['server_cpu_cores']} | {r['client_cpu_cores']} | {r['other_cores']} |"
            )
        lines.append("")
    cap = result.get("ingest_capacity")
    if cap:
        lines += [
            "## Ingest capacity",
            "",
            f"{cap['acked_records_per_s']:,} log records/s ({cap['concurrency']} senders x {cap['records_per_request']}"
            f"-record gzip protobuf requests; lost {cap['store']['lost_records']}).",
            "",
        ]
    load = result.get("load")
    if load:
        mc = load["mcp"]
        lines += [
            f"## {mc['clients']} MCP clients (sessions over streamable HTTP) + ingest at half capacity",
            "",
            f"{mc['calls']} calls in {mc['seconds']} s, {mc['errors']} errors; ingest target "
            f"{load['ingest_target_records_per_s']:,}/s, acknowledged {load['ingest']['acked_records_per_s']:,}/s, "
            f"lost {load['ingest']['store']['lost_records']}; memory {load['memory']}.",
            "",
            "| tool | calls | p50 ms | p99 ms |",
            "|---|---:|---:|---:|",
        ]
        lines += [f"| {k} | {v['calls']} | {v['p50_ms']} | {v['p99_ms']} |" for k, v in mc["per_tool"].items()]
        lines.append("")
    ov = result.get("overload")
    if ov:
        lines += [
            "## Overload: 3x capacity offered (open loop)",
            "",
            f"Offered {ov['offered_records_per_s']:,} records/s; answers {ov['status']}; acknowledged "
            f"{ov['acked_records_per_s']:,}/s; refusals without Retry-After {ov['refusals_without_retry_after']}; "
            f"lost {ov['store']['lost_records']}; ingest memory peak {ov['ingest_memory_peak_mb']} MB of "
            f"{ov['ingest_memory_max_mb']} MB; process memory {ov['memory']}.",
            "",
        ]
    lines += ["## Goals", ""] + [f"- {g['status']}: {g['goal']} ({g['value']})" for g in result.get("goals", [])]
    return "\n".join(lines) + "\n"


def goals(result: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []

    def add(goal: str, value: Any, ok: bool | None) -> None:
        out.append({"goal": goal, "value": value, "status": "n/a" if ok is None else ("PASS" if ok else "MISS")})

    tp = result.get("throughput", {}).get("cases", {})
    cheap = tp.get("obsmcp_cheap_mix")
    add(
        ">= 500 cheap tool calls/s on 2 cores, stateless HTTP",
        cheap and cheap["calls_per_s"],
        None if not cheap else cheap["calls_per_s"] >= 500 and cheap["errors"] == 0,
    )
    load = result.get("load")
    if load:
        add(
            "50 MCP clients during ingest at half capacity: zero errors",
            load["mcp"]["errors"],
            load["mcp"]["errors"] == 0,
        )
        lost = load["ingest"]["store"]["lost_records"]
        add("zero lost records (acknowledged vs stored) under load", lost, lost == 0)
    ov = result.get("overload")
    if ov:
        bad = {k: v for k, v in ov["status"].items() if k not in ("200", "429", "503")}
        add(
            "overload (3x): only 200 or 429/503 with Retry-After",
            bad or ov["refusals_without_retry_after"],
            not bad and ov["refusals_without_retry_after"] == 0,
        )
        add(
            "overload: ingest memory under ingest_memory_max_mb",
            ov["ingest_memory_peak_mb"],
            ov["ingest_memory_peak_mb"] is not None and ov["ingest_memory_peak_mb"] <= ov["ingest_memory_max_mb"],
        )
        add(
            "overload: everything acknowledged is stored", ov["store"]["lost_records"], ov["store"]["lost_records"] == 0
        )
    return out


if __name__ == "__main__":
    raise SystemExit(main())
