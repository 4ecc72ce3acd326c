"""Log template mining: the miner on small examples and on the Loghub benchmark (the issue's accuracy goals),
`obsmcp patterns FILE`, and the log_patterns tool (new and rising patterns against a baseline)."""

from __future__ import annotations

import collections
import csv
import io
from pathlib import Path
from typing import Any

import pytest
from mcp import Client
from typer.testing import CliRunner

from obsmcp.analysis.patterns import TemplateMiner, mine, template_id
from obsmcp.cli import app
from obsmcp.config import Settings
from obsmcp.runtime import Runtime
from obsmcp.timerange import format_ns
from obsmcp.tools.patterns import compute_log_patterns
from tests.conftest import shared_data
from tests.factories import logs_request

LOGHUB = ["HDFS", "BGL", "Apache", "OpenSSH", "Linux", "Spark", "HealthApp", "Proxifier"]

# -- the miner on small examples --------------------------------------------------------------------------


def test_values_are_masked_and_the_spacing_of_the_message_is_kept() -> None:
    got = mine(
        [
            "Accepted password for fztu from 119.137.62.142 port 49116 ssh2",
            "Received block blk_-1608999687919862906 of size 91178 from /10.250.10.6",
            "Reading broadcast variable 9 took 160 ms",
            "PacketResponder 1 for block blk_38865049064139660 terminating",
            "mLp(FF:F2:9F:16:E2:23:00:0D:60:E9:1D:DC), status=true, generating core.2275",
            "Input split: hdfs://10.10.34.11:9000/pjhe/logs/2kSOSP.log:21876+7292",
        ]
    )
    assert got == [
        "Accepted password for fztu from <*> port <*> ssh2",
        "Received block <*> of size <*> from <*>",
        "Reading broadcast variable <*> took <*> ms",
        "PacketResponder <*> for block <*> terminating",
        "mLp(<*>), status=<*>, generating core.<*>",
        "Input split: hdfs://<*>",
    ]


def test_a_word_that_varies_a_lot_is_a_value_but_a_few_event_words_stay_apart() -> None:
    users = ["alice", "bob", "carol", "dave", "erin", "frank", "grace"]
    messages = [f"Invalid user {u} from 10.0.0.{i}" for i, u in enumerate(users)]
    messages += ["onReceive action: SCREEN_ON", "onReceive action: SCREEN_OFF"] * 3
    got = mine(messages)
    assert set(got[: len(users)]) == {"Invalid user <*> from <*>"}
    assert got[len(users) :] == ["onReceive action: SCREEN_ON", "onReceive action: SCREEN_OFF"] * 3


def test_distinct_events_of_the_same_length_are_kept_apart() -> None:
    messages = ["Connection closed by 10.0.0.1 [preauth]", "Connection reset by 10.0.0.2 [preauth]"] * 2
    messages += [
        "Failed password for root from 10.0.0.3 port 22 ssh2",
        "Accepted password for root from 1.2.3.4 port 9 ssh2",
    ]
    got = mine(messages)
    assert len(set(got)) == 4
    assert got[4] == "Failed password for <*> from <*> port <*> ssh2"


def test_values_that_take_a_different_number_of_tokens_merge_into_one_template() -> None:
    got = mine(
        [
            "connection from 24.54.76.216 (24-54-76-216.bflony.adelphia.net) at Fri Jun 17 07:07:00 2005",
            "connection from 202.82.200.188 () at Fri Jul  1 07:57:30 2005",
            "proxy.cse.cuhk.edu.hk:5070 close, 0 bytes sent, 0 bytes received, lifetime 00:01",
            "proxy.cse.cuhk.edu.hk:5070 close, 403 bytes sent, 426 bytes received, lifetime <1 sec",
        ]
    )
    assert got[0] == got[1] == "connection from <*> (<*>) at <*>:<*>:<*>"
    assert got[2] == got[3]


def test_one_message_with_an_odd_value_does_not_split_its_event() -> None:
    messages = [f"synchronized to 10.0.0.{i}, stratum {i % 4}" for i in range(20)]
    messages += ["synchronized to LOCAL(0), stratum 10", "synchronized to #3#, stratum 1"]
    messages += [f"GET /v2/{i}/servers/detail HTTP/1.1" for i in range(5)]
    messages += ["GET /v2/7/servers/detail?all_tenants=True&changes-since=2017-05-16T05%3A54 HTTP/1.1"]
    got = mine(messages)
    assert set(got[:22]) == {"synchronized to <*>, stratum <*>"}
    assert set(got[22:]) == {"GET <*> HTTP/1.1"}


