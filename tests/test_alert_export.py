"""`obsmcp alerts export`: SLOs and rules as Prometheus rules, checked by promtool and evaluated by a real
Prometheus scraping a target whose HTTP server histogram has known rates."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from obsmcp.alerting.cli import alerts_app
from tests.conftest import run_cli
from tests.prometheus import PrometheusBinaries, PrometheusServer, promtool, scrape_job, start_prometheus

# Every SLO kind obsmcp has, and every threshold form that has PromQL; log rules (skipped, with the reason).
CONFIG = """
[[backends]]
name = "prom"
kind = "prometheus"
url = "http://127.0.0.1:9"

[[slos]]
name = "checkout-availability"
service = "checkout"
sli = "availability"
objective = 99.9

[[slos]]
name = "checkout-latency"
service = "checkout"
sli = "latency"
objective = 99.0
threshold_ms = 250

[[slos]]
name = "checkout-prom-availability"
service = "checkout"
sli = "availability"
objective = 99.5
backend = "prom"

[[slos]]
name = "checkout-post-latency"
service = "checkout"
sli = "latency"
objective = 95
threshold_ms = 1000
operation = "POST /checkout"

[[slos]]
name = "payments-errors"
service = "payments"
sli = "error_rate"
objective = 99.5

[[slos]]
name = "orders-counted"
service = "orders"
sli = "availability"
objective = 99.0
source = "metric"
good_metric = "orders.ok"
total_metric = "orders.all"

[[slos]]
name = "orders-histogram"
service = "orders"
sli = "latency"
objective = 99.0
threshold_ms = 500
source = "metric"
metric = "http.server.request.duration"

[[alerts]]
name = "checkout-errors"
kind = "threshold"
service = "checkout"
signal = "error_rate"
threshold = 0.0001

[[alerts]]
name = "any-service-p99"
kind = "threshold"
signal = "latency_p99"
threshold = 2000
for = "5m"

[[alerts]]
name = "checkout-traffic-gone"
kind = "threshold"
service = "checkout"
signal = "request_rate"
op = "<"
threshold = 1

[[alerts]]
name = "queue-depth"
kind = "threshold"
metric = "queue.depth"
aggregation = "max"
group_by = ["queue.name"]
threshold = 1000

[[alerts]]
name = "raw-promql"
kind = "threshold"
backend = "prom"
promql = "sum(up)"
op = "<"
threshold = 1
severity = "critical"

[[alerts]]
name = "checkout-fast-burn"
kind = "burn_rate"
slo = "checkout-latency"
severity = "critical"
windows = [["1h", "5m", 14.4]]
labels = { team = "shop" }

[[alerts]]
name = "new-error-patterns"
kind = "log_pattern"
service = "checkout"

