"""Prometheus as a remote metric source, end to end: a real Prometheus server (Debian's package, started on
loopback with known series backfilled into its TSDB), obsmcp configured with it as a backend, and the tools
called through the MCP SDK client. Numbers are checked against Prometheus' own answer to the same question."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from mcp import Client

from obsmcp.config import ConfigError, Settings, load_settings
from obsmcp.runtime import Runtime
from obsmcp.sources.prometheus import PrometheusSource
from tests.conftest import call_tool, call_tool_error
from tests.prometheus import PrometheusBinaries, PrometheusServer, start_prometheus

pytestmark = [pytest.mark.slow, pytest.mark.anyio]

STEP_S = 15
SPAN_S = 90 * 60  # samples every 15 s over the last 90 minutes
BOUNDS = ("0.05", "0.1", "0.25", "0.5", "1", "+Inf")
# Observations per second per (job, route, status) and how they fall into BOUNDS (cumulative counts).
TRAFFIC = {
    ("checkout-service", "/cart", "200"): (10, (2, 5, 8, 9, 10, 10), 2.3),  # (per second, buckets, sum per second)
    ("checkout-service", "/cart", "500"): (1, (0, 0, 0, 0, 1, 1), 0.8),
    ("payments", "/pay", "200"): (5, (5, 5, 5, 5, 5, 5), 0.1),
}


def backfill(now_s: int, *, staging: bool = False) -> str:
    """OpenMetrics text: the standard HTTP server histogram and request counter for TRAFFIC, growing
    linearly, so every rate and quantile is known exactly."""
    t0 = now_s - SPAN_S
    times = range(t0, now_s - 30, STEP_S)
    lines: list[str] = []
    if staging:
        lines.append("# TYPE staging_queue_depth gauge")
        lines += [f'staging_queue_depth{{job="staging-worker"}} 7 {t}' for t in times]
        return "\n".join(lines) + "\n"
    lines.append("# TYPE http_server_requests counter")
    for (job, route, status), (per_s, _, _) in TRAFFIC.items():
        extra = ',service="payments-api"' if job == "payments" else ""
        for t in times:
            lines.append(
                f'http_server_requests_total{{job="{job}"{extra},route="{route}",status="{status}"}} '
                f"{per_s * (t - t0)} {t}"
            )
    lines.append("# TYPE http_server_request_duration_seconds histogram")
    for (job, route, status), (_, buckets, sum_per_s) in TRAFFIC.items():
        extra = ',service="payments-api"' if job == "payments" else ""
        labels = f'job="{job}"{extra},route="{route}",status="{status}"'
        for t in times:
            n = t - t0
            for le, c in zip(BOUNDS, buckets, strict=True):
                lines.append(f'http_server_request_duration_seconds_bucket{{{labels},le="{le}"}} {c * n} {t}')
            lines.append(f"http_server_request_duration_seconds_count{{{labels}}} {buckets[-1] * n} {t}")
            lines.append(f"http_server_request_duration_seconds_sum{{{labels}}} {round(sum_per_s * n, 3)} {t}")
    return "\n".join(lines) + "\n"


RULES = """groups:
  - name: checkout
    rules:
      - alert: CheckoutErrorsHigh
        expr: vector(1)
        labels: {severity: page}
        annotations: {summary: "checkout 5xx above 5%"}
