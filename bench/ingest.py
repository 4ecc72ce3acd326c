"""Ingest benchmarks: a real `obsmcp serve --http` fed over OTLP/HTTP, and DuckDB's own insert speed.

End to end: the server runs as a subprocess on a fresh data directory; the cached gzip protobuf bodies are
POSTed by several concurrent senders (httpx, keep-alive connections), one signal after the other, so
spans/s and log records/s are measured separately. A request counts when its 200 arrives, and obsmcp
answers only after the rows are committed.

Baseline: the same bodies decoded with ``obsmcp.ingest.otlp.decode`` (untimed for the insert figure, but
the decode time is recorded too) and inserted with ``INSERT INTO t SELECT * FROM arrow_table`` into a
fresh DuckDB file with the same DDL: what the storage engine can take on this machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import itertools
import os
import signal as signal_mod
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from bench.dataset import SIGNALS, Dataset
from bench.sysmon import CpuWatch, proc_cpu_s, settle, tree_cpu_s


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def proc_rss_mb(pid: int, key: str = "VmHWM") -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    return 0.0


def server_env(data_dir: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "OBSMCP_DATA_DIR": str(data_dir),
            # Cached datasets keep their original timestamps: never let retention delete them.
            "OBSMCP_RETENTION_DAYS": "36500",
            "OBSMCP_RETENTION_MAX_GB": "100000",
        }
    )
    return env


class Server:
    """`obsmcp serve --http` as a subprocess."""

    def __init__(self, data_dir: Path, log_path: Path) -> None:
        self.data_dir = data_dir
        self.log_path = log_path
        self.mcp_port = free_port()
        self.otlp_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def otlp_url(self) -> str:
        return f"http://127.0.0.1:{self.otlp_port}"

    def start(self, timeout_s: float = 60.0) -> float:
        exe = Path(sys.executable).parent / "obsmcp"
        cmd = [str(exe)] if exe.exists() else [sys.executable, "-c", "from obsmcp.cli import main; main()"]
        cmd += ["serve", "--http", "--port", str(self.mcp_port), "--otlp-port", str(self.otlp_port)]
        t0 = time.perf_counter()
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(cmd, env=server_env(self.data_dir), stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"obsmcp serve exited with {self.proc.returncode}: see {self.log_path}")
            with contextlib.suppress(httpx.HTTPError):
                r = httpx.get(f"http://127.0.0.1:{self.mcp_port}/health", timeout=2)
                if r.status_code == 200:
                    return time.perf_counter() - t0
            time.sleep(0.1)
        raise RuntimeError(f"obsmcp serve did not become healthy in {timeout_s}s: see {self.log_path}")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def stop(self, timeout_s: float = 600.0) -> float:
        """SIGINT (the CLI then commits what is queued and closes the store); returns seconds to exit."""
        assert self.proc is not None
        t0 = time.perf_counter()
        self.proc.send_signal(signal_mod.SIGINT)
        try:
            self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise RuntimeError(f"obsmcp serve did not stop within {timeout_s}s") from None
        finally:
            self._log.close()
        return time.perf_counter() - t0


# -- sender -------------------------------------------------------------------------------------------

_PATHS = {"traces": "/v1/traces", "logs": "/v1/logs", "metrics": "/v1/metrics"}


def _rejected(signal: str, body: bytes) -> int:
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceResponse
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

    if not body:
        return 0
    if signal == "traces":
        m = ExportTraceServiceResponse.FromString(body)
        return int(m.partial_success.rejected_spans)
    if signal == "logs":
        m2 = ExportLogsServiceResponse.FromString(body)
        return int(m2.partial_success.rejected_log_records)
    m3 = ExportMetricsServiceResponse.FromString(body)
    return int(m3.partial_success.rejected_data_points)


async def send_signal(
    ds: Dataset, signal: str, endpoint: str, concurrency: int, server_pid: int | None, limit: int = 0
) -> dict[str, Any]:
    """POST every cached body of one signal (or the first `limit`) with `concurrency` requests in flight."""
    records = ds.records(signal) if not limit else itertools.islice(ds.records(signal), limit)
    items_sent = 0
    bytes_sent = 0
    requests = 0
    rejected = 0
    throttled = 0
    latencies: list[float] = []
    headers = {"Content-Type": "application/x-protobuf", "Content-Encoding": "gzip"}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async with httpx.AsyncClient(base_url=endpoint, limits=limits, timeout=300) as client:

        async def worker() -> None:
            nonlocal items_sent, bytes_sent, requests, rejected, throttled
            for items, body in records:  # one shared iterator: each body is taken by exactly one worker
                while True:
                    t0 = time.perf_counter()
                    r = await client.post(_PATHS[signal], content=body, headers=headers)
                    if r.status_code in (429, 503):
                        throttled += 1
                        await asyncio.sleep(float(r.headers.get("Retry-After", "1")))
                        continue
                    if r.status_code != 200:
                        raise RuntimeError(f"POST {signal}: HTTP {r.status_code}: {r.text[:300]}")
                    latencies.append(time.perf_counter() - t0)
                    rejected += _rejected(signal, r.content)
                    break
                items_sent += items
                bytes_sent += len(body)
                requests += 1

        cpu0 = tree_cpu_s(server_pid) if server_pid else 0.0
        main0 = proc_cpu_s(server_pid) if server_pid else 0.0
        own0 = time.process_time()
        watch = CpuWatch((server_pid,) if server_pid else ())
        with watch:
            t0 = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(concurrency)))
            wall = time.perf_counter() - t0
        own_cpu = time.process_time() - own0
        cpu = (tree_cpu_s(server_pid) - cpu0) if server_pid else None
        main_cpu = (proc_cpu_s(server_pid) - main0) if server_pid else None
    latencies.sort()
    return {
        "items": items_sent,
        "requests": requests,
        "gzip_bytes": bytes_sent,
        "seconds": round(wall, 3),
        "items_per_s": round(items_sent / wall) if wall else None,
        "rejected_items": rejected,
        "throttled_responses": throttled,
        "request_p50_ms": round(_pct(latencies, 0.5) * 1000, 1),
        "request_p95_ms": round(_pct(latencies, 0.95) * 1000, 1),
        "server_cpu_s": round(cpu, 2) if cpu is not None else None,
        "server_cpu_util": round(cpu / wall, 2) if cpu is not None and wall else None,
        "server_main_process_cpu_util": round(main_cpu / wall, 2) if main_cpu is not None and wall else None,
        "sender_cpu_s": round(own_cpu, 2),
        "other_cores": watch.result["other_cores"],
    }


def _pct(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return 0.0
    i = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[i]


def run_ingest(ds: Dataset, work: Path, concurrency: int, log: Any = print) -> dict[str, Any]:
    """Fresh store, real server, all signals; leaves the store in `work/store` for the latency runs."""
    import shutil

    store_dir = work / "store"
    if store_dir.exists():
        shutil.rmtree(store_dir)
    store_dir.mkdir(parents=True)
    server = Server(store_dir, work / "server.log")
    startup_s = server.start()
    out: dict[str, Any] = {"concurrency": concurrency, "server_startup_s": round(startup_s, 2), "signals": {}}
    try:
        for signal in SIGNALS:
            quiet = settle(log)
            log(f"[{ds.size.name}] ingest {signal}: sending {ds.counts[signal]:,} items, {concurrency} in flight")
            res = asyncio.run(send_signal(ds, signal, server.otlp_url, concurrency, server.pid))
            res["quiet_wait"] = quiet
            out["signals"][signal] = res
            log(
                f"[{ds.size.name}]   {res['items']:,} {signal} in {res['seconds']:.1f}s = "
                f"{res['items_per_s']:,}/s (server CPU {res['server_cpu_util']:.2f} cores, "
                f"other processes {res['other_cores']} cores)"
            )
        out["server_peak_rss_mb"] = round(proc_rss_mb(server.pid), 1)
    finally:
        out["server_shutdown_s"] = round(server.stop(), 2)
    total_items = sum(s["items"] for s in out["signals"].values())
    total_s = sum(s["seconds"] for s in out["signals"].values())
    out["total"] = {"items": total_items, "seconds": round(total_s, 2), "items_per_s": round(total_items / total_s)}
    store = store_dir / "obsmcp.duckdb"
    out["store_bytes"] = store.stat().st_size if store.exists() else None
    return out


def run_sweep(
    ds: Dataset, work: Path, concurrencies: list[int], requests: int = 100, log: Any = print
) -> dict[str, Any]:
    """Throughput against requests in flight: the first `requests` bodies of traces and of logs, each run
    on a fresh store and server."""
    import shutil

    out: dict[str, Any] = {"requests_per_run": requests, "runs": []}
    for conc in concurrencies:
        for signal in ("traces", "logs"):
            d = work / "sweep"
            shutil.rmtree(d, ignore_errors=True)
            (d / "store").mkdir(parents=True)
            quiet = settle(log)
            server = Server(d / "store", d / "server.log")
            server.start()
            try:
                res = asyncio.run(send_signal(ds, signal, server.otlp_url, conc, server.pid, limit=requests))
            finally:
                server.stop()
            keep = ("items", "seconds", "items_per_s", "server_cpu_util", "request_p50_ms", "other_cores")
            run = {"concurrency": conc, "signal": signal, **{k: res[k] for k in keep}, "quiet_wait": quiet}
            out["runs"].append(run)
            log(f"[{ds.size.name}] sweep {conc:>3} in flight, {signal}: {res['items_per_s']:,}/s")
    shutil.rmtree(work / "sweep", ignore_errors=True)
    return out


# -- DuckDB baseline ---------------------------------------------------------------------------------


class _BaselineSignal:
    """Accumulates decoded tables of one signal and inserts them in chunks, timing only the inserts."""

    def __init__(self, con: Any, chunk_rows: int) -> None:
        self.con = con
        self.chunk_rows = chunk_rows
        self.pending: dict[str, list[Any]] = {}
        self.pending_rows = 0
        self.insert_s: dict[str, float] = {}
        self.lookup_s = 0.0
        self.rows: dict[str, int] = {}

    def add(self, tables: dict[str, Any]) -> None:
        for name, tbl in tables.items():
            self.pending.setdefault(name, []).append(tbl)
            self.pending_rows += tbl.num_rows
        if self.pending_rows >= self.chunk_rows:
            self.flush()

    def flush(self) -> None:
        import pyarrow as pa

        from obsmcp.store import schema

        con = self.con
        for name, parts in self.pending.items():
            if not parts:
                continue
            tbl = pa.concat_tables(parts)
            parts.clear()
            con.register("_bench_batch", tbl)
            t0 = time.perf_counter()
            con.execute(f"INSERT INTO {name} SELECT * FROM _bench_batch")
            self.insert_s[name] = self.insert_s.get(name, 0.0) + time.perf_counter() - t0
            if name == schema.TRACES.name:
                # What the store writer adds for every traces batch (the get_trace lookup table).
                t0 = time.perf_counter()
                con.execute(
                    f'INSERT INTO {schema.TRACE_ID_TS.name} SELECT "TraceId", min("Timestamp"), '
                    'max("Timestamp") FROM _bench_batch WHERE "TraceId" <> \'\' GROUP BY "TraceId"'
                )
                self.lookup_s += time.perf_counter() - t0
            con.unregister("_bench_batch")
            self.rows[name] = self.rows.get(name, 0) + tbl.num_rows
        self.pending_rows = 0


def run_baseline(ds: Dataset, work: Path, chunk_rows: int = 200_000, log: Any = print) -> dict[str, Any]:
    """Decode every body (timed separately), then time columnar inserts of the rows into a fresh file."""
    import duckdb

    from obsmcp.ingest.otlp import decode
    from obsmcp.store import schema

    path = work / "baseline.duckdb"
    for p in (path, path.with_name(path.name + ".wal")):
        p.unlink(missing_ok=True)
    con = duckdb.connect(str(path))
    for table in schema.TELEMETRY_TABLES:
        con.execute(table.ddl())
    out: dict[str, Any] = {"chunk_rows": chunk_rows, "signals": {}}
    try:
        for signal in SIGNALS:
            quiet = settle(log)
            acc = _BaselineSignal(con, chunk_rows)
            gunzip_s = decode_s = 0.0
            with CpuWatch() as watch:
                for _items, gz in ds.records(signal):
                    t0 = time.perf_counter()
                    raw = gzip.decompress(gz)
                    t1 = time.perf_counter()
                    batch = decode(signal, raw, "protobuf")  # type: ignore[arg-type]
                    t2 = time.perf_counter()
                    gunzip_s += t1 - t0
                    decode_s += t2 - t1
                    acc.add(batch.tables)
                acc.flush()
                t0 = time.perf_counter()
                con.execute("CHECKPOINT")
                checkpoint_s = time.perf_counter() - t0
            n = ds.counts[signal]
            ins = sum(acc.insert_s.values())
            res = {
                "items": n,
                "rows_by_table": acc.rows,
                "insert_s": round(ins, 3),
                "insert_items_per_s": round(n / ins) if ins else None,
                "gunzip_s": round(gunzip_s, 3),
                "decode_s": round(decode_s, 3),
                "decode_items_per_s": round(n / decode_s) if decode_s else None,
                "checkpoint_s": round(checkpoint_s, 3),
                "other_cores": watch.result["other_cores"],
                "quiet_wait": quiet,
            }
            if signal == "traces":
                res["trace_id_lookup_insert_s"] = round(acc.lookup_s, 3)
                res["insert_with_lookup_items_per_s"] = round(n / (ins + acc.lookup_s)) if ins else None
            out["signals"][signal] = res
            log(
                f"[{ds.size.name}] baseline {signal}: insert {res['insert_items_per_s']:,}/s, "
                f"decode (1 thread) {res['decode_items_per_s']:,}/s (other processes {res['other_cores']} cores)"
            )
    finally:
        con.close()
        for p in (path, path.with_name(path.name + ".wal")):
            p.unlink(missing_ok=True)
    return out
