"""`obsmcp eval patterns`: the Loghub metrics are right (they reproduce Drain's published numbers from Drain's
own output), exact on small hand-made cases, the command works and fails clearly, and the miner meets the
issue's goals on the shared data."""

from __future__ import annotations

import json
import shutil
import sys
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import pytest

from obsmcp.evaluation.patterns import (
    EvalError,
    SuiteResult,
    drain3_parser,
    evaluate_suite,
    find_datasets,
    goals,
    load_dataset,
    obsmcp_parser,
    read_template_csv,
    score,
)
from tests.conftest import run_cli, shared_data

DRAIN_REFERENCE = Path(__file__).parent / "data" / "drain_reference"
SHARED = ("Apache", "BGL", "HDFS", "HealthApp", "Linux", "OpenSSH", "Proxifier", "Spark")

# ICSE-SEIP'19 (Zhu et al.), Drain's accuracy (= GA) on Loghub 2k, original ground truth: the exact values
# Drain's benchmark prints (logparser/Drain/README.md) and the paper's 3-decimal table (docs/benchmark.rst).
ICSE19_DRAIN_GA = {
    "HDFS": (0.9975, "0.998"),
    "BGL": (0.9625, "0.963"),
    "Apache": (1.0, "1.000"),
    "OpenSSH": (0.7875, "0.788"),
    "Linux": (0.69, "0.690"),
    "Spark": (0.92, "0.920"),
    "HealthApp": (0.78, "0.780"),
    "Proxifier": (0.5265, "0.527"),
}
# ISSTA'24 Loghub-2.0 (RQ2/effectiveness_results.csv), Drain on Loghub-2k with the corrected ground truth:
# GA, FGA, PA, FTA as the artefact prints them ("%.3f" of the float, hence Proxifier's GA 0.5265 -> 0.526).
ISSTA24_DRAIN = {
    "BGL": ("0.963", "0.833", "0.342", "0.211"),
    "Apache": ("1.000", "1.000", "0.694", "0.500"),
    "OpenSSH": ("0.789", "0.880", "0.508", "0.440"),
    "Linux": ("0.690", "0.930", "0.183", "0.435"),
    "HealthApp": ("0.780", "0.351", "0.231", "0.109"),
    "Proxifier": ("0.526", "0.538", "0.000", "0.000"),
    # Loghub-2.0 runs its own Drain settings: Spark without preprocessing regexes (its settings say so) ...
    "Spark_loghub2": ("0.922", "0.870", "0.362", "0.493"),
    # ... and the published HDFS row is Drain without regexes too, though its settings file keeps them.
    "HDFS_noregex": ("0.998", "0.839", "0.500", "0.323"),
}
# What loghub-2.0's own evaluator prints for HDFS with the regexes of its settings file (= logparser's output).
LOGHUB2_EVALUATOR_HDFS = ("0.998", "0.867", "0.354", "0.267")


def loghub() -> Path:
    path = shared_data() / "loghub"
    if not (path / "HDFS").is_dir():
        pytest.fail(f"shared Loghub data not found at {path}: set OBSMCP_SHARED_DATA to the shared/data folder")
    return path


def drain_output(name: str) -> list[str]:
    cols = read_template_csv(DRAIN_REFERENCE / f"{name}.csv", ("LineId", "EventTemplate"))
    assert cols["LineId"] == [str(i) for i in range(1, 2001)], f"{name}.csv is not one row per line, in order"
    return cols["EventTemplate"]


def half_up(x: float) -> str:
    return str(Decimal(repr(round(x, 9))).quantize(Decimal("0.001"), ROUND_HALF_UP))


def as_printed(x: float) -> str:
    return f"{x:.3f}"


# --- the evaluator reproduces the published numbers ----------------------------------------------------------


@pytest.mark.parametrize("dataset", SHARED)
def test_ga_reproduces_icse19_drain_accuracy_on_original_ground_truth(dataset: str) -> None:
    truth = load_dataset(loghub() / dataset, "original")
    assert not truth.corrected
    exact, table = ICSE19_DRAIN_GA[dataset]
    ga = score(truth.truth, drain_output(dataset)).ga
    assert ga == pytest.approx(exact, abs=1e-12)
    assert half_up(ga) == table


@pytest.mark.parametrize("name", sorted(ISSTA24_DRAIN))
def test_all_four_metrics_reproduce_issta24_drain_numbers_on_corrected_ground_truth(name: str) -> None:
    truth = load_dataset(loghub() / name.split("_")[0], "corrected")
    assert truth.corrected
    s = score(truth.truth, drain_output(name))
    assert tuple(map(as_printed, (s.ga, s.fga, s.pa, s.fta))) == ISSTA24_DRAIN[name]


