"""create_dashboard and push_dashboard, against what Grafana publishes (Grafana itself cannot be installed here:
Debian has no `grafana` package and there is no container engine).

- The dashboard JSON is type-checked with `tsc --noEmit` against npm @grafana/schema (the `Dashboard` model, and
  each panel's options against its panel plugin's `Options`), and ClickHouse targets against the ClickHouse
  data source plugin's own query type (tests/data/grafana/README.md says where each comes from).
- Every SQL panel runs on the ClickHouse engine (chDB) over the exporter tables, with the plugin's macros expanded
  as its `pkg/macros/macros.go` does, and its figures agree with slo_report's on the same data.
- Every PromQL panel runs on a real Prometheus holding known histograms, with the figures worked out by hand.
- Pushing talks to a loopback Grafana that checks every request body and every answer against Grafana's
  published OpenAPI spec (recorded subset), and acts on `overwrite` as Grafana's API documents (412
  version-mismatch / name-exists).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from mcp import Client
from pydantic import SecretStr

from obsmcp.config import ConfigError, Settings
from obsmcp.dashboards import builder
from obsmcp.dashboards.grafana import GrafanaError
from obsmcp.demo import DemoConfig
from obsmcp.demo.loader import load
from obsmcp.runtime import Runtime
from obsmcp.tools import dashboards as dash_tool
from obsmcp.tools import slo as slo_tool
from obsmcp.tools.context import ToolContext, ToolInputError
from tests.conftest import run_cli
from tests.prometheus import PrometheusBinaries, start_prometheus
from tests.test_slo_prometheus import backfill

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "tests" / "data" / "grafana"
SCHEMA_DIR = REPO / "build" / "grafana-schema"
INSTALL = "bash scripts/install-grafana-schema.sh"
TOKEN = "glsa_obsmcpTestToken0123456789abcdef_0a1b2c3d"


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")


def targets(model: dict[str, Any], plugin: str) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(panel, target) for every target of a data source plugin type."""
    return [(p, t) for p in model["panels"] for t in p.get("targets", []) if t["datasource"]["type"] == plugin]


# -- the published dashboard schema (tsc) ------------------------------------------------------------------------

_PANEL_TYPES = {
    # panel type -> (module under @grafana/schema/dist/esm/raw/composable, has a FieldConfig type)
    "timeseries": ("timeseries/panelcfg/x/TimeSeriesPanelCfg_types.gen", True),
    "stat": ("stat/panelcfg/x/StatPanelCfg_types.gen", False),
    "bargauge": ("bargauge/panelcfg/x/BarGaugePanelCfg_types.gen", False),
    "logs": ("logs/panelcfg/x/LogsPanelCfg_types.gen", False),
    "table": ("table/panelcfg/x/TablePanelCfg_types.gen", True),
}
# JSON holds an enum's value, not its TypeScript name: compare the JSON with enums replaced by their values.
_JSON_TYPE = """
type Json<T> = T extends string ? `${T}` : T extends number | boolean | null | undefined ? T
  : T extends Array<infer U> ? Array<Json<U>> : T extends object ? { [K in keyof T]: Json<T[K]> } : T;
"""