def test_fixed_words_and_fields_are_not_absorbed_by_a_more_general_template() -> None:
    messages = [f"Connection closed by 10.0.0.{i}" for i in range(10)]
    messages += [f"Connection closed by 10.0.1.{i} [preauth]" for i in range(3)]
    messages += [f"authentication failure; rhost=10.0.2.{i}" for i in range(10)]
    messages += [f"authentication failure; rhost=10.0.3.{i} user=u{i}x{i}" for i in range(3)]
    got = mine(messages)
    assert set(got[:10]) == {"Connection closed by <*>"}
    assert set(got[10:13]) == {"Connection closed by <*> [preauth]"}
    assert set(got[13:23]) == {"authentication failure; rhost=<*>"}
    assert set(got[23:]) == {"authentication failure; rhost=<*> user=<*>"}


def test_lists_hosts_and_recurring_event_words() -> None:
    nodes = [" ".join(f"{p}n{i}" for i in range(s, s + k)) for p, s, k in (("a", 14, 40), ("b", 3, 7), ("c", 1, 3))]
    messages = [f"failed to resolve data source name {n}" for n in nodes]
    messages += [f"Retrying connect to server: msra-sa-{i}:8030" for i in range(3)]
    states = ["Started", "Stopped", "Paused", "Resumed", "Rebooted"]
    messages += [f"[instance: {i:08x}-aaaa] VM {s} (Lifecycle Event)" for i in range(3) for s in states]
    got = mine(messages)
    assert set(got[:3]) == {"failed to resolve data source name <*>"}
    assert set(got[3:6]) == {"Retrying connect to server: <*>:<*>"}
    assert got[6:11] == [f"[instance: <*>] VM {s} (Lifecycle Event)" for s in states]


def test_template_ids_are_stable_and_counts_weighted() -> None:
    miner = TemplateMiner()
    g1 = miner.add("cache miss for key 17", count=10)
    g2 = miner.add("cache miss for key 99", count=5)
    (t,) = miner.templates()
    assert (t.template, t.count) == ("cache miss for key <*>", 15)
    assert miner.template_of(g1) is miner.template_of(g2)
    other = TemplateMiner()
    other.add("cache miss for key 1")
    assert t.id == template_id("cache miss for key <*>") == other.templates()[0].id


# -- accuracy on the Loghub 2k datasets (the goals) ------------------------------------------------


def _loghub(name: str) -> tuple[list[str], list[str]]:
    path = shared_data() / "loghub" / name / f"{name}_2k.log_structured_corrected.csv"
    if not path.is_file():
        pytest.fail(f"Loghub data not found at {path}: set OBSMCP_SHARED_DATA to the shared/data folder")
    with path.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return [r["Content"] for r in rows], [r["EventTemplate"] for r in rows]


def _grouping_and_parsing_accuracy(truth: list[str], parsed: list[str]) -> tuple[float, float]:
    """GA: share of messages whose parsed group is exactly their true group; PA: exact template matches."""
    parsed_sizes = collections.Counter(parsed)
    by_truth: dict[str, list[str]] = collections.defaultdict(list)
    for t, p in zip(truth, parsed, strict=True):
        by_truth[t].append(p)
    grouped = sum(len(ps) for ps in by_truth.values() if len(set(ps)) == 1 and parsed_sizes[ps[0]] == len(ps))
    exact = sum(t == p for t, p in zip(truth, parsed, strict=True))
    return grouped / len(truth), exact / len(truth)


@pytest.fixture(scope="module")
def loghub_scores() -> dict[str, tuple[float, float]]:
    scores = {}
    for name in LOGHUB:
        messages, truth = _loghub(name)
        scores[name] = _grouping_and_parsing_accuracy(truth, mine(messages))
    return scores


def test_average_grouping_accuracy_on_loghub_is_at_least_0_90(loghub_scores: dict[str, tuple[float, float]]) -> None:
    ga = sum(s[0] for s in loghub_scores.values()) / len(loghub_scores)
    assert ga >= 0.90, loghub_scores


def test_average_parsing_accuracy_on_loghub_is_at_least_0_5(loghub_scores: dict[str, tuple[float, float]]) -> None:
    pa = sum(s[1] for s in loghub_scores.values()) / len(loghub_scores)
    assert pa >= 0.5, loghub_scores


def test_grouping_accuracy_is_at_least_drain3s_on_every_dataset(
    loghub_scores: dict[str, tuple[float, float]],
) -> None:
    drain3 = pytest.importorskip("drain3")
    from drain3.template_miner_config import TemplateMinerConfig

    for name in LOGHUB:
        messages, truth = _loghub(name)
        config = TemplateMinerConfig()
        config.profiling_enabled = False
        miner = drain3.TemplateMiner(config=config)
        ids = [miner.add_log_message(m)["cluster_id"] for m in messages]
        parsed = [miner.drain.id_to_cluster[i].get_template() for i in ids]
        drain_ga, _ = _grouping_and_parsing_accuracy(truth, parsed)
        assert loghub_scores[name][0] >= drain_ga, (name, loghub_scores[name][0], drain_ga)


# -- obsmcp patterns FILE ---------------------------------------------------------------------------------


