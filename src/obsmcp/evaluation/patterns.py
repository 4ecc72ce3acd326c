"""Log-parsing accuracy against Loghub ground truth, and the runner behind `obsmcp eval patterns`.

The four metrics are the ones of the Loghub-2.0 benchmark (ISSTA'24), written here from their definitions
(`/work/shared/reference/log-parsing-benchmark.md`); tests/test_eval_patterns.py shows that they reproduce
the published numbers of Drain from Drain's own output. Templates are compared as strings; rows whose
ground-truth template is empty are dropped before any metric.

- GA (grouping accuracy): a ground-truth group G counts when all its messages got one parsed template P and
  P was given to exactly |G| messages; GA = messages in counted groups / messages.
- FGA: F1 of PGA = counted groups / parsed templates and RGA = counted groups / ground-truth templates.
- PA (parsing accuracy): share of messages whose parsed template equals the ground-truth template.
- FTA: a parsed template is correct when the ground-truth templates of its messages are exactly {itself};
  F1 of PTA = correct / parsed templates and RTA = correct / ground-truth templates.

A dataset is a folder holding `<name>.log_structured_corrected.csv` (Loghub-2.0's corrected ground truth) or,
failing that, the original `<name>.log_structured.csv`; its `Content` column is the message and
`EventTemplate` the truth. A suite is a folder of such dataset folders (Loghub's layout).
"""

from __future__ import annotations

import csv
import datetime as dt
import os
import platform
import shlex
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

# The baseline's version, pinned in pyproject's dev extras; the error message for a missing drain3 names it.
DRAIN3_VERSION = "0.9.11"

# The acceptance criteria for the miner (issue 7, "Quality is measured").
GOAL_AVG_GA = 0.90
GOAL_AVG_PA = 0.5
GOAL_MSGS_PER_S = 50_000.0

METRICS = ("ga", "fga", "pa", "fta")
GroundTruth = Literal["corrected", "original"]
# A parser maps messages to one template per message, in order (`obsmcp.analysis.patterns.mine`).
Parser = Callable[[list[str]], list[str]]

_CORRECTED_SUFFIX = ".log_structured_corrected.csv"
_ORIGINAL_SUFFIX = ".log_structured.csv"


class EvalError(Exception):
    """Input the evaluation cannot use (missing folder, no datasets, malformed CSV); the message says what to do."""


# --- metrics -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scores:
    ga: float
    fga: float
    pa: float
    fta: float
    messages: int  # after dropping rows with an empty ground-truth template
    truth_templates: int
    parsed_templates: int


def _f1(precision: float, recall: float) -> float:
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def _check_pairs(truth: Sequence[str], parsed: Sequence[str]) -> None:
    if len(truth) != len(parsed):
        raise ValueError(f"{len(parsed)} parsed templates for {len(truth)} ground-truth rows")


def grouping_accuracy(truth: Sequence[str], parsed: Sequence[str]) -> tuple[float, float]:
    """(GA, FGA) of `parsed` against `truth`, one template per message in both."""
    _check_pairs(truth, parsed)
    if not truth:
        return 0.0, 0.0
    parsed_size = Counter(parsed)
    parsed_in_group: dict[str, set[str]] = defaultdict(set)
    group_size: Counter[str] = Counter()
    for t, p in zip(truth, parsed, strict=True):
        parsed_in_group[t].add(p)
        group_size[t] += 1
    correct_messages = 0
    correct_groups = 0
    for t, ps in parsed_in_group.items():
        # The group is recovered only if one parsed template covers it and nothing else.
        if len(ps) == 1 and parsed_size[next(iter(ps))] == group_size[t]:
            correct_messages += group_size[t]
            correct_groups += 1
    ga = correct_messages / len(truth)
    return ga, _f1(correct_groups / len(parsed_size), correct_groups / len(group_size))


def parsing_accuracy(truth: Sequence[str], parsed: Sequence[str]) -> float:
    """PA: the share of messages whose parsed template is exactly the ground-truth string."""
    _check_pairs(truth, parsed)
    if not truth:
        return 0.0
    return sum(t == p for t, p in zip(truth, parsed, strict=True)) / len(truth)


def template_accuracy(truth: Sequence[str], parsed: Sequence[str]) -> float:
    """FTA: F1 over templates; a parsed template is right when its messages' truth is exactly that string."""
    _check_pairs(truth, parsed)
    if not truth:
        return 0.0
    truth_of: dict[str, set[str]] = defaultdict(set)
    for t, p in zip(truth, parsed, strict=True):
        truth_of[p].add(t)
    correct = sum(1 for p, ts in truth_of.items() if ts == {p})
    return _f1(correct / len(truth_of), correct / len(set(truth)))


