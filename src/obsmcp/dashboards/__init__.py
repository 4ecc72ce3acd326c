"""Grafana dashboards generated from what obsmcp knows: a service's RED figures, its SLOs and burn rates, its
logs and traces, or a list of metric queries, for the configured data sources; and pushing them to Grafana.

Modules: `queries` (SQL / PromQL / LogQL / TraceQL text), `panels` (the dashboard JSON model's pieces),
`builder` (which data source serves what; the three dashboard kinds), `files` (the dashboards directory),
`grafana` (the HTTP API push), `cli` (`obsmcp dashboard ...`).
"""
