"""The alert engine against real data in the store: every rule kind, `for` durations and the pending -> firing ->
resolved states, silences, persistence across restarts, rules that cannot evaluate refused at start, and a raw
PromQL rule against a real Prometheus."""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.metrics.v1 import metrics_pb2

from obsmcp import metrics
from obsmcp.alerting.evaluate import Sample
from obsmcp.alerting.model import Alert, AlertRule, AlertTransition
from obsmcp.alerting.rules import RuleError
from obsmcp.config import ConfigError, Settings, load_settings
from obsmcp.runtime import Runtime
from tests.factories import logs_request, resource, span, traces_request
from tests.prometheus import PrometheusBinaries, start_prometheus

S = 1_000_000_000


def requests(rng: random.Random, start_ns: int, n: int, step_s: float, errors: int, slow_ms: float = 20) -> list[Any]:
    """n server spans from start_ns, step_s apart; `errors` of them fail, spread evenly; each takes slow_ms."""
    out = []
    failing = {round(k * n / errors) for k in range(errors)} if errors else set()
    for i in range(n):
        tid, sid = rng.randbytes(16), rng.randbytes(8)
        t = start_ns + int(i * step_s * S)
        out.append(span(tid, sid, b"", "POST /checkout", t, slow_ms, error="boom" if i in failing else None))
    return out


def gauge_request(service: str, name: str, values: list[tuple[int, float]]) -> bytes:
    points = [metrics_pb2.NumberDataPoint(time_unix_nano=t, as_double=v) for t, v in values]
    metric = metrics_pb2.Metric(name=name, unit="1", gauge=metrics_pb2.Gauge(data_points=points))
    req = metrics_service_pb2.ExportMetricsServiceRequest(
        resource_metrics=[
            metrics_pb2.ResourceMetrics(
                resource=resource(service), scope_metrics=[metrics_pb2.ScopeMetrics(metrics=[metric])]
            )
        ]
    )
    return bytes(req.SerializeToString())


def open_runtime(tmp_path: Path, *, in_memory: bool = True, **settings: Any) -> Runtime:
    return Runtime.open(Settings(data_dir=tmp_path, alert_default_rules=False, **settings), in_memory=in_memory)