"""


@pytest.fixture(scope="module")
def proms(
    prometheus_binaries: PrometheusBinaries, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    now = int(time.time())
    work = tmp_path_factory.mktemp("prom")
    rules = work / "rules.yml"
    rules.write_text(RULES)
    prod = start_prometheus(prometheus_binaries, work / "prod", [], backfill=backfill(now), rule_files=[rules])
    staging = start_prometheus(prometheus_binaries, work / "staging", [], backfill=backfill(now, staging=True))
    try:
        yield {"prod": prod, "staging": staging, "now": now}
    finally:
        prod.stop()
        staging.stop()


def backends(**urls: str) -> list[dict[str, Any]]:
    return [{"name": name, "kind": "prometheus", "url": url} for name, url in urls.items()]


class Served:
    def __init__(self, tmp_path: Path, backend_list: list[dict[str, Any]]) -> None:
        self.rt = Runtime.open(
            Settings(data_dir=tmp_path, backends=backend_list, otlp_port=0), in_memory=True, for_agents=True
        )

    def close(self) -> None:
        self.rt.ctx.sources.close()  # the backends' clients are process-wide: leave no circuit behind
        self.rt.close()


@pytest.fixture
def served(tmp_path: Path, proms: dict[str, Any]) -> Iterator[Served]:
    s = Served(tmp_path, backends(prod=proms["prod"].url, staging=proms["staging"].url))
    try:
        yield s
    finally:
        s.close()


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")


def window(proms: dict[str, Any]) -> tuple[int, int]:
    end = (proms["now"] - 120) // 60 * 60
    return end - 3600, end


def by_labels(series: list[dict[str, Any]]) -> dict[tuple[tuple[str, str], ...], list[float | None]]:
    return {tuple(sorted(s["labels"].items())): [p["v"] for p in s["points"]] for s in series}


def prometheus_answer(prom: PrometheusServer, promql: str, start: int, end: int, step: int) -> dict[Any, list[float]]:
    return {
        tuple(sorted((k, v) for k, v in r["metric"].items() if k != "__name__")): [float(v) for _, v in r["values"]]
        for r in prom.query_range(promql, start, end, step=f"{step}s")
    }


def assert_same_numbers(ours: dict[Any, list[float | None]], theirs: dict[Any, list[float]]) -> None:
    assert set(ours) == set(theirs)
    for key, values in theirs.items():
        assert len(ours[key]) == len(values), key
        for a, b in zip(ours[key], values, strict=True):
            assert a == pytest.approx(b, rel=1e-3), (key, ours[key], values)


async def test_list_metrics_shows_prometheus_metrics_with_services_and_labels(served: Served) -> None:
    async with Client(served.rt.mcp) as client:
        r = await call_tool(client, "list_metrics", {"backend": "prod"})
        text = r.content[0].text
        metrics = {m["name"]: m for m in r.structured_content["metrics"]}
        hist = metrics["http_server_request_duration_seconds"]  # _bucket/_sum/_count folded into one
        assert hist["type"] == "histogram"
        assert hist["services"] == ["checkout-service", "payments", "payments-api"]
        assert hist["attribute_keys"] == ["route", "status"]
        assert metrics["http_server_requests_total"]["type"] == "counter"
        assert "http_server_request_duration_seconds_bucket" not in metrics
        assert "from backend prod" in text and "answered by backend prod (prometheus)" in text

        again = await call_tool(client, "list_metrics", {"backend": "prod"})
        assert any(n.startswith("cached, ") and n.endswith(" s old") for n in again.structured_content["notes"])


async def test_query_metrics_rate_by_route_matches_prometheus(served: Served, proms: dict[str, Any]) -> None:
    start, end = window(proms)
    async with Client(served.rt.mcp) as client:
        r = await call_tool(
            client,
            "query_metrics",
            {
                "backend": "prod",
                "metric": "http_server_requests_total",
                "service": "checkout",  # the job label is checkout-service
                "aggregation": "rate",
                "group_by": ["route"],
                "start": iso(start),
                "end": iso(end),
                "step": "5m",
            },
        )
    ours = by_labels(r.structured_content["series"])
    theirs = prometheus_answer(
        proms["prod"],
        'sum by (route) (rate(http_server_requests_total{job="checkout-service"}[300s]))',
        start,
        end,
        300,
    )
    assert_same_numbers(ours, theirs)
    assert ours[(("route", "/cart"),)][-1] == pytest.approx(11.0)  # 10 ok + 1 failed per second
    assert 'job="checkout-service"' in r.content[0].text


async def test_query_metrics_p95_from_the_histogram_matches_prometheus(served: Served, proms: dict[str, Any]) -> None:
    start, end = window(proms)
    async with Client(served.rt.mcp) as client:
        r = await call_tool(
            client,
            "query_metrics",
            {
                "metric": "http_server_request_duration_seconds",  # no backend: prod is the first configured
                "service": "checkout-service",
                "aggregation": "p95",
                "start": iso(start),
                "end": iso(end),
                "step": "5m",
            },
        )
    ours = by_labels(r.structured_content["series"])
    theirs = prometheus_answer(
        proms["prod"],
        'histogram_quantile(0.95, sum by (le) (rate(http_server_request_duration_seconds_bucket{job="checkout-service"}'
        "[300s])))",
        start,
        end,
        300,
    )
    assert_same_numbers(ours, theirs)
    # 11 requests/s, 9 of them at or under 0.5 s and 2 in (0.5, 1]: rank 0.95 * 11 interpolated in that bucket.
    assert ours[()][-1] == pytest.approx(0.5 + 0.5 * (0.95 * 11 - 9) / 2, rel=1e-3)
    assert "answered by backend prod" in r.content[0].text


async def test_raw_promql_runs_and_a_bad_one_quotes_prometheus(served: Served, proms: dict[str, Any]) -> None:
    start, end = window(proms)
    args = {"backend": "prod", "start": iso(start), "end": iso(end), "step": "5m"}
    bad = "sum(rate(http_server_requests_total[5m]"
    direct = httpx.get(
        f"{proms['prod'].url}/api/v1/query_range", params={"query": bad, "start": start, "end": end, "step": 300}
    ).json()
    async with Client(served.rt.mcp) as client:
        r = await call_tool(client, "query_metrics", {**args, "promql": "sum(rate(http_server_requests_total[5m]))"})
        error = await call_tool_error(client, "query_metrics", {**args, "promql": bad})
    (series,) = r.structured_content["series"]
    assert series["last"] == pytest.approx(16.0)  # 11 checkout + 5 payments per second
    assert direct["status"] == "error"
    assert direct["error"] in error
    assert "backend prod (Prometheus) rejected the query" in error and "Fix the PromQL" in error


async def test_unknown_backend_names_the_configured_ones(served: Served) -> None:
    async with Client(served.rt.mcp) as client:
        error = await call_tool_error(client, "list_metrics", {"backend": "prometheus-prd"})
    assert "no backend named 'prometheus-prd'" in error
    assert "prod (prometheus)" in error and "staging (prometheus)" in error and "'store'" in error


async def test_two_instances_are_routed_by_name(served: Served) -> None:
    async with Client(served.rt.mcp) as client:
        staging = await call_tool(client, "list_metrics", {"backend": "staging"})
        default = await call_tool(client, "list_metrics", {})
        store = await call_tool(client, "list_metrics", {"backend": "store"})
    assert [m["name"] for m in staging.structured_content["metrics"]] == ["staging_queue_depth"]
    assert "http_server_requests_total" in {m["name"] for m in default.structured_content["metrics"]}
    assert "also serving metrics: staging" in default.content[0].text
    assert store.structured_content["metrics"] == []  # the store is still there, and empty


async def test_backend_status_shows_each_backend_healthy_with_latency(served: Served) -> None:
    async with Client(served.rt.mcp) as client:
        await call_tool(client, "list_metrics", {"backend": "prod"})
        r = await call_tool(client, "backend_status", {})
    rows = {b["name"]: b for b in r.structured_content["backends"]}
    assert set(rows) == {"prod", "staging"}
    prod = rows["prod"]
    assert prod["healthy"] is True and prod["circuit"] == "closed" and prod["check"] == "ok"
    assert prod["recent_requests"] >= 2 and prod["p50_ms"] is not None and prod["error_rate"] == 0
    assert "2 of 2 backends healthy" in r.content[0].text


async def test_a_stopped_prometheus_gives_a_clear_error_then_opens_its_circuit(
    tmp_path: Path, prometheus_binaries: PrometheusBinaries
) -> None:
    prom = start_prometheus(prometheus_binaries, tmp_path / "doomed", [])
    s = Served(tmp_path / "data", backends(doomed=prom.url))
    try:
        async with Client(s.rt.mcp) as client:
            assert (await call_tool(client, "backend_status", {})).structured_content["backends"][0]["healthy"]
            prom.stop()
            errors = []
            for _ in range(5):
                errors.append(await call_tool_error(client, "query_metrics", {"promql": "up"}))
                if "unavailable, retry in" in errors[-1]:
                    break
            status = await call_tool(client, "backend_status", {})
    finally:
        s.close()
        prom.stop()
    assert f"could not connect to doomed at {prom.url}" in errors[0]
    assert "backend doomed unavailable, retry in" in errors[-1]
    (row,) = status.structured_content["backends"]
    assert row["circuit"] == "open" and row["healthy"] is False and row["retry_in_s"] > 0
    assert "UNHEALTHY" in status.content[0].text and "circuit open" in status.content[0].text


async def test_alert_rules_and_firing_alerts_come_from_the_api(served: Served, proms: dict[str, Any]) -> None:
    proms["prod"].wait_for('ALERTS{alertname="CheckoutErrorsHigh", alertstate="firing"}')
    source = served.rt.ctx.sources.get("prod")
    assert isinstance(source, PrometheusSource)
    (rule,) = served.rt.ctx.sources.call(source.alert_rules())
    assert (rule.name, rule.group, rule.expr, rule.labels) == ("CheckoutErrorsHigh", "checkout", "vector(1)",
                                                              {"severity": "page"})  # fmt: skip
    alerts = served.rt.ctx.sources.call(source.alerts())
    assert [(a.name, a.state, a.annotations["summary"]) for a in alerts] == [
        ("CheckoutErrorsHigh", "firing", "checkout 5xx above 5%")
    ]


async def test_remote_arguments_are_published_only_with_backends(served: Served, tmp_path: Path) -> None:
    async with Client(served.rt.mcp) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
    assert "backend_status" in tools
    assert {"backend", "promql"} <= set(tools["query_metrics"].input_schema["properties"])
    plain = Runtime.open(Settings(data_dir=tmp_path / "plain", otlp_port=0), in_memory=True, for_agents=True)
    try:
        async with Client(plain.mcp) as client:
            tools = {t.name: t for t in (await client.list_tools()).tools}
            error = await call_tool_error(client, "query_metrics", {"promql": "up"})
    finally:
        plain.close()
    assert "backend_status" not in tools
    assert "backend" not in tools["list_metrics"].input_schema["properties"]
    assert tools["query_metrics"].input_schema["required"] == ["metric"]
    assert "promql needs a Prometheus backend" in error


def test_bad_backend_configuration_fails_naming_the_backend_and_field(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PROMETHEUS_ENDPOINT", raising=False)
    with pytest.raises(ConfigError, match=r"backend 'prod' \(\[\[backends\]\] #1\): prometheus needs url"):
        load_settings(backends=[{"name": "prod", "kind": "prometheus"}])
    with pytest.raises(ConfigError, match=r"backend 'prod' .*unknown field 'uri'"):
        load_settings(backends=[{"name": "prod", "kind": "prometheus", "uri": "http://x:9090"}])
    monkeypatch.setenv("PROMETHEUS_URL", "http://127.0.0.1:9090")
    with pytest.raises(ConfigError, match="given twice, by \\[\\[backends\\]\\] #1 and by the PROMETHEUS_URL"):
        load_settings(backends=[{"name": "prometheus", "kind": "prometheus", "url": "http://x:9090"}])
    (from_env,) = load_settings().backends
    assert (from_env.name, from_env.kind, from_env.url) == ("prometheus", "prometheus", "http://127.0.0.1:9090")


async def test_red_figures_come_from_the_standard_http_server_histogram(served: Served, proms: dict[str, Any]) -> None:
    start, end = window(proms)
    source = served.rt.ctx.sources.get("prod")
    assert isinstance(source, PrometheusSource)
    red = {r.service: r for r in served.rt.ctx.sources.call(source.red(start * 10**9, end * 10**9))}
    checkout, payments = red["checkout-service"], red["payments"]
    assert checkout.metric == "http_server_request_duration_seconds"
    assert checkout.rate_per_s == pytest.approx(11.0)
    assert checkout.error_rate == pytest.approx(1 / 11)
    assert checkout.p50_ms == pytest.approx(125.0)  # rank 5.5 of 11: inside (0.1, 0.25], 0.5 of its 3
    assert checkout.p95_ms == pytest.approx(862.5)
    (direct,) = proms["prod"].query(
        "histogram_quantile(0.99, sum by (le) "
        '(rate(http_server_request_duration_seconds_bucket{job="checkout-service"}[3600s])))',
        at=end,
    )
    assert checkout.p99_ms == pytest.approx(float(direct["value"][1]) * 1000)
    assert payments.rate_per_s == pytest.approx(5.0)
    assert payments.error_rate == 0.0
    assert payments.p95_ms == pytest.approx(47.5)


def test_backends_come_from_toml_tables_and_obsmcp_backends(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("PROMETHEUS_URL", "PROMETHEUS_ENDPOINT", "OBSMCP_BACKENDS"):
        monkeypatch.delenv(var, raising=False)
    config = tmp_path / "obsmcp.toml"
    config.write_text(
        '[[backends]]\nname = "prod"\nkind = "prometheus"\nurl = "http://prom-prod:9090"\n\n'
        '[[backends]]\nname = "staging"\nkind = "prometheus"\nurl = "http://prom-staging:9090"\nsignals = []\n'
    )
    prod, staging = load_settings(config).backends
    assert (prod.name, prod.routed_signals, staging.name, staging.routed_signals) == (
        "prod",
        ("metrics",),
        "staging",
        (),
    )
    monkeypatch.setenv("OBSMCP_BACKENDS", '[{"name": "vm", "kind": "prometheus", "url": "http://vm:8428"}]')
    (vm,) = load_settings().backends
    assert (vm.name, vm.url) == ("vm", "http://vm:8428")


def test_slo_events_count_good_requests_from_the_histogram(served: Served, proms: dict[str, Any]) -> None:
    start, end = window(proms)
    source = served.rt.ctx.sources.get("prod")
    assert isinstance(source, PrometheusSource)

    def events(sli: str, threshold_ms: float | None = None) -> tuple[float, float]:
        return served.rt.ctx.sources.call(
            source.slo_events("checkout-service", sli, start * 10**9, end * 10**9, threshold_ms)
        )

    good, total = events("availability")
    assert good == pytest.approx(10 * 3600, rel=1e-3)
    assert total == pytest.approx(11 * 3600, rel=1e-3)
    assert events("latency", 250)[0] == pytest.approx(8 * 3600, rel=1e-3)  # a bucket bound: exact
    assert events("latency", 300)[0] == pytest.approx(8.2 * 3600, rel=1e-3)  # 1/5 into (0.25, 0.5]


def test_list_services_shows_red_figures_from_prometheus_for_services_the_store_lacks(
    served: Served, proms: dict[str, Any]
) -> None:
    from obsmcp.tools.services import list_services

    start, end = window(proms)
    res, text = list_services(served.rt.ctx, iso(start), iso(end))
    rows = {s.service: s for s in res.services}
    checkout = rows["checkout-service"]  # known only to Prometheus: the store is empty
    assert checkout.backends == {"prod": "checkout-service"}
    assert checkout.red_from == "prod (http_server_request_duration_seconds)"
    assert checkout.request_rate_per_s == pytest.approx(11.0)
    assert checkout.error_rate == pytest.approx(1 / 11, abs=1e-4)
    assert checkout.p95_ms == pytest.approx(862.5)
    line = next(line for line in text.splitlines() if line.startswith("checkout-service:"))
    assert "from prod (http_server_request_duration_seconds), not in obsmcp's store" in line, line
