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
    {"key": "ingest_spans_per_s", "goal": "ingest >= 50,000 spans/s (OTLP/HTTP end to end)", "op": ">=", "target": 50_000},
    {"key": "ingest_logs_per_s", "goal": "ingest >= 100,000 log records/s (OTLP/HTTP end to end)", "op": ">=", "target": 100_000},
    {"key": "search_logs_service_text_p50_ms", "goal": "search_logs (service + text, limit 50) p50 <= 100 ms at 10M", "op": "<=", "target": 100, "sizes": ["10M"]},
    {"key": "get_trace_p50_ms", "goal": "get_trace p50 <= 50 ms at 10M", "op": "<=", "target": 50, "sizes": ["10M"]},
    {"key": "list_services_p50_ms", "goal": "list_services p50 <= 500 ms at 10M", "op": "<=", "target": 500, "sizes": ["10M"]},
    {"key": "max_overhead_ratio", "goal": "every tool p50 <= 1.5x its hand-written SQL p50", "op": "<=", "target": 1.5},
    {"key": "grep_speedup", "goal": "search_logs (text) >= 20x faster than grep -c -i over JSON lines", "op": ">=", "target": 20},
]


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=ROOT.parent, capture_output=True, text=True, check=False).stdout.strip()
    except OSError:
        return ""


def machine_info() -> dict[str, Any]:
    import duckdb
    import httpx
    import mcp  # noqa: F401
    import pyarrow

    from importlib.metadata import version

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
    }


def figures(result: dict[str, Any]) -> dict[str, float | None]:
    ing = result.get("ingest") or {}
    sig = ing.get("signals") or {}
    cases = (result.get("latency") or {}).get("cases") or {}
    ratios = [c["overhead_ratio"] for c in cases.values() if c.get("overhead_ratio") is not None]

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
}


