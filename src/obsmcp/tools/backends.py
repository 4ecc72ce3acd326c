"""backend_status: each configured remote backend's health, circuit state, recent latency and error rate.

Health is a live probe (each source's cheap `check()`, all at once); circuit, latency percentiles and error
rate are the resilient client's own record of recent requests (obsmcp.http.backend_states()). A backend whose
circuit is open is not probed again: the probe fails fast with the client's "retry in N s" message.
"""

from __future__ import annotations

import asyncio
import time

from pydantic import BaseModel, Field

from obsmcp.http import BackendError, BackendState, backend_states
from obsmcp.sources.base import Source, SourceError
from obsmcp.tools.context import ToolContext


class BackendStatus(BaseModel):
    name: str
    kind: str
    url: str
    signals: list[str] = Field(description="signals routed here by default")
    healthy: bool
    check: str = Field(description='"ok", or why the probe failed and what to do')
    check_ms: float
    circuit: str = Field(description="closed | open | half_open")
    retry_in_s: float | None = None
    consecutive_failures: int = 0
    recent_requests: int = 0
    error_rate: float | None = None
    p50_ms: float | None = None
    p95_ms: float | None = None


class BackendStatusResult(BaseModel):
    backends: list[BackendStatus] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)


async def _probe(source: Source) -> tuple[str, float]:
    t0 = time.perf_counter()
    try:
        await source.check()
    except (BackendError, SourceError) as e:
        return str(e), (time.perf_counter() - t0) * 1000
    return "ok", (time.perf_counter() - t0) * 1000


async def _probe_all(sources: list[Source]) -> list[tuple[str, float]]:
    return list(await asyncio.gather(*(_probe(s) for s in sources)))


def backend_status(ctx: ToolContext, backend: str | None = None) -> tuple[BackendStatusResult, str]:
    sources = [ctx.sources.get(backend)] if backend and backend.strip() else ctx.sources.all()
    if not sources:
        res = BackendStatusResult(notes=["no remote backends are configured"])
        return res, (
            "backend_status: no remote backends configured; obsmcp answers from its own store. Add [[backends]] "
            "to obsmcp.toml or set PROMETHEUS_URL, LOKI_URL, ..."
        )
    timeout = max(ctx.sources.timeout_for(s) for s in sources)
    probes = ctx.sources.call(_probe_all(sources), timeout)
    states = {s.name: s for s in backend_states()}
    rows: list[BackendStatus] = []
    for source, (check, ms) in zip(sources, probes, strict=True):
        st = states.get(source.name)
        rows.append(_row(source, st, check, ms))
    lines = [f"backend_status: {sum(r.healthy for r in rows)} of {len(rows)} backends healthy"]
    lines += [_line(r) for r in rows]
    return BackendStatusResult(backends=rows), "\n".join(lines)


def _row(source: Source, st: BackendState | None, check: str, ms: float) -> BackendStatus:
    return BackendStatus(
        name=source.name,
        kind=source.kind,
        url=st.base_url if st else "",
        signals=list(source.signals),
        healthy=check == "ok" and (st is None or st.circuit == "closed"),
        check=check,
        check_ms=round(ms, 1),
        circuit=st.circuit if st else "closed",
        retry_in_s=st.retry_in_s if st else None,
        consecutive_failures=st.consecutive_failures if st else 0,
        recent_requests=st.recent_requests if st else 0,
        error_rate=st.error_rate if st else None,
        p50_ms=st.p50_ms if st else None,
        p95_ms=st.p95_ms if st else None,
    )


def _line(r: BackendStatus) -> str:
    state = "healthy" if r.healthy else "UNHEALTHY"
    circuit = f"circuit {r.circuit}" + (f" (retry in {r.retry_in_s:g} s)" if r.retry_in_s is not None else "")
    recent = (
        f"recent {r.recent_requests} req: p50 {r.p50_ms} ms, p95 {r.p95_ms} ms, errors {r.error_rate:.0%}"
        if r.recent_requests and r.error_rate is not None
        else "no recent requests"
    )
    probe = f"probe {r.check_ms:g} ms" + ("" if r.check == "ok" else f": {r.check}")
    signals = ",".join(r.signals) or "only when named"
    return f"{r.name} ({r.kind}, {r.url}, {signals}): {state}; {circuit}; {probe}; {recent}"
