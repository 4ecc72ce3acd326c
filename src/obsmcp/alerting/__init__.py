"""Alerting: rules as code, evaluated inside `obsmcp serve`; notifications; export to Prometheus rules."""
