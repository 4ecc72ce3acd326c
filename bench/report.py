"""Goals, machine info, and bench/results/README.md generated from every results file."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results"
SIZE_ORDER = {"quick": 0, "1M": 1, "10M": 2}

# (key, description, where the figure comes from, comparison, target); only checked at the sizes listed.
GOALS: list[dict[str, Any]] = [
    {
        "key": "ingest_spans_per_s",
        "goal": "ingest >= 50,000 spans/s (OTLP/HTTP end to end)",
        "op": ">=",
        "target": 50_000,
    },
    {
        "key": "ingest_logs_per_s",
        "goal": "ingest >= 100,000 log records/s (OTLP/HTTP end to end)",
        "op": ">=",
        "target": 100_000,
    },
    {
        "key": "search_logs_service_text_p50_ms",
        "goal": "search_logs (service + text, limit 50) p50 <= 100 ms at 10M",
        "op": "<=",
        "target": 100,
        "sizes": ["10M"],
    },
    {
        "key": "get_trace_p50_ms",
        "goal": "get_trace p50 <= 50 ms at 10M",
        "op": "<=",
        "target": 50,
        "sizes": ["10M"],
    },
    {
        "key": "list_services_p50_ms",
        "goal": "list_services p50 <= 500 ms at 10M",
        "op": "<=",
        "target": 500,
        "sizes": ["10M"],
    },
    {
        "key": "max_overhead_ratio",
        "goal": "every tool p50 <= 1.5x its hand-written SQL p50",
        "op": "<=",
        "target": 1.5,
    },
    {
        "key": "grep_speedup",
        "goal": "search_logs (text) >= 20x faster than grep -c -i over JSON lines",
        "op": ">=",
        "target": 20,
    },
]


def _git(*args: str) -> str:
    try:
        r = subprocess.run(["git", *args], cwd=ROOT.parent, capture_output=True, text=True, check=False)
        return r.stdout.strip()
    except OSError:
        return ""


def src_state() -> dict[str, Any]:
    """Commit and a hash of the uncommitted diff of src/, to notice code changing under a long run."""
    import hashlib

    diff = _git("diff", "HEAD", "--", "src")
    return {
        "commit": _git("rev-parse", "--short", "HEAD"),
        "src_diff_sha": hashlib.sha1(diff.encode()).hexdigest()[:10],
    }


def machine_info() -> dict[str, Any]:
    from importlib.metadata import version

    import duckdb
    import httpx
    import pyarrow

    import obsmcp

    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gb = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_gb = round(int(line.split()[1]) / 1024**2, 1)
    except OSError:
        pass
    grep_v = subprocess.run(["grep", "--version"], capture_output=True, text=True, check=False).stdout.splitlines()
    return {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "platform": platform.platform(),
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "memory_gb": mem_gb,
        "python": platform.python_version(),
        "versions": {
            "obsmcp": obsmcp.__version__,
            "duckdb": duckdb.__version__,
            "pyarrow": pyarrow.__version__,
            "mcp": version("mcp"),
            "httpx": httpx.__version__,
            "protobuf": version("protobuf"),
            "uvicorn": version("uvicorn"),
            "grep": grep_v[0] if grep_v else "",
        },
        "locale": os.environ.get("LC_ALL") or os.environ.get("LANG", ""),
        "git_commit": _git("rev-parse", "--short", "HEAD"),
        "git_dirty": bool(_git("status", "--porcelain", "--", "src")),
        "src_state": src_state(),
    }


def figures(result: dict[str, Any]) -> dict[str, float | None]:
    ing = result.get("ingest") or {}
    sig = ing.get("signals") or {}
    cases = (result.get("latency") or {}).get("cases") or {}
    ratios = [
        c["overhead_ratio"]
        for key, c in cases.items()
        if c.get("overhead_ratio") is not None and key not in DIAGNOSTIC_CASES
    ]

    def p50(key: str) -> float | None:
        c = cases.get(key)
        return c["tool_latency"]["p50_ms"] if c else None

    return {
        "ingest_spans_per_s": (sig.get("traces") or {}).get("items_per_s"),
        "ingest_logs_per_s": (sig.get("logs") or {}).get("items_per_s"),
        "search_logs_service_text_p50_ms": p50("search_logs_service_text"),
        "get_trace_p50_ms": p50("get_trace"),
        "list_services_p50_ms": p50("list_services"),
        "max_overhead_ratio": max(ratios) if ratios else None,
        "grep_speedup": ((result.get("latency") or {}).get("grep") or {}).get("speedup_vs_search_logs_text"),
    }


def overhead_within(result: dict[str, Any], limit: float = 1.5) -> tuple[int, int]:
    """(tools whose p50 is within `limit` x their SQL, tools compared)."""
    cases = (result.get("latency") or {}).get("cases") or {}
    ratios = [
        c["overhead_ratio"]
        for key, c in cases.items()
        if c.get("overhead_ratio") is not None and key not in DIAGNOSTIC_CASES
    ]
    return sum(1 for r in ratios if r <= limit), len(ratios)


def evaluate_goals(result: dict[str, Any]) -> list[dict[str, Any]]:
    figs = figures(result)
    out = []
    for g in GOALS:
        value = figs.get(g["key"])
        applies = "sizes" not in g or result["size"] in g["sizes"]
        if value is None:
            status = "not measured"
        elif g["op"] == ">=":
            status = "met" if value >= g["target"] else "missed"
        else:
            status = "met" if value <= g["target"] else "missed"
        if not applies and status != "not measured":
            status = f"{status} (goal is set for {', '.join(g['sizes'])}; shown for reference)"
        out.append({"goal": g["goal"], "key": g["key"], "target": g["target"], "value": value, "status": status})
    return out


# -- README --------------------------------------------------------------------------------------


def _n(v: Any, digits: int = 0) -> str:
    if v is None:
        return "–"
    if isinstance(v, float) and digits:
        return f"{v:,.{digits}f}"
    if isinstance(v, int | float):
        return f"{v:,.0f}" if abs(v) >= 100 or digits == 0 else f"{v:,.{digits}f}"
    return str(v)


def _ms(v: Any) -> str:
    if v is None:
        return "–"
    return f"{v:,.0f}" if v >= 100 else f"{v:,.1f}"


DIAGNOSTIC_CASES = ("query_sql_select_1",)  # not a goal: the floor of a tool call
CASE_LABELS = {
    "list_services": "list_services",
    "search_logs_service_text": "search_logs (service + text, limit 50)",
    "search_logs_text": "search_logs (text only, limit 50)",
    "search_traces": "search_traces (service + status=error)",
    "get_trace": "get_trace",
    "list_metrics": "list_metrics",
    "query_metrics": "query_metrics (histogram, default p95)",
    "find_errors": "find_errors",
    "get_error_details": "get_error_details",
    "query_sql": "query_sql (GROUP BY over error spans)",
    "query_sql_select_1": "query_sql `SELECT 1` (fixed cost of a call)",
}


def load_results() -> list[dict[str, Any]]:
    out = []
    # Only the ingest/latency runs (<size>.json); analysis_*.json and eval_*.json have their own sections.
    for p in RESULTS.glob("*.json"):
        if p.stem not in SIZE_ORDER:
            continue
        try:
            out.append(json.loads(p.read_text()))
        except ValueError:
            continue
    out.sort(key=lambda r: SIZE_ORDER.get(r.get("size", ""), 99))
    return out


def _approximate(case: dict[str, Any]) -> bool:
    if (case.get("answer") or {}).get("counts_estimated"):
        return True
    return any("sampl" in n.lower() or "estimat" in n.lower() for n in case.get("answer_notes") or [])


def _get(r: dict[str, Any], path: str) -> Any:
    """r['a']['b']... for 'a.b...'; raises KeyError/TypeError when missing (the cell shows a dash)."""
    cur: Any = r
    for part in path.split("."):
        cur = cur[part]
    return cur


def _ratio(r: dict[str, Any], num: str, den: str) -> str:
    return f"{_get(r, num) / _get(r, den):.2f}"


def _sweep_lines(results: list[dict[str, Any]]) -> list[str]:
    with_sweep = [r for r in results if r.get("sweep")]
    if not with_sweep:
        return []
    out = [
        "Throughput against requests in flight (first "
        f"{with_sweep[0]['sweep']['requests_per_run']} requests of each signal, fresh store and server per run):",
        "",
        "| requests in flight | "
        + " | ".join(f"{r['size']} spans/s | {r['size']} log records/s" for r in with_sweep)
        + " |",
        "|---:|" + "---:|---:|" * len(with_sweep),
    ]
    levels = sorted({run["concurrency"] for r in with_sweep for run in r["sweep"]["runs"]})
    for level in levels:
        cells = []
        for r in with_sweep:
            for signal in ("traces", "logs"):
                run = next((x for x in r["sweep"]["runs"] if x["concurrency"] == level and x["signal"] == signal), None)
                cells.append(_n(run["items_per_s"]) if run else "–")
        out.append(f"| {level} | " + " | ".join(cells) + " |")
    return [*out, ""]


def write_readme() -> Path:
    results = load_results()
    lines = [
        "# obsmcp benchmark results",
        "",
        "Generated by `python -m bench.run` from the `*.json` files in this directory (one per dataset size);",
        "do not edit by hand. Every figure comes from a real run on the machine listed below.",
        "",
        "Reproduce: `.venv/bin/python -m bench.run --sizes 1M,10M` (or `--quick` for a ~100k-span sanity run).",
        "Datasets are cached in `bench/data/` (gitignored); stores and scratch files in `bench/.work/`.",
        "",
    ]
    path = RESULTS / "README.md"
    if not results:
        lines.append("No results yet.")
        path.write_text("\n".join(lines) + "\n")
        return path
    sizes = [r["size"] for r in results]
    head = "| | " + " | ".join(sizes) + " |"
    sep = "|---|" + "---:|" * len(sizes)

    def row(label: str, fn: Any) -> str:
        cells = []
        for r in results:
            try:
                cells.append(fn(r))
            except (KeyError, TypeError, ZeroDivisionError):
                cells.append("–")
        return f"| {label} | " + " | ".join(cells) + " |"

    def num(label: str, key: str, scale: float = 1.0) -> str:
        return row(label, lambda r: _n(_get(r, key) / scale if scale != 1.0 else _get(r, key)))

    def ms(label: str, key: str) -> str:
        return row(label, lambda r: _ms(_get(r, key)))

    def pair(label: str, a: str, b: str, fmt: Any = _ms) -> str:
        return row(label, lambda r: f"{fmt(_get(r, a))} / {fmt(_get(r, b))}")

    m = results[-1]["machine"]
    versions = ", ".join(f"{k} {v}" for k, v in m["versions"].items() if k != "grep")
    runs = "; ".join(
        f"{r['size']} on {r['machine']['date']} (git {r['machine']['git_commit']}"
        f"{', with uncommitted changes in src/' if r['machine'].get('git_dirty') else ''})"
        for r in results
    )
    tr, lg, mt = "ingest.signals.traces", "ingest.signals.logs", "ingest.signals.metrics"
    btr, blg = "baseline.signals.traces", "baseline.signals.logs"
    lines += [
        "## Machine",
        "",
        f"{m['cpus']} × {m['cpu']}, {m['memory_gb']} GB RAM, {m['platform']}, Python {m['python']}, "
        f"{versions}; {m['versions'].get('grep', '')}.",
        "",
        f"Runs: {runs}.",
        "",
        "The machine is shared: before each phase the runner waits for other processes to go quiet, and each",
        "phase records the cores other processes used meanwhile (`other_cores` in the JSON; shown below).",
        "",
        "## Datasets (demo generator, scenario dependency-latency, seed 42)",
        "",
        head,
        sep,
        num("spans", "dataset.items.traces"),
        num("log records", "dataset.items.logs"),
        num("metric data points", "dataset.items.metrics"),
        row(
            "simulated time / root requests per s",
            lambda r: f"{_get(r, 'dataset.config.duration_s') / 3600:g} h / {_get(r, 'dataset.config.rate'):g}",
        ),
        row(
            "OTLP requests (traces / logs / metrics)",
            lambda r: " / ".join(_n(_get(r, f"dataset.requests.{s}")) for s in ("traces", "logs", "metrics")),
        ),
        row(
            "protobuf size raw → gzip (MB)",
            lambda r: (
                f"{sum(_get(r, 'dataset.raw_bytes').values()) / 1e6:,.0f} → "
                f"{sum(_get(r, 'dataset.gzip_bytes').values()) / 1e6:,.0f}"
            ),
        ),
        pair(
            "generation time, s (generator only / with gzip + disk)",
            "dataset.generation.generator_s",
            "dataset.generation.wall_s",
            _n,
        ),
        num("store size after ingest (MB)", "ingest.store_bytes", 1e6),
        "",
        "## Ingest (OTLP/HTTP protobuf + gzip into `obsmcp serve --http`, a subprocess on a fresh store)",
        "",
        "Each signal is sent on its own with the run's number of requests in flight; a request counts when its",
        "200 arrives (obsmcp acknowledges after commit). Baseline: `INSERT INTO t SELECT * FROM arrow_table` of",
        "the same rows (decoded beforehand with `obsmcp.ingest.otlp.decode`, 200k-row chunks) into a fresh DuckDB",
        "file with the same DDL. Decode = the same decode on one thread, for reference.",
        "",
        head,
        sep,
        row("requests in flight", lambda r: str(_get(r, "ingest.concurrency"))),
        row("**spans/s end to end**", lambda r: f"**{_n(_get(r, tr + '.items_per_s'))}**"),
        row("**log records/s end to end**", lambda r: f"**{_n(_get(r, lg + '.items_per_s'))}**"),
        num("metric points/s end to end", mt + ".items_per_s"),
        pair("server CPU, cores (traces / logs)", tr + ".server_cpu_util", lg + ".server_cpu_util", str),
        pair("other processes, cores (traces / logs)", tr + ".other_cores", lg + ".other_cores", str),
        pair("request latency p50 / p95, ms (traces)", tr + ".request_p50_ms", tr + ".request_p95_ms"),
        num("server peak RSS (MB)", "ingest.server_peak_rss_mb"),
        num("DuckDB insert baseline, spans/s", btr + ".insert_items_per_s"),
        num("… including the trace-id lookup rows, spans/s", btr + ".insert_with_lookup_items_per_s"),
        num("DuckDB insert baseline, log records/s", blg + ".insert_items_per_s"),
        row("end to end / baseline (spans)", lambda r: _ratio(r, tr + ".items_per_s", btr + ".insert_items_per_s")),
        row("end to end / baseline (logs)", lambda r: _ratio(r, lg + ".items_per_s", blg + ".insert_items_per_s")),
        num("decode only (1 thread), spans/s", btr + ".decode_items_per_s"),
        num("decode only (1 thread), log records/s", blg + ".decode_items_per_s"),
        "",
        *_sweep_lines(results),
        "## Tool latency (in-process `mcp.Client(rt.mcp).call_tool`) vs hand-written SQL",
        "",
        "p50 / p95 in ms after one warm-up call (fewer repetitions for slow cases: see `n` in the JSON), time",
        "range covering the whole dataset. SQL = hand-written queries giving the same information, run on a",
        "cursor of the same DuckDB connection (`sql_note` in the JSON says what). Overhead = tool p50 / SQL p50.",
        "Handler = the tool's registered function awaited directly (worker thread, implementation, result",
        "model), i.e. without MCP argument validation, output-schema validation, serialization and transport.",
        "",
    ]
    lat_head = (
        "| tool | "
        + " | ".join(f"{s} tool p50 / p95 | {s} handler p50 | {s} SQL p50 | {s} overhead" for s in sizes)
        + " |"
    )
    lat_sep = "|---|" + "---:|---:|---:|---:|" * len(sizes)
    lines += [lat_head, lat_sep]
    for key, label in CASE_LABELS.items():
        cells = []
        for r in results:
            c = (r.get("latency") or {}).get("cases", {}).get(key)
            if not c:
                cells += ["–", "–", "–", "–"]
                continue
            t = c["tool_latency"]
            cells.append(
                f"{_ms(t['p50_ms'])} / {_ms(t['p95_ms'])}"
                + (" †" if _approximate(c) else "")
                + (" ⚠ error" if "error" in t else "")
            )
            cells.append(_ms(c.get("handler_latency", {}).get("p50_ms")))
            cells.append(_ms(c.get("sql_latency", {}).get("p50_ms")))
            cells.append(f"{c['overhead_ratio']:.2f}x" if c.get("overhead_ratio") is not None else "–")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    cases = "latency.cases"
    lines += [
        "",
        "† the tool's answer says it sampled or estimated part of the result (`counts_estimated`, or a note about",
        "sampling in `answer_notes` in the JSON), where the hand-written SQL computes everything exactly.",
        "",
        "Other SQL variants, p50 ms:",
        "",
        head,
        sep,
        ms(
            "search_logs service + text: newest page only, no counts",
            cases + ".search_logs_service_text.sql_page_only_latency.p50_ms",
        ),
        ms("search_logs text: newest page only, no counts", cases + ".search_logs_text.sql_page_only_latency.p50_ms"),
        ms("get_trace: naive `WHERE TraceId = ?` (full scan)", cases + ".get_trace.sql_naive_scan_latency.p50_ms"),
        "",
        "## search_logs vs grep",
        "",
        "`grep -c -i TEXT` over all log records exported as JSON lines",
        "(`COPY (SELECT * FROM otel_logs) TO … (FORMAT json)`), page cache warm, median of 3, against search_logs",
        "with the same text and no other filter (p50).",
        "",
        head,
        sep,
        row("search text", lambda r: f"`{_get(r, 'latency.arguments.log_text')}`"),
        row(
            "search_logs counts estimated from a sample",
            lambda r: "yes" if _approximate(_get(r, "latency.cases.search_logs_text")) else "no",
        ),
        num("JSON lines size (MB)", "latency.jsonl_export.bytes", 1e6),
        ms("grep -c -i, ms", "latency.grep.median_ms"),
        ms("search_logs (text only) p50, ms", "latency.grep.search_logs_text_p50_ms"),
        row(
            "**speedup (grep time / search_logs time)**",
            lambda r: f"**{_get(r, 'latency.grep.speedup_vs_search_logs_text'):.1f}x**",
        ),
        row(
            "speedup vs search_logs (service + text)",
            lambda r: f"{_get(r, 'latency.grep.speedup_vs_search_logs_service_text'):.1f}x",
        ),
        pair(
            "matches: grep lines / search_logs total",
            "latency.grep.matching_lines",
            "latency.grep.search_logs_text_total",
            _n,
        ),
        "",
        "## Answer size (estimated tokens = characters / 4)",
        "",
        "Text = the text content the model reads; JSON = the structured content (compact JSON).",
        "",
        "| tool | " + " | ".join(f"{s} text | {s} JSON" for s in sizes) + " |",
        "|---|" + "---:|---:|" * len(sizes),
    ]
    for key, label in CASE_LABELS.items():
        cells = []
        for r in results:
            c = (r.get("latency") or {}).get("cases", {}).get(key)
            cells += [_n(c["tokens_text"]), _n(c["tokens_structured"])] if c else ["–", "–"]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += ["", "## Goals", "", "| goal | " + " | ".join(sizes) + " |", sep]
    for g in GOALS:
        cells = []
        for r in results:
            ev = next((e for e in r.get("goals", []) if e["key"] == g["key"]), None)
            if ev is None or ev["value"] is None:
                cells.append("–")
                continue
            v = ev["value"]
            vs = f"{v:,.2f}" if isinstance(v, float) and v < 100 else f"{v:,.0f}"
            mark = "✅" if ev["status"].startswith("met") else "❌"
            ref = " (ref.)" if "reference" in ev["status"] else ""
            if g["key"] == "max_overhead_ratio":
                within, n = overhead_within(r)
                vs = f"max {vs}x; {within} of {n} tools within"
            cells.append(f"{mark} {vs}{ref}")
        lines.append(f"| {g['goal']} | " + " | ".join(cells) + " |")
    lines += ["", "(ref.): the goal is set for another dataset size; shown for reference only.", ""]
    notes = [n for r in results for n in r.get("notes", [])]
    if notes:
        lines += ["## Notes", ""] + [f"- {n}" for n in dict.fromkeys(notes)] + [""]
    # The analysis benchmark keeps its own section, generated from analysis_<size>.json.
    from bench.analysis import readme_section

    lines += ["", readme_section()]
    path.write_text("\n".join(lines))
    return path
