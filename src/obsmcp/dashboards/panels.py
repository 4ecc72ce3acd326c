"""Pieces of a Grafana dashboard JSON model (the classic model `POST /api/dashboards/db` takes, checked against
@grafana/schema's `Dashboard` and panel option types in tests/test_dashboards.py): data source variables,
targets per data source plugin, panels, rows, and the grid layout.

Data sources are never named by instance: every panel points at a `datasource` template variable of the right
plugin type (`${ds_prometheus}`, ...), so the dashboard imports into any Grafana and asks which instance to use.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

SCHEMA_VERSION = 41  # Grafana 12's dashboard schema; Grafana migrates older and newer JSON on load

# Data source plugin ids (`type`), and the template variable each kind of panel points at.
PLUGINS = {
    "clickhouse": "grafana-clickhouse-datasource",
    "prometheus": "prometheus",
    "loki": "loki",
    "tempo": "tempo",
    "jaeger": "jaeger",
}
LABELS = {
    "clickhouse": "ClickHouse (OTel exporter tables)",
    "prometheus": "Prometheus",
    "loki": "Loki",
    "tempo": "Tempo",
    "jaeger": "Jaeger",
}
GRID_WIDTH = 24

# ClickHouse plugin query formats (clickhouse-datasource src/data/utils.ts mapQueryTypeToGrafanaFormat).
CH_FORMAT = {"timeseries": 0, "table": 1, "logs": 2}


def var_name(kind: str) -> str:
    return f"ds_{kind}"


def datasource_ref(kind: str) -> dict[str, str]:
    return {"type": PLUGINS[kind], "uid": f"${{{var_name(kind)}}}"}


def datasource_variable(kind: str) -> dict[str, Any]:
    return {
        "name": var_name(kind),
        "label": LABELS[kind],
        "type": "datasource",
        "query": PLUGINS[kind],
        "refresh": 1,
        "regex": "",
        "hide": 0,
        "multi": False,
        "includeAll": False,
        "options": [],
    }


# -- targets ----------------------------------------------------------------------------------------------------


def clickhouse_target(ref: str, sql: str, fmt: str) -> dict[str, Any]:
    return {
        "refId": ref,
        "datasource": datasource_ref("clickhouse"),
        "editorType": "sql",
        "rawSql": sql,
        "format": CH_FORMAT[fmt],
        "queryType": fmt,
        "pluginVersion": "4.0.0",
    }


def prometheus_target(ref: str, expr: str, legend: str, instant: bool = False) -> dict[str, Any]:
    return {
        "refId": ref,
        "datasource": datasource_ref("prometheus"),
        "expr": expr,
        "legendFormat": legend,
        "range": not instant,
        "instant": instant,
        "editorMode": "code",
    }


def loki_target(ref: str, expr: str) -> dict[str, Any]:
    return {"refId": ref, "datasource": datasource_ref("loki"), "expr": expr, "queryType": "range"}


def tempo_target(ref: str, traceql: str) -> dict[str, Any]:
    return {
        "refId": ref,
        "datasource": datasource_ref("tempo"),
        "queryType": "traceql",
        "query": traceql,
        "limit": 50,
        "tableType": "traces",
    }


def jaeger_target(ref: str, service: str) -> dict[str, Any]:
    return {"refId": ref, "datasource": datasource_ref("jaeger"), "queryType": "search", "service": service}


# -- panels -----------------------------------------------------------------------------------------------------


@dataclass
class Panel:
    """One panel before layout: its JSON without `id` and `gridPos`, and its size on the 24-column grid."""

    body: dict[str, Any]
    width: int = 8
    height: int = 8


def _thresholds(steps: list[tuple[float | None, str]]) -> dict[str, Any]:
    return {"mode": "absolute", "steps": [{"color": color, "value": value} for value, color in steps]}


def _field_defaults(unit: str, steps: list[tuple[float | None, str]] | None, **extra: Any) -> dict[str, Any]:
    defaults: dict[str, Any] = {"unit": unit, "color": {"mode": "palette-classic" if steps is None else "thresholds"}}
    defaults["thresholds"] = _thresholds(steps or [(None, "green")])
    defaults.update(extra)
    return defaults


def timeseries(
    title: str,
    datasource: str,
    targets: list[dict[str, Any]],
    unit: str,
    description: str = "",
    threshold_lines: list[tuple[float, str]] | None = None,
    width: int = 8,
) -> Panel:
    custom: dict[str, Any] = {"drawStyle": "line", "lineWidth": 1, "fillOpacity": 10, "showPoints": "never"}
    steps: list[tuple[float | None, str]] = [(None, "green")]
    if threshold_lines:
        custom["thresholdsStyle"] = {"mode": "dashed"}
        steps += [(value, color) for value, color in threshold_lines]
    defaults = _field_defaults(unit, None, custom=custom)
    defaults["thresholds"] = _thresholds(steps)
    body = {
        "type": "timeseries",
        "title": title,
        "description": description,
        "datasource": datasource_ref(datasource),
        "targets": targets,
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": {
            "legend": {"showLegend": True, "displayMode": "list", "placement": "bottom", "calcs": ["mean", "max"]},
            "tooltip": {"mode": "multi", "sort": "desc"},
        },
    }
    return Panel(body, width=width)


def stat(
    title: str,
    datasource: str,
    targets: list[dict[str, Any]],
    unit: str,
    steps: list[tuple[float | None, str]],
    description: str = "",
    time_from: str | None = None,
    decimals: int | None = None,
    width: int = 4,
) -> Panel:
    extra: dict[str, Any] = {"decimals": decimals} if decimals is not None else {}
    body: dict[str, Any] = {
        "type": "stat",
        "title": title,
        "description": description,
        "datasource": datasource_ref(datasource),
        "targets": targets,
        "fieldConfig": {"defaults": _field_defaults(unit, steps, **extra), "overrides": []},
        "options": {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "orientation": "auto",
            "colorMode": "background",
            "graphMode": "none",
            "justifyMode": "auto",
            "textMode": "auto",
            "wideLayout": True,
            "showPercentChange": False,
            "percentChangeColorMode": "standard",
        },
    }
    if time_from:
        body["timeFrom"] = time_from
    return Panel(body, width=width, height=5)


def bargauge(
    title: str,
    datasource: str,
    targets: list[dict[str, Any]],
    unit: str,
    steps: list[tuple[float | None, str]],
    description: str = "",
    width: int = 8,
) -> Panel:
    body = {
        "type": "bargauge",
        "title": title,
        "description": description,
        "datasource": datasource_ref(datasource),
        "targets": targets,
        "fieldConfig": {"defaults": _field_defaults(unit, steps, min=0, decimals=2), "overrides": []},
        "options": {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "orientation": "horizontal",
            "displayMode": "gradient",
            "valueMode": "color",
            "namePlacement": "auto",
            "showUnfilled": True,
            "sizing": "auto",
            "minVizHeight": 16,
            "minVizWidth": 8,
            "maxVizHeight": 300,
            "legend": {"showLegend": False, "displayMode": "list", "placement": "bottom", "calcs": []},
        },
    }
    return Panel(body, width=width, height=5)


def logs(title: str, datasource: str, targets: list[dict[str, Any]], description: str = "") -> Panel:
    body = {
        "type": "logs",
        "title": title,
        "description": description,
        "datasource": datasource_ref(datasource),
        "targets": targets,
        "options": {
            "showTime": True,
            "showLabels": False,
            "showCommonLabels": False,
            "wrapLogMessage": True,
            "prettifyLogMessage": False,
            "enableLogDetails": True,
            "dedupStrategy": "none",
            "sortOrder": "Descending",
            "showLogContextToggle": False,
        },
    }
    return Panel(body, width=GRID_WIDTH, height=10)


def table(title: str, datasource: str, targets: list[dict[str, Any]], description: str = "") -> Panel:
    body = {
        "type": "table",
        "title": title,
        "description": description,
        "datasource": datasource_ref(datasource),
        "targets": targets,
        "fieldConfig": {"defaults": {"unit": "none"}, "overrides": []},
        "options": {"showHeader": True, "frameIndex": 0, "cellHeight": "sm"},
    }
    return Panel(body, width=GRID_WIDTH, height=10)


def row(title: str) -> Panel:
    return Panel({"type": "row", "title": title, "collapsed": False, "panels": []}, width=GRID_WIDTH, height=1)


def layout(panels: list[Panel]) -> list[dict[str, Any]]:
    """Place panels left to right, wrapping at 24 columns; a row starts a new line. Ids are 1..n."""
    out: list[dict[str, Any]] = []
    x = y = line_height = 0
    for i, p in enumerate(panels, start=1):
        if p.body["type"] == "row" or x + p.width > GRID_WIDTH:
            y += line_height
            x = line_height = 0
        body = {"id": i, **p.body, "gridPos": {"x": x, "y": y, "w": p.width, "h": p.height}}
        out.append(body)
        if p.body["type"] == "row":
            y += p.height
            continue
        x += p.width
        line_height = max(line_height, p.height)
    return out


def dashboard(
    uid: str, title: str, description: str, tags: list[str], datasources: list[str], panels: list[Panel]
) -> dict[str, Any]:
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": tags,
        "editable": True,
        "graphTooltip": 1,
        "schemaVersion": SCHEMA_VERSION,
        "version": 0,
        "time": {"from": "now-6h", "to": "now"},
        "timepicker": {},
        "timezone": "utc",
        "refresh": "1m",
        "fiscalYearStartMonth": 0,
        "liveNow": False,
        "weekStart": "",
        "links": [],
        "annotations": {"list": []},
        "templating": {"list": [datasource_variable(kind) for kind in datasources]},
        "panels": layout(panels),
    }