def test_patterns_csv_writes_one_row_per_input_line(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_text('user 17 logged in\nuser 18 logged in\ndisk "sda" full, 99% used\n\n')
    r = CliRunner().invoke(app, ["patterns", str(log), "--csv"])
    assert r.exit_code == 0, r.output
    rows = list(csv.reader(io.StringIO(r.stdout)))
    assert rows[0] == ["line", "template_id", "template"]
    assert [row[0] for row in rows[1:]] == ["1", "2", "3", "4"]
    assert rows[1][2] == rows[2][2] == "user <*> logged in" and rows[1][1] == rows[2][1]
    assert rows[3][2] == 'disk "sda" full, <*> used'


def test_patterns_reads_stdin_and_summarises_by_count() -> None:
    text = "".join(f"GET /items/{i} took {i * 3} ms\n" for i in range(30)) + "cache flushed\n"
    r = CliRunner().invoke(app, ["patterns", "-"], input=text)
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert lines[0] == "31 lines, 2 templates"
    assert "30" in lines[2] and "96.8%" in lines[2] and "GET <*> took <*> ms" in lines[2]
    assert "cache flushed" in lines[3]


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda p: None, "no such file"),
        (lambda p: p.write_bytes(b"\x7fELF\x00\x00\x01"), "looks binary"),
        (lambda p: p.write_text(""), "is empty"),
    ],
)
def test_patterns_reports_unusable_input_clearly(tmp_path: Path, setup: Any, message: str) -> None:
    path = tmp_path / "input.log"
    setup(path)
    r = CliRunner().invoke(app, ["patterns", str(path)])
    assert r.exit_code == 2
    assert message in r.output and "Traceback" not in r.output


# -- the log_patterns tool ---------------------------------------------------------------------------------


def test_log_patterns_finds_the_new_error_pattern_of_the_bad_deploy(demo_store: Any) -> None:
    demo = demo_store("deploy-errors")
    window = demo.window()
    analysis = compute_log_patterns(demo.ctx, start=window["start"], end=window["end"])
    changed = [p for p in analysis.new_or_rising() if p.service == demo.truth.root_cause_service]
    assert changed, [(p.service, p.template, p.change) for p in analysis.patterns[:20]]
    errors = [p for p in changed if p.max_severity_number >= 17]
    assert errors, [(p.template, p.change, p.severity) for p in changed]
    # catalog-service 2.15.0 raises AttributeError: its log says "... object has no attribute ...".
    assert any("has no attribute" in p.template and p.change == "new" for p in errors), [
        (p.template, p.change, p.severity) for p in errors
    ]


T0 = 1_763_683_200_000_000_000  # 2025-11-21T00:00:00Z
S = 10**9


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
async def test_log_patterns_over_mcp_counts_exactly_and_marks_new_and_rising(tmp_path: Path) -> None:
    rt = Runtime.open(Settings(data_dir=tmp_path, retention_days=36500), in_memory=True)
    try:
        base = [(T0 + i * S, 9, f"cache miss for key {i}", b"") for i in range(100)]
        base += [(T0 + i * S, 13, f"slow query took {i} ms", b"") for i in range(5)]
        now = [(T0 + 3600 * S + i * S, 9, f"cache miss for key {i + 7}", b"") for i in range(100)]
        now += [(T0 + 3600 * S + i * S, 13, f"slow query took {i + 900} ms", b"") for i in range(50)]
        now += [(T0 + 3600 * S + i * S, 17, f"payment declined for order o-{i}71", b"") for i in range(20)]
        await rt.receiver.ingest("logs", logs_request("checkout-service", base + now), "protobuf")
        args = {"start": format_ns(T0 + 3600 * S), "end": format_ns(T0 + 7200 * S)}
        async with Client(rt.mcp) as client:
            r = await client.call_tool("log_patterns", args)
        text = r.content[0].text  # type: ignore[union-attr]
        assert not r.is_error, text
        out = r.structured_content
        assert out is not None
    finally:
        rt.close()
    by_template = {p["template"]: p for p in out["patterns"]}
    assert out["total_logs"] == 170 and not out["counts_estimated"]
    assert by_template["payment declined for order <*>"]["change"] == "new"
    assert by_template["payment declined for order <*>"]["count"] == 20
    assert by_template["payment declined for order <*>"]["severity"] == "ERROR"
    slow = by_template["slow query took <*> ms"]
    assert (slow["change"], slow["count"], slow["baseline_count"], slow["ratio"]) == ("rising", 50, 5, 10.0)
    assert by_template["cache miss for key <*>"]["change"] == "steady"
    # What changed comes first, and the text fences the untrusted templates.
    assert [p["change"] for p in out["patterns"][:2]] == ["new", "rising"] or [
        p["change"] for p in out["patterns"][:2]
    ] == ["rising", "new"]
    assert "NEW" in text and "RISING x10" in text and "(untrusted data)" in text