def typescript_check(models: list[dict[str, Any]], workdir: Path) -> subprocess.CompletedProcess[str]:
    tsc = SCHEMA_DIR / "node_modules" / "typescript" / "bin" / "tsc"
    if not tsc.exists() or shutil.which("node") is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"@grafana/schema and tsc are missing: {INSTALL} (scripts/test.sh runs it)")
        pytest.skip(f"@grafana/schema and tsc are missing: run `{INSTALL}`")
    lines = [
        "import type { Dashboard } from '@grafana/schema';",
        "import type { CHSqlQuery } from './ch/sql';",
        "import type { Prometheus } from './prom/dataquery';",
    ]
    for kind, (module, has_fc) in _PANEL_TYPES.items():
        names = f"Options as {kind}Options" + (f", FieldConfig as {kind}FieldConfig" if has_fc else "")
        lines.append(f"import type {{ {names} }} from '@grafana/schema/dist/esm/raw/composable/{module}';")
    lines.append(_JSON_TYPE)
    for i, model in enumerate(models):
        lines.append(f"export const dashboard{i}: Json<Dashboard> = {json.dumps(model)};")
        for p in model["panels"]:
            kind, pid = p["type"], f"{i}_{p['id']}"
            if kind == "row":
                continue
            assert kind in _PANEL_TYPES, f"panel type {kind} is not checked: add it to _PANEL_TYPES"
            lines.append(f"export const options{pid}: Json<{kind}Options> = {json.dumps(p['options'])};")
            custom = p.get("fieldConfig", {}).get("defaults", {}).get("custom")
            if custom is not None:
                assert _PANEL_TYPES[kind][1], f"{kind} has no FieldConfig type to check custom against"
                lines.append(f"export const custom{pid}: Json<{kind}FieldConfig> = {json.dumps(custom)};")
            for t in p["targets"]:
                query_type = {"grafana-clickhouse-datasource": "CHSqlQuery", "prometheus": "Prometheus"}
                if t["datasource"]["type"] in query_type:
                    typed = query_type[t["datasource"]["type"]]
                    lines.append(f"export const target{pid}{t['refId']}: Json<{typed}> = {json.dumps(t)};")
    check = Path(SCHEMA_DIR) / "work" / workdir.name
    shutil.rmtree(check, ignore_errors=True)
    (check / "ch").mkdir(parents=True)
    for f in ("sql.ts", "queryBuilder.ts"):
        shutil.copy(DATA / "clickhouse-datasource" / f, check / "ch" / f)
    (check / "prom").mkdir()
    shutil.copy(DATA / "prometheus" / "dataquery.d.ts", check / "prom" / "dataquery.d.ts")
    (check / "dashboards.ts").write_text("\n".join(lines) + "\n")
    try:
        return subprocess.run(
            ["node", str(tsc), "--noEmit", "--strict", "--skipLibCheck", "--target", "es2022", "--module", "esnext",
             "--moduleResolution", "bundler", str(check / "dashboards.ts")],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
    finally:
        shutil.rmtree(check, ignore_errors=True)


def test_dashboards_type_check_against_grafanas_published_schema(demo_store: Any, tmp_path: Path) -> None:
    store = demo_store()
    ctx = store.ctx
    made = [
        dash_tool.create_dashboard(ctx, service="checkout")[0],
        dash_tool.create_dashboard(ctx, slo="latency-p95", service="checkout")[0],
        dash_tool.create_dashboard(ctx, queries=["http.server.requests", "process.cpu.utilization", "up"])[0],
    ]
    # With Loki and Tempo configured, logs and traces panels query them (LogQL, TraceQL).
    backends = [{"name": "logs", "kind": "loki", "url": "http://127.0.0.1:9"},
                {"name": "traces", "kind": "tempo", "url": "http://127.0.0.1:9"}]  # fmt: skip
    remote = ToolContext(db=ctx.db, settings=Settings(data_dir=tmp_path, backends=backends))
    made.append(dash_tool.create_dashboard(remote, service="checkout", name="checkout-remote")[0])
    assert made[-1].sources == {"requests": "clickhouse", "logs": "loki", "traces": "tempo"}
    models = [json.loads(Path(m.path).read_text()) for m in made]
    [(_, logql)], [(_, traceql)] = targets(models[-1], "loki"), targets(models[-1], "tempo")
    assert logql["expr"] == '{service_name="checkout-service"}'
    assert traceql["query"] == '{resource.service.name="checkout-service"}'
    panel_types = {p["type"] for m in models for p in m["panels"]}
    assert {"timeseries", "stat", "bargauge", "logs", "table", "row"} <= panel_types

    result = typescript_check(models, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr

    # The check bites: a misspelt field, a wrong type and a missing required option are each reported.
    misspelt, wrong_type, incomplete = (json.loads(json.dumps(models[0])) for _ in range(3))
    misspelt["refersh"] = "1m"
    misspelt["panels"][2]["targets"][0]["editorType"] = "code"  # the ClickHouse plugin's editors: sql, builder
    wrong_type["panels"][1]["gridPos"]["w"] = "wide"
    incomplete["panels"][1]["options"]["legend"].pop("placement")
    result = typescript_check([misspelt, wrong_type, incomplete], tmp_path)
    assert result.returncode != 0
    out = result.stdout
    assert "'\"refersh\"' does not exist in type" in out
    assert "Type 'string' is not assignable to type 'number'" in out
    assert "Property 'placement' is missing" in out
    assert "Type '\"code\"' is not assignable to type '\"sql\"'" in out


# -- SQL panels on the ClickHouse engine -------------------------------------------------------------------------


def expand_macros(sql: str, start_s: int, end_s: int, interval_s: int) -> str:
    """The ClickHouse data source's macros (grafana/clickhouse-datasource pkg/macros/macros.go at 1d04063)."""
    sql = re.sub(
        r"\$__timeFilter\(([^)]+)\)", lambda m: f"{m[1]} >= toDateTime({start_s}) AND {m[1]} <= toDateTime({end_s})",
        sql,
    )  # fmt: skip
    bucket = f"INTERVAL {interval_s} second"
    sql = re.sub(r"\$__timeInterval\(([^)]+)\)", lambda m: f"toStartOfInterval(toDateTime({m[1]}), {bucket})", sql)
    sql = sql.replace("$__interval_s", str(interval_s))
    sql = sql.replace("$__toTime", f"toDateTime({end_s})").replace("$__fromTime", f"toDateTime({start_s})")
    assert "$__" not in sql, sql
    return sql


@pytest.fixture(scope="module")
def chdb_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runtime]:
    end_ns = (time.time_ns() // 60_000_000_000 - 1) * 60_000_000_000
    cfg = DemoConfig(
        scenario="deploy-errors", seed=3, duration_s=1800.0, rate=1.0, incident_start_before_end_s=600.0, end_ns=end_ns
    )
    rt = Runtime.open(
        Settings(data_dir=tmp_path_factory.mktemp("chdb"), retention_days=36500, store="chdb://memory?database=dash")
    )
    try:
        load(rt, cfg)
        rt.end_s = end_ns // 10**9  # type: ignore[attr-defined]
        yield rt
    finally:
        rt.close()


def test_sql_panels_run_on_clickhouse_and_agree_with_slo_report(chdb_store: Runtime) -> None:
    ctx = chdb_store.ctx
    end_s = chdb_store.end_s  # type: ignore[attr-defined]
    start_s = end_s - 1800
    made, text = dash_tool.create_dashboard(ctx, service="checkout")
    model = json.loads(Path(made.path).read_text())
    assert made.sources == {"requests": "clickhouse", "logs": "clickhouse", "traces": "clickhouse"}
    assert "DuckDB" not in text  # a ClickHouse store: no note about pointing Grafana elsewhere

    answers: dict[str, list[Any]] = {}
    row = ""
    rows_by_slo: dict[tuple[str, str], list[Any]] = {}
    for panel in model["panels"]:
        if panel["type"] == "row":
            row = panel["title"]
            continue
        for target in panel["targets"]:
            lo = start_s
            if "timeFrom" in panel:  # the error budget panel looks at the SLO window (30d): all the data there is
                lo = end_s - 30 * 86400
            _, rows = ctx.db.query(expand_macros(target["rawSql"], lo, end_s, 60))
            answers[f"{panel['id']}:{panel['title']}"] = rows
            if row.startswith("SLO "):
                rows_by_slo[(row.split()[1], panel["title"])] = rows

    def rows_of(title: str, nth: int = 0) -> list[Any]:
        return [v for k, v in answers.items() if k.split(":", 1)[1] == title][nth]

    report, _ = slo_tool.slo_report(ctx, "checkout-service", iso(start_s), iso(end_s))
    by_name = {s.name: s for s in report.services[0].slos}
    # RED: requests per second in one-minute buckets; they add up to the requests slo_report counts.
    rate = rows_of("Request rate")
    assert len(rate) >= 10 and all(r[1] > 0 for r in rate)
    assert sum(r[1] * 60 for r in rate) == pytest.approx(by_name["availability"].events_range, abs=3)
    assert all(0 <= r[1] <= 1 for r in rows_of("Error rate"))
    lat = rows_of("Latency p50 / p95 / p99")
    assert all(0 < p50 <= p95 <= p99 for _, p50, p95, p99 in lat)
    logs = rows_of("Logs: checkout-service")
    assert logs and all(r[1] and r[2] for r in logs)  # level and body
    slow = rows_of("Slowest requests: checkout-service")
    assert len(slow) == min(50, by_name["availability"].events_range)
    assert all(re.fullmatch(r"[0-9a-f]{32}", r[1]) for r in slow)
    assert [r[3] for r in slow] == sorted((r[3] for r in slow), reverse=True)

    # SLO panels agree with slo_report over the same range (its figures are rounded to 4 decimals).
    defaults = {"availability", "latency-p95", "latency-p99", "error-rate"}
    assert {slo for slo, _ in rows_by_slo} == set(by_name) == defaults
    for name, s in by_name.items():
        sli = rows_by_slo[(name, "SLI (dashboard range)")][0][0]
        assert s.sli_range_pct is not None
        assert 100 * sli == pytest.approx(s.sli_range_pct, abs=0.02), name
        burn = rows_by_slo[(name, "Burn rate per window")][0]
        for window, value in zip(("5m", "30m", "1h", "6h", "1d", "3d"), burn, strict=True):
            expected = s.burn_rates[window]
            assert expected is not None and value == pytest.approx(expected, rel=0.02, abs=0.01), (name, window)
        # Budget left over the SLO window, as Pyrra and Sloth draw it: 1 - bad share / allowed share, from the
        # events the window holds (slo_report's SLI over the window, as far as data covers it).
        left = rows_by_slo[(name, "Error budget left (30d)")][0][0]
        assert s.sli_window_pct is not None
        expected_left = 1 - (100 - s.sli_window_pct) / (100 - s.objective_pct)
        assert left == pytest.approx(expected_left, abs=0.002), name


def test_metric_query_panels_run_on_clickhouse(chdb_store: Runtime) -> None:
    ctx = chdb_store.ctx
    end_s = chdb_store.end_s  # type: ignore[attr-defined]
    queries = ["http.server.requests", "http.server.request.duration", "process.cpu.utilization"]
    made, _ = dash_tool.create_dashboard(ctx, queries=queries)
    model = json.loads(Path(made.path).read_text())
    assert made.datasources == ["ds_clickhouse=grafana-clickhouse-datasource"]
    results = {}
    for panel, target in targets(model, "grafana-clickhouse-datasource"):
        _, rows = ctx.db.query(expand_macros(target["rawSql"], end_s - 1200, end_s, 60))
        results[panel["title"]] = rows
    assert set(results) == set(queries)
    # A counter's per-second rate: never negative (resets and first points add nothing), and non-zero.
    requests = [r[2] for r in results["http.server.requests"]]
    assert requests and min(requests) >= 0 and max(requests) > 0
    assert all(r[2] is None or r[2] > 0 for r in results["http.server.request.duration"])
    assert all(0 <= r[2] <= 1 for r in results["process.cpu.utilization"])


# -- PromQL panels on a real Prometheus --------------------------------------------------------------------------

PROM_SLOS: list[dict[str, Any]] = [
    {"name": "checkout-availability", "service": "checkout-service", "sli": "availability", "objective": 99.0,
     "window": "1d", "backend": "prod"},
    {"name": "checkout-fast", "service": "checkout-service", "sli": "latency", "objective": 90.0, "window": "1d",
     "threshold_ms": 250, "backend": "prod"},
]  # fmt: skip


@pytest.fixture(scope="module")
def prom(prometheus_binaries: PrometheusBinaries, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    end = (int(time.time()) - 60) // 60 * 60
    server = start_prometheus(prometheus_binaries, tmp_path_factory.mktemp("prom"), [], backfill=backfill(end))
    server.end = end  # type: ignore[attr-defined]
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def prom_rt(tmp_path: Path, prom: Any) -> Iterator[Runtime]:
    backends = [{"name": "prod", "kind": "prometheus", "url": prom.url}]
    rt = Runtime.open(Settings(data_dir=tmp_path, backends=backends, slos=PROM_SLOS), in_memory=True)
    try:
        yield rt
    finally:
        rt.ctx.sources.close()
        rt.close()


def promql_at(prom: Any, expr: str, window: str = "1h") -> list[dict[str, Any]]:
    """The panel's PromQL with Grafana's variables set as a 1 h dashboard would, evaluated at the data's end."""
    concrete = expr.replace("$__rate_interval", "1m").replace("$__range", window)
    assert "$" not in concrete, concrete
    return list(prom.query(concrete, at=prom.end))


def test_promql_panels_run_on_prometheus_with_the_expected_figures(prom_rt: Runtime, prom: Any) -> None:
    ctx = prom_rt.ctx
    made, _ = dash_tool.create_dashboard(ctx, service="checkout-service")
    model = json.loads(Path(made.path).read_text())
    assert made.sources["requests"] == "prometheus"
    prom_targets = targets(model, "prometheus")
    assert len(prom_targets) >= 10
    values: dict[str, list[float]] = {}
    for panel, target in prom_targets:
        result = promql_at(prom, target["expr"])  # a PromQL syntax error fails here (HTTP 400)
        values.setdefault(panel["title"], []).extend(float(r["value"][1]) for r in result)
    # checkout-service: 10 requests/s; 1 in 15 failing until 30 min before the end, 1 in 5 since.
    assert values["Request rate"] == [pytest.approx(10.0)]
    assert values["Error rate (5xx)"] == [pytest.approx(0.2)]
    # Availability (99% over 1 d) over the last hour: 4800 of 36000 bad; burn 1 h = 13.33, 5 m = 20, 6 h and
    # longer hold all 2 h of data: 7200 of 72000 bad = burn 10.
    # Latency (90% within 250 ms, the le="0.25" bucket): 126 of 150 per step fast until 30 min before the end,
    # 72 of 150 since. Bad: 5 m and 30 m 52%; 1 h (24 x 120 + 78 x 120) / 36000 = 34%; 2 h 18000 / 72000 = 25%.
    assert values["SLI (dashboard range)"] == [pytest.approx(1 - 4800 / 36000), pytest.approx(1 - 12240 / 36000)]
    assert values["Burn rate per window"] == [
        pytest.approx(x) for x in (20, 20, 40 / 3, 10, 10, 10, 5.2, 5.2, 3.4, 2.5, 2.5, 2.5)
    ]
    assert values["Burn rate (1h window)"] == [pytest.approx(40 / 3), pytest.approx(3.4)]
    assert values["Error budget left (1d)"] == [pytest.approx(1 - 10), pytest.approx(1 - 2.5)]
    assert any('le="0.25" bucket of http_server_request_duration_seconds' in n for n in made.notes), made.notes


def test_a_service_only_prometheus_knows_gets_prometheus_panels(prom_rt: Runtime, prom: Any) -> None:
    made, _ = dash_tool.create_dashboard(prom_rt.ctx, service="payments")
    model = json.loads(Path(made.path).read_text())
    assert made.datasources == ["ds_prometheus=prometheus", "ds_clickhouse=grafana-clickhouse-datasource"]
    rate = next(t for p, t in targets(model, "prometheus") if p["title"] == "Request rate")
    assert 'job="payments"' in rate["expr"]
    assert [float(r["value"][1]) for r in promql_at(prom, rate["expr"])] == [pytest.approx(5.0)]
    # The default error_rate SLO counts every span, which an HTTP histogram cannot; the default latency SLOs'
    # thresholds (2 s, 5 s) are no bucket boundaries of this histogram: each said, not drawn.
    assert any("error-rate" in n and "cannot count" in n for n in made.notes)
    for slo, le in (("latency-p95", "2"), ("latency-p99", "5")):
        assert any(n.startswith(f"SLO {slo}:") and f"no bucket at le={le} (its boundaries: 0.05, 0.1" in n
                   for n in made.notes), made.notes  # fmt: skip
    rows = [p["title"] for p in model["panels"] if p["type"] == "row"]
    assert rows == ["Requests: payments", "SLO availability (availability 99.9%) (prod)", "Logs and traces"]


# -- pushing: a loopback Grafana held to the published OpenAPI spec ----------------------------------------------


class FakeGrafana:
    """Folders and dashboards in memory; every request and answer checked against the recorded OpenAPI spec."""

    def __init__(self, token: str) -> None:
        self.spec = json.loads((DATA / "openapi-dashboards.json").read_text())
        self.token = token
        self.folders: dict[str, str] = {}  # uid -> title
        self.dashboards: dict[str, dict[str, Any]] = {}  # uid -> {folder, title, version}
        self.requests: list[tuple[str, str, Any]] = []
        self.violations: list[str] = []
        self.fail_saves_with = 0
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _check(self, schema: dict[str, Any], value: Any, what: str) -> None:
        root = {**schema, "components": self.spec["components"]}
        errors = [e.message for e in jsonschema.Draft7Validator(root).iter_errors(value)]
        if "$ref" in schema and isinstance(value, dict):
            target = schema["$ref"].rsplit("/", 1)[-1]
            known = self.spec["components"]["schemas"].get(target, {}).get("properties")
            if known is not None:
                errors += [f"unknown field {k!r}" for k in value if k not in known]
        self.violations += [f"{what}: {e}" for e in errors]

    def _operation(self, method: str, path: str) -> dict[str, Any]:
        return dict(self.spec["paths"][path.removeprefix("/api")][method.lower()])

    def answer(self, method: str, path: str, body: Any, auth: str | None) -> tuple[int, Any]:
        self.requests.append((method, path, body))
        if self.fail_saves_with and path == "/api/dashboards/db":
            return self.fail_saves_with, {"message": "Service Unavailable"}
        if auth != f"Bearer {self.token}":
            return 401, {"message": "Unauthorized"}
        op = self._operation(method, path)
        if "requestBody" in op:
            self._check(op["requestBody"]["content"]["application/json"]["schema"], body, f"{method} {path} body")
        status, out = self._act(method, path, body)
        ref = op["responses"][str(status)]["$ref"].rsplit("/", 1)[-1]
        schema = self.spec["components"]["responses"][ref]["content"]["application/json"]["schema"]
        self._check(schema, out, f"{method} {path} answer {status}")
        return status, out

    def _act(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        if (method, path) == ("GET", "/api/folders"):
            return 200, [{"id": i + 1, "uid": u, "title": t} for i, (u, t) in enumerate(self.folders.items())]
        if (method, path) == ("POST", "/api/folders"):
            uid = body.get("uid") or f"f{len(self.folders)}"
            if uid in self.folders or body["title"] in self.folders.values():
                return 409, {"message": "a folder with the same name already exists"}
            self.folders[uid] = body["title"]
            return 200, {"id": len(self.folders), "uid": uid, "title": body["title"], "url": f"/dashboards/f/{uid}"}
        # POST /api/dashboards/db, as Grafana's dashboard service decides (HTTP API docs: 412 on conflicts).
        dash, folder = body["dashboard"], body.get("folderUid", "")
        if folder and folder not in self.folders:
            return 400, {"message": "folder not found"}
        uid, title = dash["uid"], dash["title"]
        same_title = [u for u, d in self.dashboards.items() if d["folder"] == folder and d["title"] == title]
        if not body.get("overwrite"):
            if uid in self.dashboards:
                return 412, {"message": "The dashboard has been changed by someone else", "status": "version-mismatch"}
            if same_title and same_title != [uid]:
                return 412, {"message": "A dashboard with the same name in the folder already exists",
                             "status": "name-exists"}  # fmt: skip
        for u in same_title:
            if u != uid:
                del self.dashboards[u]
        version = self.dashboards.get(uid, {}).get("version", 0) + 1
        self.dashboards[uid] = {"folder": folder, "title": title, "version": version, "panels": len(dash["panels"])}
        slug = builder.slug(title)
        return 200, {"id": len(self.dashboards), "uid": uid, "url": f"/d/{uid}/{slug}", "status": "success",
                     "version": version, "title": slug, "folderUid": folder}  # fmt: skip

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self) -> None:
                path = self.path.split("?", 1)[0]
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length)) if length else None
                status, out = fake.answer(self.command, path, body, self.headers.get("Authorization"))
                data = json.dumps(out).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = _serve

            def log_message(self, *args: Any) -> None:
                pass

        return Handler


@pytest.fixture
def grafana() -> Iterator[FakeGrafana]:
    fake = FakeGrafana(TOKEN)
    try:
        yield fake
    finally:
        fake.close()


def grafana_ctx(demo_store: Any, tmp_path: Path, url: str, **extra: Any) -> ToolContext:
    settings = Settings(data_dir=tmp_path, grafana_url=url, grafana_token=TOKEN, enable_writes=True, **extra)
    return ToolContext(db=demo_store().ctx.db, settings=settings)


def test_push_creates_the_folder_saves_the_dashboard_and_refuses_to_overwrite(
    demo_store: Any, tmp_path: Path, grafana: FakeGrafana
) -> None:
    ctx = grafana_ctx(demo_store, tmp_path, grafana.url)
    made, _ = dash_tool.create_dashboard(ctx, service="checkout")
    pushed, text = dash_tool.push_dashboard(ctx, made.uid, message="first")
    assert pushed.folder_created and pushed.folder == "obsmcp" and pushed.version == 1
    assert grafana.folders == {"obsmcp": "obsmcp"}
    assert grafana.dashboards[made.uid]["panels"] == len(json.loads(Path(made.path).read_text())["panels"])
    assert pushed.url == f"{grafana.url}/d/{made.uid}/{builder.slug(made.title)}" and pushed.url in text
    saved = grafana.requests[-1][2]
    assert saved["folderUid"] == "obsmcp" and saved["overwrite"] is False and saved["message"] == "first"

    # The same uid again: Grafana's 412 version-mismatch, explained with the way out.
    with pytest.raises(GrafanaError, match=r"already has a dashboard with uid .*overwrite=true"):
        dash_tool.push_dashboard(ctx, made.uid)
    assert grafana.dashboards[made.uid]["version"] == 1
    # The same title under another uid in that folder: 412 name-exists.
    other, _ = dash_tool.create_dashboard(ctx, service="checkout", name="checkout-copy")
    with pytest.raises(GrafanaError, match=r"already has a dashboard titled .*overwrite=true"):
        dash_tool.push_dashboard(ctx, other.uid)
    # overwrite=true replaces; the folder is found, not created again.
    pushed, _ = dash_tool.push_dashboard(ctx, made.uid, overwrite=True)
    assert (pushed.version, pushed.folder_created) == (2, False)
    assert [r[:2] for r in grafana.requests].count(("POST", "/api/folders")) == 1
    assert grafana.violations == []


def test_push_is_sent_once_and_says_what_failed(demo_store: Any, tmp_path: Path, grafana: FakeGrafana) -> None:
    ctx = grafana_ctx(demo_store, tmp_path, grafana.url)
    made, _ = dash_tool.create_dashboard(ctx, service="cart")
    wrong = SecretStr("glsa_wrong_token_x")
    bad = ToolContext(db=ctx.db, settings=ctx.settings.model_copy(update={"grafana_token": wrong}))
    with pytest.raises(GrafanaError) as err:
        dash_tool.push_dashboard(bad, made.uid)
    assert "401" in str(err.value) and "token" in str(err.value) and "glsa_wrong" not in str(err.value)
    none = ToolContext(db=ctx.db, settings=Settings(data_dir=tmp_path))
    with pytest.raises(GrafanaError, match="OBSMCP_GRAFANA_URL"):
        dash_tool.push_dashboard(none, made.uid)
    # Grafana failing with 503 (a status reads are retried on): the POST that saves is sent exactly once, since
    # a retry after a lost answer could save twice.
    grafana.fail_saves_with = 503
    with pytest.raises(GrafanaError, match="503"):
        dash_tool.push_dashboard(ctx, made.uid)
    assert [r[:2] for r in grafana.requests].count(("POST", "/api/dashboards/db")) == 1
    # Grafana down.
    grafana.close()
    with pytest.raises(GrafanaError, match="could not connect"):
        dash_tool.push_dashboard(ctx, made.uid)


def test_dashboard_names_cannot_leave_the_dashboards_directory(demo_store: Any, tmp_path: Path) -> None:
    ctx = ToolContext(db=demo_store().ctx.db, settings=Settings(data_dir=tmp_path / "data"))
    for name in ("../evil", "a/b", "..", ".hidden", "x" * 41, "/etc/passwd", "a\\b", ""):
        with pytest.raises(ToolInputError, match="not a dashboard name"):
            dash_tool.create_dashboard(ctx, service="checkout", name=name)
        with pytest.raises(ToolInputError, match="not a dashboard name"):
            dash_tool.push_dashboard(ctx, name)
    made, _ = dash_tool.create_dashboard(ctx, service="checkout", name="ok_name-1")
    assert Path(made.path) == tmp_path / "data" / "dashboards" / "ok_name-1.json"
    assert [p.name for p in (tmp_path / "data").rglob("*.json")] == ["ok_name-1.json"]
    with pytest.raises(ToolInputError, match="create_dashboard first"):
        dash_tool.push_dashboard(ctx, "never-made")


def test_bad_arguments_say_what_to_pass(demo_store: Any, tmp_path: Path) -> None:
    ctx = ToolContext(db=demo_store().ctx.db, settings=Settings(data_dir=tmp_path))
    with pytest.raises(ToolInputError, match="service="):
        dash_tool.create_dashboard(ctx)
    with pytest.raises(ToolInputError, match="not both"):
        dash_tool.create_dashboard(ctx, service="checkout", queries=["up"])
    with pytest.raises(ToolInputError, match="known SLOs"):
        dash_tool.create_dashboard(ctx, slo="nope", service="checkout")
    with pytest.raises(LookupError, match=r"did you mean|no service"):
        dash_tool.create_dashboard(ctx, service="no-such-service-anywhere")


@pytest.mark.anyio
async def test_tools_over_mcp_push_only_with_writes(demo_store: Any, tmp_path: Path, grafana: FakeGrafana) -> None:
    def agent_tools(**extra: Any) -> Runtime:
        return Runtime.open(
            Settings(data_dir=tmp_path, grafana_url=grafana.url, grafana_token=TOKEN, **extra),
            in_memory=True,
            for_agents=True,
        )

    rt = agent_tools(tools=["dashboards"])
    try:
        async with Client(rt.mcp) as client:
            listed = {t.name: t for t in (await client.list_tools()).tools}
        assert set(listed) == {"create_dashboard"}  # the write tool only with --enable-writes
    finally:
        rt.close()
    with pytest.raises(ConfigError, match=r"push_dashboard.*--enable-writes"):
        agent_tools(tools=["push_dashboard"])
    assert "create_dashboard" not in {t.name for t in _default_tools(tmp_path)}  # not in the default set

    rt = agent_tools(tools=["dashboards", "core"], enable_writes=True)
    try:
        async with Client(rt.mcp) as client:
            listed = {t.name: t for t in (await client.list_tools()).tools}
            assert listed["push_dashboard"].annotations.read_only_hint is False  # type: ignore[union-attr]
            assert listed["create_dashboard"].annotations.read_only_hint is True  # type: ignore[union-attr]
            # The demo's services are in demo_store's store, not this runtime's: a clear error, then a dashboard
            # of metric queries, which needs no data.
            r = await client.call_tool("create_dashboard", {"service": "checkout"})
            assert r.is_error and "checkout" in r.content[0].text  # type: ignore[union-attr]
            r = await client.call_tool("create_dashboard", {"queries": ["rate(up[5m])"], "name": "mine"})
            assert not r.is_error, r.content[0].text  # type: ignore[union-attr]
            assert (tmp_path / "dashboards" / "mine.json").is_file()
            r = await client.call_tool("push_dashboard", {"name": "mine"})
            text = r.content[0].text  # type: ignore[union-attr]
            assert not r.is_error and "saved in Grafana folder 'obsmcp'" in text, text
            assert TOKEN not in text
    finally:
        rt.close()
    assert grafana.violations == []


def _default_tools(tmp_path: Path) -> list[Any]:
    rt = Runtime.open(Settings(data_dir=tmp_path), in_memory=True, for_agents=True)
    try:
        return rt.mcp._tool_manager.list_tools()
    finally:
        rt.close()


def test_cli_lists_and_pushes_a_reviewed_dashboard(demo_store: Any, tmp_path: Path, grafana: FakeGrafana) -> None:
    ctx = ToolContext(db=demo_store().ctx.db, settings=Settings(data_dir=tmp_path))
    made, _ = dash_tool.create_dashboard(ctx, service="payment")
    listed = run_cli("dashboard", "list", "--data-dir", str(tmp_path))
    assert listed.returncode == 0 and made.uid in listed.stdout and f"{made.panels} panels" in listed.stdout
    env = {"OBSMCP_GRAFANA_URL": grafana.url, "OBSMCP_GRAFANA_TOKEN": TOKEN}
    pushed = run_cli("dashboard", "push", made.uid, "--data-dir", str(tmp_path), env=env)
    assert pushed.returncode == 0, pushed.stderr
    assert f"{grafana.url}/d/{made.uid}/" in pushed.stdout and grafana.dashboards[made.uid]["version"] == 1
    again = run_cli("dashboard", "push", made.uid, "--data-dir", str(tmp_path), env=env)
    assert again.returncode == 2 and "overwrite" in again.stderr and "Traceback" not in again.stderr
    assert TOKEN not in pushed.stdout + pushed.stderr + again.stdout + again.stderr
    assert grafana.violations == []
