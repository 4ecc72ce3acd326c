"""Alert webhooks against real receivers: a real Alertmanager (its API, and the webhook body it sends itself),
Slack-shaped messages, retries with backoff, the bounded queue, and no secret in the logs."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from obsmcp import metrics
from obsmcp.alerting.model import Alert, AlertState, AlertTransition
from obsmcp.alerting.notify import WebhookConfig, WebhookNotifier, alertmanager_payload
from obsmcp.config import ConfigError, load_settings
from obsmcp.telemetry import configure_logging
from tests import alertmanager as am
from tests.alertmanager import AlertmanagerServer, WebhookReceiver, webhook_receiver
from tests.conftest import otlp_logs_protobuf

# The fixtures of tests/alertmanager.py, used by name below.
alertmanager_binary = am.alertmanager_binary
alertmanager_factory = am.alertmanager_factory
webhook_receiver_factory = am.webhook_receiver_factory

NOW = datetime.now(UTC).replace(microsecond=0)


def make_alert(
    rule: str = "checkout-error-rate",
    state: AlertState = "firing",
    service: str = "checkout",
    cause: str = "checkout error rate 12.4% > 5% for 5m",
    silenced_by: str | None = None,
    **labels: str,
) -> Alert:
    all_labels = {"service": service, **labels}
    fp = hashlib.sha256(f"{rule}{sorted(all_labels.items())}".encode()).hexdigest()[:16]
    return Alert(
        rule=rule,
        fingerprint=fp,
        state=state,
        severity="critical",
        labels=all_labels,
        value=0.124,
        threshold=0.05,
        since=NOW - timedelta(minutes=7),
        firing_since=NOW - timedelta(minutes=2),
        resolved_at=NOW if state == "resolved" else None,
        cause=cause,
        silenced_by=silenced_by,
    )


def fire(alert: Alert) -> AlertTransition:
    return AlertTransition(alert=alert, previous="pending", at=NOW)


def resolve(alert: Alert) -> AlertTransition:
    done = alert.model_copy(update={"state": "resolved", "resolved_at": datetime.now(UTC)})
    return AlertTransition(alert=done, previous="firing", at=NOW)


def notifier(url: str, fmt: str = "alertmanager", **fields: Any) -> WebhookNotifier:
    cfg = WebhookConfig.model_validate({"name": f"test-{fmt}", "url": url, "format": fmt, **fields})
    return WebhookNotifier(cfg, external_url="http://127.0.0.1:8000/")


def sample(name: str, **labels: str) -> float:
    return metrics.REGISTRY.get_sample_value(name, labels) or 0.0


def shape(value: Any) -> Any:
    """The structure of a JSON value: keys and types (label and annotation maps as {str: str})."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [shape(value[0])] if value else []
    return type(value).__name__


# -- a real Alertmanager ---------------------------------------------------------------------------------------


@pytest.mark.slow
def test_alertmanager_api_push_shows_up_in_a_real_alertmanager_and_resolves(
    alertmanager_factory: Callable[..., AlertmanagerServer],
    webhook_receiver_factory: Callable[..., WebhookReceiver],
) -> None:
    sink = webhook_receiver_factory()
    am = alertmanager_factory(webhook_receiver("sink", f"{sink.url}/hook"))
    n = notifier(am.url, "alertmanager_api")
    try:
        alert = make_alert()
        n.notify([fire(alert)], [alert])
        assert n.flush(10)
        got = am.alerts()
        assert len(got) == 1, got
        a = got[0]
        assert a["labels"] == {"alertname": "checkout-error-rate", "severity": "critical", "service": "checkout"}
        assert a["annotations"]["summary"] == "checkout error rate 12.4% > 5% for 5m"
        assert a["status"]["state"] == "active"
        assert a["generatorURL"].startswith("http://127.0.0.1:8000/")

        n.notify([resolve(alert)], [])
        assert n.flush(10)
        deadline = time.monotonic() + 10
        while am.alerts(active="true") and time.monotonic() < deadline:
            time.sleep(0.2)
        assert am.alerts(active="true") == []
    finally:
        n.close()
    assert sample("obsmcp_alert_notifications_total", webhook="test-alertmanager_api", format="alertmanager_api",
                  outcome="sent") >= 2  # fmt: skip