def load_results() -> list[dict[str, Any]]:
    out = []
    for p in RESULTS.glob("*.json"):
        try:
            out.append(json.loads(p.read_text()))
        except ValueError:
            continue
    out.sort(key=lambda r: SIZE_ORDER.get(r.get("size", ""), 99))
    return out


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
    if not results:
        lines.append("No results yet.")
        path = RESULTS / "README.md"
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

    m = results[-1]["machine"]
    lines += [
        "## Machine",
        "",
        f"{m['cpus']} × {m['cpu']}, {m['memory_gb']} GB RAM, {m['platform']}, Python {m['python']}, "
        + ", ".join(f"{k} {v}" for k, v in m["versions"].items() if k != "grep")
        + f"; {m['versions'].get('grep', '')}.",
        "",
        "Runs: " + "; ".join(f"{r['size']} on {r['machine']['date']} (git {r['machine']['git_commit']}"
                             f"{', src modified' if r['machine'].get('git_dirty') else ''})" for r in results),
        "",
        "## Datasets (demo generator, scenario dependency-latency, seed 42)",
        "",
        head,
        sep,
        row("spans", lambda r: _n(r["dataset"]["items"]["traces"])),
        row("log records", lambda r: _n(r["dataset"]["items"]["logs"])),
        row("metric data points", lambda r: _n(r["dataset"]["items"]["metrics"])),
        row("simulated time / root requests per s", lambda r: f"{r['dataset']['config']['duration_s'] / 3600:g} h / {r['dataset']['config']['rate']:g}"),
        row("OTLP requests (traces/logs/metrics)", lambda r: "/".join(_n(r["dataset"]["requests"][s]) for s in ("traces", "logs", "metrics"))),
        row("protobuf size, raw → gzip (MB)", lambda r: f"{sum(r['dataset']['raw_bytes'].values()) / 1e6:,.0f} → {sum(r['dataset']['gzip_bytes'].values()) / 1e6:,.0f}"),
        row("generation time (generator only / with gzip+disk), s", lambda r: f"{r['dataset']['generation']['generator_s']:,.0f} / {r['dataset']['generation']['wall_s']:,.0f}"),
        row("store size after ingest (MB)", lambda r: _n(r["ingest"]["store_bytes"] / 1e6)),
        "",
        "## Ingest (OTLP/HTTP protobuf + gzip, `obsmcp serve --http` subprocess, fresh store)",
        "",
        "Each signal is sent on its own, with the run's concurrency of requests in flight; a request counts once its",
        "200 arrives (obsmcp acknowledges after commit). The baseline is `INSERT INTO t SELECT * FROM arrow_table`",
        "of the same rows (decoded beforehand with `obsmcp.ingest.otlp.decode`) into a fresh DuckDB file with the",
        "same DDL; decode speed is the same decode on one thread.",
        "",
        head,
        sep,
        row("senders in flight", lambda r: str(r["ingest"]["concurrency"])),
        row("**spans/s end to end**", lambda r: f"**{_n(r['ingest']['signals']['traces']['items_per_s'])}**"),
        row("**log records/s end to end**", lambda r: f"**{_n(r['ingest']['signals']['logs']['items_per_s'])}**"),
        row("metric points/s end to end", lambda r: _n(r["ingest"]["signals"]["metrics"]["items_per_s"])),
        row("server CPU during traces / logs (cores of 2)", lambda r: f"{r['ingest']['signals']['traces']['server_cpu_util']:.2f} / {r['ingest']['signals']['logs']['server_cpu_util']:.2f}"),
        row("request p50 / p95 (traces), ms", lambda r: f"{_ms(r['ingest']['signals']['traces']['request_p50_ms'])} / {_ms(r['ingest']['signals']['traces']['request_p95_ms'])}"),
        row("server peak RSS (MB)", lambda r: _n(r["ingest"].get("server_peak_rss_mb"))),
        row("DuckDB insert baseline, spans/s", lambda r: _n(r["baseline"]["signals"]["traces"]["insert_items_per_s"])),
        row("DuckDB insert baseline + trace-id lookup rows, spans/s", lambda r: _n(r["baseline"]["signals"]["traces"]["insert_with_lookup_items_per_s"])),
        row("DuckDB insert baseline, log records/s", lambda r: _n(r["baseline"]["signals"]["logs"]["insert_items_per_s"])),
        row("end to end / baseline (spans)", lambda r: f"{r['ingest']['signals']['traces']['items_per_s'] / r['baseline']['signals']['traces']['insert_items_per_s']:.2f}"),
        row("end to end / baseline (logs)", lambda r: f"{r['ingest']['signals']['logs']['items_per_s'] / r['baseline']['signals']['logs']['insert_items_per_s']:.2f}"),
        row("decode only (1 thread), spans/s", lambda r: _n(r["baseline"]["signals"]["traces"]["decode_items_per_s"])),
        row("decode only (1 thread), log records/s", lambda r: _n(r["baseline"]["signals"]["logs"]["decode_items_per_s"])),
        "",
        "## Tool latency (in-process `mcp.Client(rt.mcp).call_tool`) vs hand-written SQL",
        "",
        "p50 / p95 in ms over the run's repetitions (after one warm-up call; fewer repetitions for slow cases),",
        "time range covering the whole dataset. SQL = hand-written queries giving the same information, on a",
        "cursor of the same DuckDB connection (see `sql_note` in the JSON for each). Overhead = tool p50 / SQL p50.",
        "",
    ]
    lat_head = "| tool | " + " | ".join(f"{s} tool p50 / p95 | {s} SQL p50 | {s} overhead" for s in sizes) + " |"
    lat_sep = "|---|" + "---:|---:|---:|" * len(sizes)
    lines += [lat_head, lat_sep]
    for key, label in CASE_LABELS.items():
        cells = []
        for r in results:
            c = (r.get("latency") or {}).get("cases", {}).get(key)
            if not c:
                cells += ["–", "–", "–"]
                continue
            t = c["tool_latency"]
            cells.append(f"{_ms(t['p50_ms'])} / {_ms(t['p95_ms'])}" + (" ⚠ error" if "error" in t else ""))
            cells.append(_ms(c.get("sql_latency", {}).get("p50_ms")))
            cells.append(f"{c['overhead_ratio']:.2f}x" if c.get("overhead_ratio") is not None else "–")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Extra SQL variants (p50 ms): ",
        "",
        head,
        sep,
        row("search_logs service+text: newest page only (no counts)", lambda r: _ms(r["latency"]["cases"]["search_logs_service_text"]["sql_page_only_latency"]["p50_ms"])),
        row("search_logs text: newest page only (no counts)", lambda r: _ms(r["latency"]["cases"]["search_logs_text"]["sql_page_only_latency"]["p50_ms"])),
        row("get_trace: naive `WHERE TraceId = ?` full scan", lambda r: _ms(r["latency"]["cases"]["get_trace"]["sql_naive_scan_latency"]["p50_ms"])),
        "",
        "## search_logs vs grep",
        "",
        "`grep -c -i TEXT` over all log records exported as JSON lines (`COPY (SELECT * FROM otel_logs) TO … (FORMAT json)`),",
        "page cache warm, median of 3; against search_logs with the same text and no other filter (p50).",
        "",
        head,
        sep,
        row("search text", lambda r: f"`{r['latency']['arguments']['log_text']}`"),
        row("JSON lines size (MB)", lambda r: _n(r["latency"]["jsonl_export"]["bytes"] / 1e6)),
        row("grep -c -i, ms", lambda r: _ms(r["latency"]["grep"]["median_ms"])),
        row("search_logs (text only) p50, ms", lambda r: _ms(r["latency"]["grep"]["search_logs_text_p50_ms"])),
        row("**speedup (grep / search_logs)**", lambda r: f"**{r['latency']['grep']['speedup_vs_search_logs_text']:.1f}x**"),
        row("speedup vs search_logs (service + text)", lambda r: f"{r['latency']['grep']['speedup_vs_search_logs_service_text']:.1f}x"),
        row("matches: grep lines / search_logs total", lambda r: f"{_n(r['latency']['grep']['matching_lines'])} / {_n(r['latency']['grep']['search_logs_text_total'])}"),
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
    for i, g in enumerate(GOALS):
        cells = []
        for r in results:
            ev = next((e for e in r.get("goals", []) if e["key"] == g["key"]), None)
            if ev is None or ev["value"] is None:
                cells.append("–")
                continue
            v = ev["value"]
            vs = f"{v:,.2f}" if isinstance(v, float) and v < 100 else f"{v:,.0f}"
            mark = "✅" if ev["status"].startswith("met") else "❌"
            ref = "" if "reference" not in ev["status"] else " (ref.)"
            cells.append(f"{mark} {vs}{ref}")
        lines.append(f"| {g['goal']} | " + " | ".join(cells) + " |")
        del i
    lines += [
        "",
        "Goals marked (ref.) are defined for another dataset size and are shown for reference only.",
        "",
    ]
    notes = [n for r in results for n in r.get("notes", [])]
    if notes:
        lines += ["## Notes", ""] + [f"- {n}" for n in dict.fromkeys(notes)] + [""]
    path = RESULTS / "README.md"
    path.write_text("\n".join(lines))
    return path
