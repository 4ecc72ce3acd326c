"""render_chart: real PNGs (signature, size, dimensions) as MCP image content, clear errors, and the CLI file."""

from __future__ import annotations

import base64
import io
import struct
from pathlib import Path
from typing import Any

import pytest
from mcp import Client
from mcp.types import ImageContent, TextContent
from PIL import Image

from obsmcp.analysis.charts import Line, Panel, Shade, Threshold, render_histogram, render_panels
from obsmcp.config import Settings
from obsmcp.runtime import Runtime
from obsmcp.timerange import format_ns
from obsmcp.tools.charts import render_chart
from obsmcp.tools.context import ToolInputError
from tests.conftest import call_tool_error, run_cli

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MIN = 60 * 10**9


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == PNG_SIGNATURE
    width, height = struct.unpack(">II", data[16:24])  # the IHDR chunk
    return width, height


def test_panels_and_histograms_are_small_readable_pngs() -> None:
    times = [i * MIN for i in range(60)]
    panel = Panel(
        "p95",
        "ms",
        [Line("svc", times, [100.0 if i < 40 else 900.0 for i in range(60)])],
        [Shade(40 * MIN, 60 * MIN)],
        [Threshold("SLO p95 < 2s", 2000.0)],
    )
    png = render_panels("test", [panel, panel, panel])
    assert png_size(png) == (900, 600) and len(png) < 100_000
    with Image.open(io.BytesIO(png)) as img:
        img.verify()
    hist = render_histogram("latency", [1.0, 2.0, 4.0, 8.0], [5, 20, 3], "ms", [Threshold("p95", 6.0)])
    assert png_size(hist) == (900, 600) and len(hist) < 100_000


def test_red_chart_of_the_demo_incident_shades_the_anomaly(demo_store: Any) -> None:
    demo = demo_store("dependency-latency")
    res, text, png = render_chart(demo.ctx, service="payment", kind="red", **demo.window(2400))
    assert png_size(png) == (900, 600) and len(png) < 100_000
    assert res.kind == "red" and res.service == "payment-service" and res.anomalies >= 1
    assert res.thresholds  # SLO latency thresholds drawn
    assert "payment-service p95 level_shift" in text and "p95: median" in text


def test_metric_series_and_latency_histogram_charts(demo_store: Any) -> None:
    demo = demo_store("dependency-latency")
    res, text, png = render_chart(demo.ctx, metric="http.server.request.duration", **demo.window(2400))
    assert png_size(png) == (900, 600) and res.kind == "series" and res.metric == "http.server.request.duration"
    assert "one line per service" in text
    res, text, png = render_chart(demo.ctx, service="checkout", kind="latency_histogram", **demo.window(2400))
    assert png_size(png) == (900, 600) and res.kind == "latency_histogram"
    assert "p95" in text and "requests" in text


def test_bad_arguments_say_what_to_pass(demo_store: Any) -> None:
    ctx = demo_store("dependency-latency").ctx
    with pytest.raises(ToolInputError, match="kind=series draws a metric"):
        render_chart(ctx, service="payment")
    with pytest.raises(ToolInputError, match="pass service="):
        render_chart(ctx, kind="red")
    with pytest.raises(ToolInputError, match="unknown"):
        render_chart(ctx, service="payment", kind="pie")
    with pytest.raises(ToolInputError, match="did you mean"):
        render_chart(ctx, metric="http.server.duration")


@pytest.mark.anyio
async def test_render_chart_through_the_mcp_client_returns_png_image_content(tmp_path: Path) -> None:
    from tests.factories import span, traces_request

    rt = Runtime.open(Settings(data_dir=tmp_path, retention_days=36500), in_memory=True)
    try:
        t0 = 1_763_683_200_000_000_000
        spans = [
            span(bytes([i % 256, i // 256]) * 8, bytes([i % 256, i // 256]) * 4, b"", "GET /", t0 + i * 10**9, 20.0)
            for i in range(1800)
        ]
        await rt.receiver.ingest("traces", traces_request({"web": spans}), "protobuf")
        rng = {"start": format_ns(t0), "end": format_ns(t0 + 1800 * 10**9)}
        async with Client(rt.mcp) as client:
            r = await client.call_tool("render_chart", {"service": "web", "kind": "red", **rng})
            assert not r.is_error
            text = [c for c in r.content if isinstance(c, TextContent)]
            images = [c for c in r.content if isinstance(c, ImageContent)]
            assert len(images) == 1 and images[0].mime_type == "image/png"
            assert png_size(base64.b64decode(images[0].data)) == (900, 600)
            assert "RED panel of web" in text[0].text
            assert r.structured_content is not None and r.structured_content["kind"] == "red"
            err = await call_tool_error(client, "render_chart", {"kind": "red"})
            assert "pass service=" in err
    finally:
        rt.close()


@pytest.mark.slow
def test_cli_chart_writes_the_png_file(tmp_path: Path) -> None:
    out = tmp_path / "chart.png"
    # An empty store: a clear error, no file.
    r = run_cli("chart", "--service", "web", "-o", str(out), "--data-dir", str(tmp_path / "data"))
    assert r.returncode == 1 and "no telemetry" in r.stderr and not out.exists()
    r = run_cli("chart", "-o", str(out), "--data-dir", str(tmp_path / "data"))
    assert r.returncode == 2 and "--metric NAME" in r.stderr
    # Data through the CLI's own ingest, then the chart.
    from tests.factories import span, traces_request

    t0 = 1_763_683_200_000_000_000
    spans = [
        span(i.to_bytes(16, "big"), i.to_bytes(8, "big"), b"", "GET /", t0 + i * 10**9, 20.0) for i in range(1, 900)
    ]
    pb = tmp_path / "traces.pb"
    pb.write_bytes(traces_request({"web": spans}))
    assert run_cli("ingest", str(pb), "--data-dir", str(tmp_path / "data")).returncode == 0
    r = run_cli(
        "chart",
        "--service",
        "web",
        "--kind",
        "latency_histogram",
        "--start",
        format_ns(t0),
        "--end",
        format_ns(t0 + 900 * 10**9),
        "-o",
        str(out),
        "--data-dir",
        str(tmp_path / "data"),
    )
    assert r.returncode == 0, r.stderr
    assert f"wrote {out}" in r.stdout and "latency histogram of web" in r.stdout
    assert png_size(out.read_bytes()) == (900, 600)