@pytest.mark.slow
def test_alertmanager_format_has_the_structure_a_real_alertmanager_sends(
    alertmanager_factory: Callable[..., AlertmanagerServer],
    webhook_receiver_factory: Callable[..., WebhookReceiver],
) -> None:
    """Alertmanager itself sends a webhook for an alert obsmcp pushed; obsmcp's own `alertmanager` body for the
    same alert must have the same keys and value types, firing and resolved."""
    sink = webhook_receiver_factory()
    am = alertmanager_factory(webhook_receiver("capture", f"{sink.url}/hook"))
    push = notifier(am.url, "alertmanager_api")
    try:
        alert = make_alert()
        push.notify([fire(alert)], [alert])
        real_firing = sink.wait(1, where=lambda r: r.body["status"] == "firing")[0].body
        push.notify([resolve(alert)], [])
        real_resolved = sink.wait(1, timeout=30, where=lambda r: r.body["status"] == "resolved")[0].body
    finally:
        push.close()

    ours_firing = alertmanager_payload("capture", alert.rule, [alert], "http://127.0.0.1:8000/")
    ours_resolved = alertmanager_payload("capture", alert.rule, [resolve(alert).alert], "http://127.0.0.1:8000/")
    for real, ours in ((real_firing, ours_firing), (real_resolved, ours_resolved)):
        assert set(ours) == set(real), (sorted(ours), sorted(real))
        assert set(ours["alerts"][0]) == set(real["alerts"][0])
        assert shape(ours) | {"alerts": None} == shape(real) | {"alerts": None}
        assert shape(ours["alerts"][0]) | {"labels": None, "annotations": None} == shape(real["alerts"][0]) | {
            "labels": None,
            "annotations": None,
        }
        # Same values where Alertmanager only passes ours through.
        assert ours["version"] == real["version"] == "4"
        assert ours["status"] == real["status"]
        assert ours["groupLabels"] == real["groupLabels"]
        assert ours["commonLabels"] == real["commonLabels"]
        assert ours["alerts"][0]["labels"] == real["alerts"][0]["labels"]
        assert ours["alerts"][0]["annotations"] == real["alerts"][0]["annotations"]
        assert ours["alerts"][0]["status"] == real["alerts"][0]["status"]
    assert ours_firing["alerts"][0]["endsAt"] == real_firing["alerts"][0]["endsAt"] == "0001-01-01T00:00:00Z"
    assert ours_firing["groupKey"] == real_firing["groupKey"]
    assert datetime.fromisoformat(ours_resolved["alerts"][0]["endsAt"]) > datetime.fromisoformat(
        ours_resolved["alerts"][0]["startsAt"]
    )


def test_alertmanager_api_resends_firing_alerts_so_they_do_not_expire(
    webhook_receiver_factory: Callable[..., WebhookReceiver],
) -> None:
    """Alertmanager resolves an alert whose endsAt passed: obsmcp re-sends firing ones every resend_s with
    endsAt four resends ahead, as Prometheus does, and stops once they resolved."""
    sink = webhook_receiver_factory()
    n = notifier(sink.url, "alertmanager_api", resend_s=1)
    try:
        alert = make_alert()
        n.notify([fire(alert)], [alert])
        got = sink.wait(3, timeout=10)
        n.notify([resolve(alert)], [])
        assert n.flush(5)
        resolved_at = len(sink.received)
        time.sleep(2.5)
        after = len(sink.received)
    finally:
        n.close()
    assert [r.path for r in got] == ["/api/v2/alerts"] * 3
    for r in got:
        (posted,) = r.body
        assert posted["labels"]["alertname"] == "checkout-error-rate"
        ends = datetime.fromisoformat(posted["endsAt"])
        assert 2 < ends.timestamp() - r.wall <= 4.5
    assert got[2].at - got[1].at == pytest.approx(1.0, abs=0.5)
    assert after == resolved_at  # nothing re-sent once no alert fires


# -- Slack ------------------------------------------------------------------------------------------------------