def score(truth: Sequence[str], parsed: Sequence[str]) -> Scores:
    """All four metrics; rows whose ground-truth template is empty (unlabelled) are dropped first."""
    _check_pairs(truth, parsed)
    pairs = [(t, p) for t, p in zip(truth, parsed, strict=True) if t.strip()]
    kept_truth = [t for t, _ in pairs]
    kept_parsed = [p for _, p in pairs]
    ga, fga = grouping_accuracy(kept_truth, kept_parsed)
    return Scores(
        ga=ga,
        fga=fga,
        pa=parsing_accuracy(kept_truth, kept_parsed),
        fta=template_accuracy(kept_truth, kept_parsed),
        messages=len(pairs),
        truth_templates=len(set(kept_truth)),
        parsed_templates=len(set(kept_parsed)),
    )


# --- labelled data -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LabelledLog:
    name: str
    messages: list[str]
    truth: list[str]
    truth_file: Path

    @property
    def corrected(self) -> bool:
        return self.truth_file.name.endswith(_CORRECTED_SUFFIX)


def _truth_file(folder: Path, ground_truth: GroundTruth) -> Path | None:
    corrected = sorted(folder.glob("*" + _CORRECTED_SUFFIX))
    original = sorted(folder.glob("*" + _ORIGINAL_SUFFIX))
    # The corrected file is preferred; without one, the original ground truth is what there is.
    order = (corrected, original) if ground_truth == "corrected" else (original, corrected)
    for found in order:
        if len(found) > 1:
            names = ", ".join(p.name for p in found)
            raise EvalError(f"{folder} holds several ground-truth files ({names}): keep one per dataset folder")
        if found:
            return found[0]
    return None


