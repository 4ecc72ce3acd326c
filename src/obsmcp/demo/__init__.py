"""Demo, test and benchmark telemetry: a small web shop's correlated traces, logs and metrics over OTLP,
with one injected incident at a chosen service whose ground truth is known (see ``scenario_truth`` and
``scenario_targets``)."""

from obsmcp.demo.generator import DemoConfig, OTLPRequest, estimate_items, generate
from obsmcp.demo.scenarios import SCENARIO_NAMES, Scenario, scenario_targets, scenario_truth
from obsmcp.demo.sender import SendError, SendStats, send

__all__ = [
    "SCENARIO_NAMES",
    "DemoConfig",
    "OTLPRequest",
    "Scenario",
    "SendError",
    "SendStats",
    "estimate_items",
    "generate",
    "scenario_targets",
    "scenario_truth",
    "send",
]