def test_slack_message_has_text_and_mrkdwn_sections_within_slack_limits(
    webhook_receiver_factory: Callable[..., WebhookReceiver],
) -> None:
    sink = webhook_receiver_factory()
    n = notifier(f"{sink.url}/services/T000/B000/XXXX", "slack")
    try:
        long_cause = "payment <timeout> & retry storm " + "x" * 5000
        alerts = [make_alert(cause=long_cause, pod=f"p{i}") for i in range(25)]
        n.notify([fire(a) for a in alerts], alerts)
        body = sink.wait(1)[0].body
    finally:
        n.close()
    assert isinstance(body["text"], str) and body["text"].startswith("[FIRING:25] checkout-error-rate")
    assert len(body["text"]) <= 3000
    assert len(body["blocks"]) <= 50  # Slack's limit per message
    header, *sections, footer = body["blocks"]
    assert header["type"] == "header" and header["text"]["type"] == "plain_text"
    assert len(header["text"]["text"]) <= 150
    assert len(sections) == 20  # the rest are counted in the footer
    for s in sections:
        assert s["type"] == "section" and s["text"]["type"] == "mrkdwn"
        assert len(s["text"]["text"]) <= 3000
        assert "&lt;timeout&gt; &amp; retry" in s["text"]["text"]  # Slack's mrkdwn escapes
        assert "<timeout>" not in s["text"]["text"]
    assert "and 5 more" in footer["elements"][0]["text"]


# -- retries, queue, what is not sent ---------------------------------------------------------------------------


def test_503_is_retried_with_growing_gaps_then_delivered(
    webhook_receiver_factory: Callable[..., WebhookReceiver],
) -> None:
    sink = webhook_receiver_factory(statuses=[503, 503])
    n = notifier(f"{sink.url}/hook", backoff_s=0.3)
    try:
        alert = make_alert()
        n.notify([fire(alert)], [alert])
        got = sink.wait(3, timeout=15)
        assert n.flush(10)
    finally:
        n.close()
    gaps = [got[1].at - got[0].at, got[2].at - got[1].at]
    assert gaps[0] >= 0.3 * 0.9, gaps
    assert gaps[1] > gaps[0], gaps
    assert len(sink.received) == 3
    assert got[0].body == got[2].body  # the same message each time


def test_400_is_not_retried_and_counts_as_failed(webhook_receiver_factory: Callable[..., WebhookReceiver]) -> None:
    sink = webhook_receiver_factory(statuses=[400])
    before = sample("obsmcp_alert_notifications_total", webhook="test-slack", format="slack", outcome="failed")
    n = notifier(f"{sink.url}/hook", "slack", backoff_s=0.05)
    try:
        alert = make_alert()
        n.notify([fire(alert)], [alert])
        sink.wait(1)
        assert n.flush(10)
        time.sleep(0.3)
    finally:
        n.close()
    assert len(sink.received) == 1
    after = sample("obsmcp_alert_notifications_total", webhook="test-slack", format="slack", outcome="failed")
    assert after == before + 1


def test_a_full_queue_drops_the_oldest_and_never_blocks_the_engine() -> None:
    # Nothing listens on port 9 of loopback: the worker is stuck in a 30 s backoff after its first message.
    n = notifier("http://127.0.0.1:9/hook", "alertmanager", queue_size=2, backoff_s=30, max_attempts=5)
    labels = {"webhook": "test-alertmanager", "format": "alertmanager", "outcome": "dropped"}
    before = sample("obsmcp_alert_notifications_total", **labels)
    try:
        started = time.monotonic()
        for i in range(6):
            alert = make_alert(rule=f"rule-{i}")
            n.notify([fire(alert)], [alert])
        assert time.monotonic() - started < 0.5
        time.sleep(0.3)
        queued = sample("obsmcp_alert_notification_queue", webhook="test-alertmanager")
        dropped = sample("obsmcp_alert_notifications_total", **labels) - before
    finally:
        closing = time.monotonic()
        n.close(timeout=2)
        assert time.monotonic() - closing < 5  # a retry's backoff does not hold up the shutdown
    # 6 messages: one with the worker, at most 2 waiting, the rest dropped and counted.
    assert 1 <= queued <= 2
    assert dropped == 6 - 1 - queued


def test_silenced_pending_and_unfired_alerts_are_not_sent() -> None:
    n = notifier("http://127.0.0.1:9/hook")
    try:
        silenced = make_alert(rule="silenced", silenced_by="s-1")
        pending = make_alert(rule="pending", state="pending")
        never_fired = make_alert(rule="flapped", state="resolved")
        firing = make_alert(rule="real")
        messages = n.messages(
            [
                fire(silenced),
                AlertTransition(alert=pending, previous=None, at=NOW),
                AlertTransition(alert=never_fired, previous="pending", at=NOW),
                fire(firing),
            ],
            [silenced, firing],
        )
        no_resolved = notifier("http://127.0.0.1:9/x", "slack", send_resolved=False)
        assert no_resolved.messages([resolve(firing)], []) == []
        no_resolved.close()
    finally:
        n.close()
    assert len(messages) == 1
    assert b'"alertname": "real"' in messages[0].body


