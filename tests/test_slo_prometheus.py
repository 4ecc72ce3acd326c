"""slo_report counted by Prometheus: SLOs with `backend = "<prometheus>"`, and the default SLOs of a service only
Prometheus knows, from the standard HTTP server histogram of a real Prometheus (known series backfilled into
its TSDB), through the MCP SDK client.

The series grow linearly between 15 s samples and every window ends on a sample, so Prometheus 2's increase()
over a window is the exact difference of the samples at its edges (no extrapolation): the expected SLIs, budgets
and burn rates below are worked out by hand from the traffic tables.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from mcp import Client

from obsmcp.config import ConfigError, Settings, load_settings
from obsmcp.runtime import Runtime
from obsmcp.timerange import format_ns
from tests.prometheus import PrometheusBinaries, start_prometheus

pytestmark = [pytest.mark.slow, pytest.mark.anyio]

STEP_S = 15
BOUNDS = ("0.05", "0.1", "0.25", "0.5", "1", "+Inf")
# Requests per 15 s step, cumulative over BOUNDS, per (job, status), in two phases: from 2 h to 30 min before
# END, then the last 30 min (END is the last sample). 10 requests/s throughout for checkout-service.
CHECKOUT = {
    "200": ((56, 98, 126, 140, 140, 140), (24, 48, 72, 96, 120, 120)),
    "500": ((0, 0, 0, 0, 10, 10), (0, 0, 0, 0, 30, 30)),
}
# payments: 5 requests/s, 1 in 75 failing, all within 1 s, for the last 2 h.
PAYMENTS = {"200": (74, 74, 74, 74, 74, 74), "500": (0, 0, 0, 1, 1, 1)}
# quiet-service: 1 request/s (1 in 15 failing) from 3 h to 2 h before END, nothing since.
QUIET = {"200": (14, 14, 14, 14, 14, 14), "500": (0, 0, 0, 1, 1, 1)}


def _lines(job: str, status: str, times: list[int], values: list[tuple[int, ...]]) -> list[str]:
    labels = f'job="{job}",route="/",status="{status}"'
    out: list[str] = []
    for t, buckets in zip(times, values, strict=True):
        for le, c in zip(BOUNDS, buckets, strict=True):
            out.append(f'http_server_request_duration_seconds_bucket{{{labels},le="{le}"}} {c} {t}')
        out.append(f"http_server_request_duration_seconds_count{{{labels}}} {buckets[-1]} {t}")
        out.append(f"http_server_request_duration_seconds_sum{{{labels}}} {buckets[-1] * 0.1:.1f} {t}")
    return out


def backfill(end: int) -> str:
    """OpenMetrics text of the three services' HTTP server histograms (cumulative counts per sample)."""
    t0 = end - 7200
    times = list(range(t0, end + 1, STEP_S))  # 481 samples, the last at END
    lines = ["# TYPE http_server_request_duration_seconds histogram"]
    for status, (a, b) in CHECKOUT.items():
        values = [
            tuple(x * min(n, 360) + y * max(0, n - 360) for x, y in zip(a, b, strict=True)) for n in range(len(times))
        ]
        lines += _lines("checkout-service", status, times, values)
    for status, per_step in PAYMENTS.items():
        lines += _lines("payments", status, times, [tuple(x * n for x in per_step) for n in range(len(times))])
    quiet_times = list(range(end - 10800, end - 7200 + 1, STEP_S))
    for status, per_step in QUIET.items():
        lines += _lines("quiet-service", status, quiet_times, [tuple(x * n for x in per_step) for n in range(241)])
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def prom(prometheus_binaries: PrometheusBinaries, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    end = (int(time.time()) - 60) // 60 * 60
    server = start_prometheus(prometheus_binaries, tmp_path_factory.mktemp("prom"), [], backfill=backfill(end))
    server.end = end  # type: ignore[attr-defined]
    try:
        yield server
    finally:
        server.stop()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


SLOS: list[dict[str, Any]] = [
    {"name": "checkout-availability", "service": "checkout-service", "sli": "availability", "objective": 99.0,
     "window": "1d", "backend": "prod"},
    {"name": "checkout-fast", "service": "checkout-service", "sli": "latency", "objective": 90.0, "window": "1d",
     "threshold_ms": 250, "backend": "prod"},
    {"name": "checkout-elsewhere", "service": "checkout-service", "sli": "availability", "objective": 99.0,
     "window": "1d", "backend": "down"},
    {"name": "quiet-availability", "service": "quiet-service", "sli": "availability", "objective": 99.0,
     "window": "1d", "backend": "prod"},
]  # fmt: skip


@pytest.fixture
def rt(tmp_path: Path, prom: Any) -> Iterator[Runtime]:
    backends = [
        {"name": "prod", "kind": "prometheus", "url": prom.url},
        {"name": "down", "kind": "prometheus", "url": f"http://127.0.0.1:{_closed_port()}", "connect_timeout_s": 1},
    ]
    runtime = Runtime.open(
        Settings(data_dir=tmp_path, backends=backends, slos=SLOS, otlp_port=0), in_memory=True, for_agents=True
    )
    try:
        yield runtime
    finally:
        runtime.ctx.sources.close()  # the backends' clients are process-wide: leave no circuit behind
        runtime.close()


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")


async def report(rt: Runtime, args: dict[str, Any]) -> tuple[dict[str, Any], str]:
    async with Client(rt.mcp) as client:
        r = await client.call_tool("slo_report", args)
    text = r.content[0].text  # type: ignore[union-attr]
    assert not r.is_error, text
    assert r.structured_content is not None
    return r.structured_content, text


def slo(res: dict[str, Any], name: str) -> dict[str, Any]:
    return next(s for g in res["services"] for s in g["slos"] if s["name"] == name)


def approx(x: float) -> Any:
    """Equal to the report's precision: it rounds percentages, burn rates and seconds to 4 or 3 decimals."""
    return pytest.approx(x, rel=0, abs=5.1e-4)


async def test_configured_slos_are_counted_by_their_prometheus_backend(rt: Runtime, prom: Any) -> None:
    end = prom.end
    res, text = await report(rt, {"service": "checkout", "start": iso(end - 3600), "end": iso(end)})
    assert [g["service"] for g in res["services"]] == ["checkout-service"]  # named by Prometheus, not the store

    # Availability, 99% over 1 d. Bad requests per second: 2/3 until 30 min before END, 2 since; 10 requests/s.
    a = slo(res, "checkout-availability")
    assert a["source"] == "backend prod (Prometheus HTTP server histogram)"
    # 5m: 600 of 3000 bad = 20% = burn 20; 30m the same; 1h: 3600 + 1200 of 36000 = burn 13.33; 6h and longer
    # hold the whole 2 h: 3600 + 3600 of 72000 = burn 10.
    assert a["burn_rates"] == {k: approx(v) for k, v in
                               {"5m": 20, "30m": 20, "1h": 40 / 3, "6h": 10, "1d": 10, "3d": 10}.items()}  # fmt: skip
    assert (a["events_range"], a["bad_range"]) == (36000, 4800)
    assert a["sli_range_pct"] == approx(100 * (1 - 4800 / 36000))
    assert (a["events_window"], a["bad_window"], a["sli_window_pct"]) == (72000, 7200, approx(90.0))
    # 2 h of data (estimated at the 1 h rate, which is the whole-time rate here) of a 1 d window, at burn 10:
    # 10 x 2/24 of the budget spent.
    assert a["window_coverage_pct"] == approx(100 * 7200 / 86400)
    assert a["budget_consumed_pct"] == approx(100 * 10 * 7200 / 86400)
    assert a["budget_remaining_pct"] == approx(100 * (1 - 10 * 7200 / 86400))
    assert a["time_to_exhaustion_s"] == approx((1 - 10 * 7200 / 86400) * 86400 / (40 / 3))
    assert a["data_since"] == format_ns((end - 7200) * 10**9)
    # Page: 6 h and 30 m both burn above 6 (1 h at 13.3 stays under the 14.4 page with 5 m); 3 d and 6 h above 1.
    assert a["alert"] == "page" and a["firing"] == ["page: 6h and 30m burn > 6", "ticket: 3d and 6h burn > 1"]
    assert a["compliance"] == "at risk"

    # Latency <= 250 ms (a bucket bound), 90% over 1 d: 126 of 150 per step fast, then 72 of 150.
    f = slo(res, "checkout-fast")
    assert f["burn_rates"] == {k: approx(v) for k, v in
                               {"5m": 5.2, "30m": 5.2, "1h": 3.4, "6h": 2.5, "1d": 2.5, "3d": 2.5}.items()}  # fmt: skip
    assert f["sli_range_pct"] == approx(100 * (1 - (120 * 78 + 120 * 24) / 36000))
    assert f["sli_window_pct"] == approx(75.0)
    assert f["budget_consumed_pct"] == approx(100 * 2.5 * 7200 / 86400)
    assert f["alert"] == "ticket" and f["firing"] == ["ticket: 3d and 6h burn > 1"]

    # A backend that is down: that SLO says why, the others answered.
    down = slo(res, "checkout-elsewhere")
    assert down["alert"] == "no data" and down["compliance"] == "no data"
    assert down["burn_rates"] == dict.fromkeys(("5m", "30m", "1h", "6h", "1d", "3d"))
    assert any(n.startswith("backend down (Prometheus HTTP server histogram) failed: ") for n in down["notes"])

    assert res["services"][0]["alert"] == "page"
    assert "checkout-availability [at risk, page]: availability from backend prod (Prometheus HTTP server " in text
    assert "burn 5m 20 30m 20 1h 13.3 6h 10 1d 10 3d 10" in text
    assert "prod: live, answers cached up to 15 s" in text  # freshness
    assert "data span ~2h00m (Prometheus gives no start: estimated at the 1h00m request rate)" in text


async def test_windows_without_prometheus_data_are_no_data_not_zero(rt: Runtime, prom: Any) -> None:
    end = prom.end
    res, text = await report(rt, {"service": "quiet-service", "start": iso(end - 3600), "end": iso(end)})
    q = slo(res, "quiet-availability")
    # Its requests stopped 2 h before END: nothing in the range and the 5m..1h windows.
    assert q["sli_range_pct"] is None and q["events_range"] == 0
    assert q["burn_rates"]["5m"] is None and q["burn_rates"]["30m"] is None and q["burn_rates"]["1h"] is None
    # 6 h and longer hold its hour of traffic, 1 in 15 failing: burn (1/15) / 1% = 6.67. The series ends 2 h
    # before the window does, so Prometheus extrapolates half a sample interval past its last sample (7.5 s of
    # 3600 s): 3600 x 3607.5/3600 requests, 240 x 3607.5/3600 bad.
    assert q["burn_rates"]["6h"] == approx(100 / 15) and q["burn_rates"]["3d"] == approx(100 / 15)
    assert (q["events_window"], q["bad_window"]) == (3608, 240)  # 3607.5 and 240.5, rounded to even
    assert any("no data from prod in the 5m, 30m, 1h burn windows" in n for n in q["notes"])
    # Every burn window from 6 h on holds all of it: its data span is taken as 6 h (an upper bound).
    assert q["window_coverage_pct"] == approx(25.0)
    assert q["budget_consumed_pct"] == approx(100 * (100 / 15) * 0.25)
    assert q["compliance"] == "violated" and q["alert"] == "ticket"
    assert "1h -" in text  # rendered as unknown, never as 0


async def test_a_service_only_prometheus_knows_gets_the_default_slos_from_it(rt: Runtime, prom: Any) -> None:
    end = prom.end
    res, text = await report(rt, {"service": "payments", "start": iso(end - 3600), "end": iso(end)})
    (group,) = res["services"]
    assert group["service"] == "payments"
    rows = {s["name"]: s for s in group["slos"]}
    assert set(rows) == {"availability", "latency-p95", "latency-p99", "error-rate"}
    avail = rows["availability"]
    assert avail["defined_in"] == "default" and avail["source"] == "backend prod (Prometheus HTTP server histogram)"
    # 1 in 75 failing against 99.9%: burn 13.33 in every window; 2 h of a 30 d window spent at that rate.
    assert avail["burn_rates"] == dict.fromkeys(("5m", "30m", "1h", "6h", "1d", "3d"), approx(1000 / 75))
    assert avail["sli_range_pct"] == approx(100 * 74 / 75) and avail["events_range"] == 18000
    assert avail["budget_consumed_pct"] == approx(100 * (1000 / 75) * 7200 / (30 * 86400))
    assert avail["alert"] == "page"
    # Every request is within 1 s: latency under 2 s and 5 s is met with burn 0.
    for name in ("latency-p95", "latency-p99"):
        assert rows[name]["sli_window_pct"] == approx(100.0) and rows[name]["burn_rates"]["1h"] == 0
    # error_rate counts spans, which the histogram has not: no data, and the note says why.
    err = rows["error-rate"]
    assert err["source"] == "spans" and err["compliance"] == "no data"
    assert any("counts every span of payments" in n for n in err["notes"])
    assert "PAGE payments" in text


async def test_without_a_service_the_prometheus_slos_services_are_reported(rt: Runtime, prom: Any) -> None:
    end = prom.end
    res, _ = await report(rt, {"start": iso(end - 3600), "end": iso(end)})
    # checkout-service has requests in the range; quiet-service none (and no spans): not "with traffic".
    # payments has no SLO of its own: its defaults come only when it is named.
    assert [g["service"] for g in res["services"]] == ["checkout-service"]


def _toml(tmp_path: Path, slo_table: str, backend_kind: str = "prometheus") -> Path:
    path = tmp_path / "obsmcp.toml"
    path.write_text(
        f'[[backends]]\nname = "prod"\nkind = "{backend_kind}"\nurl = "http://127.0.0.1:9"\n\n'
        '[[slos]]\nname = "checkout-availability"\nservice = "checkout"\nobjective = 99.9\n' + slo_table
    )
    return path


@pytest.mark.parametrize(
    ("table", "kind", "expected"),
    [
        ('sli = "availability"\nbackend = "prom"\n', "prometheus",
         "SLO 'checkout-availability': backend = 'prom' names no configured backend (Prometheus backends: prod)"),
        ('sli = "availability"\nbackend = "prod"\n', "loki",
         "SLO 'checkout-availability': backend = 'prod' is a loki backend"),
        ('sli = "error_rate"\nbackend = "prod"\n', "prometheus",
         "SLO 'checkout-availability': field 'backend': a Prometheus HTTP server histogram gives availability or "
         "latency, not error_rate"),
    ],
)  # fmt: skip
def test_an_slo_backend_is_checked_at_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, table: str, kind: str, expected: str
) -> None:
    monkeypatch.delenv("PROMETHEUS_URL", raising=False)
    with pytest.raises(ConfigError) as e:
        load_settings(_toml(tmp_path, table, kind), data_dir=tmp_path)
    assert expected in str(e.value)
    assert "(settings)" not in str(e.value)