class Clock:
    """The engine's clock: real time plus an offset the test moves forward."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


class Recorder:
    """A Notifier that keeps what it is told."""

    def __init__(self) -> None:
        self.calls: list[tuple[list[AlertTransition], list[Alert]]] = []

    def notify(self, transitions: list[AlertTransition], firing: list[Alert]) -> None:
        self.calls.append((transitions, firing))

    def states(self) -> list[tuple[str | None, str]]:
        return [(t.previous, t.alert.state) for ts, _ in self.calls for t in ts]


ERROR_RATE_RULE = {
    "name": "checkout-errors",
    "kind": "threshold",
    "service": "checkout-service",
    "signal": "error_rate",
    "op": ">",
    "threshold": 0.05,
    "window": "5m",
    "for": "1m",
    "severity": "critical",
}


@pytest.mark.anyio
async def test_an_alert_is_pending_for_its_for_duration_then_fires_then_resolves(tmp_path: Path) -> None:
    rt = open_runtime(tmp_path, alerts=[ERROR_RATE_RULE])
    try:
        now = time.time_ns()
        # 60 requests in the last 3 minutes, 12 failed (20%); a healthy service beside it.
        spans = requests(random.Random(1), now - 180 * S, 60, 3, errors=12)
        calm = requests(random.Random(2), now - 180 * S, 60, 3, errors=0)
        await rt.receiver.ingest("traces", traces_request({"checkout-service": spans, "cart": calm}), "protobuf")
        clock, recorder = Clock(), Recorder()
        rt.alerts.clock = clock
        rt.alerts.add_notifier(recorder)

        rt.alerts.evaluate_now()
        (alert,) = rt.alerts.current()
        assert alert.state == "pending" and alert.labels["service"] == "checkout-service"
        assert alert.value == pytest.approx(0.2)
        assert "checkout-service error rate 20% > 5%" in alert.cause

        clock.offset = 30  # condition still holds, `for` (1m) not yet reached
        rt.alerts.evaluate_now()
        assert [a.state for a in rt.alerts.current()] == ["pending"]

        clock.offset = 65
        rt.alerts.evaluate_now()
        (alert,) = rt.alerts.current()
        assert alert.state == "firing" and alert.firing_since is not None
        assert (alert.firing_since - alert.since).total_seconds() >= 60

        clock.offset = 600  # the failing requests left the 5m window
        rt.alerts.evaluate_now()
        assert rt.alerts.current() == []
        assert recorder.states() == [(None, "pending"), ("pending", "firing"), ("firing", "resolved")]
        history = rt.alerts.history(10)
        assert [(t.previous, t.alert.state) for t in history] == [
            ("firing", "resolved"),
            ("pending", "firing"),
            (None, "pending"),
        ]
        assert history[0].alert.resolved_at is not None
    finally:
        rt.close()


@pytest.mark.anyio
async def test_every_rule_kind_fires_on_real_data_and_stays_quiet_on_a_healthy_service(tmp_path: Path) -> None:
    rules = [
        {"name": "p95", "kind": "threshold", "signal": "latency_p95", "threshold": 1000, "window": "10m"},
        {"name": "queue", "kind": "threshold", "metric": "queue.depth", "aggregation": "max", "threshold": 100,
         "window": "10m", "group_by": ["service"]},
        {"name": "error-logs", "kind": "log_rate", "threshold": 1, "window": "5m"},
        {"name": "new-errors", "kind": "log_pattern", "window": "5m", "baseline": "1h", "min_count": 3},
        {"name": "burn", "kind": "burn_rate", "slo": "checkout-service/availability", "severity": "critical"},
    ]  # fmt: skip
    rt = open_runtime(tmp_path, alerts=rules)
    try:
        now = time.time_ns()
        rng = random.Random(5)
        slow = requests(rng, now - 400 * S, 100, 3, errors=30, slow_ms=2500)  # 30% errors, 2.5 s each
        calm = requests(rng, now - 400 * S, 100, 3, errors=0)
        await rt.receiver.ingest("traces", traces_request({"checkout-service": slow, "cart": calm}), "protobuf")
        queue = [(now - k * 60 * S, 40.0 + 30 * (5 - k)) for k in range(6)]  # up to 190 now
        await rt.receiver.ingest("metrics", gauge_request("checkout-service", "queue.depth", queue), "protobuf")
        await rt.receiver.ingest("metrics", gauge_request("cart", "queue.depth", [(now - 60 * S, 3.0)]), "protobuf")
        old = [(now - (40 - i) * 60 * S, 17, f"payment declined for order {i}", b"") for i in range(30)]
        new = [(now - (120 - 20 * i) * S, 17, f"connection pool exhausted after {i}ms wait", b"") for i in range(6)]
        cart_logs = [(now - (50 - i) * 60 * S, 9, f"cart {i} updated", b"") for i in range(50)]
        await rt.receiver.ingest("logs", logs_request("checkout-service", old + new), "protobuf")
        await rt.receiver.ingest("logs", logs_request("cart", cart_logs), "protobuf")

        rt.alerts.evaluate_now()
        assert rt.alerts.errors() == {}
        by_rule: dict[str, list[Alert]] = {}
        for a in rt.alerts.current():
            by_rule.setdefault(a.rule, []).append(a)
        assert set(by_rule) == {"p95", "queue", "error-logs", "new-errors", "burn"}
        for rule, alerts in by_rule.items():
            assert [a.labels["service"] for a in alerts] == ["checkout-service"], rule
            assert all(a.state == "firing" for a in alerts)
        assert by_rule["p95"][0].value == pytest.approx(2500, rel=0.01)
        assert "p95 latency" in by_rule["p95"][0].cause
        assert by_rule["queue"][0].value == pytest.approx(190) and "queue.depth" in by_rule["queue"][0].cause
        assert by_rule["error-logs"][0].value == pytest.approx(6 / 5)  # 6 error records in 5 minutes
        (pattern,) = by_rule["new-errors"]
        assert "connection pool exhausted" in pattern.cause and "payment declined" not in pattern.cause
        assert by_rule["burn"][0].labels["window"] == "1h/5m" and "burns its error budget" in by_rule["burn"][0].cause
        assert metrics.REGISTRY.get_sample_value("obsmcp_alerts", {"state": "firing"}) == 5
    finally:
        rt.close()


@pytest.mark.anyio
async def test_a_failing_rule_is_counted_and_does_not_stop_the_others(tmp_path: Path) -> None:
    rules = [
        {"name": "ghost-metric", "kind": "threshold", "metric": "no.such.metric", "threshold": 1},
        {**ERROR_RATE_RULE, "for": "0s"},
    ]
    rt = open_runtime(tmp_path, alerts=rules)
    try:
        now = time.time_ns()
        spans = requests(random.Random(1), now - 120 * S, 40, 3, errors=10)
        await rt.receiver.ingest("traces", traces_request({"checkout-service": spans}), "protobuf")
        before = metrics.REGISTRY.get_sample_value("obsmcp_alert_rule_evaluation_failures_total", {"kind": "threshold"})
        rt.alerts.evaluate_now()
        after = metrics.REGISTRY.get_sample_value("obsmcp_alert_rule_evaluation_failures_total", {"kind": "threshold"})
        assert (after or 0) - (before or 0) == 1
        assert "no metric named 'no.such.metric'" in rt.alerts.errors()["ghost-metric"]
        assert [a.rule for a in rt.alerts.current()] == ["checkout-errors"]
    finally:
        rt.close()


@pytest.mark.parametrize("engine", ["duckdb", "chdb"])
@pytest.mark.anyio
async def test_state_history_rules_and_silences_survive_a_restart_without_firing_again(
    tmp_path: Path, engine: str
) -> None:
    rule = {**ERROR_RATE_RULE, "for": "0s"}
    store = {"store": f"chdb://{tmp_path / 'clickhouse'}"} if engine == "chdb" else {}
    rt = open_runtime(tmp_path, in_memory=False, alerts=[rule], **store)
    try:
        now = time.time_ns()
        spans = requests(random.Random(1), now - 120 * S, 40, 3, errors=10)
        await rt.receiver.ingest("traces", traces_request({"checkout-service": spans}), "protobuf")
        rt.alerts.evaluate_now()
        (fired,) = rt.alerts.current()
        from obsmcp.alerting.model import AlertRule

        rt.alerts.create_rule(AlertRule(name="made-by-tool", kind="log_rate", threshold=100))
        silence = rt.alerts.add_silence("1h", {"service": "checkout-service"}, None, "deploy", "test")
    finally:
        rt.close()

    rt = open_runtime(tmp_path, in_memory=False, alerts=[rule], **store)
    try:
        assert rt.alerts.store.persistent
        recorder = Recorder()
        rt.alerts.add_notifier(recorder)
        (restored,) = rt.alerts.current()
        assert restored.fingerprint == fired.fingerprint and restored.state == "firing"
        assert restored.since == fired.since
        assert rt.alerts.evaluate_now() == []  # still firing: no second "firing" transition
        assert recorder.calls == []
        assert rt.alerts.current()[0].silenced_by == silence.id
        assert "made-by-tool" in {r.name for r in rt.alerts.rules()}
        assert [t.alert.state for t in rt.alerts.history(5)] == ["firing"]
    finally:
        rt.close()


@pytest.mark.anyio
async def test_a_silenced_alert_is_listed_but_not_notified(tmp_path: Path) -> None:
    rt = open_runtime(tmp_path, alerts=[{**ERROR_RATE_RULE, "for": "0s"}])
    try:
        now = time.time_ns()
        spans = requests(random.Random(1), now - 120 * S, 40, 3, errors=10)
        await rt.receiver.ingest("traces", traces_request({"checkout-service": spans}), "protobuf")
        recorder = Recorder()
        rt.alerts.add_notifier(recorder)
        silence = rt.alerts.add_silence("30m", {}, "checkout-errors", "known", "test")
        rt.alerts.evaluate_now()
        (alert,) = rt.alerts.current()
        assert alert.state == "firing" and alert.silenced_by == silence.id
        assert recorder.calls == []
    finally:
        rt.close()


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        ({"kind": "threshold", "signal": "error_rate"}, "needs threshold = <number>"),
        ({"kind": "threshold", "threshold": 1}, "needs exactly one of: metric"),
        ({"kind": "burn_rate", "slo": "checkout-avail"}, "slo = 'checkout-avail' names no SLO"),
        ({"kind": "threshold", "promql": "up", "threshold": 1}, "promql needs backend"),
        ({"kind": "threshold", "promql": "up", "threshold": 1, "backend": "logs"}, "promql runs on a Prometheus"),
        ({"kind": "log_rate"}, "needs threshold = <records per minute>"),
        ({"kind": "burn_rate", "slo": "*", "windows": [["2h", "5m", 10]]}, "windows from 5m, 30m, 1h"),
        ({"kind": "threshold", "signal": "error_rate", "threshold": 1, "for": "soon"}, "is not a duration"),
    ],
)
def test_a_rule_that_cannot_evaluate_fails_at_start_naming_rule_and_fix(
    rule: dict[str, Any], expected: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    monkeypatch.setenv("OBSMCP_ALERTS", json.dumps([{"name": "bad-rule", **rule}]))
    monkeypatch.setenv("OBSMCP_BACKENDS", json.dumps([{"name": "logs", "kind": "loki", "url": "http://127.0.0.1:9"}]))
    with pytest.raises(ConfigError) as e:
        load_settings()
    assert "alert rule 'bad-rule'" in str(e.value) and expected in str(e.value)


def test_alert_rules_load_from_toml_tables(tmp_path: Path) -> None:
    config = tmp_path / "obsmcp.toml"
    config.write_text(
        '[[alerts]]\nname = "checkout-p99"\nkind = "threshold"\nservice = "checkout"\nsignal = "latency_p99"\n'
        'threshold = 2000\nfor = "2m"\nalert_interval = "15s"\n'
    )
    with pytest.raises(ConfigError, match="unknown field 'alert_interval'"):
        load_settings(config)
    config.write_text(
        config.read_text()
        .replace('alert_interval = "15s"\n', "")
        .replace("[[alerts]]", 'alert_interval = "15s"\n[[alerts]]')
    )
    s = load_settings(config)
    assert s.alert_interval == "15s" and s.alerts[0].for_ == "2m" and s.alerts[0].signal == "latency_p99"


def _backfill(now_s: int) -> str:
    lines = ["# TYPE work_queue_depth gauge"]
    for t in range(now_s - 600, now_s - 5, 15):
        lines.append(f'work_queue_depth{{job="billing"}} 250 {t}')
        lines.append(f'work_queue_depth{{job="search"}} 3 {t}')
    return "\n".join(lines) + "\n"


@pytest.mark.anyio
async def test_a_promql_rule_fires_from_a_real_prometheus(
    tmp_path: Path, prometheus_binaries: PrometheusBinaries
) -> None:
    prom = start_prometheus(prometheus_binaries, tmp_path / "prom", [], backfill=_backfill(int(time.time())))
    try:
        rule = {
            "name": "queue-backlog",
            "kind": "threshold",
            "promql": "max by (job) (work_queue_depth)",
            "backend": "prom",
            "threshold": 100,
        }
        rt = open_runtime(
            tmp_path / "store", alerts=[rule], backends=[{"name": "prom", "kind": "prometheus", "url": prom.url}]
        )
        try:
            rt.alerts.evaluate_now()
            assert rt.alerts.errors() == {}
            (alert,) = rt.alerts.current()
            assert alert.labels["job"] == "billing" and alert.value == 250 and alert.state == "firing"
            assert "max by (job) (work_queue_depth) {job=billing} = 250 > 100" in alert.cause
        finally:
            rt.close()
    finally:
        prom.stop()


@pytest.mark.anyio
async def test_concurrent_on_demand_reads_run_one_round_not_one_each(tmp_path: Path) -> None:
    rt = open_runtime(tmp_path, alerts=[{**ERROR_RATE_RULE, "for": "0s"}])
    try:
        rounds: list[float] = []
        engine, run_round = rt.alerts, rt.alerts._evaluate_round

        def counted() -> list[AlertTransition]:
            rounds.append(time.monotonic())
            time.sleep(0.3)  # a slow round: the other callers wait for it on the lock
            return run_round()

        engine._evaluate_round = counted  # type: ignore[method-assign]
        callers = [threading.Thread(target=engine.ensure_fresh) for _ in range(4)]
        for t in callers:
            t.start()
        for t in callers:
            t.join(timeout=30)
        assert len(rounds) == 1 and engine.last_round is not None
    finally:
        rt.close()


@pytest.mark.anyio
async def test_a_stopped_engine_evaluates_no_more_rules(tmp_path: Path) -> None:
    rt = open_runtime(tmp_path, alerts=[{**ERROR_RATE_RULE, "for": "0s"}])
    try:
        now = time.time_ns()
        spans = requests(random.Random(1), now - 120 * S, 40, 3, errors=10)
        await rt.receiver.ingest("traces", traces_request({"checkout-service": spans}), "protobuf")
        rt.alerts.stop()  # e.g. during shutdown, while a round is under way
        assert rt.alerts.evaluate_now() == [] and rt.alerts.current() == []
        rt.alerts._stop.clear()  # the same round when not stopping fires
        assert [t.alert.rule for t in rt.alerts.evaluate_now()] == ["checkout-errors"]
    finally:
        rt.close()


@pytest.mark.anyio
async def test_two_callers_creating_the_same_rule_name_get_one_rule_and_one_refusal(tmp_path: Path) -> None:
    rt = open_runtime(tmp_path)
    try:
        engine = rt.alerts
        rule = AlertRule.model_validate({"name": "dup", "kind": "log_rate", "threshold": 5})
        other = rule.model_copy(update={"threshold": 99.0})
        dry_run = engine.dry_run
        raced: list[str] = []

        def racing_dry_run(r: AlertRule) -> list[Sample]:
            if not raced:  # another caller creates the same name while this dry run is under way
                raced.append(r.name)
                engine.create_rule(other)
            return dry_run(r)

        engine.dry_run = racing_dry_run  # type: ignore[method-assign,assignment]
        with pytest.raises(RuleError, match="a rule named 'dup' exists"):
            engine.create_rule(rule)
        (kept,) = [r for r in engine.rules() if r.name == "dup"]
        assert kept.threshold == 99.0  # the first caller's rule is not overwritten
    finally:
        rt.close()
