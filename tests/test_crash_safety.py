"""An acknowledged OTLP request survives a crash: the server answers 200 only after the rows are committed.

Many clients send log batches concurrently; the server is SIGKILLed mid-stream (no shutdown code runs),
restarted on the same data directory, and every batch that got a 200 must be there, whole. Batches that
were in flight may be lost, but never half-stored. Twenty crashes in a row at random moments (a seeded
random delay after ingest is under way, so a failure replays), each restart reopening the store left by
the previous crash.
"""

from __future__ import annotations

import itertools
import random
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from mcp import Client

from tests.conftest import ServerProcess, call_tool, otlp_logs_protobuf

pytestmark = pytest.mark.slow

SERVICE = "crash-test"
RECORDS_PER_REQUEST = 20
WORKERS = 8
CRASHES = 20
SEED = 20240611
MAX_KILL_DELAY_S = 0.5  # the kill lands this long (at most) after the first acknowledgement of a round


def _send_until_killed(srv: ServerProcess, crash: int, delay_s: float) -> tuple[list[str], Counter[str]]:
    """Send batches from WORKERS threads; SIGKILL the server `delay_s` after the first acknowledgement.

    Returns the markers of acknowledged batches and the outcome of every request.
    """
    acked: list[str] = []
    outcomes: Counter[str] = Counter()
    lock = threading.Lock()
    stop = threading.Event()
    counter = itertools.count()
    url = f"{srv.otlp_url}/v1/logs"
    proc = srv.proc
    assert proc is not None

    def worker() -> None:
        with httpx.Client(timeout=20) as http:
            while not stop.is_set():
                marker = f"crash{crash}-{next(counter):06d}"
                body = otlp_logs_protobuf(SERVICE, [f"{marker} record {i}" for i in range(RECORDS_PER_REQUEST)])
                try:
                    r = http.post(url, content=body, headers={"Content-Type": "application/x-protobuf"})
                except httpx.HTTPError as e:
                    with lock:
                        outcomes[type(e).__name__] += 1
                    if proc.poll() is not None:
                        return
                    continue
                with lock:
                    outcomes[str(r.status_code)] += 1
                    if r.status_code == 200:
                        acked.append(marker)

    with ThreadPoolExecutor(WORKERS) as pool:
        futures = [pool.submit(worker) for _ in range(WORKERS)]
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not acked and not any(f.done() for f in futures):
            time.sleep(0.002)
        time.sleep(delay_s)
        srv.kill()  # while the workers' requests are in flight
        stop.set()
        for f in futures:
            f.result()
    return acked, outcomes


async def _check_store(mcp_url: str, acked: list[str]) -> tuple[list[str], list[Any], int]:
    """-> (acknowledged markers missing from the store, markers stored only in part, rows stored)."""
    values = ", ".join(f"('{m}')" for m in acked)
    async with Client(mcp_url) as client:
        r = await call_tool(
            client,
            "query_sql",
            {
                "sql": (
                    f"SELECT m FROM (VALUES {values}) AS t(m) "
                    f"EXCEPT SELECT split_part(\"Body\", ' ', 1) FROM otel_logs WHERE \"ServiceName\" = '{SERVICE}'"
                )
            },
        )
        missing = [row[0] for row in r.structured_content["rows"]]
        r = await call_tool(
            client,
            "query_sql",
            {
                "sql": (
                    "SELECT split_part(\"Body\", ' ', 1) AS m, count(*) AS n FROM otel_logs "
                    f"WHERE \"ServiceName\" = '{SERVICE}' GROUP BY 1 HAVING count(*) <> {RECORDS_PER_REQUEST}"
                )
            },
        )
        partial = r.structured_content["rows"]
        r = await call_tool(
            client, "query_sql", {"sql": f"SELECT count(*) FROM otel_logs WHERE \"ServiceName\" = '{SERVICE}'"}
        )
        stored = int(r.structured_content["rows"][0][0])
    return missing, partial, stored


def test_acknowledged_records_survive_sigkill(server_factory: Any) -> None:
    # Decoding in the server process (no worker processes to spawn) halves each restart; what is under test
    # is the commit before the acknowledgement, which is the same either way.
    srv: ServerProcess = server_factory(
        env={"OBSMCP_RATE_LIMIT_PER_CLIENT": "0", "OBSMCP_INGEST_DECODE_PROCESSES": "0"}
    )
    rng = random.Random(SEED)
    acked_all: list[str] = []
    for crash in range(CRASHES):
        acked, outcomes = _send_until_killed(srv, crash, rng.uniform(0.0, MAX_KILL_DELAY_S))
        assert srv.proc is not None and srv.proc.returncode == -9
        assert acked, (
            f"crash {crash + 1}: no request was acknowledged before the kill ({dict(outcomes)}); server output:\n"
            f"{srv.log_text()[-3000:]}"
        )
        unexpected = set(outcomes) - {"200", "ConnectError", "ReadError", "RemoteProtocolError", "WriteError"}
        assert not unexpected, f"crash {crash + 1}: answers other than 200 or a dropped connection: {dict(outcomes)}"
        acked_all += acked

        srv.start()  # the same data directory, after a crash: the store must reopen
        assert srv.healthy()
        assert srv.owner()["pid"] == srv.proc.pid, "the restarted server must take over owner.json"
        missing, partial, stored = anyio.run(_check_store, srv.mcp_url, acked_all)
        assert not missing, (
            f"crash {crash + 1}: {len(missing)} acknowledged requests are missing after restart, e.g. {missing[:5]}"
        )
        assert not partial, f"crash {crash + 1}: requests stored in part (marker, rows): {partial[:5]}"
        assert stored >= len(acked_all) * RECORDS_PER_REQUEST


def _children(pid: int) -> set[int]:
    kids: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        kids.update(int(k) for k in text)
    return kids


def test_decode_workers_do_not_outlive_a_killed_server(server_factory: Any) -> None:
    srv = server_factory()
    assert srv.proc is not None
    workers = _children(srv.proc.pid)
    assert workers, "the server decodes OTLP in worker processes"
    srv.kill()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(Path(f"/proc/{w}").exists() for w in workers):
        time.sleep(0.2)
    alive = [w for w in workers if Path(f"/proc/{w}").exists() and "Z" not in _state(w)]
    assert not alive, f"worker processes {alive} survived their server"


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2]
    except OSError:
        return "X"