def test_hdfs_metrics_equal_loghub2_evaluator_on_the_same_drain_output() -> None:
    s = score(load_dataset(loghub() / "HDFS").truth, drain_output("HDFS"))
    assert tuple(map(as_printed, (s.ga, s.fga, s.pa, s.fta))) == LOGHUB2_EVALUATOR_HDFS
    assert (s.messages, s.truth_templates, s.parsed_templates) == (2000, 14, 16)


# --- metric edge cases with exact values ---------------------------------------------------------------------


def test_right_groups_with_other_strings_score_full_grouping_and_zero_parsing() -> None:
    s = score(["A", "A", "B"], ["x", "x", "y"])
    assert (s.ga, s.fga, s.pa, s.fta) == (1.0, 1.0, 0.0, 0.0)


def test_one_message_in_the_wrong_group_spoils_both_groups_but_not_pa() -> None:
    # The third A message went to B's template: A is split and B is polluted; only C is recovered.
    s = score(["A", "A", "A", "B", "B", "C"], ["A", "A", "B", "B", "B", "C"])
    assert s.ga == pytest.approx(1 / 6)
    assert s.fga == pytest.approx(1 / 3)  # 1 of 3 parsed groups, 1 of 3 true groups
    assert s.pa == pytest.approx(5 / 6)  # five messages still carry their exact template
    assert s.fta == pytest.approx(2 / 3)  # templates A and C are exactly right; B mixes A and B
    assert (s.truth_templates, s.parsed_templates) == (3, 3)


def test_over_split_group_counts_as_wrong() -> None:
    s = score(["A", "A", "A", "A", "B", "B"], ["a1", "a1", "a2", "a2", "B", "B"])
    assert s.ga == pytest.approx(2 / 6)
    assert s.fga == pytest.approx(0.4)  # PGA 1/3, RGA 1/2
    assert s.pa == pytest.approx(2 / 6)
    assert s.fta == pytest.approx(0.4)  # PTA 1/3, RTA 1/2


def test_under_split_merged_groups_count_as_wrong() -> None:
    s = score(["A", "A", "B", "B", "C"], ["m", "m", "m", "m", "C"])
    assert s.ga == pytest.approx(1 / 5)
    assert s.fga == pytest.approx(0.4)  # PGA 1/2, RGA 1/3
    assert s.pa == pytest.approx(1 / 5)
    assert s.fta == pytest.approx(0.4)


def test_rows_with_empty_ground_truth_are_dropped_first() -> None:
    s = score(["A", "", "A", " "], ["A", "noise", "A", "more noise"])
    assert (s.ga, s.fga, s.pa, s.fta) == (1.0, 1.0, 1.0, 1.0)
    assert (s.messages, s.parsed_templates) == (2, 1)


def test_score_rejects_a_template_list_of_the_wrong_length() -> None:
    with pytest.raises(ValueError, match="2 parsed templates for 3"):
        score(["A", "A", "B"], ["x", "x"])


def test_corrected_ground_truth_is_preferred_and_the_original_is_the_fallback(tmp_path: Path) -> None:
    both = tmp_path / "Both"
    shutil.copytree(loghub() / "Apache", both)
    assert load_dataset(both).truth_file.name == "Apache_2k.log_structured_corrected.csv"
    only_original = tmp_path / "Old"
    only_original.mkdir()
    shutil.copy(loghub() / "Apache" / "Apache_2k.log_structured.csv", only_original)
    ds = load_dataset(only_original)
    assert not ds.corrected and len(ds.messages) == 2000


# --- the command ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def two_datasets(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("loghub2")
    for name in ("Apache", "Proxifier"):
        (root / name).mkdir()
        for f in (loghub() / name).glob("*_structured*.csv"):
            shutil.copy(f, root / name)
    return root


def test_eval_patterns_prints_scores_goals_and_writes_json(two_datasets: Path, tmp_path: Path) -> None:
    out, md = tmp_path / "r.json", tmp_path / "r.md"
    r = run_cli("eval", "patterns", str(two_datasets), "--repeat", "1", "--json", str(out), "--markdown", str(md))
    assert r.returncode == 0, r.stderr
    for text in ("Apache", "Proxifier", "average (2)", "obsmcp GA", "drain3 PA", "msgs/s", "average GA"):
        assert text in r.stdout, r.stdout
    assert "PASS" in r.stdout or "MISS" in r.stdout
    assert md.read_text().strip() == r.stdout.strip()
    report = json.loads(out.read_text())
    suite = report["suites"][0]
    assert [d["name"] for d in suite["datasets"]] == ["Apache", "Proxifier"]
    apache = suite["datasets"][0]
    assert apache["ground_truth"] == "corrected"
    assert set(apache["parsers"]) == {"obsmcp", "drain3"}
    assert apache["parsers"]["drain3"]["messages"] == 2000
    assert {"ga", "fga", "pa", "fta", "messages_per_s"} <= set(apache["parsers"]["obsmcp"])
    assert {g["name"] for g in suite["goals"]} >= {"average GA", "average PA", "throughput (CPU time)"}
    assert report["drain3_version"] and report["commit"] and report["created"]


