"""Run the obsmcp benchmarks and write bench/results/<size>.json and bench/results/README.md.

    .venv/bin/python -m bench.run                      # the 1M dataset
    .venv/bin/python -m bench.run --sizes 1M,10M       # both sizes, one after the other
    .venv/bin/python -m bench.run --quick              # ~100k spans: a fast sanity run
    .venv/bin/python -m bench.run --readme             # only regenerate README.md from the JSON files

Per size: load (or generate and cache) the dataset; ingest it end to end into a fresh store through a real
`obsmcp serve --http`; time DuckDB's own insert of the same rows; open the store in-process and time every
tool through the MCP client against hand-written SQL; time grep over the logs as JSON lines; record the
answer sizes. See bench/results/README.md for what each figure means.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from bench import dataset, ingest, latency, report, sysmon

WORK = Path(__file__).resolve().parent / ".work"


def log(msg: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {msg}", file=sys.stderr, flush=True)


def run_size(size: dataset.Size, args: argparse.Namespace) -> dict[str, Any]:
    work = WORK / size.name
    work.mkdir(parents=True, exist_ok=True)
    out_path = report.RESULTS / f"{size.name}.json"

    ds = dataset.load_or_generate(size, regenerate=args.regenerate, log=log)
    result: dict[str, Any] = {
        "size": size.name,
        "machine": report.machine_info(),
        "dataset": {k: v for k, v in ds.meta.items() if k not in ("cache_format",)},
        "notes": [],
    }
    result["dataset"]["logs_per_span"] = round(ds.counts["logs"] / max(1, ds.counts["traces"]), 3)

    store = work / "store" / "obsmcp.duckdb"
    saved = work / "ingest_result.json"  # the ingest that built this store (for --reuse-store)
    if args.reuse_store and store.exists() and saved.exists():
        prev = json.loads(saved.read_text())
        log(f"[{size.name}] reusing the store and the ingest/baseline figures of the run of {prev['date']}")
        result["ingest"], result["baseline"], result["sweep"] = prev["ingest"], prev["baseline"], prev.get("sweep")
        result["notes"].append(
            f"{size.name}: ingest and baseline figures are from the run of {prev['date']} "
            "(latency rerun on the same store with --reuse-store)"
        )
    else:
        saved.unlink(missing_ok=True)
        ingest_src = report.src_state()
        result["ingest"] = ingest.run_ingest(ds, work, args.concurrency, log=log)
        result["ingest"]["src_state"] = ingest_src
        result["baseline"] = None if args.skip_baseline else ingest.run_baseline(ds, work, log=log)
        result["sweep"] = None
        if args.sweep:
            levels = [int(x) for x in args.sweep.split(",") if x.strip()]
            result["sweep"] = ingest.run_sweep(ds, work, levels, log=log)
        saved.write_text(
            json.dumps(
                {
                    "date": result["machine"]["date"],
                    "ingest": result["ingest"],
                    "baseline": result["baseline"],
                    "sweep": result["sweep"],
                }
            )
        )

    latency_src = report.src_state()
    result["latency"] = latency.run_latency(
        ds, work, args.reps, text_override=args.text, grep=not args.no_grep, log=log
    )
    result["latency"]["src_state"] = latency_src
    rows = result["latency"].get("store_rows", {})
    for signal, table in (("traces", "otel_traces"), ("logs", "otel_logs")):
        if rows.get(table) != ds.counts[signal]:
            result["notes"].append(
                f"{size.name}: the store holds {rows.get(table)} rows in {table}, {ds.counts[signal]} were sent"
            )
    end_state = report.src_state()
    result["machine"]["src_state_end"] = end_state
    if end_state != result["machine"]["src_state"]:
        result["notes"].append(
            f"{size.name}: src/ changed while this run was in progress (git {result['machine']['git_commit']} -> "
            f"{end_state['commit']}); the phases may have run different code"
        )
    result["goals"] = report.evaluate_goals(result)
    report.RESULTS.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(result, indent=2) + "\n")
    log(f"[{size.name}] wrote {out_path}")
    for g in result["goals"]:
        log(f"[{size.name}]   {g['status']:>12}: {g['goal']} (value {g['value']})")
    if args.clean_store:
        shutil.rmtree(work / "store", ignore_errors=True)
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="1M", help="comma-separated dataset sizes: quick, 1M, 10M (default 1M)")
    p.add_argument("--quick", action="store_true", help="run the ~100k-span dataset only (same as --sizes quick)")
    p.add_argument("--reps", type=int, default=20, help="timed repetitions per tool and SQL case (default 20)")
    p.add_argument("--concurrency", type=int, default=8, help="OTLP requests in flight while ingesting (default 8)")
    p.add_argument("--text", default=None, help="search text for search_logs/grep (default: from the data)")
    p.add_argument("--regenerate", action="store_true", help="regenerate the cached datasets")
    p.add_argument("--skip-baseline", action="store_true", help="skip the DuckDB insert baseline")
    p.add_argument("--no-grep", action="store_true", help="skip the JSON-lines export and grep comparison")
    p.add_argument(
        "--sweep",
        default="",
        help="also measure ingest at these requests-in-flight levels, e.g. 4,8,16,32 (first 100 requests)",
    )
    p.add_argument("--reuse-store", action="store_true", help="keep the store (and ingest figures) of the last run")
    p.add_argument("--clean-store", action="store_true", help="delete bench/.work/<size>/store after the run")
    p.add_argument("--readme", action="store_true", help="only regenerate bench/results/README.md")
    p.add_argument(
        "--analysis", action="store_true", help="then run the analysis-tool benchmark (bench/analysis.py) too"
    )
    p.add_argument(
        "--max-quiet-wait",
        type=float,
        default=600.0,
        help="before each phase, wait up to this many seconds for other processes to go quiet (0: don't)",
    )
    args = p.parse_args(argv)
    sysmon.MAX_WAIT_S = args.max_quiet_wait
    if not args.readme:
        names = ["quick"] if args.quick else [s for s in args.sizes.split(",") if s.strip()]
        sizes = [dataset.parse_size(n) for n in names]
        for size in sizes:
            run_size(size, args)
    path = report.write_readme()
    log(f"wrote {path}")
    if args.analysis and not args.readme:
        from bench import analysis

        analysis.main(["--sizes", ",".join(names), "--max-quiet-wait", str(args.max_quiet_wait)])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