[[alerts]]
name = "error-logs"
kind = "log_rate"
threshold = 10
"""


def export(tmp_path: Path, config: str, *args: str) -> tuple[Any, Path]:
    cfg = tmp_path / "obsmcp.toml"
    cfg.write_text(config)
    out = tmp_path / "rules.yml"
    done = run_cli("alerts", "export", "--config", str(cfg), "--out", str(out), *args)
    return done, out


@pytest.fixture(scope="module")
def bins() -> PrometheusBinaries:
    from tests.prometheus import require_binaries

    return require_binaries()


def test_export_of_every_slo_kind_passes_promtool(tmp_path: Path, bins: PrometheusBinaries) -> None:
    done, out = export(tmp_path, CONFIG, "--default-slos", "search")
    assert done.returncode == 0, done.stderr
    checked = promtool(bins, "check", "rules", str(out))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    text = out.read_text()
    # 7 configured SLOs + search's 4 defaults, 9 recordings each (7 windows, objective, budget) + the 2 default
    # burn-rate alerts each; the custom burn rule; 5 threshold rules.
    found = int(checked.stdout.split("SUCCESS: ")[1].split()[0])
    assert found == 11 * 9 + 11 * 2 + 1 + 5, checked.stdout
    assert f"wrote 99 recording and {found - 99} alerting rules" in done.stderr
    for svc, name in (("checkout", "checkout-latency"), ("payments", "payments-errors"), ("orders", "orders-counted")):
        assert f'name: "obsmcp-slo-{svc}-{name}"' in text and f'slo: "{name}"' in text
    assert 'slo: "availability"' in text and 'service: "search"' in text  # the default SLOs asked for
    assert 'le=~\\"0\\\\\\\\.250*\\"' in text  # 250 ms, as the exporter writes the bucket boundary
    assert 'traces_span_metrics_calls_total{service_name=\\"payments\\"' in text
    assert "orders_ok_total" in text and 'http_request_method=\\"POST\\",http_route=\\"/checkout\\"' in text
    assert 'team: "shop"' in text


def test_log_rules_are_listed_as_skipped_with_the_reason(tmp_path: Path) -> None:
    done, out = export(tmp_path, CONFIG)
    assert done.returncode == 0, done.stderr
    text = out.read_text()
    for rule, kind in (("new-error-patterns", "log_pattern"), ("error-logs", "log_rate")):
        line = f"skipped rule '{rule}' ({kind}): log rules count log records in obsmcp's store"
        assert f"# {line}" in text
        assert f"obsmcp alerts: {line}" in done.stderr
    assert 'alert: "new-error-patterns"' not in text
    assert "2 skipped" in done.stderr


def test_export_with_a_bad_config_says_what_to_fix(tmp_path: Path) -> None:
    def run(config: str) -> Any:
        cfg = tmp_path / "bad.toml"
        cfg.write_text(config)
        return CliRunner().invoke(alerts_app, ["export", "--config", str(cfg), "--out", str(tmp_path / "r.yml")])

    done = run('[[slos]]\nname = "x"\nservice = "a"\nsli = "availability"\nobjective = 150\n')
    assert done.exit_code == 2
    assert "SLO 'x': field 'objective'" in done.stderr and "above 0 and below 100" in done.stderr

    done = run('[[alerts]]\nname = "b"\nkind = "burn_rate"\nslo = "nope"\n')
    assert done.exit_code == 2 and "alert rule 'b'" in done.stderr and "names no SLO" in done.stderr

    done = run('[[alerts]]\nname = "logs"\nkind = "log_rate"\nthreshold = 1\n')
    assert done.exit_code == 2 and "nothing to export" in done.stderr and "--default-slos" in done.stderr
    assert not (tmp_path / "r.yml").exists()

    done = run("[[slos]\nname = 1")
    assert done.exit_code == 2 and "is not valid TOML" in done.stderr

    # The installed command: one subprocess, so the message reaches a terminal without a traceback.
    missing = run_cli("alerts", "export", "--config", str(tmp_path / "absent.toml"))
    assert missing.returncode == 2 and "does not exist" in missing.stderr and "Traceback" not in missing.stderr


def test_check_lists_rules_webhooks_and_what_prometheus_gets(tmp_path: Path) -> None:
    cfg = tmp_path / "obsmcp.toml"
    secret = "T0SECRET/B0SECRET/abcdef"
    cfg.write_text(
        CONFIG + f'[[alert_webhooks]]\nname = "oncall"\nurl = "https://hooks.slack.com/services/{secret}"\n'
        'format = "slack"\n'
    )
    done = run_cli("alerts", "check", "--config", str(cfg))
    assert done.returncode == 0, done.stderr
    assert "checkout-errors (threshold, warning): error_rate of checkout over 5m > 0.0001" in done.stdout
    assert "slo-burn-page (burn_rate, critical) [default]" in done.stdout
    assert "oncall (slack) -> https://hooks.slack.com" in done.stdout and secret not in done.stdout
    assert "skipped rule 'error-logs' (log_rate)" in done.stdout


# -- a real Prometheus evaluates the exported rules ---------------------------------------------------------------

# Per second: 999.5 requests answered 200 (400 within 0.1 s, 700 within 0.25 s, 950 within 1 s) and 0.5 answered
# 500 (all slower than 1 s). So: availability error ratio 0.5 / 1000 = 0.0005; latency (250 ms) error ratio
# 1 - 700 / 1000 = 0.3.
RATES = {
    "200": {"0.1": 400.0, "0.25": 700.0, "1.0": 950.0, "+Inf": 999.5},
    "500": {"0.1": 0, "0.25": 0, "1.0": 0, "+Inf": 0.5},
}


class HistogramTarget:
    """Serves http_server_request_duration_seconds whose counters grow at RATES per second since start."""

    def __init__(self) -> None:
        started = time.time() - 60  # counters as if the service had run a minute already
        target = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = target.exposition(time.time() - started).encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server.server_address[1]}"

    @staticmethod
    def exposition(t: float) -> str:
        name = "http_server_request_duration_seconds"
        lines = [f"# TYPE {name} histogram"]
        for status, buckets in RATES.items():
            for le, rate in buckets.items():
                lines.append(f'{name}_bucket{{http_response_status_code="{status}",le="{le}"}} {rate * t:.9f}')
            lines.append(f'{name}_count{{http_response_status_code="{status}"}} {buckets["+Inf"] * t:.9f}')
            lines.append(f'{name}_sum{{http_response_status_code="{status}"}} {0.2 * buckets["+Inf"] * t:.9f}')
        return "\n".join(lines) + "\n"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def target() -> Iterator[HistogramTarget]:
    t = HistogramTarget()
    yield t
    t.close()


EVAL_CONFIG = """
[[slos]]
name = "checkout-availability"
service = "checkout"
sli = "availability"
objective = 99.9