def test_eval_patterns_reports_several_folders_separately(two_datasets: Path) -> None:
    r = run_cli(
        "eval",
        "patterns",
        str(two_datasets / "Apache"),
        str(two_datasets / "Proxifier"),
        "--label",
        "first",
        "--label",
        "held-out",
        "--repeat",
        "1",
        "--no-baseline",
        "--note",
        "seen during tuning",
    )
    assert r.returncode == 0, r.stderr
    assert "## first" in r.stdout and "## held-out" in r.stdout
    assert "- Note: seen during tuning" in r.stdout
    assert "drain3 GA" not in r.stdout


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        ("missing", "does not exist"),
        ("empty", "no datasets in"),
        ("no_columns", "has no Content, EventTemplate column"),
        ("ragged", "fields where the header has"),
        ("binary", "is not UTF-8"),
    ],
)
def test_eval_patterns_rejects_bad_input_with_a_clear_message(tmp_path: Path, setup: str, message: str) -> None:
    root = tmp_path / "data"
    if setup != "missing":
        (root / "X").mkdir(parents=True)
    gt = root / "X" / "X_2k.log_structured_corrected.csv"
    if setup == "no_columns":
        gt.write_text("LineId,Message\n1,hello\n")
    elif setup == "ragged":
        gt.write_text('LineId,Content,EventTemplate\n1,hello,hello\n2,"a,b"\n')
    elif setup == "binary":
        gt.write_bytes(b"LineId,Content,EventTemplate\n1,\xff\xfe\x00,x\n")
    r = run_cli("eval", "patterns", str(root), "--repeat", "1", "--no-baseline")
    assert r.returncode == 2
    assert message in r.stderr, r.stderr
    assert "Traceback" not in r.stderr + r.stdout


def test_missing_drain3_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "drain3", None)  # makes `import drain3` raise ImportError
    with pytest.raises(EvalError, match=r"pip install drain3==\d+\.\d+\.\d+"):
        drain3_parser()


def test_drain3_baseline_uses_its_defaults_whatever_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    messages = [f"connection from 10.0.0.{i} closed after {i} ms" for i in range(20)]
    before = drain3_parser()(messages)
    # TemplateMiner() alone would read this file; the baseline must stay drain3's default configuration.
    (tmp_path / "drain3.ini").write_text("[DRAIN]\nsim_th = 0.99\n")
    monkeypatch.chdir(tmp_path)
    assert drain3_parser()(messages) == before
    assert len(set(before)) == 1 and "<*>" in before[0]


def test_find_datasets_accepts_one_dataset_folder() -> None:
    assert find_datasets(loghub() / "HDFS") == [loghub() / "HDFS"]
    with pytest.raises(EvalError, match="not a folder"):
        find_datasets(loghub() / "LICENSE")


# --- the goals on the shared data (acceptance criteria: these fail when a goal is missed) -------------


@pytest.fixture(scope="module")
def shared_suite() -> SuiteResult:
    return evaluate_suite(loghub(), {"obsmcp": obsmcp_parser(), "drain3": drain3_parser()}, repeat=1)


def test_goal_miner_ga_at_least_drain3_on_every_shared_dataset(shared_suite: SuiteResult) -> None:
    behind = {
        d.name: (round(d.runs["obsmcp"].scores.ga, 3), round(d.runs["drain3"].scores.ga, 3))
        for d in shared_suite.datasets
        if d.runs["obsmcp"].scores.ga < d.runs["drain3"].scores.ga
    }
    assert not behind, f"obsmcp's GA is below drain3's on (obsmcp, drain3): {behind}"


def test_goal_miner_average_ga_at_least_0_90(shared_suite: SuiteResult) -> None:
    assert [d.name for d in shared_suite.datasets] == list(SHARED)
    assert shared_suite.average("obsmcp", "ga") >= 0.90


def test_goal_miner_average_pa_at_least_0_5(shared_suite: SuiteResult) -> None:
    assert shared_suite.average("obsmcp", "pa") >= 0.5


def test_goal_list_judges_the_same_criteria(shared_suite: SuiteResult) -> None:
    # The throughput goal is reported by the command only: tests carry no timing assertions.
    judged = {g.name: g.passed for g in goals(shared_suite)}
    assert judged["average GA"] == (shared_suite.average("obsmcp", "ga") >= 0.90)
    assert judged["GA >= drain3's on every dataset"] == all(
        d.runs["obsmcp"].scores.ga >= d.runs["drain3"].scores.ga for d in shared_suite.datasets
    )