def read_template_csv(path: Path, columns: Sequence[str]) -> dict[str, list[str]]:
    """The given columns of a Loghub-style CSV (header row, RFC-4180 quoting), as lists of strings."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:  # -sig: tolerate a BOM
            reader = csv.reader(f)
            header = next(reader, None)
            if header is None:
                raise EvalError(f"{path} is empty: expected a CSV header with {', '.join(columns)}")
            missing = [c for c in columns if c not in header]
            if missing:
                raise EvalError(
                    f"{path} has no {', '.join(missing)} column (header: {', '.join(header[:12])}): "
                    "expected Loghub's structured CSV layout"
                )
            index = [header.index(c) for c in columns]
            out: dict[str, list[str]] = {c: [] for c in columns}
            for row in reader:
                if not row:
                    continue
                if len(row) != len(header):
                    raise EvalError(
                        f"{path} line {reader.line_num}: {len(row)} fields where the header has {len(header)}"
                    )
                for c, i in zip(columns, index, strict=True):
                    out[c].append(row[i])
    except UnicodeDecodeError as e:
        raise EvalError(f"{path} is not UTF-8 text ({e.reason} at byte {e.start})") from None
    except csv.Error as e:
        raise EvalError(f"{path} is not valid CSV: {e}") from None
    except OSError as e:
        raise EvalError(f"cannot read {path}: {e.strerror}") from None
    return out


def load_dataset(folder: Path, ground_truth: GroundTruth = "corrected") -> LabelledLog:
    path = _truth_file(folder, ground_truth)
    if path is None:
        raise EvalError(f"{folder} has no *{_CORRECTED_SUFFIX} or *{_ORIGINAL_SUFFIX} ground-truth file")
    cols = read_template_csv(path, ("Content", "EventTemplate"))
    if not cols["Content"]:
        raise EvalError(f"{path} has a header but no rows")
    return LabelledLog(folder.name, cols["Content"], cols["EventTemplate"], path)


def find_datasets(root: Path) -> list[Path]:
    """Dataset folders under `root` (Loghub layout), or `root` itself when it is one dataset folder."""
    if not root.exists():
        raise EvalError(f"{root} does not exist: pass a folder of Loghub datasets (e.g. ../shared/data/loghub)")
    if not root.is_dir():
        raise EvalError(f"{root} is not a folder: pass a folder of Loghub dataset folders")

    def is_dataset(d: Path) -> bool:
        return any(d.glob("*" + _CORRECTED_SUFFIX)) or any(d.glob("*" + _ORIGINAL_SUFFIX))

    if is_dataset(root):
        return [root]
    found = sorted((d for d in root.iterdir() if d.is_dir() and is_dataset(d)), key=lambda d: d.name.lower())
    if not found:
        raise EvalError(
            f"no datasets in {root}: expected sub-folders holding <name>{_CORRECTED_SUFFIX} "
            f"or <name>{_ORIGINAL_SUFFIX} (Loghub's layout)"
        )
    return found


def default_loghub_dir() -> Path:
    """The shared Loghub folder: $OBSMCP_SHARED_DATA/loghub, else ../shared/data/loghub next to the repo."""
    env = os.environ.get("OBSMCP_SHARED_DATA")
    if env:
        return Path(env) / "loghub"
    beside_repo = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "loghub"
    return beside_repo if beside_repo.is_dir() else Path("../shared/data/loghub")


# --- parsers -------------------------------------------------------------------------------------------------


def obsmcp_parser() -> Parser:
    from obsmcp.analysis.patterns import mine

    def parse(messages: list[str]) -> list[str]:
        return list(mine(messages))

    return parse


def drain3_parser() -> Parser:
    """Drain3 with its default configuration: the baseline the issue names."""
    try:
        from drain3 import TemplateMiner  # type: ignore[import-untyped]
        from drain3.template_miner_config import TemplateMinerConfig  # type: ignore[import-untyped]
    except ImportError:
        raise EvalError(
            f"the drain3 baseline is not installed: pip install drain3=={DRAIN3_VERSION} (or pass --no-baseline)"
        ) from None

    def parse(messages: list[str]) -> list[str]:
        # An explicit default config: TemplateMiner() alone would read a drain3.ini from the working directory.
        miner = TemplateMiner(config=TemplateMinerConfig())
        ids = [miner.add_log_message(m)["cluster_id"] for m in messages]
        # Like Drain's benchmark output, each message gets its cluster's final template.
        final = {c.cluster_id: c.get_template() for c in miner.drain.clusters}
        return [final[i] for i in ids]

    return parse


def drain3_version() -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("drain3")
    except PackageNotFoundError:
        return None


# --- runner --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ParserRun:
    scores: Scores
    seconds: float  # CPU time of the mining call, best of the repeats (no CSV reading)
    wall_seconds: float  # wall time of the same best run
    first_seconds: float  # CPU time of the first run: caches a parser keeps between calls are still cold
    messages: int

    @property
    def messages_per_s(self) -> float:
        return self.messages / self.seconds if self.seconds > 0 else float("inf")


@dataclass(frozen=True)
class DatasetResult:
    name: str
    truth_file: str
    corrected: bool
    runs: dict[str, ParserRun]


@dataclass(frozen=True)
class SuiteResult:
    label: str
    source: str
    datasets: list[DatasetResult]
    parsers: list[str]

    def average(self, parser: str, metric: str) -> float:
        values = [float(getattr(d.runs[parser].scores, metric)) for d in self.datasets]
        return sum(values) / len(values)

    def messages_per_s(self, parser: str, *, timing: Literal["best", "wall", "first"] = "best") -> float:
        """Overall throughput: all messages over all mining time (not an average of per-dataset rates)."""
        runs = [d.runs[parser] for d in self.datasets]
        pick: dict[str, Callable[[ParserRun], float]] = {
            "best": lambda r: r.seconds,
            "wall": lambda r: r.wall_seconds,
            "first": lambda r: r.first_seconds,
        }
        seconds = sum(map(pick[timing], runs))
        return sum(r.messages for r in runs) / seconds if seconds > 0 else float("inf")


def run_parser(parser: Parser, messages: list[str], repeat: int) -> tuple[list[str], float, float, float]:
    """The parser's templates, its best (CPU, wall) seconds over `repeat` runs and the first run's CPU seconds.

    Speed is the CPU time of this process: the parsers are single-threaded (extra threads would only add to
    it), and on a shared machine wall time also counts the time the scheduler gave to other processes.
    """
    best_cpu, best_wall, first_cpu = float("inf"), float("inf"), 0.0
    templates: list[str] = []
    for i in range(max(1, repeat)):
        wall, cpu = time.perf_counter(), time.process_time()
        templates = parser(list(messages))
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        first_cpu = cpu if i == 0 else first_cpu
        if cpu < best_cpu:
            best_cpu, best_wall = cpu, wall
    if len(templates) != len(messages):
        raise EvalError(f"the parser returned {len(templates)} templates for {len(messages)} messages")
    return templates, best_cpu, best_wall, first_cpu


def evaluate_suite(
    root: Path,
    parsers: Mapping[str, Parser],
    *,
    repeat: int = 1,
    ground_truth: GroundTruth = "corrected",
    label: str | None = None,
    progress: Callable[[str], None] | None = None,
) -> SuiteResult:
    """Every parser on every dataset under `root`, same messages for all, scored against the ground truth."""
    results: list[DatasetResult] = []
    for folder in find_datasets(root):
        ds = load_dataset(folder, ground_truth)
        runs: dict[str, ParserRun] = {}
        for name, parser in parsers.items():
            try:
                templates, cpu, wall, first = run_parser(parser, ds.messages, repeat)
            except EvalError as e:
                raise EvalError(f"{name} on {ds.name}: {e}") from None
            runs[name] = ParserRun(score(ds.truth, templates), cpu, wall, first, len(ds.messages))
        if progress is not None:
            progress(
                f"{ds.name}: " + ", ".join(f"{n} GA {r.scores.ga:.3f} PA {r.scores.pa:.3f}" for n, r in runs.items())
            )
        results.append(DatasetResult(ds.name, ds.truth_file.name, ds.corrected, runs))
    return SuiteResult(label or str(root), str(root), results, list(parsers))


# --- goals and report ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Goal:
    name: str
    target: str
    actual: str
    passed: bool


def goals(suite: SuiteResult, parser: str = "obsmcp", baseline: str = "drain3") -> list[Goal]:
    """The issue's acceptance criteria, judged on one suite."""
    ga, pa = suite.average(parser, "ga"), suite.average(parser, "pa")
    rate = suite.messages_per_s(parser)
    out = [
        Goal("average GA", f">= {GOAL_AVG_GA:.2f}", f"{ga:.3f}", ga >= GOAL_AVG_GA),
        Goal("average PA", f">= {GOAL_AVG_PA:.2f}", f"{pa:.3f}", pa >= GOAL_AVG_PA),
    ]
    if baseline in suite.parsers:
        behind = [d.name for d in suite.datasets if d.runs[parser].scores.ga < d.runs[baseline].scores.ga]
        actual = "on all datasets" if not behind else "behind on " + ", ".join(behind)
        out.append(Goal(f"GA >= {baseline}'s on every dataset", "every dataset", actual, not behind))
    first, wall = suite.messages_per_s(parser, timing="first"), suite.messages_per_s(parser, timing="wall")
    actual = f"{rate:,.0f} msgs/s (first run {first:,.0f}; wall clock {wall:,.0f})"
    out.append(Goal("throughput (CPU time)", f">= {GOAL_MSGS_PER_S:,.0f} msgs/s", actual, rate >= GOAL_MSGS_PER_S))
    return out