[[slos]]
name = "checkout-latency"
service = "checkout"
sli = "latency"
objective = 99.0
threshold_ms = 250

[[alerts]]
name = "checkout-errors"
kind = "threshold"
service = "checkout"
signal = "error_rate"
threshold = 0.0001

[[alerts]]
name = "checkout-traffic-gone"
kind = "threshold"
service = "checkout"
signal = "request_rate"
op = "<"
threshold = 1
"""


def _value(prom: PrometheusServer, promql: str) -> float:
    result = prom.wait_for(promql, timeout=30)
    assert len(result) == 1, result
    return float(result[0]["value"][1])


@pytest.mark.slow
def test_a_real_prometheus_evaluates_the_export_to_the_hand_computed_ratios(
    tmp_path: Path, bins: PrometheusBinaries, target: HistogramTarget
) -> None:
    done, rules = export(tmp_path, EVAL_CONFIG)
    assert done.returncode == 0, done.stderr
    prom = start_prometheus(bins, tmp_path / "prom", [scrape_job("checkout", [target.address])], rule_files=[rules])
    try:
        ratio = "obsmcp_slo:sli_error:ratio_rate5m"
        availability = _value(prom, f'{ratio}{{slo="checkout-availability",service="checkout"}}')
        latency = _value(prom, f'{ratio}{{slo="checkout-latency",service="checkout"}}')
        assert availability == pytest.approx(0.0005, rel=1e-4)
        assert latency == pytest.approx(0.3, rel=1e-4)
        assert _value(prom, f'{ratio.replace("5m", "3d")}{{slo="checkout-latency"}}') == pytest.approx(0.3, rel=1e-4)
        assert _value(prom, 'obsmcp_slo:error_budget:ratio{slo="checkout-availability"}') == pytest.approx(0.001)

        # Every group evaluates without error once it has run.
        deadline = time.monotonic() + 30
        while True:
            groups = prom.api("rules")["groups"]
            rules_seen = [r for g in groups for r in g["rules"]]
            if (rules_seen and all(r["health"] == "ok" for r in rules_seen)) or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        bad = [(r["name"], r["health"], r.get("lastError")) for r in rules_seen if r["health"] != "ok"]
        assert not bad, bad
        assert {g["name"] for g in groups} == {
            "obsmcp-slo-checkout-checkout-availability",
            "obsmcp-slo-checkout-checkout-latency",
            "obsmcp-alerts",
        }

        # The latency SLO burns 30x its 1% budget: its page alert fires; availability (0.5x) pages nobody.
        expected = {("slo-burn-page", "checkout-latency"), ("slo-burn-ticket", "checkout-latency")}
        expected.add(("checkout-errors", ""))  # 0.0005 > 0.0001

        def alerts_of(result: list[dict[str, Any]]) -> set[tuple[str, str]]:
            return {(a["metric"]["alertname"], a["metric"].get("slo", "")) for a in result}

        firing = prom.wait_for('ALERTS{alertstate="firing"}', until=lambda r: expected <= alerts_of(r))
        names = alerts_of(firing)
        assert not any(slo == "checkout-availability" for _, slo in names)
        assert ("checkout-traffic-gone", "") not in names  # 1000 req/s is not < 1
        alerts = prom.api("alerts")["alerts"]
        errors = next(a for a in alerts if a["labels"]["alertname"] == "checkout-errors")
        assert float(errors["value"]) == pytest.approx(0.0005, rel=1e-4)
        assert errors["labels"]["service"] == "checkout"
    finally:
        prom.stop()
