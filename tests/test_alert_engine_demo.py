"""The default rules on the demo: the incident (`obsmcp demo --duration 20m --rate 2`, as the status page shows it)
fires an alert on its root-cause service, on more than one seed; the quiet demo pages nobody."""

from __future__ import annotations

from typing import Any

import pytest

from obsmcp.tools.alerts import alerts_answer

DEMO = {"duration_s": 1200.0, "rate": 2.0, "incident_start_before_end_s": 1800.0}  # as `obsmcp demo --duration 20m`


@pytest.mark.parametrize("seed", [1, 7])
def test_the_demo_incident_fires_a_default_alert_on_its_root_cause_service(demo_store: Any, seed: int) -> None:
    demo = demo_store("dependency-latency", seed=seed, **DEMO)
    engine = demo.runtime.alerts
    engine.evaluate_now()
    assert engine.errors() == {}
    root = demo.truth.root_cause_service
    assert root == "payment-service"
    firing = [a for a in engine.current() if a.state == "firing"]
    on_root = [a for a in firing if a.labels.get("service") == root]
    assert on_root, [a.cause for a in firing]
    assert all(a.rule.startswith("slo-burn-") and "latency" in (a.labels.get("slo") or "") for a in on_root)
    assert any(root in a.cause and "burns its error budget" in a.cause for a in on_root)
    # The users' side pages: checkout-service answers 504s.
    assert any(a.severity == "critical" and a.labels.get("service") == "checkout-service" for a in firing)
    # list_alerts names the root cause and keeps to its budget: tickets of SLOs that already page are folded.
    result, text = alerts_answer(engine, demo.ctx, None, None)
    assert f"service={root}" in text and result.total == len(engine.current())
    assert "lower-severity alerts of SLOs that already page are left out" in text
    assert len(text) // 4 <= 2000 and len(result.alerts) == result.returned


def test_the_quiet_demo_pages_nobody(demo_store: Any) -> None:
    demo = demo_store("none", seed=3, **DEMO)
    engine = demo.runtime.alerts
    engine.evaluate_now()
    assert engine.errors() == {}
    assert [a.cause for a in engine.current() if a.severity == "critical"] == []
