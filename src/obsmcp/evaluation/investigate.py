"""`obsmcp eval investigate`: does `investigate` name the true root cause of generated incidents?

Each scenario is a demo dataset (obsmcp.demo) with one injected fault of a known type in a known service,
loaded into a fresh in-memory store. `investigate` is called through the MCP SDK client with no arguments, as
an agent's first call would be; the evaluation alone knows the truth. Scored: the share of scenarios whose
root-cause service is ranked first (AC@1) and in the top three (AC@3), the answer's size in tokens (text and
structured content, each), its latency, and how far the reported onset is from the injected one.

The scenario seeds (from 1000 up) are not the ones investigate was developed on (1-10), so the scores are on
data the ranking never saw; fault types cycle through their eligible targets so that every service the
topology allows is a root cause somewhere.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from obsmcp.config import Settings
from obsmcp.demo import DemoConfig, scenario_truth
from obsmcp.demo.loader import load_async
from obsmcp.demo.scenarios import scenario_targets
from obsmcp.result import estimate_tokens
from obsmcp.timerange import format_ns

FAULT_TYPES: tuple[str, ...] = (
    "dependency-latency",
    "deploy-errors",
    "resource-exhaustion",
    "cache-collapse",
    "n-plus-one",
    "failing-downstream",
)
SEED_BASE = 1000
GOALS = {"ac1": 0.8, "ac3": 0.95, "max_tokens": 2000}


@dataclass(frozen=True)
class Case:
    fault: str
    target: str
    seed: int
    incident_before_end_s: float
    duration_s: float = 5400.0
    rate: float = 1.0

    @property
    def name(self) -> str:
        return f"{self.fault}@{self.target}#{self.seed}"


@dataclass
class CaseResult:
    case: Case
    ranked: list[str]
    rank: int | None  # 1-based position of the true root cause, None when absent
    status: str
    text_tokens: int
    structured_tokens: int
    seconds: float
    onset_error_s: float | None
    summary: str


@dataclass
class Report:
    cases: list[CaseResult] = field(default_factory=list)
    started: str = ""
    seconds: float = 0.0

    @property
    def faults(self) -> list[CaseResult]:
        return [c for c in self.cases if c.case.fault != "none"]

    @property
    def healthy(self) -> list[CaseResult]:
        """The no-incident controls: investigate should call them healthy."""
        return [c for c in self.cases if c.case.fault == "none"]

    @property
    def ac1(self) -> float:
        f = self.faults
        return sum(1 for c in f if c.rank == 1) / len(f) if f else 0.0

    @property
    def ac3(self) -> float:
        f = self.faults
        return sum(1 for c in f if c.rank is not None and c.rank <= 3) / len(f) if f else 0.0

    @property
    def max_tokens(self) -> int:
        return max((max(c.text_tokens, c.structured_tokens) for c in self.cases), default=0)

    def by_fault(self) -> dict[str, tuple[int, int, int]]:
        """fault -> (cases, rank 1, top 3)."""
        out: dict[str, tuple[int, int, int]] = {}
        for c in self.faults:
            n, a1, a3 = out.get(c.case.fault, (0, 0, 0))
            out[c.case.fault] = (
                n + 1,
                a1 + (c.rank == 1),
                a3 + (c.rank is not None and c.rank <= 3),
            )
        return out

    def goals(self) -> list[tuple[str, str, bool]]:
        return [
            ("AC@1 >= 0.80", f"{self.ac1:.3f}", self.ac1 >= GOALS["ac1"]),
            ("AC@3 >= 0.95", f"{self.ac3:.3f}", self.ac3 >= GOALS["ac3"]),
            ("answer <= 2,000 tokens", f"{self.max_tokens:,}", self.max_tokens <= GOALS["max_tokens"]),
        ]

    def to_json(self) -> dict[str, Any]:
        return {
            "started": self.started,
            "seconds": round(self.seconds, 1),
            "scenarios": len(self.faults),
            "faults_called": {
                st: sum(1 for c in self.faults if c.status == st) for st in ("incident", "degraded", "healthy")
            },
            "healthy_controls": len(self.healthy),
            "healthy_controls_called_healthy": sum(1 for c in self.healthy if c.status == "healthy"),
            "healthy_controls_called_degraded": sum(1 for c in self.healthy if c.status == "degraded"),
            "healthy_controls_called_incident": sum(1 for c in self.healthy if c.status == "incident"),
            "ac1": round(self.ac1, 4),
            "ac3": round(self.ac3, 4),
            "max_answer_tokens": self.max_tokens,
            "goals": [{"goal": g, "value": v, "met": ok} for g, v, ok in self.goals()],
            "by_fault": {f: {"cases": n, "ac1": a1 / n, "ac3": a3 / n} for f, (n, a1, a3) in self.by_fault().items()},
            "cases": [{**asdict(c), "case": {**asdict(c.case), "name": c.case.name}} for c in self.cases],
        }


def scenarios(count: int = 36, faults: tuple[str, ...] = FAULT_TYPES, healthy: int = 0) -> list[Case]:
    """`count` cases cycling through the fault types, each fault through its targets, each with its own seed,
    then `healthy` no-incident controls."""
    cases: list[Case] = []
    targets = {f: scenario_targets(f) for f in faults}
    i = 0
    while len(cases) < count:
        fault = faults[i % len(faults)]
        round_ = i // len(faults)
        options = targets[fault]
        seed = SEED_BASE + i
        # The incident starts 12 to 30 minutes before the end: a fixed spread, so onsets differ per case.
        before = 720.0 + (seed * 397) % 1080
        cases.append(Case(fault, options[round_ % len(options)], seed, before))
        i += 1
    cases += [Case("none", "", SEED_BASE + 900 + k, 0.0) for k in range(healthy)]
    return cases


async def run_case(case: Case) -> CaseResult:
    from mcp import Client

    from obsmcp.runtime import Runtime

    cfg = DemoConfig(
        duration_s=case.duration_s,
        rate=case.rate,
        scenario=case.fault,
        seed=case.seed,
        target=case.target or None,
        incident_start_before_end_s=case.incident_before_end_s,
    )
    truth = scenario_truth(cfg)
    with tempfile.TemporaryDirectory(prefix="obsmcp-eval-") as tmp:
        rt = Runtime.open(Settings(data_dir=Path(tmp), retention_days=36500), in_memory=True)
        try:
            await load_async(rt, cfg)
            t0 = time.perf_counter()
            async with Client(rt.mcp) as client:
                result = await client.call_tool("investigate", {})
            seconds = time.perf_counter() - t0
        finally:
            rt.close()
    if result.is_error:
        text = " ".join(getattr(c, "text", "") for c in result.content)
        raise RuntimeError(f"{case.name}: investigate failed: {text}")
    sc = result.structured_content or {}
    text = "".join(getattr(c, "text", "") for c in result.content)
    ranked = [str(s["service"]) for s in sc.get("suspects", [])]
    root = truth.root_cause_service
    rank = ranked.index(root) + 1 if root and root in ranked else None
    onset_error = None
    if sc.get("onset") and root:
        from obsmcp.timerange import parse_instant

        onset_ns = parse_instant(sc["onset"], now=time.time_ns())
        onset_error = round((onset_ns - truth.start_ns) / 1e9, 1)
    return CaseResult(
        case=case,
        ranked=ranked,
        rank=rank,
        status=str(sc.get("status", "")),
        text_tokens=estimate_tokens(text),
        structured_tokens=estimate_tokens(json.dumps(sc, separators=(",", ":"))),
        seconds=round(seconds, 3),
        onset_error_s=onset_error,
        summary=str(sc.get("summary", ""))[:200],
    )


def run(cases: list[Case], progress: Callable[[CaseResult], None] | None = None) -> Report:
    report = Report(started=format_ns(time.time_ns()))
    t0 = time.perf_counter()
    for case in cases:
        res = asyncio.run(run_case(case))
        report.cases.append(res)
        if progress:
            progress(res)
    report.seconds = time.perf_counter() - t0
    return report


def markdown(report: Report, commit: str = "") -> str:
    lines = [
        "# `obsmcp eval investigate`",
        "",
        f"Run {report.started}"
        + (f" on commit {commit}" if commit else "")
        + f", {len(report.faults)} incident scenarios, "
        f"{report.seconds:.0f} s. Each: {report.cases[0].case.duration_s / 3600:.1f} h of demo telemetry at "
        f"{report.cases[0].case.rate:g} request/s, one fault injected 12-30 min before the end; `investigate` "
        "called with no arguments through the MCP SDK client."
        if report.cases
        else "no scenarios",
        "",
        "| goal | value | met |",
        "|---|---:|---|",
        *[f"| {g} | {v} | {'PASS' if ok else 'MISS'} |" for g, v, ok in report.goals()],
        "",
        f"Fault scenarios called incident {sum(1 for c in report.faults if c.status == 'incident')}, degraded "
        f"{sum(1 for c in report.faults if c.status == 'degraded')}, healthy "
        f"{sum(1 for c in report.faults if c.status == 'healthy')}.",
        "",
        f"No-incident controls ({len(report.healthy)}): called healthy "
        f"{sum(1 for c in report.healthy if c.status == 'healthy')}, degraded (a small shift, flagged as possibly "
        f"noise) {sum(1 for c in report.healthy if c.status == 'degraded')}, incident "
        f"{sum(1 for c in report.healthy if c.status == 'incident')}.",
        "",
        "| fault | cases | AC@1 | AC@3 |",
        "|---|---:|---:|---:|",
        *[f"| {f} | {n} | {a1 / n:.2f} | {a3 / n:.2f} |" for f, (n, a1, a3) in report.by_fault().items()],
        "",
        "| scenario | rank | ranked | onset error | tokens (text/structured) | s |",
        "|---|---:|---|---:|---:|---:|",
    ]
    for c in report.cases:
        onset = f"{c.onset_error_s:+.0f} s" if c.onset_error_s is not None else "-"
        lines.append(
            f"| {c.case.name} | {c.rank or '-'} | {', '.join(c.ranked[:3])} | {onset} | "
            f"{c.text_tokens}/{c.structured_tokens} | {c.seconds:.2f} |"
        )
    return "\n".join(lines) + "\n"