def test_no_webhook_url_or_token_in_logs(
    webhook_receiver_factory: Callable[..., WebhookReceiver], capfd: pytest.CaptureFixture[str]
) -> None:
    configure_logging("json", "debug")
    secret_path = "/services/T0SECRET/B0SECRET/Zk9sZWN0ZWQtdG9rZW4tdmFsdWU"
    sink = webhook_receiver_factory(statuses=[503, 400])
    notifiers = [
        notifier(f"{sink.url}{secret_path}?token=qs-secret-123", "slack", backoff_s=0.05,
                 headers={"Authorization": "Bearer hdr-secret-456"}),
        notifier(f"http://127.0.0.1:9{secret_path}", "alertmanager", backoff_s=0.05, max_attempts=2),
    ]  # fmt: skip
    try:
        alert = make_alert()
        for n in notifiers:
            n.notify([fire(alert)], [alert])
        for n in notifiers:
            assert n.flush(15)
        assert sink.received[0].headers["Authorization"] == "Bearer hdr-secret-456"  # it was sent, not logged
        print(repr(notifiers[0]), notifiers[0].config)
    finally:
        for n in notifiers:
            n.close()
    err = capfd.readouterr()
    text = err.err + err.out
    assert "alert_webhook_retry" in text and "alert_webhook_failed" in text  # the events are there...
    assert "127.0.0.1" in text  # ...with the host...
    for secret in ("T0SECRET", "B0SECRET", "Zk9sZWN0ZWQtdG9rZW4tdmFsdWU", "qs-secret-123", "hdr-secret-456"):
        assert secret not in text  # ...and without the secrets


def test_bad_webhook_config_names_the_webhook_and_field_but_not_the_url(tmp_path: Any) -> None:
    cfg = tmp_path / "obsmcp.toml"
    cfg.write_text('[[alert_webhooks]]\nname = "oncall"\nurl = "hooks.example.com/T0SECRET"\nformat = "teams"\n')
    with pytest.raises(ConfigError) as e:
        load_settings(cfg)
    msg = str(e.value)
    assert "webhook 'oncall'" in msg and "http(s) URL" in msg and "'alertmanager', 'slack' or 'alertmanager_api'" in msg
    assert "T0SECRET" not in msg


@pytest.mark.slow
def test_obsmcp_serve_sends_its_firing_alert_to_the_configured_webhook(
    server_factory: Any, webhook_receiver_factory: Callable[..., WebhookReceiver]
) -> None:
    """The whole path: `obsmcp serve` evaluates a rule from OBSMCP_ALERTS on its own data and the webhook from
    OBSMCP_ALERT_WEBHOOKS receives Alertmanager's webhook body for it."""
    sink = webhook_receiver_factory()
    rule = {"name": "checkout-error-logs", "kind": "log_rate", "service": "checkout", "op": ">", "threshold": 0}
    hook = {"name": "oncall", "url": f"{sink.url}/hook/s3cr3t-path", "format": "alertmanager"}
    srv = server_factory(
        env={
            "OBSMCP_ALERTS": json.dumps([rule]),
            "OBSMCP_ALERT_WEBHOOKS": json.dumps([hook]),
            "OBSMCP_ALERT_INTERVAL": "1s",
            "OBSMCP_ALERT_DEFAULT_RULES": "false",
        }
    )
    body = otlp_logs_protobuf("checkout", ["payment declined: card expired"] * 3, severity=17)
    r = httpx.post(f"{srv.otlp_url}/v1/logs", content=body, headers={"Content-Type": "application/x-protobuf"})
    assert r.status_code == 200, r.text
    got = sink.wait(1, timeout=30)[0]
    assert got.path == "/hook/s3cr3t-path"
    assert got.body["version"] == "4" and got.body["status"] == "firing"
    (alert,) = got.body["alerts"]
    assert alert["labels"]["alertname"] == "checkout-error-logs"
    assert alert["labels"]["service"] == "checkout"
    assert got.body["externalURL"] == f"{srv.base_url}/"
    assert "s3cr3t-path" not in srv.log_text()