def _git_commit() -> str:
    repo = Path(__file__).resolve().parents[3]
    try:
        head = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10
        )
        if head.returncode != 0:
            return "unknown"
        dirty = subprocess.run(
            ["git", "-C", str(repo), "status", "--porcelain"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    # Uncommitted changes are flagged: the numbers then belong to the work tree, not to the commit.
    return head.stdout.strip() + (" (with uncommitted changes)" if dirty.stdout.strip() else "")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


@dataclass
class EvalReport:
    suites: list[SuiteResult]
    repeat: int
    ground_truth: GroundTruth
    command: str
    notes: list[str] = field(default_factory=list)  # caveats to print with the results (--note)
    created: str = field(default_factory=lambda: dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"))
    commit: str = field(default_factory=_git_commit)
    machine: str = field(
        default_factory=lambda: f"{_cpu_model()}, {os.cpu_count()} cores, {platform.system()} {platform.release()}"
    )
    python: str = field(default_factory=lambda: platform.python_version())
    drain3: str | None = field(default_factory=drain3_version)

    def to_dict(self) -> dict[str, Any]:
        return {
            "created": self.created,
            "commit": self.commit,
            "machine": self.machine,
            "python": self.python,
            "drain3_version": self.drain3,
            "command": self.command,
            "notes": self.notes,
            "repeat": self.repeat,
            "ground_truth": self.ground_truth,
            "metrics": "GA, FGA, PA, FTA as defined in Loghub-2.0 (ISSTA'24); empty ground-truth rows dropped",
            "suites": [_suite_dict(s) for s in self.suites],
        }


def _run_dict(run: ParserRun) -> dict[str, Any]:
    s = run.scores
    return {
        "ga": round(s.ga, 4),
        "fga": round(s.fga, 4),
        "pa": round(s.pa, 4),
        "fta": round(s.fta, 4),
        "messages": s.messages,
        "truth_templates": s.truth_templates,
        "parsed_templates": s.parsed_templates,
        "cpu_seconds": round(run.seconds, 4),
        "wall_seconds": round(run.wall_seconds, 4),
        "first_run_cpu_seconds": round(run.first_seconds, 4),
        "messages_per_s": round(run.messages_per_s),
    }


def _suite_dict(suite: SuiteResult) -> dict[str, Any]:
    return {
        "label": suite.label,
        "source": suite.source,
        "datasets": [
            {
                "name": d.name,
                "ground_truth_file": d.truth_file,
                "ground_truth": "corrected" if d.corrected else "original",
                "parsers": {p: _run_dict(r) for p, r in d.runs.items()},
            }
            for d in suite.datasets
        ],
        "average": {
            p: {m: round(suite.average(p, m), 4) for m in METRICS}
            | {
                "messages_per_s": round(suite.messages_per_s(p)),
                "messages_per_s_wall": round(suite.messages_per_s(p, timing="wall")),
                "messages_per_s_first_run": round(suite.messages_per_s(p, timing="first")),
            }
            for p in suite.parsers
        },
        "goals": [asdict(g) for g in goals(suite)] if "obsmcp" in suite.parsers else [],
    }


def _table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    """A pipe table padded to line up in a terminal; it is also valid Markdown."""
    body = [list(header), *(list(r) for r in rows)]
    widths = [max(len(r[i]) for r in body) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        return (
            "| "
            + " | ".join(
                c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))
            )
            + " |"
        )

    rule = "|" + "|".join("-" * (w + 1) + ":" if i else ":" + "-" * (w + 1) for i, w in enumerate(widths)) + "|"
    return [line(body[0]), rule, *(line(r) for r in body[1:])]


def render_suite(suite: SuiteResult) -> list[str]:
    header = ["dataset", "GT"] + [f"{p} {m.upper()}" for p in suite.parsers for m in METRICS]
    header += [f"{p} msgs/s" for p in suite.parsers]
    rows: list[list[str]] = []
    for d in suite.datasets:
        row = [d.name, "corrected" if d.corrected else "original"]
        row += [f"{getattr(d.runs[p].scores, m):.3f}" for p in suite.parsers for m in METRICS]
        row += [f"{d.runs[p].messages_per_s:,.0f}" for p in suite.parsers]
        rows.append(row)
    avg = [f"average ({len(suite.datasets)})", ""]
    avg += [f"{suite.average(p, m):.3f}" for p in suite.parsers for m in METRICS]
    avg += [f"{suite.messages_per_s(p):,.0f}" for p in suite.parsers]
    rows.append(avg)
    lines = _table(header, rows)
    if "obsmcp" in suite.parsers:
        lines += ["", "Goals (issue 7):", ""]
        lines += _table(
            ["goal", "target", "actual", "result"],
            [[g.name, g.target, g.actual, "PASS" if g.passed else "MISS"] for g in goals(suite)],
        )
    return lines


def render_report(report: EvalReport) -> str:
    """The whole report as Markdown (what `--markdown` writes and, minus the preamble, what the CLI prints)."""
    out = [
        "# Log template mining: `obsmcp eval patterns`",
        "",
        f"- Date: {report.created}",
        f"- Commit: {report.commit}",
        f"- Machine: {report.machine}, Python {report.python}",
        f"- Baseline: drain3 {report.drain3 or '(not run)'} with its default configuration "
        "(`TemplateMiner(config=TemplateMinerConfig())`: no masking, sim_th 0.4, depth 4)",
        f"- Messages: the `Content` column; ground truth: {report.ground_truth} where present "
        "(column GT says which was used); msgs/s: CPU time of the mining call "
        f"(single thread; wall time on a shared machine is noisier), best of {report.repeat}; the average row is "
        "all messages over all time; the throughput goal also shows the first (cold-cache) run and wall clock",
        "- Metrics: GA, FGA, PA, FTA as defined by Loghub-2.0 (ISSTA'24); the evaluator reproduces Drain's published "
        "numbers from Drain's own output (tests/test_eval_patterns.py, tests/data/drain_reference/README.md)",
        f"- Regenerate: `{report.command}`",
        *(f"- Note: {note}" for note in report.notes),
        "",
    ]
    for suite in report.suites:
        source = [] if suite.label == suite.source else [f"Source: `{suite.source}`", ""]
        out += [f"## {suite.label}", "", *source, *render_suite(suite), ""]
    return "\n".join(out)


def command_line() -> str:
    """How this run was invoked, for the report's "regenerate" line."""
    args = [Path(sys.argv[0]).name, *sys.argv[1:]] if sys.argv else ["obsmcp"]
    return shlex.join(args)
